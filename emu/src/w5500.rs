//! A host model of the WIZnet W5500, faithful to its datasheet on the bus.
//!
//! # What is modelled
//!
//! * **SPI frames** (datasheet §2.2): a 16-bit offset address (MSB first),
//!   a control byte `BSB[4:0] | RWB | OM[1:0]`, then the data phase. In
//!   variable-length mode (VDM, `OM = 00`) the data phase lasts until chip
//!   select rises (the end of an [`SpiDevice`] transaction); in fixed-length
//!   mode (FDM, `OM = 01/10/11`) it is 1, 2 or 4 bytes and the next frame may
//!   follow in the same chip-select cycle. The offset address auto-increments
//!   (16-bit, wrapping) during the data phase. During the three header bytes
//!   the chip shifts out `0x01 0x02 0x03` on MISO, as silicon does.
//! * **Common registers** (MR, GAR, SUBR, SHAR, SIPR, INTLEVEL, IR, IMR, SIR,
//!   SIMR, RTR, RCR, PTIMER, PMAGIC, PHAR, PSID, PMRU, UIPR, UPORTR, PHYCFGR,
//!   VERSIONR) with their reset values; `MR.RST` restores them.
//! * **Eight sockets**: every socket register, with read-only and
//!   write-one-to-clear registers behaving as documented, `Sn_CR` clearing
//!   itself once a command is accepted, and the status codes of `Sn_SR`.
//! * **Buffer memory**: 16 KB TX and 16 KB RX shared by the sockets in
//!   socket order according to `Sn_TXBUF_SIZE` / `Sn_RXBUF_SIZE` (2 KB each
//!   by default). A 16-bit pointer addresses a socket's ring at
//!   `ptr & (size - 1)`, so pointers wrap naturally at `0xFFFF`.
//! * **Interrupts**: `Sn_IR` bits are set only when enabled in `Sn_IMR`,
//!   `SIR` bit n mirrors `Sn_IR != 0`, and the active-low INTn pin
//!   ([`W5500Int`]) is low while `(IR & IMR) | (SIR & SIMR)` is not zero.
//! * **MACRAW** on socket 0: received frames land in the RX ring behind a
//!   2-byte big-endian length that counts itself; `SEND` transmits the TX
//!   ring between `Sn_TX_RD` and `Sn_TX_WR` as one frame. Frames come from
//!   and go to the [`Link`] given to [`W5500Emu::with_link`].
//! * **Hardwired TCP and UDP**: the chip's own TCP/IP is played by
//!   non-blocking host sockets bound to `SIPR` (for example 127.0.0.2):
//!   `CONNECT` connects a host socket, `LISTEN` takes one connection from a
//!   host listener on `SIPR:Sn_PORT` (several sockets listening on one port
//!   share the listener, like the chip's SYN dispatch), UDP datagrams carry
//!   the 8-byte header (peer IP, port, length) in the RX ring and are split
//!   at the MTU on send, as the chip does.
//!
//! # Host network rules
//!
//! The model only ever sends host traffic to 127.0.0.0/8, unless a network
//! namespace was given ([`W5500Emu::set_netns`]), in which case every host
//! socket lives in that namespace. Any other destination behaves like a host
//! that never answers ARP (TCP: `Sn_IR.TIMEOUT` after ARPTO; UDP: the
//! datagram is dropped with `TIMEOUT`), unless [`W5500Emu::redirect_udp`]
//! maps it (how a test points the driver's DHCP broadcasts at a fake server).
//! While `SIPR` is 0.0.0.0 the chip's sockets bind to
//! [`W5500Emu::set_unconfigured_ip`] (default 127.0.0.2).
//!
//! # Where the model simplifies
//!
//! * Commands complete within the `Sn_CR` write (the real chip takes a few
//!   hundred nanoseconds), unless [`W5500Emu::set_cr_stuck`] freezes them.
//! * TCP: `SEND_OK` is raised once the host kernel took the data; the
//!   internal ACK pointer behind `Sn_TX_FSR` follows the same point.
//!   `CLOSE` on a live connection resets it (the chip forgets it; its peer
//!   sees a reset on its next segment). After `DISCON` the socket still
//!   stores what arrives until the peer's FIN, then goes to `SOCK_CLOSED`
//!   (TIME_WAIT is not shown); data already in the RX ring stays readable.
//! * UDP datagrams that do not fit the free RX space wait in the host queue
//!   (the chip would drop them); ones larger than the whole ring are dropped.
//! * MACRAW frames arrive from the link as fast as the host moves them (no
//!   line rate). By default a frame that does not fit socket 0's free RX
//!   space waits on the link until the driver frees room, as if the wire
//!   paused — the real chip has no such back-pressure and loses the frame.
//!   [`W5500Emu::set_macraw_overrun_drops`] switches to the chip's
//!   behaviour: such a frame is dropped and counted in
//!   [`EmuStats::frames_overrun`]. Either way `Sn_RX_RSR` never exceeds
//!   the buffer size.
//! * Keep-alive (`SEND_KEEP`, `Sn_KPALVTR`), PPPoE, WOL, IPRAW and the
//!   chip's own ARP/ICMP answers are not modelled.
//!
//! Bus traffic is counted on a [`BusCounter`]: every byte clocked (header
//! and data) and every chip-select cycle; payload is the data-phase bytes
//! that touch a TX/RX ring, minus the MACRAW/UDP headers the chip wrote.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use embedded_hal::digital::{ErrorType as PinErrorType, InputPin};
use embedded_hal::spi::{ErrorType as SpiErrorType, Operation, SpiDevice};
use netdever::phy::{Link, RxSignal};
use parking_lot::{Condvar, Mutex};

use crate::bus::BusCounter;

// ---------------------------------------------------------------------------
// Datasheet constants (kept private: tests use the datasheet's numbers).
// ---------------------------------------------------------------------------

const MR: usize = 0x00;
const SHAR: usize = 0x09;
const SIPR: usize = 0x0F;
const IR: usize = 0x15;
const IMR: usize = 0x16;
const SIR: usize = 0x17;
const SIMR: usize = 0x18;
const RTR: usize = 0x19;
const RCR: usize = 0x1B;
const PTIMER: usize = 0x1C;
const PMRU: usize = 0x26;
const PHYCFGR: usize = 0x2E;
const VERSIONR: usize = 0x39;
const COMMON_LEN: usize = 0x3A;

const SN_MR: usize = 0x00;
const SN_CR: usize = 0x01;
const SN_IR: usize = 0x02;
const SN_SR: usize = 0x03;
const SN_PORT: usize = 0x04;
const SN_DHAR: usize = 0x06;
const SN_DIPR: usize = 0x0C;
const SN_DPORT: usize = 0x10;
const SN_MSSR: usize = 0x12;
const SN_TTL: usize = 0x16;
const SN_RXBUF_SIZE: usize = 0x1E;
const SN_TXBUF_SIZE: usize = 0x1F;
const SN_TX_FSR: usize = 0x20;
const SN_TX_RD: usize = 0x22;
const SN_TX_WR: usize = 0x24;
const SN_RX_RSR: usize = 0x26;
const SN_RX_RD: usize = 0x28;
const SN_RX_WR: usize = 0x2A;
const SN_IMR: usize = 0x2C;
const SN_FRAG: usize = 0x2D;
const SOCK_REG_LEN: usize = 0x30;

