//! [`KernelNetdev`]: the host kernel's sockets behind the netdever contract.
//!
//! Offload boards on the simulated network (the W5500 emulator at
//! 127.0.0.2, the ESP-AT emulator at 127.0.0.3) talk through host sockets,
//! so the other end of their conversations lives in the host kernel too.
//! The examples' peer logic is written against [`Netdever`]; a
//! `KernelNetdev` bound to 127.0.0.1 lets that same code be the peer.
//!
//! # Model
//!
//! * **Address.** The device owns one IPv4 address of the host (or of a
//!   network namespace): every socket binds to it (`bind(0.0.0.0:p)` binds
//!   `ip:p`, an unbound socket is bound to `ip:0` before it connects or
//!   sends), so peers see that address as the source.
//! * **Reach.** Outside a namespace the device only talks to 127.0.0.0/8
//!   (its own address must be there too); other destinations are
//!   [`Error::NetworkUnreachable`]. With a namespace
//!   ([`KernelNetdev::in_netns`]) sockets are created by a worker thread that
//!   entered it, and any destination inside the namespace is allowed.
//! * **Sockets.** Kernel sockets in `O_NONBLOCK` mode behind a fixed table of
//!   [`MAX_SOCKETS`] fds with generations (a closed fd stays dead). Blocking
//!   calls try, then `poll(2)` until the earlier of the deadline and the
//!   socket's `RecvTimeout` / `SendTimeout`, so deadlines, non-blocking mode
//!   and `MSG_DONTWAIT` follow the contract exactly; no lock is held while
//!   waiting. Errors map from errno to the typed variants (see
//!   [`map_errno`]); the contract's choices where POSIX differs (a TCP
//!   `send` before `connect` is `NotConnected`, `send_to` another address on
//!   a connected TCP socket is `AlreadyConnected`, port 0 and 0.0.0.0 are
//!   `AddrNotAvailable`) are checked before the kernel is asked.
//! * **Close.** `close` frees the fd at once; the kernel then delivers
//!   queued data and sends FIN in the background. `Linger(Some(0))` resets
//!   the connection; `Linger(Some(d))` makes `close` wait up to `d` (whole
//!   seconds, as `SO_LINGER` counts).
//! * **DNS.** Literal addresses, a host table ([`KernelNetdev::add_host`]),
//!   `localhost`, then A queries over UDP to the DNS servers of the IP
//!   configuration (outside a namespace only to servers in 127.0.0.0/8).
//!   The system resolver is never used.
//! * **Link.** The kernel's address is already configured: `net_connect`
//!   accepts a static configuration whose address is local (DHCP and
//!   `Keep` keep the current one) and reports `NetUp`; `net_disconnect`
//!   reports `NetDown`, after which new connections and sends are
//!   `NetworkDown`. There is no Ethernet: `hardware_addr` is a made-up,
//!   locally administered MAC (`02:4b:` + the IPv4 address) and raw frames
//!   are `NotSupported`.
//!
//! This is host test infrastructure, not product code.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use netdever::{
    AddressFamily, Capabilities, ConnectMode, ConnectParams, Deadline, Error, Event, Events,
    Instant, IpAddr, IpConfig, IpMode, MsgFlags, Netdever, Netlinker, NotifyFn, PollFd, Protocol,
    Result, Shutdown, SockOpt, SockOptName, SockType, SocketAddr, Socketer, Sockfd, TlsSupport,
};
use parking_lot::Mutex;

/// Sockets one device can have open at once.
pub const MAX_SOCKETS: usize = 32;
/// Longest single `poll(2)` while a call waits: bounds how late a waiter
/// notices that another thread closed its socket.
const WAIT_SLICE: Duration = Duration::from_millis(50);
/// Default bound on one name lookup (all servers together).
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// Map an errno to the contract's error.
///
/// `EAGAIN` is [`Error::WouldBlock`]; `ETIMEDOUT` [`Error::Timeout`];
/// connection errors map one to one; `EHOSTUNREACH` is
/// [`Error::NetworkUnreachable`]; `EDESTADDRREQ` (a send without a peer) is
/// [`Error::NotConnected`]; `EACCES` (broadcast without `SO_BROADCAST`) is
/// [`Error::AddrNotAvailable`]; `EMFILE` / `ENFILE` / `ENOBUFS` are
/// [`Error::NoMoreSockets`]; anything unexpected is [`Error::Device`].
pub fn map_errno(e: i32) -> Error {
    match e {
        libc::EAGAIN => Error::WouldBlock,
        libc::ETIMEDOUT => Error::Timeout,
        libc::ECONNREFUSED => Error::ConnectionRefused,
        libc::ECONNRESET => Error::ConnectionReset,
        libc::ECONNABORTED => Error::ConnectionAborted,
        libc::ENOTCONN | libc::EDESTADDRREQ => Error::NotConnected,
        libc::EISCONN => Error::AlreadyConnected,
        libc::EINPROGRESS | libc::EALREADY => Error::InProgress,
        libc::EADDRINUSE => Error::AddrInUse,
        libc::EADDRNOTAVAIL | libc::EACCES => Error::AddrNotAvailable,
        libc::EINVAL => Error::InvalidArgument,
        libc::EMSGSIZE => Error::MessageTooLong,
        libc::EPIPE => Error::BrokenPipe,
        libc::ENETDOWN => Error::NetworkDown,
        libc::ENETUNREACH | libc::EHOSTUNREACH => Error::NetworkUnreachable,
        libc::EOPNOTSUPP | libc::ENOPROTOOPT => Error::NotSupported,
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS => Error::NoMoreSockets,
        libc::EBADF => Error::InvalidSockfd,
        libc::EAFNOSUPPORT => Error::FamilyNotSupported,
        _ => Error::Device,
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Small libc helpers.
// ---------------------------------------------------------------------------

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = a.port().to_be();
    sa.sin_addr = libc::in_addr {
        s_addr: u32::from(*a.ip()).to_be(),
    };
    sa
}

fn from_sockaddr(sa: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
        u16::from_be(sa.sin_port),
    )
}

