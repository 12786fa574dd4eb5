//! [`LinkDevice`]: any [`Link`] as a smoltcp `phy::Device`.
//!
//! smoltcp asks for frames through tokens; this adapter receives the
//! link's next frame into its own buffer when smoltcp asks, and transmits
//! from a scratch buffer when smoltcp fills one. Frames that are not IPv4 or
//! ARP are set aside for [`Netlinker::recv_eth`] in a queue of `RAW` bytes.
//!
//! # Why the raw-frame queue is sized in bytes
//!
//! Non-IP frames (LLDP, EAPOL, IPv6 neighbour discovery, an app's own
//! EtherType) are mostly small, and most apps never read them. Fixed slots
//! of a full frame each cost 1.5 KB of RAM per queued frame whatever arrives;
//! a byte queue packs frames back to back (2 bytes of length each), so the
//! default [`DEFAULT_RAW_QUEUE_BYTES`] holds one full-size frame or several
//! small ones. When the queue is full the oldest frames make room (counted in
//! [`LinkStats::raw_dropped`]), as `recv_eth` is a best-effort mailbox, not a
//! reliable channel. `RAW = 0` turns raw-frame receive off: every non-IP
//! frame is dropped and counted, and the stack's `recv_eth` says
//! `NotSupported` instead of waiting for frames that cannot come.
//!
//! [`Netlinker::recv_eth`]: crate::Netlinker::recv_eth

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;

use super::{Link, LinkError, MAX_FRAME_LEN};

/// Default size in bytes of [`LinkDevice`]'s raw-frame queue: one
/// full-size frame plus its length, or several small frames.
pub const DEFAULT_RAW_QUEUE_BYTES: usize = MAX_FRAME_LEN + RAW_HEADER;

/// Bytes of length stored in front of each queued raw frame.
const RAW_HEADER: usize = 2;

/// Counters kept by the adapter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames received from the link.
    pub rx_frames: u64,
    /// Frames handed to the link.
    pub tx_frames: u64,
    /// Frames the link refused (busy, down, too long) or failed to receive.
    pub errors: u64,
    /// Non-IP frames dropped because the raw queue was full (or is off).
    pub raw_dropped: u64,
}

/// Non-IP frames waiting for `recv_eth`, packed back to back in `N` bytes:
/// each is a 2-byte big-endian length followed by the frame.
struct RawQueue<const N: usize> {
    buf: [u8; N],
    used: usize,
}

impl<const N: usize> RawQueue<N> {
    const fn new() -> Self {
        RawQueue {
            buf: [0; N],
            used: 0,
        }
    }

    /// Length of the oldest frame, if any.
    fn front_len(&self) -> Option<usize> {
        match self.buf.get(..RAW_HEADER) {
            Some(&[hi, lo]) if self.used >= RAW_HEADER => {
                Some(u16::from_be_bytes([hi, lo]) as usize)
            }
            _ => None,
        }
    }

    /// Forget the oldest frame.
    fn drop_front(&mut self) {
        match self.front_len() {
            Some(n) => {
                let end = (RAW_HEADER + n).min(self.used);
                self.buf.copy_within(end..self.used, 0);
                self.used -= end;
            }
            None => self.used = 0,
        }
    }

    /// Queue a frame, dropping the oldest ones to make room. Returns how
    /// many frames were lost (the new one too, if it can never fit).
    fn push(&mut self, frame: &[u8]) -> u64 {
        let need = RAW_HEADER + frame.len();
        if need > N || frame.len() > u16::MAX as usize {
            return 1;
        }
        let mut dropped = 0;
        while N - self.used < need {
            self.drop_front();
            dropped += 1;
        }
        let at = self.used;
        self.buf[at..at + RAW_HEADER].copy_from_slice(&(frame.len() as u16).to_be_bytes());
        self.buf[at + RAW_HEADER..at + need].copy_from_slice(frame);
        self.used += need;
        dropped
    }

    /// Move the oldest frame into `out`. A frame longer than `out` is
    /// dropped and reported as `TooLong`.
    fn pop(&mut self, out: &mut [u8]) -> Result<Option<usize>, LinkError> {
        let Some(n) = self.front_len() else {
            return Ok(None);
        };
        let r = match (out.get_mut(..n), self.buf.get(RAW_HEADER..RAW_HEADER + n)) {
            (Some(dst), Some(src)) => {
                dst.copy_from_slice(src);
                Ok(Some(n))
            }
            _ => Err(LinkError::TooLong),
        };
        self.drop_front();
        r
    }
}

/// A [`Link`] adapted to smoltcp.
///
/// `RAW` is the size in bytes of the queue that keeps non-IP frames for
/// [`recv_raw`](Self::recv_raw) (default [`DEFAULT_RAW_QUEUE_BYTES`]). With
/// 0 raw-frame receive is off: non-IP frames are dropped and counted in
/// [`LinkStats::raw_dropped`].
pub struct LinkDevice<L: Link, const RAW: usize = DEFAULT_RAW_QUEUE_BYTES> {
    link: L,
    rx: [u8; MAX_FRAME_LEN],
    tx: [u8; MAX_FRAME_LEN],
    raw: RawQueue<RAW>,
    stats: LinkStats,
}

impl<L: Link, const RAW: usize> LinkDevice<L, RAW> {
    /// Wrap a link.
    pub fn new(link: L) -> Self {
        LinkDevice {
            link,
            rx: [0; MAX_FRAME_LEN],
            tx: [0; MAX_FRAME_LEN],
            raw: RawQueue::new(),
            stats: LinkStats::default(),
        }
    }

    /// Whether non-IP frames are kept for [`recv_raw`](Self::recv_raw)
    /// (`RAW > 0`).
    pub const fn keeps_raw_frames(&self) -> bool {
        RAW > 0
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

    /// Take the oldest set-aside non-IP frame (`Ok(None)`: none waiting;
    /// always so when `RAW` is 0). A frame longer than `buf` is dropped and
    /// reported as `TooLong`.
    pub fn recv_raw(&mut self, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
        self.raw.pop(buf)
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

impl<L: Link, const RAW: usize> Device for LinkDevice<L, RAW> {
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
                self.stats.raw_dropped += self.raw.push(&self.rx[..n]);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_queue_packs_small_frames_and_drops_oldest() {
        let mut q: RawQueue<DEFAULT_RAW_QUEUE_BYTES> = RawQueue::new();
        let mut out = [0u8; MAX_FRAME_LEN];
        for i in 0..10u8 {
            assert_eq!(q.push(&[i; 100]), 0, "ten small frames fit");
        }
        assert_eq!(
            q.push(&[0xee; MAX_FRAME_LEN]),
            10,
            "a full frame needs all of it"
        );
        assert_eq!(q.pop(&mut out), Ok(Some(MAX_FRAME_LEN)));
        assert_eq!(out[MAX_FRAME_LEN - 1], 0xee);
        assert_eq!(q.pop(&mut out), Ok(None));
        for i in 0..3u8 {
            q.push(&[i; 60]);
        }
        assert_eq!(q.pop(&mut out[..10]), Err(LinkError::TooLong));
        assert_eq!(q.pop(&mut out), Ok(Some(60)));
        assert_eq!(
            out[0], 1,
            "the too-long frame was dropped, the next one follows"
        );
    }

    #[test]
    fn zero_sized_raw_queue_drops_everything() {
        let mut q: RawQueue<0> = RawQueue::new();
        assert_eq!(q.push(&[1; 60]), 1);
        assert_eq!(q.pop(&mut [0u8; 64]), Ok(None));
    }
}