const CR_OPEN: u8 = 0x01;
const CR_LISTEN: u8 = 0x02;
const CR_CONNECT: u8 = 0x04;
const CR_DISCON: u8 = 0x08;
const CR_CLOSE: u8 = 0x10;
const CR_SEND: u8 = 0x20;
const CR_SEND_MAC: u8 = 0x21;
const CR_SEND_KEEP: u8 = 0x22;
const CR_RECV: u8 = 0x40;

const SOCK_CLOSED: u8 = 0x00;
const SOCK_INIT: u8 = 0x13;
const SOCK_LISTEN: u8 = 0x14;
const SOCK_SYNSENT: u8 = 0x15;
const SOCK_ESTABLISHED: u8 = 0x17;
const SOCK_FIN_WAIT: u8 = 0x18;
const SOCK_CLOSE_WAIT: u8 = 0x1C;
const SOCK_LAST_ACK: u8 = 0x1D;
const SOCK_UDP: u8 = 0x22;
const SOCK_MACRAW: u8 = 0x42;

const IR_SEND_OK: u8 = 0x10;
const IR_TIMEOUT: u8 = 0x08;
const IR_RECV: u8 = 0x04;
const IR_DISCON: u8 = 0x02;
const IR_CON: u8 = 0x01;

const MEM: usize = 16 * 1024;
const UDP_MTU: usize = 1472;
const MAX_FRAME: usize = 1514;

/// The chip's version register value.
pub const VERSION: u8 = 0x04;

/// How often the background thread moves host data when nothing wakes it.
const PUMP_PERIOD: Duration = Duration::from_micros(500);

/// Counters of what the model did behind the bus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmuStats {
    /// Frames sent to the link by MACRAW `SEND`.
    pub frames_tx: u64,
    /// Frames put in socket 0's RX ring.
    pub frames_rx: u64,
    /// Frames dropped: filtered, link down, oversize, no MACRAW socket, or
    /// (with [`W5500Emu::set_macraw_overrun_drops`]) no room in the RX ring.
    pub frames_dropped: u64,
    /// Of `frames_dropped`: MACRAW frames that found too little free space
    /// in socket 0's RX ring (only with [`W5500Emu::set_macraw_overrun_drops`];
    /// otherwise such frames wait on the link).
    pub frames_overrun: u64,
    /// UDP datagrams sent / received through host sockets.
    pub udp_tx: u64,
    /// UDP datagrams stored in an RX ring.
    pub udp_rx: u64,
    /// UDP datagrams dropped (too large for the ring, unreachable destination).
    pub udp_dropped: u64,
    /// TCP connections established (either direction).
    pub tcp_connections: u64,
    /// Host socket operations that failed (bind errors and such).
    pub host_errors: u64,
    /// Chip resets (MR.RST or [`W5500Emu::hard_reset`]).
    pub resets: u64,
    /// SPI frames that ended inside their header (ignored).
    pub truncated_frames: u64,
}

// ---------------------------------------------------------------------------
// Host sockets behind the hardwired sockets.
// ---------------------------------------------------------------------------

enum Host {
    None,
    Connecting {
        stream: TcpStream,
        deadline: Instant,
    },
    Stream(TcpStream),
    Udp(UdpSocket),
    /// Connect to a host that never answers: times out at `deadline`.
    Silent {
        deadline: Instant,
    },
}

struct Sock {
    regs: [u8; SOCK_REG_LEN],
    host: Host,
    /// RX_RD as last announced by RECV.
    rx_rd: u16,
    /// TCP data handed over by SEND, not yet taken by the host kernel.
    tx_queue: VecDeque<u8>,
    /// A SEND is in progress (SEND_OK when it completes).
    sending: bool,
    /// DISCON asked for a FIN once the queue is empty.
    fin_pending: bool,
    /// FIN_WAIT / close timer.
    close_deadline: Option<Instant>,
    /// Header ranges (pointer, length) written into the RX ring, for payload counting.
    rx_headers: VecDeque<(u16, u16)>,
    /// Test knob: the length field of the next RX header.
    next_rx_len: Option<u16>,
}

impl Sock {
    fn new() -> Self {
        let mut s = Sock {
            regs: [0; SOCK_REG_LEN],
            host: Host::None,
            rx_rd: 0,
            tx_queue: VecDeque::new(),
            sending: false,
            fin_pending: false,
            close_deadline: None,
            rx_headers: VecDeque::new(),
            next_rx_len: None,
        };
        s.reset_regs();
        s
    }

    fn reset_regs(&mut self) {
        self.regs = [0; SOCK_REG_LEN];
        self.regs[SN_DHAR..SN_DHAR + 6].fill(0xFF);
        self.regs[SN_TTL] = 0x80;
        self.regs[SN_RXBUF_SIZE] = 2;
        self.regs[SN_TXBUF_SIZE] = 2;
        self.regs[SN_IMR] = 0xFF;
        self.regs[SN_FRAG] = 0x40;
        self.rx_rd = 0;
        self.tx_queue.clear();
        self.sending = false;
        self.fin_pending = false;
        self.close_deadline = None;
        self.rx_headers.clear();
        self.next_rx_len = None;
    }

    fn get16(&self, at: usize) -> u16 {
        u16::from_be_bytes([self.regs[at], self.regs[at + 1]])
    }

