//! Time stamps on the round trip's critical path (the `probe` feature), for
//! `scripts/turns`.
//!
//! In a ping-pong, one side's completion read returns the message, that side
//! does its work and injects the next message, and the peer's read returns
//! it. So a round trip is made of two *turns*, one per side (from the read
//! that returned a message to the call that injects the answer), two
//! *injects*, and two *trips* (from an inject's return to the peer's read
//! that returns the message: the provider's transfer and the read). A
//! side's turn is all the binding controls; injects and trips are the
//! provider's, and the machine's. Instruction counts cannot tell them apart
//! (work done while waiting costs nothing), and on this project's machines
//! wall times wander too much to show a turn's change: the time stamp
//! counter does both.
//!
//! With the feature, each completion read that returns something, and each
//! inject (`fi_inject`, `fi_injectdata`, `fi_tinject`, `fi_tinjectdata`)
//! before and after the call, reads the counter: a turn runs from the last
//! read to the next inject's call, a wait from an inject's return to the
//! next read. At exit the process prints turns, injects and waits to
//! standard error, in nanoseconds, after dropping the first tenth as
//! warm-up (a count, then the 10th, 50th and 90th percentiles):
//!
//! ```text
//! probe: turns 90000 p10 30 p50 40 p90 60, injects 90000 p10 140 p50 150 p90 170, waits 90000 p10 351 p50 371 p90 411 ns
//! ```
//!
//! A client's wait is the server's turn and inject plus two trips. Each
//! probe costs a counter read and a locked push (about 10 ns), on both
//! sides. Without the feature every function here is empty and inlined
//! away.

/// A completion read returned at least one entry.
#[inline(always)]
pub(crate) fn read() {
    #[cfg(feature = "probe")]
    imp::read();
}

/// An inject is about to be made.
#[inline(always)]
pub(crate) fn inject() {
    #[cfg(feature = "probe")]
    imp::inject();
}

/// An inject returned.
#[inline(always)]
pub(crate) fn injected() {
    #[cfg(feature = "probe")]
    imp::injected();
}

#[cfg(feature = "probe")]
mod imp {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::{Mutex, Once};
    use std::time::Instant;

    /// When the last read returned something, and when the last inject
    /// returned; 0 once a turn or a wait has used it.
    static LAST_READ: AtomicU64 = AtomicU64::new(0);
    static LAST_INJECT: AtomicU64 = AtomicU64::new(0);
    /// When the inject being made was called.
    static INJECTING: AtomicU64 = AtomicU64::new(0);
    static TURNS: Mutex<Vec<u64>> = Mutex::new(Vec::new());
    static INJECTS: Mutex<Vec<u64>> = Mutex::new(Vec::new());
    static WAITS: Mutex<Vec<u64>> = Mutex::new(Vec::new());
    /// The counter and the clock at the first probe, to convert at exit.
    static START: Mutex<Option<(u64, Instant)>> = Mutex::new(None);
    static AT_EXIT: Once = Once::new();
    /// Enough for a long run; later samples are not kept.
    const MOST: usize = 1 << 24;

    #[cfg(target_arch = "x86_64")]
    fn now() -> u64 {
        // SAFETY: rdtsc reads the time stamp counter; it has no other effect.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    /// Elsewhere, nanoseconds of the monotonic clock (a clock read costs
    /// more than a counter read, so turns look longer).
    #[cfg(not(target_arch = "x86_64"))]
    fn now() -> u64 {
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }

    fn push(samples: &Mutex<Vec<u64>>, ticks: u64) {
        let mut samples = samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() < MOST {
            samples.push(ticks);
        }
    }

    pub(super) fn read() {
        let t = now();
        let injected = LAST_INJECT.swap(0, Relaxed);
        if injected != 0 {
            push(&WAITS, t.wrapping_sub(injected));
        }
        LAST_READ.store(t, Relaxed);
    }

    pub(super) fn inject() {
        let t = now();
        AT_EXIT.call_once(|| {
            *START.lock().unwrap_or_else(|p| p.into_inner()) = Some((t, Instant::now()));
            // SAFETY: `report` is an `extern "C" fn()` that does not unwind
            // (it catches panics).
            unsafe { libc::atexit(report) };
        });
        let read = LAST_READ.swap(0, Relaxed);
        if read != 0 {
            push(&TURNS, t.wrapping_sub(read));
        }
        INJECTING.store(now(), Relaxed);
    }

    pub(super) fn injected() {
        let t = now();
        push(&INJECTS, t.wrapping_sub(INJECTING.load(Relaxed)));
        LAST_INJECT.store(now(), Relaxed);
    }

    extern "C" fn report() {
        let _ = std::panic::catch_unwind(|| {
            let Some((t0, i0)) = *START.lock().unwrap_or_else(|p| p.into_inner()) else { return };
            let per_ns = now().wrapping_sub(t0) as f64 / i0.elapsed().as_nanos().max(1) as f64;
            let [turns, injects, waits] = [&TURNS, &INJECTS, &WAITS].map(|samples| summary(samples, per_ns));
            eprintln!("probe: turns {turns}, injects {injects}, waits {waits} ns");
        });
    }

    /// "n p10 a p50 b p90 c" of the samples after the first tenth.
    fn summary(samples: &Mutex<Vec<u64>>, per_ns: f64) -> String {
        let samples = samples.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept = samples[samples.len() / 10..].to_vec();
        if kept.is_empty() {
            return "0".into();
        }
        kept.sort_unstable();
        let at = |q: usize| (kept[(kept.len() - 1) * q / 100] as f64 / per_ns).round();
        format!("{} p10 {} p50 {} p90 {}", kept.len(), at(10), at(50), at(90))
    }
}
