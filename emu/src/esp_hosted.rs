//! A host model of an ESP32 running ESP-Hosted-FG in bridge mode on its
//! SPI transport, plus the access point its station joins.
//!
//! # What is modelled
//!
//! * **SPI transfers**: every chip-select cycle ([`SpiDevice`] transaction)
//!   clocks full duplex; the chip shifts out its 1600-byte transfer buffer
//!   (bytes past it read 0) and takes in the first 1600 bytes the host
//!   clocks. Each buffer starts with the 12-byte payload header: `if_type`
//!   (low nibble) / `if_num` (high nibble), flags, `len` (LE16), `offset`
//!   (LE16, 12), checksum (LE16, 16-bit sum of header + payload with the
//!   checksum field zero), `seq_num` (LE16), a reserved byte and the
//!   HCI/PRIV packet type. When it has nothing to send, the chip sends an
//!   idle header (`if_type` 8 = `ESP_MAX_IF`, `if_num` 0xF, `len` 0), as the
//!   firmware does.
//! * **Handshake and data-ready lines** ([`EspHostedPin`]): handshake is
//!   high while the chip is ready to be clocked (low while it boots);
//!   data-ready is high while it has a buffer queued for the host.
//! * **Boot**: after [`EspHostedEmu::reset`] (and at creation) the chip
//!   keeps handshake low for the boot time, then queues the init event on
//!   the PRIV interface: packet type 0x33, event 0x22, TLVs capability
//!   (0x11: WLAN over SPI | checksum), chip id (0x12) and raw-throughput
//!   test (0x13).
//! * **Received buffers** are checked like the firmware does: `len` 0 is
//!   idle; `offset + len` past the buffer, a wrong checksum or an unknown
//!   interface type are counted and dropped. Sequence numbers are checked
//!   too: a number up to 64 behind the expected one (a replay) is counted
//!   and dropped, unless three came in a row (the host restarted its
//!   count: followed); any other jump is counted as a gap and accepted.
//! * **Interfaces**: STA frames are bridged to and from the [`Link`] given
//!   at construction while the station is associated (and dropped
//!   otherwise); frames from the link reach the host only if addressed to
//!   the station MAC or to a group address. SERIAL carries control
//!   messages; AP, HCI, PRIV, TEST and ETH buffers from the host are
//!   counted and ignored.
//! * **Control**: TLV envelope (type 1 endpoint name, type 2 data; LE16
//!   lengths) with endpoint `"RPCRsp"` for requests and responses and
//!   `"RPCEvt"` for events, carrying protobuf `CtrlMsg`:
//!   `Req_GetMACAddress` (the MAC as a `"aa:bb:cc:dd:ee:ff"` string),
//!   `Req_ConnectAP` (SSID and passphrase checked against the access point:
//!   `resp` 2 no AP found, 3 wrong password, 0 joined; optionally answered
//!   after a delay), `Req_DisconnectAP`, and the events
//!   `Event_StationConnectedToAP` and `Event_StationDisconnectFromAP`
//!   (reason 200 beacon timeout when the AP vanishes or drops the station).
//!   The `uid` of a request is echoed in its response.
//! * **Faults** for tests: corrupting buffers sent to the host (checksum,
//!   payload bit, a length past the buffer, an unknown interface type),
//!   spontaneous resets, the AP vanishing, control requests going
//!   unanswered.
//!
//! # Where the model simplifies
//!
//! * The firmware's transmit queue is bounded ([`CHIP_TX_QUEUE`] frames):
//!   frames beyond it wait in the link's own queue rather than being
//!   dropped; frames are taken from the link only when the host looks at
//!   the chip (reads data-ready or clocks a transfer).
//! * Control responses are ready as soon as the request was clocked in
//!   (plus the configured connect delay); the handshake line does not dip
//!   between transfers.
//! * Fragmented control messages (`MORE_FRAGMENT`) from the host are
//!   reassembled; the chip's own messages always fit one buffer.
//!
//! Bus traffic is counted on a [`BusCounter`]: every byte clocked and
//! every chip-select cycle; payload is the bytes of station frames that
//! crossed the bus in either direction.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use embedded_hal::digital::{ErrorType as PinErrorType, InputPin};
use embedded_hal::spi::{ErrorType as SpiErrorType, Operation, SpiDevice};
use netdever::phy::{Link, RxSignal};
use parking_lot::{Condvar, Mutex};

use crate::bus::BusCounter;

/// Size of every SPI transfer buffer.
pub const BUFFER_SIZE: usize = 1600;
/// Length of the payload header.
pub const HEADER_LEN: usize = 12;
/// Buffers the chip queues for the host before it stops taking frames from
/// the link.
pub const CHIP_TX_QUEUE: usize = 32;

