//! Per-fd state of the smoltcp backend.

use core::time::Duration;

use smoltcp::iface::SocketHandle;

use crate::error::Error;
use crate::types::{Protocol, SocketAddr};

/// Most pending connections one listener can hold.
pub const MAX_BACKLOG: usize = 16;

/// Options every socket carries, whatever its protocol.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Common {
    pub proto: Protocol,
    pub nonblocking: bool,
    pub recv_timeout: Option<Duration>,
    pub send_timeout: Option<Duration>,
    pub linger: Option<Duration>,
    pub reuse_addr: bool,
    pub broadcast: bool,
    pub keep_alive: bool,
    pub keep_interval: Duration,
    /// Error to report through `SO_ERROR` (and `poll`'s `ERROR`).
    pub error: Option<Error>,
    pub shut_rd: bool,
    pub shut_wr: bool,
}

impl Common {
    pub fn new(proto: Protocol) -> Self {
        Common {
            proto,
            nonblocking: false,
            recv_timeout: None,
            send_timeout: None,
            linger: None,
            reuse_addr: false,
            broadcast: false,
            keep_alive: false,
            keep_interval: Duration::from_secs(75),
            error: None,
            shut_rd: false,
            shut_wr: false,
        }
    }
}

/// Where a TCP fd is in its life.
#[derive(Debug)]
pub(crate) enum TcpState {
    /// Created, maybe bound; owns one pooled socket.
    Idle { bound: Option<u16> },
    /// `connect` was called; the socket is in SYN-SENT or further.
    Connecting,
    /// Established at least once (data may still be readable after the peer left).
    Connected {
        /// The peer's FIN was seen: reads past the data return EOF.
        eof: bool,
        /// The connection was reset and that was reported once.
        reset_reported: bool,
    },
    /// Listening: the fd's own socket plus more pooled sockets, all in
    /// LISTEN (or holding a pending connection) on `port`.
    Listening {
        port: u16,
        backlog: heapless::Vec<SocketHandle, MAX_BACKLOG>,
        wanted: usize,
    },
    /// A connect failed; the error was stored in `Common::error`.
    Failed,
}

/// A TCP fd.
#[derive(Debug)]
pub(crate) struct TcpFd {
    pub common: Common,
    /// The fd's socket (for a listener: unused, see `backlog`).
    pub handle: Option<SocketHandle>,
    pub state: TcpState,
    /// Host name given to connect (kept for TLS SNI).
    pub host: heapless::String<64>,
}

/// A UDP fd.
#[derive(Debug)]
pub(crate) struct UdpFd {
    pub common: Common,
    pub handle: SocketHandle,
    pub bound: Option<u16>,
    pub peer: Option<SocketAddr>,
}

/// Any fd.
#[derive(Debug)]
pub(crate) enum Fd {
    Tcp(TcpFd),
    Udp(UdpFd),
}

impl Fd {
    pub fn common(&self) -> &Common {
        match self {
            Fd::Tcp(t) => &t.common,
            Fd::Udp(u) => &u.common,
        }
    }
    pub fn common_mut(&mut self) -> &mut Common {
        match self {
            Fd::Tcp(t) => &mut t.common,
            Fd::Udp(u) => &mut u.common,
        }
    }
}
