//! [`Nal`]: any [`Netdever`] as an embedded-nal stack (`TcpClientStack`,
//! `TcpFullStack`, `UdpClientStack`, `UdpFullStack`, `Dns`), so crates
//! written against embedded-nal (MQTT, CoAP, HTTP clients, ...) run on every
//! netdever backend unchanged.
//!
//! embedded-nal is non-blocking: sockets made here are put in non-blocking
//! mode and `WouldBlock` / `InProgress` become `nb::Error::WouldBlock`.

use embedded_nal::{
    AddrType, Dns, TcpClientStack, TcpError, TcpErrorKind, TcpFullStack, UdpClientStack,
    UdpFullStack,
};

use crate::error::Error;
use crate::socketer::Netdever;
use crate::time::Deadline;
use crate::types::*;

/// Listen backlog used by `TcpFullStack::listen`, which has no parameter for it.
pub const NAL_BACKLOG: usize = 4;

/// An embedded-nal view of a device.
pub struct Nal<D: Netdever>(pub D);

impl TcpError for Error {
    fn kind(&self) -> TcpErrorKind {
        match self {
            Error::BrokenPipe
            | Error::NotConnected
            | Error::ConnectionReset
            | Error::ConnectionAborted => TcpErrorKind::PipeClosed,
            _ => TcpErrorKind::Other,
        }
    }
}

fn nb<T>(r: crate::Result<T>) -> nb::Result<T, Error> {
    r.map_err(|e| match e {
        Error::WouldBlock | Error::InProgress => nb::Error::WouldBlock,
        e => nb::Error::Other(e),
    })
}

impl<D: Netdever> Nal<D> {
    fn open(&self, ty: SockType, proto: Protocol) -> crate::Result<Sockfd> {
        let fd = self.0.socket(AddressFamily::Inet, ty, proto)?;
        if let Err(e) = self.0.set_sock_opt(fd, SockOpt::NonBlocking(true)) {
            let _ = self.0.close(fd);
            return Err(e);
        }
        Ok(fd)
    }

    fn any(port: u16) -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], port))
    }
}

impl<D: Netdever> TcpClientStack for Nal<D> {
    type TcpSocket = Sockfd;
    type Error = Error;

    fn socket(&mut self) -> Result<Sockfd, Error> {
        self.open(SockType::Stream, Protocol::Tcp)
    }

    fn connect(&mut self, socket: &mut Sockfd, remote: SocketAddr) -> nb::Result<(), Error> {
        match self.0.connect(*socket, None, remote, Deadline::Never) {
            // A repeated call after the background connect finished.
            Err(Error::AlreadyConnected) => Ok(()),
            r => nb(r),
        }
    }

    fn send(&mut self, socket: &mut Sockfd, buffer: &[u8]) -> nb::Result<usize, Error> {
        nb(self
            .0
            .send(*socket, buffer, MsgFlags::DONTWAIT, Deadline::Never))
    }

    fn receive(&mut self, socket: &mut Sockfd, buffer: &mut [u8]) -> nb::Result<usize, Error> {
        nb(self
            .0
            .recv(*socket, buffer, MsgFlags::DONTWAIT, Deadline::Never))
    }

    fn close(&mut self, socket: Sockfd) -> Result<(), Error> {
        self.0.close(socket)
    }
}

impl<D: Netdever> TcpFullStack for Nal<D> {
    fn bind(&mut self, socket: &mut Sockfd, local_port: u16) -> Result<(), Error> {
        self.0.bind(*socket, Self::any(local_port))
    }

    fn listen(&mut self, socket: &mut Sockfd) -> Result<(), Error> {
        self.0.listen(*socket, NAL_BACKLOG)
    }

    fn accept(&mut self, socket: &mut Sockfd) -> nb::Result<(Sockfd, SocketAddr), Error> {
        let (fd, peer) = nb(self.0.accept(*socket, Deadline::Never))?;
        if let Err(e) = self.0.set_sock_opt(fd, SockOpt::NonBlocking(true)) {
            let _ = self.0.close(fd);
            return Err(nb::Error::Other(e));
        }
        Ok((fd, peer))
    }
}

impl<D: Netdever> UdpClientStack for Nal<D> {
    type UdpSocket = Sockfd;
    type Error = Error;

    fn socket(&mut self) -> Result<Sockfd, Error> {
        self.open(SockType::Dgram, Protocol::Udp)
    }

    fn connect(&mut self, socket: &mut Sockfd, remote: SocketAddr) -> Result<(), Error> {
        self.0.connect(*socket, None, remote, Deadline::Never)
    }

    fn send(&mut self, socket: &mut Sockfd, buffer: &[u8]) -> nb::Result<(), Error> {
        nb(self
            .0
            .send(*socket, buffer, MsgFlags::DONTWAIT, Deadline::Never))
        .map(|_| ())
    }

    fn receive(
        &mut self,
        socket: &mut Sockfd,
        buffer: &mut [u8],
    ) -> nb::Result<(usize, SocketAddr), Error> {
        nb(self
            .0
            .recv_from(*socket, buffer, MsgFlags::DONTWAIT, Deadline::Never))
    }

    fn close(&mut self, socket: Sockfd) -> Result<(), Error> {
        self.0.close(socket)
    }
}

impl<D: Netdever> UdpFullStack for Nal<D> {
    fn bind(&mut self, socket: &mut Sockfd, local_port: u16) -> Result<(), Error> {
        self.0.bind(*socket, Self::any(local_port))
    }

    fn send_to(
        &mut self,
        socket: &mut Sockfd,
        remote: SocketAddr,
        buffer: &[u8],
    ) -> nb::Result<(), Error> {
        nb(self
            .0
            .send_to(*socket, buffer, MsgFlags::DONTWAIT, remote, Deadline::Never))
        .map(|_| ())
    }
}

impl<D: Netdever> Dns for Nal<D> {
    type Error = Error;

    fn get_host_by_name(
        &mut self,
        hostname: &str,
        addr_type: AddrType,
    ) -> nb::Result<IpAddr, Error> {
        let family = match addr_type {
            AddrType::IPv6 => AddressFamily::Inet6,
            AddrType::IPv4 | AddrType::Either => AddressFamily::Inet,
        };
        self.0
            .get_host_by_name(hostname, family)
            .map_err(nb::Error::Other)
    }

    fn get_host_by_address(
        &mut self,
        _addr: IpAddr,
        _result: &mut [u8],
    ) -> nb::Result<usize, Error> {
        Err(nb::Error::Other(Error::NotSupported))
    }
}