const SA_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;

fn raw_socket(ty: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with constant arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> Result<()> {
    // SAFETY: valid fd, a correctly sized option value that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(map_errno(errno()));
    }
    Ok(())
}

fn get_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid fd, buffer and length describe `v`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(map_errno(errno()));
    }
    Ok(v)
}

fn set_linger(fd: RawFd, secs: Option<libc::c_int>) -> Result<()> {
    let l = libc::linger {
        l_onoff: secs.is_some() as libc::c_int,
        l_linger: secs.unwrap_or(0),
    };
    // SAFETY: valid fd and a correctly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(map_errno(errno()));
    }
    Ok(())
}

fn name_of(fd: RawFd, peer: bool) -> Result<SocketAddrV4> {
    // SAFETY: all-zero sockaddr_in is valid.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = SA_LEN;
    let p = &mut sa as *mut libc::sockaddr_in as *mut libc::sockaddr;
    // SAFETY: valid fd; `sa` and `len` describe a sockaddr_in buffer.
    let rc = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    if rc != 0 {
        return Err(map_errno(errno()));
    }
    Ok(from_sockaddr(&sa))
}

fn bind_raw(fd: RawFd, a: SocketAddrV4) -> Result<()> {
    let sa = sockaddr(a);
    // SAFETY: valid fd; `sa` is a sockaddr_in of SA_LEN bytes.
    let rc = unsafe {
        libc::bind(
            fd,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            SA_LEN,
        )
    };
    if rc != 0 {
        return Err(map_errno(errno()));
    }
    Ok(())
}

/// Milliseconds for poll(2), rounded up so a wait never ends early.
fn poll_ms(d: Duration) -> libc::c_int {
    let us = d.as_micros();
    us.div_ceil(1000).clamp(1, i32::MAX as u128) as libc::c_int
}

// ---------------------------------------------------------------------------
// Sockets and the fd table.
// ---------------------------------------------------------------------------

#[derive(Debug, Default, Clone, Copy)]
struct SockSt {
    nonblocking: bool,
    rcv_timeo: Option<Duration>,
    snd_timeo: Option<Duration>,
    linger: Option<Duration>,
    /// We shut our sending side down (send is then BrokenPipe).
    shut_wr: bool,
}

struct Sock {
    fd: OwnedFd,
    proto: Protocol,
    closed: AtomicBool,
    st: Mutex<SockSt>,
}

impl Sock {
    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
    fn tcp(&self) -> bool {
        self.proto == Protocol::Tcp
    }
}

#[derive(Default)]
struct Slot {
    generation: u16,
    sock: Option<Arc<Sock>>,
}

/// Where sockets are created: here, or by a thread inside a namespace.
enum Maker {
    Here,
    Netns {
        tx: Option<mpsc::Sender<MakeReq>>,
        thread: Option<JoinHandle<()>>,
    },
}

type MakeReq = (libc::c_int, mpsc::SyncSender<io::Result<OwnedFd>>);

#[derive(Debug, Clone)]
struct NetCfg {
    ip: IpConfig,
    up: bool,
    hosts: Vec<(String, Ipv4Addr)>,
    dns_timeout: Duration,
}

/// A [`Netdever`] + [`Netlinker`] over the host kernel's sockets, bound to
/// one local IPv4 address; see the [module docs](self).
pub struct KernelNetdev {
    start: std::time::Instant,
    slots: Mutex<Vec<Slot>>,
    cfg: Mutex<NetCfg>,
    notify: Mutex<Option<NotifyFn>>,
    maker: Maker,
    netns: Option<PathBuf>,
}

impl std::fmt::Debug for KernelNetdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelNetdev")
            .field("ip", &self.cfg.lock().ip.addr)
            .field("netns", &self.netns)
            .finish_non_exhaustive()
    }
}

impl KernelNetdev {
    /// A device at `ip` (in 127.0.0.0/8) on the host's loopback, up, with
    /// a /8 prefix.
    pub fn new(ip: Ipv4Addr) -> io::Result<Self> {
        Self::with_config(IpConfig::new(ip, 8), None)
    }

    /// A device at `config.addr` inside the network namespace at `netns`
    /// (e.g. `/run/netns/NAME`), up. The address must be assigned in the
    /// namespace (on `lo` or any interface there).
    pub fn in_netns(config: IpConfig, netns: impl Into<PathBuf>) -> io::Result<Self> {
        Self::with_config(config, Some(netns.into()))
    }

