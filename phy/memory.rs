//! [`MemorySwitch`]: the built-in simulated network.
//!
//! A switch joins any number of [`MemoryLink`] ports inside one process, so
//! several stacks (or a stack and a test that speaks raw frames) can talk to
//! each other without a kernel, a TAP device or real hardware.
//!
//! The switch does no MAC learning. A frame goes
//!
//! * to every *other* port whose MAC equals the destination MAC (unicast),
//! * to every other port if the destination is broadcast or multicast (bit 0
//!   of the first byte set),
//! * to every other port if no port has the destination MAC (flooding, like
//!   a real switch that has not learnt the address yet).
//!
//! Each port has a bounded receive queue ([`DEFAULT_QUEUE_LEN`] frames unless
//! built with [`MemorySwitch::with_queue_len`]); a frame that finds the queue
//! full is dropped and counted. A port can have its cable pulled
//! ([`MemoryLink::set_link_up`], [`MemoryPortHandle::set_link_up`] or
//! [`MemorySwitch::set_link_up`]): while it is down, transmitting fails with
//! [`LinkError::Down`] and frames sent to it are dropped (and counted).
//!
//! ```
//! use netdever::phy::{memory::MemoryLink, Link};
//!
//! let (mut a, mut b) = MemoryLink::pair();
//! let mut frame = [0u8; 60];
//! frame[..6].copy_from_slice(&b.hardware_addr());
//! frame[6..12].copy_from_slice(&a.hardware_addr());
//! a.transmit(&frame).unwrap();
//! let mut buf = [0u8; 1514];
//! assert_eq!(b.receive(&mut buf).unwrap(), Some(60));
//! ```

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::time::Duration;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;
use std::vec::Vec;

use parking_lot::{Condvar, Mutex, RwLock};

use super::{Link, LinkError, RxSignal, MAX_FRAME_LEN};

/// Receive queue length of each port unless set with
/// [`MemorySwitch::with_queue_len`].
pub const DEFAULT_QUEUE_LEN: usize = 1024;

/// Shortest frame the switch accepts: it needs a destination MAC.
const MIN_FRAME_LEN: usize = 6;

/// Counters of one port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames this port handed to the switch.
    pub tx_frames: u64,
    /// Transmissions refused because the port was down.
    pub tx_down: u64,
    /// Frames put in this port's receive queue.
    pub rx_queued: u64,
    /// Frames taken out of the receive queue by [`Link::receive`].
    pub rx_frames: u64,
    /// Frames dropped because the receive queue was full.
    pub rx_overflow: u64,
    /// Frames dropped because the port was down (sent to it while down, or
    /// still queued when it went down).
    pub rx_down: u64,
    /// Frames dropped because the receive buffer was too short.
    pub rx_too_long: u64,
}

/// Counters of the whole switch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwitchStats {
    /// Frames transmitted into the switch by any port.
    pub frames: u64,
    /// Frames sent to a known unicast MAC.
    pub unicast: u64,
    /// Broadcast and multicast frames.
    pub broadcast: u64,
    /// Unicast frames to a MAC no port has, flooded to every other port.
    pub flooded: u64,
    /// Copies put into some port's receive queue.
    pub delivered: u64,
    /// Copies dropped because the receiving port's queue was full.
    pub dropped_overflow: u64,
    /// Copies dropped because the receiving port was down.
    pub dropped_down: u64,
}

#[derive(Default)]
struct AtomicPortStats {
    tx_frames: AtomicU64,
    tx_down: AtomicU64,
    rx_queued: AtomicU64,
    rx_frames: AtomicU64,
    rx_overflow: AtomicU64,
    rx_down: AtomicU64,
    rx_too_long: AtomicU64,
}

impl AtomicPortStats {
    fn get(&self) -> PortStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PortStats {
            tx_frames: l(&self.tx_frames),
            tx_down: l(&self.tx_down),
            rx_queued: l(&self.rx_queued),
            rx_frames: l(&self.rx_frames),
            rx_overflow: l(&self.rx_overflow),
            rx_down: l(&self.rx_down),
            rx_too_long: l(&self.rx_too_long),
        }
    }
}

