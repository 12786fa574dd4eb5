//! [`FaultLink`]: middleware that loses, duplicates, reorders and corrupts
//! frames, for robustness tests.
//!
//! Wrap any [`Link`] and the wrapper is a link too; the faults apply to both
//! directions (frames transmitted and frames received), each frame rolling
//! its own dice with a deterministic PRNG seeded from [`FaultConfig::seed`],
//! so a failing run can be replayed.
//!
//! Why not smoltcp's `FaultInjector`: it wraps a smoltcp `Device` (so it
//! sits above [`LinkDevice`](super::LinkDevice) and needs the `full-stack`
//! feature), it only drops and corrupts — it never reorders or duplicates,
//! which are exactly what TCP's reassembly and duplicate-ACK paths need
//! exercising — and it cannot sit under a
//! [`PcapLink`](super::pcap::PcapLink) to record what the other side
//! really got. This one works on links, below everything, with
//! no allocator.
//!
//! # What each fault does
//!
//! Faults are decided in this order for each frame entering the link:
//!
//! 1. **Loss** (`loss_pct`): the frame is dropped.
//! 2. **Corruption** (`corrupt_pct`): one random bit after the 14-byte
//!    Ethernet header is flipped, so the IP/TCP/UDP checksums catch it
//!    (frames with no payload are left alone).
//! 3. **Reordering** (`reorder_pct`): the frame is held in a one-frame slot
//!    and released right *after* the next frame that goes through. Only one
//!    frame is held at a time, so a frame that arrives while the slot is
//!    full cannot itself be held; the observed rate is therefore about
//!    `p / (1 + p)` of the configured `p`.
//! 4. **Duplication** (`duplicate_pct`): the frame is delivered twice
//!    (decided when the frame is actually delivered, so a released held
//!    frame can be duplicated too).
//!
//! A held frame is never kept for long:
//!
//! * received frames: if no other frame is waiting, the held one is
//!   delivered by the same [`Link::receive`] call that held it, so
//!   `receive` never returns `Ok(None)` while it holds a frame;
//! * transmitted frames: the held frame goes out after the next transmitted
//!   frame, on a transmit whose frame is lost, at the start of the next
//!   [`Link::receive`] call (a stack's poll always receives), or on
//!   [`FaultLink::flush`]. Under `std` the link's
//!   [`RxSignal`](super::RxSignal) returns at once while anything is held,
//!   so a driver thread sleeping on it wakes up and polls.
//!
//! Memory: four `MAX_FRAME_LEN` buffers (a held slot and a scratch/duplicate
//! buffer per direction), about 6 KiB, plus the wrapped link.

use super::{Link, LinkError, MAX_FRAME_LEN};

/// Ethernet header length; corruption only touches bytes after it.
const ETH_HEADER_LEN: usize = 14;

/// Which faults to inject and how often. Percentages are `0..=100`; values
/// above 100 act as 100.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FaultConfig {
    /// Percentage of frames dropped.
    pub loss_pct: u8,
    /// Percentage of frames delivered twice.
    pub duplicate_pct: u8,
    /// Percentage of frames held back and delivered after the next frame.
    pub reorder_pct: u8,
    /// Percentage of frames with one bit flipped after the Ethernet header.
    pub corrupt_pct: u8,
    /// PRNG seed; the same seed and traffic give the same faults.
    pub seed: u64,
}

impl FaultConfig {
    /// No faults at all: the link is a transparent pass-through.
    pub const NONE: FaultConfig = FaultConfig {
        loss_pct: 0,
        duplicate_pct: 0,
        reorder_pct: 0,
        corrupt_pct: 0,
        seed: 0,
    };

    /// Whether this configuration injects any fault.
    pub fn is_none(&self) -> bool {
        self.loss_pct == 0
            && self.duplicate_pct == 0
            && self.reorder_pct == 0
            && self.corrupt_pct == 0
    }
}

/// Counters for one direction of a [`FaultLink`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FaultCounts {
    /// Frames that entered the fault injector.
    pub frames: u64,
    /// Frames passed on (duplicates count twice, lost frames not at all).
    pub delivered: u64,
    /// Frames dropped on purpose.
    pub lost: u64,
    /// Frames delivered a second time.
    pub duplicated: u64,
    /// Frames held back and delivered after a later frame.
    pub reordered: u64,
    /// Frames with a bit flipped.
    pub corrupted: u64,
    /// Frames lost by accident: the wrapped link refused a held or
    /// duplicated frame, or the receive buffer was too short for one.
    pub errors: u64,
}

