//! The W5500 drivers against the emulator.
//!
//! * MACRAW (`phy::w5500::W5500Link`): a `HostStack` over the link on the
//!   memory switch talks to a plain `HostStack`: TCP echo, 1 MiB each way
//!   with SHA-256 and no RX-ring overrun (the emulator drops what the ring
//!   cannot hold, as the chip does; the dut's window is `MAX_TCP_WINDOW`);
//!   malformed length headers, short buffers, a wrong chip, a chip reset
//!   and a pulled cable give typed errors and recover.
//! * Offload (`offload::w5500::W5500Offload`): the chip at 127.0.0.2 talks
//!   to std::net peers on 127.0.0.1: TCP client and server (backlog over
//!   several hardware sockets), UDP, partial reads and writes, 1 MiB each
//!   way, DHCP and DNS against fake servers, garbage from the chip, a
//!   wedged chip, a chip reset, a pulled cable, INTn-driven wake-ups.
#![cfg(all(feature = "std", feature = "full-stack", feature = "w5500"))]

// Shared helpers; this file does not use their network-namespace part.
#[allow(unused_imports)]
mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netdever::offload::w5500::{W5500Config, W5500Offload};
use netdever::phy::memory::{MemoryLink, MemorySwitch};
use netdever::phy::w5500::{W5500Link, MAX_TCP_WINDOW};
use netdever::phy::{Link, LinkError, RxSignal};
use netdever::platform::StdPlatform;
use netdever::stack::host::HostStack;
use netdever::stack::StackConfig;
use netdever::{
    AddressFamily, ConnectParams, Deadline, Error, IpConfig, IpMode, MsgFlags, Netdever, Netlinker,
    Protocol, SockOpt, SockType, Socketer, Sockfd,
};
use netdever_emu::w5500::{W5500Emu, W5500Int, W5500Spi};
use sha2::{Digest, Sha256};

const SEC: Duration = Duration::from_secs(1);
const CHIP_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0x55, 0x01];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0x55, 0x02];

fn dl(dev: &impl Socketer, d: Duration) -> Deadline {
    Deadline::after(dev.now(), d)
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

fn send_all(
    dev: &impl Socketer,
    fd: Sockfd,
    mut data: &[u8],
    limit: Duration,
) -> netdever::Result<()> {
    let d = dl(dev, limit);
    while !data.is_empty() {
        let n = dev.send(fd, data, MsgFlags::NONE, d)?;
        assert!(n > 0 && n <= data.len());
        data = &data[n..];
    }
    Ok(())
}

fn recv_exact(dev: &impl Socketer, fd: Sockfd, n: usize, limit: Duration) -> Vec<u8> {
    let d = dl(dev, limit);
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match dev.recv(fd, &mut out[got..], MsgFlags::NONE, d) {
            Ok(0) => panic!("EOF after {got} of {n} bytes"),
            Ok(k) => got += k,
            Err(e) => panic!("recv after {got} of {n} bytes: {e:?}"),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// MACRAW
// ---------------------------------------------------------------------------

/// Sleep until INTn falls (the link's receive signal).
struct IntSignal(W5500Int);

impl RxSignal for IntSignal {
    fn wait(&self, timeout: Option<Duration>) {
        self.0
            .wait_low(timeout.unwrap_or(Duration::from_millis(10)));
    }
}

fn w5500_link(emu: &W5500Emu, mac: [u8; 6]) -> W5500Link<W5500Spi> {
    W5500Link::new(emu.spi(), mac)
        .expect("W5500Link::new")
        .with_rx_signal(Arc::new(IntSignal(emu.int_pin())))
}

fn host_stack(link: impl Link + Send + 'static, ip: Ipv4Addr, rx_window: usize) -> HostStack {
    let mode = IpMode::Static(IpConfig::new(ip, 24));
    let dev = HostStack::new(
        link,
        StackConfig {
            ip: mode.clone(),
            tcp_rx_buffer: rx_window,
            ..Default::default()
        },
    )
    .expect("HostStack::new");
    dev.net_connect(&ConnectParams {
        ip: mode,
        ..Default::default()
    })
    .expect("net_connect");
    dev
}

/// Two stacks on a memory switch; the dut's port is a W5500 in MACRAW that
/// drops frames its RX ring cannot hold, as the chip does, and the dut's
/// TCP window is what the ring always holds (`MAX_TCP_WINDOW`).
fn macraw_pair() -> (W5500Emu, HostStack, HostStack, MemorySwitch) {
    let switch = MemorySwitch::new();
    let emu = W5500Emu::with_link(switch.port(MAC_A));
    emu.set_macraw_overrun_drops(true);
    let dut = host_stack(
        w5500_link(&emu, MAC_A),
        Ipv4Addr::new(10, 0, 0, 1),
        MAX_TCP_WINDOW,
    );
    let peer = host_stack(
        switch.port(MAC_B),
        Ipv4Addr::new(10, 0, 0, 2),
        StackConfig::default().tcp_rx_buffer,
    );
    (emu, dut, peer, switch)
}

fn tcp_pair(a: &impl Netdever, b: &impl Netdever, b_ip: Ipv4Addr, port: u16) -> (Sockfd, Sockfd) {
    let l = b
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .unwrap();
    b.bind(l, SocketAddr::from(([0, 0, 0, 0], port))).unwrap();
    b.listen(l, 1).unwrap();
    let c = a
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .unwrap();
    a.connect(c, None, SocketAddr::from((b_ip, port)), dl(a, 10 * SEC))
        .expect("connect over the W5500");
    let (s, _) = b.accept(l, dl(b, 10 * SEC)).expect("accept");
    b.close(l).unwrap();
    (c, s)
}

/// Send `data` from (`tx`, `tfd`) to (`rx`, `rfd`) and compare SHA-256.
fn transfer(tx: &impl Socketer, tfd: Sockfd, rx: &impl Socketer, rfd: Sockfd, data: &[u8]) {
    let want = Sha256::digest(data);
    std::thread::scope(|sc| {
        let h = sc.spawn(|| {
            let d = dl(rx, 60 * SEC);
            let mut h = Sha256::new();
            let mut n = 0usize;
            let mut buf = vec![0u8; 8192];
            while n < data.len() {
                match rx.recv(rfd, &mut buf, MsgFlags::NONE, d) {
                    Ok(0) => break,
                    Ok(k) => {
                        h.update(&buf[..k]);
                        n += k;
                    }
                    Err(e) => panic!("recv after {n} bytes: {e:?}"),
                }
            }
            (n, h.finalize())
        });
        send_all(tx, tfd, data, 60 * SEC).expect("send_all");
        let (n, got) = h.join().unwrap();
        assert_eq!(n, data.len());
        assert!(got == want, "SHA-256 differs");
    });
}

#[test]
fn macraw_full_stack_echo_and_1mib_each_way() {
    support::with_timeout("macraw_full_stack", 120 * SEC, || {
        let (emu, dut, peer, _sw) = macraw_pair();
        let (c, s) = tcp_pair(&dut, &peer, Ipv4Addr::new(10, 0, 0, 2), 7000);
        // Echo a few messages back and forth.
        for i in 0..20u64 {
            let msg = pattern(i, 1 + (i as usize * 97) % 3000);
            send_all(&dut, c, &msg, 10 * SEC).unwrap();
            let got = recv_exact(&peer, s, msg.len(), 10 * SEC);
            send_all(&peer, s, &got, 10 * SEC).unwrap();
            assert_eq!(recv_exact(&dut, c, msg.len(), 10 * SEC), msg);
        }
        let data = pattern(99, 1 << 20);
        let t0 = Instant::now();
        transfer(&dut, c, &peer, s, &data);
        eprintln!("MACRAW dut->peer 1 MiB in {:?}", t0.elapsed());
        let t0 = Instant::now();
        transfer(&peer, s, &dut, c, &data);
        eprintln!("MACRAW peer->dut 1 MiB in {:?}", t0.elapsed());
        let bus = emu.bus().snapshot();
        eprintln!(
            "bus: {} bytes, {} payload ({:.1}%), {} transactions",
            bus.bytes,
            bus.payload,
            100.0 * bus.efficiency(),
            bus.transactions
        );
        assert!(bus.payload >= 2 << 20, "every frame crossed the bus");
        let stats = emu.stats();
        assert!(stats.frames_rx > 500 && stats.frames_tx > 500, "{stats:?}");
        // One connection whose window the ring always holds: however late
        // the driver drains the ring, no frame is lost to an overrun.
        assert_eq!(stats.frames_overrun, 0, "{stats:?}");
        dut.close(c).unwrap();
        peer.close(s).unwrap();
    });
}

fn frame(dst: [u8; 6], src: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![seed; len];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x88, 0xB5]);
    f
}

fn recv_frame(link: &mut impl Link, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
    let end = Instant::now() + 5 * SEC;
    loop {
        match link.receive(buf) {
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(1)),
            r => return r,
        }
    }
}

