//! Per-board selection (`netdever_emu::boards`, over the product glue in
//! `netdever::board`):
//!
//! * On the simulated network, every board: probe by name, join with the
//!   emulated access point's credentials where the board has Wi-Fi, then a
//!   TCP echo round trip each way (device as client, device as server) and
//!   a UDP round trip with the peer `probe` returned; the capabilities each
//!   board must report (fd table size, TLS, DHCP, MAC) differ as expected,
//!   and Wi-Fi boards refuse a wrong passphrase with `AuthFailed`.
//! * Names: every board parses from its name; an unknown name is an error
//!   listing the boards; impossible combinations are errors.
//! * `tap_*`: each board on a TAP network inside a fresh network namespace,
//!   with a kernel-backed peer (`KernelNetdev`) in that namespace:
//!   raw-frame boards put their frames on a TAP there, offload boards'
//!   emulators open their host sockets there. Needs root and `ip`; skips
//!   otherwise (fails under `CI=true`).
//! * The bare-metal `netdever::board::*::probe` functions (full stack from
//!   `StackParts`, spin-wait platform, no driver thread) against the
//!   emulated chips.
#![cfg(all(
    feature = "std",
    feature = "full-stack",
    feature = "tap",
    feature = "w5500",
    feature = "esp-at",
    feature = "esp-hosted"
))]

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use netdever::board::StackParts;
use netdever::phy::memory::MemorySwitch;
use netdever::platform::SpinPlatform;
use netdever::stack::host::HostStack;
use netdever::stack::{HeapResources, StackConfig};
use netdever::{
    AddressFamily, ConnectParams, Deadline, Error, IpConfig, IpMode, MsgFlags, Netdever, Netlinker,
    Protocol, SockType, Socketer, Sockfd, TlsSupport,
};
use netdever_emu::boards::{
    probe, Board, HostNet, Probed, SharedDevice, DEV_MAC, ESP_AT_IP, KERNEL_PEER_IP, SIM_DEV_IP,
    SIM_PEER_IP, W5500_OFFLOAD_IP,
};
use netdever_emu::esp_hosted::EspHostedEmu;
use netdever_emu::kernel::KernelNetdev;
use netdever_emu::w5500::W5500Emu;

const SEC: Duration = Duration::from_secs(1);

fn dl(d: &(impl Socketer + ?Sized), t: Duration) -> Deadline {
    Deadline::after(d.now(), t)
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn send_all(d: &(impl Socketer + ?Sized), fd: Sockfd, mut data: &[u8]) {
    let until = dl(d, 10 * SEC);
    while !data.is_empty() {
        let n = d.send(fd, data, MsgFlags::NONE, until).expect("send");
        data = &data[n..];
    }
}

fn recv_exact(d: &(impl Socketer + ?Sized), fd: Sockfd, n: usize) -> Vec<u8> {
    let until = dl(d, 10 * SEC);
    let mut v = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match d.recv(fd, &mut v[got..], MsgFlags::NONE, until) {
            Ok(0) => panic!("EOF after {got} of {n} bytes"),
            Ok(k) => got += k,
            Err(e) => panic!("recv after {got} of {n} bytes: {e:?}"),
        }
    }
    v
}

fn tcp(d: &(impl Socketer + ?Sized)) -> Sockfd {
    d.socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .expect("TCP socket")
}

fn udp(d: &(impl Socketer + ?Sized)) -> Sockfd {
    d.socket(AddressFamily::Inet, SockType::Dgram, Protocol::Udp)
        .expect("UDP socket")
}

fn any(port: u16) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], port))
}

/// A listener on `d` at an ephemeral port; returns (fd, port).
fn listen_any(d: &(impl Socketer + ?Sized)) -> (Sockfd, u16) {
    let l = tcp(d);
    d.bind(l, any(0)).expect("bind port 0");
    d.listen(l, 2).expect("listen");
    let port = d.local_addr(l).expect("listener local_addr").port();
    assert_ne!(port, 0, "listening on port 0 picks a port");
    (l, port)
}

