//! WIZnet W5500 as a firmware-offload backend: the chip's eight hardwired
//! TCP/UDP sockets behind the [`Socketer`] contract.
//!
//! # Model
//!
//! * **Fds and hardware sockets.** `socket()` only takes an fd (8 of them,
//!   [`FdTable`]); a hardware socket is bound to it when it needs one:
//!   `bind`/first send for UDP, `connect`/`listen` for TCP. Each hardware
//!   socket gets 2 KB of TX and 2 KB of RX buffer (the chip's 16 KB split
//!   evenly).
//! * **TCP client**: `OPEN` in TCP mode on the local port, `Sn_DIPR` /
//!   `Sn_DPORT`, `CONNECT`; `SOCK_ESTABLISHED` completes it, `SOCK_CLOSED`
//!   with `Sn_IR.TIMEOUT` is [`Error::Timeout`], without it
//!   [`Error::ConnectionRefused`] (the chip got a RST).
//! * **TCP server**: the chip takes one connection per socket, so
//!   `listen(fd, N)` puts up to N hardware sockets in `SOCK_LISTEN` on the
//!   same port (at least one, as many as are free). `accept` hands an
//!   established one to a new fd and puts another free socket in LISTEN to
//!   keep the backlog; housekeeping also re-arms sockets whose half-open
//!   connection failed.
//! * **UDP**: every datagram sits in the RX ring behind the chip's 8-byte
//!   header (peer IP, port, length). `recv` with a short buffer truncates and
//!   drops the rest; a connected socket drops datagrams from other peers.
//!   The chip would split a send larger than its MTU into several
//!   datagrams, so a datagram over 1472 bytes is [`Error::MessageTooLong`].
//! * **Close**: `DISCON` (FIN after everything sent) and the hardware socket
//!   stays busy until the chip reports `SOCK_CLOSED`; `Linger(Some(0))` is
//!   `CLOSE` (the peer sees a reset). If every socket is busy, one still
//!   closing in the background is taken first.
//! * **Addressing**: static (`set_addr`, [`IpMode::Static`]) writes SIPR,
//!   SUBR and GAR. The chip has no DHCP or DNS client: [`dhcp`] and [`dns`]
//!   are small clients run by the driver over a UDP hardware socket; while
//!   the device is in DHCP mode one hardware socket stays reserved for it,
//!   so [`Capabilities::max_sockets`] is 7 instead of 8.
//!
//! # Waiting, locking, interrupts
//!
//! Blocking calls run on the shared [`block_on`] loop: each attempt takes
//! the lock, reads the socket's status registers, tries once, and releases
//! the lock; nothing waits with the lock held. Who wakes a waiting attempt:
//!
//! * With [`W5500Config::interrupts`] the driver enables INTn for every
//!   socket; host glue calls [`W5500Offload::on_interrupt`] when INTn falls,
//!   which latches and clears the chip's `Sn_IR` bits and notifies waiters.
//!   Attempts still re-check every [`W5500Config::interrupt_fallback`]
//!   (100 ms by default) in case an edge was missed.
//! * Without interrupts, a pending attempt simply retries after
//!   [`W5500Config::poll_interval`] (1 ms by default): each retry costs a
//!   few SPI register reads.
//!
//! Housekeeping runs under the lock at most every 50 ms, from whatever call
//! comes by: it reads the PHY link (NetUp/NetDown events), notices a chip
//! that was reset behind the driver's back (SHAR no longer ours) and
//! re-initialises it, reaps sockets that finished closing and refills
//! listener backlogs. Connections that were open when the chip reset report
//! [`Error::ConnectionAborted`]; bound UDP sockets are reopened on their
//! port. Call [`W5500Offload::poll`] now and then (or rely on socket calls)
//! so link events and DHCP renewal happen.
//!
//! # Errors from the chip
//!
//! Every value read from the chip is checked before it is used: a status
//! code the datasheet does not list, a size larger than the buffer, or a
//! UDP header that does not fit what was received is [`Error::Device`]
//! (the affected UDP socket is reopened so the next datagram starts clean);
//! a command the chip never accepts is [`Error::Device`] too. Nothing read
//! from the bus can make the driver panic or spin forever.

use core::time::Duration;

use embedded_hal::spi::SpiDevice;

use crate::error::{Error, Result};
use crate::fdtable::FdTable;
use crate::netlink::{ConnectMode, ConnectParams, Event, IpMode, Netlinker, NotifyFn};
use crate::phy::w5500::bus::{Block, Bus};
use crate::phy::w5500::regs::*;
use crate::platform::Platform;
use crate::socketer::{Capabilities, Netdever, Socketer, TlsSupport};
use crate::sockstate::{check_flags, check_remote, check_send_flags, ipv4, Side, SockState};
use crate::time::{Deadline, Instant};
use crate::types::*;
use crate::wait::{block_on, Attempt, Blocking};

/// Hardware sockets on the chip.
pub const HW_SOCKETS: usize = 8;
/// TX and RX buffer per hardware socket, in KB.
const BUF_KB: u8 = 2;
/// TX and RX buffer per hardware socket, in bytes.
const BUF: usize = BUF_KB as usize * 1024;
/// Largest UDP datagram the chip sends as one datagram (its UDP MTU).
pub const MAX_UDP: usize = 1472;
/// How often housekeeping touches the chip.
const HOUSEKEEPING: Duration = Duration::from_millis(50);
/// How long a socket may take to finish closing before it is forced shut.
const CLOSE_LIMIT: Duration = Duration::from_secs(60);
/// First port of the ephemeral range.
const EPHEMERAL_START: u16 = 49152;

/// How a [`W5500Offload`] is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct W5500Config {
    /// The chip's MAC address.
    pub mac: [u8; 6],
    /// Whether host glue calls [`W5500Offload::on_interrupt`] on INTn.
    pub interrupts: bool,
    /// Retry interval of pending attempts without interrupts.
    pub poll_interval: Duration,
    /// Safety re-check of pending attempts with interrupts.
    pub interrupt_fallback: Duration,
    /// Retry time written to RTR, in 100 us units (datasheet default 2000 = 200 ms).
    pub retry_time: u16,
    /// Retry count written to RCR (datasheet default 8).
    pub retry_count: u8,
    /// How long one `get_host_by_name` may take.
    pub dns_timeout: Duration,
}

impl Default for W5500Config {
    fn default() -> Self {
        W5500Config {
            mac: [0x02, 0x00, 0x57, 0x55, 0x00, 0x01],
            interrupts: false,
            poll_interval: Duration::from_millis(1),
            interrupt_fallback: Duration::from_millis(100),
            retry_time: 0x07D0,
            retry_count: 8,
            dns_timeout: Duration::from_secs(5),
        }
    }
}

/// Counters of a [`W5500Offload`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct W5500Stats {
    /// Times the chip was found reset (or reset by [`W5500Offload::reset`]) and re-initialised.
    pub recoveries: u32,
    /// Values from the chip that could not be right (each one a `Device` error).
    pub malformed: u32,
    /// DHCP or DNS messages ignored because they did not parse or were not for us.
    pub ignored_replies: u32,
    /// DHCP leases obtained.
    pub leases: u32,
}

/// What a hardware socket is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    Free,
    /// Bound to an fd (connected, connecting, UDP).
    User,
    /// In a listener's backlog.
    Backlog,
    /// Closing in the background since the given instant.
    Closing(Instant),
    /// DHCP or DNS.
    Internal,
}

#[derive(Debug, Clone, Copy)]
struct Hw {
    used: Use,
    /// Sn_IR bits seen and cleared on the chip, not consumed yet.
    ir: u8,
    /// A SEND was issued; the next one waits for SEND_OK.
    sending: bool,
    tx_wr: u16,
    rx_rd: u16,
    port: u16,
}

impl Hw {
    const FREE: Hw = Hw {
        used: Use::Free,
        ir: 0,
        sending: false,
        tx_wr: 0,
        rx_rd: 0,
        port: 0,
    };
}

#[derive(Debug)]
enum TcpState {
    Idle,
    Connecting {
        hw: u8,
        peer: SocketAddrV4,
    },
    Connected {
        hw: u8,
        peer: SocketAddrV4,
        /// The peer's FIN was seen (EOF after the data).
        eof: bool,
        /// A reset was reported once; later reads are EOF.
        reset_reported: bool,
        /// We sent DISCON (shutdown(Write)).
        fin_sent: bool,
    },
    Listening {
        port: u16,
        backlog: heapless::Vec<u8, HW_SOCKETS>,
        wanted: usize,
    },
    Failed,
}

#[derive(Debug)]
struct TcpFd {
    common: SockState,
    bound: Option<u16>,
    state: TcpState,
}

#[derive(Debug)]
struct UdpFd {
    common: SockState,
    bound: Option<u16>,
    hw: Option<u8>,
    peer: Option<SocketAddrV4>,
}

#[derive(Debug)]
enum Fd {
    Tcp(TcpFd),
    Udp(UdpFd),
}

impl Fd {
    fn common(&self) -> &SockState {
        match self {
            Fd::Tcp(t) => &t.common,
            Fd::Udp(u) => &u.common,
        }
    }
    fn common_mut(&mut self) -> &mut SockState {
        match self {
            Fd::Tcp(t) => &mut t.common,
            Fd::Udp(u) => &mut u.common,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    server: Ipv4Addr,
    renew_at: Instant,
}

struct Inner<SPI> {
    bus: Bus<SPI>,
    fds: FdTable<Fd, HW_SOCKETS>,
    hw: [Hw; HW_SOCKETS],
    mac: [u8; 6],
    retry: (u16, u8),
    interrupts: bool,
    ip: Option<IpConfig>,
    dhcp_mode: bool,
    lease: Option<Lease>,
    joined: bool,
    link_up: bool,
    up: bool,
    last_check: Option<Instant>,
    events: heapless::Deque<Event, 8>,
    notify_fn: Option<NotifyFn>,
    rng: u64,
    stats: W5500Stats,
}

/// Sn_SR values the datasheet lists (anything else is garbage).
fn valid_status(v: u8) -> bool {
    matches!(
        v,
        SOCK_CLOSED
            | SOCK_INIT
            | SOCK_LISTEN
            | SOCK_SYNSENT
            | SOCK_SYNRECV
            | SOCK_ESTABLISHED
            | SOCK_FIN_WAIT
            | SOCK_CLOSING
            | SOCK_TIME_WAIT
            | SOCK_CLOSE_WAIT
            | SOCK_LAST_ACK
            | SOCK_UDP
            | SOCK_MACRAW
            | 0x32
            | 0x5F
    )
}

fn mask_of(prefix: u8) -> [u8; 4] {
    let m = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix.min(32) as u32)
    };
    m.to_be_bytes()
}

