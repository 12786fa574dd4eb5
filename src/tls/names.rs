//! Does a server certificate name the host we connected to?
//!
//! The rules are RFC 6125's, as browsers and OpenSSL apply them:
//!
//! * An IP literal (`192.0.2.7`, `2001:db8::1`) matches only an iPAddress
//!   subjectAltName with the same octets — never a DNS name or the CN.
//! * A DNS name matches the certificate's dNSName SANs, all of them,
//!   case-insensitively, ignoring one trailing dot on the host. `*.` as
//!   the whole leftmost label matches exactly one non-empty label, and only
//!   under at least two more labels (`*.example.com`, not `*.com`).
//! * The subject CN is only looked at when the certificate has no dNSName
//!   SAN at all (the practice of old and small self-signed certificates).
//!
//! embedded-tls checks names too, but only DNS SANs (the first three) and
//! the CN, so an address-only certificate or a long SAN list would fail
//! there. Its check cannot be switched off, so once our check has passed,
//! [`accepted_name`] gives it a name from the certificate itself that its
//! own matcher accepts.

use core::net::IpAddr;

use super::der::{self, Tlv, TAG_OID, TAG_SEQUENCE};

/// id-ce-subjectAltName (2.5.29.17), content octets of the OID.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1D, 0x11];
/// id-at-commonName (2.5.4.3).
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// GeneralName dNSName `[2] IMPLICIT IA5String`.
const TAG_DNS_NAME: u8 = 0x82;
/// GeneralName iPAddress `[7] IMPLICIT OCTET STRING`.
const TAG_IP_ADDRESS: u8 = 0x87;
/// Longest name embedded-tls 0.19 keeps for its own check.
const ETLS_NAME_MAX: usize = 64;
/// How many dNSName SANs embedded-tls 0.19 keeps for its own check.
const ETLS_SANS: usize = 3;

/// The names a leaf certificate carries, as slices into its DER.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Names<'a> {
    /// The GeneralNames of subjectAltName (content octets), if present.
    sans: Option<&'a [u8]>,
    /// The subject's last commonName value (as embedded-tls reads it).
    cn: Option<&'a [u8]>,
}

impl<'a> Names<'a> {
    /// Read the names of a DER certificate; `None` if it is malformed.
    pub fn of(cert: &'a [u8]) -> Option<Self> {
        let info = der::parse_certificate(cert)?;
        let sans = match der::extension(info.extensions, OID_SUBJECT_ALT_NAME)? {
            Some(body) => Some(der::expect(body, TAG_SEQUENCE)?.0.value),
            None => None,
        };
        Some(Names {
            sans,
            cn: common_name(info.subject)?,
        })
    }

