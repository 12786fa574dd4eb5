//! The ESP-Hosted-FG emulator on its own, driven with raw SPI transfers
//! built by hand: header layout and checksum byte for byte, the init event
//! after boot and after a reset, sequence-number and checksum checks, the
//! access point's credential checks, bridging, events and fault knobs.
#![cfg(all(feature = "std", feature = "full-stack", feature = "esp-hosted"))]

use std::time::{Duration, Instant};

use embedded_hal::digital::InputPin;
use embedded_hal::spi::SpiDevice;
use netdever::phy::esp_hosted::ctrl::{self, Decoder, Value};
use netdever::phy::memory::{MemoryLink, MemorySwitch};
use netdever::phy::Link;
use netdever_emu::esp_hosted::{Corruption, EspHostedEmu, EspHostedSpi};

const STA_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x22];
const SSID: &str = "netdever-lab";
const PASS: &str = "correct horse";

fn chip() -> (EspHostedEmu, MemoryLink) {
    let sw = MemorySwitch::new();
    let emu = EspHostedEmu::new(sw.port(STA_MAC), SSID, PASS);
    (emu, sw.port(PEER_MAC))
}

/// The checksum, written out independently of both implementations.
fn sum(frame: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for (i, b) in frame.iter().enumerate() {
        if i != 6 && i != 7 {
            s += *b as u32;
        }
    }
    (s & 0xffff) as u16
}

/// A host buffer: header by hand, payload at 12.
fn buffer(if_type: u8, flags: u8, seq: u16, payload: &[u8]) -> [u8; 1600] {
    let mut b = [0u8; 1600];
    let len = payload.len() as u16;
    b[0] = if_type;
    b[1] = flags;
    b[2] = len as u8;
    b[3] = (len >> 8) as u8;
    b[4] = 12;
    b[8] = seq as u8;
    b[9] = (seq >> 8) as u8;
    b[12..12 + payload.len()].copy_from_slice(payload);
    let s = sum(&b[..12 + payload.len()]);
    b[6] = s as u8;
    b[7] = (s >> 8) as u8;
    b
}

fn xfer(spi: &mut EspHostedSpi, tx: &[u8; 1600]) -> [u8; 1600] {
    let mut rx = [0u8; 1600];
    spi.transfer(&mut rx, tx).unwrap();
    rx
}

fn idle() -> [u8; 1600] {
    [0u8; 1600]
}

