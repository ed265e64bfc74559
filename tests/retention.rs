//! Retention by time, size and start offset: which segments go, when files vanish,
//! what readers and reopen see, and that a crash at any point of a pass loses nothing.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{sim_config, value_for};
use logqueue::sim::SimFs;
use logqueue::{Clock, Error, Log, LogConfig, ManualClock, Record};

const DIR: &str = "/db/log";
const HOUR: Duration = Duration::from_secs(3600);

fn setup(seed: u64) -> (SimFs, ManualClock) {
    let fs = SimFs::new(seed);
    fs.write_file("/db/.keep", b"").unwrap();
    (fs, ManualClock::new(1_000_000))
}

/// Appends `n` records of ~100 bytes starting at offset `from` (values by offset).
fn fill(log: &Log, from: u64, n: u64) {
    for i in from..from + n {
        assert_eq!(log.append(Record::new(value_for(i))).unwrap(), i);
    }
}

fn files_with_suffix(fs: &SimFs, suffix: &str) -> usize {
    use logqueue::fs::FileSystem;
    fs.list(Path::new(DIR))
        .unwrap()
        .iter()
        .filter(|n| n.ends_with(suffix))
        .count()
}

#[test]
fn time_retention_deletes_old_segments_only() {
    let (fs, clock) = setup(1);
    let config = LogConfig {
        retention_ms: Some(HOUR),
        ..sim_config(&fs, &clock, 2048)
    };
    let log = Log::open(DIR, config).unwrap();
    fill(&log, 0, 100);
    let old_segments = log.segments().len();
    clock.advance(HOUR / 2);
    fill(&log, 100, 100);
    // Nothing is old enough yet.
    assert_eq!(log.enforce_retention().unwrap().segments_deleted, 0);
    clock.advance(HOUR / 2 + Duration::from_millis(1));
    let report = log.enforce_retention().unwrap();
    // Every segment whose newest record is from the first half is gone; the segment
    // straddling both halves stays.
    assert!(report.segments_deleted >= old_segments - 1, "{report:?}");
    assert!(report.start_offset <= 100);
    assert_eq!(log.start_offset(), report.start_offset);
    assert!(matches!(log.read(0), Err(Error::OffsetOutOfRange { .. })));
    for i in report.start_offset..200 {
        assert_eq!(log.read(i).unwrap().unwrap().value.unwrap(), value_for(i));
    }
}

#[test]
fn future_timestamps_do_not_pin_the_log() {
    let (fs, clock) = setup(2);
    let config = LogConfig {
        retention_ms: Some(HOUR),
        ..sim_config(&fs, &clock, 2048)
    };
    let log = Log::open(DIR, config).unwrap();
    let far_future = clock.now_ms() + 365 * 24 * 3600 * 1000;
    for i in 0..60u64 {
        log.append(Record::new(value_for(i)).with_timestamp(far_future))
            .unwrap();
    }
    clock.advance(2 * HOUR);
    fill(&log, 60, 60);
    let report = log.enforce_retention().unwrap();
    // The future-stamped segments count as appended two hours ago: gone.
    assert!(report.segments_deleted > 0);
    // Only the segment that also holds fresh records stays.
    assert!(
        log.start_offset() > 0 && log.start_offset() <= 60,
        "start {}",
        log.start_offset()
    );
    let last = log.read(119).unwrap().unwrap();
    assert_eq!(last.value.unwrap(), value_for(119));
    // A record keeps its own timestamp when read.
    if log.start_offset() < 60 {
        let r = log.read(59).unwrap().unwrap();
        assert_eq!(r.timestamp, far_future);
    }
}