fn ip_of(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

impl<SPI: SpiDevice> Inner<SPI> {
    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn malformed(&mut self) -> Error {
        self.stats.malformed += 1;
        Error::Device
    }

    // ------------------------------------------------------------ chip

    /// Reset the chip and program everything the driver relies on.
    fn init_chip(&mut self) -> Result<()> {
        let b = &mut self.bus;
        b.check_version()?;
        b.soft_reset()?;
        b.set_mac(&self.mac)?;
        b.write_u16(Block::Common, RTR, self.retry.0)?;
        b.write_u8(Block::Common, RCR, self.retry.1)?;
        for sn in 0..HW_SOCKETS as u8 {
            b.write_u8(Block::Socket(sn), SN_RXBUF_SIZE, BUF_KB)?;
            b.write_u8(Block::Socket(sn), SN_TXBUF_SIZE, BUF_KB)?;
        }
        let simr = if self.interrupts { 0xFF } else { 0x00 };
        b.write_u8(Block::Common, SIMR, simr)?;
        b.write_u8(Block::Common, IMR, 0)?;
        let ip = self.ip.clone();
        self.write_ip(ip.as_ref())?;
        self.link_up = self.bus.link_up()?;
        Ok(())
    }

    fn write_ip(&mut self, cfg: Option<&IpConfig>) -> Result<()> {
        let (addr, mask, gw) = match cfg {
            Some(c) => (
                c.addr.octets(),
                mask_of(c.prefix_len),
                c.gateway.map(|g| g.octets()).unwrap_or([0; 4]),
            ),
            None => ([0; 4], [0; 4], [0; 4]),
        };
        let mut block = [0u8; 18];
        block[0..4].copy_from_slice(&gw);
        block[4..8].copy_from_slice(&mask);
        block[8..14].copy_from_slice(&self.mac);
        block[14..18].copy_from_slice(&addr);
        self.bus.write(Block::Common, GAR, &block)?;
        Ok(())
    }

    fn set_ip(&mut self, cfg: Option<IpConfig>) -> Result<()> {
        self.write_ip(cfg.as_ref())?;
        self.ip = cfg;
        self.update_up();
        Ok(())
    }

    fn update_up(&mut self) {
        let up = self.joined && self.link_up && self.ip.is_some();
        if up != self.up {
            self.up = up;
            if self.events.is_full() {
                self.events.pop_front();
            }
            let _ = self
                .events
                .push_back(if up { Event::NetUp } else { Event::NetDown });
        }
    }

    fn sr(&mut self, sn: u8) -> Result<u8> {
        let v = self.bus.status(sn)?;
        if valid_status(v) {
            Ok(v)
        } else {
            Err(self.malformed())
        }
    }

    /// Read and clear the chip's Sn_IR bits, latch them; returns the latch.
    fn take_ir(&mut self, sn: u8) -> Result<u8> {
        let ir = self.bus.interrupts(sn)? & 0x1F;
        if ir != 0 {
            self.bus.clear_interrupts(sn, ir)?;
        }
        let h = &mut self.hw[sn as usize];
        h.ir |= ir;
        Ok(h.ir)
    }

    fn rsr(&mut self, sn: u8) -> Result<usize> {
        let v = self.bus.rx_size(sn)? as usize;
        if v > BUF {
            return Err(self.malformed());
        }
        Ok(v)
    }

    fn fsr(&mut self, sn: u8) -> Result<usize> {
        let v = self.bus.tx_free(sn)? as usize;
        if v > BUF {
            return Err(self.malformed());
        }
        Ok(v)
    }

    /// Close, set the mode and port, open, and check the status.
    fn open_hw(&mut self, sn: u8, mr: u8, port: u16) -> Result<()> {
        let b = &mut self.bus;
        b.command(sn, CR_CLOSE)?;
        b.write_u8(Block::Socket(sn), SN_MR, mr)?;
        b.write_u16(Block::Socket(sn), SN_PORT, port)?;
        b.clear_interrupts(sn, 0x1F)?;
        b.command(sn, CR_OPEN)?;
        let want = if mr & 0x0F == MR_UDP {
            SOCK_UDP
        } else {
            SOCK_INIT
        };
        if self.sr(sn)? != want {
            let _ = self.bus.command(sn, CR_CLOSE);
            return Err(self.malformed());
        }
        self.load_pointers(sn)?;
        let h = &mut self.hw[sn as usize];
        h.ir = 0;
        h.sending = false;
        h.port = port;
        Ok(())
    }

    /// Read TX_WR / RX_RD (set by OPEN, and again when a TCP connection is made).
    fn load_pointers(&mut self, sn: u8) -> Result<()> {
        let tx_wr = self.bus.read_u16(Block::Socket(sn), SN_TX_WR)?;
        let rx_rd = self.bus.read_u16(Block::Socket(sn), SN_RX_RD)?;
        let h = &mut self.hw[sn as usize];
        h.tx_wr = tx_wr;
        h.rx_rd = rx_rd;
        Ok(())
    }

    fn free_count(&self) -> usize {
        self.hw.iter().filter(|h| h.used == Use::Free).count()
    }

    /// Hardware sockets held back for DHCP.
    fn reserved(&self) -> usize {
        let internal_held = self.hw.iter().any(|h| h.used == Use::Internal);
        (self.dhcp_mode && !internal_held) as usize
    }

    fn max_fds(&self) -> usize {
        HW_SOCKETS - self.dhcp_mode as usize
    }

    /// Take a hardware socket: a free one (keeping the DHCP reserve unless
    /// `internal`), else one still closing in the background.
    fn alloc_hw(&mut self, internal: bool) -> Result<u8> {
        let spare = if internal { 0 } else { self.reserved() };
        if self.free_count() > spare {
            let sn = self
                .hw
                .iter()
                .position(|h| h.used == Use::Free)
                .unwrap_or(0);
            self.hw[sn].used = if internal { Use::Internal } else { Use::User };
            return Ok(sn as u8);
        }
        // Oldest socket still closing: close it now.
        let oldest = self
            .hw
            .iter()
            .enumerate()
            .filter_map(|(i, h)| match h.used {
                Use::Closing(t) => Some((t, i)),
                _ => None,
            })
            .min();
        match oldest {
            Some((_, sn)) => {
                let _ = self.bus.command(sn as u8, CR_CLOSE);
                self.hw[sn] = Hw::FREE;
                self.hw[sn].used = if internal { Use::Internal } else { Use::User };
                Ok(sn as u8)
            }
            None => Err(Error::NoMoreSockets),
        }
    }

    /// Give a hardware socket back: at once (`CLOSE`), or after a graceful
    /// `DISCON` in the background.
    fn release_hw(&mut self, sn: u8, graceful: bool, now: Instant) {
        if graceful {
            match self.bus.command(sn, CR_DISCON) {
                Ok(()) => {
                    self.hw[sn as usize].used = Use::Closing(now);
                    return;
                }
                Err(_) => self.stats.malformed += 1,
            }
        }
        let _ = self.bus.command(sn, CR_CLOSE);
        self.hw[sn as usize] = Hw::FREE;
    }

    fn port_in_use(&self, udp: bool, port: u16) -> bool {
        let by_fd = self.fds.iter().any(|(_, f)| match f {
            Fd::Udp(u) => udp && u.bound == Some(port),
            Fd::Tcp(t) => {
                !udp && (t.bound == Some(port)
                    || matches!(&t.state, TcpState::Listening { port: p, .. } if *p == port))
            }
        });
        let by_hw = !udp
            && self
                .hw
                .iter()
                .any(|h| h.used != Use::Free && h.port == port);
        by_fd || by_hw
    }

    fn ephemeral_port(&mut self, udp: bool) -> Result<u16> {
        let span = (u16::MAX - EPHEMERAL_START) as u64 + 1;
        for _ in 0..64 {
            let p = EPHEMERAL_START + (self.random() % span) as u16;
            if !self.port_in_use(udp, p) {
                return Ok(p);
            }
        }
        (EPHEMERAL_START..=u16::MAX)
            .find(|&p| !self.port_in_use(udp, p))
            .ok_or(Error::AddrInUse)
    }

    // ---------------------------------------------------- housekeeping

    fn housekeeping(&mut self, now: Instant) {
        if let Some(t) = self.last_check {
            if now.saturating_since(t) < HOUSEKEEPING {
                return;
            }
        }
        self.last_check = Some(now);
        // A chip reset behind our back clears SHAR.
        match self.bus.mac() {
            Ok(m) if m == self.mac => {}
            _ => {
                let _ = self.recover(now);
                return;
            }
        }
        if let Ok(up) = self.bus.link_up() {
            self.link_up = up;
            self.update_up();
        }
        for sn in 0..HW_SOCKETS as u8 {
            if let Use::Closing(since) = self.hw[sn as usize].used {
                let done = matches!(self.sr(sn), Ok(SOCK_CLOSED) | Err(_));
                if done || now.saturating_since(since) >= CLOSE_LIMIT {
                    let _ = self.bus.command(sn, CR_CLOSE);
                    self.hw[sn as usize] = Hw::FREE;
                }
            }
        }
        self.refill_backlogs();
    }

    /// Re-initialise a chip that was reset: connections are gone
    /// (`ConnectionAborted`), listeners and bound UDP sockets come back.
    fn recover(&mut self, now: Instant) -> Result<()> {
        self.stats.recoveries += 1;
        let r = self.init_chip();
        for h in self.hw.iter_mut() {
            *h = Hw::FREE;
        }
        let mut udp_rebind: heapless::Vec<(Sockfd, u16), HW_SOCKETS> = heapless::Vec::new();
        for (fd, f) in self.fds.iter_mut() {
            match f {
                Fd::Tcp(t) => match &mut t.state {
                    TcpState::Connecting { .. } | TcpState::Connected { .. } => {
                        t.state = TcpState::Failed;
                        t.common.error = Some(Error::ConnectionAborted);
                    }
                    TcpState::Listening { backlog, .. } => backlog.clear(),
                    _ => {}
                },
                Fd::Udp(u) => {
                    if u.hw.take().is_some() {
                        if let Some(p) = u.bound {
                            let _ = udp_rebind.push((fd, p));
                        }
                    }
                }
            }
        }
        r?;
        for (fd, port) in udp_rebind {
            if let Ok(sn) = self.alloc_hw(false) {
                if self.open_hw(sn, MR_UDP, port).is_ok() {
                    if let Ok(Fd::Udp(u)) = self.fds.get_mut(fd) {
                        u.hw = Some(sn);
                        continue;
                    }
                }
                self.release_hw(sn, false, now);
            }
        }
        self.refill_backlogs();
        self.update_up();
        Ok(())
    }

    /// Keep every listener's backlog at its wanted size while sockets are free.
    fn refill_backlogs(&mut self) {
        let mut want: heapless::Vec<(Sockfd, u16), HW_SOCKETS> = heapless::Vec::new();
        for (fd, f) in self.fds.iter() {
            if let Fd::Tcp(TcpFd {
                state:
                    TcpState::Listening {
                        port,
                        backlog,
                        wanted,
                    },
                ..
            }) = f
            {
                if backlog.len() < *wanted {
                    let _ = want.push((fd, *port));
                }
            }
        }
        for (fd, port) in want {
            loop {
                let short = matches!(
                    self.fds.get(fd),
                    Ok(Fd::Tcp(TcpFd { state: TcpState::Listening { backlog, wanted, .. }, .. }))
                        if backlog.len() < *wanted
                );
                if !short || self.free_count() <= self.reserved() {
                    break;
                }
                let Ok(sn) = self.arm_listener(port) else {
                    break;
                };
                if let Ok(Fd::Tcp(TcpFd {
                    state: TcpState::Listening { backlog, .. },
                    ..
                })) = self.fds.get_mut(fd)
                {
                    let _ = backlog.push(sn);
                }
            }
        }
    }

    /// A free hardware socket in LISTEN on `port`.
    fn arm_listener(&mut self, port: u16) -> Result<u8> {
        let sn = self.alloc_hw(false)?;
        let r = self.open_hw(sn, MR_TCP | MR_ND, port).and_then(|_| {
            self.bus.command(sn, CR_LISTEN)?;
            match self.sr(sn)? {
                // A SYN may arrive between LISTEN and this read: the socket
                // is then on its way to (or in) ESTABLISHED, or its
                // half-open connection already failed (CLOSED). Either way
                // it listened and is in the backlog (`accept_one` takes the
                // connection or re-arms it); closing it here would reset a
                // client that has already connected.
                SOCK_LISTEN | SOCK_SYNRECV | SOCK_ESTABLISHED | SOCK_CLOSE_WAIT | SOCK_CLOSED => {
                    Ok(())
                }
                _ => Err(self.malformed()),
            }
        });
        match r {
            Ok(()) => {
                self.hw[sn as usize].used = Use::Backlog;
                Ok(sn)
            }
            Err(e) => {
                let _ = self.bus.command(sn, CR_CLOSE);
                self.hw[sn as usize] = Hw::FREE;
                Err(e)
            }
        }
    }

    /// Re-open a UDP socket whose ring held garbage.
    fn reset_udp(&mut self, sn: u8) -> Error {
        let e = self.malformed();
        let port = self.hw[sn as usize].port;
        if self.open_hw(sn, MR_UDP, port).is_err() {
            let _ = self.bus.command(sn, CR_CLOSE);
        }
        self.hw[sn as usize].used = Use::User;
        e
    }

    // ------------------------------------------------------------- TCP

    fn tcp(&mut self, fd: Sockfd) -> Result<&mut TcpFd> {
        match self.fds.get_mut(fd)? {
            Fd::Tcp(t) => Ok(t),
            Fd::Udp(_) => Err(Error::NotSupported),
        }
    }

    /// Move a connecting fd on; `Some(result)` once the connect is decided.
    fn settle_connect(&mut self, fd: Sockfd, now: Instant) -> Result<Option<Result<()>>> {
        let (sn, peer) = match &self.tcp(fd)?.state {
            TcpState::Connecting { hw, peer } => (*hw, *peer),
            _ => return Ok(None),
        };
        match self.sr(sn)? {
            SOCK_ESTABLISHED | SOCK_CLOSE_WAIT => {
                self.load_pointers(sn)?;
                self.tcp(fd)?.state = TcpState::Connected {
                    hw: sn,
                    peer,
                    eof: false,
                    reset_reported: false,
                    fin_sent: false,
                };
                Ok(Some(Ok(())))
            }
            SOCK_CLOSED => {
                let ir = self.take_ir(sn)?;
                let e = if ir & IR_TIMEOUT != 0 {
                    Error::Timeout
                } else {
                    Error::ConnectionRefused
                };
                self.release_hw(sn, false, now);
                let t = self.tcp(fd)?;
                t.state = TcpState::Failed;
                t.common.error = Some(e);
                Ok(Some(Err(e)))
            }
            _ => Ok(None),
        }
    }

    /// Why a connection that the chip shows closed ended.
    fn closed_error(&mut self, sn: u8) -> Error {
        match self.take_ir(sn) {
            Ok(ir) if ir & IR_TIMEOUT != 0 => Error::ConnectionAborted,
            Ok(_) => Error::ConnectionReset,
            Err(e) => e,
        }
    }

    fn tcp_recv(
        &mut self,
        fd: Sockfd,
        buf: &mut [u8],
        peek: bool,
        now: Instant,
    ) -> Result<Option<usize>> {
        if let Some(Err(e)) = self.settle_connect(fd, now)? {
            return Err(e);
        }
        let t = self.tcp(fd)?;
        if t.common.shut_rd {
            return Ok(Some(0));
        }
        let (sn, eof, reset_reported, fin_sent) = match &t.state {
            TcpState::Connecting { .. } => return Ok(None),
            TcpState::Connected {
                hw,
                eof,
                reset_reported,
                fin_sent,
                ..
            } => (*hw, *eof, *reset_reported, *fin_sent),
            TcpState::Failed if t.common.error == Some(Error::ConnectionAborted) => {
                return Err(Error::ConnectionAborted)
            }
            _ => return Err(Error::NotConnected),
        };
        let rsr = self.rsr(sn)?;
        if rsr > 0 {
            let n = rsr.min(buf.len());
            let rd = self.hw[sn as usize].rx_rd;
            self.bus.read_ring(sn, rd, &mut buf[..n])?;
            if !peek {
                let rd = rd.wrapping_add(n as u16);
                self.bus.write_u16(Block::Socket(sn), SN_RX_RD, rd)?;
                self.bus.command(sn, CR_RECV)?;
                self.hw[sn as usize].rx_rd = rd;
            }
            return Ok(Some(n));
        }
        if eof || reset_reported {
            return Ok(Some(0));
        }
        let sr = self.sr(sn)?;
        // RSR was read before SR: data and the peer's FIN (or RST) may
        // have arrived in between. Data comes before the FIN, so once SR
        // shows the end, RSR read again holds everything that was sent.
        if !matches!(sr, SOCK_ESTABLISHED | SOCK_SYNRECV | SOCK_FIN_WAIT) && self.rsr(sn)? > 0 {
            return self.tcp_recv(fd, buf, peek, now);
        }
        match sr {
            SOCK_ESTABLISHED | SOCK_SYNRECV | SOCK_FIN_WAIT => {
                if !self.link_up {
                    return Err(Error::NetworkDown);
                }
                Ok(None)
            }
            SOCK_CLOSE_WAIT | SOCK_LAST_ACK | SOCK_CLOSING | SOCK_TIME_WAIT => {
                self.set_eof(fd);
                Ok(Some(0))
            }
            SOCK_CLOSED if fin_sent => {
                self.set_eof(fd);
                Ok(Some(0))
            }
            SOCK_CLOSED => {
                let e = self.closed_error(sn);
                if let TcpState::Connected { reset_reported, .. } = &mut self.tcp(fd)?.state {
                    *reset_reported = true;
                }
                Err(e)
            }
            _ => Err(Error::NotConnected),
        }
    }

    fn set_eof(&mut self, fd: Sockfd) {
        if let Ok(TcpFd {
            state: TcpState::Connected { eof, .. },
            ..
        }) = self.tcp(fd)
        {
            *eof = true;
        }
    }

    fn tcp_send(&mut self, fd: Sockfd, buf: &[u8], now: Instant) -> Result<Option<usize>> {
        if let Some(Err(e)) = self.settle_connect(fd, now)? {
            return Err(e);
        }
        let t = self.tcp(fd)?;
        if t.common.shut_wr {
            return Err(Error::BrokenPipe);
        }
        let (sn, fin_sent) = match &t.state {
            TcpState::Connecting { .. } => return Ok(None),
            TcpState::Connected { hw, fin_sent, .. } => (*hw, *fin_sent),
            TcpState::Failed if t.common.error == Some(Error::ConnectionAborted) => {
                return Err(Error::ConnectionAborted)
            }
            _ => return Err(Error::NotConnected),
        };
        match self.sr(sn)? {
            SOCK_ESTABLISHED | SOCK_CLOSE_WAIT => {}
            SOCK_SYNSENT | SOCK_SYNRECV => return Ok(None),
            SOCK_CLOSED if !fin_sent => return Err(self.closed_error(sn)),
            _ => return Err(Error::BrokenPipe),
        }
        if !self.link_up {
            return Err(Error::NetworkDown);
        }
        if buf.is_empty() {
            return Ok(Some(0));
        }
        if !self.send_done(sn)? {
            return Ok(None);
        }
        let free = self.fsr(sn)?;
        if free == 0 {
            return Ok(None);
        }
        let n = free.min(buf.len());
        self.push_tx(sn, &buf[..n])?;
        Ok(Some(n))
    }

    /// Whether the previous SEND on `sn` finished (consumes its SEND_OK).
    fn send_done(&mut self, sn: u8) -> Result<bool> {
        if !self.hw[sn as usize].sending {
            return Ok(true);
        }
        let ir = self.take_ir(sn)?;
        if ir & (IR_SEND_OK | IR_TIMEOUT) != 0 {
            let h = &mut self.hw[sn as usize];
            h.ir &= !(IR_SEND_OK | IR_TIMEOUT);
            h.sending = false;
            return Ok(true);
        }
        Ok(false)
    }

    /// Write `data` at TX_WR, advance it, SEND.
    fn push_tx(&mut self, sn: u8, data: &[u8]) -> Result<()> {
        let wr = self.hw[sn as usize].tx_wr;
        self.bus.write_ring(sn, wr, data)?;
        let wr = wr.wrapping_add(data.len() as u16);
        self.bus.write_u16(Block::Socket(sn), SN_TX_WR, wr)?;
        self.bus.command(sn, CR_SEND)?;
        let h = &mut self.hw[sn as usize];
        h.tx_wr = wr;
        h.sending = true;
        Ok(())
    }

    fn accept_one(&mut self, fd: Sockfd) -> Result<Option<(Sockfd, SocketAddr)>> {
        let (backlog, common) = match self.fds.get(fd)? {
            Fd::Tcp(TcpFd {
                state: TcpState::Listening { backlog, .. },
                common,
                ..
            }) => (backlog.clone(), *common),
            Fd::Tcp(_) => return Err(Error::InvalidArgument),
            Fd::Udp(_) => return Err(Error::NotSupported),
        };
        let mut ready = None;
        for &sn in backlog.iter() {
            match self.sr(sn)? {
                SOCK_ESTABLISHED | SOCK_CLOSE_WAIT if ready.is_none() => ready = Some(sn),
                SOCK_CLOSED => {
                    // A half-open connection failed: listen again.
                    let port = self.hw[sn as usize].port;
                    if self.open_hw(sn, MR_TCP | MR_ND, port).is_ok() {
                        let _ = self.bus.command(sn, CR_LISTEN);
                    }
                    self.hw[sn as usize].used = Use::Backlog;
                }
                _ => {}
            }
        }
        let Some(sn) = ready else {
            return Ok(None);
        };
        if self.fds.len() >= self.max_fds() {
            return Err(Error::NoMoreSockets);
        }
        let mut d = [0u8; 6];
        self.bus.read(Block::Socket(sn), SN_DIPR, &mut d)?;
        let peer = SocketAddrV4::new(ip_of(&d), u16::from_be_bytes([d[4], d[5]]));
        self.load_pointers(sn)?;
        self.apply_keepalive(sn, &common)?;
        let new = self.fds.insert(Fd::Tcp(TcpFd {
            common: common.inherit(),
            bound: None,
            state: TcpState::Connected {
                hw: sn,
                peer,
                eof: false,
                reset_reported: false,
                fin_sent: false,
            },
        }))?;
        self.hw[sn as usize].used = Use::User;
        if let Ok(Fd::Tcp(TcpFd {
            state: TcpState::Listening { backlog, .. },
            ..
        })) = self.fds.get_mut(fd)
        {
            backlog.retain(|&b| b != sn);
        }
        self.refill_backlogs();
        Ok(Some((new, SocketAddr::V4(peer))))
    }

    fn apply_keepalive(&mut self, sn: u8, c: &SockState) -> Result<()> {
        let v = if c.keep_alive {
            c.keep_interval().as_secs().div_ceil(5).clamp(1, 255) as u8
        } else {
            0
        };
        self.bus.write_u8(Block::Socket(sn), SN_KPALVTR, v)?;
        Ok(())
    }

    // ------------------------------------------------------------- UDP

    fn udp_bind(&mut self, fd: Sockfd, port: u16) -> Result<()> {
        match self.fds.get(fd)? {
            Fd::Udp(u) if u.bound.is_some() => return Err(Error::InvalidArgument),
            Fd::Udp(_) => {}
            Fd::Tcp(_) => return Err(Error::NotSupported),
        }
        let port = match port {
            0 => self.ephemeral_port(true)?,
            p if self.port_in_use(true, p) => return Err(Error::AddrInUse),
            p => p,
        };
        let sn = self.alloc_hw(false)?;
        if let Err(e) = self.open_hw(sn, MR_UDP, port) {
            let _ = self.bus.command(sn, CR_CLOSE);
            self.hw[sn as usize] = Hw::FREE;
            return Err(e);
        }
        if let Ok(Fd::Udp(u)) = self.fds.get_mut(fd) {
            u.bound = Some(port);
            u.hw = Some(sn);
        }
        Ok(())
    }

    fn udp_hw(&mut self, fd: Sockfd) -> Result<(u8, Option<SocketAddrV4>, SockState)> {
        if matches!(self.fds.get(fd)?, Fd::Udp(u) if u.hw.is_none()) {
            self.udp_bind(fd, 0)?;
        }
        match self.fds.get(fd)? {
            Fd::Udp(u) => Ok((u.hw.ok_or(Error::NoMoreSockets)?, u.peer, u.common)),
            Fd::Tcp(_) => Err(Error::NotSupported),
        }
    }

    fn udp_recv(
        &mut self,
        fd: Sockfd,
        buf: &mut [u8],
        peek: bool,
    ) -> Result<Option<(usize, SocketAddr)>> {
        let (sn, peer, common) = match self.fds.get(fd)? {
            Fd::Udp(u) => match u.hw {
                Some(sn) => (sn, u.peer, u.common),
                None if u.common.shut_rd => return Ok(Some((0, unspecified()))),
                None => return Ok(None),
            },
            Fd::Tcp(_) => return Err(Error::NotSupported),
        };
        if common.shut_rd {
            return Ok(Some((0, peer.map(SocketAddr::V4).unwrap_or(unspecified()))));
        }
        for _ in 0..(BUF / 8) {
            let rsr = self.rsr(sn)?;
            if rsr == 0 {
                return Ok(None);
            }
            if rsr < 8 {
                return Err(self.reset_udp(sn));
            }
            let rd = self.hw[sn as usize].rx_rd;
            let mut h = [0u8; 8];
            self.bus.read_ring(sn, rd, &mut h)?;
            let from = SocketAddrV4::new(ip_of(&h), u16::from_be_bytes([h[4], h[5]]));
            let len = u16::from_be_bytes([h[6], h[7]]) as usize;
            if 8 + len > rsr {
                return Err(self.reset_udp(sn));
            }
            let next = rd.wrapping_add((8 + len) as u16);
            if peer.is_some_and(|p| p != from) {
                self.consume_udp(sn, next)?;
                continue;
            }
            let n = len.min(buf.len());
            self.bus.read_ring(sn, rd.wrapping_add(8), &mut buf[..n])?;
            if !peek {
                self.consume_udp(sn, next)?;
            }
            return Ok(Some((n, SocketAddr::V4(from))));
        }
        Ok(None)
    }

    fn consume_udp(&mut self, sn: u8, next: u16) -> Result<()> {
        self.bus.write_u16(Block::Socket(sn), SN_RX_RD, next)?;
        self.bus.command(sn, CR_RECV)?;
        self.hw[sn as usize].rx_rd = next;
        Ok(())
    }

    fn udp_send(&mut self, fd: Sockfd, buf: &[u8], to: SocketAddrV4) -> Result<Option<usize>> {
        if self.ip.is_none() {
            return Err(Error::NetworkDown);
        }
        if !self.link_up {
            return Err(Error::NetworkDown);
        }
        let (sn, _, common) = self.udp_hw(fd)?;
        if common.shut_wr {
            return Err(Error::BrokenPipe);
        }
        if !self.send_done(sn)? {
            return Ok(None);
        }
        if self.fsr(sn)? < buf.len() {
            return Ok(None);
        }
        self.send_datagram(sn, buf, to)?;
        Ok(Some(buf.len()))
    }

    fn send_datagram(&mut self, sn: u8, buf: &[u8], to: SocketAddrV4) -> Result<()> {
        let mut d = [0u8; 6];
        d[..4].copy_from_slice(&to.ip().octets());
        d[4..].copy_from_slice(&to.port().to_be_bytes());
        self.bus.write(Block::Socket(sn), SN_DIPR, &d)?;
        self.push_tx(sn, buf)
    }

    // ------------------------------------------------------- readiness

    fn readiness(&mut self, fd: Sockfd, now: Instant) -> Result<Events> {
        let mut ev = Events::NONE;
        if let Fd::Tcp(_) = self.fds.get(fd)? {
            let _ = self.settle_connect(fd, now)?;
        }
        if self.fds.get(fd)?.common().error.is_some() {
            ev |= Events::ERROR;
        }
        match self.fds.get(fd)? {
            Fd::Udp(u) => {
                let (hw, shut_rd, shut_wr) = (u.hw, u.common.shut_rd, u.common.shut_wr);
                match hw {
                    Some(sn) => {
                        if shut_rd || self.rsr(sn)? > 0 {
                            ev |= Events::READABLE;
                        }
                        if !shut_wr && self.fsr(sn)? > 0 {
                            ev |= Events::WRITABLE;
                        }
                    }
                    None => {
                        if shut_rd {
                            ev |= Events::READABLE;
                        }
                        if !shut_wr {
                            ev |= Events::WRITABLE;
                        }
                    }
                }
            }
            Fd::Tcp(t) => match &t.state {
                TcpState::Listening { backlog, .. } => {
                    let backlog = backlog.clone();
                    for sn in backlog {
                        if matches!(self.sr(sn)?, SOCK_ESTABLISHED | SOCK_CLOSE_WAIT) {
                            ev |= Events::READABLE;
                        }
                    }
                }
                TcpState::Connected {
                    hw, eof, fin_sent, ..
                } => {
                    let (sn, eof, fin_sent) = (*hw, *eof, *fin_sent);
                    let (shut_rd, shut_wr) = (t.common.shut_rd, t.common.shut_wr);
                    let sr = self.sr(sn)?;
                    let peer_gone =
                        eof || matches!(
                            sr,
                            SOCK_CLOSE_WAIT | SOCK_LAST_ACK | SOCK_CLOSING | SOCK_TIME_WAIT
                        ) || (sr == SOCK_CLOSED);
                    if shut_rd || peer_gone || self.rsr(sn)? > 0 {
                        ev |= Events::READABLE;
                    }
                    if peer_gone {
                        ev |= Events::HANGUP;
                    }
                    let open = matches!(sr, SOCK_ESTABLISHED | SOCK_CLOSE_WAIT);
                    if open && !shut_wr && !fin_sent && self.send_done(sn)? && self.fsr(sn)? > 0 {
                        ev |= Events::WRITABLE;
                    }
                }
                TcpState::Failed => ev |= Events::HANGUP,
                TcpState::Idle | TcpState::Connecting { .. } => {}
            },
        }
        Ok(ev)
    }
}

/// The W5500's hardwired TCP/IP behind [`Netdever`] + [`Netlinker`].
///
/// `P` supplies the clock, the lock and the waits (see [`crate::platform`]).
pub struct W5500Offload<SPI, P: Platform> {
    platform: P,
    inner: lock_api::Mutex<P::RawMutex, Inner<SPI>>,
    config: W5500Config,
}

impl<SPI, P: Platform> core::fmt::Debug for W5500Offload<SPI, P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("W5500Offload")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<SPI: SpiDevice, P: Platform> W5500Offload<SPI, P> {
    /// Probe the chip (VERSIONR must read 0x04, else [`Error::Device`]),
    /// reset it, and program the MAC, retry timers and socket buffers. The
    /// device has no address until `net_connect` or `set_addr`.
    pub fn new(spi: SPI, platform: P, config: W5500Config) -> Result<Self> {
        let seed = platform.now().as_micros()
            ^ u64::from_be_bytes([
                0,
                0,
                config.mac[0],
                config.mac[1],
                config.mac[2],
                config.mac[3],
                config.mac[4],
                config.mac[5],
            ]);
        let mut inner = Inner {
            bus: Bus::new(spi),
            fds: FdTable::new(),
            hw: [Hw::FREE; HW_SOCKETS],
            mac: config.mac,
            retry: (config.retry_time, config.retry_count),
            interrupts: config.interrupts,
            ip: None,
            dhcp_mode: false,
            lease: None,
            joined: true,
            link_up: false,
            up: false,
            last_check: None,
            events: heapless::Deque::new(),
            notify_fn: None,
            rng: seed | 1,
            stats: W5500Stats::default(),
        };
        inner.init_chip()?;
        Ok(W5500Offload {
            platform,
            inner: lock_api::Mutex::new(inner),
            config,
        })
    }

    /// The platform (clock and waits).
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// Counters.
    pub fn stats(&self) -> W5500Stats {
        self.inner.lock().stats
    }

    /// Call when INTn falls: latches and clears the chip's socket interrupt
    /// bits (so INTn rises again) and wakes every waiting call.
    pub fn on_interrupt(&self) {
        {
            let mut g = self.inner.lock();
            if let Ok(sir) = g.bus.read_u8(Block::Common, SIR) {
                for sn in 0..HW_SOCKETS as u8 {
                    if sir & (1 << sn) != 0 {
                        let _ = g.take_ir(sn);
                    }
                }
            }
        }
        self.platform.notify();
    }

    /// Housekeeping now (link state, closed sockets, chip-reset check) and
    /// DHCP lease renewal when it is due. Cheap when nothing is due.
    pub fn poll(&self) {
        let renew = self.with(|g| {
            g.last_check = None;
            g.housekeeping(self.platform.now());
            g.lease
                .filter(|l| g.dhcp_mode && self.platform.now() >= l.renew_at)
                .map(|l| (l.server, g.ip.clone()))
        });
        if let Some((_, Some(_))) = renew {
            let until = Deadline::after(self.platform.now(), Duration::from_secs(5));
            match self.run_dhcp(until, "") {
                Ok(cfg) => {
                    let _ = self.with(|g| g.set_ip(Some(cfg)));
                }
                Err(_) => {
                    // Keep the address; try again at the next poll after a pause.
                    self.with(|g| {
                        if let Some(l) = g.lease.as_mut() {
                            l.renew_at = self.platform.now() + Duration::from_secs(10);
                        }
                    });
                }
            }
        }
    }

    /// Reset the chip now and bring it back (see the module docs for what
    /// survives).
    pub fn reset(&self) -> Result<()> {
        let r = self.with(|g| g.recover(self.platform.now()));
        self.platform.notify();
        r
    }

    /// Lock, run housekeeping and `f`, unlock, deliver link events.
    fn with<R>(&self, f: impl FnOnce(&mut Inner<SPI>) -> R) -> R {
        let (r, events, cb) = {
            let mut g = self.inner.lock();
            g.housekeeping(self.platform.now());
            let r = f(&mut g);
            let mut ev: heapless::Vec<Event, 8> = heapless::Vec::new();
            while let Some(e) = g.events.pop_front() {
                let _ = ev.push(e);
            }
            (r, ev, g.notify_fn)
        };
        if !events.is_empty() {
            self.platform.notify();
            if let Some(cb) = cb {
                for e in events {
                    cb(e);
                }
            }
        }
        r
    }

    /// One attempt of a blocking call: `Ok(None)` is "not yet".
    fn attempt<T>(
        &self,
        f: impl FnOnce(&mut Inner<SPI>, Instant) -> Result<Option<T>>,
    ) -> Attempt<T> {
        let now = self.platform.now();
        match self.with(|g| f(g, now)) {
            Ok(Some(v)) => Attempt::Done(Ok(v)),
            Err(e) => Attempt::Done(Err(e)),
            Ok(None) => {
                let every = if self.config.interrupts {
                    self.config.interrupt_fallback
                } else {
                    self.config.poll_interval
                };
                Attempt::Pending {
                    wake_at: Some(self.platform.now() + every),
                }
            }
        }
    }

    fn blocking(
        &self,
        fd: Sockfd,
        flags: MsgFlags,
        deadline: Deadline,
        side: Side,
        nb: Error,
    ) -> Result<Blocking> {
        let c = self.with(|g| g.fds.get(fd).map(|f| *f.common()))?;
        Ok(c.blocking(flags, deadline, side, self.platform.now(), nb))
    }

    fn is_tcp(&self, fd: Sockfd) -> Result<bool> {
        self.with(|g| g.fds.get(fd).map(|f| matches!(f, Fd::Tcp(_))))
    }

    fn wait_connected(&self, fd: Sockfd, deadline: Deadline) -> Result<()> {
        let blocking =
            self.blocking(fd, MsgFlags::NONE, deadline, Side::Send, Error::InProgress)?;
        let r = block_on(&self.platform, blocking, || {
            self.attempt(|g, now| g.settle_connect(fd, now))
        })
        .and_then(|r| r);
        if r == Err(Error::Timeout) {
            // Give up the half-open attempt.
            self.with(|g| {
                let now = self.platform.now();
                if let Ok(t) = g.tcp(fd) {
                    if let TcpState::Connecting { hw, .. } = t.state {
                        t.state = TcpState::Failed;
                        t.common.error = Some(Error::Timeout);
                        g.release_hw(hw, false, now);
                    }
                }
            });
        }
        r
    }

    fn recv_any(
        &self,
        fd: Sockfd,
        buf: &mut [u8],
        flags: MsgFlags,
        deadline: Deadline,
    ) -> Result<(usize, SocketAddr)> {
        check_flags(flags)?;
        let is_tcp = self.is_tcp(fd)?;
        if buf.is_empty() {
            return Err(Error::InvalidArgument);
        }
        let blocking = self.blocking(fd, flags, deadline, Side::Recv, Error::WouldBlock)?;
        let peek = flags.contains(MsgFlags::PEEK);
        block_on(&self.platform, blocking, || {
            self.attempt(|g, now| {
                if is_tcp {
                    let n = g.tcp_recv(fd, buf, peek, now)?;
                    let peer = match &g.tcp(fd)?.state {
                        TcpState::Connected { peer, .. } => SocketAddr::V4(*peer),
                        _ => unspecified(),
                    };
                    Ok(n.map(|n| (n, peer)))
                } else {
                    g.udp_recv(fd, buf, peek)
                }
            })
        })
    }

    /// Allocate an internal UDP socket on `port` (DHCP, DNS).
    fn internal_udp(&self, port: u16) -> Result<u8> {
        self.with(|g| {
            let sn = g.alloc_hw(true)?;
            match g.open_hw(sn, MR_UDP, port) {
                Ok(()) => {
                    g.hw[sn as usize].used = Use::Internal;
                    Ok(sn)
                }
                Err(e) => {
                    let _ = g.bus.command(sn, CR_CLOSE);
                    g.hw[sn as usize] = Hw::FREE;
                    Err(e)
                }
            }
        })
    }

    fn free_internal(&self, sn: u8) {
        self.with(|g| {
            let _ = g.bus.command(sn, CR_CLOSE);
            g.hw[sn as usize] = Hw::FREE;
        });
    }

    /// Receive one datagram on an internal socket, if any.
    fn internal_recv(
        g: &mut Inner<SPI>,
        sn: u8,
        buf: &mut [u8],
    ) -> Result<Option<(usize, SocketAddrV4)>> {
        let rsr = g.rsr(sn)?;
        if rsr == 0 {
            return Ok(None);
        }
        if rsr < 8 {
            return Err(g.reset_udp(sn));
        }
        let rd = g.hw[sn as usize].rx_rd;
        let mut h = [0u8; 8];
        g.bus.read_ring(sn, rd, &mut h)?;
        let len = u16::from_be_bytes([h[6], h[7]]) as usize;
        if 8 + len > rsr {
            return Err(g.reset_udp(sn));
        }
        let n = len.min(buf.len());
        g.bus.read_ring(sn, rd.wrapping_add(8), &mut buf[..n])?;
        g.consume_udp(sn, rd.wrapping_add((8 + len) as u16))?;
        Ok(Some((
            n,
            SocketAddrV4::new(ip_of(&h), u16::from_be_bytes([h[4], h[5]])),
        )))
    }

    /// DISCOVER / OFFER / REQUEST / ACK until `until`; the chip sends from
    /// 0.0.0.0:68 to the broadcast address meanwhile.
    fn run_dhcp(&self, until: Deadline, hostname: &str) -> Result<IpConfig> {
        let renewing = self.with(|g| g.ip.is_some() && g.dhcp_mode);
        if !renewing {
            self.with(|g| g.write_ip(None))?;
        }
        let sn = self.internal_udp(dhcp::CLIENT_PORT)?;
        let (xid, mac) = self.with(|g| (g.random() as u32, g.mac));
        let mut offer: Option<(Ipv4Addr, Ipv4Addr)> = None;
        let mut next_tx = self.platform.now();
        let mut backoff = Duration::from_millis(500);
        let r = block_on(&self.platform, Blocking::Until(until), || {
            self.attempt(|g, now| {
                let mut msg = [0u8; dhcp::MAX_LEN];
                if now >= next_tx && g.send_done(sn)? {
                    let n = match offer {
                        None => {
                            dhcp::build(&mut msg, dhcp::DISCOVER, xid, &mac, None, None, hostname)
                        }
                        Some((ip, server)) => dhcp::build(
                            &mut msg,
                            dhcp::REQUEST,
                            xid,
                            &mac,
                            Some(ip),
                            Some(server),
                            hostname,
                        ),
                    };
                    let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, dhcp::SERVER_PORT);
                    if g.fsr(sn)? >= n {
                        g.send_datagram(sn, &msg[..n], to)?;
                    }
                    next_tx = now + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(4));
                }
                for _ in 0..8 {
                    let Some((n, _from)) = Self::internal_recv(g, sn, &mut msg)? else {
                        break;
                    };
                    let reply = match dhcp::parse(&msg[..n], xid, &mac) {
                        Ok(r) => r,
                        Err(_) => {
                            g.stats.ignored_replies += 1;
                            continue;
                        }
                    };
                    match (reply.kind, offer) {
                        (dhcp::OFFER, None) => {
                            let Some(server) = reply.server else {
                                g.stats.ignored_replies += 1;
                                continue;
                            };
                            if reply.yiaddr.is_unspecified() {
                                g.stats.ignored_replies += 1;
                                continue;
                            }
                            offer = Some((reply.yiaddr, server));
                            next_tx = now;
                            backoff = Duration::from_millis(500);
                            return Ok(None);
                        }
                        (dhcp::ACK, Some((ip, _)))
                            if reply.yiaddr == ip || reply.yiaddr.is_unspecified() =>
                        {
                            let mask = reply.mask.unwrap_or(Ipv4Addr::new(255, 255, 255, 0));
                            let mut cfg = IpConfig::new(ip, dhcp::prefix_len(mask));
                            cfg.gateway = reply.router;
                            cfg.dns = reply.dns.clone();
                            let secs = reply.lease_secs.unwrap_or(3600).max(2) as u64;
                            g.lease = Some(Lease {
                                server: reply.server.unwrap_or(offer.map(|o| o.1).unwrap_or(ip)),
                                renew_at: now + Duration::from_secs(secs / 2),
                            });
                            g.stats.leases += 1;
                            return Ok(Some(cfg));
                        }
                        (dhcp::NAK, Some(_)) => {
                            offer = None;
                            next_tx = now;
                            return Ok(None);
                        }
                        _ => g.stats.ignored_replies += 1,
                    }
                }
                Ok(None)
            })
        });
        self.free_internal(sn);
        r
    }
}

