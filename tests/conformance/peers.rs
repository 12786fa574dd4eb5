//! Peer implementations and peer-side services (echo server, DNS responder).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netdever::{
    AddressFamily, Deadline, Error, MsgFlags, Netdever, Protocol, Shutdown, SockOpt, SockType,
    Socketer, Sockfd,
};

use super::{DnsInfo, Peer, PeerListener, PeerStream, PeerUdp};

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

fn io_err(e: Error) -> io::Error {
    io::Error::from(e)
}

// ---------------------------------------------------------------------------
// NetdevPeer: a second Netdever as the other end.
// ---------------------------------------------------------------------------

/// A peer that is itself a `Netdever` (e.g. a second `HostStack` on the
/// memory switch). `D` is a cheap clonable handle to the device.
pub struct NetdevPeer<D: Netdever + Clone + Send + Sync + 'static> {
    dev: D,
    ip: Ipv4Addr,
    next_port: AtomicU16,
    dns: Option<(DnsInfo, DnsResponder)>,
}

impl<D: Netdever + Clone + Send + Sync + 'static> NetdevPeer<D> {
    /// Wrap a device that already has its address.
    pub fn new(dev: D) -> Self {
        let ip = match dev.addr().expect("peer device has an address") {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => panic!("IPv4 peer expected"),
        };
        NetdevPeer {
            dev,
            ip,
            next_port: AtomicU16::new(20000),
            dns: None,
        }
    }

    /// Also run a DNS server on UDP port 53 answering `records`.
    pub fn with_dns(mut self, records: &[(&str, Ipv4Addr)]) -> io::Result<Self> {
        let udp = self.udp_bind(53)?;
        self.dns = Some(DnsResponder::start(self.ip, udp, records));
        Ok(self)
    }

    /// The wrapped device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    fn pick_port(&self, port: u16) -> u16 {
        if port != 0 {
            port
        } else {
            self.next_port.fetch_add(1, Ordering::Relaxed)
        }
    }

    fn deadline(&self, t: Duration) -> Deadline {
        Deadline::after(self.dev.now(), t)
    }
}

impl<D: Netdever + Clone + Send + Sync + 'static> Peer for NetdevPeer<D> {
    fn name(&self) -> String {
        format!("netdev peer {}", self.ip)
    }
    fn ip(&self) -> Ipv4Addr {
        self.ip
    }
    fn tcp_listen(&self, port: u16) -> io::Result<Box<dyn PeerListener>> {
        let port = self.pick_port(port);
        let fd = self
            .dev
            .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
            .map_err(io_err)?;
        let local = SocketAddr::new(IpAddr::V4(self.ip), port);
        let r = self
            .dev
            .bind(fd, SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port))
            .and_then(|_| self.dev.listen(fd, 8));
        if let Err(e) = r {
            let _ = self.dev.close(fd);
            return Err(io_err(e));
        }
        Ok(Box::new(NetdevListener {
            dev: self.dev.clone(),
            fd,
            local,
        }))
    }
    fn tcp_connect(&self, addr: SocketAddr, timeout: Duration) -> io::Result<Box<dyn PeerStream>> {
        let fd = self
            .dev
            .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
            .map_err(io_err)?;
        let s = NetdevStream {
            dev: self.dev.clone(),
            fd: Some(fd),
        };
        self.dev
            .connect(fd, None, addr, self.deadline(timeout))
            .map_err(io_err)?;
        Ok(Box::new(s))
    }
    fn udp_bind(&self, port: u16) -> io::Result<Box<dyn PeerUdp>> {
        let port = self.pick_port(port);
        let fd = self
            .dev
            .socket(AddressFamily::Inet, SockType::Dgram, Protocol::Udp)
            .map_err(io_err)?;
        if let Err(e) = self
            .dev
            .bind(fd, SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port))
        {
            let _ = self.dev.close(fd);
            return Err(io_err(e));
        }
        Ok(Box::new(NetdevUdp {
            dev: self.dev.clone(),
            fd,
            local: SocketAddr::new(IpAddr::V4(self.ip), port),
        }))
    }
    fn dns_server(&self) -> Option<DnsInfo> {
        self.dns.as_ref().map(|(i, _)| i.clone())
    }
}

/// A TCP connection of a [`NetdevPeer`].
pub struct NetdevStream<D: Socketer> {
    dev: D,
    fd: Option<Sockfd>,
}

impl<D: Socketer> NetdevStream<D> {
    fn fd(&self) -> Sockfd {
        self.fd.expect("open")
    }
}

impl<D: Socketer> Drop for NetdevStream<D> {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            let _ = self.dev.close(fd);
        }
    }
}

