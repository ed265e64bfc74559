//! [`Log`]: the segmented log. Appends reserve their place under a mutex and are
//! encoded in parallel, published in order (see `writer/reserve.rs`); readers take an
//! `Arc` snapshot of the segment list and never block the writer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::background::{AppendSignal, Shutdown};
use crate::checkpoint::{self};
use crate::cleaner::CleanerState;
use crate::config::LogConfig;
use crate::cursor::Cursors;
use crate::flush::{Durability, FlushState};
use crate::gaps;
use crate::read_only::ReadOnlyView;
use crate::reader::LogReader;
use crate::recovery;
use crate::retention::RetentionState;
use crate::segment::{Segment, SegmentCache};
use crate::stats::{LogStats, SegmentInfo, VerifyReport};
use crate::writer::Writer;
use crate::{Error, Offset, Result, StoredRecord};

mod assemble;
mod open;

/// A segmented, append-only log in one directory. Cheap to clone: clones share one
/// open log. `Send + Sync`.
///
/// ```
/// use logqueue::{Log, LogConfig, Record};
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
/// let offset = log.append(Record::new("hello")).unwrap();
/// assert_eq!(log.read(offset).unwrap().unwrap().value.as_deref(), Some(&b"hello"[..]));
/// log.close().unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct Log {
    pub(crate) inner: Arc<LogInner>,
    /// Shared by the user's clones only (not by background threads): when the last
    /// one drops, the log closes right there, whatever thread holds `inner` briefly.
    _handle: Option<Arc<UserHandle>>,
}

#[derive(Debug)]
struct UserHandle {
    inner: Weak<LogInner>,
}

impl Drop for UserHandle {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            if !inner.is_closed() {
                // Best effort, never panicking: the data is already safe against a crash.
                let _ = inner.cursors.sync();
                let _ = inner.close();
            }
        }
    }
}

impl Log {
    /// A handle for the engine's own threads: it does not keep the log open.
    pub(crate) fn internal(inner: Arc<LogInner>) -> Log {
        Log {
            inner,
            _handle: None,
        }
    }

    /// A user's handle: the log closes when the last clone of it drops.
    pub(crate) fn user(inner: Arc<LogInner>) -> Log {
        let handle = Some(Arc::new(UserHandle {
            inner: Arc::downgrade(&inner),
        }));
        Log {
            inner,
            _handle: handle,
        }
    }
}

pub(crate) use assemble::InnerParts;

