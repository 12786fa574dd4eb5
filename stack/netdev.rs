//! The socket calls of [`Stack`]: `Socketer`, `Netdever` and `Netlinker`.
//!
//! Each call validates its fd and arguments under the lock and returns a
//! typed error for anything wrong; blocking calls are written as attempts
//! run by the shared [`block_on`] loop.

use core::time::Duration;

use smoltcp::socket::{dns, tcp, udp};
use smoltcp::wire::{DnsQueryType, IpAddress, IpEndpoint, IpListenEndpoint};

use super::fd::{Common, Fd, TcpFd, TcpState, UdpFd, MAX_BACKLOG};
use super::{tcp_index, tcp_sockets, Inner, Stack};
use crate::error::{Error, Result};
use crate::netlink::{ConnectMode, ConnectParams, IpMode, Netlinker, NotifyFn};
use crate::phy::Link;
use crate::platform::Platform;
use crate::socketer::{Capabilities, Netdever, Socketer, TlsSupport};
use crate::sockstate::{check_flags, check_remote, check_send_flags, ipv4, Side};
use crate::time::{Deadline, Instant};
use crate::types::*;
use crate::wait::{block_on, Attempt, Blocking};

fn to_std(ep: IpEndpoint) -> SocketAddr {
    SocketAddr::from(ep)
}

impl<'a, L: Link, const FDS: usize, const RAW: usize> Inner<'a, L, FDS, RAW> {
    fn tcp(&mut self, fd: Sockfd) -> Result<&mut TcpFd> {
        match self.fds.get_mut(fd)? {
            Fd::Tcp(t) => Ok(t),
            Fd::Udp(_) => Err(Error::NotSupported),
        }
    }

    /// Move a connecting fd to Connected/Failed according to its socket.
    /// Returns the connect outcome once known.
    fn settle_connect(&mut self, fd: Sockfd) -> Result<Option<Result<()>>> {
        let t = match self.fds.get_mut(fd)? {
            Fd::Tcp(t) => t,
            Fd::Udp(_) => return Ok(Some(Ok(()))),
        };
        if !matches!(t.state, TcpState::Connecting) {
            return Ok(None);
        }
        let h = t.handle.ok_or(Error::InvalidArgument)?;
        match self.sockets.get::<tcp::Socket>(h).state() {
            tcp::State::SynSent | tcp::State::SynReceived => Ok(None),
            tcp::State::Closed => {
                t.state = TcpState::Failed;
                t.common.error = Some(Error::ConnectionRefused);
                Ok(Some(Err(Error::ConnectionRefused)))
            }
            _ => {
                t.state = TcpState::Connected {
                    eof: false,
                    reset_reported: false,
                };
                Ok(Some(Ok(())))
            }
        }
    }

    fn tcp_recv(&mut self, fd: Sockfd, buf: &mut [u8], peek: bool) -> Attempt<(usize, SocketAddr)> {
        if let Err(e) = self.settle_connect(fd) {
            return Attempt::Done(Err(e));
        }
        let Inner { fds, sockets, .. } = self;
        let t = match fds.get_mut(fd) {
            Ok(Fd::Tcp(t)) => t,
            Ok(Fd::Udp(_)) => unreachable!("checked by caller"),
            Err(e) => return Attempt::Done(Err(e)),
        };
        if t.common.shut_rd {
            return Attempt::Done(Ok((0, SocketAddr::from(([0, 0, 0, 0], 0)))));
        }
        let h = match (&t.state, t.handle) {
            (TcpState::Connecting, _) => return Attempt::PENDING,
            (TcpState::Connected { .. }, Some(h)) => h,
            _ => return Attempt::Done(Err(Error::NotConnected)),
        };
        let s = sockets.get_mut::<tcp::Socket>(h);
        let peer = s
            .remote_endpoint()
            .map(to_std)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let TcpState::Connected {
            eof,
            reset_reported,
        } = &mut t.state
        else {
            unreachable!()
        };
        if s.can_recv() {
            let n = if peek {
                s.peek_slice(buf)
            } else {
                s.recv_slice(buf)
            };
            return Attempt::Done(n.map(|n| (n, peer)).map_err(|_| Error::NotConnected));
        }
        if s.may_recv() {
            return Attempt::PENDING;
        }
        match s.state() {
            tcp::State::CloseWait
            | tcp::State::LastAck
            | tcp::State::Closing
            | tcp::State::TimeWait => {
                *eof = true;
                Attempt::Done(Ok((0, peer)))
            }
            tcp::State::SynSent | tcp::State::SynReceived => Attempt::PENDING,
            _ if *eof || *reset_reported => Attempt::Done(Ok((0, peer))),
            _ => {
                *reset_reported = true;
                Attempt::Done(Err(Error::ConnectionReset))
            }
        }
    }