impl<SPI: SpiDevice + Send, P: Platform> Socketer for W5500Offload<SPI, P> {
    fn socket(&self, family: AddressFamily, ty: SockType, proto: Protocol) -> Result<Sockfd> {
        if family != AddressFamily::Inet {
            return Err(Error::FamilyNotSupported);
        }
        if proto.sock_type() != ty {
            return Err(Error::TypeNotSupported);
        }
        if proto == Protocol::Tls {
            return Err(Error::ProtocolNotSupported);
        }
        self.with(|g| {
            if g.fds.len() >= g.max_fds() {
                return Err(Error::NoMoreSockets);
            }
            let common = SockState::new(proto);
            g.fds.insert(match proto {
                Protocol::Udp => Fd::Udp(UdpFd {
                    common,
                    bound: None,
                    hw: None,
                    peer: None,
                }),
                _ => Fd::Tcp(TcpFd {
                    common,
                    bound: None,
                    state: TcpState::Idle,
                }),
            })
        })
    }

    fn bind(&self, fd: Sockfd, addr: SocketAddr) -> Result<()> {
        let addr = ipv4(addr)?;
        self.with(|g| {
            let is_tcp = matches!(g.fds.get(fd)?, Fd::Tcp(_));
            if !addr.ip().is_unspecified() && g.ip.as_ref().map(|c| c.addr) != Some(*addr.ip()) {
                return Err(Error::AddrNotAvailable);
            }
            if !is_tcp {
                return g.udp_bind(fd, addr.port());
            }
            let t = g.tcp(fd)?;
            if !matches!(t.state, TcpState::Idle) || t.bound.is_some() {
                return Err(Error::InvalidArgument);
            }
            let port = match addr.port() {
                0 => g.ephemeral_port(false)?,
                p if g.port_in_use(false, p) => return Err(Error::AddrInUse),
                p => p,
            };
            g.tcp(fd)?.bound = Some(port);
            Ok(())
        })
    }

