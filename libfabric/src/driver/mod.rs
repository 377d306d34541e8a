//! Async operations: a [`Driver`] reads one completion queue and hands each
//! completion to the future waiting for it; an [`AsyncEndpoint`] posts
//! operations whose futures resolve with the operation's buffer.
//!
//! The core is runtime-agnostic: anything that can wait for a file
//! descriptor can drive a [`Driver`] with [`Driver::progress`],
//! [`Driver::trywait`] and [`Driver::wait_fd`]. The `tokio` feature adds
//! [`Driver::spawn`], which does that on a tokio task.
//!
//! ## What the futures promise
//!
//! - An operation is posted when its method is called, if a credit is free
//!   and the provider takes it at once; otherwise its future posts it when
//!   polled, waiting for a credit or for room. Dropping the future cancels
//!   the operation in both cases.
//! - The buffer is the operation's until libfabric is done with it. A future
//!   resolves with it ([`Completion::buf`] or [`OpError::buf`]).
//! - Dropping a future before it resolves cancels the operation
//!   (`fi_cancel`); the buffer stays with the endpoint until the cancellation
//!   (or the completion, if it won the race) is read, and is freed then.
//! - Every completion goes to the future that posted its operation: a
//!   completion carries a token naming an entry and that entry's generation,
//!   so a late completion never reaches a later operation.
//! - At most [`DriverConfig::in_flight`] operations per endpoint and
//!   direction are posted at once (and no more than the endpoint's queues
//!   hold); more wait for a credit instead of growing memory. A post that meets a full
//!   queue (`FI_EAGAIN`) drives progress and retries, for at most
//!   [`DriverConfig::post_timeout`].

pub(crate) mod credits;
mod endpoint;
mod gate;
mod hold;
mod idle;
mod later;
mod observe;
mod op;
mod pending;
#[cfg(feature = "tokio")]
pub(crate) mod runtime;
mod submit;

use std::cell::UnsafeCell;
use std::fmt;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use crate::cq::{CompletionQueue, Entry, Read, ReadRoom, TaggedEntry};
use crate::error::Result;
use crate::ops::Completion;

use credits::{Keeper, KeptPool, OwnedCredit};
pub use endpoint::AsyncEndpoint;
pub(crate) use gate::{Door, Gate};
use idle::Activity;
pub(crate) use idle::Idle;
use later::Leave;
pub use op::{Op, OpError};
use pending::{Delivered, Pending};
pub use submit::{Posting, Submit};

/// How an operation ended, as its future gives it.
pub(crate) type OpResult<E> = std::result::Result<Completion<E>, OpError>;

/// The largest in-flight bound a driver takes (the token's index has 32 bits).
const MAX_IN_FLIGHT: usize = 1 << 30;

/// `Shared::spinner` when no future reads the queue: no token is this (an
/// index stays below [`MAX_IN_FLIGHT`]).
pub(crate) const NO_SPINNER: u64 = u64::MAX;

/// After the last completion or post, how long [`ProgressMode::Wait`] keeps
/// reading the queue before it sleeps on the wait descriptor: an answer
/// often follows within microseconds, far sooner than a wake-up through the
/// descriptor could deliver it.
pub(crate) const SPIN: Duration = Duration::from_micros(200);

/// The same for a queue without a wait descriptor, which an idle driver
/// reads once per tick (1 ms) instead. Longer than two ticks: a side that
/// spun less would stop before its peer, idle too, saw the last message at
/// its next tick and answered; then each message waited for a tick, and a
/// ping-pong that once fell into that step (after any pause longer than the
/// spin) stayed at about 2.4 ms a round trip.
pub(crate) const POLLED_SPIN: Duration = Duration::from_micros(2_500);

/// Completions read per [`Driver::progress`] call at most, so one busy queue
/// cannot starve the rest of the program.
const BATCH: usize = 64;

/// How a driver waits for completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Spin for 200 µs after each completion or post (an answer usually
    /// follows sooner than a wake-up could deliver it), then sleep on the
    /// queue's wait file descriptor when it has one (after `fi_trywait`); a
    /// queue without one is spun for 2.5 ms, then checked every millisecond
    /// (so sparse traffic on such a queue keeps a core busy for up to
    /// 2.5 ms after each message). While it spins, the future polled last of
    /// those awaiting an operation reads the queue itself, as in
    /// [`BusyPoll`](Self::BusyPoll), and the driver task rests.
    Wait,
    /// Never sleep: the future polled last of those awaiting an operation
    /// reads the queue itself each time it is polled (for up to 10 µs while
    /// nothing comes, then it asks to be polled again), rather than waiting
    /// for the driver task to read it and wake it. Once such reading has held
    /// the thread for 20 µs without the task giving it up, the future yields
    /// (and each finished operation spends a unit of tokio's budget), so
    /// other tasks, timers and I/O still get their turns. The others wait
    /// for their wakers, and the driver task polls the queue only while no
    /// future does (one reader at a time: every read serves every future).
    /// A transport node's queue then has no wait object. Lowest latency; a core busy. On a current-thread runtime, run
    /// the work on spawned tasks: such a runtime polls the `block_on` future
    /// only between rounds of its tasks, and a busy driver is always one.
    BusyPoll,
}

