//! ESP32 running ESP-Hosted-FG as a Wi-Fi bridge over SPI.
//!
//! [`EspHostedLink`] drives the chip's SPI transport with an
//! `embedded-hal` 1.0 [`SpiDevice`] plus the two GPIOs the firmware raises:
//!
//! * **handshake**: high while the chip has a transaction queued, i.e. it
//!   is ready to be clocked. The driver waits (a bounded number of reads)
//!   for it before every transfer.
//! * **data ready**: high while the chip has something to send. The driver
//!   clocks a transfer when it is high even with nothing to send.
//!
//! Every transfer is full duplex and exactly [`SPI_BUFFER_SIZE`] (1600)
//! bytes each way, each buffer starting with the 12-byte payload
//! [`Header`] (see [`frame`]). The host's buffer carries a
//! frame or, when it has nothing, an idle header (`len` 0).
//!
//! * Station traffic: 802.3 frames on the STA interface; this is the
//!   [`Link`]. [`Link::link_up`] is "associated to an access point".
//! * Control: protobuf `CtrlMsg` messages ([`ctrl`]) on the SERIAL
//!   interface in a TLV envelope with endpoint `"RPCRsp"` (requests and
//!   responses) or `"RPCEvt"` (events): [`EspHostedLink::get_mac`],
//!   [`EspHostedLink::connect_ap`], [`EspHostedLink::disconnect_ap`], and
//!   the station-disconnected event, which takes the link down.
//! * After it boots, the firmware sends an init event on the PRIV interface
//!   (capabilities, chip id); the driver treats a later one as a chip
//!   reset: the link goes down until the station joins again.
//!
//! Received buffers with a bad checksum, a length running past the buffer
//! or an unknown interface type are counted ([`EspHostedStats`]) and
//! dropped; nothing the chip sends can make the driver panic.
//!
//! The driver needs no allocator: two 1600-byte transfer buffers, a queue
//! of [`RX_QUEUE`] received frames (frames that arrive while the driver
//! transmits) and a small reassembly buffer for fragmented control
//! messages, about 9.8 KiB in all.
//!
//! # Using it
//!
//! On bare metal, join the network first and then hand the link to a
//! [`Stack`](crate::stack::Stack):
//!
//! ```ignore
//! let mut link = EspHostedLink::new(spi, handshake, data_ready).with_clock(now);
//! link.connect_ap("my-ssid", "my-passphrase")?;
//! let stack = Stack::new(link, platform, &config, resources, &mut rng)?;
//! ```
//!
//! On a host (feature `std`), [`EspHostedDevice`] owns a
//! [`HostStack`](crate::stack::host::HostStack) over the link and keeps the
//! control channel reachable: its `Netlinker::net_connect` joins the access
//! point (typed `AuthFailed` / `ConnectFailed` / `Timeout`) and then waits
//! for the stack's address.
//!
//! # What is and is not certain about the real protocol
//!
//! Header layout, checksum, the 1600-byte transfer, the handshake /
//! data-ready lines, the TLV envelope and the `CtrlMsg` field numbers follow
//! the esp-hosted sources. ESP-Hosted has shipped two numberings, and this
//! driver uses the current one throughout: interface types with 0 = invalid
//! and STA = 1 (legacy Linux-FG builds start STA at 0), endpoint names
//! `"RPCRsp"` / `"RPCEvt"` (legacy: `"ctrlResp"` / `"ctrlEvnt"`, also
//! accepted on receive), PRIV event packet type 0x33 and init event 0x22
//! with TLV tags from 0x11 (legacy: 0x00 / 0x00 / tags from 0). The
//! firmware fills `seq_num` but does not check it; this driver counts gaps
//! in the chip's numbers and drops replays (a number up to 64 behind the
//! expected one), following the chip's count after three replays in a row
//! (a restarted count). `ConnectAP` failure codes vary between firmware versions: 3
//! (invalid password) maps to [`Error::AuthFailed`], anything else
//! non-zero to [`Error::ConnectFailed`]; firmware that collapses every
//! failure into -1 thus reports a wrong passphrase as `ConnectFailed`.

pub mod ctrl;
#[cfg(all(feature = "std", feature = "full-stack"))]
mod device;
pub mod frame;

#[cfg(all(feature = "std", feature = "full-stack"))]
pub use device::EspHostedDevice;

use core::time::Duration;

use embedded_hal::digital::InputPin;
use embedded_hal::spi::SpiDevice;

use self::ctrl::{msg_id, status, Event, Message, Response};
use self::frame::{if_type, FrameError, Header, SeqCheck, HEADER_LEN};
use super::{Link, LinkError, MAX_FRAME_LEN};
use crate::error::Error;
use crate::time::Instant;

