//! The conformance cases. Each takes the dut and the peer, uses deadlines on
//! every call that may wait, and panics with a message naming the contract
//! clause it checks when the backend breaks it.

use std::collections::HashSet;
use std::fmt::Debug;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netdever::{
    AddressFamily, Deadline, Error, Events, MsgFlags, Netdever, PollFd, Protocol, Result, Shutdown,
    SockOpt, SockOptName, SockType, Socketer, Sockfd, TlsSupport,
};
use sha2::{Digest, Sha256};

use super::{EchoServer, Peer, PeerStream};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const SEC: Duration = Duration::from_secs(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A deadline `d` from now on the dut's clock.
pub fn dl(dut: &impl Socketer, d: Duration) -> Deadline {
    Deadline::after(dut.now(), d)
}

/// Open a TCP socket or fail the case.
pub fn tcp(dut: &impl Socketer) -> Sockfd {
    dut.socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .expect("socket(Inet, Stream, Tcp)")
}

/// Open a UDP socket or fail the case.
pub fn udp(dut: &impl Socketer) -> Sockfd {
    dut.socket(AddressFamily::Inet, SockType::Dgram, Protocol::Udp)
        .expect("socket(Inet, Dgram, Udp)")
}

/// The dut's IPv4 address.
pub fn dut_ip(dut: &impl Netdever) -> IpAddr {
    dut.addr().expect("dut has an address")
}

fn any_addr(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
}

/// Deterministic pseudo-random bytes (xorshift64*), different per seed.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Send all of `data`, one shared deadline.
pub fn send_all(dut: &impl Socketer, fd: Sockfd, mut data: &[u8], limit: Duration) {
    let d = dl(dut, limit);
    while !data.is_empty() {
        match dut.send(fd, data, MsgFlags::NONE, d) {
            Ok(0) => panic!("stream send of {} bytes returned Ok(0)", data.len()),
            Ok(n) => data = &data[n..],
            Err(e) => panic!("send: {e:?} with {} bytes left", data.len()),
        }
    }
}

/// Receive exactly `n` bytes, one shared deadline; EOF or an error fails.
pub fn recv_exact(dut: &impl Socketer, fd: Sockfd, n: usize, limit: Duration) -> Vec<u8> {
    let d = dl(dut, limit);
    let mut v = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match dut.recv(fd, &mut v[got..], MsgFlags::NONE, d) {
            Ok(0) => panic!("recv: EOF after {got} of {n} bytes"),
            Ok(k) => got += k,
            Err(e) => panic!("recv: {e:?} after {got} of {n} bytes"),
        }
    }
    v
}

/// Receive until EOF (`Ok(0)`), one shared deadline.
pub fn recv_to_eof(dut: &impl Socketer, fd: Sockfd, limit: Duration) -> Result<Vec<u8>> {
    let d = dl(dut, limit);
    let mut v = Vec::new();
    let mut buf = vec![0u8; 16384];
    loop {
        match dut.recv(fd, &mut buf, MsgFlags::NONE, d)? {
            0 => return Ok(v),
            n => v.extend_from_slice(&buf[..n]),
        }
    }
}

/// Read exactly `n` bytes from a peer stream within `limit`.
pub fn peer_read_exact(s: &mut dyn PeerStream, n: usize, limit: Duration) -> io::Result<Vec<u8>> {
    let end = Instant::now() + limit;
    let mut v = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("peer read: {got} of {n} bytes"),
            ));
        }
        match s.read(&mut v[got..], left)? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("peer read: EOF after {got} of {n} bytes"),
                ))
            }
            k => got += k,
        }
    }
    Ok(v)
}

/// Read from a peer stream until EOF within `limit`.
pub fn peer_read_to_eof(s: &mut dyn PeerStream, limit: Duration) -> io::Result<Vec<u8>> {
    let end = Instant::now() + limit;
    let mut v = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("peer read: no EOF after {} bytes", v.len()),
            ));
        }
        match s.read(&mut buf, left)? {
            0 => return Ok(v),
            n => v.extend_from_slice(&buf[..n]),
        }
    }
}

/// Assert a call failed with exactly `want`.
#[track_caller]
fn expect_err<T: Debug>(got: Result<T>, want: Error, what: &str) {
    match got {
        Err(e) if e == want => {}
        other => panic!("{what}: expected Err({want:?}), got {other:?}"),
    }
}

/// Assert a call failed with one of `want`.
#[track_caller]
fn expect_err_in<T: Debug>(got: Result<T>, want: &[Error], what: &str) -> Error {
    match got {
        Err(e) if want.contains(&e) => e,
        other => panic!("{what}: expected one of {want:?}, got {other:?}"),
    }
}

/// Run a call that must fail (or succeed) at once: it may not wait for its
/// deadline. Fails the case if it takes a second or more.
#[track_caller]
fn quick<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t0 = Instant::now();
    let r = f();
    assert!(
        t0.elapsed() < SEC,
        "{what} took {:?}; it must not wait",
        t0.elapsed()
    );
    r
}

/// Connect a fresh TCP socket to `addr` (10 s budget).
pub fn connect_tcp(dut: &impl Socketer, addr: SocketAddr) -> Sockfd {
    let fd = tcp(dut);
    dut.connect(fd, None, addr, dl(dut, 10 * SEC))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e:?}"));
    fd
}

/// A dut TCP connection to a fresh peer listener, with the peer's end.
pub fn connected_pair(
    dut: &impl Netdever,
    peer: &impl Peer,
) -> (Sockfd, Box<dyn PeerStream>, SocketAddr) {
    let mut l = peer.tcp_listen(0).expect("peer listen");
    let addr = l.local_addr();
    let fd = connect_tcp(dut, addr);
    let (s, from) = l
        .accept(5 * SEC)
        .expect("peer accepts the dut's connection");
    (fd, s, from)
}

/// Receive one datagram with `recv_from` (5 s budget).
fn udp_recv(dut: &impl Socketer, fd: Sockfd) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let (n, from) = dut
        .recv_from(fd, &mut buf, MsgFlags::NONE, dl(dut, 5 * SEC))
        .expect("recv_from a datagram the peer sent");
    buf.truncate(n);
    (buf, from)
}

fn peer_udp_recv(u: &dyn super::PeerUdp) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 70000];
    let (n, from) = u
        .recv_from(&mut buf, 5 * SEC)
        .expect("peer receives the dut's datagram");
    buf.truncate(n);
    (buf, from)
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------
// TCP client / server
// ---------------------------------------------------------------------------

/// TCP client: connect to the peer's echo server, 64 KiB round trip in
/// chunks, addresses reported on both ends agree.
pub fn tcp_client_echo(dut: &impl Netdever, peer: &impl Peer) {
    let echo = EchoServer::start(peer);
    let fd = connect_tcp(dut, echo.addr);
    assert_eq!(dut.peer_addr(fd), Ok(echo.addr), "peer_addr after connect");
    let local = dut
        .local_addr(fd)
        .expect("local_addr of a connected socket");
    assert_eq!(
        local.ip(),
        dut_ip(dut),
        "local_addr ip is the dut's address"
    );
    assert_ne!(local.port(), 0, "local_addr has the ephemeral port");
    let data = pattern(1, 64 * 1024);
    for (i, chunk) in data.chunks(4096).enumerate() {
        send_all(dut, fd, chunk, 10 * SEC);
        let back = recv_exact(dut, fd, chunk.len(), 10 * SEC);
        assert!(back == chunk, "echoed chunk {i} differs");
    }
    assert!(
        crate::support::wait_until(2 * SEC, ms(10), || echo.accepted().contains(&local)),
        "the peer saw the connection from {local}, but it saw {:?}",
        echo.accepted()
    );
    dut.close(fd).expect("close");
}

/// TCP client: data then EOF (`Ok(0)`, sticky) after the peer closes.
pub fn tcp_client_eof(dut: &impl Netdever, peer: &impl Peer) {
    let (fd, mut s, from) = connected_pair(dut, peer);
    assert_eq!(
        dut.local_addr(fd),
        Ok(from),
        "dut local_addr equals what the peer accepted"
    );
    s.write_all(b"last words").unwrap();
    drop(s);
    let got = recv_to_eof(dut, fd, 5 * SEC).expect("recv until EOF");
    assert_eq!(got, b"last words");
    let mut buf = [0u8; 16];
    for _ in 0..2 {
        assert_eq!(
            dut.recv(fd, &mut buf, MsgFlags::NONE, dl(dut, SEC)),
            Ok(0),
            "EOF is reported again on every recv after the peer closed"
        );
    }
    dut.close(fd).expect("close");
}

/// TCP client: a closed port is `ConnectionRefused` (from the peer's RST,
/// long before the deadline).
pub fn tcp_connect_refused(dut: &impl Netdever, peer: &impl Peer) {
    let fd = tcp(dut);
    let addr = peer.addr(peer.closed_tcp_port());
    let t = Instant::now();
    let r = dut.connect(fd, None, addr, dl(dut, 10 * SEC));
    expect_err(r, Error::ConnectionRefused, "connect to a closed port");
    assert!(
        t.elapsed() < 5 * SEC,
        "refusal took {:?}; it must come from the RST, not the deadline",
        t.elapsed()
    );
    dut.close(fd).expect("close after a refused connect");
}