    fn tcp_send(&mut self, fd: Sockfd, buf: &[u8]) -> Attempt<usize> {
        if let Err(e) = self.settle_connect(fd) {
            return Attempt::Done(Err(e));
        }
        let Inner { fds, sockets, .. } = self;
        let t = match fds.get_mut(fd) {
            Ok(Fd::Tcp(t)) => t,
            Ok(Fd::Udp(_)) => unreachable!("checked by caller"),
            Err(e) => return Attempt::Done(Err(e)),
        };
        if t.common.shut_wr {
            return Attempt::Done(Err(Error::BrokenPipe));
        }
        let h = match (&t.state, t.handle) {
            (TcpState::Connecting, _) => return Attempt::PENDING,
            (TcpState::Connected { .. }, Some(h)) => h,
            _ => return Attempt::Done(Err(Error::NotConnected)),
        };
        let s = sockets.get_mut::<tcp::Socket>(h);
        match s.state() {
            tcp::State::Established | tcp::State::CloseWait => {
                if buf.is_empty() {
                    return Attempt::Done(Ok(0));
                }
                if !s.can_send() {
                    return Attempt::PENDING;
                }
                Attempt::Done(s.send_slice(buf).map_err(|_| Error::NotConnected))
            }
            tcp::State::SynSent | tcp::State::SynReceived => Attempt::PENDING,
            tcp::State::Closed => Attempt::Done(Err(Error::ConnectionReset)),
            _ => Attempt::Done(Err(Error::BrokenPipe)),
        }
    }

    fn udp_recv(&mut self, fd: Sockfd, buf: &mut [u8], peek: bool) -> Attempt<(usize, SocketAddr)> {
        let Inner { fds, sockets, .. } = self;
        let u = match fds.get_mut(fd) {
            Ok(Fd::Udp(u)) => u,
            Ok(Fd::Tcp(_)) => unreachable!("checked by caller"),
            Err(e) => return Attempt::Done(Err(e)),
        };
        if u.common.shut_rd {
            return Attempt::Done(Ok((
                0,
                u.peer
                    .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), SocketAddr::V4),
            )));
        }
        let s = sockets.get_mut::<udp::Socket>(u.handle);
        loop {
            let (data, from) = match s.peek() {
                Ok((d, m)) => (d, to_std(m.endpoint)),
                Err(_) => return Attempt::PENDING,
            };
            if u.peer.is_some_and(|p| SocketAddr::V4(p) != from) {
                // Connected UDP sockets only see their peer's datagrams.
                let _ = s.recv();
                continue;
            }
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            if !peek {
                let _ = s.recv();
            }
            return Attempt::Done(Ok((n, from)));
        }
    }

    fn udp_send(&mut self, fd: Sockfd, buf: &[u8], to: SocketAddrV4, max: usize) -> Attempt<usize> {
        if let Err(e) = self.route_check(*to.ip()) {
            return Attempt::Done(Err(e));
        }
        let need_bind = match self.fds.get_mut(fd) {
            Ok(Fd::Udp(u)) => {
                if u.common.shut_wr {
                    return Attempt::Done(Err(Error::BrokenPipe));
                }
                u.bound.is_none()
            }
            Ok(Fd::Tcp(_)) => unreachable!("checked by caller"),
            Err(e) => return Attempt::Done(Err(e)),
        };
        if need_bind {
            if let Err(e) = self.udp_bind(fd, 0) {
                return Attempt::Done(Err(e));
            }
        }
        let Ok(Fd::Udp(u)) = self.fds.get_mut(fd) else {
            unreachable!()
        };
        // 1500-byte MTU minus IPv4 and UDP headers; no IP fragmentation.
        if buf.len() > max.min(1472) {
            return Attempt::Done(Err(Error::MessageTooLong));
        }
        let s = self.sockets.get_mut::<udp::Socket>(u.handle);
        match s.send_slice(buf, IpEndpoint::from(to)) {
            Ok(()) => Attempt::Done(Ok(buf.len())),
            Err(udp::SendError::BufferFull) => Attempt::PENDING,
            Err(udp::SendError::Unaddressable) => Attempt::Done(Err(Error::AddrNotAvailable)),
        }
    }

    fn udp_bind(&mut self, fd: Sockfd, port: u16) -> Result<()> {
        let port = if port == 0 {
            self.ephemeral_port(true)?
        } else if self.port_in_use(true, port) {
            return Err(Error::AddrInUse);
        } else {
            port
        };
        let Fd::Udp(u) = self.fds.get_mut(fd)? else {
            return Err(Error::NotSupported);
        };
        if u.bound.is_some() {
            return Err(Error::InvalidArgument);
        }
        self.sockets
            .get_mut::<udp::Socket>(u.handle)
            .bind(IpListenEndpoint { addr: None, port })
            .map_err(|_| Error::InvalidArgument)?;
        u.bound = Some(port);
        Ok(())
    }

    fn tcp_readiness(&mut self, fd: Sockfd) -> Result<Events> {
        let _ = self.settle_connect(fd)?;
        let Inner { fds, sockets, .. } = self;
        let Fd::Tcp(t) = fds.get_mut(fd)? else {
            unreachable!()
        };
        let mut ev = Events::NONE;
        if t.common.error.is_some() {
            ev |= Events::ERROR;
        }
        match &t.state {
            TcpState::Listening { backlog, .. } => {
                if tcp_sockets(sockets)
                    .any(|(i, _, s)| *backlog & (1 << i) != 0 && is_pending_conn(s.state()))
                {
                    ev |= Events::READABLE;
                }
            }
            TcpState::Connected { eof, .. } => {
                let s = sockets.get::<tcp::Socket>(t.handle.expect("connected fd has a socket"));
                if s.can_recv() || !s.may_recv() || t.common.shut_rd {
                    ev |= Events::READABLE;
                }
                if s.can_send() && !t.common.shut_wr {
                    ev |= Events::WRITABLE;
                }
                if *eof || !s.may_recv() && s.state() != tcp::State::SynReceived {
                    ev |= Events::HANGUP;
                }
            }
            TcpState::Failed => ev |= Events::HANGUP,
            TcpState::Idle { .. } | TcpState::Connecting => {}
        }
        Ok(ev)
    }

    fn readiness(&mut self, fd: Sockfd) -> Result<Events> {
        match self.fds.get(fd)? {
            Fd::Tcp(_) => self.tcp_readiness(fd),
            Fd::Udp(u) => {
                let s = self.sockets.get::<udp::Socket>(u.handle);
                let mut ev = Events::NONE;
                if s.can_recv() || u.common.shut_rd {
                    ev |= Events::READABLE;
                }
                if s.can_send() && !u.common.shut_wr {
                    ev |= Events::WRITABLE;
                }
                Ok(ev)
            }
        }
    }
}

