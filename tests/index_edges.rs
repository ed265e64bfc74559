//! Index files and recovery, from an adversarial review: three defects it found,
//! each test naming what went wrong before the fix (an index of an earlier state of
//! the same length trusted after power losses; a segment loaded from its index files
//! judged older than it is by retention; a crafted entry overflowing the offset).

mod common;

use common::sim_config;
use logqueue::sim::SimFs;
use logqueue::{Log, LogConfig, ManualClock, Record};

const DIR: &str = "/log";
/// Every batch below holds one record with a 40-byte value: every batch has the
/// same size (107 bytes), whatever its timestamp, so a segment of 1024 bytes always
/// rolls after 9 batches, at the same length.
const SEGMENT_BYTES: u64 = 1024;
const PER_SEGMENT: u64 = 9;

fn record(ts: i64) -> Record {
    Record::new(vec![b'v'; 40]).with_timestamp(ts)
}

/// The first offset whose record has a timestamp at or after `ms`, by a scan of
/// every record (the plain model of `offset_for_timestamp`).
fn model_offset_for_timestamp(log: &Log, ms: i64) -> Option<u64> {
    log.reader(log.start_offset())
        .unwrap()
        .map(|r| r.unwrap())
        .find(|r| r.timestamp >= ms)
        .map(|r| r.offset)
}

fn idx(base: u64, suffix: &str) -> String {
    format!("{DIR}/{base:020}.{suffix}")
}

/// Incarnation X of segment 0: 3 batches and a clean close (which writes and fsyncs
/// the active segment's index files and the directory), then 7 more batches at
/// later timestamps: the 10th rolls (the seal rewrites the index files, unsynced).
/// Returns the ops before and after the rolling append.
fn incarnation_x(fs: &SimFs, config: &LogConfig) -> (u64, u64) {
    let log = Log::open(DIR, config.clone()).unwrap();
    for i in 0..3 {
        log.append(record(1_000 + i)).unwrap();
    }
    log.close().unwrap();
    let log = Log::open(DIR, config.clone()).unwrap();
    for i in 3..PER_SEGMENT {
        log.append(record(1_000 + i as i64)).unwrap();
    }
    let before = fs.op_count();
    let _ = log.append(record(1_000 + PER_SEGMENT as i64));
    let after = fs.op_count();
    drop(log);
    (before, after)
}

/// One run: a power loss at op `crash_op` of the rolling append of incarnation X
/// (disk seeded `seed`), a reincarnation Y of segment 0 up to the same length, a
/// second power loss after a flush, then a clean close and open. Returns
/// `Some((stale time index on disk, model answer, log answer))` when the first power
/// loss cut segment 0 and left the index files of X.
fn run(
    seed: u64,
    crash_op: u64,
    (x_index, x_time, x_len): (&[u8], &[u8], u64),
) -> Option<(bool, Option<u64>, Option<u64>)> {
    let fs = SimFs::new(seed);
    let clock = ManualClock::new(1_000);
    let config = sim_config(&fs, &clock, SEGMENT_BYTES);
    fs.crash_at_op(crash_op);
    incarnation_x(&fs, &config);
    fs.clear_faults();
    // On a real file system the index files the roll created may outlive the power
    // loss (their directory entries committed by the file system's own journal);
    // SimFs reverts every un-synced entry, so they are put back as X wrote them: an
    // index of an earlier state of segment 0 on disk, whatever else the crash left.
    let cut = fs.file_len(format!("{DIR}/{:020}.log", 0)).unwrap_or(0) < x_len;
    if !cut {
        return None;
    }
    fs.write_file(idx(0, "index"), x_index).unwrap();
    fs.write_file(idx(0, "timeindex"), x_time).unwrap();

    // Recovery cuts segment 0's torn tail (not promised: nothing was flushed).
    let log = Log::open(DIR, config.clone()).unwrap();
    let n0 = log.end_offset();
    if n0 >= PER_SEGMENT {
        return None;
    }
    // The segment is the active one again: its index files are gone, durably.
    assert!(
        fs.read_file(idx(0, "timeindex")).is_none() && fs.read_file(idx(0, "index")).is_none(),
        "seed {seed} op {crash_op}: the active segment kept index files"
    );
    // Incarnation Y: the same-sized batches, later timestamps, up to the same roll:
    // segment 0 is sealed again at exactly the same length. A flush makes it all
    // durable; then a power loss.
    clock.set(50_000);
    for i in n0..=PER_SEGMENT {
        log.append(record(50_000 + i as i64)).unwrap();
    }
    log.flush().unwrap();
    fs.crash();
    drop(log);
    let log = Log::open(DIR, config.clone()).unwrap();
    log.close().unwrap();

    let log = Log::open(DIR, config).unwrap();
    let stale = fs.read_file(idx(0, "timeindex")).as_deref() == Some(x_time);
    let want = model_offset_for_timestamp(&log, 50_000);
    let got = log.offset_for_timestamp(50_000).unwrap();
    assert_eq!(
        want,
        Some(n0),
        "seed {seed} op {crash_op}: the model sees the records"
    );
    Some((stale, want, got))
}

