//! [`Node::serve`]: requests received with receives kept posted, each peer's
//! handled in order by its own lane.
//!
//! A peer's requests go to a task of its own, so one peer's slow handler
//! does not hold up another's. But a hop to that task (a channel and a
//! wake-up) is the larger part of a quick answer's cost, so while a peer's
//! task has nothing of its to finish, the serving loop starts the handler
//! itself, and answers at once when the handler is done at its first poll
//! and the answer fits an inject. Anything else goes to the task, in order.

use std::collections::hash_map::Entry as Slot;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use crate::av::Address;
use crate::cq::Entry;
use crate::driver::OpError;
use crate::ops::Buf;

use super::node::{Node, Peer, PeerId, Request};
use super::peer_map::PeerMap;
use super::wire;

impl Node {
    /// Answers requests until posting a receive fails: each request goes to
    /// `handler`, whose answer goes back to its sender (a request that
    /// arrives failed, e.g. longer than [`TransportConfig::max_message`],
    /// is logged and dropped). Keeps [`TransportConfig::serve_receives`]
    /// receives posted (at most half the endpoint's receive credits), so
    /// requests that come faster than they are taken wait in a posted
    /// receive rather than in the provider's unexpected queue. When it
    /// returns or is dropped, requests received but not yet handed to a
    /// handler are dropped with the posted receives, and their senders'
    /// requests time out. Start it before peers can send (before
    /// [`accept_peer`](Self::accept_peer) returns): a request that comes
    /// before any receive is posted waits unexpected, and on shm may never
    /// be matched (tests/libfabric-known-issues.md, 4). One peer's requests
    /// are handled one at a time in the order they arrived; different peers'
    /// concurrently. Waits for requests as long as it runs (no timeout);
    /// answers are bounded by the operation timeout. A handler that panics
    /// loses its request (its sender's request times out), and only that.
    ///
    /// [`TransportConfig::max_message`]: super::TransportConfig::max_message
    /// [`TransportConfig::serve_receives`]: super::TransportConfig::serve_receives
    pub async fn serve<F, Fut>(&self, handler: F) -> Result<(), OpError>
    where
        F: Fn(Request) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Buf> + Send + 'static,
    {
        let mut lanes: PeerMap<Lane<Fut>> = PeerMap::default();
        let depth = self.config().peer_credits.max(1);
        let ep = self.endpoint();
        // At most half the endpoint's receive credits: the rest stay for
        // `recv` and for the answers to this node's own requests.
        let receives = self.config().serve_receives.clamp(1, (ep.credits().1 / 2).max(1));
        self.mark_serving();
        // Receives with one tag are matched in the order they were posted:
        // awaiting the oldest first keeps the arrival order.
        let mut posted = VecDeque::with_capacity(receives);
        // The box the last quick handler ran in, and the buffer of its
        // answer, for the next request: kept here, not in the node's pool,
        // which is behind a lock.
        let mut spare = Spare { handler: None, buffer: None };
        loop {
            while posted.len() < receives {
                let buf = spare.buffer.take().unwrap_or_else(|| self.request_buffer());
                posted.push_back(ep.post_trecv(buf, Address::UNSPEC, wire::REQUEST, wire::ID_MASK).await?);
            }
            let oldest = posted.front_mut().expect("at least one receive is posted");
            let got = oldest.await;
            // Its finished future is popped (moved out of the queue and
            // dropped) at the end of this turn, after the answer has left:
            // before it, that was about 8 ns of the serving side's turn on
            // shm (`cargo xtask turns`: 115.8 → 108.2 and 119.1 → 108.8 ns).
            let _finished = Finished(&mut posted);
            let got = match got {
                Ok(got) => got,
                // One bad request (too long: FI_ETRUNC) does not stop the
                // service; its sender's request times out.
                Err(e) if e.kind.is_some() => {
                    tracing::warn!(error = %e, "a request receive failed; dropped");
                    if let Some(buf) = e.buf {
                        self.recycle(buf);
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (Some(tag), Some(from)) = (got.entry.tag(), got.entry.data()) else {
                tracing::warn!("a request without a tag or sender; dropped");
                continue;
            };
            let peer = PeerId(from);
            // A lane is opened only for a peer the node knows, and peers are
            // never removed: a sender with a lane needs no other check.
            let lane = match lanes.entry(peer) {
                Slot::Occupied(lane) => lane.into_mut(),
                Slot::Vacant(slot) => match self.peer(peer) {
                    Some(handle) => slot.insert(Lane::open(self, handle, depth, handler.clone())),
                    None => {
                        tracing::warn!(peer = from, "a request from a sender that is no known peer; dropped");
                        continue;
                    }
                },
            };
            let id = tag & wire::ID_MASK;
            let request = Request { peer, body: got.buf };
            let work = if lane.idle() {
                self.start(lane, id, &mut spare, || handler(request)).await
            } else {
                Some(Work::Request(id, request))
            };
            if let Some(work) = work {
                lane.hand_over(work).await;
            }
        }
    }

    /// Runs a request's handler up to its first wait; answers it here if it
    /// finished and the answer fits an inject. What is left for the lane.
    /// The handler runs in `spare`'s box, if there is one, and leaves it
    /// there if it finished, and the answer's buffer with it: a quick
    /// handler costs no allocation.
    async fn start<Fut: Future<Output = Buf>>(
        &self,
        lane: &Lane<Fut>,
        id: u64,
        spare: &mut Spare<Fut>,
        call: impl FnOnce() -> Fut,
    ) -> Option<Work<Fut>> {
        let Some(handler) = begin(call) else {
            panicked(&lane.peer, id);
            return None;
        };
        let mut started = spare.handler.take().unwrap_or_else(|| Box::pin(None));
        started.set(Some(handler));
        let answer = match std::future::poll_fn(|cx| Poll::Ready(poll_caught(started.as_mut(), cx))).await {
            Some(Poll::Ready(answer)) => {
                started.set(None);
                spare.handler = Some(started);
                answer
            }
            Some(Poll::Pending) => return Some(Work::Started(id, started)),
            None => {
                panicked(&lane.peer, id);
                return None;
            }
        };
        match lane.peer.try_inject_tagged(&answer, wire::response(id)) {
            Ok(true) => {
                if spare.buffer.is_none() && self.fits_any_request(&answer) {
                    spare.buffer = Some(answer);
                } else {
                    self.recycle(answer);
                }
                None
            }
            Ok(false) => Some(Work::Answer(id, answer)),
            Err(error) => {
                tracing::warn!(peer = lane.peer.id().0, id, %error, "answer not delivered");
                None
            }
        }
    }
}

/// Pops the oldest posted receive (finished) when dropped.
struct Finished<'a, T>(&'a mut VecDeque<T>);

impl<T> Drop for Finished<'_, T> {
    fn drop(&mut self) {
        self.0.pop_front();
    }
}

/// What the serving loop keeps from one quick request for the next.
struct Spare<Fut> {
    handler: Option<Handler<Fut>>,
    buffer: Option<Buf>,
}

/// What a peer's lane has to finish, in order.
enum Work<Fut> {
    /// A request for the handler.
    Request(u64, Request),
    /// A handler the serving loop started, and found waiting.
    Started(u64, Handler<Fut>),
    /// An answer to send (too large for an inject, or no room for one).
    Answer(u64, Buf),
}

/// One peer's lane: a task that finishes its work in order.
struct Lane<Fut> {
    peer: Peer,
    work: mpsc::Sender<Work<Fut>>,
    /// Work handed to the task and not yet finished.
    unfinished: Arc<AtomicUsize>,
}

impl<Fut> Lane<Fut>
where
    Fut: Future<Output = Buf> + Send + 'static,
{
    fn open<F>(node: &Node, peer: Peer, depth: usize, handler: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
    {
        let (tx, rx) = mpsc::channel(depth);
        let unfinished = Arc::new(AtomicUsize::new(0));
        tokio::spawn(answer(node.clone(), peer.clone(), rx, unfinished.clone(), handler));
        Lane { peer, work: tx, unfinished }
    }

    /// Nothing of the peer's is left to its task: the serving loop may
    /// handle the next request itself without passing an earlier one.
    fn idle(&self) -> bool {
        // Acquire: pairs with the task's release once it has sent an answer.
        self.unfinished.load(Ordering::Acquire) == 0
    }

    /// Queues `work` behind the peer's earlier work; a full queue slows the
    /// serving loop down, and the peer's requests wait in the provider.
    async fn hand_over(&self, work: Work<Fut>) {
        self.unfinished.fetch_add(1, Ordering::Relaxed);
        if self.work.send(work).await.is_err() {
            self.unfinished.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(peer = self.peer.id().0, "the peer's handler stopped; request dropped");
        }
    }
}

/// A peer's task: its work in order, each answer sent before the next starts.
async fn answer<F, Fut>(
    node: Node,
    peer: Peer,
    mut work: mpsc::Receiver<Work<Fut>>,
    unfinished: Arc<AtomicUsize>,
    handler: F,
) where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = Buf>,
{
    while let Some(next) = work.recv().await {
        let (id, response) = match next {
            Work::Request(id, request) => match begin(|| handler(request)) {
                Some(started) => (id, caught(Box::pin(Some(started))).await),
                None => (id, None),
            },
            Work::Started(id, started) => (id, caught(started).await),
            Work::Answer(id, answer) => (id, Some(answer)),
        };
        match response {
            Some(response) => match peer.send_tagged(response, wire::response(id)).await {
                Ok(sent) => node.recycle(sent),
                Err(error) => tracing::warn!(peer = peer.id().0, id, %error, "answer not delivered"),
            },
            None => panicked(&peer, id),
        }
        // Release: what the handler did happens before the next request,
        // which the serving loop may now handle itself.
        unfinished.fetch_sub(1, Ordering::Release);
    }
}

/// Logs a handler that panicked: its request is lost, nothing else.
fn panicked(peer: &Peer, id: u64) {
    tracing::error!(peer = peer.id().0, id, "a handler panicked; request dropped");
}

/// A handler's future in its box; `None` between handlers (a box kept
/// for the next one).
type Handler<Fut> = Pin<Box<Option<Fut>>>;

/// Calls the handler for its future; `None` if the call panicked.
fn begin<Fut>(call: impl FnOnce() -> Fut) -> Option<Fut> {
    panic::catch_unwind(AssertUnwindSafe(call)).ok()
}

/// Polls a handler once; `None` if it panicked (or the box is empty, which
/// no caller lets happen).
fn poll_caught<Fut: Future<Output = Buf>>(handler: Pin<&mut Option<Fut>>, cx: &mut Context<'_>) -> Option<Poll<Buf>> {
    let handler = handler.as_pin_mut()?;
    panic::catch_unwind(AssertUnwindSafe(|| handler.poll(cx))).ok()
}

/// Runs a handler to its end; `None` if it panicked, which costs its request
/// only: the peer's later requests are still handled.
async fn caught<Fut: Future<Output = Buf>>(mut handler: Handler<Fut>) -> Option<Buf> {
    std::future::poll_fn(|cx| match poll_caught(handler.as_mut(), cx) {
        Some(Poll::Ready(answer)) => Poll::Ready(Some(answer)),
        Some(Poll::Pending) => Poll::Pending,
        None => Poll::Ready(None),
    })
    .await
}