#[derive(Default)]
struct AtomicSwitchStats {
    frames: AtomicU64,
    unicast: AtomicU64,
    broadcast: AtomicU64,
    flooded: AtomicU64,
    delivered: AtomicU64,
    dropped_overflow: AtomicU64,
    dropped_down: AtomicU64,
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

fn bump_by(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

struct PortQueue {
    frames: VecDeque<Vec<u8>>,
    /// Bumped whenever the link state changes, so a sleeper wakes up to
    /// notice it.
    generation: u64,
}

/// One switch port; shared by the switch, the [`MemoryLink`], its handles
/// and its rx signal.
struct Port {
    mac: [u8; 6],
    up: AtomicBool,
    queue: Mutex<PortQueue>,
    ready: Condvar,
    stats: AtomicPortStats,
}

impl Port {
    fn set_up(&self, up: bool) {
        let mut q = self.queue.lock();
        if self.up.swap(up, Ordering::SeqCst) == up {
            return;
        }
        if !up {
            // A NIC that loses carrier loses what it had buffered too.
            let n = q.frames.len() as u64;
            q.frames.clear();
            bump_by(&self.stats.rx_down, n);
        }
        q.generation = q.generation.wrapping_add(1);
        drop(q);
        self.ready.notify_all();
    }

    /// Queue a copy of `frame`; `false` if dropped.
    fn deliver(&self, frame: &[u8], limit: usize, sw: &AtomicSwitchStats) -> bool {
        let mut q = self.queue.lock();
        // Checked under the queue lock so `set_up(false)` (which clears the
        // queue under the same lock) cannot leave a stale frame behind.
        if !self.up.load(Ordering::SeqCst) {
            bump(&self.stats.rx_down);
            bump(&sw.dropped_down);
            return false;
        }
        if q.frames.len() >= limit {
            bump(&self.stats.rx_overflow);
            bump(&sw.dropped_overflow);
            return false;
        }
        q.frames.push_back(frame.to_vec());
        drop(q);
        bump(&self.stats.rx_queued);
        bump(&sw.delivered);
        self.ready.notify_all();
        true
    }
}

struct SwitchInner {
    ports: RwLock<Vec<Arc<Port>>>,
    queue_len: usize,
    stats: AtomicSwitchStats,
}

/// The in-memory Ethernet switch. Cheap to clone: clones share the switch.
#[derive(Clone)]
pub struct MemorySwitch {
    inner: Arc<SwitchInner>,
}

impl fmt::Debug for MemorySwitch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemorySwitch")
            .field("ports", &self.inner.ports.read().len())
            .field("queue_len", &self.inner.queue_len)
            .finish()
    }
}

impl Default for MemorySwitch {
    fn default() -> Self {
        Self::new()
    }
}

impl MemorySwitch {
    /// A switch whose ports queue up to [`DEFAULT_QUEUE_LEN`] frames.
    pub fn new() -> Self {
        Self::with_queue_len(DEFAULT_QUEUE_LEN)
    }

    /// A switch whose ports queue up to `queue_len` frames (at least 1).
    pub fn with_queue_len(queue_len: usize) -> Self {
        MemorySwitch {
            inner: Arc::new(SwitchInner {
                ports: RwLock::new(Vec::new()),
                queue_len: queue_len.max(1),
                stats: AtomicSwitchStats::default(),
            }),
        }
    }

    /// Plug in a new port with MAC `mac`; it starts up and empty.
    ///
    /// Two ports may share a MAC (both then get frames for it). The port is
    /// unplugged when the [`MemoryLink`] is dropped.
    pub fn port(&self, mac: [u8; 6]) -> MemoryLink {
        let port = Arc::new(Port {
            mac,
            up: AtomicBool::new(true),
            queue: Mutex::new(PortQueue {
                frames: VecDeque::new(),
                generation: 0,
            }),
            ready: Condvar::new(),
            stats: AtomicPortStats::default(),
        });
        self.inner.ports.write().push(port.clone());
        MemoryLink {
            switch: self.clone(),
            port,
        }
    }

    /// Receive queue length of each port.
    pub fn queue_len(&self) -> usize {
        self.inner.queue_len
    }

    /// Number of ports plugged in.
    pub fn port_count(&self) -> usize {
        self.inner.ports.read().len()
    }

