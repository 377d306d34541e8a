//! Credits: a bound on operations in flight, taken before a post and given
//! back when the operation is over.
//!
//! A tokio `Semaphore` did this before, at about 550 instructions per
//! operation: its release takes the lock of its waiter list every time.
//! Here a free credit is one compare-and-swap and a returned one an atomic
//! add (and a `Notify` poke when a task is waiting); only a task that finds
//! none waits, on the `Notify`.
//! Waiters are woken in turn, but a task arriving just as a credit comes
//! back may take it first (no strict first-come order; the bound is exact).

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// A pool of credits.
pub(crate) struct Credits {
    free: AtomicUsize,
    /// Tasks between registering on `returned` and taking a credit: a
    /// credit given back pokes `returned` only when there are any.
    waiting: AtomicUsize,
    returned: Notify,
}

/// One credit, given back when dropped. `C` is how the pool is held: a
/// reference, or an `Arc` for a credit that outlives the borrow.
pub(crate) struct Credit<C: Deref<Target = Credits>>(C);

/// A credit that holds its pool.
pub(crate) type OwnedCredit = Credit<Arc<Credits>>;

impl Credits {
    /// A pool of `n` credits.
    pub(crate) fn new(n: usize) -> Credits {
        Credits { free: AtomicUsize::new(n), waiting: AtomicUsize::new(0), returned: Notify::new() }
    }

    /// Credits not taken right now.
    pub(crate) fn available(&self) -> usize {
        self.free.load(Ordering::Relaxed)
    }

    /// Takes a credit if one is free.
    #[inline]
    fn try_take(&self) -> bool {
        let mut now = self.free.load(Ordering::SeqCst);
        while now > 0 {
            match self.free.compare_exchange_weak(now, now - 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return true,
                Err(actual) => now = actual,
            }
        }
        false
    }

    /// Waits until a credit is free, through `holder` (whose caller has just
    /// found none).
    async fn wait<C: Deref<Target = Credits>>(holder: C) -> Credit<C> {
        {
            holder.waiting.fetch_add(1, Ordering::SeqCst);
            let _counted = Waiting(&holder.waiting);
            loop {
                let mut returned = std::pin::pin!(holder.returned.notified());
                // Registered before looking again: a credit given back from
                // here on wakes this task (or leaves a permit that does).
                returned.as_mut().enable();
                if holder.try_take() {
                    break;
                }
                returned.await;
            }
        }
        Credit(holder)
    }

    /// Takes a credit that holds the pool if one is free, without waiting.
    #[inline]
    pub(crate) fn try_take_owned(self: &Arc<Self>) -> Option<OwnedCredit> {
        self.try_take().then(|| Credit(self.clone()))
    }

    /// Takes a credit, waiting for one if none is free.
    pub(crate) async fn take(&self) -> Credit<&Credits> {
        if self.try_take() {
            return Credit(self);
        }
        Credits::wait(self).await
    }

    /// Like [`take`](Self::take), for a credit that holds the pool.
    pub(crate) async fn take_owned(self: &Arc<Self>) -> OwnedCredit {
        if self.try_take() {
            return Credit(self.clone());
        }
        Credits::wait(self.clone()).await
    }

    fn give_back(&self) {
        // SeqCst with the waiter's count and its second look at `free`: either
        // the waiter sees this credit, or this sees the waiter.
        self.free.fetch_add(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) != 0 {
            self.returned.notify_one();
        }
    }
}

/// Counts a waiting task for as long as it waits (also when its future is
/// dropped).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<C: Deref<Target = Credits>> Drop for Credit<C> {
    fn drop(&mut self) {
        self.0.give_back();
    }
}

impl fmt::Debug for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credits").field("available", &self.available()).finish()
    }
}

#[cfg(all(test, feature = "tokio"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_credit_comes_back_when_dropped_and_wakes_a_waiter() {
        let pool = Arc::new(Credits::new(2));
        let (a, b) = (pool.take_owned().await, pool.take().await);
        assert_eq!(pool.available(), 0);
        let waiter = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.take_owned().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "no credit free: it waits");
        drop(a);
        let c = waiter.await.expect("the waiter got the credit given back");
        assert_eq!(pool.available(), 0);
        drop((b, c));
        assert_eq!(pool.available(), 2);
    }

    #[tokio::test]
    async fn many_tasks_never_hold_more_than_the_bound() {
        let pool = Arc::new(Credits::new(3));
        let held = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (pool, held) = (pool.clone(), held.clone());
                tokio::spawn(async move {
                    for _ in 0..500 {
                        let _credit = pool.take().await;
                        let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(now <= 3, "{now} credits held at once");
                        tokio::task::yield_now().await;
                        held.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("a task");
        }
        assert_eq!(pool.available(), 3);
    }
}