    fn set16(&mut self, at: usize, v: u16) {
        self.regs[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    fn sr(&self) -> u8 {
        self.regs[SN_SR]
    }

    fn proto(&self) -> u8 {
        self.regs[SN_MR] & 0x0F
    }

    fn dest(&self) -> SocketAddrV4 {
        let ip = Ipv4Addr::new(
            self.regs[SN_DIPR],
            self.regs[SN_DIPR + 1],
            self.regs[SN_DIPR + 2],
            self.regs[SN_DIPR + 3],
        );
        SocketAddrV4::new(ip, self.get16(SN_DPORT))
    }
}

fn buf_kb(v: u8) -> usize {
    match v {
        0 | 1 | 2 | 4 | 8 | 16 => v as usize,
        _ => 0,
    }
}

struct Listener {
    addr: SocketAddrV4,
    l: TcpListener,
}

/// ARPTO: RTR * (RCR + 1), in 100 us units.
fn arp_timeout(rtr: u16, rcr: u8) -> Duration {
    Duration::from_micros(rtr.max(1) as u64 * (rcr as u64 + 1) * 100)
}

/// TCPTO as the datasheet computes it: the retransmission time doubles
/// from RTR up to 0xFFFF, over RCR + 1 attempts.
fn tcp_timeout(rtr: u16, rcr: u8) -> Duration {
    let mut cur = rtr.max(1) as u64;
    let mut total = 0u64;
    for _ in 0..=rcr {
        total += cur.min(0xFFFF);
        cur = (cur * 2).min(0xFFFF);
    }
    Duration::from_micros(total * 100)
}

struct Chip {
    common: [u8; COMMON_LEN],
    s: [Sock; 8],
    txmem: Vec<u8>,
    rxmem: Vec<u8>,
    link: Option<Box<dyn Link + Send>>,
    cable: bool,
    listeners: Vec<Listener>,
    silent: Vec<Ipv4Addr>,
    redirects: Vec<(SocketAddrV4, SocketAddrV4)>,
    unconfigured_ip: Ipv4Addr,
    netns: Option<PathBuf>,
    stats: EmuStats,
    int_low: bool,
    // knobs
    garbage: usize,
    rng: u64,
    miso_stuck: Option<u8>,
    version: u8,
    cr_stuck: bool,
    overrun_drops: bool,
    frame: Vec<u8>,
}

/// Where a frame is in the SPI byte stream of one chip-select cycle.
#[derive(Clone, Copy)]
struct Frame {
    pos: usize,
    addr: u16,
    ctrl: u8,
    data: usize,
}

impl Frame {
    fn new() -> Self {
        Frame {
            pos: 0,
            addr: 0,
            ctrl: 0,
            data: 0,
        }
    }
}

#[derive(Default)]
struct TxnCount {
    bytes: usize,
    payload: usize,
}

impl Chip {
    fn new(link: Option<Box<dyn Link + Send>>) -> Self {
        let mut c = Chip {
            common: [0; COMMON_LEN],
            s: std::array::from_fn(|_| Sock::new()),
            txmem: vec![0; MEM],
            rxmem: vec![0; MEM],
            link,
            cable: true,
            listeners: Vec::new(),
            silent: Vec::new(),
            redirects: Vec::new(),
            unconfigured_ip: Ipv4Addr::new(127, 0, 0, 2),
            netns: None,
            stats: EmuStats::default(),
            int_low: false,
            garbage: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
            miso_stuck: None,
            version: VERSION,
            cr_stuck: false,
            overrun_drops: false,
            frame: vec![0; 2048],
        };
        c.reset();
        c.stats.resets = 0;
        c
    }

    /// MR.RST / power-on: every register back to its reset value, every
    /// socket closed.
    fn reset(&mut self) {
        for s in self.s.iter_mut() {
            drop_host(&mut s.host, true);
            s.reset_regs();
        }
        self.listeners.clear();
        self.common = [0; COMMON_LEN];
        self.common[RTR] = 0x07;
        self.common[RTR + 1] = 0xD0;
        self.common[RCR] = 0x08;
        self.common[PTIMER] = 0x28;
        self.common[PMRU] = 0xFF;
        self.common[PMRU + 1] = 0xFF;
        // RST = 1, OPMD = 0, OPMDC = 111 (all capable, auto-negotiation).
        self.common[PHYCFGR] = 0xB8;
        self.stats.resets += 1;
    }

    fn rtr(&self) -> u16 {
        u16::from_be_bytes([self.common[RTR], self.common[RTR + 1]])
    }

    fn sipr(&self) -> Ipv4Addr {
        Ipv4Addr::new(
            self.common[SIPR],
            self.common[SIPR + 1],
            self.common[SIPR + 2],
            self.common[SIPR + 3],
        )
    }

    fn host_ip(&self) -> Ipv4Addr {
        let ip = self.sipr();
        if ip.is_unspecified() {
            self.unconfigured_ip
        } else {
            ip
        }
    }

    fn phy_up(&mut self) -> bool {
        let cfg = self.common[PHYCFGR];
        let powered = cfg & 0x80 != 0 && !(cfg & 0x40 != 0 && (cfg >> 3) & 7 == 0b110);
        let link = match self.link.as_mut() {
            Some(l) => l.link_up(),
            None => true,
        };
        powered && self.cable && link
    }

    /// Where a destination really goes: `None` for a host that never answers.
    fn route(&self, dst: SocketAddrV4) -> Option<SocketAddrV4> {
        if let Some((_, to)) = self.redirects.iter().find(|(from, _)| *from == dst) {
            return Some(*to);
        }
        if self.silent.contains(dst.ip()) {
            return None;
        }
        if self.netns.is_some() || dst.ip().is_loopback() {
            Some(dst)
        } else {
            None
        }
    }

    fn txgeom(&self, sn: usize) -> (usize, usize) {
        let base: usize = (0..sn)
            .map(|i| buf_kb(self.s[i].regs[SN_TXBUF_SIZE]) * 1024)
            .sum();
        (base, buf_kb(self.s[sn].regs[SN_TXBUF_SIZE]) * 1024)
    }

    fn rxgeom(&self, sn: usize) -> (usize, usize) {
        let base: usize = (0..sn)
            .map(|i| buf_kb(self.s[i].regs[SN_RXBUF_SIZE]) * 1024)
            .sum();
        (base, buf_kb(self.s[sn].regs[SN_RXBUF_SIZE]) * 1024)
    }

    fn rx_size(&self, sn: usize) -> usize {
        buf_kb(self.s[sn].regs[SN_RXBUF_SIZE]) * 1024
    }

    fn rsr(&self, sn: usize) -> usize {
        let s = &self.s[sn];
        (s.get16(SN_RX_WR).wrapping_sub(s.rx_rd) as usize).min(self.rx_size(sn))
    }

    fn rx_free(&self, sn: usize) -> usize {
        self.rx_size(sn) - self.rsr(sn)
    }

    fn fsr(&self, sn: usize) -> u16 {
        let s = &self.s[sn];
        let size = buf_kb(s.regs[SN_TXBUF_SIZE]) * 1024;
        let wr = s.get16(SN_TX_WR);
        let used = if s.proto() == 0x01 {
            let ack = s.get16(SN_TX_RD).wrapping_sub(s.tx_queue.len() as u16);
            wr.wrapping_sub(ack)
        } else {
            wr.wrapping_sub(s.get16(SN_TX_RD))
        } as usize;
        size.saturating_sub(used) as u16
    }

    /// Append to socket `sn`'s RX ring at RX_WR.
    fn rx_write(&mut self, sn: usize, data: &[u8]) {
        let (base, size) = self.rxgeom(sn);
        if size == 0 {
            return;
        }
        let mut wr = self.s[sn].get16(SN_RX_WR);
        for &b in data {
            self.rxmem[(base + (wr as usize & (size - 1))) % MEM] = b;
            wr = wr.wrapping_add(1);
        }
        self.s[sn].set16(SN_RX_WR, wr);
    }

    /// Write a packet header (MACRAW length or UDP info) and note it.
    fn rx_header(&mut self, sn: usize, hdr: &[u8]) {
        let at = self.s[sn].get16(SN_RX_WR);
        self.s[sn].rx_headers.push_back((at, hdr.len() as u16));
        self.rx_write(sn, hdr);
    }

    /// Copy TX_RD..TX_WR out of socket `sn`'s TX ring.
    fn tx_take(&self, sn: usize) -> Vec<u8> {
        let (base, size) = self.txgeom(sn);
        let s = &self.s[sn];
        let (rd, wr) = (s.get16(SN_TX_RD), s.get16(SN_TX_WR));
        let len = (wr.wrapping_sub(rd) as usize).min(size);
        (0..len)
            .map(|i| self.txmem[(base + (rd.wrapping_add(i as u16) as usize & (size - 1))) % MEM])
            .collect()
    }

    fn raise(&mut self, sn: usize, bits: u8) {
        let s = &mut self.s[sn];
        s.regs[SN_IR] |= bits & s.regs[SN_IMR] & 0x1F;
    }

    fn sir(&self) -> u8 {
        self.s
            .iter()
            .enumerate()
            .fold(0, |acc, (i, s)| acc | (((s.regs[SN_IR] != 0) as u8) << i))
    }

    /// Recompute INTn; returns whether it changed.
    fn update_int(&mut self) -> bool {
        let low = (self.common[IR] & self.common[IMR] & 0xF0) != 0
            || (self.sir() & self.common[SIMR]) != 0;
        let changed = low != self.int_low;
        self.int_low = low;
        changed
    }

    fn random(&mut self) -> u8 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 24) as u8
    }

