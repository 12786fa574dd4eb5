//! The W5500 emulator against the datasheet, through raw SPI frames built
//! here by hand (not through the driver's bus layer, so a shared mistake
//! cannot hide): reset values, VDM/FDM framing, pointer wrap at 0xFFFF,
//! Sn_CR auto-clear, status transitions, interrupts and INTn, the UDP and
//! MACRAW RX headers, host-backed TCP, bus counting and the fault knobs.
#![cfg(all(feature = "std", feature = "w5500"))]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use embedded_hal::digital::InputPin;
use embedded_hal::spi::{Operation, SpiDevice};
use netdever::phy::memory::MemoryLink;
use netdever::phy::Link;
use netdever_emu::w5500::{W5500Emu, W5500Spi};

const CHIP_IP: [u8; 4] = [127, 0, 0, 2];

/// Block select values (datasheet table "Block Select Bits").
const COMMON: u8 = 0x00;
fn sreg(n: u8) -> u8 {
    n * 4 + 1
}
fn stx(n: u8) -> u8 {
    n * 4 + 2
}
fn srx(n: u8) -> u8 {
    n * 4 + 3
}

/// Raw frames: address (2 bytes), control = BSB<<3 | RWB<<2 | OM, data.
struct Raw(W5500Spi);

impl Raw {
    fn ctrl(bsb: u8, write: bool, om: u8) -> u8 {
        (bsb << 3) | ((write as u8) << 2) | om
    }
    fn read(&mut self, bsb: u8, addr: u16, n: usize) -> Vec<u8> {
        let mut out = vec![0u8; 3 + n];
        let mut tx = vec![0u8; 3 + n];
        tx[..3].copy_from_slice(&[(addr >> 8) as u8, addr as u8, Self::ctrl(bsb, false, 0)]);
        self.0
            .transaction(&mut [Operation::Transfer(&mut out, &tx)])
            .unwrap();
        assert_eq!(&out[..3], &[1, 2, 3], "MISO during the header phase");
        out.split_off(3)
    }
    fn write(&mut self, bsb: u8, addr: u16, data: &[u8]) {
        let h = [(addr >> 8) as u8, addr as u8, Self::ctrl(bsb, true, 0)];
        self.0
            .transaction(&mut [Operation::Write(&h), Operation::Write(data)])
            .unwrap();
    }
    fn r8(&mut self, bsb: u8, addr: u16) -> u8 {
        self.read(bsb, addr, 1)[0]
    }
    fn w8(&mut self, bsb: u8, addr: u16, v: u8) {
        self.write(bsb, addr, &[v])
    }
    fn r16(&mut self, bsb: u8, addr: u16) -> u16 {
        let v = self.read(bsb, addr, 2);
        u16::from_be_bytes([v[0], v[1]])
    }
    fn w16(&mut self, bsb: u8, addr: u16, v: u16) {
        self.write(bsb, addr, &v.to_be_bytes())
    }
    fn cmd(&mut self, sn: u8, cmd: u8) {
        self.w8(sreg(sn), 0x01, cmd);
        assert_eq!(self.r8(sreg(sn), 0x01), 0, "Sn_CR clears itself");
    }
    fn sr(&mut self, sn: u8) -> u8 {
        self.r8(sreg(sn), 0x03)
    }
}

fn chip() -> (W5500Emu, Raw) {
    let emu = W5500Emu::new();
    let raw = Raw(emu.spi());
    (emu, raw)
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    f()
}

