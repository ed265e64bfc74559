//! Finding batches in a segment: by offset, by time, in sequence; and stepping over
//! damaged bytes, which are recorded and reported, never silently skipped when they
//! could hold what was asked for.

use std::sync::Arc;

use super::{CorruptRange, Segment};
use crate::batch::{self, Batch, BatchError};
use crate::fs::Mapping;
use crate::index;
use crate::{Error, Offset, Result};

impl Segment {
    /// Records a corrupt stretch at `pos` and returns where the next valid batch starts
    /// (`None`: nothing valid follows).
    pub fn skip_corrupt(
        &self,
        bytes: &[u8],
        pos: usize,
        last_good: Option<Offset>,
        err: &BatchError,
    ) -> Option<usize> {
        let next = resync(bytes, pos, last_good);
        let range = CorruptRange {
            segment: self.base_offset,
            start_position: pos as u64,
            end_position: next.map_or(bytes.len(), |(p, _)| p) as u64,
            next_offset: next.map(|(_, o)| o),
            reason: err.to_string(),
        };
        self.note_corrupt(range);
        next.map(|(p, _)| p)
    }

    /// Records a corrupt range (once).
    pub fn note_corrupt(&self, range: CorruptRange) {
        let mut corrupt = self.corrupt.lock();
        if !corrupt.contains(&range) {
            crate::trace::event_error!(segment = range.segment, start = range.start_position, end = range.end_position, reason = %range.reason, "corrupt data in a segment");
            corrupt.push(range);
        }
    }

    /// Corrupt ranges found so far in this segment.
    pub fn corrupt_ranges(&self) -> Vec<CorruptRange> {
        self.corrupt.lock().clone()
    }

    /// Position of the last indexed batch at or before relative offset `rel`.
    fn index_floor(&self, rel: u32) -> Result<usize> {
        let guard = self.load()?;
        Ok(guard
            .as_ref()
            .expect("load() fills the slot")
            .indexes
            .floor_position(rel) as usize)
    }

    /// Finds the batch holding `offset`. `Ok(None)` when no batch holds it (a gap left
    /// by compaction, or past the end).
    pub fn find_batch(&self, offset: Offset) -> Result<Option<BatchRef>> {
        let Some(rel) = index::relative(self.base_offset, offset) else {
            return Ok(None);
        };
        let start = self.index_floor(rel)?;
        // The first batch whose last offset reaches `offset`; if it starts after
        // `offset`, the offset fell in a compaction gap and the caller finds no record.
        let found = self.scan_for(start, |_, last| last >= offset)?;
        self.check_gap(start, offset, found)
    }

    /// Finds the first batch at or after `offset` (for sequential readers).
    pub fn batch_at_or_after(&self, offset: Offset) -> Result<Option<BatchRef>> {
        let rel = index::relative(self.base_offset, offset).unwrap_or(0);
        let start = self.index_floor(rel)?;
        let found = self.scan_for(start, |_, last| last >= offset)?;
        self.check_gap(start, offset, found)
    }

    /// `offset` fell in a gap before `found` (or after the last batch). Compaction
    /// leaves gaps, but the batches skipped on the way from `start` were trusted by
    /// their headers alone: CRC-check them, so that a damaged header (a lowered last
    /// offset) is reported as corruption instead of being read as a gap.
    fn check_gap(
        &self,
        start: usize,
        offset: Offset,
        found: Option<BatchRef>,
    ) -> Result<Option<BatchRef>> {
        if found.as_ref().is_some_and(|b| b.base_offset <= offset) {
            return Ok(found);
        }
        let map = self.mapping()?;
        let end = usize::try_from(self.published()).expect("published bytes are mapped");
        let until = found.as_ref().map_or(end, |b| b.start);
        let bytes = map.bytes(0, end);
        let mut pos = start;
        let mut last_good = None;
        while pos < until {
            match batch::decode(&bytes[pos..end]) {
                Ok(b) => {
                    last_good = Some(b.last_offset());
                    pos += b.len();
                }
                Err(e) => {
                    let (next, next_base) =
                        self.skip_damaged(bytes, pos, last_good, &e, &|_, last| last >= offset)?;
                    pos = next;
                    last_good = next_base.checked_sub(1);
                }
            }
        }
        Ok(found)
    }

    /// Damaged bytes at `pos` met while looking for a wanted batch: where the search
    /// may go on, when the next valid batch shows that the damaged stretch cannot hold
    /// a wanted batch; otherwise the corruption error.
    fn skip_damaged(
        &self,
        bytes: &[u8],
        pos: usize,
        last_good: Option<Offset>,
        e: &BatchError,
        wanted: &impl Fn(Offset, Offset) -> bool,
    ) -> Result<(usize, Offset)> {
        if let Some(next) = self.skip_corrupt(bytes, pos, last_good, e) {
            if let Ok((_, next_base, _)) = batch::peek_offsets(&bytes[next..]) {
                let first_lost = last_good.map_or(self.base_offset, |l| l + 1);
                // The damaged bytes can only have held offsets first_lost..next_base:
                // none at all (a damaged length, say), or none that is wanted.
                if next_base == first_lost
                    || (next_base > first_lost && !wanted(first_lost, next_base - 1))
                {
                    return Ok((next, next_base));
                }
            }
        }
        Err(self.corrupt_error(bytes, pos, last_good, e))
    }

    /// Finds the first batch from which a scan for timestamp `ts` must start.
    pub fn batch_for_time(&self, ts: i64) -> Result<Option<BatchRef>> {
        let (start, rel) = {
            let guard = self.load()?;
            let idx = &guard.as_ref().expect("load() fills the slot").indexes;
            let rel = idx.scan_start_for_time(ts);
            (idx.floor_position(rel) as usize, rel)
        };
        let first = self.base_offset + u64::from(rel);
        self.scan_for(start, |_, last| last >= first)
    }

