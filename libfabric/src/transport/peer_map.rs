//! Maps keyed by [`PeerId`], hashed with one multiplication.
//!
//! A served request looks its sender up twice (is it a peer, which handler
//! queue is its); with std's SipHash the two cost about 120 instructions, a
//! fortieth of the request. SipHash guards a map against keys chosen to
//! collide, and these maps hold only ids this node issued itself (address
//! vector handles): a key off the wire is only looked up, never inserted
//! unchecked.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::node::PeerId;

/// A map from peers to `V`.
pub(super) type PeerMap<V> = HashMap<PeerId, V, BuildHasherDefault<PeerHasher>>;

/// Fibonacci hashing: the id times 2⁶⁴/φ, which spreads consecutive ids
/// over both the low bits (the bucket) and the high ones (the tag byte).
#[derive(Debug, Default)]
pub(super) struct PeerHasher(u64);

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for PeerHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = (self.0 ^ id).wrapping_mul(GOLDEN);
    }

    // `PeerId` hashes as one `u64`; anything else, a byte at a time.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ids_land_in_distinct_buckets_and_tags() {
        let hash = |id| {
            let mut h = PeerHasher::default();
            h.write_u64(id);
            h.finish()
        };
        let low: std::collections::HashSet<_> = (0..64).map(|id| hash(id) & 63).collect();
        let high: std::collections::HashSet<_> = (0..64).map(|id| hash(id) >> 57).collect();
        assert_eq!(low.len(), 64, "bucket bits");
        assert!(high.len() > 32, "tag bits: {}", high.len());
    }

    #[test]
    fn a_map_finds_what_it_holds() {
        let mut map = PeerMap::default();
        for id in 0..1000 {
            map.insert(PeerId(id), id * 2);
        }
        assert!((0..1000).all(|id| map.get(&PeerId(id)) == Some(&(id * 2))));
        assert!(!map.contains_key(&PeerId(1000)));
    }
}
