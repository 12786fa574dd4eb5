//! Bulk TCP through the emulated ESP-Hosted-FG bridge, costed on the SPI bus.
//!
//! An `EspHostedDevice` (full stack over `EspHostedLink`) whose emulated
//! ESP32 bridges to a memory switch sends to, and receives from, a second
//! `HostStack` on the switch. The emulator counts every byte clocked on
//! SPI (fixed 1600-byte full-duplex transfers) and the station-frame bytes
//! among them (payload, both directions). From those counts the bench
//! prints what the transfer would take on a real bus at 10 MHz and 40 MHz
//! (8 bits per byte), with no per-transfer cost and with an assumed 20 µs
//! per transfer (chip-select, the firmware re-arming its transaction and
//! the handshake line), the TCP goodput that implies, and the bus
//! efficiency (payload / bus bytes).
//!
//! The emulator does not sleep to model the bus, so the host wall-clock
//! rate is printed only for reference.
//!
//! `cargo bench --bench esp_hosted` (16 MiB each way); without `--bench`
//! (as `cargo test --benches` runs it) it moves 1 MiB as a smoke test.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use netdever::phy::esp_hosted::{EspHostedDevice, EspHostedLink};
use netdever::phy::memory::MemorySwitch;
use netdever::stack::host::HostStack;
use netdever::stack::StackConfig;
use netdever::{
    AddressFamily, ConnectParams, Deadline, IpConfig, IpMode, MsgFlags, Netlinker, Protocol,
    SockType, Socketer, Sockfd,
};
use netdever_emu::bus::BusStats;
use netdever_emu::esp_hosted::{EspHostedEmu, EspHostedPin, EspHostedSpi};

const STA_MAC: [u8; 6] = [0x02, 0xe5, 0, 0, 0, 1];
const PEER_MAC: [u8; 6] = [0x02, 0xe5, 0, 0, 0, 2];
const DUT_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
const LIMIT: Duration = Duration::from_secs(120);
/// Assumed fixed cost per SPI transfer for the second set of figures.
const PER_TRANSFER: Duration = Duration::from_micros(20);

type Dev = EspHostedDevice<EspHostedSpi, EspHostedPin, EspHostedPin>;

fn dl(d: &impl Socketer, t: Duration) -> Deadline {
    Deadline::after(d.now(), t)
}

fn tcp(d: &impl Socketer) -> Sockfd {
    d.socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .expect("socket")
}

fn config(ip: Ipv4Addr) -> StackConfig {
    StackConfig {
        ip: IpMode::Static(IpConfig::new(ip, 24)),
        tcp_rx_buffer: 64 * 1024,
        tcp_tx_buffer: 64 * 1024,
        ..Default::default()
    }
}

fn setup() -> (MemorySwitch, EspHostedEmu, Dev, HostStack) {
    let switch = MemorySwitch::new();
    let emu = EspHostedEmu::new(switch.port(STA_MAC), "bench-ap", "bench-pass");
    let link = EspHostedLink::new(emu.spi(), emu.handshake_pin(), emu.data_ready_pin())
        .with_rx_signal(emu.rx_signal());
    let dev = EspHostedDevice::new(link, config(DUT_IP)).expect("device");
    dev.net_connect(&ConnectParams {
        ssid: "bench-ap",
        passphrase: "bench-pass",
        ip: IpMode::Static(IpConfig::new(DUT_IP, 24)),
        ..Default::default()
    })
    .expect("join");
    let peer = HostStack::new(switch.port(PEER_MAC), config(PEER_IP)).expect("peer");
    peer.net_connect(&ConnectParams {
        ip: IpMode::Static(IpConfig::new(PEER_IP, 24)),
        ..Default::default()
    })
    .expect("peer up");
    (switch, emu, dev, peer)
}

