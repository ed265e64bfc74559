//! Retention: deleting a prefix of whole segments by time, by size and below the start
//! offset, with the files renamed `.deleted` at once and unlinked after a delay.
//!
//! Crash safety, step by step (each step durable before the next):
//! 1. the new start offset is checkpointed (durable replace);
//! 2. the segments leave the in-memory list (readers holding them keep reading);
//! 3. their files are renamed `.deleted` and the directory is fsynced;
//! 4. after `file_delete_delay` they are unlinked.
//!
//! A crash before 1 changes nothing. Between 1 and 3 the segments are still on disk
//! but below the checkpointed start offset: open reads the start offset from the
//! checkpoint and the next pass deletes them again. After 3, open deletes the
//! `.deleted` files. At no point is a record at or above the start offset removed.
//!
//! Consumer floors are checked in the same critical section as the deletion they
//! guard (time of check = time of use): a pass holds `RetentionState::pass` from
//! asking the floors until the start offset and the segment list are updated, and
//! everything that can make a floor go down takes the same lock. The floors are the
//! positions of the protecting cursors (see cursor.rs: known in memory, no file read
//! per pass), the holds open hooks place for floors they cannot know, and the
//! functions registered with [`Log::add_retention_floor`]. A cursor's floor goes down
//! when it is created (at the start offset or below a position), when a commit moves
//! it down, and when `protect` is switched on: each of these holds `pass`. Every other
//! change raises it. A function registered with [`Log::add_retention_floor`] is asked
//! under the same lock; it must not return less than before for records a pass may
//! already be deleting.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::checkpoint;
use crate::config::CleanupPolicy;
use crate::log::{Log, LogInner};
use crate::recovery::DELETED_SUFFIX;
use crate::segment::{self, Segment, SegmentMeta};
use crate::stats::RetentionReport;
use crate::{Offset, Result};

/// A function retention asks for the lowest offset a consumer still needs.
pub(crate) type FloorFn = Arc<dyn Fn() -> Option<Offset> + Send + Sync>;

/// Retention's state inside a log.
#[derive(Default)]
pub(crate) struct RetentionState {
    /// Held for a whole pass, from asking the floors to the deletion (see the module
    /// docs), and by whatever lowers a floor.
    pub pass: Mutex<()>,
    floors: Mutex<Vec<FloorFn>>,
    pending: Mutex<Vec<PendingDelete>>,
    /// Segments the last pass kept only because a consumer floor protected them.
    pub held_segments: AtomicU64,
    /// The lowest consumer floor at the last pass, plus one (0: none).
    pub last_floor_plus_one: AtomicU64,
}

impl std::fmt::Debug for RetentionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetentionState")
            .field("floors", &self.floors.lock().len())
            .field("pending", &self.pending.lock().len())
            .finish()
    }
}

#[derive(Debug)]
struct PendingDelete {
    due_ms: i64,
    paths: Vec<PathBuf>,
}

/// The timestamp retention judges a segment by: its newest record, but never later
/// than when it was appended, so a record stamped in the future cannot pin the log.
fn retention_timestamp(meta: &SegmentMeta) -> i64 {
    meta.max_timestamp.min(meta.max_append_time)
}

impl Log {
    /// Deletes the oldest whole segments that retention rules allow: older than
    /// `retention_ms`, beyond `retention_bytes`, or wholly below the start offset.
    /// Protecting cursors ([`Log::cursor`]) and consumer floors (see
    /// [`Log::add_retention_floor`]) hold back time and size retention, never an
    /// explicit [`Log::delete_records_before`]; a damaged cursor file holds back
    /// everything (see [`crate::LogStats::damaged_floor_files`]).
    ///
    /// ```
    /// use logqueue::{Log, LogConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let config = LogConfig { segment_bytes: 1024, retention_bytes: Some(4096), ..LogConfig::default() };
    /// let log = Log::open(dir.path(), config).unwrap();
    /// for _ in 0..200 { log.append(Record::new(vec![0u8; 100])).unwrap(); }
    /// let report = log.enforce_retention().unwrap();
    /// assert!(report.segments_deleted > 0);
    /// assert_eq!(report.start_offset, log.start_offset());
    /// ```
    pub fn enforce_retention(&self) -> Result<RetentionReport> {
        self.inner.refuse_read_only()?;
        crate::trace::pass("retention", || self.inner.retention_pass())
    }