/// How a [`Driver`] behaves.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Operations one endpoint may have posted at once, at most, in each
    /// direction (transmits, receives): its credits. Capped by the
    /// endpoint's own queue sizes (`tx_attr.size`, `rx_attr.size`).
    pub in_flight: usize,
    /// How long a post may keep meeting `FI_EAGAIN` before it fails.
    pub post_timeout: Duration,
    /// Waiting or polling.
    pub mode: ProgressMode,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig { in_flight: 1024, post_timeout: Duration::from_secs(10), mode: ProgressMode::Wait }
    }
}

/// What a driver has seen, for observability.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Completions handed to futures.
    pub completed: u64,
    /// Of those, error completions (including cancellations).
    pub failed: u64,
    /// Completions of abandoned (dropped) futures, dropped by the driver.
    pub orphaned: u64,
    /// Completions no operation of this driver claimed (posted elsewhere).
    pub unclaimed: u64,
}

/// A driver's [`ReadRoom`], for the reader inside its gate.
struct Room<E>(UnsafeCell<ReadRoom<E>>);

// SAFETY: the room is reached only through `Shared::room`, by the one
// thread the gate admits at a time; the entries are `Send`.
unsafe impl<E: Entry> Sync for Room<E> {}

/// The rarer counts (`completed` and `failed` are kept in the table).
#[derive(Default)]
struct Counters {
    orphaned: AtomicU64,
    unclaimed: AtomicU64,
}

pub(crate) struct Shared<E: Entry> {
    pub(crate) cq: CompletionQueue<E>,
    pending: Mutex<Pending<E>>,
    pub(crate) config: DriverConfig,
    /// Wakes a driver task that is sleeping: a new post, or closing.
    pub(crate) wake: Notify,
    pub(crate) closing: AtomicBool,
    counters: Counters,
    /// Passed by whoever reads the queue (one reader at a time); shut to
    /// open or close an endpoint bound to it (see `gate`).
    pub(crate) gate: Arc<Gate>,
    /// Set once an endpoint bound to the queue has closed: from then on the
    /// driver polls, since tcp;ofi_rxm crashes in `fi_trywait` on such a
    /// queue (tests/libfabric-known-issues.md, 5).
    pub(crate) endpoint_closed: AtomicBool,
    /// The token of the operation whose future reads the queue on its own
    /// polls, or [`NO_SPINNER`]; the driver task rests while one does (see
    /// `Op::spin`).
    pub(crate) spinner: AtomicU64,
    /// Completions read and posts made: waiting readers spin until `spin`
    /// has passed without any.
    pub(crate) activity: Activity,
    /// [`SPIN`], or [`POLLED_SPIN`] once the driver task finds it must poll
    /// the queue (in nanoseconds).
    pub(crate) spin: AtomicU64,
    /// Set while the driver task sleeps (on the wait descriptor, or between
    /// ticks): a post wakes it then, and only then.
    pub(crate) asleep: AtomicBool,
    /// Set by a future that stopped reading because the queue went idle: the
    /// driver task then goes to sleep without spinning once more.
    pub(crate) idled: AtomicBool,
    /// `pending.len()`, kept on each release of the lock, for readers that
    /// need not take it.
    in_flight: AtomicUsize,
    /// `pending.delivered`, kept on each release of the lock: a reading
    /// future polled again need not take the lock to look for its result
    /// while no result has been put in the table since it last looked.
    pub(crate) delivered: AtomicU64,
    /// The entry of an operation whose future read its own completion,
    /// freed at the next lock of the table (see `later`).
    later: later::Later,
    /// What one read of the queue costs: how long a reading future spins
    /// is counted in reads (see `hold`).
    pub(crate) read_cost: hold::ReadCost,
    /// Where the reader inside the gate reads the queue into (see `room`).
    room: Room<E>,
    /// The credit pools of the endpoints on this driver. Declared after
    /// `pending`, so dropped after it: the credits in the table point to
    /// these pools (see `credits::OwnedCredit`).
    pub(crate) pools: Keeper,
}