/// A free TCP/UDP port on the chip's address (bound then released).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::from(CHIP_IP), 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn reset_values_match_the_datasheet() {
    let (_emu, mut r) = chip();
    assert_eq!(r.r8(COMMON, 0x0039), 0x04, "VERSIONR");
    assert_eq!(r.r8(COMMON, 0x0000), 0x00, "MR");
    assert_eq!(r.read(COMMON, 0x0001, 18), vec![0; 18], "GAR..SIPR");
    assert_eq!(r.r16(COMMON, 0x0019), 0x07D0, "RTR");
    assert_eq!(r.r8(COMMON, 0x001B), 0x08, "RCR");
    assert_eq!(r.r8(COMMON, 0x001C), 0x28, "PTIMER");
    assert_eq!(r.r16(COMMON, 0x0026), 0xFFFF, "PMRU");
    assert_eq!(r.read(COMMON, 0x0015, 4), vec![0; 4], "IR IMR SIR SIMR");
    // RST=1, OPMD=0, OPMDC=111, and with the cable in: full duplex, 100M, link.
    assert_eq!(r.r8(COMMON, 0x002E), 0xBF, "PHYCFGR");
    for n in 0..8 {
        let s = sreg(n);
        assert_eq!(r.r8(s, 0x00), 0x00, "S{n}_MR");
        assert_eq!(r.r8(s, 0x01), 0x00, "S{n}_CR");
        assert_eq!(r.r8(s, 0x02), 0x00, "S{n}_IR");
        assert_eq!(r.r8(s, 0x03), 0x00, "S{n}_SR");
        assert_eq!(r.r16(s, 0x0004), 0, "S{n}_PORT");
        assert_eq!(r.read(s, 0x0006, 6), vec![0xFF; 6], "S{n}_DHAR");
        assert_eq!(r.r16(s, 0x0012), 0, "S{n}_MSSR");
        assert_eq!(r.r8(s, 0x0016), 0x80, "S{n}_TTL");
        assert_eq!(r.r8(s, 0x001E), 0x02, "S{n}_RXBUF_SIZE");
        assert_eq!(r.r8(s, 0x001F), 0x02, "S{n}_TXBUF_SIZE");
        assert_eq!(r.r16(s, 0x0020), 0x0800, "S{n}_TX_FSR");
        assert_eq!(r.r16(s, 0x0026), 0, "S{n}_RX_RSR");
        assert_eq!(r.r8(s, 0x002C), 0xFF, "S{n}_IMR");
        assert_eq!(r.r16(s, 0x002D), 0x4000, "S{n}_FRAG");
    }
}

#[test]
fn mr_rst_restores_reset_values() {
    let (emu, mut r) = chip();
    r.write(COMMON, 0x0001, &[10, 0, 0, 1]);
    r.w16(COMMON, 0x0019, 0x1234);
    r.w8(COMMON, 0x001B, 3);
    r.w8(sreg(3), 0x001E, 4);
    r.w8(sreg(1), 0x00, 0x01);
    r.cmd(1, 0x01);
    assert_eq!(r.sr(1), 0x13);
    r.w8(COMMON, 0x0000, 0x80);
    assert_eq!(r.r8(COMMON, 0x0000) & 0x80, 0, "RST clears itself");
    assert_eq!(r.read(COMMON, 0x0001, 4), vec![0; 4]);
    assert_eq!(r.r16(COMMON, 0x0019), 0x07D0);
    assert_eq!(r.r8(COMMON, 0x001B), 0x08);
    assert_eq!(r.r8(sreg(3), 0x001E), 2);
    assert_eq!(r.sr(1), 0x00, "sockets closed by the reset");
    assert_eq!(emu.stats().resets, 1);
    // A power cycle too.
    r.w16(COMMON, 0x0019, 0x0001);
    emu.hard_reset();
    assert_eq!(r.r16(COMMON, 0x0019), 0x07D0);
}

#[test]
fn vdm_bursts_auto_increment() {
    let (_emu, mut r) = chip();
    let cfg = [
        192, 168, 1, 1, 255, 255, 255, 0, 2, 0, 0, 0, 0, 9, 127, 0, 0, 2,
    ];
    r.write(COMMON, 0x0001, &cfg);
    assert_eq!(r.read(COMMON, 0x0001, 18), cfg.to_vec());
    assert_eq!(r.read(COMMON, 0x0009, 6), vec![2, 0, 0, 0, 0, 9], "SHAR");
    assert_eq!(r.read(COMMON, 0x000F, 4), CHIP_IP.to_vec(), "SIPR");
}