fn le(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

/// Clock idle transfers until the chip sends something; returns it.
fn next_frame(spi: &mut EspHostedSpi) -> [u8; 1600] {
    for _ in 0..16 {
        let rx = xfer(spi, &idle());
        if le(&rx, 2) != 0 {
            return rx;
        }
    }
    panic!("chip sent nothing");
}

/// Serial TLV around a `CtrlMsg`.
fn tlv(ep: &[u8], data: &[u8]) -> Vec<u8> {
    let mut v = vec![1, ep.len() as u8, 0];
    v.extend_from_slice(ep);
    v.extend_from_slice(&[2, data.len() as u8, (data.len() >> 8) as u8]);
    v.extend_from_slice(data);
    v
}

/// A parsed control message from a chip buffer: (endpoint, fields of
/// CtrlMsg, fields of its payload).
type Fields = Vec<(u32, Vec<u8>, u64)>;
fn fields(b: &[u8]) -> Fields {
    let mut d = Decoder::new(b);
    let mut out = Vec::new();
    while let Some((f, v)) = d.next_field().unwrap() {
        match v {
            Value::Varint(x) => out.push((f, Vec::new(), x)),
            Value::Bytes(b) => out.push((f, b.to_vec(), 0)),
            _ => {}
        }
    }
    out
}
fn get(f: &Fields, n: u32) -> Option<&(u32, Vec<u8>, u64)> {
    f.iter().find(|x| x.0 == n)
}
fn ctrl_of(rx: &[u8; 1600]) -> (Vec<u8>, Fields, Fields) {
    assert_eq!(rx[0] & 0x0f, 3, "SERIAL interface");
    let len = le(rx, 2) as usize;
    let p = &rx[12..12 + len];
    assert_eq!(p[0], 1);
    let eplen = le(p, 1) as usize;
    let ep = p[3..3 + eplen].to_vec();
    assert_eq!(p[3 + eplen], 2);
    let dlen = le(p, 4 + eplen) as usize;
    let data = &p[6 + eplen..6 + eplen + dlen];
    assert_eq!(6 + eplen + dlen, len, "TLV covers the payload exactly");
    let top = fields(data);
    let id = get(&top, 2).unwrap().2 as u32;
    let body = get(&top, id).map(|x| fields(&x.1)).unwrap_or_default();
    (ep, top, body)
}

fn request(spi: &mut EspHostedSpi, seq: u16, msg: &[u8]) -> [u8; 1600] {
    let rx = xfer(spi, &buffer(3, 0, seq, &tlv(b"RPCRsp", msg)));
    assert_eq!(le(&rx, 2), 0, "nothing else pending");
    next_frame(spi)
}

fn boot(spi: &mut EspHostedSpi) {
    let rx = next_frame(spi);
    assert_eq!(rx[0], 0x05, "init event first");
}

fn connect(spi: &mut EspHostedSpi, seq: u16, ssid: &str, pwd: &str) -> i64 {
    let mut m = [0u8; 256];
    let n = ctrl::encode_connect_ap(&mut m, 9, ssid, pwd, "", false, 0).unwrap();
    let rx = request(spi, seq, &m[..n]);
    let (ep, top, body) = ctrl_of(&rx);
    assert_eq!(ep, b"RPCRsp");
    assert_eq!(get(&top, 1).unwrap().2, 2, "response");
    assert_eq!(get(&top, 2).unwrap().2, 207);
    assert_eq!(get(&top, 3).unwrap().2, 9, "uid echoed");
    get(&body, 1).map_or(0, |x| x.2 as i64)
}

#[test]
fn init_event_byte_for_byte_then_idle() {
    let (emu, _peer) = chip();
    let mut hs = emu.handshake_pin();
    let mut dr = emu.data_ready_pin();
    assert!(hs.is_high().unwrap());
    assert!(dr.is_high().unwrap(), "init event pending");
    let mut spi = emu.spi();
    let rx = xfer(&mut spi, &idle());
    let payload = [0x22, 9, 0x11, 1, 0xa0, 0x12, 1, 0x00, 0x13, 1, 0x00];
    let mut expect = [0u8; 23];
    expect[..12].copy_from_slice(&[0x05, 0, 11, 0, 12, 0, 0, 0, 0, 0, 0, 0x33]);
    expect[12..].copy_from_slice(&payload);
    let s = sum(&expect);
    expect[6] = s as u8;
    expect[7] = (s >> 8) as u8;
    assert_eq!(&rx[..23], &expect[..], "init event header and TLVs");
    assert_eq!(
        s,
        0x05 + 11 + 12 + 0x33 + payload.iter().map(|&b| b as u16).sum::<u16>()
    );
    assert!(rx[23..].iter().all(|&b| b == 0));
    assert!(!dr.is_high().unwrap(), "nothing left");
    // Idle buffer: if_type ESP_MAX_IF, if_num 0xF, len 0.
    let rx = xfer(&mut spi, &idle());
    assert_eq!(&rx[..12], &[0xf8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let s = emu.stats();
    assert_eq!(
        (s.transfers, s.tx_frames, s.rx_idle, s.events),
        (2, 1, 2, 1)
    );
    let bus = emu.bus().snapshot();
    assert_eq!((bus.bytes, bus.transactions, bus.payload), (3200, 2, 0));
}

#[test]
fn reset_boots_again_with_a_new_init_event() {
    let (emu, _peer) = chip();
    let mut spi = emu.spi();
    boot(&mut spi);
    // Sequence numbers count up from 0 per boot.
    let mut m = [0u8; 64];
    let n = ctrl::encode_get_mac(&mut m, 1, 1).unwrap();
    let rx = request(&mut spi, 0, &m[..n]);
    assert_eq!(le(&rx, 8), 1, "second buffer of this boot");

    emu.set_boot_time(Duration::from_millis(80));
    emu.reset();
    let mut hs = emu.handshake_pin();
    let mut dr = emu.data_ready_pin();
    assert!(!hs.is_high().unwrap(), "handshake low while booting");
    assert!(!dr.is_high().unwrap());
    let rx = xfer(&mut spi, &idle());
    assert!(
        rx.iter().all(|&b| b == 0xff),
        "nobody answers while booting"
    );
    assert_eq!(emu.stats().transfers_not_ready, 1);
    let t0 = Instant::now();
    while !hs.is_high().unwrap() {
        assert!(t0.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(t0.elapsed() >= Duration::from_millis(60));
    assert!(emu.wait_data_ready(Duration::from_secs(1)));
    let rx = xfer(&mut spi, &idle());
    assert_eq!(
        (rx[0], rx[11], rx[12]),
        (0x05, 0x33, 0x22),
        "new init event"
    );
    assert_eq!(le(&rx, 8), 0, "sequence restarts");
    assert_eq!(emu.stats().resets, 1);
}

#[test]
fn get_mac_request_and_response_bytes() {
    let (emu, _peer) = chip();
    let mut spi = emu.spi();
    boot(&mut spi);
    // CtrlMsg { msg_type: Req, msg_id: 101, uid: 7, req_get_mac_address { mode: 1 } }
    let msg = [0x08, 1, 0x10, 101, 0x18, 7, 0xaa, 0x06, 2, 0x08, 1];
    let mut m = [0u8; 64];
    let n = ctrl::encode_get_mac(&mut m, 7, 1).unwrap();
    assert_eq!(
        &m[..n],
        &msg,
        "driver encoder matches the hand-written bytes"
    );
    let req = buffer(3, 0, 0, &tlv(b"RPCRsp", &msg));
    assert_eq!(
        &req[..12 + 9],
        &[
            0x03, 0, 23, 0, 12, 0, req[6], req[7], 0, 0, 0, 0, 1, 6, 0, b'R', b'P', b'C', b'R',
            b's', b'p'
        ]
    );
    let rx = request(&mut spi, 0, &msg);
    assert_eq!(sum(&rx[..12 + le(&rx, 2) as usize]), le(&rx, 6), "checksum");
    let (ep, top, body) = ctrl_of(&rx);
    assert_eq!(ep, b"RPCRsp");
    assert_eq!(get(&top, 1).unwrap().2, 2);
    assert_eq!(get(&top, 2).unwrap().2, 201);
    assert_eq!(get(&top, 3).unwrap().2, 7);
    assert_eq!(get(&body, 1).unwrap().1, b"02:00:00:00:00:11");
    assert!(get(&body, 2).is_none(), "resp 0 omitted (proto3)");
    assert_eq!(emu.stats().ctrl_requests, 1);
}

#[test]
fn checksum_length_and_sequence_are_checked() {
    let (emu, _peer) = chip();
    let mut spi = emu.spi();
    boot(&mut spi);
    let mut m = [0u8; 64];
    let n = ctrl::encode_get_mac(&mut m, 1, 1).unwrap();
    let good = |seq| buffer(3, 0, seq, &tlv(b"RPCRsp", &m[..n]));

    let mut bad = good(0);
    bad[6] ^= 1;
    xfer(&mut spi, &bad);
    let mut bad = good(0);
    bad[20] ^= 0x80;
    xfer(&mut spi, &bad);
    let mut bad = good(0);
    bad[2..4].copy_from_slice(&1590u16.to_le_bytes());
    xfer(&mut spi, &bad);
    let mut bad = buffer(0x0e, 0, 0, &[1, 2, 3]);
    xfer(&mut spi, &bad);
    bad = buffer(4, 0, 1, &[1, 2, 3]); // HCI: valid but not served
    xfer(&mut spi, &bad);
    let s = emu.stats();
    assert_eq!(
        (
            s.rx_bad_checksum,
            s.rx_bad_length,
            s.rx_unknown_if,
            s.rx_ignored_if
        ),
        (2, 1, 1, 1)
    );
    assert_eq!(s.ctrl_requests, 0, "nothing bad reached the control path");
    assert!(!emu.data_ready_pin().is_high().unwrap());

    // In order (2), a gap (5), a replay (4: dropped).
    let rx = request(&mut spi, 2, &m[..n]);
    assert_eq!(rx[0], 3);
    let rx = request(&mut spi, 5, &m[..n]);
    assert_eq!(rx[0], 3);
    xfer(&mut spi, &good(4));
    let s = emu.stats();
    assert_eq!(
        (s.rx_seq_gaps, s.rx_seq_replays, s.ctrl_requests),
        (1, 1, 2)
    );
    assert!(
        !emu.data_ready_pin().is_high().unwrap(),
        "replay not answered"
    );
    // The host restarted its count: two more replays are dropped, then the
    // chip follows the new numbers.
    xfer(&mut spi, &good(0));
    xfer(&mut spi, &good(1));
    let rx = request(&mut spi, 2, &m[..n]);
    assert_eq!(rx[0], 3, "answered after the resync");
    let rx = request(&mut spi, 3, &m[..n]);
    assert_eq!(rx[0], 3);
    let s = emu.stats();
    assert_eq!(
        (s.rx_seq_gaps, s.rx_seq_replays, s.ctrl_requests),
        (2, 3, 4)
    );
}

#[test]
fn access_point_checks_credentials_and_bridges() {
    let (emu, mut peer) = chip();
    let mut spi = emu.spi();
    boot(&mut spi);
    assert_eq!(connect(&mut spi, 0, "other-net", PASS), 2, "no AP found");
    assert_eq!(connect(&mut spi, 1, SSID, "wrong"), 3, "invalid password");
    assert!(!emu.associated());

    // Not associated: frames go nowhere.
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&PEER_MAC);
    f[6..12].copy_from_slice(&STA_MAC);
    f[12] = 0x08;
    f[20] = 0xab;
    xfer(&mut spi, &buffer(1, 0, 2, &f));
    let mut buf = [0u8; 1600];
    assert_eq!(peer.receive(&mut buf).unwrap(), None);
    assert_eq!(emu.stats().dropped_not_associated, 1);

    assert_eq!(connect(&mut spi, 3, SSID, PASS), 0);
    assert!(emu.associated());
    let ev = next_frame(&mut spi);
    let (ep, top, _) = ctrl_of(&ev);
    assert_eq!(
        (ep.as_slice(), get(&top, 2).unwrap().2),
        (&b"RPCEvt"[..], 305)
    );

    // Host -> AP.
    xfer(&mut spi, &buffer(1, 0, 4, &f));
    assert_eq!(peer.receive(&mut buf).unwrap(), Some(60));
    assert_eq!(&buf[..60], &f[..]);
    // AP -> host: for the station, broadcast; not for another MAC.
    let mut g = f.clone();
    g[..6].copy_from_slice(&STA_MAC);
    g[6..12].copy_from_slice(&PEER_MAC);
    peer.transmit(&g).unwrap();
    let mut other = g.clone();
    other[..6].copy_from_slice(&[0x02, 9, 9, 9, 9, 9]);
    peer.transmit(&other).unwrap(); // flooded by the switch, filtered by the station
    let mut bcast = g.clone();
    bcast[..6].copy_from_slice(&[0xff; 6]);
    peer.transmit(&bcast).unwrap();
    assert!(emu.data_ready_pin().is_high().unwrap());
    let rx = next_frame(&mut spi);
    assert_eq!((rx[0], le(&rx, 2) as usize), (1, 60));
    assert_eq!(&rx[12..72], &g[..]);
    assert_eq!(sum(&rx[..72]), le(&rx, 6));
    let rx = next_frame(&mut spi);
    assert_eq!(&rx[12..18], &[0xff; 6]);
    let s = emu.stats();
    assert_eq!(
        (s.bridged_to_link, s.bridged_to_host, s.filtered),
        (1, 2, 1)
    );
    assert_eq!(s.connect_refused, 2);
    let bus = emu.bus().snapshot();
    assert_eq!(bus.payload, 3 * 60, "frame bytes both ways");
}

#[test]
fn station_drop_sends_disconnect_event() {
    let (emu, _peer) = chip();
    let mut spi = emu.spi();
    boot(&mut spi);
    assert_eq!(connect(&mut spi, 0, SSID, PASS), 0);
    next_frame(&mut spi); // connected event
    assert!(emu.drop_station(200));
    let rx = next_frame(&mut spi);
    let (ep, top, body) = ctrl_of(&rx);
    assert_eq!(ep, b"RPCEvt");
    assert_eq!(get(&top, 1).unwrap().2, 3, "event");
    assert_eq!(get(&top, 2).unwrap().2, 303);
    assert_eq!(get(&body, 5).unwrap().2, 200, "reason");
    assert_eq!(get(&body, 2).unwrap().1, SSID.as_bytes());
    assert!(!emu.associated());
    assert!(!emu.drop_station(200), "not associated any more");
    // DisconnectAP while not associated: failure (-1).
    let mut m = [0u8; 16];
    let n = ctrl::encode_disconnect_ap(&mut m, 3).unwrap();
    let rx = request(&mut spi, 1, &m[..n]);
    let (_, top, body) = ctrl_of(&rx);
    assert_eq!(get(&top, 2).unwrap().2, 208);
    assert_eq!(get(&body, 1).unwrap().2 as i64, -1);
    // The AP vanishing: no AP found.
    emu.set_ap_available(false);
    assert_eq!(connect(&mut spi, 2, SSID, PASS), 2);
}

#[test]
fn corruption_knobs_damage_what_they_say() {
    let (emu, _peer) = chip();
    let mut spi = emu.spi();
    emu.corrupt_next(Corruption::Checksum);
    let rx = next_frame(&mut spi);
    let n = 12 + le(&rx, 2) as usize;
    assert_eq!(sum(&rx[..n]).wrapping_add(1), le(&rx, 6));

    let mut m = [0u8; 64];
    let k = ctrl::encode_get_mac(&mut m, 1, 1).unwrap();
    emu.corrupt_next(Corruption::LengthPastBuffer);
    let rx = request(&mut spi, 0, &m[..k]);
    assert_eq!(le(&rx, 2), 1600);
    emu.corrupt_next(Corruption::UnknownIfType);
    let rx = request(&mut spi, 1, &m[..k]);
    assert_eq!(rx[0] & 0x0f, 0x0e);
    assert_eq!(
        sum(&rx[..12 + le(&rx, 2) as usize]),
        le(&rx, 6),
        "checksum still right"
    );
    emu.corrupt_next(Corruption::PayloadBit);
    let rx = request(&mut spi, 2, &m[..k]);
    assert_ne!(sum(&rx[..12 + le(&rx, 2) as usize]), le(&rx, 6));
    assert_eq!(emu.stats().tx_corrupted, 4);
}

#[test]
fn short_and_split_transactions() {
    let (emu, _peer) = chip();
    let mut spi = emu.spi();
    // The init event read in two operations of one chip-select cycle.
    let mut a = [0u8; 12];
    let mut b = [0u8; 1700];
    spi.transaction(&mut [
        embedded_hal::spi::Operation::Read(&mut a),
        embedded_hal::spi::Operation::Read(&mut b),
    ])
    .unwrap();
    assert_eq!((a[0], a[11], b[0]), (0x05, 0x33, 0x22));
    assert!(b[1588..].iter().all(|&x| x == 0), "past the buffer reads 0");
    assert_eq!(emu.bus().snapshot().bytes, 1712);
    // A request clocked short of its own length is dropped.
    let mut m = [0u8; 64];
    let n = ctrl::encode_get_mac(&mut m, 1, 1).unwrap();
    let full = buffer(3, 0, 0, &tlv(b"RPCRsp", &m[..n]));
    spi.write(&full[..20]).unwrap();
    assert_eq!(emu.stats().rx_bad_length, 1);
    // Fragmented request: two buffers, the first with MORE_FRAGMENT.
    let t = tlv(b"RPCRsp", &m[..n]);
    xfer(&mut spi, &buffer(3, 1, 1, &t[..10]));
    let rx = xfer(&mut spi, &buffer(3, 0, 2, &t[10..]));
    assert_eq!(le(&rx, 2), 0);
    let rx = next_frame(&mut spi);
    let (_, top, _) = ctrl_of(&rx);
    assert_eq!(get(&top, 2).unwrap().2, 201);
}