/// Echo one connection accepted on `l` until EOF; returns where it came from.
fn echo_one(d: SharedDevice, l: Sockfd) -> std::thread::JoinHandle<SocketAddr> {
    std::thread::spawn(move || {
        let (s, from) = d.accept(l, dl(&*d, 10 * SEC)).expect("accept");
        let mut buf = vec![0u8; 4096];
        let until = dl(&*d, 20 * SEC);
        loop {
            match d.recv(s, &mut buf, MsgFlags::NONE, until) {
                Ok(0) => break,
                Ok(n) => send_all(&*d, s, &buf[..n]),
                Err(e) => panic!("echo recv: {e:?}"),
            }
        }
        d.close(s).unwrap();
        d.close(l).unwrap();
        from
    })
}

/// TCP echo both ways (device as client, device as server) and a UDP round
/// trip between `dev` (at `dev_ip`) and `peer` (at `peer_ip`).
fn round_trips(dev: &SharedDevice, dev_ip: Ipv4Addr, peer: &SharedDevice, peer_ip: Ipv4Addr) {
    let msg = pattern(u64::from(u32::from(dev_ip)), 3000);

    // The device connects to an echo server on the peer.
    let (l, port) = listen_any(&**peer);
    let echo = echo_one(peer.clone(), l);
    let c = tcp(&**dev);
    dev.connect(
        c,
        None,
        SocketAddr::from((peer_ip, port)),
        dl(&**dev, 10 * SEC),
    )
    .expect("device connects to the peer");
    send_all(&**dev, c, &msg);
    assert_eq!(
        recv_exact(&**dev, c, msg.len()),
        msg,
        "TCP echo from the peer"
    );
    dev.close(c).unwrap();
    let from = echo.join().expect("peer echo thread");
    assert_eq!(
        from.ip(),
        IpAddr::V4(dev_ip),
        "the peer sees the device's address"
    );

    // The peer connects to an echo server on the device.
    let (l, port) = listen_any(&**dev);
    let echo = echo_one(dev.clone(), l);
    let c = tcp(&**peer);
    peer.connect(
        c,
        None,
        SocketAddr::from((dev_ip, port)),
        dl(&**peer, 10 * SEC),
    )
    .expect("peer connects to the device");
    send_all(&**peer, c, &msg[..1000]);
    assert_eq!(
        recv_exact(&**peer, c, 1000),
        &msg[..1000],
        "TCP echo from the device"
    );
    peer.close(c).unwrap();
    let from = echo.join().expect("device echo thread");
    assert_eq!(
        from.ip(),
        IpAddr::V4(peer_ip),
        "the device sees the peer's address"
    );

    // UDP there and back.
    let pu = udp(&**peer);
    peer.bind(pu, any(0)).unwrap();
    let pport = peer.local_addr(pu).unwrap().port();
    let paddr = SocketAddr::from((peer_ip, pport));
    let du = udp(&**dev);
    assert_eq!(
        dev.send_to(du, b"ping", MsgFlags::NONE, paddr, dl(&**dev, 5 * SEC)),
        Ok(4)
    );
    let mut buf = [0u8; 64];
    let (n, src) = peer
        .recv_from(pu, &mut buf, MsgFlags::NONE, dl(&**peer, 5 * SEC))
        .expect("peer receives the datagram");
    assert_eq!(&buf[..n], b"ping");
    assert_eq!(src.ip(), IpAddr::V4(dev_ip), "datagram source");
    assert_eq!(
        peer.send_to(pu, b"pong", MsgFlags::NONE, src, dl(&**peer, 5 * SEC)),
        Ok(4)
    );
    let (n, from) = dev
        .recv_from(du, &mut buf, MsgFlags::NONE, dl(&**dev, 5 * SEC))
        .expect("device receives the answer");
    assert_eq!(&buf[..n], b"pong");
    assert_eq!(from, paddr, "answer source");
    dev.close(du).unwrap();
    peer.close(pu).unwrap();
}