    fn connect(
        &self,
        fd: Sockfd,
        host: Option<&str>,
        addr: SocketAddr,
        deadline: Deadline,
    ) -> Result<()> {
        let _ = host;
        let addr = ipv4(addr)?;
        let is_tcp = self.is_tcp(fd)?;
        check_remote(addr)?;
        if !is_tcp {
            return self.with(|g| {
                if g.ip.is_none() {
                    return Err(Error::NetworkDown);
                }
                g.udp_hw(fd)?;
                if let Fd::Udp(u) = g.fds.get_mut(fd)? {
                    u.peer = Some(addr);
                }
                Ok(())
            });
        }
        let started = self.with(|g| {
            let now = self.platform.now();
            let t = g.tcp(fd)?;
            match t.state {
                TcpState::Idle | TcpState::Failed => {}
                TcpState::Connecting { .. } => return Ok(false),
                TcpState::Connected { .. } => return Err(Error::AlreadyConnected),
                TcpState::Listening { .. } => return Err(Error::InvalidArgument),
            }
            let (bound, common) = (t.bound, t.common);
            if g.ip.is_none() || !g.link_up {
                return Err(Error::NetworkDown);
            }
            let port = match bound {
                Some(p) => p,
                None => g.ephemeral_port(false)?,
            };
            let sn = g.alloc_hw(false)?;
            let r = g
                .open_hw(sn, MR_TCP | MR_ND, port)
                .and_then(|_| g.apply_keepalive(sn, &common))
                .and_then(|_| {
                    let mut d = [0u8; 6];
                    d[..4].copy_from_slice(&addr.ip().octets());
                    d[4..].copy_from_slice(&addr.port().to_be_bytes());
                    g.bus.write(Block::Socket(sn), SN_DIPR, &d)?;
                    g.bus.command(sn, CR_CONNECT)?;
                    Ok(())
                });
            if let Err(e) = r {
                g.release_hw(sn, false, now);
                return Err(e);
            }
            let t = g.tcp(fd)?;
            t.common.error = None;
            t.state = TcpState::Connecting { hw: sn, peer: addr };
            Ok(true)
        })?;
        let nonblocking = self.with(|g| g.fds.get(fd).map(|f| f.common().nonblocking))?;
        if started && nonblocking {
            return Err(Error::InProgress);
        }
        self.wait_connected(fd, deadline)
    }