    // ---------------------------------------------------------------- SPI

    /// Clock one byte through the SPI state machine; returns MISO.
    fn clock(&mut self, f: &mut Frame, mosi: u8, n: &mut TxnCount) -> u8 {
        n.bytes += 1;
        let miso = match f.pos {
            0 => {
                f.addr = (mosi as u16) << 8;
                f.pos = 1;
                0x01
            }
            1 => {
                f.addr |= mosi as u16;
                f.pos = 2;
                0x02
            }
            2 => {
                f.ctrl = mosi;
                f.pos = 3;
                f.data = 0;
                0x03
            }
            _ => {
                let bsb = f.ctrl >> 3;
                let write = f.ctrl & 0x04 != 0;
                let addr = f.addr;
                let out = if write {
                    self.write_byte(bsb, addr, mosi, n);
                    0x00
                } else {
                    let v = self.read_byte(bsb, addr, n);
                    if self.garbage > 0 {
                        self.garbage -= 1;
                        self.random()
                    } else {
                        v
                    }
                };
                f.addr = f.addr.wrapping_add(1);
                f.data += 1;
                let fixed = match f.ctrl & 0x03 {
                    0 => usize::MAX,
                    1 => 1,
                    2 => 2,
                    _ => 4,
                };
                if f.data >= fixed {
                    f.pos = 0;
                }
                out
            }
        };
        match self.miso_stuck {
            Some(v) => v,
            None => miso,
        }
    }

    fn is_header_byte(&self, sn: usize, addr: u16) -> bool {
        self.s[sn]
            .rx_headers
            .iter()
            .any(|&(start, len)| addr.wrapping_sub(start) < len)
    }

    fn read_byte(&mut self, bsb: u8, addr: u16, n: &mut TxnCount) -> u8 {
        if bsb == 0 {
            return self.read_common(addr as usize);
        }
        let sn = (bsb >> 2) as usize;
        match bsb & 3 {
            1 => self.read_sock(sn, addr as usize),
            2 => {
                let (base, size) = self.txgeom(sn);
                if size == 0 {
                    return 0;
                }
                n.payload += 1;
                self.txmem[(base + (addr as usize & (size - 1))) % MEM]
            }
            3 => {
                let (base, size) = self.rxgeom(sn);
                if size == 0 {
                    return 0;
                }
                if !self.is_header_byte(sn, addr) {
                    n.payload += 1;
                }
                self.rxmem[(base + (addr as usize & (size - 1))) % MEM]
            }
            _ => 0,
        }
    }

    fn read_common(&mut self, a: usize) -> u8 {
        match a {
            SIR => self.sir(),
            VERSIONR => self.version,
            PHYCFGR => {
                let cfg = self.common[PHYCFGR] & 0xF8;
                if self.phy_up() {
                    cfg | 0x07
                } else {
                    cfg
                }
            }
            a if a < COMMON_LEN => self.common[a],
            _ => 0,
        }
    }

    fn read_sock(&mut self, sn: usize, a: usize) -> u8 {
        let s = &self.s[sn];
        match a {
            SN_CR => s.regs[SN_CR],
            SN_TX_FSR | 0x21 => self.fsr(sn).to_be_bytes()[a - SN_TX_FSR],
            SN_RX_RSR | 0x27 => (self.rsr(sn) as u16).to_be_bytes()[a - SN_RX_RSR],
            0x14 | 0x17..=0x1D => 0,
            a if a < SOCK_REG_LEN => s.regs[a],
            _ => 0,
        }
    }

    fn write_byte(&mut self, bsb: u8, addr: u16, v: u8, n: &mut TxnCount) {
        if bsb == 0 {
            return self.write_common(addr as usize, v);
        }
        let sn = (bsb >> 2) as usize;
        match bsb & 3 {
            1 => self.write_sock(sn, addr as usize, v),
            2 => {
                let (base, size) = self.txgeom(sn);
                if size > 0 {
                    n.payload += 1;
                    self.txmem[(base + (addr as usize & (size - 1))) % MEM] = v;
                }
            }
            // RX buffer writes are allowed by the chip; keep them.
            3 => {
                let (base, size) = self.rxgeom(sn);
                if size > 0 {
                    self.rxmem[(base + (addr as usize & (size - 1))) % MEM] = v;
                }
            }
            _ => {}
        }
    }

    fn write_common(&mut self, a: usize, v: u8) {
        match a {
            MR => {
                if v & 0x80 != 0 {
                    self.reset();
                } else {
                    self.common[MR] = v & 0x3A;
                }
            }
            IR => self.common[IR] &= !(v & 0xF0),
            SIR | VERSIONR => {}
            PHYCFGR => self.common[PHYCFGR] = v & 0xF8,
            // PMAGIC..UPORTR and the rest of the writable map.
            a if a < COMMON_LEN && !(0x28..=0x2D).contains(&a) => self.common[a] = v,
            _ => {}
        }
    }

    fn write_sock(&mut self, sn: usize, a: usize, v: u8) {
        match a {
            SN_CR => {
                if self.cr_stuck {
                    self.s[sn].regs[SN_CR] = v;
                } else {
                    self.command(sn, v);
                }
            }
            SN_IR => self.s[sn].regs[SN_IR] &= !(v & 0x1F),
            SN_SR | SN_TX_FSR | 0x21 | SN_TX_RD | 0x23 | SN_RX_RSR | 0x27 | SN_RX_WR | 0x2B => {}
            0x14 | 0x17..=0x1D => {}
            a if a < SOCK_REG_LEN => self.s[sn].regs[a] = v,
            _ => {}
        }
    }

    // ----------------------------------------------------------- commands

