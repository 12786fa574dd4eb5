//! The conformance suite on the full stack over the ESP-Hosted driver: the
//! dut is an `EspHostedDevice` whose emulated ESP32 bridges to a memory
//! switch (dut 10.0.0.1/24, static, joined with `net_connect`); the peer is
//! a second `HostStack` on the switch (10.0.0.2/24) running a DNS responder.
#![cfg(all(feature = "std", feature = "full-stack", feature = "esp-hosted"))]

#[allow(unused_imports)]
mod support;
#[macro_use]
mod conformance;

use std::net::Ipv4Addr;
use std::time::Duration;

use conformance::{Fixture, NetdevPeer};
use netdever::phy::esp_hosted::{EspHostedDevice, EspHostedLink};
use netdever::phy::memory::MemorySwitch;
use netdever::stack::host::HostStack;
use netdever::stack::StackConfig;
use netdever::{ConnectParams, IpConfig, IpMode, Netlinker};
use netdever_emu::esp_hosted::{EspHostedEmu, EspHostedPin, EspHostedSpi};

const DUT_MAC: [u8; 6] = [0x02, 0xe5, 0, 0, 0, 1];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const DUT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const SSID: &str = "conformance-ap";
const PASS: &str = "conformance-pass";

/// Names the peer's DNS responder knows.
const DNS_RECORDS: &[(&str, Ipv4Addr)] = &[
    ("peer.conformance.test", PEER_IP),
    ("other.conformance.test", Ipv4Addr::new(10, 0, 0, 77)),
];

type Dut = EspHostedDevice<EspHostedSpi, EspHostedPin, EspHostedPin>;

/// What lives as long as a case: the switch and the chip.
struct Guard {
    _switch: MemorySwitch,
    _emu: EspHostedEmu,
}

fn fixture() -> Option<Fixture<Dut, NetdevPeer<HostStack>>> {
    let switch = MemorySwitch::new();
    let emu = EspHostedEmu::new(switch.port(DUT_MAC), SSID, PASS);
    let link = EspHostedLink::new(emu.spi(), emu.handshake_pin(), emu.data_ready_pin())
        .with_rx_signal(emu.rx_signal());
    let ip = IpMode::Static(IpConfig::new(DUT_IP, 24).with_dns(PEER_IP));
    let dut = EspHostedDevice::new(
        link,
        StackConfig {
            ip: ip.clone(),
            ..Default::default()
        },
    )
    .expect("EspHostedDevice::new");
    dut.net_connect(&ConnectParams {
        ssid: SSID,
        passphrase: PASS,
        ip,
        connect_timeout: Duration::from_secs(10),
        ..Default::default()
    })
    .expect("net_connect through the emulated ESP32");
    assert!(conformance::wait_for_addr(&dut, Duration::from_secs(5)));

    let pip = IpMode::Static(IpConfig::new(PEER_IP, 24));
    let peer = HostStack::new(
        switch.port(PEER_MAC),
        StackConfig {
            ip: pip.clone(),
            ..Default::default()
        },
    )
    .expect("peer stack");
    peer.net_connect(&ConnectParams {
        ip: pip,
        ..Default::default()
    })
    .expect("peer up");
    let peer = NetdevPeer::new(peer)
        .with_dns(DNS_RECORDS)
        .expect("peer DNS responder on port 53");
    Some(Fixture {
        dut,
        peer,
        guard: Box::new(Guard {
            _switch: switch,
            _emu: emu,
        }),
    })
}

mod suite {
    conformance_tests!(super::fixture);
}