/// TCP server: listen(backlog 4); four peer connections complete before the
/// first accept; all four are then accepted, each with its own data.
pub fn tcp_server_backlog(dut: &impl Netdever, peer: &impl Peer) {
    const PORT: u16 = 7100;
    const LEN: usize = 1000;
    let lfd = tcp(dut);
    dut.bind(lfd, any_addr(PORT)).expect("bind 0.0.0.0:7100");
    dut.listen(lfd, 4).expect("listen(4)");
    assert_eq!(
        dut.local_addr(lfd).map(|a| a.port()),
        Ok(PORT),
        "listener local_addr port"
    );
    let target = SocketAddr::new(dut_ip(dut), PORT);
    let msg = |i: u8| {
        let mut m = pattern(100 + i as u64, LEN);
        m[0] = i;
        m
    };
    let mut clients = Vec::new();
    for i in 0..4u8 {
        let mut s = peer.tcp_connect(target, 5 * SEC).unwrap_or_else(|e| {
            panic!("peer connection {i} of 4 before any accept (backlog 4 must hold it): {e}")
        });
        s.write_all(&msg(i)).unwrap();
        clients.push(s);
    }
    let mut seen = HashSet::new();
    let mut accepted = Vec::new();
    for k in 0..4 {
        let (afd, from) = dut
            .accept(lfd, dl(dut, 5 * SEC))
            .unwrap_or_else(|e| panic!("accept #{k} of 4 pending connections: {e:?}"));
        let data = recv_exact(dut, afd, LEN, 5 * SEC);
        let i = data[0];
        assert!(
            i < 4 && data == msg(i),
            "accepted connection #{k} carries foreign data"
        );
        assert!(seen.insert(i), "connection {i} accepted twice");
        assert_eq!(
            Some(from),
            clients[i as usize].local_addr().ok(),
            "accept returns the peer's address"
        );
        assert_eq!(
            dut.peer_addr(afd),
            Ok(from),
            "peer_addr of the accepted socket"
        );
        assert_eq!(
            dut.local_addr(afd),
            Ok(target),
            "local_addr of the accepted socket"
        );
        send_all(dut, afd, &[b'r', i], 5 * SEC);
        accepted.push(afd);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let r = peer_read_exact(c.as_mut(), 2, 5 * SEC).expect("reply on each connection");
        assert_eq!(r, [b'r', i as u8], "connection {i} got another one's reply");
    }
    expect_err(
        dut.accept(lfd, dl(dut, ms(300))),
        Error::Timeout,
        "accept with nothing pending",
    );
    for fd in accepted {
        dut.close(fd).expect("close accepted");
    }
    dut.close(lfd).expect("close listener");
}

/// TCP `MSG_PEEK`: peeked bytes are returned again by the next recv.
pub fn tcp_peek(dut: &impl Netdever, peer: &impl Peer) {
    let (fd, mut s, _) = connected_pair(dut, peer);
    s.write_all(b"abcdef").unwrap();
    let mut buf = [0u8; 6];
    let d = dl(dut, 5 * SEC);
    let mut n = 0;
    // Wait until all six bytes are there, peeking only.
    while n < 6 {
        n = dut
            .recv(fd, &mut buf, MsgFlags::PEEK, d)
            .expect("recv(PEEK)");
        assert_eq!(&buf[..n], &b"abcdef"[..n], "peeked bytes");
        if n < 6 {
            std::thread::sleep(ms(10));
        }
    }
    let mut again = [0u8; 6];
    assert_eq!(
        dut.recv(fd, &mut again, MsgFlags::PEEK, d),
        Ok(6),
        "second peek"
    );
    assert_eq!(&again, b"abcdef");
    assert_eq!(
        recv_exact(dut, fd, 6, 5 * SEC),
        b"abcdef",
        "recv after peek"
    );
    dut.close(fd).unwrap();
}