#[test]
fn macraw_malformed_headers_and_short_buffers_recover() {
    let (a, mut peer) = MemoryLink::pair();
    let emu = W5500Emu::with_link(a);
    let mut link = W5500Link::new(emu.spi(), MAC_A).unwrap();
    let mut buf = vec![0u8; 1600];
    // A sane frame first.
    peer.transmit(&frame(MAC_A, MAC_B, 100, 1)).unwrap();
    assert_eq!(recv_frame(&mut link, &mut buf), Ok(Some(100)));
    // Length headers that cannot be right: too long, too short, past RSR.
    for bad in [0xFFFFu16, 5, 1000] {
        emu.override_next_rx_len(0, bad);
        peer.transmit(&frame(MAC_A, MAC_B, 60, 2)).unwrap();
        assert_eq!(
            recv_frame(&mut link, &mut buf),
            Err(LinkError::Device),
            "header {bad:#06x} is a typed error"
        );
        // The ring was reset: the next frame is read correctly.
        let f = frame(MAC_A, MAC_B, 200, 3);
        peer.transmit(&f).unwrap();
        assert_eq!(recv_frame(&mut link, &mut buf), Ok(Some(200)));
        assert_eq!(&buf[..200], &f[..]);
    }
    assert_eq!(link.stats().rx_malformed, 3);
    // A frame longer than the caller's buffer is dropped with TooLong.
    peer.transmit(&frame(MAC_A, MAC_B, 1000, 4)).unwrap();
    peer.transmit(&frame(MAC_A, MAC_B, 64, 5)).unwrap();
    let mut small = [0u8; 500];
    assert_eq!(recv_frame(&mut link, &mut small), Err(LinkError::TooLong));
    assert_eq!(recv_frame(&mut link, &mut small), Ok(Some(64)));
    assert_eq!(small[20], 5);
    // Transmit checks.
    assert_eq!(link.transmit(&[0u8; 2000]), Err(LinkError::TooLong));
    link.transmit(&frame(MAC_B, MAC_A, 300, 6)).unwrap();
    assert_eq!(recv_frame(&mut peer, &mut buf), Ok(Some(300)));
}

#[test]
fn macraw_wrong_or_missing_chip_is_a_device_error() {
    let emu = W5500Emu::new();
    emu.set_version(0x03);
    assert_eq!(
        W5500Link::new(emu.spi(), MAC_A).err(),
        Some(LinkError::Device),
        "VERSIONR 0x03"
    );
    emu.set_version(0x04);
    emu.set_miso_stuck(Some(0xFF));
    assert_eq!(
        W5500Link::new(emu.spi(), MAC_A).err(),
        Some(LinkError::Device),
        "a dead bus"
    );
    emu.set_miso_stuck(None);
    emu.set_cr_stuck(true);
    assert_eq!(
        W5500Link::new(emu.spi(), MAC_A).err(),
        Some(LinkError::Device),
        "a chip that never accepts commands"
    );
    emu.set_cr_stuck(false);
    assert!(W5500Link::new(emu.spi(), MAC_A).is_ok());
}

