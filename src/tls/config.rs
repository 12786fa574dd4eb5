//! What a TLS connection trusts and how it is shaped: [`TlsConfig`].

use core::time::Duration;

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify<'a> {
    /// Verify the chain against these trusted CA certificates (DER; see
    /// [`pem_to_der`](super::pem_to_der) for PEM) and the leaf against the
    /// host name given to `connect`. A chain that leads to none of them, a
    /// wrong host name, or (with a clock) an expired certificate fails
    /// `connect` with [`Error::CertificateInvalid`](crate::Error::CertificateInvalid).
    Cas(&'a [&'a [u8]]),
    /// **Insecure**: accept any certificate from anyone. The connection is
    /// encrypted but not authenticated, so anyone on the path can read and
    /// change it. For tests and for links authenticated by other means only.
    DangerAcceptAnyCertificate,
}

/// Maximum plaintext record size to negotiate (RFC 6066
/// `max_fragment_length`), so the read buffer can be smaller than 16 KiB.
/// The server must support the extension; if it does not, the handshake or
/// a later oversized record fails with [`Error::Tls`](crate::Error::Tls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MaxFragment {
    /// 512-byte records (read buffer ≥ 768 bytes).
    B512,
    /// 1 KiB records (read buffer ≥ 1280 bytes).
    B1024,
    /// 2 KiB records (read buffer ≥ 2304 bytes).
    B2048,
    /// 4 KiB records (read buffer ≥ 4352 bytes).
    B4096,
}

impl MaxFragment {
    /// Plaintext bytes per record.
    pub const fn bytes(self) -> usize {
        match self {
            MaxFragment::B512 => 512,
            MaxFragment::B1024 => 1024,
            MaxFragment::B2048 => 2048,
            MaxFragment::B4096 => 4096,
        }
    }

    pub(crate) fn to_etls(self) -> embedded_tls::blocking::MaxFragmentLength {
        use embedded_tls::blocking::MaxFragmentLength as M;
        match self {
            MaxFragment::B512 => M::Bits9,
            MaxFragment::B1024 => M::Bits10,
            MaxFragment::B2048 => M::Bits11,
            MaxFragment::B4096 => M::Bits12,
        }
    }
}

/// A wall clock for certificate validity: seconds since the Unix epoch, or
/// `None` when the time is not known (validity is then not checked).
pub type WallClock = fn() -> Option<u64>;

/// The system clock (feature `std`).
#[cfg(feature = "std")]
pub fn system_clock() -> Option<u64> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// How [`SoftTls`](super::SoftTls) runs its connections.
///
/// ```
/// # use netdever::tls::{TlsConfig, MaxFragment};
/// # let ca_der: &[u8] = &[];
/// let cas = [ca_der];
/// let config = TlsConfig::new(&cas).with_max_fragment(MaxFragment::B4096);
/// # let _ = config;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TlsConfig<'a> {
    pub(crate) verify: Verify<'a>,
    pub(crate) clock: Option<WallClock>,
    pub(crate) max_fragment: Option<MaxFragment>,
    pub(crate) alpn: Option<&'a [&'a [u8]]>,
    pub(crate) record_grace: Duration,
}

/// How long a receive or send keeps waiting for the rest of a TLS record it
/// has started, past its own deadline (see the module docs).
pub const DEFAULT_RECORD_GRACE: Duration = Duration::from_secs(10);

impl<'a> TlsConfig<'a> {
    /// Verify servers against `ca_certs` (DER). Validity dates are checked
    /// with the system clock under `std`, and not at all without `std`
    /// unless a clock is given with [`with_clock`](Self::with_clock).
    pub fn new(ca_certs: &'a [&'a [u8]]) -> Self {
        Self::with_verify(Verify::Cas(ca_certs))
    }

    /// **Insecure**: accept any server certificate (see
    /// [`Verify::DangerAcceptAnyCertificate`]). The host name, if given, is
    /// still sent as SNI.
    pub fn insecure_no_verify() -> Self {
        Self::with_verify(Verify::DangerAcceptAnyCertificate)
    }

    /// A configuration with the given verification.
    pub fn with_verify(verify: Verify<'a>) -> Self {
        #[cfg(feature = "std")]
        let clock = Some(system_clock as WallClock);
        #[cfg(not(feature = "std"))]
        let clock = None;
        TlsConfig {
            verify,
            clock,
            max_fragment: None,
            alpn: None,
            record_grace: DEFAULT_RECORD_GRACE,
        }
    }

    /// Check validity dates with `clock` (Unix seconds; `None` from it skips the check).
    pub fn with_clock(mut self, clock: WallClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Do not check validity dates at all.
    pub fn without_clock(mut self) -> Self {
        self.clock = None;
        self
    }

    /// Ask the server for records of at most `max` plaintext bytes, and send
    /// no larger ones, so a smaller read buffer suffices.
    pub fn with_max_fragment(mut self, max: MaxFragment) -> Self {
        self.max_fragment = Some(max);
        self
    }

    /// Offer these ALPN protocol names (e.g. `&[b"mqtt"]`).
    pub fn with_alpn(mut self, protocols: &'a [&'a [u8]]) -> Self {
        self.alpn = Some(protocols);
        self
    }

    /// How long a call keeps waiting, past its deadline, for the rest of a
    /// record it has started to move (default [`DEFAULT_RECORD_GRACE`]).
    pub fn with_record_grace(mut self, grace: Duration) -> Self {
        self.record_grace = grace;
        self
    }

    /// The verification mode.
    pub fn verify(&self) -> Verify<'a> {
        self.verify
    }

    /// The negotiated-size limit, if any.
    pub fn max_fragment(&self) -> Option<MaxFragment> {
        self.max_fragment
    }

    /// Read buffer bytes one connection needs with this configuration: the
    /// largest record the server may send (plaintext + 256).
    pub fn read_buffer_needed(&self) -> usize {
        self.max_fragment.map_or(16_384, MaxFragment::bytes) + 256
    }
}