/// What each board must report.
fn check_capabilities(p: &Probed) {
    let caps = p.device.capabilities();
    let mac = p.device.hardware_addr().expect("hardware_addr");
    match p.board {
        Board::Sim | Board::Tap | Board::W5500Macraw | Board::EspHosted => {
            assert_eq!(caps.max_sockets, 16, "{}: HostStack fd table", p.board);
            assert!(
                caps.dhcp && caps.dns && caps.server,
                "{}: {caps:?}",
                p.board
            );
            assert_eq!(
                caps.tls,
                TlsSupport::None,
                "{}: no TLS without SoftTls",
                p.board
            );
            assert_eq!(mac, DEV_MAC, "{}: MAC", p.board);
        }
        Board::W5500Offload => {
            // Eight hardwired sockets; static addressing keeps all of them.
            assert_eq!(caps.max_sockets, 8, "W5500 offload: hardware sockets");
            assert_eq!(caps.max_tcp, 8);
            assert_eq!(caps.tls, TlsSupport::None, "the W5500 has no TLS");
            assert_eq!(mac, DEV_MAC);
        }
        Board::EspAt => {
            assert_eq!(
                caps.max_sockets,
                netdever::offload::espat::MAX_SOCKETS,
                "ESP-AT: one socket per firmware link"
            );
            assert!(caps.max_sockets <= 5, "ESP-AT has five links");
            assert!(
                matches!(caps.tls, TlsSupport::None | TlsSupport::Firmware),
                "ESP-AT TLS runs in the firmware if at all: {:?}",
                caps.tls
            );
            assert_ne!(mac, [0; 6], "ESP-AT reports the station MAC");
        }
    }
    assert_eq!(
        p.bus.is_some(),
        !matches!(p.board, Board::Sim | Board::Tap),
        "{}: bus counter iff there is an emulated chip",
        p.board
    );
}

/// Probe `board` on a fresh simulated network, join, round trips.
fn sim_board(board: Board) {
    support::with_timeout(board.name(), 120 * SEC, move || {
        let p = probe(board, HostNet::sim()).unwrap_or_else(|e| panic!("probe {board}: {e}"));
        eprintln!("{}", p.summary);
        assert_eq!(p.board, board);
        let (want_ip, want_peer) = match board {
            Board::W5500Offload => (W5500_OFFLOAD_IP, KERNEL_PEER_IP),
            Board::EspAt => (ESP_AT_IP, KERNEL_PEER_IP),
            _ => (SIM_DEV_IP, SIM_PEER_IP),
        };
        assert_eq!(p.ip, Some(want_ip));
        assert_eq!(p.peer_ip, Some(want_peer));
        assert_eq!(p.wifi.is_some(), board.wifi());
        if board.wifi() {
            let wrong = ConnectParams {
                passphrase: "not-the-passphrase",
                connect_timeout: 5 * SEC,
                ..p.connect_params()
            };
            assert_eq!(
                p.device.net_connect(&wrong),
                Err(Error::AuthFailed),
                "{board}: wrong passphrase"
            );
        }
        let ip = p.connect().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ip, want_ip, "{board}: address after net_connect");
        check_capabilities(&p);
        let peer = p.peer.clone().expect("a peer on the simulated network");
        assert_eq!(
            peer.addr(),
            Ok(IpAddr::V4(want_peer)),
            "the peer is up already"
        );
        round_trips(&p.device, ip, &peer, want_peer);
        if let Some(bus) = &p.bus {
            let s = bus.snapshot();
            assert!(
                s.transactions > 0 && s.payload >= 4000,
                "{board}: the traffic crossed the emulated bus ({s:?})"
            );
        }
    });
}

#[test]
fn sim_sim() {
    sim_board(Board::Sim);
}

#[test]
fn sim_w5500_macraw() {
    sim_board(Board::W5500Macraw);
}

#[test]
fn sim_w5500_offload() {
    sim_board(Board::W5500Offload);
}

#[test]
fn sim_esp_at() {
    sim_board(Board::EspAt);
}

#[test]
fn sim_esp_hosted() {
    sim_board(Board::EspHosted);
}

#[test]
fn names_parse_and_unknown_lists_boards() {
    for b in Board::ALL {
        assert_eq!(b.name().parse::<Board>(), Ok(b));
        assert_eq!(b.to_string(), b.name());
        assert!(!b.help().is_empty());
    }
    let e = "w5100".parse::<Board>().expect_err("unknown board");
    assert!(e.contains("unknown board `w5100`"), "{e}");
    for name in [
        "sim",
        "tap",
        "w5500-macraw",
        "w5500-offload",
        "esp-at",
        "esp-hosted",
    ] {
        assert!(e.contains(name), "the error lists {name}: {e}");
    }
    assert!("".parse::<Board>().is_err());
    assert!("SIM".parse::<Board>().is_err(), "names are exact");
}

