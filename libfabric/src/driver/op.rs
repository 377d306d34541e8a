//! The future of one posted operation, and its error.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::cq::Entry;
use crate::ep::{Endpoint, OpId};
use crate::error::Error;
use crate::ops::{Buf, Completion, OpKind, PostError};

use super::observe::Observer;
use super::{hold, Door, Idle, OpResult, ProgressMode, Shared, NO_SPINNER};

/// How long one poll of the future that reads the queue (see `Op::spin`)
/// keeps reading while nothing comes, before it lets the runtime run other
/// tasks: longer than a round trip on shm (about a microsecond), short
/// enough that other tasks of the thread hardly wait. A completion for any
/// operation ends it at once.
const SPIN_POLL: Duration = Duration::from_micros(10);

/// Why an async operation failed, with its buffer when it has come back.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct OpError {
    /// The error: a failed post, an error completion (`FI_ECANCELED` for a
    /// cancelled operation, `FI_ETRUNC`, …), or a timeout.
    #[source]
    pub error: Error,
    /// The operation, if it got as far as being posted.
    pub kind: Option<OpKind>,
    /// The buffer, the caller's again. Absent when it never came back from
    /// libfabric (the driver drops it once libfabric is done), or when a
    /// deadline (e.g. the transport's operation timeout) dropped the future
    /// that held it.
    pub buf: Option<Buf>,
}

impl OpError {
    pub(crate) fn completed(error: Error, kind: OpKind, buf: Buf) -> OpError {
        OpError { error, kind: Some(kind), buf: Some(buf) }
    }

    /// True for `FI_ECANCELED`: the operation was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.error.errno() == libfabric_sys::enums::Errno::from_raw(libc::ECANCELED)
    }
}

impl From<PostError> for OpError {
    fn from(e: PostError) -> OpError {
        OpError { error: e.error, kind: None, buf: Some(e.buf) }
    }
}

impl From<OpError> for Error {
    fn from(e: OpError) -> Error {
        e.error
    }
}

/// A posted operation: awaiting it gives its completion, with the buffer.
/// Dropping it first cancels the operation (the buffer is freed once
/// libfabric is done with it); [`cancel`](Self::cancel) instead asks for the
/// cancellation and lets the caller await the buffer back.
#[must_use = "dropping an operation cancels it"]
pub struct Op<'a, E: Entry> {
    pub(crate) shared: &'a Shared<E>,
    pub(crate) ep: &'a Endpoint<E>,
    pub(crate) token: u64,
    /// Set once libfabric has the operation.
    pub(crate) op: Option<OpId>,
    /// `Shared::delivered` when this future last looked in the table: while
    /// it is unchanged, this operation's result is not there.
    seen: u64,
    done: bool,
    /// Holds the driver's spinner role: this future reads the queue each
    /// time it is polled (see `spin`).
    spinning: bool,
    /// Whether the queue went idle while this future read it.
    idle: Idle,
    /// What to report when it finishes: its name, when it was posted (if
    /// anything reports times), and to whom.
    report: Option<(&'static str, Option<Instant>, &'a Observer)>,
}

impl<'a, E: Entry> Op<'a, E> {
    pub(crate) fn new(shared: &'a Shared<E>, ep: &'a Endpoint<E>, token: u64, delivered: u64) -> Self {
        Op {
            shared,
            ep,
            token,
            op: None,
            seen: delivered,
            done: false,
            spinning: false,
            idle: Idle::default(),
            report: None,
        }
    }
}

impl<'a, E: Entry> Op<'a, E> {
    pub(crate) fn reported(mut self, name: &'static str, started: Option<Instant>, observer: &'a Observer) -> Self {
        self.report = Some((name, started, observer));
        self
    }

    /// Asks libfabric to cancel the operation (`fi_cancel`). Awaiting it
    /// then gives `FI_ECANCELED` with the buffer, or the completion if the
    /// operation finished first.
    pub fn cancel(&self) -> Result<(), Error> {
        match self.op {
            Some(op) if !self.done => self.ep.cancel(op),
            _ => Ok(()),
        }
    }
}

impl<E: Entry> Op<'_, E> {
    /// Lets the operation run to completion unawaited: unlike dropping, no
    /// cancellation is asked for; the driver drops the completion (and the
    /// buffer) when it arrives. For a receive whose message is known to be
    /// on its way, which would otherwise stay in the provider unexpected.
    pub fn detach(mut self) {
        if self.op.is_some() && !self.done {
            let (leftover, _) = self.shared.lock().abandon(self.token, true);
            drop(leftover);
        }
        self.done = true;
    }
}

impl<E: Entry> fmt::Debug for Op<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Op").field("token", &self.token).field("op", &self.op).finish()
    }
}

