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
//! atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

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
    table: Mutex<HashMap<fi_addr_t, Generation>>,
}

#[derive(Debug, Clone, Copy)]
struct Generation {
    number: u32,
    /// False between a removal and the next insert of the same raw value.
    live: bool,
}

impl Removals {
    /// The record of a vector whose handles use `rx_ctx_bits` high bits for
    /// the receive context.
    pub(crate) fn new(rx_ctx_bits: u32) -> Removals {
        let peer_bits = if rx_ctx_bits == 0 { fi_addr_t::MAX } else { fi_addr_t::MAX >> rx_ctx_bits };
        Removals { any: AtomicBool::new(false), peer_bits, table: Mutex::default() }
    }

    fn table(&self) -> MutexGuard<'_, HashMap<fi_addr_t, Generation>> {
        // Every change is one assignment: a poisoned table is still consistent.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
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
        match self.table().get(&(raw & self.peer_bits)) {
            None => generation == 0,
            Some(g) => g.live && g.number == generation,
        }
    }

    /// The generations of raw handles libfabric just issued (by an insert).
    pub(crate) fn issued(&self, raws: &[fi_addr_t]) -> Vec<u32> {
        if !self.any.load(Ordering::Acquire) {
            return vec![0; raws.len()];
        }
        let mut table = self.table();
        raws.iter()
            .map(|raw| match table.get_mut(&(raw & self.peer_bits)) {
                None => 0,
                Some(g) => {
                    if !g.live {
                        // A removed raw value handed out again: a new peer.
                        *g = Generation { number: g.number.wrapping_add(1), live: true };
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
        self.table().get(&(raw & self.peer_bits)).map_or(0, |g| g.number)
    }

    /// Records that the handles `raws` left the vector.
    pub(crate) fn removed(&self, raws: &[fi_addr_t]) {
        let mut table = self.table();
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
    fn receive_context_bits_follow_their_peer() {
        let r = Removals::new(2);
        let context_3_of_peer_5 = (3 << 62) | 5;
        r.removed(&[5]);
        assert!(!r.is_live(context_3_of_peer_5, 0));
        assert!(r.is_live((3 << 62) | 6, 0));
    }
}
