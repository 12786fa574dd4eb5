//! The chip's network side: links on host sockets, their reader and writer
//! threads, the TCP server, and name resolution.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{lock, Shared};

/// How long blocking socket calls wait before re-checking for shutdown.
pub(crate) const TICK: Duration = Duration::from_millis(20);

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Tcp,
    Udp,
    /// TLS over TCP (the TLS runs in the emulator: `ssl.rs`).
    Ssl,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Ssl => "SSL",
        }
    }

    /// A byte stream (TCP or SSL).
    pub fn stream(self) -> bool {
        self != Proto::Udp
    }
}

/// How a closing link ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseMode {
    /// FIN after the queued data.
    Graceful,
    /// RST now, queued data dropped.
    Abort,
}

/// Mutable state of a link.
pub(crate) struct LinkState {
    pub remote: SocketAddrV4,
    pub udp_mode: u8,
    pub udp_changed: bool,
    /// Passive receive buffer (TCP, and SSL's decrypted data).
    pub rx: VecDeque<u8>,
    /// SSL: the TLS records behind `rx`, oldest first, as (plaintext of the
    /// record still in `rx`, the record's size on the wire).
    pub records: VecDeque<(usize, usize)>,
    /// Passive receive buffer (UDP datagrams) and its size in bytes.
    pub dgrams: VecDeque<(SocketAddrV4, Vec<u8>)>,
    pub dgram_bytes: usize,
    /// A passive `+IPD` was reported and not yet followed by a read.
    pub ipd_reported: bool,
    /// The peer closed (or reset) its side.
    pub peer_eof: bool,
    /// The link is gone from the chip's table; threads stop.
    pub closed: bool,
    /// Send buffer (TCP).
    pub tx: VecDeque<u8>,
    /// How the host asked to close.
    pub close: Option<CloseMode>,
    /// `AT+CIPTCPOPT` values.
    pub linger: i64,
    pub nodelay: bool,
}

/// One of the chip's five links.
pub(crate) struct Link {
    pub id: u8,
    pub gen: u64,
    pub proto: Proto,
    /// Created by the server (`<tetype>` 1).
    pub server: bool,
    pub local: SocketAddrV4,
    pub tcp: Option<TcpStream>,
    pub udp: Option<UdpSocket>,
    pub st: Mutex<LinkState>,
    pub cv: Condvar,
    /// Reader and writer threads still running (they hold socket handles).
    pub threads: std::sync::atomic::AtomicUsize,
}

/// Counts a link thread as running until dropped.
pub(crate) struct Running<'a>(pub &'a Link);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.threads.fetch_sub(1, Ordering::SeqCst);
        self.0.cv.notify_all();
    }
}

impl Link {
    /// Wait (bounded) until the caller's handle is the link's last one, so
    /// its socket closes when the caller drops it. The link's threads are
    /// done (`threads` 0) a moment before they drop their handles: the
    /// count alone let a bind right after `CIPCLOSE` meet the still open
    /// socket (`EADDRINUSE`).
    pub fn wait_released(self: &Arc<Self>, limit: Duration) {
        let end = Instant::now() + limit;
        let mut st = lock(&self.st);
        while (self.threads.load(Ordering::SeqCst) > 0 || Arc::strong_count(self) > 1)
            && Instant::now() < end
        {
            st = self
                .cv
                .wait_timeout(st, Duration::from_millis(5))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// A new link around a connected TCP stream.
    pub fn tcp(id: u8, gen: u64, server: bool, s: TcpStream) -> io::Result<Arc<Link>> {
        Self::stream(id, gen, server, s, Proto::Tcp)
    }

    /// A new SSL link around a connected TCP stream (handshake not yet done).
    pub fn ssl(id: u8, gen: u64, s: TcpStream) -> io::Result<Arc<Link>> {
        Self::stream(id, gen, false, s, Proto::Ssl)
    }

    fn stream(id: u8, gen: u64, server: bool, s: TcpStream, proto: Proto) -> io::Result<Arc<Link>> {
        let local = v4(s.local_addr()?);
        let remote = v4(s.peer_addr()?);
        s.set_read_timeout(Some(TICK))?;
        s.set_write_timeout(Some(TICK))?;
        Ok(Arc::new(Link {
            id,
            gen,
            proto,
            server,
            local,
            tcp: Some(s),
            udp: None,
            st: Mutex::new(LinkState::new(remote, 0)),
            cv: Condvar::new(),
            threads: std::sync::atomic::AtomicUsize::new(0),
        }))
    }

    /// A new UDP link.
    pub fn udp(
        id: u8,
        gen: u64,
        u: UdpSocket,
        remote: SocketAddrV4,
        mode: u8,
    ) -> io::Result<Arc<Link>> {
        let local = v4(u.local_addr()?);
        u.set_read_timeout(Some(TICK))?;
        Ok(Arc::new(Link {
            id,
            gen,
            proto: Proto::Udp,
            server: false,
            local,
            tcp: None,
            udp: Some(u),
            st: Mutex::new(LinkState::new(remote, mode)),
            cv: Condvar::new(),
            threads: std::sync::atomic::AtomicUsize::new(0),
        }))
    }

    /// Bytes waiting in the passive buffer.
    pub fn buffered(st: &LinkState) -> usize {
        st.rx.len() + st.dgram_bytes
    }

    /// What `AT+CIPRECVLEN?` reports: the bytes buffered, for an SSL link
    /// the encrypted ones (every record not yet read to its end, whole).
    pub fn recv_len(&self, st: &LinkState) -> usize {
        match self.proto {
            Proto::Ssl => st.records.iter().map(|&(_, wire)| wire).sum(),
            _ => Self::buffered(st),
        }
    }
}

impl LinkState {
    fn new(remote: SocketAddrV4, udp_mode: u8) -> Self {
        LinkState {
            remote,
            udp_mode,
            udp_changed: false,
            rx: VecDeque::new(),
            records: VecDeque::new(),
            dgrams: VecDeque::new(),
            dgram_bytes: 0,
            ipd_reported: false,
            peer_eof: false,
            closed: false,
            tx: VecDeque::new(),
            close: None,
            linger: -1,
            nodelay: false,
        }
    }
}

pub(crate) fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
    }
}