#[test]
fn fdm_frames_are_1_2_4_bytes_and_chain_in_one_cycle() {
    let (emu, mut r) = chip();
    let spi = &mut r.0;
    // FDM 1 byte: read VERSIONR.
    let mut out = [0u8; 4];
    spi.transaction(&mut [Operation::Transfer(
        &mut out,
        &[0x00, 0x39, Raw::ctrl(COMMON, false, 1), 0],
    )])
    .unwrap();
    assert_eq!(out, [1, 2, 3, 0x04]);
    // FDM 4 bytes: write GAR, then FDM 2 bytes: write RTR, then FDM 4 read
    // of GAR, all in one chip-select cycle.
    let mut out = [0u8; 7 + 5 + 7];
    let tx = [
        0x00,
        0x01,
        Raw::ctrl(COMMON, true, 3),
        10,
        1,
        2,
        3,
        0x00,
        0x19,
        Raw::ctrl(COMMON, true, 2),
        0x01,
        0x02,
        0x00,
        0x01,
        Raw::ctrl(COMMON, false, 3),
        0,
        0,
        0,
        0,
    ];
    spi.transaction(&mut [Operation::Transfer(&mut out, &tx)])
        .unwrap();
    assert_eq!(
        &out[15..],
        &[10, 1, 2, 3],
        "GAR read back in the third frame"
    );
    assert_eq!(r.r16(COMMON, 0x0019), 0x0102, "RTR from the FDM-2 frame");
    // A 4-byte FDM frame stops after 4 bytes: the 5th byte starts a header.
    let tx = [0x00, 0x01, Raw::ctrl(COMMON, true, 3), 9, 9, 9, 9, 0x00];
    r.0.transaction(&mut [Operation::Write(&tx)]).unwrap();
    assert_eq!(r.read(COMMON, 0x0001, 5), vec![9, 9, 9, 9, 0]);
    assert_eq!(emu.stats().truncated_frames, 1, "the dangling header byte");
}

#[test]
fn read_only_and_write_one_to_clear_registers() {
    let (_emu, mut r) = chip();
    r.w8(COMMON, 0x0039, 0x55);
    assert_eq!(r.r8(COMMON, 0x0039), 0x04, "VERSIONR is read-only");
    r.w8(sreg(0), 0x03, 0x17);
    assert_eq!(r.sr(0), 0x00, "Sn_SR is read-only");
    r.w16(sreg(0), 0x20, 0x0001);
    assert_eq!(r.r16(sreg(0), 0x20), 0x0800, "Sn_TX_FSR is read-only");
    // PHYCFGR: low three bits are status, not writable.
    r.w8(COMMON, 0x002E, 0xF8);
    assert_eq!(r.r8(COMMON, 0x002E), 0xFF);
    // OPMDC = 110 with OPMD = 1 is power down: no link.
    r.w8(COMMON, 0x002E, 0x80 | 0x40 | 0x30);
    assert_eq!(r.r8(COMMON, 0x002E) & 1, 0, "powered-down PHY has no link");
    // PHY reset (bit 7 = 0) drops the link until it is set back.
    r.w8(COMMON, 0x002E, 0x38);
    assert_eq!(r.r8(COMMON, 0x002E) & 1, 0);
    r.w8(COMMON, 0x002E, 0xB8);
    assert_eq!(r.r8(COMMON, 0x002E) & 1, 1);
}

#[test]
fn status_transitions_and_cr_auto_clear() {
    let (_emu, mut r) = chip();
    r.write(COMMON, 0x000F, &CHIP_IP);
    // TCP: OPEN -> INIT -> LISTEN -> CLOSE.
    r.w8(sreg(1), 0x00, 0x01);
    r.w16(sreg(1), 0x04, free_port());
    r.cmd(1, 0x01);
    assert_eq!(r.sr(1), 0x13, "SOCK_INIT");
    r.cmd(1, 0x02);
    assert_eq!(r.sr(1), 0x14, "SOCK_LISTEN");
    r.cmd(1, 0x10);
    assert_eq!(r.sr(1), 0x00, "SOCK_CLOSED");
    // UDP.
    r.w8(sreg(2), 0x00, 0x02);
    r.w16(sreg(2), 0x04, free_port());
    r.cmd(2, 0x01);
    assert_eq!(r.sr(2), 0x22, "SOCK_UDP");
    // MACRAW only on socket 0.
    r.w8(sreg(3), 0x00, 0x04);
    r.cmd(3, 0x01);
    assert_eq!(r.sr(3), 0x00, "MACRAW is refused on socket 3");
    r.w8(sreg(0), 0x00, 0x04);
    r.cmd(0, 0x01);
    assert_eq!(r.sr(0), 0x42, "SOCK_MACRAW");
    // LISTEN on a UDP socket does nothing.
    r.cmd(2, 0x02);
    assert_eq!(r.sr(2), 0x22);
    // A stuck chip keeps its command.
    let (emu2, mut r2) = chip();
    emu2.set_cr_stuck(true);
    r2.w8(sreg(0), 0x01, 0x01);
    assert_eq!(r2.r8(sreg(0), 0x01), 0x01);
}

