//! In-memory queue state: the ack floor, a window of 12-byte slots for the offsets
//! between the floor and the delivery cursor, and a deadline order (a FIFO for leases
//! that arrive in deadline order, as `receive` hands them out, and a heap for the
//! rest).
//!
//! Every offset below `floor` is done. Every offset in `[floor, next)` has a [`Slot`]:
//! done (acked, dead-lettered, skipped), leased (a receipt is out, valid until its
//! deadline) or waiting (nacked or recovered: deliverable again once the clock reaches
//! its deadline). Offsets at or above `next` were never delivered. The heap orders the
//! leased and waiting slots by deadline; entries are checked against the slot when
//! popped (lazy deletion) and the heap is rebuilt when stale entries pile up, so it
//! stays O(in flight).
//!
//! Per-key ordering (the next issue) fits here as a side table from key hash to the
//! blocked offsets; delayed delivery is a waiting slot with a future deadline.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::Offset;

mod window;

use window::Window;

/// State of one offset in the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum SlotState {
    Done = 0,
    Leased = 1,
    Waiting = 2,
}

/// One offset in `[floor, next)`, unpacked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Leased: the lease's deadline. Waiting: when it becomes deliverable.
    pub deadline: i64,
    /// Deliveries so far (the attempt of the current or last lease).
    pub attempt: u32,
    pub state: SlotState,
}

/// A [`Slot`] as stored: 12 bytes, 4-byte aligned: the deadline in the low 62 bits
/// of the first two words (sign-extended; see [`pack_deadline`]) with the state in
/// their top 2 bits, then the full 32-bit attempt. The attempt is never narrowed: a
/// receipt carries a `u32` attempt, and a stored attempt that saturated below it
/// would fence off every later receipt (issue 9, defect 12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Packed([u32; 3]);

/// Largest deadline stored as itself; `i64::MAX` (a blocked slot) is stored as one
/// more, so deadlines above this are clamped to it (2^61 ms: 73 million years).
const DEADLINE_HIGH: i64 = (1 << 61) - 2;
/// Smallest deadline stored as itself; `i64::MIN` (deliverable at once, a recovered
/// lease) is stored as one less.
const DEADLINE_LOW: i64 = -(1 << 61) + 1;
const DEADLINE_BITS: u64 = (1 << 62) - 1;
const DONE: Packed = Packed([0, 0, 0]);

/// The 62-bit form of a deadline: `i64::MIN` and `i64::MAX` are kept exactly (they
/// mean "at once" and "blocked"), everything else is clamped into 62 bits.
fn pack_deadline(d: i64) -> u64 {
    let v = match d {
        i64::MIN => DEADLINE_LOW - 1,
        i64::MAX => DEADLINE_HIGH + 1,
        d => d.clamp(DEADLINE_LOW, DEADLINE_HIGH),
    };
    v as u64 & DEADLINE_BITS
}

fn unpack_deadline(bits: u64) -> i64 {
    // Sign-extend the 62 bits.
    match ((bits << 2) as i64) >> 2 {
        v if v < DEADLINE_LOW => i64::MIN,
        v if v > DEADLINE_HIGH => i64::MAX,
        v => v,
    }
}

impl Packed {
    fn pack(s: Slot) -> Packed {
        let bits = pack_deadline(s.deadline) | (s.state as u64) << 62;
        Packed([bits as u32, (bits >> 32) as u32, s.attempt])
    }

    fn unpack(self) -> Slot {
        let [lo, hi, attempt] = self.0;
        let bits = u64::from(lo) | u64::from(hi) << 32;
        Slot {
            deadline: unpack_deadline(bits & DEADLINE_BITS),
            attempt,
            state: match bits >> 62 {
                1 => SlotState::Leased,
                2 => SlotState::Waiting,
                _ => SlotState::Done,
            },
        }
    }

    fn is_done(self) -> bool {
        self.0[1] >> 30 == 0
    }
}

impl Slot {
    /// A lease that was outstanding when the process last died and has not been
    /// delivered since (see [`AckState::recover_leases`]): it may be what killed the
    /// process, so it is delivered in a batch of its own (issue 9, defect 11).
    pub fn is_recovered(&self) -> bool {
        self.state == SlotState::Waiting && self.deadline == i64::MIN && self.attempt > 0
    }
}

/// Running totals, kept in snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub acked: u64,
    pub redelivered: u64,
    pub dead_lettered: u64,
    pub corrupt_skipped: u64,
}