    /// Registers a function returning the lowest offset some consumer still needs
    /// (`None`: nothing needed). Time and size retention never delete a segment
    /// holding an offset at or above it.
    pub fn add_retention_floor(&self, floor: impl Fn() -> Option<Offset> + Send + Sync + 'static) {
        self.inner.retention.floors.lock().push(Arc::new(floor));
    }
}

impl LogInner {
    pub(crate) fn retention_pass(&self) -> Result<RetentionReport> {
        self.check_open()?;
        let now = self.config.clock.now_ms();
        self.unlink_due(now, false);
        // Until the segments below the floor are out of the list and the start offset
        // moved: no floor can go down in between (see the module docs).
        let _pass = self.retention.pass.lock();
        let floor = self.retention_floor();
        self.retention
            .last_floor_plus_one
            .store(floor.map_or(0, |f| f.saturating_add(1)), Ordering::Relaxed);
        let limits = self.time_and_size_limits();
        let mut report = RetentionReport::default();
        // Not the append lock: the start-offset checkpoint is written under this
        // one. Rolls go on meanwhile, but only append to the segment list.
        let _maintenance = self.maintenance.lock();
        self.check_writable()?;
        let (retired, held) = self.unlist_expired(now, floor, limits)?;
        self.retention.held_segments.store(held, Ordering::Relaxed);
        report.start_offset = self.start_offset.load(Ordering::Acquire);
        if retired.is_empty() {
            return Ok(report);
        }
        self.retire_files(&retired, now, &mut report)?;
        Ok(report)
    }

    /// The lowest offset a registered floor or a protecting cursor still needs.
    fn retention_floor(&self) -> Option<Offset> {
        let floors: Vec<FloorFn> = self.retention.floors.lock().clone();
        let (cursors, _) = self.cursors.floor();
        floors.iter().filter_map(|f| f()).chain(cursors).min()
    }

    /// The time (milliseconds) and size limits that apply to this log.
    fn time_and_size_limits(&self) -> (Option<i64>, Option<u64>) {
        // A log that only compacts keeps every key's latest record however old: time
        // and size retention apply to `Delete` and `CompactAndDelete` (as Kafka's
        // cleanup.policy); the start-offset rule applies to all.
        let deletes = self.config.cleanup != CleanupPolicy::Compact;
        let retention_ms = self
            .config
            .retention_ms
            .filter(|_| deletes)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let retention_bytes = self.config.retention_bytes.filter(|_| deletes);
        (retention_ms, retention_bytes)
    }

    /// Takes the expired segments off the front of the list (rolling first when the
    /// active one alone has expired) and moves the start offset past them; returns
    /// them, and how many segments a floor holds back. Called with the retention pass
    /// and maintenance locks held.
    fn unlist_expired(
        &self,
        now: i64,
        floor: Option<Offset>,
        (retention_ms, retention_bytes): (Option<i64>, Option<u64>),
    ) -> Result<(Vec<Arc<Segment>>, u64)> {
        let mut held = 0u64;
        let start = self.start_offset.load(Ordering::Acquire);
        let mut segments = self.snapshot();
        let mut total: u64 = segments.iter().map(|s| s.published()).sum();
        let mut count = 0;
        while count < segments.len() {
            let seg = Arc::clone(&segments[count]);
            let active = count == segments.len() - 1;
            let next_base = if active {
                self.end_offset.load(Ordering::Acquire)
            } else {
                segments[count + 1].base_offset
            };
            let by_start = !active && next_base <= start;
            let by_time = match retention_ms {
                // A sealed segment compaction emptied holds nothing to keep.
                Some(_) if seg.published() == 0 && !active => true,
                Some(r) if seg.published() > 0 => {
                    let ts = retention_timestamp(&seg.meta()?);
                    ts != i64::MIN && ts < now.saturating_sub(r)
                }
                _ => false,
            };
            let by_size =
                !active && retention_bytes.is_some_and(|limit| total - seg.published() >= limit);
            let protected = floor.is_some_and(|f| next_base > f);
            if !(by_start || ((by_time || by_size) && !protected)) {
                if (by_time || by_size) && protected {
                    held = (segments.len() - count) as u64;
                }
                break;
            }
            if active {
                // The active segment alone has expired: roll (unless an append
                // rolled meanwhile), then delete it.
                let mut w = self.lock_writer();
                w.wait_for_gate(&self.writer_gate);
                self.check_writable()?;
                if Arc::ptr_eq(&w.active, &seg) {
                    self.roll(&mut w)?;
                }
                drop(w);
                segments = self.snapshot();
            }
            total -= seg.published();
            count += 1;
        }
        let retired = if count == 0 {
            Vec::new()
        } else {
            self.unlist_first(&segments, start, count)?
        };
        Ok((retired, held))
    }

