//! The conformance suite on the built-in simulated network: two `HostStack`s
//! on a `MemorySwitch` (dut 10.0.0.1/24, peer 10.0.0.2/24, static), plus
//! tests only the memory switch can do (fault injection, pulling the cable).
#![cfg(all(feature = "std", feature = "full-stack"))]

mod support;
#[macro_use]
mod conformance;

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conformance::{Fixture, NetdevPeer};
use netdever::phy::fault::{FaultConfig, FaultLink};
use netdever::phy::memory::{MemoryLink, MemorySwitch};
use netdever::phy::Link;
use netdever::stack::host::HostStack;
use netdever::stack::StackConfig;
use netdever::{ConnectParams, Event, IpConfig, IpMode, Netdever, Netlinker, Socketer};

const DUT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const DUT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// Names the peer's DNS responder knows.
const DNS_RECORDS: &[(&str, Ipv4Addr)] = &[
    ("peer.conformance.test", PEER_IP),
    ("other.conformance.test", Ipv4Addr::new(10, 0, 0, 77)),
];

/// A `HostStack` on `link` with a static address, up and running.
fn stack(link: impl Link + Send + 'static, config: IpConfig) -> HostStack {
    let ip = IpMode::Static(config);
    let dev = HostStack::new(
        link,
        StackConfig {
            ip: ip.clone(),
            ..Default::default()
        },
    )
    .expect("HostStack::new");
    dev.net_connect(&ConnectParams {
        ip,
        ..Default::default()
    })
    .expect("net_connect (static)");
    assert!(
        conformance::wait_for_addr(&dev, Duration::from_secs(5)),
        "stack has no address after net_connect"
    );
    dev
}

fn dut_config() -> IpConfig {
    IpConfig::new(DUT_IP, 24).with_dns(PEER_IP)
}

fn peer_config() -> IpConfig {
    IpConfig::new(PEER_IP, 24)
}

/// What the fixtures keep alive until the end of a case.
struct Guard {
    _switch: MemorySwitch,
}

/// dut and peer on a fresh switch; the peer runs a DNS responder.
fn fixture() -> Option<Fixture<HostStack, NetdevPeer<HostStack>>> {
    let switch = MemorySwitch::new();
    let dut = stack(switch.port(DUT_MAC), dut_config());
    let peer = stack(switch.port(PEER_MAC), peer_config());
    let peer = NetdevPeer::new(peer)
        .with_dns(DNS_RECORDS)
        .expect("peer DNS responder on port 53");
    Some(Fixture {
        dut,
        peer,
        guard: Box::new(Guard { _switch: switch }),
    })
}

mod suite {
    conformance_tests!(super::fixture);
}

/// Fault-injected fixture: FaultLink (loss 2%, reorder 2%, duplicate 2%,
/// corrupt 1%) on the dut's port, both directions.
fn faulty_fixture() -> Option<Fixture<HostStack, NetdevPeer<HostStack>>> {
    let switch = MemorySwitch::new();
    let faults = FaultConfig {
        loss_pct: 2,
        duplicate_pct: 2,
        reorder_pct: 2,
        corrupt_pct: 1,
        seed: 0x5eed_1234,
    };
    let dut = stack(FaultLink::new(switch.port(DUT_MAC), faults), dut_config());
    let peer = NetdevPeer::new(stack(switch.port(PEER_MAC), peer_config()));
    Some(Fixture {
        dut,
        peer,
        guard: Box::new(Guard { _switch: switch }),
    })
}

/// 16 MiB each way through a lossy, reordering, duplicating, corrupting
/// link arrive with the right SHA-256; bounded to 5 minutes.
#[test]
fn integrity_16mib_through_faults() {
    conformance::run_case_for(
        "integrity_16mib_through_faults",
        Duration::from_secs(300),
        faulty_fixture,
        |dut, peer| {
            conformance::transfer_sha256_eof(dut, peer, 16 << 20, Duration::from_secs(140), false)
        },
    );
}

/// Pulling the dut's cable fires NetDown; plugging it back fires NetUp, and
/// traffic flows again.
#[test]
fn link_down_up_notifies() {
    support::with_timeout("link_down_up_notifies", Duration::from_secs(60), || {
        let switch = MemorySwitch::new();
        let link: MemoryLink = switch.port(DUT_MAC);
        let cable = link.handle();
        let dut = stack(link, dut_config());
        let peer = NetdevPeer::new(stack(switch.port(PEER_MAC), peer_config()));

        let events: Arc<Mutex<Vec<Event>>> = Arc::default();
        let ev = events.clone();
        let cb: &'static (dyn Fn(Event) + Send + Sync) =
            Box::leak(Box::new(move |e: Event| ev.lock().unwrap().push(e)));
        dut.net_notify(Some(cb));

        let count = |want: Event| {
            events
                .lock()
                .unwrap()
                .iter()
                .filter(|&&e| e == want)
                .count()
        };
        let downs = count(Event::NetDown);
        cable.set_link_up(false);
        let t0 = Instant::now();
        assert!(
            support::wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
                count(Event::NetDown) > downs
            }),
            "no NetDown within 5 s of pulling the cable (events: {:?})",
            events.lock().unwrap()
        );
        eprintln!("NetDown after {:?}", t0.elapsed());

        let ups = count(Event::NetUp);
        cable.set_link_up(true);
        let t0 = Instant::now();
        assert!(
            support::wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
                count(Event::NetUp) > ups
            }),
            "no NetUp within 5 s of plugging the cable back (events: {:?})",
            events.lock().unwrap()
        );
        eprintln!("NetUp after {:?}", t0.elapsed());
        let seq = events.lock().unwrap().clone();
        let last_down = seq.iter().rposition(|&e| e == Event::NetDown);
        let last_up = seq.iter().rposition(|&e| e == Event::NetUp);
        assert!(last_down < last_up, "NetUp comes after NetDown: {seq:?}");

        // Traffic flows again after the link came back.
        let echo = conformance::EchoServer::start(&peer);
        let fd = conformance::connect_tcp(&dut, echo.addr);
        conformance::send_all(&dut, fd, b"after link up", Duration::from_secs(5));
        assert_eq!(
            conformance::recv_exact(&dut, fd, 13, Duration::from_secs(5)),
            b"after link up"
        );
        dut.close(fd).unwrap();
        dut.net_notify(None);
        drop(echo);
        drop(peer);
        drop(dut);
    });
}

/// Sanity check of the fixture itself: both stacks have the configured
/// addresses and can see each other's capabilities.
#[test]
fn fixture_addresses() {
    support::with_timeout("fixture_addresses", Duration::from_secs(30), || {
        let Fixture { dut, peer, guard } = fixture().unwrap();
        assert_eq!(dut.addr(), Ok(DUT_IP.into()));
        assert_eq!(peer.device().addr(), Ok(PEER_IP.into()));
        let cfg = dut.ip_config().expect("ip_config");
        assert_eq!(cfg.prefix_len, 24);
        assert_eq!(cfg.dns.as_slice(), &[PEER_IP]);
        let caps = dut.capabilities();
        assert!(caps.max_sockets >= 1 && caps.server, "{caps:?}");
        drop((dut, peer, guard));
    });
}
