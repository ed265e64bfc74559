//! [`Log`]: the segmented log. One writer at a time behind a mutex; readers take an
//! `Arc` snapshot of the segment list and never block the writer.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::batch::{self, BatchMeta, RecordParts};
use crate::checkpoint::{self, RecoveryPoint, RecoveryPointFile};
use crate::config::{FlushPolicy, LogConfig};
use crate::index;
use crate::reader::LogReader;
use crate::recovery;
use crate::retention::RetentionState;
use crate::segment::Segment;
use crate::stats::{LogStats, SegmentInfo, VerifyReport};
use crate::{Error, Offset, Record, Result, StoredRecord};

/// Bytes by which the active segment's file grows at a time (real blocks, fallocate).
const ALLOC_CHUNK_BYTES: u64 = 8 << 20;

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
}

#[derive(Debug)]
pub(crate) struct LogInner {
    pub dir: PathBuf,
    pub config: LogConfig,
    /// Snapshot of the segments, oldest first; the last is the active one.
    pub segments: RwLock<Arc<Vec<Arc<Segment>>>>,
    pub writer: Mutex<Writer>,
    pub end_offset: AtomicU64,
    pub durable_offset: AtomicU64,
    pub start_offset: AtomicU64,
    flush_state: Mutex<FlushState>,
    flush_done: Condvar,
    pub appended: AppendSignal,
    closed: AtomicBool,
    poisoned: Mutex<Option<String>>,
    lock: Mutex<Option<Box<dyn std::any::Any + Send + Sync>>>,
    background: Mutex<Vec<JoinHandle<()>>>,
    shutdown: Arc<Shutdown>,
    pub counters: Counters,
    pub retention: RetentionState,
}

/// Running totals for [`LogStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub records_appended: AtomicU64,
    pub batches_appended: AtomicU64,
    pub fsyncs: AtomicU64,
    pub flushes: AtomicU64,
    pub rolls: AtomicU64,
}

/// Wakes tailing readers when records are appended, without a lock on the append
/// path unless someone is waiting.
#[derive(Debug, Default)]
pub(crate) struct AppendSignal {
    lock: Mutex<()>,
    cv: Condvar,
    waiters: AtomicUsize,
}

impl AppendSignal {
    /// Wakes the waiters, if any (appends; also queue acks, for blocked receivers).
    pub(crate) fn notify(&self) {
        if self.waiters.load(AtomicOrdering::SeqCst) > 0 {
            let _guard = self.lock.lock();
            self.cv.notify_all();
        }
    }

    /// Waits until `ready()` or the deadline; true when ready.
    pub fn wait_until(&self, deadline: Instant, ready: impl Fn() -> bool) -> bool {
        self.waiters.fetch_add(1, AtomicOrdering::SeqCst);
        let mut guard = self.lock.lock();
        let ok = loop {
            if ready() {
                break true;
            }
            if self.cv.wait_until(&mut guard, deadline).timed_out() {
                break ready();
            }
        };
        drop(guard);
        self.waiters.fetch_sub(1, AtomicOrdering::SeqCst);
        ok
    }

    /// Wakes every waiter (on close).
    pub fn wake_all(&self) {
        let _guard = self.lock.lock();
        self.cv.notify_all();
    }
}

#[derive(Debug)]
struct FlushState {
    syncing: bool,
    durable_offset: Offset,
}