impl<D: Socketer + Send> PeerStream for NetdevStream<D> {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        let d = Deadline::after(self.dev.now(), timeout);
        self.dev
            .recv(self.fd(), buf, MsgFlags::NONE, d)
            .map_err(io_err)
    }
    fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        let d = Deadline::after(self.dev.now(), Duration::from_secs(60));
        while !data.is_empty() {
            let n = self
                .dev
                .send(self.fd(), data, MsgFlags::NONE, d)
                .map_err(io_err)?;
            data = &data[n..];
        }
        Ok(())
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.dev
            .shutdown(self.fd(), Shutdown::Write)
            .map_err(io_err)
    }
    fn abort(mut self: Box<Self>) -> io::Result<()> {
        let fd = self.fd.take().expect("open");
        self.dev
            .set_sock_opt(fd, SockOpt::Linger(Some(Duration::ZERO)))
            .map_err(io_err)?;
        self.dev.close(fd).map_err(io_err)
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.dev.local_addr(self.fd()).map_err(io_err)
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.dev.peer_addr(self.fd()).map_err(io_err)
    }
}

struct NetdevListener<D: Socketer> {
    dev: D,
    fd: Sockfd,
    local: SocketAddr,
}

impl<D: Socketer> Drop for NetdevListener<D> {
    fn drop(&mut self) {
        let _ = self.dev.close(self.fd);
    }
}

impl<D: Socketer + Clone + Send + 'static> PeerListener for NetdevListener<D> {
    fn local_addr(&self) -> SocketAddr {
        self.local
    }
    fn accept(&mut self, timeout: Duration) -> io::Result<(Box<dyn PeerStream>, SocketAddr)> {
        let d = Deadline::after(self.dev.now(), timeout);
        let (fd, from) = self.dev.accept(self.fd, d).map_err(io_err)?;
        Ok((
            Box::new(NetdevStream {
                dev: self.dev.clone(),
                fd: Some(fd),
            }),
            from,
        ))
    }
}

struct NetdevUdp<D: Socketer> {
    dev: D,
    fd: Sockfd,
    local: SocketAddr,
}

impl<D: Socketer> Drop for NetdevUdp<D> {
    fn drop(&mut self) {
        let _ = self.dev.close(self.fd);
    }
}

impl<D: Socketer + Send> PeerUdp for NetdevUdp<D> {
    fn local_addr(&self) -> SocketAddr {
        self.local
    }
    fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        let d = Deadline::after(self.dev.now(), Duration::from_secs(10));
        self.dev
            .send_to(self.fd, data, MsgFlags::NONE, to, d)
            .map_err(io_err)
    }
    fn recv_from(&self, buf: &mut [u8], timeout: Duration) -> io::Result<(usize, SocketAddr)> {
        let d = Deadline::after(self.dev.now(), timeout);
        self.dev
            .recv_from(self.fd, buf, MsgFlags::NONE, d)
            .map_err(io_err)
    }
}

// ---------------------------------------------------------------------------
// KernelPeer: the Linux kernel (inside the test's network namespace, or this
// host's own) as the other end.
// ---------------------------------------------------------------------------

#[cfg(feature = "tap")]
#[allow(unused_imports)]
pub use kernel::KernelPeer;

#[cfg(feature = "tap")]
mod kernel {
    use super::*;
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::os::fd::AsRawFd;

    /// The Linux kernel as the peer: std::net sockets bound to `ip`,
    /// created on threads that entered the namespace `ns` ([`KernelPeer::new`])
    /// or in this test process's own namespace ([`KernelPeer::host`]).
    pub struct KernelPeer {
        ns: Option<String>,
        ip: Ipv4Addr,
        dns: Option<(DnsInfo, Option<DnsResponder>)>,
    }

    impl KernelPeer {
        /// The kernel of namespace `ns`, reachable from the dut at `ip`.
        pub fn new(ns: &str, ip: Ipv4Addr) -> Self {
            KernelPeer {
                ns: Some(ns.to_string()),
                ip,
                dns: None,
            }
        }

        /// This host's kernel, at `ip` (a loopback address such as
        /// 127.0.0.1: the tests keep off every other host network).
        pub fn host(ip: Ipv4Addr) -> Self {
            KernelPeer {
                ns: None,
                ip,
                dns: None,
            }
        }

        /// Also run a DNS server on `ip`:53 answering `records`.
        pub fn with_dns(mut self, records: &[(&str, Ipv4Addr)]) -> io::Result<Self> {
            let udp = self.udp_bind(53)?;
            let (info, responder) = DnsResponder::start(self.ip, udp, records);
            self.dns = Some((info, Some(responder)));
            Ok(self)
        }