    fn listen(&self, fd: Sockfd, backlog: usize) -> Result<()> {
        self.with(|g| {
            let t = match g.fds.get_mut(fd)? {
                Fd::Tcp(t) => t,
                Fd::Udp(_) => return Err(Error::NotSupported),
            };
            let wanted = backlog.clamp(1, HW_SOCKETS);
            match &mut t.state {
                TcpState::Listening { wanted: w, .. } => {
                    *w = wanted;
                    g.refill_backlogs();
                    return Ok(());
                }
                TcpState::Idle => {}
                _ => return Err(Error::InvalidArgument),
            }
            let bound = t.bound;
            if g.ip.is_none() {
                return Err(Error::NetworkDown);
            }
            let port = match bound {
                Some(p) => p,
                None => g.ephemeral_port(false)?,
            };
            let first = g.arm_listener(port)?;
            let mut q = heapless::Vec::new();
            let _ = q.push(first);
            let t = g.tcp(fd)?;
            t.bound = Some(port);
            t.state = TcpState::Listening {
                port,
                backlog: q,
                wanted,
            };
            g.refill_backlogs();
            Ok(())
        })
    }

    fn accept(&self, fd: Sockfd, deadline: Deadline) -> Result<(Sockfd, SocketAddr)> {
        self.with(|g| match g.fds.get(fd)? {
            Fd::Tcp(TcpFd {
                state: TcpState::Listening { .. },
                ..
            }) => Ok(()),
            Fd::Tcp(_) => Err(Error::InvalidArgument),
            Fd::Udp(_) => Err(Error::NotSupported),
        })?;
        let blocking =
            self.blocking(fd, MsgFlags::NONE, deadline, Side::Recv, Error::WouldBlock)?;
        block_on(&self.platform, blocking, || {
            self.attempt(|g, _| g.accept_one(fd))
        })
    }