/// The counters of [`QueueStats`] for `state` over a log ending at `end`: `oldest` is
/// the timestamp of the record at the floor (if not done), `now` the clock, `counts`
/// the in-memory-only (tombstones skipped, expired) counters.
pub(crate) fn stats(
    state: &AckState,
    end: Offset,
    oldest: Option<i64>,
    now: i64,
    counts: (u64, u64),
) -> super::QueueStats {
    super::QueueStats {
        consumer_lag: end.saturating_sub(state.lane_floor(end)),
        oldest_unacked_age_ms: oldest.map(|ts| now.saturating_sub(ts).max(0) as u64),
        ack_floor: state.lane_floor(end),
        in_flight: state.leased() as u64,
        backlog: state.lane.owned_in(state.next()..end) + state.waiting() as u64,
        delayed: state.delayed() as u64,
        acked_total: state.totals.acked,
        redelivered_total: state.totals.redelivered,
        dead_lettered_total: state.totals.dead_lettered,
        corrupt_skipped: state.totals.corrupt_skipped,
        skipped_by_retention: state.skipped_by_retention,
        tombstones_skipped: counts.0,
        expired_total: counts.1,
    }
}

/// The ack table of one queue.
#[derive(Debug, Default)]
pub(crate) struct AckState {
    pub floor: Offset,
    /// Slots for `[floor, next)` (done gaps kept as gaps, see `window.rs`).
    window: Window,
    heap: BinaryHeap<Reverse<(i64, Offset)>>,
    /// Order entries pushed in increasing `(due, offset)` order.
    fifo: VecDeque<(i64, Offset)>,
    /// Milliseconds before redelivery n after a lease with attempt n expires:
    /// `backoff[min(n - 1, len - 1)]`; empty: none.
    backoff: Vec<i64>,
    leased: usize,
    waiting: usize,
    /// Waiting slots never delivered, held back by a delivery delay (not counting
    /// slots blocked behind their key, deadline `i64::MAX`).
    delayed: usize,
    pub totals: Totals,
    /// The dead-letter log's end offset this state accounts for: every dead letter
    /// below it is done here (journaled in the `deadline` field of `DeadLetter`
    /// events, kept in snapshots). `None` for state from a snapshot written before
    /// the field existed. See `Queue::open`'s reconciliation (issue 9, defect 3).
    pub dead_letter_end: Option<Offset>,
    /// The log's crash-recovery epoch when this state's journal generation began
    /// (`crash_history.rs`): at open, what it names at or above the lowest end a
    /// crash recovery left since then is dropped (those offsets may hold other
    /// records now). `None` for state from before the field existed.
    pub log_epoch: Option<u64>,
    /// The outcomes log's end offset this state accounts for (see `outcomes.rs`):
    /// every outcome of a settlement applied to this state lies below it, and the
    /// outcomes of the acks in the current journal generation at or past it. `None`:
    /// the outcome feed was off when this state's generation began (or a snapshot
    /// from before the field existed).
    pub outcome_end: Option<Offset>,
    /// Records not done that [`AckState::clamp`] jumped over because they were below
    /// the log's start offset (in memory only, since the queue was opened).
    pub skipped_by_retention: u64,
    /// The offsets this state is about (in memory only, set at open): the other
    /// lanes' offsets are gaps to it, and are not counted as its records.
    pub lane: super::lanes::Lane,
}

impl AckState {
    /// Empty state: everything below `floor` done, nothing delivered at or above it.
    pub fn new(floor: Offset) -> AckState {
        AckState {
            floor,
            ..AckState::default()
        }
    }

    /// The floor this state shows retention (its floor cursor) and
    /// [`QueueStats::ack_floor`](super::QueueStats): the floor, or with nothing
    /// pending the first offset at or past it the lane owns (below `end`): the other
    /// lanes' offsets are not this lane's to hold.
    pub fn lane_floor(&self, end: Offset) -> Offset {
        if self.lane.is_only() || !self.window.is_empty() {
            return self.floor;
        }
        self.lane.next_owned(self.floor).min(end).max(self.floor)
    }

    /// The next offset never delivered.
    #[inline]
    pub fn next(&self) -> Offset {
        self.window.next(self.floor)
    }

    /// Leases out (including expired ones not yet handed out again).
    pub fn leased(&self) -> usize {
        self.leased
    }

    /// Records waiting for delivery: nacked, recovered or delayed.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Waiting records never delivered yet (held back by a delivery delay).
    pub fn delayed(&self) -> usize {
        self.delayed
    }

    /// Entries in the deadline heap.
    #[cfg(test)]
    pub fn heap_len(&self) -> usize {
        self.heap.len() + self.fifo.len()
    }

    /// Bytes of heap memory held by the window and the deadline heap.
    pub fn memory_bytes(&self) -> usize {
        self.window.memory_bytes()
            + self.heap.capacity() * std::mem::size_of::<Reverse<(i64, Offset)>>()
            + self.fifo.capacity() * std::mem::size_of::<(i64, Offset)>()
    }

