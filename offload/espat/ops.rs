//! [`Socketer`] for [`EspAt`]: socket calls as AT command exchanges.

use ::core::time::Duration;

use embedded_io::{Read, ReadReady, Write};

use crate::error::{Error, Result};
use crate::platform::Platform;
use crate::socketer::Socketer;
use crate::sockstate::{check_flags, check_remote, check_send_flags, ipv4, Side};
use crate::time::{Deadline, Instant};
use crate::types::*;
use crate::wait::{block_on, Attempt, Blocking};

use super::core::{Core, Kind, Link, LinkState, Owner, Phase, Sock, Trust, FETCH, RX_BUF, UDP_HDR};
use super::tls::MAX_HOST_LEN;
use super::{cmd, EspAt, Outcome};

/// Largest UDP payload in one datagram (1500-byte MTU, no fragmentation).
const MAX_DATAGRAM: usize = 1472;
/// First port of the ephemeral range (IANA).
const EPHEMERAL_START: u16 = 49152;

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// What one try at receiving found.
enum Step {
    Done(Result<(usize, SocketAddr)>),
    /// The chip holds data for this link: fetch it.
    Fetch(u8),
    /// Nothing yet.
    Wait,
}

impl Core {
    /// Whether `port` is taken by another socket (`udp`: among UDP sockets).
    fn port_in_use(&self, udp: bool, port: u16, except: Option<Sockfd>) -> bool {
        self.fds.iter().any(|(fd, s)| {
            Some(fd) != except
                && s.udp == udp
                && (s.bound == Some(port)
                    || s.udp && s.local_port == port
                    || matches!(s.phase, Phase::Listening { port: p, .. } if p == port))
        })
    }

    /// A free ephemeral port.
    fn ephemeral_port(&mut self, udp: bool) -> u16 {
        let span = (u16::MAX - EPHEMERAL_START) as u32 + 1;
        if self.ephemeral == 0 {
            self.ephemeral = (self.now.as_micros() % span as u64) as u16;
        }
        for _ in 0..span {
            self.ephemeral = ((self.ephemeral as u32 * 7 + 13) % span) as u16;
            let p = EPHEMERAL_START + self.ephemeral;
            if !self.port_in_use(udp, p, None) {
                return p;
            }
        }
        EPHEMERAL_START
    }

    /// A free link for a client connection (highest id first: the chip
    /// gives incoming connections the lowest free ids).
    fn free_link(&self) -> Option<u8> {
        (0..self.links.len())
            .rev()
            .find(|&i| self.links[i].state == LinkState::Free)
            .map(|i| i as u8)
    }

    /// Drop datagrams a connected UDP socket must not see.
    fn purge_foreign(s: &mut Sock) {
        let Some(peer) = s.peer else { return };
        while let Some((_, from)) = udp_head(&s.rx) {
            if from == peer {
                break;
            }
            pop_record(&mut s.rx, None);
        }
    }

    /// Drop a parked datagram a connected UDP socket must not see; whether
    /// one for `fd` is left.
    fn parked_for(&mut self, fd: Sockfd) -> bool {
        if self.stage.parked != Some(fd) {
            return false;
        }
        let from = self.stage.from;
        if self
            .fds
            .get(fd)
            .is_ok_and(|s| s.peer.is_none_or(|p| p == from))
        {
            return true;
        }
        self.stage.clear();
        false
    }

    /// Hand what the read `fd` just did left in the stage to the socket:
    /// straight into `buf` when nothing is queued before it (a datagram
    /// truncated to `buf`, as the contract says), the rest of a stream to
    /// the queue (the read asked for no more than fits), a datagram a peek
    /// keeps to the queue or, too long for it, parked in the stage. Returns
    /// what went into `buf`.
    fn claim(&mut self, fd: Sockfd, buf: &mut [u8], peek: bool) -> Option<(usize, SocketAddr)> {
        if self.stage.parked.is_some() || self.stage.fd != Some(fd) {
            if self.stage.parked.is_none() {
                self.stage.clear();
            }
            return None;
        }
        let st = &mut self.stage;
        let complete = st.data.len() == st.want;
        let Ok(s) = self.fds.get_mut(fd) else {
            st.clear();
            return None;
        };
        let data = &st.data[..];
        if s.udp {
            let from = st.from;
            if !complete || s.peer.is_some_and(|p| p != from) {
                st.clear();
                return None;
            }
            if !peek && udp_head(&s.rx).is_none() {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                st.clear();
                return Some((n, SocketAddr::V4(from)));
            }
            if RX_BUF - s.rx.len() >= UDP_HDR + data.len() {
                push_record(&mut s.rx, data, from);
                st.clear();
            } else {
                st.fd = None;
                st.parked = Some(fd);
            }
            return None;
        }
        let mut k = 0;
        if !peek && s.rx.is_empty() {
            k = data.len().min(buf.len());
            buf[..k].copy_from_slice(&data[..k]);
        }
        for &b in &data[k..] {
            let _ = s.rx.push_back(b);
        }
        st.clear();
        let peer = s.peer.map(SocketAddr::V4).unwrap_or_else(unspecified);
        (k > 0).then_some((k, peer))
    }