#[derive(Debug)]
pub(crate) struct LogInner {
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    /// The bounded set of sealed segments with an open file or mapping.
    pub(crate) segment_cache: Arc<SegmentCache>,
    /// Snapshot of the segments, oldest first; the last is the active one.
    pub(crate) segments: RwLock<Arc<Vec<Arc<Segment>>>>,
    /// The append lock: the writer's state. Never held across a file operation
    /// (see `writer_lock.rs`).
    pub(crate) writer: Mutex<Writer>,
    /// Wakes appenders waiting for a roll or growth under way (`Writer::gate`).
    pub(crate) writer_gate: Condvar,
    /// The recovery point file and whether `close` finished with it: taken by flush
    /// rounds to write the point, by the cleaner to check it, and by `close`.
    pub(crate) durability: Mutex<Durability>,
    /// Serialises the changes that remove or replace segments and move the start
    /// offset (retention, the cleaner's swap, `delete_records_before`, `close`),
    /// held across their file operations. Rolls only append to the list and do not
    /// take it.
    pub(crate) maintenance: Mutex<()>,
    pub(crate) end_offset: AtomicU64,
    pub(crate) durable_offset: AtomicU64,
    pub(crate) start_offset: AtomicU64,
    pub(crate) flush_state: Mutex<FlushState>,
    pub(crate) flush_done: Condvar,
    /// Wakes a round's leader gathering waiters before its fsync (see `flush.rs`).
    pub(crate) flush_arrived: Condvar,
    pub(crate) appended: AppendSignal,
    /// Appenders asleep until the batches before theirs are published.
    pub(crate) turn: crate::segment::TurnWaiters,
    pub(crate) closed: AtomicBool,
    pub(crate) poisoned: Mutex<Option<String>>,
    /// Mirrors `poisoned.is_some()` for the append path's lock-free check.
    pub(crate) is_poisoned: AtomicBool,
    pub(crate) lock: Mutex<Option<Box<dyn std::any::Any + Send + Sync>>>,
    pub(crate) background: Mutex<Vec<JoinHandle<()>>>,
    pub(crate) shutdown: Arc<Shutdown>,
    /// The background roll syncer runs: rolls hand it their sealed segment.
    pub(crate) roll_syncer: AtomicBool,
    /// Clock reading at the start of the last full fsync round (or open): the
    /// append path's `FlushPolicy::Interval` check without background threads.
    pub(crate) last_sync_ms: AtomicI64,
    /// The last failure of a background thread, `"<task>: <error>"`.
    pub(crate) background_error: Mutex<Option<String>>,
    pub(crate) counters: Counters,
    /// The crash recoveries of this log, read (and extended) at open.
    pub(crate) crash_history: crate::crash_history::CrashHistory,
    pub(crate) retention: RetentionState,
    /// The durable named cursors (see cursor.rs), all known from open on.
    pub(crate) cursors: Cursors,
    pub(crate) cleaner: CleanerState,
    /// What lives on this log (its open queues), closed by [`Log::close`] first.
    pub(crate) dependents: crate::dependents::Dependents,
    /// Set for [`Log::open_read_only`]: the directory is another writer's (or none's),
    /// seen through re-listing and re-reading it; every write is refused.
    pub(crate) read_only: Option<ReadOnlyView>,
    /// The ids of [`Log::append_idempotent`] (`LogConfig::dedup`), rebuilt at open.
    pub(crate) dedup: Option<crate::dedup::DedupWindow>,
}

/// Running totals for [`LogStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub fsyncs: AtomicU64,
    pub flushes: AtomicU64,
    pub rolls: AtomicU64,
    pub records_appended: AtomicU64,
    pub batches_appended: AtomicU64,
}

impl Log {
    /// Reads the record at `offset`: `Ok(None)` when compaction removed it or it is at
    /// or past the end; [`Error::OffsetOutOfRange`] below the start offset;
    /// [`Error::Corrupt`] when its bytes are damaged or its segment file was lost or
    /// cut short (offsets missing between segments).
    ///
    /// ```
    /// use logqueue::{Error, Log, LogConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// log.append_batch(vec![Record::new("a"), Record::new("b"), Record::new("c")]).unwrap();
    /// assert_eq!(log.read(1).unwrap().unwrap().value.as_deref(), Some(&b"b"[..]));
    /// assert_eq!(log.read(3).unwrap(), None);
    /// log.delete_records_before(1).unwrap();
    /// assert!(matches!(log.read(0), Err(Error::OffsetOutOfRange { .. })));
    /// ```
    pub fn read(&self, offset: Offset) -> Result<Option<StoredRecord>> {
        self.inner.check_open()?;
        if offset >= self.end_offset() {
            // A read-only view looks for records appended since it last looked.
            self.inner.refresh_view()?;
        }
        let start = self.start_offset();
        let end = self.end_offset();
        if offset < start {
            return Err(Error::OffsetOutOfRange { offset, start, end });
        }
        if offset >= end {
            return Ok(None);
        }
        let segments = self.inner.snapshot();
        let i = segments.partition_point(|s| s.base_offset <= offset);
        let found = match i.checked_sub(1).map(|i| &segments[i]) {
            Some(segment) => segment.find_batch(offset)?.map(|f| (segment, f)),
            None => None,
        };
        let Some((segment, found)) = found else {
            // In no batch: removed by compaction, or missing (a lost or cut file).
            return match gaps::gap_at(&segments, start, offset)? {
                Some(gap) => Err(gap.report(offset)),
                None => Ok(None),
            };
        };
        let batch = found.batch();
        for record in batch.records() {
            let record = record.map_err(|e| {
                Error::corrupt(
                    segment.path(),
                    found.position(),
                    Some(offset),
                    e.to_string(),
                )
            })?;
            if record.offset == offset {
                return Ok(Some(record.to_owned_record()));
            }
            if record.offset > offset {
                break;
            }
        }
        Ok(None)
    }

