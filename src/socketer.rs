//! The socket contract: [`Socketer`] and [`Netdever`].
//!
//! This is TinyGo's `netdev.Socketer` / `netdev.Netdever` in Rust, with the
//! gaps its users hit closed (UDP servers, shutdown, non-blocking mode, a
//! readiness query, `MSG_PEEK` / `MSG_DONTWAIT`). Every backend — the
//! smoltcp full stack and each firmware-offload driver — serves exactly this
//! contract, and one conformance suite (`tests/conformance`) checks it.
//!
//! # Contract
//!
//! **Locking.** Every method takes `&self`; implementations are `Sync`, and
//! many threads may call one device at once, each on its own sockets or even
//! on the same socket. A backend holds its device lock only while it touches
//! its state or the chip for a bounded time; it never holds it while waiting
//! for the network, a chip's status, or a deadline. (TinyGo's rule: "don't
//! hold a lock while sleeping".)
//!
//! **Fds.** `socket` hands out fds from a fixed table
//! ([`Capabilities::max_sockets`]); a full table is [`Error::NoMoreSockets`].
//! A closed fd is dead for good: its number carries a generation, so using
//! it again is [`Error::InvalidSockfd`] even after the slot is reused.
//!
//! **Blocking and deadlines.** `connect`, `accept`, `send`, `send_to`,
//! `recv`, `recv_from` and `poll` may wait. They wait until they can make
//! progress — data, buffer space, a connection — and wake as soon as it
//! arrives; they give up with [`Error::Timeout`] at the earlier of the
//! `deadline` argument and the socket's `RecvTimeout` / `SendTimeout`. In
//! non-blocking mode ([`SockOpt::NonBlocking`]) or with
//! [`MsgFlags::DONTWAIT`] they return [`Error::WouldBlock`] instead of
//! waiting (a non-blocking `connect` returns [`Error::InProgress`] and
//! completes in the background; `poll` for `WRITABLE` to learn when).
//!
//! **Partial transfers.** A stream `send` returns as soon as it queued at
//! least one byte; a stream `recv` returns as soon as at least one byte is
//! there. `Ok(0)` from a stream `recv` means the peer closed its side (EOF);
//! an empty receive buffer is [`Error::InvalidArgument`], so `0` is never
//! ambiguous. A datagram `send` sends the whole buffer as one datagram or
//! fails with [`Error::MessageTooLong`]; a datagram `recv` longer than the
//! buffer is truncated to it (the rest of that datagram is dropped, as in
//! POSIX without `MSG_TRUNC`).
//!
//! **Close.** `close` frees the fd at once. Data already accepted by `send`
//! is still delivered: a TCP connection closes gracefully (FIN after the
//! queued data) in the background, unless `Linger(Some(d))` asks `close` to
//! wait up to `d`, or `Linger(Some(0))` asks for a reset.
//!
//! **TLS.** A `Protocol::Tls` socket speaks TLS 1.3 after `connect`, using
//! the `host` given to `connect` for SNI and the certificate's name check.
//! Where the TLS runs is [`Capabilities::tls`]. What it trusts is the same
//! call on every backend: [`Netdever::set_tls_trust`] with the app's CA
//! certificates ([`TlsTrust::Cas`]) or the explicitly insecure
//! [`TlsTrust::DangerAcceptAnyCertificate`]. A chain that leads to none of
//! the CAs, or a certificate for another name, fails `connect` with
//! [`Error::CertificateInvalid`]; other handshake failures are
//! [`Error::Tls`].

use crate::error::{Error, Result};
use crate::time::{Deadline, Instant};
use crate::types::*;

/// TLS support of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TlsSupport {
    /// `Protocol::Tls` sockets are refused with `ProtocolNotSupported`.
    None,
    /// TLS runs in software on the host MCU (embedded-tls over the TCP socket).
    Software,
    /// TLS runs in the co-processor's firmware.
    Firmware,
}

