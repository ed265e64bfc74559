//! The writer: an append's place reserved in the active segment (then encoded and
//! published with the lock released: `reserve.rs`), and rolling.

use std::ops::Range;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;

use crate::background::Prepare;
use crate::batch::{self, BatchMeta};
use crate::config::FlushPolicy;
use crate::fs::Mapping;
use crate::index;
use crate::log::{Log, LogInner};
use crate::segment::{Decision, Publish, Segment, Spare};
use crate::writer_lock::WriterGuard;
use crate::{Error, Offset, Record, RecordRef, Result};

mod prefault;
mod reserve;
mod source;
mod spare;

pub(crate) use prefault::prefault_now;

use source::{AppendSource, Borrowed};

/// Bytes by which the active segment's file grows at a time (real blocks, fallocate).
pub(crate) const ALLOC_CHUNK_BYTES: u64 = 8 << 20;

/// The writer's state, under the append lock.
#[derive(Debug)]
pub(crate) struct Writer {
    pub active: Arc<Segment>,
    /// The active segment's writable mapping, held here so that an append in flight
    /// can use it past the lock (see `writer/reserve.rs`).
    pub active_map: Arc<dyn Mapping>,
    /// End of the reservations in the active segment: the published end once the
    /// appends in flight are published (see `writer/reserve.rs`).
    pub position: u64,
    pub allocated: u64,
    /// The offset after the last reservation.
    pub next_offset: Offset,
    pub bytes_since_index: u64,
    pub max_timestamp: i64,
    pub first_append_time: i64,
    /// Sealed segments whose data may not be fsynced yet.
    pub unsynced: Vec<Arc<Segment>>,
    /// A segment file was created since the directory was last fsynced.
    pub dir_dirty: bool,
    pub records_since_flush: u64,
    /// Offset-index entries of the active segment (the roll rule for a full index).
    pub index_entries: u64,
    /// `close` has sealed the files and written (or failed to write) the clean-shutdown
    /// marker: nothing may be written any more, not even the recovery point.
    pub shut_down: bool,
    /// The next segment's file, prepared ahead (see `segment/spare.rs`).
    pub spare: Option<Spare>,
    /// A spare is being prepared (at most one at a time); spares made so far.
    pub spare_busy: bool,
    pub spares_made: u64,
    /// A roll or a growth of the active segment is under way with the lock released
    /// for its file operations: no append may start (see `writer_lock.rs`).
    pub gate: bool,
}

impl Log {
    /// Appends one record; returns its offset. On return the record survives a crash
    /// of the process; it survives power loss once flushed.
    pub fn append(&self, record: Record) -> Result<Offset> {
        // No one-element Vec: append_records borrows a slice.
        self.append_records(std::slice::from_ref(&record))
            .map(|r| r.start)
    }

    /// Appends records as one batch with consecutive offsets: after a crash either all
    /// of them are there or none.
    ///
    /// ```
    /// use logqueue::{Log, LogConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let range = log.append_batch(vec![Record::new("a"), Record::keyed("k", "b")]).unwrap();
    /// assert_eq!(range, 0..2);
    /// ```
    pub fn append_batch(&self, records: Vec<Record>) -> Result<Range<Offset>> {
        self.append_records(&records)
    }

