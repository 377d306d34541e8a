//! An entry freed later: the operation whose future read its own completion
//! off the queue leaves its entry here, to be freed at the next lock of the
//! operation table.
//!
//! Freeing an entry takes the table's lock (two atomic instructions, and the
//! table's work). Done at once, that falls between the completion and what
//! the program does with it: on the critical path of a round trip, once on
//! each side. The next lock comes with the next post, which follows the
//! program's answer, off that path. Measured on shm, busy-polling, 64 B:
//! `cargo xtask turns` (7 runs) the client's turn 191 → 180 ns, the
//! server's 118 → 108 ns; `scripts/pairs` (32 rounds) 0.785 → 0.758 µs one
//! way, faster in 23 rounds.
//!
//! One entry waits here at most; a second one left frees the first. The
//! entry keeps its credit (and the waker its future may have left in it)
//! until freed, so a post that finds no free credit
//! frees the entry before it waits for one, and while any post waits, an
//! entry left here is freed at once (see [`Later::leave`] and
//! [`Later::waiting`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::credits::Waiting;

/// No entry waits to be freed: no token is this (see `NO_SPINNER`).
const NONE: u64 = u64::MAX;

/// The entry left to be freed, and the posts waiting for a credit.
#[derive(Debug)]
pub(crate) struct Later {
    token: AtomicU64,
    waiting: AtomicUsize,
}

impl Default for Later {
    fn default() -> Self {
        Later { token: AtomicU64::new(NONE), waiting: AtomicUsize::new(0) }
    }
}

/// What a caller of [`Later::leave`] must free now, under the table's lock.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Leave {
    /// Nothing: the entry waits for the next lock.
    Left,
    /// An entry left earlier (and, at the lock, the one just left).
    Earlier(u64),
    /// The entry just left, which is taken back at the lock, as a post
    /// waits for a credit that it may hold.
    Now,
}

impl Later {
    /// Leaves the entry of `token` to be freed at the next lock.
    pub(crate) fn leave(&self, token: u64) -> Leave {
        // SeqCst here and in `waiting`, so that of the two (a leave and a
        // post about to wait for a credit) at least one sees the other:
        // either this load sees the waiting post, or that post's `take`
        // sees this token. (Or a third lock takes the token first: then
        // the credit it gives back wakes the post through the pool's own
        // pairing, see `credits`.)
        let earlier = self.token.swap(token, Ordering::SeqCst);
        if earlier != NONE {
            Leave::Earlier(earlier)
        } else if self.waiting.load(Ordering::SeqCst) > 0 {
            Leave::Now
        } else {
            Leave::Left
        }
    }

    /// The token of the entry left to be freed, taken (by the holder of the
    /// table's lock, which frees it).
    #[inline]
    pub(crate) fn take(&self) -> Option<u64> {
        // A load first: the swap, an atomic instruction, only when there is
        // an entry.
        if self.token.load(Ordering::SeqCst) == NONE {
            return None;
        }
        Some(self.token.swap(NONE, Ordering::SeqCst)).filter(|&t| t != NONE)
    }

    /// Whether an entry waits to be freed.
    pub(crate) fn is_left(&self) -> bool {
        self.token.load(Ordering::Relaxed) != NONE
    }

    /// Counts a post waiting for a credit until the guard is dropped: from
    /// then on [`leave`](Self::leave) has its entry freed at once. Take the
    /// table's lock after this, to free an entry left before.
    pub(crate) fn waiting(&self) -> Waiting<'_> {
        Waiting::count(&self.waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_waits_and_a_second_frees_the_first() {
        let later = Later::default();
        assert_eq!(later.take(), None);
        assert_eq!(later.leave(7), Leave::Left);
        assert!(later.is_left());
        assert_eq!(later.leave(9), Leave::Earlier(7));
        assert_eq!(later.take(), Some(9));
        assert_eq!(later.take(), None);
        assert!(!later.is_left());
    }

    #[test]
    fn while_a_post_waits_nothing_is_left_for_later() {
        let later = Later::default();
        let waiting = later.waiting();
        assert_eq!(later.leave(3), Leave::Now);
        assert_eq!(later.take(), Some(3));
        drop(waiting);
        assert_eq!(later.leave(4), Leave::Left);
    }
}