#[test]
fn impossible_combinations_are_errors() {
    let e = probe(Board::Tap, HostNet::sim()).expect_err("tap on the simulated network");
    assert!(e.contains("TAP"), "{e}");
    let on_tap = || HostNet::tap("ndvnone0", IpMode::Static(IpConfig::new(SIM_DEV_IP, 24)));
    let e = probe(Board::Sim, on_tap()).expect_err("sim on a TAP");
    assert!(e.contains("simulated"), "{e}");
    for b in [Board::W5500Offload, Board::EspAt] {
        let e = probe(b, on_tap()).expect_err("offload on a TAP without a namespace");
        assert!(e.contains("namespace"), "{b}: {e}");
        let dhcp = HostNet::tap("ndvnone0", IpMode::Dhcp).with_netns("/run/netns/none");
        let e = probe(b, dhcp).expect_err("offload on a TAP with DHCP");
        assert!(e.contains("static"), "{b}: {e}");
    }
}

// ---------------------------------------------------------------------------
// TAP network in a namespace
// ---------------------------------------------------------------------------

const TAP_PEER: Ipv4Addr = Ipv4Addr::new(10, 62, 0, 1);
const TAP_DEV: Ipv4Addr = Ipv4Addr::new(10, 62, 0, 2);
const TAP_IF: &str = "ndvbrd0";

/// `board` on a TAP network in a fresh namespace, the kernel there as peer.
fn tap_board(board: Board) {
    let test = format!("tap_{}", board.name());
    if let Some(missing) = support::netns_missing() {
        if support::require(&test, &missing, false).is_err() {
            return;
        }
    }
    support::with_timeout(&test.clone(), 120 * SEC, move || {
        let ns = support::Netns::new("board").expect("network namespace");
        let path = format!("/run/netns/{}", ns.name());
        let ip = IpMode::Static(IpConfig::new(TAP_DEV, 24));
        let net = HostNet::tap(TAP_IF, ip).with_netns(&path);
        if board.raw_frames() {
            // The board opens (creates) the TAP inside the namespace; the
            // kernel side gets the peer's address.
            let p = probe(board, net).unwrap_or_else(|e| panic!("probe {board}: {e}"));
            ns.ip(&["addr", "add", &format!("{TAP_PEER}/24"), "dev", TAP_IF])
                .expect("kernel side address");
            ns.ip(&["link", "set", TAP_IF, "up"]).expect("TAP up");
            run_tap(&p, &path, &test);
        } else {
            // The emulated chip's host sockets bind the device address in
            // the namespace; the kernel peer sits next to it.
            let e = probe(board, net.clone()).expect_err("device address not in the namespace");
            assert!(e.contains("addr add"), "{board}: the error says how: {e}");
            for a in [TAP_PEER, TAP_DEV] {
                ns.ip(&["addr", "add", &format!("{a}/24"), "dev", "lo"])
                    .expect("address on the namespace's loopback");
            }
            let p = probe(board, net).unwrap_or_else(|e| panic!("probe {board}: {e}"));
            run_tap(&p, &path, &test);
        }
        drop(ns);
    });
}

fn run_tap(p: &Probed, ns_path: &str, test: &str) {
    eprintln!("{test}: {}", p.summary);
    assert!(p.peer.is_none(), "no simulated peer on a TAP network");
    assert_eq!(p.ip, Some(TAP_DEV));
    let ip = p.connect().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ip, TAP_DEV);
    check_capabilities(p);
    let peer: SharedDevice = Arc::new(
        KernelNetdev::in_netns(IpConfig::new(TAP_PEER, 24), ns_path).expect("kernel peer"),
    );
    round_trips(&p.device, TAP_DEV, &peer, TAP_PEER);
}

#[test]
fn tap_tap() {
    tap_board(Board::Tap);
}

#[test]
fn tap_w5500_macraw() {
    tap_board(Board::W5500Macraw);
}

#[test]
fn tap_w5500_offload() {
    tap_board(Board::W5500Offload);
}

#[test]
fn tap_esp_at() {
    tap_board(Board::EspAt);
}

#[test]
fn tap_esp_hosted() {
    tap_board(Board::EspHosted);
}

// ---------------------------------------------------------------------------
// The bare-metal probes
// ---------------------------------------------------------------------------

