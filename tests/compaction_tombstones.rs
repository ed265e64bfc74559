//! Tombstones survive compaction for `delete_retention` after the cleaning that first
//! saw them (the horizon lives in the batch header, so it survives a reopen), and are
//! dropped by the first pass after it; the background cleaner runs for them alone.

mod common;

use std::time::Duration;

use common::sim_config;
use logqueue::sim::SimFs;
use logqueue::{CleanupPolicy, CompactionConfig, Log, LogConfig, ManualClock, Record};

const DIR: &str = "/db/log";
const HOUR: Duration = Duration::from_secs(3600);

fn config(fs: &SimFs, clock: &ManualClock) -> LogConfig {
    LogConfig {
        cleanup: CleanupPolicy::Compact,
        compaction: CompactionConfig {
            delete_retention: HOUR,
            ..CompactionConfig::default()
        },
        ..sim_config(fs, clock, 1024)
    }
}

/// k0..k9 with two versions each, tombstones for k0..k4, then filler so that
/// everything so far is in sealed segments. Returns the tombstones' offsets.
fn fill(log: &Log) -> Vec<u64> {
    for v in 0..2 {
        for k in 0..10 {
            log.append(Record::keyed(
                format!("k{k}"),
                format!("v{v}-{}", "x".repeat(40)),
            ))
            .unwrap();
        }
    }
    let tombstones: Vec<u64> = (0..5)
        .map(|k| log.append(Record::tombstone(format!("k{k}"))).unwrap())
        .collect();
    for f in 0..30 {
        log.append(Record::keyed(format!("filler{f}"), "y".repeat(60)))
            .unwrap();
    }
    tombstones
}

fn live_values(log: &Log) -> Vec<(String, Option<Vec<u8>>)> {
    log.reader(0)
        .unwrap()
        .map(|r| r.unwrap())
        .filter(|r| r.key.as_deref().is_some_and(|k| k.starts_with(b"k")))
        .map(|r| (String::from_utf8(r.key.unwrap()).unwrap(), r.value))
        .collect()
}

#[test]
fn tombstones_are_kept_until_the_horizon_then_dropped() {
    let fs = SimFs::new(1);
    fs.write_file("/db/.keep", b"").unwrap();
    let clock = ManualClock::new(1_000_000);
    let log = Log::open(DIR, config(&fs, &clock)).unwrap();
    let tombstones = fill(&log);
    let first = log.compact().unwrap();
    assert_eq!(first.tombstones_removed, 0, "{first:?}");
    assert_eq!(
        first.records_removed, 15,
        "both values of k0..k4, the first of k5..k9"
    );
    // The deleted keys now read as tombstones; the others as their last value.
    let live = live_values(&log);
    assert_eq!(live.len(), 10, "{live:?}");
    for (k, v) in &live {
        let n: u32 = k[1..].parse().unwrap();
        assert_eq!(v.is_none(), n < 5, "{k}");
    }
    for &o in &tombstones {
        let r = log.read(o).unwrap().expect("tombstone kept");
        assert_eq!(r.value, None);
    }
    // Before the horizon, passes keep them (also across a reopen).
    clock.advance(HOUR / 2);
    assert_eq!(log.compact().unwrap().tombstones_removed, 0);
    log.close().unwrap();
    let log = Log::open(DIR, config(&fs, &clock)).unwrap();
    for &o in &tombstones {
        assert!(log.read(o).unwrap().is_some());
    }
    clock.advance(HOUR / 2 - Duration::from_millis(2));
    assert_eq!(log.compact().unwrap().tombstones_removed, 0);
    // After it, the next pass drops them.
    clock.advance(Duration::from_millis(2));
    let report = log.compact().unwrap();
    assert_eq!(report.tombstones_removed, 5, "{report:?}");
    for &o in &tombstones {
        assert_eq!(log.read(o).unwrap(), None);
    }
    let live = live_values(&log);
    assert_eq!(live.len(), 5);
    assert!(live.iter().all(|(_, v)| v.is_some()));
    assert!(log.verify().unwrap().corrupt.is_empty());
}

#[test]
fn a_newer_value_replaces_a_tombstone() {
    let fs = SimFs::new(2);
    fs.write_file("/db/.keep", b"").unwrap();
    let clock = ManualClock::new(1_000_000);
    let log = Log::open(DIR, config(&fs, &clock)).unwrap();
    let t = log.append(Record::tombstone("k")).unwrap();
    let v = log.append(Record::keyed("k", "back")).unwrap();
    for f in 0..30 {
        log.append(Record::keyed(format!("filler{f}"), "y".repeat(60)))
            .unwrap();
    }
    log.compact().unwrap();
    assert_eq!(log.read(t).unwrap(), None);
    assert_eq!(log.read(v).unwrap().unwrap().value.unwrap(), b"back");
}

#[test]
fn background_cleaner_runs_for_due_tombstones_alone() {
    let fs = SimFs::new(3);
    fs.write_file("/db/.keep", b"").unwrap();
    let clock = ManualClock::new(1_000_000);
    let config = LogConfig {
        background: true,
        compaction: CompactionConfig {
            delete_retention: HOUR,
            // Never by ratio.
            min_cleanable_dirty_ratio: 1.0,
            check_interval: Duration::from_millis(20),
            ..CompactionConfig::default()
        },
        ..config(&fs, &clock)
    };
    let log = Log::open(DIR, config).unwrap();
    let tombstones = fill(&log);
    log.compact().unwrap();
    let runs = log.stats().cleaner_runs;
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(log.stats().cleaner_runs, runs, "nothing due yet");
    clock.advance(HOUR + Duration::from_secs(1));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while log.read(tombstones[0]).unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the cleaner never ran"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(log.stats().cleaner_runs > runs);
    log.close().unwrap();
}