/// Resets: the peer aborts → `ConnectionReset`; `Linger(Some(0))` + close
/// on the dut resets the peer.
pub fn tcp_reset(dut: &impl Netdever, peer: &impl Peer) {
    let (fd, s, _) = connected_pair(dut, peer);
    s.abort().expect("peer abort");
    let mut buf = [0u8; 16];
    let r = dut.recv(fd, &mut buf, MsgFlags::NONE, dl(dut, 5 * SEC));
    expect_err(r, Error::ConnectionReset, "recv after the peer reset");
    let r = dut.send(fd, b"x", MsgFlags::NONE, dl(dut, 5 * SEC));
    expect_err_in(
        r,
        &[
            Error::ConnectionReset,
            Error::NotConnected,
            Error::BrokenPipe,
        ],
        "send after the peer reset",
    );
    dut.close(fd).expect("close a reset socket");

    let (fd, mut s, _) = connected_pair(dut, peer);
    dut.set_sock_opt(fd, SockOpt::Linger(Some(Duration::ZERO)))
        .expect("set Linger(Some(0))");
    let t = Instant::now();
    dut.close(fd).expect("close with Linger(0)");
    assert!(t.elapsed() < SEC, "close with Linger(0) is immediate");
    let mut buf = [0u8; 16];
    match s.read(&mut buf, 5 * SEC) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("peer after dut close with Linger(0): expected a reset, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// UDP
// ---------------------------------------------------------------------------

/// Connected UDP: send/recv with the default peer, datagrams from others
/// are filtered out.
pub fn udp_connected(dut: &impl Netdever, peer: &impl Peer) {
    let p = peer.udp_bind(0).expect("peer udp");
    let other = peer.udp_bind(0).expect("peer udp 2");
    let fd = udp(dut);
    dut.connect(fd, None, p.local_addr(), dl(dut, 5 * SEC))
        .expect("connect UDP");
    assert_eq!(
        dut.peer_addr(fd),
        Ok(p.local_addr()),
        "peer_addr of connected UDP"
    );
    assert_eq!(
        dut.send(fd, b"ping", MsgFlags::NONE, dl(dut, 5 * SEC)),
        Ok(4),
        "send on connected UDP"
    );
    let (data, from) = peer_udp_recv(p.as_ref());
    assert_eq!(data, b"ping");
    assert_eq!(from.ip(), dut_ip(dut), "source ip of the dut's datagram");
    let local = dut.local_addr(fd).expect("local_addr");
    assert_ne!(local.port(), 0, "connected UDP got a local port");
    assert_eq!(
        from.port(),
        local.port(),
        "source port equals local_addr port"
    );
    other.send_to(b"intruder", from).unwrap();
    std::thread::sleep(ms(50));
    p.send_to(b"pong", from).unwrap();
    let mut buf = [0u8; 64];
    let n = dut
        .recv(fd, &mut buf, MsgFlags::NONE, dl(dut, 5 * SEC))
        .expect("recv on connected UDP");
    assert_eq!(
        &buf[..n],
        b"pong",
        "a connected UDP socket only receives from its peer"
    );
    expect_err(
        dut.recv(fd, &mut buf, MsgFlags::NONE, dl(dut, ms(300))),
        Error::Timeout,
        "nothing else arrives (the intruder's datagram is filtered)",
    );
    dut.close(fd).unwrap();
}

/// UDP server: bind, recv_from reports each source, send_to answers it.
pub fn udp_server_send_to_recv_from(dut: &impl Netdever, peer: &impl Peer) {
    const PORT: u16 = 7200;
    let fd = udp(dut);
    dut.bind(fd, any_addr(PORT)).expect("bind UDP 0.0.0.0:7200");
    let target = SocketAddr::new(dut_ip(dut), PORT);
    let p = peer.udp_bind(0).unwrap();
    let q = peer.udp_bind(0).unwrap();
    for (i, (sock, msg)) in [(&p, &b"query-1"[..]), (&q, &b"query-2"[..])]
        .into_iter()
        .enumerate()
    {
        sock.send_to(msg, target).unwrap();
        let (data, src) = udp_recv(dut, fd);
        assert_eq!(data, msg, "datagram {i}");
        assert_eq!(
            src,
            sock.local_addr(),
            "recv_from reports the source of datagram {i}"
        );
        let answer = format!("answer-{i}");
        assert_eq!(
            dut.send_to(fd, answer.as_bytes(), MsgFlags::NONE, src, dl(dut, 5 * SEC)),
            Ok(answer.len()),
            "send_to the source"
        );
        let (back, from) = peer_udp_recv(sock.as_ref());
        assert_eq!(back, answer.as_bytes());
        assert_eq!(from, target, "the answer comes from the bound address");
    }
    dut.close(fd).unwrap();
}

/// Binding port 0 picks an ephemeral port that then receives.
pub fn udp_bind_ephemeral(dut: &impl Netdever, peer: &impl Peer) {
    let fd = udp(dut);
    dut.bind(fd, any_addr(0)).expect("bind UDP port 0");
    let port = dut.local_addr(fd).expect("local_addr").port();
    assert_ne!(port, 0, "bind to port 0 picks a port");
    let p = peer.udp_bind(0).unwrap();
    p.send_to(b"to-ephemeral", SocketAddr::new(dut_ip(dut), port))
        .unwrap();
    assert_eq!(udp_recv(dut, fd).0, b"to-ephemeral");
    dut.close(fd).unwrap();
}

/// UDP `MSG_PEEK`: the same datagram twice, then recv consumes it.
pub fn udp_peek(dut: &impl Netdever, peer: &impl Peer) {
    let fd = udp(dut);
    dut.bind(fd, any_addr(7201)).unwrap();
    let target = SocketAddr::new(dut_ip(dut), 7201);
    let p = peer.udp_bind(0).unwrap();
    p.send_to(b"first datagram", target).unwrap();
    p.send_to(b"second", target).unwrap();
    let mut buf = [0u8; 64];
    for k in 0..2 {
        let (n, from) = dut
            .recv_from(fd, &mut buf, MsgFlags::PEEK, dl(dut, 5 * SEC))
            .expect("recv_from(PEEK)");
        assert_eq!(
            &buf[..n],
            b"first datagram",
            "peek #{k} returns the first datagram"
        );
        assert_eq!(from, p.local_addr(), "peek reports the source");
    }
    let n = dut
        .recv(fd, &mut buf, MsgFlags::NONE, dl(dut, 5 * SEC))
        .expect("recv after peek");
    assert_eq!(
        &buf[..n],
        b"first datagram",
        "recv returns the peeked datagram"
    );
    let (data, _) = udp_recv(dut, fd);
    assert_eq!(data, b"second", "then the next one");
    dut.close(fd).unwrap();
}

/// A datagram longer than the buffer is truncated; the rest is dropped.
pub fn udp_truncation(dut: &impl Netdever, peer: &impl Peer) {
    let fd = udp(dut);
    dut.bind(fd, any_addr(7202)).unwrap();
    let target = SocketAddr::new(dut_ip(dut), 7202);
    let p = peer.udp_bind(0).unwrap();
    let big = pattern(7, 100);
    p.send_to(&big, target).unwrap();
    p.send_to(b"next", target).unwrap();
    let mut small = [0u8; 10];
    let (n, from) = dut
        .recv_from(fd, &mut small, MsgFlags::NONE, dl(dut, 5 * SEC))
        .expect("recv_from into a short buffer");
    assert_eq!(n, 10, "truncated to the buffer");
    assert_eq!(&small[..], &big[..10]);
    assert_eq!(from, p.local_addr());
    let (data, _) = udp_recv(dut, fd);
    assert_eq!(
        data, b"next",
        "the rest of the truncated datagram is dropped"
    );
    dut.close(fd).unwrap();
}

/// Datagram sizes: 1400 bytes arrive whole; one larger than the MTU either
/// arrives whole or is `MessageTooLong` (never silently lost); one larger
/// than UDP allows is `MessageTooLong`.
pub fn udp_message_size(dut: &impl Netdever, peer: &impl Peer) {
    let p = peer.udp_bind(0).unwrap();
    let fd = udp(dut);
    for len in [1400usize, 3000] {
        let data = pattern(len as u64, len);
        match dut.send_to(fd, &data, MsgFlags::NONE, p.local_addr(), dl(dut, 5 * SEC)) {
            Ok(n) => {
                assert_eq!(n, len, "a datagram send sends all or nothing");
                let (got, _) = peer_udp_recv(p.as_ref());
                assert!(got == data, "{len}-byte datagram arrives intact");
            }
            Err(Error::MessageTooLong) if len > 1472 => {
                eprintln!("note: {len}-byte datagram is MessageTooLong on this backend")
            }
            Err(e) => panic!("send_to {len} bytes: {e:?}"),
        }
    }
    let huge = vec![0u8; 70_000];
    expect_err(
        dut.send_to(fd, &huge, MsgFlags::NONE, p.local_addr(), dl(dut, 5 * SEC)),
        Error::MessageTooLong,
        "70000-byte datagram",
    );
    dut.close(fd).unwrap();
}

// ---------------------------------------------------------------------------
// Deadlines and non-blocking mode
// ---------------------------------------------------------------------------

#[track_caller]
fn check_timeout_at<T: Debug>(
    dut: &impl Socketer,
    r: Result<T>,
    d: Deadline,
    t0: Instant,
    what: &str,
) {
    let now = dut.now();
    expect_err(r, Error::Timeout, what);
    let at = d.instant().unwrap();
    assert!(
        now >= at,
        "{what}: Timeout {} us before the deadline",
        at.as_micros() - now.as_micros()
    );
    assert!(t0.elapsed() < 5 * SEC, "{what}: took {:?}", t0.elapsed());
}

/// recv/recv_from/accept with a deadline 200 ms ahead on an idle socket
/// return `Timeout`, not before the deadline and well before 5 s.
pub fn recv_deadline_timeout(dut: &impl Netdever, peer: &impl Peer) {
    let (fd, _s, _) = connected_pair(dut, peer);
    let mut buf = [0u8; 16];
    let (t0, d) = (Instant::now(), dl(dut, ms(200)));
    let r = dut.recv(fd, &mut buf, MsgFlags::NONE, d);
    check_timeout_at(dut, r, d, t0, "TCP recv on an idle socket");

    let u = udp(dut);
    dut.bind(u, any_addr(7300)).unwrap();
    let (t0, d) = (Instant::now(), dl(dut, ms(200)));
    let r = dut.recv_from(u, &mut buf, MsgFlags::NONE, d);
    check_timeout_at(dut, r, d, t0, "UDP recv_from on an idle socket");

    let l = tcp(dut);
    dut.bind(l, any_addr(7301)).unwrap();
    dut.listen(l, 1).unwrap();
    let (t0, d) = (Instant::now(), dl(dut, ms(200)));
    let r = dut.accept(l, d);
    check_timeout_at(dut, r, d, t0, "accept on an idle listener");

    let mut pf = [PollFd::new(fd, Events::READABLE)];
    let (t0, d) = (Instant::now(), dl(dut, ms(200)));
    assert_eq!(
        dut.poll(&mut pf, d),
        Ok(0),
        "poll on an idle socket times out with Ok(0)"
    );
    assert!(
        dut.now() >= d.instant().unwrap(),
        "poll returned before its deadline"
    );
    assert!(t0.elapsed() < 5 * SEC);
    for s in [fd, u, l] {
        dut.close(s).unwrap();
    }
}

/// connect to an address nobody answers gives `Timeout` at the deadline.
pub fn connect_deadline_timeout(dut: &impl Netdever, peer: &impl Peer) {
    let o = peer.ip().octets();
    // A host on the same (isolated) subnet that does not exist.
    let ghost = Ipv4Addr::new(o[0], o[1], o[2], if o[3] == 99 { 98 } else { 99 });
    let fd = tcp(dut);
    let (t0, d) = (Instant::now(), dl(dut, ms(300)));
    let r = dut.connect(fd, None, SocketAddr::new(ghost.into(), 80), d);
    check_timeout_at(dut, r, d, t0, "connect to a host that does not answer");
    dut.close(fd).unwrap();
}

/// `NonBlocking(true)`: recv and accept are `WouldBlock`, connect is
/// `InProgress` and completes in the background (poll `WRITABLE`).
pub fn nonblocking_mode(dut: &impl Netdever, peer: &impl Peer) {
    let echo = EchoServer::start(peer);
    let fd = connect_tcp(dut, echo.addr);
    dut.set_sock_opt(fd, SockOpt::NonBlocking(true))
        .expect("set NonBlocking(true)");
    assert_eq!(
        dut.get_sock_opt(fd, SockOptName::NonBlocking),
        Ok(SockOpt::NonBlocking(true))
    );
    let mut buf = [0u8; 16];
    let t0 = Instant::now();
    expect_err(
        dut.recv(fd, &mut buf, MsgFlags::NONE, Deadline::Never),
        Error::WouldBlock,
        "non-blocking recv with no data",
    );
    assert!(t0.elapsed() < SEC, "non-blocking recv returned at once");

    let l = tcp(dut);
    dut.bind(l, any_addr(7400)).unwrap();
    dut.listen(l, 1).unwrap();
    dut.set_sock_opt(l, SockOpt::NonBlocking(true)).unwrap();
    let t0 = Instant::now();
    expect_err(
        dut.accept(l, Deadline::Never),
        Error::WouldBlock,
        "non-blocking accept with nothing pending",
    );
    assert!(t0.elapsed() < SEC, "non-blocking accept returned at once");

    let c = tcp(dut);
    dut.set_sock_opt(c, SockOpt::NonBlocking(true)).unwrap();
    expect_err(
        dut.connect(c, None, echo.addr, Deadline::Never),
        Error::InProgress,
        "non-blocking connect",
    );
    let mut pf = [PollFd::new(c, Events::WRITABLE)];
    assert_eq!(
        dut.poll(&mut pf, dl(dut, 5 * SEC)),
        Ok(1),
        "poll WRITABLE after a non-blocking connect"
    );
    assert!(
        pf[0].revents.contains(Events::WRITABLE),
        "revents {:?} lacks WRITABLE",
        pf[0].revents
    );
    assert_eq!(
        dut.peer_addr(c),
        Ok(echo.addr),
        "connected in the background"
    );
    expect_err(
        dut.connect(c, None, echo.addr, Deadline::Never),
        Error::AlreadyConnected,
        "connect again after the background connect completed",
    );
    assert_eq!(dut.send(c, b"nb", MsgFlags::NONE, Deadline::Never), Ok(2));
    let mut pf = [PollFd::new(c, Events::READABLE)];
    assert_eq!(dut.poll(&mut pf, dl(dut, 5 * SEC)), Ok(1), "echo arrives");
    let mut got = Vec::new();
    let end = Instant::now() + 5 * SEC;
    while got.len() < 2 && Instant::now() < end {
        match dut.recv(c, &mut buf, MsgFlags::NONE, Deadline::Never) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(Error::WouldBlock) => std::thread::sleep(ms(5)),
            Err(e) => panic!("non-blocking recv: {e:?}"),
        }
    }
    assert_eq!(got, b"nb");
    for s in [fd, l, c] {
        dut.close(s).unwrap();
    }
}

/// `MSG_DONTWAIT` makes one call non-blocking; the socket stays blocking.
pub fn dontwait_flag(dut: &impl Netdever, peer: &impl Peer) {
    let (fd, mut s, _) = connected_pair(dut, peer);
    let mut buf = [0u8; 16];
    let t0 = Instant::now();
    expect_err(
        dut.recv(fd, &mut buf, MsgFlags::DONTWAIT, Deadline::Never),
        Error::WouldBlock,
        "recv(DONTWAIT) with no data",
    );
    assert!(t0.elapsed() < SEC, "recv(DONTWAIT) returned at once");
    s.write_all(b"data").unwrap();
    let mut pf = [PollFd::new(fd, Events::READABLE)];
    assert_eq!(dut.poll(&mut pf, dl(dut, 5 * SEC)), Ok(1));
    let mut got = Vec::new();
    let end = Instant::now() + 5 * SEC;
    while got.len() < 4 && Instant::now() < end {
        match dut.recv(fd, &mut buf, MsgFlags::DONTWAIT, Deadline::Never) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(Error::WouldBlock) => std::thread::sleep(ms(5)),
            Err(e) => panic!("recv(DONTWAIT): {e:?}"),
        }
    }
    assert_eq!(got, b"data");
    assert_eq!(
        dut.send(fd, b"ok", MsgFlags::DONTWAIT, Deadline::Never),
        Ok(2),
        "send(DONTWAIT) with room"
    );
    assert_eq!(peer_read_exact(s.as_mut(), 2, 5 * SEC).unwrap(), b"ok");
    let (t0, d) = (Instant::now(), dl(dut, ms(200)));
    let r = dut.recv(fd, &mut buf, MsgFlags::NONE, d);
    check_timeout_at(
        dut,
        r,
        d,
        t0,
        "blocking recv after DONTWAIT calls (flag is per call)",
    );

    let u = udp(dut);
    dut.bind(u, any_addr(7500)).unwrap();
    expect_err(
        dut.recv_from(u, &mut buf, MsgFlags::DONTWAIT, Deadline::Never),
        Error::WouldBlock,
        "UDP recv_from(DONTWAIT) with no data",
    );
    dut.close(u).unwrap();
    dut.close(fd).unwrap();
}

