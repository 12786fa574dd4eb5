//! Raw-frame links: the bottom of the full stack.
//!
//! A [`Link`] moves whole Ethernet frames and nothing else — it is the
//! smallest thing a chip driver has to offer (embassy-net's driver trait has
//! the same shape). Everything else composes around it:
//!
//! * [`LinkDevice`] adapts any link to smoltcp's `phy::Device` (feature
//!   `full-stack`), so the stack never sees the chip.
//! * Middleware wraps any link and is itself a link: [`pcap::PcapLink`]
//!   records every frame, [`fault::FaultLink`] loses, reorders, duplicates
//!   and corrupts frames for robustness tests.
//! * Links: [`memory::MemorySwitch`] joins several stacks in one process
//!   (the built-in simulated network); [`tap::TapLink`] is a Linux TAP
//!   device (feature `tap`). Co-processor frame drivers (W5500 MACRAW,
//!   ESP-Hosted) live here too.
//!
//! Links are driven with `&mut self` by whoever owns them (the stack, under
//! its lock). Receiving never blocks; under `std` a link can hand out an
//! [`RxSignal`] that a driver thread sleeps on *without* holding the lock.

#[cfg(feature = "full-stack")]
mod device;
#[cfg(feature = "esp-hosted")]
pub mod esp_hosted;
pub mod fault;
#[cfg(feature = "std")]
pub mod memory;
#[cfg(feature = "std")]
pub mod passt;
#[cfg(feature = "std")]
pub mod pcap;
#[cfg(feature = "tap")]
pub mod tap;
#[cfg(feature = "w5500")]
pub mod w5500;

#[cfg(feature = "full-stack")]
pub use device::{LinkDevice, LinkStats, DEFAULT_RAW_QUEUE_BYTES};

/// Largest Ethernet frame a link must carry: 14-byte header + 1500-byte payload (no FCS).
pub const MAX_FRAME_LEN: usize = 1514;

/// Why a link refused or failed an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LinkError {
    /// No room to transmit right now; the frame was not sent.
    Busy,
    /// The frame is longer than the link carries, or the receive buffer is
    /// shorter than the waiting frame (which is dropped).
    TooLong,
    /// The link is down.
    Down,
    /// The hardware failed or sent something malformed.
    Device,
}

impl From<LinkError> for crate::Error {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Busy => crate::Error::Busy,
            LinkError::TooLong => crate::Error::MessageTooLong,
            LinkError::Down => crate::Error::NetworkDown,
            LinkError::Device => crate::Error::Device,
        }
    }
}

/// A device that moves raw Ethernet frames.
pub trait Link {
    /// The link's MAC address.
    fn hardware_addr(&self) -> [u8; 6];

    /// Largest frame (header + payload, no FCS) the link carries.
    fn max_frame_len(&self) -> usize {
        MAX_FRAME_LEN
    }

    /// Whether the carrier is up (cable in, associated to an AP, ...).
    fn link_up(&mut self) -> bool {
        true
    }

    /// Transmit one frame.
    fn transmit(&mut self, frame: &[u8]) -> Result<(), LinkError>;

    /// Receive one waiting frame into `buf`; `Ok(None)` if none is waiting.
    /// Never blocks.
    fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, LinkError>;

    /// A handle to sleep on until a frame may be waiting (std only).
    #[cfg(feature = "std")]
    fn rx_signal(&self) -> Option<std::sync::Arc<dyn RxSignal>> {
        None
    }
}

/// Lets a driver thread sleep until a link may have a frame, without
/// holding the lock that guards the link.
#[cfg(feature = "std")]
pub trait RxSignal: Send + Sync {
    /// Return when a frame may be waiting, after `timeout`, or spuriously.
    fn wait(&self, timeout: Option<core::time::Duration>);
}

impl<L: Link + ?Sized> Link for &mut L {
    fn hardware_addr(&self) -> [u8; 6] {
        (**self).hardware_addr()
    }
    fn max_frame_len(&self) -> usize {
        (**self).max_frame_len()
    }
    fn link_up(&mut self) -> bool {
        (**self).link_up()
    }
    fn transmit(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        (**self).transmit(frame)
    }
    fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
        (**self).receive(buf)
    }
    #[cfg(feature = "std")]
    fn rx_signal(&self) -> Option<std::sync::Arc<dyn RxSignal>> {
        (**self).rx_signal()
    }
}

#[cfg(feature = "std")]
impl<L: Link + ?Sized> Link for std::boxed::Box<L> {
    fn hardware_addr(&self) -> [u8; 6] {
        (**self).hardware_addr()
    }
    fn max_frame_len(&self) -> usize {
        (**self).max_frame_len()
    }
    fn link_up(&mut self) -> bool {
        (**self).link_up()
    }
    fn transmit(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        (**self).transmit(frame)
    }
    fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
        (**self).receive(buf)
    }
    fn rx_signal(&self) -> Option<std::sync::Arc<dyn RxSignal>> {
        (**self).rx_signal()
    }
}
