//! Socket-level vocabulary: fds, families, types, protocols, flags,
//! options, readiness. Numeric values follow TinyGo's netdev (which follows
//! Linux), so they can cross an FFI boundary unchanged.

use core::time::Duration;

pub use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};

/// A socket file descriptor.
///
/// The low 8 bits index the backend's fd table; the bits above carry a
/// generation that changes every time the slot is freed, so a stale fd kept
/// after `close` is rejected with [`Error::InvalidSockfd`](crate::Error::InvalidSockfd)
/// instead of reaching whatever socket reuses the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Sockfd(i32);

impl Sockfd {
    /// Bits of the raw fd that index the table.
    pub const INDEX_BITS: u32 = 8;

    /// Build an fd from a table index and generation (used by backends).
    pub const fn new(index: u8, generation: u16) -> Self {
        Sockfd(((generation as i32 & 0x7fff) << Self::INDEX_BITS) | index as i32)
    }

    /// Rebuild an fd from its raw integer (as printed or passed over FFI).
    pub const fn from_raw(raw: i32) -> Self {
        Sockfd(raw)
    }

    /// The raw integer value, always non-negative for a valid fd.
    pub const fn raw(self) -> i32 {
        self.0
    }

    /// Table index part.
    pub const fn index(self) -> usize {
        (self.0 & 0xff) as usize
    }

    /// Generation part.
    pub const fn generation(self) -> u16 {
        ((self.0 >> Self::INDEX_BITS) & 0x7fff) as u16
    }
}

impl core::fmt::Display for Sockfd {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Address family (`AF_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum AddressFamily {
    /// IPv4 (`AF_INET` = 2).
    Inet = 2,
    /// IPv6 (`AF_INET6` = 10); reserved in the API, not served by any backend yet.
    Inet6 = 10,
}

/// Socket type (`SOCK_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum SockType {
    /// Byte stream (`SOCK_STREAM` = 1): TCP or TLS.
    Stream = 1,
    /// Datagrams (`SOCK_DGRAM` = 2): UDP.
    Dgram = 2,
}

/// Transport protocol (`IPPROTO_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Protocol {
    /// `IPPROTO_TCP` = 6.
    Tcp = 6,
    /// `IPPROTO_UDP` = 17.
    Udp = 17,
    /// `IPPROTO_TLS` = 0xFE, TinyGo's pseudo-protocol: a stream socket that
    /// speaks TLS after `connect`, using the connect host name for SNI.
    Tls = 0xFE,
}

/// TinyGo's `IPPROTO_TLS` value.
pub const IPPROTO_TLS: u8 = Protocol::Tls as u8;

impl Protocol {
    /// The socket type this protocol runs over.
    pub fn sock_type(self) -> SockType {
        match self {
            Protocol::Tcp | Protocol::Tls => SockType::Stream,
            Protocol::Udp => SockType::Dgram,
        }
    }
}

/// Flags for send / recv (`MSG_*`), combined with `|`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MsgFlags(u32);

impl MsgFlags {
    /// No flags.
    pub const NONE: MsgFlags = MsgFlags(0);
    /// Return data without removing it from the receive queue (`MSG_PEEK` = 0x2).
    pub const PEEK: MsgFlags = MsgFlags(0x2);
    /// Do not block for this call only (`MSG_DONTWAIT` = 0x40).
    pub const DONTWAIT: MsgFlags = MsgFlags(0x40);

    /// Raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }
    /// Build from raw bits; unknown bits are kept and rejected by the call.
    pub const fn from_bits(bits: u32) -> Self {
        MsgFlags(bits)
    }
    /// Whether every flag in `other` is set.
    pub const fn contains(self, other: MsgFlags) -> bool {
        self.0 & other.0 == other.0
    }
    /// Whether any bit outside `PEEK | DONTWAIT` is set.
    pub const fn has_unknown(self) -> bool {
        self.0 & !(Self::PEEK.0 | Self::DONTWAIT.0) != 0
    }
}

impl core::ops::BitOr for MsgFlags {
    type Output = MsgFlags;
    fn bitor(self, rhs: MsgFlags) -> MsgFlags {
        MsgFlags(self.0 | rhs.0)
    }
}

/// Which half of a connection `shutdown` closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Shutdown {
    /// No more receives (`SHUT_RD`).
    Read,
    /// No more sends; a TCP FIN goes out after queued data (`SHUT_WR`).
    Write,
    /// Both (`SHUT_RDWR`).
    Both,
}