#[test]
fn ring_pointers_wrap_at_ffff() {
    let (_emu, mut r) = chip();
    // Socket 0, 2 KB TX ring: the chip uses ptr & 0x7FF.
    let data = [0xA1, 0xA2, 0xA3, 0xA4];
    r.write(stx(0), 0xFFFE, &data);
    assert_eq!(r.read(stx(0), 0xFFFE, 2), vec![0xA1, 0xA2]);
    assert_eq!(
        r.read(stx(0), 0x0000, 2),
        vec![0xA3, 0xA4],
        "the burst continued at 0x0000"
    );
    assert_eq!(
        r.read(stx(0), 0x07FE, 4),
        data.to_vec(),
        "0xFFFE aliases 0x07FE"
    );
    // Socket 1's ring starts after socket 0's 2 KB: no overlap.
    assert_eq!(r.read(stx(1), 0x07FE, 2), vec![0, 0]);
    // With 16 KB for socket 0 the mask is 0x3FFF.
    r.w8(sreg(0), 0x1F, 16);
    r.write(stx(0), 0x3FFF, &[0x5A]);
    assert_eq!(r.r8(stx(0), 0xFFFF), 0x5A);
}

/// A UDP socket on the chip and a host peer: the 8-byte RX header, RSR,
/// RECV, interrupts and INTn.
#[test]
fn udp_header_interrupts_and_intn() {
    let (emu, mut r) = chip();
    let mut int = emu.int_pin();
    r.write(COMMON, 0x000F, &CHIP_IP);
    let port = free_port();
    r.w8(sreg(4), 0x00, 0x02);
    r.w16(sreg(4), 0x04, port);
    r.cmd(4, 0x01);
    assert_eq!(r.sr(4), 0x22);
    assert!(int.is_high().unwrap(), "INTn idle high");
    r.w8(COMMON, 0x0018, 1 << 4); // SIMR: socket 4
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = SocketAddr::from((CHIP_IP, port));
    peer.send_to(b"hello chip", to).unwrap();
    assert!(int.wait_low(Duration::from_secs(5)), "INTn falls on RECV");
    assert!(int.is_low().unwrap());
    assert_eq!(r.r8(sreg(4), 0x02) & 0x04, 0x04, "Sn_IR.RECV");
    assert_eq!(r.r8(COMMON, 0x0017), 1 << 4, "SIR bit 4");
    let rsr = r.r16(sreg(4), 0x26);
    assert_eq!(rsr, 8 + 10, "RSR = header + data");
    let rd = r.r16(sreg(4), 0x28);
    let got = r.read(srx(4), rd, rsr as usize);
    let me = match peer.local_addr().unwrap() {
        SocketAddr::V4(a) => a,
        _ => unreachable!(),
    };
    assert_eq!(&got[..4], &me.ip().octets(), "header: source IP");
    assert_eq!(&got[4..6], &me.port().to_be_bytes(), "header: source port");
    assert_eq!(&got[6..8], &10u16.to_be_bytes(), "header: data length");
    assert_eq!(&got[8..], b"hello chip");
    r.w16(sreg(4), 0x28, rd.wrapping_add(rsr));
    r.cmd(4, 0x40);
    assert_eq!(r.r16(sreg(4), 0x26), 0, "RSR after RECV");
    r.w8(sreg(4), 0x02, 0x04);
    assert_eq!(r.r8(sreg(4), 0x02), 0, "write 1 clears Sn_IR");
    assert_eq!(r.r8(COMMON, 0x0017), 0, "SIR follows");
    assert!(int.is_high().unwrap(), "INTn back high");

    // Sn_IMR without RECV: the bit never sets, INTn stays high.
    r.w8(sreg(4), 0x2C, !0x04u8);
    peer.send_to(b"again", to).unwrap();
    assert!(wait_for(Duration::from_secs(5), || r.r16(sreg(4), 0x26) == 13));
    assert_eq!(r.r8(sreg(4), 0x02), 0);
    assert!(!int.wait_low(Duration::from_millis(20)));

    // Send: header-less data from TX_WR, SEND, SEND_OK; split at the MTU.
    r.write(sreg(4), 0x0C, &[127, 0, 0, 1]);
    r.w16(sreg(4), 0x10, me.port());
    let wr = r.r16(sreg(4), 0x24);
    r.write(stx(4), wr, b"reply");
    r.w16(sreg(4), 0x24, wr.wrapping_add(5));
    assert_eq!(
        r.r16(sreg(4), 0x20),
        0x0800 - 5,
        "FSR counts the unsent data"
    );
    r.cmd(4, 0x20);
    assert_eq!(r.r8(sreg(4), 0x02) & 0x10, 0x10, "SEND_OK");
    assert_eq!(r.r16(sreg(4), 0x22), wr.wrapping_add(5), "TX_RD caught up");
    assert_eq!(r.r16(sreg(4), 0x20), 0x0800);
    let mut buf = [0u8; 64];
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"reply");
    assert_eq!(from, to, "sent from SIPR:Sn_PORT");
}