/// State owned by the single writer.
#[derive(Debug)]
pub(crate) struct Writer {
    pub active: Arc<Segment>,
    pub position: u64,
    pub allocated: u64,
    pub next_offset: Offset,
    pub bytes_since_index: u64,
    pub max_timestamp: i64,
    pub first_append_time: i64,
    /// Sealed segments whose data may not be fsynced yet.
    pub unsynced: Vec<Arc<Segment>>,
    /// A segment file was created since the directory was last fsynced.
    pub dir_dirty: bool,
    pub records_since_flush: u64,
    pub scratch: Vec<u8>,
    pub recovery_point: RecoveryPointFile,
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering from whatever a crash
    /// left behind. A directory already open is [`Error::Locked`].
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let fs = Arc::clone(&config.fs);
        // A new directory's entry lives in its parent, and is durable only once the
        // parent is fsynced: without that, a power loss can take the whole log.
        let mut created = Vec::new();
        let mut missing = Some(dir.as_path());
        while let Some(d) = missing.filter(|d| !d.as_os_str().is_empty() && !fs.exists(d)) {
            created.push(d);
            missing = d.parent();
        }
        fs.create_dir_all(&dir)
            .map_err(|e| Error::io("create log directory", &dir, e))?;
        for d in created {
            let parent = d
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            fs.sync_dir(parent)
                .map_err(|e| Error::io("sync directory", parent, e))?;
        }
        let lock_path = dir.join("LOCK");
        let lock = fs
            .try_lock(&lock_path)
            .map_err(|e| Error::io("lock", &lock_path, e))?
            .ok_or(Error::Locked { path: lock_path })?;
        let recovered = recovery::recover(&dir, &config)?;
        let active = Arc::clone(
            recovered
                .segments
                .last()
                .expect("recovery leaves a segment"),
        );
        let next_offset = active.next_offset();
        let position = active.published();
        let allocated = active
            .file()?
            .size()
            .map_err(|e| Error::io("stat segment", active.path(), e))?;
        let meta = active.meta()?;
        let writer = Writer {
            active,
            position,
            allocated,
            next_offset,
            bytes_since_index: u64::MAX,
            max_timestamp: meta.max_timestamp,
            first_append_time: meta.first_append_time,
            unsynced: Vec::new(),
            dir_dirty: false,
            records_since_flush: 0,
            scratch: Vec::with_capacity(4096),
            recovery_point: recovered.recovery_point_file,
        };
        let inner = Arc::new(LogInner {
            dir,
            segments: RwLock::new(Arc::new(recovered.segments)),
            writer: Mutex::new(writer),
            end_offset: AtomicU64::new(next_offset),
            durable_offset: AtomicU64::new(next_offset),
            start_offset: AtomicU64::new(recovered.start_offset),
            flush_state: Mutex::new(FlushState {
                syncing: false,
                durable_offset: next_offset,
            }),
            flush_done: Condvar::new(),
            appended: AppendSignal::default(),
            closed: AtomicBool::new(false),
            poisoned: Mutex::new(None),
            lock: Mutex::new(Some(lock)),
            background: Mutex::new(Vec::new()),
            shutdown: Arc::new(Shutdown::default()),
            counters: Counters::default(),
            retention: RetentionState::default(),
            config,
        });
        let log = Log { inner };
        log.start_background();
        Ok(log)
    }

    fn start_background(&self) {
        if !self.inner.config.background {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let shutdown = Arc::clone(&self.inner.shutdown);
        let every = self.inner.config.retention_check_interval;
        let handle = std::thread::Builder::new()
            .name("logqueue-retention".into())
            .spawn(move || {
                background_loop(weak, &shutdown, every, |log| {
                    log.enforce_retention().map(|_| ())
                })
            })
            .ok();
        self.inner.background.lock().extend(handle);
        if let FlushPolicy::Interval(every) = self.inner.config.flush {
            let weak = Arc::downgrade(&self.inner);
            let shutdown = Arc::clone(&self.inner.shutdown);
            let handle = std::thread::Builder::new()
                .name("logqueue-flusher".into())
                .spawn(move || background_loop(weak, &shutdown, every, |log| log.flush()))
                .ok();
            self.inner.background.lock().extend(handle);
        }
    }

    /// Appends one record; returns its offset. On return the record survives a crash
    /// of the process; it survives power loss once flushed.
    pub fn append(&self, record: Record) -> Result<Offset> {
        // No one-element Vec: append_records borrows a slice.
        self.append_records(std::slice::from_ref(&record))
            .map(|r| r.start)
    }

    /// Appends records as one batch with consecutive offsets: after a crash either all
    /// of them are there or none.
    pub fn append_batch(&self, records: Vec<Record>) -> Result<Range<Offset>> {
        self.append_records(&records)
    }

    pub(crate) fn append_records(&self, records: &[Record]) -> Result<Range<Offset>> {
        let inner = &*self.inner;
        inner.check_writable()?;
        if records.is_empty() {
            let end = self.end_offset();
            return Ok(end..end);
        }
        if inner.config.cleanup.compacts() && records.iter().any(|r| r.key.is_none()) {
            return Err(Error::MissingKey);
        }
        let max_batch = u64::from(inner.config.max_batch_bytes);
        let predicted = batch::encoded_len(records) as u64;
        if predicted > max_batch {
            return Err(Error::RecordTooLarge {
                size: predicted,
                max: max_batch,
            });
        }
        let last_delta = u32::try_from(records.len() - 1).map_err(|_| Error::RecordTooLarge {
            size: predicted,
            max: max_batch,
        })?;
        let now = inner.config.clock.now_ms();
        let range = {
            let mut w = inner.writer.lock();
            let base = w.next_offset;
            // The offset space is u64: a log whose end was planted near u64::MAX (a
            // checkpoint or file name) has no room left, which is an error, not a panic.
            if base.checked_add(records.len() as u64).is_none() {
                return Err(Error::OffsetOutOfRange {
                    offset: base,
                    start: self.start_offset(),
                    end: base,
                });
            }
            w.scratch.clear();
            let meta = BatchMeta {
                base_offset: base,
                last_offset_delta: last_delta,
                append_time: now,
                delete_horizon: None,
            };
            let parts = records
                .iter()
                .enumerate()
                .map(|(i, r)| RecordParts::from_record(r, i as u32, now));
            let mut scratch = std::mem::take(&mut w.scratch);
            let encoded = batch::encode(&mut scratch, meta, parts);
            let result = inner.write_batch(
                &mut w,
                &scratch,
                base,
                last_delta,
                encoded.max_timestamp,
                now,
            );
            w.scratch = scratch;
            result?;
            w.records_since_flush += records.len() as u64;
            base..base + records.len() as u64
        };
        inner
            .counters
            .records_appended
            .fetch_add(records.len() as u64, AtomicOrdering::Relaxed);
        inner
            .counters
            .batches_appended
            .fetch_add(1, AtomicOrdering::Relaxed);
        inner.appended.notify();
        match inner.config.flush {
            FlushPolicy::Always => self.flush_to(range.end)?,
            FlushPolicy::EveryRecords(n) => {
                let due = {
                    let mut w = inner.writer.lock();
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
            FlushPolicy::Interval(_) | FlushPolicy::Manual => {}
        }
        Ok(range)
    }

    /// Makes every record below [`Log::end_offset`] (at the time of the call) durable.
    /// Concurrent callers share one fsync (group commit).
    pub fn flush(&self) -> Result<()> {
        self.inner.check_open()?;
        self.flush_to(self.end_offset())
    }

    fn flush_to(&self, target: Offset) -> Result<()> {
        let inner = &*self.inner;
        let mut st = inner.flush_state.lock();
        loop {
            if let Some(reason) = inner.poisoned.lock().clone() {
                return Err(Error::Poisoned { reason });
            }
            if st.durable_offset >= target {
                return Ok(());
            }
            if !st.syncing {
                st.syncing = true;
                break;
            }
            inner.flush_done.wait(&mut st);
        }
        drop(st);
        let result = inner.sync_now();
        let mut st = inner.flush_state.lock();
        st.syncing = false;
        if let Ok(durable) = result {
            st.durable_offset = st.durable_offset.max(durable);
            inner
                .durable_offset
                .fetch_max(durable, AtomicOrdering::AcqRel);
        }
        inner.flush_done.notify_all();
        drop(st);
        inner.counters.flushes.fetch_add(1, AtomicOrdering::Relaxed);
        result.map(|_| ())
    }

    /// Reads the record at `offset`: `Ok(None)` when compaction removed it or it is at
    /// or past the end; [`Error::OffsetOutOfRange`] below the start offset.
    pub fn read(&self, offset: Offset) -> Result<Option<StoredRecord>> {
        self.inner.check_open()?;
        let start = self.start_offset();
        let end = self.end_offset();
        if offset < start {
            return Err(Error::OffsetOutOfRange { offset, start, end });
        }
        if offset >= end {
            return Ok(None);
        }
        let Some(segment) = self.inner.segment_for(offset) else {
            return Ok(None);
        };
        let Some(found) = segment.find_batch(offset)? else {
            return Ok(None);
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
    pub fn reader(&self, from: Offset) -> Result<LogReader> {
        self.inner.check_open()?;
        Ok(LogReader::new(self.clone(), from.max(self.start_offset())))
    }

    /// The first offset whose record has a timestamp at or after `ms`.
    pub fn offset_for_timestamp(&self, ms: i64) -> Result<Option<Offset>> {
        self.inner.check_open()?;
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
    pub fn durable_offset(&self) -> Offset {
        self.inner.durable_offset.load(AtomicOrdering::Acquire)
    }

    /// Raises the start offset to `offset` (at most the end offset) durably; reads
    /// below it fail with [`Error::OffsetOutOfRange`] from now on. Whole segments below
    /// it are deleted by the next retention pass.
    pub fn delete_records_before(&self, offset: Offset) -> Result<()> {
        let inner = &*self.inner;
        inner.check_writable()?;
        let _w = inner.writer.lock();
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

    /// CRC-checks every batch, decodes every record and cross-checks the indexes.
    /// Corrupt stretches are reported in the result, not as an error.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.inner.check_open()?;
        let segments = self.inner.snapshot();
        let mut report = VerifyReport::default();
        for segment in segments.iter() {
            recovery::verify_segment(segment, &mut report)?;
        }
        Ok(report)
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
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
    pub fn stats(&self) -> LogStats {
        let inner = &*self.inner;
        let segments = inner.snapshot();
        let c = &inner.counters;
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
        }
    }

    /// Flushes, trims the active segment and its indexes, writes the clean-shutdown
    /// marker and releases the directory lock. Every other handle of this log then
    /// gets [`Error::Closed`].
    pub fn close(self) -> Result<()> {
        self.inner.close()
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

    fn check_writable(&self) -> Result<()> {
        self.check_open()?;
        if let Some(reason) = self.poisoned.lock().clone() {
            return Err(Error::Poisoned { reason });
        }
        Ok(())
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(AtomicOrdering::Acquire)
    }

    /// Marks the log unusable for writes after a failed write or fsync: the state on
    /// disk is unknown, so the only safe way on is to reopen and recover.
    fn poison(&self, err: &Error) {
        let mut p = self.poisoned.lock();
        if p.is_none() {
            *p = Some(err.to_string());
        }
    }

    pub fn snapshot(&self) -> Arc<Vec<Arc<Segment>>> {
        Arc::clone(&self.segments.read())
    }

    /// The segment that would hold `offset`: the last one based at or below it.
    pub fn segment_for(&self, offset: Offset) -> Option<Arc<Segment>> {
        let segments = self.snapshot();
        let i = segments.partition_point(|s| s.base_offset <= offset);
        i.checked_sub(1).map(|i| Arc::clone(&segments[i]))
    }

    /// Writer only: puts one encoded batch at the end of the active segment, rolling
    /// first when it must.
    fn write_batch(
        &self,
        w: &mut Writer,
        bytes: &[u8],
        base: Offset,
        last_delta: u32,
        max_ts: i64,
        now: i64,
    ) -> Result<()> {
        let len = bytes.len() as u64;
        if self.must_roll(w, len, base + u64::from(last_delta), now) {
            self.roll(w).inspect_err(|e| self.poison(e))?;
        }
        let capacity = self.config.segment_capacity();
        let end = w.position + len;
        assert!(
            end <= capacity,
            "a batch of at most max_batch_bytes fits an empty segment"
        );
        if end > w.allocated {
            let target = (w.allocated + ALLOC_CHUNK_BYTES).max(end).min(capacity);
            w.active
                .file()?
                .allocate(target)
                .map_err(|e| Error::io("allocate segment", w.active.path(), e))
                .inspect_err(|e| self.poison(e))?;
            w.allocated = target;
        }
        let interval = u64::from(self.config.index_interval_bytes);
        let index_ts = (w.bytes_since_index >= interval).then_some(w.max_timestamp);
        // Assert what is written just before writing it.
        debug_assert!(batch::decode(bytes).is_ok_and(|b| b.base_offset == base));
        let next = base + u64::from(last_delta) + 1;
        w.active
            .append(w.position, bytes, (base, next, max_ts, now), index_ts)
            .inspect_err(|e| self.poison(e))?;
        if index_ts.is_some() {
            w.bytes_since_index = 0;
        }
        w.bytes_since_index = w.bytes_since_index.saturating_add(len);
        w.position = end;
        w.next_offset = next;
        w.max_timestamp = w.max_timestamp.max(max_ts);
        if w.first_append_time == i64::MIN {
            w.first_append_time = now;
        }
        self.end_offset.store(next, AtomicOrdering::SeqCst);
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
        let entries = w.active.index_entries() as u64 + 1;
        let index_limit = u64::from(self.config.segment_index_bytes);
        if entries * index::TIME_ENTRY_LEN as u64 > index_limit {
            return true;
        }
        index::relative(w.active.base_offset, last_offset).is_none()
    }

    /// Seals the active segment and starts a new one at the next offset.
    pub fn roll(&self, w: &mut Writer) -> Result<()> {
        w.active.seal()?;
        let fs = &self.config.fs;
        let capacity = self.config.segment_capacity();
        let segment = Arc::new(Segment::create(
            fs,
            &self.dir,
            w.next_offset,
            capacity,
            ALLOC_CHUNK_BYTES.min(capacity),
        )?);
        let old = std::mem::replace(&mut w.active, Arc::clone(&segment));
        old.set_next_offset(w.next_offset);
        w.unsynced.push(old);
        w.dir_dirty = true;
        w.position = 0;
        w.allocated = segment
            .file()?
            .size()
            .map_err(|e| Error::io("stat segment", segment.path(), e))?;
        w.bytes_since_index = u64::MAX;
        w.max_timestamp = i64::MIN;
        w.first_append_time = i64::MIN;
        let mut list = self.segments.write();
        let mut next: Vec<Arc<Segment>> = list.iter().cloned().collect();
        next.push(segment);
        *list = Arc::new(next);
        self.counters.rolls.fetch_add(1, AtomicOrdering::Relaxed);
        Ok(())
    }

    /// fsyncs everything appended so far and records the new recovery point; returns
    /// the offset now durable. A failure poisons the log.
    fn sync_now(&self) -> Result<Offset> {
        let (rolled, active, position, end, dir_dirty) = {
            let mut w = self.writer.lock();
            let dirty = std::mem::take(&mut w.dir_dirty);
            (
                std::mem::take(&mut w.unsynced),
                Arc::clone(&w.active),
                w.position,
                w.next_offset,
                dirty,
            )
        };
        let result = (|| {
            for s in &rolled {
                s.sync()?;
                self.counters.fsyncs.fetch_add(1, AtomicOrdering::Relaxed);
            }
            active.sync()?;
            self.counters.fsyncs.fetch_add(1, AtomicOrdering::Relaxed);
            if dir_dirty {
                self.config
                    .fs
                    .sync_dir(&self.dir)
                    .map_err(|e| Error::io("sync directory", &self.dir, e))?;
                self.counters.fsyncs.fetch_add(1, AtomicOrdering::Relaxed);
            }
            // The data is durable: the recovery point may now move (written, synced
            // later; it is never ahead of durable data).
            let mut w = self.writer.lock();
            w.recovery_point.write(RecoveryPoint {
                segment: active.base_offset,
                position,
                offset: end,
            })?;
            if dir_dirty {
                w.recovery_point.sync()?;
            }
            Ok(end)
        })();
        if let Err(e) = &result {
            self.poison(e);
        }
        result
    }

    fn close(&self) -> Result<()> {
        if self.closed.swap(true, AtomicOrdering::AcqRel) {
            return Err(Error::Closed);
        }
        self.stop_background();
        self.appended.wake_all();
        let result = self.write_clean_shutdown();
        self.unlink_due(i64::MAX, true);
        // Release the directory even when the final flush failed.
        self.lock.lock().take();
        result
    }

    fn stop_background(&self) {
        *self.shutdown.stop.lock() = true;
        self.shutdown.cv.notify_all();
        let handles = std::mem::take(&mut *self.background.lock());
        let me = std::thread::current().id();
        for h in handles {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }

    fn write_clean_shutdown(&self) -> Result<()> {
        if let Some(reason) = self.poisoned.lock().clone() {
            return Err(Error::Poisoned { reason });
        }
        let fs = &*self.config.fs;
        let mut w = self.writer.lock();
        let active = Arc::clone(&w.active);
        let position = w.position;
        let result = (|| {
            active.seal()?;
            w.allocated = position;
            for s in std::mem::take(&mut w.unsynced) {
                s.sync()?;
            }
            active.sync()?;
            for suffix in [
                crate::segment::INDEX_SUFFIX,
                crate::segment::TIMEINDEX_SUFFIX,
            ] {
                let p = crate::segment::file_path(&self.dir, active.base_offset, suffix);
                if let Ok(f) = fs.open(&p, crate::fs::OpenMode::Write) {
                    f.sync_data().map_err(|e| Error::io("sync index", &p, e))?;
                }
            }
            let offset = w.next_offset;
            w.recovery_point.write(RecoveryPoint {
                segment: active.base_offset,
                position,
                offset,
            })?;
            w.recovery_point.sync()?;
            let marker = self.dir.join(checkpoint::CLEAN_SHUTDOWN);
            let f = fs
                .open(&marker, crate::fs::OpenMode::Create)
                .map_err(|e| Error::io("create clean-shutdown marker", &marker, e))?;
            f.sync_data()
                .map_err(|e| Error::io("sync clean-shutdown marker", &marker, e))?;
            fs.sync_dir(&self.dir)
                .map_err(|e| Error::io("sync directory", &self.dir, e))
        })();
        if let Err(e) = &result {
            drop(w);
            self.poison(e);
        }
        result
    }
}

/// Tells background threads to stop; shared with them apart from the log itself.
#[derive(Debug, Default)]
pub(crate) struct Shutdown {
    stop: Mutex<bool>,
    cv: Condvar,
}

impl Shutdown {
    /// Waits up to `every` for shutdown; true when shutting down.
    fn wait(&self, every: Duration) -> bool {
        let mut stop = self.stop.lock();
        if !*stop {
            self.cv.wait_for(&mut stop, every);
        }
        *stop
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

/// Runs `work` every `every` until the log is closed or dropped. Holds only a weak
/// reference between runs, so it never keeps the log open.
pub(crate) fn background_loop(
    weak: Weak<LogInner>,
    shutdown: &Shutdown,
    every: Duration,
    work: impl Fn(&Log) -> Result<()>,
) {
    loop {
        if shutdown.wait(every) {
            return;
        }
        let Some(inner) = weak.upgrade() else { return };
        if inner.is_closed() {
            return;
        }
        let log = Log { inner };
        // Errors poison the log; the next user call reports them.
        let _ = work(&log);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimFs;

    fn sim_config(fs: &SimFs) -> LogConfig {
        LogConfig {
            fs: Arc::new(fs.clone()),
            background: false,
            flush: FlushPolicy::Manual,
            segment_bytes: 64 << 10,
            max_batch_bytes: 16 << 10,
            ..LogConfig::default()
        }
    }

    /// Found by fuzz/open_dir: a log-start-offset checkpoint at the top of the offset
    /// space made the next append overflow (a panic in debug builds, a wrap to offset
    /// 0 in release).
    #[test]
    fn append_at_the_end_of_the_offset_space_is_an_error() {
        let fs = SimFs::new(0);
        fs.write_file(
            "/log/log-start-offset",
            &checkpoint::encode_offset(u64::MAX - 1),
        )
        .unwrap();
        let log = Log::open("/log", sim_config(&fs)).unwrap();
        assert_eq!(log.end_offset(), u64::MAX - 1);
        assert_eq!(log.append(Record::new("last")).unwrap(), u64::MAX - 1);
        assert_eq!(log.end_offset(), u64::MAX);
        assert!(matches!(
            log.append(Record::new("no room")),
            Err(Error::OffsetOutOfRange { .. })
        ));
        assert!(matches!(
            log.append_batch(vec![Record::new("a"), Record::new("b")]),
            Err(Error::OffsetOutOfRange { .. })
        ));
        assert_eq!(
            log.read(u64::MAX - 1).unwrap().unwrap().value.as_deref(),
            Some(&b"last"[..])
        );
        log.close().unwrap();
    }
}
