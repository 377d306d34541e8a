//! Which handles of an address vector were removed, so that a stale copy of
//! one is refused instead of followed into freed provider state.
//!
//! libfabric may hand a removed handle's raw value out again for a later
//! insert, so a raw value alone cannot tell a stale copy from the new peer.
//! Every [`Address`](crate::Address) therefore carries the generation its
//! raw value was at when the vector issued it: a raw value enters the table
//! at its first removal, and each later insert that libfabric answers with
//! the same raw value starts its next generation. Until the first removal
//! nothing is recorded, every generation is 0, and checking a handle is one
//! atomic load; after it, a check takes a shared lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};

use libfabric_sys::fi_addr_t;

/// The removal record of one address vector.
#[derive(Debug)]
pub(crate) struct Removals {
    /// Set by the first removal.
    any: AtomicBool,
    /// Bits of a raw handle that name the peer (the rest select a receive
    /// context of a scalable endpoint, `fi_rx_addr`).
    peer_bits: fi_addr_t,
    /// Peers removed at least once: their current generation.
    table: RwLock<HashMap<fi_addr_t, Generation>>,
    /// Held across an insert or a removal and its record, so that the two
    /// are seen in the order libfabric did them.
    changes: Mutex<()>,
}

#[derive(Debug, Clone, Copy)]
struct Generation {
    number: u32,
    /// False between a removal and the next insert of the same raw value
    /// (and for good once `number` has used up its range).
    live: bool,
}

impl Removals {
    /// The record of a vector whose handles use `rx_ctx_bits` high bits for
    /// the receive context.
    pub(crate) fn new(rx_ctx_bits: u32) -> Removals {
        let peer_bits = if rx_ctx_bits == 0 { fi_addr_t::MAX } else { fi_addr_t::MAX >> rx_ctx_bits };
        Removals { any: AtomicBool::new(false), peer_bits, table: RwLock::default(), changes: Mutex::default() }
    }

    /// Serialises inserts and removals with their records: hold it from the
    /// libfabric call to [`issued`](Self::issued) or [`removed`](Self::removed).
    pub(crate) fn changing(&self) -> MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True for a raw value that names a peer, not one of its receive
    /// contexts (what `fi_av_insert` issues and `fi_av_remove` takes).
    pub(crate) fn is_peer(&self, raw: fi_addr_t) -> bool {
        raw & !self.peer_bits == 0
    }

    /// True while the handle (`raw` at `generation`) is in the vector.
    #[inline(always)]
    pub(crate) fn is_live(&self, raw: fi_addr_t, generation: u32) -> bool {
        // Before any removal only generation 0 exists.
        !self.any.load(Ordering::Acquire) || self.is_live_recorded(raw, generation)
    }

    #[cold]
    #[inline(never)]
    fn is_live_recorded(&self, raw: fi_addr_t, generation: u32) -> bool {
        // Every change is one assignment: a poisoned table is still consistent.
        match self.table.read().unwrap_or_else(|p| p.into_inner()).get(&(raw & self.peer_bits)) {
            None => generation == 0,
            Some(g) => g.live && g.number == generation,
        }
    }

    /// The generations of raw handles libfabric just issued (by an insert,
    /// under [`changing`](Self::changing)).
    pub(crate) fn issued(&self, raws: &[fi_addr_t]) -> Vec<u32> {
        if !self.any.load(Ordering::Acquire) {
            return vec![0; raws.len()];
        }
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        raws.iter()
            .map(|raw| match table.get_mut(&(raw & self.peer_bits)) {
                None => 0,
                Some(g) => {
                    if !g.live {
                        // A removed raw value handed out again: a new peer. After
                        // 2^32 of them the value stays refused rather than let
                        // a stale copy of generation 0 through.
                        if let Some(next) = g.number.checked_add(1) {
                            *g = Generation { number: next, live: true };
                        }
                    }
                    g.number
                }
            })
            .collect()
    }

    /// The current generation of a raw handle read from elsewhere (a
    /// completion's source address).
    pub(crate) fn current(&self, raw: fi_addr_t) -> u32 {
        if !self.any.load(Ordering::Acquire) {
            return 0;
        }
        self.table.read().unwrap_or_else(|p| p.into_inner()).get(&(raw & self.peer_bits)).map_or(0, |g| g.number)
    }

    /// Records that the handles `raws` left the vector (under
    /// [`changing`](Self::changing)).
    pub(crate) fn removed(&self, raws: &[fi_addr_t]) {
        if raws.is_empty() {
            return;
        }
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        for raw in raws {
            table.entry(raw & self.peer_bits).or_insert(Generation { number: 0, live: true }).live = false;
        }
        self.any.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_handle_is_dead_and_its_raw_value_comes_back_as_a_new_generation() {
        let r = Removals::new(0);
        assert!(r.is_live(7, 0) && r.is_live(8, 0));
        assert_eq!(r.issued(&[7, 8]), [0, 0]);
        r.removed(&[]);
        assert!(!r.any.load(Ordering::Relaxed), "removing nothing records nothing");
        r.removed(&[7]);
        assert!(!r.is_live(7, 0), "removed");
        assert!(r.is_live(8, 0), "the others stay");
        assert_eq!(r.current(7), 0);
        // libfabric reuses 7 for the next insert: a new peer, generation 1.
        assert_eq!(r.issued(&[7]), [1]);
        assert!(r.is_live(7, 1) && !r.is_live(7, 0), "the stale copy stays dead");
        assert_eq!(r.current(7), 1);
        // Inserting the same address again while live keeps the generation.
        assert_eq!(r.issued(&[7]), [1]);
    }

    #[test]
    fn a_raw_value_that_used_up_its_generations_stays_refused() {
        let r = Removals::new(0);
        r.removed(&[3]);
        r.table.write().expect("table").insert(3, Generation { number: u32::MAX, live: false });
        assert_eq!(r.issued(&[3]), [u32::MAX]);
        assert!(!r.is_live(3, u32::MAX) && !r.is_live(3, 0));
    }

    #[test]
    fn receive_context_bits_follow_their_peer() {
        let r = Removals::new(2);
        let context_3_of_peer_5 = (3 << 62) | 5;
        assert!(r.is_peer(5) && !r.is_peer(context_3_of_peer_5));
        r.removed(&[5]);
        assert!(!r.is_live(context_3_of_peer_5, 0));
        assert!(r.is_live((3 << 62) | 6, 0));
    }
}
