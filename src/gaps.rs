//! Offsets missing from the log: a segment file lost or cut short.
//!
//! A log's segments cover its offsets without a hole: each segment holds every offset
//! from its base (its file name) to its successor's base, some of them perhaps removed
//! by compaction, which keeps a batch header (an empty batch at the end, if need be)
//! over the offsets it removed. So a segment whose last batch ends before its
//! successor's base, or a first segment based above the start offset, means records
//! were lost. Reads and readers report such a gap as [`Error::Corrupt`] and
//! `verify()` lists it: it is never taken for a compaction gap.

use std::sync::Arc;

use crate::segment::{CorruptRange, Segment};
use crate::{Error, Offset, Result};

/// Offsets `from..to` are missing: after the last batch of `segment`, or before it
/// when it is the first segment and based above the start offset.
#[derive(Clone, Debug)]
pub(crate) struct Gap {
    pub from: Offset,
    pub to: Offset,
    pub segment: Arc<Segment>,
    /// The gap lies before `segment` (below the first segment), not after it.
    pub before: bool,
}

impl Gap {
    fn range(&self) -> CorruptRange {
        let position = if self.before {
            0
        } else {
            self.segment.published()
        };
        let reason = if self.before {
            format!(
                "offsets {}..{} are missing: the log starts at {} but its first segment at {} \
                 (a segment file was lost)",
                self.from, self.to, self.from, self.to
            )
        } else {
            format!(
                "offsets {}..{} are missing: the segment's last batch ends at {} but the next \
                 segment starts at {} (a segment file was lost or cut short)",
                self.from, self.to, self.from, self.to
            )
        };
        CorruptRange {
            segment: self.segment.base_offset,
            start_position: position,
            end_position: position,
            next_offset: Some(self.to),
            reason,
        }
    }

    /// Records the gap with its segment's corrupt ranges (for `verify` and stats) and
    /// returns the error a read of `offset` in it gets.
    pub fn report(&self, offset: Offset) -> Error {
        let range = self.range();
        self.segment.note_corrupt(range.clone());
        Error::corrupt(
            self.segment.path(),
            range.start_position,
            Some(offset),
            range.reason,
        )
    }
}

/// The gap holding `offset` (at or above the start offset `start`), if offsets are
/// missing there.
pub(crate) fn gap_at(
    segments: &[Arc<Segment>],
    start: Offset,
    offset: Offset,
) -> Result<Option<Gap>> {
    let i = segments.partition_point(|s| s.base_offset <= offset);
    let Some(i) = i.checked_sub(1) else {
        return Ok(segments.first().and_then(|first| leading_gap(first, start)));
    };
    let gap = gap_after(segments, i, start)?;
    Ok(gap.filter(|g| g.from <= offset && offset < g.to))
}

/// The gap right after `segments[i]`, if any (never after the last segment).
pub(crate) fn gap_after(segments: &[Arc<Segment>], i: usize, start: Offset) -> Result<Option<Gap>> {
    let Some(next) = segments.get(i + 1) else {
        return Ok(None);
    };
    let segment = &segments[i];
    let from = segment.content_end()?.max(start);
    Ok((from < next.base_offset).then(|| Gap {
        from,
        to: next.base_offset,
        segment: Arc::clone(segment),
        before: false,
    }))
}

/// Offsets from the start offset to the first segment's base.
pub(crate) fn leading_gap(first: &Arc<Segment>, start: Offset) -> Option<Gap> {
    (start < first.base_offset).then(|| Gap {
        from: start,
        to: first.base_offset,
        segment: Arc::clone(first),
        before: true,
    })
}

/// Records every gap at or above `start` with its segment's corrupt ranges.
pub(crate) fn note_all(segments: &[Arc<Segment>], start: Offset) -> Result<()> {
    if let Some(g) = segments.first().and_then(|f| leading_gap(f, start)) {
        g.segment.note_corrupt(g.range());
    }
    for i in 0..segments.len() {
        if segments[i].next_offset() <= start {
            continue;
        }
        if let Some(g) = gap_after(segments, i, start)? {
            g.segment.note_corrupt(g.range());
        }
    }
    Ok(())
}
