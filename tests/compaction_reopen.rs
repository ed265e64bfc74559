//! A compacted log reopens (after a clean close, and after a power loss) to the same
//! records, keeps its cleaner offset, and appends and compacts on from there.

mod common;

use common::sim_config;
use logqueue::sim::SimFs;
use logqueue::{CleanupPolicy, Log, LogConfig, ManualClock, Record, StoredRecord};

const DIR: &str = "/db/log";

fn all(log: &Log) -> Vec<StoredRecord> {
    log.reader(0).unwrap().map(|r| r.unwrap()).collect()
}

fn fill(log: &Log, versions: std::ops::Range<u32>) {
    for v in versions {
        for k in 0..25 {
            log.append(Record::keyed(
                format!("k{k}"),
                format!("k{k}-v{v}-{}", "p".repeat(30)),
            ))
            .unwrap();
        }
    }
}

#[test]
fn reopen_after_compaction() {
    for crash in [false, true] {
        let fs = SimFs::new(u64::from(crash));
        fs.write_file("/db/.keep", b"").unwrap();
        let clock = ManualClock::new(1_000_000);
        let config = LogConfig {
            cleanup: CleanupPolicy::Compact,
            ..sim_config(&fs, &clock, 1500)
        };
        let log = Log::open(DIR, config.clone()).unwrap();
        fill(&log, 0..6);
        let report = log.compact().unwrap();
        assert!(report.records_removed > 0);
        log.compact().unwrap();
        let before = all(&log);
        let stats = log.stats();
        let end = log.end_offset();
        if crash {
            // compact() flushed: everything is durable.
            fs.crash();
            drop(log);
        } else {
            log.close().unwrap();
        }
        let log = Log::open(DIR, config.clone()).unwrap();
        assert_eq!(log.end_offset(), end, "crash {crash}");
        assert_eq!(all(&log), before, "crash {crash}");
        assert_eq!(log.stats().cleaner_offset, stats.cleaner_offset);
        assert!(log.verify().unwrap().corrupt.is_empty());
        for r in &before {
            assert_eq!(log.read(r.offset).unwrap().as_ref(), Some(r));
        }
        // Appends continue, and the next pass cleans them against the old records.
        fill(&log, 6..8);
        let report = log.compact().unwrap();
        assert!(report.records_removed >= 25, "{report:?}");
        let after = all(&log);
        let active_base = log.segments().last().unwrap().base_offset;
        let sealed: Vec<_> = after.iter().filter(|r| r.offset < active_base).collect();
        let mut keys: Vec<_> = sealed.iter().map(|r| r.key.clone()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(
            keys.len(),
            sealed.len(),
            "one record per key below the active segment"
        );
        log.close().unwrap();
        let log = Log::open(DIR, config).unwrap();
        assert_eq!(all(&log), after);
    }
}
