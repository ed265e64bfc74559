//! The cleaner's key map: key hash → offset of the newest record with that key, in a
//! fixed amount of memory (open addressing, linear probing, no resizing).
//!
//! Keys are stored as 128-bit hashes, as Kafka stores MD5 digests: two different keys
//! that collide would make the cleaner drop the older one's latest record, which at
//! 128 bits is as likely as a random bit flip in RAM.

use std::hash::{DefaultHasher, Hash, Hasher};

use crate::Offset;

/// Bytes of one slot.
pub(crate) const SLOT_BYTES: usize = 24;
/// Largest share of the slots filled before the map counts as full (Kafka's 0.9).
const LOAD_FACTOR: f64 = 0.9;

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// 0 in both halves: empty (real hashes are forced non-zero in `hi`).
    hi: u64,
    lo: u64,
    offset: Offset,
}

/// A 128-bit key hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyHash {
    hi: u64,
    lo: u64,
}

impl KeyHash {
    pub fn of(key: &[u8]) -> KeyHash {
        let half = |seed: u64| {
            let mut h = DefaultHasher::new();
            seed.hash(&mut h);
            h.write(key);
            h.finish()
        };
        KeyHash {
            hi: half(0x6c6f_6771_7565_7565) | 1,
            lo: half(0x636c_6561_6e65_7221),
        }
    }
}

/// Fixed-capacity map from key hash to the newest offset seen for it.
#[derive(Debug)]
pub(crate) struct OffsetMap {
    slots: Vec<Slot>,
    len: usize,
    max_len: usize,
}

impl OffsetMap {
    /// A map using about `budget_bytes` (at least one slot), never more slots than
    /// `max_entries` needs.
    pub fn new(budget_bytes: usize, max_entries: usize) -> OffsetMap {
        let by_budget = (budget_bytes / SLOT_BYTES).max(1);
        let needed = max_entries
            .saturating_add(max_entries / 8)
            .saturating_add(16);
        let capacity = by_budget.min(needed).max(1);
        let max_len = ((capacity as f64 * LOAD_FACTOR) as usize).clamp(1, capacity);
        OffsetMap {
            slots: vec![Slot::default(); capacity],
            len: 0,
            max_len,
        }
    }

    /// Distinct keys held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    fn probe(&self, h: KeyHash) -> (usize, bool) {
        let cap = self.slots.len();
        let mut i = (h.hi ^ h.lo.rotate_left(17)) as usize % cap;
        for _ in 0..cap {
            let s = &self.slots[i];
            if s.hi == 0 {
                return (i, false);
            }
            if s.hi == h.hi && s.lo == h.lo {
                return (i, true);
            }
            i = if i + 1 == cap { 0 } else { i + 1 };
        }
        (usize::MAX, false)
    }

    /// Records `offset` as the newest for `h`. False (and nothing changed) when `h` is
    /// a new key and the map is full.
    pub fn insert(&mut self, h: KeyHash, offset: Offset) -> bool {
        let (i, found) = self.probe(h);
        if found {
            let s = &mut self.slots[i];
            s.offset = s.offset.max(offset);
            return true;
        }
        if self.len >= self.max_len || i == usize::MAX {
            return false;
        }
        self.slots[i] = Slot {
            hi: h.hi,
            lo: h.lo,
            offset,
        };
        self.len += 1;
        true
    }

    /// The newest offset recorded for `h`.
    pub fn get(&self, h: KeyHash) -> Option<Offset> {
        let (i, found) = self.probe(h);
        found.then(|| self.slots[i].offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_offset_and_fills_up() {
        let mut m = OffsetMap::new(SLOT_BYTES * 10, usize::MAX);
        assert!(m.insert(KeyHash::of(b"a"), 5));
        assert!(m.insert(KeyHash::of(b"a"), 9));
        assert!(m.insert(KeyHash::of(b"a"), 7));
        assert_eq!(m.get(KeyHash::of(b"a")), Some(9));
        assert_eq!(m.get(KeyHash::of(b"b")), None);
        let mut n = 1;
        while m.insert(KeyHash::of(format!("k{n}").as_bytes()), n) {
            n += 1;
        }
        assert_eq!(m.len(), 9, "90% of 10 slots");
        // Known keys still update when full.
        assert!(m.insert(KeyHash::of(b"a"), 100));
        assert_eq!(m.get(KeyHash::of(b"a")), Some(100));
        for i in 1..n {
            assert_eq!(m.get(KeyHash::of(format!("k{i}").as_bytes())), Some(i));
        }
    }

    #[test]
    fn a_tiny_budget_still_holds_one_key() {
        let mut m = OffsetMap::new(0, usize::MAX);
        assert!(m.insert(KeyHash::of(b"x"), 1));
        assert!(!m.insert(KeyHash::of(b"y"), 2));
        assert_eq!(m.get(KeyHash::of(b"y")), None);
        assert_eq!(m.get(KeyHash::of(b"x")), Some(1));
    }
}