/// `RecvTimeout` bounds recv/recv_from/accept; the earlier of it and the
/// deadline wins.
pub fn recv_timeout_option(dut: &impl Netdever, peer: &impl Peer) {
    let (fd, _s, _) = connected_pair(dut, peer);
    assert_eq!(
        dut.get_sock_opt(fd, SockOptName::RecvTimeout),
        Ok(SockOpt::RecvTimeout(None)),
        "RecvTimeout defaults to None"
    );
    dut.set_sock_opt(fd, SockOpt::RecvTimeout(Some(ms(200))))
        .expect("set RecvTimeout");
    let mut buf = [0u8; 16];
    let t0 = Instant::now();
    let r = dut.recv(fd, &mut buf, MsgFlags::NONE, Deadline::Never);
    let el = t0.elapsed();
    expect_err(
        r,
        Error::Timeout,
        "recv with RecvTimeout(200ms) and no deadline",
    );
    assert!(
        el >= ms(195) && el < 5 * SEC,
        "RecvTimeout(200ms) took {el:?}"
    );

    dut.set_sock_opt(fd, SockOpt::RecvTimeout(Some(30 * SEC)))
        .unwrap();
    let (t0, d) = (Instant::now(), dl(dut, ms(100)));
    let r = dut.recv(fd, &mut buf, MsgFlags::NONE, d);
    expect_err(r, Error::Timeout, "recv: deadline earlier than RecvTimeout");
    assert!(
        t0.elapsed() < 3 * SEC,
        "the earlier deadline wins ({:?})",
        t0.elapsed()
    );

    let l = tcp(dut);
    dut.bind(l, any_addr(7600)).unwrap();
    dut.listen(l, 1).unwrap();
    dut.set_sock_opt(l, SockOpt::RecvTimeout(Some(ms(200))))
        .unwrap();
    let t0 = Instant::now();
    expect_err(
        dut.accept(l, Deadline::Never),
        Error::Timeout,
        "accept with RecvTimeout",
    );
    assert!(t0.elapsed() >= ms(195) && t0.elapsed() < 5 * SEC);

    let u = udp(dut);
    dut.bind(u, any_addr(7601)).unwrap();
    dut.set_sock_opt(u, SockOpt::RecvTimeout(Some(ms(200))))
        .unwrap();
    let t0 = Instant::now();
    expect_err(
        dut.recv_from(u, &mut buf, MsgFlags::NONE, Deadline::Never),
        Error::Timeout,
        "recv_from with RecvTimeout",
    );
    assert!(t0.elapsed() >= ms(195) && t0.elapsed() < 5 * SEC);
    for s in [fd, l, u] {
        dut.close(s).unwrap();
    }
}

/// `SendTimeout` bounds a send that waits for buffer space (the peer does
/// not read).
pub fn send_timeout_option(dut: &impl Netdever, peer: &impl Peer) {
    let (fd, _s, _) = connected_pair(dut, peer);
    dut.set_sock_opt(fd, SockOpt::SendTimeout(Some(ms(200))))
        .expect("set SendTimeout");
    assert_eq!(
        dut.get_sock_opt(fd, SockOptName::SendTimeout),
        Ok(SockOpt::SendTimeout(Some(ms(200))))
    );
    let chunk = vec![0x5a; 65536];
    let mut sent = 0usize;
    let end = Instant::now() + 60 * SEC;
    loop {
        assert!(
            Instant::now() < end && sent < 256 << 20,
            "send never blocked (sent {sent} bytes to a peer that does not read)"
        );
        let t0 = Instant::now();
        match dut.send(fd, &chunk, MsgFlags::NONE, Deadline::Never) {
            Ok(n) => sent += n,
            Err(Error::Timeout) => {
                let el = t0.elapsed();
                assert!(
                    el >= ms(195) && el < 5 * SEC,
                    "send with SendTimeout(200ms) gave up after {el:?}"
                );
                break;
            }
            Err(e) => panic!("send with a full buffer: {e:?}"),
        }
    }
    assert!(sent > 0, "something was sent first");
    dut.set_sock_opt(fd, SockOpt::Linger(Some(Duration::ZERO)))
        .ok();
    dut.close(fd).unwrap();
}

/// Blocked recv / recv_from / accept wake within 1 s of the event, not at
/// their (10 s) deadline.
pub fn blocked_calls_wake_promptly(dut: &impl Netdever, peer: &impl Peer) {
    const DELAY: Duration = Duration::from_millis(300);
    let (fd, mut s, _) = connected_pair(dut, peer);
    let mut buf = [0u8; 32];
    std::thread::scope(|sc| {
        sc.spawn(move || {
            std::thread::sleep(DELAY);
            s.write_all(b"wake up").unwrap();
            // keep the stream open until the dut has read
            std::thread::sleep(SEC);
        });
        let t0 = Instant::now();
        let r = dut.recv(fd, &mut buf, MsgFlags::NONE, dl(dut, 10 * SEC));
        let el = t0.elapsed();
        assert!(matches!(r, Ok(n) if n > 0), "blocked recv: {r:?}");
        assert!(
            el < DELAY + SEC,
            "blocked recv woke after {el:?} (data came at {DELAY:?})"
        );
    });

    let u = udp(dut);
    dut.bind(u, any_addr(7700)).unwrap();
    let target = SocketAddr::new(dut_ip(dut), 7700);
    let p = peer.udp_bind(0).unwrap();
    std::thread::scope(|sc| {
        let p = &p;
        sc.spawn(move || {
            std::thread::sleep(DELAY);
            p.send_to(b"wake", target).unwrap();
        });
        let t0 = Instant::now();
        let r = dut.recv_from(u, &mut buf, MsgFlags::NONE, dl(dut, 10 * SEC));
        let el = t0.elapsed();
        assert!(matches!(r, Ok((4, _))), "blocked recv_from: {r:?}");
        assert!(el < DELAY + SEC, "blocked recv_from woke after {el:?}");
    });

    let l = tcp(dut);
    dut.bind(l, any_addr(7701)).unwrap();
    dut.listen(l, 1).unwrap();
    let target = SocketAddr::new(dut_ip(dut), 7701);
    std::thread::scope(|sc| {
        let h = sc.spawn(move || {
            std::thread::sleep(DELAY);
            peer.tcp_connect(target, 5 * SEC)
        });
        let t0 = Instant::now();
        let r = dut.accept(l, dl(dut, 10 * SEC));
        let el = t0.elapsed();
        let (afd, _) = r.expect("blocked accept");
        assert!(el < DELAY + SEC, "blocked accept woke after {el:?}");
        dut.close(afd).unwrap();
        let _ = h.join();
    });
    for f in [fd, u, l] {
        dut.close(f).unwrap();
    }
}

// ---------------------------------------------------------------------------
// poll
// ---------------------------------------------------------------------------

