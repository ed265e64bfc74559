//! [`LogReader`]: sequential reading, owned or zero-copy, and tailing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batch::{self, RecordView};
use crate::gaps;
use crate::log::Log;
use crate::segment::{BatchRef, Segment};
use crate::{Error, Offset, Result, StoredRecord};

/// Reads a log in offset order from a position. As an [`Iterator`] it yields owned
/// records and ends at the current end of the log; [`LogReader::next_blocking`] waits
/// for more. [`LogReader::next_batch`] and [`LogReader::read_views`] read without
/// copying, straight from the memory-mapped segment.
///
/// A corrupt stretch of durable data is reported once, as an `Err` item
/// ([`crate::Error::Corrupt`]); the reader then goes on with the first record after it.
///
/// ```
/// use logqueue::{Log, LogConfig, Record};
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
/// log.append_batch(vec![Record::new("a"), Record::new("b")]).unwrap();
/// let values: Vec<_> = log.reader(0).unwrap().map(|r| r.unwrap().value.unwrap()).collect();
/// assert_eq!(values, vec![b"a".to_vec(), b"b".to_vec()]);
/// let mut total = 0;
/// log.reader(0).unwrap().read_views(usize::MAX, |v| total += v.value.unwrap().len()).unwrap();
/// assert_eq!(total, 2);
/// ```
#[derive(Debug)]
pub struct LogReader {
    log: Log,
    /// Next offset to hand out.
    position: Offset,
    /// The batch last returned, to continue from without an index lookup.
    last: Option<(Arc<Segment>, BatchRef)>,
    pending: VecDeque<StoredRecord>,
    /// Offset after the batch whose records are in `pending`.
    pending_end: Offset,
    /// A CRC hasher to clone per batch, made once (making one detects CPU features).
    crc: crc32fast::Hasher,
}

/// One batch read in place: its records borrow the segment's memory map.
#[derive(Debug, Clone)]
pub struct RecordBatch {
    segment: Arc<Segment>,
    batch: BatchRef,
    from: Offset,
}

impl RecordBatch {
    /// Offset of the batch's first record slot.
    pub fn base_offset(&self) -> Offset {
        self.batch.base_offset
    }

    /// Offset of the batch's last record slot.
    pub fn last_offset(&self) -> Offset {
        self.batch.last_offset
    }

    /// The batch's fixed header as stored: where it is and what it says.
    pub fn header(&self) -> BatchHeader {
        let b = self.batch.batch();
        BatchHeader {
            segment: self.segment.base_offset,
            position: self.batch.position(),
            size_bytes: b.len() as u64,
            crc: u32::from_le_bytes(
                b.bytes[4..8]
                    .try_into()
                    .expect("a decoded batch has a header"),
            ),
            base_offset: b.base_offset,
            last_offset: b.last_offset(),
            record_count: b.record_count,
            first_timestamp: b.first_timestamp,
            max_timestamp: b.max_timestamp,
            append_time: b.append_time,
            delete_horizon: b.delete_horizon,
        }
    }

    /// The records at or after the reader's position, decoded in place.
    pub fn records(&self) -> impl Iterator<Item = Result<RecordView<'_>>> + '_ {
        let from = self.from;
        let position = self.batch.position();
        self.batch
            .batch()
            .records()
            .map(move |r| {
                r.map_err(|e| Error::corrupt(self.segment.path(), position, None, e.to_string()))
            })
            .filter(move |r| r.as_ref().map_or(true, |v| v.offset >= from))
    }
}

/// The header of a batch as stored (see `docs/format.md`), from
/// [`RecordBatch::header`]: for inspection tools.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchHeader {
    /// Base offset of the segment holding the batch.
    pub segment: Offset,
    /// Byte position of the batch in the segment's `.log` file.
    pub position: u64,
    /// Bytes of the batch, header included.
    pub size_bytes: u64,
    /// The stored CRC-32 (IEEE) of every byte after the CRC field (checked when read).
    pub crc: u32,
    /// Offset of the first record slot.
    pub base_offset: Offset,
    /// Offset of the last record slot.
    pub last_offset: Offset,
    /// Records in the batch (compaction may leave fewer than the slots).
    pub record_count: u32,
    /// Timestamp of the first record.
    pub first_timestamp: i64,
    /// Largest record timestamp.
    pub max_timestamp: i64,
    /// The log clock when the batch was appended.
    pub append_time: i64,
    /// Set by compaction: tombstones may be dropped after this time.
    pub delete_horizon: Option<i64>,
}

