//! The slots of `[floor, next)` as runs of dense slots with done gaps between them.
//!
//! A queue over a compacted log skips stretches of offsets that compaction removed
//! (`AckState::skip_to`). With nothing pending below, the floor just jumps; but with
//! one lease outstanding below a gap, a dense window needed a done slot for every
//! skipped offset: 12 bytes per offset of the gap, not per record (a lease stuck
//! below a 5,000,000-offset compacted stretch held 100 MB and the receive that
//! crossed it took 37 ms). Here a gap of at least [`GAP_RUN_MIN`] offsets starts a
//! new run instead, so the memory follows the records, not the offset span. Shorter
//! gaps are filled with done slots as before (cheaper than a run).
//!
//! Every offset in `[floor, next)` is either in a run (its slot) or in a gap (done).
//! The caller owns the floor and passes it in. The first run is a plain dense array
//! from the floor on, as the whole window was before: the common case (no gap)
//! costs one more branch per lookup.

use std::collections::VecDeque;

use super::{Packed, DONE};
use crate::Offset;

/// Gaps shorter than this are filled with done slots; longer ones start a new run.
pub(super) const GAP_RUN_MIN: u64 = 64;

/// Dense slots from `start` on (a run after a gap).
#[derive(Debug, Default)]
struct Run {
    start: Offset,
    slots: VecDeque<Packed>,
}

