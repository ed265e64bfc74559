//! A power loss at every file-system operation of a cleaning pass: each reopen gives
//! a log whose every offset reads either the record appended there or, only for a
//! record a newer one of its key replaced, nothing; the newest record of every key is
//! always there, nothing else changes, and the next pass finishes the job.

mod common;

use std::collections::BTreeMap;

use common::sim_config;
use logqueue::sim::SimFs;
use logqueue::{CleanupPolicy, CompactionConfig, Log, LogConfig, ManualClock, Record};

const DIR: &str = "/db/log";

struct Written {
    offset: u64,
    key: String,
    value: Option<Vec<u8>>,
}

fn build(seed: u64, map_bytes: usize) -> (SimFs, Log, LogConfig, Vec<Written>) {
    let fs = SimFs::new(seed);
    fs.write_file("/db/.keep", b"").unwrap();
    let clock = ManualClock::new(1_000_000);
    let config = LogConfig {
        cleanup: CleanupPolicy::Compact,
        compaction: CompactionConfig {
            offset_map_bytes: map_bytes,
            ..CompactionConfig::default()
        },
        ..sim_config(&fs, &clock, 1200)
    };
    let log = Log::open(DIR, config.clone()).unwrap();
    let mut written = Vec::new();
    for version in 0..4u32 {
        for key in 0..15u32 {
            let k = format!("key{key}");
            let record = if version == 3 && key % 5 == 0 {
                Record::tombstone(k.clone())
            } else {
                Record::keyed(k.clone(), format!("{k}-v{version}-{}", "w".repeat(20)))
            };
            let value = record.value.clone();
            let offset = log.append(record).unwrap();
            written.push(Written {
                offset,
                key: k,
                value,
            });
        }
    }
    log.flush().unwrap();
    (fs, log, config, written)
}

/// Checks the reopened log against what was written: `Ok(true)` when fully compacted.
fn check(log: &Log, written: &[Written], cleanable_end: u64, ctx: &str) -> bool {
    let mut newest: BTreeMap<&str, u64> = BTreeMap::new();
    for w in written.iter().filter(|w| w.offset < cleanable_end) {
        newest.insert(&w.key, w.offset);
    }
    assert_eq!(log.end_offset(), written.len() as u64, "{ctx}");
    let mut compacted = true;
    for w in written {
        let got = log
            .read(w.offset)
            .unwrap_or_else(|e| panic!("{ctx}: read {}: {e}", w.offset));
        let must_stay = w.offset >= cleanable_end || newest[w.key.as_str()] == w.offset;
        match got {
            Some(r) => {
                assert_eq!(r.key.as_deref(), Some(w.key.as_bytes()), "{ctx}");
                assert_eq!(r.value, w.value, "{ctx}: offset {}", w.offset);
                compacted &= must_stay;
            }
            None => assert!(!must_stay, "{ctx}: offset {} ({}) lost", w.offset, w.key),
        }
    }
    let read: Vec<u64> = log
        .reader(0)
        .unwrap()
        .map(|r| r.unwrap_or_else(|e| panic!("{ctx}: reader: {e}")).offset)
        .collect();
    assert!(read.windows(2).all(|p| p[0] < p[1]), "{ctx}");
    assert!(log.verify().unwrap().corrupt.is_empty(), "{ctx}");
    compacted
}

/// Crashes at every operation of `passes` consecutive passes.
fn crash_everywhere(map_bytes: usize, passes: usize) {
    let (fs, log, _, written) = build(7, map_bytes);
    let cleanable_end = log.segments().last().unwrap().base_offset;
    let before = fs.op_count();
    let mut cleaned = 0;
    for _ in 0..passes {
        cleaned += log.compact().unwrap().segments_cleaned;
    }
    assert!(cleaned > 2, "{cleaned} segments cleaned");
    let ops = fs.op_count() - before;
    assert!(ops > 10, "a pass does many file operations: {ops}");
    for n in 0..=ops {
        let ctx = format!("map {map_bytes}, crash at op {n} of {ops}");
        let (fs, log, config, written) = build(7, map_bytes);
        fs.crash_at_op(fs.op_count() + n);
        for _ in 0..passes {
            if log.compact().is_err() {
                break;
            }
        }
        fs.crash();
        fs.clear_faults();
        drop(log);
        let log = Log::open(DIR, config).unwrap_or_else(|e| panic!("{ctx}: open: {e}"));
        check(&log, &written, cleanable_end, &ctx);
        // Passes after the reopen finish the job (a tiny map needs several).
        for _ in 0..20 {
            log.compact()
                .unwrap_or_else(|e| panic!("{ctx}: compact: {e}"));
            if log.stats().cleaner_offset >= cleanable_end {
                break;
            }
        }
        log.compact().unwrap();
        assert!(
            check(&log, &written, cleanable_end, &ctx),
            "{ctx}: not compacted"
        );
    }
    drop(written);
}

#[test]
fn crash_at_every_op_of_a_pass() {
    crash_everywhere(1 << 20, 1);
}

#[test]
fn crash_at_every_op_of_a_partial_pass() {
    // 8 keys per pass: each pass stops early and checkpoints a partial cleaner offset.
    crash_everywhere(24 * 9, 4);
}