/// The operation table, locked; on release it leaves its length in
/// `Shared::in_flight`.
struct Locked<'a, E: Entry> {
    table: MutexGuard<'a, Pending<E>>,
    shared: &'a Shared<E>,
    /// The credit of the entry left to be freed, if one was: declared after
    /// the guard, so given back after the lock is released.
    _freed: Option<OwnedCredit>,
}

impl<E: Entry> std::ops::Deref for Locked<'_, E> {
    type Target = Pending<E>;
    fn deref(&self) -> &Pending<E> {
        &self.table
    }
}

impl<E: Entry> std::ops::DerefMut for Locked<'_, E> {
    fn deref_mut(&mut self) -> &mut Pending<E> {
        &mut self.table
    }
}

impl<E: Entry> Drop for Locked<'_, E> {
    fn drop(&mut self) {
        // Before the guard's own drop: still under the lock.
        self.shared.in_flight.store(self.table.len(), Ordering::Relaxed);
        self.shared.delivered.store(self.table.delivered, Ordering::Release);
    }
}

/// Reads a completion queue and hands completions to the futures of
/// [`AsyncEndpoint`]s bound to it. Cloning gives another handle to the same
/// driver; when the last handle is dropped a spawned driver task stops.
pub struct Driver<E: Entry = TaggedEntry> {
    pub(crate) shared: Arc<Shared<E>>,
    _handle: Arc<HandleCount<E>>,
}

impl<E: Entry> Clone for Driver<E> {
    fn clone(&self) -> Self {
        Driver { shared: self.shared.clone(), _handle: self._handle.clone() }
    }
}

/// Dropped with the last user handle: tells the driver task to stop.
struct HandleCount<E: Entry>(Arc<Shared<E>>);

impl<E: Entry> Drop for HandleCount<E> {
    fn drop(&mut self) {
        self.0.closing.store(true, Ordering::Release);
        self.0.wake.notify_one();
    }
}

impl<E: Entry> fmt::Debug for Driver<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("cq", &self.shared.cq)
            .field("config", &self.shared.config)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl<E: Entry> Driver<E> {
    /// A driver for `cq`. Nothing reads the queue until something calls
    /// [`progress`](Self::progress), e.g. the task of [`spawn`](Self::spawn).
    ///
    /// ```no_run
    /// # fn demo(domain: &libfabric::Domain) -> libfabric::Result<()> {
    /// use libfabric::driver::{Driver, DriverConfig};
    /// use libfabric::{CompletionQueue, CqConfig, WaitObj};
    /// let cq: CompletionQueue = CompletionQueue::open(domain, &CqConfig { size: 1024, wait_obj: WaitObj::FD, ..CqConfig::default() })?;
    /// let driver = Driver::new(cq, DriverConfig::default());
    /// # let _ = driver; Ok(()) }
    /// ```
    pub fn new(cq: CompletionQueue<E>, config: DriverConfig) -> Driver<E> {
        let in_flight = config.in_flight.clamp(1, MAX_IN_FLIGHT);
        let config = DriverConfig { in_flight, ..config };
        let shared = Arc::new(Shared {
            cq,
            pending: Mutex::new(Pending::with_capacity(2 * in_flight)),
            config,
            wake: Notify::new(),
            closing: AtomicBool::new(false),
            counters: Counters::default(),
            gate: Arc::new(Gate::default()),
            endpoint_closed: AtomicBool::new(false),
            spinner: AtomicU64::new(NO_SPINNER),
            activity: Activity::default(),
            spin: AtomicU64::new(SPIN.as_nanos() as u64),
            asleep: AtomicBool::new(false),
            idled: AtomicBool::new(false),
            read_cost: hold::ReadCost::default(),
            in_flight: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            later: later::Later::default(),
            room: Room(UnsafeCell::new(ReadRoom::default())),
            pools: Keeper::default(),
        });
        Driver { _handle: Arc::new(HandleCount(shared.clone())), shared }
    }

    /// The completion queue this driver reads.
    pub fn completion_queue(&self) -> &CompletionQueue<E> {
        &self.shared.cq
    }

    /// The configuration.
    pub fn config(&self) -> &DriverConfig {
        &self.shared.config
    }

    /// Operations posted through this driver and not yet finished (including
    /// those whose futures were dropped and whose cancellation is pending).
    pub fn in_flight(&self) -> usize {
        self.shared.lock().len()
    }

    /// Counts of what the driver has handled.
    pub fn stats(&self) -> DriverStats {
        let c = &self.shared.counters;
        let (completed, failed) = {
            let table = self.shared.lock();
            (table.completed, table.failed)
        };
        DriverStats {
            completed,
            failed,
            orphaned: c.orphaned.load(Ordering::Relaxed),
            unclaimed: c.unclaimed.load(Ordering::Relaxed),
        }
    }

    /// Reads what completions are ready (up to a batch) and wakes their
    /// futures; returns how many were read. 0 also while another thread
    /// reads the queue (an operation's future, or another `progress`): one
    /// reader at a time, and that one hands every completion it reads to
    /// its future.
    pub fn progress(&self) -> Result<usize> {
        self.shared.progress()
    }

    /// `fi_trywait` on the queue: `Ok(true)` when it is safe to sleep on
    /// [`wait_fd`](Self::wait_fd), `Ok(false)` when there is work to read
    /// (or another thread is reading the queue right now).
    /// Once an endpoint of an [`AsyncEndpoint`] on this queue has closed it
    /// is always `Ok(false)` (poll from then on): tcp;ofi_rxm crashes in
    /// `fi_trywait` on such a queue.
    pub fn trywait(&self) -> Result<bool> {
        self.shared.trywait_while_open().unwrap_or(Ok(false))
    }

    /// Runs `f` while the driver is not inside libfabric: open (bind) or
    /// close endpoints on a queue that is being driven inside it, since
    /// providers do not all survive a queue read racing an endpoint's bind
    /// or close. [`AsyncEndpoint`] closes its endpoint this way.
    pub fn exclusive<R>(&self, f: impl FnOnce() -> R) -> R {
        let _shut = self.shared.gate.shut();
        f()
    }

    /// The queue's wait file descriptor, when it was opened with
    /// `WaitObj::FD` and the provider supports it; `None` means the driver
    /// must poll.
    pub fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        self.shared.cq.wait_fd().ok()
    }
}