impl Run {
    fn end(&self) -> Offset {
        self.start + self.slots.len() as u64
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Window {
    /// The slots from the floor on, up to the first gap (to `next` when there is
    /// none). Empty only when `later` is empty too (an empty window), or inside a
    /// method.
    first: VecDeque<Packed>,
    /// The runs after gaps, in offset order, each starting at or after the end of
    /// the one before; only the last may be empty (a gap just skipped).
    later: VecDeque<Run>,
}

impl Window {
    /// The end of the window: `floor` when it holds nothing.
    #[inline]
    pub fn next(&self, floor: Offset) -> Offset {
        match self.later.back() {
            None => floor + self.first.len() as u64,
            Some(last) => last.end(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_empty() && self.later.is_empty()
    }

    /// Where the slot of `offset` (at or past the end of the first run) is in
    /// `later`; `None` for an offset in a gap.
    fn find_later(&self, offset: Offset) -> Option<(usize, usize)> {
        let k = self
            .later
            .partition_point(|r| r.start <= offset)
            .checked_sub(1)?;
        let run = &self.later[k];
        let i = usize::try_from(offset - run.start).ok()?;
        (i < run.slots.len()).then_some((k, i))
    }

    /// The slot of `offset` in `[floor, next)`: its own, or done in a gap.
    #[inline]
    pub fn get(&self, floor: Offset, offset: Offset) -> Option<Packed> {
        let i = usize::try_from(offset.checked_sub(floor)?).ok()?;
        match self.first.get(i) {
            Some(slot) => Some(*slot),
            None if self.later.is_empty() => None,
            None => self.get_later(floor, offset),
        }
    }

    /// [`Window::get`] past the first run (kept out of line: the common case has
    /// no gap, and this way the lookup inlines).
    #[cold]
    #[inline(never)]
    fn get_later(&self, floor: Offset, offset: Offset) -> Option<Packed> {
        if offset >= self.next(floor) {
            return None;
        }
        Some(match self.find_later(offset) {
            Some((k, i)) => self.later[k].slots[i],
            None => DONE,
        })
    }

    /// The slot of `offset` in `[floor, next)`, to change; an offset in a gap gets a
    /// slot of its own first (a run of one).
    #[inline]
    pub fn get_mut(&mut self, floor: Offset, offset: Offset) -> Option<&mut Packed> {
        let i = usize::try_from(offset.checked_sub(floor)?).ok()?;
        if i < self.first.len() {
            return self.first.get_mut(i);
        }
        if self.later.is_empty() {
            return None;
        }
        self.get_mut_later(floor, offset)
    }

    /// [`Window::get_mut`] past the first run, out of line.
    #[cold]
    #[inline(never)]
    fn get_mut_later(&mut self, floor: Offset, offset: Offset) -> Option<&mut Packed> {
        if offset >= self.next(floor) {
            return None;
        }
        let (k, i) = match self.find_later(offset) {
            Some(at) => at,
            None => {
                let k = self.later.partition_point(|r| r.start <= offset);
                let slots = VecDeque::from([DONE]);
                self.later.insert(
                    k,
                    Run {
                        start: offset,
                        slots,
                    },
                );
                (k, 0)
            }
        };
        self.later[k].slots.get_mut(i)
    }

    /// Appends one slot at `next`.
    #[inline]
    pub fn push(&mut self, slot: Packed) {
        match self.later.back_mut() {
            None => self.first.push_back(slot),
            Some(last) => last.slots.push_back(slot),
        }
    }

    /// Moves `next` up to `to` over done offsets. The window holds something (the
    /// caller jumps the floor when it does not).
    pub fn skip_to(&mut self, floor: Offset, to: Offset) {
        let next = self.next(floor);
        if to <= next {
            return;
        }
        if to - next < GAP_RUN_MIN {
            for _ in next..to {
                self.push(DONE);
            }
            return;
        }
        match self.later.back_mut() {
            Some(last) if last.slots.is_empty() => last.start = to,
            _ => self.later.push_back(Run {
                start: to,
                slots: VecDeque::new(),
            }),
        }
    }

    /// The first run is empty: the next one (after its gap, done) takes its place
    /// and the floor moves to its start. False when there is none.
    #[cold]
    fn promote(&mut self, floor: &mut Offset) -> bool {
        let Some(next) = self.later.pop_front() else {
            return false;
        };
        *floor = (*floor).max(next.start);
        self.first = next.slots;
        true
    }

    /// Drops done slots and gaps at the front, moving `floor` past them; stops at the
    /// first slot not done, or when the window is empty (the floor then at its end).
    #[inline]
    pub fn settle_front(&mut self, floor: &mut Offset) {
        loop {
            while self.first.front().is_some_and(|s| s.is_done()) {
                self.first.pop_front();
                *floor += 1;
            }
            if !self.first.is_empty() || self.later.is_empty() || !self.promote(floor) {
                return;
            }
        }
    }

    /// Moves `floor` up towards `to` over the front of the window, handing each
    /// slot it passes to `passed` (gaps are done: not handed over). Stops at `to`,
    /// or where the window ends (the offsets from there to `to` were never in it).
    pub fn drain_front(&mut self, floor: &mut Offset, to: Offset, mut passed: impl FnMut(Packed)) {
        while *floor < to {
            match self.first.pop_front() {
                Some(slot) => {
                    passed(slot);
                    *floor += 1;
                }
                None => match self.later.front() {
                    None => return,
                    Some(next) if next.start > to => {
                        // `to` lies in the gap before it: done, passed.
                        *floor = to;
                        return;
                    }
                    Some(_) => {
                        self.promote(floor);
                    }
                },
            }
        }
    }

    /// Drops every slot at or past `end`, handing each to `dropped`; the window then
    /// ends at `end` (offsets between the last slot kept and `end` are done), or
    /// where it ended before if that was lower.
    pub fn truncate(&mut self, floor: &mut Offset, end: Offset, mut dropped: impl FnMut(Packed)) {
        if self.next(*floor) <= end {
            return;
        }
        while let Some(last) = self.later.back_mut() {
            if last.start >= end {
                last.slots.drain(..).for_each(&mut dropped);
                self.later.pop_back();
                continue;
            }
            while last.end() > end {
                dropped(last.slots.pop_back().expect("a slot past the end"));
            }
            break;
        }
        if self.later.is_empty() {
            while self.next(*floor) > end {
                dropped(self.first.pop_back().expect("a slot past the end"));
            }
        }
        // A dense window popped its gap slots down to `end`: the same end here.
        if self.is_empty() {
            // Everything below `end` was a gap: done.
            *floor = (*floor).max(end);
        } else if self.next(*floor) < end {
            self.skip_to(*floor, end);
        }
    }

    /// The slots in offset order, with their offsets (gaps left out: all done).
    pub fn iter(&self, floor: Offset) -> impl Iterator<Item = (Offset, Packed)> + '_ {
        let first = self
            .first
            .iter()
            .enumerate()
            .map(move |(i, s)| (floor + i as u64, *s));
        let later = self.later.iter().flat_map(|r| {
            r.slots
                .iter()
                .enumerate()
                .map(move |(i, s)| (r.start + i as u64, *s))
        });
        first.chain(later)
    }

    /// Bytes of heap memory held.
    pub fn memory_bytes(&self) -> usize {
        let slots = |d: &VecDeque<Packed>| d.capacity() * std::mem::size_of::<Packed>();
        slots(&self.first)
            + self.later.capacity() * std::mem::size_of::<Run>()
            + self.later.iter().map(|r| slots(&r.slots)).sum::<usize>()
    }

    /// Gives memory back once the window is empty again.
    #[inline]
    pub fn shrink(&mut self) {
        if self.first.is_empty() && self.first.capacity() > 4096 {
            self.first.shrink_to(1024);
        }
        if self.later.is_empty() && self.later.capacity() > 64 {
            self.later.shrink_to(4);
        }
    }
}
