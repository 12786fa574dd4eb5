//! The conformance suite (`tests/conformance`) on the ESP-AT backend: the
//! driver on the emulated chip (station 127.0.0.3), and the Linux kernel on
//! loopback (127.0.0.1) as the peer, through std::net sockets.
//!
//! The peer is the suite's `KernelPeer` at 127.0.0.1. When the machine
//! allows it (root, `ip`), each case gets a fresh network namespace holding
//! the emulator's host sockets and the peer's, so the suite's fixed ports
//! never meet other programs; otherwise it runs on the host's loopback.
//!
//! Cases left out, because the AT command set cannot express what they check
//! (see the driver docs, "Limits of the AT command set"):
//! * `tcp_reset`: the firmware reports a peer's RST like its FIN
//!   (`<link>,CLOSED`), so `recv` gives EOF instead of `ConnectionReset`.
//!   The other half (Linger(0) resets the peer) is checked in
//!   `tests/espat_driver.rs`.
//! * `shutdown_write`: no half-close command; `shutdown(Write)` is
//!   `NotSupported`.
//! * `concurrency_8_threads`: eight sockets at once; the chip has five links.
//!
//! Emulated network details the cases rely on: the host 127.0.0.99 (and .98)
//! never answers a SYN (`connect_deadline_timeout`), and names are resolved
//! from the emulated AP's DNS table, which holds the peer's records.
#![cfg(all(feature = "std", feature = "esp-at", feature = "tap"))]

#[macro_use]
mod conformance;
#[path = "espat_support.rs"]
mod espat_support;
use espat_support::support;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use conformance::{Fixture, KernelPeer};
use espat_support::{emu_config, netns, params, test_driver_config, Dev, Rig, PEER_IP};
use netdever::Netlinker;

/// Names the emulated AP's DNS knows.
const RECORDS: &[(&str, Ipv4Addr)] = &[
    ("peer.conformance.test", PEER_IP),
    ("other.conformance.test", Ipv4Addr::new(10, 0, 0, 77)),
];

/// The driver on a fresh emulator, joined; the peer on loopback; both in a
/// fresh namespace when possible.
fn fixture() -> Option<Fixture<Arc<Dev>, KernelPeer>> {
    let ns = netns();
    let name = ns.as_ref().map(|n| n.name().to_string());
    let make = || {
        let mut cfg = emu_config();
        cfg.dns = RECORDS.iter().map(|(n, a)| (n.to_string(), *a)).collect();
        cfg.connect_timeout = Duration::from_secs(2);
        let rig = Rig::new(cfg, test_driver_config());
        for ghost in [98, 99] {
            rig.emu.blackhole(Ipv4Addr::new(127, 0, 0, ghost));
        }
        rig
    };
    // The emulator's threads (and so its host sockets) live where it starts.
    let rig = match &name {
        Some(n) => support::in_netns(n, make).expect("start the emulator in the namespace"),
        None => make(),
    };
    rig.dev.net_connect(&params()).expect("net_connect");
    assert_eq!(
        netdever::Netdever::addr(&*rig.dev),
        Ok(IpAddr::V4(espat_support::DEV_IP))
    );
    let Rig { dev, emu } = rig;
    let peer = match &name {
        Some(n) => KernelPeer::new(n, PEER_IP),
        None => KernelPeer::host(PEER_IP),
    };
    Some(Fixture {
        dut: dev,
        // The firmware resolves names from the emulated AP's table.
        peer: peer.with_names(RECORDS),
        // Dropped in order: the emulator (its sockets), then the namespace.
        guard: Box::new((emu, ns)),
    })
}

mod suite {
    // Left out: what the AT command set cannot express (module docs).
    conformance_tests!(super::fixture; except
        tcp_reset,             // a peer's RST reads as EOF
        shutdown_write,        // no half-close command
        concurrency_8_threads, // five links
    );
}

/// The cases left out (see the module docs) fail for the documented
/// reasons, and only for those.
mod limits {
    use super::*;
    use netdever::{Deadline, Error, MsgFlags, Shutdown, Socketer};

    #[test]
    fn peer_reset_reads_as_eof_and_no_half_close() {
        conformance::run_case("espat_limits", fixture, |dut, peer| {
            let (fd, s, _) = conformance::connected_pair(dut, peer);
            assert_eq!(dut.shutdown(fd, Shutdown::Write), Err(Error::NotSupported));
            s.abort().unwrap();
            let mut buf = [0u8; 8];
            let d = Deadline::after(dut.now(), Duration::from_secs(5));
            assert_eq!(
                dut.recv(fd, &mut buf, MsgFlags::NONE, d),
                Ok(0),
                "RST reads as EOF"
            );
            dut.close(fd).unwrap();
            assert_eq!(netdever::Netdever::capabilities(dut).max_sockets, 5);
        });
    }
}
