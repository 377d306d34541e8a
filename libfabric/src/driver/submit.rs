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

/// An operation's future: resolves with its completion, the buffer with it.
/// Dropping it before then cancels the operation.
#[must_use = "dropping an operation cancels it"]
pub struct Submit<'a, E: Entry>(SubmitState<'a, E>);

enum SubmitState<'a, E: Entry> {
    /// Posted: awaiting its completion.
    Posted(Op<'a, E>),
    /// Refused when posted (the error is given once).
    Failed(Option<OpError>),
    /// Waiting for a credit or for room in the provider's queue.
    Waiting(Waiting<'a, Completion<E>>),
}

impl<'a, E: Entry> Submit<'a, E> {
    pub(crate) fn posted(op: Op<'a, E>) -> Self {
        Submit(SubmitState::Posted(op))
    }

    pub(crate) fn failed(error: OpError) -> Self {
        Submit(SubmitState::Failed(Some(error)))
    }

    pub(crate) fn waiting(waiting: Waiting<'a, Completion<E>>) -> Self {
        Submit(SubmitState::Waiting(waiting))
    }
}

impl<E: Entry> Future for Submit<'_, E> {
    type Output = Result<Completion<E>, OpError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every state is Unpin (an `Op` holds references and plain data; the
        // waiting path is boxed).
        match &mut self.get_mut().0 {
            SubmitState::Posted(op) => Pin::new(op).poll(cx),
            SubmitState::Failed(error) => Poll::Ready(Err(error.take().expect("a Submit polled after it resolved"))),
            SubmitState::Waiting(waiting) => waiting.as_mut().poll(cx),
        }
    }
}

/// A post's future that resolves once libfabric has the operation, with
/// its [`Op`] to await (`post_recv`, `post_trecv`). Dropping it before then
/// cancels the operation.
#[must_use = "dropping a posting cancels it"]
pub struct Posting<'a, E: Entry>(PostingState<'a, E>);

enum PostingState<'a, E: Entry> {
    /// Posted, or refused (given once).
    Ready(Option<Result<Op<'a, E>, OpError>>),
    /// Waiting for a credit or for room in the provider's queue.
    Waiting(Waiting<'a, Op<'a, E>>),
}

impl<'a, E: Entry> Posting<'a, E> {
    pub(crate) fn ready(result: Result<Op<'a, E>, OpError>) -> Self {
        Posting(PostingState::Ready(Some(result)))
    }

    pub(crate) fn waiting(waiting: Waiting<'a, Op<'a, E>>) -> Self {
        Posting(PostingState::Waiting(waiting))
    }
}

impl<'a, E: Entry> Future for Posting<'a, E> {
    type Output = Result<Op<'a, E>, OpError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            PostingState::Ready(result) => Poll::Ready(result.take().expect("a Posting polled after it resolved")),
            PostingState::Waiting(waiting) => waiting.as_mut().poll(cx),
        }
    }
}

impl<E: Entry> std::fmt::Debug for Submit<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            SubmitState::Posted(op) => f.debug_tuple("Submit::Posted").field(op).finish(),
            SubmitState::Failed(e) => f.debug_tuple("Submit::Failed").field(e).finish(),
            SubmitState::Waiting(_) => f.write_str("Submit::Waiting"),
        }
    }
}

impl<E: Entry> std::fmt::Debug for Posting<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            PostingState::Ready(r) => f.debug_tuple("Posting::Ready").field(r).finish(),
            PostingState::Waiting(_) => f.write_str("Posting::Waiting"),
        }
    }
}
