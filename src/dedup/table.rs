//! The in-memory id table of a dedup window: flat, about 33 bytes per id.
//!
//! Ids are remembered by a 64-bit keyed fingerprint, never by their bytes: a ring of
//! 24-byte entries (fingerprint, offset, timestamp) in append order, which is also
//! the order they age out in, and an open-addressing index of 8-byte sequence
//! numbers into the ring (linear probing, backward-shift deletion, load ≤ 7/8).
//! A fingerprint match is only a candidate: the caller compares the full id stored
//! in the record (see `dedup/mod.rs`).

use std::collections::VecDeque;

use crate::Offset;

const EMPTY: u64 = u64::MAX;

#[derive(Clone, Copy, Debug)]
struct Entry {
    fingerprint: u64,
    offset: Offset,
    timestamp: i64,
}

#[derive(Debug)]
pub(crate) struct IdTable {
    /// Entries in append order; `ring[i]` has sequence number `first_seq + i`.
    ring: VecDeque<Entry>,
    first_seq: u64,
    /// Sequence numbers, `EMPTY` for a free slot.
    slots: Vec<u64>,
    /// The slot count the table grows to (`max_ids` at load 7/8).
    full_slots: usize,
    max_ids: usize,
}

impl IdTable {
    pub(crate) fn new(max_ids: usize) -> IdTable {
        let full_slots = max_ids.saturating_mul(8) / 7 + 1;
        let initial = full_slots.min(1024);
        IdTable {
            ring: VecDeque::new(),
            first_seq: 0,
            slots: vec![EMPTY; initial],
            full_slots,
            max_ids,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.ring.len()
    }

    /// Bytes held by the table.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.ring.capacity() * std::mem::size_of::<Entry>()
            + self.slots.capacity() * std::mem::size_of::<u64>()
    }

    fn home(&self, fingerprint: u64) -> usize {
        // Multiply-shift onto any table size (no power of two needed).
        ((u128::from(fingerprint) * self.slots.len() as u128) >> 64) as usize
    }

    fn entry(&self, seq: u64) -> &Entry {
        &self.ring[(seq - self.first_seq) as usize]
    }

    /// Offsets of the remembered ids with this fingerprint and a timestamp at or
    /// after `cutoff`, oldest first.
    pub(crate) fn candidates(&self, fingerprint: u64, cutoff: i64) -> Vec<Offset> {
        let mut found = Vec::new();
        let mut i = self.home(fingerprint);
        loop {
            let seq = self.slots[i];
            if seq == EMPTY {
                break;
            }
            let e = self.entry(seq);
            if e.fingerprint == fingerprint && e.timestamp >= cutoff {
                found.push(e.offset);
            }
            i = (i + 1) % self.slots.len();
        }
        found.sort_unstable();
        found
    }

    /// Remembers an id, forgetting the oldest ones first while they are older than
    /// `cutoff` or the table is at `max_ids`.
    pub(crate) fn insert(&mut self, fingerprint: u64, offset: Offset, timestamp: i64, cutoff: i64) {
        self.age_out(cutoff);
        while self.ring.len() >= self.max_ids {
            self.pop_oldest();
        }
        if (self.ring.len() + 1) * 8 > self.slots.len() * 7 && self.slots.len() < self.full_slots {
            self.grow();
        }
        if self.ring.len() == self.ring.capacity() {
            // Grown by hand: a doubling past max_ids would waste up to half.
            let more = self
                .ring
                .len()
                .max(1024)
                .min(self.max_ids - self.ring.len());
            self.ring.reserve_exact(more);
        }
        let seq = self.first_seq + self.ring.len() as u64;
        self.ring.push_back(Entry {
            fingerprint,
            offset,
            timestamp,
        });
        self.place(seq, fingerprint);
    }

    /// Forgets the ids older than `cutoff` at the front (entries are in append order;
    /// a record with an explicit older timestamp behind a younger one ages out with
    /// it, never before it is checked: `candidates` filters by timestamp too).
    pub(crate) fn age_out(&mut self, cutoff: i64) {
        while self.ring.front().is_some_and(|e| e.timestamp < cutoff) {
            self.pop_oldest();
        }
    }

    fn place(&mut self, seq: u64, fingerprint: u64) {
        let mut i = self.home(fingerprint);
        while self.slots[i] != EMPTY {
            i = (i + 1) % self.slots.len();
        }
        self.slots[i] = seq;
    }

    fn grow(&mut self) {
        let size = self.slots.len().saturating_mul(2).min(self.full_slots);
        self.slots = vec![EMPTY; size];
        for k in 0..self.ring.len() {
            let fingerprint = self.ring[k].fingerprint;
            self.place(self.first_seq + k as u64, fingerprint);
        }
    }

    fn pop_oldest(&mut self) {
        let Some(e) = self.ring.front().copied() else {
            return;
        };
        let seq = self.first_seq;
        let n = self.slots.len();
        let mut i = self.home(e.fingerprint);
        while self.slots[i] != seq {
            // The entry is in the index by construction: its probe chain has no gap.
            if self.slots[i] == EMPTY {
                break;
            }
            i = (i + 1) % n;
        }
        if self.slots[i] == seq {
            // Backward-shift deletion: pull later members of the chain into the hole
            // unless their home lies cyclically in (hole, their slot].
            let mut j = i;
            loop {
                j = (j + 1) % n;
                let s = self.slots[j];
                if s == EMPTY {
                    break;
                }
                let home = self.home(self.entry(s).fingerprint);
                let stays = if i <= j {
                    i < home && home <= j
                } else {
                    i < home || home <= j
                };
                if !stays {
                    self.slots[i] = s;
                    i = j;
                }
            }
            self.slots[i] = EMPTY;
        }
        self.ring.pop_front();
        self.first_seq += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_it_keeps_and_forgets_by_count_and_age() {
        let mut t = IdTable::new(100);
        for i in 0..1000u64 {
            // Few distinct fingerprints: long probe chains and shifts on deletion.
            t.insert(i % 37, i, i as i64, i64::MIN);
            assert!(t.len() <= 100);
        }
        for i in 900..1000u64 {
            assert!(t.candidates(i % 37, i64::MIN).contains(&i), "{i}");
        }
        assert!(t.candidates(899 % 37, i64::MIN).iter().all(|&o| o >= 900));
        t.age_out(950);
        assert_eq!(t.len(), 50);
        assert!(t.candidates(949 % 37, i64::MIN).iter().all(|&o| o >= 950));
        assert!(t.candidates(960 % 37, 0).contains(&960));
        assert!(t.candidates(960 % 37, 961).iter().all(|&o| o != 960));
    }

    #[test]
    fn random_fingerprints_survive_many_deletions() {
        let mut t = IdTable::new(1000);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut kept = std::collections::VecDeque::new();
        for i in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            t.insert(x, i, 0, i64::MIN);
            kept.push_back((x, i));
            if kept.len() > 1000 {
                kept.pop_front();
            }
        }
        for &(fp, o) in &kept {
            assert_eq!(t.candidates(fp, i64::MIN), vec![o]);
        }
        let per_id = t.memory_bytes() as f64 / t.len() as f64;
        assert!(per_id <= 40.0, "{per_id} bytes per id");
    }
}
