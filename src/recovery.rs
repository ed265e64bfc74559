//! Opening a log directory after whatever a crash left behind: maintenance leftovers,
//! torn or zero-filled tails, missing or garbage indexes, garbage checkpoints.
//!
//! Data below the recovery point was fsynced: a bad batch there is corruption, which
//! is recorded and skipped, never truncated. Above it nothing was promised: the log
//! is cut at the first batch that does not decode or does not continue the offsets.

use std::path::Path;
use std::sync::Arc;

use crate::batch::{self, Batch};
use crate::checkpoint::{self, RecoveryPoint, RecoveryPointFile};
use crate::config::LogConfig;
use crate::crash_history::CrashHistory;
use crate::fs::FileSystem;
use crate::index::{self, Indexes};
use crate::segment::{self, Segment, SegmentCache, SegmentMeta, LOG_SUFFIX};
use crate::stats::VerifyReport;
use crate::{Error, Offset, Result};

mod leftovers;

use leftovers::clean_leftovers;
pub(crate) use leftovers::remove_segment_files;

/// Suffix of a segment retired by retention or compaction, unlinked later.
pub(crate) const DELETED_SUFFIX: &str = ".deleted";
/// Suffix of a segment being written by the cleaner.
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";
/// Suffix of a cleaned segment complete on disk, about to replace the originals.
pub(crate) const SWAP_SUFFIX: &str = ".swap";

pub(crate) struct Recovered {
    pub segments: Vec<Arc<Segment>>,
    pub crash_history: CrashHistory,
    pub start_offset: Offset,
    pub recovery_point_file: RecoveryPointFile,
    /// The bounded set of open sealed segments the segments share.
    pub cache: Arc<SegmentCache>,
}

pub(crate) fn recover(dir: &Path, config: &LogConfig) -> Result<Recovered> {
    let fs = &config.fs;
    let cache = &SegmentCache::new(config.max_open_segments);
    cache.set_write_through_file(write_through_file(&**fs, dir)?);
    let names = clean_leftovers(&**fs, dir)?;
    let mut bases: Vec<Offset> = names
        .iter()
        .filter_map(|n| segment::parse_file_name(n, LOG_SUFFIX))
        .collect();
    bases.sort_unstable();
    // Missing: nothing was ever deleted from the front (retention checkpoints the new
    // start before it deletes a segment). Damaged: Corrupt, because any guess either
    // brings deleted records back (too low) or hides live ones (too high).
    let start_checkpoint =
        checkpoint::read_offset_file(&**fs, &dir.join(checkpoint::LOG_START_OFFSET))?.unwrap_or(0);
    // Read before anything changes: damaged is Corrupt (see crash_history.rs).
    let mut crash_history = CrashHistory::load(&**fs, dir)?;
    let clean = take_clean_shutdown_marker(&**fs, dir)?;
    let (mut rp_file, rp) = RecoveryPointFile::open(&**fs, dir)?;
    // With no segment file at all, start where the recovery point says records ended
    // (an empty or new log: the start offset), so offsets it promised and that are
    // now missing show as a gap below the first segment and are never handed out again.
    let empty_base = start_checkpoint.max(rp.map_or(0, |rp| rp.offset));
    let mut segments = open_segments(fs, cache, dir, config, &bases, empty_base)?;
    let capacity = config.segment_capacity();
    let last = segments.len() - 1;

    if clean {
        let active = &segments[last];
        let meta = active.meta()?;
        active.set_next_offset(meta.last_offset.map_or(active.base_offset, |o| o + 1));
    } else {
        scan_tail(fs, dir, &mut segments, rp)?;
    }
    if let Some(rp) = rp {
        continue_after_lost_durable_records(fs, cache, dir, config, &mut segments, rp.offset)?;
    }

    let end = segments.last().expect("at least one segment").next_offset();
    if start_checkpoint > end {
        // Data above the start offset was lost with an un-flushed tail: start afresh
        // at the start offset, so offsets are never handed out twice.
        crate::trace::event_error!(dir = %dir.display(), start = start_checkpoint, end, "records above the start offset were lost: starting afresh at the start offset");
        for s in segments.drain(..) {
            remove_segment_files(&**fs, dir, s.base_offset)?;
        }
        segments.push(Arc::new(Segment::create(
            fs,
            cache,
            dir,
            start_checkpoint,
            capacity,
            0,
        )?));
    }
    reopen_last_for_appends(fs, cache, dir, config, &mut segments)?;
    // The active segment's index files describe it as it was when they were written.
    // Appends make them stale, and a power loss that cuts the segment back could
    // leave it, after more appends, at their length again with other records: an
    // index of an earlier state that passes every check (its time entries would make
    // `offset_for_timestamp` skip records). They go before any append, durably (the
    // directory sync below); a seal or a clean close writes them anew.
    let active_base = segments.last().expect("at least one segment").base_offset;
    segment::remove_index_files(&**fs, dir, active_base)?;
    // Below the first segment's base and at or above the start offset, offsets are
    // missing (a lost first segment): the start stays where the checkpoint says, so
    // they read as corrupt, not as deleted.
    let start_offset = start_checkpoint;

    make_durable(fs, dir, &segments, &mut rp_file)?;
    if !clean && !bases.is_empty() {
        // (A directory without segments is a new log, not a crash.) Before any append: offsets from this end on may be handed out again, and
        // state kept outside the log (a queue's journal) must be able to tell.
        let end = segments.last().expect("at least one segment").next_offset();
        crash_history.record(&**fs, dir, end)?;
    }
    Ok(Recovered {
        segments,
        crash_history,
        start_offset,
        recovery_point_file: rp_file,
        cache: Arc::clone(cache),
    })
}