#[test]
fn expired_active_segment_is_rolled_then_deleted() {
    let (fs, clock) = setup(3);
    let config = LogConfig {
        retention_ms: Some(HOUR),
        ..sim_config(&fs, &clock, 1 << 20)
    };
    let log = Log::open(DIR, config).unwrap();
    fill(&log, 0, 10);
    assert_eq!(log.segments().len(), 1);
    clock.advance(2 * HOUR);
    let report = log.enforce_retention().unwrap();
    assert_eq!(report.segments_deleted, 1);
    assert_eq!(log.start_offset(), 10);
    assert_eq!(log.end_offset(), 10);
    let segs = log.segments();
    assert_eq!(segs.len(), 1);
    assert!(segs[0].active && segs[0].base_offset == 10 && segs[0].size_bytes == 0);
    assert_eq!(log.append(Record::new("next")).unwrap(), 10);
    // An empty active segment is never deleted.
    clock.advance(2 * HOUR);
    let report = log.enforce_retention().unwrap();
    assert_eq!(report.segments_deleted, 1);
    assert_eq!(log.start_offset(), 11);
    assert_eq!(log.enforce_retention().unwrap().segments_deleted, 0);
}

#[test]
fn size_retention_keeps_the_log_between_limit_and_limit_plus_a_segment() {
    let (fs, clock) = setup(4);
    let limit = 8 * 1024;
    let config = LogConfig {
        retention_bytes: Some(limit),
        ..sim_config(&fs, &clock, 2048)
    };
    let log = Log::open(DIR, config).unwrap();
    fill(&log, 0, 500);
    let before: u64 = log.segments().iter().map(|s| s.size_bytes).sum();
    let report = log.enforce_retention().unwrap();
    let after: u64 = log.segments().iter().map(|s| s.size_bytes).sum();
    assert_eq!(before - after, report.bytes_deleted);
    assert!(after >= limit, "deleted too much: {after} < {limit}");
    let largest = log.segments().iter().map(|s| s.size_bytes).max().unwrap();
    assert!(after < limit + largest, "kept too much: {after}");
    assert_eq!(
        log.read(499).unwrap().unwrap().value.unwrap(),
        value_for(499)
    );
}

#[test]
fn start_offset_rule_and_delayed_unlink() {
    let (fs, clock) = setup(5);
    let config = LogConfig {
        file_delete_delay: Duration::from_secs(60),
        ..sim_config(&fs, &clock, 2048)
    };
    let log = Log::open(DIR, config.clone()).unwrap();
    fill(&log, 0, 200);
    log.delete_records_before(150).unwrap();
    assert_eq!(log.start_offset(), 150);
    assert!(matches!(log.read(149), Err(Error::OffsetOutOfRange { .. })));
    assert_eq!(
        log.read(150).unwrap().unwrap().value.unwrap(),
        value_for(150)
    );
    // A reader positioned below the start is clamped at creation.
    assert_eq!(log.reader(0).unwrap().position(), 150);
    // A reader that holds an old segment keeps reading it after deletion.
    let seg_base = log.segments()[0].base_offset;
    log.delete_records_before(0).unwrap(); // never lowers
    assert_eq!(log.start_offset(), 150);
    let report = log.enforce_retention().unwrap();
    assert!(report.segments_deleted > 0);
    assert!(log.segments()[0].base_offset <= 150);
    assert!(log
        .segments()
        .iter()
        .all(|s| s.base_offset != seg_base || s.base_offset == log.segments()[0].base_offset));
    assert!(
        files_with_suffix(&fs, ".deleted") > 0,
        "files are renamed first"
    );
    clock.advance(Duration::from_secs(61));
    log.enforce_retention().unwrap();
    assert_eq!(
        files_with_suffix(&fs, ".deleted"),
        0,
        "and unlinked after the delay"
    );
    log.close().unwrap();
    let log = Log::open(DIR, config).unwrap();
    assert_eq!(log.start_offset(), 150);
    assert!(matches!(log.read(10), Err(Error::OffsetOutOfRange { .. })));
    assert_eq!(
        log.read(199).unwrap().unwrap().value.unwrap(),
        value_for(199)
    );
}