const IF_STA: u8 = 1;
const IF_AP: u8 = 2;
const IF_SERIAL: u8 = 3;
const IF_HCI: u8 = 4;
const IF_PRIV: u8 = 5;
const IF_TEST: u8 = 6;
const IF_ETH: u8 = 7;
const IF_MAX: u8 = 8;
const FLAG_MORE_FRAGMENT: u8 = 1;
const PRIV_PACKET_TYPE_EVENT: u8 = 0x33;
const PRIV_EVENT_INIT: u8 = 0x22;
/// Capability bits: WLAN over SPI (bit 5) and checksum (bit 7).
const CAPABILITIES: u8 = (1 << 5) | (1 << 7);
/// Reason codes of `Event_StationDisconnectFromAP` (ESP-IDF `wifi_err_reason_t`).
pub const REASON_BEACON_TIMEOUT: u32 = 200;

const MSG_REQ: u64 = 1;
const MSG_RESP: u64 = 2;
const MSG_EVENT: u64 = 3;
const REQ_GET_MAC: u64 = 101;
const REQ_CONNECT_AP: u64 = 107;
const REQ_DISCONNECT_AP: u64 = 108;
const EVENT_STA_DISCONNECTED: u64 = 303;
const EVENT_STA_CONNECTED: u64 = 305;
const RESP_SUCCESS: i64 = 0;
const RESP_FAILURE: i64 = -1;
const RESP_NO_AP_FOUND: i64 = 2;
const RESP_INVALID_PASSWORD: i64 = 3;

/// How a buffer sent to the host is damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Corruption {
    /// The checksum field is off by one.
    Checksum,
    /// One payload bit flipped after the checksum was computed.
    PayloadBit,
    /// `len` claims more than the buffer holds (checksum left as computed).
    LengthPastBuffer,
    /// `if_type` is 0xE, which no firmware defines (checksum recomputed).
    UnknownIfType,
}

/// Counters of the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EspHostedEmuStats {
    /// SPI transactions clocked.
    pub transfers: u64,
    /// Transactions clocked while the chip was booting (handshake low): lost.
    pub transfers_not_ready: u64,
    /// Non-idle buffers received from the host and accepted.
    pub rx_frames: u64,
    /// Idle buffers from the host (`len` 0).
    pub rx_idle: u64,
    /// Host buffers dropped: checksum mismatch.
    pub rx_bad_checksum: u64,
    /// Host buffers dropped: `offset`/`len` past the buffer (or past what was clocked).
    pub rx_bad_length: u64,
    /// Host buffers dropped: unknown interface type.
    pub rx_unknown_if: u64,
    /// Host buffers for interfaces the bridge does not serve (ignored).
    pub rx_ignored_if: u64,
    /// Host sequence numbers ahead of the expected one.
    pub rx_seq_gaps: u64,
    /// Host buffers dropped: sequence number behind the expected one.
    pub rx_seq_replays: u64,
    /// Non-idle buffers sent to the host.
    pub tx_frames: u64,
    /// Buffers sent to the host corrupted on purpose.
    pub tx_corrupted: u64,
    /// Station frames from the host put on the link.
    pub bridged_to_link: u64,
    /// Station frames from the link queued for the host.
    pub bridged_to_host: u64,
    /// Station frames dropped because the station was not associated.
    pub dropped_not_associated: u64,
    /// Frames from the link for another MAC (not heard by the station).
    pub filtered: u64,
    /// Errors from the link (transmit refused, receive failed).
    pub link_errors: u64,
    /// Control requests handled.
    pub ctrl_requests: u64,
    /// Control messages that could not be parsed, or unknown requests.
    pub ctrl_malformed: u64,
    /// Control requests left unanswered on purpose ([`EspHostedEmu::set_ctrl_silent`]).
    pub ctrl_ignored: u64,
    /// `ConnectAP` requests refused (no AP, wrong password).
    pub connect_refused: u64,
    /// Events sent (init events included).
    pub events: u64,
    /// Resets (the first boot not counted).
    pub resets: u64,
}

/// A queued buffer for the host, before framing.
struct Out {
    if_type: u8,
    pkt_type: u8,
    payload: Vec<u8>,
}

struct Chip {
    link: Box<dyn Link + Send>,
    mac: [u8; 6],
    ap_ssid: String,
    ap_passphrase: String,
    ap_available: bool,
    associated: bool,
    boot_time: Duration,
    booting_until: Option<Instant>,
    priority: VecDeque<Out>,
    data: VecDeque<Out>,
    delayed: Vec<(Instant, Out)>,
    tx_seq: u16,
    rx_expected: Option<u16>,
    replay_run: u8,
    serial: Vec<u8>,
    corrupt_next: VecDeque<Corruption>,
    corrupt_every: Option<u32>,
    corrupt_count: u32,
    connect_delay: Duration,
    ctrl_silent: bool,
    stats: EspHostedEmuStats,
    link_buf: Vec<u8>,
}