    /// A reader from `from` (clamped up to the start offset) to the end; it can wait
    /// for new records with [`LogReader::next_blocking`].
    ///
    /// ```
    /// use logqueue::{Log, LogConfig, Record};
    /// use std::time::Duration;
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let mut tail = log.reader(log.end_offset()).unwrap();
    /// let writer = log.clone();
    /// std::thread::spawn(move || writer.append(Record::new("late")).unwrap());
    /// let r = tail.next_blocking(Duration::from_secs(10)).unwrap().unwrap();
    /// assert_eq!(r.value.as_deref(), Some(&b"late"[..]));
    /// ```
    pub fn reader(&self, from: Offset) -> Result<LogReader> {
        self.inner.check_open()?;
        self.inner.refresh_view()?;
        Ok(LogReader::new(self.clone(), from.max(self.start_offset())))
    }

    /// The first offset whose record has a timestamp at or after `ms`.
    ///
    /// ```
    /// use logqueue::{Log, LogConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// for (i, ts) in [100, 200, 300].into_iter().enumerate() {
    ///     log.append(Record::new(vec![i as u8]).with_timestamp(ts)).unwrap();
    /// }
    /// assert_eq!(log.offset_for_timestamp(150).unwrap(), Some(1));
    /// assert_eq!(log.offset_for_timestamp(301).unwrap(), None);
    /// ```
    pub fn offset_for_timestamp(&self, ms: i64) -> Result<Option<Offset>> {
        self.inner.check_open()?;
        self.inner.refresh_view()?;
        let start = self.start_offset();
        let segments = self.inner.snapshot();
        for segment in segments.iter() {
            if segment.next_offset() <= start || segment.meta()?.max_timestamp < ms {
                continue;
            }
            let mut cursor = segment.batch_for_time(ms)?;
            while let Some(b) = cursor {
                let batch = b.batch();
                if batch.max_timestamp >= ms && batch.last_offset() >= start {
                    for record in batch.records() {
                        let record = record.map_err(|e| {
                            Error::corrupt(segment.path(), b.position(), None, e.to_string())
                        })?;
                        if record.timestamp >= ms && record.offset >= start {
                            return Ok(Some(record.offset));
                        }
                    }
                }
                cursor = segment.batch_after(&b)?;
            }
        }
        Ok(None)
    }

    /// The first offset still in the log.
    pub fn start_offset(&self) -> Offset {
        self.inner.start_offset.load(AtomicOrdering::Acquire)
    }

    /// The offset the next append gets.
    pub fn end_offset(&self) -> Offset {
        self.inner.end_offset.load(AtomicOrdering::SeqCst)
    }

    /// Every record below this offset is fsynced.
    ///
    /// ```
    /// use logqueue::{FlushPolicy, Log, LogConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let config = LogConfig { flush: FlushPolicy::Manual, ..LogConfig::default() };
    /// let log = Log::open(dir.path(), config).unwrap();
    /// log.append(Record::new("x")).unwrap();
    /// assert_eq!(log.durable_offset(), 0);
    /// log.flush().unwrap();
    /// assert_eq!(log.durable_offset(), 1);
    /// ```
    pub fn durable_offset(&self) -> Offset {
        self.inner.durable_offset.load(AtomicOrdering::Acquire)
    }

