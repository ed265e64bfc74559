//! The compaction cleaner: keeps the newest record of every key, at its original
//! offset, and drops tombstones once their horizon has passed.
//!
//! A pass:
//! 1. picks the cleanable segments: the longest prefix of non-active segments that is
//!    durable, below the segment the recovery point names (so recovery never scans a
//!    rewritten segment as its tail, where offset gaps would be taken for lost data),
//!    and older than `min_lag`;
//! 2. maps key hash → newest offset over the dirty records (from the `cleaner-offset`
//!    checkpoint on) in a fixed-size [`OffsetMap`]; if it fills, the pass cleans only
//!    up to the record where it stopped, and the next pass goes on from there;
//! 3. rewrites the cleanable segments in groups of at most `segment_bytes`, keeping a
//!    record unless a newer one with its key is mapped, or it is a tombstone whose
//!    batch's delete horizon has passed. A batch keeps its base and last offset (so
//!    offsets keep their gaps); a batch with no record left disappears. A batch whose
//!    kept tombstones are seen by a cleaning for the first time gets the horizon
//!    `now + delete_retention` in its header (as Kafka's KIP-534);
//! 4. swaps each rewritten group in (see [`LogInner::swap_group`]) and checkpoints the
//!    new cleaner offset.
//!
//! Crash safety of a swap, each step durable before the next:
//! `<base>.log.cleaned` written and fsynced → renamed to `<base>-<end>.log.swap` (the
//! name says which offsets it replaces) → the old segments' files renamed `.deleted`
//! → the swap file renamed to `<base>.log`. Open deletes `.cleaned` and `.deleted`
//! files and completes a `.swap` by removing every segment based in `(base, end)` and
//! renaming it into place. The cleaner offset is checkpointed only after the swaps: a
//! crash before that makes the next pass clean the same records again, which is
//! harmless.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::checkpoint;
use crate::index::{self, Indexes};
use crate::log::{Log, LogInner};
use crate::segment::{Segment, SegmentMeta};
use crate::stats::CompactionReport;
use crate::{Offset, Result};

mod group;
mod pass;

use pass::{build_map, min_opt, scan_tombstone_horizons};

/// Name of the cleaner-offset checkpoint: every record below it has been cleaned.
pub(crate) const CLEANER_OFFSET: &str = "cleaner-offset";
/// Bytes buffered before a write to the `.cleaned` file.
const WRITE_CHUNK: usize = 1 << 20;
/// Bytes of I/O between two throttle checks.
const THROTTLE_STEP: u64 = 64 << 10;

/// The cleaner's state inside a log.
#[derive(Debug, Default)]
pub(crate) struct CleanerState {
    /// Held for a whole pass: one pass at a time.
    pass: Mutex<PassState>,
    /// Passes run since open.
    pub runs: AtomicU64,
    /// The cleaner offset plus one, mirrored for stats (0: not loaded yet).
    offset_plus_one: AtomicU64,
}

#[derive(Debug, Default)]
struct PassState {
    /// The cleaner offset, once read from its checkpoint.
    offset: Option<Offset>,
    /// Earliest delete horizon of a batch holding kept tombstones in the cleaned
    /// segments: `None` unknown (not scanned since open), `Some(None)` no tombstones.
    tombstone_due: Option<Option<i64>>,
}

/// Where the dirty part of the log stands, for stats and the cleaning decision.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DirtyStats {
    pub clean_bytes: u64,
    pub dirty_bytes: u64,
    pub cleaner_offset: Offset,
}

/// One group of segments rewritten into a `.cleaned` file.
struct Cleaned {
    path: PathBuf,
    len: u64,
    indexes: Indexes,
    meta: SegmentMeta,
}

/// What rewriting one group found.
#[derive(Default)]
struct GroupOutcome {
    changed: bool,
    records_removed: u64,
    tombstones_removed: u64,
    bytes_before: u64,
    /// Earliest horizon of a batch written with kept tombstones.
    tombstone_due: Option<i64>,
}

/// Paces the cleaner's reads and writes to `max_io_bytes_per_sec` (real time). Sleeps
/// in short slices and gives up with [`Error::Closed`] when the log is closed, so a
/// slow throttle never holds up `close`.
struct Throttle<'a> {
    rate: Option<u64>,
    start: Instant,
    bytes: u64,
    since_check: u64,
    log: &'a LogInner,
}