/// TCP client and server backed by host sockets; status codes and
/// interrupts along the way.
#[test]
fn tcp_client_and_server_states() {
    let (emu, mut r) = chip();
    r.write(COMMON, 0x000F, &CHIP_IP);
    // Client: CONNECT to a host listener.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let lport = l.local_addr().unwrap().port();
    r.w8(sreg(0), 0x00, 0x01);
    let cport = free_port();
    r.w16(sreg(0), 0x04, cport);
    r.cmd(0, 0x01);
    r.write(sreg(0), 0x0C, &[127, 0, 0, 1]);
    r.w16(sreg(0), 0x10, lport);
    r.cmd(0, 0x04);
    let (mut srv, from) = l.accept().unwrap();
    assert_eq!(
        from,
        SocketAddr::from((CHIP_IP, cport)),
        "bound to SIPR:Sn_PORT"
    );
    assert!(wait_for(Duration::from_secs(5), || r.sr(0) == 0x17));
    assert_eq!(r.r8(sreg(0), 0x02) & 0x01, 0x01, "Sn_IR.CON");
    let wr = r.r16(sreg(0), 0x24);
    r.write(stx(0), wr, b"GET /");
    r.w16(sreg(0), 0x24, wr.wrapping_add(5));
    r.cmd(0, 0x20);
    let mut buf = [0u8; 5];
    srv.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"GET /");
    assert!(wait_for(Duration::from_secs(5), || r.r8(sreg(0), 0x02)
        & 0x10
        != 0));
    srv.write_all(b"200 OK").unwrap();
    assert!(wait_for(Duration::from_secs(5), || r.r16(sreg(0), 0x26) == 6));
    let rd = r.r16(sreg(0), 0x28);
    assert_eq!(r.read(srx(0), rd, 6), b"200 OK");
    r.w16(sreg(0), 0x28, rd.wrapping_add(6));
    r.cmd(0, 0x40);
    drop(srv);
    assert!(
        wait_for(Duration::from_secs(5), || r.sr(0) == 0x1C),
        "SOCK_CLOSE_WAIT after the peer's FIN"
    );
    assert_eq!(r.r8(sreg(0), 0x02) & 0x02, 0x02, "Sn_IR.DISCON");
    r.cmd(0, 0x08);
    assert!(wait_for(Duration::from_secs(5), || r.sr(0) == 0x00));

    // Server: LISTEN, a host client connects, DIPR/DPORT show it.
    let port = free_port();
    r.w8(sreg(1), 0x00, 0x01);
    r.w16(sreg(1), 0x04, port);
    r.cmd(1, 0x01);
    r.cmd(1, 0x02);
    assert_eq!(r.sr(1), 0x14);
    let c = TcpStream::connect((Ipv4Addr::from(CHIP_IP), port)).unwrap();
    assert!(wait_for(Duration::from_secs(5), || r.sr(1) == 0x17));
    let me = c.local_addr().unwrap();
    let SocketAddr::V4(me) = me else {
        unreachable!()
    };
    assert_eq!(r.read(sreg(1), 0x0C, 4), me.ip().octets().to_vec());
    assert_eq!(r.r16(sreg(1), 0x10), me.port());
    // One connection per socket: with no socket left in LISTEN the port refuses.
    assert!(wait_for(Duration::from_secs(2), || TcpStream::connect((
        Ipv4Addr::from(CHIP_IP),
        port
    ))
    .is_err()));
    // The peer closes: SOCK_CLOSE_WAIT.
    drop(c);
    assert!(wait_for(Duration::from_secs(5), || r.sr(1) == 0x1C));
    assert!(emu.stats().tcp_connections >= 2);
}

