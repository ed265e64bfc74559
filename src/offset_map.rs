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

/// Map from key hash to the newest offset seen for it, in at most a fixed budget of
/// memory. It starts small and doubles while the budget allows, so a pass over few
/// distinct keys probes a table that fits the CPU caches.
#[derive(Debug)]
pub(crate) struct OffsetMap {
    slots: Vec<Slot>,
    len: usize,
    /// Most slots the budget allows.
    max_capacity: usize,
}

/// Slots of a new map (or all of the budget, if smaller).
const INITIAL_SLOTS: usize = 1 << 12;
/// Fill at which a map below its largest size doubles.
const GROW_FACTOR: f64 = 0.7;

impl OffsetMap {
    /// A map using at most about `budget_bytes` (at least one slot), never more slots
    /// than `max_entries` keys need.
    pub fn new(budget_bytes: usize, max_entries: usize) -> OffsetMap {
        let by_budget = (budget_bytes / SLOT_BYTES).max(1);
        let needed = max_entries
            .saturating_add(max_entries / 8)
            .saturating_add(16);
        let max_capacity = by_budget.min(needed).max(1);
        OffsetMap {
            slots: vec![Slot::default(); max_capacity.min(INITIAL_SLOTS)],
            len: 0,
            max_capacity,
        }
    }

    /// Distinct keys held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    fn probe(slots: &[Slot], h: KeyHash) -> (usize, bool) {
        let cap = slots.len();
        // Multiply-shift: a uniform start in 0..cap without a division.
        let mixed = h.hi ^ h.lo.rotate_left(17);
        let mut i = ((u128::from(mixed) * cap as u128) >> 64) as usize;
        for _ in 0..cap {
            let s = &slots[i];
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

    fn grow(&mut self) {
        let cap = (self.slots.len() * 2).min(self.max_capacity);
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); cap]);
        for s in old.into_iter().filter(|s| s.hi != 0) {
            let (i, _) = Self::probe(&self.slots, KeyHash { hi: s.hi, lo: s.lo });
            self.slots[i] = s;
        }
    }

    /// Records `offset` as the newest for `h`. False (and nothing changed) when `h` is
    /// a new key and the map is full.
    pub fn insert(&mut self, h: KeyHash, offset: Offset) -> bool {
        let (mut i, found) = Self::probe(&self.slots, h);
        if found {
            let s = &mut self.slots[i];
            s.offset = s.offset.max(offset);
            return true;
        }
        let cap = self.slots.len();
        if cap < self.max_capacity && (self.len + 1) as f64 > cap as f64 * GROW_FACTOR {
            self.grow();
            i = Self::probe(&self.slots, h).0;
        }
        let max_len =
            ((self.max_capacity as f64 * LOAD_FACTOR) as usize).clamp(1, self.max_capacity);
        if self.len >= max_len || i == usize::MAX {
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
        let (i, found) = Self::probe(&self.slots, h);
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
    fn grows_up_to_the_budget() {
        let mut m = OffsetMap::new(SLOT_BYTES * 100_000, usize::MAX);
        for i in 0..80_000u64 {
            assert!(m.insert(KeyHash::of(&i.to_le_bytes()), i), "{i}");
        }
        for i in 0..80_000u64 {
            assert!(m.insert(KeyHash::of(&i.to_le_bytes()), i + 1));
        }
        assert_eq!(m.len(), 80_000);
        for i in (0..80_000u64).step_by(97) {
            assert_eq!(m.get(KeyHash::of(&i.to_le_bytes())), Some(i + 1));
        }
        let mut n = 80_000u64;
        while m.insert(KeyHash::of(&n.to_le_bytes()), n) {
            n += 1;
        }
        assert_eq!(m.len(), 90_000, "90% of the budget's slots");
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
