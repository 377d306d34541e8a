//! How long futures reading the queue have kept the current thread since one
//! of them last gave it up.
//!
//! A reading future spins inside its poll (`Op::read_awhile`), so a task
//! whose operations keep finishing there never returns `Pending`, and the
//! runtime never gets its thread back: other tasks, timers and I/O wait.
//! tokio's budget (a unit per finished operation, 128 a turn) bounds the
//! operations, not the time spent spinning for them, which is about a
//! microsecond each on shm and tens on tcp;ofi_rxm. So the spinning time is
//! counted here, per thread, and the future yields once it reaches
//! [`HOLD`]: tokio looks at its timers and I/O once per 61 turns, so every
//! millisecond or so at that pace.
//!
//! The time is estimated, not read: a clock read costs about as much as an
//! empty read on shm, so each queue keeps the cost of one of its reads
//! (`ReadCost`), measured now and then.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Spinning after which the thread is given up.
pub(crate) const HOLD: Duration = Duration::from_micros(20);

/// One in this many spins on a thread measures the cost of a read.
const MEASURE_EVERY: u32 = 64;

#[derive(Clone, Copy)]
struct Hold {
    /// Spinning since the thread was last given up (estimated).
    nanos: u64,
    /// Spins on this thread, counted to space out the measurements.
    spins: u32,
}

thread_local! {
    static HOLD_NOW: Cell<Hold> = const { Cell::new(Hold { nanos: 0, spins: 0 }) };
}

/// Whether this spin is to measure the cost of a read (the first one on a
/// thread, then one in [`MEASURE_EVERY`]).
#[inline]
pub(crate) fn measure() -> bool {
    HOLD_NOW.with(|hold| {
        let mut h = hold.get();
        h.spins = h.spins.wrapping_add(1);
        hold.set(h);
        h.spins % MEASURE_EVERY == 1
    })
}

/// Spinning already counted on this thread since it was last given up.
#[inline]
pub(crate) fn held() -> u64 {
    HOLD_NOW.with(|hold| hold.get().nanos)
}

/// Counts `nanos` more spinning; true once the thread has been held long
/// enough.
#[inline]
pub(crate) fn spend(nanos: u64) -> bool {
    HOLD_NOW.with(|hold| {
        let mut h = hold.get();
        h.nanos = h.nanos.saturating_add(nanos);
        hold.set(h);
        h.nanos >= HOLD.as_nanos() as u64
    })
}

/// The thread is being given up (a reading future returns `Pending`).
#[inline]
pub(crate) fn release() {
    HOLD_NOW.with(|hold| {
        let mut h = hold.get();
        h.nanos = 0;
        hold.set(h);
    });
}

/// What one read of a queue costs, in nanoseconds, as last measured.
#[derive(Debug)]
pub(crate) struct ReadCost(AtomicU32);

impl Default for ReadCost {
    /// Until measured, a read is taken to cost a microsecond: spins are short
    /// and yield early rather than late.
    fn default() -> Self {
        ReadCost(AtomicU32::new(1_000))
    }
}

impl ReadCost {
    pub(crate) fn nanos(&self) -> u64 {
        u64::from(self.0.load(Ordering::Relaxed))
    }

    /// `reads` took `spent`.
    pub(crate) fn measured(&self, reads: u32, spent: Duration) {
        if reads > 0 {
            let each = spent.as_nanos() / u128::from(reads);
            self.0.store(each.clamp(1, u128::from(u32::MAX)) as u32, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_after_enough_spinning_until_released() {
        release();
        let hold = HOLD.as_nanos() as u64;
        assert!(!spend(hold - 1));
        assert_eq!(held(), hold - 1);
        assert!(spend(1), "long enough");
        release();
        assert_eq!(held(), 0);
        assert!(!spend(hold / 2));
    }

    #[test]
    fn a_read_costs_what_was_measured_last() {
        let cost = ReadCost::default();
        assert_eq!(cost.nanos(), 1_000);
        cost.measured(16, Duration::from_nanos(480));
        assert_eq!(cost.nanos(), 30);
        cost.measured(0, Duration::from_secs(1));
        assert_eq!(cost.nanos(), 30, "no reads, nothing learnt");
    }

    #[test]
    fn one_spin_in_so_many_measures() {
        let measured = (0..4 * MEASURE_EVERY).filter(|_| measure()).count();
        assert_eq!(measured, 4);
    }
}
