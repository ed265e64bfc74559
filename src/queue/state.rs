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

/// A [`Slot`] as stored: 12 bytes, 4-byte aligned (deadline low and high halves,
/// then the attempt in the low 24 bits and the state in the high 8; attempts saturate
/// at 2^24 - 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Packed([u32; 3]);

const MAX_ATTEMPT: u32 = (1 << 24) - 1;
const DONE: Packed = Packed([0, 0, 0]);

impl Packed {
    fn pack(s: Slot) -> Packed {
        let d = s.deadline as u64;
        Packed([
            d as u32,
            (d >> 32) as u32,
            s.attempt.min(MAX_ATTEMPT) | (s.state as u32) << 24,
        ])
    }

    fn unpack(self) -> Slot {
        let [lo, hi, meta] = self.0;
        Slot {
            deadline: (u64::from(lo) | u64::from(hi) << 32) as i64,
            attempt: meta & MAX_ATTEMPT,
            state: match meta >> 24 {
                1 => SlotState::Leased,
                2 => SlotState::Waiting,
                _ => SlotState::Done,
            },
        }
    }

    fn is_done(self) -> bool {
        self.0[2] >> 24 == 0
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

/// The ack table of one queue.
#[derive(Debug, Default)]
pub(crate) struct AckState {
    pub floor: Offset,
    /// Slots for `[floor, next)`.
    window: VecDeque<Packed>,
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
    /// Records not done that [`AckState::clamp`] jumped over because they were below
    /// the log's start offset (in memory only, since the queue was opened).
    pub skipped_by_retention: u64,
}

impl AckState {
    /// Empty state: everything below `floor` done, nothing delivered at or above it.
    pub fn new(floor: Offset) -> AckState {
        AckState {
            floor,
            ..AckState::default()
        }
    }

    /// The next offset never delivered.
    pub fn next(&self) -> Offset {
        self.floor + self.window.len() as u64
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
        self.window.capacity() * std::mem::size_of::<Packed>()
            + self.heap.capacity() * std::mem::size_of::<Reverse<(i64, Offset)>>()
            + self.fifo.capacity() * std::mem::size_of::<(i64, Offset)>()
    }

    pub fn slot(&self, offset: Offset) -> Option<Slot> {
        let i = offset.checked_sub(self.floor)?;
        self.window
            .get(usize::try_from(i).ok()?)
            .map(|p| p.unpack())
    }

    fn slot_mut(&mut self, offset: Offset) -> Option<&mut Packed> {
        let i = offset.checked_sub(self.floor)?;
        self.window.get_mut(usize::try_from(i).ok()?)
    }

    /// Marks `[next, to)` done (never delivered: compacted away, corrupt, deleted).
    pub fn skip_to(&mut self, to: Offset) {
        while self.next() < to {
            self.window.push_back(DONE);
        }
        self.advance_floor();
    }

    fn count(&mut self, slot: Slot, delta: isize) {
        if slot.state == SlotState::Waiting && slot.attempt == 0 && slot.deadline != i64::MAX {
            self.delayed = self.delayed.wrapping_add_signed(delta);
        }
        let c = match slot.state {
            SlotState::Leased => &mut self.leased,
            SlotState::Waiting => &mut self.waiting,
            SlotState::Done => return,
        };
        *c = c.wrapping_add_signed(delta);
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
            self.window.push_back(DONE);
        }
        let slot = self.slot_mut(offset).expect("inside the window");
        let old = std::mem::replace(
            slot,
            Packed::pack(Slot {
                deadline,
                attempt,
                state,
            }),
        )
        .unpack();
        self.count(old, -1);
        self.count(
            Slot {
                deadline,
                attempt,
                state,
            },
            1,
        );
        if state == SlotState::Done {
            self.advance_floor();
        } else {
            // Leases handed out by receive mostly come in (due, offset) order: those
            // go to a FIFO (O(1)), the rest to the heap.
            let due = self.due(Slot {
                deadline,
                attempt,
                state,
            });
            if self.fifo.back().is_none_or(|&b| b < (due, offset)) {
                self.fifo.push_back((due, offset));
            } else {
                self.heap.push(Reverse((due, offset)));
            }
            self.maybe_rebuild();
        }
    }

    fn advance_floor(&mut self) {
        while self.window.front().is_some_and(|s| s.is_done()) {
            self.window.pop_front();
            self.floor += 1;
        }
        if self.window.is_empty() && self.window.capacity() > 4096 {
            self.window.shrink_to(1024);
        }
    }

    fn maybe_rebuild(&mut self) {
        let live = self.leased + self.waiting;
        if self.heap.len() + self.fifo.len() > 2 * live + 1024 {
            self.rebuild();
        }
    }

    fn rebuild(&mut self) {
        let floor = self.floor;
        let entries: Vec<_> = self
            .window
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_done())
            .map(|(i, s)| Reverse((self.due(s.unpack()), floor + i as u64)))
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

    /// The earliest live deadline, if any.
    pub fn next_deadline(&mut self) -> Option<i64> {
        self.earliest().map(|((d, _), _)| d)
    }

    /// The slots that are not done, in offset order.
    pub fn pending(&self) -> impl Iterator<Item = (Offset, Slot)> + '_ {
        let floor = self.floor;
        self.window
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_done())
            .map(move |(i, s)| (floor + i as u64, s.unpack()))
    }

    /// After a restart: every lease becomes deliverable at once, attempts kept.
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
                backoff: std::mem::take(&mut self.backoff),
                ..AckState::new(end)
            };
        }
        while self.next() > end {
            let s = self.window.pop_back().expect("window above end").unpack();
            self.count(s, -1);
        }
        while self.floor < start {
            let Some(s) = self.window.pop_front().map(Packed::unpack) else {
                // Never delivered.
                self.skipped_by_retention += start - self.floor;
                self.floor = start;
                break;
            };
            if s.state != SlotState::Done {
                self.skipped_by_retention += 1;
            }
            self.count(s, -1);
            self.floor += 1;
        }
        self.advance_floor();
        self.maybe_rebuild();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_is_12_bytes_and_round_trips() {
        assert_eq!(std::mem::size_of::<Packed>(), 12);
        for (deadline, attempt, state) in [
            (i64::MIN, 0, SlotState::Waiting),
            (-5, 7, SlotState::Leased),
            (i64::MAX, MAX_ATTEMPT, SlotState::Leased),
            (1 << 40, 1, SlotState::Waiting),
        ] {
            let s = Slot {
                deadline,
                attempt,
                state,
            };
            assert_eq!(Packed::pack(s).unpack(), s);
        }
        assert!(DONE.is_done());
    }

    #[test]
    fn floor_follows_acks() {
        let mut s = AckState::new(10);
        for o in 10..15 {
            s.set(o, SlotState::Leased, 1, 100);
        }
        assert_eq!((s.floor, s.next(), s.leased()), (10, 15, 5));
        s.set(11, SlotState::Done, 1, 0);
        assert_eq!(s.floor, 10);
        s.set(10, SlotState::Done, 1, 0);
        assert_eq!(s.floor, 12);
        assert_eq!(s.pop_due(99), None);
        assert_eq!(s.pop_due(100).map(|(o, _)| o), Some(12));
        s.set(20, SlotState::Leased, 1, 5);
        assert_eq!(s.next(), 21);
        assert_eq!(s.slot(17).unwrap().state, SlotState::Done);
        s.clamp(0, 14);
        assert_eq!((s.floor, s.next(), s.leased()), (12, 14, 2));
        s.clamp(13, 14);
        assert_eq!((s.floor, s.next(), s.leased()), (13, 14, 1));
        assert_eq!(s.skipped_by_retention, 1);
        s.clamp(20, 30);
        assert_eq!((s.floor, s.next(), s.leased()), (20, 20, 0));
        assert_eq!(s.skipped_by_retention, 1 + 1 + 6);
        s.clamp(0, 5);
        assert_eq!((s.floor, s.next(), s.leased()), (5, 5, 0));
    }

    #[test]
    fn heap_is_rebuilt_when_stale() {
        let mut s = AckState::new(0);
        for o in 0..10_000 {
            s.set(o, SlotState::Leased, 1, 100);
            s.set(o, SlotState::Done, 1, 0);
        }
        assert!(s.heap_len() <= 1024 + 2, "{}", s.heap_len());
        assert_eq!(s.floor, 10_000);
    }
}
