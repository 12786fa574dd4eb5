//! [`LinkDevice`]: any [`Link`] as a smoltcp `phy::Device`.
//!
//! smoltcp asks for frames through tokens; this adapter receives the
//! link's next frame into its own buffer when smoltcp asks, and transmits
//! from a scratch buffer when smoltcp fills one. Frames that are not IPv4 or
//! ARP are set aside (a few at most) for [`Netlinker::recv_eth`].
//!
//! [`Netlinker::recv_eth`]: crate::Netlinker::recv_eth

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;

use super::{Link, LinkError, MAX_FRAME_LEN};

/// Frames kept for `recv_eth` before older ones are dropped.
const RAW_QUEUE: usize = 4;

/// Counters kept by the adapter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames received from the link.
    pub rx_frames: u64,
    /// Frames handed to the link.
    pub tx_frames: u64,
    /// Frames the link refused (busy, down, too long) or failed to receive.
    pub errors: u64,
    /// Non-IP frames dropped because the raw queue was full.
    pub raw_dropped: u64,
}

/// A [`Link`] adapted to smoltcp.
pub struct LinkDevice<L: Link> {
    link: L,
    rx: [u8; MAX_FRAME_LEN],
    tx: [u8; MAX_FRAME_LEN],
    raw: heapless::Deque<heapless::Vec<u8, MAX_FRAME_LEN>, RAW_QUEUE>,
    stats: LinkStats,
}

impl<L: Link> LinkDevice<L> {
    /// Wrap a link.
    pub fn new(link: L) -> Self {
        LinkDevice {
            link,
            rx: [0; MAX_FRAME_LEN],
            tx: [0; MAX_FRAME_LEN],
            raw: heapless::Deque::new(),
            stats: LinkStats::default(),
        }
    }

    /// The wrapped link.
    pub fn link(&self) -> &L {
        &self.link
    }

    /// The wrapped link, mutably.
    pub fn link_mut(&mut self) -> &mut L {
        &mut self.link
    }

    /// Unwrap.
    pub fn into_inner(self) -> L {
        self.link
    }

    /// Counters.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Transmit a raw frame directly.
    pub fn send_raw(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        if frame.len() > self.link.max_frame_len().min(MAX_FRAME_LEN) {
            return Err(LinkError::TooLong);
        }
        self.link.transmit(frame)?;
        self.stats.tx_frames += 1;
        Ok(())
    }

    /// Take a set-aside non-IP frame.
    pub fn recv_raw(&mut self, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
        match self.raw.pop_front() {
            None => Ok(None),
            Some(f) if f.len() > buf.len() => Err(LinkError::TooLong),
            Some(f) => {
                buf[..f.len()].copy_from_slice(&f);
                Ok(Some(f.len()))
            }
        }
    }

    fn is_ip(frame: &[u8]) -> bool {
        frame.len() >= 14 && matches!(u16::from_be_bytes([frame[12], frame[13]]), 0x0800 | 0x0806)
    }
}

/// Receive token: a frame in the adapter's buffer.
pub struct LinkRxToken<'a> {
    frame: &'a [u8],
}

impl RxToken for LinkRxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

/// Transmit token: fills the scratch buffer, then hands it to the link.
pub struct LinkTxToken<'a, L: Link> {
    link: &'a mut L,
    buf: &'a mut [u8; MAX_FRAME_LEN],
    stats: &'a mut LinkStats,
}

impl<L: Link> TxToken for LinkTxToken<'_, L> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // smoltcp never asks for more than the MTU we advertise.
        let len = len.min(MAX_FRAME_LEN);
        let r = f(&mut self.buf[..len]);
        match self.link.transmit(&self.buf[..len]) {
            Ok(()) => self.stats.tx_frames += 1,
            // A refused frame is a lost frame as far as TCP is concerned; it
            // retransmits. Count it so it is visible.
            Err(_) => self.stats.errors += 1,
        }
        r
    }
}

impl<L: Link> Device for LinkDevice<L> {
    type RxToken<'a>
        = LinkRxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = LinkTxToken<'a, L>
    where
        Self: 'a;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        loop {
            let n = match self.link.receive(&mut self.rx) {
                Ok(Some(n)) => n.min(MAX_FRAME_LEN),
                Ok(None) => return None,
                Err(_) => {
                    self.stats.errors += 1;
                    return None;
                }
            };
            self.stats.rx_frames += 1;
            if Self::is_ip(&self.rx[..n]) {
                return Some((
                    LinkRxToken {
                        frame: &self.rx[..n],
                    },
                    LinkTxToken {
                        link: &mut self.link,
                        buf: &mut self.tx,
                        stats: &mut self.stats,
                    },
                ));
            }
            if n >= 14 {
                if self.raw.is_full() {
                    self.raw.pop_front();
                    self.stats.raw_dropped += 1;
                }
                let _ = self
                    .raw
                    .push_back(heapless::Vec::from_slice(&self.rx[..n]).expect("fits"));
            }
        }
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        Some(LinkTxToken {
            link: &mut self.link,
            buf: &mut self.tx,
            stats: &mut self.stats,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.link.max_frame_len().min(MAX_FRAME_LEN);
        caps
    }
}