/// What `Protocol::Tls` sockets trust: see [`Netdever::set_tls_trust`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsTrust<'a> {
    /// Verify the server's chain against these CA certificates (DER; see
    /// `tls::pem_to_der` for PEM) and its name against the host given to
    /// `connect`.
    Cas(&'a [&'a [u8]]),
    /// **Insecure**: accept any certificate from anyone. The connection is
    /// encrypted but not authenticated, so anyone on the path can read and
    /// change it. For tests and for links authenticated by other means only.
    DangerAcceptAnyCertificate,
}

/// What a backend can do, so apps and tests can adapt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Capabilities {
    /// How many sockets can be open at once (fd table size).
    pub max_sockets: usize,
    /// How many TCP connections can be live at once, counting listener backlogs.
    pub max_tcp: usize,
    /// How many UDP sockets can be open at once.
    pub max_udp: usize,
    /// Where TLS runs, if anywhere.
    pub tls: TlsSupport,
    /// Whether `listen` / `accept` work (TCP servers).
    pub server: bool,
    /// Whether DNS (`get_host_by_name`) works.
    pub dns: bool,
    /// Whether the device runs a DHCP client.
    pub dhcp: bool,
}

/// BSD-socket-like calls on socket fds. See the [module docs](self) for the
/// contract every implementation keeps.
pub trait Socketer: Sync {
    /// Create a socket. Only `AddressFamily::Inet` is served today;
    /// `Stream` goes with `Tcp` or `Tls`, `Dgram` with `Udp`.
    fn socket(&self, family: AddressFamily, ty: SockType, proto: Protocol) -> Result<Sockfd>;

    /// Bind to a local address (port 0 picks an ephemeral port).
    fn bind(&self, fd: Sockfd, addr: SocketAddr) -> Result<()>;

    /// Connect to `addr`. For TCP/TLS this opens the connection and waits
    /// until it is established; for UDP it sets the default peer and filters
    /// received datagrams to it. `host` is kept for TLS (SNI and the
    /// certificate's name check).
    fn connect(
        &self,
        fd: Sockfd,
        host: Option<&str>,
        addr: SocketAddr,
        deadline: Deadline,
    ) -> Result<()>;

    /// Start listening with room for `backlog` pending connections (at least 1).
    fn listen(&self, fd: Sockfd, backlog: usize) -> Result<()>;

    /// Take the next pending connection, waiting until one arrives.
    fn accept(&self, fd: Sockfd, deadline: Deadline) -> Result<(Sockfd, SocketAddr)>;

    /// Send on a connected socket.
    fn send(&self, fd: Sockfd, buf: &[u8], flags: MsgFlags, deadline: Deadline) -> Result<usize>;

    /// Send a datagram to `addr` (UDP; on a connected TCP socket `addr` must
    /// be the peer or the call is `AlreadyConnected`).
    fn send_to(
        &self,
        fd: Sockfd,
        buf: &[u8],
        flags: MsgFlags,
        addr: SocketAddr,
        deadline: Deadline,
    ) -> Result<usize>;

    /// Receive on a connected socket.
    fn recv(
        &self,
        fd: Sockfd,
        buf: &mut [u8],
        flags: MsgFlags,
        deadline: Deadline,
    ) -> Result<usize>;

    /// Receive a datagram and its source address.
    fn recv_from(
        &self,
        fd: Sockfd,
        buf: &mut [u8],
        flags: MsgFlags,
        deadline: Deadline,
    ) -> Result<(usize, SocketAddr)>;

    /// Shut down one or both halves of a connection.
    fn shutdown(&self, fd: Sockfd, how: Shutdown) -> Result<()>;

    /// Close the socket and free its fd (see the contract for queued data).
    fn close(&self, fd: Sockfd) -> Result<()>;

    /// Set an option.
    fn set_sock_opt(&self, fd: Sockfd, opt: SockOpt) -> Result<()>;

    /// Read an option.
    fn get_sock_opt(&self, fd: Sockfd, name: SockOptName) -> Result<SockOpt>;