impl FaultCounts {
    fn add(&self, o: &FaultCounts) -> FaultCounts {
        FaultCounts {
            frames: self.frames + o.frames,
            delivered: self.delivered + o.delivered,
            lost: self.lost + o.lost,
            duplicated: self.duplicated + o.duplicated,
            reordered: self.reordered + o.reordered,
            corrupted: self.corrupted + o.corrupted,
            errors: self.errors + o.errors,
        }
    }
}

/// Counters of a [`FaultLink`], per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FaultStats {
    /// Frames transmitted through the fault link.
    pub tx: FaultCounts,
    /// Frames received through the fault link.
    pub rx: FaultCounts,
}

impl FaultStats {
    /// Both directions added up.
    pub fn total(&self) -> FaultCounts {
        self.tx.add(&self.rx)
    }
}

/// Small deterministic PRNG: splitmix64 to seed, xorshift64* to draw.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // splitmix64 spreads simple seeds (0, 1, 2...) over the state space.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // xorshift must not start at zero.
        Rng(if z == 0 { 0x2545_f491_4f6c_dd1d } else { z })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (for `n <= u32::MAX`).
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }

    /// `true` with probability `pct` percent. Draws nothing for 0 and 100.
    fn chance(&mut self, pct: u8) -> bool {
        match pct {
            0 => false,
            100.. => true,
            p => self.below(100) < p as usize,
        }
    }
}

/// Per-direction state: a held (reordered) frame and a second buffer (the
/// corrupted copy of a transmitted frame, or a received duplicate).
struct Dir {
    held: [u8; MAX_FRAME_LEN],
    held_len: Option<usize>,
    /// Received direction: the held frame is due (a later frame has been
    /// delivered) and goes out on the next call.
    held_due: bool,
    spare: [u8; MAX_FRAME_LEN],
    /// Received direction: length of a duplicate waiting in `spare`.
    dup_len: Option<usize>,
    counts: FaultCounts,
}

impl Dir {
    const fn new() -> Self {
        Dir {
            held: [0; MAX_FRAME_LEN],
            held_len: None,
            held_due: false,
            spare: [0; MAX_FRAME_LEN],
            dup_len: None,
            counts: FaultCounts {
                frames: 0,
                delivered: 0,
                lost: 0,
                duplicated: 0,
                reordered: 0,
                corrupted: 0,
                errors: 0,
            },
        }
    }
}

/// Flip one random bit after the Ethernet header; `false` if there is no
/// payload to corrupt.
fn corrupt(rng: &mut Rng, frame: &mut [u8]) -> bool {
    if frame.len() <= ETH_HEADER_LEN {
        return false;
    }
    let i = ETH_HEADER_LEN + rng.below(frame.len() - ETH_HEADER_LEN);
    frame[i] ^= 1 << rng.below(8);
    true
}

/// Copy `frame` into `buf`, or fail with [`LinkError::TooLong`].
fn copy_out(frame: &[u8], buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
    let dst = buf.get_mut(..frame.len()).ok_or(LinkError::TooLong)?;
    dst.copy_from_slice(frame);
    Ok(Some(frame.len()))
}

/// A [`Link`] wrapper that injects faults; see the [module docs](self).
pub struct FaultLink<L: Link> {
    inner: L,
    config: FaultConfig,
    rng: Rng,
    tx: Dir,
    rx: Dir,
    /// Set while anything is held, so the rx signal does not sleep on it.
    #[cfg(feature = "std")]
    pending: std::sync::Arc<core::sync::atomic::AtomicBool>,
}