/// poll: `Ok(0)` at the deadline on an idle socket, `READABLE` when data
/// arrives (also while blocked in poll).
pub fn poll_readable_and_timeout(dut: &impl Netdever, peer: &impl Peer) {
    let (fd, mut s, _) = connected_pair(dut, peer);
    let mut pf = [PollFd::new(fd, Events::READABLE)];
    let (t0, d) = (Instant::now(), dl(dut, ms(150)));
    assert_eq!(dut.poll(&mut pf, d), Ok(0), "poll with nothing ready");
    assert!(
        dut.now() >= d.instant().unwrap(),
        "poll returned before its deadline"
    );
    assert!(t0.elapsed() < 5 * SEC);
    assert!(
        !pf[0].revents.contains(Events::READABLE),
        "READABLE without data: {:?}",
        pf[0].revents
    );
    std::thread::scope(|sc| {
        sc.spawn(|| {
            std::thread::sleep(ms(200));
            s.write_all(b"r").unwrap();
        });
        let t0 = Instant::now();
        let mut pf = [PollFd::new(fd, Events::READABLE)];
        assert_eq!(dut.poll(&mut pf, dl(dut, 10 * SEC)), Ok(1), "poll READABLE");
        assert!(
            pf[0].revents.contains(Events::READABLE),
            "{:?}",
            pf[0].revents
        );
        assert!(
            t0.elapsed() < ms(200) + SEC,
            "poll woke after {:?}",
            t0.elapsed()
        );
    });
    let mut buf = [0u8; 4];
    assert_eq!(
        dut.recv(fd, &mut buf, MsgFlags::DONTWAIT, Deadline::Never),
        Ok(1)
    );
    dut.close(fd).unwrap();
}

/// poll: a connected socket with buffer space is `WRITABLE` at once.
pub fn poll_writable(dut: &impl Netdever, peer: &impl Peer) {
    let (fd, _s, _) = connected_pair(dut, peer);
    let mut pf = [PollFd::new(fd, Events::WRITABLE | Events::READABLE)];
    let t0 = Instant::now();
    assert_eq!(dut.poll(&mut pf, dl(dut, 5 * SEC)), Ok(1));
    assert!(t0.elapsed() < SEC, "WRITABLE must be immediate");
    assert!(
        pf[0].revents.contains(Events::WRITABLE),
        "{:?}",
        pf[0].revents
    );
    assert!(
        !pf[0].revents.contains(Events::READABLE),
        "READABLE with nothing to read: {:?}",
        pf[0].revents
    );
    dut.close(fd).unwrap();
}

/// poll: a listener is `READABLE` when a connection is pending.
pub fn poll_listener(dut: &impl Netdever, peer: &impl Peer) {
    let l = tcp(dut);
    dut.bind(l, any_addr(7800)).unwrap();
    dut.listen(l, 2).unwrap();
    let mut pf = [PollFd::new(l, Events::READABLE)];
    assert_eq!(dut.poll(&mut pf, dl(dut, ms(200))), Ok(0), "listener idle");
    let _c = peer
        .tcp_connect(SocketAddr::new(dut_ip(dut), 7800), 5 * SEC)
        .expect("peer connects");
    let mut pf = [PollFd::new(l, Events::READABLE)];
    assert_eq!(
        dut.poll(&mut pf, dl(dut, 5 * SEC)),
        Ok(1),
        "listener with a pending connection"
    );
    assert!(
        pf[0].revents.contains(Events::READABLE),
        "{:?}",
        pf[0].revents
    );
    dut.set_sock_opt(l, SockOpt::NonBlocking(true)).unwrap();
    let (a, _) = dut
        .accept(l, Deadline::Never)
        .expect("accept after poll said READABLE does not block");
    dut.close(a).unwrap();
    dut.close(l).unwrap();
}

/// poll: after the peer closes, `READABLE` (EOF) and `HANGUP`.
pub fn poll_hangup(dut: &impl Netdever, peer: &impl Peer) {
    let (fd, s, _) = connected_pair(dut, peer);
    drop(s);
    let end = Instant::now() + 5 * SEC;
    let mut last = Events::NONE;
    while Instant::now() < end {
        let mut pf = [PollFd::new(fd, Events::READABLE)];
        let n = dut.poll(&mut pf, dl(dut, SEC)).expect("poll");
        last = pf[0].revents;
        if n == 1 && last.contains(Events::HANGUP) {
            break;
        }
    }
    assert!(
        last.contains(Events::HANGUP),
        "HANGUP after the peer closed (got {last:?})"
    );
    assert!(
        last.contains(Events::READABLE),
        "EOF counts as READABLE (got {last:?})"
    );
    let mut buf = [0u8; 4];
    assert_eq!(
        dut.recv(fd, &mut buf, MsgFlags::DONTWAIT, Deadline::Never),
        Ok(0)
    );
    dut.close(fd).unwrap();
}

/// poll: an fd that is not open gets `ERROR` (POLLNVAL) and the call still
/// reports the valid entries.
pub fn poll_invalid_fd(dut: &impl Netdever, peer: &impl Peer) {
    let (fd, _s, _) = connected_pair(dut, peer);
    let closed = tcp(dut);
    dut.close(closed).unwrap();
    let mut pf = [
        PollFd::new(fd, Events::WRITABLE),
        PollFd::new(Sockfd::from_raw(-1), Events::READABLE),
        PollFd::new(closed, Events::READABLE),
    ];
    let n = dut
        .poll(&mut pf, dl(dut, 2 * SEC))
        .expect("poll with invalid fds in the set");
    for (i, p) in pf.iter().enumerate().skip(1) {
        assert!(
            p.revents.contains(Events::ERROR),
            "entry {i} (not open): {:?}",
            p.revents
        );
    }
    assert!(
        pf[0].revents.contains(Events::WRITABLE),
        "{:?}",
        pf[0].revents
    );
    let nonempty = pf.iter().filter(|p| !p.revents.is_empty()).count();
    assert_eq!(n, nonempty, "poll counts the entries with revents set");
    dut.close(fd).unwrap();
}

// ---------------------------------------------------------------------------
// shutdown and close
// ---------------------------------------------------------------------------

/// shutdown(Write): the peer sees EOF, the dut still receives, and a later
/// send is `BrokenPipe`.
pub fn shutdown_write(dut: &impl Netdever, peer: &impl Peer) {
    let (fd, mut s, _) = connected_pair(dut, peer);
    send_all(dut, fd, b"request", 5 * SEC);
    dut.shutdown(fd, Shutdown::Write).expect("shutdown(Write)");
    let got = peer_read_to_eof(s.as_mut(), 5 * SEC).expect("peer reads to EOF");
    assert_eq!(got, b"request");
    s.write_all(b"response").unwrap();
    drop(s);
    let back = recv_to_eof(dut, fd, 5 * SEC).expect("dut still receives after shutdown(Write)");
    assert_eq!(back, b"response");
    expect_err(
        dut.send(fd, b"more", MsgFlags::NONE, dl(dut, SEC)),
        Error::BrokenPipe,
        "send after shutdown(Write)",
    );
    dut.close(fd).unwrap();
}

/// 1 MiB sent right before close still arrives entirely; close is prompt.
pub fn close_delivers_queued_data(dut: &impl Netdever, peer: &impl Peer) {
    let (fd, mut s, _) = connected_pair(dut, peer);
    let data = pattern(42, 1 << 20);
    let want = Sha256::digest(&data);
    std::thread::scope(|sc| {
        let reader = sc.spawn(move || peer_read_to_eof(s.as_mut(), 60 * SEC));
        send_all(dut, fd, &data, 60 * SEC);
        let t0 = Instant::now();
        dut.close(fd).expect("close");
        assert!(t0.elapsed() < SEC, "close took {:?}", t0.elapsed());
        let got = reader
            .join()
            .unwrap()
            .expect("peer reads to EOF after close");
        assert_eq!(got.len(), data.len(), "bytes delivered after close");
        assert!(
            Sha256::digest(&got) == want,
            "data delivered after close differs"
        );
    });
}

// ---------------------------------------------------------------------------
// Socket options
// ---------------------------------------------------------------------------

/// set/get round trips; KeepAlive/NoDelay/Linger may be `NotSupported`.
pub fn sockopt_round_trip(dut: &impl Netdever, peer: &impl Peer) {
    let (fd, _s, _) = connected_pair(dut, peer);
    let optional = [
        SockOpt::KeepAlive(true),
        SockOpt::KeepAlive(false),
        SockOpt::NoDelay(true),
        SockOpt::NoDelay(false),
        SockOpt::Linger(Some(ms(1500))),
        SockOpt::Linger(None),
    ];
    let required = [
        SockOpt::RecvTimeout(Some(ms(1500))),
        SockOpt::RecvTimeout(None),
        SockOpt::SendTimeout(Some(ms(2500))),
        SockOpt::SendTimeout(None),
        SockOpt::NonBlocking(true),
        SockOpt::NonBlocking(false),
    ];
    for (opts, must) in [(&optional[..], false), (&required[..], true)] {
        for &o in opts {
            match dut.set_sock_opt(fd, o) {
                Ok(()) => assert_eq!(
                    dut.get_sock_opt(fd, o.name()),
                    Ok(o),
                    "get_sock_opt after set_sock_opt({o:?})"
                ),
                Err(Error::NotSupported) if !must => {
                    eprintln!("note: {o:?} is NotSupported on this backend");
                    expect_err_in(
                        dut.get_sock_opt(fd, o.name()),
                        &[Error::NotSupported],
                        "get of an unsupported option",
                    );
                }
                Err(e) => panic!("set_sock_opt({o:?}): {e:?}"),
            }
        }
    }
    // The options work on a fresh, unconnected socket too.
    let f2 = tcp(dut);
    dut.set_sock_opt(f2, SockOpt::RecvTimeout(Some(ms(10))))
        .unwrap();
    assert_eq!(
        dut.get_sock_opt(f2, SockOptName::RecvTimeout),
        Ok(SockOpt::RecvTimeout(Some(ms(10))))
    );
    dut.close(f2).unwrap();
    dut.close(fd).unwrap();
}