/// Removes the clean-shutdown marker (durably) and says whether it was there: from
/// here on a crash must not be taken for a clean shutdown.
/// Set (to anything but `0`) in the environment, forces the write-through-file mode
/// on every file system: how the test suites run the `pwrite` path.
pub(crate) const FORCE_WRITE_THROUGH_FILE: &str = "LOGQUEUE_WRITE_THROUGH_FILE";

/// The log's write mode: through the file where allocated space is not reserved
/// (a store into the mapping could `SIGBUS` on a full disk), or when forced. A file
/// system that cannot be identified, or a platform not supported, fails the open.
fn write_through_file(fs: &dyn FileSystem, dir: &Path) -> Result<bool> {
    let forced = std::env::var_os(FORCE_WRITE_THROUGH_FILE).is_some_and(|v| v != "0");
    let reserves = fs
        .reserves_allocation(dir)
        .map_err(|e| Error::io("identify the file system (statfs)", dir, e))?;
    Ok(forced || !reserves)
}

fn take_clean_shutdown_marker(fs: &dyn FileSystem, dir: &Path) -> Result<bool> {
    let marker = dir.join(checkpoint::CLEAN_SHUTDOWN);
    if !fs.exists(&marker) {
        return Ok(false);
    }
    fs.remove_file(&marker)
        .map_err(|e| Error::io("remove clean-shutdown marker", &marker, e))?;
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))?;
    Ok(true)
}

/// The segments named by `bases` (a new one at `empty_base` when there is none), the
/// last mapped for appends.
fn open_segments(
    fs: &Arc<dyn FileSystem>,
    cache: &Arc<SegmentCache>,
    dir: &Path,
    config: &LogConfig,
    bases: &[Offset],
    empty_base: Offset,
) -> Result<Vec<Arc<Segment>>> {
    let mut segments = Vec::with_capacity(bases.len() + 1);
    for (i, &base) in bases.iter().enumerate() {
        let path = segment::file_path(dir, base, LOG_SUFFIX);
        let len = fs
            .file_size(&path)
            .map_err(|e| Error::io("stat segment", &path, e))?;
        let next = bases.get(i + 1).copied().unwrap_or(base);
        let seg = Segment::new(fs, cache, dir, base, None, len, next);
        seg.set_index_interval(config.index_interval_bytes);
        segments.push(Arc::new(seg));
    }
    let capacity = config.segment_capacity();
    if segments.is_empty() {
        segments.push(Arc::new(Segment::create(
            fs, cache, dir, empty_base, capacity, 0,
        )?));
    }
    let last = segments.last().expect("at least one segment");
    if !last.is_mapped_writable() {
        last.map_writable(capacity.max(last.published()))?;
    }
    Ok(segments)
}

