//! An endpoint whose operations are futures.

use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use libfabric_sys::enums::{AtomicOp, Errno};

use crate::atomic::AtomicType;
use crate::av::Address;
use crate::cq::Entry;
use crate::ep::{Endpoint, OpId};
use crate::error::{Error, Result};
use crate::ops::{Buf, PostError};
use crate::rma::RemoteMemory;

use super::credits::{KeptPool, OwnedCredit};
use super::observe::Observer;
use super::op::Op;
use super::submit::{Posting, Submit};
use super::{yield_now, Driver, OpError, ProgressMode};

/// An endpoint whose data operations return futures. Cloning is cheap (the
/// endpoint and driver are shared), so each task can hold its own.
///
/// ```no_run
/// # async fn demo(ep: libfabric::Endpoint, driver: libfabric::driver::Driver, peer: libfabric::Address)
/// # -> Result<(), Box<dyn std::error::Error>> {
/// use libfabric::driver::AsyncEndpoint;
/// use libfabric::Buf;
/// let ep = AsyncEndpoint::new(ep, driver)?;
/// let got = ep.recv(Buf::zeroed(4096), peer).await?; // resolves with the buffer, cut to the received length
/// ep.send(got.buf, peer).await?;                      // echo it back
/// # Ok(()) }
/// ```
pub struct AsyncEndpoint<E: Entry = crate::TaggedEntry> {
    ep: Arc<Gated<E>>,
    driver: Driver<E>,
    /// Credits for transmits (sends, RMA, atomics) and for receives.
    tx: KeptPool,
    rx: KeptPool,
    /// How many credits each has in all: (transmits, receives).
    limits: (usize, usize),
    observer: Arc<Observer>,
}

impl<E: Entry> Clone for AsyncEndpoint<E> {
    fn clone(&self) -> Self {
        AsyncEndpoint {
            ep: self.ep.clone(),
            driver: self.driver.clone(),
            tx: self.tx.clone(),
            rx: self.rx.clone(),
            limits: self.limits,
            observer: self.observer.clone(),
        }
    }
}

impl<E: Entry> fmt::Debug for AsyncEndpoint<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncEndpoint").field("ep", &*self.ep.ep).field("driver", &self.driver).finish()
    }
}

/// The endpoint, closed while its driver is outside libfabric.
struct Gated<E: Entry> {
    ep: ManuallyDrop<Endpoint<E>>,
    driver: Driver<E>,
}

impl<E: Entry> Deref for Gated<E> {
    type Target = Endpoint<E>;
    fn deref(&self) -> &Endpoint<E> {
        &self.ep
    }
}

impl<E: Entry> Drop for Gated<E> {
    fn drop(&mut self) {
        let shared = &self.driver.shared;
        self.driver.exclusive(|| {
            // Set before the gate opens again: the driver checks it under the gate.
            shared.endpoint_closed.store(true, std::sync::atomic::Ordering::Release);
            // SAFETY: dropped exactly once, here; `ep` is not used afterwards.
            unsafe { ManuallyDrop::drop(&mut self.ep) }
        });
    }
}

impl<E: Entry> AsyncEndpoint<E> {
    /// Wraps `ep`, whose completion queue must be the one `driver` reads,
    /// for both directions (anything else is an error: its completions
    /// would never arrive).
    pub fn new(ep: Endpoint<E>, driver: Driver<E>) -> Result<Self> {
        let bound = ep.inner.cq.as_ref().is_some_and(|cq| Arc::ptr_eq(cq, &driver.shared.cq.inner));
        if !bound || ep.inner.tx_cq.is_some() {
            return Err(Error::InvalidArgument {
                call: "AsyncEndpoint::new",
                reason: "the endpoint's completions, of both directions, must go to the driver's queue".into(),
            });
        }
        let limit = driver.config().in_flight;
        // A queue size of 0 means the provider did not say; the bound is ours then.
        let bound = |size: usize| if size == 0 { limit } else { limit.min(size) };
        let limits =
            (bound(ep.info().tx_attr().map_or(0, |a| a.size())), bound(ep.info().rx_attr().map_or(0, |a| a.size())));
        let pools = &driver.shared.pools;
        let (tx, rx) = (pools.keep(limits.0), pools.keep(limits.1));
        let ep = Arc::new(Gated { ep: ManuallyDrop::new(ep), driver: driver.clone() });
        let observer = Arc::new(Observer::new(ep.info()));
        Ok(AsyncEndpoint { ep, driver, tx, rx, limits, observer })
    }

