//! Log configuration.

use std::sync::Arc;
use std::time::Duration;

use crate::batch::HEADER_LEN;
use crate::clock::{Clock, SystemClock};
use crate::fs::{FileSystem, OsFs};
use crate::{Error, Result};

/// When appended records are made durable against power loss (fsync).
///
/// Whatever the policy, a record survives a crash of the process (kill -9) as soon
/// as `append` returns, and each segment sealed by a roll is fsynced right after the
/// roll, off the writer lock (by a background thread, or with `background` off by
/// the appender that rolled), so sealed segments become durable and cleanable
/// under every policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Every append waits for an fsync; concurrent appenders share one (group commit).
    Always,
    /// An fsync after every this many records.
    EveryRecords(u64),
    /// An fsync at this interval: from a background thread, or, with
    /// `LogConfig::background` off, in the first append that finds the interval
    /// passed since the last flush (an idle log is flushed by its next append or
    /// close).
    Interval(Duration),
    /// Only explicit [`crate::Log::flush`] calls fsync the active segment.
    Manual,
}

/// What retention does to old data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupPolicy {
    /// Delete whole old segments by time and size.
    Delete,
    /// Keep the latest record per key; time and size retention do not apply.
    Compact,
    /// Both.
    CompactAndDelete,
}

impl CleanupPolicy {
    /// True when this policy compacts (and so needs a key on every record).
    pub fn compacts(self) -> bool {
        matches!(
            self,
            CleanupPolicy::Compact | CleanupPolicy::CompactAndDelete
        )
    }
}

/// Settings of the compaction cleaner.
#[derive(Clone, Debug, PartialEq)]
pub struct CompactionConfig {
    /// Clean when dirty bytes / all bytes of the non-active segments passes this.
    pub min_cleanable_dirty_ratio: f64,
    /// Records younger than this are never cleaned.
    pub min_lag: Duration,
    /// Clean when a dirty record is older than this, whatever the ratio.
    pub max_lag: Option<Duration>,
    /// How long a tombstone stays after the cleaning that first saw it.
    pub delete_retention: Duration,
    /// Memory of the key map of one cleaning pass.
    pub offset_map_bytes: usize,
    /// Throttle for the cleaner's reads and writes.
    pub max_io_bytes_per_sec: Option<u64>,
    /// How often the background cleaner checks whether a pass is due (5 s).
    pub check_interval: Duration,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            min_cleanable_dirty_ratio: 0.5,
            min_lag: Duration::ZERO,
            max_lag: None,
            delete_retention: Duration::from_secs(24 * 3600),
            offset_map_bytes: 64 << 20,
            max_io_bytes_per_sec: None,
            check_interval: Duration::from_secs(5),
        }
    }
}

/// Configuration of a [`crate::Log`]. `Default` gives the values documented on each field.
///
/// ```
/// use logqueue::{LogConfig, FlushPolicy};
/// let config = LogConfig { segment_bytes: 64 << 20, flush: FlushPolicy::Manual, ..LogConfig::default() };
/// assert_eq!(config.index_interval_bytes, 4096);
/// ```
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Roll to a new segment when the next batch would pass this size (1 GiB).
    pub segment_bytes: u64,
    /// Roll when the segment's first record is older than this (7 days).
    pub segment_ms: Option<Duration>,
    /// Bytes between sparse index entries (4096).
    pub index_interval_bytes: u32,
    /// Maximum size of one index file, its 20-byte trailer included; a full index
    /// rolls the segment (10 MiB).
    pub segment_index_bytes: u32,
    /// Larger appends get [`Error::RecordTooLarge`] (1 MiB).
    pub max_batch_bytes: u32,
    /// When to fsync (every second).
    pub flush: FlushPolicy,
    /// Delete segments whose newest record is older than this (7 days); `None` keeps all.
    /// Not applied when `cleanup` is [`CleanupPolicy::Compact`].
    pub retention_ms: Option<Duration>,
    /// Delete old segments while the log is larger than this (no limit). Not applied
    /// when `cleanup` is [`CleanupPolicy::Compact`].
    pub retention_bytes: Option<u64>,
    /// Delete, compact or both (delete).
    pub cleanup: CleanupPolicy,
    /// Compaction settings.
    pub compaction: CompactionConfig,
    /// Delay between retiring a segment (rename to `.deleted`) and unlinking it (60 s).
    pub file_delete_delay: Duration,
    /// Run the flusher, retention, roll-sync and cleaner threads (true). Without them
    /// retention and compaction run only when called, and appends do the interval
    /// flush and the fsync after a roll themselves.
    pub background: bool,
    /// Most sealed segments kept open (a file descriptor) or mapped at once; others are
    /// opened and mapped on use, the least recently used released past the limit
    /// (default: a quarter of the process's soft file-descriptor limit at the time
    /// `LogConfig::default()` runs, between 16 and 4096; 256 where that limit is not
    /// known). Per log; the active segment and a few segments in transit (waiting for
    /// their post-roll fsync, or retired while readers hold them) come on top.
    pub max_open_segments: usize,
    /// How often the background thread runs retention (5 s).
    pub retention_check_interval: Duration,
    /// The source of time (the system clock).
    pub clock: Arc<dyn Clock>,
    /// The file system (the operating system's).
    pub fs: Arc<dyn FileSystem>,
    /// The dedup window of [`crate::Log::append_idempotent`] (`None`: idempotent
    /// appends are refused with [`Error::InvalidConfig`]).
    pub dedup: Option<DedupConfig>,
}