    /// Wait until at least one of `fds` is ready or the deadline passes, like
    /// `poll(2)`. Fills each `revents` and returns how many are ready
    /// (`Ok(0)` when the deadline passed). An fd that is not open gets
    /// `ERROR` in `revents` (POSIX `POLLNVAL`).
    fn poll(&self, fds: &mut [PollFd], deadline: Deadline) -> Result<usize>;

    /// The local address of a socket.
    fn local_addr(&self, fd: Sockfd) -> Result<SocketAddr>;

    /// The peer address of a connected socket.
    fn peer_addr(&self, fd: Sockfd) -> Result<SocketAddr>;

    /// The device clock, for building deadlines.
    fn now(&self) -> Instant;
}

/// A network device: sockets plus DNS and addressing (L4/L3).
pub trait Netdever: Socketer {
    /// Resolve a host name. A literal address is returned as-is; IPv4 only
    /// for now (`Inet6` gives `FamilyNotSupported`).
    fn get_host_by_name(&self, name: &str, family: AddressFamily) -> Result<IpAddr>;

    /// The device's IP address, `NetworkDown` if it has none yet.
    fn addr(&self) -> Result<IpAddr>;

    /// The full IPv4 configuration, `NetworkDown` if none.
    fn ip_config(&self) -> Result<IpConfig>;