/// A socket in the listen backlog holds a connection ready to accept.
fn is_pending_conn(state: tcp::State) -> bool {
    !matches!(
        state,
        tcp::State::Listen | tcp::State::SynReceived | tcp::State::Closed
    )
}

impl<'a, L: Link, P: Platform, const FDS: usize, const RAW: usize> Stack<'a, L, P, FDS, RAW> {
    /// How a call on `fd` may wait, from its options and the call's flags.
    fn blocking(
        &self,
        fd: Sockfd,
        flags: MsgFlags,
        deadline: Deadline,
        side: Side,
        nb: Error,
    ) -> Result<Blocking> {
        let c = self.with(|g| g.fds.get(fd).map(|f| *f.common()))?;
        Ok(c.blocking(flags, deadline, side, self.platform.now(), nb))
    }

    fn recv_any(
        &self,
        fd: Sockfd,
        buf: &mut [u8],
        flags: MsgFlags,
        deadline: Deadline,
    ) -> Result<(usize, SocketAddr)> {
        check_flags(flags)?;
        let is_tcp = self.with(|g| g.fds.get(fd).map(|f| matches!(f, Fd::Tcp(_))))?;
        if buf.is_empty() {
            return Err(Error::InvalidArgument);
        }
        let blocking = self.blocking(fd, flags, deadline, Side::Recv, Error::WouldBlock)?;
        let peek = flags.contains(MsgFlags::PEEK);
        block_on(&self.platform, blocking, || {
            self.attempt(|g| {
                if is_tcp {
                    g.tcp_recv(fd, buf, peek)
                } else {
                    g.udp_recv(fd, buf, peek)
                }
            })
        })
    }

    fn wait_connected(&self, fd: Sockfd, deadline: Deadline) -> Result<()> {
        let blocking =
            self.blocking(fd, MsgFlags::NONE, deadline, Side::Send, Error::InProgress)?;
        let r = block_on(&self.platform, blocking, || {
            self.attempt(|g| match g.settle_connect(fd) {
                Err(e) => Attempt::Done(Err(e)),
                Ok(Some(r)) => Attempt::Done(r),
                Ok(None) => Attempt::PENDING,
            })
        });
        if r == Err(Error::Timeout) {
            // A connect that timed out is over: drop the half-open attempt.
            self.with(|g| {
                if let Ok(t) = g.tcp(fd) {
                    if matches!(t.state, TcpState::Connecting) {
                        t.state = TcpState::Failed;
                        t.common.error = Some(Error::Timeout);
                        if let Some(h) = t.handle {
                            g.sockets.get_mut::<tcp::Socket>(h).abort();
                        }
                    }
                }
            });
        }
        r
    }