    /// The batch after `b` in this segment, if any.
    pub fn batch_after(&self, b: &BatchRef) -> Result<Option<BatchRef>> {
        self.scan_for(b.end_position(), |_, _| true)
    }

    /// From `pos`, the first batch for which `wanted(base, last)` holds, CRC-checked.
    /// Batches before it are skipped by their length without a CRC check. Damaged
    /// bytes are skipped (and recorded) only when they cannot hold a wanted batch.
    fn scan_for(
        &self,
        mut pos: usize,
        wanted: impl Fn(Offset, Offset) -> bool,
    ) -> Result<Option<BatchRef>> {
        let map = self.mapping()?;
        let end = usize::try_from(self.published()).expect("published bytes are mapped");
        let bytes = map.bytes(0, end);
        let bytes: &[u8] = bytes;
        let mut last_good = None;
        // The batch last skipped by its length alone (position, `last_good` before it):
        // if its length was damaged, the skip landed mid-data, and the damage is there.
        let mut skipped: Option<(usize, Option<Offset>)> = None;
        while pos < end {
            let step = batch::peek_offsets(&bytes[pos..]).and_then(|(len, base, last)| {
                if pos + len > end {
                    Err(BatchError::Truncated)
                } else {
                    Ok((len, base, last))
                }
            });
            let damage = match step {
                Ok((len, base, last)) if !wanted(base, last) => {
                    skipped = Some((pos, last_good));
                    last_good = Some(last);
                    pos += len;
                    continue;
                }
                Ok(_) => match batch::decode(&bytes[pos..end]) {
                    Ok(b) => {
                        let (len, base_offset) = (b.len(), b.base_offset);
                        return Ok(Some(BatchRef {
                            map: Arc::clone(&map),
                            start: pos,
                            end: pos + len,
                            base_offset,
                            last_offset: b.last_offset(),
                        }));
                    }
                    Err(e) => e,
                },
                Err(e) => e,
            };
            let (at, before) = match skipped.take() {
                Some((p, lg)) if batch::decode(&bytes[p..end]).is_err() => (p, lg),
                _ => (pos, last_good),
            };
            let (next, base) = self.skip_damaged(bytes, at, before, &damage, &wanted)?;
            (pos, last_good) = (next, base.checked_sub(1));
        }
        Ok(None)
    }

    fn corrupt_error(
        &self,
        bytes: &[u8],
        pos: usize,
        last_good: Option<Offset>,
        e: &BatchError,
    ) -> Error {
        let next = self.skip_corrupt(bytes, pos, last_good, e);
        Error::Corrupt {
            path: self.path(),
            position: pos as u64,
            offset: None,
            reason: format!(
                "{e}; next good batch at {}",
                next.map_or("the end of the segment".to_string(), |p| format!(
                    "byte {p}"
                ))
            ),
        }
    }
}

/// Finds the next position after `pos` where a complete, valid batch with offsets
/// above `last_good` starts. Tries the damaged batch's own length first.
fn resync(bytes: &[u8], pos: usize, last_good: Option<Offset>) -> Option<(usize, Offset)> {
    let valid_at = |p: usize| -> Option<Offset> {
        let b = batch::decode(bytes.get(p..)?).ok()?;
        if last_good.is_some_and(|l| b.base_offset <= l) {
            return None;
        }
        b.validate_records().ok()?;
        Some(b.base_offset)
    };
    if let Ok(len) = batch::peek_len(&bytes[pos..]) {
        if let Some(o) = pos
            .checked_add(len)
            .and_then(|p| valid_at(p).map(|o| (p, o)))
        {
            return Some(o);
        }
    }
    (pos + 1..bytes.len().saturating_sub(batch::HEADER_LEN - 1))
        .find_map(|p| valid_at(p).map(|o| (p, o)))
}

/// A CRC-checked batch, holding its segment's mapping alive.
#[derive(Clone, Debug)]
pub(crate) struct BatchRef {
    map: Arc<dyn Mapping>,
    start: usize,
    end: usize,
    pub base_offset: Offset,
    /// `batch().last_offset()`, kept so sequential readers need not re-parse the header.
    pub last_offset: Offset,
}

impl BatchRef {
    /// A batch of `map` at `start` that `batch::decode` accepted (CRC-checked).
    pub fn checked(map: &Arc<dyn Mapping>, start: usize, b: &Batch<'_>) -> BatchRef {
        BatchRef {
            map: Arc::clone(map),
            start,
            end: start + b.len(),
            base_offset: b.base_offset,
            last_offset: b.last_offset(),
        }
    }

    /// Makes this the batch of `len` bytes at `start` of the same mapping, with
    /// offsets `base_offset..=last_offset` (CRC-checked by `batch::decode`), keeping
    /// the mapping's reference.
    pub fn move_to(&mut self, start: usize, len: usize, base_offset: Offset, last_offset: Offset) {
        self.start = start;
        self.end = start + len;
        self.base_offset = base_offset;
        self.last_offset = last_offset;
    }

    /// The mapping of the segment holding the batch.
    pub fn map(&self) -> &Arc<dyn Mapping> {
        &self.map
    }

    pub fn batch(&self) -> Batch<'_> {
        batch::decode_checked(self.map.bytes(self.start, self.end))
            .expect("BatchRef is only built from a batch that decoded")
    }

    pub fn position(&self) -> u64 {
        self.start as u64
    }

    /// Byte position just after this batch.
    pub fn end_position(&self) -> usize {
        self.end
    }
}
