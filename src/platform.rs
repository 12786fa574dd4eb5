//! What a backend needs from the machine it runs on: a clock, a lock, and a
//! way to wait for "something changed" without holding that lock.
//!
//! Waiting uses an *epoch*: a counter the device bumps (with
//! [`Platform::notify`]) whenever socket state may have changed — a frame
//! arrived, a timer fired, a chip raised its interrupt. A blocking call reads
//! the epoch, tries its operation under the device lock, releases the lock,
//! and then waits for the epoch to move past what it read. A notification
//! that lands between the try and the wait is therefore never lost.
//!
//! * [`StdPlatform`] (feature `std`): a condition variable; waiting threads
//!   sleep until notified or until their deadline.
//! * [`SpinPlatform`]: bare metal. Waiting returns at once, so a blocking
//!   call keeps polling the device itself (see the stack docs); plug in your
//!   own [`Platform`] to sleep in `WFI` and notify from an interrupt.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::time::Instant;

/// Clock, lock and wait primitives for one device.
pub trait Platform: Send + Sync {
    /// The lock that guards device state (held only for bounded work).
    type RawMutex: lock_api::RawMutex + Send + Sync;

    /// Monotonic time.
    fn now(&self) -> Instant;

    /// The current epoch.
    fn epoch(&self) -> u32;

    /// Block until the epoch differs from `seen`, or `until` passes, or
    /// spuriously. Must not be called with the device lock held.
    fn wait(&self, seen: u32, until: Option<Instant>);

    /// Advance the epoch and wake every waiter.
    fn notify(&self);

    /// Whether `wait` really sleeps (true) or returns at once (false). A
    /// backend whose waits do not sleep drives the device itself while a
    /// call blocks.
    fn waits_block(&self) -> bool {
        true
    }
}

/// A clock source for [`SpinPlatform`].
pub trait Clock: Send + Sync {
    /// Monotonic time.
    fn now(&self) -> Instant;
}

impl<F: Fn() -> Instant + Send + Sync> Clock for F {
    fn now(&self) -> Instant {
        self()
    }
}

/// Bare-metal platform: a spin lock, the given clock, and waits that return
/// at once (the blocked call keeps polling the device).
pub struct SpinPlatform<C: Clock> {
    clock: C,
    epoch: AtomicU32,
}

impl<C: Clock> SpinPlatform<C> {
    /// A platform reading time from `clock`.
    pub const fn new(clock: C) -> Self {
        SpinPlatform {
            clock,
            epoch: AtomicU32::new(0),
        }
    }
}

impl<C: Clock> Platform for SpinPlatform<C> {
    type RawMutex = spin::mutex::Mutex<()>;

    fn now(&self) -> Instant {
        self.clock.now()
    }
    fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Acquire)
    }
    fn wait(&self, _seen: u32, _until: Option<Instant>) {
        core::hint::spin_loop();
    }
    fn notify(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
    fn waits_block(&self) -> bool {
        false
    }
}

#[cfg(feature = "std")]
pub use self::std_platform::StdPlatform;

#[cfg(feature = "std")]
mod std_platform {
    use super::Platform;
    use crate::time::Instant;
    use std::sync::{Condvar, Mutex};

    /// Host platform: `std::time::Instant`, a parking_lot mutex, and a
    /// condition variable for waits.
    pub struct StdPlatform {
        start: std::time::Instant,
        /// The epoch and how many threads wait on it (both under one lock,
        /// so `notify` can skip the wake-up syscall when nobody waits).
        epoch: Mutex<Epoch>,
        cond: Condvar,
    }

    #[derive(Default)]
    struct Epoch {
        value: u32,
        waiters: usize,
    }

    impl Default for StdPlatform {
        fn default() -> Self {
            Self::new()
        }
    }

    impl StdPlatform {
        /// A platform whose clock starts now.
        pub fn new() -> Self {
            StdPlatform {
                start: std::time::Instant::now(),
                epoch: Mutex::new(Epoch::default()),
                cond: Condvar::new(),
            }
        }

        /// Convert a crate instant back to a std instant.
        pub fn to_std(&self, i: Instant) -> std::time::Instant {
            self.start + std::time::Duration::from_micros(i.as_micros())
        }
    }

    impl Platform for StdPlatform {
        type RawMutex = parking_lot::RawMutex;

        fn now(&self) -> Instant {
            let us = self.start.elapsed().as_micros();
            Instant::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
        }

        fn epoch(&self) -> u32 {
            self.epoch.lock().unwrap_or_else(|e| e.into_inner()).value
        }

        fn wait(&self, seen: u32, until: Option<Instant>) {
            let mut guard = self.epoch.lock().unwrap_or_else(|e| e.into_inner());
            guard.waiters += 1;
            while guard.value == seen {
                match until {
                    None => {
                        guard = self.cond.wait(guard).unwrap_or_else(|e| e.into_inner());
                    }
                    Some(at) => {
                        let now = self.now();
                        if now >= at {
                            break;
                        }
                        let left = at.saturating_since(now);
                        guard = self
                            .cond
                            .wait_timeout(guard, left)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                }
            }
            guard.waiters -= 1;
        }

        fn notify(&self) {
            let mut guard = self.epoch.lock().unwrap_or_else(|e| e.into_inner());
            guard.value = guard.value.wrapping_add(1);
            let waiters = guard.waiters;
            drop(guard);
            if waiters > 0 {
                self.cond.notify_all();
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::sync::Arc;
        use std::time::Duration;

        #[test]
        fn wait_returns_on_notify_and_on_deadline() {
            let p = Arc::new(StdPlatform::new());
            let seen = p.epoch();
            let p2 = p.clone();
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                p2.notify();
            });
            p.wait(seen, None);
            assert_ne!(p.epoch(), seen);
            t.join().unwrap();

            let seen = p.epoch();
            let until = p.now() + Duration::from_millis(10);
            p.wait(seen, Some(until));
            assert!(p.now() >= until);
            // A notify that happened before the wait is not lost.
            let seen = p.epoch();
            p.notify();
            p.wait(seen, None);
        }
    }
}