fn spin_platform() -> SpinPlatform<impl Fn() -> netdever::Instant + Send + Sync> {
    let t0 = std::time::Instant::now();
    SpinPlatform::new(move || netdever::Instant::from_micros(t0.elapsed().as_micros() as u64))
}

fn spin_parts() -> StackParts<
    SpinPlatform<impl Fn() -> netdever::Instant + Send + Sync>,
    HeapResources,
    rand::rngs::OsRng,
> {
    StackParts {
        platform: spin_platform(),
        config: StackConfig {
            tcp_sockets: 4,
            udp_sockets: 2,
            ip: IpMode::Static(IpConfig::new(SIM_DEV_IP, 24)),
            ..StackConfig::default()
        },
        resources: HeapResources,
        rng: rand::rngs::OsRng,
    }
}

fn sim_peer(switch: &MemorySwitch) -> SharedDevice {
    let ip = IpMode::Static(IpConfig::new(SIM_PEER_IP, 24));
    let peer = HostStack::new(
        switch.port([0x02, 0, 0, 0, 0, 2]),
        StackConfig {
            ip: ip.clone(),
            ..StackConfig::default()
        },
    )
    .unwrap();
    peer.net_connect(&ConnectParams {
        ip,
        ..Default::default()
    })
    .unwrap();
    Arc::new(peer)
}

#[test]
fn bare_metal_w5500_macraw_probe() {
    support::with_timeout("bare_metal_w5500_macraw", 60 * SEC, || {
        let switch = MemorySwitch::new();
        let emu = W5500Emu::with_link(switch.port(DEV_MAC));
        let dev = netdever::board::w5500_macraw::probe(emu.spi(), DEV_MAC, spin_parts())
            .expect("w5500_macraw::probe");
        assert_eq!(dev.hardware_addr(), Ok(DEV_MAC));
        dev.net_connect(&ConnectParams {
            ip: IpMode::Static(IpConfig::new(SIM_DEV_IP, 24)),
            ..Default::default()
        })
        .expect("net_connect");
        // Nobody polls this stack but its own (blocked) calls.
        let dev: SharedDevice = Arc::new(dev);
        round_trips(&dev, SIM_DEV_IP, &sim_peer(&switch), SIM_PEER_IP);
        // A wrong chip on the bus is a typed error, not a panic.
        let other = W5500Emu::new();
        other.set_version(0x51);
        assert_eq!(
            netdever::board::w5500_macraw::probe(other.spi(), DEV_MAC, spin_parts()).err(),
            Some(Error::Device)
        );
    });
}

#[test]
fn bare_metal_esp_hosted_probe_joins_the_ap() {
    support::with_timeout("bare_metal_esp_hosted", 60 * SEC, || {
        {
            let switch = MemorySwitch::new();
            let emu = EspHostedEmu::new(switch.port(DEV_MAC), "bare-ap", "bare-passphrase");
            let e = netdever::board::esp_hosted::probe(
                emu.spi(),
                emu.handshake_pin(),
                emu.data_ready_pin(),
                None,
                Some(("bare-ap", "wrong-passphrase")),
                spin_parts(),
            )
            .err();
            assert_eq!(e, Some(Error::AuthFailed), "wrong passphrase at probe");
        }
        let switch = MemorySwitch::new();
        let emu = EspHostedEmu::new(switch.port(DEV_MAC), "bare-ap", "bare-passphrase");
        let dev = netdever::board::esp_hosted::probe(
            emu.spi(),
            emu.handshake_pin(),
            emu.data_ready_pin(),
            None,
            Some(("bare-ap", "bare-passphrase")),
            spin_parts(),
        )
        .expect("esp_hosted::probe");
        assert!(emu.associated(), "probe joined the access point");
        assert_eq!(dev.hardware_addr(), Ok(DEV_MAC), "the station MAC");
        dev.net_connect(&ConnectParams {
            ip: IpMode::Static(IpConfig::new(SIM_DEV_IP, 24)),
            ..Default::default()
        })
        .expect("net_connect (address only)");
        // Nobody polls this stack but its own (blocked) calls.
        let dev: SharedDevice = Arc::new(dev);
        round_trips(&dev, SIM_DEV_IP, &sim_peer(&switch), SIM_PEER_IP);
    });
}
