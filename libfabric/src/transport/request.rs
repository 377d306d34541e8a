//! [`Peer::request`]'s future: a request out, its answer back.
//!
//! Written out as a state machine rather than an `async` block. The block
//! awaited a credit's future, a post's and a send's in turn, each polled
//! through its own layer, and its state was the sum of them (680 bytes, now
//! 560). And it did nothing until polled, so the request left only after the
//! caller's `.await` had copied the future in. Here the request leaves when
//! it is made, if it can without waiting (as the endpoint's operations are
//! posted), and the copy happens while it travels. On shm the client's turn
//! (from its answer read to its next request's inject) is 10 to 20 ns
//! shorter: 164.7 → 144.9 and 166.6 → 156.0 ns in two runs of
//! `cargo xtask turns` (15 rounds each).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use crate::av::Address;
use crate::cq::{Entry, TaggedEntry};
use crate::driver::credits::Credit;
use crate::driver::{Op, OpError, Posting, Submit};
use crate::error::Error;
use crate::ops::{Buf, Completion};

use super::node::Peer;
use super::{bounded, wire, Bounded};

/// What [`Peer::request`] gives back: the answer, and the request's own
/// buffer, the caller's again for the next request.
#[derive(Debug)]
pub struct Reply {
    /// The answer, cut to its length.
    pub answer: Buf,
    /// The buffer the request was sent from.
    pub request: Buf,
}

pin_project_lite::pin_project! {
    /// The future of [`Peer::request`]: resolves with the [`Reply`], or with
    /// the error that ended the request (`FI_ETIMEDOUT` once the operation
    /// timeout has passed, counted from the first poll that has to wait).
    ///
    /// Dropping it before then cancels what is not yet sent. A request
    /// already out keeps its answer's receive posted, so the answer is
    /// taken and dropped when it comes rather than left in the provider; the
    /// buffers are the driver's until then.
    #[must_use = "a request's answer is dropped unless it is awaited"]
    pub struct Requesting<'a> {
        #[pin]
        inner: Bounded<Exchange<'a>>,
    }
}

impl<'a> Requesting<'a> {
    /// The request, out already if it can go without waiting.
    #[inline]
    pub(super) fn new(peer: &'a Peer, body: Buf, response: Buf) -> Self {
        let node = peer.node();
        let mut exchange = Exchange {
            peer,
            id: node.next_request_id(),
            credit: None,
            body: Some(body),
            response: Some(response),
            stage: Stage::Start,
        };
        let span = peer.span();
        if let Some(credit) = peer.credits().take_now() {
            exchange.stage = span.in_scope(|| exchange.begin(credit)).unwrap_or_else(|e| Stage::Failed(Some(e)));
        }
        Requesting { inner: bounded("request", node.config().op_timeout, span, exchange) }
    }
}

impl Future for Requesting<'_> {
    type Output = Result<Reply, OpError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

impl fmt::Debug for Requesting<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Requesting").finish_non_exhaustive()
    }
}

/// A request from its credit to its answer. The buffers and the credit
/// sit beside the stage, not in it: a stage is written over when the
/// request moves on, and the less there is to write, the faster it moves.
pub(super) struct Exchange<'a> {
    peer: &'a Peer,
    id: u64,
    /// One of the peer's credits, from before the request leaves until its
    /// answer is in.
    credit: Option<Credit<'a>>,
    /// The request: to send, then sent.
    body: Option<Buf>,
    /// The answer's buffer, until its receive is posted.
    response: Option<Buf>,
    stage: Stage<'a>,
}

/// A boxed wait for one of the peer's credits.
type CreditWait<'a> = Pin<Box<dyn Future<Output = Credit<'a>> + Send + 'a>>;

/// Where a request is.
enum Stage<'a> {
    /// No credit was free when the request was made: one is waited for
    /// when it is first polled.
    Start,
    /// Waiting for a credit: boxed, as only a peer with none free needs it.
    Credit(CreditWait<'a>),
    /// The answer's receive being posted (waiting for a credit of the
    /// endpoint's, or for room in the provider's queue); the request sent
    /// already if the flag says so, else sent next.
    Posting(Posting<'a, TaggedEntry>, bool),
    /// The answer's receive posted (the first), the request being sent (the
    /// second). Dropped here, both are cancelled.
    Sending(Option<Op<'a, TaggedEntry>>, Submit<'a, TaggedEntry>),
    /// The request out, its answer awaited. Dropped here, the receive is
    /// detached, not cancelled: the answer will come, and would otherwise
    /// sit in the provider unexpected for good (and, on udp;ofi_rxd, hold
    /// up the peer's later answers).
    Answer(Detached<'a>),
    /// Failed when it was made; the error is given at the first poll.
    Failed(Option<OpError>),
    /// Resolved, or failed on its way.
    Done,
}

/// A posted receive that is detached, not cancelled, if dropped.
struct Detached<'a>(Option<Op<'a, TaggedEntry>>);

impl Drop for Detached<'_> {
    fn drop(&mut self) {
        if let Some(op) = self.0.take() {
            op.detach();
        }
    }
}