pub use self::frame::SPI_BUFFER_SIZE;

/// Received frames the driver can hold (frames arriving while it transmits).
pub const RX_QUEUE: usize = 4;
/// Largest reassembled control message.
const SERIAL_BUF: usize = 512;
/// Consecutive sequence numbers behind the expected one after which the
/// driver follows the chip's count instead of dropping them as replays.
const REPLAY_RESYNC: u8 = 3;
/// Control events kept for [`EspHostedLink::take_event`].
const EVENT_QUEUE: usize = 8;
/// Transfers one `receive` call may clock while the chip has data but no
/// station frame comes out (control messages, events).
const MAX_RX_TRANSFERS: usize = 8;
/// Default number of handshake reads before a transfer gives up.
const DEFAULT_HANDSHAKE_POLLS: u32 = 2000;
/// Default timeout of blocking control calls.
const DEFAULT_CTRL_TIMEOUT: Duration = Duration::from_secs(10);
/// Without a clock, blocking control calls give up after this many polls.
const DEFAULT_POLL_BUDGET: u32 = 2_000_000;

/// Counters kept by the driver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EspHostedStats {
    /// SPI transfers clocked.
    pub transfers: u64,
    /// Station frames sent to the chip.
    pub tx_frames: u64,
    /// Station frames received from the chip.
    pub rx_frames: u64,
    /// Received buffers dropped: checksum mismatch.
    pub bad_checksum: u64,
    /// Received buffers dropped: offset/length past the buffer, or a
    /// station frame longer than an Ethernet frame.
    pub bad_length: u64,
    /// Received buffers dropped: unknown interface type.
    pub unknown_if: u64,
    /// Received buffers for interfaces this driver does not serve (AP, HCI, test).
    pub ignored: u64,
    /// Frames the chip numbered ahead of the expected sequence number
    /// (frames lost before they reached the host).
    pub seq_gaps: u64,
    /// Received buffers dropped: sequence number behind the expected one.
    pub seq_replays: u64,
    /// Station frames dropped because the receive queue was full.
    pub rx_overflow: u64,
    /// Control messages that could not be parsed (or did not fit).
    pub ctrl_malformed: u64,
    /// Control events received.
    pub events: u64,
    /// Init events received (the first boot counts too).
    pub inits: u64,
    /// Transfers not clocked because the handshake line stayed low.
    pub not_ready: u64,
}

/// Something the chip reported, kept for [`EspHostedLink::take_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EspHostedEvent {
    /// The firmware (re)booted: the init event.
    Init(frame::InitInfo),
    /// A control event.
    Ctrl(Event),
}

/// A control request, for the non-blocking API
/// ([`EspHostedLink::ctrl_begin`] / [`EspHostedLink::ctrl_poll`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CtrlRequest<'a> {
    /// `GetMACAddress` of the station interface.
    GetMac,
    /// `ConnectAP` with this SSID and passphrase.
    ConnectAp {
        /// Network name (at most 32 bytes).
        ssid: &'a str,
        /// Passphrase (at most 64 bytes; empty for an open network).
        passphrase: &'a str,
        /// Set `is_wpa3_supported` (lets the station use WPA3-SAE / PMF).
        wpa3: bool,
    },
    /// `DisconnectAP`.
    DisconnectAp,
}

impl CtrlRequest<'_> {
    fn id(&self) -> u32 {
        match self {
            CtrlRequest::GetMac => msg_id::REQ_GET_MAC_ADDRESS,
            CtrlRequest::ConnectAp { .. } => msg_id::REQ_CONNECT_AP,
            CtrlRequest::DisconnectAp => msg_id::REQ_DISCONNECT_AP,
        }
    }
}

/// The successful outcome of a control request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CtrlReply {
    /// The station MAC (`GetMac`).
    Mac([u8; 6]),
    /// Done (`ConnectAp`: associated; `DisconnectAp`: left).
    Done,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    resp_id: u32,
    uid: i32,
    inits: u64,
}