    /// Pull out (`false`) or plug back in (`true`) the cable of every port
    /// with MAC `mac`. Returns whether any port has that MAC.
    pub fn set_link_up(&self, mac: [u8; 6], up: bool) -> bool {
        let ports = self.inner.ports.read();
        let mut found = false;
        for p in ports.iter().filter(|p| p.mac == mac) {
            p.set_up(up);
            found = true;
        }
        found
    }

    /// Counters of the first port with MAC `mac`.
    pub fn port_stats(&self, mac: [u8; 6]) -> Option<PortStats> {
        let ports = self.inner.ports.read();
        ports.iter().find(|p| p.mac == mac).map(|p| p.stats.get())
    }

    /// Switch-wide counters.
    pub fn stats(&self) -> SwitchStats {
        let s = &self.inner.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SwitchStats {
            frames: l(&s.frames),
            unicast: l(&s.unicast),
            broadcast: l(&s.broadcast),
            flooded: l(&s.flooded),
            delivered: l(&s.delivered),
            dropped_overflow: l(&s.dropped_overflow),
            dropped_down: l(&s.dropped_down),
        }
    }

    /// Forward `frame` from port `from` (see the module doc for the rules).
    fn forward(&self, from: &Arc<Port>, frame: &[u8]) {
        let sw = &self.inner.stats;
        let limit = self.inner.queue_len;
        bump(&sw.frames);
        let dst: [u8; 6] = frame[..6].try_into().expect("length checked");
        let ports = self.inner.ports.read();
        let others = || ports.iter().filter(|p| !Arc::ptr_eq(p, from));
        if dst[0] & 1 != 0 {
            bump(&sw.broadcast);
            others().for_each(|p| {
                p.deliver(frame, limit, sw);
            });
        } else if others().any(|p| p.mac == dst) {
            bump(&sw.unicast);
            others().filter(|p| p.mac == dst).for_each(|p| {
                p.deliver(frame, limit, sw);
            });
        } else {
            bump(&sw.flooded);
            others().for_each(|p| {
                p.deliver(frame, limit, sw);
            });
        }
    }
}

/// One port of a [`MemorySwitch`]: a [`Link`].
///
/// Dropping it unplugs the port (queued frames are discarded).
pub struct MemoryLink {
    switch: MemorySwitch,
    port: Arc<Port>,
}

impl fmt::Debug for MemoryLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryLink")
            .field("mac", &self.port.mac)
            .field("up", &self.port.up.load(Ordering::Relaxed))
            .finish()
    }
}

impl MemoryLink {
    /// Two ports on a new switch, with MACs `02:00:00:00:00:01` and
    /// `02:00:00:00:00:02`.
    pub fn pair() -> (MemoryLink, MemoryLink) {
        let sw = MemorySwitch::new();
        let a = sw.port([0x02, 0, 0, 0, 0, 1]);
        let b = sw.port([0x02, 0, 0, 0, 0, 2]);
        (a, b)
    }

    /// The switch this port is plugged into.
    pub fn switch(&self) -> &MemorySwitch {
        &self.switch
    }

    /// Pull out (`false`) or plug back in (`true`) this port's cable.
    ///
    /// Going down discards the frames waiting in the receive queue. Any
    /// thread sleeping on the port's [`RxSignal`] is woken.
    pub fn set_link_up(&self, up: bool) {
        self.port.set_up(up);
    }

    /// A handle to this port that stays valid after the link has been moved
    /// into a stack (to pull the cable or read counters from a test).
    pub fn handle(&self) -> MemoryPortHandle {
        MemoryPortHandle {
            port: self.port.clone(),
        }
    }

    /// This port's counters.
    pub fn stats(&self) -> PortStats {
        self.port.stats.get()
    }

    /// Frames waiting in the receive queue.
    pub fn queued(&self) -> usize {
        self.port.queue.lock().frames.len()
    }
}

impl Drop for MemoryLink {
    fn drop(&mut self) {
        self.switch
            .inner
            .ports
            .write()
            .retain(|p| !Arc::ptr_eq(p, &self.port));
        // Wake anyone still sleeping on the rx signal (a generation change
        // makes the wake-up stick).
        let mut q = self.port.queue.lock();
        q.frames.clear();
        q.generation = q.generation.wrapping_add(1);
        drop(q);
        self.port.ready.notify_all();
    }
}

impl Link for MemoryLink {
    fn hardware_addr(&self) -> [u8; 6] {
        self.port.mac
    }