/// Move `len` bytes from `tx` to `rx` over a fresh connection (`rx`
/// listens on `port` at `rx_ip`). Returns the wall-clock time.
fn transfer<A: Socketer + Sync, B: Socketer + Sync>(
    tx: &A,
    rx: &B,
    rx_ip: Ipv4Addr,
    port: u16,
    len: usize,
) -> Duration {
    let l = tcp(rx);
    rx.bind(l, SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
        .unwrap();
    rx.listen(l, 1).unwrap();
    let data = vec![0x5au8; 64 * 1024];
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let (fd, _) = rx
                .accept(l, dl(rx, Duration::from_secs(10)))
                .expect("accept");
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0;
            let dead = dl(rx, LIMIT);
            while got < len {
                match rx.recv(fd, &mut buf, MsgFlags::NONE, dead) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) => panic!("recv: {e:?} after {got}"),
                }
            }
            rx.close(fd).unwrap();
            got
        });
        let fd = tcp(tx);
        tx.connect(
            fd,
            None,
            SocketAddr::new(IpAddr::V4(rx_ip), port),
            dl(tx, Duration::from_secs(10)),
        )
        .expect("connect");
        let dead = dl(tx, LIMIT);
        let mut left = len;
        while left > 0 {
            let n = tx
                .send(fd, &data[..left.min(data.len())], MsgFlags::NONE, dead)
                .expect("send");
            left -= n;
        }
        tx.close(fd).unwrap();
        assert_eq!(reader.join().unwrap(), len);
    });
    let t = t0.elapsed();
    rx.close(l).unwrap();
    t
}

fn report(what: &str, len: usize, wall: Duration, bus: &BusStats) {
    println!("{what}: {len} bytes of TCP payload");
    println!(
        "  bus: {} transfers, {} bytes clocked, {} station-frame bytes; efficiency {:.1}% \
         (payload / bus bytes, both directions; one direction alone fills at most 1514/1600 = 94.6%)",
        bus.transactions,
        bus.bytes,
        bus.payload,
        100.0 * bus.efficiency()
    );
    for mhz in [10u64, 40] {
        for per in [Duration::ZERO, PER_TRANSFER] {
            let t = bus.time_at(mhz * 1_000_000, 8, per);
            println!(
                "  SPI {mhz:>2} MHz, {:>2} us/transfer: bus time {:>8.1} ms, TCP goodput {:>6.2} Mbit/s, \
                 frame throughput {:>6.2} Mbit/s",
                per.as_micros(),
                t.as_secs_f64() * 1e3,
                len as f64 * 8.0 / t.as_secs_f64() / 1e6,
                bus.payload_rate_at(mhz * 1_000_000, 8, per) * 8.0 / 1e6
            );
        }
    }
    println!(
        "  host wall clock (emulator, no bus delay): {:.1} ms, {:.1} Mbit/s",
        wall.as_secs_f64() * 1e3,
        len as f64 * 8.0 / wall.as_secs_f64() / 1e6
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let len = if full { 16 << 20 } else { 1 << 20 };
    let (_switch, emu, dev, peer) = setup();
    let bus = emu.bus();

    // Warm up (ARP, windows).
    transfer(&dev, &peer, PEER_IP, 7000, 256 * 1024);

    let b0 = bus.snapshot();
    let wall = transfer(&dev, &peer, PEER_IP, 7100, len);
    report(
        "host -> AP (dut sends)",
        len,
        wall,
        &bus.snapshot().since(&b0),
    );

    let b0 = bus.snapshot();
    let wall = transfer(&peer, &dev, DUT_IP, 7200, len);
    report(
        "AP -> host (dut receives)",
        len,
        wall,
        &bus.snapshot().since(&b0),
    );

    let s = dev.link_stats();
    println!(
        "driver: {} transfers, {} frames out, {} in, {} dropped (checksum/length/interface)",
        s.transfers,
        s.tx_frames,
        s.rx_frames,
        s.bad_checksum + s.bad_length + s.unknown_if
    );
}