impl<'a> Throttle<'a> {
    fn new(rate: Option<u64>, log: &'a LogInner) -> Throttle<'a> {
        Throttle {
            rate: rate.filter(|&r| r > 0),
            start: Instant::now(),
            bytes: 0,
            since_check: 0,
            log,
        }
    }

    fn add(&mut self, bytes: u64) -> Result<()> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        self.bytes += bytes;
        self.since_check += bytes;
        if self.since_check < THROTTLE_STEP {
            return Ok(());
        }
        self.since_check = 0;
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        loop {
            self.log.check_open()?;
            let elapsed = self.start.elapsed();
            if due <= elapsed {
                return Ok(());
            }
            std::thread::sleep((due - elapsed).min(Duration::from_millis(50)));
        }
    }
}

fn to_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Log {
    /// Runs one cleaning pass now, whatever the dirty ratio: flushes, then keeps only
    /// the newest record of every key in the cleanable segments (every non-active
    /// segment, unless `min_lag` holds some back), and drops tombstones whose delete
    /// horizon has passed. With a small `offset_map_bytes` a pass may clean only part
    /// of the dirty records; the next pass goes on. Removed offsets read as `Ok(None)`.
    ///
    /// ```
    /// use logqueue::{CleanupPolicy, Log, LogConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let config = LogConfig { segment_bytes: 1024, cleanup: CleanupPolicy::Compact, ..LogConfig::default() };
    /// let log = Log::open(dir.path(), config).unwrap();
    /// for i in 0..100u32 { log.append(Record::keyed(format!("k{}", i % 5), i.to_string())).unwrap(); }
    /// let report = log.compact().unwrap();
    /// assert!(report.records_removed > 0);
    /// assert_eq!(log.read(0).unwrap(), None);
    /// ```
    pub fn compact(&self) -> Result<CompactionReport> {
        self.inner.check_open()?;
        self.inner.refuse_read_only()?;
        self.flush()?;
        crate::trace::pass("cleaner", || self.inner.clean_pass())
    }
}

impl LogInner {
    /// The background cleaner's check: a pass when the dirty ratio, `max_lag` or due
    /// tombstones call for one.
    pub(crate) fn maybe_clean(&self) -> Result<()> {
        self.check_open()?;
        self.unlink_due(self.config.clock.now_ms(), false);
        if self.should_clean()? {
            crate::trace::pass("cleaner", || self.clean_pass())?;
        }
        Ok(())
    }

