//! The in-memory id table of a dedup window: flat, about 37 bytes per id.
//!
//! Ids are remembered by a 64-bit keyed fingerprint, never by their bytes, in two
//! arrays:
//!
//! - a ring of 24-byte entries (fingerprint, offset, timestamp) in append order, which
//!   is also the order they age out in. Entry `i` has the sequence number
//!   `first_seq + i`; forgetting the oldest id moves the front and `first_seq` and
//!   touches nothing else.
//! - an index of 64-byte buckets, one cache line each: seven slots (the fingerprint's
//!   top 24 bits as a tag, and an entry's sequence number modulo 2^40) and an overflow
//!   mark. A slot is live while its sequence number lies in the ring's span; a slot
//!   whose entry aged out is free as it is, never cleared (so an insert at a full
//!   window reads and writes one cache line of the index, not two: the slot of the
//!   id it forgets is never looked at).
//!
//! An id's home bucket comes from the fingerprint's low 32 bits. When the home has no
//! free slot the id goes to the next bucket that has one, and every bucket it passes
//! records its sequence number (plus one) as its overflow mark. A lookup goes on past
//! a bucket only while the mark names a live entry: entries age out in sequence order,
//! so once the newest entry that passed a bucket is gone, all that passed it earlier
//! are gone too. At most five live ids per bucket on average (load 5/7): a lookup of a
//! new id reads one cache line, or two when its home overflowed not long ago.
//!
//! A stale slot whose sequence number comes round again (2^40 inserts later) looks
//! live: it then names some live entry, whose full fingerprint is compared, and the
//! entry is also found through its own slot; it costs a probe, never a wrong answer.
//! A fingerprint match is only a candidate: the caller compares the full id stored
//! in the record (see `dedup/mod.rs`).

use std::collections::VecDeque;

use crate::Offset;

/// Slots per bucket: seven 8-byte slots and the 8-byte overflow mark fill 64 bytes.
const SLOTS: usize = 7;
/// Live ids per bucket at most, on average over the index (load 5/7).
const IDS_PER_BUCKET: usize = 5;
/// Buckets of a new table (grown by doubling up to the size for `max_ids`).
const INITIAL_BUCKETS: usize = 128;
const SEQ_BITS: u32 = 40;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
/// A slot never used. Tags are never all ones, so no slot in use equals it.
const EMPTY: u64 = u64::MAX;
const MAX_TAG: u64 = (1 << (64 - SEQ_BITS)) - 2;

/// The fingerprint's top 24 bits, never all ones. The home bucket comes from the low
/// bits: ids sharing a bucket still differ in their tags.
fn tag(fingerprint: u64) -> u64 {
    (fingerprint >> SEQ_BITS).min(MAX_TAG)
}

fn slot(tag: u64, seq: u64) -> u64 {
    (tag << SEQ_BITS) | (seq & SEQ_MASK)
}

fn slot_tag(slot: u64) -> u64 {
    slot >> SEQ_BITS
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    fingerprint: u64,
    offset: Offset,
    timestamp: i64,
}

/// One cache line of the index.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Bucket {
    /// One plus the sequence number of the newest entry placed past this bucket (0:
    /// none): a lookup goes on to the next bucket while that entry is live.
    overflow: u64,
    /// Tag and sequence number (see `slot`), `EMPTY` if never used.
    slots: [u64; SLOTS],
}

const EMPTY_BUCKET: Bucket = Bucket {
    overflow: 0,
    slots: [EMPTY; SLOTS],
};

#[derive(Debug)]
pub(crate) struct IdTable {
    /// Entries in append order; `ring[i]` has sequence number `first_seq + i`.
    ring: VecDeque<Entry>,
    first_seq: u64,
    buckets: Vec<Bucket>,
    /// The bucket count the table grows to (`max_ids` at load 5/7).
    full_buckets: usize,
    max_ids: usize,
}

impl IdTable {
    pub(crate) fn new(max_ids: usize) -> IdTable {
        let full_buckets = max_ids.div_ceil(IDS_PER_BUCKET).max(1);
        IdTable {
            ring: VecDeque::new(),
            first_seq: 0,
            buckets: vec![EMPTY_BUCKET; full_buckets.min(INITIAL_BUCKETS)],
            full_buckets,
            max_ids,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.ring.len()
    }

    /// Bytes held by the table.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.ring.capacity() * std::mem::size_of::<Entry>()
            + self.buckets.capacity() * std::mem::size_of::<Bucket>()
    }

    fn home(&self, fingerprint: u64) -> usize {
        // Multiply-shift onto any table size (no power of two needed).
        (((fingerprint & 0xFFFF_FFFF) * self.buckets.len() as u64) >> 32) as usize
    }

    /// The live entry a slot names, if any (`EMPTY` names none: its tag matches no id's).
    fn live_entry(&self, slot: u64) -> Option<&Entry> {
        let index = slot.wrapping_sub(self.first_seq) & SEQ_MASK;
        self.ring.get(usize::try_from(index).ok()?)
    }

    fn is_free(&self, slot: u64) -> bool {
        slot == EMPTY || self.live_entry(slot).is_none()
    }