    fn send(&self, fd: Sockfd, buf: &[u8], flags: MsgFlags, deadline: Deadline) -> Result<usize> {
        check_send_flags(flags)?;
        let peer = self.with(|g| match g.fds.get(fd)? {
            Fd::Tcp(_) => Ok(None),
            Fd::Udp(u) => u.peer.map(Some).ok_or(Error::NotConnected),
        })?;
        match peer {
            Some(p) => self.send_to(fd, buf, flags, SocketAddr::V4(p), deadline),
            None => {
                let blocking = self.blocking(fd, flags, deadline, Side::Send, Error::WouldBlock)?;
                block_on(&self.platform, blocking, || {
                    self.attempt(|g, now| g.tcp_send(fd, buf, now))
                })
            }
        }
    }

    fn send_to(
        &self,
        fd: Sockfd,
        buf: &[u8],
        flags: MsgFlags,
        addr: SocketAddr,
        deadline: Deadline,
    ) -> Result<usize> {
        check_send_flags(flags)?;
        let to = ipv4(addr)?;
        if self.is_tcp(fd)? {
            if self.peer_addr(fd)? != addr {
                return Err(Error::AlreadyConnected);
            }
            return self.send(fd, buf, flags, deadline);
        }
        check_remote(to)?;
        if buf.len() > MAX_UDP {
            return Err(Error::MessageTooLong);
        }
        let blocking = self.blocking(fd, flags, deadline, Side::Send, Error::WouldBlock)?;
        block_on(&self.platform, blocking, || {
            self.attempt(|g, _| g.udp_send(fd, buf, to))
        })
    }

    fn recv(
        &self,
        fd: Sockfd,
        buf: &mut [u8],
        flags: MsgFlags,
        deadline: Deadline,
    ) -> Result<usize> {
        self.recv_any(fd, buf, flags, deadline).map(|(n, _)| n)
    }

    fn recv_from(
        &self,
        fd: Sockfd,
        buf: &mut [u8],
        flags: MsgFlags,
        deadline: Deadline,
    ) -> Result<(usize, SocketAddr)> {
        self.recv_any(fd, buf, flags, deadline)
    }

    fn shutdown(&self, fd: Sockfd, how: Shutdown) -> Result<()> {
        let rd = matches!(how, Shutdown::Read | Shutdown::Both);
        let wr = matches!(how, Shutdown::Write | Shutdown::Both);
        let r = self.with(|g| {
            match g.fds.get_mut(fd)? {
                Fd::Udp(u) => {
                    if u.peer.is_none() {
                        return Err(Error::NotConnected);
                    }
                    u.common.shut_rd |= rd;
                    u.common.shut_wr |= wr;
                    Ok(())
                }
                Fd::Tcp(t) => {
                    let sn = match &t.state {
                        TcpState::Connected { hw, .. } | TcpState::Connecting { hw, .. } => *hw,
                        _ => return Err(Error::NotConnected),
                    };
                    t.common.shut_rd |= rd;
                    if wr && !t.common.shut_wr {
                        t.common.shut_wr = true;
                        if let TcpState::Connected { fin_sent, .. } = &mut t.state {
                            *fin_sent = true;
                        }
                        // FIN after the data already handed to the chip.
                        g.bus.command(sn, CR_DISCON)?;
                    }
                    Ok(())
                }
            }
        });
        self.platform.notify();
        r
    }

    fn close(&self, fd: Sockfd) -> Result<()> {
        let linger = self.with(|g| -> Result<Option<(u8, Duration)>> {
            let now = self.platform.now();
            let linger = g.fds.get(fd)?.common().linger();
            match g.fds.remove(fd)? {
                Fd::Udp(u) => {
                    if let Some(sn) = u.hw {
                        g.release_hw(sn, false, now);
                    }
                    Ok(None)
                }
                Fd::Tcp(t) => match t.state {
                    TcpState::Listening { backlog, .. } => {
                        // Connections nobody accepted are reset, as on Linux.
                        for sn in backlog {
                            g.release_hw(sn, false, now);
                        }
                        Ok(None)
                    }
                    TcpState::Connected { hw, fin_sent, .. } => {
                        let hard = linger == Some(Duration::ZERO);
                        if fin_sent && !hard {
                            g.hw[hw as usize].used = Use::Closing(now);
                        } else {
                            g.release_hw(hw, !hard, now);
                        }
                        Ok(linger.filter(|d| !d.is_zero()).map(|d| (hw, d)))
                    }
                    TcpState::Connecting { hw, .. } => {
                        g.release_hw(hw, false, now);
                        Ok(None)
                    }
                    TcpState::Idle | TcpState::Failed => Ok(None),
                },
            }
        })?;
        self.platform.notify();
        if let Some((sn, d)) = linger {
            // SO_LINGER: wait (bounded) until the chip finished closing.
            let until = Deadline::after(self.platform.now(), d);
            let _ = block_on(&self.platform, Blocking::Until(until), || {
                self.attempt(|g, _| {
                    if !matches!(g.hw[sn as usize].used, Use::Closing(_)) {
                        return Ok(Some(()));
                    }
                    Ok(matches!(g.sr(sn)?, SOCK_CLOSED | SOCK_TIME_WAIT).then_some(()))
                })
            });
        }
        Ok(())
    }

    fn set_sock_opt(&self, fd: Sockfd, opt: SockOpt) -> Result<()> {
        self.with(|g| {
            let f = g.fds.get_mut(fd)?;
            f.common_mut().set(opt)?;
            let common = *f.common();
            if let Fd::Tcp(TcpFd {
                state: TcpState::Connected { hw, .. },
                ..
            }) = f
            {
                let sn = *hw;
                if matches!(opt, SockOpt::KeepAlive(_) | SockOpt::KeepInterval(_)) {
                    g.apply_keepalive(sn, &common)?;
                }
            }
            Ok(())
        })
    }

    fn get_sock_opt(&self, fd: Sockfd, name: SockOptName) -> Result<SockOpt> {
        self.with(|g| g.fds.get_mut(fd)?.common_mut().get(name))
    }

    fn poll(&self, fds: &mut [PollFd], deadline: Deadline) -> Result<usize> {
        let r = block_on(&self.platform, Blocking::Until(deadline), || {
            self.attempt(|g, now| {
                let mut ready = 0;
                for p in fds.iter_mut() {
                    p.revents = match g.readiness(p.fd, now) {
                        Ok(ev) => ev & (p.events | Events::ERROR | Events::HANGUP),
                        Err(_) => Events::ERROR,
                    };
                    if !p.revents.is_empty() {
                        ready += 1;
                    }
                }
                if ready > 0 || fds.is_empty() && deadline == Deadline::Never {
                    Ok(Some(ready))
                } else {
                    Ok(None)
                }
            })
        });
        match r {
            Err(Error::Timeout) => Ok(0),
            r => r,
        }
    }

    fn local_addr(&self, fd: Sockfd) -> Result<SocketAddr> {
        self.with(|g| {
            let ip =
                g.ip.as_ref()
                    .map(|c| c.addr)
                    .unwrap_or(Ipv4Addr::UNSPECIFIED);
            let port = match g.fds.get(fd)? {
                Fd::Udp(u) => u.bound.unwrap_or(0),
                Fd::Tcp(t) => match &t.state {
                    TcpState::Idle | TcpState::Failed => t.bound.unwrap_or(0),
                    TcpState::Listening { port, .. } => *port,
                    TcpState::Connecting { hw, .. } | TcpState::Connected { hw, .. } => {
                        g.hw[*hw as usize].port
                    }
                },
            };
            Ok(SocketAddr::from((ip, port)))
        })
    }

    fn peer_addr(&self, fd: Sockfd) -> Result<SocketAddr> {
        self.with(|g| match g.fds.get(fd)? {
            Fd::Udp(u) => u.peer.map(SocketAddr::V4).ok_or(Error::NotConnected),
            Fd::Tcp(t) => match &t.state {
                TcpState::Connected { peer, .. } | TcpState::Connecting { peer, .. } => {
                    Ok(SocketAddr::V4(*peer))
                }
                _ => Err(Error::NotConnected),
            },
        })
    }