/// [`Link`] over an ESP32 running ESP-Hosted-FG on SPI; see the module docs.
pub struct EspHostedLink<SPI, HS, DR> {
    spi: SPI,
    handshake: HS,
    data_ready: DR,
    tx: [u8; SPI_BUFFER_SIZE],
    rx: [u8; SPI_BUFFER_SIZE],
    rxq: heapless::Deque<heapless::Vec<u8, MAX_FRAME_LEN>, RX_QUEUE>,
    serial: heapless::Vec<u8, SERIAL_BUF>,
    serial_dropping: bool,
    events: heapless::Deque<EspHostedEvent, EVENT_QUEUE>,
    reply: Option<Response>,
    pending: Option<Pending>,
    tx_seq: u16,
    rx_seq: Option<u16>,
    replay_run: u8,
    uid: i32,
    mac: [u8; 6],
    init: Option<frame::InitInfo>,
    verify_checksum: bool,
    associated: bool,
    /// Latched when the association is lost, cleared by `link_up`.
    link_lost: bool,
    stats: EspHostedStats,
    handshake_polls: u32,
    clock: Option<fn() -> Instant>,
    ctrl_timeout: Duration,
    poll_budget: u32,
    #[cfg(feature = "std")]
    queued: std::sync::Arc<core::sync::atomic::AtomicUsize>,
    #[cfg(feature = "std")]
    chip_signal: Option<std::sync::Arc<dyn super::RxSignal>>,
}

