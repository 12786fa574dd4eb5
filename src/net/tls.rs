//! TLS streams: a [`TcpStream`] whose socket was opened with
//! [`Protocol::Tls`].
//!
//! The TLS itself is the device's business ([`Capabilities::tls`]): the
//! software layer `tls::SoftTls` wrapped around the full stack or the W5500
//! offload, or a co-processor's firmware (ESP-AT SSL links). What the
//! handshake trusts is set on the device ([`Netdever::set_tls_trust`], or
//! the `SoftTls` configuration). A `TlsStream` only guarantees that the
//! connection it holds is a TLS one, that the host name went to `connect`
//! (SNI and the certificate's name check), and that it was never a plain
//! TCP connection by mistake.
//!
//! [`Capabilities::tls`]: crate::Capabilities

use core::time::Duration;

use super::TcpStream;
use crate::error::Result;
use crate::socketer::Netdever;
use crate::time::{Deadline, Instant};
use crate::types::*;

/// A connected TLS stream. Reads and writes carry plaintext; the socket is
/// closed on drop.
pub struct TlsStream<D: Netdever> {
    inner: TcpStream<D>,
}

impl<D: Netdever> TlsStream<D> {
    /// Connect to `addr` and run the handshake for server name `host`,
    /// giving up at `deadline`. A device without TLS answers
    /// `ProtocolNotSupported`; a certificate that does not verify is
    /// `CertificateInvalid`.
    pub fn connect(dev: D, host: &str, addr: SocketAddr, deadline: Deadline) -> Result<Self> {
        let inner = TcpStream::connect_proto(dev, Protocol::Tls, Some(host), addr, deadline)?;
        Ok(TlsStream { inner })
    }

    /// [`connect`](Self::connect) giving up after `timeout`.
    pub fn connect_timeout(
        dev: D,
        host: &str,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<Self> {
        let d = Deadline::after(dev.now(), timeout);
        Self::connect(dev, host, addr, d)
    }

    /// Resolve `"host:port"` with the device's DNS and connect; `host` is
    /// the name the certificate must carry.
    pub fn dial(dev: D, host_port: &str, deadline: Deadline) -> Result<Self> {
        let (addr, host) = super::resolve(&dev, host_port)?;
        Self::connect(dev, host, addr, deadline)
    }

    /// The TCP-level stream underneath (same fd; its calls carry plaintext
    /// too): deadlines, options, addresses.
    pub fn as_tcp(&self) -> &TcpStream<D> {
        &self.inner
    }

    /// The socket's fd.
    pub fn fd(&self) -> Sockfd {
        self.inner.fd()
    }

    /// Read plaintext; `Ok(0)` is the end of the stream.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize> {
        self.inner.read(buf)
    }

    /// Fill `buf` exactly (`NotConnected` if the stream ends first).
    pub fn read_exact(&self, buf: &mut [u8]) -> Result<()> {
        self.inner.read_exact(buf)
    }

    /// Write some plaintext; returns how much was taken.
    pub fn write(&self, buf: &[u8]) -> Result<usize> {
        self.inner.write(buf)
    }

    /// Write all of `buf`.
    pub fn write_all(&self, buf: &[u8]) -> Result<()> {
        self.inner.write_all(buf)
    }

    /// Bound every later read and write by `at` (`None`: no bound).
    pub fn set_deadline(&mut self, at: Option<Instant>) {
        self.inner.set_deadline(at)
    }

    /// Bound later reads by `at`.
    pub fn set_read_deadline(&mut self, at: Option<Instant>) {
        self.inner.set_read_deadline(at)
    }

    /// Bound later writes by `at`.
    pub fn set_write_deadline(&mut self, at: Option<Instant>) {
        self.inner.set_write_deadline(at)
    }

    /// Shut down one or both directions.
    pub fn shutdown(&self, how: Shutdown) -> Result<()> {
        self.inner.shutdown(how)
    }

    /// The server's address.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// Our address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl<D: Netdever> embedded_io::ErrorType for TlsStream<D> {
    type Error = crate::Error;
}

impl<D: Netdever> embedded_io::Read for TlsStream<D> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        TlsStream::read(self, buf)
    }
}

impl<D: Netdever> embedded_io::Write for TlsStream<D> {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        TlsStream::write(self, buf)
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

#[cfg(feature = "std")]
impl<D: Netdever> std::io::Read for TlsStream<D> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        Ok(TlsStream::read(self, buf)?)
    }
}

#[cfg(feature = "std")]
impl<D: Netdever> std::io::Write for TlsStream<D> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(TlsStream::write(self, buf)?)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
