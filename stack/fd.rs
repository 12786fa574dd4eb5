//! Per-fd state of the smoltcp backend.
//!
//! Every slot of the fd table is as large as the largest fd, so this state
//! is kept small: a listener's pending connections are a bit set over the
//! TCP pool (not a list of handles), a UDP peer is an IPv4 address (the only
//! family the stack serves), and nothing is kept that the stack never reads
//! (the host name given to `connect` matters to TLS, which keeps its own).

use smoltcp::iface::SocketHandle;

use super::TcpMask;
pub(crate) use crate::sockstate::SockState as Common;
use crate::types::SocketAddrV4;

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
    /// LISTEN (or holding a pending connection) on `port`. `backlog` has bit
    /// `i` set for the `i`-th pooled TCP socket (see `Inner::tcp_free`).
    Listening {
        port: u16,
        backlog: TcpMask,
        /// How many sockets `listen` asked for, at most [`MAX_BACKLOG`].
        wanted: u8,
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
}

/// A UDP fd.
#[derive(Debug)]
pub(crate) struct UdpFd {
    pub common: Common,
    pub handle: SocketHandle,
    pub bound: Option<u16>,
    pub peer: Option<SocketAddrV4>,
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
