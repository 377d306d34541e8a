//! The gate of a queue: who may be inside libfabric on it right now.
//!
//! Providers here crash when a queue is read while an endpoint bound to it
//! closes (tcp, in `fi_trywait`) or is being bound (udp;ofi_rxd, in
//! `fi_cq_read`). So a reader passes the gate, and an opener or closer
//! shuts it: it waits for the reader to leave and keeps the next one out.
//!
//! One reader of the completion queue at a time, not many: every read
//! serves every future, so a second reader has nothing to add, and a reader
//! that finds the gate taken simply reads nothing this time. That makes the
//! gate cheap on the path every round trip takes: passing it is one
//! compare-and-swap, and leaving it a plain store (an `RwLock`'s read side,
//! which it replaces, cost an atomic instruction each way). A reading
//! future passes it once per poll rather than once per read.
//!
//! The event queue of a connected endpoint has a door of its own, so that
//! its reader never waits for the completion queue's.
//!
//! Closers are rare (an endpoint being bound or closed, an event queue
//! closing) and wait for both doors: they announce themselves first, and
//! readers stay out while one is waiting, so a busy reader cannot keep a
//! closer out for long.

use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::drd;

const OPEN: u8 = 0;
const READING: u8 = 1;
const SHUT: u8 = 2;

/// Which queue a reader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Door {
    /// The completion queue.
    Completions = 0,
    /// The event queue of a connected endpoint.
    Events = 1,
}

/// See the module notes.
pub(crate) struct Gate {
    /// Each door's state: open, a reader inside, or shut.
    doors: [AtomicU8; 2],
    /// Closers waiting to shut the gate: readers keep out meanwhile.
    closers: AtomicUsize,
}

impl Default for Gate {
    fn default() -> Self {
        let gate = Gate { doors: [AtomicU8::new(OPEN), AtomicU8::new(OPEN)], closers: AtomicUsize::new(0) };
        gate.doors.iter().for_each(drd::atomic);
        drd::atomic(&gate.closers);
        gate
    }
}

/// A reader inside the gate; it leaves when this is dropped.
#[must_use = "the reader leaves when this is dropped"]
pub(crate) struct Reading<'a>(&'a AtomicU8);

/// The gate shut, until this is dropped.
#[must_use = "the gate opens again when this is dropped"]
pub(crate) struct Shut<'a>(&'a Gate);

impl Gate {
    /// Enters `door` as its reader, unless another reader is inside or a
    /// closer holds or wants the gate: then there is nothing to read this
    /// time.
    #[inline]
    pub(crate) fn try_read(&self, door: Door) -> Option<Reading<'_>> {
        if self.closers.load(Ordering::Relaxed) != 0 {
            return None;
        }
        let state = &self.doors[door as usize];
        state.compare_exchange(OPEN, READING, Ordering::Acquire, Ordering::Relaxed).ok()?;
        drd::happens_after(state);
        Some(Reading(state))
    }

    /// Whether `reading` came through this gate's completions door.
    pub(crate) fn admitted(&self, reading: &Reading<'_>) -> bool {
        std::ptr::eq(reading.0, &self.doors[Door::Completions as usize])
    }

    /// Shuts both doors once their readers, if any, have left. Blocks the
    /// thread meanwhile (a reader stays at most one poll's reads, 10 µs).
    pub(crate) fn shut(&self) -> Shut<'_> {
        self.closers.fetch_add(1, Ordering::SeqCst);
        for state in &self.doors {
            let mut tries = 0u32;
            while state.compare_exchange(OPEN, SHUT, Ordering::Acquire, Ordering::Relaxed).is_err() {
                tries = tries.saturating_add(1);
                if tries < 64 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            drd::happens_after(state);
        }
        self.closers.fetch_sub(1, Ordering::SeqCst);
        Shut(self)
    }
}

/// Opens a door again.
fn open(state: &AtomicU8) {
    drd::happens_before(state);
    state.store(OPEN, Ordering::Release);
}

impl Drop for Reading<'_> {
    #[inline]
    fn drop(&mut self) {
        open(self.0);
    }
}

impl Drop for Shut<'_> {
    fn drop(&mut self) {
        self.0.doors.iter().for_each(open);
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |state: &AtomicU8| match state.load(Ordering::Relaxed) {
            OPEN => "open",
            READING => "reading",
            _ => "shut",
        };
        f.debug_struct("Gate")
            .field("completions", &name(&self.doors[0]))
            .field("events", &name(&self.doors[1]))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn one_reader_at_a_time_and_none_while_shut() {
        let gate = Gate::default();
        let reading = gate.try_read(Door::Completions).expect("an open gate lets a reader in");
        assert!(gate.try_read(Door::Completions).is_none(), "a second reader reads nothing");
        let events = gate.try_read(Door::Events).expect("the other door is open");
        drop((reading, events));
        let shut = gate.shut();
        assert!(gate.try_read(Door::Completions).is_none(), "no reader while shut");
        assert!(gate.try_read(Door::Events).is_none(), "at either door");
        drop(shut);
        assert!(gate.try_read(Door::Completions).is_some(), "open again");
        assert!(gate.try_read(Door::Events).is_some());
    }

    #[test]
    fn a_closer_waits_for_the_reader_and_keeps_the_next_out() {
        let gate = Arc::new(Gate::default());
        let reading = gate.try_read(Door::Events).expect("open");
        let closer = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                let _shut = gate.shut();
                std::thread::sleep(std::time::Duration::from_millis(20));
            })
        };
        // The closer has announced itself once readers are kept out.
        while gate.closers.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        drop(reading);
        assert!(gate.try_read(Door::Completions).is_none(), "kept out while a closer waits or holds the gate");
        closer.join().expect("the closer");
        assert!(gate.try_read(Door::Events).is_some(), "open once the closer is done");
    }
}