/// The dedup window of a log ([`crate::Log::append_idempotent`]): an id is remembered
/// while its record is younger than `window` (by the later of the record's timestamp
/// and its append time: an old timestamp does not shorten it) and among the newest
/// `max_ids` ids. Both bounds
/// apply; about 37 bytes of memory per id at a full window.
///
/// ```
/// use std::time::Duration;
/// use logqueue::{DedupConfig, LogConfig};
/// let config = LogConfig {
///     dedup: Some(DedupConfig { window: Duration::from_secs(300), max_ids: 1_000_000 }),
///     ..LogConfig::default()
/// };
/// # let _ = config;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DedupConfig {
    /// How long an id is remembered (positive).
    pub window: Duration,
    /// How many ids are remembered at most (positive, at most 2^32).
    pub max_ids: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: Some(Duration::from_secs(7 * 24 * 3600)),
            index_interval_bytes: 4096,
            segment_index_bytes: 10 << 20,
            max_batch_bytes: 1 << 20,
            flush: FlushPolicy::Interval(Duration::from_secs(1)),
            retention_ms: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
            cleanup: CleanupPolicy::Delete,
            compaction: CompactionConfig::default(),
            file_delete_delay: Duration::from_secs(60),
            background: true,
            retention_check_interval: Duration::from_secs(5),
            max_open_segments: default_max_open_segments(),
            clock: Arc::new(SystemClock),
            fs: Arc::new(OsFs),
            dedup: None,
        }
    }
}

/// A quarter of the soft `RLIMIT_NOFILE`, in `[16, 4096]`: room for the other files of
/// the log (indexes while loading, checkpoints, queues) and of the program. 4096 also
/// keeps a handful of logs well below Linux's default `vm.max_map_count` (65530).
fn default_max_open_segments() -> usize {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass and nothing else.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            let soft = usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX);
            return (soft / 4).clamp(16, 4096);
        }
    }
    256
}

/// Largest segment: positions in the offset index are u32.
pub(crate) const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;

impl LogConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::InvalidConfig(why));
        if self.segment_bytes < HEADER_LEN as u64 || self.segment_bytes > MAX_SEGMENT_BYTES {
            return bad(format!(
                "segment_bytes must be in [{HEADER_LEN}, {MAX_SEGMENT_BYTES}], got {}",
                self.segment_bytes
            ));
        }
        if (self.max_batch_bytes as usize) < HEADER_LEN {
            return bad(format!("max_batch_bytes must be at least {HEADER_LEN}"));
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes must be positive".into());
        }
        if self.segment_index_bytes < 64 {
            return bad("segment_index_bytes must be at least 64".into());
        }
        if self.flush == FlushPolicy::EveryRecords(0) {
            return bad("FlushPolicy::EveryRecords needs a positive count".into());
        }
        if let FlushPolicy::Interval(d) = self.flush {
            if d.is_zero() {
                return bad("FlushPolicy::Interval needs a positive interval".into());
            }
        }
        if self.max_open_segments == 0 {
            return bad("max_open_segments must be positive".into());
        }
        if self.retention_check_interval.is_zero() {
            return bad("retention_check_interval must be positive".into());
        }
        if self.compaction.check_interval.is_zero() {
            return bad("compaction.check_interval must be positive".into());
        }
        if let Some(dedup) = &self.dedup {
            crate::dedup::validate(dedup, self)?;
        }
        let ratio = self.compaction.min_cleanable_dirty_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return bad(format!(
                "min_cleanable_dirty_ratio must be in [0, 1], got {ratio}"
            ));
        }
        Ok(())
    }

    /// Bytes the active segment can grow to: room for one batch of the largest size
    /// even when that is larger than `segment_bytes`.
    pub(crate) fn segment_capacity(&self) -> u64 {
        self.segment_bytes
            .max(u64::from(self.max_batch_bytes))
            .min(MAX_SEGMENT_BYTES)
    }
}