impl<L: Link> core::fmt::Debug for FaultLink<L> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FaultLink")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<L: Link> FaultLink<L> {
    /// Wrap `inner`, injecting the faults in `config`.
    pub fn new(inner: L, config: FaultConfig) -> Self {
        FaultLink {
            inner,
            config,
            rng: Rng::new(config.seed),
            tx: Dir::new(),
            rx: Dir::new(),
            #[cfg(feature = "std")]
            pending: Default::default(),
        }
    }

    /// The current configuration.
    pub fn config(&self) -> FaultConfig {
        self.config
    }

    /// Change the configuration and reseed the PRNG from `config.seed`.
    /// Frames already held are still released as usual.
    pub fn set_config(&mut self, config: FaultConfig) {
        self.config = config;
        self.rng = Rng::new(config.seed);
    }

    /// Counters.
    pub fn stats(&self) -> FaultStats {
        FaultStats {
            tx: self.tx.counts,
            rx: self.rx.counts,
        }
    }

    /// Zero the counters.
    pub fn reset_stats(&mut self) {
        self.tx.counts = FaultCounts::default();
        self.rx.counts = FaultCounts::default();
    }

    /// The wrapped link.
    pub fn inner(&self) -> &L {
        &self.inner
    }

    /// The wrapped link, mutably.
    pub fn inner_mut(&mut self) -> &mut L {
        &mut self.inner
    }

    /// Unwrap. Frames still held or waiting as duplicates are discarded.
    pub fn into_inner(self) -> L {
        self.inner
    }

    /// Transmit the held frame, if any, now. A refused frame is dropped and
    /// counted in `tx.errors`, and its error returned.
    pub fn flush(&mut self) -> Result<(), LinkError> {
        let r = self.release_tx();
        self.update_pending();
        r
    }

    fn release_tx(&mut self) -> Result<(), LinkError> {
        let Some(n) = self.tx.held_len.take() else {
            return Ok(());
        };
        let r = self.inner.transmit(&self.tx.held[..n]);
        match r {
            Ok(()) => {
                self.tx.counts.delivered += 1;
                if self.rng.chance(self.config.duplicate_pct) {
                    self.tx.counts.duplicated += 1;
                    self.send_copy_of_held(n);
                }
            }
            Err(_) => self.tx.counts.errors += 1,
        }
        r
    }

    fn send_copy_of_held(&mut self, n: usize) {
        match self.inner.transmit(&self.tx.held[..n]) {
            Ok(()) => self.tx.counts.delivered += 1,
            Err(_) => self.tx.counts.errors += 1,
        }
    }

    #[cfg(feature = "std")]
    fn update_pending(&self) {
        let p = self.tx.held_len.is_some() || self.rx.held_due || self.rx.dup_len.is_some();
        self.pending.store(p, core::sync::atomic::Ordering::SeqCst);
    }

    #[cfg(not(feature = "std"))]
    fn update_pending(&self) {}

    fn transmit_inner(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        if frame.len() > MAX_FRAME_LEN {
            return Err(LinkError::TooLong);
        }
        let cfg = self.config;
        self.tx.counts.frames += 1;

        if self.rng.chance(cfg.loss_pct) {
            self.tx.counts.lost += 1;
            // Nothing goes out for this frame: let the held one go.
            let _ = self.release_tx();
            return Ok(());
        }

        let n = frame.len();
        let mut in_spare = false;
        if self.rng.chance(cfg.corrupt_pct) {
            self.tx.spare[..n].copy_from_slice(frame);
            if corrupt(&mut self.rng, &mut self.tx.spare[..n]) {
                self.tx.counts.corrupted += 1;
                in_spare = true;
            }
        }

        if self.tx.held_len.is_none() && self.rng.chance(cfg.reorder_pct) {
            let src = if in_spare { &self.tx.spare[..n] } else { frame };
            self.tx.held[..n].copy_from_slice(src);
            self.tx.held_len = Some(n);
            self.tx.counts.reordered += 1;
            return Ok(());
        }

        let data = if in_spare { &self.tx.spare[..n] } else { frame };
        // A refused frame is not ours to count: the caller sees the error.
        // The held frame stays held for the next call.
        self.inner.transmit(data)?;
        self.tx.counts.delivered += 1;
        if self.rng.chance(cfg.duplicate_pct) {
            self.tx.counts.duplicated += 1;
            match self.inner.transmit(data) {
                Ok(()) => self.tx.counts.delivered += 1,
                Err(_) => self.tx.counts.errors += 1,
            }
        }
        let _ = self.release_tx();
        Ok(())
    }

    /// Deliver a received frame sitting in `buf[..n]`, rolling for a
    /// duplicate.
    fn deliver_rx(&mut self, buf: &[u8], n: usize) -> Result<Option<usize>, LinkError> {
        self.rx.counts.delivered += 1;
        if n <= MAX_FRAME_LEN && self.rng.chance(self.config.duplicate_pct) {
            self.rx.counts.duplicated += 1;
            self.rx.spare[..n].copy_from_slice(&buf[..n]);
            self.rx.dup_len = Some(n);
        }
        Ok(Some(n))
    }

    /// Deliver the held received frame into `buf`.
    fn deliver_held_rx(&mut self, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
        self.rx.held_due = false;
        let n = self.rx.held_len.take().expect("held frame");
        if let Err(e) = copy_out(&self.rx.held[..n], buf) {
            self.rx.counts.errors += 1;
            return Err(e);
        }
        self.deliver_rx(buf, n)
    }

    fn receive_inner(&mut self, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
        // A transmitted frame held back since the last poll goes out now.
        let _ = self.release_tx();

        // Frames owed from the last call come first: the duplicate of the
        // frame delivered last, then a held frame that is now due.
        if let Some(n) = self.rx.dup_len.take() {
            self.rx.counts.delivered += 1;
            return copy_out(&self.rx.spare[..n], buf).inspect_err(|_| {
                self.rx.counts.delivered -= 1;
                self.rx.counts.errors += 1;
            });
        }
        if self.rx.held_due {
            return self.deliver_held_rx(buf);
        }

        let cfg = self.config;
        loop {
            let n = match self.inner.receive(buf) {
                Ok(Some(n)) => n,
                // Nothing else is coming: the held frame goes out now.
                Ok(None) if self.rx.held_len.is_some() => return self.deliver_held_rx(buf),
                Ok(None) => return Ok(None),
                Err(e) => return Err(e),
            };
            self.rx.counts.frames += 1;

            if self.rng.chance(cfg.loss_pct) {
                self.rx.counts.lost += 1;
                continue;
            }
            if self.rng.chance(cfg.corrupt_pct) && corrupt(&mut self.rng, &mut buf[..n]) {
                self.rx.counts.corrupted += 1;
            }
            if self.rx.held_len.is_none() && n <= MAX_FRAME_LEN && self.rng.chance(cfg.reorder_pct)
            {
                self.rx.held[..n].copy_from_slice(&buf[..n]);
                self.rx.held_len = Some(n);
                self.rx.counts.reordered += 1;
                continue;
            }
            if self.rx.held_len.is_some() {
                self.rx.held_due = true;
            }
            return self.deliver_rx(buf, n);
        }
    }
}

