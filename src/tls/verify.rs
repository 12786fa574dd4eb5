//! Server certificate verification: embedded-tls's rustpki verifier (chain
//! signatures, CertificateVerify signature) behind checks it does not make
//! itself — which of several trusted CAs the chain leads to, that every
//! certificate above the leaf is a CA (basicConstraints), that the chain
//! links up by name, validity against a runtime clock, the host name by
//! RFC 6125 including IP addresses ([`super::names`]) — and a record of
//! whether verification ran to the end.

use embedded_tls::blocking::{
    Aes128GcmSha256, Certificate, CertificateEntryRef, CertificateRef, CertificateVerifyRef,
    NoClock, TlsError, TlsVerifier,
};
use embedded_tls::pki::CertVerifier;

use super::config::WallClock;
use super::der;
use super::names::Names;

/// The cipher suite every connection uses.
pub(crate) type Suite = Aes128GcmSha256;

/// Most bytes of server certificate chain (as sent in the handshake) that
/// can be verified.
pub const MAX_CHAIN_LEN: usize = 4096;

type Inner<'a> = CertVerifier<'a, Suite, NoClock, MAX_CHAIN_LEN>;

/// Verifies one handshake's server certificates.
pub(crate) struct ChainVerifier<'a> {
    cas: &'a [&'a [u8]],
    host: &'a str,
    clock: Option<WallClock>,
    inner: Option<Inner<'a>>,
    /// The chain was accepted.
    chain_ok: bool,
    /// The CertificateVerify signature was checked and good.
    signature_ok: bool,
    /// A certificate check failed: the handshake error is `CertificateInvalid`.
    pub rejected: bool,
}

impl<'a> ChainVerifier<'a> {
    pub fn new(cas: &'a [&'a [u8]], host: &'a str, clock: Option<WallClock>) -> Self {
        ChainVerifier {
            cas,
            host,
            clock,
            inner: None,
            chain_ok: false,
            signature_ok: false,
            rejected: false,
        }
    }

    /// Whether both the chain and the server's signature were verified (a
    /// handshake that skipped the certificate messages did neither).
    pub fn complete(&self) -> bool {
        self.chain_ok && self.signature_ok
    }

    fn reject(&mut self) -> TlsError {
        self.rejected = true;
        TlsError::InvalidCertificate
    }

    /// Structural checks on the chain; returns the trusted CA it leads to.
    fn anchor(&mut self, cert: &CertificateRef<'_>) -> Result<&'a [u8], TlsError> {
        let entries = &cert.entries;
        if entries.is_empty() {
            return Err(self.reject());
        }
        // The chain as sent must fit the copy embedded-tls keeps for the
        // signature check (3-byte length and 2-byte extensions per entry).
        let size: usize = entries
            .iter()
            .map(|e| match e {
                CertificateEntryRef::X509(d) | CertificateEntryRef::RawPublicKey(d) => d.len() + 5,
            })
            .sum();
        if size > MAX_CHAIN_LEN {
            return Err(TlsError::OutOfMemory);
        }
        let now = self.clock.and_then(|c| c());
        let mut prev_issuer: Option<&[u8]> = None;
        let mut last_issuer: &[u8] = &[];
        for (i, e) in entries.iter().enumerate() {
            let CertificateEntryRef::X509(d) = e else {
                return Err(self.reject());
            };
            let Some(info) = der::parse_certificate(d) else {
                return Err(self.reject());
            };
            if i > 0 && !info.is_ca {
                return Err(self.reject()); // only CAs may sign certificates
            }
            if prev_issuer.is_some_and(|p| p != info.subject) {
                return Err(self.reject()); // the chain does not link up
            }
            if now.is_some_and(|t| t < info.not_before || t > info.not_after) {
                return Err(self.reject());
            }
            prev_issuer = Some(info.issuer);
            last_issuer = info.issuer;
        }
        let cas = self.cas;
        for &ca in cas {
            if der::parse_certificate(ca).is_some_and(|c| c.subject == last_issuer) {
                return Ok(ca);
            }
        }
        Err(self.reject())
    }
}

impl TlsVerifier<Suite> for ChainVerifier<'_> {
    fn set_hostname_verification(&mut self, _hostname: &str) -> Result<(), TlsError> {
        // The host name was fixed when the verifier was made (it is checked
        // even when it is not sent as SNI, e.g. an IP literal).
        Ok(())
    }

    fn verify_certificate(
        &mut self,
        transcript: &<Suite as embedded_tls::blocking::TlsCipherSuite>::Hash,
        cert: CertificateRef<'_>,
    ) -> Result<(), TlsError> {
        let ca = self.anchor(&cert)?;
        // `anchor` saw an X.509 leaf first.
        let Some(CertificateEntryRef::X509(leaf)) = cert.entries.first() else {
            return Err(self.reject());
        };
        let Some(names) = Names::of(leaf).filter(|n| n.matches(self.host)) else {
            return Err(self.reject());
        };
        let mut inner = Inner::new(Certificate::X509(ca));
        // embedded-tls insists on checking a name itself: give it one of
        // the leaf's own (see `names`), the host having passed ours.
        match names.accepted_name() {
            Ok(Some(name)) => {
                if inner.set_hostname_verification(&name).is_err() {
                    return Err(self.reject());
                }
            }
            Ok(None) => {}
            Err(()) => return Err(self.reject()),
        }
        match inner.verify_certificate(transcript, cert) {
            Ok(()) => {
                self.inner = Some(inner);
                self.chain_ok = true;
                Ok(())
            }
            Err(TlsError::OutOfMemory) => Err(TlsError::OutOfMemory),
            Err(_) => Err(self.reject()),
        }
    }

    fn verify_signature(&mut self, verify: CertificateVerifyRef<'_>) -> Result<(), TlsError> {
        let r = match self.inner.as_mut() {
            Some(inner) => inner.verify_signature(verify),
            None => Err(TlsError::InvalidCertificate),
        };
        match r {
            Ok(()) => {
                self.signature_ok = true;
                Ok(())
            }
            Err(_) => Err(self.reject()),
        }
    }
}
