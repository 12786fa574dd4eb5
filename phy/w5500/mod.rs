//! WIZnet W5500 as a raw-frame [`Link`]: socket 0 in MACRAW mode.
//!
//! The W5500 is a hardwired TCP/IP chip, but socket 0 can also move whole
//! Ethernet frames (MACRAW), which turns it into a plain MAC+PHY for the
//! full stack. [`W5500Link`] takes the whole 16 KB TX and 16 KB RX buffer
//! memory for socket 0 (the other sockets get none), enables the MAC filter
//! (own MAC, broadcast, multicast) and moves frames:
//!
//! * **receive**: each frame sits in the RX ring behind a 2-byte big-endian
//!   length that counts itself. The link reads `Sn_RX_RSR` once, then takes
//!   every frame it covers, and hands the space back (`Sn_RX_RD` + `RECV`)
//!   when the batch is done. A length that cannot be right (shorter than an
//!   Ethernet header, longer than 1514 bytes, longer than what was received)
//!   is [`LinkError::Device`], and socket 0 is reopened so the ring starts
//!   clean — a corrupted ring never panics and never wedges the link.
//! * **transmit**: the frame is written at `Sn_TX_WR`, then `SEND`; the next
//!   frame waits until the chip moved `Sn_TX_RD` up to it (`Busy` meanwhile).
//! * **link**: `PHYCFGR.LNK`. Each `link_up` also checks that socket 0 is
//!   still in MACRAW and re-initialises the chip if it was reset behind the
//!   driver's back.
//!
//! INTn is set up to fall when a frame arrives (`SIMR` bit 0, `S0_IMR` =
//! RECV). With `std`, [`W5500Link::with_rx_signal`] lets a driver thread
//! sleep on it (for instance an [`RxSignal`] that waits for INTn low).
//!
//! # Receive window
//!
//! The RX ring is all the buffering the chip has: a frame that arrives while
//! the ring cannot hold it (and its 2-byte header) is lost — Ethernet has no
//! back-pressure, and the MCU empties the ring no faster than its SPI clock
//! and its stack allow. A TCP peer may send a whole receive window in one
//! burst at line rate, so a window bigger than what the ring holds loses
//! the tail of such bursts whenever the MCU lags, and every loss that fast
//! retransmit does not repair costs TCP's minimum retransmission timeout
//! (1 s in smoltcp). Keep the sum of the receive windows that can be in
//! flight at once (`StackConfig::tcp_rx_buffer` per connection) at or
//! below [`MAX_TCP_WINDOW`]: 10 full-size frames, which always fit.
//! Measured on the emulator with overrun drops on (4 MiB into the device,
//! one connection): a 16 KiB window lost 95 frames and took 1.1 s; a
//! 14600-byte window lost none and took 0.1 s.
//!
//! [`bus`] holds the chip access shared with the offload driver
//! (`offload::w5500`), [`regs`] the register map.

pub mod bus;
pub mod regs;

use bus::{Block, Bus, BusError};
use embedded_hal::spi::SpiDevice;
use regs::*;

#[cfg(feature = "std")]
use super::RxSignal;
use super::{Link, LinkError, MAX_FRAME_LEN};

/// Shortest frame the chip can hold: an Ethernet header.
const MIN_FRAME: usize = 14;
/// Socket 0's buffers in KB: all of the chip's memory.
const MACRAW_KB: u8 = 16;

/// Bytes of socket 0's RX ring in MACRAW (all of the chip's RX memory).
pub const RX_RING_LEN: usize = MACRAW_KB as usize * 1024;

/// Largest TCP receive window (the sum over connections receiving at once)
/// that always fits the RX ring: 10 full-size frames (1514 bytes, each
/// behind its 2-byte length) take 15160 of the ring's 16384 bytes and carry
/// 10 × 1460 bytes of TCP payload. A window of W bytes sent as k segments
/// takes W + 56·k bytes of ring (54 bytes of headers and the length per
/// frame; a few more with TCP options), so 14600 bytes fit in up to 31
/// segments. See the module docs.
pub const MAX_TCP_WINDOW: usize = RX_RING_LEN / (MAX_FRAME_LEN + 2) * TCP_MSS;
const _: () = assert!(MAX_TCP_WINDOW == 14600);