    fn command(&mut self, sn: usize, cmd: u8) {
        self.s[sn].regs[SN_CR] = 0;
        let sr = self.s[sn].sr();
        match cmd {
            CR_OPEN => self.open(sn),
            CR_LISTEN if sr == SOCK_INIT => {
                self.s[sn].regs[SN_SR] = SOCK_LISTEN;
                let addr = SocketAddrV4::new(self.host_ip(), self.s[sn].get16(SN_PORT));
                self.ensure_listener(addr);
            }
            CR_CONNECT if sr == SOCK_INIT => self.connect(sn),
            CR_DISCON => match sr {
                SOCK_ESTABLISHED | SOCK_CLOSE_WAIT => {
                    let to = tcp_timeout(self.rtr(), self.common[RCR]);
                    let s = &mut self.s[sn];
                    s.regs[SN_SR] = if sr == SOCK_ESTABLISHED {
                        SOCK_FIN_WAIT
                    } else {
                        SOCK_LAST_ACK
                    };
                    s.fin_pending = true;
                    s.close_deadline = Some(Instant::now() + to);
                    self.pump_sock(sn);
                }
                SOCK_INIT | SOCK_LISTEN | SOCK_SYNSENT => self.close_sock(sn, true),
                _ => {}
            },
            CR_CLOSE => self.close_sock(sn, true),
            CR_SEND | CR_SEND_MAC => self.send(sn),
            CR_SEND_KEEP => {}
            CR_RECV => {
                let s = &mut self.s[sn];
                s.rx_rd = s.get16(SN_RX_RD);
                let rd = s.rx_rd;
                let wr = s.get16(SN_RX_WR);
                // Forget the headers the reader has moved past: a header
                // ends at or before RX_RD when it lies at least as far behind
                // RX_WR as RX_RD does. (Kept ones are scanned for every RX
                // byte read, and a stale one would match a payload byte of a
                // later lap at the same 16-bit pointer.)
                while let Some(&(start, len)) = s.rx_headers.front() {
                    let end = start.wrapping_add(len);
                    if wr.wrapping_sub(end) >= wr.wrapping_sub(rd) {
                        s.rx_headers.pop_front();
                    } else {
                        break;
                    }
                }
                self.pump_sock(sn);
            }
            _ => {}
        }
    }

    fn open(&mut self, sn: usize) {
        self.close_sock(sn, true);
        let s = &mut self.s[sn];
        for r in [SN_TX_RD, SN_TX_WR, SN_RX_RD, SN_RX_WR] {
            s.set16(r, 0);
        }
        s.rx_rd = 0;
        s.tx_queue.clear();
        s.sending = false;
        s.fin_pending = false;
        s.close_deadline = None;
        s.rx_headers.clear();
        match s.proto() {
            0x01 => s.regs[SN_SR] = SOCK_INIT,
            0x02 => {
                let local = SocketAddrV4::new(self.host_ip(), self.s[sn].get16(SN_PORT));
                match host_udp(&self.netns, local) {
                    Ok(u) => self.s[sn].host = Host::Udp(u),
                    Err(_) => self.stats.host_errors += 1,
                }
                self.s[sn].regs[SN_SR] = SOCK_UDP;
            }
            0x04 if sn == 0 => s.regs[SN_SR] = SOCK_MACRAW,
            _ => {}
        }
    }

    fn close_sock(&mut self, sn: usize, abort: bool) {
        let s = &mut self.s[sn];
        drop_host(&mut s.host, abort);
        s.regs[SN_SR] = SOCK_CLOSED;
        s.tx_queue.clear();
        s.sending = false;
        s.fin_pending = false;
        s.close_deadline = None;
        self.prune_listeners();
    }

    fn connect(&mut self, sn: usize) {
        let dst = self.s[sn].dest();
        let rtr = self.rtr();
        let rcr = self.common[RCR];
        self.s[sn].regs[SN_SR] = SOCK_SYNSENT;
        let route = if dst.ip().is_unspecified() || dst.port() == 0 {
            None
        } else {
            self.route(dst)
        };
        let Some(to) = route else {
            // No ARP answer: ARPTO, then TIMEOUT.
            self.s[sn].host = Host::Silent {
                deadline: Instant::now() + arp_timeout(rtr, rcr),
            };
            return;
        };
        let local = SocketAddrV4::new(self.host_ip(), self.s[sn].get16(SN_PORT));
        match host_connect(&self.netns, local, to) {
            Ok(stream) => {
                self.s[sn].host = Host::Connecting {
                    stream,
                    deadline: Instant::now() + tcp_timeout(rtr, rcr),
                }
            }
            Err(_) => {
                self.stats.host_errors += 1;
                self.s[sn].host = Host::Silent {
                    deadline: Instant::now() + arp_timeout(rtr, rcr),
                };
            }
        }
    }

    fn send(&mut self, sn: usize) {
        let data = self.tx_take(sn);
        let wr = self.s[sn].get16(SN_TX_WR);
        self.s[sn].set16(SN_TX_RD, wr);
        match self.s[sn].sr() {
            SOCK_MACRAW => {
                if data.len() > MAX_FRAME || data.len() < 14 {
                    self.stats.frames_dropped += 1;
                } else if self.phy_up() {
                    match self.link.as_mut().map(|l| l.transmit(&data)) {
                        Some(Ok(())) => self.stats.frames_tx += 1,
                        _ => self.stats.frames_dropped += 1,
                    }
                } else {
                    self.stats.frames_dropped += 1;
                }
                self.raise(sn, IR_SEND_OK);
            }
            SOCK_UDP => {
                let dst = self.s[sn].dest();
                let mss = match self.s[sn].get16(SN_MSSR) as usize {
                    0 => UDP_MTU,
                    m => m.min(UDP_MTU),
                };
                let route = if self.phy_up() { self.route(dst) } else { None };
                match (route, &self.s[sn].host) {
                    (Some(to), Host::Udp(u)) => {
                        for chunk in data.chunks(mss) {
                            match u.send_to(chunk, to) {
                                Ok(_) => self.stats.udp_tx += 1,
                                Err(_) => self.stats.udp_dropped += 1,
                            }
                        }
                        self.raise(sn, IR_SEND_OK);
                    }
                    _ => {
                        self.stats.udp_dropped += 1;
                        self.raise(sn, IR_TIMEOUT);
                    }
                }
            }
            SOCK_ESTABLISHED | SOCK_CLOSE_WAIT => {
                self.s[sn].tx_queue.extend(data);
                self.s[sn].sending = true;
                self.pump_sock(sn);
            }
            _ => {}
        }
    }

    // -------------------------------------------------------------- pump

    fn ensure_listener(&mut self, addr: SocketAddrV4) {
        if self.listeners.iter().any(|l| l.addr == addr) {
            return;
        }
        match host_listen(&self.netns, addr) {
            Ok(l) => self.listeners.push(Listener { addr, l }),
            Err(_) => self.stats.host_errors += 1,
        }
    }

    /// Drop host listeners no chip socket listens on any more (new SYNs
    /// to the port are then refused, as by the chip).
    fn prune_listeners(&mut self) {
        let ip = self.host_ip();
        let listening: Vec<SocketAddrV4> = self
            .s
            .iter()
            .filter(|s| s.sr() == SOCK_LISTEN)
            .map(|s| SocketAddrV4::new(ip, s.get16(SN_PORT)))
            .collect();
        self.listeners.retain(|l| listening.contains(&l.addr));
    }

    fn pump_listeners(&mut self) {
        if !self.phy_up() {
            return;
        }
        let ip = self.host_ip();
        for li in 0..self.listeners.len() {
            loop {
                let addr = self.listeners[li].addr;
                let Some(sn) = (0..8).find(|&i| {
                    self.s[i].sr() == SOCK_LISTEN
                        && SocketAddrV4::new(ip, self.s[i].get16(SN_PORT)) == addr
                }) else {
                    break;
                };
                match self.listeners[li].l.accept() {
                    Ok((stream, from)) => {
                        let _ = stream.set_nonblocking(true);
                        let _ = stream.set_nodelay(true);
                        set_sndbuf(&stream);
                        let s = &mut self.s[sn];
                        if let SocketAddr::V4(f) = from {
                            s.regs[SN_DIPR..SN_DIPR + 4].copy_from_slice(&f.ip().octets());
                            s.set16(SN_DPORT, f.port());
                        }
                        s.host = Host::Stream(stream);
                        s.regs[SN_SR] = SOCK_ESTABLISHED;
                        self.stats.tcp_connections += 1;
                        self.raise(sn, IR_CON);
                    }
                    Err(_) => break,
                }
            }
        }
        self.prune_listeners();
    }