    fn link_up(&mut self) -> bool {
        self.port.up.load(Ordering::SeqCst)
    }

    /// Frames longer than [`MAX_FRAME_LEN`] fail with [`LinkError::TooLong`];
    /// frames shorter than 6 bytes (no destination MAC) with
    /// [`LinkError::Device`].
    fn transmit(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        if !self.port.up.load(Ordering::SeqCst) {
            bump(&self.port.stats.tx_down);
            return Err(LinkError::Down);
        }
        if frame.len() > MAX_FRAME_LEN {
            return Err(LinkError::TooLong);
        }
        if frame.len() < MIN_FRAME_LEN {
            return Err(LinkError::Device);
        }
        bump(&self.port.stats.tx_frames);
        self.switch.forward(&self.port, frame);
        Ok(())
    }

    fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
        let Some(frame) = self.port.queue.lock().frames.pop_front() else {
            return Ok(None);
        };
        if frame.len() > buf.len() {
            bump(&self.port.stats.rx_too_long);
            return Err(LinkError::TooLong);
        }
        buf[..frame.len()].copy_from_slice(&frame);
        bump(&self.port.stats.rx_frames);
        Ok(Some(frame.len()))
    }

    fn rx_signal(&self) -> Option<Arc<dyn RxSignal>> {
        Some(Arc::new(MemoryRxSignal {
            port: self.port.clone(),
        }))
    }
}

/// A handle to a [`MemoryLink`]'s port, usable from any thread.
#[derive(Clone)]
pub struct MemoryPortHandle {
    port: Arc<Port>,
}

impl fmt::Debug for MemoryPortHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryPortHandle")
            .field("mac", &self.port.mac)
            .finish()
    }
}

impl MemoryPortHandle {
    /// The port's MAC.
    pub fn mac(&self) -> [u8; 6] {
        self.port.mac
    }

    /// Pull out (`false`) or plug back in (`true`) the port's cable; see
    /// [`MemoryLink::set_link_up`].
    pub fn set_link_up(&self, up: bool) {
        self.port.set_up(up);
    }

    /// Whether the port's cable is in.
    pub fn link_up(&self) -> bool {
        self.port.up.load(Ordering::SeqCst)
    }

    /// The port's counters.
    pub fn stats(&self) -> PortStats {
        self.port.stats.get()
    }

    /// Frames waiting in the port's receive queue.
    pub fn queued(&self) -> usize {
        self.port.queue.lock().frames.len()
    }
}

/// [`RxSignal`] of a memory port: returns when its queue is non-empty,
/// its link state changes, or the timeout passes.
struct MemoryRxSignal {
    port: Arc<Port>,
}

impl RxSignal for MemoryRxSignal {
    fn wait(&self, timeout: Option<Duration>) {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut q = self.port.queue.lock();
        let generation = q.generation;
        // The queue is checked under the lock that `deliver` holds while
        // pushing, so a frame that arrived before we got here is seen, and
        // one that arrives later notifies us after we are asleep.
        while q.frames.is_empty() && q.generation == generation {
            match (timeout, deadline) {
                (Some(t), _) if t.is_zero() => return,
                (Some(_), Some(d)) => {
                    if self.port.ready.wait_until(&mut q, d).timed_out() {
                        return;
                    }
                }
                // No timeout, or one too large to represent.
                _ => self.port.ready.wait(&mut q),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;
    use std::vec;

    const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];
    const C: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc];
    const BCAST: [u8; 6] = [0xff; 6];

    fn frame(dst: [u8; 6], src: [u8; 6], tag: u8) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[12] = 0x08;
        f[14] = tag;
        f
    }

    fn recv(l: &mut MemoryLink) -> Option<Vec<u8>> {
        let mut buf = [0u8; MAX_FRAME_LEN];
        l.receive(&mut buf).unwrap().map(|n| buf[..n].to_vec())
    }

    #[test]
    fn unicast_goes_to_one_port() {
        let sw = MemorySwitch::new();
        let (mut a, mut b, mut c) = (sw.port(A), sw.port(B), sw.port(C));
        a.transmit(&frame(B, A, 1)).unwrap();
        assert_eq!(recv(&mut b), Some(frame(B, A, 1)));
        assert_eq!(recv(&mut b), None);
        assert_eq!(recv(&mut c), None);
        assert_eq!(recv(&mut a), None);
        let s = sw.stats();
        assert_eq!((s.frames, s.unicast, s.delivered), (1, 1, 1));
        assert_eq!(a.stats().tx_frames, 1);
        assert_eq!(b.stats().rx_frames, 1);
    }

