//! W5500: the full stack over MACRAW against the chip's own TCP/IP
//! (offload), moving the same TCP payload over the same simulated SPI bus.
//!
//! Both runs use the emulator, which counts every SPI byte and chip-select
//! cycle; the time a real bus would need is computed from the counts at
//! `SPI_HZ` (8 bits per byte) plus `PER_TRANSACTION` per chip-select cycle
//! (CS setup/hold and the MCU's per-transfer overhead). Printed per run:
//! bus bytes, transactions, bus time at that clock, the chip's payload
//! count (frame bytes for MACRAW, socket data for offload) and bus
//! efficiency (payload / bus bytes), the share of the bus that was the
//! user's TCP data, the user-payload throughput at that clock, and the wall
//! time of each half of the emulated run (device -> peer, then peer ->
//! device) with its rate — host CPU time of the emulators and stacks, not a
//! bus figure, but it shows where the emulated path is slow; then the
//! offload / MACRAW throughput ratio.
//!
//! * MACRAW: `HostStack` over `W5500Link` on a memory-switch port, peer a
//!   plain `HostStack` on the same switch; the bus carries every Ethernet
//!   frame both ways (data, ACKs, ARP) plus register traffic. The emulator
//!   drops frames the RX ring cannot hold, as the chip does, and the
//!   device's TCP window is `MAX_TCP_WINDOW` (what the ring always holds);
//!   ring overruns are printed (and any retransmission is in the bus count).
//! * Offload: `W5500Offload` with the chip at 127.0.0.2 and a std::net peer
//!   on 127.0.0.1; the bus carries only socket data plus register traffic.
//!
//! `W5500_BENCH_BYTES` sets the payload per direction (default 2 MiB).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netdever::offload::w5500::{W5500Config, W5500Offload};
use netdever::phy::memory::MemorySwitch;
use netdever::phy::w5500::{W5500Link, MAX_TCP_WINDOW};
use netdever::phy::{Link, RxSignal};
use netdever::platform::StdPlatform;
use netdever::stack::host::HostStack;
use netdever::stack::StackConfig;
use netdever::{
    AddressFamily, ConnectParams, Deadline, IpConfig, IpMode, MsgFlags, Netdever, Netlinker,
    Protocol, SockType, Socketer, Sockfd,
};
use netdever_emu::bus::BusStats;
use netdever_emu::w5500::{W5500Emu, W5500Int};

const SPI_HZ: u64 = 33_000_000;
const BITS_PER_BYTE: u64 = 8;
const PER_TRANSACTION: Duration = Duration::from_nanos(1000);

struct IntSignal(W5500Int);

impl RxSignal for IntSignal {
    fn wait(&self, timeout: Option<Duration>) {
        self.0
            .wait_low(timeout.unwrap_or(Duration::from_millis(10)));
    }
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

fn dl(dev: &impl Socketer, secs: u64) -> Deadline {
    Deadline::after(dev.now(), Duration::from_secs(secs))
}

fn send_all(dev: &impl Socketer, fd: Sockfd, mut data: &[u8]) {
    let d = dl(dev, 300);
    while !data.is_empty() {
        let n = dev.send(fd, data, MsgFlags::NONE, d).expect("send");
        data = &data[n..];
    }
}

fn recv_n(dev: &impl Socketer, fd: Sockfd, n: usize) -> usize {
    let d = dl(dev, 300);
    let mut buf = vec![0u8; 16 * 1024];
    let mut got = 0;
    while got < n {
        match dev.recv(fd, &mut buf, MsgFlags::NONE, d).expect("recv") {
            0 => break,
            k => got += k,
        }
    }
    got
}

struct Run {
    name: &'static str,
    bus: BusStats,
    bytes: usize,
    /// Wall time of the device -> peer half, then of the peer -> device half.
    wall: [Duration; 2],
}

impl Run {
    /// Time the bus needs for this run at the simulated clock.
    fn bus_time(&self) -> Duration {
        self.bus.time_at(SPI_HZ, BITS_PER_BYTE, PER_TRANSACTION)
    }

    /// User payload (TCP data) per second of bus time.
    fn rate(&self) -> f64 {
        self.bytes as f64 / self.bus_time().as_secs_f64().max(1e-9)
    }

    /// Wall-clock rate of one half (host CPU time of the emulated run, not
    /// a bus figure).
    fn wall_rate(&self, half: usize) -> f64 {
        (self.bytes / 2) as f64 / self.wall[half].as_secs_f64().max(1e-9)
    }