/// `<link>,` in multi-connection mode, nothing in single mode.
pub(crate) fn prefix(shared: &Shared, id: u8) -> String {
    if shared.mux.load(Ordering::SeqCst) {
        format!("{id},")
    } else {
        String::new()
    }
}

/// `,"<ip>",<port>` when `AT+CIPDINFO=1`.
pub(crate) fn dinfo(shared: &Shared, from: SocketAddrV4) -> String {
    if shared.dinfo.load(Ordering::SeqCst) {
        format!(",\"{}\",{}", from.ip(), from.port())
    } else {
        String::new()
    }
}

/// Start the reader (and for TCP the writer) thread of a link. (An SSL
/// link has its own thread, started with its handshake.)
pub(crate) fn start_threads(shared: &Arc<Shared>, link: &Arc<Link>) {
    if link.proto == Proto::Ssl {
        return;
    }
    let (s, l) = (shared.clone(), link.clone());
    let name = format!("espat-link{}-rx", link.id);
    link.threads.fetch_add(1, Ordering::SeqCst);
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let _running = Running(&l);
        match l.proto {
            Proto::Tcp => tcp_reader(&s, &l),
            Proto::Udp => udp_reader(&s, &l),
            Proto::Ssl => {}
        }
    });
    if spawned.is_err() {
        link.threads.fetch_sub(1, Ordering::SeqCst);
    }
    if link.proto == Proto::Tcp {
        let (s, l) = (shared.clone(), link.clone());
        let name = format!("espat-link{}-tx", link.id);
        link.threads.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let _running = Running(&l);
            tcp_writer(&s, &l)
        });
        if spawned.is_err() {
            link.threads.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

pub(crate) fn stopping(shared: &Shared, link: &Link) -> bool {
    shared.shutdown.load(Ordering::SeqCst) || shared.gen() != link.gen
}

/// How many bytes a link reader may take from its host socket now: `None`
/// when it should stop (the chip resets or the link closed); in passive
/// mode what the receive `window` has room for, else `buf_len`. With no
/// room it waits (at most a tick) for a read to make some and answers
/// `Some(0)`: the caller asks again.
pub(crate) fn reader_room(
    shared: &Shared,
    link: &Link,
    window: usize,
    buf_len: usize,
) -> Option<usize> {
    if stopping(shared, link) {
        return None;
    }
    let passive = shared.passive.load(Ordering::SeqCst);
    let room = {
        let st = lock(&link.st);
        if st.closed {
            return None;
        }
        if passive {
            window.saturating_sub(st.rx.len())
        } else {
            buf_len
        }
    };
    if room == 0 {
        // Wait for a read to make room, checking again under the lock the
        // read notifies with (a read in between is not missed).
        let st = lock(&link.st);
        if !st.closed && window <= st.rx.len() {
            let _ = link.cv.wait_timeout(st, TICK);
        }
    }
    Some(room)
}

/// Remove `link` from the chip's table if it is still there.
pub(crate) fn release(shared: &Shared, link: &Arc<Link>) -> bool {
    let mut chip = lock(&shared.chip);
    let slot = &mut chip.links[link.id as usize];
    if slot.as_ref().is_some_and(|l| Arc::ptr_eq(l, link)) {
        *slot = None;
        true
    } else {
        false
    }
}

/// The peer is gone and nothing is buffered: report `CLOSED`, free the slot.
pub(crate) fn closed_by_peer(shared: &Shared, link: &Arc<Link>) {
    {
        let mut st = lock(&link.st);
        if st.closed {
            return;
        }
        st.closed = true;
        link.cv.notify_all();
    }
    if release(shared, link) {
        let msg = format!("{}CLOSED\r\n", prefix(shared, link.id));
        shared.unsolicited(link.gen, msg.as_bytes(), 0);
    }
}

/// After a passive read: if the peer has closed and the buffer is empty,
/// the link ends now.
pub(crate) fn after_read(shared: &Shared, link: &Arc<Link>) {
    let done = {
        let st = lock(&link.st);
        st.peer_eof && Link::buffered(&st) == 0 && !st.closed
    };
    if done {
        closed_by_peer(shared, link);
    }
}

fn tcp_reader(shared: &Arc<Shared>, link: &Arc<Link>) {
    let Some(mut s) = link.tcp.as_ref().and_then(|s| s.try_clone().ok()) else {
        return;
    };
    let window = lock(&shared.world).recv_window;
    let mut buf = vec![0u8; 4096];
    loop {
        let Some(room) = reader_room(shared, link, window, buf.len()) else {
            return;
        };
        if room == 0 {
            continue;
        }
        let want = room.min(buf.len());
        match s.read(&mut buf[..want]) {
            Ok(0) => {
                let empty = {
                    let mut st = lock(&link.st);
                    st.peer_eof = true;
                    Link::buffered(&st) == 0
                };
                if empty || !shared.passive.load(Ordering::SeqCst) {
                    closed_by_peer(shared, link);
                }
                return;
            }
            Ok(n) => deliver(shared, link, link_remote(link), &buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                // Reset by the peer: the firmware reports it like a close.
                let empty = {
                    let mut st = lock(&link.st);
                    st.peer_eof = true;
                    st.tx.clear();
                    Link::buffered(&st) == 0
                };
                if empty || !shared.passive.load(Ordering::SeqCst) {
                    closed_by_peer(shared, link);
                }
                return;
            }
        }
    }
}

pub(crate) fn link_remote(link: &Link) -> SocketAddrV4 {
    lock(&link.st).remote
}

/// Data from the network for `link`: buffer it and report `+IPD` (passive),
/// or send it to the host at once (active).
pub(crate) fn deliver(shared: &Shared, link: &Arc<Link>, from: SocketAddrV4, data: &[u8]) {
    deliver_wire(shared, link, from, data, None);
}

/// [`deliver`], for an SSL link with what the plaintext cost on the wire:
/// `Some(n)` when its reading took `n > 0` bytes off the socket (a new
/// record), `Some(0)` for more plaintext of the record before.
pub(crate) fn deliver_wire(
    shared: &Shared,
    link: &Arc<Link>,
    from: SocketAddrV4,
    data: &[u8],
    wire: Option<usize>,
) {
    if shared.passive.load(Ordering::SeqCst) {
        let window = lock(&shared.world).recv_window;
        let report = {
            let mut st = lock(&link.st);
            if st.closed {
                return;
            }
            if let Some(w) = wire {
                match st.records.back_mut() {
                    Some((plain, _)) if w == 0 => *plain += data.len(),
                    _ => st.records.push_back((data.len(), w.max(data.len()))),
                }
            }
            match link.proto {
                Proto::Tcp | Proto::Ssl => st.rx.extend(data.iter().copied()),
                Proto::Udp => {
                    if st.dgram_bytes + data.len() > window {
                        return; // buffer full: the datagram is lost
                    }
                    st.dgram_bytes += data.len();
                    st.dgrams.push_back((from, data.to_vec()));
                }
            }
            if st.ipd_reported {
                None
            } else {
                st.ipd_reported = true;
                Some(Link::buffered(&st))
            }
        };
        if let Some(total) = report {
            let msg = format!("+IPD,{}{}\r\n", prefix(shared, link.id), total);
            shared.unsolicited(link.gen, msg.as_bytes(), 0);
        }
    } else {
        let mut msg = format!(
            "\r\n+IPD,{}{}{}:",
            prefix(shared, link.id),
            data.len(),
            dinfo(shared, from)
        )
        .into_bytes();
        msg.extend_from_slice(data);
        shared.unsolicited(link.gen, &msg, data.len());
    }
}

fn tcp_writer(shared: &Arc<Shared>, link: &Arc<Link>) {
    let Some(mut s) = link.tcp.as_ref().and_then(|s| s.try_clone().ok()) else {
        return;
    };
    let mut chunk = Vec::with_capacity(4096);
    loop {
        if shared.shutdown.load(Ordering::SeqCst) {
            abort(&s);
            return;
        }
        chunk.clear();
        let close = {
            let mut st = lock(&link.st);
            while st.tx.is_empty() && st.close.is_none() && !st.closed {
                if shared.shutdown.load(Ordering::SeqCst) || shared.gen() != link.gen {
                    break;
                }
                st = link
                    .cv
                    .wait_timeout(st, TICK)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if shared.gen() != link.gen || st.close == Some(CloseMode::Abort) {
                Some(CloseMode::Abort)
            } else if !st.tx.is_empty() {
                let n = st.tx.len().min(4096);
                chunk.extend(st.tx.iter().take(n).copied());
                None
            } else if st.close.is_some() || st.closed {
                Some(CloseMode::Graceful)
            } else {
                None
            }
        };
        match close {
            Some(CloseMode::Abort) => {
                abort(&s);
                return;
            }
            Some(CloseMode::Graceful) => {
                let _ = s.shutdown(std::net::Shutdown::Both);
                return;
            }
            None => {}
        }
        if chunk.is_empty() {
            continue;
        }
        match s.write(&chunk) {
            Ok(n) => {
                let mut st = lock(&link.st);
                let n = n.min(st.tx.len());
                st.tx.drain(..n);
                link.cv.notify_all();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                // The connection broke: what is queued can never go out.
                let mut st = lock(&link.st);
                st.tx.clear();
                st.peer_eof = true;
                link.cv.notify_all();
                if st.close.is_some() || st.closed {
                    return;
                }
            }
        }
    }
}

/// Make the socket close with RST: `SO_LINGER` 0; the reset goes out when
/// the last handle (link, reader, writer) is dropped, which the link's
/// threads do within a tick of seeing the link closed. (A `shutdown` here
/// would send FIN first.)
pub(crate) fn abort(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn udp_reader(shared: &Arc<Shared>, link: &Arc<Link>) {
    let Some(u) = link.udp.as_ref() else { return };
    let mut buf = vec![0u8; 65536];
    loop {
        if stopping(shared, link) || lock(&link.st).closed {
            return;
        }
        match u.recv_from(&mut buf) {
            Ok((n, from)) => {
                let from = v4(from);
                {
                    let mut st = lock(&link.st);
                    match st.udp_mode {
                        2 => st.remote = from,
                        1 if !st.udp_changed => {
                            st.remote = from;
                            st.udp_changed = true;
                        }
                        _ => {}
                    }
                }
                deliver(shared, link, from, &buf[..n]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => std::thread::sleep(TICK),
        }
    }
}

/// The TCP server (`AT+CIPSERVER=1,<port>`).
pub(crate) struct Server {
    pub port: u16,
    pub stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Stop accepting and release the port before returning.
    pub fn shut(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Listen on `local` and hand incoming connections free link ids.
pub(crate) fn start_server(shared: &Arc<Shared>, local: SocketAddrV4) -> io::Result<Server> {
    let l = TcpListener::bind(local)?;
    l.set_nonblocking(true)?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s, st, gen) = (shared.clone(), stop.clone(), shared.gen());
    let thread = std::thread::Builder::new()
        .name("espat-server".into())
        .spawn(move || accept_loop(&s, l, &st, gen))?;
    Ok(Server {
        port: local.port(),
        stop,
        thread: Some(thread),
    })
}

fn accept_loop(
    shared: &Arc<Shared>,
    l: TcpListener,
    stop: &std::sync::atomic::AtomicBool,
    gen: u64,
) {
    loop {
        if stop.load(Ordering::SeqCst)
            || shared.shutdown.load(Ordering::SeqCst)
            || shared.gen() != gen
        {
            return;
        }
        match l.accept() {
            Ok((s, _)) => {
                let _ = s.set_nonblocking(false);
                set_sndbuf(&s);
                let link = {
                    let mut chip = lock(&shared.chip);
                    let serving = chip.links.iter().flatten().filter(|l| l.server).count();
                    let free = chip.links.iter().position(|l| l.is_none());
                    match free {
                        Some(id) if serving < chip.max_conn => {
                            match Link::tcp(id as u8, gen, true, s) {
                                Ok(link) => {
                                    chip.links[id] = Some(link.clone());
                                    Some((link, chip.sysmsg & 2 != 0))
                                }
                                Err(_) => None,
                            }
                        }
                        _ => None, // no room: the connection is refused (dropped)
                    }
                };
                if let Some((link, detailed)) = link {
                    let msg = if detailed {
                        let r = link_remote(&link);
                        format!(
                            "+LINK_CONN:0,{},\"TCP\",1,\"{}\",{},{}\r\n",
                            link.id,
                            r.ip(),
                            r.port(),
                            link.local.port()
                        )
                    } else {
                        format!("{}CONNECT\r\n", prefix(shared, link.id))
                    };
                    shared.unsolicited(gen, msg.as_bytes(), 0);
                    start_threads(shared, &link);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(_) => std::thread::sleep(TICK),
        }
    }
}

/// Small send buffers, like the chip's, so a peer that does not read makes
/// `AT+CIPSEND` wait soon.
pub(crate) fn set_sndbuf(s: &TcpStream) {
    let v: libc::c_int = 16 * 1024;
    // SAFETY: a valid socket fd and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

/// Connect a TCP socket bound to `local` (port 0: any) to `remote`, giving
/// up after `timeout` or when `cancel` says so.
pub(crate) fn tcp_connect_from(
    local: SocketAddrV4,
    remote: SocketAddrV4,
    timeout: Duration,
    cancel: impl Fn() -> bool,
) -> io::Result<TcpStream> {
    // SAFETY: plain socket calls on an fd this function owns; every pointer
    // passed points at a live, correctly sized value.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let la = sockaddr(local);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, &la as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let ra = sockaddr(remote);
        if libc::connect(fd, &ra as *const _ as *const libc::sockaddr, len) != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
            let end = Instant::now() + timeout;
            loop {
                if cancel() {
                    return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
                }
                let now = Instant::now();
                if now >= end {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
                }
                let wait = (end - now).min(TICK).as_millis().max(1) as libc::c_int;
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                if libc::poll(&mut p, 1, wait) > 0 {
                    break;
                }
            }
            let mut err: libc::c_int = 0;
            let mut elen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            if libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                &mut err as *mut libc::c_int as *mut libc::c_void,
                &mut elen,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if err != 0 {
                return Err(io::Error::from_raw_os_error(err));
            }
        }
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        let s = TcpStream::from(owned);
        set_sndbuf(&s);
        Ok(s)
    }
}

/// Resolve `name` without ever asking a DNS server: literals, the
/// configured table, `localhost`, and 127.0.0.0/8 entries of `/etc/hosts`.
pub(crate) fn resolve(table: &[(String, Ipv4Addr)], name: &str) -> Option<Ipv4Addr> {
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        return Some(ip);
    }
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    if lower.is_empty() {
        return None;
    }
    if let Some((_, ip)) = table.iter().find(|(n, _)| n.eq_ignore_ascii_case(&lower)) {
        return Some(*ip);
    }
    if lower == "localhost" || lower.ends_with(".localhost") {
        return Some(Ipv4Addr::LOCALHOST);
    }
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(Ok(ip)) = words.next().map(|w| w.parse::<Ipv4Addr>()) else {
            continue;
        };
        if ip.octets()[0] != 127 {
            continue;
        }
        if words.any(|w| w.eq_ignore_ascii_case(&lower)) {
            return Some(ip);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_stays_local() {
        let table = vec![("peer.test".to_string(), Ipv4Addr::new(127, 0, 0, 9))];
        assert_eq!(
            resolve(&table, "PEER.test."),
            Some(Ipv4Addr::new(127, 0, 0, 9))
        );
        assert_eq!(
            resolve(&table, "10.1.2.3"),
            Some(Ipv4Addr::new(10, 1, 2, 3))
        );
        assert_eq!(resolve(&table, "a.localhost"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(resolve(&table, "no-such-host.invalid"), None);
    }
}
