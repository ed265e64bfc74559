//! A power loss at every file-system operation of a cleaning pass: each reopen gives
//! a log whose every offset reads either the record appended there or, only for a
//! record a newer one of its key replaced, nothing; the newest record of every key is
//! always there, nothing else changes, and the next pass finishes the job.

mod common;

use std::collections::BTreeMap;

use common::sim_config;
use logqueue::sim::{FaultKind, FaultMode, SimFs};
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
    // An un-flushed tail: survives a process kill, may go with a power loss (unless
    // the pass's own flush made it durable first).
    for i in 0..TAIL {
        let k = format!("tail{i}");
        let record = Record::keyed(k.clone(), format!("{k}-value"));
        let value = record.value.clone();
        let offset = log.append(record).unwrap();
        written.push(Written {
            offset,
            key: k,
            value,
        });
    }
    (fs, log, config, written)
}

const TAIL: u64 = 3;

/// Offsets a pass over the segments below `cleanable_end` may remove: those with
/// a newer record of their key below `cleanable_end`.
fn removable(written: &[Written], cleanable_end: u64) -> Vec<bool> {
    let mut newest: BTreeMap<&str, u64> = BTreeMap::new();
    for w in written.iter().filter(|w| w.offset < cleanable_end) {
        newest.insert(&w.key, w.offset);
    }
    written
        .iter()
        .map(|w| w.offset < cleanable_end && newest[w.key.as_str()] != w.offset)
        .collect()
}

/// Checks the reopened log against what was written: a record may be missing only
/// if a pass over the segments below `may_end` could remove it; returns whether
/// every record a pass below `must_end` removes is gone.
fn check(
    log: &Log,
    written: &[Written],
    may_end: u64,
    must_end: u64,
    killed: bool,
    ctx: &str,
) -> bool {
    let may = removable(written, may_end);
    let must = removable(written, must_end);
    let end = log.end_offset();
    let all = written.len() as u64;
    assert!(
        end == all || (!killed && end >= all - TAIL),
        "{ctx}: end {end}"
    );
    let mut compacted = true;
    for (i, w) in written.iter().enumerate().filter(|(_, w)| w.offset < end) {
        let got = log
            .read(w.offset)
            .unwrap_or_else(|e| panic!("{ctx}: read {}: {e}", w.offset));
        match got {
            Some(r) => {
                assert_eq!(r.key.as_deref(), Some(w.key.as_bytes()), "{ctx}");
                assert_eq!(r.value, w.value, "{ctx}: offset {}", w.offset);
                compacted &= !must[i];
            }
            None => assert!(may[i], "{ctx}: offset {} ({}) lost", w.offset, w.key),
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

/// Crashes (power loss, or a process kill when `kill`) at every operation of
/// `passes` consecutive passes.
fn crash_everywhere(map_bytes: usize, passes: usize, kill: bool) {
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
        let ctx = format!("map {map_bytes}, kill {kill}, crash at op {n} of {ops}");
        let (fs, log, config, written) = build(7, map_bytes);
        if kill {
            // The process dies at op n: it and every later op fail, and nothing
            // written before is lost.
            fs.fail_after(n + 1, FaultKind::Eio, FaultMode::Sticky);
        } else {
            fs.crash_at_op(fs.op_count() + n);
        }
        for _ in 0..passes {
            if log.compact().is_err() {
                break;
            }
        }
        if kill {
            fs.kill();
        } else {
            fs.crash();
        }
        fs.clear_faults();
        drop(log);
        let log = Log::open(DIR, config).unwrap_or_else(|e| panic!("{ctx}: open: {e}"));
        check(&log, &written, cleanable_end, 0, kill, &ctx);
        // A power loss may take the un-flushed tail, and with it the roll that sealed
        // the last segment the pass could clean.
        let now_cleanable = cleanable_end.min(log.segments().last().unwrap().base_offset);
        // Passes after the reopen finish the job (a tiny map needs several).
        for _ in 0..20 {
            log.compact()
                .unwrap_or_else(|e| panic!("{ctx}: compact: {e}"));
            if log.stats().cleaner_offset >= now_cleanable {
                break;
            }
        }
        log.compact().unwrap();
        assert!(
            check(&log, &written, cleanable_end, now_cleanable, kill, &ctx),
            "{ctx}: not compacted"
        );
    }
    drop(written);
}

#[test]
fn crash_at_every_op_of_a_pass() {
    crash_everywhere(1 << 20, 1, false);
}

#[test]
fn kill_at_every_op_of_a_pass() {
    crash_everywhere(1 << 20, 1, true);
}

#[test]
fn crash_at_every_op_of_a_partial_pass() {
    // 8 keys per pass: each pass stops early and checkpoints a partial cleaner offset.
    crash_everywhere(24 * 9, 4, false);
}