    /// Set a static IPv4 configuration (stops DHCP on the full stack).
    fn set_addr(&self, config: IpConfig) -> Result<()>;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Set what `Protocol::Tls` sockets trust from now on (see the
    /// [module docs](self)). Backends with [`TlsSupport::Firmware`] copy
    /// the CA certificates into the co-processor during the call, so
    /// `trust` need not outlive it; until this is called their TLS
    /// `connect` is [`Error::InvalidArgument`] (nothing trusted).
    /// `tls::SoftTls` takes its trust at construction and
    /// accepts a call that names the same trust. Backends without TLS
    /// (and the default) answer [`Error::NotSupported`].
    fn set_tls_trust(&self, trust: TlsTrust<'_>) -> Result<()> {
        let _ = trust;
        Err(Error::NotSupported)
    }
}

/// A whole network device — sockets and link control — as a board's
/// `probe()` returns it (TinyGo returns the same driver as both its
/// `Netlinker` and its `Netdever`).
pub trait Device: Netdever + crate::Netlinker {}

impl<T: Netdever + crate::Netlinker + ?Sized> Device for T {}

/// Implement `Socketer` and `Netdever` for a wrapper by forwarding every
/// call to `$inner` (an expression of `self` that yields the wrapped device).
/// Used for `&T`, `Box<T>`, `Arc<T>` and host wrappers such as `HostStack`.
#[macro_export]
#[doc(hidden)]
macro_rules! forward_netdever {
    ([$($gen:tt)*] $ty:ty, |$s:ident| $inner:expr) => {
        impl<$($gen)*> $crate::Socketer for $ty {
            fn socket(&$s, family: $crate::AddressFamily, ty: $crate::SockType, proto: $crate::Protocol) -> $crate::Result<$crate::Sockfd> {
                $crate::Socketer::socket($inner, family, ty, proto)
            }
            fn bind(&$s, fd: $crate::Sockfd, addr: $crate::SocketAddr) -> $crate::Result<()> {
                $crate::Socketer::bind($inner, fd, addr)
            }
            fn connect(&$s, fd: $crate::Sockfd, host: Option<&str>, addr: $crate::SocketAddr, deadline: $crate::Deadline) -> $crate::Result<()> {
                $crate::Socketer::connect($inner, fd, host, addr, deadline)
            }
            fn listen(&$s, fd: $crate::Sockfd, backlog: usize) -> $crate::Result<()> {
                $crate::Socketer::listen($inner, fd, backlog)
            }
            fn accept(&$s, fd: $crate::Sockfd, deadline: $crate::Deadline) -> $crate::Result<($crate::Sockfd, $crate::SocketAddr)> {
                $crate::Socketer::accept($inner, fd, deadline)
            }
            fn send(&$s, fd: $crate::Sockfd, buf: &[u8], flags: $crate::MsgFlags, deadline: $crate::Deadline) -> $crate::Result<usize> {
                $crate::Socketer::send($inner, fd, buf, flags, deadline)
            }
            fn send_to(&$s, fd: $crate::Sockfd, buf: &[u8], flags: $crate::MsgFlags, addr: $crate::SocketAddr, deadline: $crate::Deadline) -> $crate::Result<usize> {
                $crate::Socketer::send_to($inner, fd, buf, flags, addr, deadline)
            }
            fn recv(&$s, fd: $crate::Sockfd, buf: &mut [u8], flags: $crate::MsgFlags, deadline: $crate::Deadline) -> $crate::Result<usize> {
                $crate::Socketer::recv($inner, fd, buf, flags, deadline)
            }
            fn recv_from(&$s, fd: $crate::Sockfd, buf: &mut [u8], flags: $crate::MsgFlags, deadline: $crate::Deadline) -> $crate::Result<(usize, $crate::SocketAddr)> {
                $crate::Socketer::recv_from($inner, fd, buf, flags, deadline)
            }
            fn shutdown(&$s, fd: $crate::Sockfd, how: $crate::Shutdown) -> $crate::Result<()> {
                $crate::Socketer::shutdown($inner, fd, how)
            }
            fn close(&$s, fd: $crate::Sockfd) -> $crate::Result<()> {
                $crate::Socketer::close($inner, fd)
            }
            fn set_sock_opt(&$s, fd: $crate::Sockfd, opt: $crate::SockOpt) -> $crate::Result<()> {
                $crate::Socketer::set_sock_opt($inner, fd, opt)
            }
            fn get_sock_opt(&$s, fd: $crate::Sockfd, name: $crate::SockOptName) -> $crate::Result<$crate::SockOpt> {
                $crate::Socketer::get_sock_opt($inner, fd, name)
            }
            fn poll(&$s, fds: &mut [$crate::PollFd], deadline: $crate::Deadline) -> $crate::Result<usize> {
                $crate::Socketer::poll($inner, fds, deadline)
            }
            fn local_addr(&$s, fd: $crate::Sockfd) -> $crate::Result<$crate::SocketAddr> {
                $crate::Socketer::local_addr($inner, fd)
            }
            fn peer_addr(&$s, fd: $crate::Sockfd) -> $crate::Result<$crate::SocketAddr> {
                $crate::Socketer::peer_addr($inner, fd)
            }
            fn now(&$s) -> $crate::Instant {
                $crate::Socketer::now($inner)
            }
        }

        impl<$($gen)*> $crate::Netdever for $ty {
            fn get_host_by_name(&$s, name: &str, family: $crate::AddressFamily) -> $crate::Result<$crate::IpAddr> {
                $crate::Netdever::get_host_by_name($inner, name, family)
            }
            fn addr(&$s) -> $crate::Result<$crate::IpAddr> {
                $crate::Netdever::addr($inner)
            }
            fn ip_config(&$s) -> $crate::Result<$crate::IpConfig> {
                $crate::Netdever::ip_config($inner)
            }
            fn set_addr(&$s, config: $crate::IpConfig) -> $crate::Result<()> {
                $crate::Netdever::set_addr($inner, config)
            }
            fn capabilities(&$s) -> $crate::Capabilities {
                $crate::Netdever::capabilities($inner)
            }
            fn set_tls_trust(&$s, trust: $crate::TlsTrust<'_>) -> $crate::Result<()> {
                $crate::Netdever::set_tls_trust($inner, trust)
            }
        }
    };
}

forward_netdever!([T: Netdever + ?Sized] &T, |self| &**self);
#[cfg(feature = "std")]
forward_netdever!([T: Netdever + Send + ?Sized] std::boxed::Box<T>, |self| &**self);
#[cfg(feature = "std")]
forward_netdever!([T: Netdever + Send + ?Sized] std::sync::Arc<T>, |self| &**self);