#[test]
fn connect_refused_and_silent_host_timeout() {
    let (emu, mut r) = chip();
    r.write(COMMON, 0x000F, &CHIP_IP);
    // Short timers: RTR = 10 ms, RCR = 1 -> ARPTO = 20 ms.
    r.w16(COMMON, 0x0019, 100);
    r.w8(COMMON, 0x001B, 1);
    let closed = free_port();
    r.w8(sreg(0), 0x00, 0x01);
    r.cmd(0, 0x01);
    r.write(sreg(0), 0x0C, &CHIP_IP);
    r.w16(sreg(0), 0x10, closed);
    r.cmd(0, 0x04);
    assert!(wait_for(Duration::from_secs(5), || r.sr(0) == 0x00));
    assert_eq!(r.r8(sreg(0), 0x02) & 0x08, 0, "refused is not a timeout");

    emu.add_silent_host(Ipv4Addr::new(127, 0, 0, 99));
    r.w8(sreg(0), 0x02, 0xFF);
    r.cmd(0, 0x01);
    r.write(sreg(0), 0x0C, &[127, 0, 0, 99]);
    r.w16(sreg(0), 0x10, 80);
    let t0 = Instant::now();
    r.cmd(0, 0x04);
    assert_eq!(r.sr(0), 0x15, "SOCK_SYNSENT while waiting");
    assert!(wait_for(Duration::from_secs(5), || r.sr(0) == 0x00));
    assert!(t0.elapsed() >= Duration::from_millis(19));
    assert_eq!(r.r8(sreg(0), 0x02) & 0x08, 0x08, "Sn_IR.TIMEOUT");
    // Addresses outside loopback are never contacted without a namespace.
    r.cmd(0, 0x01);
    r.write(sreg(0), 0x0C, &[192, 0, 2, 1]);
    r.w16(sreg(0), 0x10, 80);
    r.cmd(0, 0x04);
    assert!(wait_for(Duration::from_secs(5), || r.sr(0) == 0x00));
    let _ = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
}

