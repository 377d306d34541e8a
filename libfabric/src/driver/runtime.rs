//! Driving a [`Driver`] on a tokio task (feature `tokio`).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::JoinHandle;

use crate::cq::{CompletionQueue, Entry};

use super::{yield_now, Driver, Idle, ProgressMode, Shared, NO_SPINNER, POLLED_SPIN};

/// How often an idle polling driver looks at a queue without a wait
/// descriptor (tokio's timer resolution).
pub(crate) const POLL_TICK: Duration = Duration::from_millis(1);
/// How long a driver sleeping on the wait descriptor sleeps at most: a safety
/// net should a provider's descriptor miss an edge, so a completion is late
/// at worst, never lost.
pub(crate) const WAIT_TICK: Duration = Duration::from_millis(50);

impl<E: Entry> Driver<E> {
    /// Starts a tokio task that reads the queue and wakes futures, until the
    /// last handle to this driver is dropped. With [`ProgressMode::Wait`] it
    /// spins for 200 µs after a completion or a post, then sleeps on the
    /// queue's wait descriptor when the provider gives one (`fi_trywait`,
    /// then the descriptor in tokio's reactor); otherwise it spins for
    /// 2.5 ms, then polls every millisecond. While a future reads the queue
    /// itself (see [`ProgressMode`]), the task rests.
    ///
    /// Must be called within a tokio runtime with the time and I/O drivers
    /// enabled.
    pub fn spawn(&self) -> JoinHandle<()> {
        let shared = self.shared.clone();
        let fd = self.wait_fd().map(|fd| fd.as_raw_fd()).filter(|_| shared.config.mode == ProgressMode::Wait);
        tokio::spawn(async move {
            let Some(fd) = fd else { return poll_loop(&shared).await };
            match watch(fd, shared.cq.clone()) {
                Ok(fd) => wait_loop(&shared, &fd).await,
                Err(error) => {
                    tracing::warn!(%error, "the CQ's wait descriptor cannot be watched; polling instead");
                    poll_loop(&shared).await
                }
            }
        })
    }
}

/// A queue's wait descriptor, with the queue (completion or event queue)
/// that owns it and so keeps it open.
pub(crate) struct WaitFd<Q> {
    fd: RawFd,
    _queue: Q,
}

impl<Q> AsRawFd for WaitFd<Q> {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

/// Registers `fd`, the wait descriptor of `queue`, with tokio's reactor.
pub(crate) fn watch<Q>(fd: RawFd, queue: Q) -> std::io::Result<AsyncFd<WaitFd<Q>>> {
    let owner = WaitFd { fd, _queue: queue };
    // SAFETY: `owner` holds the queue, which keeps its descriptor open and
    // unchanged for as long as the AsyncFd holds `owner`.
    unsafe { AsyncFd::register_with_interest(owner, Interest::READABLE) }.map_err(Into::into)
}

fn closing<E: Entry>(shared: &Shared<E>) -> bool {
    shared.closing.load(Ordering::Acquire)
}

/// Reads a batch; on a queue error logs it and backs off (the error is the
/// queue's, not an operation's, so no future can be told).
async fn progress<E: Entry>(shared: &Shared<E>) -> usize {
    match shared.progress() {
        Ok(n) => n,
        Err(error) => {
            tracing::error!(%error, "reading the completion queue failed");
            tokio::time::sleep(POLL_TICK).await;
            0
        }
    }
}

async fn wait_loop<E: Entry>(shared: &Arc<Shared<E>>, fd: &AsyncFd<WaitFd<CompletionQueue<E>>>) {
    let mut tick = ticks();
    let mut idle = Idle::default();
    while !closing(shared) {
        if spinning(shared) {
            // Then read once, whatever ended the rest.
            rest(shared, &mut tick).await;
        }
        if shared.idled.swap(false, Ordering::Relaxed) {
            idle.expire(&shared.activity);
        }
        // Yield after every read: the futures just woken may sit in this
        // worker's LIFO slot, where no other worker can steal them, so a
        // driver that loops without yielding would starve them.
        if progress(shared).await > 0 {
            yield_now().await;
            continue;
        }
        // Spin a little before sleeping (see `SPIN`).
        if !idle.check(&shared.activity, shared.spin()) {
            yield_now().await;
            continue;
        }
        let Some(ready) = shared.trywait_while_open() else {
            // An endpoint of this queue closed: see `Shared::endpoint_closed`.
            return poll_loop(shared).await;
        };
        match ready {
            Ok(true) => {}
            // Work is pending inside the provider that a read has not yet
            // turned into a completion: let others run, then read again.
            Ok(false) => {
                yield_now().await;
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "fi_trywait");
                tokio::time::sleep(POLL_TICK).await;
                continue;
            }
        }
        if !fall_asleep(shared, &idle) {
            continue;
        }
        tokio::select! {
            ready = fd.readable() => {
                if let Ok(mut guard) = ready {
                    guard.clear_ready();
                }
                // A completion: more may follow soon.
                shared.activity.bump();
            }
            // A post (which bumped the activity), or a future that stopped
            // reading the queue.
            _ = shared.wake.notified() => {}
            // Only the safety net: read once, then sleep again.
            _ = tokio::time::sleep(WAIT_TICK) => {}
        }
        shared.asleep.store(false, Ordering::SeqCst);
    }
}