    fn now(&self) -> Instant {
        self.platform.now()
    }
}

impl<SPI: SpiDevice + Send, P: Platform> Netdever for W5500Offload<SPI, P> {
    fn get_host_by_name(&self, name: &str, family: AddressFamily) -> Result<IpAddr> {
        if family != AddressFamily::Inet {
            return Err(Error::FamilyNotSupported);
        }
        if let Ok(a) = name.parse::<Ipv4Addr>() {
            return Ok(IpAddr::V4(a));
        }
        let servers = self.with(|g| {
            g.ip.as_ref()
                .map(|c| c.dns.clone())
                .ok_or(Error::NetworkDown)
        })?;
        if servers.is_empty() {
            return Err(Error::HostUnknown);
        }
        let mut query = [0u8; dns::MAX_LEN];
        let id = self.with(|g| g.random() as u16);
        let qlen = dns::build_query(&mut query, id, name).map_err(|_| Error::HostUnknown)?;
        let port = self.with(|g| g.ephemeral_port(true))?;
        let sn = self.internal_udp(port)?;
        let until = Deadline::after(self.platform.now(), self.config.dns_timeout);
        let mut next_tx = self.platform.now();
        let mut k = 0usize;
        let r = block_on(&self.platform, Blocking::Until(until), || {
            self.attempt(|g, now| {
                if now >= next_tx && g.send_done(sn)? {
                    let server = servers[k % servers.len()];
                    k += 1;
                    g.send_datagram(sn, &query[..qlen], SocketAddrV4::new(server, dns::PORT))?;
                    next_tx = now + Duration::from_secs(1);
                }
                let mut msg = [0u8; dns::MAX_LEN];
                for _ in 0..8 {
                    let Some((n, _)) = Self::internal_recv(g, sn, &mut msg)? else {
                        break;
                    };
                    match dns::parse_response(&msg[..n], id) {
                        Ok(a) => return Ok(Some(IpAddr::V4(a))),
                        Err(dns::DnsError::IdMismatch) | Err(dns::DnsError::NotResponse) => {
                            g.stats.ignored_replies += 1;
                        }
                        Err(_) => {
                            g.stats.ignored_replies += 1;
                            return Err(Error::HostUnknown);
                        }
                    }
                }
                Ok(None)
            })
        });
        self.free_internal(sn);
        r
    }

    fn addr(&self) -> Result<IpAddr> {
        self.with(|g| {
            g.ip.as_ref()
                .map(|c| IpAddr::V4(c.addr))
                .ok_or(Error::NetworkDown)
        })
    }

    fn ip_config(&self) -> Result<IpConfig> {
        self.with(|g| g.ip.clone().ok_or(Error::NetworkDown))
    }

    fn set_addr(&self, config: IpConfig) -> Result<()> {
        config.validate()?;
        self.with(|g| {
            g.dhcp_mode = false;
            g.lease = None;
            g.set_ip(Some(config))
        })
    }

    fn capabilities(&self) -> Capabilities {
        let fds = self.with(|g| g.max_fds());
        Capabilities {
            max_sockets: fds,
            max_tcp: fds,
            max_udp: fds,
            tls: TlsSupport::None,
            server: true,
            dns: true,
            dhcp: true,
        }
    }
}

impl<SPI: SpiDevice + Send, P: Platform> Netlinker for W5500Offload<SPI, P> {
    fn net_connect(&self, params: &ConnectParams<'_>) -> Result<()> {
        if params.mode == ConnectMode::AccessPoint {
            return Err(Error::NotSupported);
        }
        if let IpMode::Static(c) = &params.ip {
            c.validate()?;
        }
        let mut last = Error::ConnectFailed;
        for _ in 0..=params.retries {
            self.with(|g| {
                g.joined = true;
                g.update_up();
            });
            let until = Deadline::after(self.platform.now(), params.connect_timeout);
            let link = block_on(&self.platform, Blocking::Until(until), || {
                self.attempt(|g, _| {
                    g.link_up = g.bus.link_up()?;
                    g.update_up();
                    Ok(g.link_up.then_some(()))
                })
            });
            if link.is_err() {
                last = Error::ConnectFailed;
                continue;
            }
            let r = match &params.ip {
                IpMode::Static(c) => self.with(|g| {
                    g.dhcp_mode = false;
                    g.lease = None;
                    g.set_ip(Some(c.clone()))
                }),
                IpMode::Keep => self.with(|g| {
                    if g.ip.is_some() {
                        g.update_up();
                        Ok(())
                    } else {
                        Err(Error::ConnectFailed)
                    }
                }),
                IpMode::Dhcp => {
                    self.with(|g| g.dhcp_mode = true);
                    match self.run_dhcp(until, params.hostname) {
                        Ok(cfg) => self.with(|g| g.set_ip(Some(cfg))),
                        Err(Error::Timeout) => Err(Error::ConnectFailed),
                        Err(e) => Err(e),
                    }
                }
            };
            match r {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn net_disconnect(&self) -> Result<()> {
        self.with(|g| {
            g.joined = false;
            g.dhcp_mode = false;
            g.lease = None;
            g.set_ip(None)
        })
    }

    fn net_notify(&self, callback: Option<NotifyFn>) {
        self.with(|g| g.notify_fn = callback);
    }

    fn hardware_addr(&self) -> Result<[u8; 6]> {
        Ok(self.with(|g| g.mac))
    }
}

/// Minimal DHCPv4 client messages (RFC 2131/2132): DISCOVER and REQUEST out,
/// OFFER / ACK / NAK in, options 1, 3, 6, 50, 51, 53, 54, 55, 61, 12.
pub mod dhcp {
    use crate::types::Ipv4Addr;

    /// Client port.
    pub const CLIENT_PORT: u16 = 68;
    /// Server port.
    pub const SERVER_PORT: u16 = 67;
    /// DHCPDISCOVER.
    pub const DISCOVER: u8 = 1;
    /// DHCPOFFER.
    pub const OFFER: u8 = 2;
    /// DHCPREQUEST.
    pub const REQUEST: u8 = 3;
    /// DHCPACK.
    pub const ACK: u8 = 5;
    /// DHCPNAK.
    pub const NAK: u8 = 6;
    /// Largest message built or parsed.
    pub const MAX_LEN: usize = 576;

    const COOKIE: [u8; 4] = [99, 130, 83, 99];
    const FIXED: usize = 236;

    /// Why a received message is not a usable reply to us.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    #[cfg_attr(feature = "defmt", derive(defmt::Format))]
    pub enum DhcpError {
        /// Shorter than the BOOTP header plus the magic cookie, or an
        /// option runs past the end.
        Truncated,
        /// Not a BOOTREPLY for Ethernet.
        NotReply,
        /// The transaction id is not ours.
        WrongXid,
        /// The client hardware address is not ours.
        WrongClient,
        /// The magic cookie is wrong.
        BadCookie,
        /// An option has an impossible length.
        BadOption,
        /// No message type option.
        NoMessageType,
    }

    /// What a server told us.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Reply {
        /// Message type (OFFER, ACK, NAK...).
        pub kind: u8,
        /// The offered address.
        pub yiaddr: Ipv4Addr,
        /// Server identifier (option 54).
        pub server: Option<Ipv4Addr>,
        /// Subnet mask (option 1).
        pub mask: Option<Ipv4Addr>,
        /// First router (option 3).
        pub router: Option<Ipv4Addr>,
        /// DNS servers (option 6), up to three.
        pub dns: heapless::Vec<Ipv4Addr, 3>,
        /// Lease time in seconds (option 51).
        pub lease_secs: Option<u32>,
    }

    fn ip(b: &[u8]) -> Ipv4Addr {
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Build a DISCOVER (`requested` and `server` unset) or REQUEST into
    /// `buf`; returns the length.
    pub fn build(
        buf: &mut [u8; MAX_LEN],
        kind: u8,
        xid: u32,
        mac: &[u8; 6],
        requested: Option<Ipv4Addr>,
        server: Option<Ipv4Addr>,
        hostname: &str,
    ) -> usize {
        buf.fill(0);
        buf[0] = 1; // BOOTREQUEST
        buf[1] = 1; // Ethernet
        buf[2] = 6;
        buf[4..8].copy_from_slice(&xid.to_be_bytes());
        buf[10] = 0x80; // broadcast flag: we have no address yet
        buf[28..34].copy_from_slice(mac);
        buf[FIXED..FIXED + 4].copy_from_slice(&COOKIE);
        let mut i = FIXED + 4;
        let mut opt = |code: u8, data: &[u8], i: &mut usize| {
            buf[*i] = code;
            buf[*i + 1] = data.len() as u8;
            buf[*i + 2..*i + 2 + data.len()].copy_from_slice(data);
            *i += 2 + data.len();
        };
        opt(53, &[kind], &mut i);
        let mut cid = [1u8; 7];
        cid[1..].copy_from_slice(mac);
        opt(61, &cid, &mut i);
        if let Some(r) = requested {
            opt(50, &r.octets(), &mut i);
        }
        if let Some(s) = server {
            opt(54, &s.octets(), &mut i);
        }
        let h = hostname.as_bytes();
        if !h.is_empty() {
            opt(12, &h[..h.len().min(32)], &mut i);
        }
        opt(55, &[1, 3, 6, 51, 54], &mut i);
        buf[i] = 255;
        i + 1
    }

    /// Parse a server message meant for (`xid`, `mac`).
    pub fn parse(pkt: &[u8], xid: u32, mac: &[u8; 6]) -> Result<Reply, DhcpError> {
        if pkt.len() < FIXED + 4 {
            return Err(DhcpError::Truncated);
        }
        if pkt[0] != 2 || pkt[1] != 1 || pkt[2] != 6 {
            return Err(DhcpError::NotReply);
        }
        if pkt[4..8] != xid.to_be_bytes() {
            return Err(DhcpError::WrongXid);
        }
        if pkt[28..34] != mac[..] {
            return Err(DhcpError::WrongClient);
        }
        if pkt[FIXED..FIXED + 4] != COOKIE {
            return Err(DhcpError::BadCookie);
        }
        let mut r = Reply {
            kind: 0,
            yiaddr: ip(&pkt[16..20]),
            server: None,
            mask: None,
            router: None,
            dns: heapless::Vec::new(),
            lease_secs: None,
        };
        let mut i = FIXED + 4;
        while i < pkt.len() {
            let code = pkt[i];
            match code {
                0 => {
                    i += 1;
                    continue;
                }
                255 => break,
                _ => {}
            }
            let len = *pkt.get(i + 1).ok_or(DhcpError::Truncated)? as usize;
            let data = pkt.get(i + 2..i + 2 + len).ok_or(DhcpError::Truncated)?;
            let need4 = |d: &[u8]| {
                if d.len() >= 4 && d.len().is_multiple_of(4) {
                    Ok(())
                } else {
                    Err(DhcpError::BadOption)
                }
            };
            match code {
                53 if len == 1 => r.kind = data[0],
                53 => return Err(DhcpError::BadOption),
                1 if len == 4 => r.mask = Some(ip(data)),
                3 => {
                    need4(data)?;
                    r.router = Some(ip(data));
                }
                6 => {
                    need4(data)?;
                    for c in data.chunks(4) {
                        let _ = r.dns.push(ip(c));
                    }
                }
                51 if len == 4 => {
                    r.lease_secs = Some(u32::from_be_bytes([data[0], data[1], data[2], data[3]]))
                }
                54 if len == 4 => r.server = Some(ip(data)),
                1 | 51 | 54 => return Err(DhcpError::BadOption),
                _ => {}
            }
            i += 2 + len;
        }
        if r.kind == 0 {
            return Err(DhcpError::NoMessageType);
        }
        Ok(r)
    }

    /// Prefix length of a netmask (leading ones).
    pub fn prefix_len(mask: Ipv4Addr) -> u8 {
        u32::from(mask).leading_ones() as u8
    }
}

/// Minimal DNS client messages (RFC 1035): one A/IN question out, the
/// first A record of the answer in.
pub mod dns {
    use crate::types::Ipv4Addr;

    /// DNS server port.
    pub const PORT: u16 = 53;
    /// Largest message parsed (classic UDP DNS).
    pub const MAX_LEN: usize = 512;

    /// Why a reply gives no address.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    #[cfg_attr(feature = "defmt", derive(defmt::Format))]
    pub enum DnsError {
        /// The name cannot be encoded (empty label, label over 63 bytes,
        /// over 253 bytes in all).
        BadName,
        /// The message ends inside its header or a record.
        Truncated,
        /// Not a response (QR clear) or not a standard query.
        NotResponse,
        /// The id is not our query's.
        IdMismatch,
        /// NXDOMAIN: the name does not exist.
        NameError,
        /// Another error code from the server.
        ServerFailure(u8),
        /// A valid answer with no A record.
        NoAnswer,
        /// A compression pointer loop or a label type we do not know.
        Malformed,
    }

    /// Encode a recursive A query for `name` into `buf`; returns its length.
    pub fn build_query(buf: &mut [u8], id: u16, name: &str) -> Result<usize, DnsError> {
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() || name.len() > 253 || buf.len() < 12 + name.len() + 2 + 4 {
            return Err(DnsError::BadName);
        }
        buf[..12].fill(0);
        buf[0..2].copy_from_slice(&id.to_be_bytes());
        buf[2] = 0x01; // RD
        buf[5] = 1; // QDCOUNT
        let mut i = 12;
        for label in name.split('.') {
            let l = label.as_bytes();
            if l.is_empty() || l.len() > 63 {
                return Err(DnsError::BadName);
            }
            buf[i] = l.len() as u8;
            buf[i + 1..i + 1 + l.len()].copy_from_slice(l);
            i += 1 + l.len();
        }
        buf[i] = 0;
        buf[i + 1..i + 5].copy_from_slice(&[0, 1, 0, 1]); // A, IN
        Ok(i + 5)
    }

    /// Skip a (possibly compressed) name starting at `i`; returns the index after it.
    fn skip_name(p: &[u8], mut i: usize) -> Result<usize, DnsError> {
        for _ in 0..128 {
            let len = *p.get(i).ok_or(DnsError::Truncated)?;
            match len & 0xC0 {
                0x00 if len == 0 => return Ok(i + 1),
                0x00 => i += 1 + len as usize,
                0xC0 => {
                    p.get(i + 1).ok_or(DnsError::Truncated)?;
                    return Ok(i + 2);
                }
                _ => return Err(DnsError::Malformed),
            }
        }
        Err(DnsError::Malformed)
    }

    fn u16_at(p: &[u8], i: usize) -> Result<u16, DnsError> {
        match p.get(i..i + 2) {
            Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
            None => Err(DnsError::Truncated),
        }
    }

    /// The first A record of a response to query `id`.
    pub fn parse_response(p: &[u8], id: u16) -> Result<Ipv4Addr, DnsError> {
        if p.len() < 12 {
            return Err(DnsError::Truncated);
        }
        if u16_at(p, 0)? != id {
            return Err(DnsError::IdMismatch);
        }
        if p[2] & 0x80 == 0 || (p[2] >> 3) & 0x0F != 0 {
            return Err(DnsError::NotResponse);
        }
        match p[3] & 0x0F {
            0 => {}
            3 => return Err(DnsError::NameError),
            rc => return Err(DnsError::ServerFailure(rc)),
        }
        let qd = u16_at(p, 4)?;
        let an = u16_at(p, 6)?;
        let mut i = 12;
        for _ in 0..qd {
            i = skip_name(p, i)? + 4;
        }
        for _ in 0..an {
            i = skip_name(p, i)?;
            let ty = u16_at(p, i)?;
            let class = u16_at(p, i + 2)?;
            let rdlen = u16_at(p, i + 8)? as usize;
            let rdata = p.get(i + 10..i + 10 + rdlen).ok_or(DnsError::Truncated)?;
            if ty == 1 && class == 1 && rdlen == 4 {
                return Ok(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]));
            }
            i += 10 + rdlen;
        }
        Err(DnsError::NoAnswer)
    }
}

#[cfg(test)]
mod tests {
    use super::dhcp::{self, DhcpError};
    use super::dns::{self, DnsError};
    use super::mask_of;
    use crate::types::Ipv4Addr;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 9];