    /// Whether a lookup must go on past a bucket with this overflow mark.
    fn passes(&self, overflow: u64) -> bool {
        overflow > self.first_seq
    }

    /// Starts loading the bucket a lookup or insert of `fingerprint` reads first:
    /// at a full window it is a cache miss, which overlaps with the work done until
    /// the lookup.
    pub(crate) fn prefetch(&self, fingerprint: u64) {
        prefetch(self.home_address(fingerprint));
    }

    fn home_address(&self, fingerprint: u64) -> usize {
        self.buckets.as_ptr() as usize + self.home(fingerprint) * std::mem::size_of::<Bucket>()
    }

    /// Offsets of the remembered ids with this fingerprint and a timestamp at or
    /// after `cutoff`, oldest first.
    pub(crate) fn candidates(&self, fingerprint: u64, cutoff: i64) -> Vec<Offset> {
        let mut found = Vec::new();
        let tag = tag(fingerprint);
        let mut b = self.home(fingerprint);
        // Bounded by the table size: a mark is live only while its entry is, and
        // fewer entries are live than there are slots.
        for _ in 0..self.buckets.len() {
            let bucket = &self.buckets[b];
            for &s in &bucket.slots {
                if slot_tag(s) != tag {
                    continue;
                }
                if let Some(e) = self.live_entry(s) {
                    if e.fingerprint == fingerprint && e.timestamp >= cutoff {
                        found.push(e.offset);
                    }
                }
            }
            if !self.passes(bucket.overflow) {
                break;
            }
            b = (b + 1) % self.buckets.len();
        }
        found.sort_unstable();
        // A slot come round again (see the module notes) finds an entry twice.
        found.dedup();
        found
    }

    /// Remembers an id, forgetting the oldest ones first while they are older than
    /// `cutoff` or the table is at `max_ids`.
    pub(crate) fn insert(&mut self, fingerprint: u64, offset: Offset, timestamp: i64, cutoff: i64) {
        self.age_out(cutoff);
        while self.ring.len() >= self.max_ids {
            self.forget_oldest();
        }
        if self.ring.len() >= self.buckets.len() * IDS_PER_BUCKET
            && self.buckets.len() < self.full_buckets
        {
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
            self.forget_oldest();
        }
    }

    /// The oldest entry leaves the ring; its slot becomes free by that alone.
    fn forget_oldest(&mut self) {
        if self.ring.pop_front().is_some() {
            self.first_seq += 1;
        }
    }

    /// Puts the entry `seq` (in the ring already) into the first free slot from its
    /// home on, marking the full buckets it passes.
    fn place(&mut self, seq: u64, fingerprint: u64) {
        let new = slot(tag(fingerprint), seq);
        let n = self.buckets.len();
        let mut b = self.home(fingerprint);
        // There is a free slot: at most 5/7 of the slots are live (see `insert`).
        for _ in 0..n {
            let free = self.buckets[b].slots.iter().position(|&s| self.is_free(s));
            if let Some(i) = free {
                self.buckets[b].slots[i] = new;
                return;
            }
            self.buckets[b].overflow = seq + 1;
            b = (b + 1) % n;
        }
        debug_assert!(false, "no free slot in the dedup index");
    }

    fn grow(&mut self) {
        self.resize_index(self.buckets.len().saturating_mul(2));
    }

    /// Makes room for `ids` more ids (up to `max_ids` in all) at once: the ring and the
    /// index sized for them, instead of grown step by step (each growth of the index
    /// places every entry again).
    pub(crate) fn reserve(&mut self, ids: usize) {
        let total = self.ring.len().saturating_add(ids).min(self.max_ids);
        self.ring.reserve_exact(total - self.ring.len().min(total));
        let buckets = total.div_ceil(IDS_PER_BUCKET);
        if buckets > self.buckets.len() {
            self.resize_index(buckets);
        }
    }

    /// Gives back what a [`IdTable::reserve`] took beyond twice the ids held (the
    /// records it was sized for did not all carry ids).
    pub(crate) fn shrink_to_fit(&mut self) {
        let buckets = self
            .ring
            .len()
            .div_ceil(IDS_PER_BUCKET)
            .max(INITIAL_BUCKETS)
            .min(self.full_buckets);
        if self.buckets.len() > buckets * 2 {
            self.resize_index(buckets);
        }
        if self.ring.capacity() > self.ring.len().max(1024) * 2 {
            self.ring.shrink_to_fit();
        }
    }

    /// [`IdTable::insert`] of `(fingerprint, offset, timestamp)` triples, in order, with
    /// the buckets of all of them requested first: their cache misses overlap.
    pub(crate) fn insert_all(&mut self, ids: &[(u64, Offset, i64)], cutoff: i64) {
        for &(fingerprint, _, _) in ids {
            self.prefetch(fingerprint);
        }
        for &(fingerprint, offset, timestamp) in ids {
            self.insert(fingerprint, offset, timestamp, cutoff);
        }
    }