    fn apply_tcp_opts(s: &mut tcp::Socket<'_>, c: &Common) {
        s.set_nagle_enabled(!c.no_delay);
        let iv = smoltcp::time::Duration::from_micros(c.keep_interval().as_micros() as u64);
        if c.keep_alive {
            s.set_keep_alive(Some(iv));
            // Like Linux's 9 unanswered probes: then the connection is dead.
            s.set_timeout(Some(iv * 9));
        } else {
            s.set_keep_alive(None);
            s.set_timeout(None);
        }
    }
}

impl<'a, L: Link + Send, P: Platform, const FDS: usize, const RAW: usize> Socketer
    for Stack<'a, L, P, FDS, RAW>
{
    fn socket(&self, family: AddressFamily, ty: SockType, proto: Protocol) -> Result<Sockfd> {
        if family != AddressFamily::Inet {
            return Err(Error::FamilyNotSupported);
        }
        if proto.sock_type() != ty {
            return Err(Error::TypeNotSupported);
        }
        self.with(|g| {
            if !g.fds.has_room() {
                return Err(Error::NoMoreSockets);
            }
            match proto {
                Protocol::Tls => Err(Error::ProtocolNotSupported),
                Protocol::Tcp => {
                    let h = g.take_tcp().ok_or(Error::NoMoreSockets)?;
                    g.fds
                        .insert(Fd::Tcp(TcpFd {
                            common: Common::new(proto),
                            handle: Some(h),
                            state: TcpState::Idle { bound: None },
                        }))
                        .inspect_err(|_| g.untake_tcp(h))
                }
                Protocol::Udp => {
                    let h = g.take_udp().ok_or(Error::NoMoreSockets)?;
                    g.fds
                        .insert(Fd::Udp(UdpFd {
                            common: Common::new(proto),
                            handle: h,
                            bound: None,
                            peer: None,
                        }))
                        .inspect_err(|_| g.release_udp(h))
                }
            }
        })
    }

    fn bind(&self, fd: Sockfd, addr: SocketAddr) -> Result<()> {
        let addr = ipv4(addr)?;
        self.with(|g| {
            let is_tcp = matches!(g.fds.get(fd)?, Fd::Tcp(_));
            if !addr.ip().is_unspecified() && g.ip.as_ref().map(|c| c.addr) != Some(*addr.ip()) {
                return Err(Error::AddrNotAvailable);
            }
            if !is_tcp {
                return g.udp_bind(fd, addr.port());
            }
            if !matches!(g.tcp(fd)?.state, TcpState::Idle { bound: None }) {
                return Err(Error::InvalidArgument);
            }
            let port = match addr.port() {
                0 => g.ephemeral_port(false)?,
                p if g.port_in_use(false, p) => return Err(Error::AddrInUse),
                p => p,
            };
            g.tcp(fd)?.state = TcpState::Idle { bound: Some(port) };
            Ok(())
        })
    }

    fn connect(
        &self,
        fd: Sockfd,
        host: Option<&str>,
        addr: SocketAddr,
        deadline: Deadline,
    ) -> Result<()> {
        let addr = ipv4(addr)?;
        let is_tcp = self.with(|g| g.fds.get(fd).map(|f| matches!(f, Fd::Tcp(_))))?;
        check_remote(addr)?;
        if !is_tcp {
            return self.with(|g| {
                g.route_check(*addr.ip())?;
                let needs_bind = match g.fds.get(fd)? {
                    Fd::Udp(u) => u.bound.is_none(),
                    Fd::Tcp(_) => unreachable!(),
                };
                if needs_bind {
                    g.udp_bind(fd, 0)?;
                }
                if let Fd::Udp(u) = g.fds.get_mut(fd)? {
                    u.peer = Some(addr);
                }
                Ok(())
            });
        }
        let started = self.with(|g| {
            let state = &g.tcp(fd)?.state;
            let bound = match state {
                TcpState::Idle { bound } => *bound,
                TcpState::Failed => None,
                TcpState::Connecting => return Ok(false),
                TcpState::Connected { .. } => return Err(Error::AlreadyConnected),
                TcpState::Listening { .. } => return Err(Error::InvalidArgument),
            };
            g.route_check(*addr.ip())?;
            let local = match bound {
                Some(p) => p,
                None => g.ephemeral_port(false)?,
            };
            let Inner {
                fds,
                sockets,
                iface,
                ..
            } = g;
            let Fd::Tcp(t) = fds.get_mut(fd)? else {
                unreachable!()
            };
            let h = t.handle.ok_or(Error::InvalidArgument)?;
            let s = sockets.get_mut::<tcp::Socket>(h);
            if s.state() != tcp::State::Closed {
                s.abort();
            }
            Self::apply_tcp_opts(s, &t.common);
            s.connect(iface.context(), IpEndpoint::from(addr), local)
                .map_err(|e| match e {
                    tcp::ConnectError::InvalidState => Error::AlreadyConnected,
                    tcp::ConnectError::Unaddressable => Error::AddrNotAvailable,
                })?;
            // `host` matters only to TLS (SNI, certificate names), which
            // this stack does not do: `SoftTls` keeps it above the stack.
            let _ = host;
            t.common.error = None;
            t.state = TcpState::Connecting;
            Ok(true)
        })?;
        let nonblocking = self.with(|g| g.fds.get(fd).map(|f| f.common().nonblocking))?;
        if started && nonblocking {
            // Like Linux: a non-blocking connect never completes in the call
            // that starts it, so callers always see the same sequence.
            return Err(Error::InProgress);
        }
        self.wait_connected(fd, deadline)
    }

    fn listen(&self, fd: Sockfd, backlog: usize) -> Result<()> {
        self.with(|g| {
            let t = match g.fds.get_mut(fd)? {
                Fd::Tcp(t) => t,
                Fd::Udp(_) => return Err(Error::NotSupported),
            };
            let wanted = backlog.clamp(1, MAX_BACKLOG) as u8;
            let bound = match &mut t.state {
                TcpState::Listening { wanted: w, .. } => {
                    *w = wanted;
                    return Ok(());
                }
                TcpState::Idle { bound } => *bound,
                _ => return Err(Error::InvalidArgument),
            };
            let h = t.handle.take().ok_or(Error::InvalidArgument)?;
            let port = match bound {
                Some(p) => p,
                None => match g.ephemeral_port(false) {
                    Ok(p) => p,
                    Err(e) => {
                        g.tcp(fd)?.handle = Some(h);
                        return Err(e);
                    }
                },
            };
            let s = g.sockets.get_mut::<tcp::Socket>(h);
            if let Err(e) = s.listen(port) {
                g.tcp(fd)?.handle = Some(h);
                return Err(match e {
                    tcp::ListenError::InvalidState => Error::InvalidArgument,
                    tcp::ListenError::Unaddressable => Error::AddrNotAvailable,
                });
            }
            let Some(i) = tcp_index(&g.sockets, h) else {
                g.tcp(fd)?.handle = Some(h);
                return Err(Error::InvalidArgument);
            };
            let common = g.tcp(fd)?.common;
            Self::apply_tcp_opts(g.sockets.get_mut::<tcp::Socket>(h), &common);
            g.tcp(fd)?.state = TcpState::Listening {
                port,
                backlog: 1 << i,
                wanted,
            };
            // The rest of the backlog is filled by housekeeping (now and as the pool frees up).
            g.housekeeping();
            Ok(())
        })
    }

    fn accept(&self, fd: Sockfd, deadline: Deadline) -> Result<(Sockfd, SocketAddr)> {
        self.with(|g| match g.fds.get(fd)? {
            Fd::Tcp(TcpFd {
                state: TcpState::Listening { .. },
                ..
            }) => Ok(()),
            Fd::Tcp(_) => Err(Error::InvalidArgument),
            Fd::Udp(_) => Err(Error::NotSupported),
        })?;
        let blocking =
            self.blocking(fd, MsgFlags::NONE, deadline, Side::Recv, Error::WouldBlock)?;
        block_on(&self.platform, blocking, || {
            self.attempt(|g| {
                let Inner { fds, sockets, .. } = &mut *g;
                let (common, idx, h) = match fds.get_mut(fd) {
                    Ok(Fd::Tcp(TcpFd {
                        state: TcpState::Listening { backlog, .. },
                        common,
                        ..
                    })) => {
                        let Some((i, h, _)) = tcp_sockets(sockets).find(|&(i, _, s)| {
                            *backlog & (1 << i) != 0 && is_pending_conn(s.state())
                        }) else {
                            return Attempt::PENDING;
                        };
                        (*common, i, h)
                    }
                    Ok(_) => return Attempt::Done(Err(Error::InvalidArgument)),
                    Err(e) => return Attempt::Done(Err(e)),
                };
                if !fds.has_room() {
                    return Attempt::Done(Err(Error::NoMoreSockets));
                }
                let peer = sockets
                    .get::<tcp::Socket>(h)
                    .remote_endpoint()
                    .map(to_std)
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                if let Ok(Fd::Tcp(TcpFd {
                    state: TcpState::Listening { backlog, .. },
                    ..
                })) = fds.get_mut(fd)
                {
                    *backlog &= !(1 << idx);
                }
                let c = common.inherit();
                let new = fds.insert(Fd::Tcp(TcpFd {
                    common: c,
                    handle: Some(h),
                    state: TcpState::Connected {
                        eof: false,
                        reset_reported: false,
                    },
                }));
                g.housekeeping();
                Attempt::Done(new.map(|n| (n, peer)))
            })
        })
    }

    fn send(&self, fd: Sockfd, buf: &[u8], flags: MsgFlags, deadline: Deadline) -> Result<usize> {
        check_send_flags(flags)?;
        let peer = self.with(|g| match g.fds.get(fd)? {
            Fd::Tcp(_) => Ok(None),
            Fd::Udp(u) => u
                .peer
                .map(|p| Some(SocketAddr::V4(p)))
                .ok_or(Error::NotConnected),
        })?;
        match peer {
            Some(p) => self.send_to(fd, buf, flags, p, deadline),
            None => {
                let blocking = self.blocking(fd, flags, deadline, Side::Send, Error::WouldBlock)?;
                block_on(&self.platform, blocking, || {
                    self.attempt(|g| g.tcp_send(fd, buf))
                })
            }
        }
    }

    fn send_to(
        &self,
        fd: Sockfd,
        buf: &[u8],
        flags: MsgFlags,
        addr: SocketAddr,
        deadline: Deadline,
    ) -> Result<usize> {
        check_send_flags(flags)?;
        let to = ipv4(addr)?;
        let is_tcp = self.with(|g| g.fds.get(fd).map(|f| matches!(f, Fd::Tcp(_))))?;
        if is_tcp {
            let peer = self.peer_addr(fd)?;
            if peer != addr {
                return Err(Error::AlreadyConnected);
            }
            return self.send(fd, buf, flags, deadline);
        }
        check_remote(to)?;
        let max = self.limits.udp_tx_buffer;
        let blocking = self.blocking(fd, flags, deadline, Side::Send, Error::WouldBlock)?;
        block_on(&self.platform, blocking, || {
            self.attempt(|g| g.udp_send(fd, buf, to, max))
        })
    }

    fn recv(
        &self,
        fd: Sockfd,
        buf: &mut [u8],
        flags: MsgFlags,
        deadline: Deadline,
    ) -> Result<usize> {
        // On an unconnected UDP socket this takes datagrams from anyone, as in POSIX.
        self.recv_any(fd, buf, flags, deadline).map(|(n, _)| n)
    }

    fn recv_from(
        &self,
        fd: Sockfd,
        buf: &mut [u8],
        flags: MsgFlags,
        deadline: Deadline,
    ) -> Result<(usize, SocketAddr)> {
        self.recv_any(fd, buf, flags, deadline)
    }

    fn shutdown(&self, fd: Sockfd, how: Shutdown) -> Result<()> {
        self.with(|g| {
            let Inner { fds, sockets, .. } = &mut *g;
            match fds.get_mut(fd)? {
                Fd::Udp(u) => {
                    if u.peer.is_none() {
                        return Err(Error::NotConnected);
                    }
                    u.common.shut_rd |= matches!(how, Shutdown::Read | Shutdown::Both);
                    u.common.shut_wr |= matches!(how, Shutdown::Write | Shutdown::Both);
                    Ok(())
                }
                Fd::Tcp(t) => {
                    let h = match (&t.state, t.handle) {
                        (TcpState::Connected { .. } | TcpState::Connecting, Some(h)) => h,
                        _ => return Err(Error::NotConnected),
                    };
                    if matches!(how, Shutdown::Read | Shutdown::Both) {
                        t.common.shut_rd = true;
                    }
                    let close_tx =
                        matches!(how, Shutdown::Write | Shutdown::Both) && !t.common.shut_wr;
                    if close_tx {
                        t.common.shut_wr = true;
                        if sockets.get::<tcp::Socket>(h).state() == tcp::State::CloseWait {
                            if let TcpState::Connected { eof, .. } = &mut t.state {
                                *eof = true;
                            }
                        }
                    }
                    if close_tx {
                        // FIN goes out after the data already queued.
                        g.close_tx(h);
                    }
                    Ok(())
                }
            }
        })
    }

    fn close(&self, fd: Sockfd) -> Result<()> {
        let linger = self.with(|g| -> Result<Option<_>> {
            let linger = g.fds.get(fd)?.common().linger();
            match g.fds.remove(fd)? {
                Fd::Udp(u) => {
                    g.sockets.get_mut::<udp::Socket>(u.handle).close();
                    g.release_udp(u.handle);
                    Ok(None)
                }
                Fd::Tcp(t) => match t.state {
                    TcpState::Listening { backlog, .. } => {
                        // Pending connections nobody accepted are reset, as on Linux.
                        let pending: heapless::Vec<_, MAX_BACKLOG> = tcp_sockets(&g.sockets)
                            .filter(|&(i, _, _)| backlog & (1 << i) != 0)
                            .map(|(_, h, _)| h)
                            .collect();
                        for h in pending {
                            g.release_tcp(h, false);
                        }
                        Ok(None)
                    }
                    TcpState::Connected { .. } => {
                        let h = t.handle.expect("connected fd has a socket");
                        let hard = linger == Some(Duration::ZERO);
                        g.release_tcp(h, !hard);
                        Ok(linger.filter(|d| !d.is_zero()).map(|d| (h, d)))
                    }
                    _ => {
                        if let Some(h) = t.handle {
                            g.release_tcp(h, false);
                        }
                        Ok(None)
                    }
                },
            }
        })?;
        // Wake anyone blocked on the fd: they now see InvalidSockfd.
        self.platform.notify();
        if let Some((h, d)) = linger {
            // SO_LINGER: wait (bounded) until everything sent was acknowledged.
            let until = Deadline::after(self.platform.now(), d);
            let _ = block_on(&self.platform, Blocking::Until(until), || {
                self.attempt(|g| {
                    let s = g.sockets.get::<tcp::Socket>(h);
                    let done = s.send_queue() == 0
                        && matches!(
                            s.state(),
                            tcp::State::FinWait2
                                | tcp::State::TimeWait
                                | tcp::State::Closed
                                | tcp::State::Closing
                        );
                    if done || !g.tcp_is_closing(h) {
                        Attempt::Done(Ok(()))
                    } else {
                        Attempt::PENDING
                    }
                })
            });
        }
        Ok(())
    }

    fn set_sock_opt(&self, fd: Sockfd, opt: SockOpt) -> Result<()> {
        self.with(|g| {
            let Inner { fds, sockets, .. } = g;
            let entry = fds.get_mut(fd)?;
            entry.common_mut().set(opt)?;
            if let Fd::Tcp(TcpFd {
                handle: Some(h),
                common,
                ..
            }) = entry
            {
                Self::apply_tcp_opts(sockets.get_mut::<tcp::Socket>(*h), common);
            }
            Ok(())
        })
    }

    fn get_sock_opt(&self, fd: Sockfd, name: SockOptName) -> Result<SockOpt> {
        self.with(|g| g.fds.get_mut(fd)?.common_mut().get(name))
    }

    fn poll(&self, fds: &mut [PollFd], deadline: Deadline) -> Result<usize> {
        let blocking = Blocking::Until(deadline);
        let r = block_on(&self.platform, blocking, || {
            self.attempt(|g| {
                let mut ready = 0;
                for p in fds.iter_mut() {
                    p.revents = match g.readiness(p.fd) {
                        Ok(ev) => ev & (p.events | Events::ERROR | Events::HANGUP),
                        Err(_) => Events::ERROR,
                    };
                    if !p.revents.is_empty() {
                        ready += 1;
                    }
                }
                if ready > 0 || fds.is_empty() && deadline == Deadline::Never {
                    Attempt::Done(Ok(ready))
                } else {
                    Attempt::PENDING
                }
            })
        });
        match r {
            Err(Error::Timeout) => Ok(0),
            r => r,
        }
    }

    fn local_addr(&self, fd: Sockfd) -> Result<SocketAddr> {
        self.with(|g| {
            let ip =
                g.ip.as_ref()
                    .map(|c| c.addr)
                    .unwrap_or(Ipv4Addr::UNSPECIFIED);
            let port = match g.fds.get(fd)? {
                Fd::Udp(u) => u.bound.unwrap_or(0),
                Fd::Tcp(t) => match &t.state {
                    TcpState::Idle { bound } => bound.unwrap_or(0),
                    TcpState::Listening { port, .. } => *port,
                    _ => {
                        let s = g.sockets.get::<tcp::Socket>(t.handle.expect("has socket"));
                        if let Some(ep) = s.local_endpoint() {
                            return Ok(to_std(ep));
                        }
                        s.listen_endpoint().port
                    }
                },
            };
            Ok(SocketAddr::from((ip, port)))
        })
    }

    fn peer_addr(&self, fd: Sockfd) -> Result<SocketAddr> {
        self.with(|g| match g.fds.get(fd)? {
            Fd::Udp(u) => u.peer.map(SocketAddr::V4).ok_or(Error::NotConnected),
            Fd::Tcp(t) => match (&t.state, t.handle) {
                (TcpState::Connected { .. } | TcpState::Connecting, Some(h)) => g
                    .sockets
                    .get::<tcp::Socket>(h)
                    .remote_endpoint()
                    .map(to_std)
                    .ok_or(Error::NotConnected),
                _ => Err(Error::NotConnected),
            },
        })
    }

    fn now(&self) -> Instant {
        self.platform.now()
    }
}