impl<E: Entry> Future for Op<'_, E> {
    type Output = Result<Completion<E>, OpError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // A unit of the runtime's budget per poll that finishes: a task
        // whose operations keep finishing within their first poll (see
        // `read_awhile`) would otherwise never give its thread up.
        let Poll::Ready(budget) = budget::poll_proceed(cx) else {
            hold::release();
            return Poll::Pending;
        };
        // A future that is to read the queue leaves no waker while it reads
        // (cloning one in and dropping it again are an atomic instruction
        // each, the drop on the critical path): its own completion comes to
        // it by its reads (`Spun::Mine`), and it leaves one before it
        // returns `Pending` without waking itself.
        let spinning = self.spin();
        let waker = (!spinning).then_some(cx.waker());
        if let Some(result) = self.take(waker) {
            budget.made_progress();
            return Poll::Ready(result);
        }
        if spinning {
            // Read the queue here instead of waiting for the driver task to
            // read it and wake this one: a scheduling hop less per
            // operation.
            match self.read_awhile() {
                Spun::Mine(result) => {
                    budget.made_progress();
                    self.finish(&result);
                    return Poll::Ready(result);
                }
                Spun::Delivered => {
                    if let Some(result) = self.take(None) {
                        budget.made_progress();
                        return Poll::Ready(result);
                    }
                    // Others' completions: let their futures run, then
                    // read again.
                    cx.waker().wake_by_ref();
                }
                Spun::Quiet(now) => {
                    let shared = self.shared;
                    if shared.config.mode == ProgressMode::BusyPoll
                        || !self.idle.check_at(&shared.activity, shared.spin(), now)
                    {
                        // Let other tasks run, and be polled again soon.
                        cx.waker().wake_by_ref();
                    } else {
                        // Idle for a while: the driver task sleeps on the
                        // queue's wait descriptor instead, and wakes this
                        // future; it need not spin again first.
                        shared.idled.store(true, Ordering::Relaxed);
                        self.stop_spinning();
                        // Its waker, for the driver task (and the result,
                        // if another reader delivered it meanwhile).
                        if let Some(result) = self.take(Some(cx.waker())) {
                            budget.made_progress();
                            return Poll::Ready(result);
                        }
                    }
                }
            }
        }
        // The task is likely to give its thread up now.
        hold::release();
        Poll::Pending
    }
}

/// tokio's cooperative budget, with the `tokio` feature; without it there
/// is no runtime to yield to that could say when.
mod budget {
    #[cfg(feature = "tokio")]
    pub(super) use tokio::task::coop::poll_proceed;

    #[cfg(not(feature = "tokio"))]
    pub(super) fn poll_proceed(_: &mut std::task::Context<'_>) -> std::task::Poll<Unlimited> {
        std::task::Poll::Ready(Unlimited)
    }

    /// No budget to spend.
    #[cfg(not(feature = "tokio"))]
    pub(super) struct Unlimited;

    #[cfg(not(feature = "tokio"))]
    impl Unlimited {
        pub(super) fn made_progress(&self) {}
    }
}

/// What [`Op::read_awhile`] found.
enum Spun<E: Entry> {
    /// This operation's own completion (others' are handed to their
    /// futures).
    Mine(OpResult<E>),
    /// Completions, handed to their futures.
    Delivered,
    /// Nothing for [`SPIN_POLL`], a failed read, or the thread held long
    /// enough (see `hold`): time to return `Pending`. The time it gave up.
    Quiet(Instant),
}

impl<E: Entry> Op<'_, E> {
    /// The result if it is in (reported, and the operation done); else
    /// `waker`, if any, is left for the driver.
    fn take(&mut self, waker: Option<&Waker>) -> Option<Result<Completion<E>, OpError>> {
        if waker.is_none() {
            // Nothing to leave, so the lock (two atomic instructions) is
            // needed only if a result was put in the table since the last
            // look. A stale count only defers the look to the next poll:
            // a future without a waker is polled again (it reads the queue).
            let delivered = self.shared.delivered.load(Ordering::Acquire);
            if delivered == self.seen {
                return None;
            }
            self.seen = delivered;
        }
        let taken = self.shared.lock().poll(self.token, waker);
        // The credit `taken` holds is released here, after the lock.
        let result = taken?.result?;
        self.done_with(&result);
        Some(result)
    }

    /// Its own completion, read off the queue by this future: the entry is
    /// freed without the round through the table, and, if the operation
    /// succeeded, at the next lock of the table rather than now (see
    /// `later`): off the critical path of whatever the caller does next.
    fn finish(&mut self, result: &OpResult<E>) {
        match result {
            Ok(_) => self.shared.finish_later(self.token),
            // The credit is released here, after the lock.
            Err(_) => drop(self.shared.finish(self.token, true)),
        }
        self.done_with(result);
    }

    /// Marks the operation done and reports it. A future that reads the
    /// queue keeps the role until it is dropped (see `Drop`): by then the
    /// caller has acted on the result, and often a next operation has
    /// taken the role, so the driver task need not be told.
    fn done_with(&mut self, result: &OpResult<E>) {
        self.done = true;
        if let Some((name, started, observer)) = self.report {
            observer.record(name, started, || self.shared.in_flight(), result.as_ref());
        }
    }
}

