//! The conformance suite on `netdever_emu::kernel::KernelNetdev` (the
//! host kernel's sockets behind the netdever contract; the peer of the
//! offload boards on the simulated network), two ways:
//!
//! * `netns`: dut 10.61.0.1 inside a fresh network namespace, the Linux
//!   kernel as peer (`KernelPeer`, 10.61.0.2, with a DNS responder). Both
//!   addresses sit on a TAP interface nobody reads, so 10.61.0.99 is a host
//!   that never answers (the connect-timeout case). Needs root and `ip`;
//!   skips otherwise (fails under `CI=true`).
//! * `loopback`: dut and peer are two `KernelNetdev`s on the host's
//!   loopback (127.61.N.1 and 127.61.N.2, a fresh pair per case so parallel
//!   cases never share ports), the peer running the suite's DNS responder
//!   when it may bind port 53. Runs anywhere. It leaves out
//!   `connect_deadline_timeout`: every 127.0.0.0/8 address is local, so a
//!   connect to a "host that does not answer" there is refused at once —
//!   loopback has no silent hosts.
//!
//! Plus a few KernelNetdev specifics: it refuses destinations outside
//! loopback when it has no namespace, link down/up, host table.
#![cfg(all(feature = "std", feature = "full-stack", feature = "tap"))]

mod support;
#[macro_use]
mod conformance;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conformance::{Fixture, KernelPeer, NetdevPeer};
use netdever::{
    AddressFamily, ConnectParams, Deadline, Error, Event, IpAddr, IpConfig, IpMode, MsgFlags,
    Netdever, Netlinker, Protocol, SockType, SocketAddr, Socketer,
};
use netdever_emu::kernel::KernelNetdev;
use support::Netns;

const NS_DUT: Ipv4Addr = Ipv4Addr::new(10, 61, 0, 1);
const NS_PEER: Ipv4Addr = Ipv4Addr::new(10, 61, 0, 2);
const NS_TAP: &str = "ndvk0";

type Dut = Arc<KernelNetdev>;

/// (a) In a namespace, the kernel as peer.
fn netns_fixture() -> Option<Fixture<Dut, KernelPeer>> {
    let test = std::thread::current()
        .name()
        .unwrap_or("kernel netns conformance")
        .to_string();
    if let Some(missing) = support::netns_missing() {
        support::require(&test, &missing, false).ok()?;
    }
    let ns = Netns::new("kern").expect("create network namespace");
    // A TAP with no reader: its subnet is routed there and nobody answers,
    // while the two local addresses reach each other over loopback.
    ns.ip(&["tuntap", "add", "mode", "tap", "name", NS_TAP])
        .expect("TAP in the namespace");
    ns.ip(&["link", "set", NS_TAP, "up"]).expect("TAP up");
    for ip in [NS_DUT, NS_PEER] {
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", NS_TAP])
            .expect("address in the namespace");
    }
    let dut = KernelNetdev::in_netns(
        IpConfig::new(NS_DUT, 24).with_dns(NS_PEER),
        format!("/run/netns/{}", ns.name()),
    )
    .expect("KernelNetdev in the namespace");
    let peer = KernelPeer::new(ns.name(), NS_PEER)
        .with_dns(&[
            ("peer.conformance.test", NS_PEER),
            ("other.conformance.test", Ipv4Addr::new(10, 61, 0, 77)),
        ])
        .expect("DNS responder in the namespace");
    Some(Fixture {
        dut: Arc::new(dut),
        peer,
        guard: Box::new(ns),
    })
}

mod netns {
    conformance_tests!(super::netns_fixture);
}

static PAIR: AtomicUsize = AtomicUsize::new(0);

/// A fresh pair of loopback addresses 127.61.N.1 / 127.61.N.2.
fn loopback_pair() -> (Ipv4Addr, Ipv4Addr) {
    let n = (PAIR.fetch_add(1, Ordering::SeqCst) % 250) as u8 + 1;
    (Ipv4Addr::new(127, 61, n, 1), Ipv4Addr::new(127, 61, n, 2))
}

/// (b) Two KernelNetdevs on the host's loopback.
fn loopback_fixture() -> Option<Fixture<Dut, NetdevPeer<Dut>>> {
    let (a, b) = loopback_pair();
    let dut = KernelNetdev::with_config(IpConfig::new(a, 8).with_dns(b), None)
        .expect("KernelNetdev on loopback");
    let peer = Arc::new(KernelNetdev::new(b).expect("peer KernelNetdev on loopback"));
    let records = [
        ("peer.conformance.test", b),
        ("other.conformance.test", Ipv4Addr::new(127, 61, 0, 77)),
    ];
    let peer = match NetdevPeer::new(peer.clone()).with_dns(&records) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("note: no DNS responder on {b}:53 ({e}); the dns case checks literals only");
            NetdevPeer::new(peer)
        }
    };
    Some(Fixture {
        dut: Arc::new(dut),
        peer,
        guard: Box::new(()),
    })
}

mod loopback {
    // connect_deadline_timeout: no silent host on loopback (module docs).
    conformance_tests!(super::loopback_fixture; except connect_deadline_timeout);
}