impl LogReader {
    pub(crate) fn new(log: Log, from: Offset) -> LogReader {
        LogReader {
            log,
            position: from,
            last: None,
            pending: VecDeque::new(),
            pending_end: from,
            crc: crc32fast::Hasher::new(),
        }
    }

    /// The offset of the next record this reader returns (or the next to be appended).
    pub fn position(&self) -> Offset {
        self.pending.front().map_or(self.position, |r| r.offset)
    }

    /// Moves the reader to `offset`. Below the start offset is
    /// [`Error::OffsetOutOfRange`].
    pub fn seek(&mut self, offset: Offset) -> Result<()> {
        self.log.inner.check_open()?;
        let start = self.log.start_offset();
        if offset < start {
            return Err(Error::OffsetOutOfRange {
                offset,
                start,
                end: self.log.end_offset(),
            });
        }
        self.position = offset;
        self.pending.clear();
        self.last = None;
        Ok(())
    }

    /// The next record, waiting up to `timeout` for one to be appended.
    /// `Ok(None)` when none came in time.
    pub fn next_blocking(&mut self, timeout: Duration) -> Result<Option<StoredRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.next() {
                return r.map(Some);
            }
            let inner = &self.log.inner;
            let position = self.position;
            let ready = match &inner.read_only {
                // No writer in this process to signal appends: poll the files.
                Some(view) => view.poll_until(inner, deadline, || {
                    inner.is_closed() || self.log.end_offset() > position
                })?,
                None => inner.appended.wait_until(deadline, || {
                    inner.is_closed() || self.log.end_offset() > position
                }),
            };
            inner.check_open()?;
            if !ready {
                return Ok(None);
            }
        }
    }

    /// The next batch, read in place. Records before the reader's position are
    /// skipped by [`RecordBatch::records`]. `Ok(None)` at the end of the log.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let position = LogReader::position(self);
        self.pending.clear();
        self.position = position;
        let Some((segment, found)) = self.advance()? else {
            return Ok(None);
        };
        let from = self.position;
        self.position = found.last_offset + 1;
        self.last = Some((Arc::clone(&segment), found.clone()));
        Ok(Some(RecordBatch {
            segment,
            batch: found,
            from,
        }))
    }

    /// Calls `f` on up to `max` records in order, decoded in place from the memory
    /// map (no copy, no allocation); returns how many. The fastest way to consume.
    pub fn read_views(&mut self, max: usize, mut f: impl FnMut(RecordView<'_>)) -> Result<usize> {
        self.views(max, false, Offset::MAX, |view, _| f(view))
    }

    /// [`LogReader::read_views`] that also hands `f` the append time of each record's
    /// batch (the log clock when it was appended).
    pub(crate) fn read_views_with_append_time(
        &mut self,
        max: usize,
        f: impl FnMut(RecordView<'_>, i64),
    ) -> Result<usize> {
        self.views(max, false, Offset::MAX, f)
    }

    /// [`LogReader::read_views`] that never stops in the middle of a batch: once
    /// `max` records are reached it goes on to the end of the batch (so up to one
    /// batch's records more). Resuming in the middle of a batch checks the whole
    /// batch's CRC again and decodes the records before the resume point: a reader
    /// read in chunks smaller than the batches paid that once per chunk.
    ///
    /// Nothing at or past offset `limit` is read: the reader stops there, even
    /// mid-batch (a lane's block ends there; decoding the rest of the batch would be
    /// decoding another lane's records).
    pub(crate) fn read_views_whole_batches(
        &mut self,
        max: usize,
        limit: Offset,
        mut f: impl FnMut(RecordView<'_>),
    ) -> Result<usize> {
        self.views(max, true, limit, |view, _| f(view))
    }

    fn views(
        &mut self,
        max: usize,
        whole: bool,
        limit: Offset,
        mut f: impl FnMut(RecordView<'_>, i64),
    ) -> Result<usize> {
        // How many more records a batch may hand out.
        let room = |count: usize| if whole { usize::MAX } else { max - count };
        let mut count = 0;
        while count < max && self.position < limit {
            // The general path: checks, segment and index lookups, corruption handling.
            let Some(batch) = self.next_batch()? else {
                break;
            };
            let b = batch.batch.batch();
            let (n, stopped_at) =
                emit_views(&b, batch.from, room(count), limit, &mut f).map_err(|e| {
                    Error::corrupt(
                        batch.segment.path(),
                        batch.batch.position(),
                        None,
                        e.to_string(),
                    )
                })?;
            count += n;
            if let Some(next) = stopped_at {
                self.stop_inside(next, b.last_offset());
                break;
            }
            if count >= max {
                break;
            }
            // The fast path: the batches that follow in the same segment.
            count += self.views_in_segment(max - count, whole, limit, &mut f)?;
        }
        Ok(count)
    }

    /// Stopped before handing out `next` (by the count or the limit) in a batch ending
    /// at `last_offset`: resume there, even mid-batch.
    fn stop_inside(&mut self, next: Offset, last_offset: Offset) {
        if next <= last_offset {
            self.position = next;
            self.last = None;
        }
    }

    /// Hands `f` the records of the batches following the last one read, in place in
    /// its segment, up to `max`: no per-batch lookups or reference counting. The
    /// reader's state (closed, start offset, retired segment) was checked for the
    /// batch before; every batch is still CRC-checked. Stops at the segment's
    /// published end or at anything unexpected, which the general path then handles
    /// (and reports, for damaged bytes).
    fn views_in_segment(
        &mut self,
        max: usize,
        whole: bool,
        limit: Offset,
        f: &mut impl FnMut(RecordView<'_>, i64),
    ) -> Result<usize> {
        let Some((segment, prev)) = self.last.take() else {
            return Ok(0);
        };
        if prev.last_offset + 1 != self.position {
            self.last = Some((segment, prev));
            return Ok(0);
        }
        let map = prev.map();
        let mut pos = prev.end_position();
        let mut end = pos;
        // The segment's published bytes, re-read when the loop reaches their end.
        let mut bytes: &[u8] = &[];
        let crc = &self.crc;
        let mut count = 0;
        // The last batch handed out: (start, its header).
        let mut last_batch = None;
        // At the limit, stop before checking the next batch's CRC for nothing.
        while count < max && self.position < limit {
            if pos >= end {
                end = usize::try_from(segment.published()).expect("published bytes are mapped");
                if pos >= end {
                    break;
                }
                bytes = map.bytes(0, end);
            }
            let Ok(b) = batch::decode_with(&bytes[pos..], crc) else {
                break;
            };
            let from = self.position;
            if b.last_offset() < from {
                break;
            }
            let room = if whole { usize::MAX } else { max - count };
            match emit_views(&b, from, room, limit, f) {
                Ok((n, stopped_at)) => {
                    count += n;
                    self.position = b.last_offset() + 1;
                    last_batch = Some((pos, b));
                    if stopped_at.is_some() || count >= max {
                        self.last = Some((segment, BatchRef::checked(map, pos, &b)));
                        if let Some(next) = stopped_at {
                            self.stop_inside(next, b.last_offset());
                        }
                        return Ok(count);
                    }
                }
                Err(e) => {
                    // Reported once: the next read goes on after this batch.
                    self.position = b.last_offset() + 1;
                    let err = Error::corrupt(segment.path(), pos as u64, None, e.to_string());
                    self.last = Some((segment, BatchRef::checked(map, pos, &b)));
                    return Err(err);
                }
            }
            pos += b.len();
        }
        let last = match last_batch {
            Some((start, b)) => BatchRef::checked(map, start, &b),
            None => prev.clone(),
        };
        self.last = Some((segment, last));
        Ok(count)
    }

    /// Finds the first batch holding an offset at or after `self.position`. After a
    /// corrupt stretch is reported, the reader is moved past it.
    fn advance(&mut self) -> Result<Option<(Arc<Segment>, BatchRef)>> {
        let found = self.find_next();
        if let Err(Error::Corrupt { path, position, .. }) = &found {
            self.skip_corruption(path, *position);
        }
        found
    }

    /// Moves past the corrupt stretch starting at byte `position` of segment file
    /// `path`, to the first offset after it (the segment's end when nothing valid
    /// follows), so the next read goes on with the good data after it.
    fn skip_corruption(&mut self, path: &std::path::Path, position: u64) {
        let segments = self.log.inner.snapshot();
        let Some(segment) = segments.iter().find(|s| s.path() == path) else {
            return;
        };
        let Some(range) = segment
            .corrupt_ranges()
            .into_iter()
            .find(|r| r.start_position == position)
        else {
            return;
        };
        let next = range.next_offset.unwrap_or_else(|| segment.next_offset());
        self.position = self.position.max(next);
        self.pending.clear();
        self.last = None;
    }

    fn find_next(&mut self) -> Result<Option<(Arc<Segment>, BatchRef)>> {
        let inner = &self.log.inner;
        inner.check_open()?;
        if self.position >= self.log.end_offset() {
            inner.refresh_view_soon()?;
        }
        let start = self.log.start_offset();
        if self.position < start {
            return Err(Error::OffsetOutOfRange {
                offset: self.position,
                start,
                end: self.log.end_offset(),
            });
        }
        // Sequential: continue right after the last batch, no index lookup.
        if let Some((segment, prev)) = &self.last {
            if prev.last_offset + 1 == self.position
                && !segment.retired.load(std::sync::atomic::Ordering::Acquire)
            {
                if let Some(b) = segment.batch_after(prev)? {
                    return Ok(Some((Arc::clone(segment), b)));
                }
            }
        }
        // Bounded by the number of segments: each round moves to a later one.
        for _ in 0..=inner.snapshot().len() {
            if self.position >= self.log.end_offset() {
                return Ok(None);
            }
            let segments = inner.snapshot();
            let i = segments.partition_point(|s| s.base_offset <= self.position);
            let Some(i) = i.checked_sub(1) else {
                // Below the first segment: offsets missing there are reported once.
                return match segments.first().and_then(|f| gaps::leading_gap(f, start)) {
                    Some(gap) => Err(self.step_over(&gap)),
                    None => Ok(None),
                };
            };
            let segment = &segments[i];
            if let Some(b) = segment.batch_at_or_after(self.position)? {
                return Ok(Some((Arc::clone(segment), b)));
            }
            // Nothing left in this segment: offsets missing before the next one are
            // reported once; then on to the next one.
            if let Some(gap) = gaps::gap_after(&segments, i, start)? {
                if self.position < gap.to {
                    return Err(self.step_over(&gap));
                }
            }
            match segments.get(i + 1) {
                Some(next) => self.position = self.position.max(next.base_offset),
                None => return Ok(None),
            }
        }
        Ok(None)
    }
}

impl LogReader {
    /// Moves past a gap of missing offsets; the error reporting it.
    fn step_over(&mut self, gap: &gaps::Gap) -> Error {
        let err = gap.report(self.position.max(gap.from));
        self.position = self.position.max(gap.to);
        self.pending.clear();
        self.last = None;
        err
    }
}

impl Iterator for LogReader {
    type Item = Result<StoredRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.pending.pop_front() {
                self.position = if self.pending.is_empty() {
                    self.pending_end
                } else {
                    r.offset + 1
                };
                return Some(Ok(r));
            }
            match self.next_in_place() {
                Some(Some(r)) => return Some(r),
                Some(None) => continue,
                None => {}
            }
            let (segment, found) = match self.advance() {
                Ok(Some(x)) => x,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            };
            let b = found.batch();
            for record in b.records_from(self.position) {
                match record {
                    Ok(v) => self.pending.push_back(v.to_owned_record()),
                    Err(e) => {
                        self.pending.clear();
                        // Reported once: the next call goes on after this batch.
                        self.position = self.position.max(b.last_offset() + 1);
                        self.last = None;
                        return Some(Err(Error::corrupt(
                            segment.path(),
                            found.position(),
                            None,
                            e.to_string(),
                        )));
                    }
                }
            }
            self.pending_end = b.last_offset() + 1;
            if self.pending.is_empty() {
                // Never backwards: a damaged segment can hold a batch of earlier
                // offsets after later ones (`verify` reports it); its records were
                // all below the position and none was taken.
                self.position = self.position.max(self.pending_end);
            }
            self.last = Some((segment, found));
        }
    }
}

impl LogReader {
    /// The iterator's fast path: decodes the batch right after the last one read, in
    /// place in its segment, without lookups or reference counting, and returns its
    /// first record (the others go to `pending`). `None` when the general path must
    /// run (no last batch, a seek, the segment's end, damaged bytes, a closed log,
    /// the position below the start); `Some(None)` when the batch held no record at
    /// or after the position. The batch is CRC-checked as on the general path.
    fn next_in_place(&mut self) -> Option<Option<Result<StoredRecord>>> {
        let (segment, prev) = self.last.as_ref()?;
        if prev.last_offset + 1 != self.position
            || segment.retired.load(std::sync::atomic::Ordering::Acquire)
            || self.log.inner.is_closed()
            || self.position < self.log.start_offset()
        {
            return None;
        }
        let pos = prev.end_position();
        let end = usize::try_from(segment.published()).ok()?;
        if pos >= end {
            return None;
        }
        let b = batch::decode_with(prev.map().bytes(pos, end), &self.crc).ok()?;
        if b.last_offset() < self.position {
            return None;
        }
        let from = self.position;
        let mut first = None;
        for record in b.records_from(from) {
            match record {
                Ok(v) => {
                    if first.is_none() {
                        first = Some(v.to_owned_record());
                    } else {
                        self.pending.push_back(v.to_owned_record());
                    }
                }
                Err(e) => {
                    self.pending.clear();
                    // Reported once: the next call goes on after this batch.
                    self.position = self.position.max(b.last_offset() + 1);
                    let err = Error::corrupt(segment.path(), pos as u64, None, e.to_string());
                    self.last = None;
                    return Some(Some(Err(err)));
                }
            }
        }
        let (len, base, last) = (b.len(), b.base_offset, b.last_offset());
        self.pending_end = last + 1;
        let (_, prev) = self.last.as_mut().expect("checked above");
        prev.move_to(pos, len, base, last);
        self.position = match &first {
            Some(r) if !self.pending.is_empty() => r.offset + 1,
            _ => self.pending_end,
        };
        Some(first.map(Ok))
    }
}

/// Calls `f` on the records of `b` at or after `from` and below `limit`, at most
/// `max`; returns how many, and, if it stopped before the end of the batch (at
/// `max` or at `limit`), the offset to resume at.
#[inline]
fn emit_views(
    b: &batch::Batch<'_>,
    from: Offset,
    max: usize,
    limit: Offset,
    f: &mut impl FnMut(RecordView<'_>, i64),
) -> std::result::Result<(usize, Option<Offset>), batch::BatchError> {
    let mut count = 0;
    // Not `records_from`: its chain adds a branch to every record of this hot loop.
    let mut records = b.records();
    records.skip_before(from)?;
    for record in records {
        let record = record?;
        debug_assert!(record.offset >= from);
        if record.offset >= limit {
            return Ok((count, Some(limit)));
        }
        let next = record.offset + 1;
        f(record, b.append_time);
        count += 1;
        if count == max {
            return Ok((count, Some(next)));
        }
    }
    Ok((count, None))
}

/// Decodes a batch from raw bytes and checks every record: for fuzzing the decoder.
#[doc(hidden)]
pub fn fuzz_decode_batch(bytes: &[u8]) -> usize {
    match batch::decode(bytes) {
        Ok(b) => b.records().filter(|r| r.is_ok()).count(),
        Err(_) => 0,
    }
}

/// For fuzzing the resume path: whether a reader resuming inside a batch at every
/// offset of it (up to 256 of them) gets what decoding the batch from its start
/// gets from there (when that decodes without error; otherwise only that nothing
/// panics).
#[doc(hidden)]
pub fn fuzz_skip_agrees(bytes: &[u8]) -> bool {
    let Ok(b) = batch::decode(bytes) else {
        return true;
    };
    let Ok(all) = b
        .records()
        .map(|r| r.map(|v| v.offset))
        .collect::<std::result::Result<Vec<Offset>, _>>()
    else {
        for from in (b.base_offset..=b.last_offset()).take(256) {
            let mut records = b.records();
            if records.skip_before(from).is_ok() {
                records.for_each(drop);
            }
        }
        return true;
    };
    (b.base_offset..=b.last_offset()).take(256).all(|from| {
        let mut records = b.records();
        records.skip_before(from).is_ok()
            && records
                .map(|r| r.map(|v| v.offset))
                .collect::<std::result::Result<Vec<_>, _>>()
                == Ok(all.iter().copied().filter(|&o| o >= from).collect())
    })
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
