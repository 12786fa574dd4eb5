//! Per-fd state of the smoltcp backend.

use smoltcp::iface::SocketHandle;

pub(crate) use crate::sockstate::SockState as Common;
use crate::types::SocketAddr;

/// Most pending connections one listener can hold.
pub const MAX_BACKLOG: usize = 16;

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