    #[inline]
    pub fn slot(&self, offset: Offset) -> Option<Slot> {
        self.window.get(self.floor, offset).map(Packed::unpack)
    }

    #[inline]
    fn slot_mut(&mut self, offset: Offset) -> Option<&mut Packed> {
        self.window.get_mut(self.floor, offset)
    }

    /// Marks `[next, to)` done (never delivered: compacted away, corrupt, deleted).
    pub fn skip_to(&mut self, to: Offset) {
        if to <= self.next() {
            // Nothing to skip (a record delivered right at the cursor: the common
            // case, from `set`); the floor is settled after every change.
            return;
        }
        self.advance_floor();
        if self.window.is_empty() && to > self.floor {
            // Nothing pending below: the floor jumps, whatever the gap's size (a
            // compacted stretch or a planted offset costs no memory).
            self.floor = to;
            return;
        }
        // Something pending below: a long gap costs a run, not a slot per offset.
        self.window.skip_to(self.floor, to);
        self.advance_floor();
    }

    fn count(&mut self, slot: Slot, delta: isize) {
        count_slot(
            (&mut self.leased, &mut self.waiting, &mut self.delayed),
            slot,
            delta,
        );
    }

    /// Sets the backoff schedule (see [`AckState::due`]) and reorders.
    pub fn set_backoff(&mut self, backoff: Vec<i64>) {
        self.backoff = backoff;
        self.rebuild();
    }