    /// Clean bytes, dirty bytes (over the non-active segments) and the cleaner offset.
    pub(crate) fn dirty_stats(&self) -> DirtyStats {
        let cleaner_offset = match self.cleaner.offset_plus_one.load(Ordering::Acquire) {
            0 => {
                let o = self.read_cleaner_offset();
                // Only if no pass stored a newer value meanwhile.
                let _ = self.cleaner.offset_plus_one.compare_exchange(
                    0,
                    o + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                o
            }
            n => n - 1,
        };
        let segments = self.snapshot();
        let mut stats = DirtyStats {
            cleaner_offset,
            ..DirtyStats::default()
        };
        for s in &segments[..segments.len().saturating_sub(1)] {
            if s.next_offset() > cleaner_offset {
                stats.dirty_bytes += s.published();
            } else {
                stats.clean_bytes += s.published();
            }
        }
        stats
    }

    fn read_cleaner_offset(&self) -> Offset {
        let path = self.dir.join(CLEANER_OFFSET);
        checkpoint::read_small(&*self.config.fs, &path)
            .and_then(|b| checkpoint::decode_offset(&b))
            .unwrap_or(0)
            .min(self.end_offset.load(Ordering::Acquire))
    }

    fn cleaner_offset(&self, st: &mut PassState) -> Offset {
        *st.offset.get_or_insert_with(|| {
            let o = self.read_cleaner_offset();
            self.cleaner.offset_plus_one.store(o + 1, Ordering::Release);
            o
        })
    }

    /// How many leading segments a pass may rewrite.
    fn cleanable_count(&self, segments: &[Arc<Segment>], now: i64) -> Result<usize> {
        let rp_segment = self
            .durability
            .lock()
            .recovery_point
            .last()
            .map_or(0, |rp| rp.segment);
        let durable = self.durable_offset.load(Ordering::Acquire);
        let min_lag = to_ms(self.config.compaction.min_lag);
        let mut n = 0;
        for s in &segments[..segments.len().saturating_sub(1)] {
            let next = s.next_offset();
            if next > rp_segment || next > durable {
                break;
            }
            // Age by append time: a record's own timestamp may be far in the past
            // (or future) of when it arrived.
            if min_lag > 0
                && s.published() > 0
                && s.meta()?.max_append_time > now.saturating_sub(min_lag)
            {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    fn should_clean(&self) -> Result<bool> {
        let now = self.config.clock.now_ms();
        let mut st = self.cleaner.pass.lock();
        let co = self.cleaner_offset(&mut st);
        let segments = self.snapshot();
        let n = self.cleanable_count(&segments, now)?;
        if n == 0 {
            return Ok(false);
        }
        let cleanable = &segments[..n];
        if st.tombstone_due.is_none() {
            st.tombstone_due = Some(scan_tombstone_horizons(cleanable, co)?);
        }
        if let Some(Some(due)) = st.tombstone_due {
            if due <= now {
                return Ok(true);
            }
        }
        let dirty: Vec<&Arc<Segment>> = cleanable.iter().filter(|s| s.next_offset() > co).collect();
        if dirty.is_empty() {
            return Ok(false);
        }
        if let Some(max_lag) = self.config.compaction.max_lag {
            let first = dirty[0].meta()?.first_append_time;
            if first != i64::MIN && first <= now.saturating_sub(to_ms(max_lag)) {
                return Ok(true);
            }
        }
        let stats = self.dirty_stats();
        let total = stats.clean_bytes + stats.dirty_bytes;
        Ok(total > 0
            && stats.dirty_bytes as f64 / total as f64
                >= self.config.compaction.min_cleanable_dirty_ratio)
    }

    /// One pass over the cleanable segments.
    pub(crate) fn clean_pass(&self) -> Result<CompactionReport> {
        self.check_writable()?;
        let mut st = self.cleaner.pass.lock();
        let now = self.config.clock.now_ms();
        let co = self.cleaner_offset(&mut st);
        let segments = self.snapshot();
        let n = self.cleanable_count(&segments, now)?;
        let mut report = CompactionReport::default();
        self.cleaner.runs.fetch_add(1, Ordering::Relaxed);
        if n == 0 {
            return Ok(report);
        }
        let cleanable = &segments[..n];
        let clean_end = cleanable[n - 1].next_offset();
        let mut throttle = Throttle::new(self.config.compaction.max_io_bytes_per_sec, self);

        // Pass one: the key map over the dirty records.
        let (map, map_end) = build_map(
            cleanable,
            co,
            self.config.compaction.offset_map_bytes,
            &mut throttle,
        )?;
        let map_end = map_end.max(co).min(clean_end.max(co));

        // Pass two: rewrite in groups.
        let mut tombstone_due: Option<i64> = None;
        let horizon = now.saturating_add(to_ms(self.config.compaction.delete_retention));
        let mut i = 0;
        while i < n {
            let j = self.group_end(cleanable, i);
            let group = &cleanable[i..j];
            i = j;
            let mut outcome = GroupOutcome::default();
            let Some(cleaned) = self.write_group(
                group,
                &map,
                map_end,
                now,
                horizon,
                &mut outcome,
                &mut throttle,
            )?
            else {
                // Not rewritten (unchanged, or unreadable): tombstones still count.
                tombstone_due = min_opt(tombstone_due, outcome.tombstone_due);
                continue;
            };
            let after = cleaned.len;
            if self.swap_group(group, cleaned)? {
                report.segments_cleaned += group.len();
                report.records_removed += outcome.records_removed;
                report.tombstones_removed += outcome.tombstones_removed;
                report.bytes_before += outcome.bytes_before;
                report.bytes_after += after;
                tombstone_due = min_opt(tombstone_due, outcome.tombstone_due);
            } else {
                // The log changed under the pass (retention): try again next time.
                st.tombstone_due = None;
                return Ok(report);
            }
        }
        st.tombstone_due = Some(tombstone_due);
        if map_end > co {
            checkpoint::durable_replace(
                &*self.config.fs,
                &self.dir,
                CLEANER_OFFSET,
                &checkpoint::encode_offset(map_end),
            )?;
            st.offset = Some(map_end);
            self.cleaner
                .offset_plus_one
                .store(map_end + 1, Ordering::Release);
        }
        self.unlink_due(now, false);
        Ok(report)
    }

    /// The end (exclusive index) of the group starting at `i`: neighbours merged while
    /// their bytes fit `segment_bytes` and their offsets fit one segment's indexes.
    fn group_end(&self, segs: &[Arc<Segment>], i: usize) -> usize {
        let base = segs[i].base_offset;
        let limit = self.config.segment_bytes;
        let index_limit = index::max_entries(self.config.segment_index_bytes);
        let interval = u64::from(self.config.index_interval_bytes).max(1);
        let mut bytes = segs[i].published();
        let mut j = i + 1;
        // Offsets missing after a segment (a lost or cut file) must stay visible as a
        // gap between segments: merged, they would look like compacted records.
        while j < segs.len() && !segs[j - 1].has_gap_after() {
            let more = bytes + segs[j].published();
            let span = segs[j].next_offset() - base;
            if more > limit || span > u64::from(u32::MAX) || more / interval + 1 > index_limit {
                break;
            }
            bytes = more;
            j += 1;
        }
        j
    }
}
