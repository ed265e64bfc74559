//! The record-level work of a cleaning pass: the key map (pass one), which records of
//! a batch stay (pass two), and where tombstone horizons come due.

use std::sync::Arc;

use super::{GroupOutcome, Throttle};
use crate::batch::{self, Batch, BatchMeta};
use crate::fs::FileHandle;
use crate::index::{self, Indexes};
use crate::offset_map::{KeyHash, OffsetMap};
use crate::segment::Segment;
use crate::segment::SegmentMeta;
use crate::{Error, Offset, Result};

/// The cleaned segment being written: buffered bytes, their indexes and metadata, and
/// how far the group's offsets reach.
pub(super) struct CleanedOut {
    base: Offset,
    /// Batches not yet written to the file.
    pub bytes: Vec<u8>,
    /// Bytes already written to the file.
    pub written: u64,
    pub indexes: Indexes,
    pub meta: SegmentMeta,
    interval: u64,
    since_index: u64,
    /// Offset after the last batch read from the group, kept or not.
    read_end: Offset,
    /// Largest append time and record timestamp of the batches read after the last
    /// one written.
    dropped_append_time: i64,
    dropped_max_timestamp: i64,
}

impl CleanedOut {
    pub fn new(base: Offset, interval: u64) -> CleanedOut {
        CleanedOut {
            base,
            bytes: Vec::with_capacity(super::WRITE_CHUNK + (64 << 10)),
            written: 0,
            indexes: Indexes::default(),
            meta: SegmentMeta::EMPTY,
            interval,
            since_index: u64::MAX,
            read_end: base,
            dropped_append_time: i64::MIN,
            dropped_max_timestamp: i64::MIN,
        }
    }

    /// Notes a batch read from the group (before deciding what of it stays).
    pub fn saw(&mut self, b: &Batch<'_>) {
        self.read_end = b.last_offset() + 1;
        self.dropped_append_time = self.dropped_append_time.max(b.append_time);
        self.dropped_max_timestamp = self.dropped_max_timestamp.max(b.max_timestamp);
    }

    /// Indexes the batch just appended at `bytes[start..]`; returns its delete horizon.
    pub fn wrote(&mut self, start: usize, path: &std::path::Path) -> Result<Option<i64>> {
        let position = self.written + start as u64;
        let nb = batch::decode_checked(&self.bytes[start..])
            .map_err(|e| Error::corrupt(path, position, None, e.to_string()))?;
        if self.since_index >= self.interval {
            let rel = index::relative(self.base, nb.base_offset)
                .expect("groups keep relative offsets in u32");
            let p = u32::try_from(position).expect("groups fit u32 positions");
            self.indexes.push(rel, p, self.meta.max_timestamp);
            self.since_index = 0;
        }
        self.since_index = self.since_index.saturating_add(nb.len() as u64);
        self.meta.add_batch(&nb);
        self.dropped_append_time = i64::MIN;
        self.dropped_max_timestamp = i64::MIN;
        Ok(nb.delete_horizon)
    }

    /// When the last batches read were all removed, writes an empty batch over their
    /// offsets: the segment must still say where its offsets end, or the next open
    /// and `verify` would take the missing tail for lost data.
    pub fn end_marker(&mut self, path: &std::path::Path) -> Result<()> {
        let kept_end = self.meta.last_offset.map_or(self.base, |o| o + 1);
        if self.read_end <= kept_end {
            return Ok(());
        }
        let last_offset_delta = u32::try_from(self.read_end - 1 - kept_end).map_err(|_| {
            Error::corrupt(
                path,
                self.written,
                None,
                "batch offsets outside the segment",
            )
        })?;
        let start = self.bytes.len();
        batch::encode_empty(
            &mut self.bytes,
            BatchMeta {
                base_offset: kept_end,
                last_offset_delta,
                append_time: self.dropped_append_time,
                delete_horizon: None,
            },
            self.dropped_max_timestamp,
        );
        self.wrote(start, path).map(|_| ())
    }

    /// Writes the buffered bytes to the file.
    pub fn flush(&mut self, file: &dyn FileHandle, path: &std::path::Path) -> Result<()> {
        if self.bytes.is_empty() {
            return Ok(());
        }
        file.write_all_at(&self.bytes, self.written)
            .map_err(|e| Error::io("write cleaned segment", path, e))?;
        self.written += self.bytes.len() as u64;
        self.bytes.clear();
        Ok(())
    }
}

