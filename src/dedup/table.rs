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
//! Two things keep a new id (the common case) from waiting for the index, which at a
//! full window is megabytes probed at random, a cache miss each time:
//!
//! - a summary per bucket, 8 bytes (an array small enough to stay in the CPU's
//!   caches): a bit for the tag of each live slot (one of 48, `slot_bit`) and a bit
//!   for the tag of each id placed past the bucket while its overflow mark is live
//!   (one of 16, `passer_bit`). A lookup reads its home bucket only when the summary
//!   has one of its tag's two bits: an id that is neither in its home nor went past
//!   it is nowhere. The slot bits are recomputed from the bucket whenever it is
//!   written, the passer bits cleared then if its overflow mark is dead; between
//!   writes a summary only gains bits (a slot whose entry aged out keeps its bit until
//!   then). So it may let a lookup read a bucket in vain, never skip one it needs.
//!   (One overflow bit instead of the passer bits was tried: at load 5/7 about two
//!   buckets in three have a live overflow mark, and lookups read the bucket 70% of
//!   the time instead of about a fifth.)
//! - placing an entry in the index one insert late: an insert puts the entry in the
//!   ring and starts loading its home bucket; the next insert (or a resize) places it,
//!   by then from the cache. A lookup scans the not-yet-placed entries at the ring's
//!   end (one, usually) before the index.
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
/// How far ahead of the ring's front `age_out` prefetches, in entries (8 lines).
const RING_PREFETCH_AHEAD: usize = 21;
const SEQ_BITS: u32 = 40;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
/// A slot never used. Tags are never all ones, so no slot in use equals it.
const EMPTY: u64 = u64::MAX;
const MAX_TAG: u64 = (1 << (64 - SEQ_BITS)) - 2;
/// A summary's bits for the tags of the bucket's live slots (see `slot_bit`).
const SLOT_BITS: u64 = 48;
/// The summary's bits for the tags of ids placed past the bucket.
const PASSER_BITS: u64 = !((1 << SLOT_BITS) - 1);

/// A bucket's summary bit for a live slot with this tag (one of 48).
fn slot_bit(tag: u64) -> u64 {
    // The tag's low 12 bits scaled onto 0..48 (a multiply and a shift, not a
    // division: this runs for every live slot of every bucket an insert writes).
    1 << (((tag & 0xFFF) * SLOT_BITS) >> 12)
}

/// A bucket's summary bit for an id with this tag placed past it (one of 16).
fn passer_bit(tag: u64) -> u64 {
    // The tag's top 4 of 24 bits: other bits than `slot_bit`'s.
    1 << (SLOT_BITS + (tag >> 20))
}

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

/// Whether `slot` names no live entry, for a ring of `live` entries from `first_seq`
/// on: `IdTable::live_entry(slot).is_none()` by arithmetic alone (this runs for every
/// slot of every bucket an insert writes).
#[inline]
fn slot_is_free(slot: u64, first_seq: u64, live: u64) -> bool {
    slot == EMPTY || slot.wrapping_sub(first_seq) & SEQ_MASK >= live
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
    /// One per bucket: what a lookup may find from it (see the module notes).
    summaries: Vec<u64>,
    /// The entries from this sequence number on are in the ring, not in the index yet.
    placed_to: u64,
    /// The bucket count the table grows to (`max_ids` at load 5/7).
    full_buckets: usize,
    max_ids: usize,
}

/// Where an index lies in memory (see [`IdTable::index_span`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IndexSpan {
    pub buckets: usize,
    pub count: usize,
    pub summaries: usize,
}

