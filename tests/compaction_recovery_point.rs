//! The cleaner never rewrites the segment the recovery point names (nor anything
//! after it): recovery scans from that segment on as the tail, where an offset gap
//! left by compaction would read as lost data. Each roll fsyncs the segment it seals
//! and moves the recovery point to the new active segment, so every sealed segment
//! is cleaned without any flush, and the active one never is.

mod common;

use std::time::{Duration, Instant};

use common::sim_config;
use logqueue::sim::SimFs;
use logqueue::{CleanupPolicy, CompactionConfig, Log, LogConfig, ManualClock, Record};

const DIR: &str = "/db/log";

#[test]
fn sealed_segments_are_cleaned_without_a_flush_and_the_active_one_never() {
    let fs = SimFs::new(1);
    fs.write_file("/db/.keep", b"").unwrap();
    let clock = ManualClock::new(1_000_000);
    let config = LogConfig {
        cleanup: CleanupPolicy::Compact,
        background: true,
        compaction: CompactionConfig {
            min_cleanable_dirty_ratio: 0.0,
            check_interval: Duration::from_millis(5),
            ..CompactionConfig::default()
        },
        ..sim_config(&fs, &clock, 1024)
    };
    let log = Log::open(DIR, config.clone()).unwrap();
    let mut i = 0u32;
    let mut append = || {
        i += 1;
        log.append(Record::keyed(
            format!("k{}", i % 4),
            format!("v{i}-{}", "r".repeat(40)),
        ))
        .unwrap()
    };
    for _ in 0..40 {
        append();
    }
    // No flush at all: each roll fsyncs the segment it seals and moves the recovery
    // point to the start of the new active segment (FlushPolicy::Manual included).
    let active = log.segments().last().unwrap().clone();
    assert!(active.base_offset > 0, "the appends rolled");
    let deadline = Instant::now() + Duration::from_secs(5);
    while log.durable_offset() < active.base_offset
        || log.stats().cleaner_offset < active.base_offset
    {
        assert!(Instant::now() < deadline, "{:?}", log.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    // The cleaner cleans every sealed segment, and stops at the one the point names.
    std::thread::sleep(Duration::from_millis(100));
    let stats = log.stats();
    assert_eq!(stats.durable_offset, active.base_offset, "{stats:?}");
    assert_eq!(stats.cleaner_offset, active.base_offset, "{stats:?}");
    let untouched = log.segments().last().unwrap().clone();
    assert_eq!(
        (
            untouched.base_offset,
            untouched.next_offset,
            untouched.size_bytes
        ),
        (active.base_offset, active.next_offset, active.size_bytes),
        "the recovery point's segment was rewritten"
    );
    // A process kill now: everything, the un-flushed record too, is there.
    let end = log.end_offset();
    fs.kill();
    drop(log);
    let log = Log::open(DIR, config).unwrap();
    assert_eq!(log.end_offset(), end);
    assert!(log.verify().unwrap().corrupt.is_empty());
    // The newest record of every key survived compaction and the kill.
    for k in 0..4u32 {
        let newest = (1..=i).rev().find(|n| n % 4 == k).unwrap();
        let found = log
            .reader(0)
            .unwrap()
            .map(Result::unwrap)
            .filter(|r| r.key.as_deref() == Some(format!("k{k}").as_bytes()))
            .last()
            .unwrap();
        assert!(found
            .value
            .unwrap()
            .starts_with(format!("v{newest}-").as_bytes()));
    }
    log.close().unwrap();
}