    #[test]
    fn broadcast_and_multicast_go_to_all_others() {
        let sw = MemorySwitch::new();
        let (mut a, mut b, mut c) = (sw.port(A), sw.port(B), sw.port(C));
        a.transmit(&frame(BCAST, A, 1)).unwrap();
        let mcast = [0x01, 0x00, 0x5e, 0, 0, 1];
        a.transmit(&frame(mcast, A, 2)).unwrap();
        for l in [&mut b, &mut c] {
            assert_eq!(recv(l), Some(frame(BCAST, A, 1)));
            assert_eq!(recv(l), Some(frame(mcast, A, 2)));
            assert_eq!(recv(l), None);
        }
        assert_eq!(recv(&mut a), None, "no echo to the sender");
        assert_eq!(sw.stats().broadcast, 2);
    }

    #[test]
    fn unknown_unicast_is_flooded() {
        let sw = MemorySwitch::new();
        let (mut a, mut b, mut c) = (sw.port(A), sw.port(B), sw.port(C));
        let unknown = [0x02, 9, 9, 9, 9, 9];
        b.transmit(&frame(unknown, B, 7)).unwrap();
        assert_eq!(recv(&mut a), Some(frame(unknown, B, 7)));
        assert_eq!(recv(&mut c), Some(frame(unknown, B, 7)));
        assert_eq!(recv(&mut b), None);
        assert_eq!(sw.stats().flooded, 1);
    }