    /// A server reply made from our own request.
    fn reply(kind: u8, xid: u32) -> heapless::Vec<u8, 600> {
        let mut req = [0u8; dhcp::MAX_LEN];
        let n = dhcp::build(&mut req, dhcp::DISCOVER, xid, &MAC, None, None, "");
        let mut r: heapless::Vec<u8, 600> = heapless::Vec::new();
        r.extend_from_slice(&req[..240]).unwrap();
        r[0] = 2;
        r[16..20].copy_from_slice(&[10, 0, 0, 5]);
        for b in [
            53, 1, kind, 54, 4, 10, 0, 0, 1, 1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 0, 1, 6, 8, 10,
            0, 0, 1, 10, 0, 0, 2, 51, 4, 0, 0, 0x0E, 0x10, 255,
        ] {
            r.push(b).unwrap();
        }
        assert!(n > 240);
        r
    }

    #[test]
    fn dhcp_build_and_parse() {
        let mut buf = [0u8; dhcp::MAX_LEN];
        let n = dhcp::build(
            &mut buf,
            dhcp::REQUEST,
            0x1234_5678,
            &MAC,
            Some(Ipv4Addr::new(10, 0, 0, 5)),
            Some(Ipv4Addr::new(10, 0, 0, 1)),
            "dev",
        );
        assert_eq!(&buf[..4], &[1, 1, 6, 0]);
        assert_eq!(&buf[4..8], &0x1234_5678u32.to_be_bytes());
        assert_eq!(&buf[236..240], &[99, 130, 83, 99]);
        assert_eq!(&buf[240..243], &[53, 1, dhcp::REQUEST]);
        assert_eq!(buf[n - 1], 255);
        let opts = &buf[240..n];
        assert!(opts.windows(6).any(|w| w == [50, 4, 10, 0, 0, 5]));
        assert!(opts.windows(6).any(|w| w == [54, 4, 10, 0, 0, 1]));

        let r = dhcp::parse(&reply(dhcp::ACK, 7), 7, &MAC).unwrap();
        assert_eq!(r.kind, dhcp::ACK);
        assert_eq!(r.yiaddr, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(r.server, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(r.router, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(r.mask.map(dhcp::prefix_len), Some(24));
        assert_eq!(r.dns.len(), 2);
        assert_eq!(r.lease_secs, Some(3600));
        assert_eq!(mask_of(24), [255, 255, 255, 0]);
        assert_eq!(mask_of(0), [0; 4]);
    }

    #[test]
    fn dhcp_garbage_is_typed() {
        let good = reply(dhcp::OFFER, 7);
        assert_eq!(
            dhcp::parse(&good[..100], 7, &MAC),
            Err(DhcpError::Truncated)
        );
        assert_eq!(dhcp::parse(&good, 8, &MAC), Err(DhcpError::WrongXid));
        assert_eq!(dhcp::parse(&good, 7, &[0; 6]), Err(DhcpError::WrongClient));
        let mut bad = good.clone();
        bad[0] = 1;
        assert_eq!(dhcp::parse(&bad, 7, &MAC), Err(DhcpError::NotReply));
        let mut bad = good.clone();
        bad[237] = 0;
        assert_eq!(dhcp::parse(&bad, 7, &MAC), Err(DhcpError::BadCookie));
        let mut bad = good.clone();
        bad[241] = 2; // message type with length 2
        assert_eq!(dhcp::parse(&bad, 7, &MAC), Err(DhcpError::BadOption));
        let mut bad = good.clone();
        bad.truncate(250); // an option runs past the end
        assert_eq!(dhcp::parse(&bad, 7, &MAC), Err(DhcpError::Truncated));
        let mut bad = good.clone();
        bad[240] = 0; // pad instead of the type option's code
        bad[241] = 0;
        bad[242] = 0;
        assert_eq!(dhcp::parse(&bad, 7, &MAC), Err(DhcpError::NoMessageType));
    }

    #[test]
    fn dns_query_and_answers() {
        let mut q = [0u8; 64];
        let n = dns::build_query(&mut q, 0xBEEF, "a.example.").unwrap();
        assert_eq!(&q[..4], &[0xBE, 0xEF, 0x01, 0x00]);
        assert_eq!(&q[12..n], b"\x01a\x07example\x00\x00\x01\x00\x01");
        assert_eq!(
            dns::build_query(&mut [0u8; 64], 1, ""),
            Err(DnsError::BadName)
        );
        assert_eq!(
            dns::build_query(&mut [0u8; 64], 1, "a..b"),
            Err(DnsError::BadName)
        );
        let long = [b'x'; 64];
        let long = core::str::from_utf8(&long).unwrap();
        assert_eq!(
            dns::build_query(&mut [0u8; 200], 1, long),
            Err(DnsError::BadName)
        );

        let mut r: heapless::Vec<u8, 128> = heapless::Vec::new();
        r.extend_from_slice(&q[..n]).unwrap();
        r[2] = 0x81;
        r[3] = 0x80;
        r[7] = 2; // two answers: a CNAME, then the A record
        r.extend_from_slice(&[0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 9, 0, 2, 0xC0, 12])
            .unwrap();
        r.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 9, 0, 4, 192, 0, 2, 7])
            .unwrap();
        assert_eq!(
            dns::parse_response(&r, 0xBEEF),
            Ok(Ipv4Addr::new(192, 0, 2, 7))
        );
        assert_eq!(dns::parse_response(&r, 0xBEEE), Err(DnsError::IdMismatch));
        assert_eq!(
            dns::parse_response(&r[..r.len() - 2], 0xBEEF),
            Err(DnsError::Truncated)
        );
        assert_eq!(
            dns::parse_response(&r[..5], 0xBEEF),
            Err(DnsError::Truncated)
        );
        let mut nx = r.clone();
        nx[3] = 0x83;
        assert_eq!(dns::parse_response(&nx, 0xBEEF), Err(DnsError::NameError));
        nx[3] = 0x82;
        assert_eq!(
            dns::parse_response(&nx, 0xBEEF),
            Err(DnsError::ServerFailure(2))
        );
        let mut q2 = r.clone();
        q2[2] = 0x01;
        assert_eq!(dns::parse_response(&q2, 0xBEEF), Err(DnsError::NotResponse));
        let mut none = r.clone();
        none[7] = 0;
        assert_eq!(dns::parse_response(&none, 0xBEEF), Err(DnsError::NoAnswer));
        let mut odd = r.clone();
        odd[12] = 0x41; // label type 01
        assert_eq!(dns::parse_response(&odd, 0xBEEF), Err(DnsError::Malformed));
    }
}