    /// Raises the start offset to `offset` (at most the end offset) durably; reads
    /// below it fail with [`Error::OffsetOutOfRange`] from now on. Whole segments below
    /// it are deleted by the next retention pass.
    pub fn delete_records_before(&self, offset: Offset) -> Result<()> {
        let inner = &*self.inner;
        inner.check_writable()?;
        // Not the append lock: the checkpoint write is a file operation.
        let _maintenance = inner.maintenance.lock();
        inner.check_writable()?;
        let new_start = offset.min(self.end_offset());
        if new_start <= self.start_offset() {
            return Ok(());
        }
        checkpoint::durable_replace(
            &*inner.config.fs,
            &inner.dir,
            checkpoint::LOG_START_OFFSET,
            &checkpoint::encode_offset(new_start),
        )
        .inspect_err(|e| inner.poison(e))?;
        inner.start_offset.store(new_start, AtomicOrdering::Release);
        Ok(())
    }

    /// CRC-checks every batch, decodes every record, cross-checks the indexes and
    /// checks that the segments cover every offset from the start to the end (a
    /// segment file lost or cut short leaves offsets missing). Corrupt stretches and
    /// missing offsets are reported in the result, not as an error.
    ///
    /// ```
    /// use logqueue::{Log, LogConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// log.append_batch(vec![Record::new("a"), Record::new("b")]).unwrap();
    /// let report = log.verify().unwrap();
    /// assert_eq!((report.batches, report.records), (1, 2));
    /// assert!(report.corrupt.is_empty());
    /// ```
    pub fn verify(&self) -> Result<VerifyReport> {
        self.inner.check_open()?;
        self.inner.refresh_view()?;
        let segments = self.inner.snapshot();
        let mut report = VerifyReport::default();
        gaps::note_all(&segments, self.start_offset())?;
        for segment in segments.iter() {
            recovery::verify_segment(segment, &mut report)?;
        }
        Ok(report)
    }

    /// The segments, oldest first.
    ///
    /// ```
    /// use logqueue::{Log, LogConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig { segment_bytes: 1024, ..LogConfig::default() }).unwrap();
    /// for _ in 0..50 { log.append(Record::new(vec![0u8; 100])).unwrap(); }
    /// let segments = log.segments();
    /// assert!(segments.len() > 1 && segments.last().unwrap().active);
    /// assert_eq!(segments[0].next_offset, segments[1].base_offset);
    /// ```
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.inner.refresh_view_or_record();
        let segments = self.inner.snapshot();
        let last = segments.len().saturating_sub(1);
        segments
            .iter()
            .enumerate()
            .map(|(i, s)| SegmentInfo {
                base_offset: s.base_offset,
                next_offset: s.next_offset(),
                size_bytes: s.published(),
                max_timestamp: s.meta().map_or(i64::MIN, |m| m.max_timestamp),
                active: i == last,
            })
            .collect()
    }

    /// Counters and sizes.
    ///
    /// ```
    /// use logqueue::{Log, LogConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// log.append(Record::new("x")).unwrap();
    /// let stats = log.stats();
    /// assert_eq!((stats.end_offset, stats.records_appended), (1, 1));
    /// ```
    pub fn stats(&self) -> LogStats {
        let inner = &*self.inner;
        inner.refresh_view_or_record();
        let segments = inner.snapshot();
        let c = &inner.counters;
        let dirty = inner.dirty_stats();
        LogStats {
            start_offset: self.start_offset(),
            end_offset: self.end_offset(),
            durable_offset: self.durable_offset(),
            segments: segments.len(),
            size_bytes: segments.iter().map(|s| s.published()).sum(),
            records_appended: c.records_appended.load(AtomicOrdering::Relaxed),
            batches_appended: c.batches_appended.load(AtomicOrdering::Relaxed),
            flushes: c.flushes.load(AtomicOrdering::Relaxed),
            fsyncs: c.fsyncs.load(AtomicOrdering::Relaxed),
            rolls: c.rolls.load(AtomicOrdering::Relaxed),
            corrupt_ranges: segments.iter().map(|s| s.corrupt_ranges().len()).sum(),
            retention_held_segments: inner.retention.held_segments.load(AtomicOrdering::Relaxed),
            retention_floor: inner
                .retention
                .last_floor_plus_one
                .load(AtomicOrdering::Relaxed)
                .checked_sub(1),
            damaged_floor_files: inner.cursors.damaged(),
            clean_bytes: dirty.clean_bytes,
            dirty_bytes: dirty.dirty_bytes,
            cleaner_offset: dirty.cleaner_offset,
            cleaner_runs: inner.cleaner.runs.load(AtomicOrdering::Relaxed),
            last_background_error: inner.background_error.lock().clone(),
        }
    }

    /// Closes the queues open over this log ([`crate::Queue::close`]: their state
    /// flushed, their locks released), then flushes, trims the active segment and its
    /// indexes, writes the clean-shutdown marker and releases the directory lock.
    /// Every other handle of this log and of its queues then gets [`Error::Closed`].
    /// The first failure is returned; everything is closed either way.
    ///
    /// ```
    /// use logqueue::{Error, Log, LogConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let other = log.clone();
    /// log.close().unwrap();
    /// assert!(matches!(other.append(Record::new("x")), Err(Error::Closed)));
    /// let reopened = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// assert_eq!(reopened.end_offset(), 0);
    /// ```
    pub fn close(self) -> Result<()> {
        // The queues first, while the log is open: each flushes its state and
        // releases its lock, so it can be opened again (see `Queue::close`).
        let queues = self.inner.dependents.close_all();
        let cursors = self.inner.cursors.sync();
        let log = self.inner.close();
        log.and(queues).and(cursors)
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The log's configuration.
    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }
}