#[test]
fn macraw_chip_reset_is_noticed_and_recovered() {
    let (a, mut peer) = MemoryLink::pair();
    let emu = W5500Emu::with_link(a);
    let mut link = W5500Link::new(emu.spi(), MAC_A).unwrap();
    let mut buf = vec![0u8; 1600];
    assert!(link.link_up());
    emu.hard_reset();
    // The next link check finds socket 0 closed and brings it back.
    assert!(link.link_up());
    assert_eq!(link.stats().reinits, 1);
    assert_eq!(emu.peek(0, 0x0009), MAC_A[0], "SHAR programmed again");
    peer.transmit(&frame(MAC_A, MAC_B, 128, 7)).unwrap();
    assert_eq!(recv_frame(&mut link, &mut buf), Ok(Some(128)));
    link.transmit(&frame(MAC_B, MAC_A, 128, 8)).unwrap();
    assert_eq!(recv_frame(&mut peer, &mut buf), Ok(Some(128)));
}

#[test]
fn macraw_link_down_mid_transfer_is_a_typed_error() {
    support::with_timeout("macraw_link_down", 60 * SEC, || {
        let (emu, dut, peer, _sw) = macraw_pair();
        let (c, s) = tcp_pair(&dut, &peer, Ipv4Addr::new(10, 0, 0, 2), 7001);
        let data = pattern(5, 4 << 20);
        let r = std::thread::scope(|sc| {
            let (p, emu) = (&peer, &emu);
            sc.spawn(move || {
                let mut buf = vec![0u8; 8192];
                let mut n = 0;
                while let Ok(k) = p.recv(s, &mut buf, MsgFlags::NONE, dl(p, 3 * SEC)) {
                    if k == 0 {
                        break;
                    }
                    n += k;
                    if n > 64 * 1024 {
                        emu.set_link_up(false);
                    }
                }
            });
            send_all(&dut, c, &data, 3 * SEC)
        });
        assert_eq!(r, Err(Error::Timeout), "sending into a dead link");
        assert!(!dut.with_link(|l| l.link_up()), "PHYCFGR.LNK reads 0");
        assert_eq!(
            dut.with_link(|l| l.transmit(&frame(MAC_B, MAC_A, 60, 0))),
            Err(LinkError::Down)
        );
        emu.set_link_up(true);
        assert!(dut.with_link(|l| l.link_up()));
    });
}

// ---------------------------------------------------------------------------
// Offload
// ---------------------------------------------------------------------------

type Offload = W5500Offload<W5500Spi, StdPlatform>;

fn offload_with(emu: &W5500Emu, config: W5500Config) -> Arc<Offload> {
    let dev = W5500Offload::new(emu.spi(), StdPlatform::new(), config).expect("W5500Offload::new");
    dev.set_addr(IpConfig::new(CHIP_IP, 8)).expect("set_addr");
    Arc::new(dev)
}

fn offload() -> (W5500Emu, Arc<Offload>) {
    let emu = W5500Emu::new();
    let dev = offload_with(&emu, W5500Config::default());
    (emu, dev)
}