impl Future for Exchange<'_> {
    type Output = Result<Reply, OpError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin`: operations hold references and plain data,
        // and the credit's wait is boxed.
        let this = self.get_mut();
        loop {
            // Awaiting the answer is the stage polled most: matched first.
            if let Stage::Answer(Detached(answer)) = &mut this.stage {
                let Some(op) = answer else { unreachable!("an answer's receive is taken only when it is in") };
                let got = ready!(Pin::new(op).poll(cx));
                // Done: nothing left to detach.
                *answer = None;
                this.stage = Stage::Done;
                this.credit = None;
                let sent = this.body.take().expect("the request's buffer, sent");
                return Poll::Ready(got.and_then(|got| this.answered(got, sent)));
            }
            if let Err(error) = ready!(this.step(cx)) {
                this.stage = Stage::Done;
                this.credit = None;
                return Poll::Ready(Err(error));
            }
        }
    }
}

impl<'a> Exchange<'a> {
    /// Takes the request one stage on (up to awaiting its answer), or
    /// returns `Pending` where it has to wait.
    fn step(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), OpError>> {
        let credits = self.peer.credits();
        self.stage = match &mut self.stage {
            Stage::Start => match credits.take_now() {
                Some(credit) => self.begin(credit)?,
                None => Stage::Credit(Box::pin(credits.take())),
            },
            Stage::Failed(error) => return Poll::Ready(Err(error.take().expect("an error given once"))),
            Stage::Credit(wait) => {
                let credit = ready!(wait.as_mut().poll(cx));
                self.begin(credit)?
            }
            Stage::Posting(answer, injected) => {
                let answer = ready!(Pin::new(answer).poll(cx))?;
                if *injected {
                    Stage::Answer(Detached(Some(answer)))
                } else {
                    self.send(answer)?
                }
            }
            Stage::Sending(answer, send) => {
                let sent = ready!(Pin::new(send).poll(cx))?;
                self.body = Some(sent.buf);
                Stage::Answer(Detached(answer.take()))
            }
            Stage::Answer(_) => unreachable!("the answer is awaited in `poll`"),
            Stage::Done => panic!("a request polled after it resolved"),
        };
        Poll::Ready(Ok(()))
    }

    /// With the peer's credit: the request out and its answer's receive
    /// posted, in the order that suits the node.
    ///
    /// A request that fits an inject leaves before its answer's receive is
    /// posted, unless the node serves too: posting then happens while the
    /// request travels, not between the previous answer and this request
    /// (on shm about 80 ns less a round trip, the largest single piece). The
    /// receive is in place long before the answer can come back (a round
    /// trip), and an answer that came first would wait in the provider
    /// until it is. The receive's credit is taken before the request leaves,
    /// so that nothing between the two waits (and could be dropped, leaving
    /// the answer in the provider for good), unless the provider's queue is
    /// full, which the post waits out.
    ///
    /// A serving node, or one without a free receive credit, posts first:
    /// a serving node's request receives leave shm's receive entries
    /// ignoring the id bits, and shm then matches an answer that waited
    /// with any answer receive (tests/libfabric-known-issues.md, 6).
    #[inline]
    fn begin(&mut self, credit: Credit<'a>) -> Result<Stage<'a>, OpError> {
        self.credit = Some(credit);
        let (peer, id) = (self.peer, self.id);
        let ep = peer.node().endpoint();
        let response = self.response.take().expect("the answer's buffer, not yet posted");
        let tag = wire::response(id);
        let ahead = if peer.node().serves() { None } else { ep.try_reserve_recv() };
        let (mut answer, injected) = match ahead {
            None => (ep.post_trecv(response, Address::UNSPEC, tag, 0), false),
            Some(receive) => {
                let body = self.body.as_ref().expect("the request's buffer, not yet sent");
                let injected = match peer.try_inject_tagged(body, wire::request(id)) {
                    Ok(injected) => injected,
                    Err(error) => return Err(OpError { error, kind: None, buf: self.body.take() }),
                };
                (receive.post_trecv(response, Address::UNSPEC, tag, 0), injected)
            }
        };
        // Posted at once unless the queue is full: then straight on, with
        // no stage between.
        match answer.now() {
            Some(answer) if injected => Ok(Stage::Answer(Detached(Some(answer?)))),
            Some(answer) => self.send(answer?),
            None => Ok(Stage::Posting(answer, injected)),
        }
    }

    /// The answer's receive posted: the request out, by inject if it fits.
    fn send(&mut self, answer: Op<'a, TaggedEntry>) -> Result<Stage<'a>, OpError> {
        let (peer, tag) = (self.peer, wire::request(self.id));
        let body = self.body.as_ref().expect("the request's buffer, not yet sent");
        match peer.try_inject_tagged(body, tag) {
            Ok(true) => Ok(Stage::Answer(Detached(Some(answer)))),
            Ok(false) => {
                let body = self.body.take().expect("the request's buffer, not yet sent");
                let send = peer.node().endpoint().tsend_data(body, peer.me_there(), peer.address(), tag);
                Ok(Stage::Sending(Some(answer), send))
            }
            // The answer's receive is cancelled with `answer`.
            Err(error) => Err(OpError { error, kind: None, buf: self.body.take() }),
        }
    }

    /// The reply, if the answer is this request's: a provider that matched
    /// another tag would hand over someone else's answer, refused rather
    /// than returned as this one's.
    fn answered(&self, got: Completion<TaggedEntry>, sent: Buf) -> Result<Reply, OpError> {
        let expected = wire::response(self.id);
        match got.entry.tag() {
            Some(tag) if tag == expected => Ok(Reply { answer: got.buf, request: sent }),
            other => Err(OpError {
                error: Error::InvalidArgument {
                    call: "fi_trecv",
                    reason: format!("the answer to request {} came with tag {other:x?}, not {expected:x}", self.id),
                },
                kind: Some(got.kind),
                buf: Some(got.buf),
            }),
        }
    }
}
