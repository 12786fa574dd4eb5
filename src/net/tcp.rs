//! TCP streams and listeners.

use core::time::Duration;

use crate::error::{Error, Result};
use crate::socketer::Netdever;
use crate::time::{Deadline, Instant};
use crate::types::*;

/// A connected TCP socket. Closing happens on drop (queued data is still
/// delivered, see the contract in [`crate::socketer`]).
pub struct TcpStream<D: Netdever> {
    dev: D,
    fd: Sockfd,
    read_deadline: Deadline,
    write_deadline: Deadline,
}

impl<D: Netdever> TcpStream<D> {
    /// Connect to `addr`, waiting as long as it takes.
    pub fn connect(dev: D, addr: SocketAddr) -> Result<Self> {
        Self::connect_with(dev, None, addr, Deadline::Never)
    }

    /// Connect to `addr`, giving up after `timeout`.
    pub fn connect_timeout(dev: D, addr: SocketAddr, timeout: Duration) -> Result<Self> {
        let d = Deadline::after(dev.now(), timeout);
        Self::connect_with(dev, None, addr, d)
    }

    /// Resolve `"host:port"` and connect; the host name is passed on for
    /// TLS (SNI) on TLS sockets.
    pub fn dial(dev: D, host_port: &str) -> Result<Self> {
        let (addr, host) = super::resolve(&dev, host_port)?;
        Self::connect_with(dev, Some(host), addr, Deadline::Never)
    }

    /// Open a socket of protocol `proto` (TCP, or TLS where the device has
    /// it) and connect it.
    pub fn connect_proto(
        dev: D,
        proto: Protocol,
        host: Option<&str>,
        addr: SocketAddr,
        deadline: Deadline,
    ) -> Result<Self> {
        let fd = dev.socket(AddressFamily::Inet, SockType::Stream, proto)?;
        match dev.connect(fd, host, addr, deadline) {
            Ok(()) => Ok(Self::from_fd(dev, fd)),
            Err(e) => {
                let _ = dev.close(fd);
                Err(e)
            }
        }
    }

    fn connect_with(
        dev: D,
        host: Option<&str>,
        addr: SocketAddr,
        deadline: Deadline,
    ) -> Result<Self> {
        Self::connect_proto(dev, Protocol::Tcp, host, addr, deadline)
    }

    /// Wrap an already connected fd (ownership passes to the stream).
    pub fn from_fd(dev: D, fd: Sockfd) -> Self {
        TcpStream {
            dev,
            fd,
            read_deadline: Deadline::Never,
            write_deadline: Deadline::Never,
        }
    }

    /// The socket fd.
    pub fn fd(&self) -> Sockfd {
        self.fd
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// Read what is there (at least one byte), `Ok(0)` at EOF.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.dev
            .recv(self.fd, buf, MsgFlags::NONE, self.read_deadline)
    }

    /// Read without consuming.
    pub fn peek(&self, buf: &mut [u8]) -> Result<usize> {
        self.dev
            .recv(self.fd, buf, MsgFlags::PEEK, self.read_deadline)
    }

    /// Write what fits (at least one byte).
    pub fn write(&self, buf: &[u8]) -> Result<usize> {
        self.dev
            .send(self.fd, buf, MsgFlags::NONE, self.write_deadline)
    }

    /// Write all of `buf`.
    pub fn write_all(&self, mut buf: &[u8]) -> Result<()> {
        while !buf.is_empty() {
            let n = self.write(buf)?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Read exactly `buf.len()` bytes (`NotConnected` on early EOF).
    pub fn read_exact(&self, mut buf: &mut [u8]) -> Result<()> {
        while !buf.is_empty() {
            match self.read(buf)? {
                0 => return Err(Error::NotConnected),
                n => buf = &mut buf[n..],
            }
        }
        Ok(())
    }

    /// Set both deadlines (`None`: no deadline).
    pub fn set_deadline(&mut self, at: Option<Instant>) {
        self.set_read_deadline(at);
        self.set_write_deadline(at);
    }

    /// Deadline for reads.
    pub fn set_read_deadline(&mut self, at: Option<Instant>) {
        self.read_deadline = at.map_or(Deadline::Never, Deadline::At);
    }

    /// Deadline for writes.
    pub fn set_write_deadline(&mut self, at: Option<Instant>) {
        self.write_deadline = at.map_or(Deadline::Never, Deadline::At);
    }

    /// A per-call read timeout (`SO_RCVTIMEO`).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> Result<()> {
        self.dev.set_sock_opt(self.fd, SockOpt::RecvTimeout(t))
    }

    /// A per-call write timeout (`SO_SNDTIMEO`).
    pub fn set_write_timeout(&self, t: Option<Duration>) -> Result<()> {
        self.dev.set_sock_opt(self.fd, SockOpt::SendTimeout(t))
    }

    /// `TCP_NODELAY`.
    pub fn set_nodelay(&self, on: bool) -> Result<()> {
        self.dev.set_sock_opt(self.fd, SockOpt::NoDelay(on))
    }

    /// Half or full shutdown.
    pub fn shutdown(&self, how: Shutdown) -> Result<()> {
        self.dev.shutdown(self.fd, how)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        self.dev.peer_addr(self.fd)
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.dev.local_addr(self.fd)
    }
}

impl<D: Netdever> Drop for TcpStream<D> {
    fn drop(&mut self) {
        let _ = self.dev.close(self.fd);
    }
}

impl<D: Netdever> embedded_io::ErrorType for TcpStream<D> {
    type Error = Error;
}

impl<D: Netdever> embedded_io::Read for TcpStream<D> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        TcpStream::read(self, buf)
    }
}

impl<D: Netdever> embedded_io::Write for TcpStream<D> {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        TcpStream::write(self, buf)
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

#[cfg(feature = "std")]
impl<D: Netdever> std::io::Read for TcpStream<D> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        Ok(TcpStream::read(self, buf)?)
    }
}

#[cfg(feature = "std")]
impl<D: Netdever> std::io::Write for TcpStream<D> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(TcpStream::write(self, buf)?)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A listening TCP socket.
pub struct TcpListener<D: Netdever + Clone> {
    dev: D,
    fd: Sockfd,
    deadline: Deadline,
}

impl<D: Netdever + Clone> TcpListener<D> {
    /// Bind to `addr` and listen with room for `backlog` pending connections.
    pub fn bind(dev: D, addr: SocketAddr, backlog: usize) -> Result<Self> {
        let fd = dev.socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)?;
        let r = dev.bind(fd, addr).and_then(|()| dev.listen(fd, backlog));
        match r {
            Ok(()) => Ok(TcpListener {
                dev,
                fd,
                deadline: Deadline::Never,
            }),
            Err(e) => {
                let _ = dev.close(fd);
                Err(e)
            }
        }
    }

    /// Wait for the next connection.
    pub fn accept(&self) -> Result<(TcpStream<D>, SocketAddr)> {
        let (fd, peer) = self.dev.accept(self.fd, self.deadline)?;
        Ok((TcpStream::from_fd(self.dev.clone(), fd), peer))
    }

    /// Deadline for `accept`.
    pub fn set_deadline(&mut self, at: Option<Instant>) {
        self.deadline = at.map_or(Deadline::Never, Deadline::At);
    }

    /// The listening address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.dev.local_addr(self.fd)
    }

    /// The socket fd.
    pub fn fd(&self) -> Sockfd {
        self.fd
    }
}

impl<D: Netdever + Clone> Drop for TcpListener<D> {
    fn drop(&mut self) {
        let _ = self.dev.close(self.fd);
    }
}