pub(super) fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Decides which records of `b` stay (into `keep`) and returns the batch's delete
/// horizon after cleaning; `None` when a record does not decode.
pub(super) fn judge_batch(
    b: &Batch<'_>,
    map: &OffsetMap,
    map_end: Offset,
    now: i64,
    horizon: i64,
    keep: &mut Vec<bool>,
    outcome: &mut GroupOutcome,
) -> Option<Option<i64>> {
    keep.clear();
    let expired = b.delete_horizon.is_some_and(|h| h <= now);
    let mut kept_tombstone_below_map_end = false;
    let mut kept_tombstone = false;
    for r in b.records() {
        let v = r.ok()?;
        let k = match v.key {
            Some(key) if v.offset < map_end => {
                if map
                    .get(KeyHash::of(key))
                    .is_some_and(|newest| newest > v.offset)
                {
                    outcome.records_removed += 1;
                    false
                } else if v.value.is_none() && expired {
                    outcome.tombstones_removed += 1;
                    false
                } else {
                    true
                }
            }
            Some(_) if v.value.is_none() && expired => {
                outcome.tombstones_removed += 1;
                false
            }
            _ => true,
        };
        if k && v.value.is_none() {
            kept_tombstone = true;
            kept_tombstone_below_map_end |= v.offset < map_end;
        }
        keep.push(k);
    }
    let h = match b.delete_horizon {
        Some(h) if kept_tombstone => Some(h),
        Some(_) => None,
        None if kept_tombstone_below_map_end && b.last_offset() < map_end => Some(horizon),
        None => None,
    };
    Some(h)
}

/// Pass one: newest offset per key of the dirty records (`from` on) of `segs`. Returns
/// the map and the offset where it stopped (the end of `segs` unless it filled up or
/// met bytes that do not decode).
pub(super) fn build_map(
    segs: &[Arc<Segment>],
    from: Offset,
    budget: usize,
    throttle: &mut Throttle<'_>,
) -> Result<(OffsetMap, Offset)> {
    let end = segs.last().map_or(from, |s| s.next_offset());
    let dirty: Vec<&Arc<Segment>> = segs.iter().filter(|s| s.next_offset() > from).collect();
    // No record is smaller than 8 bytes: a bound on the keys, to size the map.
    let dirty_bytes: u64 = dirty.iter().map(|s| s.published()).sum();
    let mut map = OffsetMap::new(
        budget,
        usize::try_from(dirty_bytes / 8).unwrap_or(usize::MAX),
    );
    for seg in dirty {
        let Ok(m) = seg.mapping() else {
            return Ok((map, seg.base_offset.max(from)));
        };
        let len = usize::try_from(seg.published()).expect("mapped, so it fits usize");
        let bytes = m.bytes(0, len);
        let mut pos = 0;
        while pos < len {
            let Ok(b) = batch::decode(&bytes[pos..]) else {
                return Ok((map, seg.base_offset.max(from)));
            };
            pos += b.len();
            throttle.add(b.len() as u64)?;
            if b.last_offset() < from {
                continue;
            }
            for r in b.records() {
                let Ok(v) = r else {
                    return Ok((map, seg.base_offset.max(from)));
                };
                if v.offset < from {
                    continue;
                }
                if let Some(key) = v.key {
                    if !map.insert(KeyHash::of(key), v.offset) {
                        return Ok((map, v.offset));
                    }
                }
            }
        }
    }
    Ok((map, end))
}

/// Earliest delete horizon of a batch in the cleaned part (`below`) of `segs` that
/// holds a horizon (only batches with kept tombstones get one).
pub(super) fn scan_tombstone_horizons(segs: &[Arc<Segment>], below: Offset) -> Result<Option<i64>> {
    let mut due = None;
    for seg in segs.iter().filter(|s| s.base_offset < below) {
        let m = seg.mapping()?;
        let len = usize::try_from(seg.published()).expect("mapped, so it fits usize");
        let bytes = m.bytes(0, len);
        let mut pos = 0;
        while pos < len {
            let Ok(b) = batch::decode(&bytes[pos..]) else {
                break;
            };
            pos += b.len();
            due = min_opt(due, b.delete_horizon);
        }
    }
    Ok(due)
}