async fn poll_loop<E: Entry>(shared: &Arc<Shared<E>>) {
    let busy = shared.config.mode == ProgressMode::BusyPoll;
    shared.spin.store(POLLED_SPIN.as_nanos() as u64, Ordering::Relaxed);
    let mut tick = ticks();
    let mut idle = Idle::default();
    while !closing(shared) {
        if spinning(shared) {
            // Then read once, whatever ended the rest.
            rest(shared, &mut tick).await;
        }
        if shared.idled.swap(false, Ordering::Relaxed) {
            idle.expire(&shared.activity);
        }
        if progress(shared).await > 0 || busy || !idle.check(&shared.activity, shared.spin()) {
            yield_now().await;
            continue;
        }
        if !fall_asleep(shared, &idle) {
            continue;
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tick.tick() => {}
        }
        shared.asleep.store(false, Ordering::SeqCst);
    }
}

/// Marks the driver asleep, so that a post wakes it, unless a post came
/// since `idle`'s last check (then it stays awake and returns false). The
/// flag is set before that look and a post bumps the activity before it
/// reads the flag, so one of the two sees the other.
fn fall_asleep<E: Entry>(shared: &Shared<E>, idle: &Idle) -> bool {
    shared.asleep.store(true, Ordering::SeqCst);
    if idle.moved(&shared.activity) {
        shared.asleep.store(false, Ordering::SeqCst);
        return false;
    }
    true
}

/// Whether a future reads the queue itself (see `Op::spin`).
fn spinning<E: Entry>(shared: &Shared<E>) -> bool {
    shared.spinner.load(Ordering::Relaxed) != NO_SPINNER
}

/// Rests while a future reads the queue: until it stops (its operation
/// done, or the queue idle), or until the next tick, after which the caller
/// reads once, should that future have stopped being polled unfinished.
async fn rest<E: Entry>(shared: &Shared<E>, tick: &mut tokio::time::Interval) {
    tokio::select! {
        // In this order, rather than tokio's random one: it draws a random
        // number per poll, and the driver rests and wakes once per request
        // on a serving node.
        biased;
        _ = shared.wake.notified() => {}
        _ = tick.tick() => {}
    }
}

/// The driver's ticks while it rests: one timer for the task's life, since a
/// new one per rest is registered with tokio's timer each time, which then
/// wakes its I/O driver (a system call) for the earlier deadline.
fn ticks() -> tokio::time::Interval {
    let mut tick = tokio::time::interval(POLL_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}