    fn pump(&mut self) {
        self.pump_listeners();
        for sn in 0..8 {
            self.pump_sock(sn);
        }
        self.pump_link();
    }

    /// Socket 0 is in MACRAW, its RX ring cannot take a full frame, and
    /// frames that do not fit wait on the link (the default).
    fn macraw_rx_full(&self) -> bool {
        !self.overrun_drops && self.s[0].sr() == SOCK_MACRAW && self.rx_free(0) < MAX_FRAME + 2
    }

    fn pump_link(&mut self) {
        let Some(mut link) = self.link.take() else {
            return;
        };
        let mut buf = std::mem::take(&mut self.frame);
        for _ in 0..64 {
            let macraw = self.s[0].sr() == SOCK_MACRAW;
            if self.macraw_rx_full() {
                break;
            }
            let n = match link.receive(&mut buf) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(_) => {
                    self.stats.frames_dropped += 1;
                    continue;
                }
            };
            let frame = &buf[..n];
            if !macraw || !self.cable || !self.accept_frame(frame) {
                self.stats.frames_dropped += 1;
                continue;
            }
            if n + 2 > self.rx_free(0) {
                // Only reached with overrun drops on: the chip has nowhere
                // to keep a frame its ring cannot hold.
                self.stats.frames_dropped += 1;
                self.stats.frames_overrun += 1;
                continue;
            }
            let len = self.s[0].next_rx_len.take().unwrap_or((n + 2) as u16);
            self.rx_header(0, &len.to_be_bytes());
            self.rx_write(0, frame);
            self.stats.frames_rx += 1;
            self.raise(0, IR_RECV);
        }
        self.frame = buf;
        self.link = Some(link);
    }

    /// The MAC filter of socket 0 (Sn_MR.MFEN and the blocking bits).
    fn accept_frame(&self, f: &[u8]) -> bool {
        if f.len() < 14 {
            return false;
        }
        let mr = self.s[0].regs[SN_MR];
        let dst = &f[..6];
        let bcast = dst == [0xFF; 6];
        if bcast && mr & 0x40 != 0 {
            return false;
        }
        if mr & 0x80 == 0 {
            return true;
        }
        let mcast = dst[0] & 1 != 0 && !bcast;
        if mcast && mr & 0x20 != 0 {
            return false;
        }
        if dst[0] == 0x33 && dst[1] == 0x33 && mr & 0x10 != 0 {
            return false;
        }
        bcast || mcast || dst == &self.common[SHAR..SHAR + 6]
    }

    fn pump_sock(&mut self, sn: usize) {
        let now = Instant::now();
        let up = self.phy_up();
        match self.s[sn].sr() {
            SOCK_SYNSENT => self.pump_connecting(sn, now, up),
            SOCK_ESTABLISHED | SOCK_CLOSE_WAIT | SOCK_FIN_WAIT | SOCK_LAST_ACK if up => {
                self.pump_stream(sn, now)
            }
            SOCK_FIN_WAIT | SOCK_LAST_ACK
                if self.s[sn].close_deadline.is_some_and(|d| now >= d) =>
            {
                self.close_sock(sn, true);
                self.raise(sn, IR_TIMEOUT);
            }
            SOCK_UDP if up => self.pump_udp(sn),
            _ => {}
        }
    }

    fn pump_connecting(&mut self, sn: usize, now: Instant, up: bool) {
        let result = match &self.s[sn].host {
            Host::Silent { deadline } => (now >= *deadline).then_some(Err(false)),
            Host::Connecting { stream, deadline } => {
                if now >= *deadline {
                    Some(Err(false))
                } else if !up {
                    None
                } else {
                    let mut p = libc::pollfd {
                        fd: stream.as_raw_fd(),
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd, zero timeout.
                    let rc = unsafe { libc::poll(&mut p, 1, 0) };
                    if rc > 0 {
                        match stream.take_error() {
                            Ok(None) if stream.peer_addr().is_ok() => Some(Ok(())),
                            Ok(None) => None,
                            Ok(Some(e)) | Err(e) => {
                                Some(Err(e.kind() == io::ErrorKind::ConnectionRefused))
                            }
                        }
                    } else {
                        None
                    }
                }
            }
            _ => Some(Err(false)),
        };
        match result {
            None => {}
            Some(Ok(())) => {
                let s = &mut self.s[sn];
                if let Host::Connecting { stream, .. } = std::mem::replace(&mut s.host, Host::None)
                {
                    let _ = stream.set_nodelay(true);
                    set_sndbuf(&stream);
                    s.host = Host::Stream(stream);
                }
                s.regs[SN_SR] = SOCK_ESTABLISHED;
                self.stats.tcp_connections += 1;
                self.raise(sn, IR_CON);
            }
            Some(Err(refused)) => {
                self.close_sock(sn, true);
                // A RST instead of SYN/ACK: closed; otherwise TCPTO/ARPTO.
                self.raise(sn, if refused { IR_DISCON } else { IR_TIMEOUT });
            }
        }
    }

    fn pump_stream(&mut self, sn: usize, now: Instant) {
        enum Next {
            Stay,
            Reset,
            PeerFin,
        }
        let mut next = Next::Stay;
        let mut sent_ok = false;
        let mut received = 0usize;
        let free = self.rx_free(sn);
        let mut tmp = Vec::new();
        {
            let s = &mut self.s[sn];
            let Host::Stream(stream) = &mut s.host else {
                return;
            };
            // Transmit what SEND queued.
            while !s.tx_queue.is_empty() {
                let (a, _) = s.tx_queue.as_slices();
                match stream.write(a) {
                    Ok(0) => break,
                    Ok(k) => {
                        s.tx_queue.drain(..k);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        next = Next::Reset;
                        break;
                    }
                }
            }
            if s.tx_queue.is_empty() && s.sending {
                s.sending = false;
                sent_ok = true;
            }
            if s.tx_queue.is_empty() && s.fin_pending {
                s.fin_pending = false;
                let _ = stream.shutdown(std::net::Shutdown::Write);
            }
            let reading = matches!(s.regs[SN_SR], SOCK_ESTABLISHED | SOCK_FIN_WAIT);
            if reading && free > 0 && !matches!(next, Next::Reset) {
                tmp.resize(free.min(64 * 1024), 0);
                loop {
                    if received == tmp.len() {
                        break;
                    }
                    match stream.read(&mut tmp[received..]) {
                        Ok(0) => {
                            next = Next::PeerFin;
                            break;
                        }
                        Ok(k) => received += k,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            next = Next::Reset;
                            break;
                        }
                    }
                }
            }
        }
        if sent_ok {
            self.raise(sn, IR_SEND_OK);
        }
        if received > 0 {
            self.rx_write(sn, &tmp[..received]);
            self.raise(sn, IR_RECV);
        }
        let sr = self.s[sn].sr();
        match next {
            Next::Reset => {
                self.close_sock(sn, true);
                self.raise(sn, IR_DISCON);
            }
            Next::PeerFin => match sr {
                SOCK_ESTABLISHED => {
                    self.s[sn].regs[SN_SR] = SOCK_CLOSE_WAIT;
                    self.raise(sn, IR_DISCON);
                }
                _ => {
                    // FIN_WAIT: both FINs exchanged (TIME_WAIT not shown).
                    let graceful = self.s[sn].tx_queue.is_empty() && !self.s[sn].fin_pending;
                    self.close_sock(sn, !graceful);
                    self.raise(sn, IR_DISCON);
                }
            },
            Next::Stay => {
                let s = &self.s[sn];
                if sr == SOCK_LAST_ACK && s.tx_queue.is_empty() && !s.fin_pending {
                    // Our FIN went out after the peer's: done.
                    self.close_sock(sn, false);
                } else if matches!(sr, SOCK_FIN_WAIT | SOCK_LAST_ACK)
                    && s.close_deadline.is_some_and(|d| now >= d)
                {
                    self.close_sock(sn, true);
                    self.raise(sn, IR_TIMEOUT);
                }
            }
        }
    }

    fn pump_udp(&mut self, sn: usize) {
        let size = self.rx_size(sn);
        let mut buf = vec![0u8; 65536];
        for _ in 0..64 {
            let free = self.rx_free(sn);
            let Host::Udp(u) = &self.s[sn].host else {
                return;
            };
            let (n, from) = match u.peek_from(&mut buf) {
                Ok(x) => x,
                Err(_) => return,
            };
            if 8 + n > size {
                let _ = u.recv_from(&mut buf);
                self.stats.udp_dropped += 1;
                continue;
            }
            if 8 + n > free {
                return;
            }
            let _ = u.recv_from(&mut buf);
            let SocketAddr::V4(from) = from else {
                continue;
            };
            let len = self.s[sn].next_rx_len.take().unwrap_or(n as u16);
            let mut hdr = [0u8; 8];
            hdr[..4].copy_from_slice(&from.ip().octets());
            hdr[4..6].copy_from_slice(&from.port().to_be_bytes());
            hdr[6..8].copy_from_slice(&len.to_be_bytes());
            self.rx_header(sn, &hdr);
            self.rx_write(sn, &buf[..n]);
            self.stats.udp_rx += 1;
            self.raise(sn, IR_RECV);
        }
    }
}

