//! Just enough DER to read the X.509 fields our checks need: issuer,
//! subject, validity, basicConstraints and where the extensions are (for
//! the names in [`super::names`]). Signatures are checked by embedded-tls;
//! this walker only looks at structure, never allocates, and treats
//! anything it does not understand as "not a certificate".

const TAG_BOOLEAN: u8 = 0x01;
const TAG_OCTET_STRING: u8 = 0x04;
pub(crate) const TAG_OID: u8 = 0x06;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;
const TAG_VERSION: u8 = 0xA0;
const TAG_EXTENSIONS: u8 = 0xA3;
/// id-ce-basicConstraints (2.5.29.19), content octets of the OID.
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1D, 0x13];

/// One DER element.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tlv<'a> {
    pub tag: u8,
    /// Content octets.
    pub value: &'a [u8],
    /// The whole element, tag and length included.
    pub raw: &'a [u8],
}

/// Read one element (single-byte tags, definite lengths up to 4 bytes) and
/// return it with the rest of `input`.
pub(crate) fn read_tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1F == 0x1F {
        return None; // multi-byte tags are not used in certificates
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7F) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | b as usize;
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    let tlv = Tlv {
        tag,
        value: &rest[..len],
        raw: &input[..header + len],
    };
    Some((tlv, &rest[len..]))
}

pub(crate) fn expect(input: &[u8], tag: u8) -> Option<(Tlv<'_>, &[u8])> {
    let (t, rest) = read_tlv(input)?;
    (t.tag == tag).then_some((t, rest))
}

/// The fields of a certificate the chain checks use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CertInfo<'a> {
    /// The issuer Name, as the whole DER element (compared byte for byte).
    pub issuer: &'a [u8],
    /// The subject Name, as the whole DER element.
    pub subject: &'a [u8],
    /// notBefore, seconds since the Unix epoch.
    pub not_before: u64,
    /// notAfter, seconds since the Unix epoch.
    pub not_after: u64,
    /// basicConstraints says cA = TRUE.
    pub is_ca: bool,
    /// The content of `extensions` (a SEQUENCE OF Extension), empty if
    /// the certificate has none.
    pub extensions: &'a [u8],
}

/// Read issuer, subject, validity and basicConstraints from a DER certificate.
pub(crate) fn parse_certificate(der: &[u8]) -> Option<CertInfo<'_>> {
    let (cert, _) = expect(der, TAG_SEQUENCE)?;
    let (tbs, _) = expect(cert.value, TAG_SEQUENCE)?;
    let mut rest = tbs.value;
    let (first, after) = read_tlv(rest)?;
    if first.tag == TAG_VERSION {
        rest = after;
    }
    let (_serial, rest) = read_tlv(rest)?;
    let (_sig_alg, rest) = expect(rest, TAG_SEQUENCE)?;
    let (issuer, rest) = expect(rest, TAG_SEQUENCE)?;
    let (validity, rest) = expect(rest, TAG_SEQUENCE)?;
    let (subject, rest) = expect(rest, TAG_SEQUENCE)?;
    let (_spki, mut rest) = expect(rest, TAG_SEQUENCE)?;

    let (nb, v) = read_tlv(validity.value)?;
    let (na, _) = read_tlv(v)?;
    let not_before = parse_time(nb)?;
    let not_after = parse_time(na)?;

    let mut is_ca = false;
    let mut extensions: &[u8] = &[];
    while !rest.is_empty() {
        let (field, next) = read_tlv(rest)?;
        rest = next;
        if field.tag == TAG_EXTENSIONS {
            is_ca = basic_constraints_ca(field.value)?;
            extensions = expect(field.value, TAG_SEQUENCE)?.0.value;
        }
    }
    Some(CertInfo {
        issuer: issuer.raw,
        subject: subject.raw,
        not_before,
        not_after,
        is_ca,
        extensions,
    })
}

