//! A failed roll (issue 9, defect 9). A roll seals the active segment (cutting its
//! file to its data) and then creates the next one; when the creation failed
//! (ENOSPC, EMFILE) the writer kept the sealed segment as its active one with a
//! stale allocation, and the next append wrote through the map past the end of the
//! file: SIGBUS on a real disk. Now any roll failure poisons the log, later calls
//! fail cleanly, and a reopen keeps every record whose append returned `Ok`.
//!
//! The faults are placed at every file operation of the roll (and the few after
//! it), so the creation of the new segment is among them whatever its position.

mod common;

use std::path::Path;
use std::time::Duration;

use logqueue::fs::FileSystem;
use logqueue::sim::{FaultKind, FaultMode, SimFs};
use logqueue::{Error, Log, LogConfig, ManualClock, Record};

const DIR: &str = "/db/log";
const MINUTE: Duration = Duration::from_secs(60);
const SEGMENT_BYTES: u64 = 2048;

fn config(fs: &SimFs, clock: &ManualClock) -> LogConfig {
    LogConfig {
        retention_ms: Some(MINUTE),
        ..common::sim_config(fs, clock, SEGMENT_BYTES)
    }
}

fn segment_path(base: u64) -> String {
    format!("{DIR}/{base:020}.log")
}

/// A log of one segment holding `n` records; returns it and their values.
fn one_segment(fs: &SimFs, clock: &ManualClock, n: u64) -> (Log, Vec<Vec<u8>>) {
    fs.write_file("/db/.keep", b"").unwrap();
    let log = Log::open(DIR, config(fs, clock)).unwrap();
    let values: Vec<Vec<u8>> = (0..n).map(common::value_for).collect();
    for v in &values {
        log.append(Record::new(v.clone())).unwrap();
    }
    assert_eq!(log.segments().len(), 1);
    (log, values)
}

/// The roll failed: every later write fails cleanly with `Poisoned` (no SIGBUS
/// panic from SimFs), and a reopen after a process kill holds `values` exactly.
/// Returns whether the fault came after the seal cut the old file to its data (the
/// case that used to write past the end of the file).
fn check_failed_roll(
    fs: &SimFs,
    clock: &ManualClock,
    log: Log,
    values: &[Vec<u8>],
    ctx: &str,
) -> bool {
    let old = log.segments()[0].clone();
    let cut = fs.file_len(segment_path(old.base_offset)) == Some(old.size_bytes);
    let created = fs.exists(Path::new(&segment_path(old.next_offset)));
    fs.clear_faults();
    for _ in 0..3 {
        let e = log.append(Record::new("after")).unwrap_err();
        assert!(matches!(e, Error::Poisoned { .. }), "{ctx}: {e}");
    }
    assert!(matches!(log.flush(), Err(Error::Poisoned { .. })), "{ctx}");
    fs.kill();
    drop(log);
    let log = Log::open(DIR, config(fs, clock)).unwrap();
    common::check_log_matches(&log, 0, values, ctx);
    log.close().unwrap();
    cut && !created
}

/// Retention rolls an expired active segment before deleting it; that roll did not
/// poison the log when it failed.
#[test]
fn a_failed_retention_roll_poisons_the_log() {
    let mut after_seal = 0;
    for n in 1..=12 {
        let ctx = format!("fault at op {n} of the retention pass");
        common::with_context(&ctx, || {
            let fs = SimFs::new(n);
            let clock = ManualClock::new(1_000_000);
            let (log, values) = one_segment(&fs, &clock, 5);
            clock.advance(2 * MINUTE);
            fs.fail_after(n, FaultKind::NoSpace, FaultMode::Once);
            let result = log.enforce_retention();
            if result.is_err() && log.segments().len() == 1 && log.segments()[0].base_offset == 0 {
                // The roll failed (the old segment is still the only, active, one).
                if check_failed_roll(&fs, &clock, log, &values, &ctx) {
                    after_seal += 1;
                }
            } else {
                // The fault hit a later step, or nothing: not this test's case.
                fs.clear_faults();
                drop(result);
                log.close().ok();
            }
        });
    }
    assert!(after_seal > 0, "no fault hit the roll after the seal");
}

/// The same for a roll on the append path (a full segment).
#[test]
fn a_failed_append_roll_poisons_the_log() {
    let mut after_seal = 0;
    for n in 1..=12 {
        let ctx = format!("fault at op {n} of the rolling append");
        common::with_context(&ctx, || {
            let fs = SimFs::new(n);
            let clock = ManualClock::new(1_000_000);
            let (log, mut values) = one_segment(&fs, &clock, 0);
            // Fill the segment up to the append that rolls.
            let big = |i: u64| format!("{i}-{}", "b".repeat(300)).into_bytes();
            while log.segments()[0].size_bytes + 400 < SEGMENT_BYTES {
                let v = big(values.len() as u64);
                log.append(Record::new(v.clone())).unwrap();
                values.push(v);
            }
            let v = big(values.len() as u64);
            fs.fail_after(n, FaultKind::NoSpace, FaultMode::Once);
            match log.append(Record::new(v.clone())) {
                Err(e) if log.segments().len() == 1 => {
                    assert!(matches!(e, Error::Io { .. }), "{ctx}: {e}");
                    if check_failed_roll(&fs, &clock, log, &values, &ctx) {
                        after_seal += 1;
                    }
                }
                other => {
                    // The roll itself went through. A fault in the write that follows
                    // fails the append; one in the fsync of the sealed segment (after
                    // the write) fails it too, with the record in the log. Either way
                    // the log is poisoned.
                    assert!(log.segments().len() > 1, "{ctx}: it rolled");
                    let failed = other.is_err();
                    fs.clear_faults();
                    if failed {
                        let e = log.append(Record::new("after")).unwrap_err();
                        assert!(matches!(e, Error::Poisoned { .. }), "{ctx}: {e}");
                    }
                    let written = log.end_offset() > values.len() as u64;
                    assert!(written || failed, "{ctx}: Ok'd but not written");
                    if written {
                        values.push(v);
                    }
                    fs.kill();
                    drop(log);
                    let log = Log::open(DIR, config(&fs, &clock)).unwrap();
                    common::check_log_matches(&log, 0, &values, &ctx);
                    log.close().unwrap();
                }
            }
        });
    }
    assert!(after_seal > 0, "no fault hit the roll after the seal");
}
