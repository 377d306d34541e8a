//! One-way messages as a stream: receives kept posted, taken in arrival
//! order, their buffers reused.

use std::collections::VecDeque;
use std::fmt;

use crate::av::Address;
use crate::driver::{Op, OpError};
use crate::ops::Buf;
use crate::TaggedEntry;

use super::bounded;
use super::node::{Node, PeerId};

/// The one-way messages reaching a [`Node`], from [`Node::incoming`].
///
/// Where [`Node::recv`] posts one receive per call and waits for it, this
/// keeps several posted, so messages that come in a burst land in posted
/// buffers instead of the provider's unexpected queue, and a message that
/// is already in costs no wait. Dropping it cancels the receives it keeps
/// posted: messages already received into them and not yet taken with
/// [`next`](Self::next) are dropped with them.
///
/// ```no_run
/// # async fn demo(node: libfabric::transport::Node) -> Result<(), Box<dyn std::error::Error>> {
/// let mut incoming = node.incoming(16, 4096);
/// loop {
///     let (from, msg) = incoming.next().await?;
///     println!("{} bytes from {from:?}", msg.len());
///     incoming.recycle(msg); // the next receive reuses the buffer
/// }
/// # }
/// ```
pub struct Incoming<'a> {
    node: &'a Node,
    /// Posted receives, oldest first: receives without a tag are matched in
    /// the order they were posted, so the oldest completes first.
    posted: VecDeque<Op<'a, TaggedEntry>>,
    depth: usize,
    /// The size of each receive's buffer.
    size: usize,
    /// Buffers given back, for the next receives.
    spare: Vec<Buf>,
}

impl fmt::Debug for Incoming<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("posted", &self.posted.len())
            .field("depth", &self.depth)
            .field("size", &self.size)
            .finish()
    }
}

impl<'a> Incoming<'a> {
    pub(super) fn new(node: &'a Node, depth: usize, size: usize) -> Self {
        Incoming { node, posted: VecDeque::with_capacity(depth), depth, size, spare: Vec::with_capacity(depth) }
    }

    /// The next message and its sender's [`PeerId`] (the sender's own word,
    /// as with [`Node::recv`]), after posting receives up to the depth.
    /// Waits at most the operation timeout (`FI_ETIMEDOUT`); the receives
    /// stay posted then, for the next call. A message longer than the
    /// buffers fails its receive (`FI_ETRUNC`) and only that one.
    /// Cancel-safe: dropping the future loses no message.
    pub async fn next(&mut self) -> Result<(PeerId, Buf), OpError> {
        let ep = self.node.endpoint();
        while self.posted.len() < self.depth {
            let buf = self.spare.pop().unwrap_or_else(|| Buf::zeroed(self.size));
            self.posted.push_back(ep.post_recv(buf, Address::UNSPEC).await?);
        }
        let oldest = self.posted.front_mut().expect("the depth is at least one");
        let limit = self.node.config().op_timeout;
        let done = match bounded("fi_recv", limit, tracing::Span::none(), oldest).await {
            // The wait's own timeout (no operation named): it dropped only
            // the borrow, so the receive stays posted.
            Err(e) if e.kind.is_none() => return Err(e),
            got => {
                self.posted.pop_front();
                got?
            }
        };
        Ok((PeerId::of_message(&done.entry), done.buf))
    }

    /// Gives a message's buffer back for a later receive, so a loop that
    /// recycles what it took allocates nothing. Kept only if it has this
    /// stream's buffer size and fewer than the depth are kept already.
    pub fn recycle(&mut self, buf: Buf) {
        // A registered buffer's access was chosen for the operation it was
        // registered for; a receive needs its own.
        if buf.capacity() == self.size && buf.memory_region().is_none() && self.spare.len() < self.depth {
            self.spare.push(buf);
        }
    }

    /// Receives kept posted.
    pub fn depth(&self) -> usize {
        self.depth
    }
}