    /// A device with `config` (its address must be local to the host's or
    /// the namespace's network stack; outside a namespace it must be in
    /// 127.0.0.0/8), up.
    pub fn with_config(config: IpConfig, netns: Option<PathBuf>) -> io::Result<Self> {
        if netns.is_none() && !config.addr.is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: outside a network namespace a KernelNetdev lives in 127.0.0.0/8",
                    config.addr
                ),
            ));
        }
        let maker = match &netns {
            None => Maker::Here,
            Some(path) => spawn_maker(path)?,
        };
        let dev = KernelNetdev {
            start: std::time::Instant::now(),
            slots: Mutex::new((0..MAX_SOCKETS).map(|_| Slot::default()).collect()),
            cfg: Mutex::new(NetCfg {
                ip: config.clone(),
                up: true,
                hosts: Vec::new(),
                dns_timeout: DNS_TIMEOUT,
            }),
            notify: Mutex::new(None),
            maker,
            netns,
        };
        dev.check_local(config.addr).map_err(|e| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!(
                    "{} is not an address of this network stack ({e})",
                    config.addr
                ),
            )
        })?;
        Ok(dev)
    }

    /// The device's address.
    pub fn ip(&self) -> Ipv4Addr {
        self.cfg.lock().ip.addr
    }

    /// The namespace the device's sockets live in, if any.
    pub fn netns(&self) -> Option<&Path> {
        self.netns.as_deref()
    }

    /// Resolve `name` to `ip` locally (before asking DNS servers).
    pub fn add_host(&self, name: &str, ip: Ipv4Addr) {
        self.cfg.lock().hosts.push((name.to_ascii_lowercase(), ip));
    }

    /// How long one `get_host_by_name` may ask DNS servers (default 5 s).
    pub fn set_dns_timeout(&self, d: Duration) {
        self.cfg.lock().dns_timeout = d;
    }

    fn make(&self, ty: libc::c_int) -> io::Result<OwnedFd> {
        match &self.maker {
            Maker::Here => raw_socket(ty),
            Maker::Netns { tx, .. } => {
                let (rtx, rrx) = mpsc::sync_channel(1);
                tx.as_ref()
                    .ok_or_else(|| io::Error::other("namespace worker stopped"))?
                    .send((ty, rtx))
                    .map_err(|_| io::Error::other("namespace worker stopped"))?;
                rrx.recv()
                    .map_err(|_| io::Error::other("namespace worker stopped"))?
            }
        }
    }

    /// Whether `ip` can be bound here (it is a local address).
    fn check_local(&self, ip: Ipv4Addr) -> Result<()> {
        let s = self
            .make(libc::SOCK_DGRAM)
            .map_err(|e| map_errno(e.raw_os_error().unwrap_or(0)))?;
        bind_raw(s.as_raw_fd(), SocketAddrV4::new(ip, 0))
    }

    fn get(&self, fd: Sockfd) -> Result<Arc<Sock>> {
        if fd.raw() < 0 {
            return Err(Error::InvalidSockfd);
        }
        let slots = self.slots.lock();
        match slots.get(fd.index()) {
            Some(Slot {
                generation,
                sock: Some(s),
            }) if *generation == fd.generation() => Ok(s.clone()),
            _ => Err(Error::InvalidSockfd),
        }
    }

    fn insert(&self, sock: Sock) -> Result<Sockfd> {
        let mut slots = self.slots.lock();
        let (i, slot) = slots
            .iter_mut()
            .enumerate()
            .find(|(_, s)| s.sock.is_none())
            .ok_or(Error::NoMoreSockets)?;
        slot.sock = Some(Arc::new(sock));
        Ok(Sockfd::new(i as u8, slot.generation))
    }

    fn has_free_slot(&self) -> bool {
        self.slots.lock().iter().any(|s| s.sock.is_none())
    }

    fn new_sock(&self, fd: OwnedFd, proto: Protocol) -> Sock {
        Sock {
            fd,
            proto,
            closed: AtomicBool::new(false),
            st: Mutex::new(SockSt::default()),
        }
    }

    fn local_ip(&self) -> Ipv4Addr {
        self.cfg.lock().ip.addr
    }

    fn is_up(&self) -> bool {
        self.cfg.lock().up
    }

    /// A remote address the device may talk to.
    fn remote(&self, addr: SocketAddr) -> Result<SocketAddrV4> {
        let SocketAddr::V4(a) = addr else {
            return Err(Error::FamilyNotSupported);
        };
        if a.port() == 0 || a.ip().is_unspecified() {
            return Err(Error::AddrNotAvailable);
        }
        if self.netns.is_none() && !a.ip().is_loopback() {
            return Err(Error::NetworkUnreachable);
        }
        if !self.is_up() {
            return Err(Error::NetworkDown);
        }
        Ok(a)
    }

    /// Bind to our address, port 0, unless already bound.
    fn ensure_bound(&self, s: &Sock) -> Result<()> {
        let local = name_of(s.raw(), false)?;
        if local.port() != 0 {
            return Ok(());
        }
        bind_raw(s.raw(), SocketAddrV4::new(self.local_ip(), 0))
    }

    /// Wait until `s` is ready for `events` (or has an error / hangup), or
    /// `until` passes (`Timeout`), or `s` is closed (`InvalidSockfd`).
    fn wait(&self, s: &Sock, events: libc::c_short, until: Deadline) -> Result<()> {
        loop {
            if s.closed.load(Ordering::Acquire) {
                return Err(Error::InvalidSockfd);
            }
            let now = self.now();
            let slice = match until.instant() {
                None => WAIT_SLICE,
                Some(at) if now >= at => return Err(Error::Timeout),
                Some(at) => at.saturating_since(now).min(WAIT_SLICE),
            };
            let mut p = libc::pollfd {
                fd: s.raw(),
                events,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut p, 1, poll_ms(slice)) };
            if rc > 0 {
                return Ok(());
            }
            if rc < 0 && errno() != libc::EINTR {
                return Err(Error::Device);
            }
        }
    }

    /// Run `op` until it succeeds or fails for real, waiting for `events`
    /// in between. `op` returns `Err(None)` for "try again" (EAGAIN).
    fn blocking<T>(
        &self,
        s: &Sock,
        flags: MsgFlags,
        read: bool,
        deadline: Deadline,
        mut op: impl FnMut() -> core::result::Result<T, Option<Error>>,
    ) -> Result<T> {
        let st = *s.st.lock();
        let nb = st.nonblocking || flags.contains(MsgFlags::DONTWAIT);
        let timeo = if read { st.rcv_timeo } else { st.snd_timeo };
        let until = deadline.with_timeout(self.now(), timeo);
        let events = if read { libc::POLLIN } else { libc::POLLOUT };
        loop {
            match op() {
                Ok(v) => return Ok(v),
                Err(Some(e)) => return Err(e),
                Err(None) if nb => return Err(Error::WouldBlock),
                Err(None) => self.wait(s, events, until)?,
            }
        }
    }

    /// One kernel call's result: a length, "try again", or an error.
    fn io_result(rc: isize) -> core::result::Result<usize, Option<Error>> {
        if rc >= 0 {
            return Ok(rc as usize);
        }
        match errno() {
            libc::EAGAIN | libc::EINTR => Err(None),
            e => Err(Some(map_errno(e))),
        }
    }

    /// EPIPE on a TCP socket: `BrokenPipe` after our own shutdown(Write),
    /// else `NotConnected` if it is not (or no longer) connected.
    fn fix_epipe(s: &Sock, e: Option<Error>) -> Option<Error> {
        match e {
            Some(Error::BrokenPipe)
                if s.tcp() && !s.st.lock().shut_wr && name_of(s.raw(), true).is_err() =>
            {
                Some(Error::NotConnected)
            }
            e => e,
        }
    }

    fn send_inner(
        &self,
        s: &Sock,
        buf: &[u8],
        flags: MsgFlags,
        to: Option<SocketAddrV4>,
        deadline: Deadline,
    ) -> Result<usize> {
        let sa = to.map(sockaddr);
        let kflags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        self.blocking(s, flags, false, deadline, || {
            // SAFETY: valid fd; `buf` and the optional sockaddr outlive the call.
            let rc = unsafe {
                match &sa {
                    Some(sa) => libc::sendto(
                        s.raw(),
                        buf.as_ptr() as *const libc::c_void,
                        buf.len(),
                        kflags,
                        sa as *const libc::sockaddr_in as *const libc::sockaddr,
                        SA_LEN,
                    ),
                    None => libc::send(
                        s.raw(),
                        buf.as_ptr() as *const libc::c_void,
                        buf.len(),
                        kflags,
                    ),
                }
            };
            Self::io_result(rc).map_err(|e| Self::fix_epipe(s, e))
        })
    }

    fn recv_inner(
        &self,
        s: &Sock,
        buf: &mut [u8],
        flags: MsgFlags,
        deadline: Deadline,
    ) -> Result<(usize, Option<SocketAddrV4>)> {
        if buf.is_empty() || flags.has_unknown() {
            return Err(Error::InvalidArgument);
        }
        let mut kflags = libc::MSG_DONTWAIT;
        if flags.contains(MsgFlags::PEEK) {
            kflags |= libc::MSG_PEEK;
        }
        self.blocking(s, flags, true, deadline, || {
            // SAFETY: all-zero sockaddr_in is valid.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            let mut len = SA_LEN;
            // SAFETY: valid fd; `buf`, `sa` and `len` outlive the call.
            let rc = unsafe {
                libc::recvfrom(
                    s.raw(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    kflags,
                    &mut sa as *mut libc::sockaddr_in as *mut libc::sockaddr,
                    &mut len,
                )
            };
            let n = Self::io_result(rc)?;
            let from = (len as usize >= std::mem::size_of::<libc::sockaddr_in>()
                && sa.sin_family == libc::AF_INET as libc::sa_family_t)
                .then(|| from_sockaddr(&sa));
            Ok((n, from))
        })
    }

    fn notify(&self, ev: Event) {
        let cb = *self.notify.lock();
        if let Some(cb) = cb {
            cb(ev);
        }
    }

    fn set_up(&self, up: bool) {
        let was = std::mem::replace(&mut self.cfg.lock().up, up);
        if was != up {
            self.notify(if up { Event::NetUp } else { Event::NetDown });
        }
    }

    /// Ask the DNS servers of the configuration for an A record.
    fn dns_query(&self, name: &str) -> Result<Ipv4Addr> {
        let (servers, limit) = {
            let c = self.cfg.lock();
            (c.ip.dns.clone(), c.dns_timeout)
        };
        let servers: Vec<Ipv4Addr> = servers
            .into_iter()
            .filter(|s| self.netns.is_some() || s.is_loopback())
            .collect();
        if servers.is_empty() {
            return Err(Error::HostUnknown);
        }
        let id = (self.start.elapsed().as_nanos() as u16) ^ 0x5a3c;
        let query = dns::query(id, name).ok_or(Error::HostUnknown)?;
        let fd = self
            .make(libc::SOCK_DGRAM)
            .map_err(|e| map_errno(e.raw_os_error().unwrap_or(0)))?;
        let sock = self.new_sock(fd, Protocol::Udp);
        bind_raw(sock.raw(), SocketAddrV4::new(self.local_ip(), 0))?;
        let until = Deadline::after(self.now(), limit);
        let per_server = limit / servers.len() as u32;
        for server in servers {
            let to = SocketAddrV4::new(server, 53);
            if self
                .send_inner(&sock, &query, MsgFlags::NONE, Some(to), until)
                .is_err()
            {
                continue;
            }
            let this = until.min(Deadline::after(self.now(), per_server));
            let mut buf = [0u8; 1500];
            loop {
                match self.recv_inner(&sock, &mut buf, MsgFlags::NONE, this) {
                    Ok((n, Some(from))) if from == to => match dns::answer(&buf[..n], id) {
                        Some(dns::Answer::Addr(a)) => return Ok(a),
                        Some(dns::Answer::NoSuchName) => return Err(Error::HostUnknown),
                        Some(dns::Answer::Nothing) => break,
                        None => continue,
                    },
                    Ok(_) => continue,
                    Err(_) => break,
                }
            }
        }
        Err(Error::HostUnknown)
    }
}