/// Options a backend may not serve give a typed error, never a panic.
pub fn sockopt_unsupported(dut: &impl Netdever, peer: &impl Peer) {
    let _ = peer;
    let t = tcp(dut);
    match dut.set_sock_opt(t, SockOpt::Broadcast(true)) {
        Ok(()) => eprintln!("note: Broadcast on TCP accepted"),
        Err(Error::NotSupported) => {}
        Err(e) => panic!("Broadcast on TCP: expected Ok or NotSupported, got {e:?}"),
    }
    assert_eq!(
        dut.get_sock_opt(t, SockOptName::SocketError),
        Ok(SockOpt::SocketError(None)),
        "SO_ERROR on a fresh socket"
    );
    expect_err_in(
        dut.set_sock_opt(t, SockOpt::SocketError(None)),
        &[Error::NotSupported, Error::InvalidArgument],
        "setting the read-only SocketError",
    );
    let u = udp(dut);
    match dut.set_sock_opt(u, SockOpt::NoDelay(true)) {
        Ok(()) | Err(Error::NotSupported) | Err(Error::InvalidArgument) => {}
        Err(e) => panic!("NoDelay on UDP: {e:?}"),
    }
    match dut.set_sock_opt(u, SockOpt::Broadcast(true)) {
        Ok(()) => assert_eq!(
            dut.get_sock_opt(u, SockOptName::Broadcast),
            Ok(SockOpt::Broadcast(true))
        ),
        Err(Error::NotSupported) => {}
        Err(e) => panic!("Broadcast on UDP: {e:?}"),
    }
    dut.close(t).unwrap();
    dut.close(u).unwrap();
}

// ---------------------------------------------------------------------------
// Misuse: typed errors, never a panic or a hang
// ---------------------------------------------------------------------------

fn all_calls_invalid(dut: &impl Socketer, fd: Sockfd, what: &str) {
    let mut buf = [0u8; 8];
    let d = dl(dut, SEC);
    let a = SocketAddr::new(Ipv4Addr::new(127, 0, 0, 1).into(), 1);
    let e = Error::InvalidSockfd;
    expect_err(dut.bind(fd, any_addr(0)), e, &format!("bind on {what}"));
    expect_err(
        dut.connect(fd, None, a, d),
        e,
        &format!("connect on {what}"),
    );
    expect_err(dut.listen(fd, 1), e, &format!("listen on {what}"));
    expect_err(dut.accept(fd, d), e, &format!("accept on {what}"));
    expect_err(
        dut.send(fd, b"x", MsgFlags::NONE, d),
        e,
        &format!("send on {what}"),
    );
    expect_err(
        dut.send_to(fd, b"x", MsgFlags::NONE, a, d),
        e,
        &format!("send_to on {what}"),
    );
    expect_err(
        dut.recv(fd, &mut buf, MsgFlags::NONE, d),
        e,
        &format!("recv on {what}"),
    );
    expect_err(
        dut.recv_from(fd, &mut buf, MsgFlags::NONE, d),
        e,
        &format!("recv_from on {what}"),
    );
    expect_err(
        dut.shutdown(fd, Shutdown::Both),
        e,
        &format!("shutdown on {what}"),
    );
    expect_err(
        dut.set_sock_opt(fd, SockOpt::NoDelay(true)),
        e,
        &format!("set_sock_opt on {what}"),
    );
    expect_err(
        dut.get_sock_opt(fd, SockOptName::NoDelay),
        e,
        &format!("get_sock_opt on {what}"),
    );
    expect_err(dut.local_addr(fd), e, &format!("local_addr on {what}"));
    expect_err(dut.peer_addr(fd), e, &format!("peer_addr on {what}"));
    expect_err(dut.close(fd), e, &format!("close on {what}"));
}

/// Fds that were never issued: every call is `InvalidSockfd`.
pub fn misuse_bad_fd(dut: &impl Netdever, peer: &impl Peer) {
    let _ = peer;
    let t0 = Instant::now();
    all_calls_invalid(dut, Sockfd::from_raw(-1), "fd -1");
    all_calls_invalid(dut, Sockfd::from_raw(i32::MAX), "fd i32::MAX");
    all_calls_invalid(dut, Sockfd::new(255, 0), "fd index 255");
    let cap = dut.capabilities().max_sockets;
    if cap > 0 && cap <= 256 {
        all_calls_invalid(dut, Sockfd::new((cap - 1) as u8, 77), "never-issued fd");
    }
    assert!(t0.elapsed() < 10 * SEC, "calls on bad fds must not wait");
}

/// Closing twice: the second close is `InvalidSockfd`.
pub fn misuse_double_close(dut: &impl Netdever, peer: &impl Peer) {
    let _ = peer;
    for fd in [tcp(dut), udp(dut)] {
        dut.close(fd).expect("first close");
        expect_err(dut.close(fd), Error::InvalidSockfd, "second close");
        all_calls_invalid(dut, fd, "a closed fd");
    }
}

/// A stale fd stays dead after its slot is reused, and does not reach the
/// new socket.
pub fn misuse_stale_fd(dut: &impl Netdever, peer: &impl Peer) {
    let _ = peer;
    let old = tcp(dut);
    dut.set_sock_opt(old, SockOpt::RecvTimeout(Some(ms(111))))
        .unwrap();
    dut.close(old).unwrap();
    let cap = dut.capabilities().max_sockets;
    let mut reused = None;
    for _ in 0..(2 * cap + 2) {
        let fd = tcp(dut);
        if fd.index() == old.index() {
            reused = Some(fd);
            break;
        }
        dut.close(fd).unwrap();
    }
    let new = reused.expect("the slot of a closed fd is reused within 2 * max_sockets opens");
    assert_ne!(new, old, "a reused slot gets a new fd value (generation)");
    dut.set_sock_opt(new, SockOpt::RecvTimeout(Some(ms(222))))
        .unwrap();
    expect_err(dut.close(old), Error::InvalidSockfd, "close(stale fd)");
    expect_err(
        dut.set_sock_opt(old, SockOpt::RecvTimeout(None)),
        Error::InvalidSockfd,
        "set_sock_opt(stale fd)",
    );
    expect_err(
        dut.get_sock_opt(old, SockOptName::RecvTimeout),
        Error::InvalidSockfd,
        "get_sock_opt(stale fd)",
    );
    assert_eq!(
        dut.get_sock_opt(new, SockOptName::RecvTimeout),
        Ok(SockOpt::RecvTimeout(Some(ms(222)))),
        "the new socket is untouched by calls on the stale fd"
    );
    dut.close(new).expect("the new socket is still open");
}

/// Before connect: send/recv/peer_addr/shutdown are `NotConnected`.
pub fn misuse_not_connected(dut: &impl Netdever, peer: &impl Peer) {
    let _ = peer;
    let fd = tcp(dut);
    let mut buf = [0u8; 8];
    let t0 = Instant::now();
    expect_err(
        dut.send(fd, b"x", MsgFlags::NONE, dl(dut, 2 * SEC)),
        Error::NotConnected,
        "send before connect",
    );
    expect_err(
        dut.recv(fd, &mut buf, MsgFlags::NONE, dl(dut, 2 * SEC)),
        Error::NotConnected,
        "recv before connect",
    );
    expect_err(
        dut.peer_addr(fd),
        Error::NotConnected,
        "peer_addr before connect",
    );
    expect_err(
        dut.shutdown(fd, Shutdown::Write),
        Error::NotConnected,
        "shutdown before connect",
    );
    assert!(
        t0.elapsed() < SEC,
        "NotConnected must not wait for the deadline"
    );
    let u = udp(dut);
    expect_err(
        dut.send(u, b"x", MsgFlags::NONE, dl(dut, 2 * SEC)),
        Error::NotConnected,
        "UDP send without a default peer",
    );
    expect_err(
        dut.peer_addr(u),
        Error::NotConnected,
        "UDP peer_addr before connect",
    );
    dut.close(fd).unwrap();
    dut.close(u).unwrap();
}

/// accept on a socket that is not listening is `InvalidArgument`.
pub fn misuse_accept_not_listening(dut: &impl Netdever, peer: &impl Peer) {
    let fresh = tcp(dut);
    let r = quick("accept on a fresh socket", || {
        dut.accept(fresh, dl(dut, 3 * SEC))
    });
    expect_err(r, Error::InvalidArgument, "accept on a fresh socket");
    let echo = EchoServer::start(peer);
    let c = connect_tcp(dut, echo.addr);
    let r = quick("accept on a connected socket", || {
        dut.accept(c, dl(dut, 3 * SEC))
    });
    expect_err(r, Error::InvalidArgument, "accept on a connected socket");
    let u = udp(dut);
    let r = quick("accept on UDP", || dut.accept(u, dl(dut, 3 * SEC)));
    expect_err_in(
        r,
        &[Error::InvalidArgument, Error::NotSupported],
        "accept on UDP",
    );
    for f in [fresh, c, u] {
        dut.close(f).unwrap();
    }
}

/// listen on UDP is `NotSupported` (see the module docs for the choice).
pub fn misuse_listen_udp(dut: &impl Netdever, peer: &impl Peer) {
    let _ = peer;
    let u = udp(dut);
    expect_err(
        dut.listen(u, 1),
        Error::NotSupported,
        "listen on a UDP socket",
    );
    dut.bind(u, any_addr(7900)).unwrap();
    expect_err(
        dut.listen(u, 1),
        Error::NotSupported,
        "listen on a bound UDP socket",
    );
    dut.close(u).unwrap();
}