fn drop_host(h: &mut Host, abort: bool) {
    let old = std::mem::replace(h, Host::None);
    if let Host::Stream(s) | Host::Connecting { stream: s, .. } = old {
        if abort {
            set_linger_zero(&s);
        }
        drop(s);
    }
}

fn setsockopt_int(fd: i32, level: i32, name: i32, v: i32) {
    // SAFETY: valid fd, pointer to an int of the declared size.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &v as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
    }
}

fn set_sndbuf(s: &TcpStream) {
    setsockopt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, 64 * 1024);
}

fn set_linger_zero(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid fd and a correctly sized linger value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Run `f` in network namespace `ns` (on a thread that entered it), or here.
fn in_ns<R: Send + 'static>(
    ns: &Option<PathBuf>,
    f: impl FnOnce() -> io::Result<R> + Send + 'static,
) -> io::Result<R> {
    let Some(path) = ns.clone() else {
        return f();
    };
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path)?;
        // SAFETY: plain syscall on an open namespace fd; affects this thread only.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        f()
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")))
}

fn host_connect(
    ns: &Option<PathBuf>,
    local: SocketAddrV4,
    remote: SocketAddrV4,
) -> io::Result<TcpStream> {
    in_ns(ns, move || {
        // SAFETY: the fd is owned by the TcpStream right after creation;
        // the sockaddr values are valid and correctly sized.
        unsafe {
            let fd = libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let s = TcpStream::from_raw_fd(fd);
            setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
            let la = sockaddr(local);
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            if libc::bind(fd, &la as *const _ as *const libc::sockaddr, len) != 0 {
                return Err(io::Error::last_os_error());
            }
            let ra = sockaddr(remote);
            if libc::connect(fd, &ra as *const _ as *const libc::sockaddr, len) != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINPROGRESS) {
                    return Err(e);
                }
            }
            Ok(s)
        }
    })
}

fn host_listen(ns: &Option<PathBuf>, addr: SocketAddrV4) -> io::Result<TcpListener> {
    in_ns(ns, move || {
        let l = TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok(l)
    })
}

fn host_udp(ns: &Option<PathBuf>, addr: SocketAddrV4) -> io::Result<UdpSocket> {
    in_ns(ns, move || {
        let u = UdpSocket::bind(addr)?;
        u.set_nonblocking(true)?;
        u.set_broadcast(true)?;
        Ok(u)
    })
}

// ---------------------------------------------------------------------------
// Public handles.
// ---------------------------------------------------------------------------

struct Shared {
    chip: Mutex<Chip>,
    int_cv: Condvar,
    stop: AtomicBool,
    bus: Arc<BusCounter>,
}

impl Shared {
    fn with<R>(&self, f: impl FnOnce(&mut Chip) -> R) -> R {
        let mut c = self.chip.lock();
        let r = f(&mut c);
        c.update_int();
        self.int_cv.notify_all();
        r
    }
}

/// The emulated chip. Dropping it stops its background thread and closes
/// every host socket; the [`W5500Spi`] and [`W5500Int`] handles then see a
/// chip that no longer moves data.
pub struct W5500Emu {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for W5500Emu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("W5500Emu").finish_non_exhaustive()
    }
}

impl Default for W5500Emu {
    fn default() -> Self {
        Self::new()
    }
}

impl W5500Emu {
    /// A chip with no cable: MACRAW frames go nowhere; hardwired sockets use
    /// host sockets; PHYCFGR reports the link up.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// A chip whose Ethernet port is `link` (a memory-switch port, a TAP...).
    pub fn with_link(link: impl Link + Send + 'static) -> Self {
        Self::build(Some(Box::new(link)))
    }

    fn build(link: Option<Box<dyn Link + Send>>) -> Self {
        let signal = link.as_ref().and_then(|l| l.rx_signal());
        let shared = Arc::new(Shared {
            chip: Mutex::new(Chip::new(link)),
            int_cv: Condvar::new(),
            stop: AtomicBool::new(false),
            bus: BusCounter::new(),
        });
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("w5500-emu".into())
            .spawn(move || pump_thread(&sh, signal))
            .expect("spawn emulator thread");
        W5500Emu {
            shared,
            thread: Some(thread),
        }
    }

    /// An SPI device handle (chip select included), for the driver.
    pub fn spi(&self) -> W5500Spi {
        W5500Spi {
            shared: self.shared.clone(),
        }
    }

    /// The INTn pin.
    pub fn int_pin(&self) -> W5500Int {
        W5500Int {
            shared: self.shared.clone(),
        }
    }

    /// The bus counters.
    pub fn bus(&self) -> Arc<BusCounter> {
        self.shared.bus.clone()
    }

