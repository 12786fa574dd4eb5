//! Time as the crate sees it: a monotonic [`Instant`] read from the
//! platform clock, and a [`Deadline`] for blocking calls.
//!
//! Deadlines are absolute so that a loop of partial sends or receives keeps
//! one budget (Go's `SetDeadline`), rather than restarting a timeout on each
//! call. A socket's own timeouts (`SO_RCVTIMEO` / `SO_SNDTIMEO`) are turned
//! into a deadline when the call starts, and the earlier of the two wins.

use core::ops::{Add, Sub};
use core::time::Duration;

/// A point on the platform's monotonic clock, in microseconds since an
/// arbitrary epoch (usually boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Instant {
    micros: u64,
}

impl Instant {
    /// The clock's epoch.
    pub const ZERO: Instant = Instant { micros: 0 };

    /// An instant `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Instant { micros }
    }

    /// An instant `millis` milliseconds after the epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Instant {
            micros: millis.saturating_mul(1000),
        }
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.micros
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.micros / 1000
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.micros.saturating_sub(earlier.micros))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        let add = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Instant {
            micros: self.micros.saturating_add(add),
        }
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, d: Duration) -> Instant {
        let sub = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Instant {
            micros: self.micros.saturating_sub(sub),
        }
    }
}

/// When a blocking call gives up with [`Error::Timeout`](crate::Error::Timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Deadline {
    /// Wait as long as it takes (bounded only by the socket's own timeout).
    #[default]
    Never,
    /// Give up at this instant.
    At(Instant),
}

impl Deadline {
    /// A deadline `d` after `now`.
    pub fn after(now: Instant, d: Duration) -> Self {
        Deadline::At(now + d)
    }

    /// The earlier of two deadlines.
    pub fn min(self, other: Deadline) -> Deadline {
        match (self, other) {
            (Deadline::Never, o) => o,
            (s, Deadline::Never) => s,
            (Deadline::At(a), Deadline::At(b)) => Deadline::At(a.min(b)),
        }
    }

    /// The deadline as an instant, `None` for [`Deadline::Never`].
    pub fn instant(self) -> Option<Instant> {
        match self {
            Deadline::Never => None,
            Deadline::At(i) => Some(i),
        }
    }

    /// Whether the deadline has passed at `now`.
    pub fn expired(self, now: Instant) -> bool {
        matches!(self, Deadline::At(at) if now >= at)
    }

    /// Combine with an optional per-socket timeout that starts at `now`.
    pub fn with_timeout(self, now: Instant, timeout: Option<Duration>) -> Deadline {
        match timeout {
            Some(t) => self.min(Deadline::after(now, t)),
            None => self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_min_and_expiry() {
        let t = Instant::from_millis(10);
        let d = Deadline::after(t, Duration::from_millis(5));
        assert_eq!(d, Deadline::At(Instant::from_millis(15)));
        assert_eq!(Deadline::Never.min(d), d);
        assert_eq!(
            d.min(Deadline::At(Instant::from_millis(12))).instant(),
            Some(Instant::from_millis(12))
        );
        assert!(!d.expired(Instant::from_millis(14)));
        assert!(d.expired(Instant::from_millis(15)));
        assert!(!Deadline::Never.expired(Instant::from_micros(u64::MAX)));
        assert_eq!(
            Deadline::Never.with_timeout(t, Some(Duration::from_millis(1))),
            Deadline::At(Instant::from_millis(11))
        );
    }

    #[test]
    fn instant_saturates() {
        let far = Instant::from_micros(u64::MAX - 1) + Duration::from_secs(1);
        assert_eq!(far.as_micros(), u64::MAX);
        assert_eq!(
            Instant::ZERO.saturating_since(Instant::from_millis(1)),
            Duration::ZERO
        );
    }
}