    fn try_recv(&mut self, fd: Sockfd, buf: &mut [u8], peek: bool) -> Step {
        let links = self.links;
        let parked = self.parked_for(fd);
        let stage_free = self.stage.parked.is_none();
        let s = match self.fds.get_mut(fd) {
            Ok(s) => s,
            Err(e) => return Step::Done(Err(e)),
        };
        if s.udp {
            Self::purge_foreign(s);
            if let Some((_, from)) = udp_head(&s.rx) {
                let n = if peek {
                    peek_record(&s.rx, buf)
                } else {
                    pop_record(&mut s.rx, Some(buf))
                };
                return Step::Done(Ok((n, SocketAddr::V4(from))));
            }
            if parked {
                let st = &mut self.stage;
                let n = st.data.len().min(buf.len());
                buf[..n].copy_from_slice(&st.data[..n]);
                let from = st.from;
                if !peek {
                    st.clear();
                }
                return Step::Done(Ok((n, SocketAddr::V4(from))));
            }
            if s.st.shut_rd {
                return Step::Done(Ok((
                    0,
                    s.peer.map(SocketAddr::V4).unwrap_or_else(unspecified),
                )));
            }
            if let Some(e) = s.dead {
                return Step::Done(Err(e));
            }
            return match s.link {
                // (While another socket's datagram is parked in the stage, a
                // datagram read waits: its queue may be too short for one.)
                Some(l) if links[l as usize].pending > 0 && stage_free => Step::Fetch(l),
                _ => Step::Wait,
            };
        }
        match s.phase {
            Phase::Connecting => return Step::Wait,
            Phase::Connected => {}
            _ => return Step::Done(Err(Error::NotConnected)),
        }
        let peer = s.peer.map(SocketAddr::V4).unwrap_or_else(unspecified);
        if !s.rx.is_empty() {
            let n = s.rx.len().min(buf.len());
            if peek {
                for (d, b) in buf.iter_mut().zip(s.rx.iter()) {
                    *d = *b;
                }
            } else {
                for d in buf[..n].iter_mut() {
                    *d = s.rx.pop_front().unwrap_or(0);
                }
            }
            return Step::Done(Ok((n, peer)));
        }
        if s.st.shut_rd {
            return Step::Done(Ok((0, peer)));
        }
        if let Some(e) = s.dead {
            return Step::Done(Err(e));
        }
        if s.eof {
            return Step::Done(Ok((0, peer)));
        }
        match s.link {
            Some(l) if links[l as usize].pending > 0 => Step::Fetch(l),
            _ => Step::Wait,
        }
    }

    fn readiness(&mut self, fd: Sockfd) -> Result<Events> {
        let links = self.links;
        let up = self.net.up;
        let parked = self.parked_for(fd);
        let stage_free = self.stage.parked.is_none();
        let s = self.fds.get_mut(fd)?;
        let mut ev = Events::NONE;
        if s.st.error.is_some() {
            ev |= Events::ERROR;
        }
        let pending = s.link.is_some_and(|l| links[l as usize].pending > 0);
        if s.udp {
            Self::purge_foreign(s);
            let fetchable = pending && stage_free;
            if !s.rx.is_empty() || parked || fetchable || s.st.shut_rd || s.dead.is_some() {
                ev |= Events::READABLE;
            }
            if !s.st.shut_wr && up && s.dead.is_none() {
                ev |= Events::WRITABLE;
            }
            return Ok(ev);
        }
        match &s.phase {
            Phase::Connected => {
                let gone = s.eof || s.dead.is_some();
                if !s.rx.is_empty() || pending || gone || s.st.shut_rd {
                    ev |= Events::READABLE;
                }
                if s.link.is_some() && !s.st.shut_wr && !gone {
                    ev |= Events::WRITABLE;
                }
                if gone {
                    ev |= Events::HANGUP;
                }
            }
            Phase::Listening { backlog, .. } => {
                if !backlog.is_empty() {
                    ev |= Events::READABLE;
                }
                if s.dead.is_some() {
                    ev |= Events::ERROR | Events::HANGUP;
                }
            }
            Phase::Failed => ev |= Events::ERROR | Events::HANGUP,
            Phase::Idle | Phase::Connecting => {}
        }
        Ok(ev)
    }
}

/// Source of the first datagram record, and its length.
fn udp_head(rx: &heapless::Deque<u8, RX_BUF>) -> Option<(usize, SocketAddrV4)> {
    if rx.len() < UDP_HDR {
        return None;
    }
    let mut h = [0u8; UDP_HDR];
    for (d, s) in h.iter_mut().zip(rx.iter()) {
        *d = *s;
    }
    let len = u16::from_be_bytes([h[0], h[1]]) as usize;
    let ip = Ipv4Addr::new(h[2], h[3], h[4], h[5]);
    let port = u16::from_be_bytes([h[6], h[7]]);
    Some((len, SocketAddrV4::new(ip, port)))
}

/// Append a datagram record.
fn push_record(rx: &mut heapless::Deque<u8, RX_BUF>, data: &[u8], from: SocketAddrV4) {
    let mut h = [0u8; UDP_HDR];
    h[..2].copy_from_slice(&(data.len() as u16).to_be_bytes());
    h[2..6].copy_from_slice(&from.ip().octets());
    h[6..].copy_from_slice(&from.port().to_be_bytes());
    for &b in h.iter().chain(data) {
        let _ = rx.push_back(b);
    }
}

/// Remove the first record, copying what fits into `buf`. Returns the bytes copied.
fn pop_record(rx: &mut heapless::Deque<u8, RX_BUF>, mut buf: Option<&mut [u8]>) -> usize {
    let Some((len, _)) = udp_head(rx) else {
        return 0;
    };
    for _ in 0..UDP_HDR {
        rx.pop_front();
    }
    let mut n = 0;
    for i in 0..len {
        let b = rx.pop_front().unwrap_or(0);
        if let Some(buf) = buf.as_deref_mut() {
            if i < buf.len() {
                buf[i] = b;
                n += 1;
            }
        }
    }
    n
}

/// Copy the first record into `buf` without removing it.
fn peek_record(rx: &heapless::Deque<u8, RX_BUF>, buf: &mut [u8]) -> usize {
    let Some((len, _)) = udp_head(rx) else {
        return 0;
    };
    let n = len.min(buf.len());
    for (d, s) in buf[..n].iter_mut().zip(rx.iter().skip(UDP_HDR)) {
        *d = *s;
    }
    n
}

