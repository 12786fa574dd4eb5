//! The conformance suite (`tests/conformance`) on the W5500, both ways:
//!
//! * `macraw`: the full stack (`HostStack`) over `W5500Link` — the
//!   emulated chip in MACRAW on a memory-switch port, dropping frames its
//!   RX ring cannot hold as the chip does — against a plain `HostStack`
//!   peer on the same switch (dut 10.0.0.1/24 with the TCP window the ring
//!   always holds, `MAX_TCP_WINDOW`; peer 10.0.0.2/24, the peer answers
//!   DNS).
//! * `offload`: `W5500Offload` (the chip's hardwired sockets, played by
//!   host sockets) against the Linux kernel as peer. Both live in a fresh
//!   network namespace whose loopback carries the kernel's 10.89.0.1/24 and
//!   the chip's 10.89.0.2/24; the emulator creates its host sockets inside
//!   it, so the kernel talks to the chip over loopback. 10.89.0.99 is a
//!   host that never answers ARP (for the connect-timeout case).
//!   Needs root and `ip`; without them the cases skip with a reason (or
//!   fail under `CI=true`, like `tests/tap.rs`).
//!
//! Why a namespace for the loopback peer: `KernelPeer` always enters a named
//! namespace (`/run/netns/<name>`) to create its sockets; there is no
//! constructor for the host's own network namespace, so a namespace-free
//! loopback peer (chip at 127.0.0.2, kernel at 127.0.0.1) cannot be
//! expressed with it as it stands.
#![cfg(all(feature = "std", feature = "full-stack", feature = "w5500"))]

mod support;
#[macro_use]
mod conformance;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use conformance::{Fixture, NetdevPeer};
use netdever::phy::memory::MemorySwitch;
use netdever::phy::w5500::{W5500Link, MAX_TCP_WINDOW};
use netdever::phy::{Link, RxSignal};
use netdever::platform::StdPlatform;
use netdever::stack::host::HostStack;
use netdever::stack::StackConfig;
use netdever::{ConnectParams, IpConfig, IpMode, Netlinker};
use netdever_emu::w5500::{W5500Emu, W5500Int};

const DUT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x55, 1];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x55, 2];
const DUT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// Sleep on INTn: the W5500 link's receive signal.
struct IntSignal(W5500Int);

impl RxSignal for IntSignal {
    fn wait(&self, timeout: Option<Duration>) {
        self.0
            .wait_low(timeout.unwrap_or(Duration::from_millis(10)));
    }
}

fn stack(link: impl Link + Send + 'static, config: IpConfig, rx_window: usize) -> HostStack {
    let ip = IpMode::Static(config);
    let dev = HostStack::new(
        link,
        StackConfig {
            ip: ip.clone(),
            tcp_rx_buffer: rx_window,
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

/// (a) The full stack over the W5500 in MACRAW, on a memory switch.
fn macraw_fixture() -> Option<Fixture<HostStack, NetdevPeer<HostStack>>> {
    let switch = MemorySwitch::new();
    let emu = W5500Emu::with_link(switch.port(DUT_MAC));
    emu.set_macraw_overrun_drops(true);
    let link = W5500Link::new(emu.spi(), DUT_MAC)
        .expect("W5500Link::new")
        .with_rx_signal(Arc::new(IntSignal(emu.int_pin())));
    let dut = stack(
        link,
        IpConfig::new(DUT_IP, 24).with_dns(PEER_IP),
        MAX_TCP_WINDOW,
    );
    let peer = NetdevPeer::new(stack(
        switch.port(PEER_MAC),
        IpConfig::new(PEER_IP, 24),
        StackConfig::default().tcp_rx_buffer,
    ))
    .with_dns(&[
        ("peer.conformance.test", PEER_IP),
        ("other.conformance.test", Ipv4Addr::new(10, 0, 0, 77)),
    ])
    .expect("peer DNS responder");
    Some(Fixture {
        dut,
        peer,
        guard: Box::new((emu, switch)),
    })
}

mod macraw {
    conformance_tests!(super::macraw_fixture);
}

#[cfg(feature = "tap")]
mod offload_fixture {
    use super::*;
    use conformance::KernelPeer;
    use netdever::offload::w5500::{W5500Config, W5500Offload};
    use netdever_emu::w5500::W5500Spi;
    use support::Netns;

    const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 1);
    const CHIP_IP: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 2);
    const GHOST: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 99);

    pub type Offload = Arc<W5500Offload<W5500Spi, StdPlatform>>;

    /// (b) W5500 offload, the kernel of a fresh namespace as peer.
    pub fn fixture() -> Option<Fixture<Offload, KernelPeer>> {
        if let Some(missing) = support::netns_missing() {
            support::require("w5500 offload conformance", &missing, false).ok()?;
        }
        let ns = Netns::new("w5500").expect("create network namespace");
        for ip in [KERNEL_IP, CHIP_IP] {
            ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "lo"])
                .expect("address on the namespace's loopback");
        }
        let emu = W5500Emu::new();
        emu.set_netns(Some(format!("/run/netns/{}", ns.name()).into()));
        emu.add_silent_host(GHOST);
        let dev = W5500Offload::new(emu.spi(), StdPlatform::new(), W5500Config::default())
            .expect("W5500Offload::new");
        dev.net_connect(&ConnectParams {
            ip: IpMode::Static(IpConfig::new(CHIP_IP, 24).with_dns(KERNEL_IP)),
            ..Default::default()
        })
        .expect("net_connect (static)");
        let peer = KernelPeer::new(ns.name(), KERNEL_IP)
            .with_dns(&[
                ("kernel.conformance.test", KERNEL_IP),
                ("other.conformance.test", Ipv4Addr::new(10, 89, 0, 77)),
            ])
            .expect("DNS responder in the namespace");
        Some(Fixture {
            dut: Arc::new(dev),
            peer,
            // The emulator (and its host sockets) goes before the namespace.
            guard: Box::new((emu, ns)),
        })
    }
}

#[cfg(feature = "tap")]
mod offload {
    conformance_tests!(super::offload_fixture::fixture);
}