struct Shared {
    chip: Mutex<Chip>,
    changed: Condvar,
    bus: Arc<BusCounter>,
}

/// The chip: create it with [`EspHostedEmu::new`], hand [`EspHostedEmu::spi`]
/// and the two pins to the driver, turn knobs from the test. Cheap to
/// clone; clones share the chip.
#[derive(Clone)]
pub struct EspHostedEmu {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EspHostedEmu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.shared.chip.lock();
        f.debug_struct("EspHostedEmu")
            .field("mac", &c.mac)
            .field("associated", &c.associated)
            .finish()
    }
}

impl EspHostedEmu {
    /// A chip whose station bridges to `link` (its MAC is the link's MAC)
    /// and whose access point is `ssid` / `passphrase`. The chip boots at
    /// once (boot time 0); its init event is the first thing it sends.
    pub fn new(link: impl Link + Send + 'static, ssid: &str, passphrase: &str) -> Self {
        let mac = link.hardware_addr();
        let chip = Chip {
            link: Box::new(link),
            mac,
            ap_ssid: ssid.into(),
            ap_passphrase: passphrase.into(),
            ap_available: true,
            associated: false,
            boot_time: Duration::ZERO,
            booting_until: Some(Instant::now()),
            priority: VecDeque::new(),
            data: VecDeque::new(),
            delayed: Vec::new(),
            tx_seq: 0,
            rx_expected: None,
            replay_run: 0,
            serial: Vec::new(),
            corrupt_next: VecDeque::new(),
            corrupt_every: None,
            corrupt_count: 0,
            connect_delay: Duration::ZERO,
            ctrl_silent: false,
            stats: EspHostedEmuStats::default(),
            link_buf: vec![0; 2048],
        };
        EspHostedEmu {
            shared: Arc::new(Shared {
                chip: Mutex::new(chip),
                changed: Condvar::new(),
                bus: BusCounter::new(),
            }),
        }
    }

    /// The SPI device the driver clocks.
    pub fn spi(&self) -> EspHostedSpi {
        EspHostedSpi {
            shared: self.shared.clone(),
        }
    }

    /// The handshake line (high: ready to be clocked).
    pub fn handshake_pin(&self) -> EspHostedPin {
        EspHostedPin {
            shared: self.shared.clone(),
            data_ready: false,
        }
    }

    /// The data-ready line (high: the chip has something for the host).
    pub fn data_ready_pin(&self) -> EspHostedPin {
        EspHostedPin {
            shared: self.shared.clone(),
            data_ready: true,
        }
    }

    /// Host glue: an [`RxSignal`] that returns when data-ready is high.
    pub fn rx_signal(&self) -> Arc<dyn RxSignal> {
        let link_signal = self.shared.chip.lock().link.rx_signal();
        Arc::new(EmuSignal {
            shared: self.shared.clone(),
            link_signal,
        })
    }

    /// Wait up to `timeout` for data-ready to go high; returns its level.
    pub fn wait_data_ready(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        let sig = self.rx_signal();
        loop {
            if self.shared.chip.lock().data_ready(Instant::now()) {
                return true;
            }
            let now = Instant::now();
            if now >= end {
                return false;
            }
            sig.wait(Some(end - now));
        }
    }

    /// The bus counters.
    pub fn bus(&self) -> Arc<BusCounter> {
        self.shared.bus.clone()
    }

    /// Counters.
    pub fn stats(&self) -> EspHostedEmuStats {
        self.shared.chip.lock().stats
    }

    /// The station MAC.
    pub fn mac(&self) -> [u8; 6] {
        self.shared.chip.lock().mac
    }

    /// Whether the station is associated.
    pub fn associated(&self) -> bool {
        self.shared.chip.lock().associated
    }

    fn with<R>(&self, f: impl FnOnce(&mut Chip) -> R) -> R {
        let r = f(&mut self.shared.chip.lock());
        self.shared.changed.notify_all();
        r
    }

    /// Change the access point's SSID and passphrase (the station stays
    /// joined until it joins again).
    pub fn set_ap(&self, ssid: &str, passphrase: &str) {
        self.with(|c| {
            c.ap_ssid = ssid.into();
            c.ap_passphrase = passphrase.into();
        });
    }

    /// Make the access point vanish (`false`: the station is dropped with
    /// reason 200 and `ConnectAP` finds no AP) or come back.
    pub fn set_ap_available(&self, available: bool) {
        self.with(|c| {
            c.ap_available = available;
            if !available {
                c.drop_station(REASON_BEACON_TIMEOUT);
            }
        });
    }

    /// The AP drops the station: the chip sends
    /// `Event_StationDisconnectFromAP` with `reason`. Returns whether it was
    /// associated.
    pub fn drop_station(&self, reason: u32) -> bool {
        self.with(|c| c.drop_station(reason))
    }