impl<E: Entry> Shared<E> {
    fn lock(&self) -> Locked<'_, E> {
        // A panic while holding the lock leaves the table consistent (every
        // change is one assignment), so a poisoned lock is still usable.
        let mut table = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let freed = self.later.take().map(|token| table.finish(token, false));
        debug_assert!(!matches!(freed, Some(None)), "an entry left to be freed was not waiting");
        Locked { table, shared: self, _freed: freed.flatten() }
    }

    /// Operations in flight, as of the last change (read without the lock).
    pub(crate) fn in_flight(&self) -> usize {
        // Less the entry left to be freed: its operation is over. As
        // approximate as the count itself: a lock or another thread's
        // finished operation between the two loads can make it one off
        // either way, and a reader acting on it (`Op::stop_spinning`) then
        // at worst wakes the driver task for nothing, or leaves it resting
        // until its next tick.
        let n = self.in_flight.load(Ordering::Relaxed);
        n.saturating_sub(usize::from(self.later.is_left()))
    }

    /// `fi_trywait`, or `None` once an endpoint bound to the queue has
    /// closed (checked under the gate, so no close slips in between).
    /// `Ok(false)` while another reader is inside: it may be reading the
    /// completion that would have made the wait pointless.
    pub(crate) fn trywait_while_open(&self) -> Option<Result<bool>> {
        let Some(_reading) = self.gate.try_read(Door::Completions) else { return Some(Ok(false)) };
        if self.endpoint_closed.load(Ordering::Acquire) {
            return None;
        }
        Some(self.cq.trywait())
    }

    /// Reads a batch, unless another reader is inside the gate (it reads for
    /// everyone): then 0.
    pub(crate) fn progress(&self) -> Result<usize> {
        match self.gate.try_read(Door::Completions) {
            Some(mut reading) => self.progress_for(&mut reading, NO_SPINNER, &mut None),
            None => Ok(0),
        }
    }

    /// [`progress`](Self::progress), inside the gate already, for the
    /// future of operation `own`, which reads the queue itself: its
    /// completion is put in `mine` instead of the table, where the future
    /// would only take it out again (and its own waker need not be woken).
    pub(crate) fn progress_for(
        &self,
        inside: &mut gate::Reading<'_>,
        own: u64,
        mine: &mut Option<OpResult<E>>,
    ) -> Result<usize> {
        let room = self.room(inside);
        let mut n = 0;
        while n < BATCH {
            let want = BATCH - n;
            let read = self.cq.poll_each_in(room, want, |read| self.handle(read, own, mine))?;
            n += read;
            // A short read found the queue empty: no need to read it again.
            if read < want.min(crate::cq::EACH_MAX) {
                break;
            }
        }
        // Only waiting readers look at the activity.
        if n > 0 && self.config.mode == ProgressMode::Wait {
            self.activity.bump();
        }
        Ok(n)
    }

    /// The read room, for the reader inside the gate: `inside` is borrowed
    /// for as long as the room is.
    fn room<'r>(&'r self, inside: &'r mut gate::Reading<'_>) -> &'r mut ReadRoom<E> {
        debug_assert!(self.gate.admitted(inside), "a reader of another queue's gate");
        // SAFETY: the room is touched only here, by the one reader the
        // gate's completions door admits at a time (`inside`, which stays
        // borrowed for as long as the room is); no other reference to it
        // exists meanwhile.
        unsafe { &mut *self.room.0.get() }
    }

    /// The spin window of waiting readers.
    pub(crate) fn spin(&self) -> Duration {
        Duration::from_nanos(self.spin.load(Ordering::Relaxed))
    }

    /// Hands one read of the queue to its future (to `mine` if it is
    /// `own`'s; see `progress_for`).
    fn handle(&self, read: Read<E>, own: u64, mine: &mut Option<OpResult<E>>) {
        let mut hand_over = |token, result| {
            if token == own {
                *mine = Some(result);
            } else {
                self.deliver(token, result);
            }
        };
        match read {
            Read::Empty => {}
            Read::Op(c) => hand_over(c.token, Ok(c)),
            Read::Failed { error, op: Some((kind, token, buf)) } => {
                hand_over(token, Err(OpError::completed(error, kind, buf)))
            }
            Read::Failed { error, op: None } => {
                self.counters.unclaimed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "an error completion of no operation of this driver");
            }
            other => {
                self.counters.unclaimed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(?other, "a completion the async driver does not handle");
            }
        }
    }

    /// The reading future of operation `token` took its own completion
    /// (`progress_for`): frees its entry as taking it from the table would.
    /// The entry's credit is returned, for the caller to drop outside the
    /// lock.
    pub(crate) fn finish(&self, token: u64, failed: bool) -> Option<OwnedCredit> {
        self.lock().finish(token, failed)
    }

    /// [`finish`](Self::finish) for an operation that succeeded, at the next
    /// lock of the table instead of now (see `later`).
    pub(crate) fn finish_later(&self, token: u64) {
        match self.later.leave(token) {
            Leave::Left => {}
            // At the lock, the entry just left is freed too.
            Leave::Earlier(earlier) => drop(self.finish(earlier, false)),
            Leave::Now => drop(self.lock()),
        }
    }

    /// A credit of `pool` if one is free, after freeing the entry left to
    /// be freed if need be (it may hold the last one; see `later`).
    #[inline]
    pub(crate) fn try_credit(&self, pool: &KeptPool) -> Option<OwnedCredit> {
        pool.try_take().or_else(|| {
            if !self.later.is_left() {
                return None;
            }
            drop(self.lock());
            pool.try_take()
        })
    }

    /// A credit of `pool`, waiting for one if none is free. The entry left
    /// to be freed may hold the last one: it is freed before the wait, and
    /// while this waits none is left (see `later`).
    pub(crate) async fn credit(&self, pool: &KeptPool) -> OwnedCredit {
        if let Some(credit) = pool.try_take() {
            return credit;
        }
        let _waiting = self.later.waiting();
        // Frees an entry left before this post counted itself as waiting.
        drop(self.lock());
        pool.take().await
    }

    pub(crate) fn deliver(&self, token: u64, result: OpResult<E>) {
        let delivered = self.lock().deliver(token, result);
        match delivered {
            Delivered::Wake(waker) => {
                if let Some(w) = waker {
                    w.wake();
                }
            }
            // Dropped here, outside the lock: the buffer, then the credit.
            Delivered::Orphan(result, permit) => {
                self.counters.orphaned.fetch_add(1, Ordering::Relaxed);
                drop(result);
                drop(permit);
            }
            Delivered::Unknown(result) => {
                self.counters.unclaimed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(token, ok = result.is_ok(), "a completion with a token of no operation of this driver");
            }
        }
    }
}

/// Lets the executor run other tasks, then continues: returns `Pending` once,
/// waking itself. Unlike tokio's `yield_now`, which defers the task until the
/// runtime has polled its I/O and timers (an `epoll_wait` each time), this
/// reschedules at once; on a current-thread runtime a task that polls a
/// queue in a loop then makes no system call per turn. (On a multi-thread
/// runtime the self-wake may still unpark an idle worker.) The runtime still
/// polls I/O on its own schedule.
pub(crate) fn yield_now() -> impl std::future::Future<Output = ()> {
    struct YieldNow(bool);

    impl std::future::Future for YieldNow {
        type Output = ();

        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
            if self.0 {
                return std::task::Poll::Ready(());
            }
            self.0 = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }

    YieldNow(false)
}