    /// Backoff before the redelivery that follows a failed delivery `attempt`.
    pub fn backoff_ms(&self, attempt: u32) -> i64 {
        let n = (attempt.max(1) - 1) as usize;
        self.backoff
            .get(n.min(self.backoff.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    }

    /// When a slot becomes deliverable: a waiting slot at its deadline, a leased one
    /// at its deadline plus the backoff for its attempt.
    fn due(&self, s: Slot) -> i64 {
        match s.state {
            SlotState::Leased => s.deadline.saturating_add(self.backoff_ms(s.attempt)),
            _ => s.deadline,
        }
    }

    /// Puts `offset` in `state` with `attempt` and `deadline`; an offset at or past
    /// `next` extends the window (the offsets in between are done). Offsets below the
    /// floor are done already and are ignored.
    pub fn set(&mut self, offset: Offset, state: SlotState, attempt: u32, deadline: i64) {
        if offset < self.floor {
            return;
        }
        if offset >= self.next() {
            self.skip_to(offset);
            self.window.push(DONE);
        }
        // The order entry is computed from the slot as stored (deadlines clamp), so
        // that `live` recognises it.
        let packed = Packed::pack(Slot {
            deadline,
            attempt,
            state,
        });
        let new = packed.unpack();
        let slot = self.slot_mut(offset).expect("inside the window");
        let old = std::mem::replace(slot, packed).unpack();
        self.count(old, -1);
        self.count(new, 1);
        if state == SlotState::Done {
            self.advance_floor();
        } else {
            // Leases handed out by receive mostly come in (due, offset) order: those
            // go to a FIFO (O(1)), the rest to the heap.
            let due = self.due(new);
            if self.fifo.back().is_none_or(|&b| b < (due, offset)) {
                self.fifo.push_back((due, offset));
            } else {
                self.heap.push(Reverse((due, offset)));
            }
            self.maybe_rebuild();
        }
    }

    #[inline]
    fn advance_floor(&mut self) {
        self.window.settle_front(&mut self.floor);
        self.window.shrink();
    }

    fn maybe_rebuild(&mut self) {
        let live = self.leased + self.waiting;
        if self.heap.len() + self.fifo.len() > 2 * live + 1024 {
            self.rebuild();
        }
    }

    fn rebuild(&mut self) {
        let entries: Vec<_> = self
            .pending()
            .map(|(o, s)| Reverse((self.due(s), o)))
            .collect();
        self.heap = BinaryHeap::from(entries);
        self.fifo.clear();
    }

    /// The slot at `offset` if an order entry `(due, offset)` still describes it.
    fn live(&self, due: i64, offset: Offset) -> Option<Slot> {
        self.slot(offset)
            .filter(|s| s.state != SlotState::Done && self.due(*s) == due)
    }

    /// The earliest live `(deadline, offset)` and whether it is the FIFO's; stale
    /// entries at the fronts are dropped on the way.
    fn earliest(&mut self) -> Option<((i64, Offset), bool)> {
        while let Some(&(d, o)) = self.fifo.front() {
            if self.live(d, o).is_some() {
                break;
            }
            self.fifo.pop_front();
        }
        while let Some(&Reverse((d, o))) = self.heap.peek() {
            if self.live(d, o).is_some() {
                break;
            }
            self.heap.pop();
        }
        match (self.fifo.front(), self.heap.peek()) {
            (Some(&f), Some(&Reverse(h))) => Some(if f <= h { (f, true) } else { (h, false) }),
            (Some(&f), None) => Some((f, true)),
            (None, Some(&Reverse(h))) => Some((h, false)),
            (None, None) => None,
        }
    }

    /// Pops the leased or waiting slot with the earliest deadline (lowest offset among
    /// equal deadlines) if that deadline is at or before `now`.
    pub fn pop_due(&mut self, now: i64) -> Option<(Offset, Slot)> {
        let ((deadline, offset), from_fifo) = self.earliest()?;
        if deadline > now {
            return None;
        }
        if from_fifo {
            self.fifo.pop_front();
        } else {
            self.heap.pop();
        }
        self.live(deadline, offset).map(|s| (offset, s))
    }

    /// Up to `max` offsets that are due at `now` (what [`AckState::pop_due`] would
    /// pop), in the order it pops them. O(window): for inspection, not delivery.
    pub fn due_offsets(&self, now: i64, max: usize) -> Vec<Offset> {
        let mut due: Vec<(i64, Offset)> = self
            .pending()
            .map(|(o, s)| (self.due(s), o))
            .filter(|&(d, _)| d <= now)
            .collect();
        due.sort_unstable();
        due.into_iter().take(max).map(|(_, o)| o).collect()
    }

    /// The earliest live deadline, if any.
    pub fn next_deadline(&mut self) -> Option<i64> {
        self.earliest().map(|((d, _), _)| d)
    }

    /// The slots that are not done, in offset order.
    pub fn pending(&self) -> impl Iterator<Item = (Offset, Slot)> + '_ {
        self.window
            .iter(self.floor)
            .filter(|(_, s)| !s.is_done())
            .map(|(o, s)| (o, s.unpack()))
    }

    /// After a restart: every lease becomes deliverable at once, attempts kept, and
    /// is marked recovered ([`Slot::is_recovered`]: waiting, deadline `i64::MIN`,
    /// attempt > 0; no other path makes such a slot).
    pub fn recover_leases(&mut self) {
        let leased: Vec<(Offset, Slot)> = self
            .pending()
            .filter(|(_, s)| s.state == SlotState::Leased)
            .collect();
        for (o, s) in leased {
            self.set(o, SlotState::Waiting, s.attempt, i64::MIN);
        }
    }

    /// Drops everything naming an offset at or past `end` and moves the floor up to
    /// `start` (records below it are gone from the log), counting the records not
    /// done below `start` in `skipped_by_retention`.
    pub fn clamp(&mut self, start: Offset, end: Offset) {
        if self.floor > end {
            *self = AckState {
                totals: self.totals,
                skipped_by_retention: self.skipped_by_retention,
                dead_letter_end: self.dead_letter_end,
                log_epoch: self.log_epoch,
                outcome_end: self.outcome_end,
                backoff: std::mem::take(&mut self.backoff),
                ..AckState::new(end)
            };
        }
        let counts = (&mut self.leased, &mut self.waiting, &mut self.delayed);
        self.window.truncate(&mut self.floor, end, |p| {
            count_slot(
                (&mut *counts.0, &mut *counts.1, &mut *counts.2),
                p.unpack(),
                -1,
            );
        });
        self.skipped_by_retention += self.purge(start);
    }

    /// Moves the floor up to `to`: every offset below it is done. Returns how many of
    /// them were not done before (never delivered, leased, waiting or delayed).
    pub fn purge(&mut self, to: Offset) -> u64 {
        let mut settled = 0;
        let counts = (&mut self.leased, &mut self.waiting, &mut self.delayed);
        self.window.drain_front(&mut self.floor, to, |p| {
            let s = p.unpack();
            if s.state != SlotState::Done {
                settled += 1;
            }
            count_slot((&mut *counts.0, &mut *counts.1, &mut *counts.2), s, -1);
        });
        if self.floor < to {
            // Never delivered (this lane's offsets only).
            settled += self.lane.owned_in(self.floor..to);
            self.floor = to;
        }
        self.advance_floor();
        self.maybe_rebuild();
        settled
    }
}

/// Adds `delta` to the counter (leased, waiting, delayed) `slot` counts in.
fn count_slot(counts: (&mut usize, &mut usize, &mut usize), slot: Slot, delta: isize) {
    let (leased, waiting, delayed) = counts;
    if slot.state == SlotState::Waiting && slot.attempt == 0 && slot.deadline != i64::MAX {
        *delayed = delayed.wrapping_add_signed(delta);
    }
    let c = match slot.state {
        SlotState::Leased => leased,
        SlotState::Waiting => waiting,
        SlotState::Done => return,
    };
    *c = c.wrapping_add_signed(delta);
}

#[cfg(test)]
mod tests;