    /// Spontaneous reset: everything queued is lost, the station leaves,
    /// handshake stays low for the boot time, then a new init event comes.
    pub fn reset(&self) {
        self.with(|c| {
            c.stats.resets += 1;
            c.reboot(Instant::now());
        });
    }

    /// How long the chip keeps handshake low after a reset (default 0).
    pub fn set_boot_time(&self, t: Duration) {
        self.with(|c| c.boot_time = t);
    }

    /// Answer `ConnectAP` only after `d` (a real join takes seconds).
    pub fn set_connect_delay(&self, d: Duration) {
        self.with(|c| c.connect_delay = d);
    }

    /// Leave control requests unanswered (they are counted).
    pub fn set_ctrl_silent(&self, silent: bool) {
        self.with(|c| c.ctrl_silent = silent);
    }

    /// Damage the next non-idle buffer sent to the host.
    pub fn corrupt_next(&self, how: Corruption) {
        self.with(|c| c.corrupt_next.push_back(how));
    }

    /// Damage every `n`th non-idle buffer sent to the host (cycling through
    /// the kinds of [`Corruption`]); `None` stops it.
    pub fn set_corrupt_every(&self, n: Option<u32>) {
        self.with(|c| {
            c.corrupt_every = n.filter(|&n| n > 0);
            c.corrupt_count = 0;
        });
    }
}