/// Run `f` on a new thread that first entered the network namespace at
/// `path` (e.g. `/run/netns/NAME`), and return its result. Sockets (and
/// threads) created there belong to that namespace for life; the calling
/// thread is not affected. A panic in `f` is re-raised here.
pub fn run_in_netns<R: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> R + Send + 'static,
) -> io::Result<R> {
    let file = std::fs::File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let h = std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            // SAFETY: plain syscall on a valid, open fd; affects only this thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            drop(file);
            Ok(f())
        })?;
    match h.join() {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    }
}

fn spawn_maker(path: &Path) -> io::Result<Maker> {
    let file = std::fs::File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let (tx, rx) = mpsc::channel::<MakeReq>();
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("kernel-netdev-ns".into())
        .spawn(move || {
            // SAFETY: plain syscall on a valid, open fd; affects only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            let entered = if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            };
            drop(file);
            let ok = entered.is_ok();
            let _ = ready_tx.send(entered);
            if !ok {
                return;
            }
            while let Ok((ty, reply)) = rx.recv() {
                let _ = reply.send(raw_socket(ty));
            }
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(Maker::Netns {
            tx: Some(tx),
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(io::Error::new(
                e.kind(),
                format!("entering the namespace: {e}"),
            ))
        }
        Err(_) => {
            let _ = thread.join();
            Err(io::Error::other("namespace worker died"))
        }
    }
}

impl Drop for KernelNetdev {
    fn drop(&mut self) {
        for slot in self.slots.lock().iter_mut() {
            if let Some(s) = slot.sock.take() {
                s.closed.store(true, Ordering::Release);
            }
        }
        if let Maker::Netns { tx, thread } = &mut self.maker {
            drop(tx.take());
            if let Some(t) = thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Socketer for KernelNetdev {
    fn socket(&self, family: AddressFamily, ty: SockType, proto: Protocol) -> Result<Sockfd> {
        if family != AddressFamily::Inet {
            return Err(Error::FamilyNotSupported);
        }
        let kty = match (ty, proto) {
            (SockType::Stream, Protocol::Tcp) => libc::SOCK_STREAM,
            (SockType::Dgram, Protocol::Udp) => libc::SOCK_DGRAM,
            (SockType::Stream, Protocol::Tls) => return Err(Error::ProtocolNotSupported),
            _ => return Err(Error::TypeNotSupported),
        };
        if !self.has_free_slot() {
            return Err(Error::NoMoreSockets);
        }
        let fd = self
            .make(kty)
            .map_err(|e| map_errno(e.raw_os_error().unwrap_or(0)))?;
        if proto == Protocol::Tcp {
            // Servers on fixed ports restart without waiting out TIME_WAIT.
            set_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        }
        self.insert(self.new_sock(fd, proto))
    }

    fn bind(&self, fd: Sockfd, addr: SocketAddr) -> Result<()> {
        let s = self.get(fd)?;
        let SocketAddr::V4(a) = addr else {
            return Err(Error::FamilyNotSupported);
        };
        let ours = self.local_ip();
        let ip = if a.ip().is_unspecified() {
            ours
        } else {
            *a.ip()
        };
        if ip != ours {
            return Err(Error::AddrNotAvailable);
        }
        bind_raw(s.raw(), SocketAddrV4::new(ip, a.port()))
    }

    fn connect(
        &self,
        fd: Sockfd,
        _host: Option<&str>,
        addr: SocketAddr,
        deadline: Deadline,
    ) -> Result<()> {
        let s = self.get(fd)?;
        // Linux answers a second connect after a completed non-blocking
        // one with success; the contract says AlreadyConnected.
        if s.tcp() && name_of(s.raw(), true).is_ok() {
            return Err(Error::AlreadyConnected);
        }
        let a = self.remote(addr)?;
        self.ensure_bound(&s)?;
        let sa = sockaddr(a);
        // SAFETY: valid fd; `sa` is a sockaddr_in of SA_LEN bytes.
        let rc = unsafe {
            libc::connect(
                s.raw(),
                &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                SA_LEN,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        match errno() {
            libc::EINPROGRESS | libc::EALREADY | libc::EINTR if s.tcp() => {}
            e => return Err(map_errno(e)),
        }
        let st = *s.st.lock();
        if st.nonblocking {
            return Err(Error::InProgress);
        }
        let until = deadline.with_timeout(self.now(), st.snd_timeo);
        match self.wait(&s, libc::POLLOUT, until) {
            Ok(()) => {}
            Err(Error::Timeout) => {
                // Give the attempt up (AF_UNSPEC disconnects a TCP socket),
                // so the socket can connect again.
                // SAFETY: all-zero sockaddr with AF_UNSPEC; valid fd.
                let mut un: libc::sockaddr = unsafe { std::mem::zeroed() };
                un.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
                // SAFETY: valid fd and sockaddr.
                unsafe {
                    libc::connect(
                        s.raw(),
                        &un,
                        std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
                    )
                };
                return Err(Error::Timeout);
            }
            Err(e) => return Err(e),
        }
        match get_int(s.raw(), libc::SOL_SOCKET, libc::SO_ERROR)? {
            0 => name_of(s.raw(), true).map(|_| ()),
            e => Err(map_errno(e)),
        }
    }

    fn listen(&self, fd: Sockfd, backlog: usize) -> Result<()> {
        let s = self.get(fd)?;
        if !s.tcp() {
            return Err(Error::NotSupported);
        }
        if !self.is_up() {
            return Err(Error::NetworkDown);
        }
        self.ensure_bound(&s)?;
        let backlog = backlog.clamp(1, 128) as libc::c_int;
        // SAFETY: valid fd.
        if unsafe { libc::listen(s.raw(), backlog) } != 0 {
            return Err(map_errno(errno()));
        }
        Ok(())
    }

    fn accept(&self, fd: Sockfd, deadline: Deadline) -> Result<(Sockfd, SocketAddr)> {
        let s = self.get(fd)?;
        if !s.tcp() {
            return Err(Error::NotSupported);
        }
        let (nfd, from) = self.blocking(&s, MsgFlags::NONE, true, deadline, || {
            if !self.has_free_slot() {
                return Err(Some(Error::NoMoreSockets));
            }
            // SAFETY: all-zero sockaddr_in is valid.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            let mut len = SA_LEN;
            // SAFETY: valid fd; `sa` and `len` describe a sockaddr_in buffer.
            let rc = unsafe {
                libc::accept4(
                    s.raw(),
                    &mut sa as *mut libc::sockaddr_in as *mut libc::sockaddr,
                    &mut len,
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if rc < 0 {
                return match errno() {
                    libc::EAGAIN | libc::EINTR | libc::ECONNABORTED => Err(None),
                    e => Err(Some(map_errno(e))),
                };
            }
            // SAFETY: accept4 returned a new fd owned by no one else.
            let nfd = unsafe { OwnedFd::from_raw_fd(rc) };
            Ok((nfd, from_sockaddr(&sa)))
        })?;
        let new = self.insert(self.new_sock(nfd, Protocol::Tcp))?;
        Ok((new, SocketAddr::V4(from)))
    }

    fn send(&self, fd: Sockfd, buf: &[u8], flags: MsgFlags, deadline: Deadline) -> Result<usize> {
        let s = self.get(fd)?;
        if flags.has_unknown() || flags.contains(MsgFlags::PEEK) {
            return Err(Error::InvalidArgument);
        }
        self.send_inner(&s, buf, flags, None, deadline)
    }

    fn send_to(
        &self,
        fd: Sockfd,
        buf: &[u8],
        flags: MsgFlags,
        addr: SocketAddr,
        deadline: Deadline,
    ) -> Result<usize> {
        let s = self.get(fd)?;
        if flags.has_unknown() || flags.contains(MsgFlags::PEEK) {
            return Err(Error::InvalidArgument);
        }
        if s.tcp() {
            let peer = name_of(s.raw(), true).map_err(|_| Error::NotConnected)?;
            if SocketAddr::V4(peer) != addr {
                return Err(Error::AlreadyConnected);
            }
            return self.send_inner(&s, buf, flags, None, deadline);
        }
        let a = self.remote(addr)?;
        self.ensure_bound(&s)?;
        self.send_inner(&s, buf, flags, Some(a), deadline)
    }

    fn recv(
        &self,
        fd: Sockfd,
        buf: &mut [u8],
        flags: MsgFlags,
        deadline: Deadline,
    ) -> Result<usize> {
        let s = self.get(fd)?;
        self.recv_inner(&s, buf, flags, deadline).map(|(n, _)| n)
    }

    fn recv_from(
        &self,
        fd: Sockfd,
        buf: &mut [u8],
        flags: MsgFlags,
        deadline: Deadline,
    ) -> Result<(usize, SocketAddr)> {
        let s = self.get(fd)?;
        let (n, from) = self.recv_inner(&s, buf, flags, deadline)?;
        let from = match from {
            Some(a) => a,
            // TCP: the kernel does not fill the address in.
            None => name_of(s.raw(), true)?,
        };
        Ok((n, SocketAddr::V4(from)))
    }

    fn shutdown(&self, fd: Sockfd, how: Shutdown) -> Result<()> {
        let s = self.get(fd)?;
        let kh = match how {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        };
        // SAFETY: valid fd.
        if unsafe { libc::shutdown(s.raw(), kh) } != 0 {
            return Err(map_errno(errno()));
        }
        if how != Shutdown::Read {
            s.st.lock().shut_wr = true;
        }
        Ok(())
    }

    fn close(&self, fd: Sockfd) -> Result<()> {
        let s = {
            let mut slots = self.slots.lock();
            let slot = slots
                .get_mut(fd.index())
                .filter(|sl| fd.raw() >= 0 && sl.generation == fd.generation())
                .ok_or(Error::InvalidSockfd)?;
            let s = slot.sock.take().ok_or(Error::InvalidSockfd)?;
            slot.generation = (slot.generation + 1) & 0x7fff;
            s
        };
        s.closed.store(true, Ordering::Release);
        match s.st.lock().linger {
            None => {}
            Some(d) if d.is_zero() => {
                let _ = set_linger(s.raw(), Some(0));
            }
            Some(d) => {
                let secs = d.as_secs_f64().ceil().min(i32::MAX as f64) as libc::c_int;
                let _ = set_linger(s.raw(), Some(secs));
                // A lingering close(2) waits only on a blocking socket.
                // SAFETY: valid fd; F_GETFL/F_SETFL take plain integers.
                unsafe {
                    let fl = libc::fcntl(s.raw(), libc::F_GETFL);
                    if fl >= 0 {
                        libc::fcntl(s.raw(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
                    }
                }
            }
        }
        // The kernel socket closes when the last user (a call still waiting
        // on another thread notices within WAIT_SLICE) lets go.
        drop(s);
        Ok(())
    }

    fn set_sock_opt(&self, fd: Sockfd, opt: SockOpt) -> Result<()> {
        let s = self.get(fd)?;
        let raw = s.raw();
        let tcp_only = |s: &Sock| {
            if s.tcp() {
                Ok(())
            } else {
                Err(Error::NotSupported)
            }
        };
        match opt {
            SockOpt::KeepAlive(on) => set_int(raw, libc::SOL_SOCKET, libc::SO_KEEPALIVE, on as _),
            SockOpt::KeepInterval(d) => {
                tcp_only(&s)?;
                let secs = d.as_secs().clamp(1, i32::MAX as u64) as libc::c_int;
                set_int(raw, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, secs)
            }
            SockOpt::NoDelay(on) => {
                tcp_only(&s)?;
                set_int(raw, libc::IPPROTO_TCP, libc::TCP_NODELAY, on as _)
            }
            SockOpt::Linger(l) => {
                tcp_only(&s)?;
                s.st.lock().linger = l;
                Ok(())
            }
            SockOpt::RecvTimeout(t) => {
                s.st.lock().rcv_timeo = t;
                Ok(())
            }
            SockOpt::SendTimeout(t) => {
                s.st.lock().snd_timeo = t;
                Ok(())
            }
            SockOpt::NonBlocking(on) => {
                s.st.lock().nonblocking = on;
                Ok(())
            }
            SockOpt::ReuseAddr(on) => set_int(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, on as _),
            SockOpt::Broadcast(on) => {
                if s.tcp() {
                    return Err(Error::NotSupported);
                }
                set_int(raw, libc::SOL_SOCKET, libc::SO_BROADCAST, on as _)
            }
            SockOpt::SocketError(_) => Err(Error::InvalidArgument),
            _ => Err(Error::NotSupported),
        }
    }

    fn get_sock_opt(&self, fd: Sockfd, name: SockOptName) -> Result<SockOpt> {
        let s = self.get(fd)?;
        let raw = s.raw();
        let st = *s.st.lock();
        let tcp_only = || {
            if s.tcp() {
                Ok(())
            } else {
                Err(Error::NotSupported)
            }
        };
        Ok(match name {
            SockOptName::KeepAlive => {
                SockOpt::KeepAlive(get_int(raw, libc::SOL_SOCKET, libc::SO_KEEPALIVE)? != 0)
            }
            SockOptName::KeepInterval => {
                tcp_only()?;
                let secs = get_int(raw, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL)?;
                SockOpt::KeepInterval(Duration::from_secs(secs.max(0) as u64))
            }
            SockOptName::NoDelay => {
                tcp_only()?;
                SockOpt::NoDelay(get_int(raw, libc::IPPROTO_TCP, libc::TCP_NODELAY)? != 0)
            }
            SockOptName::Linger => {
                tcp_only()?;
                SockOpt::Linger(st.linger)
            }
            SockOptName::RecvTimeout => SockOpt::RecvTimeout(st.rcv_timeo),
            SockOptName::SendTimeout => SockOpt::SendTimeout(st.snd_timeo),
            SockOptName::NonBlocking => SockOpt::NonBlocking(st.nonblocking),
            SockOptName::ReuseAddr => {
                SockOpt::ReuseAddr(get_int(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR)? != 0)
            }
            SockOptName::Broadcast => {
                if s.tcp() {
                    return Err(Error::NotSupported);
                }
                SockOpt::Broadcast(get_int(raw, libc::SOL_SOCKET, libc::SO_BROADCAST)? != 0)
            }
            SockOptName::SocketError => {
                let e = get_int(raw, libc::SOL_SOCKET, libc::SO_ERROR)?;
                SockOpt::SocketError((e != 0).then(|| map_errno(e)))
            }
            _ => return Err(Error::NotSupported),
        })
    }

    fn poll(&self, fds: &mut [PollFd], deadline: Deadline) -> Result<usize> {
        let socks: Vec<Option<Arc<Sock>>> = fds.iter().map(|p| self.get(p.fd).ok()).collect();
        for p in fds.iter_mut() {
            p.revents = Events::NONE;
        }
        let mut invalid = 0;
        for (p, s) in fds.iter_mut().zip(&socks) {
            if s.is_none() {
                p.revents = Events::ERROR;
                invalid += 1;
            }
        }
        let mut pfds: Vec<libc::pollfd> = Vec::new();
        let mut map: Vec<usize> = Vec::new();
        for (i, (p, s)) in fds.iter().zip(&socks).enumerate() {
            if let Some(s) = s {
                let mut ev = libc::POLLRDHUP;
                if p.events.contains(Events::READABLE) {
                    ev |= libc::POLLIN;
                }
                if p.events.contains(Events::WRITABLE) {
                    ev |= libc::POLLOUT;
                }
                pfds.push(libc::pollfd {
                    fd: s.raw(),
                    events: ev,
                    revents: 0,
                });
                map.push(i);
            }
        }
        loop {
            let now = self.now();
            let slice = if invalid > 0 {
                Duration::ZERO
            } else {
                match deadline.instant() {
                    None => WAIT_SLICE,
                    Some(at) if now >= at => Duration::ZERO,
                    Some(at) => at.saturating_since(now).min(WAIT_SLICE),
                }
            };
            let ms = if slice.is_zero() { 0 } else { poll_ms(slice) };
            // SAFETY: `pfds` is a valid array of pollfd of the given length.
            let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
            if rc < 0 && errno() != libc::EINTR {
                return Err(Error::Device);
            }
            let mut ready = invalid;
            for (pf, &i) in pfds.iter().zip(&map) {
                let mut r = Events::NONE;
                let k = pf.revents;
                if k & libc::POLLIN != 0 {
                    r |= Events::READABLE;
                }
                if k & libc::POLLOUT != 0 {
                    r |= Events::WRITABLE;
                }
                if k & (libc::POLLERR | libc::POLLNVAL) != 0 {
                    r |= Events::ERROR;
                }
                if k & (libc::POLLHUP | libc::POLLRDHUP) != 0 {
                    r |= Events::HANGUP;
                }
                if socks[i]
                    .as_ref()
                    .is_some_and(|s| s.closed.load(Ordering::Acquire))
                {
                    r = Events::ERROR;
                }
                fds[i].revents = r;
                if !r.is_empty() {
                    ready += 1;
                }
            }
            // A zero slice means the deadline passed (or invalid entries
            // make the call return at once): report what is ready, maybe 0.
            if ready > 0 || slice.is_zero() {
                return Ok(ready);
            }
        }
    }

    fn local_addr(&self, fd: Sockfd) -> Result<SocketAddr> {
        let s = self.get(fd)?;
        name_of(s.raw(), false).map(SocketAddr::V4)
    }

    fn peer_addr(&self, fd: Sockfd) -> Result<SocketAddr> {
        let s = self.get(fd)?;
        name_of(s.raw(), true).map(SocketAddr::V4)
    }

    fn now(&self) -> Instant {
        let us = self.start.elapsed().as_micros();
        Instant::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
    }
}

impl Netdever for KernelNetdev {
    fn get_host_by_name(&self, name: &str, family: AddressFamily) -> Result<IpAddr> {
        if family != AddressFamily::Inet {
            return Err(Error::FamilyNotSupported);
        }
        if let Ok(a) = name.parse::<Ipv4Addr>() {
            return Ok(IpAddr::V4(a));
        }
        let lower = name.trim_end_matches('.').to_ascii_lowercase();
        if lower.is_empty() || lower.len() > 253 {
            return Err(Error::HostUnknown);
        }
        if let Some(&(_, a)) = self.cfg.lock().hosts.iter().find(|(n, _)| *n == lower) {
            return Ok(IpAddr::V4(a));
        }
        if lower == "localhost" {
            return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        if !self.is_up() {
            return Err(Error::NetworkDown);
        }
        self.dns_query(&lower).map(IpAddr::V4)
    }

    fn addr(&self) -> Result<IpAddr> {
        self.ip_config().map(|c| IpAddr::V4(c.addr))
    }

    fn ip_config(&self) -> Result<IpConfig> {
        let c = self.cfg.lock();
        if c.up {
            Ok(c.ip.clone())
        } else {
            Err(Error::NetworkDown)
        }
    }

    fn set_addr(&self, config: IpConfig) -> Result<()> {
        if config.prefix_len > 32 || config.addr.is_unspecified() {
            return Err(Error::InvalidArgument);
        }
        if self.netns.is_none() && !config.addr.is_loopback() {
            return Err(Error::AddrNotAvailable);
        }
        self.check_local(config.addr)?;
        self.cfg.lock().ip = config;
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_sockets: MAX_SOCKETS,
            max_tcp: MAX_SOCKETS,
            max_udp: MAX_SOCKETS,
            tls: TlsSupport::None,
            server: true,
            dns: true,
            dhcp: false,
        }
    }
}

impl Netlinker for KernelNetdev {
    fn net_connect(&self, params: &ConnectParams<'_>) -> Result<()> {
        if params.mode == ConnectMode::AccessPoint {
            return Err(Error::NotSupported);
        }
        if let IpMode::Static(c) = &params.ip {
            self.set_addr(c.clone())?;
        }
        self.set_up(true);
        Ok(())
    }

    fn net_disconnect(&self) -> Result<()> {
        self.set_up(false);
        Ok(())
    }

    fn net_notify(&self, callback: Option<NotifyFn>) {
        *self.notify.lock() = callback;
    }

    fn hardware_addr(&self) -> Result<[u8; 6]> {
        let o = self.local_ip().octets();
        Ok([0x02, 0x4b, o[0], o[1], o[2], o[3]])
    }
}

/// A minimal DNS client: one A question, the first A answer.
mod dns {
    use std::net::Ipv4Addr;

    /// What a response said.
    pub enum Answer {
        Addr(Ipv4Addr),
        NoSuchName,
        Nothing,
    }

    /// A recursive A query for `name` with `id`.
    pub fn query(id: u16, name: &str) -> Option<Vec<u8>> {
        let mut q = Vec::with_capacity(18 + name.len());
        q.extend_from_slice(&id.to_be_bytes());
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return None;
            }
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        Some(q)
    }

    fn skip_name(p: &[u8], mut i: usize) -> Option<usize> {
        loop {
            let len = *p.get(i)? as usize;
            if len & 0xc0 == 0xc0 {
                return Some(i + 2);
            }
            if len == 0 {
                return Some(i + 1);
            }
            i += 1 + len;
        }
    }

    /// Parse a response to query `id`; `None` if it is not one.
    pub fn answer(p: &[u8], id: u16) -> Option<Answer> {
        if p.len() < 12 || u16::from_be_bytes([p[0], p[1]]) != id || p[2] & 0x80 == 0 {
            return None;
        }
        match p[3] & 0x0f {
            0 => {}
            3 => return Some(Answer::NoSuchName),
            _ => return Some(Answer::Nothing),
        }
        let qd = u16::from_be_bytes([p[4], p[5]]);
        let an = u16::from_be_bytes([p[6], p[7]]);
        let mut i = 12;
        for _ in 0..qd {
            i = skip_name(p, i)? + 4;
        }
        for _ in 0..an {
            i = skip_name(p, i)?;
            let h = p.get(i..i + 10)?;
            let ty = u16::from_be_bytes([h[0], h[1]]);
            let len = u16::from_be_bytes([h[8], h[9]]) as usize;
            let data = p.get(i + 10..i + 10 + len)?;
            if ty == 1 && len == 4 {
                return Some(Answer::Addr(Ipv4Addr::new(
                    data[0], data[1], data[2], data[3],
                )));
            }
            i += 10 + len;
        }
        Some(Answer::Nothing)
    }
}
