//! The one error type every backend returns.
//!
//! The variants are the ones callers branch on: TinyGo's netdev errors
//! (`HostUnknown`, `NoMoreSockets`, ...) plus the POSIX cases a BSD-socket
//! program expects (`WouldBlock`, `ConnectionRefused`, ...). Backends map
//! their internal failures onto these; nothing is reported as a panic.

use core::fmt;

/// Result alias used throughout the crate.
pub type Result<T> = core::result::Result<T, Error>;

/// Everything a socket, DNS, addressing or link call can fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// DNS could not resolve the name (NXDOMAIN, no answer, no server).
    HostUnknown,
    /// The address family is not supported (for now only `AF_INET`).
    FamilyNotSupported,
    /// The protocol is not supported by this backend (e.g. TLS before it exists).
    ProtocolNotSupported,
    /// The socket type does not match the protocol or is not supported.
    TypeNotSupported,
    /// The fd table (or the chip's socket table) is full.
    NoMoreSockets,
    /// The fd is not open: never opened, already closed, or stale.
    InvalidSockfd,
    /// The deadline passed before the call could complete.
    Timeout,
    /// The operation or option is not supported by this backend.
    NotSupported,
    /// Non-blocking call (or `MSG_DONTWAIT`) that would have had to wait.
    WouldBlock,
    /// The peer refused the connection (TCP RST in reply to SYN).
    ConnectionRefused,
    /// The connection was reset by the peer.
    ConnectionReset,
    /// The connection was aborted locally (e.g. keep-alive or retransmit timeout).
    ConnectionAborted,
    /// The socket is not connected (send/recv before connect, or after the peer left).
    NotConnected,
    /// The socket is already connected (connect twice).
    AlreadyConnected,
    /// A non-blocking connect is still in progress.
    InProgress,
    /// The local address/port is already in use.
    AddrInUse,
    /// The address cannot be used here (unspecified remote, no local address).
    AddrNotAvailable,
    /// An argument is invalid for this call or this socket's state
    /// (accept on a socket that is not listening, empty receive buffer, ...).
    InvalidArgument,
    /// The datagram does not fit the socket's buffers or the link MTU.
    MessageTooLong,
    /// Sending after `shutdown(Write)` or after the local side closed.
    BrokenPipe,
    /// The network is down: no link, or no IP address yet.
    NetworkDown,
    /// No route to the destination network.
    NetworkUnreachable,
    /// Joining the network failed (wrong SSID or passphrase, no DHCP lease, ...).
    ConnectFailed,
    /// Wrong passphrase or authentication rejected by the access point.
    AuthFailed,
    /// The device (chip, link) reported an error or sent something malformed.
    Device,
    /// The device is busy with another command; try again.
    Busy,
    /// TLS handshake or record failure.
    Tls,
    /// The peer's certificate did not verify (untrusted chain or wrong host name).
    CertificateInvalid,
}

impl Error {
    /// The closest POSIX errno, for FFI shims and log lines.
    pub fn errno(self) -> i32 {
        match self {
            Error::HostUnknown => -2,          // EAI_NONAME
            Error::FamilyNotSupported => 97,   // EAFNOSUPPORT
            Error::ProtocolNotSupported => 93, // EPROTONOSUPPORT
            Error::TypeNotSupported => 94,     // ESOCKTNOSUPPORT
            Error::NoMoreSockets => 24,        // EMFILE
            Error::InvalidSockfd => 9,         // EBADF
            Error::Timeout => 110,             // ETIMEDOUT
            Error::NotSupported => 95,         // EOPNOTSUPP
            Error::WouldBlock => 11,           // EAGAIN
            Error::ConnectionRefused => 111,   // ECONNREFUSED
            Error::ConnectionReset => 104,     // ECONNRESET
            Error::ConnectionAborted => 103,   // ECONNABORTED
            Error::NotConnected => 107,        // ENOTCONN
            Error::AlreadyConnected => 106,    // EISCONN
            Error::InProgress => 115,          // EINPROGRESS
            Error::AddrInUse => 98,            // EADDRINUSE
            Error::AddrNotAvailable => 99,     // EADDRNOTAVAIL
            Error::InvalidArgument => 22,      // EINVAL
            Error::MessageTooLong => 90,       // EMSGSIZE
            Error::BrokenPipe => 32,           // EPIPE
            Error::NetworkDown => 100,         // ENETDOWN
            Error::NetworkUnreachable => 101,  // ENETUNREACH
            Error::ConnectFailed => 113,       // EHOSTUNREACH
            Error::AuthFailed => 13,           // EACCES
            Error::Device => 5,                // EIO
            Error::Busy => 16,                 // EBUSY
            Error::Tls => 71,                  // EPROTO
            Error::CertificateInvalid => 129,  // EKEYREJECTED
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Error::HostUnknown => "host unknown",
            Error::FamilyNotSupported => "address family not supported",
            Error::ProtocolNotSupported => "protocol not supported",
            Error::TypeNotSupported => "socket type not supported",
            Error::NoMoreSockets => "no more sockets",
            Error::InvalidSockfd => "invalid sockfd",
            Error::Timeout => "timed out",
            Error::NotSupported => "not supported",
            Error::WouldBlock => "operation would block",
            Error::ConnectionRefused => "connection refused",
            Error::ConnectionReset => "connection reset by peer",
            Error::ConnectionAborted => "connection aborted",
            Error::NotConnected => "not connected",
            Error::AlreadyConnected => "already connected",
            Error::InProgress => "operation in progress",
            Error::AddrInUse => "address in use",
            Error::AddrNotAvailable => "address not available",
            Error::InvalidArgument => "invalid argument",
            Error::MessageTooLong => "message too long",
            Error::BrokenPipe => "broken pipe",
            Error::NetworkDown => "network is down",
            Error::NetworkUnreachable => "network unreachable",
            Error::ConnectFailed => "connecting to the network failed",
            Error::AuthFailed => "authentication failed",
            Error::Device => "device error",
            Error::Busy => "device busy",
            Error::Tls => "TLS error",
            Error::CertificateInvalid => "certificate invalid",
        };
        f.write_str(s)
    }
}

impl core::error::Error for Error {}

#[cfg(feature = "std")]
impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match e {
            Error::WouldBlock => K::WouldBlock,
            Error::Timeout => K::TimedOut,
            Error::ConnectionRefused => K::ConnectionRefused,
            Error::ConnectionReset => K::ConnectionReset,
            Error::ConnectionAborted => K::ConnectionAborted,
            Error::NotConnected => K::NotConnected,
            Error::AddrInUse => K::AddrInUse,
            Error::AddrNotAvailable => K::AddrNotAvailable,
            Error::InvalidArgument => K::InvalidInput,
            Error::BrokenPipe => K::BrokenPipe,
            Error::NotSupported | Error::ProtocolNotSupported => K::Unsupported,
            _ => K::Other,
        };
        std::io::Error::new(kind, e)
    }
}