/// Makes everything recovered durable, so the log opens with
/// `durable_offset == end_offset` and a recovery point at the end.
fn make_durable(
    fs: &Arc<dyn FileSystem>,
    dir: &Path,
    segments: &[Arc<Segment>],
    rp_file: &mut RecoveryPointFile,
) -> Result<()> {
    for s in segments {
        if s.was_opened() {
            s.sync()?;
        }
    }
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))?;
    let active = segments.last().expect("at least one segment");
    rp_file.write(RecoveryPoint {
        segment: active.base_offset,
        position: active.published(),
        offset: active.next_offset(),
    })?;
    rp_file.sync()
}

/// The recovery point promised records up to `durable_end`, but the log ends before
/// it: fsynced records were lost (a cut or removed file, not a crash). The last
/// segment is sealed as it is and a new one starts at `durable_end`, so the missing
/// offsets stay a gap that `verify` and reads report, and are never handed out again.
fn continue_after_lost_durable_records(
    fs: &Arc<dyn FileSystem>,
    cache: &Arc<SegmentCache>,
    dir: &Path,
    config: &LogConfig,
    segments: &mut Vec<Arc<Segment>>,
    durable_end: Offset,
) -> Result<()> {
    let last = segments.last().expect("at least one segment");
    if last.next_offset() >= durable_end {
        return Ok(());
    }
    crate::trace::event_error!(dir = %dir.display(), from = last.next_offset(), to = durable_end, "durable records are missing: the gap is reported by reads and verify");
    let sealed = sealed_copy(fs, cache, dir, config, last, last.next_offset());
    last.sync()?;
    if let Some((indexes, meta)) = sealed.loaded_clone() {
        // A cache: validated on load, rebuilt if torn.
        let _ = sealed.write_index_files(&indexes, meta.max_append_time);
    }
    sealed.set_next_offset(durable_end);
    *segments.last_mut().expect("at least one segment") = Arc::new(sealed);
    let capacity = config.segment_capacity();
    segments.push(Arc::new(Segment::create(
        fs,
        cache,
        dir,
        durable_end,
        capacity,
        0,
    )?));
    Ok(())
}

/// A read-only segment with `seg`'s files, data and loaded indexes.
fn sealed_copy(
    fs: &Arc<dyn FileSystem>,
    cache: &Arc<SegmentCache>,
    dir: &Path,
    config: &LogConfig,
    seg: &Segment,
    next_offset: Offset,
) -> Segment {
    let copy = Segment::new(
        fs,
        cache,
        dir,
        seg.base_offset,
        None,
        seg.published(),
        next_offset,
    );
    copy.set_index_interval(config.index_interval_bytes);
    if let Some((indexes, meta)) = seg.loaded_clone() {
        copy.set_loaded(indexes, meta);
    }
    copy
}

/// A cut made a sealed segment the last one: reopen it for appends.
fn reopen_last_for_appends(
    fs: &Arc<dyn FileSystem>,
    cache: &Arc<SegmentCache>,
    dir: &Path,
    config: &LogConfig,
    segments: &mut [Arc<Segment>],
) -> Result<()> {
    let last = segments.last().expect("at least one segment");
    if last.is_mapped_writable() {
        return Ok(());
    }
    let reopened = sealed_copy(fs, cache, dir, config, last, last.next_offset());
    reopened.map_writable(config.segment_capacity().max(last.published()))?;
    *segments.last_mut().expect("at least one segment") = Arc::new(reopened);
    Ok(())
}