/// MACRAW: frames in and out of a memory link, with the 2-byte length
/// header, the MAC filter, ring wrap over many frames (and exact payload
/// counting across the wrap), and link state.
#[test]
fn macraw_frames_and_ring_wrap() {
    let (link, mut peer) = MemoryLink::pair();
    let emu = W5500Emu::with_link(link);
    let mut r = Raw(emu.spi());
    let bus = emu.bus();
    let mac = [0x02, 0, 0, 0, 0x55, 0x00];
    r.write(COMMON, 0x0009, &mac);
    r.w8(sreg(0), 0x1E, 16);
    r.w8(sreg(0), 0x1F, 16);
    r.w8(sreg(0), 0x00, 0x84); // MACRAW + MFEN
    r.cmd(0, 0x01);
    assert_eq!(r.sr(0), 0x42);
    let peer_mac = peer.hardware_addr();
    let frame = |i: u32, len: usize, dst: [u8; 6]| {
        let mut f = vec![0u8; len];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&peer_mac);
        f[12..14].copy_from_slice(&[0x88, 0xB5]);
        for (k, b) in f[14..].iter_mut().enumerate() {
            *b = (i as usize * 7 + k) as u8;
        }
        f
    };
    // Filtered: a frame for another MAC never lands.
    peer.transmit(&frame(0, 60, [0x02, 9, 9, 9, 9, 9])).unwrap();
    let mut rx_total = 0u64;
    let mut tx_total = 0u64;
    let mut buf = vec![0u8; 2000];
    for i in 1..=120u32 {
        let len = 1000 + (i as usize % 5);
        // Peer -> chip.
        let f = frame(i, len, mac);
        peer.transmit(&f).unwrap();
        assert!(wait_for(Duration::from_secs(5), || r.r16(sreg(0), 0x26) > 0));
        let rd = r.r16(sreg(0), 0x28);
        let before = bus.snapshot();
        let hdr = r.r16(srx(0), rd);
        assert_eq!(hdr as usize, len + 2, "length header counts itself");
        assert_eq!(
            bus.snapshot().since(&before).payload,
            0,
            "header is not payload"
        );
        let before = bus.snapshot();
        let got = r.read(srx(0), rd.wrapping_add(2), len);
        assert_eq!(got, f, "frame {i} intact (read pointer {rd:#06x})");
        // Every frame byte is payload, also after the pointer wrapped: the
        // headers of frames already released are forgotten, not matched
        // again at the same 16-bit pointer one lap later.
        assert_eq!(
            bus.snapshot().since(&before).payload,
            len as u64,
            "frame {i}: payload count (read pointer {rd:#06x})"
        );
        r.w16(sreg(0), 0x28, rd.wrapping_add(hdr));
        r.cmd(0, 0x40);
        rx_total += hdr as u64;
        // Chip -> peer.
        let wr = r.r16(sreg(0), 0x24);
        let out = frame(1000 + i, len, peer_mac);
        r.write(stx(0), wr, &out);
        r.w16(sreg(0), 0x24, wr.wrapping_add(len as u16));
        r.cmd(0, 0x20);
        tx_total += len as u64;
        assert!(wait_for(Duration::from_secs(5), || matches!(
            peer.receive(&mut buf),
            Ok(Some(n)) if buf[..n] == out[..]
        )));
    }
    assert!(rx_total > 0x1_0000, "the RX pointer wrapped past 0xFFFF");
    assert!(tx_total > 0x1_0000, "the TX pointer wrapped past 0xFFFF");
    assert_eq!(
        r.r16(sreg(0), 0x24),
        (tx_total & 0xFFFF) as u16,
        "TX_WR is the byte count modulo 2^16"
    );
    let st = emu.stats();
    assert_eq!(st.frames_rx, 120);
    assert_eq!(st.frames_tx, 120);
    assert!(st.frames_dropped >= 1, "the foreign frame was filtered");

    // Cable out: PHYCFGR.LNK drops, frames are not sent.
    emu.set_link_up(false);
    assert_eq!(r.r8(COMMON, 0x002E) & 1, 0);
    emu.set_link_up(true);
    assert_eq!(r.r8(COMMON, 0x002E) & 1, 1);
}

