//! A segment whose records compaction all removed stays as a sealed segment holding
//! one empty batch over its offsets (60 bytes, a bare header: it says where the
//! segment's offsets end, so they are not taken for lost data): its offsets read as
//! `Ok(None)`, `verify` finds no gap, readers pass it, it survives a reopen, and time
//! retention deletes past it instead of stopping there.

mod common;

use std::time::Duration;

use common::sim_config;
use logqueue::sim::SimFs;
use logqueue::{CleanupPolicy, Log, LogConfig, ManualClock, Record};

const DIR: &str = "/db/log";
const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn an_emptied_segment_is_harmless() {
    let fs = SimFs::new(1);
    fs.write_file("/db/.keep", b"").unwrap();
    let clock = ManualClock::new(10_000_000);
    let config = LogConfig {
        cleanup: CleanupPolicy::CompactAndDelete,
        retention_ms: Some(HOUR),
        ..sim_config(&fs, &clock, 1024)
    };
    let log = Log::open(DIR, config.clone()).unwrap();
    let write = |prefix: &str, n: u32| {
        for i in 0..n {
            log.append(Record::keyed(format!("{prefix}{i}"), "e".repeat(60)))
                .unwrap();
        }
    };
    write("a", 20);
    write("b", 20);
    write("b", 20);
    write("c", 30);
    let report = log.compact().unwrap();
    assert!(report.records_removed >= 20, "{report:?}");
    let empty: Vec<_> = log
        .segments()
        .into_iter()
        .filter(|s| !s.active && s.size_bytes == 60)
        .collect();
    assert!(!empty.is_empty(), "{:?}", log.segments());
    let gap = empty[0].base_offset..empty[0].next_offset;
    for o in gap.clone() {
        assert_eq!(log.read(o).unwrap(), None);
    }
    let count = log.reader(0).unwrap().count();
    assert!(log.verify().unwrap().corrupt.is_empty());
    log.close().unwrap();
    let log = Log::open(DIR, config).unwrap();
    assert_eq!(log.reader(0).unwrap().count(), count);
    assert!(log.verify().unwrap().corrupt.is_empty());
    // Everything is old: retention deletes every sealed segment, the empty one too.
    clock.advance(2 * HOUR);
    log.append(Record::keyed("fresh", "f")).unwrap();
    log.enforce_retention().unwrap();
    assert!(
        log.start_offset() >= gap.end,
        "start {}",
        log.start_offset()
    );
}