impl<SPI, HS, DR> EspHostedLink<SPI, HS, DR>
where
    SPI: SpiDevice,
    HS: InputPin,
    DR: InputPin,
{
    /// A driver on `spi` with the chip's handshake and data-ready lines.
    ///
    /// Nothing is clocked yet. Under `std` blocking control calls time out
    /// with the host clock; on bare metal give a clock with
    /// [`Self::with_clock`] (without one they give up after a fixed number
    /// of polls).
    pub fn new(spi: SPI, handshake: HS, data_ready: DR) -> Self {
        EspHostedLink {
            spi,
            handshake,
            data_ready,
            tx: [0; SPI_BUFFER_SIZE],
            rx: [0; SPI_BUFFER_SIZE],
            rxq: heapless::Deque::new(),
            serial: heapless::Vec::new(),
            serial_dropping: false,
            events: heapless::Deque::new(),
            reply: None,
            pending: None,
            tx_seq: 0,
            rx_seq: None,
            replay_run: 0,
            uid: 0,
            mac: [0; 6],
            init: None,
            verify_checksum: true,
            associated: false,
            link_lost: false,
            stats: EspHostedStats::default(),
            handshake_polls: DEFAULT_HANDSHAKE_POLLS,
            #[cfg(feature = "std")]
            clock: Some(std_clock),
            #[cfg(not(feature = "std"))]
            clock: None,
            ctrl_timeout: DEFAULT_CTRL_TIMEOUT,
            poll_budget: DEFAULT_POLL_BUDGET,
            #[cfg(feature = "std")]
            queued: Default::default(),
            #[cfg(feature = "std")]
            chip_signal: None,
        }
    }

    /// Use `clock` to time out blocking control calls.
    pub fn with_clock(mut self, clock: fn() -> Instant) -> Self {
        self.clock = Some(clock);
        self
    }

    /// How long blocking control calls wait for the chip (default 10 s).
    pub fn set_ctrl_timeout(&mut self, timeout: Duration) {
        self.ctrl_timeout = timeout;
    }

    /// How many times a transfer reads the handshake line before giving up
    /// (default 2000).
    pub fn set_handshake_polls(&mut self, polls: u32) {
        self.handshake_polls = polls.max(1);
    }

    /// Let a driver thread sleep on `signal` (it should return when the
    /// data-ready line rises) instead of polling; see [`Link::rx_signal`].
    #[cfg(feature = "std")]
    pub fn with_rx_signal(mut self, signal: std::sync::Arc<dyn super::RxSignal>) -> Self {
        self.chip_signal = Some(signal);
        self
    }

    /// Counters.
    pub fn stats(&self) -> EspHostedStats {
        self.stats
    }

    /// What the last init event said, once the chip has booted.
    pub fn init_info(&self) -> Option<frame::InitInfo> {
        self.init
    }

    /// Whether the chip is associated to an access point.
    pub fn associated(&self) -> bool {
        self.associated
    }

    /// The station MAC, once [`Self::get_mac`] fetched it (zero before).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The next event the chip reported, oldest first (the oldest are
    /// dropped past eight).
    pub fn take_event(&mut self) -> Option<EspHostedEvent> {
        self.events.pop_front()
    }

    /// The SPI device and pins back.
    pub fn release(self) -> (SPI, HS, DR) {
        (self.spi, self.handshake, self.data_ready)
    }

    fn now(&self) -> Option<Instant> {
        self.clock.map(|c| c())
    }

    fn pin_high(pin: &mut impl InputPin) -> Result<bool, LinkError> {
        pin.is_high().map_err(|_| LinkError::Device)
    }

    /// Whether the data-ready line is high (the chip has something to send).
    pub fn data_ready(&mut self) -> Result<bool, LinkError> {
        Self::pin_high(&mut self.data_ready)
    }

    /// Clock one transfer: whatever is in the tx buffer goes out, the
    /// chip's buffer comes in and is dispatched. `Ok(false)` if the
    /// handshake line stayed low (nothing was clocked). The tx buffer is
    /// idle afterwards either way.
    fn transfer(&mut self) -> Result<bool, LinkError> {
        let mut ready = false;
        for _ in 0..self.handshake_polls {
            if Self::pin_high(&mut self.handshake)? {
                ready = true;
                break;
            }
            core::hint::spin_loop();
        }
        if !ready {
            self.tx[..HEADER_LEN].fill(0);
            self.stats.not_ready += 1;
            return Ok(false);
        }
        let r = self.spi.transfer(&mut self.rx, &self.tx);
        self.tx[..HEADER_LEN].fill(0);
        r.map_err(|_| LinkError::Device)?;
        self.stats.transfers += 1;
        self.dispatch();
        Ok(true)
    }

    /// Clock one transfer if the chip has data (data-ready high). Returns
    /// whether a transfer happened.
    pub fn service(&mut self) -> Result<bool, LinkError> {
        if self.data_ready()? {
            self.transfer()
        } else {
            Ok(false)
        }
    }

    fn set_associated(&mut self, up: bool) {
        if self.associated && !up {
            self.link_lost = true;
        }
        self.associated = up;
    }

    fn push_event(&mut self, e: EspHostedEvent) {
        if self.events.is_full() {
            self.events.pop_front();
        }
        let _ = self.events.push_back(e);
    }

    #[cfg(feature = "std")]
    fn sync_queued(&self) {
        self.queued
            .store(self.rxq.len(), core::sync::atomic::Ordering::Release);
    }
    #[cfg(not(feature = "std"))]
    fn sync_queued(&self) {}

    /// Validate and route the buffer just received.
    fn dispatch(&mut self) {
        // PRIV init events may come without a checksum (firmware built
        // without it): accept a zero checksum there.
        let verify = match Header::parse(&self.rx) {
            Some(h) if h.if_type == if_type::PRIV && h.checksum == 0 => false,
            _ => self.verify_checksum,
        };
        // Work on the payload's range so the buffer is borrowed only
        // field by field below (no copy of the 1600 bytes).
        let (h, range) = match frame::open(&self.rx, verify) {
            Ok(None) => return,
            Ok(Some((h, p))) => (h, h.offset as usize..h.offset as usize + p.len()),
            Err(FrameError::BadChecksum) => {
                self.stats.bad_checksum += 1;
                return;
            }
            Err(FrameError::BadLength) => {
                self.stats.bad_length += 1;
                return;
            }
        };
        if h.if_type == if_type::PRIV && h.pkt_type == frame::PRIV_PACKET_TYPE_EVENT {
            if let Some(info) = frame::parse_init_event(&self.rx[range.clone()]) {
                self.on_init(info, h.seq_num, h.checksum != 0);
                return;
            }
        }
        if h.if_type == if_type::INVALID || h.if_type >= if_type::MAX {
            self.stats.unknown_if += 1;
            return;
        }
        match frame::check_seq(self.rx_seq, h.seq_num) {
            SeqCheck::InOrder => self.replay_run = 0,
            SeqCheck::Gap(_) => {
                self.replay_run = 0;
                self.stats.seq_gaps += 1;
            }
            // A lone old number is a replay; a run of them means the chip
            // restarted its count (say, a reboot whose init event was
            // lost): follow it.
            SeqCheck::Replay if self.replay_run < REPLAY_RESYNC => {
                self.replay_run += 1;
                self.stats.seq_replays += 1;
                return;
            }
            SeqCheck::Replay => {
                self.replay_run = 0;
                self.stats.seq_gaps += 1;
            }
        }
        self.rx_seq = Some(h.seq_num.wrapping_add(1));
        match h.if_type {
            if_type::STA => {
                if range.len() > MAX_FRAME_LEN || range.len() < 14 {
                    self.stats.bad_length += 1;
                    return;
                }
                let Ok(f) = heapless::Vec::from_slice(&self.rx[range]) else {
                    return;
                };
                if self.rxq.push_back(f).is_err() {
                    self.stats.rx_overflow += 1;
                    return;
                }
                self.sync_queued();
            }
            if_type::SERIAL => self.on_serial(h.flags, range),
            _ => self.stats.ignored += 1,
        }
    }

    fn on_init(&mut self, info: frame::InitInfo, seq: u16, checksummed: bool) {
        self.stats.inits += 1;
        self.init = Some(info);
        // Stop verifying only for firmware that says it does not checksum
        // and indeed sent this event without one: a damaged event must not
        // switch verification off.
        self.verify_checksum = info.capabilities & frame::CAP_CHECKSUM != 0 || checksummed;
        self.rx_seq = Some(seq.wrapping_add(1));
        // A (re)booted chip is not associated and has forgotten any
        // request in flight.
        self.set_associated(false);
        self.reply = None;
        self.serial.clear();
        self.serial_dropping = false;
        self.push_event(EspHostedEvent::Init(info));
    }

    fn on_serial(&mut self, flags: u8, range: core::ops::Range<usize>) {
        if !self.serial_dropping && self.serial.extend_from_slice(&self.rx[range]).is_err() {
            self.serial_dropping = true;
        }
        if flags & frame::FLAG_MORE_FRAGMENT != 0 {
            return;
        }
        let dropping = core::mem::replace(&mut self.serial_dropping, false);
        let msg = core::mem::take(&mut self.serial);
        if dropping {
            self.stats.ctrl_malformed += 1;
            return;
        }
        let Some((ep, data)) = frame::tlv_parse(&msg) else {
            self.stats.ctrl_malformed += 1;
            return;
        };
        let is_resp = ep == frame::EP_RESPONSE || ep == frame::EP_RESPONSE_LEGACY;
        let is_event = ep == frame::EP_EVENT || ep == frame::EP_EVENT_LEGACY;
        match ctrl::decode(data) {
            Ok(Message::Response(r)) if is_resp => self.reply = Some(r),
            Ok(Message::Event(e)) if is_event => {
                self.stats.events += 1;
                match e {
                    Event::StationDisconnected { .. } => self.set_associated(false),
                    Event::StationConnected => {}
                    _ => {}
                }
                self.push_event(EspHostedEvent::Ctrl(e));
            }
            _ => self.stats.ctrl_malformed += 1,
        }
    }

    /// Send a control request (one transfer) without waiting for the
    /// answer; poll with [`Self::ctrl_poll`]. A request still in flight is
    /// abandoned. `Err(Busy)` if the chip was not ready to be clocked
    /// (try again), `Err(NetworkDown)` before its init event,
    /// `Err(InvalidArgument)` for an SSID over 32 or a passphrase over 64 bytes.
    pub fn ctrl_begin(&mut self, req: CtrlRequest<'_>) -> Result<(), Error> {
        if self.init.is_none() {
            return Err(Error::NetworkDown);
        }
        let mut pb = [0u8; 256];
        self.uid = self.uid.wrapping_add(1).max(1);
        let uid = self.uid;
        let n = match req {
            CtrlRequest::GetMac => ctrl::encode_get_mac(&mut pb, uid, ctrl::WIFI_MODE_STA),
            CtrlRequest::ConnectAp {
                ssid,
                passphrase,
                wpa3,
            } => {
                if ssid.is_empty() || ssid.len() > 32 || passphrase.len() > 64 {
                    return Err(Error::InvalidArgument);
                }
                ctrl::encode_connect_ap(&mut pb, uid, ssid, passphrase, "", wpa3, 0)
            }
            CtrlRequest::DisconnectAp => ctrl::encode_disconnect_ap(&mut pb, uid),
        }
        .ok_or(Error::InvalidArgument)?;
        let mut tlv = [0u8; 300];
        let t = frame::tlv_compose(&mut tlv, frame::EP_RESPONSE, &pb[..n])
            .ok_or(Error::InvalidArgument)?;
        self.load_tx(if_type::SERIAL, &tlv[..t]);
        self.reply = None;
        self.pending = Some(Pending {
            resp_id: req.id() + msg_id::RESP_OFFSET,
            uid,
            inits: self.stats.inits,
        });
        match self.transfer() {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.pending = None;
                Err(Error::Busy)
            }
            Err(e) => {
                self.pending = None;
                Err(e.into())
            }
        }
    }

    /// Check for the answer to the request sent with [`Self::ctrl_begin`],
    /// clocking one transfer if the chip has data. `Ok(None)`: not yet.
    ///
    /// Errors: `AuthFailed` (wrong passphrase), `ConnectFailed` (no such
    /// network, other refusals, or the chip rebooted meanwhile), `Device`
    /// (the chip refused another request), `InvalidArgument` (nothing in
    /// flight).
    pub fn ctrl_poll(&mut self) -> Result<Option<CtrlReply>, Error> {
        let p = self.pending.ok_or(Error::InvalidArgument)?;
        for _ in 0..2 {
            if self.stats.inits != p.inits {
                self.pending = None;
                return Err(if p.resp_id == msg_id::RESP_CONNECT_AP {
                    Error::ConnectFailed
                } else {
                    Error::Device
                });
            }
            if let Some(r) = self.reply {
                if r.msg_id == p.resp_id && (r.uid == 0 || r.uid == p.uid) {
                    self.reply = None;
                    self.pending = None;
                    return self.finish(r).map(Some);
                }
                self.reply = None; // stale answer to an abandoned request
            }
            if !self.service()? {
                break;
            }
        }
        Ok(None)
    }

    /// Abandon the request in flight (its answer, if it comes, is ignored).
    pub fn ctrl_cancel(&mut self) {
        self.pending = None;
    }

    fn finish(&mut self, r: Response) -> Result<CtrlReply, Error> {
        match r.msg_id {
            msg_id::RESP_GET_MAC_ADDRESS => match (r.resp, r.mac) {
                (status::SUCCESS, Some(mac)) => {
                    self.mac = mac;
                    Ok(CtrlReply::Mac(mac))
                }
                _ => Err(Error::Device),
            },
            msg_id::RESP_CONNECT_AP => match r.resp {
                status::SUCCESS => {
                    self.set_associated(true);
                    Ok(CtrlReply::Done)
                }
                status::INVALID_PASSWORD => {
                    self.set_associated(false);
                    Err(Error::AuthFailed)
                }
                _ => {
                    self.set_associated(false);
                    Err(Error::ConnectFailed)
                }
            },
            _ => {
                // DisconnectAP: whatever the answer, the station is not
                // associated afterwards ("not connected" is a failure code).
                self.set_associated(false);
                if r.resp == status::SUCCESS {
                    Ok(CtrlReply::Done)
                } else {
                    Err(Error::NotConnected)
                }
            }
        }
    }

    /// Wait (bounded by the control timeout) until the chip has sent its
    /// init event.
    pub fn wait_ready(&mut self) -> Result<(), Error> {
        let mut w = Waiter::new(self.now(), self.ctrl_timeout, self.poll_budget);
        while self.init.is_none() {
            if !self.service()? && !w.step(self.now()) {
                return Err(Error::Timeout);
            }
            if w.expired(self.now()) {
                return Err(Error::Timeout);
            }
            self.idle_wait();
        }
        Ok(())
    }

    fn idle_wait(&self) {
        #[cfg(feature = "std")]
        match &self.chip_signal {
            Some(s) => s.wait(Some(Duration::from_micros(500))),
            None => std::thread::yield_now(),
        }
        #[cfg(not(feature = "std"))]
        core::hint::spin_loop();
    }

    /// Send `req` and wait for its answer (bounded by the control timeout).
    pub fn ctrl_call(&mut self, req: CtrlRequest<'_>) -> Result<CtrlReply, Error> {
        self.wait_ready()?;
        let mut w = Waiter::new(self.now(), self.ctrl_timeout, self.poll_budget);
        loop {
            match self.ctrl_begin(req) {
                Ok(()) => break,
                Err(Error::Busy) if !w.expired(self.now()) && w.step(self.now()) => {}
                Err(Error::Busy) => return Err(Error::Timeout),
                Err(e) => return Err(e),
            }
        }
        loop {
            if let Some(r) = self.ctrl_poll()? {
                return Ok(r);
            }
            if w.expired(self.now()) || !w.step(self.now()) {
                self.ctrl_cancel();
                return Err(Error::Timeout);
            }
            self.idle_wait();
        }
    }

    /// The station MAC (`GetMACAddress`); also what [`Link::hardware_addr`]
    /// returns from then on.
    pub fn get_mac(&mut self) -> Result<[u8; 6], Error> {
        match self.ctrl_call(CtrlRequest::GetMac)? {
            CtrlReply::Mac(m) => Ok(m),
            CtrlReply::Done => Err(Error::Device),
        }
    }

    /// Join `ssid` with `passphrase` (`ConnectAP`). Errors: `AuthFailed`
    /// (wrong passphrase), `ConnectFailed` (network not found or refused),
    /// `Timeout` (no answer within the control timeout), `InvalidArgument`.
    pub fn connect_ap(&mut self, ssid: &str, passphrase: &str) -> Result<(), Error> {
        self.ctrl_call(CtrlRequest::ConnectAp {
            ssid,
            passphrase,
            wpa3: false,
        })
        .map(|_| ())
    }

    /// Leave the access point (`DisconnectAP`). Not being associated is
    /// not an error.
    pub fn disconnect_ap(&mut self) -> Result<(), Error> {
        match self.ctrl_call(CtrlRequest::DisconnectAp) {
            Ok(_) | Err(Error::NotConnected) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn load_tx(&mut self, ty: u8, payload: &[u8]) {
        let h = Header {
            if_type: ty,
            seq_num: self.tx_seq,
            ..Default::default()
        };
        self.tx_seq = self.tx_seq.wrapping_add(1);
        // Callers bound the payload below MAX_PAYLOAD.
        let _ = frame::build(&mut self.tx, h, payload);
    }
}

/// Bounds a blocking wait by time (with a clock) or by a number of polls.
struct Waiter {
    until: Option<Instant>,
    budget: u32,
}

impl Waiter {
    fn new(now: Option<Instant>, timeout: Duration, budget: u32) -> Self {
        Waiter {
            until: now.map(|n| n + timeout),
            budget,
        }
    }
    fn expired(&self, now: Option<Instant>) -> bool {
        matches!((self.until, now), (Some(u), Some(n)) if n >= u)
    }
    /// Count one poll; false when the poll budget (used without a clock) is spent.
    fn step(&mut self, now: Option<Instant>) -> bool {
        if now.is_some() {
            return true;
        }
        self.budget = self.budget.saturating_sub(1);
        self.budget > 0
    }
}

#[cfg(feature = "std")]
fn std_clock() -> Instant {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let us = START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_micros();
    Instant::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
}

impl<SPI, HS, DR> Link for EspHostedLink<SPI, HS, DR>
where
    SPI: SpiDevice,
    HS: InputPin,
    DR: InputPin,
{
    fn hardware_addr(&self) -> [u8; 6] {
        self.mac
    }

    /// Associated to an access point. Like an 802.3 PHY's link-status
    /// bit, a loss is latched: the first call after the station lost its
    /// AP returns `false` even if it has joined again since, so the stack
    /// sees every drop (and can renew its lease).
    fn link_up(&mut self) -> bool {
        if core::mem::take(&mut self.link_lost) {
            return false;
        }
        self.init.is_some() && self.associated
    }

    /// Sends `frame` on the STA interface in one transfer. `Down` while
    /// not associated, `Busy` if the chip was not ready to be clocked.
    fn transmit(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        if frame.len() > MAX_FRAME_LEN {
            return Err(LinkError::TooLong);
        }
        if !self.link_up() {
            return Err(LinkError::Down);
        }
        self.load_tx(if_type::STA, frame);
        if self.transfer()? {
            self.stats.tx_frames += 1;
            Ok(())
        } else {
            Err(LinkError::Busy)
        }
    }

    fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
        for _ in 0..MAX_RX_TRANSFERS {
            if let Some(f) = self.rxq.pop_front() {
                self.sync_queued();
                if f.len() > buf.len() {
                    return Err(LinkError::TooLong);
                }
                buf[..f.len()].copy_from_slice(&f);
                self.stats.rx_frames += 1;
                return Ok(Some(f.len()));
            }
            if !self.service()? {
                return Ok(None);
            }
        }
        Ok(None)
    }

    #[cfg(feature = "std")]
    fn rx_signal(&self) -> Option<std::sync::Arc<dyn super::RxSignal>> {
        Some(std::sync::Arc::new(LinkSignal {
            queued: self.queued.clone(),
            chip: self.chip_signal.clone(),
        }))
    }
}