#[test]
fn readers_holding_deleted_segments_keep_reading() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let config = LogConfig {
        retention_ms: Some(HOUR),
        clock: std::sync::Arc::new(clock.clone()),
        file_delete_delay: Duration::ZERO,
        ..common::small_config(2048)
    };
    let log = Log::open(dir.path(), config).unwrap();
    fill(&log, 0, 100);
    let mut reader = log.reader(0).unwrap();
    let first = reader.next().unwrap().unwrap();
    assert_eq!(first.offset, 0);
    let batch = log.reader(0).unwrap().next_batch().unwrap().unwrap();
    clock.advance(2 * HOUR);
    fill(&log, 100, 5);
    let report = log.enforce_retention().unwrap();
    assert!(report.segments_deleted > 0);
    // Files are unlinked (delay zero), yet the held batch still reads.
    let view = batch.records().next().unwrap().unwrap();
    assert_eq!(view.value.unwrap(), &value_for(0)[..]);
    // An iterator left below the new start offset says so clearly, and can seek on.
    assert!(matches!(
        reader.next(),
        Some(Err(Error::OffsetOutOfRange { .. }))
    ));
    reader.seek(log.start_offset()).unwrap();
    let next = reader.next().unwrap().unwrap();
    assert_eq!(next.offset, log.start_offset());
}

#[test]
fn consumer_floor_holds_back_time_and_size_but_not_explicit_deletes() {
    let (fs, clock) = setup(6);
    let config = LogConfig {
        retention_ms: Some(HOUR),
        retention_bytes: Some(1),
        ..sim_config(&fs, &clock, 2048)
    };
    let log = Log::open(DIR, config).unwrap();
    fill(&log, 0, 300);
    let floor = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(40));
    let f = floor.clone();
    log.add_retention_floor(move || Some(f.load(std::sync::atomic::Ordering::SeqCst)));
    clock.advance(2 * HOUR);
    log.enforce_retention().unwrap();
    // The segment holding offset 40 and everything after it stay.
    assert!(log.start_offset() <= 40);
    assert!(log.read(40).unwrap().is_some());
    assert!(log.stats().retention_held_segments > 0);
    floor.store(250, std::sync::atomic::Ordering::SeqCst);
    log.enforce_retention().unwrap();
    assert!(log.start_offset() > 40 && log.start_offset() <= 250);
    // An explicit delete wins over the floor.
    log.delete_records_before(290).unwrap();
    log.enforce_retention().unwrap();
    assert_eq!(log.start_offset(), 290);
    assert!(log.segments()[0].base_offset <= 290);
}

/// Crash at every file-system operation of a retention pass: reopen must give a
/// consistent start offset and every record at or above it.
#[test]
fn crash_at_every_step_of_a_retention_pass() {
    let build = |seed: u64| {
        let (fs, clock) = setup(seed);
        let config = LogConfig {
            retention_ms: Some(HOUR),
            file_delete_delay: Duration::ZERO,
            ..sim_config(&fs, &clock, 2048)
        };
        let log = Log::open(DIR, config.clone()).unwrap();
        fill(&log, 0, 150);
        clock.advance(2 * HOUR);
        fill(&log, 150, 30);
        log.flush().unwrap();
        (fs, clock, log, config)
    };
    let (fs, _clock, log, _) = build(7);
    let before = fs.op_count();
    let report = log.enforce_retention().unwrap();
    assert!(report.segments_deleted > 1);
    let expected_start = report.start_offset;
    let ops = fs.op_count() - before;
    assert!(ops > 3, "a pass does several file operations");
    for n in 0..=ops {
        let (fs, _clock, log, config) = build(7);
        fs.crash_at_op(fs.op_count() + n);
        let _ = log.enforce_retention();
        fs.crash();
        fs.clear_faults();
        drop(log);
        let log = Log::open(DIR, config).unwrap_or_else(|e| panic!("crash at op {n}: {e}"));
        let start = log.start_offset();
        assert!(
            start == 0 || start == expected_start,
            "crash at op {n}: start {start}"
        );
        assert_eq!(log.end_offset(), 180, "crash at op {n}");
        for i in start..180 {
            let r = log
                .read(i)
                .unwrap_or_else(|e| panic!("crash at op {n}, offset {i}: {e}"));
            assert_eq!(r.unwrap().value.unwrap(), value_for(i), "crash at op {n}");
        }
        // The pass completes after reopen.
        log.enforce_retention().unwrap();
        assert_eq!(log.start_offset(), expected_start, "crash at op {n}");
        assert!(log.verify().unwrap().corrupt.is_empty());
    }
}