fn list(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<String>> {
    fs.list(dir)
        .map_err(|e| Error::io("list directory", dir, e))
}

/// Whether a roll fsyncs the segment it seals before the next segment is created. Not
/// yet: sealed segments are fsynced by the next flush, before the recovery point moves
/// past them, so a crash can tear a sealed segment at or after the recovery point's.
/// Once rolls fsync, every sealed segment is durable whatever the recovery point says,
/// and this becomes `true`.
const ROLL_FSYNCS_SEALED: bool = false;

/// Scans from the segment holding the recovery point to the end (from the first
/// segment when there is no valid point), rebuilding indexes, recording corruption in
/// durable data and cutting the torn tail a crash left.
///
/// Durable: every segment before the point's, the point's segment below its position,
/// and (see [`ROLL_FSYNCS_SEALED`]) sealed segments after it. Without a valid point
/// (both slots damaged) every sealed segment is taken as durable: damage there is
/// reported, never cut, and only the active segment is scanned as a tail. Damage in
/// durable data is recorded and skipped; offsets missing between durable segments are
/// a gap that `verify` and reads report. The tail is cut at the first batch that does
/// not decode or continue the offsets, with every segment after it.
fn scan_tail(
    fs: &Arc<dyn FileSystem>,
    dir: &Path,
    segments: &mut Vec<Arc<Segment>>,
    rp: Option<RecoveryPoint>,
) -> Result<()> {
    let first = match rp {
        Some(rp) => segments
            .partition_point(|s| s.base_offset <= rp.segment)
            .saturating_sub(1),
        None => 0,
    };
    let last = segments.len() - 1;
    let mut expected: Option<Offset> = None;
    let mut cut_after: Option<usize> = None;
    for (i, seg) in segments.iter().enumerate().skip(first) {
        let sealed_durable = i < last && (rp.is_none() || ROLL_FSYNCS_SEALED);
        let durable_end = match rp {
            _ if sealed_durable => u64::MAX,
            Some(rp) if seg.base_offset < rp.segment => u64::MAX,
            Some(rp) if seg.base_offset == rp.segment => rp.position,
            _ => 0,
        };
        // Offsets continue exactly across the tail; a gap there is a torn roll.
        if let Some(e) = expected {
            if durable_end == 0 && seg.base_offset != e {
                cut_after = Some(i - 1);
                break;
            }
        }
        let scan = scan_segment(seg, durable_end)?;
        if scan.valid_end < seg.published() {
            crate::trace::event_warn!(file = %seg.path().display(), from = scan.valid_end, to = seg.published(), "recovery cut an unsynced torn tail");
            seg.truncate_to(scan.valid_end)?;
        }
        let next = scan.meta.last_offset.map_or(seg.base_offset, |o| o + 1);
        seg.set_next_offset(next);
        seg.set_loaded(scan.indexes, scan.meta);
        // After a durable segment, missing offsets are lost data (a gap reported by
        // `verify` and reads), not a torn roll.
        expected = (durable_end != u64::MAX).then_some(next);
        if scan.cut {
            cut_after = Some(i);
            break;
        }
    }
    if let Some(i) = cut_after {
        for s in segments.drain(i + 1..) {
            crate::trace::event_warn!(dir = %dir.display(), base = s.base_offset, "recovery removed a segment after a torn roll");
            remove_segment_files(&**fs, dir, s.base_offset)?;
        }
    }
    // Sealed segments' next offset is the next segment's base.
    for w in 1..segments.len() {
        let next_base = segments[w].base_offset;
        segments[w - 1].set_next_offset(next_base);
    }
    Ok(())
}

struct SegmentScan {
    valid_end: u64,
    indexes: Indexes,
    meta: SegmentMeta,
    /// The segment ended in a torn or invalid tail: nothing after it is kept.
    cut: bool,
}

fn scan_segment(seg: &Segment, durable_end: u64) -> Result<SegmentScan> {
    let map = seg.mapping()?;
    let len = usize::try_from(seg.published()).expect("a mapped segment fits usize");
    let bytes = map.bytes(0, len);
    let durable_end = usize::try_from(durable_end).unwrap_or(usize::MAX).min(len);
    let interval = seg.index_interval();
    let mut indexes = Indexes::default();
    let mut meta = SegmentMeta::EMPTY;
    let mut since_index = u64::MAX;
    let mut pos = 0usize;
    let mut cut = false;
    while pos < len {
        let in_durable = pos < durable_end;
        let checked = batch::decode(&bytes[pos..]).and_then(|b| {
            b.validate_records()?;
            check_continues(seg.base_offset, meta.last_offset, &b, in_durable)?;
            Ok(b)
        });
        match checked {
            Ok(b) => {
                if since_index >= interval {
                    let rel = index::relative(seg.base_offset, b.base_offset)
                        .expect("check_continues keeps relative offsets in u32");
                    let p = u32::try_from(pos).expect("segment positions fit u32");
                    indexes.push(rel, p, meta.max_timestamp);
                    since_index = 0;
                }
                since_index = since_index.saturating_add(b.len() as u64);
                meta.add_batch(&b);
                pos += b.len();
            }
            Err(e) if in_durable => {
                // Corruption inside fsynced data: report it, keep what follows.
                match seg.skip_corrupt(&bytes[..durable_end], pos, meta.last_offset, &e) {
                    Some(next) => pos = next,
                    None => pos = durable_end,
                }
            }
            // The torn tail a crash left: cut here.
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    Ok(SegmentScan {
        valid_end: pos as u64,
        indexes,
        meta,
        cut,
    })
}

/// Offsets must rise, fit the segment, and in the tail continue without a gap.
fn check_continues(
    base: Offset,
    prev_last: Option<Offset>,
    b: &Batch<'_>,
    in_durable: bool,
) -> std::result::Result<(), batch::BatchError> {
    use batch::BatchError::Invalid;
    if index::relative(base, b.base_offset).is_none()
        || index::relative(base, b.last_offset()).is_none()
    {
        return Err(Invalid("batch offsets outside the segment"));
    }
    match prev_last {
        Some(p) if b.base_offset <= p => Err(Invalid("batch offsets go backwards")),
        Some(p) if !in_durable && b.base_offset != p + 1 => Err(Invalid("gap in the tail")),
        None if !in_durable && b.base_offset != base => {
            Err(Invalid("first batch is not at the base offset"))
        }
        _ => Ok(()),
    }
}

/// Checks every batch and record of a segment and its index; adds to `report`.
pub(crate) fn verify_segment(seg: &Segment, report: &mut VerifyReport) -> Result<()> {
    let map = seg.mapping()?;
    let len = usize::try_from(seg.published()).expect("a mapped segment fits usize");
    let bytes = map.bytes(0, len);
    let mut pos = 0;
    let mut last: Option<Offset> = None;
    let mut starts = Vec::new();
    // Base offset of each batch -> the largest record timestamp before it.
    let mut max_before = std::collections::HashMap::new();
    let mut max_ts = i64::MIN;
    while pos < len {
        let checked = batch::decode(&bytes[pos..]).and_then(|b| {
            b.validate_records()?;
            check_continues(seg.base_offset, last, &b, true)?;
            Ok(b)
        });
        match checked {
            Ok(b) => {
                report.batches += 1;
                report.records += u64::from(b.record_count);
                starts.push((pos as u32, b.base_offset));
                max_before.insert(b.base_offset, max_ts);
                max_ts = max_ts.max(b.max_timestamp);
                last = Some(b.last_offset());
                pos += b.len();
            }
            Err(e) => match seg.skip_corrupt(bytes, pos, last, &e) {
                Some(next) => pos = next,
                None => break,
            },
        }
    }
    report.corrupt.extend(seg.corrupt_ranges());
    // Every index entry must point at the start of a batch with that offset.
    for (rel, position) in seg.index_entries_list()? {
        let want = seg.base_offset + u64::from(rel);
        if starts.binary_search(&(position, want)).is_err() {
            report.corrupt.push(segment::CorruptRange {
                segment: seg.base_offset,
                start_position: u64::from(position),
                end_position: u64::from(position),
                next_offset: None,
                reason: format!("index entry for offset {want} does not point at its batch"),
            });
        }
    }
    // A time entry (T, o) promises every record before offset o is at most T; a lower
    // T would make `offset_for_timestamp` skip records.
    for (ts, rel) in seg.time_entries_list()? {
        let at = seg.base_offset + u64::from(rel);
        let bad = match max_before.get(&at) {
            Some(&before) => ts < before,
            None => true,
        };
        if bad {
            report.corrupt.push(segment::CorruptRange {
                segment: seg.base_offset,
                start_position: 0,
                end_position: 0,
                next_offset: None,
                reason: format!(
                    "time index entry ({ts}, offset {at}) does not match the records before it"
                ),
            });
        }
    }
    Ok(())
}
