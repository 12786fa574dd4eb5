//! A tiny convenience layer over the raw socket calls: a TCP connection
//! that remembers its device, its fd and one deadline for every call, and
//! closes itself when dropped. The `socket` example does the same work with
//! the raw [`Socketer`](netdever::Socketer) calls only.

use std::net::SocketAddr;
use std::time::Duration;

use netdever::{
    AddressFamily, Deadline, Error, MsgFlags, Netdever, Protocol, Shutdown, SockOpt, SockType,
    Sockfd,
};

/// An open TCP connection on some device.
pub struct TcpConn<'a> {
    dev: &'a dyn Netdever,
    fd: Option<Sockfd>,
    deadline: Deadline,
}

impl<'a> TcpConn<'a> {
    /// Connect to `addr`, giving up after `timeout`.
    pub fn connect(
        dev: &'a dyn Netdever,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let fd = dev.socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)?;
        let conn = TcpConn {
            dev,
            fd: Some(fd),
            deadline: Deadline::Never,
        };
        dev.connect(fd, None, addr, super::within(dev, timeout))?;
        Ok(conn)
    }

    /// Wrap an fd returned by `accept`.
    pub fn from_fd(dev: &'a dyn Netdever, fd: Sockfd) -> Self {
        TcpConn {
            dev,
            fd: Some(fd),
            deadline: Deadline::Never,
        }
    }

    /// Every later call gives up at `deadline`.
    pub fn set_deadline(&mut self, deadline: Deadline) {
        self.deadline = deadline;
    }

    fn fd(&self) -> Sockfd {
        self.fd.expect("open connection")
    }

    /// Send all of `buf`.
    pub fn write_all(&self, mut buf: &[u8]) -> Result<(), Error> {
        while !buf.is_empty() {
            let n = self
                .dev
                .send(self.fd(), buf, MsgFlags::NONE, self.deadline)?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Receive what is there (at least one byte); `Ok(0)` at end of stream.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, Error> {
        self.dev.recv(self.fd(), buf, MsgFlags::NONE, self.deadline)
    }

    /// No more sends: the peer sees end of stream after the queued data.
    pub fn shutdown_write(&self) -> Result<(), Error> {
        self.dev.shutdown(self.fd(), Shutdown::Write)
    }

    /// Local address.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.dev.local_addr(self.fd())
    }

    /// Peer address.
    pub fn peer_addr(&self) -> Result<SocketAddr, Error> {
        self.dev.peer_addr(self.fd())
    }

    /// Close, waiting up to `wait` until the peer has acknowledged every
    /// byte sent (`SO_LINGER`).
    pub fn close_flushed(mut self, wait: Duration) -> Result<(), Error> {
        let fd = self.fd.take().expect("open connection");
        let r = self.dev.set_sock_opt(fd, SockOpt::Linger(Some(wait)));
        self.dev.close(fd)?;
        r
    }
}

impl Drop for TcpConn<'_> {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            let _ = self.dev.close(fd);
        }
    }
}