impl<L: Link> Link for FaultLink<L> {
    fn hardware_addr(&self) -> [u8; 6] {
        self.inner.hardware_addr()
    }

    fn max_frame_len(&self) -> usize {
        self.inner.max_frame_len().min(MAX_FRAME_LEN)
    }

    fn link_up(&mut self) -> bool {
        self.inner.link_up()
    }

    /// Transmit with faults. A lost or held frame still returns `Ok(())`.
    fn transmit(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        let r = self.transmit_inner(frame);
        self.update_pending();
        r
    }

    fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
        let r = self.receive_inner(buf);
        self.update_pending();
        r
    }

    #[cfg(feature = "std")]
    fn rx_signal(&self) -> Option<std::sync::Arc<dyn super::RxSignal>> {
        let inner = self.inner.rx_signal()?;
        Some(std::sync::Arc::new(FaultRxSignal {
            inner,
            pending: self.pending.clone(),
        }))
    }
}

/// The wrapped link's signal, except that it returns at once while the
/// fault link holds a frame.
#[cfg(feature = "std")]
struct FaultRxSignal {
    inner: std::sync::Arc<dyn super::RxSignal>,
    pending: std::sync::Arc<core::sync::atomic::AtomicBool>,
}

#[cfg(feature = "std")]
impl super::RxSignal for FaultRxSignal {
    fn wait(&self, timeout: Option<core::time::Duration>) {
        if !self.pending.load(core::sync::atomic::Ordering::SeqCst) {
            self.inner.wait(timeout);
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::vec;
    use std::vec::Vec;

    /// A link backed by two queues the test fills and drains.
    #[derive(Default)]
    struct Mock {
        rx: VecDeque<Vec<u8>>,
        tx: Vec<Vec<u8>>,
    }

    impl Link for Mock {
        fn hardware_addr(&self) -> [u8; 6] {
            [2, 0, 0, 0, 0, 9]
        }
        fn max_frame_len(&self) -> usize {
            1000
        }
        fn link_up(&mut self) -> bool {
            false
        }
        fn transmit(&mut self, frame: &[u8]) -> Result<(), LinkError> {
            self.tx.push(frame.to_vec());
            Ok(())
        }
        fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
            match self.rx.pop_front() {
                None => Ok(None),
                Some(f) => copy_out(&f, buf),
            }
        }
    }

    /// Frame `i`: 60 bytes, the sequence number right after the header.
    fn frame(i: u32) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&[0xff; 6]);
        f[12] = 0x08;
        f[14..18].copy_from_slice(&i.to_be_bytes());
        for (k, b) in f[18..].iter_mut().enumerate() {
            *b = (i as u8).wrapping_add(k as u8);
        }
        f
    }

    const N: u32 = 10_000;

    fn cfg(loss: u8, dup: u8, reorder: u8, corrupt: u8) -> FaultConfig {
        FaultConfig {
            loss_pct: loss,
            duplicate_pct: dup,
            reorder_pct: reorder,
            corrupt_pct: corrupt,
            seed: 0x5eed,
        }
    }

    /// Push N frames through both directions; return what came out of each.
    fn run(config: FaultConfig) -> (FaultLink<Mock>, Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut mock = Mock::default();
        mock.rx.extend((0..N).map(frame));
        let mut link = FaultLink::new(mock, config);
        for i in 0..N {
            link.transmit(&frame(i)).unwrap();
        }
        link.flush().unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; MAX_FRAME_LEN];
        while let Some(n) = link.receive(&mut buf).unwrap() {
            got.push(buf[..n].to_vec());
        }
        let sent = core::mem::take(&mut link.inner_mut().tx);
        (link, sent, got)
    }

    fn pct(part: u64, whole: u64) -> f64 {
        part as f64 * 100.0 / whole as f64
    }

    fn near(what: &str, got: f64, want: f64) {
        assert!((got - want).abs() < 1.5, "{what}: {got:.2}% vs {want:.2}%");
    }

    #[test]
    fn zero_config_is_transparent() {
        let (link, sent, got) = run(FaultConfig::NONE);
        let want: Vec<_> = (0..N).map(frame).collect();
        assert_eq!(sent, want);
        assert_eq!(got, want);
        let s = link.stats();
        for c in [s.tx, s.rx] {
            assert_eq!(c.frames, N as u64);
            assert_eq!(c.delivered, N as u64);
            assert_eq!(
                c.lost + c.duplicated + c.reordered + c.corrupted + c.errors,
                0
            );
        }
        assert!(FaultConfig::NONE.is_none());
        assert!(FaultConfig::default().is_none());
    }

    #[test]
    fn forwards_link_properties() {
        let mut link = FaultLink::new(Mock::default(), FaultConfig::NONE);
        assert_eq!(link.hardware_addr(), [2, 0, 0, 0, 0, 9]);
        assert_eq!(link.max_frame_len(), 1000);
        assert!(!link.link_up());
        assert!(link.rx_signal().is_none());
    }

    #[test]
    fn loss_rate() {
        let (link, sent, got) = run(cfg(10, 0, 0, 0));
        let s = link.stats();
        for (c, out) in [(s.tx, &sent), (s.rx, &got)] {
            near("loss", pct(c.lost, c.frames), 10.0);
            assert_eq!(out.len() as u64, c.frames - c.lost);
            assert_eq!(c.delivered, out.len() as u64);
            // Survivors keep their order.
            assert!(out.windows(2).all(|w| w[0][14..18] < w[1][14..18]));
        }
    }

    #[test]
    fn duplicate_rate() {
        let (link, sent, got) = run(cfg(0, 20, 0, 0));
        let s = link.stats();
        for (c, out) in [(s.tx, &sent), (s.rx, &got)] {
            near("duplicate", pct(c.duplicated, c.frames), 20.0);
            assert_eq!(out.len() as u64, c.frames + c.duplicated);
            let dups = out.windows(2).filter(|w| w[0] == w[1]).count() as u64;
            assert_eq!(dups, c.duplicated, "duplicates follow the original");
        }
    }

    #[test]
    fn corrupt_rate_and_one_bit() {
        let (link, sent, got) = run(cfg(0, 0, 0, 5));
        let s = link.stats();
        for (c, out) in [(s.tx, &sent), (s.rx, &got)] {
            near("corrupt", pct(c.corrupted, c.frames), 5.0);
            assert_eq!(out.len(), N as usize);
            let mut changed = 0;
            for (i, f) in out.iter().enumerate() {
                let want = frame(i as u32);
                let bits: u32 = f.iter().zip(&want).map(|(a, b)| (a ^ b).count_ones()).sum();
                assert!(bits <= 1, "frame {i}: {bits} bits changed");
                assert_eq!(f[..14], want[..14], "header untouched");
                changed += bits as u64;
            }
            assert_eq!(changed, c.corrupted);
        }
    }

    #[test]
    fn reorder_loses_nothing() {
        let (link, sent, got) = run(cfg(0, 0, 10, 0));
        let s = link.stats();
        let want: Vec<_> = (0..N).map(frame).collect();
        for (c, out) in [(s.tx, &sent), (s.rx, &got)] {
            // Only one frame can be held at a time: p / (1 + p).
            near("reorder", pct(c.reordered, c.frames), 100.0 * 0.1 / 1.1);
            assert_eq!(out.len(), N as usize, "count in == count out");
            let mut sorted = out.clone();
            sorted.sort_by_key(|f| u32::from_be_bytes(f[14..18].try_into().unwrap()));
            assert_eq!(sorted, want);
            // Each reordered frame swaps with its successor.
            let swaps = out
                .windows(2)
                .filter(|w| w[0][14..18] > w[1][14..18])
                .count();
            // (A frame held last goes out last, in order: no swap.)
            assert!(c.reordered - swaps as u64 <= 1, "{swaps} swaps");
        }
    }

    #[test]
    fn everything_at_once_is_deterministic() {
        let c = cfg(5, 5, 5, 5);
        let (l1, s1, g1) = run(c);
        let (l2, s2, g2) = run(c);
        assert_eq!(s1, s2);
        assert_eq!(g1, g2);
        assert_eq!(l1.stats(), l2.stats());
        let t = l1.stats().total();
        assert_eq!(t.frames, 2 * N as u64);
        assert_eq!(t.errors, 0);
        assert_eq!(t.delivered, t.frames - t.lost + t.duplicated);
        let (_, s3, _) = run(FaultConfig { seed: 1, ..c });
        assert_ne!(s1, s3, "another seed, other faults");
    }

    #[test]
    fn always_lose() {
        let (link, sent, got) = run(cfg(100, 0, 0, 0));
        assert!(sent.is_empty() && got.is_empty());
        assert_eq!(link.stats().total().lost, 2 * N as u64);
    }

    #[test]
    fn held_tx_frame_released_by_receive() {
        let mut link = FaultLink::new(Mock::default(), cfg(0, 0, 100, 0));
        link.transmit(&frame(1)).unwrap();
        assert!(link.inner().tx.is_empty(), "held");
        let mut buf = [0u8; MAX_FRAME_LEN];
        assert_eq!(link.receive(&mut buf).unwrap(), None);
        assert_eq!(link.inner().tx, vec![frame(1)]);
    }

    #[test]
    fn held_rx_frame_never_waits_for_another() {
        let mut mock = Mock::default();
        mock.rx.push_back(frame(1));
        let mut link = FaultLink::new(mock, cfg(0, 0, 100, 0));
        let mut buf = [0u8; MAX_FRAME_LEN];
        assert_eq!(link.receive(&mut buf).unwrap(), Some(60));
        assert_eq!(buf[..60], frame(1)[..]);
        assert_eq!(link.receive(&mut buf).unwrap(), None);
    }

    #[test]
    fn rx_signal_skips_sleep_while_holding() {
        use crate::phy::memory::MemoryLink;
        use std::time::{Duration, Instant};

        let (a, mut b) = MemoryLink::pair();
        let mut link = FaultLink::new(a, cfg(0, 0, 100, 0));
        let sig = link.rx_signal().unwrap();
        link.transmit(&frame(1)).unwrap();
        let t = Instant::now();
        sig.wait(Some(Duration::from_secs(10)));
        assert!(t.elapsed() < Duration::from_secs(5));
        let mut buf = [0u8; MAX_FRAME_LEN];
        assert_eq!(b.receive(&mut buf).unwrap(), None);
        assert_eq!(link.receive(&mut buf).unwrap(), None);
        assert_eq!(b.receive(&mut buf).unwrap(), Some(60));
    }

    #[test]
    fn rng_is_spread() {
        let mut r = Rng::new(0);
        let mut hist = [0u32; 10];
        for _ in 0..100_000 {
            hist[r.below(10)] += 1;
        }
        assert!(
            hist.iter().all(|&h| (9_000..11_000).contains(&h)),
            "{hist:?}"
        );
    }
}
