//! Reports and statistics returned by the log.

use crate::segment::CorruptRange;
use crate::Offset;

/// One segment, as listed by [`crate::Log::segments`].
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// First offset the segment can hold (its file name).
    pub base_offset: Offset,
    /// Offset after its last record.
    pub next_offset: Offset,
    /// Bytes of batches in the `.log` file.
    pub size_bytes: u64,
    /// Largest record timestamp (`i64::MIN` when empty).
    pub max_timestamp: i64,
    /// True for the segment appends go to.
    pub active: bool,
}

/// Counters and sizes of a log, from [`crate::Log::stats`].
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogStats {
    /// First offset still in the log.
    pub start_offset: Offset,
    /// Next offset to be assigned.
    pub end_offset: Offset,
    /// Everything below is fsynced.
    pub durable_offset: Offset,
    /// Number of segments.
    pub segments: usize,
    /// Bytes of batches over all segments.
    pub size_bytes: u64,
    /// Records appended since open.
    pub records_appended: u64,
    /// Batches appended since open.
    pub batches_appended: u64,
    /// Flush rounds that ran an fsync since open (shared by group commit).
    pub flushes: u64,
    /// fsync calls on segment files and the directory since open.
    pub fsyncs: u64,
    /// Segment rolls since open.
    pub rolls: u64,
    /// Corrupt ranges known (found by recovery, reads or verify).
    pub corrupt_ranges: usize,
    /// Segments the last retention pass would have deleted but kept because a
    /// consumer floor ([`crate::Log::add_retention_floor`]) still needs them.
    pub retention_held_segments: u64,
    /// The lowest consumer floor seen by the last retention pass, if any.
    pub retention_floor: Option<crate::Offset>,
    /// Files that make time and size retention protect everything (floor 0, the
    /// log's start): cursor files (`cursors/<name>.cursor`) that are damaged or
    /// unreadable ([`crate::Log::delete_cursor`] clears them), and consumers an open
    /// hook could not know the floor of, such as a queue of an earlier version whose
    /// `queues/<name>/floor` file is damaged, or a queue with state and no cursor
    /// (opening the queue clears these).
    pub damaged_floor_files: Vec<std::path::PathBuf>,
    /// Bytes of non-active segments wholly below the cleaner offset.
    pub clean_bytes: u64,
    /// Bytes of non-active segments holding records at or above the cleaner offset.
    pub dirty_bytes: u64,
    /// Every record below this offset has been through a compaction pass.
    pub cleaner_offset: Offset,
    /// Compaction passes run since open (by [`crate::Log::compact`] or the cleaner).
    pub cleaner_runs: u64,
    /// The last failure of a background thread since open, as `"<task>: <error>"`
    /// (task: `retention`, `cleaner`, `flusher` or `roll sync`); `None` when none
    /// failed. A failure that put data at risk (an fsync, a compaction swap) has
    /// also poisoned the log; a failed retention pass has not (it is retried).
    pub last_background_error: Option<String>,
}

impl LogStats {
    /// Dirty bytes / (clean + dirty bytes) over the non-active segments (0 when none).
    pub fn dirty_ratio(&self) -> f64 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / total as f64
        }
    }
}

/// What [`crate::Log::verify`] found.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Batches that passed every check.
    pub batches: u64,
    /// Records in them.
    pub records: u64,
    /// Stretches that did not.
    pub corrupt: Vec<CorruptRange>,
}

/// What a retention pass did.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments removed from the log.
    pub segments_deleted: usize,
    /// Their bytes.
    pub bytes_deleted: u64,
    /// The start offset after the pass.
    pub start_offset: Offset,
}

/// What a compaction pass did.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Segments rewritten.
    pub segments_cleaned: usize,
    /// Records dropped because a later record has the same key.
    pub records_removed: u64,
    /// Tombstones dropped after their horizon.
    pub tombstones_removed: u64,
    /// Bytes of the segments before cleaning.
    pub bytes_before: u64,
    /// Bytes after.
    pub bytes_after: u64,
}
