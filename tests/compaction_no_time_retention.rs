//! A log whose cleanup policy is `Compact` only is never cut by time or size
//! retention (its latest records per key are its content); `CompactAndDelete` is,
//! and `delete_records_before` works for both.

mod common;

use std::time::Duration;

use common::sim_config;
use logqueue::sim::SimFs;
use logqueue::{CleanupPolicy, Log, LogConfig, ManualClock, Record};

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn compact_only_logs_ignore_time_and_size_retention() {
    for (policy, deletes) in [
        (CleanupPolicy::Compact, false),
        (CleanupPolicy::CompactAndDelete, true),
    ] {
        let fs = SimFs::new(1);
        fs.write_file("/db/.keep", b"").unwrap();
        let clock = ManualClock::new(1_000_000);
        let config = LogConfig {
            cleanup: policy,
            retention_ms: Some(HOUR),
            retention_bytes: Some(2048),
            ..sim_config(&fs, &clock, 1024)
        };
        let log = Log::open("/db/log", config).unwrap();
        for i in 0..100 {
            log.append(Record::keyed(format!("k{i}"), "m".repeat(50)))
                .unwrap();
        }
        clock.advance(2 * HOUR);
        log.append(Record::keyed("new", "n")).unwrap();
        let report = log.enforce_retention().unwrap();
        assert_eq!(
            report.segments_deleted > 0,
            deletes,
            "{policy:?}: {report:?}"
        );
        assert_eq!(log.start_offset() > 0, deletes, "{policy:?}");
        log.delete_records_before(50).unwrap();
        assert!(log.enforce_retention().unwrap().start_offset >= 50);
        assert!(log.segments()[0].base_offset <= log.start_offset().max(50));
    }
}