impl<'a, L: Link + Send, P: Platform, const FDS: usize, const RAW: usize> Netdever
    for Stack<'a, L, P, FDS, RAW>
{
    fn get_host_by_name(&self, name: &str, family: AddressFamily) -> Result<IpAddr> {
        if family != AddressFamily::Inet {
            return Err(Error::FamilyNotSupported);
        }
        if let Ok(a) = name.parse::<Ipv4Addr>() {
            return Ok(IpAddr::V4(a));
        }
        if name.is_empty() || name.len() > 253 {
            return Err(Error::HostUnknown);
        }
        let q = self.with(|g| {
            let cfg = g.ip.as_ref().ok_or(Error::NetworkDown)?;
            if cfg.dns.is_empty() {
                return Err(Error::HostUnknown);
            }
            let Inner {
                sockets,
                iface,
                dns: d,
                ..
            } = g;
            sockets
                .get_mut::<dns::Socket>(*d)
                .start_query(iface.context(), name, DnsQueryType::A)
                .map_err(|e| match e {
                    dns::StartQueryError::NoFreeSlot => Error::Busy,
                    _ => Error::HostUnknown,
                })
        })?;
        let until = Deadline::after(self.platform.now(), self.limits.dns_timeout);
        let r = block_on(&self.platform, Blocking::Until(until), || {
            self.attempt(|g| {
                let d = g.dns;
                match g.sockets.get_mut::<dns::Socket>(d).get_query_result(q) {
                    Ok(addrs) => Attempt::Done(
                        addrs
                            .iter()
                            .map(|a| match a {
                                IpAddress::Ipv4(v) => IpAddr::V4(*v),
                            })
                            .next()
                            .ok_or(Error::HostUnknown),
                    ),
                    Err(dns::GetQueryResultError::Pending) => Attempt::PENDING,
                    Err(dns::GetQueryResultError::Failed) => Attempt::Done(Err(Error::HostUnknown)),
                }
            })
        });
        if r == Err(Error::Timeout) {
            self.with(|g| {
                let d = g.dns;
                g.sockets.get_mut::<dns::Socket>(d).cancel_query(q);
            });
        }
        r
    }

    fn addr(&self) -> Result<IpAddr> {
        self.with(|g| {
            g.ip.as_ref()
                .map(|c| IpAddr::V4(c.addr))
                .ok_or(Error::NetworkDown)
        })
    }

    fn ip_config(&self) -> Result<IpConfig> {
        self.with(|g| g.ip.clone().ok_or(Error::NetworkDown))
    }

    fn set_addr(&self, config: IpConfig) -> Result<()> {
        config.validate()?;
        self.with(|g| g.apply_ip_mode(&IpMode::Static(config)));
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_sockets: FDS,
            max_tcp: self.limits.tcp,
            max_udp: self.limits.udp,
            tls: TlsSupport::None,
            server: true,
            dns: true,
            dhcp: true,
        }
    }
}