    /// Plug (`true`) or pull (`false`) the cable: PHYCFGR.LNK follows, and
    /// nothing moves on any socket while it is out.
    pub fn set_link_up(&self, up: bool) {
        self.shared.with(|c| c.cable = up);
    }

    /// Power-cycle the chip: every register back to its reset value.
    pub fn hard_reset(&self) {
        self.shared.with(|c| c.reset());
    }

    /// Replace the next `n` data bytes the chip shifts out with junk.
    pub fn inject_garbage(&self, n: usize) {
        self.shared.with(|c| c.garbage += n);
    }

    /// Hold MISO at `v` for every byte (a missing or dead chip), or release it.
    pub fn set_miso_stuck(&self, v: Option<u8>) {
        self.shared.with(|c| c.miso_stuck = v);
    }

    /// Make VERSIONR read `v` (a different chip on the bus).
    pub fn set_version(&self, v: u8) {
        self.shared.with(|c| c.version = v);
    }

    /// Freeze command processing: `Sn_CR` keeps the value written and the
    /// command is not executed (a wedged chip).
    pub fn set_cr_stuck(&self, stuck: bool) {
        self.shared.with(|c| c.cr_stuck = stuck);
    }

    /// Model the chip's MACRAW overrun (`true`): a frame that arrives when
    /// socket 0's RX ring has less free space than the frame and its 2-byte
    /// header is dropped and counted ([`EmuStats::frames_overrun`]). With
    /// `false` (the default) it waits on the link until the driver frees
    /// room, which no real wire does.
    pub fn set_macraw_overrun_drops(&self, drop: bool) {
        self.shared.with(|c| c.overrun_drops = drop);
    }

    /// Write `len` into the length field of the next packet header stored
    /// in socket `sn`'s RX ring (MACRAW: the 2-byte length; UDP: bytes 6..8).
    pub fn override_next_rx_len(&self, sn: u8, len: u16) {
        self.shared
            .with(|c| c.s[sn as usize & 7].next_rx_len = Some(len));
    }

    /// Treat `ip` as a host on the LAN that never answers ARP.
    pub fn add_silent_host(&self, ip: Ipv4Addr) {
        self.shared.with(|c| c.silent.push(ip));
    }

    /// Deliver UDP datagrams (and TCP connects) for `from` to `to` instead.
    pub fn redirect_udp(&self, from: SocketAddrV4, to: SocketAddrV4) {
        self.shared.with(|c| c.redirects.push((from, to)));
    }

    /// The host address sockets bind to while SIPR is 0.0.0.0.
    pub fn set_unconfigured_ip(&self, ip: Ipv4Addr) {
        self.shared.with(|c| c.unconfigured_ip = ip);
    }

    /// Create every host socket inside the network namespace at `path`
    /// (e.g. `/run/netns/NAME`); any destination is then allowed.
    pub fn set_netns(&self, path: Option<PathBuf>) {
        self.shared.with(|c| c.netns = path);
    }

    /// Counters of what happened behind the bus.
    pub fn stats(&self) -> EmuStats {
        self.shared.chip.lock().stats
    }

    /// Read a register without going through the bus (no counting, no side
    /// effects): `block` is the BSB value, `addr` the offset.
    pub fn peek(&self, block: u8, addr: u16) -> u8 {
        let mut c = self.shared.chip.lock();
        let g = std::mem::take(&mut c.garbage);
        let mut n = TxnCount::default();
        let v = c.read_byte(block & 0x1F, addr, &mut n);
        c.garbage = g;
        v
    }

    /// Whether INTn is low now.
    pub fn int_low(&self) -> bool {
        self.shared.chip.lock().int_low
    }
}

impl Drop for W5500Emu {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.shared.with(|c| {
            for s in c.s.iter_mut() {
                drop_host(&mut s.host, true);
            }
            c.listeners.clear();
            c.link = None;
        });
    }
}

fn pump_thread(shared: &Shared, signal: Option<Arc<dyn RxSignal>>) {
    while !shared.stop.load(Ordering::Acquire) {
        let ring_full = shared.with(|c| {
            c.pump();
            c.macraw_rx_full()
        });
        if ring_full {
            // Frames are waiting on the link but the RX ring has no room:
            // the link's signal would return at once and spin this thread
            // against the driver that has to drain the ring. Wait for the
            // next SPI transaction (it notifies `int_cv`) instead.
            let mut chip = shared.chip.lock();
            shared.int_cv.wait_for(&mut chip, PUMP_PERIOD);
            continue;
        }
        match &signal {
            Some(s) => s.wait(Some(PUMP_PERIOD)),
            None => std::thread::sleep(PUMP_PERIOD),
        }
    }
}

/// The chip's SPI port (an [`SpiDevice`]: one transaction = one chip-select
/// cycle). Several handles may exist; transactions never interleave.
#[derive(Clone)]
pub struct W5500Spi {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for W5500Spi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("W5500Spi")
    }
}

impl SpiErrorType for W5500Spi {
    type Error = Infallible;
}

impl SpiDevice<u8> for W5500Spi {
    fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), Infallible> {
        let mut n = TxnCount::default();
        self.shared.with(|c| {
            let mut f = Frame::new();
            for op in operations.iter_mut() {
                match op {
                    Operation::Read(r) => {
                        for x in r.iter_mut() {
                            *x = c.clock(&mut f, 0x00, &mut n);
                        }
                    }
                    Operation::Write(w) => {
                        for &b in w.iter() {
                            c.clock(&mut f, b, &mut n);
                        }
                    }
                    Operation::Transfer(r, w) => {
                        for i in 0..r.len().max(w.len()) {
                            let miso = c.clock(&mut f, w.get(i).copied().unwrap_or(0), &mut n);
                            if let Some(x) = r.get_mut(i) {
                                *x = miso;
                            }
                        }
                    }
                    Operation::TransferInPlace(b) => {
                        for x in b.iter_mut() {
                            *x = c.clock(&mut f, *x, &mut n);
                        }
                    }
                    Operation::DelayNs(_) => {}
                }
            }
            if (1..3).contains(&f.pos) || (f.pos == 3 && f.data == 0 && f.ctrl & 3 != 0) {
                c.stats.truncated_frames += 1;
            }
        });
        self.shared.bus.transaction(n.bytes);
        self.shared.bus.payload(n.payload);
        Ok(())
    }
}

/// The chip's INTn output (active low).
#[derive(Clone)]
pub struct W5500Int {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for W5500Int {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("W5500Int")
    }
}

impl W5500Int {
    /// Wait until INTn is low or `timeout` passes; returns whether it is low.
    pub fn wait_low(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        let mut c = self.shared.chip.lock();
        while !c.int_low {
            if self.shared.int_cv.wait_until(&mut c, end).timed_out() {
                return c.int_low;
            }
        }
        true
    }
}

impl PinErrorType for W5500Int {
    type Error = Infallible;
}

impl InputPin for W5500Int {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(!self.shared.chip.lock().int_low)
    }
    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(self.shared.chip.lock().int_low)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_follow_the_datasheet() {
        assert_eq!(arp_timeout(2000, 8), Duration::from_millis(1800));
        // 2000 * (1+2+4+8+16+32) + 3 * 65535, in 100 us units.
        assert_eq!(tcp_timeout(2000, 8), Duration::from_micros(322_605 * 100));
    }
}