/// The link's [`RxSignal`](super::RxSignal): returns at once while frames
/// wait in the driver's queue, otherwise sleeps on the chip's signal (in
/// short slices, so frames queued meanwhile by a control call are seen).
#[cfg(feature = "std")]
struct LinkSignal {
    queued: std::sync::Arc<core::sync::atomic::AtomicUsize>,
    chip: Option<std::sync::Arc<dyn super::RxSignal>>,
}

#[cfg(feature = "std")]
impl super::RxSignal for LinkSignal {
    fn wait(&self, timeout: Option<Duration>) {
        if self.queued.load(core::sync::atomic::Ordering::Acquire) > 0 {
            return;
        }
        let slice = Duration::from_millis(2);
        let t = timeout.map_or(slice, |t| t.min(slice));
        match &self.chip {
            Some(s) => s.wait(Some(t)),
            None => std::thread::sleep(t.min(Duration::from_millis(1))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::convert::Infallible;

    /// An SPI "chip" that answers each transfer with the next scripted
    /// buffer (idle when the script is done) and records what the host sent.
    struct Script {
        replies: heapless::Deque<[u8; SPI_BUFFER_SIZE], 8>,
        sent: heapless::Vec<[u8; 16], 8>,
    }

    impl embedded_hal::spi::ErrorType for Script {
        type Error = Infallible;
    }

    impl SpiDevice for Script {
        fn transaction(
            &mut self,
            ops: &mut [embedded_hal::spi::Operation<'_, u8>],
        ) -> Result<(), Infallible> {
            let reply = self.replies.pop_front().unwrap_or([0; SPI_BUFFER_SIZE]);
            for op in ops.iter_mut() {
                if let embedded_hal::spi::Operation::Transfer(r, w) = op {
                    r.copy_from_slice(&reply[..r.len()]);
                    let mut head = [0u8; 16];
                    head.copy_from_slice(&w[..16]);
                    let _ = self.sent.push(head);
                }
            }
            Ok(())
        }
    }

    struct Pin(bool);
    impl embedded_hal::digital::ErrorType for Pin {
        type Error = Infallible;
    }
    impl InputPin for Pin {
        fn is_high(&mut self) -> Result<bool, Infallible> {
            Ok(self.0)
        }
        fn is_low(&mut self) -> Result<bool, Infallible> {
            Ok(!self.0)
        }
    }

    fn buf(ty: u8, seq: u16, pkt: u8, payload: &[u8]) -> [u8; SPI_BUFFER_SIZE] {
        let mut b = [0u8; SPI_BUFFER_SIZE];
        let h = Header {
            if_type: ty,
            seq_num: seq,
            pkt_type: pkt,
            ..Default::default()
        };
        frame::build(&mut b, h, payload).unwrap();
        b
    }

    fn sta(seq: u16, tag: u8) -> [u8; SPI_BUFFER_SIZE] {
        let mut f = [0u8; 60];
        f[12] = 0x08;
        f[14] = tag;
        buf(if_type::STA, seq, 0, &f)
    }

    #[test]
    fn sequence_replays_dropped_then_followed() {
        let init = [0x22, 3, 0x11, 1, 0xa0];
        let mut s = Script {
            replies: heapless::Deque::new(),
            sent: heapless::Vec::new(),
        };
        for b in [
            buf(if_type::PRIV, 40, frame::PRIV_PACKET_TYPE_EVENT, &init),
            sta(41, 1),
            sta(41, 2), // replay: dropped
            sta(3, 3),  // restarted count: dropped twice more ...
            sta(4, 4),
            sta(5, 5), // ... then followed
            sta(6, 6),
        ] {
            s.replies.push_back(b).ok().unwrap();
        }
        let mut l = EspHostedLink::new(s, Pin(true), Pin(true));
        let mut got = heapless::Vec::<u8, 8>::new();
        let mut frame = [0u8; MAX_FRAME_LEN];
        for _ in 0..4 {
            while let Ok(Some(n)) = l.receive(&mut frame) {
                assert_eq!(n, 60);
                got.push(frame[14]).unwrap();
            }
        }
        assert_eq!(got.as_slice(), &[1, 5, 6]);
        let st = l.stats();
        assert_eq!((st.inits, st.seq_replays, st.seq_gaps), (1, 3, 1));
        // The host's idle buffers carry len 0.
        let (spi, _, _) = l.release();
        assert!(spi.sent.iter().all(|h| h[2] == 0 && h[3] == 0));
    }

    #[test]
    fn transmit_frames_and_numbers_them() {
        let init = [0x22, 3, 0x11, 1, 0xa0];
        let mut s = Script {
            replies: heapless::Deque::new(),
            sent: heapless::Vec::new(),
        };
        s.replies
            .push_back(buf(if_type::PRIV, 0, frame::PRIV_PACKET_TYPE_EVENT, &init))
            .ok()
            .unwrap();
        let mut l = EspHostedLink::new(s, Pin(true), Pin(false));
        l.set_ctrl_timeout(Duration::from_millis(50));
        assert_eq!(l.transmit(&[0u8; 60]), Err(LinkError::Down));
        assert_eq!(
            l.transmit(&[0u8; MAX_FRAME_LEN + 1]),
            Err(LinkError::TooLong)
        );
        // Data-ready low: receive clocks nothing.
        let mut frame = [0u8; MAX_FRAME_LEN];
        assert_eq!(l.receive(&mut frame), Ok(None));
        assert_eq!(l.stats().transfers, 0);
        // A handshake that never rises: the request is not clocked.
        let (spi, _, dr) = l.release();
        let mut l = EspHostedLink::new(spi, Pin(false), dr);
        l.set_handshake_polls(10);
        l.init = Some(frame::InitInfo::default());
        assert_eq!(l.ctrl_begin(CtrlRequest::GetMac), Err(Error::Busy));
        assert_eq!(l.stats().not_ready, 1);
    }
}