impl<E: Entry> Op<'_, E> {
    /// Reads the queue until something comes or [`SPIN_POLL`] has passed:
    /// an answer that comes within that is seen as soon as it is in, not
    /// after a round through the runtime's scheduler, which costs more than
    /// a read (on shm, several times more). Gives up sooner, whatever came,
    /// once spinning has held the thread long enough (see `hold`).
    fn read_awhile(&self) -> Spun<E> {
        let shared = self.shared;
        let started = hold::measure().then(Instant::now);
        let each = shared.read_cost.nanos();
        // Reads until the window closes, or until the thread has been held
        // long enough (at least one read).
        let window = SPIN_POLL.as_nanos() as u64;
        let left = window.min((hold::HOLD.as_nanos() as u64).saturating_sub(hold::held()));
        let most = (left / each.max(1)).max(1);
        // Inside the gate for the whole spin: passing it is an atomic
        // instruction, too dear to pay on every read.
        let Some(mut reading) = shared.gate.try_read(Door::Completions) else {
            // Another reader is inside, reading for everyone.
            return Spun::Quiet(Instant::now());
        };
        let mut reads = 0u64;
        let mut mine = None;
        let delivered = loop {
            reads += 1;
            match shared.progress_for(&mut reading, self.token, &mut mine) {
                // A pause between empty reads: without it the round trip
                // on shm was slower (measured; a tighter loop most likely
                // contends with the peer writing the lines polled here).
                Ok(0) if reads < most => std::hint::spin_loop(),
                Ok(0) => break false,
                Ok(_) => break true,
                // A failed read is the driver task's to report.
                Err(_) => break false,
            }
        };
        drop(reading);
        let reads = u32::try_from(reads).unwrap_or(u32::MAX);
        if let Some(started) = started {
            shared.read_cost.measured(reads, started.elapsed());
        }
        // Only reads that found something count towards the hold.
        let held = delivered && hold::spend(u64::from(reads) * each);
        match mine {
            Some(result) if !held => Spun::Mine(result),
            // Time to let the thread go: into the table with it, to be
            // taken at the next poll (the same as any other completion).
            Some(result) => {
                shared.deliver(self.token, result);
                Spun::Quiet(Instant::now())
            }
            None if delivered && !held => Spun::Delivered,
            None => Spun::Quiet(Instant::now()),
        }
    }

    /// Whether this future is to read the queue. One future reads at a time,
    /// since every read serves every future: more readers would only share
    /// the thread's turns and delay the one whose completion came in. The
    /// role goes to the future polled last, the one most likely awaited
    /// next (a task woken, an operation just posted); the one it displaces
    /// stops reading at its next poll and waits for its waker.
    fn spin(&mut self) -> bool {
        let spinner = &self.shared.spinner;
        if self.spinning {
            if spinner.load(Ordering::Relaxed) == self.token {
                return true;
            }
            // Displaced: this poll is the self-wake of the last one.
            self.spinning = false;
            return false;
        }
        spinner.store(self.token, Ordering::Relaxed);
        self.spinning = true;
        true
    }

    /// Gives the role back, if this future still holds it. While other
    /// operations are in flight the driver task reads the queue until
    /// another future takes the role; with none, it stays at rest (a new
    /// operation's future takes the role when first polled).
    fn stop_spinning(&mut self) {
        if !std::mem::take(&mut self.spinning) {
            return;
        }
        let spinner = &self.shared.spinner;
        // A load and a store, not a compare-and-swap: an atomic instruction
        // less on every operation's path. Should another future take the
        // role between the two, the store takes it from that one too; it
        // finds itself displaced at its next poll and waits for its waker,
        // which the driver task, woken below, sees to.
        if spinner.load(Ordering::Relaxed) == self.token {
            spinner.store(NO_SPINNER, Ordering::Relaxed);
            if self.shared.in_flight() > 0 {
                self.shared.wake.notify_one();
            }
        }
    }
}

impl<E: Entry> Drop for Op<'_, E> {
    fn drop(&mut self) {
        // Here rather than when the operation finished: waking the driver
        // task (while other operations are in flight) was on the path from
        // a serving node's request to its answer (about 7 ns on shm).
        self.stop_spinning();
        if self.done {
            return;
        }
        let (leftover, cancel) = self.shared.lock().abandon(self.token, self.op.is_some());
        // The result of an operation that finished meanwhile, and the credit,
        // are dropped here, outside the lock.
        drop(leftover);
        if let (true, Some(op)) = (cancel, self.op) {
            // The cancellation's completion (or the operation's own, if it
            // won) reaches the driver, which frees the buffer then.
            if let Err(error) = self.ep.cancel(op) {
                tracing::debug!(%error, "fi_cancel of a dropped operation");
            }
        }
    }
}
