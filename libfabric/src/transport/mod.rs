//! A high-level transport on the async driver (feature `tokio`).
//!
//! - Connectionless ([`Node`], RDM endpoints): peers in an address vector,
//!   found through an address exchange that needs only a host and port
//!   ([`Node::accept_peer`], [`Node::dial`]); per-peer handles ([`Peer`])
//!   with one-way messages, request/response, and handlers that see each
//!   peer's messages in order ([`Node::serve`]); a stream of one-way
//!   messages with receives kept posted ([`Node::incoming`]).
//! - Connection-oriented ([`Listener`], [`Connection`], MSG endpoints):
//!   listen, accept, connect, graceful shutdown and peer-closed detection.
//!
//! Every operation is bounded: in flight per endpoint (the driver's credits)
//! and per peer ([`TransportConfig::peer_credits`]), and in time
//! ([`TransportConfig::op_timeout`], counted from the first time the future
//! has to wait): a future that outlives it resolves with `FI_ETIMEDOUT` and
//! its operation is cancelled. Buffers go to libfabric as
//! they are, with no copy; when the provider needs registered memory
//! (`FI_MR_LOCAL`) the endpoint registers them. A request or an answer
//! within the provider's inject size is sent by inject instead (libfabric
//! copies it before the call returns, so nothing is in flight; the request's
//! credit, held until its answer is in, still bounds them). One-way
//! messages are always sent: their sends' credits are what slow a sender
//! down to a slow receiver.
//!
//! Provider bugs worked around here, so that code on the transport need not
//! (both in the repository's `tests/libfabric-known-issues.md`, with C
//! reproductions): shm stops matching tagged messages that wait unexpected,
//! so a serving node keeps more request receives posted than its peers may
//! have requests outstanding ([`TransportConfig::serve_receives`], issue
//! 4); and udp;ofi_rxd, when answers wait unexpected, now and then loses
//! another message or loops for good in `fi_cq_read`, so there a request
//! posts its answer's receive before it leaves (issue 10).

mod events;
mod exchange;
mod incoming;
mod msg;
mod node;
mod peer_map;
mod serve;
mod stack;
mod wire;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use libfabric_sys::enums::Errno;

use crate::driver::{DriverConfig, OpError};
use crate::error::Error;

pub use incoming::Incoming;
pub use msg::{Connection, Listener};
pub use node::{Node, Peer, PeerId, Reply, Request};

/// How a transport endpoint is opened and how long it waits.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// The provider (`"tcp;ofi_rxm"`, `"shm"`, `"tcp"`, …).
    pub provider: String,
    /// The local node to open on (`Some("127.0.0.1")`); `None`: the
    /// provider's choice (for shm, a name unique to the endpoint).
    pub node: Option<String>,
    /// The completion driver's settings (in-flight bound, progress mode).
    pub driver: DriverConfig,
    /// Operations in flight to one peer, at most.
    pub peer_credits: usize,
    /// How long any one operation or wait may take, counted from the first
    /// time its future has to wait (one that finishes when first polled
    /// never starts a timer).
    pub op_timeout: Duration,
    /// The largest message a handler or receive accepts.
    pub max_message: usize,
    /// Receives [`Node::serve`] keeps posted for requests, each of
    /// `max_message` bytes (at most half the endpoint's receive credits).
    /// On shm, keep it at least the number of requests all peers together
    /// may have outstanding: a request that finds no posted receive waits
    /// unexpected, where shm may never match it (tests/libfabric-known-issues.md, 4).
    pub serve_receives: usize,
}

impl TransportConfig {
    /// Defaults for `provider`: 1,024 operations in flight, 64 per peer,
    /// 30 s per operation, messages up to 64 KiB, 64 request receives
    /// posted by a serving node (as many as one peer's credits).
    pub fn new(provider: &str) -> Self {
        TransportConfig {
            provider: provider.to_string(),
            node: None,
            driver: DriverConfig::default(),
            peer_credits: 64,
            op_timeout: Duration::from_secs(30),
            max_message: 64 * 1024,
            serve_receives: 64,
        }
    }

    /// The same, opened on `node`.
    pub fn node(mut self, node: &str) -> Self {
        self.node = Some(node.to_string());
        self
    }
}

/// Why opening, connecting or finding a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A libfabric call failed (or timed out: `FI_ETIMEDOUT`).
    #[error(transparent)]
    Fabric(#[from] Error),
    /// The TCP address exchange failed.
    #[error("address exchange: {0}")]
    Exchange(#[from] std::io::Error),
}

impl From<OpError> for TransportError {
    fn from(e: OpError) -> TransportError {
        TransportError::Fabric(e.error)
    }
}

/// `ETIMEDOUT` for `call`.
pub(crate) fn timed_out(call: &'static str) -> Error {
    Error::Call { call, errno: Errno::from_raw(libc::ETIMEDOUT) }
}

/// `op` bounded by `limit` and run inside `span`: resolves with `op`'s
/// result, or once `limit` has passed with `FI_ETIMEDOUT` naming `call` (the
/// future is dropped then, which cancels its operation).
///
/// A named future rather than an `async fn` over `tokio::time::timeout` and
/// `Instrument`: each of those layers kept its own copy of the operation's
/// future and moved it into the next, about 500 instructions of `memcpy`
/// per request.
// Inlined with `Peer::request`, whose caller then writes the future's
// fields where it awaits it.
#[inline]
pub(crate) fn bounded<F>(call: &'static str, limit: Duration, span: tracing::Span, op: F) -> Bounded<F> {
    Bounded { call, span, limit, op: Some(op), deadline: None }
}

pin_project_lite::pin_project! {
    /// The future of [`bounded`].
    pub(crate) struct Bounded<F> {
        call: &'static str,
        span: tracing::Span,
        limit: Duration,
        // `None` only while dropping: an `Option` so that the operation is
        // dropped (and cancelled, and that logged) inside the span.
        #[pin]
        op: Option<F>,
        // Made on the first poll that finds the operation waiting: one that
        // finishes at once needs no timer, and the future can be built
        // outside the runtime. Unconstrained by tokio's cooperative budget,
        // as `tokio::time::timeout`'s is: an operation that used up the
        // budget must not keep its deadline from firing.
        #[pin]
        deadline: Option<tokio::task::Unconstrained<tokio::time::Sleep>>,
    }

    impl<F> PinnedDrop for Bounded<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            let _entered = this.span.enter();
            this.op.set(None);
        }
    }
}

impl<T, F: Future<Output = Result<T, OpError>>> Future for Bounded<F> {
    type Output = Result<T, OpError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        let Some(op) = this.op.as_pin_mut() else { unreachable!("the operation is taken only when dropped") };
        if let Poll::Ready(result) = op.poll(cx) {
            return Poll::Ready(result);
        }
        if this.deadline.is_none() {
            this.deadline.set(Some(tokio::task::unconstrained(tokio::time::sleep(*this.limit))));
        }
        match this.deadline.as_pin_mut().map(|d| d.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(OpError { error: timed_out(this.call), kind: None, buf: None })),
            _ => Poll::Pending,
        }
    }
}