/// Calls `on_interrupt` whenever INTn is low (host glue); stops on drop.
struct IrqGlue {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl IrqGlue {
    fn start(emu: &W5500Emu, dev: &Arc<Offload>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (st, pin, dev) = (stop.clone(), emu.int_pin(), dev.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if pin.wait_low(Duration::from_millis(20)) {
                    dev.on_interrupt();
                }
            }
        });
        IrqGlue {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for IrqGlue {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn echo_server() -> (SocketAddr, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(30 * SEC)).unwrap();
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    (addr, h)
}

fn tcp(dev: &impl Socketer) -> Sockfd {
    dev.socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .unwrap()
}

fn udp(dev: &impl Socketer) -> Sockfd {
    dev.socket(AddressFamily::Inet, SockType::Dgram, Protocol::Udp)
        .unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind((CHIP_IP, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn offload_tcp_client_echo_and_partial_transfers() {
    support::with_timeout("offload_tcp_client", 60 * SEC, || {
        let (_emu, dev) = offload();
        let (addr, h) = echo_server();
        let fd = tcp(&*dev);
        dev.connect(fd, None, addr, dl(&*dev, 10 * SEC))
            .expect("connect");
        assert_eq!(dev.peer_addr(fd), Ok(addr));
        let local = dev.local_addr(fd).unwrap();
        assert_eq!(local.ip(), CHIP_IP);
        assert_ne!(local.port(), 0);
        // Partial send: one call queues at most what fits the 2 KB TX buffer.
        let big = pattern(1, 10_000);
        let n = dev
            .send(fd, &big, MsgFlags::NONE, dl(&*dev, 5 * SEC))
            .unwrap();
        assert!(n > 0 && n <= 2048, "partial send of {n} bytes");
        send_all(&*dev, fd, &big[n..], 10 * SEC).unwrap();
        // Partial reads: a short buffer gets at most its size.
        let mut got = Vec::new();
        let mut small = [0u8; 100];
        while got.len() < big.len() {
            let k = dev
                .recv(fd, &mut small, MsgFlags::NONE, dl(&*dev, 5 * SEC))
                .unwrap();
            assert!(k > 0 && k <= 100);
            got.extend_from_slice(&small[..k]);
        }
        assert!(got == big, "echo differs");
        // Peek leaves the data in place.
        send_all(&*dev, fd, b"peekaboo", 5 * SEC).unwrap();
        let mut p = [0u8; 8];
        let end = Instant::now() + 5 * SEC;
        let mut n = 0;
        while n < 8 && Instant::now() < end {
            n = dev
                .recv(fd, &mut p, MsgFlags::PEEK, dl(&*dev, 5 * SEC))
                .unwrap();
        }
        assert_eq!(&p, b"peekaboo");
        assert_eq!(recv_exact(&*dev, fd, 8, 5 * SEC), b"peekaboo");
        assert_eq!(
            dev.recv(fd, &mut [], MsgFlags::NONE, dl(&*dev, SEC)),
            Err(Error::InvalidArgument)
        );
        dev.shutdown(fd, netdever::Shutdown::Write).unwrap();
        // The echo server sees EOF, closes; we see EOF (Ok(0)), twice.
        let mut b = [0u8; 4];
        assert_eq!(
            dev.recv(fd, &mut b, MsgFlags::NONE, dl(&*dev, 5 * SEC)),
            Ok(0)
        );
        assert_eq!(
            dev.recv(fd, &mut b, MsgFlags::NONE, dl(&*dev, 5 * SEC)),
            Ok(0)
        );
        assert_eq!(
            dev.send(fd, b"x", MsgFlags::NONE, dl(&*dev, SEC)),
            Err(Error::BrokenPipe)
        );
        dev.close(fd).unwrap();
        h.join().unwrap();
    });
}

#[test]
fn offload_tcp_refused_timeout_and_reset() {
    support::with_timeout("offload_tcp_errors", 60 * SEC, || {
        let (emu, dev) = offload();
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let fd = tcp(&*dev);
        assert_eq!(
            dev.connect(fd, None, closed, dl(&*dev, 5 * SEC)),
            Err(Error::ConnectionRefused)
        );
        dev.close(fd).unwrap();
        emu.add_silent_host(Ipv4Addr::new(127, 0, 0, 99));
        let fd = tcp(&*dev);
        let t0 = Instant::now();
        assert_eq!(
            dev.connect(
                fd,
                None,
                "127.0.0.99:80".parse().unwrap(),
                dl(&*dev, Duration::from_millis(300))
            ),
            Err(Error::Timeout)
        );
        assert!(t0.elapsed() < 3 * SEC);
        dev.close(fd).unwrap();
        // The peer resets the connection.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = tcp(&*dev);
        dev.connect(fd, None, l.local_addr().unwrap(), dl(&*dev, 5 * SEC))
            .unwrap();
        let (s, _) = l.accept().unwrap();
        // Closing with unread data makes the kernel send a RST.
        send_all(&*dev, fd, b"unread", 5 * SEC).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        drop(s);
        let mut b = [0u8; 8];
        assert_eq!(
            dev.recv(fd, &mut b, MsgFlags::NONE, dl(&*dev, 5 * SEC)),
            Err(Error::ConnectionReset)
        );
        dev.close(fd).unwrap();
        // Linger(0) on our side resets the peer.
        let fd = tcp(&*dev);
        dev.connect(fd, None, l.local_addr().unwrap(), dl(&*dev, 5 * SEC))
            .unwrap();
        let (mut s, _) = l.accept().unwrap();
        dev.set_sock_opt(fd, SockOpt::Linger(Some(Duration::ZERO)))
            .unwrap();
        dev.close(fd).unwrap();
        s.set_read_timeout(Some(5 * SEC)).unwrap();
        let e = s.read(&mut b).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
    });
}

#[test]
fn offload_tcp_server_backlog_spreads_over_hardware_sockets() {
    support::with_timeout("offload_tcp_server", 60 * SEC, || {
        let (emu, dev) = offload();
        let port = free_port();
        let l = tcp(&*dev);
        dev.bind(l, SocketAddr::from(([0, 0, 0, 0], port))).unwrap();
        dev.listen(l, 3).unwrap();
        assert_eq!(dev.local_addr(l).unwrap().port(), port);
        // Three connections complete before any accept: one socket each.
        let target = SocketAddr::from((CHIP_IP, port));
        let mut clients: Vec<TcpStream> = (0..3)
            .map(|i| {
                let mut c = TcpStream::connect_timeout(&target, 5 * SEC).unwrap();
                c.write_all(&[i as u8; 100]).unwrap();
                c
            })
            .collect();
        let mut seen = Vec::new();
        for _ in 0..3 {
            let (a, from) = dev.accept(l, dl(&*dev, 5 * SEC)).expect("accept");
            let data = recv_exact(&*dev, a, 100, 5 * SEC);
            let i = data[0] as usize;
            assert!(data.iter().all(|&b| b as usize == i));
            assert_eq!(Some(from), clients[i].local_addr().ok());
            assert_eq!(dev.local_addr(a), Ok(target));
            send_all(&*dev, a, &[b'r', i as u8], 5 * SEC).unwrap();
            seen.push(a);
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let mut r = [0u8; 2];
            c.set_read_timeout(Some(5 * SEC)).unwrap();
            c.read_exact(&mut r).unwrap();
            assert_eq!(r, [b'r', i as u8]);
        }
        assert_eq!(
            dev.accept(l, dl(&*dev, Duration::from_millis(200))),
            Err(Error::Timeout)
        );
        // accept re-armed the backlog: a fourth client gets in too.
        let _c4 = TcpStream::connect_timeout(&target, 5 * SEC).unwrap();
        let (a4, _) = dev.accept(l, dl(&*dev, 5 * SEC)).expect("accept #4");
        // 3 accepted + 1 + listener backlog: hardware sockets run out before fds.
        let stats = emu.stats();
        assert!(stats.tcp_connections >= 4);
        for a in seen {
            dev.close(a).unwrap();
        }
        dev.close(a4).unwrap();
        dev.close(l).unwrap();
    });
}

#[test]
fn offload_udp_send_recv_truncation_and_filtering() {
    support::with_timeout("offload_udp", 30 * SEC, || {
        let (_emu, dev) = offload();
        let port = free_port();
        let fd = udp(&*dev);
        dev.bind(fd, SocketAddr::from(([0, 0, 0, 0], port)))
            .unwrap();
        let me = SocketAddr::from((CHIP_IP, port));
        let p = UdpSocket::bind("127.0.0.1:0").unwrap();
        p.set_read_timeout(Some(5 * SEC)).unwrap();
        p.send_to(b"query", me).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = dev
            .recv_from(fd, &mut buf, MsgFlags::NONE, dl(&*dev, 5 * SEC))
            .unwrap();
        assert_eq!(&buf[..n], b"query");
        assert_eq!(from, p.local_addr().unwrap());
        assert_eq!(
            dev.send_to(fd, b"answer", MsgFlags::NONE, from, dl(&*dev, 5 * SEC)),
            Ok(6)
        );
        let mut pb = [0u8; 64];
        let (n, src) = p.recv_from(&mut pb).unwrap();
        assert_eq!((&pb[..n], src), (&b"answer"[..], me));
        // Truncation drops the rest of the datagram.
        p.send_to(&pattern(3, 300), me).unwrap();
        p.send_to(b"next", me).unwrap();
        let mut small = [0u8; 10];
        let (n, _) = dev
            .recv_from(fd, &mut small, MsgFlags::NONE, dl(&*dev, 5 * SEC))
            .unwrap();
        assert_eq!(&small[..n], &pattern(3, 300)[..10]);
        let (n, _) = dev
            .recv_from(fd, &mut buf, MsgFlags::NONE, dl(&*dev, 5 * SEC))
            .unwrap();
        assert_eq!(&buf[..n], b"next");
        // Sizes: the chip's UDP MTU.
        assert_eq!(
            dev.send_to(fd, &[0u8; 1472], MsgFlags::NONE, from, dl(&*dev, 5 * SEC)),
            Ok(1472)
        );
        assert_eq!(p.recv_from(&mut vec![0u8; 2000]).unwrap().0, 1472);
        assert_eq!(
            dev.send_to(fd, &[0u8; 1473], MsgFlags::NONE, from, dl(&*dev, 5 * SEC)),
            Err(Error::MessageTooLong)
        );
        dev.close(fd).unwrap();
        // Connected UDP filters other sources.
        let q = UdpSocket::bind("127.0.0.1:0").unwrap();
        let c = udp(&*dev);
        dev.connect(c, None, p.local_addr().unwrap(), dl(&*dev, SEC))
            .unwrap();
        dev.send(c, b"ping", MsgFlags::NONE, dl(&*dev, SEC))
            .unwrap();
        let (n, src) = p.recv_from(&mut pb).unwrap();
        assert_eq!(&pb[..n], b"ping");
        q.send_to(b"intruder", src).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        p.send_to(b"pong", src).unwrap();
        let n = dev
            .recv(c, &mut buf, MsgFlags::NONE, dl(&*dev, 5 * SEC))
            .unwrap();
        assert_eq!(&buf[..n], b"pong");
        dev.close(c).unwrap();
    });
}

#[test]
fn offload_1mib_each_way_sha256() {
    support::with_timeout("offload_1mib", 120 * SEC, || {
        let (emu, dev) = offload();
        let data = pattern(77, 1 << 20);
        let want = Sha256::digest(&data);
        // dut -> host
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut v = Vec::new();
            s.set_read_timeout(Some(60 * SEC)).unwrap();
            s.read_to_end(&mut v).unwrap();
            v
        });
        let fd = tcp(&*dev);
        dev.connect(fd, None, addr, dl(&*dev, 5 * SEC)).unwrap();
        let before = emu.bus().snapshot();
        let t0 = Instant::now();
        send_all(&*dev, fd, &data, 60 * SEC).unwrap();
        dev.close(fd).unwrap();
        let got = reader.join().unwrap();
        let bus = emu.bus().snapshot().since(&before);
        eprintln!(
            "offload dut->host 1 MiB in {:?}; bus {} bytes, efficiency {:.1}%",
            t0.elapsed(),
            bus.bytes,
            100.0 * bus.efficiency()
        );
        assert_eq!(got.len(), data.len());
        assert!(Sha256::digest(&got) == want);
        // host -> dut (dut is the server)
        let port = free_port();
        let l = tcp(&*dev);
        dev.bind(l, SocketAddr::from(([0, 0, 0, 0], port))).unwrap();
        dev.listen(l, 1).unwrap();
        let d2 = data.clone();
        let writer = std::thread::spawn(move || {
            let mut s = TcpStream::connect((CHIP_IP, port)).unwrap();
            s.write_all(&d2).unwrap();
        });
        let (a, _) = dev.accept(l, dl(&*dev, 5 * SEC)).unwrap();
        let mut h = Sha256::new();
        let mut n = 0;
        let mut buf = vec![0u8; 4096];
        loop {
            match dev.recv(a, &mut buf, MsgFlags::NONE, dl(&*dev, 60 * SEC)) {
                Ok(0) => break,
                Ok(k) => {
                    h.update(&buf[..k]);
                    n += k;
                }
                Err(e) => panic!("recv after {n}: {e:?}"),
            }
        }
        writer.join().unwrap();
        assert_eq!(n, data.len());
        assert!(h.finalize() == want);
        dev.close(a).unwrap();
        dev.close(l).unwrap();
    });
}

#[test]
fn offload_garbage_from_the_chip_is_a_typed_error() {
    support::with_timeout("offload_garbage", 30 * SEC, || {
        // Wrong chip, dead bus, wedged chip at probe time.
        let emu = W5500Emu::new();
        emu.set_version(0x05);
        assert_eq!(
            W5500Offload::new(emu.spi(), StdPlatform::new(), W5500Config::default()).err(),
            Some(Error::Device)
        );
        emu.set_version(0x04);
        emu.set_miso_stuck(Some(0xFF));
        assert_eq!(
            W5500Offload::new(emu.spi(), StdPlatform::new(), W5500Config::default()).err(),
            Some(Error::Device)
        );
        emu.set_miso_stuck(None);

        let (emu, dev) = offload();
        let (addr, h) = echo_server();
        let fd = tcp(&*dev);
        dev.connect(fd, None, addr, dl(&*dev, 5 * SEC)).unwrap();
        // All ones on MISO: status 0xFF and sizes 0xFFFF are not believed.
        emu.set_miso_stuck(Some(0xFF));
        let mut b = [0u8; 16];
        assert_eq!(
            dev.recv(fd, &mut b, MsgFlags::DONTWAIT, Deadline::Never),
            Err(Error::Device)
        );
        assert_eq!(
            dev.send(fd, b"x", MsgFlags::NONE, dl(&*dev, SEC)),
            Err(Error::Device)
        );
        emu.set_miso_stuck(None);
        // The connection still works afterwards.
        send_all(&*dev, fd, b"still here", 5 * SEC).unwrap();
        assert_eq!(recv_exact(&*dev, fd, 10, 5 * SEC), b"still here");
        dev.close(fd).unwrap();
        h.join().unwrap();
        // A UDP header whose length runs past what was received.
        let port = free_port();
        let u = udp(&*dev);
        dev.bind(u, SocketAddr::from(([0, 0, 0, 0], port))).unwrap();
        for sn in 0..8 {
            emu.override_next_rx_len(sn, 1500);
        }
        let p = UdpSocket::bind("127.0.0.1:0").unwrap();
        p.send_to(b"short", (CHIP_IP, port)).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(
            dev.recv_from(u, &mut buf, MsgFlags::NONE, dl(&*dev, 5 * SEC)),
            Err(Error::Device)
        );
        p.send_to(b"fine", (CHIP_IP, port)).unwrap();
        let (n, _) = dev
            .recv_from(u, &mut buf, MsgFlags::NONE, dl(&*dev, 5 * SEC))
            .expect("the socket was reopened and works");
        assert_eq!(&buf[..n], b"fine");
        assert!(dev.stats().malformed >= 3);
        dev.close(u).unwrap();
        // A wedged chip: commands never complete -> Device, no hang.
        emu.set_cr_stuck(true);
        let fd = tcp(&*dev);
        let t0 = Instant::now();
        assert_eq!(
            dev.connect(fd, None, addr, dl(&*dev, 5 * SEC)),
            Err(Error::Device)
        );
        assert!(t0.elapsed() < 5 * SEC);
        emu.set_cr_stuck(false);
        dev.close(fd).unwrap();
    });
}

#[test]
fn offload_chip_reset_and_recovery() {
    support::with_timeout("offload_reset", 30 * SEC, || {
        let (emu, dev) = offload();
        let (addr, h) = echo_server();
        let fd = tcp(&*dev);
        dev.connect(fd, None, addr, dl(&*dev, 5 * SEC)).unwrap();
        let port = free_port();
        let u = udp(&*dev);
        dev.bind(u, SocketAddr::from(([0, 0, 0, 0], port))).unwrap();
        emu.hard_reset();
        std::thread::sleep(Duration::from_millis(60));
        let mut b = [0u8; 8];
        assert_eq!(
            dev.recv(fd, &mut b, MsgFlags::NONE, dl(&*dev, 2 * SEC)),
            Err(Error::ConnectionAborted),
            "the connection died with the chip"
        );
        assert_eq!(dev.stats().recoveries, 1);
        assert_eq!(emu.peek(0, 0x000F), 127, "SIPR programmed again");
        // The UDP socket was reopened on its port.
        let p = UdpSocket::bind("127.0.0.1:0").unwrap();
        p.send_to(b"after reset", (CHIP_IP, port)).unwrap();
        let (n, _) = dev
            .recv_from(u, &mut [0u8; 32][..], MsgFlags::NONE, dl(&*dev, 5 * SEC))
            .expect("UDP after the reset");
        assert_eq!(n, 11);
        dev.close(fd).unwrap();
        dev.close(u).unwrap();
        h.join().unwrap();
        // New connections work.
        let (addr, h) = echo_server();
        let fd = tcp(&*dev);
        dev.connect(fd, None, addr, dl(&*dev, 5 * SEC)).unwrap();
        send_all(&*dev, fd, b"ok", 5 * SEC).unwrap();
        assert_eq!(recv_exact(&*dev, fd, 2, 5 * SEC), b"ok");
        dev.close(fd).unwrap();
        h.join().unwrap();
        // Explicit reset too.
        dev.reset().unwrap();
        assert_eq!(dev.stats().recoveries, 2);
    });
}

#[test]
fn offload_link_down_mid_transfer_is_a_typed_error() {
    support::with_timeout("offload_link_down", 30 * SEC, || {
        let (emu, dev) = offload();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = tcp(&*dev);
        dev.connect(fd, None, l.local_addr().unwrap(), dl(&*dev, 5 * SEC))
            .unwrap();
        let (mut s, _) = l.accept().unwrap();
        let data = pattern(9, 256 * 1024);
        let (r, _s) = std::thread::scope(|sc| {
            let e = &emu;
            let h = sc.spawn(move || {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                s.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                while let Ok(k) = s.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    n += k;
                    if n > 32 * 1024 {
                        e.set_link_up(false);
                    }
                }
                s // keep the connection open
            });
            let r = send_all(&*dev, fd, &data, 10 * SEC);
            (r, h.join().unwrap())
        });
        assert_eq!(r, Err(Error::NetworkDown));
        let mut b = [0u8; 4];
        assert_eq!(
            dev.recv(fd, &mut b, MsgFlags::NONE, dl(&*dev, 2 * SEC)),
            Err(Error::NetworkDown)
        );
        emu.set_link_up(true);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(
            dev.recv(fd, &mut b, MsgFlags::DONTWAIT, Deadline::Never),
            Err(Error::WouldBlock),
            "usable again with the cable back"
        );
        dev.close(fd).unwrap();
    });
}

#[test]
fn offload_interrupts_wake_blocked_calls() {
    support::with_timeout("offload_irq", 30 * SEC, || {
        let emu = W5500Emu::new();
        let config = W5500Config {
            interrupts: true,
            // Only INTn can wake a waiter quickly: the fallback is slow.
            interrupt_fallback: Duration::from_secs(3),
            ..Default::default()
        };
        let dev = offload_with(&emu, config);
        let _glue = IrqGlue::start(&emu, &dev);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = tcp(&*dev);
        let t0 = Instant::now();
        dev.connect(fd, None, l.local_addr().unwrap(), dl(&*dev, 5 * SEC))
            .unwrap();
        assert!(t0.elapsed() < 2 * SEC, "connect woke by INTn");
        let (mut s, _) = l.accept().unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            s.write_all(b"ring").unwrap();
            std::thread::sleep(SEC);
        });
        let t0 = Instant::now();
        let mut b = [0u8; 8];
        let n = dev
            .recv(fd, &mut b, MsgFlags::NONE, dl(&*dev, 10 * SEC))
            .unwrap();
        let el = t0.elapsed();
        assert_eq!(&b[..n], b"ring");
        assert!(el < Duration::from_millis(1500), "woke after {el:?}");
        assert!(
            !emu.int_low() || wait_high(&emu),
            "INTn released after handling"
        );
        t.join().unwrap();
        dev.close(fd).unwrap();
    });
}