/// An index file binds itself to its `.log` by the length only. A sealed segment
/// whose unsynced tail a power loss cut grows back (same-sized records, the same
/// size-based roll) to exactly the length it had; its index files are rewritten at
/// that roll without fsync, so a second power loss can bring back the first
/// incarnation's files. They pass the trailer check (CRC and length), the offset
/// cross-check (the same batch layout), and their time entries hold the earlier
/// records' timestamps: `offset_for_timestamp` skipped the records appended since.
/// Recovery now removes the active segment's index files, durably, before any
/// append.
#[test]
fn a_stale_index_of_a_same_length_earlier_state_is_never_trusted() {
    // The index files incarnation X's roll writes (the ops are deterministic).
    let probe = SimFs::new(0);
    let clock = ManualClock::new(1_000);
    let (before, after) = incarnation_x(&probe, &sim_config(&probe, &clock, SEGMENT_BYTES));
    let x_index = probe.read_file(idx(0, "index")).unwrap();
    let x_time = probe.read_file(idx(0, "timeindex")).unwrap();
    let x_len = probe.file_len(format!("{DIR}/{:020}.log", 0)).unwrap();
    let (mut setups, mut stale, mut wrong) = (0, 0, Vec::new());
    for op in before + 1..=after {
        for seed in 0..60 {
            let Some((s, want, got)) = run(seed, op, (&x_index, &x_time, x_len)) else {
                continue;
            };
            setups += 1;
            stale += usize::from(s);
            if want != got {
                wrong.push((seed, op, want, got));
            }
        }
    }
    eprintln!("ops {before}..{after}: {setups} runs set up the reincarnation, {stale} left X's time index");
    assert!(setups > 0, "no run set up the scenario");
    assert!(
        wrong.is_empty(),
        "offset_for_timestamp(50000) after power loss differs from the records in {} \
         runs; first (seed, crash op, model, log): {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
}

/// A segment loaded from its index files takes its largest append time from the
/// batches after the last time-index entry only. When the clock went back within the
/// segment (a wall clock stepped back), the batches before that entry held the
/// largest append time: after a clean reopen retention judges the segment by a time
/// far older than the one it judged it by before, and deleted records it kept. The
/// trailer now records the segment's largest append time.
#[test]
fn a_segment_loaded_from_index_files_keeps_its_largest_append_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(100_000);
    let config = LogConfig {
        clock: std::sync::Arc::new(clock.clone()),
        retention_ms: Some(std::time::Duration::from_secs(10)),
        ..common::small_config(SEGMENT_BYTES)
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    // Batches 0..3 at 100 s (an index entry at offset 3 records the 100 s maximum),
    // then the clock steps back to 1 s for batches 3..9, and is reset to 100 s for
    // the 10th, which rolls into segment 1.
    for i in 0..3 {
        log.append(Record::new(vec![b'v'; 40]).with_timestamp(100_000 + i))
            .unwrap();
    }
    clock.set(1_000);
    for i in 3..PER_SEGMENT {
        log.append(Record::new(vec![b'v'; 40]).with_timestamp(1_000 + i as i64))
            .unwrap();
    }
    clock.set(100_000);
    log.append(Record::new(vec![b'v'; 40]).with_timestamp(100_009))
        .unwrap();
    assert_eq!(log.segments().len(), 2);
    clock.set(100_500);
    // Offsets 0..3 were appended and stamped 0.5 s ago: retention keeps segment 0.
    assert_eq!(log.enforce_retention().unwrap().segments_deleted, 0);
    log.close().unwrap();

    // Control: without segment 0's index files, open rebuilds them from the .log and
    // retention keeps the segment.
    let rebuilt = tempfile::tempdir().unwrap();
    common::copy_dir(dir.path(), rebuilt.path());
    for suffix in ["index", "timeindex"] {
        std::fs::remove_file(common::seg_path(rebuilt.path(), 0, suffix)).unwrap();
    }
    let log = Log::open(rebuilt.path(), config.clone()).unwrap();
    assert_eq!(log.enforce_retention().unwrap().segments_deleted, 0);
    log.close().unwrap();

    let log = Log::open(dir.path(), config).unwrap();
    let report = log.enforce_retention().unwrap();
    assert_eq!(
        (report.segments_deleted, log.start_offset()),
        (0, 0),
        "the same segment, the same clock: deleted after a clean reopen"
    );
}

/// A segment based near the top of the offset space (a log whose start offset is
/// there) with an `.index` file whose trailer checks out but whose entries name a
/// relative offset past `u64::MAX`: `load_from_files` added them unchecked, which
/// panicked (overflow, in debug builds) instead of rejecting the file and
/// rebuilding it.
#[test]
fn a_crafted_index_entry_overflowing_the_offset_is_rejected_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let base = u64::MAX - 100;
    let mut start = base.to_le_bytes().to_vec();
    start.extend_from_slice(&crc32fast::hash(&start).to_le_bytes());
    std::fs::write(dir.path().join("log-start-offset"), start).unwrap();
    let config = common::small_config(1 << 20);
    let log = Log::open(dir.path(), config.clone()).unwrap();
    for _ in 0..3 {
        log.append(Record::new(vec![b'v'; 40])).unwrap();
    }
    log.close().unwrap();
    let seg = common::seg_path(dir.path(), base, "log");
    let len = std::fs::metadata(&seg).unwrap().len();
    let batches = common::batches_of(&std::fs::read(&seg).unwrap());
    // Entries (0, 0) and (200, start of the second batch): ordered, in range.
    let mut entries = Vec::new();
    for (rel, pos) in [(0u32, 0u32), (200, batches[1].start as u32)] {
        entries.extend_from_slice(&rel.to_le_bytes());
        entries.extend_from_slice(&pos.to_le_bytes());
    }
    // The trailer (docs/format.md §4): the .log's length and the append time the
    // .timeindex's trailer names, so that the pair passes the trailer checks.
    let times = std::fs::read(common::seg_path(dir.path(), base, "timeindex")).unwrap();
    let append_time = &times[times.len() - 12..times.len() - 4];
    entries.extend_from_slice(&len.to_le_bytes());
    entries.extend_from_slice(append_time);
    entries.extend_from_slice(&crc32fast::hash(&entries).to_le_bytes());
    std::fs::write(common::seg_path(dir.path(), base, "index"), entries).unwrap();
    // The clean-shutdown marker makes open load the active segment from its files.
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.end_offset(), base + 3);
    assert_eq!(log.read(base + 2).unwrap().unwrap().offset, base + 2);
}
