//! PEM → DER for CA certificates.
//!
//! [`pem_to_der`] decodes the first `CERTIFICATE` block of a PEM text into a
//! caller buffer (no allocation, works everywhere); [`pem_certificates`]
//! (feature `std`) decodes every `CERTIFICATE` block into owned vectors.

use crate::error::{Error, Result};

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// The base64 body of the first `CERTIFICATE` block in `pem` and the text after it.
fn next_block(pem: &str) -> Option<(&str, &str)> {
    let start = pem.find(BEGIN)? + BEGIN.len();
    let len = pem[start..].find(END)?;
    Some((&pem[start..start + len], &pem[start + len + END.len()..]))
}

fn sextet(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    } as u32)
}

/// Decode standard base64 (whitespace ignored, `=` padding) into `out`,
/// returning the number of bytes written.
fn base64_decode(text: &str, out: &mut [u8]) -> Result<usize> {
    let mut acc = 0u32;
    let mut bits = 0u32;
    let mut n = 0usize;
    let mut padding = 0usize;
    for &c in text.as_bytes() {
        if c.is_ascii_whitespace() {
            continue;
        }
        if c == b'=' {
            padding += 1;
            continue;
        }
        if padding > 0 {
            return Err(Error::InvalidArgument); // data after padding
        }
        acc = (acc << 6) | sextet(c).ok_or(Error::InvalidArgument)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            let byte = (acc >> bits) as u8;
            *out.get_mut(n).ok_or(Error::MessageTooLong)? = byte;
            n += 1;
            acc &= (1 << bits) - 1;
        }
    }
    if padding > 2 || bits >= 6 {
        return Err(Error::InvalidArgument);
    }
    Ok(n)
}

/// Decode the first `-----BEGIN CERTIFICATE-----` block of `pem` into `out`
/// and return the DER bytes (a prefix of `out`).
///
/// `InvalidArgument` if there is no such block or it is not valid base64,
/// `MessageTooLong` if `out` is too small.
pub fn pem_to_der<'o>(pem: &str, out: &'o mut [u8]) -> Result<&'o [u8]> {
    let (body, _) = next_block(pem).ok_or(Error::InvalidArgument)?;
    let n = base64_decode(body, out)?;
    if n == 0 {
        return Err(Error::InvalidArgument);
    }
    Ok(&out[..n])
}

/// Decode every `CERTIFICATE` block of `pem` (a CA bundle, say) into DER.
/// `InvalidArgument` if there is none or one is not valid base64.
#[cfg(feature = "std")]
pub fn pem_certificates(pem: &str) -> Result<std::vec::Vec<std::vec::Vec<u8>>> {
    let mut certs = std::vec::Vec::new();
    let mut rest = pem;
    while let Some((body, after)) = next_block(rest) {
        let mut der = std::vec![0u8; body.len() / 4 * 3 + 3];
        let n = base64_decode(body, &mut der)?;
        if n == 0 {
            return Err(Error::InvalidArgument);
        }
        der.truncate(n);
        certs.push(der);
        rest = after;
    }
    if certs.is_empty() {
        return Err(Error::InvalidArgument);
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_first_block() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAAEC\nAw==\n-----END CERTIFICATE-----\n\
                   -----BEGIN CERTIFICATE-----\nBAU=\n-----END CERTIFICATE-----\n";
        let mut out = [0u8; 8];
        assert_eq!(pem_to_der(pem, &mut out), Ok(&[0u8, 1, 2, 3][..]));
        let mut small = [0u8; 3];
        assert_eq!(pem_to_der(pem, &mut small), Err(Error::MessageTooLong));
        assert_eq!(pem_to_der("nothing", &mut out), Err(Error::InvalidArgument));
        let bad = "-----BEGIN CERTIFICATE-----\nA*==\n-----END CERTIFICATE-----";
        assert_eq!(pem_to_der(bad, &mut out), Err(Error::InvalidArgument));
        #[cfg(feature = "std")]
        assert_eq!(
            pem_certificates(pem).unwrap(),
            std::vec![std::vec![0u8, 1, 2, 3], std::vec![4u8, 5]]
        );
    }
}