fn wait_high(emu: &W5500Emu) -> bool {
    support::wait_until(2 * SEC, Duration::from_millis(5), || !emu.int_low())
}

#[test]
fn offload_socket_limits() {
    let (_emu, dev) = offload();
    assert_eq!(dev.capabilities().max_sockets, 8);
    let fds: Vec<_> = (0..8).map(|_| udp(&*dev)).collect();
    assert_eq!(
        dev.socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp),
        Err(Error::NoMoreSockets)
    );
    for f in &fds {
        dev.close(*f).unwrap();
    }
    // A listener's backlog uses hardware sockets; when they run out,
    // connect says so.
    let l = tcp(&*dev);
    dev.bind(l, SocketAddr::from(([0, 0, 0, 0], free_port())))
        .unwrap();
    dev.listen(l, 8).unwrap();
    let c = tcp(&*dev);
    assert_eq!(
        dev.connect(c, None, "127.0.0.1:9".parse().unwrap(), dl(&*dev, SEC)),
        Err(Error::NoMoreSockets)
    );
    dev.close(l).unwrap();
    dev.close(c).unwrap();
    assert_eq!(
        dev.socket(AddressFamily::Inet, SockType::Stream, Protocol::Tls),
        Err(Error::ProtocolNotSupported)
    );
}