impl LogInner {
    pub fn check_open(&self) -> Result<()> {
        if self.closed.load(AtomicOrdering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        self.check_open()?;
        self.refuse_read_only()?;
        if self.is_poisoned.load(AtomicOrdering::Acquire) {
            let reason = self.poisoned.lock().clone().unwrap_or_default();
            return Err(Error::Poisoned { reason });
        }
        Ok(())
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(AtomicOrdering::Acquire)
    }

    /// Marks the log unusable for writes after a failed write or fsync: the state on
    /// disk is unknown, so the only safe way on is to reopen and recover.
    pub(crate) fn poison(&self, err: &Error) {
        let mut p = self.poisoned.lock();
        if p.is_none() {
            crate::trace::event_error!(dir = %self.dir.display(), error = %err, "log poisoned: it refuses writes until reopened");
            *p = Some(err.to_string());
        }
        self.is_poisoned.store(true, AtomicOrdering::Release);
    }

    /// Keeps a background thread's failure visible in [`LogStats`]. `Closed` is not a
    /// failure: the thread merely ran into the close.
    pub(crate) fn record_background_error(&self, task: &str, err: &Error) {
        if !matches!(err, Error::Closed) {
            crate::trace::event_error!(dir = %self.dir.display(), task, error = %err, "background task failed");
            *self.background_error.lock() = Some(format!("{task}: {err}"));
        }
    }

    /// Takes the append lock (see `writer_lock.rs`: no file operation under it).
    pub(crate) fn lock_writer(&self) -> crate::writer_lock::WriterGuard<'_> {
        crate::writer_lock::WriterGuard::lock(&self.writer)
    }

    pub fn snapshot(&self) -> Arc<Vec<Arc<Segment>>> {
        Arc::clone(&self.segments.read())
    }
}

impl Drop for LogInner {
    fn drop(&mut self) {
        if !self.closed.load(AtomicOrdering::Acquire) {
            // Best effort, never panicking: the data is already safe against a crash.
            let _ = self.close();
        }
    }
}

#[cfg(test)]
mod tests;