    /// Writes the new start offset, drops the first `count` of `segments` from the
    /// list, and returns them.
    fn unlist_first(
        &self,
        segments: &[Arc<Segment>],
        start: Offset,
        count: usize,
    ) -> Result<Vec<Arc<Segment>>> {
        let remaining = &segments[count..];
        let new_start = start.max(remaining[0].base_offset);
        if new_start > start {
            checkpoint::durable_replace(
                &*self.config.fs,
                &self.dir,
                checkpoint::LOG_START_OFFSET,
                &checkpoint::encode_offset(new_start),
            )?;
            self.start_offset.store(new_start, Ordering::Release);
        }
        // The version swap, from the list as it is now: rolls may have
        // appended to it since the snapshot, nothing else changed it.
        let mut list = self.segments.write();
        debug_assert!(list[..count]
            .iter()
            .zip(&segments[..count])
            .all(|(a, b)| Arc::ptr_eq(a, b)));
        *list = Arc::new(list[count..].to_vec());
        drop(list);
        // Sealed segments waiting for their fsync no longer need it.
        self.lock_writer()
            .unsynced
            .retain(|s| !segments[..count].iter().any(|r| Arc::ptr_eq(r, s)));
        Ok(segments[..count].to_vec())
    }

    /// Renames the files of the `retired` segments `.deleted` and schedules their
    /// unlinking; counts them in `report`.
    fn retire_files(
        &self,
        retired: &[Arc<Segment>],
        now: i64,
        report: &mut RetentionReport,
    ) -> Result<()> {
        let mut paths = Vec::new();
        for seg in retired {
            // Open and map for good before renaming, so readers holding the segment
            // keep reading it (the cache of open segments must not release it).
            let _ = seg.keep_open();
            seg.retired.store(true, Ordering::Release);
            report.segments_deleted += 1;
            report.bytes_deleted += seg.published();
            for suffix in [
                segment::LOG_SUFFIX,
                segment::INDEX_SUFFIX,
                segment::TIMEINDEX_SUFFIX,
            ] {
                let p = segment::file_path(&self.dir, seg.base_offset, suffix);
                if self.config.fs.exists(&p) {
                    paths.push(p);
                }
            }
        }
        let renamed =
            checkpoint::retire_files(&*self.config.fs, &self.dir, &paths, DELETED_SUFFIX)?;
        let delay_ms = i64::try_from(self.config.file_delete_delay.as_millis()).unwrap_or(i64::MAX);
        self.retention.pending.lock().push(PendingDelete {
            due_ms: now.saturating_add(delay_ms),
            paths: renamed,
        });
        self.unlink_due(now, false);
        Ok(())
    }

    /// Unlinks `paths` (already renamed `.deleted`) after `file_delete_delay`.
    pub(crate) fn schedule_unlink(&self, paths: Vec<PathBuf>) {
        let now = self.config.clock.now_ms();
        let delay_ms = i64::try_from(self.config.file_delete_delay.as_millis()).unwrap_or(i64::MAX);
        self.retention.pending.lock().push(PendingDelete {
            due_ms: now.saturating_add(delay_ms),
            paths,
        });
        self.unlink_due(now, false);
    }

    /// Unlinks retired files whose delay has passed (all of them when `all`).
    pub(crate) fn unlink_due(&self, now: i64, all: bool) {
        let due: Vec<PendingDelete> = {
            let mut pending = self.retention.pending.lock();
            let (due, keep) = std::mem::take(&mut *pending)
                .into_iter()
                .partition(|p| all || p.due_ms <= now);
            *pending = keep;
            due
        };
        for p in due.iter().flat_map(|d| &d.paths) {
            // Already gone is fine; anything left is removed at the next open.
            let _ = self.config.fs.remove_file(p);
        }
    }
}