/// connect twice is `AlreadyConnected`; send_to elsewhere on a connected
/// TCP socket too.
pub fn misuse_connect_twice(dut: &impl Netdever, peer: &impl Peer) {
    let echo = EchoServer::start(peer);
    let fd = connect_tcp(dut, echo.addr);
    expect_err(
        dut.connect(fd, None, echo.addr, dl(dut, 2 * SEC)),
        Error::AlreadyConnected,
        "connect twice (same address)",
    );
    expect_err(
        dut.connect(fd, None, peer.addr(echo.addr.port() ^ 1), dl(dut, 2 * SEC)),
        Error::AlreadyConnected,
        "connect twice (other address)",
    );
    expect_err(
        dut.send_to(
            fd,
            b"x",
            MsgFlags::NONE,
            peer.addr(echo.addr.port() ^ 1),
            dl(dut, 2 * SEC),
        ),
        Error::AlreadyConnected,
        "send_to another address on a connected TCP socket",
    );
    assert_eq!(
        dut.send_to(fd, b"y", MsgFlags::NONE, echo.addr, dl(dut, 2 * SEC)),
        Ok(1),
        "send_to the connected peer on TCP works like send"
    );
    assert_eq!(recv_exact(dut, fd, 1, 5 * SEC), b"y");
    dut.close(fd).unwrap();
}

/// `capabilities().max_sockets` sockets open; the next is `NoMoreSockets`;
/// closing one frees a slot.
pub fn misuse_fd_table_full(dut: &impl Netdever, peer: &impl Peer) {
    let _ = peer;
    let caps = dut.capabilities();
    let mut fds = Vec::new();
    let mut n_tcp = 0;
    for i in 0..caps.max_sockets {
        let r = if n_tcp < caps.max_tcp {
            n_tcp += 1;
            dut.socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        } else {
            dut.socket(AddressFamily::Inet, SockType::Dgram, Protocol::Udp)
        };
        fds.push(r.unwrap_or_else(|e| {
            panic!("socket #{i} of max_sockets = {}: {e:?}", caps.max_sockets)
        }));
    }
    for (ty, proto) in [
        (SockType::Stream, Protocol::Tcp),
        (SockType::Dgram, Protocol::Udp),
    ] {
        expect_err(
            dut.socket(AddressFamily::Inet, ty, proto),
            Error::NoMoreSockets,
            &format!("{proto:?} socket beyond max_sockets"),
        );
    }
    let first = fds.remove(0);
    dut.close(first).unwrap();
    let again = dut
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .expect("closing one socket frees a slot");
    fds.push(again);
    expect_err(
        dut.socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp),
        Error::NoMoreSockets,
        "table full again",
    );
    for fd in fds {
        dut.close(fd).unwrap();
    }
    // All slots are usable again.
    let fd = tcp(dut);
    dut.close(fd).unwrap();
}

/// Empty receive buffers are `InvalidArgument`; an empty TCP send is `Ok(0)`.
pub fn misuse_zero_length(dut: &impl Netdever, peer: &impl Peer) {
    let echo = EchoServer::start(peer);
    let fd = connect_tcp(dut, echo.addr);
    let t0 = Instant::now();
    expect_err(
        dut.recv(fd, &mut [], MsgFlags::NONE, dl(dut, 2 * SEC)),
        Error::InvalidArgument,
        "recv into an empty buffer",
    );
    assert_eq!(
        dut.send(fd, &[], MsgFlags::NONE, dl(dut, 2 * SEC)),
        Ok(0),
        "zero-length TCP send"
    );
    let u = udp(dut);
    dut.bind(u, any_addr(7950)).unwrap();
    expect_err(
        dut.recv_from(u, &mut [], MsgFlags::NONE, dl(dut, 2 * SEC)),
        Error::InvalidArgument,
        "recv_from into an empty buffer",
    );
    assert!(t0.elapsed() < SEC, "argument errors must not wait");
    // The connection still works.
    send_all(dut, fd, b"still ok", 5 * SEC);
    assert_eq!(recv_exact(dut, fd, 8, 5 * SEC), b"still ok");
    dut.close(fd).unwrap();
    dut.close(u).unwrap();
}

/// Unknown `MsgFlags` bits are `InvalidArgument`.
pub fn misuse_unknown_flags(dut: &impl Netdever, peer: &impl Peer) {
    let echo = EchoServer::start(peer);
    let fd = connect_tcp(dut, echo.addr);
    let bad = MsgFlags::from_bits(0x100);
    let mut buf = [0u8; 8];
    expect_err(
        dut.send(fd, b"x", bad, dl(dut, SEC)),
        Error::InvalidArgument,
        "send with unknown flags",
    );
    expect_err(
        dut.recv(fd, &mut buf, bad, dl(dut, SEC)),
        Error::InvalidArgument,
        "recv with unknown flags",
    );
    expect_err(
        dut.recv(
            fd,
            &mut buf,
            MsgFlags::PEEK | MsgFlags::from_bits(0x8000_0000),
            dl(dut, SEC),
        ),
        Error::InvalidArgument,
        "recv with PEEK plus an unknown bit",
    );
    let u = udp(dut);
    expect_err(
        dut.send_to(u, b"x", bad, echo.addr, dl(dut, SEC)),
        Error::InvalidArgument,
        "send_to with unknown flags",
    );
    expect_err(
        dut.recv_from(u, &mut buf, bad, dl(dut, SEC)),
        Error::InvalidArgument,
        "recv_from with unknown flags",
    );
    dut.close(fd).unwrap();
    dut.close(u).unwrap();
}

/// socket(): IPv6 is `FamilyNotSupported`, mismatched type/protocol is
/// `TypeNotSupported`, TLS without TLS support is `ProtocolNotSupported`;
/// failed calls use no fd.
pub fn misuse_socket_args(dut: &impl Netdever, peer: &impl Peer) {
    let _ = peer;
    use AddressFamily::*;
    expect_err(
        dut.socket(Inet6, SockType::Stream, Protocol::Tcp),
        Error::FamilyNotSupported,
        "AF_INET6 stream",
    );
    expect_err(
        dut.socket(Inet6, SockType::Dgram, Protocol::Udp),
        Error::FamilyNotSupported,
        "AF_INET6 dgram",
    );
    expect_err(
        dut.socket(Inet, SockType::Stream, Protocol::Udp),
        Error::TypeNotSupported,
        "Stream + Udp",
    );
    expect_err(
        dut.socket(Inet, SockType::Dgram, Protocol::Tcp),
        Error::TypeNotSupported,
        "Dgram + Tcp",
    );
    expect_err(
        dut.socket(Inet, SockType::Dgram, Protocol::Tls),
        Error::TypeNotSupported,
        "Dgram + Tls",
    );
    let tls = dut.socket(Inet, SockType::Stream, Protocol::Tls);
    match dut.capabilities().tls {
        TlsSupport::None => expect_err(
            tls,
            Error::ProtocolNotSupported,
            "TLS socket without TLS support",
        ),
        _ => {
            let fd = tls.expect("TLS socket on a backend with TLS");
            dut.close(fd).unwrap();
        }
    }
    // None of the failures used a slot.
    let cap = dut.capabilities().max_sockets;
    let mut fds = Vec::new();
    for i in 0..cap {
        let proto = if i % 2 == 0 {
            Protocol::Tcp
        } else {
            Protocol::Udp
        };
        match dut.socket(Inet, proto.sock_type(), proto) {
            Ok(fd) => fds.push(fd),
            Err(Error::NoMoreSockets) if fds.len() < cap => {
                // protocol pools may be smaller than the table; try TCP
                match dut.socket(Inet, SockType::Stream, Protocol::Tcp) {
                    Ok(fd) => fds.push(fd),
                    Err(e) => {
                        panic!("socket #{i} after failed socket() calls: {e:?} (leaked slots?)")
                    }
                }
            }
            Err(e) => panic!("socket #{i} after failed socket() calls: {e:?}"),
        }
    }
    assert_eq!(fds.len(), cap, "failed socket() calls must not use fds");
    for fd in fds {
        dut.close(fd).unwrap();
    }
}

/// Binding a port that is already bound is `AddrInUse` (TCP and UDP).
pub fn misuse_addr_in_use(dut: &impl Netdever, peer: &impl Peer) {
    let _ = peer;
    let a = tcp(dut);
    dut.bind(a, any_addr(8000)).unwrap();
    dut.listen(a, 1).unwrap();
    let b = tcp(dut);
    expect_err(
        dut.bind(b, any_addr(8000)),
        Error::AddrInUse,
        "bind TCP to a listening port",
    );
    let u1 = udp(dut);
    dut.bind(u1, any_addr(8001)).unwrap();
    let u2 = udp(dut);
    expect_err(
        dut.bind(u2, any_addr(8001)),
        Error::AddrInUse,
        "bind UDP to a bound port",
    );
    // The port is free again once its owner is closed.
    dut.close(u1).unwrap();
    dut.bind(u2, any_addr(8001))
        .expect("bind after the owner closed");
    for f in [a, b, u2] {
        dut.close(f).unwrap();
    }
}