impl<'a, L: Link + Send, P: Platform, const FDS: usize, const RAW: usize> Netlinker
    for Stack<'a, L, P, FDS, RAW>
{
    fn net_connect(&self, params: &ConnectParams<'_>) -> Result<()> {
        if params.mode == ConnectMode::AccessPoint {
            return Err(Error::NotSupported);
        }
        if let IpMode::Static(c) = &params.ip {
            c.validate()?;
        }
        let mut last = Error::ConnectFailed;
        for _ in 0..=params.retries {
            self.with(|g| {
                g.joined = true;
                g.apply_ip_mode(&params.ip);
            });
            let until = Deadline::after(self.platform.now(), params.connect_timeout);
            let r = block_on(&self.platform, Blocking::Until(until), || {
                self.attempt(|g| {
                    if g.up {
                        Attempt::Done(Ok(()))
                    } else {
                        Attempt::PENDING
                    }
                })
            });
            match r {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let link_up = self.with(|g| g.link_up);
                    last = if link_up { e } else { Error::ConnectFailed };
                }
            }
        }
        Err(last)
    }

    fn net_disconnect(&self) -> Result<()> {
        self.with(|g| {
            g.joined = false;
            if let Some(h) = g.dhcp {
                g.sockets
                    .get_mut::<smoltcp::socket::dhcpv4::Socket>(h)
                    .reset();
            }
            g.stop_dhcp();
            g.set_ip(None);
        });
        Ok(())
    }

    fn net_notify(&self, callback: Option<NotifyFn>) {
        self.with(|g| g.notify_fn = callback);
    }

    fn hardware_addr(&self) -> Result<[u8; 6]> {
        Ok(self.with(|g| g.dev.link().hardware_addr()))
    }

    fn send_eth(&self, frame: &[u8]) -> Result<()> {
        self.with(|g| g.dev.send_raw(frame).map_err(Error::from))
    }

    /// Frames smoltcp did not take, oldest first. With `RAW = 0` none are
    /// kept: `NotSupported`.
    fn recv_eth(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        if RAW == 0 {
            return Err(Error::NotSupported);
        }
        self.with(|g| g.dev.recv_raw(buf).map_err(Error::from))
    }
}