impl Chip {
    fn booting(&mut self, now: Instant) -> bool {
        match self.booting_until {
            Some(t) if now >= t => {
                self.booting_until = None;
                self.queue_init_event();
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    fn reboot(&mut self, now: Instant) {
        self.associated = false;
        self.priority.clear();
        self.data.clear();
        self.delayed.clear();
        self.serial.clear();
        self.tx_seq = 0;
        self.rx_expected = None;
        self.replay_run = 0;
        self.booting_until = Some(now + self.boot_time);
    }

    fn queue_init_event(&mut self) {
        let tlvs = [0x11, 1, CAPABILITIES, 0x12, 1, 0x00, 0x13, 1, 0x00];
        let mut p = vec![PRIV_EVENT_INIT, tlvs.len() as u8];
        p.extend_from_slice(&tlvs);
        self.stats.events += 1;
        // The firmware queues it on its "others" queue; it is the only
        // thing queued after a boot.
        self.data.push_back(Out {
            if_type: IF_PRIV,
            pkt_type: PRIV_PACKET_TYPE_EVENT,
            payload: p,
        });
    }

    fn drop_station(&mut self, reason: u32) -> bool {
        if !self.associated {
            return false;
        }
        self.associated = false;
        let mut ev = Vec::new();
        pb_bytes(&mut ev, 2, self.ap_ssid.as_bytes());
        pb_uint(&mut ev, 3, self.ap_ssid.len() as u64);
        pb_bytes(&mut ev, 4, mac_string(&bssid_of(self.mac)).as_bytes());
        pb_uint(&mut ev, 5, reason as u64);
        pb_int(&mut ev, 6, -90);
        self.queue_ctrl(MSG_EVENT, EVENT_STA_DISCONNECTED, 0, &ev);
        true
    }

    fn queue_ctrl(&mut self, ty: u64, id: u64, uid: i64, payload: &[u8]) {
        let out = self.ctrl_out(ty, id, uid, payload);
        self.priority.push_back(out);
    }

    fn ctrl_out(&mut self, ty: u64, id: u64, uid: i64, payload: &[u8]) -> Out {
        let mut m = Vec::new();
        pb_uint(&mut m, 1, ty);
        pb_uint(&mut m, 2, id);
        pb_int(&mut m, 3, uid);
        pb_message(&mut m, id, payload);
        let ep: &[u8] = if ty == MSG_EVENT {
            b"RPCEvt"
        } else {
            b"RPCRsp"
        };
        if ty == MSG_EVENT {
            self.stats.events += 1;
        }
        let mut t = Vec::new();
        for (ty, v) in [(1u8, ep), (2u8, &m[..])] {
            t.push(ty);
            t.extend_from_slice(&(v.len() as u16).to_le_bytes());
            t.extend_from_slice(v);
        }
        Out {
            if_type: IF_SERIAL,
            pkt_type: 0,
            payload: t,
        }
    }

    /// Move due work along: boot, delayed answers, the AP's presence, and
    /// frames from the link (bounded by the chip's queue).
    fn pump(&mut self, now: Instant) {
        if self.booting(now) {
            return;
        }
        let mut i = 0;
        while i < self.delayed.len() {
            if self.delayed[i].0 <= now {
                let (_, out) = self.delayed.remove(i);
                self.priority.push_back(out);
            } else {
                i += 1;
            }
        }
        if self.associated && !self.link.link_up() {
            self.drop_station(REASON_BEACON_TIMEOUT);
        }
        // Bounded: the queue limit, or a fixed number of frames dropped.
        for _ in 0..256 {
            if self.data.len() >= CHIP_TX_QUEUE {
                break;
            }
            let mut buf = std::mem::take(&mut self.link_buf);
            let r = self.link.receive(&mut buf);
            let n = match r {
                Ok(Some(n)) => n,
                Ok(None) => {
                    self.link_buf = buf;
                    break;
                }
                Err(_) => {
                    self.stats.link_errors += 1;
                    self.link_buf = buf;
                    break;
                }
            };
            let frame = &buf[..n];
            if !self.associated {
                self.stats.dropped_not_associated += 1;
            } else if n < 14 || (frame[..6] != self.mac && frame[0] & 1 == 0) {
                self.stats.filtered += 1;
            } else {
                self.stats.bridged_to_host += 1;
                self.data.push_back(Out {
                    if_type: IF_STA,
                    pkt_type: 0,
                    payload: frame.to_vec(),
                });
            }
            self.link_buf = buf;
        }
    }

    fn data_ready(&mut self, now: Instant) -> bool {
        self.pump(now);
        self.booting_until.is_none() && !(self.priority.is_empty() && self.data.is_empty())
    }

    /// Build the next buffer for the host (idle if nothing is queued).
    /// Returns the buffer and the station payload length it carries.
    fn next_out(&mut self) -> ([u8; BUFFER_SIZE], usize) {
        let mut b = [0u8; BUFFER_SIZE];
        let Some(out) = self.priority.pop_front().or_else(|| self.data.pop_front()) else {
            b[0] = IF_MAX | 0xF0;
            return (b, 0);
        };
        let len = out.payload.len().min(BUFFER_SIZE - HEADER_LEN);
        b[0] = out.if_type & 0x0f;
        b[2..4].copy_from_slice(&(len as u16).to_le_bytes());
        b[4..6].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        b[8..10].copy_from_slice(&self.tx_seq.to_le_bytes());
        b[11] = out.pkt_type;
        b[HEADER_LEN..HEADER_LEN + len].copy_from_slice(&out.payload[..len]);
        self.tx_seq = self.tx_seq.wrapping_add(1);
        let sum = checksum(&b[..HEADER_LEN + len]);
        b[6..8].copy_from_slice(&sum.to_le_bytes());
        self.stats.tx_frames += 1;

        let mut how = self.corrupt_next.pop_front();
        if how.is_none() {
            if let Some(n) = self.corrupt_every {
                self.corrupt_count += 1;
                if self.corrupt_count.is_multiple_of(n) {
                    const KINDS: [Corruption; 4] = [
                        Corruption::Checksum,
                        Corruption::PayloadBit,
                        Corruption::LengthPastBuffer,
                        Corruption::UnknownIfType,
                    ];
                    how = Some(KINDS[(self.corrupt_count / n) as usize % 4]);
                }
            }
        }
        if let Some(how) = how {
            self.stats.tx_corrupted += 1;
            match how {
                Corruption::Checksum => {
                    b[6..8].copy_from_slice(&sum.wrapping_add(1).to_le_bytes());
                }
                Corruption::PayloadBit => b[HEADER_LEN + len / 2] ^= 0x10,
                Corruption::LengthPastBuffer => {
                    b[2..4].copy_from_slice(&(BUFFER_SIZE as u16).to_le_bytes());
                }
                Corruption::UnknownIfType => {
                    b[0] = (b[0] & 0xf0) | 0x0e;
                    let sum = checksum(&b[..HEADER_LEN + len]);
                    b[6..8].copy_from_slice(&sum.to_le_bytes());
                }
            }
        }
        let sta = if out.if_type == IF_STA { len } else { 0 };
        (b, sta)
    }

    /// Take in one buffer clocked by the host (`buf` is what was clocked,
    /// at most one transfer buffer).
    fn receive_from_host(&mut self, buf: &[u8], bus: &BusCounter) {
        if buf.len() < HEADER_LEN {
            if buf.iter().any(|&b| b != 0) {
                self.stats.rx_bad_length += 1;
            }
            return;
        }
        let le = |i: usize| u16::from_le_bytes([buf[i], buf[i + 1]]);
        let (if_type, flags, len, off, sum, seq) =
            (buf[0] & 0x0f, buf[1], le(2), le(4), le(6), le(8));
        if len == 0 {
            self.stats.rx_idle += 1;
            return;
        }
        let (len, off) = (len as usize, off as usize);
        if off < HEADER_LEN || off + len > buf.len() {
            self.stats.rx_bad_length += 1;
            return;
        }
        if checksum(&buf[..off + len]) != sum {
            self.stats.rx_bad_checksum += 1;
            return;
        }
        if let Some(exp) = self.rx_expected {
            if seq == exp {
                self.replay_run = 0;
            } else if exp.wrapping_sub(seq) <= 64 && self.replay_run < 3 {
                self.replay_run += 1;
                self.stats.rx_seq_replays += 1;
                return;
            } else {
                self.replay_run = 0;
                self.stats.rx_seq_gaps += 1;
            }
        }
        self.rx_expected = Some(seq.wrapping_add(1));
        let payload = &buf[off..off + len];
        match if_type {
            IF_STA => {
                self.stats.rx_frames += 1;
                if !self.associated {
                    self.stats.dropped_not_associated += 1;
                } else if self.link.transmit(payload).is_ok() {
                    self.stats.bridged_to_link += 1;
                    bus.payload(len);
                } else {
                    self.stats.link_errors += 1;
                }
            }
            IF_SERIAL => {
                self.stats.rx_frames += 1;
                self.serial.extend_from_slice(payload);
                if flags & FLAG_MORE_FRAGMENT == 0 {
                    let msg = std::mem::take(&mut self.serial);
                    self.handle_serial(&msg);
                } else if self.serial.len() > 8192 {
                    self.serial.clear();
                    self.stats.ctrl_malformed += 1;
                }
            }
            IF_AP | IF_HCI | IF_PRIV | IF_TEST | IF_ETH => {
                self.stats.rx_frames += 1;
                self.stats.rx_ignored_if += 1;
            }
            _ => self.stats.rx_unknown_if += 1,
        }
    }

    fn handle_serial(&mut self, msg: &[u8]) {
        let Some((ep, data)) = parse_tlv(msg) else {
            self.stats.ctrl_malformed += 1;
            return;
        };
        if ep != b"RPCRsp" {
            self.stats.ctrl_malformed += 1;
            return;
        }
        let Some(fields) = pb_parse(&data) else {
            self.stats.ctrl_malformed += 1;
            return;
        };
        let ty = pb_get_uint(&fields, 1).unwrap_or(0);
        let id = pb_get_uint(&fields, 2).unwrap_or(0);
        let uid = pb_get_uint(&fields, 3).unwrap_or(0) as i64;
        let body = fields
            .iter()
            .find_map(|(f, v)| match v {
                PbValue::Bytes(b) if *f as u64 == id => Some(b.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let Some(req) = pb_parse(&body) else {
            self.stats.ctrl_malformed += 1;
            return;
        };
        if ty != MSG_REQ || !matches!(id, REQ_GET_MAC | REQ_CONNECT_AP | REQ_DISCONNECT_AP) {
            self.stats.ctrl_malformed += 1;
            return;
        }
        self.stats.ctrl_requests += 1;
        if self.ctrl_silent {
            self.stats.ctrl_ignored += 1;
            return;
        }
        let mut resp = Vec::new();
        match id {
            REQ_GET_MAC => {
                // mode 1: station; 2: soft AP (base MAC + 1, as ESP-IDF derives it).
                match pb_get_uint(&req, 1) {
                    Some(1) => {
                        pb_bytes(&mut resp, 1, mac_string(&self.mac).as_bytes());
                        pb_int(&mut resp, 2, RESP_SUCCESS);
                    }
                    Some(2) => {
                        let mut m = self.mac;
                        m[5] = m[5].wrapping_add(1);
                        pb_bytes(&mut resp, 1, mac_string(&m).as_bytes());
                        pb_int(&mut resp, 2, RESP_SUCCESS);
                    }
                    _ => pb_int(&mut resp, 2, RESP_FAILURE),
                }
                self.queue_ctrl(MSG_RESP, id + 100, uid, &resp);
            }
            REQ_CONNECT_AP => {
                let ssid = pb_get_bytes(&req, 1).unwrap_or_default();
                let pwd = pb_get_bytes(&req, 2).unwrap_or_default();
                // Joining again leaves the current AP first.
                self.associated = false;
                let code = if !self.ap_available || ssid != self.ap_ssid.as_bytes() {
                    RESP_NO_AP_FOUND
                } else if pwd != self.ap_passphrase.as_bytes() {
                    RESP_INVALID_PASSWORD
                } else {
                    RESP_SUCCESS
                };
                if code == RESP_SUCCESS {
                    pb_int(&mut resp, 1, RESP_SUCCESS);
                    pb_bytes(&mut resp, 2, mac_string(&self.mac).as_bytes());
                    self.associated = true;
                } else {
                    pb_int(&mut resp, 1, code);
                    self.stats.connect_refused += 1;
                }
                let out = self.ctrl_out(MSG_RESP, id + 100, uid, &resp);
                let mut outs = vec![out];
                if code == RESP_SUCCESS {
                    let mut ev = Vec::new();
                    pb_bytes(&mut ev, 2, self.ap_ssid.as_bytes());
                    pb_uint(&mut ev, 3, self.ap_ssid.len() as u64);
                    pb_bytes(&mut ev, 4, mac_string(&bssid_of(self.mac)).as_bytes());
                    pb_uint(&mut ev, 5, 6);
                    pb_int(&mut ev, 6, 3);
                    pb_int(&mut ev, 7, 1);
                    outs.push(self.ctrl_out(MSG_EVENT, EVENT_STA_CONNECTED, 0, &ev));
                }
                let due = Instant::now() + self.connect_delay;
                for out in outs {
                    if self.connect_delay.is_zero() {
                        self.priority.push_back(out);
                    } else {
                        self.delayed.push((due, out));
                    }
                }
            }
            _ => {
                let code = if self.associated {
                    RESP_SUCCESS
                } else {
                    RESP_FAILURE
                };
                self.associated = false;
                pb_int(&mut resp, 1, code);
                self.queue_ctrl(MSG_RESP, id + 100, uid, &resp);
            }
        }
    }
}

/// The access point's BSSID as the model reports it (derived from the
/// station MAC, locally administered).
fn bssid_of(mac: [u8; 6]) -> [u8; 6] {
    [0x02, 0xa9, mac[2], mac[3], mac[4], 0x01]
}

fn mac_string(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// The firmware's checksum: byte sum of the frame, checksum field as zero.
pub fn checksum(frame: &[u8]) -> u16 {
    let mut s = 0u16;
    for (i, &b) in frame.iter().enumerate() {
        if i != 6 && i != 7 {
            s = s.wrapping_add(b as u16);
        }
    }
    s
}

fn parse_tlv(msg: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (mut ep, mut data) = (None, None);
    let mut p = 0;
    while p < msg.len() {
        let ty = msg[p];
        let len = u16::from_le_bytes([*msg.get(p + 1)?, *msg.get(p + 2)?]) as usize;
        let v = msg.get(p + 3..p + 3 + len)?.to_vec();
        match ty {
            1 => ep = Some(v),
            2 => data = Some(v),
            _ => return None,
        }
        p += 3 + len;
    }
    Some((ep?, data?))
}

#[derive(Debug, Clone)]
enum PbValue {
    Varint(u64),
    Bytes(Vec<u8>),
    Fixed,
}

fn pb_varint_at(b: &[u8], p: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = *b.get(*p)?;
        *p += 1;
        v |= ((byte & 0x7f) as u64) << shift.min(63);
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn pb_parse(b: &[u8]) -> Option<Vec<(u32, PbValue)>> {
    let mut out = Vec::new();
    let mut p = 0;
    while p < b.len() {
        let key = pb_varint_at(b, &mut p)?;
        let field = u32::try_from(key >> 3).ok().filter(|&f| f != 0)?;
        let v = match key & 7 {
            0 => PbValue::Varint(pb_varint_at(b, &mut p)?),
            1 => {
                b.get(p..p + 8)?;
                p += 8;
                PbValue::Fixed
            }
            2 => {
                let n = pb_varint_at(b, &mut p)? as usize;
                let v = b.get(p..p.checked_add(n)?)?.to_vec();
                p += n;
                PbValue::Bytes(v)
            }
            5 => {
                b.get(p..p + 4)?;
                p += 4;
                PbValue::Fixed
            }
            _ => return None,
        };
        out.push((field, v));
    }
    Some(out)
}

fn pb_get_uint(fields: &[(u32, PbValue)], f: u32) -> Option<u64> {
    fields.iter().rev().find_map(|(n, v)| match v {
        PbValue::Varint(x) if *n == f => Some(*x),
        _ => None,
    })
}

fn pb_get_bytes(fields: &[(u32, PbValue)], f: u32) -> Option<Vec<u8>> {
    fields.iter().rev().find_map(|(n, v)| match v {
        PbValue::Bytes(x) if *n == f => Some(x.clone()),
        _ => None,
    })
}

fn pb_put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Varint field; proto3 omits zero.
fn pb_uint(out: &mut Vec<u8>, f: u64, v: u64) {
    if v != 0 {
        pb_put_varint(out, f << 3);
        pb_put_varint(out, v);
    }
}

/// int32 field (negative values sign-extended to ten bytes); zero omitted.
fn pb_int(out: &mut Vec<u8>, f: u64, v: i64) {
    pb_uint(out, f, v as u64);
}

/// bytes/string field; empty omitted.
fn pb_bytes(out: &mut Vec<u8>, f: u64, v: &[u8]) {
    if !v.is_empty() {
        pb_message(out, f, v);
    }
}

/// Embedded message, always present (a oneof case).
fn pb_message(out: &mut Vec<u8>, f: u64, v: &[u8]) {
    pb_put_varint(out, (f << 3) | 2);
    pb_put_varint(out, v.len() as u64);
    out.extend_from_slice(v);
}

/// The chip's SPI slave port; see the module docs.
pub struct EspHostedSpi {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EspHostedSpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EspHostedSpi")
    }
}

impl SpiErrorType for EspHostedSpi {
    type Error = Infallible;
}

impl SpiDevice<u8> for EspHostedSpi {
    fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), Infallible> {
        let shared = &self.shared;
        let mut chip = shared.chip.lock();
        let now = Instant::now();
        chip.pump(now);
        let ready = chip.booting_until.is_none();
        let (miso, sta_len) = if ready {
            chip.next_out()
        } else {
            ([0xff; BUFFER_SIZE], 0)
        };
        let mut mosi = [0u8; BUFFER_SIZE];
        let mut pos = 0usize;
        let mut clock = |w: Option<u8>| -> u8 {
            let r = if pos < BUFFER_SIZE { miso[pos] } else { 0 };
            if let (Some(w), true) = (w, pos < BUFFER_SIZE) {
                mosi[pos] = w;
            }
            pos += 1;
            r
        };
        for op in operations.iter_mut() {
            match op {
                Operation::Read(r) => r.iter_mut().for_each(|b| *b = clock(None)),
                Operation::Write(w) => w.iter().for_each(|&b| {
                    clock(Some(b));
                }),
                Operation::Transfer(r, w) => {
                    for i in 0..r.len().max(w.len()) {
                        let got = clock(Some(w.get(i).copied().unwrap_or(0)));
                        if let Some(slot) = r.get_mut(i) {
                            *slot = got;
                        }
                    }
                }
                Operation::TransferInPlace(b) => b.iter_mut().for_each(|b| *b = clock(Some(*b))),
                Operation::DelayNs(_) => {}
            }
        }
        shared.bus.transaction(pos);
        chip.stats.transfers += 1;
        if !ready {
            chip.stats.transfers_not_ready += 1;
        } else {
            if sta_len > 0 && pos >= HEADER_LEN + sta_len {
                shared.bus.payload(sta_len);
            }
            let n = pos.min(BUFFER_SIZE);
            chip.receive_from_host(&mosi[..n], &shared.bus);
        }
        drop(chip);
        shared.changed.notify_all();
        Ok(())
    }
}

/// The handshake or data-ready line.
pub struct EspHostedPin {
    shared: Arc<Shared>,
    data_ready: bool,
}

impl std::fmt::Debug for EspHostedPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.data_ready {
            "EspHostedPin(data_ready)"
        } else {
            "EspHostedPin(handshake)"
        })
    }
}

impl PinErrorType for EspHostedPin {
    type Error = Infallible;
}

impl InputPin for EspHostedPin {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        let mut c = self.shared.chip.lock();
        let now = Instant::now();
        Ok(if self.data_ready {
            c.data_ready(now)
        } else {
            !c.booting(now)
        })
    }

    fn is_low(&mut self) -> Result<bool, Infallible> {
        self.is_high().map(|h| !h)
    }
}

/// [`RxSignal`] of the chip: returns when data-ready is high, when a knob
/// changed something, or after the timeout. It sleeps on the link's own
/// signal (frames arriving) in short slices.
struct EmuSignal {
    shared: Arc<Shared>,
    link_signal: Option<Arc<dyn RxSignal>>,
}

impl RxSignal for EmuSignal {
    fn wait(&self, timeout: Option<Duration>) {
        let slice = Duration::from_millis(2);
        let end = timeout.map(|t| Instant::now() + t);
        loop {
            let now = Instant::now();
            {
                let mut c = self.shared.chip.lock();
                if c.data_ready(now) {
                    return;
                }
                if self.link_signal.is_none() {
                    let t = end.map_or(slice, |e| e.saturating_duration_since(now).min(slice));
                    self.shared.changed.wait_for(&mut c, t);
                }
            }
            let left = end.map(|e| e.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return;
            }
            let t = left.map_or(slice, |l| l.min(slice));
            if let Some(s) = &self.link_signal {
                s.wait(Some(t));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_helpers_round_trip() {
        let mut m = Vec::new();
        pb_uint(&mut m, 1, 2);
        pb_int(&mut m, 3, -1);
        pb_bytes(&mut m, 201, b"xy");
        let f = pb_parse(&m).unwrap();
        assert_eq!(pb_get_uint(&f, 1), Some(2));
        assert_eq!(pb_get_uint(&f, 3), Some(u64::MAX));
        assert_eq!(pb_get_bytes(&f, 201), Some(b"xy".to_vec()));
        assert!(pb_parse(&m[..m.len() - 1]).is_none());
    }

    #[test]
    fn checksum_skips_its_field() {
        let mut f = [0u8; 14];
        f[0] = 1;
        f[6] = 0xff;
        f[7] = 0xff;
        f[13] = 2;
        assert_eq!(checksum(&f), 3);
    }
}