impl<S, P> EspAt<S, P>
where
    S: Read + Write + ReadReady,
    P: Platform,
{
    /// How a call on `fd` may wait.
    fn blocking(
        &self,
        fd: Sockfd,
        flags: MsgFlags,
        deadline: Deadline,
        side: Side,
        nb: Error,
    ) -> Result<Blocking> {
        let st = self.with(|g| g.core.fds.get(fd).map(|s| s.st))?;
        Ok(st.blocking(flags, deadline, side, self.now(), nb))
    }

    /// Fetch what the chip holds for `link`: a stream read asks for what
    /// fits in `buf` and the socket's queue together (at most [`FETCH`]),
    /// and the reply goes through the shared stage straight into `buf`
    /// (`Some`: what went there); a peek, or a read while the stage holds
    /// a parked datagram, fetches into the queue. A datagram read asks for
    /// a whole datagram, into the stage (it waits while a datagram is
    /// parked there: the queue may be too short for one).
    fn fetch(
        &self,
        fd: Sockfd,
        link: u8,
        blocking: Blocking,
        buf: &mut [u8],
        peek: bool,
    ) -> Result<Option<(usize, SocketAddr)>> {
        let t = self.acquire(blocking)?;
        let want = self.with(|g| {
            let c = &g.core;
            let s = c.fds.get(fd).ok()?;
            if s.link != Some(link) || c.links[link as usize].pending == 0 {
                return None;
            }
            let parked = c.stage.parked.is_some();
            let free = RX_BUF - s.rx.len();
            let (n, stage) = if s.udp {
                (if parked { 0 } else { FETCH }, true)
            } else if parked || peek || !s.rx.is_empty() {
                (free, false)
            } else {
                (buf.len().saturating_add(free).min(FETCH), true)
            };
            (n > 0).then_some((n, stage))
        });
        let r = match want {
            None => Ok(()),
            Some((n, stage)) => match cmd(format_args!("AT+CIPRECVDATA={link},{n}")) {
                Ok(text) => {
                    let kind = Kind::RecvData {
                        link,
                        fd,
                        requested: n,
                        got: 0,
                        raced: false,
                        stage,
                    };
                    self.run(&t, &text, kind, self.cfg.cmd_timeout, Deadline::Never)
                        .map(|_| ())
                }
                Err(e) => Err(e),
            },
        };
        // (Under the token: no other read can land in the stage before.)
        let got = self.with(|g| g.core.claim(fd, buf, peek));
        self.release_token(t);
        match got {
            Some(x) => Ok(Some(x)),
            None => r.map(|()| None),
        }
    }

    /// Ask `AT+CIPRECVLEN?` (at most every `recvlen_interval`) in case an
    /// `+IPD` was lost. Returns whether it asked.
    fn maybe_recvlen(&self, blocking: Blocking) -> bool {
        let Some(every) = self.cfg.recvlen_interval else {
            return false;
        };
        let due = self.with(|g| {
            let now = g.core.now;
            match g.core.recvlen_at {
                None => {
                    g.core.recvlen_at = Some(now + every);
                    false
                }
                Some(at) if now >= at => {
                    g.core.recvlen_at = Some(now + every);
                    true
                }
                _ => false,
            }
        });
        if !due || matches!(blocking, Blocking::No(_)) {
            return false;
        }
        let Ok(r) = self.command(
            "AT+CIPRECVLEN?",
            Kind::Plain,
            self.cfg.cmd_timeout,
            blocking,
        ) else {
            return false;
        };
        if let Some(lens) = super::core::parse_recvlen(r.lines()) {
            self.with(|g| {
                for (i, l) in lens.iter().enumerate() {
                    let link = &mut g.core.links[i];
                    if let (Some(n), LinkState::Open) = (l, link.state) {
                        if *n > 0 && link.pending == 0 {
                            link.pending = *n;
                            g.core.changed = true;
                        }
                    }
                }
            });
        }
        true
    }

    fn recv_any(
        &self,
        fd: Sockfd,
        buf: &mut [u8],
        flags: MsgFlags,
        deadline: Deadline,
    ) -> Result<(usize, SocketAddr)> {
        check_flags(flags)?;
        self.with(|g| g.core.fds.get(fd).map(|_| ()))?;
        if buf.is_empty() {
            return Err(Error::InvalidArgument);
        }
        let blocking = self.blocking(fd, flags, deadline, Side::Recv, Error::WouldBlock)?;
        let peek = flags.contains(MsgFlags::PEEK);
        let poll = self.cfg.poll_interval;
        block_on(&self.platform, blocking, || {
            let step = self.with(|g| g.core.try_recv(fd, buf, peek));
            match step {
                Step::Done(r) => Attempt::Done(r),
                Step::Fetch(link) => match self.fetch(fd, link, blocking, buf, peek) {
                    Ok(Some(r)) => Attempt::Done(Ok(r)),
                    Ok(None) => match self.with(|g| g.core.try_recv(fd, buf, peek)) {
                        Step::Done(r) => Attempt::Done(r),
                        _ => Attempt::Pending {
                            wake_at: Some(self.now() + poll),
                        },
                    },
                    Err(Error::WouldBlock) => Attempt::PENDING,
                    Err(e) => Attempt::Done(Err(e)),
                },
                Step::Wait => {
                    if self.maybe_recvlen(blocking) {
                        return Attempt::Pending {
                            wake_at: Some(self.now()),
                        };
                    }
                    Attempt::Pending {
                        wake_at: Some(self.now() + poll),
                    }
                }
            }
        })
    }

    /// Open the UDP link of `fd` if it has none.
    fn ensure_udp_link(&self, fd: Sockfd, blocking: Blocking) -> Result<()> {
        let mut last = Error::AddrInUse;
        for _ in 0..4 {
            let (port, chosen) = self.with(|g| {
                let c = &mut g.core;
                let s = c.fds.get(fd)?;
                if s.link.is_some() {
                    return Ok((0, false));
                }
                if let Some(e) = s.dead {
                    return Err(e);
                }
                if !c.net.up {
                    return Err(Error::NetworkDown);
                }
                match s.bound {
                    Some(p) if p != 0 => Ok((p, false)),
                    _ => Ok((c.ephemeral_port(true), true)),
                }
            })?;
            if port == 0 {
                return Ok(());
            }
            let t = self.acquire(blocking)?;
            let link = self.with(|g| {
                let c = &mut g.core;
                let l = c.free_link().ok_or(Error::NoMoreSockets)?;
                let s = c.fds.get_mut(fd)?;
                if s.link.is_some() {
                    return Ok(None);
                }
                s.link = Some(l);
                c.links[l as usize] = Link {
                    state: LinkState::Opening,
                    owner: Owner::Fd(fd),
                    remote: None,
                    local_port: port,
                    pending: 0,
                    server: false,
                    reset_on_close: false,
                };
                Ok(Some(l))
            });
            let link = match link {
                Ok(Some(l)) => l,
                Ok(None) => {
                    self.release_token(t);
                    return Ok(());
                }
                Err(e) => {
                    self.release_token(t);
                    return Err(e);
                }
            };
            let text = cmd(format_args!(
                "AT+CIPSTART={link},\"UDP\",\"0.0.0.0\",0,{port},2"
            ))?;
            let kind = Kind::Start {
                link,
                fd,
                remote: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
                local_port: port,
            };
            let r = self.run(&t, &text, kind, self.cfg.cmd_timeout, Deadline::Never);
            self.release_token(t);
            match r?.outcome {
                Outcome::Ok => {
                    self.with(|g| {
                        if let Ok(s) = g.core.fds.get_mut(fd) {
                            s.bound = Some(port);
                            s.local_port = port;
                        }
                    });
                    return Ok(());
                }
                Outcome::Reset => return Err(Error::ConnectionAborted),
                _ if chosen => last = Error::AddrInUse, // try another port
                _ => return Err(Error::AddrInUse),
            }
        }
        Err(last)
    }

    /// Connect a stream socket; `ssl` (host, verify) makes it an SSL link.
    fn connect_tcp(
        &self,
        fd: Sockfd,
        addr: SocketAddrV4,
        deadline: Deadline,
        ssl: Option<(Option<&str>, bool)>,
    ) -> Result<()> {
        let st = self.with(|g| {
            let c = &g.core;
            let s = c.fds.get(fd)?;
            match s.phase {
                Phase::Idle | Phase::Failed => {}
                Phase::Connecting => return Ok(None),
                Phase::Connected => return Err(Error::AlreadyConnected),
                Phase::Listening { .. } => return Err(Error::InvalidArgument),
            }
            if s.bound.is_some_and(|p| p != 0) {
                return Err(Error::NotSupported);
            }
            if !c.net.up {
                return Err(Error::NetworkDown);
            }
            Ok(Some(s.st))
        })?;
        let Some(st) = st else {
            // A connect is already under way.
            return self.wait_connected(fd, deadline);
        };
        // A TLS connect always waits for its handshake (as with SoftTls).
        let nonblocking = st.nonblocking && ssl.is_none();
        let mut st = st;
        if ssl.is_some() {
            st.nonblocking = false;
        }
        let blocking = if nonblocking {
            Blocking::Until(self.after(self.cfg.cmd_timeout))
        } else {
            st.blocking(
                MsgFlags::NONE,
                deadline,
                Side::Send,
                self.now(),
                Error::InProgress,
            )
        };
        let caller = match blocking {
            Blocking::Until(d) => d,
            Blocking::No(_) => Deadline::Never,
        };
        let keepalive = if st.keep_alive {
            st.keep_interval().as_secs().clamp(1, 7200)
        } else {
            0
        };
        for _ in 0..MAX_RETRY_LINKS {
            let t = self.acquire(blocking)?;
            let link = self.with(|g| {
                let c = &mut g.core;
                let Some(l) = c.free_link() else {
                    return Err(Error::NoMoreSockets);
                };
                let s = c.fds.get_mut(fd)?;
                s.phase = Phase::Connecting;
                s.link = Some(l);
                s.peer = Some(addr);
                s.eof = false;
                s.dead = None;
                s.st.error = None;
                c.links[l as usize] = Link {
                    state: LinkState::Opening,
                    owner: Owner::Fd(fd),
                    remote: Some(addr),
                    local_port: 0,
                    pending: 0,
                    server: false,
                    reset_on_close: false,
                };
                Ok(l)
            });
            let link = match link {
                Ok(l) => l,
                Err(e) => {
                    self.release_token(t);
                    return Err(e);
                }
            };
            if let Some((host, verify)) = ssl {
                if let Err(e) = self.ssl_setup(&t, link, host, verify) {
                    self.with(|g| {
                        fail_connect(&mut g.core, fd, link, e);
                        let l = &mut g.core.links[link as usize];
                        if l.state == LinkState::Opening && l.owner == Owner::None {
                            *l = Link::FREE;
                        }
                    });
                    self.release_token(t);
                    return Err(e);
                }
            }
            let ty = if ssl.is_some() { "SSL" } else { "TCP" };
            let text = if keepalive > 0 {
                cmd(format_args!(
                    "AT+CIPSTART={link},\"{ty}\",\"{}\",{},{keepalive}",
                    addr.ip(),
                    addr.port()
                ))?
            } else {
                cmd(format_args!(
                    "AT+CIPSTART={link},\"{ty}\",\"{}\",{}",
                    addr.ip(),
                    addr.port()
                ))?
            };
            let kind = Kind::Start {
                link,
                fd,
                remote: addr,
                local_port: 0,
            };
            if let Err(e) = self.start(
                &t,
                &text,
                kind,
                super::core::CmdPhase::Result,
                self.cfg.connect_timeout,
            ) {
                self.with(|g| fail_connect(&mut g.core, fd, link, e));
                self.release_token(t);
                return Err(e);
            }
            if nonblocking {
                // Completes in the background (poll for WRITABLE).
                self.with(|g| g.core.abandon());
                return Err(Error::InProgress);
            }
            let r = self.wait(&t, caller);
            match r {
                Ok(rep) if rep.outcome != Outcome::Prompt => {
                    let already = rep
                        .lines()
                        .iter()
                        .any(|l| l.starts_with(b"ALREADY CONNECTED"));
                    if let (Some((_, verify)), Outcome::Error, false) = (ssl, rep.outcome, already)
                    {
                        // The firmware does not say why: find out.
                        let e = self.classify_ssl_failure(&t, fd, link, addr, verify, caller);
                        self.release_token(t);
                        self.with(|g| {
                            fail_connect(&mut g.core, fd, link, e);
                            if let Ok(s) = g.core.fds.get_mut(fd) {
                                if matches!(s.phase, Phase::Failed) {
                                    s.st.error = Some(e);
                                }
                            }
                        });
                        return Err(e);
                    }
                    self.release_token(t);
                    match rep.outcome {
                        Outcome::Ok => {
                            return self.with(|g| match g.core.fds.get(fd)?.phase {
                                Phase::Connected => Ok(()),
                                _ => Err(Error::ConnectionAborted),
                            })
                        }
                        Outcome::Error if already => {
                            // An incoming connection took the link: try another.
                            self.with(|g| {
                                if let Ok(s) = g.core.fds.get_mut(fd) {
                                    s.phase = Phase::Idle;
                                    s.link = None;
                                }
                            });
                            continue;
                        }
                        Outcome::Error => {
                            self.with(|g| {
                                fail_connect(&mut g.core, fd, link, Error::ConnectionRefused)
                            });
                            return Err(Error::ConnectionRefused);
                        }
                        Outcome::Reset => return Err(Error::ConnectionAborted),
                        _ => {
                            self.with(|g| fail_connect(&mut g.core, fd, link, Error::Device));
                            return Err(Error::Device);
                        }
                    }
                }
                Ok(_) => {
                    self.release_token(t);
                    return Err(Error::Device);
                }
                Err(e) => {
                    // Timeout: the attempt is over for the caller; a late
                    // success is closed when it comes.
                    self.with(|g| fail_connect(&mut g.core, fd, link, e));
                    self.release_token(t);
                    return Err(e);
                }
            }
        }
        Err(Error::NoMoreSockets)
    }

    /// Wait for a background connect of `fd` to finish.
    fn wait_connected(&self, fd: Sockfd, deadline: Deadline) -> Result<()> {
        let blocking =
            self.blocking(fd, MsgFlags::NONE, deadline, Side::Send, Error::InProgress)?;
        let poll = self.cfg.poll_interval;
        block_on(&self.platform, blocking, || {
            self.with(|g| match g.core.fds.get(fd) {
                Err(e) => Attempt::Done(Err(e)),
                Ok(s) => match s.phase {
                    Phase::Connected => Attempt::Done(Ok(())),
                    Phase::Failed => {
                        Attempt::Done(Err(s.st.error.unwrap_or(Error::ConnectionRefused)))
                    }
                    Phase::Connecting => Attempt::Pending {
                        wake_at: Some(g.core.now + poll),
                    },
                    _ => Attempt::Done(Err(Error::NotConnected)),
                },
            })
        })
    }

    fn send_tcp(
        &self,
        fd: Sockfd,
        buf: &[u8],
        flags: MsgFlags,
        deadline: Deadline,
    ) -> Result<usize> {
        let blocking = self.blocking(fd, flags, deadline, Side::Send, Error::WouldBlock)?;
        let end = match blocking {
            Blocking::Until(d) => d,
            Blocking::No(_) => Deadline::Never,
        };
        // A connect still under way: wait for it (or WouldBlock).
        let connecting =
            self.with(|g| matches!(g.core.fds.get(fd).map(|s| &s.phase), Ok(Phase::Connecting)));
        if connecting {
            match blocking {
                Blocking::No(e) => return Err(e),
                Blocking::Until(d) => self.wait_connected(fd, d)?,
            }
        }
        let n = buf.len().min(self.cfg.max_send.clamp(1, 8192));
        loop {
            let link = self.with(|g| {
                let s = g.core.fds.get(fd)?;
                if !matches!(s.phase, Phase::Connected) {
                    return Err(Error::NotConnected);
                }
                if s.st.shut_wr {
                    return Err(Error::BrokenPipe);
                }
                if let Some(e) = s.dead {
                    return Err(e);
                }
                match s.link {
                    Some(l) => Ok(l),
                    None => Err(Error::BrokenPipe),
                }
            })?;
            if buf.is_empty() {
                return Ok(0);
            }
            let t = self.acquire(blocking)?;
            let r = self.cipsend(&t, fd, link, &buf[..n], None);
            self.release_token(t);
            match r {
                Ok(true) => return Ok(n),
                Ok(false) => {
                    // SEND FAIL: the chip's buffer stayed full. Try again.
                    if matches!(blocking, Blocking::No(_)) {
                        return Err(Error::WouldBlock);
                    }
                    if end.expired(self.now()) {
                        return Err(Error::Timeout);
                    }
                    self.sleep(Duration::from_millis(10), end);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sleep (waking on notifications) up to `d`, not past `end`.
    fn sleep(&self, d: Duration, end: Deadline) {
        let until = Deadline::after(self.now(), d).min(end);
        let _: Result<()> = block_on(&self.platform, Blocking::Until(until), || Attempt::PENDING);
    }

    /// One `AT+CIPSEND` exchange with the channel held: `Ok(true)` on
    /// `SEND OK`, `Ok(false)` on `SEND FAIL`.
    fn cipsend(
        &self,
        t: &super::Token,
        fd: Sockfd,
        link: u8,
        data: &[u8],
        to: Option<SocketAddrV4>,
    ) -> Result<bool> {
        // The state may have changed while we waited for the channel.
        self.with(|g| {
            let s = g.core.fds.get(fd)?;
            if let Some(e) = s.dead {
                return Err(e);
            }
            if s.link != Some(link) {
                return Err(if s.udp {
                    Error::ConnectionAborted
                } else {
                    Error::BrokenPipe
                });
            }
            Ok(())
        })?;
        let text = match to {
            Some(a) => cmd(format_args!(
                "AT+CIPSEND={link},{},\"{}\",{}",
                data.len(),
                a.ip(),
                a.port()
            ))?,
            None => cmd(format_args!("AT+CIPSEND={link},{}", data.len()))?,
        };
        self.start(
            t,
            &text,
            Kind::Send,
            super::core::CmdPhase::Prompt,
            self.cfg.cmd_timeout,
        )?;
        let rep = self.wait(t, Deadline::Never)?;
        if rep.outcome != Outcome::Prompt {
            // ERROR instead of the prompt: the link is gone (or the chip is confused).
            return match rep.outcome {
                Outcome::Reset => Err(Error::ConnectionAborted),
                _ => self.with(|g| {
                    let s = g.core.fds.get(fd)?;
                    Err(s.dead.unwrap_or(if s.link.is_none() {
                        if s.udp {
                            Error::ConnectionAborted
                        } else {
                            Error::BrokenPipe
                        }
                    } else {
                        Error::Device
                    }))
                }),
            };
        }
        // The chip waits for exactly `data.len()` bytes now.
        let send_timeout = self.cfg.send_timeout;
        self.with(|g| {
            let now = g.core.now;
            if let Some(c) = g.core.cmd.as_mut() {
                c.phase = super::core::CmdPhase::SendResult;
                c.expires = now + send_timeout;
            }
        });
        for chunk in data.chunks(256) {
            self.with(|g| {
                // A chip that restarted meanwhile would take the rest of
                // the data for commands: stop.
                match g.core.cmd.as_ref().map(|c| c.outcome) {
                    Some(Some(Outcome::Reset)) => return Err(Error::ConnectionAborted),
                    None => return Err(Error::Device),
                    _ => {}
                }
                g.serial.write_all(chunk).map_err(|_| Error::Device)
            })?;
        }
        self.with(|g| g.serial.flush().map_err(|_| Error::Device))?;
        match self.wait(t, Deadline::Never)?.outcome {
            Outcome::SendOk => Ok(true),
            Outcome::SendFail => {
                let gone = self.with(|g| g.core.fds.get(fd).map(|s| (s.dead, s.link)))?;
                match gone {
                    (Some(e), _) => Err(e),
                    (None, None) => Err(Error::BrokenPipe),
                    _ => Ok(false),
                }
            }
            Outcome::Reset => Err(Error::ConnectionAborted),
            _ => Err(Error::Device),
        }
    }

    fn send_udp(
        &self,
        fd: Sockfd,
        buf: &[u8],
        flags: MsgFlags,
        to: SocketAddrV4,
        deadline: Deadline,
    ) -> Result<usize> {
        check_remote(to)?;
        if buf.len() > MAX_DATAGRAM {
            return Err(Error::MessageTooLong);
        }
        if buf.is_empty() {
            // The AT command set cannot send an empty datagram.
            return Err(Error::NotSupported);
        }
        let blocking = self.blocking(fd, flags, deadline, Side::Send, Error::WouldBlock)?;
        let end = match blocking {
            Blocking::Until(d) => d,
            Blocking::No(_) => Deadline::Never,
        };
        self.with(|g| {
            let s = g.core.fds.get(fd)?;
            if s.st.shut_wr {
                return Err(Error::BrokenPipe);
            }
            if !g.core.net.up {
                return Err(Error::NetworkDown);
            }
            Ok(())
        })?;
        self.ensure_udp_link(fd, blocking)?;
        loop {
            let link = self.with(|g| {
                let s = g.core.fds.get(fd)?;
                if let Some(e) = s.dead {
                    return Err(e);
                }
                s.link.ok_or(Error::ConnectionAborted)
            })?;
            let t = self.acquire(blocking)?;
            let r = self.cipsend(&t, fd, link, buf, Some(to));
            self.release_token(t);
            match r {
                Ok(true) => return Ok(buf.len()),
                Ok(false) => {
                    if matches!(blocking, Blocking::No(_)) {
                        return Err(Error::WouldBlock);
                    }
                    if end.expired(self.now()) {
                        return Err(Error::Timeout);
                    }
                    self.sleep(Duration::from_millis(10), end);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Try to do the chip work a close left behind, waiting briefly for the channel.
    fn flush_closes(&self) {
        let wait = self.cfg.close_wait;
        if let Ok(t) = self.acquire(Blocking::Until(self.after(wait))) {
            self.release_token(t);
        }
    }

    /// Fill in link addresses the chip did not announce (`AT+CIPSTATE?`).
    fn refresh_links(&self) -> Result<()> {
        let r = self.command(
            "AT+CIPSTATE?",
            Kind::Plain,
            self.cfg.cmd_timeout,
            Blocking::Until(self.after(self.cfg.cmd_timeout)),
        )?;
        let r = r.ok_or(Error::Device)?;
        self.with(|g| {
            for l in r.lines() {
                if let Some((id, remote, lport)) = super::core::parse_cipstate(l) {
                    let link = g.core.links[id as usize];
                    if link.state != LinkState::Open {
                        continue;
                    }
                    let link = &mut g.core.links[id as usize];
                    link.remote = Some(remote);
                    link.local_port = lport;
                    if let Owner::Fd(fd) = link.owner {
                        if let Ok(s) = g.core.fds.get_mut(fd) {
                            if s.local_port == 0 {
                                s.local_port = lport;
                            }
                            if !s.udp && s.peer.is_none() {
                                s.peer = Some(remote);
                            }
                        }
                    }
                }
            }
        });
        Ok(())
    }

    /// Apply `TCP_NODELAY` to a connected socket (best effort).
    fn apply_nodelay(&self, fd: Sockfd) {
        let Ok(Some((link, nodelay))) = self.with(|g| {
            g.core
                .fds
                .get(fd)
                .map(|s| s.link.filter(|_| !s.udp).map(|l| (l, s.st.no_delay)))
        }) else {
            return;
        };
        if let Ok(text) = cmd(format_args!("AT+CIPTCPOPT={link},-1,{},0", nodelay as u8)) {
            let _ = self.command(
                &text,
                Kind::Plain,
                self.cfg.cmd_timeout,
                Blocking::Until(self.after(self.cfg.cmd_timeout)),
            );
        }
    }
}

/// Connect attempts when incoming connections keep taking the chosen link.
const MAX_RETRY_LINKS: usize = 3;

/// A connect attempt of `fd` on `link` is over with `e`.
fn fail_connect(c: &mut Core, fd: Sockfd, link: u8, e: Error) {
    if let Ok(s) = c.fds.get_mut(fd) {
        if s.link == Some(link) {
            s.link = None;
        }
        if matches!(s.phase, Phase::Connecting) {
            s.phase = Phase::Failed;
            s.st.error = Some(e);
        }
    }
    let l = &mut c.links[link as usize];
    if l.owner == Owner::Fd(fd) {
        l.owner = Owner::None;
    }
    c.changed = true;
}

impl<S, P> Socketer for EspAt<S, P>
where
    S: Read + Write + ReadReady + Send,
    P: Platform,
{
    fn socket(&self, family: AddressFamily, ty: SockType, proto: Protocol) -> Result<Sockfd> {
        if family != AddressFamily::Inet {
            return Err(Error::FamilyNotSupported);
        }
        if proto.sock_type() != ty {
            return Err(Error::TypeNotSupported);
        }
        self.with(|g| g.core.fds.insert(Sock::new(proto)))
    }

    fn bind(&self, fd: Sockfd, addr: SocketAddr) -> Result<()> {
        let addr = ipv4(addr)?;
        let udp = self.with(|g| {
            let c = &mut g.core;
            let s = c.fds.get(fd)?;
            let udp = s.udp;
            if s.bound.is_some() || s.link.is_some() || !matches!(s.phase, Phase::Idle) {
                return Err(Error::InvalidArgument);
            }
            if !addr.ip().is_unspecified() && c.net.ip.as_ref().map(|i| i.addr) != Some(*addr.ip())
            {
                return Err(Error::AddrNotAvailable);
            }
            let port = match addr.port() {
                0 if udp => c.ephemeral_port(true),
                0 => 0,
                p if c.port_in_use(udp, p, Some(fd)) => return Err(Error::AddrInUse),
                p => p,
            };
            c.fds.get_mut(fd)?.bound = Some(port);
            Ok(udp)
        })?;
        if udp {
            // Open the port on the chip now, so datagrams sent to it arrive.
            let b = Blocking::Until(self.after(self.cfg.cmd_timeout));
            match self.ensure_udp_link(fd, b) {
                Ok(()) | Err(Error::NetworkDown) => {}
                Err(e) => {
                    self.with(|g| {
                        if let Ok(s) = g.core.fds.get_mut(fd) {
                            s.bound = None;
                        }
                    });
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn connect(
        &self,
        fd: Sockfd,
        host: Option<&str>,
        addr: SocketAddr,
        deadline: Deadline,
    ) -> Result<()> {
        let addr = ipv4(addr)?;
        let (udp, tls, trust) =
            self.with(|g| g.core.fds.get(fd).map(|s| (s.udp, s.tls, g.core.trust)))?;
        check_remote(addr)?;
        if tls {
            let verify = match trust {
                Trust::Unset => return Err(Error::InvalidArgument),
                Trust::Cas => true,
                Trust::Insecure => false,
            };
            match host {
                Some(h) if h.is_empty() || h.len() > MAX_HOST_LEN => {
                    return Err(Error::InvalidArgument)
                }
                None if verify => return Err(Error::InvalidArgument),
                _ => {}
            }
            return self.connect_tcp(fd, addr, deadline, Some((host, verify)));
        }
        if udp {
            self.with(|g| {
                if !g.core.net.up {
                    return Err(Error::NetworkDown);
                }
                let s = g.core.fds.get_mut(fd)?;
                s.peer = Some(addr);
                Ok(())
            })?;
            let b = Blocking::Until(self.after(self.cfg.cmd_timeout).min(deadline));
            return self.ensure_udp_link(fd, b);
        }
        self.connect_tcp(fd, addr, deadline, None)
    }

    fn listen(&self, fd: Sockfd, backlog: usize) -> Result<()> {
        let wanted = backlog.clamp(1, super::MAX_LINKS);
        let port = self.with(|g| {
            let c = &mut g.core;
            let other = c
                .fds
                .iter()
                .any(|(f, o)| f != fd && matches!(o.phase, Phase::Listening { .. }));
            let up = c.net.up;
            let s = c.fds.get_mut(fd)?;
            if s.udp || s.tls {
                return Err(Error::NotSupported); // (no SSL server)
            }
            match &mut s.phase {
                Phase::Listening { wanted: w, .. } => {
                    *w = wanted;
                    return Ok(None);
                }
                Phase::Idle => {}
                _ => return Err(Error::InvalidArgument),
            }
            if !up {
                return Err(Error::NetworkDown);
            }
            if other {
                return Err(Error::NoMoreSockets);
            }
            let bound = s.bound.filter(|&p| p != 0);
            let port = match bound {
                Some(p) => p,
                None => c.ephemeral_port(false),
            };
            Ok(Some(port))
        })?;
        let Some(port) = port else { return Ok(()) };
        let t = self.acquire(Blocking::Until(self.after(self.cfg.cmd_timeout * 2)))?;
        let to = self.cfg.cmd_timeout;
        let _ = self.run(
            &t,
            "AT+CIPSERVERMAXCONN=5",
            Kind::Plain,
            to,
            Deadline::Never,
        );
        // Listening before the chip is: connections may come right after OK.
        self.with(|g| {
            if let Ok(s) = g.core.fds.get_mut(fd) {
                s.phase = Phase::Listening {
                    port,
                    backlog: heapless::Deque::new(),
                    wanted,
                };
                s.bound = Some(port);
            }
        });
        let text = cmd(format_args!("AT+CIPSERVER=1,{port}"));
        let r = match text {
            Ok(text) => self.run(&t, &text, Kind::Plain, to, Deadline::Never),
            Err(e) => Err(e),
        };
        self.release_token(t);
        let r = r.and_then(|rep| rep.ok_or(Error::AddrInUse).map(|_| ()));
        if let Err(e) = r {
            self.with(|g| {
                if let Ok(s) = g.core.fds.get_mut(fd) {
                    s.phase = Phase::Idle;
                }
            });
            return Err(e);
        }
        Ok(())
    }

    fn accept(&self, fd: Sockfd, deadline: Deadline) -> Result<(Sockfd, SocketAddr)> {
        self.with(|g| match g.core.fds.get(fd) {
            Ok(s) if s.udp => Err(Error::NotSupported),
            Ok(Sock {
                phase: Phase::Listening { .. },
                ..
            }) => Ok(()),
            Ok(_) => Err(Error::InvalidArgument),
            Err(e) => Err(e),
        })?;
        let blocking =
            self.blocking(fd, MsgFlags::NONE, deadline, Side::Recv, Error::WouldBlock)?;
        let poll = self.cfg.poll_interval;
        let (nfd, known) = block_on(&self.platform, blocking, || {
            self.with(|g| {
                let c = &mut g.core;
                let (st, port, link) = match c.fds.get_mut(fd) {
                    Err(e) => return Attempt::Done(Err(e)),
                    Ok(s) => {
                        if let Some(e) = s.dead {
                            return Attempt::Done(Err(e));
                        }
                        let st = s.st.inherit();
                        match &mut s.phase {
                            Phase::Listening { port, backlog, .. } => match backlog.front() {
                                Some(&l) => (st, *port, l),
                                None => {
                                    return Attempt::Pending {
                                        wake_at: Some(c.now + poll),
                                    }
                                }
                            },
                            _ => return Attempt::Done(Err(Error::InvalidArgument)),
                        }
                    }
                };
                if !c.fds.has_room() {
                    return Attempt::Done(Err(Error::NoMoreSockets));
                }
                if let Ok(Sock {
                    phase: Phase::Listening { backlog, .. },
                    ..
                }) = c.fds.get_mut(fd)
                {
                    backlog.pop_front();
                }
                let l = c.links[link as usize];
                let mut s = Sock::new(Protocol::Tcp);
                s.st = st;
                s.phase = Phase::Connected;
                s.link = Some(link);
                s.peer = l.remote;
                s.local_port = if l.local_port != 0 {
                    l.local_port
                } else {
                    port
                };
                let nfd = match c.fds.insert(s) {
                    Ok(n) => n,
                    Err(e) => return Attempt::Done(Err(e)),
                };
                c.links[link as usize].owner = Owner::Fd(nfd);
                c.changed = true;
                Attempt::Done(Ok((nfd, l.remote.is_some())))
            })
        })?;
        if !known {
            self.refresh_links()?;
        }
        let peer = self.peer_addr(nfd)?;
        Ok((nfd, peer))
    }

    fn send(&self, fd: Sockfd, buf: &[u8], flags: MsgFlags, deadline: Deadline) -> Result<usize> {
        check_send_flags(flags)?;
        let (udp, peer) = self.with(|g| g.core.fds.get(fd).map(|s| (s.udp, s.peer)))?;
        if udp {
            let to = peer.ok_or(Error::NotConnected)?;
            return self.send_udp(fd, buf, flags, to, deadline);
        }
        self.send_tcp(fd, buf, flags, deadline)
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
        let udp = self.with(|g| g.core.fds.get(fd).map(|s| s.udp))?;
        if !udp {
            if self.peer_addr(fd)? != addr {
                return Err(Error::AlreadyConnected);
            }
            return self.send_tcp(fd, buf, flags, deadline);
        }
        self.send_udp(fd, buf, flags, to, deadline)
    }

    fn recv(
        &self,
        fd: Sockfd,
        buf: &mut [u8],
        flags: MsgFlags,
        deadline: Deadline,
    ) -> Result<usize> {
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
        let close = self.with(|g| {
            let c = &mut g.core;
            let s = c.fds.get_mut(fd)?;
            if s.udp {
                if s.peer.is_none() {
                    return Err(Error::NotConnected);
                }
                s.st.shut_rd |= matches!(how, Shutdown::Read | Shutdown::Both);
                s.st.shut_wr |= matches!(how, Shutdown::Write | Shutdown::Both);
                return Ok(false);
            }
            if !matches!(s.phase, Phase::Connected | Phase::Connecting) {
                return Err(Error::NotConnected);
            }
            match how {
                Shutdown::Read => {
                    s.st.shut_rd = true;
                    Ok(false)
                }
                // The AT command set has no half-close.
                Shutdown::Write => Err(Error::NotSupported),
                Shutdown::Both => {
                    s.st.shut_rd = true;
                    s.st.shut_wr = true;
                    if matches!(s.phase, Phase::Connecting) {
                        // The connect in flight is dropped when it completes.
                        s.phase = Phase::Connected;
                        s.eof = true;
                    }
                    if let Some(l) = s.link.take() {
                        if c.links[l as usize].owner == Owner::Fd(fd) {
                            c.links[l as usize].owner = Owner::None;
                        }
                    }
                    c.changed = true;
                    Ok(true)
                }
            }
        })?;
        if close {
            self.flush_closes();
        }
        Ok(())
    }

    fn close(&self, fd: Sockfd) -> Result<()> {
        let work = self.with(|g| {
            let c = &mut g.core;
            let s = c.fds.remove(fd)?;
            if c.stage.parked == Some(fd) {
                c.stage.clear();
            }
            let hard = s.st.linger() == Some(Duration::ZERO);
            let mut work = false;
            if let Some(l) = s.link {
                let link = &mut c.links[l as usize];
                if link.owner == Owner::Fd(fd) {
                    link.owner = Owner::None;
                    link.reset_on_close = hard && !s.udp;
                    work = true;
                }
            }
            if let Phase::Listening { backlog, .. } = &s.phase {
                for &l in backlog.iter() {
                    c.links[l as usize].owner = Owner::None;
                    c.links[l as usize].reset_on_close = true;
                }
                if s.dead.is_none() {
                    c.server_stop = true;
                }
                work = true;
            }
            c.changed = true;
            Ok::<bool, Error>(work)
        })?;
        if work {
            self.flush_closes();
        }
        Ok(())
    }

    fn set_sock_opt(&self, fd: Sockfd, opt: SockOpt) -> Result<()> {
        let nodelay = self.with(|g| {
            let s = g.core.fds.get_mut(fd)?;
            s.st.set(opt)?;
            Ok::<_, Error>(matches!(opt, SockOpt::NoDelay(_)) && s.link.is_some())
        })?;
        if nodelay {
            self.apply_nodelay(fd);
        }
        Ok(())
    }

    fn get_sock_opt(&self, fd: Sockfd, name: SockOptName) -> Result<SockOpt> {
        self.with(|g| g.core.fds.get_mut(fd)?.st.get(name))
    }

    fn poll(&self, fds: &mut [PollFd], deadline: Deadline) -> Result<usize> {
        let poll = self.cfg.poll_interval;
        let r = block_on(&self.platform, Blocking::Until(deadline), || {
            self.with(|g| {
                let mut ready = 0;
                for p in fds.iter_mut() {
                    p.revents = match g.core.readiness(p.fd) {
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
                    Attempt::Pending {
                        wake_at: Some(g.core.now + poll),
                    }
                }
            })
        });
        match r {
            Err(Error::Timeout) => Ok(0),
            r => r,
        }
    }

    fn local_addr(&self, fd: Sockfd) -> Result<SocketAddr> {
        let need = self.with(|g| {
            let s = g.core.fds.get(fd)?;
            Ok::<_, Error>(
                !s.udp
                    && matches!(s.phase, Phase::Connected)
                    && s.local_port == 0
                    && s.link.is_some(),
            )
        })?;
        if need {
            let _ = self.refresh_links();
        }
        let ip = match self.ip_addr_cached() {
            Some(ip) => ip,
            None => match crate::Netdever::ip_config(self) {
                Ok(c) => c.addr,
                Err(_) => Ipv4Addr::UNSPECIFIED,
            },
        };
        self.with(|g| {
            let s = g.core.fds.get(fd)?;
            let port = match &s.phase {
                Phase::Listening { port, .. } => *port,
                Phase::Connected | Phase::Connecting => s.local_port,
                _ if s.udp => {
                    if s.local_port != 0 {
                        s.local_port
                    } else {
                        s.bound.unwrap_or(0)
                    }
                }
                _ => s.bound.unwrap_or(0),
            };
            Ok(SocketAddr::from((ip, port)))
        })
    }

    fn peer_addr(&self, fd: Sockfd) -> Result<SocketAddr> {
        self.with(|g| {
            let s = g.core.fds.get(fd)?;
            if s.udp {
                return s.peer.map(SocketAddr::V4).ok_or(Error::NotConnected);
            }
            match s.phase {
                Phase::Connected | Phase::Connecting => {
                    s.peer.map(SocketAddr::V4).ok_or(Error::NotConnected)
                }
                _ => Err(Error::NotConnected),
            }
        })
    }

    fn now(&self) -> Instant {
        self.platform.now()
    }
}