/// The `extnValue` content (what the OCTET STRING wraps) of the extension
/// with OID `oid` in `extensions` (a SEQUENCE OF Extension's content);
/// `Some(None)` if there is none, `None` if the list is malformed.
pub(crate) fn extension<'a>(extensions: &'a [u8], oid: &[u8]) -> Option<Option<&'a [u8]>> {
    let mut rest = extensions;
    while !rest.is_empty() {
        let (ext, next) = expect(rest, TAG_SEQUENCE)?;
        rest = next;
        let (id, body) = expect(ext.value, TAG_OID)?;
        if id.value != oid {
            continue;
        }
        let (mut t, after) = read_tlv(body)?;
        if t.tag == TAG_BOOLEAN {
            t = read_tlv(after)?.0; // skip `critical`
        }
        if t.tag != TAG_OCTET_STRING {
            return None;
        }
        return Some(Some(t.value));
    }
    Some(None)
}

/// Walk `[3] { SEQUENCE OF Extension }` for basicConstraints' cA flag.
fn basic_constraints_ca(explicit: &[u8]) -> Option<bool> {
    let (exts, _) = expect(explicit, TAG_SEQUENCE)?;
    let Some(body) = extension(exts.value, OID_BASIC_CONSTRAINTS)? else {
        return Some(false);
    };
    let (bc, _) = expect(body, TAG_SEQUENCE)?;
    Some(match read_tlv(bc.value) {
        Some((ca, _)) if ca.tag == TAG_BOOLEAN => ca.value.first().is_some_and(|&b| b != 0),
        _ => false, // cA DEFAULT FALSE
    })
}

fn digits(s: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u32;
    }
    Some(v)
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950..2049) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`) as seconds since the Unix epoch (DER forms only).
pub(crate) fn parse_time(t: Tlv<'_>) -> Option<u64> {
    let s = t.value;
    let (year, rest) = match (t.tag, s.len()) {
        (TAG_UTC_TIME, 13) => {
            let yy = digits(&s[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        (TAG_GENERALIZED_TIME, 15) => (digits(&s[..4])?, &s[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let month = digits(&rest[0..2])?;
    let day = digits(&rest[2..4])?;
    let hour = digits(&rest[4..6])?;
    let min = digits(&rest[6..8])?;
    let sec = digits(&rest[8..10])?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(year as i64, month, day);
    let secs = days * 86_400 + (hour * 3600 + min * 60 + sec) as i64;
    u64::try_from(secs).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(tag: u8, s: &str) -> Option<u64> {
        let mut v = [0u8; 32];
        v[0] = tag;
        v[1] = s.len() as u8;
        v[2..2 + s.len()].copy_from_slice(s.as_bytes());
        let (t, _) = read_tlv(&v[..2 + s.len()]).unwrap();
        parse_time(t)
    }

    #[test]
    fn times() {
        assert_eq!(time(TAG_UTC_TIME, "700101000000Z"), Some(0));
        assert_eq!(time(TAG_UTC_TIME, "000301000000Z"), Some(951_868_800));
        assert_eq!(
            time(TAG_GENERALIZED_TIME, "20380119031408Z"),
            Some(2_147_483_648)
        );
        assert_eq!(time(TAG_UTC_TIME, "491231235959Z"), Some(2_524_607_999));
        assert_eq!(time(TAG_UTC_TIME, "700101000000+0100"), None);
        assert_eq!(time(TAG_UTC_TIME, "701301000000Z"), None);
        assert_eq!(time(TAG_GENERALIZED_TIME, "19691231235959Z"), None);
    }

    #[test]
    fn tlv_lengths() {
        assert!(read_tlv(&[0x30]).is_none());
        assert!(read_tlv(&[0x30, 0x02, 0x01]).is_none());
        let (t, rest) = read_tlv(&[0x04, 0x81, 0x01, 0xAA, 0xBB]).unwrap();
        assert_eq!(t.value, &[0xAA]);
        assert_eq!(t.raw.len(), 4);
        assert_eq!(rest, &[0xBB]);
        assert!(read_tlv(&[0x1F, 0x01, 0x00]).is_none());
        assert!(read_tlv(&[0x04, 0x85, 0, 0, 0, 0, 1]).is_none());
    }
}