    fn print(&self) {
        println!(
            "{:<8} user {:>8} B | bus {:>9} B, {:>7} txns, {:>8.1} ms at {} MHz | chip payload {:>9} B, efficiency {:>5.1}% (user data {:>5.1}%) | {:>6.2} MB/s user payload | wall: out {:.2?} ({:.0} MB/s), in {:.2?} ({:.0} MB/s)",
            self.name,
            self.bytes,
            self.bus.bytes,
            self.bus.transactions,
            self.bus_time().as_secs_f64() * 1e3,
            SPI_HZ / 1_000_000,
            self.bus.payload,
            100.0 * self.bus.efficiency(),
            100.0 * self.bytes as f64 / self.bus.bytes.max(1) as f64,
            self.rate() / 1e6,
            self.wall[0],
            self.wall_rate(0) / 1e6,
            self.wall[1],
            self.wall_rate(1) / 1e6,
        );
    }
}

fn stack(link: impl Link + Send + 'static, ip: Ipv4Addr, rx_window: usize) -> HostStack {
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

fn macraw(len: usize) -> Run {
    let mac_a = [0x02, 0, 0, 0, 0x55, 1];
    let switch = MemorySwitch::new();
    let emu = W5500Emu::with_link(switch.port(mac_a));
    emu.set_macraw_overrun_drops(true);
    let link = W5500Link::new(emu.spi(), mac_a)
        .expect("W5500Link")
        .with_rx_signal(Arc::new(IntSignal(emu.int_pin())));
    let dut = stack(link, Ipv4Addr::new(10, 0, 0, 1), MAX_TCP_WINDOW);
    let peer = stack(
        switch.port([0x02, 0, 0, 0, 0x55, 2]),
        Ipv4Addr::new(10, 0, 0, 2),
        StackConfig::default().tcp_rx_buffer,
    );
    let l = peer
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .unwrap();
    peer.bind(l, SocketAddr::from(([0, 0, 0, 0], 5001)))
        .unwrap();
    peer.listen(l, 1).unwrap();
    let c = dut
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .unwrap();
    dut.connect(
        c,
        None,
        SocketAddr::from(([10, 0, 0, 2], 5001)),
        dl(&dut, 10),
    )
    .expect("connect");
    let (s, _) = peer.accept(l, dl(&peer, 10)).expect("accept");
    let data = payload(len);
    let before = emu.bus().snapshot();
    let mut wall = [Duration::ZERO; 2];
    std::thread::scope(|sc| {
        let t0 = Instant::now();
        let p = &peer;
        let r = sc.spawn(move || recv_n(p, s, len));
        send_all(&dut, c, &data);
        assert_eq!(r.join().unwrap(), len);
        wall[0] = t0.elapsed();
        let t0 = Instant::now();
        let p = &peer;
        let d = &data;
        let w = sc.spawn(move || send_all(p, s, d));
        assert_eq!(recv_n(&dut, c, len), len);
        w.join().unwrap();
        wall[1] = t0.elapsed();
    });
    let bus = emu.bus().snapshot().since(&before);
    println!("MACRAW   emulator: {:?}", emu.stats());
    dut.close(c).unwrap();
    peer.close(s).unwrap();
    Run {
        name: "MACRAW",
        bus,
        bytes: 2 * len,
        wall,
    }
}

fn offload(len: usize) -> Run {
    let emu = W5500Emu::new();
    let dev = W5500Offload::new(emu.spi(), StdPlatform::new(), W5500Config::default())
        .expect("W5500Offload");
    dev.set_addr(IpConfig::new(Ipv4Addr::new(127, 0, 0, 2), 8))
        .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let data = payload(len);
    let fd = dev
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .unwrap();
    dev.connect(fd, None, addr, dl(&dev, 10)).expect("connect");
    let (mut s, _) = l.accept().unwrap();
    let before = emu.bus().snapshot();
    let mut wall = [Duration::ZERO; 2];
    let mut s2 = s.try_clone().unwrap();
    std::thread::scope(|sc| {
        let t0 = Instant::now();
        let r = sc.spawn(|| {
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0;
            while got < len {
                got += s.read(&mut buf).unwrap();
            }
            got
        });
        send_all(&dev, fd, &data);
        assert_eq!(r.join().unwrap(), len);
        wall[0] = t0.elapsed();
        let t0 = Instant::now();
        let w = sc.spawn(|| s2.write_all(&data).unwrap());
        assert_eq!(recv_n(&dev, fd, len), len);
        w.join().unwrap();
        wall[1] = t0.elapsed();
    });
    let bus = emu.bus().snapshot().since(&before);
    dev.close(fd).unwrap();
    let _ = TcpStream::connect(addr);
    Run {
        name: "offload",
        bus,
        bytes: 2 * len,
        wall,
    }
}

fn main() {
    let len: usize = std::env::var("W5500_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2 << 20);
    println!(
        "W5500 TCP, {len} bytes each way; SPI at {} MHz, {BITS_PER_BYTE} bits/byte, {:?} per transaction",
        SPI_HZ / 1_000_000,
        PER_TRANSACTION
    );
    let a = macraw(len);
    a.print();
    let b = offload(len);
    b.print();
    println!(
        "offload / MACRAW user-payload throughput at the same clock: {:.2}x (bus bytes per user byte: MACRAW {:.3}, offload {:.3})",
        b.rate() / a.rate(),
        a.bus.bytes as f64 / a.bytes as f64,
        b.bus.bytes as f64 / b.bytes as f64,
    );
}