/// TCP payload of a full-size Ethernet frame (1500 − 20 IP − 20 TCP).
const TCP_MSS: usize = 1460;

/// Counters of a [`W5500Link`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct W5500LinkStats {
    /// Frames transmitted.
    pub tx_frames: u64,
    /// Frames received.
    pub rx_frames: u64,
    /// Frames dropped because the caller's buffer was too short.
    pub rx_too_long: u64,
    /// Malformed length headers seen (each one reopened socket 0).
    pub rx_malformed: u64,
    /// Times the chip was found reset and re-initialised.
    pub reinits: u64,
}

/// A W5500 in MACRAW mode on an SPI device.
pub struct W5500Link<SPI> {
    bus: Bus<SPI>,
    mac: [u8; 6],
    /// Our copy of S0_TX_WR.
    tx_wr: u16,
    /// A SEND was issued and not yet seen complete.
    sending: bool,
    /// Our copy of S0_RX_RD (ahead of the chip's until the next RECV).
    rx_rd: u16,
    /// Bytes of the last RSR reading not consumed yet.
    rx_avail: usize,
    /// Frames were consumed since the last RECV.
    rx_dirty: bool,
    up: bool,
    stats: W5500LinkStats,
    #[cfg(feature = "std")]
    signal: Option<std::sync::Arc<dyn RxSignal>>,
}