// ---------------------------------------------------------------------------
// KernelNetdev specifics
// ---------------------------------------------------------------------------

fn dl(d: &impl Socketer, t: Duration) -> Deadline {
    Deadline::after(d.now(), t)
}

/// Outside a namespace the device lives and talks only in 127.0.0.0/8:
/// other addresses are refused before anything is sent.
#[test]
fn loopback_only_without_a_namespace() {
    let e = KernelNetdev::new(Ipv4Addr::new(192, 0, 2, 1)).expect_err("non-loopback address");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    let (a, _) = loopback_pair();
    let dev = KernelNetdev::new(a).unwrap();
    let fd = dev
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .unwrap();
    let far = SocketAddr::from(([192, 0, 2, 1], 80));
    assert_eq!(
        dev.connect(fd, None, far, dl(&dev, Duration::from_secs(1))),
        Err(Error::NetworkUnreachable)
    );
    let u = dev
        .socket(AddressFamily::Inet, SockType::Dgram, Protocol::Udp)
        .unwrap();
    assert_eq!(
        dev.send_to(
            u,
            b"x",
            MsgFlags::NONE,
            far,
            dl(&dev, Duration::from_secs(1))
        ),
        Err(Error::NetworkUnreachable)
    );
    assert_eq!(
        dev.set_addr(IpConfig::new(Ipv4Addr::new(192, 0, 2, 1), 24)),
        Err(Error::AddrNotAvailable)
    );
    // Binding an address that is not the device's own is refused too.
    assert_eq!(
        dev.bind(u, SocketAddr::from(([127, 0, 0, 1], 0))),
        Err(Error::AddrNotAvailable)
    );
    dev.close(fd).unwrap();
    dev.close(u).unwrap();
}

static EVENTS: Mutex<Vec<Event>> = Mutex::new(Vec::new());

/// net_disconnect takes the device down (NetDown, `NetworkDown` for new
/// connections and addressing), net_connect brings it back (NetUp).
#[test]
fn link_down_and_up() {
    let (a, b) = loopback_pair();
    let dev = KernelNetdev::new(a).unwrap();
    let peer = KernelNetdev::new(b).unwrap();
    static CB: fn(Event) = |e| EVENTS.lock().unwrap().push(e);
    dev.net_notify(Some(&CB));
    assert_eq!(dev.addr(), Ok(IpAddr::V4(a)));
    dev.net_disconnect().unwrap();
    assert_eq!(dev.addr(), Err(Error::NetworkDown));
    let fd = dev
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .unwrap();
    let l = peer
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .unwrap();
    peer.bind(l, SocketAddr::from(([0, 0, 0, 0], 0))).unwrap();
    peer.listen(l, 1).unwrap();
    let to = peer.local_addr(l).unwrap();
    assert_eq!(
        dev.connect(fd, None, to, dl(&dev, Duration::from_secs(1))),
        Err(Error::NetworkDown)
    );
    dev.net_connect(&ConnectParams {
        ip: IpMode::Static(IpConfig::new(a, 8)),
        ..Default::default()
    })
    .unwrap();
    dev.connect(fd, None, to, dl(&dev, Duration::from_secs(5)))
        .expect("connect once up again");
    let (s, from) = peer.accept(l, dl(&peer, Duration::from_secs(5))).unwrap();
    assert_eq!(
        from.ip(),
        IpAddr::V4(a),
        "the device's address is the source"
    );
    assert_eq!(*EVENTS.lock().unwrap(), [Event::NetDown, Event::NetUp]);
    dev.net_notify(None);
    for (d, f) in [(&dev, fd), (&peer, s), (&peer, l)] {
        d.close(f).unwrap();
    }
}

/// Names: literals, the host table, `localhost`; unknown names without a
/// DNS server are `HostUnknown`; IPv6 is `FamilyNotSupported`.
#[test]
fn host_table() {
    let (a, _) = loopback_pair();
    let dev = KernelNetdev::new(a).unwrap();
    dev.add_host("Peer.Sim.Test", Ipv4Addr::new(127, 0, 0, 1));
    let v4 = AddressFamily::Inet;
    assert_eq!(
        dev.get_host_by_name("peer.sim.test", v4),
        Ok(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)))
    );
    assert_eq!(
        dev.get_host_by_name("localhost", v4),
        Ok(IpAddr::V4(Ipv4Addr::LOCALHOST))
    );
    assert_eq!(
        dev.get_host_by_name("127.9.9.9", v4),
        Ok(IpAddr::V4(Ipv4Addr::new(127, 9, 9, 9)))
    );
    assert_eq!(
        dev.get_host_by_name("nowhere.test", v4),
        Err(Error::HostUnknown)
    );
    assert_eq!(
        dev.get_host_by_name("localhost", AddressFamily::Inet6),
        Err(Error::FamilyNotSupported)
    );
    assert!(!dev.capabilities().dhcp);
    assert_eq!(dev.hardware_addr().unwrap()[..2], [0x02, 0x4b]);
}