impl IdTable {
    pub(crate) fn new(max_ids: usize) -> IdTable {
        let full_buckets = max_ids.div_ceil(IDS_PER_BUCKET).max(1);
        let buckets = full_buckets.min(INITIAL_BUCKETS);
        IdTable {
            ring: VecDeque::new(),
            first_seq: 0,
            buckets: vec![EMPTY_BUCKET; buckets],
            summaries: vec![0; buckets],
            placed_to: 0,
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
            + self.summaries.capacity() * std::mem::size_of::<u64>()
    }

    fn home(&self, fingerprint: u64) -> usize {
        home(fingerprint, self.buckets.len())
    }

    /// The live entry a slot names, if any (`EMPTY` names none: its tag matches no id's).
    fn live_entry(&self, slot: u64) -> Option<&Entry> {
        let index = slot.wrapping_sub(self.first_seq) & SEQ_MASK;
        self.ring.get(usize::try_from(index).ok()?)
    }

    /// Whether a lookup must go on past a bucket with this overflow mark.
    fn passes(&self, overflow: u64) -> bool {
        overflow > self.first_seq
    }

    /// Starts loading the bucket a lookup or insert of `fingerprint` reads first:
    /// at a full window it is a cache miss, which overlaps with the work done until
    /// the lookup.
    pub(crate) fn prefetch(&self, fingerprint: u64) {
        prefetch_home(self.index_span(), fingerprint);
    }

    /// Where the index lies. Kept outside the table's lock by the window (see
    /// [`prefetch_home`]).
    pub(crate) fn index_span(&self) -> IndexSpan {
        IndexSpan {
            buckets: self.buckets.as_ptr() as usize,
            count: self.buckets.len(),
            summaries: self.summaries.as_ptr() as usize,
        }
    }

    /// The sequence numbers of the entries not in the index yet.
    fn unplaced(&self) -> std::ops::Range<u64> {
        self.placed_to.max(self.first_seq)..self.first_seq + self.ring.len() as u64
    }

    /// Offsets of the remembered ids with this fingerprint and a timestamp at or
    /// after `cutoff`, oldest first.
    pub(crate) fn candidates(&self, fingerprint: u64, cutoff: i64) -> Vec<Offset> {
        let mut found = Vec::new();
        self.find(fingerprint, cutoff, |offset| {
            found.push(offset);
            false
        });
        found.sort_unstable();
        // A slot come round again (see the module notes) finds an entry twice.
        found.dedup();
        found
    }

    /// Whether [`IdTable::candidates`] would find any: stops at the first, allocates
    /// nothing (the check of every idempotent append, a new id nearly always).
    pub(crate) fn has_candidates(&self, fingerprint: u64, cutoff: i64) -> bool {
        let mut any = false;
        self.find(fingerprint, cutoff, |_| {
            any = true;
            true
        });
        any
    }

    /// Calls `found` with the offset of each remembered id with this fingerprint and
    /// a timestamp at or after `cutoff`, in no order, until it returns true.
    fn find(&self, fingerprint: u64, cutoff: i64, mut found: impl FnMut(Offset) -> bool) {
        let matches = |e: &Entry| e.fingerprint == fingerprint && e.timestamp >= cutoff;
        for seq in self.unplaced() {
            let e = &self.ring[(seq - self.first_seq) as usize];
            if matches(e) && found(e.offset) {
                return;
            }
        }
        let tag = tag(fingerprint);
        let mut b = self.home(fingerprint);
        if self.summaries[b] & (slot_bit(tag) | passer_bit(tag)) == 0 {
            // Neither in the home bucket nor past it: no need to read it.
            return;
        }
        let n = self.buckets.len();
        // Bounded by the table size: a mark is live only while its entry is, and
        // fewer entries are live than there are slots.
        for _ in 0..n {
            let bucket = &self.buckets[b];
            for &s in &bucket.slots {
                if slot_tag(s) != tag {
                    continue;
                }
                if let Some(e) = self.live_entry(s) {
                    if matches(e) && found(e.offset) {
                        return;
                    }
                }
            }
            if !self.passes(bucket.overflow) {
                return;
            }
            b = if b + 1 == n { 0 } else { b + 1 };
        }
    }

    /// Remembers an id, forgetting the oldest ones first while they are older than
    /// `cutoff` or the table is at `max_ids`.
    pub(crate) fn insert(&mut self, fingerprint: u64, offset: Offset, timestamp: i64, cutoff: i64) {
        self.age_out(cutoff);
        while self.ring.len() >= self.max_ids {
            self.forget_oldest();
        }
        // The previous insert's entry, whose bucket it asked the CPU for.
        self.place_unplaced();
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
        self.ring.push_back(Entry {
            fingerprint,
            offset,
            timestamp,
        });
        // Placed by the next insert (or resize): its home bucket is loading meanwhile.
        self.prefetch(fingerprint);
    }

    /// Forgets the ids older than `cutoff` and places the entries not in the index yet:
    /// what the next insert would do first. Changes no lookup's answer.
    pub(crate) fn tidy(&mut self, cutoff: i64) {
        self.age_out(cutoff);
        self.place_unplaced();
    }

    /// Puts the entries not yet in the index into it.
    pub(crate) fn place_unplaced(&mut self) {
        for seq in self.unplaced() {
            let fingerprint = self.ring[(seq - self.first_seq) as usize].fingerprint;
            self.place(seq, fingerprint);
        }
        self.placed_to = self.first_seq + self.ring.len() as u64;
    }

    /// Forgets the ids older than `cutoff` at the front (entries are in append order;
    /// a record with an explicit older timestamp behind a younger one ages out with
    /// it, never before it is checked: `candidates` filters by timestamp too).
    pub(crate) fn age_out(&mut self, cutoff: i64) {
        while self.ring.front().is_some_and(|e| e.timestamp < cutoff) {
            self.forget_oldest();
        }
        // The front moves one entry per insert at a full window, too slowly for the
        // hardware's stream prefetcher: the line it reaches a few inserts on is asked
        // for now.
        if let Some(ahead) = self.ring.get(RING_PREFETCH_AHEAD) {
            prefetch(ahead as *const Entry as usize);
        }
    }

    /// The oldest entry leaves the ring; its slot becomes free by that alone.
    fn forget_oldest(&mut self) {
        if self.ring.pop_front().is_some() {
            self.first_seq += 1;
        }
    }

    /// Puts the entry `seq` (in the ring already) into the first free slot from its
    /// home on, marking the full buckets it passes. One pass over each bucket finds
    /// its free slot and its live slots' summary bits alike (this runs once per
    /// insert).
    fn place(&mut self, seq: u64, fingerprint: u64) {
        let tag = tag(fingerprint);
        let new = slot(tag, seq);
        let (first_seq, live) = (self.first_seq, self.ring.len() as u64);
        let n = self.buckets.len();
        let mut b = self.home(fingerprint);
        // There is a free slot: at most 5/7 of the slots are live (see `insert`).
        for _ in 0..n {
            let bucket = &mut self.buckets[b];
            let mut free = SLOTS;
            let mut live_bits = 0;
            for (i, &s) in bucket.slots.iter().enumerate().rev() {
                if slot_is_free(s, first_seq, live) {
                    free = i;
                } else {
                    live_bits |= slot_bit(slot_tag(s));
                }
            }
            if free < SLOTS {
                bucket.slots[free] = new;
                // Its live slots' bits, exact, and the passer bits it had while its
                // overflow mark is live (none once it is dead: every id that went
                // past it has aged out).
                let passers = if bucket.overflow > first_seq {
                    self.summaries[b] & PASSER_BITS
                } else {
                    0
                };
                self.summaries[b] = passers | live_bits | slot_bit(tag);
                return;
            }
            if bucket.overflow <= first_seq {
                // Every id that went past it before has aged out: their bits go.
                self.summaries[b] &= !PASSER_BITS;
            }
            bucket.overflow = seq + 1;
            self.summaries[b] |= passer_bit(tag);
            b = if b + 1 == n { 0 } else { b + 1 };
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
        self.summaries = vec![0; size];
        // In sequence order, as they were placed: the overflow marks come out the same.
        for k in 0..self.ring.len() {
            let fingerprint = self.ring[k].fingerprint;
            self.place(self.first_seq + k as u64, fingerprint);
        }
        self.placed_to = self.first_seq + self.ring.len() as u64;
    }
}

/// The home bucket of `fingerprint` in an index of `buckets` buckets.
fn home(fingerprint: u64, buckets: usize) -> usize {
    // Multiply-shift onto any table size (no power of two needed).
    (((fingerprint & 0xFFFF_FFFF) * buckets as u64) >> 32) as usize
}

/// Starts loading the summary and the home bucket of `fingerprint` in the index
/// `span`, which may be out of date by now (noted outside the lock, the table grew
/// since): a prefetch of an address that is no longer the bucket, or no longer
/// mapped, costs a wasted hint, never a fault.
pub(crate) fn prefetch_home(span: IndexSpan, fingerprint: u64) {
    let home = home(fingerprint, span.count);
    prefetch(
        span.summaries
            .wrapping_add(home.wrapping_mul(std::mem::size_of::<u64>())),
    );
    let bucket = |b: usize| {
        span.buckets
            .wrapping_add(b.wrapping_mul(std::mem::size_of::<Bucket>()))
    };
    prefetch(bucket(home));
    // The next bucket too: a lookup or placement goes on to it when the home
    // overflowed, which at load 5/7 is common. (Past the index's end: a wasted hint.)
    prefetch(bucket(home.wrapping_add(1)));
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
mod tests;
