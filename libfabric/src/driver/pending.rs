//! The operations a driver is waiting for: one entry per posted operation,
//! found again by the token it was posted with.
//!
//! A token is `generation << 32 | index`: an entry's generation changes each
//! time it is freed, so a late completion or a stale future never matches
//! the entry's next operation. Entries are allocated once, up to the
//! driver's in-flight bound, so steady-state posting allocates nothing.

use std::task::Waker;

use crate::cq::Entry;
use crate::ops::Completion;

use super::credits::OwnedCredit;
use super::OpError;

/// Where one operation stands.
pub(crate) enum State<E> {
    /// Posted (or about to be); the waker of the future awaiting it.
    Waiting(Option<Waker>),
    /// Finished; its result waits for the future to take it.
    Done(Result<Completion<E>, OpError>),
    /// Its future was dropped: the completion (or cancellation) is read and
    /// dropped by the driver, which frees the entry then. Until that moment
    /// libfabric may still use the buffer, which the endpoint still owns.
    Abandoned,
    /// Not in use.
    Free,
}

struct Slot<E> {
    generation: u32,
    state: State<E>,
    /// The in-flight credit, returned when the entry is freed.
    permit: Option<OwnedCredit>,
}

/// The table of entries.
pub(crate) struct Pending<E> {
    slots: Vec<Slot<E>>,
    free: Vec<u32>,
    waiting: usize,
    /// Results handed to their futures, and how many of them were errors:
    /// counted here, under the lock already held, rather than with atomic
    /// adds of their own on every completion's path.
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    /// Results put in the table for their futures to take (see
    /// `Shared::delivered`).
    pub(crate) delivered: u64,
}

/// What a finished operation's result met in the table.
pub(crate) enum Delivered<E> {
    /// A future was waiting: wake it.
    Wake(Option<Waker>),
    /// Nobody wants it any more (abandoned): drop it outside the lock.
    Orphan(Result<Completion<E>, OpError>, Option<OwnedCredit>),
    /// No entry has this token (not posted by this driver).
    Unknown(Result<Completion<E>, OpError>),
}

impl<E: Entry> Pending<E> {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Pending {
            slots: Vec::with_capacity(n),
            free: Vec::with_capacity(n),
            waiting: 0,
            completed: 0,
            failed: 0,
            delivered: 0,
        }
    }

    /// Operations posted and not yet taken by their futures or the driver.
    pub(crate) fn len(&self) -> usize {
        self.waiting
    }

    /// A new entry, waiting; returns its token.
    pub(crate) fn insert(&mut self, permit: OwnedCredit) -> u64 {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot { generation: 0, state: State::Free, permit: None });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.state = State::Waiting(None);
        slot.permit = Some(permit);
        self.waiting += 1;
        token(slot.generation, index)
    }

    fn slot(&mut self, token: u64) -> Option<&mut Slot<E>> {
        let (generation, index) = ((token >> 32) as u32, token as u32);
        self.slots.get_mut(index as usize).filter(|s| s.generation == generation && !matches!(s.state, State::Free))
    }

    /// Frees the entry; its credit comes back with it (to drop outside the lock).
    fn free(&mut self, token: u64) -> (State<E>, Option<OwnedCredit>) {
        let index = token as u32;
        let slot = &mut self.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index);
        self.waiting -= 1;
        (std::mem::replace(&mut slot.state, State::Free), slot.permit.take())
    }

    /// The driver's side: the operation of `token` finished with `result`.
    pub(crate) fn deliver(&mut self, token: u64, result: Result<Completion<E>, OpError>) -> Delivered<E> {
        let Some(slot) = self.slot(token) else { return Delivered::Unknown(result) };
        match &mut slot.state {
            State::Waiting(waker) => {
                let waker = waker.take();
                let failed = result.is_err();
                slot.state = State::Done(result);
                self.count(failed);
                self.delivered += 1;
                Delivered::Wake(waker)
            }
            State::Abandoned => {
                let (_, permit) = self.free(token);
                Delivered::Orphan(result, permit)
            }
            // A second completion for one operation: not ours to judge here.
            State::Done(_) | State::Free => Delivered::Unknown(result),
        }
    }

    /// The future's side, when it read its own completion off the queue
    /// (it never reached the table): frees its entry, giving the credit
    /// back. `None` also for a token that is not waiting, which a future
    /// that is still polled never has.
    pub(crate) fn finish(&mut self, token: u64, failed: bool) -> Option<OwnedCredit> {
        let slot = self.slot(token)?;
        if !matches!(slot.state, State::Waiting(_)) {
            return None;
        }
        self.count(failed);
        self.free(token).1
    }

    fn count(&mut self, failed: bool) {
        self.completed += 1;
        self.failed += u64::from(failed);
    }

    /// The future's side: its result if it is in, else remember the waker
    /// (if given: a future that reads the queue itself leaves none while it
    /// reads).
    pub(crate) fn poll(&mut self, token: u64, waker: Option<&Waker>) -> Option<Taken<E>> {
        let slot = self.slot(token)?;
        match &mut slot.state {
            State::Waiting(w) => {
                match (w.as_ref(), waker) {
                    (_, None) => {}
                    (Some(old), Some(new)) if old.will_wake(new) => {}
                    (_, Some(new)) => *w = Some(new.clone()),
                }
                None
            }
            State::Done(_) => match self.free(token) {
                (State::Done(result), permit) => Some(Taken { result: Some(result), _permit: permit }),
                _ => None,
            },
            State::Abandoned | State::Free => None,
        }
    }

    /// The future was dropped. Returns what to drop outside the lock, and
    /// whether the operation is still with libfabric (so must be cancelled).
    pub(crate) fn abandon(&mut self, token: u64, posted: bool) -> (Option<Taken<E>>, bool) {
        let Some(slot) = self.slot(token) else { return (None, false) };
        if posted && matches!(slot.state, State::Waiting(_)) {
            slot.state = State::Abandoned;
            return (None, true);
        }
        // Finished (its result is dropped) or never posted.
        let (state, permit) = self.free(token);
        let result = match state {
            State::Done(result) => Some(result),
            _ => None,
        };
        (Some(Taken { result, _permit: permit }), false)
    }
}

/// A result taken out of the table, with the credit it held (released when
/// this is dropped, after the lock).
pub(crate) struct Taken<E> {
    pub(crate) result: Option<Result<Completion<E>, OpError>>,
    _permit: Option<OwnedCredit>,
}

fn token(generation: u32, index: u32) -> u64 {
    (generation as u64) << 32 | index as u64
}
