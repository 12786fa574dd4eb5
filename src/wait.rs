//! The one wait loop every backend uses for blocking calls.
//!
//! A blocking call is written as an *attempt*: a closure that takes the
//! device lock, tries the operation once, releases the lock and says either
//! "done" or "not yet (and wake me by this instant if nothing else does)".
//! [`block_on`] repeats the attempt, sleeping on the platform's epoch in
//! between — never with the lock held — until it succeeds, fails, or the
//! deadline passes. Because the epoch is read *before* each attempt, a
//! wake-up that lands between the attempt and the sleep is never lost.

use crate::error::{Error, Result};
use crate::platform::Platform;
use crate::time::{Deadline, Instant};

/// What one attempt at a blocking operation found.
#[derive(Debug)]
pub enum Attempt<T> {
    /// Finished, successfully or not.
    Done(Result<T>),
    /// Cannot make progress yet. `wake_at` is an instant at which trying
    /// again is useful even without a notification (a protocol timer the
    /// caller itself drives), or `None`.
    Pending {
        /// Try again at this instant at the latest.
        wake_at: Option<Instant>,
    },
}

impl<T> Attempt<T> {
    /// Not ready, no timer of interest.
    pub const PENDING: Attempt<T> = Attempt::Pending { wake_at: None };
}

/// How a call may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocking {
    /// Wait until the deadline.
    Until(Deadline),
    /// Do not wait: a pending attempt yields this error (usually `WouldBlock`).
    No(Error),
}

/// Run `attempt` until it is done, waiting on `platform` in between.
///
/// Returns [`Error::Timeout`] when the deadline passes, or the error in
/// [`Blocking::No`] if the first attempt is pending.
pub fn block_on<P: Platform + ?Sized, T>(
    platform: &P,
    blocking: Blocking,
    mut attempt: impl FnMut() -> Attempt<T>,
) -> Result<T> {
    loop {
        let seen = platform.epoch();
        let wake_at = match attempt() {
            Attempt::Done(r) => return r,
            Attempt::Pending { wake_at } => wake_at,
        };
        let deadline = match blocking {
            Blocking::No(e) => return Err(e),
            Blocking::Until(d) => d,
        };
        let now = platform.now();
        if deadline.expired(now) {
            return Err(Error::Timeout);
        }
        let until = match (deadline.instant(), wake_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        platform.wait(seen, until);
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::platform::StdPlatform;
    use core::time::Duration;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn times_out_and_wakes() {
        let p = Arc::new(StdPlatform::new());
        let d = Deadline::after(p.now(), Duration::from_millis(20));
        let r: Result<()> = block_on(&*p, Blocking::Until(d), || Attempt::PENDING);
        assert_eq!(r, Err(Error::Timeout));
        assert!(p.now() >= d.instant().unwrap());

        let r: Result<()> = block_on(&*p, Blocking::No(Error::WouldBlock), || Attempt::PENDING);
        assert_eq!(r, Err(Error::WouldBlock));

        let flag = Arc::new(AtomicBool::new(false));
        let (p2, f2) = (p.clone(), flag.clone());
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            f2.store(true, Ordering::SeqCst);
            p2.notify();
        });
        let r = block_on(&*p, Blocking::Until(Deadline::Never), || {
            if flag.load(Ordering::SeqCst) {
                Attempt::Done(Ok(7))
            } else {
                Attempt::PENDING
            }
        });
        assert_eq!(r, Ok(7));
        t.join().unwrap();
    }
}