/// connect to port 0 or to the unspecified address fails with a typed error
/// at once.
pub fn misuse_connect_bad_addr(dut: &impl Netdever, peer: &impl Peer) {
    let fd = tcp(dut);
    let r = quick("TCP connect to port 0", || {
        dut.connect(fd, None, peer.addr(0), dl(dut, 3 * SEC))
    });
    expect_err_in(
        r,
        &[Error::AddrNotAvailable, Error::InvalidArgument],
        "TCP connect to port 0",
    );
    dut.close(fd).unwrap();
    let fd = tcp(dut);
    let r = quick("TCP connect to 0.0.0.0", || {
        dut.connect(fd, None, any_addr(80), dl(dut, 3 * SEC))
    });
    expect_err(r, Error::AddrNotAvailable, "TCP connect to 0.0.0.0");
    dut.close(fd).unwrap();
    let u = udp(dut);
    let r = quick("UDP connect to port 0", || {
        dut.connect(u, None, peer.addr(0), dl(dut, 3 * SEC))
    });
    expect_err_in(
        r,
        &[Error::AddrNotAvailable, Error::InvalidArgument],
        "UDP connect to port 0",
    );
    let r = quick("UDP send_to port 0", || {
        dut.send_to(u, b"x", MsgFlags::NONE, peer.addr(0), dl(dut, 3 * SEC))
    });
    expect_err_in(
        r,
        &[Error::AddrNotAvailable, Error::InvalidArgument],
        "UDP send_to port 0",
    );
    dut.close(u).unwrap();
}

// ---------------------------------------------------------------------------
// Integrity and concurrency
// ---------------------------------------------------------------------------

/// Send `len` pseudo-random bytes each way between dut and peer (dut as
/// client sending, then dut as server receiving) and compare SHA-256 at the
/// receiving end. `budget` bounds each direction.
pub fn transfer_sha256(dut: &impl Netdever, peer: &impl Peer, len: usize, budget: Duration) {
    transfer_sha256_eof(dut, peer, len, budget, true)
}

/// [`transfer_sha256`], optionally without waiting for the sender's FIN
/// once every byte has arrived. Fault-injection runs use `false`: smoltcp
/// 0.14 can lose a FIN for good when it rides a segment that arrived out of
/// order and is then retransmitted with the data (the receiver ignores the
/// FIN the first time, the sender stops its retransmit timer when the data
/// is acknowledged), so EOF after heavy loss is a known smoltcp gap, not
/// part of what the integrity run checks.
pub fn transfer_sha256_eof(
    dut: &impl Netdever,
    peer: &impl Peer,
    len: usize,
    budget: Duration,
    require_eof: bool,
) {
    let data = pattern(0xC0FFEE, len);
    let want = Sha256::digest(&data);

    // dut -> peer
    let (fd, mut s, _) = connected_pair(dut, peer);
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        let reader = sc.spawn(move || {
            let mut h = Sha256::new();
            let mut n = 0usize;
            let mut buf = vec![0u8; 65536];
            let end = Instant::now() + budget;
            loop {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(format!("peer: no EOF after {n} bytes"));
                }
                match s.read(&mut buf, left) {
                    Ok(0) => return Ok((n, h.finalize())),
                    Ok(k) => {
                        h.update(&buf[..k]);
                        n += k;
                        if !require_eof && n >= len {
                            return Ok((n, h.finalize()));
                        }
                    }
                    Err(e) => return Err(format!("peer read after {n} bytes: {e}")),
                }
            }
        });
        send_all(dut, fd, &data, budget);
        dut.close(fd).unwrap();
        let (n, got) = reader.join().unwrap().unwrap();
        assert_eq!(n, len, "peer received byte count");
        assert!(
            got == want,
            "SHA-256 at the peer {} != sent {}",
            hex(&got),
            hex(&want)
        );
    });
    eprintln!("dut->peer {} bytes in {:?}", len, t0.elapsed());

    // peer -> dut (dut is the server)
    let l = tcp(dut);
    dut.bind(l, any_addr(8100)).unwrap();
    dut.listen(l, 1).unwrap();
    let target = SocketAddr::new(dut_ip(dut), 8100);
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        let data = &data;
        let writer = sc.spawn(move || {
            let mut s = peer
                .tcp_connect(target, 10 * SEC)
                .map_err(|e| e.to_string())?;
            for c in data.chunks(1 << 16) {
                s.write_all(c).map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        });
        let (afd, _) = dut
            .accept(l, dl(dut, 10 * SEC))
            .expect("accept the peer's upload");
        let d = dl(dut, budget);
        let mut h = Sha256::new();
        let mut n = 0usize;
        let mut buf = vec![0u8; 65536];
        loop {
            match dut.recv(afd, &mut buf, MsgFlags::NONE, d) {
                Ok(0) => break,
                Ok(k) => {
                    h.update(&buf[..k]);
                    n += k;
                    if !require_eof && n >= len {
                        break;
                    }
                }
                Err(e) => panic!("dut recv after {n} bytes: {e:?}"),
            }
        }
        writer.join().unwrap().expect("peer upload");
        assert_eq!(n, len, "dut received byte count");
        let got = h.finalize();
        assert!(
            got == want,
            "SHA-256 at the dut {} != sent {}",
            hex(&got),
            hex(&want)
        );
        dut.close(afd).unwrap();
    });
    eprintln!("peer->dut {} bytes in {:?}", len, t0.elapsed());
    dut.close(l).unwrap();
}

/// 16 MiB each way, SHA-256 checked at the receiving end.
pub fn integrity_16mib(dut: &impl Netdever, peer: &impl Peer) {
    transfer_sha256(dut, peer, 16 << 20, Duration::from_secs(120));
}

/// 8 threads, each with its own socket on the one dut, do echo round trips;
/// all finish within 60 s.
pub fn concurrency_8_threads(dut: &impl Netdever, peer: &impl Peer) {
    const THREADS: usize = 8;
    const ROUNDS: usize = 50;
    let echo = EchoServer::start(peer);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|sc| {
        for t in 0..THREADS {
            let tx = tx.clone();
            let addr = echo.addr;
            sc.spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let fd = connect_tcp(dut, addr);
                    for i in 0..ROUNDS {
                        let msg = pattern((t * 1000 + i) as u64, 1 + (t * 131 + i * 17) % 3000);
                        send_all(dut, fd, &msg, 10 * SEC);
                        let back = recv_exact(dut, fd, msg.len(), 10 * SEC);
                        assert!(back == msg, "thread {t} round {i}: echo differs");
                    }
                    dut.close(fd).unwrap();
                }));
                let _ = tx.send((
                    t,
                    r.map_err(|p| {
                        p.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default()
                    }),
                ));
            });
        }
        drop(tx);
        let end = Instant::now() + 60 * SEC;
        let mut done = HashSet::new();
        let mut failures = Vec::new();
        while done.len() < THREADS {
            let left = end.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((t, r)) => {
                    done.insert(t);
                    if let Err(m) = r {
                        failures.push(format!("thread {t}: {m}"));
                    }
                }
                Err(_) => {
                    let missing: Vec<_> = (0..THREADS).filter(|t| !done.contains(t)).collect();
                    panic!("threads {missing:?} did not finish within 60 s");
                }
            }
        }
        assert!(failures.is_empty(), "failures: {failures:#?}");
    });
}

/// Two threads on the same socket: one sends 1 MiB to the echo server while
/// the other receives it. A backend that holds its lock while a call waits
/// deadlocks here.
pub fn concurrency_same_socket(dut: &impl Netdever, peer: &impl Peer) {
    let echo = EchoServer::start(peer);
    let fd = connect_tcp(dut, echo.addr);
    let data = pattern(5, 1 << 20);
    std::thread::scope(|sc| {
        let data = &data;
        let w = sc.spawn(move || {
            for c in data.chunks(7000) {
                send_all(dut, fd, c, 30 * SEC);
            }
        });
        let back = recv_exact(dut, fd, data.len(), 60 * SEC);
        w.join().unwrap();
        assert!(
            back == *data,
            "data echoed through one socket used by two threads differs"
        );
    });
    dut.close(fd).unwrap();
}

// ---------------------------------------------------------------------------
// DNS
// ---------------------------------------------------------------------------

/// get_host_by_name: literal addresses, names the peer's DNS server knows,
/// unknown names, IPv6.
pub fn dns(dut: &impl Netdever, peer: &impl Peer) {
    if !dut.capabilities().dns {
        eprintln!(
            "note: backend has no DNS (capabilities().dns == false); only typed errors checked"
        );
        let r = dut.get_host_by_name("example.invalid", AddressFamily::Inet);
        assert!(r.is_err(), "no-DNS backend resolved a name: {r:?}");
        return;
    }
    let lit = peer.ip().to_string();
    assert_eq!(
        dut.get_host_by_name(&lit, AddressFamily::Inet),
        Ok(IpAddr::V4(peer.ip())),
        "a literal address resolves to itself"
    );
    expect_err(
        dut.get_host_by_name("localhost.example", AddressFamily::Inet6),
        Error::FamilyNotSupported,
        "Inet6 lookup",
    );
    let Some(info) = peer.dns_server() else {
        eprintln!(
            "note: {} runs no DNS server; checked literal addresses only",
            peer.name()
        );
        return;
    };
    for (name, addr) in &info.records {
        let t0 = Instant::now();
        assert_eq!(
            dut.get_host_by_name(name, AddressFamily::Inet),
            Ok(IpAddr::V4(*addr)),
            "resolving {name} through {}",
            info.server
        );
        assert!(t0.elapsed() < 10 * SEC);
    }
    let t0 = Instant::now();
    expect_err(
        dut.get_host_by_name("no-such-host.conformance.test", AddressFamily::Inet),
        Error::HostUnknown,
        "unknown name",
    );
    assert!(t0.elapsed() < 30 * SEC, "NXDOMAIN took {:?}", t0.elapsed());
}
