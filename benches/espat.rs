//! ESP-AT: a TCP transfer through the driver and the emulated chip, each way,
//! and an echo (the peer sends while the device sends everything back: both
//! directions at once, as the `tcpecho` example does), with payload
//! throughput on a simulated UART (115200 baud and 3 Mbaud, 8N1 = 10 bits
//! per byte) computed from the bus counters, and the share of UART bytes
//! that were payload. The echo counts both directions as payload.
//!
//! `cargo bench --bench espat` (size: `ESPAT_BENCH_BYTES`, default 2 MiB).
//! The peer is a std::net socket on 127.0.0.1; the device is 127.0.0.3.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netdever::offload::espat::{Config, EspAt};
use netdever::platform::{Platform, StdPlatform};
use netdever::*;
use netdever_emu::bus::BusStats;
use netdever_emu::espat::{EspAtConfig, EspAtEmu, EspAtSerial};

type Dev = EspAt<EspAtSerial, StdPlatform>;

const PEER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

fn setup(max_send: usize) -> (Arc<Dev>, EspAtEmu) {
    let cfg = EspAtConfig {
        station_ip: Ipv4Addr::new(127, 0, 0, 3),
        ..Default::default()
    };
    let (ssid, pass) = (cfg.ssid.clone(), cfg.passphrase.clone());
    let (emu, serial) = EspAtEmu::start(cfg);
    let dev = Arc::new(EspAt::new(
        serial,
        StdPlatform::new(),
        Config {
            max_send,
            ..Config::default()
        },
    ));
    let weak = Arc::downgrade(&dev);
    emu.set_rx_notify(Some(Arc::new(move || {
        if let Some(d) = weak.upgrade() {
            d.platform().notify();
        }
    })));
    dev.net_connect(&ConnectParams {
        ssid: Box::leak(ssid.into_boxed_str()),
        passphrase: Box::leak(pass.into_boxed_str()),
        ..Default::default()
    })
    .expect("join the emulated AP");
    (dev, emu)
}

fn report(what: &str, s: BusStats, wall: Duration) {
    println!(
        "{what}: {} payload bytes in {} UART bytes, {} transactions, bus efficiency {:.1}%",
        s.payload,
        s.bytes,
        s.transactions,
        s.efficiency() * 100.0
    );
    for (label, hz) in [("115200 baud", 115_200u64), ("3 Mbaud", 3_000_000)] {
        let t = s.time_at(hz, 10, Duration::ZERO);
        println!(
            "    at {label:>11}: {:>8.1} KiB/s payload ({:.2} s on the wire)",
            s.payload_rate_at(hz, 10, Duration::ZERO) / 1024.0,
            t.as_secs_f64()
        );
    }
    println!(
        "    host wall clock: {:.2} MiB/s ({:.2} s)",
        s.payload as f64 / 2f64.powi(20) / wall.as_secs_f64().max(1e-9),
        wall.as_secs_f64()
    );
}

fn upload(dev: &Dev, emu: &EspAtEmu, size: usize) {
    let l = TcpListener::bind((PEER, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 65536];
        let mut n = 0usize;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return n,
                Ok(k) => n += k,
            }
        }
    });
    let fd = dev
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .unwrap();
    dev.connect(
        fd,
        None,
        addr,
        Deadline::after(dev.now(), Duration::from_secs(5)),
    )
    .unwrap();
    let data: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
    let before = emu.bus().snapshot();
    let t0 = Instant::now();
    let mut rest = &data[..];
    let deadline = Deadline::after(dev.now(), Duration::from_secs(600));
    while !rest.is_empty() {
        let n = dev.send(fd, rest, MsgFlags::NONE, deadline).expect("send");
        rest = &rest[n..];
    }
    dev.close(fd).unwrap();
    let got = reader.join().unwrap();
    let wall = t0.elapsed();
    let s = emu.bus().snapshot().since(&before);
    assert_eq!(got, size, "the peer received everything");
    report("  upload   (device -> peer)", s, wall);
}

fn download(dev: &Dev, emu: &EspAtEmu, size: usize) {
    let l = TcpListener::bind((PEER, 0)).unwrap();
    let addr: SocketAddr = l.local_addr().unwrap();
    let writer = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let data: Vec<u8> = (0..size).map(|i| (i * 17 + 3) as u8).collect();
        s.write_all(&data).unwrap();
    });
    let fd = dev
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .unwrap();
    dev.connect(
        fd,
        None,
        addr,
        Deadline::after(dev.now(), Duration::from_secs(5)),
    )
    .unwrap();
    let before = emu.bus().snapshot();
    let t0 = Instant::now();
    let deadline = Deadline::after(dev.now(), Duration::from_secs(600));
    let mut buf = vec![0u8; 8192];
    let mut n = 0usize;
    loop {
        let k = dev
            .recv(fd, &mut buf, MsgFlags::NONE, deadline)
            .expect("recv");
        if k == 0 {
            break;
        }
        n += k;
    }
    let wall = t0.elapsed();
    let s = emu.bus().snapshot().since(&before);
    writer.join().unwrap();
    dev.close(fd).unwrap();
    assert_eq!(n, size, "the device received everything");
    report("  download (peer -> device)", s, wall);
}

fn echo(dev: &Dev, emu: &EspAtEmu, size: usize) {
    let l = TcpListener::bind((PEER, 0)).unwrap();
    let addr: SocketAddr = l.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let data: Vec<u8> = (0..size).map(|i| (i * 13 + 5) as u8).collect();
            w.write_all(&data).unwrap();
        });
        let mut r = s;
        let mut buf = vec![0u8; 65536];
        let mut got = 0usize;
        while got < size {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => {
                    let ok = buf[..k]
                        .iter()
                        .enumerate()
                        .all(|(j, &b)| b == ((got + j) * 13 + 5) as u8);
                    assert!(ok, "the echo is intact");
                    got += k;
                }
            }
        }
        writer.join().unwrap();
        got
    });
    let fd = dev
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .unwrap();
    dev.connect(
        fd,
        None,
        addr,
        Deadline::after(dev.now(), Duration::from_secs(5)),
    )
    .unwrap();
    let before = emu.bus().snapshot();
    let t0 = Instant::now();
    let deadline = Deadline::after(dev.now(), Duration::from_secs(600));
    let mut buf = vec![0u8; 16384];
    let mut n = 0usize;
    while n < size {
        let k = dev
            .recv(fd, &mut buf, MsgFlags::NONE, deadline)
            .expect("recv");
        assert!(k > 0, "the peer closed early");
        let mut rest = &buf[..k];
        while !rest.is_empty() {
            let m = dev.send(fd, rest, MsgFlags::NONE, deadline).expect("send");
            rest = &rest[m..];
        }
        n += k;
    }
    let got = peer.join().unwrap();
    let wall = t0.elapsed();
    let s = emu.bus().snapshot().since(&before);
    dev.close(fd).unwrap();
    assert_eq!(got, size, "the peer got everything back");
    report("  echo     (peer -> device -> peer)", s, wall);
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too.
    let quick =
        std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    let size = std::env::var("ESPAT_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 64 << 10 } else { 2 << 20 });
    println!("ESP-AT TCP transfer of {size} bytes through the driver and the emulated chip");
    for max_send in [2048usize, 8192] {
        println!(
            "AT+CIPSEND up to {max_send} bytes, AT+CIPRECVDATA up to {} bytes:",
            netdever::offload::espat::FETCH
        );
        let (dev, emu) = setup(max_send);
        upload(&dev, &emu, size);
        download(&dev, &emu, size);
        echo(&dev, &emu, size);
    }
}
