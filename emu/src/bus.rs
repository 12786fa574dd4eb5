//! A simulated bus clock: every emulator counts the bytes and transactions
//! that cross its bus (SPI or UART), split into payload and overhead, so a
//! bench can report what a transfer would cost at a chosen bus rate and how
//! much of the bus carried user data.
//!
//! Emulators do not sleep to model the bus rate; they count. A bench turns
//! counts into time with [`BusStats::time_at`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Bus counters shared between an emulator and whoever reads them.
#[derive(Debug, Default)]
pub struct BusCounter {
    bytes: AtomicU64,
    payload: AtomicU64,
    transactions: AtomicU64,
}

/// A snapshot of [`BusCounter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Every byte clocked over the bus, both directions (for SPI, each byte
    /// of a full-duplex transfer counts once).
    pub bytes: u64,
    /// Bytes of user payload among them (socket data, frame contents).
    pub payload: u64,
    /// Bus transactions (SPI chip-select cycles, AT commands and replies).
    pub transactions: u64,
}

impl BusCounter {
    /// A new counter behind an `Arc`, ready to share.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Count one transaction of `bytes` bytes.
    pub fn transaction(&self, bytes: usize) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Count bytes within the current transaction.
    pub fn bytes(&self, bytes: usize) {
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Mark `bytes` already counted as user payload.
    pub fn payload(&self, bytes: usize) {
        self.payload.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Read the counters.
    pub fn snapshot(&self) -> BusStats {
        BusStats {
            bytes: self.bytes.load(Ordering::Relaxed),
            payload: self.payload.load(Ordering::Relaxed),
            transactions: self.transactions.load(Ordering::Relaxed),
        }
    }
}

impl BusStats {
    /// Counters accumulated since `earlier`.
    pub fn since(&self, earlier: &BusStats) -> BusStats {
        BusStats {
            bytes: self.bytes - earlier.bytes,
            payload: self.payload - earlier.payload,
            transactions: self.transactions - earlier.transactions,
        }
    }

    /// Share of bus bytes that were payload (0.0 when nothing was sent).
    pub fn efficiency(&self) -> f64 {
        if self.bytes == 0 {
            0.0
        } else {
            self.payload as f64 / self.bytes as f64
        }
    }

    /// Time the bus needs for these bytes at `bits_per_byte` bits per byte
    /// (8 for SPI, 10 for 8N1 UART) and `hz` bits per second, plus
    /// `per_transaction` of fixed cost each (chip-select setup, turnaround).
    pub fn time_at(&self, hz: u64, bits_per_byte: u64, per_transaction: Duration) -> Duration {
        let bits = self.bytes as u128 * bits_per_byte as u128;
        let wire = Duration::from_nanos((bits * 1_000_000_000 / hz.max(1) as u128) as u64);
        wire + per_transaction * self.transactions as u32
    }

    /// Payload throughput in bytes per second if the bus were the only cost.
    pub fn payload_rate_at(&self, hz: u64, bits_per_byte: u64, per_transaction: Duration) -> f64 {
        let t = self
            .time_at(hz, bits_per_byte, per_transaction)
            .as_secs_f64();
        if t == 0.0 {
            0.0
        } else {
            self.payload as f64 / t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_rates() {
        let c = BusCounter::new();
        let before = c.snapshot();
        c.transaction(1003);
        c.payload(1000);
        c.transaction(3);
        let s = c.snapshot().since(&before);
        assert_eq!(
            s,
            BusStats {
                bytes: 1006,
                payload: 1000,
                transactions: 2
            }
        );
        assert!((s.efficiency() - 1000.0 / 1006.0).abs() < 1e-9);
        // 1006 bytes * 8 bits at 8 MHz = 1006 us.
        assert_eq!(
            s.time_at(8_000_000, 8, Duration::ZERO),
            Duration::from_micros(1006)
        );
        assert_eq!(
            s.time_at(8_000_000, 8, Duration::from_micros(1)),
            Duration::from_micros(1008)
        );
    }
}
