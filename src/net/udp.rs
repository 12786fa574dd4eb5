//! UDP sockets.

use crate::error::{Error, Result};
use crate::socketer::Netdever;
use crate::time::{Deadline, Instant};
use crate::types::*;

/// A UDP socket, bound or connected. Closed on drop.
pub struct UdpSocket<D: Netdever> {
    dev: D,
    fd: Sockfd,
    read_deadline: Deadline,
    write_deadline: Deadline,
}

impl<D: Netdever> UdpSocket<D> {
    /// A socket bound to `addr` (port 0: an ephemeral port).
    pub fn bind(dev: D, addr: SocketAddr) -> Result<Self> {
        let fd = dev.socket(AddressFamily::Inet, SockType::Dgram, Protocol::Udp)?;
        if let Err(e) = dev.bind(fd, addr) {
            let _ = dev.close(fd);
            return Err(e);
        }
        Ok(UdpSocket {
            dev,
            fd,
            read_deadline: Deadline::Never,
            write_deadline: Deadline::Never,
        })
    }

    /// Set the default peer; `recv` then only sees its datagrams.
    pub fn connect(&self, addr: SocketAddr) -> Result<()> {
        self.dev.connect(self.fd, None, addr, self.write_deadline)
    }

    /// Send one datagram to the connected peer.
    pub fn send(&self, buf: &[u8]) -> Result<usize> {
        self.dev
            .send(self.fd, buf, MsgFlags::NONE, self.write_deadline)
    }

    /// Send one datagram to `addr`.
    pub fn send_to(&self, buf: &[u8], addr: SocketAddr) -> Result<usize> {
        self.dev
            .send_to(self.fd, buf, MsgFlags::NONE, addr, self.write_deadline)
    }

    /// Receive one datagram (truncated to `buf`).
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        self.dev
            .recv(self.fd, buf, MsgFlags::NONE, self.read_deadline)
    }

    /// Receive one datagram and its source.
    pub fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr)> {
        self.dev
            .recv_from(self.fd, buf, MsgFlags::NONE, self.read_deadline)
    }

    /// Look at the next datagram without taking it.
    pub fn peek_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr)> {
        self.dev
            .recv_from(self.fd, buf, MsgFlags::PEEK, self.read_deadline)
    }

    /// Set both deadlines.
    pub fn set_deadline(&mut self, at: Option<Instant>) {
        let d = at.map_or(Deadline::Never, Deadline::At);
        self.read_deadline = d;
        self.write_deadline = d;
    }

    /// Deadline for receives.
    pub fn set_read_deadline(&mut self, at: Option<Instant>) {
        self.read_deadline = at.map_or(Deadline::Never, Deadline::At);
    }

    /// `SO_BROADCAST`.
    pub fn set_broadcast(&self, on: bool) -> Result<()> {
        self.dev.set_sock_opt(self.fd, SockOpt::Broadcast(on))
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.dev.local_addr(self.fd)
    }

    /// The connected peer.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        self.dev.peer_addr(self.fd)
    }

    /// The socket fd.
    pub fn fd(&self) -> Sockfd {
        self.fd
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.dev
    }
}

impl<D: Netdever> Drop for UdpSocket<D> {
    fn drop(&mut self) {
        let _ = self.dev.close(self.fd);
    }
}

impl<D: Netdever> UdpSocket<D> {
    /// Receive with a one-off deadline.
    pub fn recv_from_until(
        &self,
        buf: &mut [u8],
        deadline: Deadline,
    ) -> Result<(usize, SocketAddr)> {
        if buf.is_empty() {
            return Err(Error::InvalidArgument);
        }
        self.dev.recv_from(self.fd, buf, MsgFlags::NONE, deadline)
    }
}
