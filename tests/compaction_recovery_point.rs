//! The cleaner never rewrites the segment the recovery point names (nor anything
//! after it), even when that segment is sealed and fully durable: recovery scans from
//! that segment on as the tail, where an offset gap left by compaction would read as
//! lost data. Once a flush moves the recovery point on, the segment is cleaned.

mod common;

use std::time::{Duration, Instant};

use common::sim_config;
use logqueue::sim::SimFs;
use logqueue::{CleanupPolicy, CompactionConfig, Log, LogConfig, ManualClock, Record};

const DIR: &str = "/db/log";

#[test]
fn the_recovery_point_segment_waits_for_the_next_flush() {
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
    // Flush right before the append that rolls: the segment it seals is durable to
    // its end, and it is the one the recovery point names.
    let sealed = loop {
        log.flush().unwrap();
        let before = log.segments();
        append();
        if log.segments().len() > before.len() {
            break before.last().unwrap().clone();
        }
    };
    assert_eq!(log.durable_offset(), sealed.next_offset);
    // The cleaner cleans everything before it, and stops there.
    let deadline = Instant::now() + Duration::from_secs(5);
    while log.stats().cleaner_offset < sealed.base_offset {
        assert!(Instant::now() < deadline, "{:?}", log.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        log.stats().cleaner_offset <= sealed.base_offset,
        "{:?}",
        log.stats()
    );
    let untouched = log
        .segments()
        .into_iter()
        .find(|s| s.base_offset == sealed.base_offset)
        .unwrap();
    assert_eq!(
        (untouched.next_offset, untouched.size_bytes),
        (sealed.next_offset, sealed.size_bytes),
        "the recovery point's segment was rewritten"
    );
    // A process kill now: everything, the un-flushed record too, is there.
    let end = log.end_offset();
    fs.kill();
    drop(log);
    let log = Log::open(DIR, config).unwrap();
    assert_eq!(log.end_offset(), end);
    // After the reopen (which moves the recovery point to the end), it is cleaned.
    let deadline = Instant::now() + Duration::from_secs(5);
    while log.stats().cleaner_offset < sealed.next_offset {
        assert!(Instant::now() < deadline, "{:?}", log.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(log.verify().unwrap().corrupt.is_empty());
    log.close().unwrap();
}