// ---------------------------------------------------------------------------
// DHCP and DNS
// ---------------------------------------------------------------------------

/// A DHCP server that answers DISCOVER with OFFER and REQUEST with ACK
/// (or with junk when `garbage`).
fn fake_dhcp(
    offer: Ipv4Addr,
    dns: Ipv4Addr,
    garbage: bool,
) -> (SocketAddrV4, Arc<AtomicBool>, JoinHandle<u32>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = match s.local_addr().unwrap() {
        SocketAddr::V4(a) => a,
        _ => unreachable!(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let h = std::thread::spawn(move || {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buf = [0u8; 1500];
        let mut answered = 0;
        while !st.load(Ordering::Relaxed) {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                continue;
            };
            let q = &buf[..n];
            if n < 240 || q[0] != 1 {
                continue;
            }
            let kind = q[240..]
                .windows(3)
                .find(|w| w[0] == 53 && w[1] == 1)
                .map(|w| w[2]);
            let reply_kind = match kind {
                Some(1) => 2,
                Some(3) => 5,
                _ => continue,
            };
            let mut r = vec![0u8; 240];
            if garbage {
                r = pattern(answered as u64, 300);
                r[0] = 2;
            } else {
                r[0] = 2;
                r[1] = 1;
                r[2] = 6;
                r[4..8].copy_from_slice(&q[4..8]);
                r[10] = 0x80;
                r[16..20].copy_from_slice(&offer.octets());
                r[28..34].copy_from_slice(&q[28..34]);
                r[236..240].copy_from_slice(&[99, 130, 83, 99]);
                r.extend_from_slice(&[53, 1, reply_kind]);
                r.extend_from_slice(&[54, 4, 127, 0, 0, 1]);
                r.extend_from_slice(&[1, 4, 255, 0, 0, 0]);
                r.extend_from_slice(&[3, 4, 127, 0, 0, 1]);
                r.extend_from_slice(&[6, 4]);
                r.extend_from_slice(&dns.octets());
                r.extend_from_slice(&[51, 4, 0, 0, 0x0E, 0x10]);
                r.push(255);
            }
            let _ = s.send_to(&r, from);
            answered += 1;
        }
        answered
    });
    (addr, stop, h)
}

/// A DNS server knowing `peer.test` = 127.0.0.7; `junk.test` gets garbage
/// with the right id.
fn fake_dns() -> (SocketAddrV4, Arc<AtomicBool>, JoinHandle<()>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = match s.local_addr().unwrap() {
        SocketAddr::V4(a) => a,
        _ => unreachable!(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let h = std::thread::spawn(move || {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buf = [0u8; 512];
        while !st.load(Ordering::Relaxed) {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                continue;
            };
            let q = &buf[..n];
            if n < 17 {
                continue;
            }
            // Name from the question (uncompressed labels).
            let mut i = 12;
            let mut labels = Vec::new();
            while i < n && q[i] != 0 {
                let l = q[i] as usize;
                labels.push(String::from_utf8_lossy(&q[i + 1..i + 1 + l]).to_string());
                i += 1 + l;
            }
            let qend = i + 5;
            let name = labels.join(".");
            let mut r = q[..qend].to_vec();
            r[2] = 0x81;
            match name.as_str() {
                "peer.test" => {
                    r[3] = 0x80;
                    r[7] = 1;
                    r.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 7]);
                }
                "junk.test" => {
                    r.truncate(4);
                    r.extend_from_slice(&[0, 1, 0, 9, 0xFF, 0xFF]);
                }
                _ => r[3] = 0x83, // NXDOMAIN
            }
            let _ = s.send_to(&r, from);
        }
    });
    (addr, stop, h)
}