    /// Every GeneralName in subjectAltName; `None` if one is malformed.
    fn each_san(&self, mut f: impl FnMut(Tlv<'a>)) -> Option<()> {
        let mut rest = self.sans.unwrap_or(&[]);
        while !rest.is_empty() {
            let (gn, next) = der::read_tlv(rest)?;
            f(gn);
            rest = next;
        }
        Some(())
    }

    /// Whether the certificate names `host` (module docs for the rules).
    /// Malformed names never match.
    pub fn matches(&self, host: &str) -> bool {
        if let Ok(ip) = host.parse::<IpAddr>() {
            let want: &[u8] = match &ip {
                IpAddr::V4(a) => &a.octets(),
                IpAddr::V6(a) => &a.octets(),
            };
            let mut found = false;
            let ok = self.each_san(|gn| found |= gn.tag == TAG_IP_ADDRESS && gn.value == want);
            return ok.is_some() && found;
        }
        let host = host.strip_suffix('.').unwrap_or(host).as_bytes();
        let (mut any_dns, mut found) = (false, false);
        let ok = self.each_san(|gn| {
            if gn.tag == TAG_DNS_NAME {
                any_dns = true;
                found |= dns_matches(gn.value, host);
            }
        });
        if ok.is_none() {
            return false;
        }
        if any_dns {
            return found;
        }
        self.cn.is_some_and(|cn| dns_matches(cn, host))
    }

    /// A name embedded-tls 0.19's own check accepts for this certificate:
    /// `Ok(None)` when it needs none (no dNSName SAN and no CN), `Err(())`
    /// when no host name could pass it (e.g. only a CN with a space).
    pub fn accepted_name(&self) -> Result<Option<heapless::String<ETLS_NAME_MAX>>, ()> {
        // embedded-tls compares the host with its first three dNSName SANs,
        // then with the CN; a name with only [A-Za-z0-9.-] matches itself,
        // and `*.rest` (three labels or more) matches `x.rest`.
        let mut dns = heapless::Vec::<&[u8], ETLS_SANS>::new();
        self.each_san(|gn| {
            if gn.tag == TAG_DNS_NAME {
                let _ = dns.push(gn.value);
            }
        })
        .ok_or(())?;
        if dns.is_empty() && self.cn.is_none() {
            return Ok(None);
        }
        for name in dns.iter().copied().chain(self.cn) {
            if let Some(s) = self_matching(name) {
                return Ok(Some(s));
            }
        }
        Err(())
    }
}

/// The last commonName in a Name (a SEQUENCE OF SET OF
/// AttributeTypeAndValue); `Some(None)` if there is none.
fn common_name(name: &[u8]) -> Option<Option<&[u8]>> {
    let (seq, _) = der::expect(name, TAG_SEQUENCE)?;
    let mut rest = seq.value;
    let mut cn = None;
    while !rest.is_empty() {
        let (rdn, next) = der::read_tlv(rest)?;
        rest = next;
        let (atv, _) = der::expect(rdn.value, TAG_SEQUENCE)?;
        let (oid, value) = der::expect(atv.value, TAG_OID)?;
        if oid.value == OID_COMMON_NAME {
            cn = Some(der::read_tlv(value)?.0.value);
        }
    }
    Some(cn)
}

/// Whether the pattern `pat` (a dNSName or CN) matches the DNS name `host`.
fn dns_matches(pat: &[u8], host: &[u8]) -> bool {
    let pat = pat.strip_suffix(b".").unwrap_or(pat);
    if host.is_empty() || pat.is_empty() {
        return false;
    }
    if let Some(suffix) = pat.strip_prefix(b"*.") {
        // One whole leftmost label, under at least two more.
        if suffix.contains(&b'*') || !suffix.contains(&b'.') {
            return false;
        }
        return match host.iter().position(|&b| b == b'.') {
            Some(dot) if dot > 0 => host[dot + 1..].eq_ignore_ascii_case(suffix),
            _ => false,
        };
    }
    !pat.contains(&b'*') && pat.eq_ignore_ascii_case(host)
}

/// `name` as a host name embedded-tls would match against it, if any.
fn self_matching(name: &[u8]) -> Option<heapless::String<ETLS_NAME_MAX>> {
    let plain = |s: &[u8]| {
        !s.is_empty()
            && s.iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    let mut out = heapless::String::new();
    if plain(name) {
        out.push_str(core::str::from_utf8(name).ok()?).ok()?;
        return Some(out);
    }
    let rest = name.strip_prefix(b"*.")?;
    if !plain(rest) || rest.iter().filter(|&&b| b == b'.').count() < 1 {
        return None;
    }
    out.push_str("x.").ok()?;
    out.push_str(core::str::from_utf8(rest).ok()?).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_patterns() {
        assert!(dns_matches(b"tls.test", b"tls.test"));
        assert!(dns_matches(b"TLS.Test", b"tls.TEST"));
        assert!(dns_matches(b"tls.test.", b"tls.test"));
        assert!(!dns_matches(b"tls.test", b"a.tls.test"));
        assert!(!dns_matches(b"tls.test", b"tls.tes"));
        assert!(dns_matches(b"*.example.com", b"a.example.com"));
        assert!(dns_matches(b"*.example.com", b"A-1.EXAMPLE.com"));
        assert!(!dns_matches(b"*.example.com", b"example.com"));
        assert!(!dns_matches(b"*.example.com", b".example.com"));
        assert!(!dns_matches(b"*.example.com", b"a.b.example.com"));
        assert!(!dns_matches(b"*.com", b"example.com"));
        assert!(!dns_matches(b"f*.example.com", b"foo.example.com"));
        assert!(!dns_matches(b"*.*.example.com", b"a.b.example.com"));
        assert!(!dns_matches(b"", b""));
        assert!(!dns_matches(b"*", b"localhost"));
    }

    #[test]
    fn names_embedded_tls_accepts() {
        let s = |n: &[u8]| self_matching(n);
        assert_eq!(s(b"tls.test").as_deref(), Some("tls.test"));
        assert_eq!(s(b"*.wild.test").as_deref(), Some("x.wild.test"));
        assert_eq!(s(b"my device"), None);
        assert_eq!(s(b"*.test"), None);
        assert_eq!(s(b"*"), None);
        assert_eq!(s(b""), None);
    }
}