    /// Appends borrowed records as one batch with consecutive offsets, like
    /// [`Log::append_batch`] (atomic: after a crash all of them are there or none;
    /// the same [`Error::MissingKey`] and [`Error::RecordTooLarge`] rules), without
    /// the caller allocating a [`Record`] per record: each byte is copied once,
    /// straight into the segment.
    ///
    /// ```
    /// use logqueue::{Log, LogConfig, RecordRef};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let values: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 100]).collect();
    /// let batch: Vec<RecordRef<'_>> = values.iter().map(|v| RecordRef::new(v)).collect();
    /// assert_eq!(log.append_batch_ref(&batch).unwrap(), 0..100);
    /// assert_eq!(log.read(7).unwrap().unwrap().value, Some(vec![7; 100]));
    /// ```
    pub fn append_batch_ref(&self, records: &[RecordRef<'_>]) -> Result<Range<Offset>> {
        self.append_source(records)
    }

    /// Appends one record given by borrowed bytes, with no headers and the clock's
    /// timestamp: the same as [`Log::append`] of `Record { key, value, .. }`, without
    /// the caller allocating a [`Record`].
    ///
    /// ```
    /// use logqueue::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let offset = log.append_slice(Some(b"key"), b"value").unwrap();
    /// let r = log.read(offset).unwrap().unwrap();
    /// assert_eq!((r.key.as_deref(), r.value.as_deref()), (Some(&b"key"[..]), Some(&b"value"[..])));
    /// ```
    pub fn append_slice(&self, key: Option<&[u8]>, value: &[u8]) -> Result<Offset> {
        self.append_source(&Borrowed { key, value })
            .map(|r| r.start)
    }

    pub(crate) fn append_records(&self, records: &[Record]) -> Result<Range<Offset>> {
        self.append_source(records)
    }

    fn append_source<S: AppendSource + ?Sized>(&self, records: &S) -> Result<Range<Offset>> {
        self.append_source_at(records, self.inner.config.clock.now_ms())
    }

    /// [`Log::append_batch_ref`] with the clock already read (`now`): an idempotent
    /// append reads it once, for the window and the append alike.
    pub(crate) fn append_refs_at(
        &self,
        records: &[RecordRef<'_>],
        now: i64,
    ) -> Result<Range<Offset>> {
        self.append_source_at(records, now)
    }

    fn append_source_at<S: AppendSource + ?Sized>(
        &self,
        records: &S,
        now: i64,
    ) -> Result<Range<Offset>> {
        // Without a decision the batch is always written.
        self.append_source_decided(records, now, &mut Publish)?
            .ok_or_else(|| Error::io("append", self.dir(), std::io::Error::other("not appended")))
    }

    /// [`Log::append_refs_at`] that asks `decide` under the append lock, once the
    /// batch is written past the published end with its CRC withheld and just before
    /// it is published: `false` publishes nothing and gives `None` (the bytes left
    /// never decode: see [`crate::batch::withhold_crc`]). Unlike a plain append it
    /// runs wholly under the lock, after the appends in flight are published, so the
    /// check and the append are one step. An idempotent append checks its
    /// id there, so the cache miss on the id's bucket (prefetched before) overlaps
    /// with the append's own work instead of stalling in front of it. `decide` runs
    /// under the append lock: memory only, no file operation.
    pub(crate) fn append_refs_if(
        &self,
        records: &[RecordRef<'_>],
        now: i64,
        mut decide: impl FnMut() -> bool,
    ) -> Result<Option<Range<Offset>>> {
        self.append_source_decided(records, now, &mut decide)
    }

    fn append_source_decided<S: AppendSource + ?Sized, D: Decision>(
        &self,
        records: &S,
        now: i64,
        decide: &mut D,
    ) -> Result<Option<Range<Offset>>> {
        let inner = &*self.inner;
        inner.check_writable()?;
        let count = records.count();
        if count == 0 {
            let end = self.end_offset();
            return Ok(Some(end..end));
        }
        if inner.config.cleanup.compacts() && records.missing_key() {
            return Err(Error::MissingKey);
        }
        let (last_delta, len, max_timestamp) = inner.batch_size(records, count, now)?;
        let meta = |base: Offset| BatchMeta {
            base_offset: base,
            last_offset_delta: last_delta,
            append_time: now,
            delete_horizon: None,
        };
        let encode = |buf: &mut [u8], base: Offset| {
            records.encode_into(buf, meta(base), now).ok_or_else(|| {
                Error::io(
                    "encode batch",
                    &inner.dir,
                    std::io::Error::other("encoded size differs from its prediction"),
                )
            })
        };
        let mut w = inner.lock_writer();
        let rolled = self.make_room(&mut w, count, len, last_delta, now)?;
        let base = w.next_offset;
        let batch = PlannedBatch {
            len,
            base,
            last_delta,
            max_timestamp,
            now,
        };
        let written = if D::ASKS {
            // Check-and-append stays atomic: wholly under the lock.
            let written = inner.append_decided(
                &mut w,
                &batch,
                |buf| encode(buf, base),
                || records.encode_parts(meta(base), now),
                decide,
            )?;
            if written {
                w.records_since_flush += count as u64;
                inner.count_appended(count as u64);
            }
            drop(w);
            written
        } else {
            // The place is reserved under the lock; the encoding, the CRC and the
            // wait for the batches before it run with the lock released.
            w.records_since_flush += count as u64;
            inner.count_appended(count as u64);
            let reservation = inner.reserve(&mut w, &batch);
            drop(w);
            if reservation.wants_parts() {
                // Large: handed to the file where its values are, one copy.
                reservation.complete_parts(&records.encode_parts(meta(base), now))?;
            } else {
                reservation.complete(|buf| encode(buf, base))?;
            }
            true
        };
        let range = written.then_some(base..base + count as u64);
        if range.is_some() {
            inner.appended.notify();
        }
        if rolled {
            inner.after_roll()?;
        }
        if let Some(range) = &range {
            self.flush_after_append(range, now)?;
        }
        Ok(range)
    }

    /// Under the lock, and again after every wait: `close` (and a failed roll's
    /// poisoning) may have happened meanwhile, and after `close` sealed the files
    /// nothing may be written to them. Rolls or grows the active segment (with the
    /// lock released for the file operations) until a batch of `count` records and
    /// `len` bytes fits; true when it rolled.
    #[inline]
    fn make_room(
        &self,
        w: &mut WriterGuard<'_>,
        count: usize,
        len: usize,
        last_delta: u32,
        now: i64,
    ) -> Result<bool> {
        let inner = &*self.inner;
        let mut rolled = false;
        let mut grew = false;
        loop {
            w.wait_for_gate(&inner.writer_gate);
            inner.check_writable()?;
            let base = w.next_offset;
            // The offset space is u64: a log whose end was planted near u64::MAX
            // (a checkpoint or file name) has no room left: an error, not a panic.
            if base.checked_add(count as u64).is_none() {
                return Err(Error::OffsetOutOfRange {
                    offset: base,
                    start: self.start_offset(),
                    end: base,
                });
            }
            // A roll or a growth first, with the lock released for its file
            // operations; then look again (the log may have closed meanwhile).
            let last_offset = base + u64::from(last_delta);
            if inner.must_roll(w, len as u64, last_offset, now) {
                inner.roll(w)?;
                rolled = true;
                continue;
            }
            // One growth per append: the one it needs, or else the one ahead.
            if !grew && inner.grow_if_needed(w, len as u64)? {
                grew = true;
                continue;
            }
            return Ok(rolled);
        }
    }

    /// The flush policy's part of an append of `range`.
    #[inline]
    fn flush_after_append(&self, range: &Range<Offset>, now: i64) -> Result<()> {
        let inner = &*self.inner;
        match inner.config.flush {
            // `wait_durable(range.end - 1)` without its entry checks: a `close` since
            // the append made the record durable, which is success, not `Closed`.
            FlushPolicy::Always => self.flush_to(range.end)?,
            FlushPolicy::EveryRecords(n) => {
                let due = {
                    let mut w = inner.lock_writer();
                    if w.records_since_flush >= n {
                        w.records_since_flush = 0;
                        true
                    } else {
                        false
                    }
                };
                if due {
                    self.flush_to(range.end)?;
                }
            }
            FlushPolicy::Interval(every) => {
                if !inner.config.background && inner.interval_flush_due(now, every) {
                    self.flush_to(range.end)?;
                }
            }
            FlushPolicy::Manual => {}
        }
        Ok(())
    }
}

impl LogInner {
    /// The last offset delta, encoded length and highest timestamp of a batch of
    /// `count` (more than 0) `records`, or [`Error::RecordTooLarge`] past
    /// `max_batch_bytes`.
    #[inline]
    fn batch_size<S: AppendSource + ?Sized>(
        &self,
        records: &S,
        count: usize,
        now: i64,
    ) -> Result<(u32, usize, i64)> {
        let max_batch = u64::from(self.config.max_batch_bytes);
        // Cheap lower bound first, so a huge record is refused before it is encoded;
        // the exact check follows the encoding.
        let payload: u64 = records.payload_bytes() + batch::HEADER_LEN as u64;
        if payload > max_batch {
            return Err(Error::RecordTooLarge {
                size: payload,
                max: max_batch,
            });
        }
        let last_delta = u32::try_from(count - 1).map_err(|_| Error::RecordTooLarge {
            size: payload,
            max: max_batch,
        })?;
        // The exact size is known before anything is written: a batch too large is
        // refused without touching the segment, and one that fits is encoded
        // straight into it.
        let (len, max_timestamp) = records.encoded_len(now);
        if len as u64 > max_batch {
            return Err(Error::RecordTooLarge {
                size: len as u64,
                max: max_batch,
            });
        }
        Ok((last_delta, len, max_timestamp))
    }

    /// Counts an appended batch of `count` records in the log's counters.
    #[inline]
    fn count_appended(&self, count: u64) {
        // Only appenders change these, under the lock: plain loads and stores,
        // no read-modify-write on the append path; `stats` reads them lock-free.
        let c = &self.counters;
        let records = c.records_appended.load(AtomicOrdering::Relaxed);
        c.records_appended
            .store(records + count, AtomicOrdering::Relaxed);
        let batches = c.batches_appended.load(AtomicOrdering::Relaxed);
        c.batches_appended
            .store(batches + 1, AtomicOrdering::Relaxed);
    }

    /// Writer only, gate open: makes sure `len` more bytes fit the active segment's
    /// real allocation, and keeps a chunk allocated (and prefaulted) ahead of the
    /// writer, so that appends never wait for it: asks the preparer for the next
    /// chunk (`fallocate` can wait for a journal commit, milliseconds, and the
    /// prefault is one `madvise` of 8 MiB). True when it released the lock to grow
    /// the file here (the caller then looks at the writer's state again).
    fn grow_if_needed(&self, w: &mut WriterGuard<'_>, len: u64) -> Result<bool> {
        let capacity = self.config.segment_capacity();
        let end = w.position + len;
        // Space the preparer allocated ahead, if any.
        w.allocated = w.allocated.max(w.active.allocated_ahead().min(capacity));
        if end > w.allocated {
            self.grow(w, end).inspect_err(|e| self.poison(e))?;
            return Ok(true);
        }
        if w.allocated - end >= ALLOC_CHUNK_BYTES || w.allocated >= capacity {
            return Ok(false);
        }
        let target = (w.allocated + ALLOC_CHUNK_BYTES).min(capacity);
        if !w.active.ask_ahead(target) {
            return Ok(false); // asked for already
        }
        let request = Prepare {
            segment: Arc::clone(&w.active),
            from: w.allocated,
            to: target,
            allocate: true,
        };
        if self.shutdown.request_prepare(request) {
            return Ok(false);
        }
        // No preparer: grow here. Nothing depends on that space yet: a failure is
        // retried when the space is needed.
        let position = w.position;
        let _ = self.grow(w, position);
        Ok(true)
    }

    /// Grows the active segment's real allocation to cover `end` and a chunk more
    /// (at most its capacity), and has the new chunk's pages mapped in one go (by
    /// the preparer when it runs), rather than by a page fault every 4 KiB of
    /// appends. The file operations run with the gate closed and the lock released.
    fn grow(&self, w: &mut WriterGuard<'_>, end: u64) -> Result<()> {
        let capacity = self.config.segment_capacity();
        let target = (w.allocated + ALLOC_CHUNK_BYTES).max(end).min(capacity);
        let active = Arc::clone(&w.active);
        let from = w.allocated;
        w.gate = true;
        let grown = w.unlocked(|| {
            active
                .file()?
                .allocate(target)
                .map_err(|e| Error::io("allocate segment", active.path(), e))?;
            self.prefault(&active, from, target);
            Ok(())
        });
        w.gate = false;
        self.writer_gate.notify_all();
        grown?;
        // The gate kept every other append and roll out: still the active segment.
        w.allocated = w.allocated.max(target);
        Ok(())
    }

    fn must_roll(&self, w: &Writer, len: u64, last_offset: Offset, now: i64) -> bool {
        if w.position == 0 {
            return false;
        }
        if w.position + len > self.config.segment_bytes {
            return true;
        }
        if let Some(age) = self.config.segment_ms {
            let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
            if w.first_append_time != i64::MIN && now.saturating_sub(w.first_append_time) >= age_ms
            {
                return true;
            }
        }
        if w.index_entries + 1 > index::max_entries(self.config.segment_index_bytes) {
            return true;
        }
        index::relative(w.active.base_offset, last_offset).is_none()
    }

    /// Writer only, gate open: seals the active segment and starts a new one at the
    /// next offset. The file operations (the seal: `set_len` and the index files;
    /// creating, allocating and mapping the new file) run with the gate closed, so
    /// no append starts, and the lock released, so flush rounds, `stats`, retention
    /// and the cleaner go on; under the lock the roll only swaps pointers. The order
    /// on disk is the same as when all of it ran under the lock (seal, then create),
    /// and nothing is written to the new segment before both are done.
    ///
    /// Any failure poisons the log: the old segment may be sealed (its file cut to
    /// its data) with no new one to write to, and the state on disk is unknown.
    ///
    /// The sealed segment joins `unsynced`; the caller arranges its fsync off the
    /// writer lock ([`LogInner::after_roll`]).
    pub(crate) fn roll(&self, w: &mut WriterGuard<'_>) -> Result<()> {
        debug_assert!(!w.gate, "the caller waited for the gate");
        // From here on the old file may be cut to its data at any step: never count on
        // the space allocated beyond it again.
        w.allocated = w.position;
        w.gate = true;
        let old = Arc::clone(&w.active);
        let base = w.next_offset;
        let spare = w.spare.take();
        let reserved_end = w.position;
        let created = w.unlocked(|| {
            // The gate keeps new reservations out; the ones in flight are published
            // first (the seal cuts the file at the published end).
            self.wait_published(&old, reserved_end)?;
            self.seal_and_create(&old, base, spare)
        });
        w.gate = false;
        self.writer_gate.notify_all();
        let (segment, map, allocated) = created.inspect_err(|e| self.poison(e))?;
        let old = std::mem::replace(&mut w.active, Arc::clone(&segment));
        w.active_map = map;
        old.set_next_offset(base);
        w.unsynced.push(old);
        w.dir_dirty = true;
        w.position = 0;
        w.allocated = allocated;
        w.bytes_since_index = u64::MAX;
        w.index_entries = 0;
        w.max_timestamp = i64::MIN;
        w.first_append_time = i64::MIN;
        // The version swap: a new list, replaced under the list's own small lock.
        let mut list = self.segments.write();
        let mut next: Vec<Arc<Segment>> = Vec::with_capacity(list.len() + 1);
        next.extend(list.iter().cloned());
        next.push(segment);
        *list = Arc::new(next);
        drop(list);
        self.counters.rolls.fetch_add(1, AtomicOrdering::Relaxed);
        crate::trace::event_info!(dir = %self.dir.display(), new_base = base, "rolled to a new segment");
        Ok(())
    }

    /// A roll's file operations, outside the writer lock: seals `old`, then makes
    /// the segment at `base` from the spare prepared ahead (a rename), or else
    /// creates it and has its allocated space prefaulted; returns it and its
    /// allocated size.
    fn seal_and_create(
        &self,
        old: &Segment,
        base: Offset,
        spare: Option<Spare>,
    ) -> Result<(Arc<Segment>, Arc<dyn Mapping>, u64)> {
        old.seal()?;
        let (segment, allocated) = if let Some(spare) = spare {
            let allocated = spare.allocated;
            let fs = &self.config.fs;
            let segment = Segment::from_spare(fs, &self.segment_cache, &self.dir, base, spare)?;
            (Arc::new(segment), allocated)
        } else {
            let capacity = self.config.segment_capacity();
            let segment = Arc::new(Segment::create(
                &self.config.fs,
                &self.segment_cache,
                &self.dir,
                base,
                capacity,
                ALLOC_CHUNK_BYTES.min(capacity),
            )?);
            let allocated = segment
                .file()?
                .size()
                .map_err(|e| Error::io("stat segment", segment.path(), e))?;
            self.prefault(&segment, 0, allocated);
            (segment, allocated)
        };
        let map = active_mapping(&segment)?;
        Ok((segment, map, allocated))
    }
}

/// The writable mapping of a segment about to become the active one.
pub(crate) fn active_mapping(segment: &Segment) -> Result<Arc<dyn Mapping>> {
    segment.writable_mapping().ok_or_else(|| {
        Error::io(
            "map segment",
            segment.path(),
            std::io::Error::other("the active segment is not mapped writable"),
        )
    })
}

/// The size and offsets of a batch about to be written, known before it is encoded.
struct PlannedBatch {
    len: usize,
    base: Offset,
    last_delta: u32,
    max_timestamp: i64,
    now: i64,
}
