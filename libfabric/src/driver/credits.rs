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
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// A pool of credits.
pub(crate) struct Credits {
    free: AtomicUsize,
    /// Tasks between registering on `returned` and taking a credit: a
    /// credit given back pokes `returned` only when there are any.
    waiting: AtomicUsize,
    returned: Notify,
}

/// One credit of a borrowed pool, given back when dropped.
pub(crate) struct Credit<'a>(&'a Credits);

/// A credit of a [`KeptPool`], given back when dropped. It points to its
/// pool instead of holding an `Arc` of it: taking and giving back a credit
/// is then one atomic instruction each, not two (on every operation's path,
/// where each costs about 8 ns on the machines measured).
///
/// Sound because of where these credits live: a driver's operation table
/// (which drops before the driver's kept pools), and values that borrow
/// the driver (operation futures, posts, results being taken). None
/// outlives the driver that keeps its pool.
pub(crate) struct OwnedCredit(NonNull<Credits>);

// SAFETY: the credit reaches its pool only through a shared reference, and
// `Credits` is `Sync` (atomics and a `Notify`).
unsafe impl Send for OwnedCredit {}
// SAFETY: as for `Send`; `&OwnedCredit` gives no access at all.
unsafe impl Sync for OwnedCredit {}

impl Drop for OwnedCredit {
    fn drop(&mut self) {
        // SAFETY: the pool is a `KeptPool`, alive as long as the driver that
        // keeps it, which outlives this credit (see the type's notes).
        unsafe { self.0.as_ref() }.give_back();
    }
}

/// A pool whose credits are [`OwnedCredit`]s: made by [`Keeper::keep`],
/// which holds it until the driver that owns the keeper is dropped.
#[derive(Clone)]
pub(crate) struct KeptPool(Arc<Credits>);

impl KeptPool {
    /// Takes a credit if one is free.
    #[inline]
    pub(crate) fn try_take(&self) -> Option<OwnedCredit> {
        self.0.try_take().then(|| self.credit())
    }

    /// Takes a credit, waiting for one if none is free.
    pub(crate) async fn take(&self) -> OwnedCredit {
        let credit = self.0.take().await;
        // Given back by the `OwnedCredit` instead.
        std::mem::forget(credit);
        self.credit()
    }

    /// The credit just taken, as an `OwnedCredit`.
    fn credit(&self) -> OwnedCredit {
        OwnedCredit(NonNull::from(&*self.0))
    }
}

/// The pools a driver keeps alive (see [`OwnedCredit`]).
#[derive(Default)]
pub(crate) struct Keeper(Mutex<Vec<Arc<Credits>>>);

impl Keeper {
    /// A pool of `n` credits, kept until this keeper is dropped.
    pub(crate) fn keep(&self, n: usize) -> KeptPool {
        let pool = Arc::new(Credits::new(n));
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(pool.clone());
        KeptPool(pool)
    }
}

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

    /// Waits until a credit is free (the caller has just found none).
    async fn wait(&self) -> Credit<'_> {
        let _counted = Waiting::count(&self.waiting);
        loop {
            let mut returned = std::pin::pin!(self.returned.notified());
            // Registered before looking again: a credit given back from
            // here on wakes this task (or leaves a permit that does).
            returned.as_mut().enable();
            if self.try_take() {
                return Credit(self);
            }
            returned.await;
        }
    }

    /// Takes a credit, waiting for one if none is free.
    pub(crate) async fn take(&self) -> Credit<'_> {
        if self.try_take() {
            return Credit(self);
        }
        self.wait().await
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

/// Counts a waiting task in `counter` for as long as it waits (also when
/// its future is dropped): here, and in the driver's `later`. `SeqCst`, for
/// the pairings both rely on.
pub(crate) struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    pub(crate) fn count(counter: &'a AtomicUsize) -> Waiting<'a> {
        counter.fetch_add(1, Ordering::SeqCst);
        Waiting(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Credit<'_> {
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
        let keeper = Arc::new(Keeper::default());
        let pool = keeper.keep(2);
        let (a, b) = (pool.take().await, pool.try_take().expect("a free credit"));
        assert_eq!(pool.0.available(), 0);
        let waiter = {
            let (pool, keeper) = (pool.clone(), keeper.clone());
            // The keeper goes with the task, as a driver outlives its credits.
            tokio::spawn(async move { (pool.take().await, keeper) })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "no credit free: it waits");
        drop(a);
        let (c, _keeper) = waiter.await.expect("the waiter got the credit given back");
        assert_eq!(pool.0.available(), 0);
        drop((b, c));
        assert_eq!(pool.0.available(), 2);
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