    /// Its credits: how many transmits (sends, RMA, atomics) and how many
    /// receives it may have posted at once.
    pub fn credits(&self) -> (usize, usize) {
        self.limits
    }

    /// The endpoint, for what is not asynchronous (names, options, inject).
    pub fn endpoint(&self) -> &Endpoint<E> {
        &self.ep
    }

    /// The driver.
    pub fn driver(&self) -> &Driver<E> {
        &self.driver
    }

    /// Sends `buf` to `dest` (`fi_send`); resolves when the provider is done
    /// with it, returning it.
    pub fn send(&self, buf: Buf, dest: Address) -> Submit<'_, E> {
        self.submit("send", &self.tx, buf, move |ep, buf, token| ep.send(buf, dest, token))
    }

    /// Sends `buf` with remote CQ data (`fi_senddata`).
    pub fn send_data(&self, buf: Buf, data: u64, dest: Address) -> Submit<'_, E> {
        self.submit("send_data", &self.tx, buf, move |ep, buf, token| ep.send_data(buf, data, dest, token))
    }

    /// Receives into `buf` from `src` (`Address::UNSPEC`: anyone); the buffer
    /// comes back cut to the received length.
    pub fn recv(&self, buf: Buf, src: Address) -> Submit<'_, E> {
        self.submit("recv", &self.rx, buf, move |ep, buf, token| ep.recv(buf, src, token))
    }

    /// Sends a tagged message (`fi_tsend`).
    pub fn tsend(&self, buf: Buf, dest: Address, tag: u64) -> Submit<'_, E> {
        self.submit("tsend", &self.tx, buf, move |ep, buf, token| ep.tsend(buf, dest, tag, token))
    }

    /// Sends a tagged message with remote CQ data (`fi_tsenddata`).
    pub fn tsend_data(&self, buf: Buf, data: u64, dest: Address, tag: u64) -> Submit<'_, E> {
        self.submit("tsend_data", &self.tx, buf, move |ep, buf, token| ep.tsend_data(buf, data, dest, tag, token))
    }

    /// Sends a small tagged message with remote CQ data by inject
    /// (`fi_tinjectdata`) if the provider takes it at once: libfabric copies
    /// the bytes before this returns, so there is no completion to wait for
    /// and nothing stays in flight. `Ok(false)` when it is longer than the
    /// provider's inject size or the provider has no room for it now; send
    /// it with [`tsend_data`](Self::tsend_data) then, which waits for room.
    ///
    /// An inject takes no credit, so a stream of them is slowed down only by
    /// the provider refusing them, which not every provider does in time
    /// (udp;ofi_rxd takes them faster than it can deliver them to a slow
    /// receiver). Use it where something else bounds what is in flight, as
    /// the transport does for requests and their answers.
    ///
    /// ```no_run
    /// # async fn demo(ep: libfabric::driver::AsyncEndpoint, peer: libfabric::Address)
    /// # -> Result<(), Box<dyn std::error::Error>> {
    /// use libfabric::Buf;
    /// let msg = Buf::from(b"ping".to_vec());
    /// let msg = if ep.try_tinject_data(&msg, 7, peer, 0x10)? { msg } else { ep.tsend_data(msg, 7, peer, 0x10).await?.buf };
    /// # Ok(()) }
    /// ```
    pub fn try_tinject_data(&self, data: &[u8], cq_data: u64, dest: Address, tag: u64) -> Result<bool> {
        if data.len() > self.ep.inject_limit() {
            return Ok(false);
        }
        match self.ep.tinject_data(data, cq_data, dest, tag) {
            Ok(()) => {
                self.observer.injected("tinject_data", data.len());
                Ok(true)
            }
            // No room now, or no inject at all: the caller sends instead.
            Err(e) if queue_full(&e) || unsupported(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Receives a tagged message whose tag matches `tag` outside the `ignore`
    /// bits (`fi_trecv`); the entry reports the tag that arrived.
    pub fn trecv(&self, buf: Buf, src: Address, tag: u64, ignore: u64) -> Submit<'_, E> {
        self.submit("trecv", &self.rx, buf, move |ep, buf, token| ep.trecv(buf, src, tag, ignore, token))
    }

    /// Writes `buf` into the peer's memory at `offset` (`fi_write`).
    pub fn write<'a>(&'a self, buf: Buf, dest: Address, remote: &'a RemoteMemory, offset: u64) -> Submit<'a, E> {
        self.submit("write", &self.tx, buf, move |ep, buf, token| ep.write(buf, dest, remote, offset, token))
    }

    /// Reads the peer's memory at `offset` into all of `buf` (`fi_read`).
    pub fn read<'a>(&'a self, buf: Buf, dest: Address, remote: &'a RemoteMemory, offset: u64) -> Submit<'a, E> {
        self.submit("read", &self.tx, buf, move |ep, buf, token| ep.read(buf, dest, remote, offset, token))
    }

    /// `remote[offset..] op= operands` (`fi_atomic`); see
    /// [`Endpoint::atomic`].
    pub fn atomic<'a, T: AtomicType>(
        &'a self,
        op: AtomicOp,
        buf: Buf,
        dest: Address,
        remote: &'a RemoteMemory,
        offset: u64,
    ) -> Submit<'a, E> {
        self.submit("atomic", &self.tx, buf, move |ep, buf, token| ep.atomic::<T>(op, buf, dest, remote, offset, token))
    }

    /// Fetching atomic (`fi_fetch_atomic`); see [`Endpoint::fetch_atomic`].
    pub fn fetch_atomic<'a, T: AtomicType>(
        &'a self,
        op: AtomicOp,
        buf: Buf,
        dest: Address,
        remote: &'a RemoteMemory,
        offset: u64,
    ) -> Submit<'a, E> {
        self.submit("fetch_atomic", &self.tx, buf, move |ep, buf, token| {
            ep.fetch_atomic::<T>(op, buf, dest, remote, offset, token)
        })
    }

    /// Compare atomic (`fi_compare_atomic`); see [`Endpoint::compare_atomic`].
    pub fn compare_atomic<'a, T: AtomicType>(
        &'a self,
        op: AtomicOp,
        buf: Buf,
        dest: Address,
        remote: &'a RemoteMemory,
        offset: u64,
    ) -> Submit<'a, E> {
        self.submit("compare_atomic", &self.tx, buf, move |ep, buf, token| {
            ep.compare_atomic::<T>(op, buf, dest, remote, offset, token)
        })
    }

    /// Posts a tagged receive and returns once libfabric has it, so that a
    /// message sent after this returns can never arrive unexpected; await
    /// the [`Op`] for the message.
    pub fn post_trecv(&self, buf: Buf, src: Address, tag: u64, ignore: u64) -> Posting<'_, E> {
        self.posting("trecv", &self.rx, buf, move |ep, buf, token| ep.trecv(buf, src, tag, ignore, token))
    }

    /// Posts a receive and returns once libfabric has it; see
    /// [`post_trecv`](Self::post_trecv).
    pub fn post_recv(&self, buf: Buf, src: Address) -> Posting<'_, E> {
        self.posting("recv", &self.rx, buf, move |ep, buf, token| ep.recv(buf, src, token))
    }

    /// One of the receive credits, taken now if one is free: with it, a
    /// receive can be posted later without waiting for a credit (see
    /// [`RecvCredit::post_trecv`]).
    pub(crate) fn try_reserve_recv(&self) -> Option<RecvCredit<'_, E>> {
        self.driver.shared.try_credit(&self.rx).map(|credit| RecvCredit { ep: self, credit })
    }

    /// The future of an operation: posted now if it can be without waiting
    /// (see the `submit` module notes), else by the waiting path.
    fn submit<'a, P>(&'a self, name: &'static str, credits: &'a KeptPool, buf: Buf, mut post: P) -> Submit<'a, E>
    where
        P: FnMut(&Endpoint<E>, Buf, u64) -> Result<OpId, PostError> + Send + 'a,
    {
        match self.post_now(name, credits, buf, &mut post) {
            Now::Posted(op) => Submit::posted(op),
            Now::Failed(error) => Submit::failed(error),
            Now::Wait(buf) => {
                Submit::waiting(Box::pin(async move { self.post(name, credits, buf, post).await?.await }))
            }
            Now::Full(full) => Submit::waiting(Box::pin(async move { self.retry(full, post).await?.await })),
        }
    }

    /// Like [`submit`](Self::submit), resolving once libfabric has the
    /// operation.
    fn posting<'a, P>(&'a self, name: &'static str, credits: &'a KeptPool, buf: Buf, mut post: P) -> Posting<'a, E>
    where
        P: FnMut(&Endpoint<E>, Buf, u64) -> Result<OpId, PostError> + Send + 'a,
    {
        let now = self.post_now(name, credits, buf, &mut post);
        self.posting_from(now, name, credits, post)
    }

    /// The [`Posting`] of what [`post_now`](Self::post_now) gave: a wait
    /// (for a credit, or for room in the provider's queue) goes on with
    /// `post`.
    fn posting_from<'a, P>(
        &'a self,
        now: Now<'a, E>,
        name: &'static str,
        credits: &'a KeptPool,
        post: P,
    ) -> Posting<'a, E>
    where
        P: FnMut(&Endpoint<E>, Buf, u64) -> Result<OpId, PostError> + Send + 'a,
    {
        match now {
            Now::Posted(op) => Posting::ready(Ok(op)),
            Now::Failed(error) => Posting::ready(Err(error)),
            Now::Wait(buf) => Posting::waiting(Box::pin(self.post(name, credits, buf, post))),
            Now::Full(full) => Posting::waiting(Box::pin(self.retry(full, post))),
        }
    }

    /// Posts without waiting: when a credit is free and the provider takes
    /// the operation at once.
    fn post_now<P>(&self, name: &'static str, credits: &KeptPool, buf: Buf, post: &mut P) -> Now<'_, E>
    where
        P: FnMut(&Endpoint<E>, Buf, u64) -> Result<OpId, PostError>,
    {
        match self.driver.shared.try_credit(credits) {
            Some(credit) => self.post_with(name, credit, buf, post),
            None => Now::Wait(buf),
        }
    }

    /// Posts with `credit` if the provider takes the operation at once.
    fn post_with<P>(&self, name: &'static str, credit: OwnedCredit, buf: Buf, post: &mut P) -> Now<'_, E>
    where
        P: FnMut(&Endpoint<E>, Buf, u64) -> Result<OpId, PostError>,
    {
        let started = self.observer.start();
        let mut op = self.entry(name, credit, started);
        match self.attempt(&mut op, buf, post) {
            Ok(None) => Now::Posted(op),
            // The entry keeps its credit while the post waits for room: a
            // credit reserved ahead (`RecvCredit`) is not given up then.
            Ok(Some(full)) => Now::Full(Full { name, started, op, buf: full.buf }),
            Err(error) => {
                drop(op);
                self.observer.record::<E>(name, started, || self.driver.shared.in_flight(), Err(&error));
                Now::Failed(error)
            }
        }
    }

    /// Takes a credit and posts with `post`, retrying while the provider's
    /// queue is full (driving progress meanwhile), for at most the post
    /// timeout.
    async fn post(
        &self,
        name: &'static str,
        credits: &KeptPool,
        buf: Buf,
        post: impl FnMut(&Endpoint<E>, Buf, u64) -> Result<OpId, PostError>,
    ) -> Result<Op<'_, E>, OpError> {
        let started = self.observer.start();
        let op = self.entry(name, self.driver.shared.credit(credits).await, started);
        self.retry(Full { name, started, op, buf }, post).await
    }

    /// Posts `full`'s operation with its entry (and credit), retrying while
    /// the provider's queue is full (driving progress meanwhile), for at
    /// most the post timeout.
    async fn retry<'a>(
        &'a self,
        full: Full<'a, E>,
        mut post: impl FnMut(&Endpoint<E>, Buf, u64) -> Result<OpId, PostError>,
    ) -> Result<Op<'a, E>, OpError> {
        let Full { name, started, mut op, mut buf } = full;
        let shared = &*self.driver.shared;
        let failed = |e: OpError| {
            self.observer.record::<E>(name, started, || shared.in_flight(), Err(&e));
            Err(e)
        };
        let mut deadline = None;
        loop {
            match self.attempt(&mut op, buf, &mut post) {
                Ok(None) => return Ok(op),
                Ok(Some(full)) => {
                    let give_up = *deadline.get_or_insert_with(|| Instant::now() + shared.config.post_timeout);
                    if Instant::now() >= give_up {
                        let error = Error::Call { call: full.error.call(), errno: Errno::from_raw(libc::ETIMEDOUT) };
                        return failed(OpError { error, kind: None, buf: Some(full.buf) });
                    }
                    buf = full.buf;
                    // Read completions (this frees room) and let other
                    // tasks run before trying again.
                    if let Err(error) = shared.progress() {
                        return failed(OpError { error, kind: None, buf: Some(buf) });
                    }
                    yield_now().await;
                }
                Err(error) => return failed(error),
            }
        }
    }

    /// A driver entry holding `credit`, and the operation that will use it;
    /// dropping the `Op` frees (or, once posted, cancels) the entry.
    fn entry(&self, name: &'static str, credit: OwnedCredit, started: Option<Instant>) -> Op<'_, E> {
        let shared = &*self.driver.shared;
        let (token, delivered) = {
            let mut table = shared.lock();
            (table.insert(credit), table.delivered)
        };
        Op::new(shared, &self.ep, token, delivered).reported(name, started, &self.observer)
    }

    /// One try at posting `op`'s operation: `None` once libfabric has it,
    /// the refusal (with the buffer) when its queue is full, or the error.
    fn attempt<P>(&self, op: &mut Op<'_, E>, buf: Buf, post: &mut P) -> Result<Option<PostError>, OpError>
    where
        P: FnMut(&Endpoint<E>, Buf, u64) -> Result<OpId, PostError>,
    {
        match post(&self.ep, buf, op.token) {
            Ok(id) => {
                op.op = Some(id);
                // A waiting driver spins again after a post, as the answer
                // may be near (woken if it sleeps); a busy-polling one never
                // sleeps.
                let shared = &*self.driver.shared;
                if shared.config.mode == ProgressMode::Wait {
                    shared.activity.bump();
                    if shared.asleep.load(Ordering::SeqCst) {
                        shared.wake.notify_one();
                    }
                }
                Ok(None)
            }
            Err(e) if queue_full(&e.error) => Ok(Some(e)),
            Err(e) => Err(e.into()),
        }
    }
}

/// A receive credit taken ahead of its receive
/// ([`AsyncEndpoint::try_reserve_recv`]), for a caller that must not wait
/// between something it does and the post (the transport's requests:
/// between sending a request and posting its answer's receive, so that
/// dropping the request's future cannot leave the answer unmatched).
/// Dropping it gives the credit back.
pub(crate) struct RecvCredit<'a, E: Entry> {
    ep: &'a AsyncEndpoint<E>,
    credit: OwnedCredit,
}