/// Socket options with their values. `SockOptName` names them for `get_sock_opt`.
///
/// Levels follow TinyGo/Linux: `SOL_SOCKET` for the first group,
/// `IPPROTO_TCP` for `NoDelay`, `KeepIdle`, `KeepInterval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SockOpt {
    /// `SO_KEEPALIVE`: send TCP keep-alives on an idle connection.
    KeepAlive(bool),
    /// `TCP_KEEPINTVL`: the interval between keep-alive probes.
    KeepInterval(Duration),
    /// `TCP_NODELAY`: disable Nagle's algorithm.
    NoDelay(bool),
    /// `SO_LINGER`: `None` closes in the background (default); `Some(d)`
    /// makes `close` wait up to `d` for queued data to be acknowledged, and
    /// `Some(0)` resets the connection at once.
    Linger(Option<Duration>),
    /// `SO_RCVTIMEO`: bound on receive / accept waits (`None` = forever).
    RecvTimeout(Option<Duration>),
    /// `SO_SNDTIMEO`: bound on send / connect waits (`None` = forever).
    SendTimeout(Option<Duration>),
    /// `O_NONBLOCK`: calls that would wait return `WouldBlock` (connect: `InProgress`).
    NonBlocking(bool),
    /// `SO_REUSEADDR`: accepted for compatibility.
    ReuseAddr(bool),
    /// `SO_BROADCAST`: allow UDP sends to broadcast addresses.
    Broadcast(bool),
    /// `SO_ERROR`: read-only; the pending error, cleared on read.
    SocketError(Option<crate::Error>),
}

impl SockOpt {
    /// The option's name (without its value).
    pub fn name(&self) -> SockOptName {
        match self {
            SockOpt::KeepAlive(_) => SockOptName::KeepAlive,
            SockOpt::KeepInterval(_) => SockOptName::KeepInterval,
            SockOpt::NoDelay(_) => SockOptName::NoDelay,
            SockOpt::Linger(_) => SockOptName::Linger,
            SockOpt::RecvTimeout(_) => SockOptName::RecvTimeout,
            SockOpt::SendTimeout(_) => SockOptName::SendTimeout,
            SockOpt::NonBlocking(_) => SockOptName::NonBlocking,
            SockOpt::ReuseAddr(_) => SockOptName::ReuseAddr,
            SockOpt::Broadcast(_) => SockOptName::Broadcast,
            SockOpt::SocketError(_) => SockOptName::SocketError,
        }
    }
}

/// Names of [`SockOpt`]s, for `get_sock_opt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum SockOptName {
    KeepAlive,
    KeepInterval,
    NoDelay,
    Linger,
    RecvTimeout,
    SendTimeout,
    NonBlocking,
    ReuseAddr,
    Broadcast,
    SocketError,
}

/// Readiness bits for [`Socketer::poll`](crate::Socketer::poll) (`POLL*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Events(u16);

impl Events {
    /// Nothing.
    pub const NONE: Events = Events(0);
    /// Data (or EOF, or a pending connection on a listener) can be read without blocking.
    pub const READABLE: Events = Events(0x1);
    /// Data can be sent without blocking (a connect has completed).
    pub const WRITABLE: Events = Events(0x4);
    /// An error is pending (read it with `SocketError`).
    pub const ERROR: Events = Events(0x8);
    /// The peer hung up / the connection is closed.
    pub const HANGUP: Events = Events(0x10);