    /// A new index of `size` buckets (at most the full size) holding the ring's entries.
    fn resize_index(&mut self, size: usize) {
        let size = size.min(self.full_buckets);
        let mut buckets = Vec::with_capacity(size);
        // Before the first touch: pages already faulted in stay 4 KiB.
        advise_huge_pages(buckets.spare_capacity_mut());
        buckets.resize(size, EMPTY_BUCKET);
        self.buckets = buckets;
        // In sequence order, as they were placed: the overflow marks come out the same.
        for k in 0..self.ring.len() {
            let fingerprint = self.ring[k].fingerprint;
            self.place(self.first_seq + k as u64, fingerprint);
        }
    }
}

/// A hint to the CPU to load the cache line at `address` (an index bucket).
fn prefetch(address: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it neither faults (even on an unmapped address)
    // nor changes memory; no memory is accessed in the language's sense.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(address as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Asks for transparent huge pages under a large index, before its pages are first
/// touched (a hint; where the system ignores it nothing changes): a full window's
/// index is megabytes probed at random, and with 4 KiB pages nearly every probe also
/// misses the TLB. (The ring is read and written at its two ends only.)
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
            // Few distinct fingerprints: full buckets and long overflow runs.
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

    /// Ids that all share one home bucket (what a broken or attacked fingerprint
    /// would give) overflow into the next buckets and are all found; once they age
    /// out, the slots they held are reused and a lookup stops at the home again.
    #[test]
    fn ids_sharing_a_home_overflow_and_are_found_until_they_age_out() {
        let mut t = IdTable::new(1000);
        // Low 32 bits zero: one home bucket; the tags differ.
        let fp = |i: u64| (i + 1) << 40;
        for i in 0..40u64 {
            t.insert(fp(i), i, i as i64, i64::MIN);
        }
        for i in 0..40u64 {
            assert_eq!(t.candidates(fp(i), i64::MIN), vec![i], "{i}");
        }
        let home = t.home(fp(0));
        assert!(t.passes(t.buckets[home].overflow), "the home overflowed");
        // The oldest age out: the home's slots are free again (never cleared) and a new
        // id takes one of them, while those placed past it are still found.
        t.age_out(3);
        t.insert(fp(100), 100, 100, 3);
        assert!(t.buckets[home].slots.contains(&slot(tag(fp(100)), 40)));
        for i in 3..40u64 {
            assert_eq!(t.candidates(fp(i), i64::MIN), vec![i], "{i}");
        }
        assert!(t.candidates(fp(0), i64::MIN).is_empty());
        // All of them age out: the home's mark names a dead entry, a lookup stops there.
        t.age_out(1_000);
        assert_eq!(t.len(), 0);
        assert!(!t.passes(t.buckets[home].overflow));
        assert!(t.candidates(fp(39), i64::MIN).is_empty());
    }

    /// Sequence numbers past 2^40 (slots keep them modulo 2^40): entries before and
    /// after the wrap are found, and those that aged out are not.
    #[test]
    fn sequence_numbers_wrapping_in_the_slots_find_the_right_entries() {
        let mut t = IdTable::new(64);
        t.first_seq = (1 << SEQ_BITS) - 250;
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut fps = Vec::new();
        for i in 0..300u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Sixteen homes at most: overflow across the wrap too.
            let fp = x & !0xFFFF_FFF0;
            t.insert(fp, i, 0, i64::MIN);
            fps.push(fp);
        }
        assert!(t.first_seq < (1 << SEQ_BITS) && t.first_seq + 64 > (1 << SEQ_BITS));
        for (i, &fp) in fps.iter().enumerate() {
            let want: Vec<u64> = if i >= 300 - 64 {
                vec![i as u64]
            } else {
                vec![]
            };
            assert_eq!(t.candidates(fp, i64::MIN), want, "{i}");
        }
    }

    /// `reserve` sizes the index and the ring once (what the rebuild at open does):
    /// inserting that many ids then grows neither, and every id is found.
    #[test]
    fn reserve_sizes_the_table_once_for_the_ids_to_come() {
        let mut t = IdTable::new(10_000);
        t.reserve(3_000);
        let (buckets, ring) = (t.buckets.len(), t.ring.capacity());
        assert_eq!(buckets, 600);
        let ids: Vec<(u64, Offset, i64)> = (0..3_000u64)
            .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i, 0))
            .collect();
        t.insert_all(&ids, i64::MIN);
        assert_eq!((t.buckets.len(), t.ring.capacity()), (buckets, ring));
        for &(fp, o, _) in &ids {
            assert_eq!(t.candidates(fp, i64::MIN), vec![o]);
        }
        // Never past max_ids.
        t.reserve(1 << 40);
        assert_eq!(t.buckets.len(), 2_000);
        assert!(t.ring.capacity() >= 10_000);
        // Fewer ids came than reserved for: the rest is given back, the ids stay found.
        t.shrink_to_fit();
        assert_eq!(t.buckets.len(), 600);
        assert!(t.ring.capacity() < 10_000);
        for &(fp, o, _) in &ids {
            assert_eq!(t.candidates(fp, i64::MIN), vec![o]);
        }
    }
}