#[test]
fn offload_dhcp_then_dns() {
    support::with_timeout("offload_dhcp_dns", 60 * SEC, || {
        let emu = W5500Emu::new();
        let dev = W5500Offload::new(emu.spi(), StdPlatform::new(), W5500Config::default()).unwrap();
        assert_eq!(dev.addr(), Err(Error::NetworkDown));
        let dns_ip = Ipv4Addr::new(10, 53, 0, 1);
        let (dhcp_addr, dhcp_stop, dhcp_h) = fake_dhcp(CHIP_IP, dns_ip, false);
        let (dns_addr, dns_stop, dns_h) = fake_dns();
        // The chip's broadcasts and DNS queries go to the fake servers.
        emu.redirect_udp(SocketAddrV4::new(Ipv4Addr::BROADCAST, 67), dhcp_addr);
        emu.redirect_udp(SocketAddrV4::new(dns_ip, 53), dns_addr);
        dev.net_connect(&ConnectParams {
            ip: IpMode::Dhcp,
            connect_timeout: 10 * SEC,
            hostname: "w5500-test",
            ..Default::default()
        })
        .expect("DHCP lease");
        assert_eq!(dev.addr(), Ok(CHIP_IP.into()));
        let cfg = dev.ip_config().unwrap();
        assert_eq!(cfg.prefix_len, 8);
        assert_eq!(cfg.gateway, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(cfg.dns.as_slice(), &[dns_ip]);
        assert_eq!(
            dev.capabilities().max_sockets,
            7,
            "one socket reserved for DHCP"
        );
        assert_eq!(dev.stats().leases, 1);
        // DNS.
        assert_eq!(
            dev.get_host_by_name("peer.test", AddressFamily::Inet),
            Ok(Ipv4Addr::new(127, 0, 0, 7).into())
        );
        assert_eq!(
            dev.get_host_by_name("nope.test", AddressFamily::Inet),
            Err(Error::HostUnknown)
        );
        assert_eq!(
            dev.get_host_by_name("junk.test", AddressFamily::Inet),
            Err(Error::HostUnknown)
        );
        assert_eq!(
            dev.get_host_by_name("127.0.0.9", AddressFamily::Inet),
            Ok(Ipv4Addr::new(127, 0, 0, 9).into())
        );
        assert_eq!(
            dev.get_host_by_name("peer.test", AddressFamily::Inet6),
            Err(Error::FamilyNotSupported)
        );
        // Sockets work on the leased address.
        let (addr, h) = echo_server();
        let fd = tcp(&dev);
        dev.connect(fd, None, addr, dl(&dev, 5 * SEC)).unwrap();
        assert_eq!(dev.local_addr(fd).unwrap().ip(), CHIP_IP);
        dev.close(fd).unwrap();
        h.join().unwrap();
        for s in [&dhcp_stop, &dns_stop] {
            s.store(true, Ordering::Relaxed);
        }
        assert!(dhcp_h.join().unwrap() >= 2, "OFFER and ACK were sent");
        dns_h.join().unwrap();
    });
}

#[test]
fn offload_dhcp_garbage_fails_with_connect_failed() {
    support::with_timeout("offload_dhcp_garbage", 30 * SEC, || {
        let emu = W5500Emu::new();
        let dev = W5500Offload::new(emu.spi(), StdPlatform::new(), W5500Config::default()).unwrap();
        // Own source address: another test runs a DHCP client on 127.0.0.2:68.
        emu.set_unconfigured_ip(Ipv4Addr::new(127, 0, 0, 12));
        let (dhcp_addr, stop, h) = fake_dhcp(CHIP_IP, Ipv4Addr::LOCALHOST, true);
        emu.redirect_udp(SocketAddrV4::new(Ipv4Addr::BROADCAST, 67), dhcp_addr);
        let t0 = Instant::now();
        let r = dev.net_connect(&ConnectParams {
            ip: IpMode::Dhcp,
            connect_timeout: 2 * SEC,
            ..Default::default()
        });
        assert_eq!(r, Err(Error::ConnectFailed));
        assert!(t0.elapsed() < 6 * SEC);
        assert!(
            dev.stats().ignored_replies > 0,
            "the junk was parsed and ignored"
        );
        assert_eq!(dev.addr(), Err(Error::NetworkDown));
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
        // No server at all: the same typed error.
        let emu = W5500Emu::new();
        emu.set_unconfigured_ip(Ipv4Addr::new(127, 0, 0, 13));
        let dev = W5500Offload::new(emu.spi(), StdPlatform::new(), W5500Config::default()).unwrap();
        let r = dev.net_connect(&ConnectParams {
            ip: IpMode::Dhcp,
            connect_timeout: Duration::from_millis(500),
            ..Default::default()
        });
        assert_eq!(r, Err(Error::ConnectFailed));
    });
}