        /// The dut resolves `records` by itself (say, from its firmware's
        /// own table), with the peer's address as the nominal server: the
        /// `dns` case checks them, and no responder runs here.
        pub fn with_names(mut self, records: &[(&str, Ipv4Addr)]) -> Self {
            let info = DnsInfo {
                server: self.ip,
                records: records.iter().map(|(n, a)| (n.to_string(), *a)).collect(),
            };
            self.dns = Some((info, None));
            self
        }

        /// The namespace's name (`None`: this host's own).
        pub fn netns(&self) -> Option<&str> {
            self.ns.as_deref()
        }

        /// Run `f` where the peer lives: on a thread inside its namespace,
        /// or here.
        fn make<R: Send + 'static>(
            &self,
            f: impl FnOnce() -> io::Result<R> + Send + 'static,
        ) -> io::Result<R> {
            match &self.ns {
                Some(ns) => crate::support::in_netns(ns, f)?,
                None => f(),
            }
        }
    }

    impl Peer for KernelPeer {
        fn name(&self) -> String {
            match &self.ns {
                Some(ns) => format!("kernel peer {} in {ns}", self.ip),
                None => format!("kernel peer {} on this host", self.ip),
            }
        }
        fn ip(&self) -> Ipv4Addr {
            self.ip
        }
        fn tcp_listen(&self, port: u16) -> io::Result<Box<dyn PeerListener>> {
            let ip = self.ip;
            let l = self.make(move || TcpListener::bind((ip, port)))?;
            l.set_nonblocking(true)?;
            let local = l.local_addr()?;
            Ok(Box::new(KernelListener { l, local }))
        }
        fn tcp_connect(
            &self,
            addr: SocketAddr,
            timeout: Duration,
        ) -> io::Result<Box<dyn PeerStream>> {
            let s = self.make(move || TcpStream::connect_timeout(&addr, timeout))?;
            Ok(Box::new(KernelStream(s)))
        }
        fn udp_bind(&self, port: u16) -> io::Result<Box<dyn PeerUdp>> {
            let ip = self.ip;
            let u = self.make(move || UdpSocket::bind((ip, port)))?;
            let local = u.local_addr()?;
            Ok(Box::new(KernelUdp { u, local }))
        }
        fn closed_tcp_port(&self) -> u16 {
            // A port that was free a moment ago: bind, note, release.
            let ip = self.ip;
            self.make(move || TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()))
                .map(|a| a.port())
                .unwrap_or(9)
        }
        fn dns_server(&self) -> Option<DnsInfo> {
            self.dns.as_ref().map(|(i, _)| i.clone())
        }
    }

    fn map_timeout(e: io::Error) -> io::Error {
        if e.kind() == io::ErrorKind::WouldBlock {
            timed_out("read timed out")
        } else {
            e
        }
    }

    struct KernelStream(TcpStream);

    impl PeerStream for KernelStream {
        fn read(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
            use std::io::Read;
            self.0
                .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
            self.0.read(buf).map_err(map_timeout)
        }
        fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
            use std::io::Write;
            self.0.set_write_timeout(Some(Duration::from_secs(60)))?;
            self.0.write_all(data).map_err(map_timeout)
        }
        fn shutdown_write(&mut self) -> io::Result<()> {
            self.0.shutdown(std::net::Shutdown::Write)
        }
        fn abort(self: Box<Self>) -> io::Result<()> {
            let l = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: valid socket fd and a correctly sized option value.
            let rc = unsafe {
                libc::setsockopt(
                    self.0.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &l as *const libc::linger as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            drop(self);
            Ok(())
        }
        fn local_addr(&self) -> io::Result<SocketAddr> {
            self.0.local_addr()
        }
        fn peer_addr(&self) -> io::Result<SocketAddr> {
            self.0.peer_addr()
        }
    }

    struct KernelListener {
        l: TcpListener,
        local: SocketAddr,
    }

    impl PeerListener for KernelListener {
        fn local_addr(&self) -> SocketAddr {
            self.local
        }
        fn accept(&mut self, timeout: Duration) -> io::Result<(Box<dyn PeerStream>, SocketAddr)> {
            let end = Instant::now() + timeout;
            loop {
                match self.l.accept() {
                    Ok((s, from)) => {
                        s.set_nonblocking(false)?;
                        return Ok((Box::new(KernelStream(s)), from));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if Instant::now() >= end {
                            return Err(timed_out("accept timed out"));
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }

    struct KernelUdp {
        u: UdpSocket,
        local: SocketAddr,
    }

    impl PeerUdp for KernelUdp {
        fn local_addr(&self) -> SocketAddr {
            self.local
        }
        fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
            self.u.send_to(data, to)
        }
        fn recv_from(&self, buf: &mut [u8], timeout: Duration) -> io::Result<(usize, SocketAddr)> {
            self.u
                .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
            self.u.recv_from(buf).map_err(map_timeout)
        }
    }
}

// ---------------------------------------------------------------------------
// Peer-side services.
// ---------------------------------------------------------------------------

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// A TCP echo server on the peer: every accepted connection gets back what
/// it sends until it closes. Stops (bounded) on drop.
pub struct EchoServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<SocketAddr>>>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Start one on `peer` (any free port).
    pub fn start(peer: &impl Peer) -> EchoServer {
        let mut l = peer
            .tcp_listen(0)
            .expect("peer: listen for the echo server");
        let addr = l.local_addr();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let (stop2, acc2) = (stop.clone(), accepted.clone());
        let thread = std::thread::Builder::new()
            .name("peer-echo".into())
            .spawn(move || {
                let mut conns = Vec::new();
                while !stop2.load(Ordering::Relaxed) {
                    match l.accept(Duration::from_millis(50)) {
                        Ok((s, from)) => {
                            acc2.lock().unwrap().push(from);
                            let st = stop2.clone();
                            conns.push(std::thread::spawn(move || echo_conn(s, st)));
                        }
                        Err(e) if is_timeout(&e) => {}
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
                for c in conns {
                    let _ = c.join();
                }
            })
            .expect("spawn echo server");
        EchoServer {
            addr,
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    /// The source addresses of the connections accepted so far.
    pub fn accepted(&self) -> Vec<SocketAddr> {
        self.accepted.lock().unwrap().clone()
    }
}

fn echo_conn(mut s: Box<dyn PeerStream>, stop: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 8192];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf, Duration::from_millis(50)) {
            Ok(0) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => break,
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A minimal DNS server (A records only) on a peer UDP socket, so DNS can be
/// checked against any peer. Unknown names get NXDOMAIN.
pub struct DnsResponder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DnsResponder {
    /// Serve `records` on `udp` (normally port 53) until dropped.
    pub fn start(
        server: Ipv4Addr,
        udp: Box<dyn PeerUdp>,
        records: &[(&str, Ipv4Addr)],
    ) -> (DnsInfo, DnsResponder) {
        let info = DnsInfo {
            server,
            records: records
                .iter()
                .map(|(n, a)| (n.to_ascii_lowercase(), *a))
                .collect(),
        };
        let recs = info.records.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name("peer-dns".into())
            .spawn(move || {
                let mut buf = [0u8; 1500];
                while !st.load(Ordering::Relaxed) {
                    match udp.recv_from(&mut buf, Duration::from_millis(50)) {
                        Ok((n, from)) => {
                            if let Some(resp) = dns_answer(&buf[..n], &recs) {
                                let _ = udp.send_to(&resp, from);
                            }
                        }
                        Err(e) if is_timeout(&e) => {}
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
            .expect("spawn dns responder");
        (
            info,
            DnsResponder {
                stop,
                thread: Some(thread),
            },
        )
    }
}

impl Drop for DnsResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Build the answer to one DNS query, or `None` if it is not a query we
/// understand.
pub fn dns_answer(q: &[u8], records: &[(String, Ipv4Addr)]) -> Option<Vec<u8>> {
    if q.len() < 12 || q[2] & 0x80 != 0 {
        return None;
    }
    let qdcount = u16::from_be_bytes([q[4], q[5]]);
    if qdcount != 1 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question_end = i + 4;
    if q.len() < question_end {
        return None;
    }
    let name = labels.join(".");
    let found = records.iter().find(|(n, _)| *n == name).map(|(_, a)| *a);
    let rd = q[2] & 0x01;
    let rcode = if found.is_some() { 0 } else { 3 };
    let answer = match found {
        Some(a) if qtype == 1 => Some(a),
        _ => None,
    };
    let mut r = Vec::with_capacity(question_end + 16);
    r.extend_from_slice(&q[0..2]);
    r.push(0x80 | 0x04 | rd); // QR, AA, RD copied
    r.push(0x80 | rcode); // RA, RCODE
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&(answer.is_some() as u16).to_be_bytes());
    r.extend_from_slice(&0u16.to_be_bytes());
    r.extend_from_slice(&0u16.to_be_bytes());
    r.extend_from_slice(&q[12..question_end]);
    if let Some(a) = answer {
        r.extend_from_slice(&[0xc0, 0x0c]); // name: pointer to the question
        r.extend_from_slice(&1u16.to_be_bytes()); // A
        r.extend_from_slice(&1u16.to_be_bytes()); // IN
        r.extend_from_slice(&60u32.to_be_bytes()); // TTL
        r.extend_from_slice(&4u16.to_be_bytes());
        r.extend_from_slice(&a.octets());
    }
    Some(r)
}