    /// Raw bits.
    pub const fn bits(self) -> u16 {
        self.0
    }
    /// Whether all of `other` is set.
    pub const fn contains(self, other: Events) -> bool {
        self.0 & other.0 == other.0
    }
    /// Whether any of `other` is set.
    pub const fn intersects(self, other: Events) -> bool {
        self.0 & other.0 != 0
    }
    /// Whether nothing is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl core::ops::BitOr for Events {
    type Output = Events;
    fn bitor(self, rhs: Events) -> Events {
        Events(self.0 | rhs.0)
    }
}

impl core::ops::BitOrAssign for Events {
    fn bitor_assign(&mut self, rhs: Events) {
        self.0 |= rhs.0
    }
}

impl core::ops::BitAnd for Events {
    type Output = Events;
    fn bitand(self, rhs: Events) -> Events {
        Events(self.0 & rhs.0)
    }
}

/// One entry of a [`Socketer::poll`](crate::Socketer::poll) set, like `struct pollfd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PollFd {
    /// The socket to watch.
    pub fd: Sockfd,
    /// What the caller waits for (`ERROR` and `HANGUP` are always reported).
    pub events: Events,
    /// What is ready, filled in by `poll`.
    pub revents: Events,
}

impl PollFd {
    /// Watch `fd` for `events`.
    pub fn new(fd: Sockfd, events: Events) -> Self {
        PollFd {
            fd,
            events,
            revents: Events::NONE,
        }
    }
}

/// Static IPv4 configuration (or what DHCP handed out).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct IpConfig {
    /// The interface address.
    pub addr: Ipv4Addr,
    /// Prefix length (24 for a /24).
    pub prefix_len: u8,
    /// Default gateway, if any.
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers, up to three.
    pub dns: heapless::Vec<Ipv4Addr, 3>,
}

impl IpConfig {
    /// An address with its prefix and nothing else.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Self {
        IpConfig {
            addr,
            prefix_len,
            gateway: None,
            dns: heapless::Vec::new(),
        }
    }

    /// Set the gateway.
    pub fn with_gateway(mut self, gw: Ipv4Addr) -> Self {
        self.gateway = Some(gw);
        self
    }

    /// Add a DNS server (ignored past three).
    pub fn with_dns(mut self, server: Ipv4Addr) -> Self {
        let _ = self.dns.push(server);
        self
    }

    /// A configuration a device can take: a real address and a prefix of
    /// at most 32 bits, else `InvalidArgument`.
    pub fn validate(&self) -> crate::Result<()> {
        if self.prefix_len > 32 || self.addr.is_unspecified() {
            return Err(crate::Error::InvalidArgument);
        }
        Ok(())
    }

    /// Parse `A.B.C.D/N`.
    pub fn parse_cidr(s: &str) -> Option<Self> {
        let (a, n) = s.split_once('/')?;
        let addr: Ipv4Addr = a.parse().ok()?;
        let prefix_len: u8 = n.parse().ok()?;
        (prefix_len <= 32).then(|| IpConfig::new(addr, prefix_len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockfd_round_trip() {
        let fd = Sockfd::new(17, 0x1234);
        assert_eq!(fd.index(), 17);
        assert_eq!(fd.generation(), 0x1234);
        assert!(fd.raw() >= 0);
        assert_eq!(Sockfd::from_raw(fd.raw()), fd);
        assert_eq!(Sockfd::new(3, 0x7fff).generation(), 0x7fff);
    }

    #[test]
    fn flags() {
        let f = MsgFlags::PEEK | MsgFlags::DONTWAIT;
        assert!(f.contains(MsgFlags::PEEK));
        assert!(!f.has_unknown());
        assert!(MsgFlags::from_bits(0x100).has_unknown());
        assert_eq!(IPPROTO_TLS, 0xFE);
    }

    #[test]
    fn cidr() {
        let c = IpConfig::parse_cidr("10.0.0.2/24").unwrap();
        assert_eq!(c.addr, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(c.prefix_len, 24);
        assert!(IpConfig::parse_cidr("10.0.0.2/33").is_none());
        assert!(IpConfig::parse_cidr("10.0.0.2").is_none());
    }
}
