//! The futures an [`AsyncEndpoint`](super::AsyncEndpoint) returns for its
//! operations: small when the operation could be posted at once.
//!
//! An operation is posted when it is called if a credit is free and the
//! provider takes it; the future is then just the operation's [`Op`] (about
//! a hundred bytes). Only a post that has to wait (no credit, or a full
//! queue) keeps the general path, boxed so that it does not make every
//! future as large as itself: futures are moved by value as callers wrap
//! them, and a future of several kilobytes cost a round trip about 900
//! instructions of copying.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::cq::Entry;
use crate::ops::Completion;

use super::op::Op;
use super::OpError;

/// The general path of a post that has to wait.
pub(crate) type Waiting<'a, T> = Pin<Box<dyn Future<Output = Result<T, OpError>> + Send + 'a>>;

/// An operation's future: resolves with its completion.
#[must_use = "dropping an operation cancels it"]
pub enum Submit<'a, E: Entry> {
    /// Posted: awaiting its completion.
    Posted(Op<'a, E>),
    /// Refused when posted (the error is given once).
    Failed(Option<OpError>),
    /// Waiting for a credit or for room in the provider's queue.
    Waiting(Waiting<'a, Completion<E>>),
}

impl<E: Entry> Future for Submit<'_, E> {
    type Output = Result<Completion<E>, OpError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every variant is Unpin (an `Op` holds references and plain data;
        // the waiting path is boxed).
        match self.get_mut() {
            Submit::Posted(op) => Pin::new(op).poll(cx),
            Submit::Failed(error) => Poll::Ready(Err(error.take().expect("a Submit polled after it resolved"))),
            Submit::Waiting(waiting) => waiting.as_mut().poll(cx),
        }
    }
}

/// A post's future that resolves once libfabric has the operation, with
/// its [`Op`] (`post_recv`, `post_trecv`).
#[must_use = "dropping a posting cancels it"]
pub enum Posting<'a, E: Entry> {
    /// Posted, or refused.
    Ready(Option<Result<Op<'a, E>, OpError>>),
    /// Waiting for a credit or for room in the provider's queue.
    Waiting(Waiting<'a, Op<'a, E>>),
}

impl<'a, E: Entry> Future for Posting<'a, E> {
    type Output = Result<Op<'a, E>, OpError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Posting::Ready(result) => Poll::Ready(result.take().expect("a Posting polled after it resolved")),
            Posting::Waiting(waiting) => waiting.as_mut().poll(cx),
        }
    }
}

impl<E: Entry> std::fmt::Debug for Submit<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Submit::Posted(op) => f.debug_tuple("Posted").field(op).finish(),
            Submit::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
            Submit::Waiting(_) => f.write_str("Waiting"),
        }
    }
}

impl<E: Entry> std::fmt::Debug for Posting<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Posting::Ready(r) => f.debug_tuple("Ready").field(r).finish(),
            Posting::Waiting(_) => f.write_str("Waiting"),
        }
    }
}