    #[test]
    fn pair_macs_and_dropped_port_unplugs() {
        let (a, b) = MemoryLink::pair();
        assert_eq!(a.hardware_addr(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(b.hardware_addr(), [2, 0, 0, 0, 0, 2]);
        let sw = a.switch().clone();
        assert_eq!(sw.port_count(), 2);
        drop(b);
        assert_eq!(sw.port_count(), 1);
    }

    #[test]
    fn overflow_is_dropped_and_counted() {
        let sw = MemorySwitch::with_queue_len(4);
        let (mut a, mut b) = (sw.port(A), sw.port(B));
        for i in 0..10 {
            a.transmit(&frame(B, A, i)).unwrap();
        }
        assert_eq!(b.queued(), 4);
        assert_eq!(b.stats().rx_overflow, 6);
        assert_eq!(sw.stats().dropped_overflow, 6);
        assert_eq!(sw.port_stats(B).unwrap().rx_overflow, 6);
        // The oldest frames were kept, in order.
        for i in 0..4 {
            assert_eq!(recv(&mut b).unwrap()[14], i);
        }
        assert_eq!(recv(&mut b), None);
    }

    #[test]
    fn default_queue_len() {
        assert_eq!(MemorySwitch::new().queue_len(), DEFAULT_QUEUE_LEN);
    }

    #[test]
    fn short_buffer_drops_frame() {
        let (mut a, mut b) = MemoryLink::pair();
        a.transmit(&frame(b.hardware_addr(), A, 1)).unwrap();
        a.transmit(&frame(b.hardware_addr(), A, 2)).unwrap();
        let mut small = [0u8; 10];
        assert_eq!(b.receive(&mut small), Err(LinkError::TooLong));
        assert_eq!(recv(&mut b).unwrap()[14], 2);
        assert_eq!(b.stats().rx_too_long, 1);
    }

    #[test]
    fn bad_lengths_rejected() {
        let (mut a, _b) = MemoryLink::pair();
        assert_eq!(
            a.transmit(&[0u8; MAX_FRAME_LEN + 1]),
            Err(LinkError::TooLong)
        );
        assert_eq!(a.transmit(&[0u8; 5]), Err(LinkError::Device));
    }

    #[test]
    fn link_down() {
        let sw = MemorySwitch::new();
        let (mut a, mut b) = (sw.port(A), sw.port(B));
        let hb = b.handle();
        a.transmit(&frame(B, A, 1)).unwrap();
        assert_eq!(b.queued(), 1);

        hb.set_link_up(false);
        assert!(!b.link_up());
        assert!(!hb.link_up());
        assert_eq!(b.queued(), 0, "queued frames lost with the carrier");
        assert_eq!(b.transmit(&frame(A, B, 2)), Err(LinkError::Down));
        a.transmit(&frame(B, A, 3)).unwrap();
        assert_eq!(recv(&mut b), None);
        let s = b.stats();
        assert_eq!((s.rx_down, s.tx_down), (2, 1));
        assert_eq!(sw.stats().dropped_down, 1);

        assert!(sw.set_link_up(B, true));
        assert!(b.link_up());
        a.transmit(&frame(B, A, 4)).unwrap();
        assert_eq!(recv(&mut b).unwrap()[14], 4);

        a.set_link_up(false);
        assert!(!a.link_up());
        assert_eq!(a.transmit(&frame(B, A, 5)), Err(LinkError::Down));
        assert!(!sw.set_link_up([9; 6], false));
    }

    #[test]
    fn rx_signal_returns_at_once_when_queued() {
        let (mut a, b) = MemoryLink::pair();
        let sig = b.rx_signal().unwrap();
        a.transmit(&frame(b.hardware_addr(), A, 1)).unwrap();
        let t = Instant::now();
        sig.wait(None); // would hang if the queued frame were missed
        sig.wait(Some(Duration::from_secs(10)));
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn rx_signal_times_out() {
        let (_a, b) = MemoryLink::pair();
        let sig = b.rx_signal().unwrap();
        let t = Instant::now();
        sig.wait(Some(Duration::from_millis(50)));
        let e = t.elapsed();
        assert!(e >= Duration::from_millis(50) && e < Duration::from_secs(5));
        sig.wait(Some(Duration::ZERO));
    }

    #[test]
    fn rx_signal_wakes_waiting_thread() {
        let (mut a, mut b) = MemoryLink::pair();
        let sig = b.rx_signal().unwrap();
        let dst = b.hardware_addr();
        let t = Instant::now();
        let waiter = thread::spawn(move || {
            sig.wait(Some(Duration::from_secs(20)));
            t.elapsed()
        });
        thread::sleep(Duration::from_millis(100));
        a.transmit(&frame(dst, A, 1)).unwrap();
        let woke = waiter.join().unwrap();
        assert!(woke >= Duration::from_millis(100));
        assert!(woke < Duration::from_secs(10), "woke after {woke:?}");
        assert!(recv(&mut b).is_some());
    }

    #[test]
    fn rx_signal_wakes_on_link_change() {
        let (_a, b) = MemoryLink::pair();
        let sig = b.rx_signal().unwrap();
        let h = b.handle();
        let t = Instant::now();
        let waiter = thread::spawn(move || {
            sig.wait(None);
            t.elapsed()
        });
        thread::sleep(Duration::from_millis(50));
        h.set_link_up(false);
        assert!(waiter.join().unwrap() < Duration::from_secs(10));
    }

    #[test]
    fn rx_signal_wakes_when_link_dropped() {
        let (_a, b) = MemoryLink::pair();
        let sig = b.rx_signal().unwrap();
        let waiter = thread::spawn(move || sig.wait(None));
        thread::sleep(Duration::from_millis(50));
        drop(b);
        waiter.join().unwrap();
    }

    #[test]
    fn link_is_send_and_handles_are_sync() {
        fn send<T: Send>() {}
        fn sync<T: Send + Sync>() {}
        send::<MemoryLink>();
        sync::<MemorySwitch>();
        sync::<MemoryPortHandle>();
    }

    #[test]
    fn threaded_traffic() {
        let sw = MemorySwitch::new();
        let mut a = sw.port(A);
        let mut b = sw.port(B);
        let sig = b.rx_signal().unwrap();
        let tx = thread::spawn(move || {
            for i in 0..500u32 {
                let mut f = frame(B, A, 0);
                f[14..18].copy_from_slice(&i.to_be_bytes());
                while a.transmit(&f).is_err() {}
                if i % 50 == 0 {
                    thread::yield_now();
                }
            }
        });
        let mut next = 0u32;
        while next < 500 {
            match recv(&mut b) {
                Some(f) => {
                    assert_eq!(u32::from_be_bytes(f[14..18].try_into().unwrap()), next);
                    next += 1;
                }
                None => sig.wait(Some(Duration::from_secs(5))),
            }
        }
        tx.join().unwrap();
    }
}