impl<SPI> core::fmt::Debug for W5500Link<SPI> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("W5500Link")
            .field("mac", &self.mac)
            .field("up", &self.up)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<SPI: SpiDevice> W5500Link<SPI> {
    /// Probe the chip (VERSIONR must be 0x04, else [`LinkError::Device`]),
    /// reset it, set `mac` and open socket 0 in MACRAW.
    pub fn new(spi: SPI, mac: [u8; 6]) -> Result<Self, LinkError> {
        let mut link = W5500Link {
            bus: Bus::new(spi),
            mac,
            tx_wr: 0,
            sending: false,
            rx_rd: 0,
            rx_avail: 0,
            rx_dirty: false,
            up: false,
            stats: W5500LinkStats::default(),
            #[cfg(feature = "std")]
            signal: None,
        };
        link.init()?;
        Ok(link)
    }

    /// Hand out a signal a driver thread can sleep on until a frame may be
    /// waiting (typically: wait until INTn is low, with the timeout given).
    #[cfg(feature = "std")]
    pub fn with_rx_signal(mut self, signal: std::sync::Arc<dyn RxSignal>) -> Self {
        self.signal = Some(signal);
        self
    }

    /// Counters.
    pub fn stats(&self) -> W5500LinkStats {
        self.stats
    }

    /// The chip access, for diagnostics.
    pub fn bus(&mut self) -> &mut Bus<SPI> {
        &mut self.bus
    }

    /// Give the SPI device back.
    pub fn release(self) -> SPI {
        self.bus.release()
    }

    /// Reset the chip and bring socket 0 up in MACRAW again.
    pub fn reinit(&mut self) -> Result<(), LinkError> {
        self.stats.reinits += 1;
        self.init()
    }

    fn init(&mut self) -> Result<(), LinkError> {
        let b = &mut self.bus;
        b.check_version()?;
        b.soft_reset()?;
        b.set_mac(&self.mac)?;
        for sn in 0..8u8 {
            let kb = if sn == 0 { MACRAW_KB } else { 0 };
            b.write_u8(Block::Socket(sn), SN_RXBUF_SIZE, kb)?;
            b.write_u8(Block::Socket(sn), SN_TXBUF_SIZE, kb)?;
        }
        // INTn falls when a frame arrives (and for nothing else).
        b.write_u8(Block::Socket(0), SN_IMR, IR_RECV)?;
        b.write_u8(Block::Common, SIMR, 0x01)?;
        self.open_macraw()?;
        self.up = self.bus.link_up()?;
        Ok(())
    }

    fn open_macraw(&mut self) -> Result<(), LinkError> {
        let b = &mut self.bus;
        b.command(0, CR_CLOSE)?;
        b.write_u8(Block::Socket(0), SN_MR, MR_MACRAW | MR_MFEN)?;
        b.command(0, CR_OPEN)?;
        if b.status(0)? != SOCK_MACRAW {
            return Err(LinkError::Device);
        }
        b.clear_interrupts(0, 0x1F)?;
        self.tx_wr = b.read_u16(Block::Socket(0), SN_TX_WR)?;
        self.rx_rd = b.read_u16(Block::Socket(0), SN_RX_RD)?;
        self.sending = false;
        self.rx_avail = 0;
        self.rx_dirty = false;
        Ok(())
    }

    /// Drop whatever is in the RX ring and start it again (after a
    /// malformed header). Counts, then reports `Device`.
    fn recover_rx(&mut self) -> LinkError {
        self.stats.rx_malformed += 1;
        if self.open_macraw().is_err() {
            // The socket would not reopen: the chip needs a full init.
            let _ = self.reinit();
        }
        LinkError::Device
    }

    /// Tell the chip the frames read so far are gone.
    fn release_rx(&mut self) -> Result<(), BusError> {
        if self.rx_dirty {
            self.bus.write_u16(Block::Socket(0), SN_RX_RD, self.rx_rd)?;
            self.bus.command(0, CR_RECV)?;
            self.rx_dirty = false;
        }
        Ok(())
    }

    fn receive_inner(&mut self, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
        if self.rx_avail == 0 {
            self.release_rx()?;
            // Clear RECV before reading RSR: a frame landing after the read
            // sets it again, so INTn never misses one.
            self.bus.clear_interrupts(0, IR_RECV)?;
            self.rx_avail = self.bus.rx_size(0)? as usize;
            if self.rx_avail == 0 {
                return Ok(None);
            }
        }
        if self.rx_avail < 2 {
            return Err(self.recover_rx());
        }
        let mut hdr = [0u8; 2];
        self.bus.read_ring(0, self.rx_rd, &mut hdr)?;
        let total = u16::from_be_bytes(hdr) as usize;
        let len = total.wrapping_sub(2);
        if total < 2 + MIN_FRAME || len > MAX_FRAME_LEN || total > self.rx_avail {
            return Err(self.recover_rx());
        }
        let too_long = len > buf.len();
        if !too_long {
            self.bus
                .read_ring(0, self.rx_rd.wrapping_add(2), &mut buf[..len])?;
        }
        self.rx_rd = self.rx_rd.wrapping_add(total as u16);
        self.rx_avail -= total;
        self.rx_dirty = true;
        if self.rx_avail == 0 {
            self.release_rx()?;
        }
        if too_long {
            self.stats.rx_too_long += 1;
            return Err(LinkError::TooLong);
        }
        self.stats.rx_frames += 1;
        Ok(Some(len))
    }

    fn transmit_inner(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        if frame.len() > MAX_FRAME_LEN || frame.len() < MIN_FRAME {
            return Err(LinkError::TooLong);
        }
        if !self.up {
            return Err(LinkError::Down);
        }
        if self.sending {
            // The previous SEND is done once the chip moved TX_RD up to it.
            let rd = self.bus.read_u16_stable(Block::Socket(0), SN_TX_RD)?;
            if rd != self.tx_wr {
                return Err(LinkError::Busy);
            }
            self.sending = false;
        }
        self.bus.write_ring(0, self.tx_wr, frame)?;
        self.tx_wr = self.tx_wr.wrapping_add(frame.len() as u16);
        self.bus.write_u16(Block::Socket(0), SN_TX_WR, self.tx_wr)?;
        self.bus.command(0, CR_SEND)?;
        self.sending = true;
        self.stats.tx_frames += 1;
        Ok(())
    }
}

impl<SPI: SpiDevice> Link for W5500Link<SPI> {
    fn hardware_addr(&self) -> [u8; 6] {
        self.mac
    }

    fn link_up(&mut self) -> bool {
        let healthy = matches!(self.bus.status(0), Ok(SOCK_MACRAW));
        if !healthy && self.reinit().is_err() {
            self.up = false;
            return false;
        }
        self.up = self.bus.link_up().unwrap_or(false);
        self.up
    }

    fn transmit(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        self.transmit_inner(frame)
    }

    fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
        self.receive_inner(buf)
    }

    #[cfg(feature = "std")]
    fn rx_signal(&self) -> Option<std::sync::Arc<dyn RxSignal>> {
        self.signal.clone()
    }
}