impl<'a, E: Entry> RecvCredit<'a, E> {
    /// [`AsyncEndpoint::post_trecv`] with this credit: resolved at once,
    /// unless the provider's queue is full, which it then waits out as
    /// `post_trecv` does.
    pub(crate) fn post_trecv(self, buf: Buf, src: Address, tag: u64, ignore: u64) -> Posting<'a, E> {
        let ep = self.ep;
        let mut post = move |e: &Endpoint<E>, buf, token| e.trecv(buf, src, tag, ignore, token);
        let now = ep.post_with("trecv", self.credit, buf, &mut post);
        ep.posting_from(now, "trecv", &ep.rx, post)
    }
}

impl<E: Entry> fmt::Debug for RecvCredit<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvCredit").finish_non_exhaustive()
    }
}

/// A post refused for want of room: `FI_EAGAIN`, or `FI_ENOMEM` from shm,
/// whose receive pool also holds unexpected messages.
fn queue_full(error: &Error) -> bool {
    error.is_again() || error.errno() == Errno::from_raw(libc::ENOMEM)
}

/// An operation the provider does not implement.
fn unsupported(error: &Error) -> bool {
    [libc::ENOSYS, libc::EOPNOTSUPP].map(Errno::from_raw).contains(&error.errno())
}

/// What posting without waiting gave.
enum Now<'a, E: Entry> {
    Posted(Op<'a, E>),
    Failed(OpError),
    /// No credit free: the buffer back.
    Wait(Buf),
    /// The provider's queue is full: the entry, with its credit, to post
    /// again once there is room.
    Full(Full<'a, E>),
}

/// An operation refused for want of room in the provider's queue: its
/// entry (holding its credit) and buffer, and what reports it.
struct Full<'a, E: Entry> {
    name: &'static str,
    started: Option<Instant>,
    op: Op<'a, E>,
    buf: Buf,
}
