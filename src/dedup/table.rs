//! The in-memory id table of a dedup window: flat, about 36 bytes per id.
//!
//! Ids are remembered by a 64-bit keyed fingerprint, never by their bytes: a ring of
//! 24-byte entries (fingerprint, offset, timestamp) in append order, which is also
//! the order they age out in, and an open-addressing index (linear probing,
//! backward-shift deletion, load ≤ 2/3: a miss probes 5 slots on average, 8 to a
//! cache line; at 7/8 it was 32) of 8-byte slots: the fingerprint's top 32
//! bits (its tag, which also gives its home slot) and the entry's sequence number
//! modulo 2^32 (unique: at most 2^32 entries are kept). Probing compares tags in the
//! slots alone; the ring is read only on a tag match.
//! A fingerprint match is only a candidate: the caller compares the full id stored
//! in the record (see `dedup/mod.rs`).

use std::collections::VecDeque;

use crate::Offset;

const EMPTY: u64 = u64::MAX;

/// The fingerprint's top 32 bits, never all ones (so that no slot is `EMPTY`).
fn tag(fingerprint: u64) -> u32 {
    ((fingerprint >> 32) as u32).min(u32::MAX - 1)
}

fn slot(tag: u32, seq: u64) -> u64 {
    (u64::from(tag) << 32) | (seq & 0xFFFF_FFFF)
}

fn slot_tag(slot: u64) -> u32 {
    (slot >> 32) as u32
}

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
    /// Tag and sequence number (see `slot`), `EMPTY` for a free slot.
    slots: Vec<u64>,
    /// The slot count the table grows to (`max_ids` at load 2/3).
    full_slots: usize,
    max_ids: usize,
}

impl IdTable {
    pub(crate) fn new(max_ids: usize) -> IdTable {
        let full_slots = max_ids.saturating_mul(3) / 2 + 1;
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

    fn home(&self, tag: u32) -> usize {
        // Multiply-shift onto any table size (no power of two needed).
        ((u128::from(tag) * self.slots.len() as u128) >> 32) as usize
    }

    /// The ring entry of a slot: its sequence number is the one in the ring's span
    /// with these low 32 bits.
    fn entry(&self, slot: u64) -> &Entry {
        let low = slot & 0xFFFF_FFFF;
        let index = low.wrapping_sub(self.first_seq) & 0xFFFF_FFFF;
        &self.ring[index as usize]
    }

    /// Starts loading the two slots the next insert of `fingerprint` touches first
    /// (its home, and the home of the entry that ages out before it): at a full
    /// window both are cache misses, and loads issued together overlap.
    pub(crate) fn warm(&self, fingerprint: u64) {
        let own = self.slots[self.home(tag(fingerprint))];
        let oldest = self
            .ring
            .front()
            .map_or(0, |e| self.slots[self.home(tag(e.fingerprint))]);
        std::hint::black_box((own, oldest));
    }

    /// Offsets of the remembered ids with this fingerprint and a timestamp at or
    /// after `cutoff`, oldest first.
    pub(crate) fn candidates(&self, fingerprint: u64, cutoff: i64) -> Vec<Offset> {
        let mut found = Vec::new();
        let tag = tag(fingerprint);
        let mut i = self.home(tag);
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                break;
            }
            if slot_tag(s) == tag {
                let e = self.entry(s);
                if e.fingerprint == fingerprint && e.timestamp >= cutoff {
                    found.push(e.offset);
                }
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
        if (self.ring.len() + 1) * 3 > self.slots.len() * 2 && self.slots.len() < self.full_slots {
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
            advise_huge_pages(self.ring.as_slices().0);
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
        let tag = tag(fingerprint);
        let mut i = self.home(tag);
        while self.slots[i] != EMPTY {
            i = (i + 1) % self.slots.len();
        }
        self.slots[i] = slot(tag, seq);
    }

    fn grow(&mut self) {
        let size = self.slots.len().saturating_mul(2).min(self.full_slots);
        self.slots = vec![EMPTY; size];
        advise_huge_pages(&self.slots);
        for k in 0..self.ring.len() {
            let fingerprint = self.ring[k].fingerprint;
            self.place(self.first_seq + k as u64, fingerprint);
        }
    }

    fn pop_oldest(&mut self) {
        let Some(e) = self.ring.front().copied() else {
            return;
        };
        let tag = tag(e.fingerprint);
        let seq = slot(tag, self.first_seq);
        let n = self.slots.len();
        let mut i = self.home(tag);
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
                let home = self.home(slot_tag(s));
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

/// Asks for transparent huge pages under a large table (a hint; where the system
/// ignores it nothing changes): a full window is tens of MB probed at random, and
/// with 4 KiB pages nearly every probe also misses the TLB.
fn advise_huge_pages<T>(buf: &[T]) {
    const HUGE: usize = 2 << 20;
    let bytes = std::mem::size_of_val(buf);
    if bytes < 2 * HUGE {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let start = (buf.as_ptr() as usize).next_multiple_of(HUGE);
        let end = (buf.as_ptr() as usize + bytes) / HUGE * HUGE;
        if end > start {
            // SAFETY: madvise(MADV_HUGEPAGE) only changes how the kernel backs the
            // pages of this range, which lies inside an allocation we own; it never
            // changes their contents, and its failure is harmless.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
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