/// MACRAW with a full RX ring: `Sn_RX_RSR` never passes the buffer size.
/// By default frames that do not fit wait on the link; with overrun drops
/// on (the chip's behaviour) they are lost and counted, while a frame that
/// still fits the remaining space lands.
#[test]
fn macraw_ring_full_waits_or_drops() {
    let frame = |dst: [u8; 6], len: usize, tag: u8| {
        let mut f = vec![tag; len];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0x55, 0x09]);
        f[12..14].copy_from_slice(&[0x88, 0xB5]);
        f
    };
    for drops in [false, true] {
        let (link, mut peer) = MemoryLink::pair();
        let emu = W5500Emu::with_link(link);
        emu.set_macraw_overrun_drops(drops);
        let mut r = Raw(emu.spi());
        let mac = [0x02, 0, 0, 0, 0x55, 0x00];
        r.write(COMMON, 0x0009, &mac);
        r.w8(sreg(0), 0x1E, 16);
        r.w8(sreg(0), 0x1F, 16);
        r.w8(sreg(0), 0x00, 0x84); // MACRAW + MFEN
        r.cmd(0, 0x01);
        // 12 full frames: 10 fit (10 * 1516 = 15160 of 16384 bytes).
        for i in 0..12u8 {
            peer.transmit(&frame(mac, 1514, i)).unwrap();
        }
        assert!(wait_for(Duration::from_secs(5), || r.r16(sreg(0), 0x26)
            == 15160
            && emu.stats().frames_rx == 10
            && (!drops || emu.stats().frames_overrun == 2)));
        // A small frame still fits the 1224 bytes left.
        peer.transmit(&frame(mac, 100, 0xEE)).unwrap();
        let want = if drops { 15160 + 102 } else { 15160 };
        assert!(
            wait_for(Duration::from_secs(5), || r.r16(sreg(0), 0x26) == want),
            "drops={drops}: RSR {}",
            r.r16(sreg(0), 0x26)
        );
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            r.r16(sreg(0), 0x26),
            want,
            "drops={drops}: RSR never passes the ring"
        );
        let st = emu.stats();
        if drops {
            assert_eq!(
                (st.frames_rx, st.frames_overrun, st.frames_dropped),
                (11, 2, 2)
            );
        } else {
            assert_eq!(
                (st.frames_rx, st.frames_overrun, st.frames_dropped),
                (10, 0, 0)
            );
        }
        // Release everything: waiting frames (default mode) land now, in order.
        let rd = r.r16(sreg(0), 0x28);
        r.w16(sreg(0), 0x28, rd.wrapping_add(want));
        r.cmd(0, 0x40);
        let (rx, rsr) = if drops { (11, 0) } else { (13, 2 * 1516 + 102) };
        assert!(
            wait_for(Duration::from_secs(5), || emu.stats().frames_rx == rx
                && r.r16(sreg(0), 0x26) == rsr),
            "drops={drops}: {:?}",
            emu.stats()
        );
        if !drops {
            let rd = r.r16(sreg(0), 0x28);
            assert_eq!(r.r16(srx(0), rd), 1516);
            assert_eq!(
                r.read(srx(0), rd.wrapping_add(16), 1),
                vec![10],
                "frame 10 next"
            );
        }
    }
}

#[test]
fn bus_counting() {
    let (emu, mut r) = chip();
    let bus = emu.bus();
    let before = bus.snapshot();
    r.r8(COMMON, 0x0039);
    let d = bus.snapshot().since(&before);
    assert_eq!((d.bytes, d.transactions, d.payload), (4, 1, 0));
    let before = bus.snapshot();
    r.write(stx(0), 0, &[1; 100]);
    let d = bus.snapshot().since(&before);
    assert_eq!((d.bytes, d.transactions, d.payload), (103, 1, 100));
}

#[test]
fn fault_knobs() {
    let (emu, mut r) = chip();
    emu.set_version(0x51);
    assert_eq!(r.r8(COMMON, 0x0039), 0x51);
    emu.set_version(0x04);
    emu.inject_garbage(64);
    let junk = r.read(COMMON, 0x0001, 64);
    assert!(junk.iter().any(|&b| b != 0), "garbage instead of zeros");
    assert_eq!(
        r.read(COMMON, 0x0001, 4),
        vec![0; 4],
        "then real data again"
    );
    emu.set_miso_stuck(Some(0xFF));
    let mut out = [0u8; 4];
    r.0.transaction(&mut [Operation::Transfer(&mut out, &[0x00, 0x39, 0x00, 0x00])])
        .unwrap();
    assert_eq!(out, [0xFF; 4], "a dead bus reads all ones");
    emu.set_miso_stuck(None);
    assert_eq!(emu.peek(COMMON, 0x0039), 0x04);
}
