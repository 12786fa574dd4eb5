//! A std-like `net` layer over any [`Netdever`]: [`TcpStream`],
//! [`TcpListener`], [`UdpSocket`] and [`TlsStream`], with deadlines, `embedded-io`
//! `Read`/`Write` (and `std::io` under `std`), plus [`Nal`], the
//! embedded-nal stack traits, so crates written against those run unchanged.
//!
//! This is what TinyGo's `net` package is to its netdev: each type owns one
//! socket fd and turns its calls into `Socketer` calls. The device is a type
//! parameter, so `TcpStream<&HostStack>`, `TcpStream<Arc<dyn Device>>` and a
//! bare-metal `TcpStream<&Stack<..>>` are the same code.
//!
//! Deadlines work like Go's `SetDeadline`: an absolute instant on the
//! device clock that bounds every later call until it is changed.

mod nal;
mod tcp;
mod tls;
mod udp;

pub use nal::Nal;
pub use tcp::{TcpListener, TcpStream};
pub use tls::TlsStream;
pub use udp::UdpSocket;

use crate::error::{Error, Result};
use crate::socketer::Netdever;
use crate::types::{AddressFamily, IpAddr, SocketAddr};

/// Resolve `"host:port"` (a name or a dotted IPv4 address) to a socket
/// address through the device's DNS. Returns the host part too (for SNI).
pub fn resolve<'s>(dev: &impl Netdever, host_port: &'s str) -> Result<(SocketAddr, &'s str)> {
    let (host, port) = host_port.rsplit_once(':').ok_or(Error::InvalidArgument)?;
    let port: u16 = port.parse().map_err(|_| Error::InvalidArgument)?;
    let ip: IpAddr = dev.get_host_by_name(host, AddressFamily::Inet)?;
    Ok((SocketAddr::new(ip, port), host))
}

impl embedded_io::Error for Error {
    fn kind(&self) -> embedded_io::ErrorKind {
        use embedded_io::ErrorKind as K;
        match self {
            Error::ConnectionRefused => K::ConnectionRefused,
            Error::ConnectionReset => K::ConnectionReset,
            Error::ConnectionAborted => K::ConnectionAborted,
            Error::NotConnected => K::NotConnected,
            Error::AddrInUse => K::AddrInUse,
            Error::AddrNotAvailable => K::AddrNotAvailable,
            Error::BrokenPipe => K::BrokenPipe,
            Error::InvalidArgument => K::InvalidInput,
            Error::Timeout => K::TimedOut,
            Error::NotSupported | Error::ProtocolNotSupported => K::Unsupported,
            Error::HostUnknown => K::NotFound,
            Error::NoMoreSockets => K::OutOfMemory,
            _ => K::Other,
        }
    }
}
