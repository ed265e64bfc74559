//! Background threads used to discard their errors (issue 9, defect 14): the last
//! one is now kept in `LogStats::last_background_error`, and a failure that puts
//! data at risk (an fsync) poisons the log while a failed retention pass does not.

mod common;

use std::time::{Duration, Instant};

use logqueue::sim::{FaultKind, FaultMode, SimFs};
use logqueue::{Error, FlushPolicy, Log, LogConfig, ManualClock, Record};

const DIR: &str = "/db/log";

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn background_config(fs: &SimFs, clock: &ManualClock) -> LogConfig {
    fs.write_file("/db/.keep", b"").unwrap();
    LogConfig {
        background: true,
        ..common::sim_config(fs, clock, 1024)
    }
}

fn last_error(log: &Log) -> Option<String> {
    log.stats().last_background_error
}

#[test]
fn a_failed_interval_flush_is_reported_and_poisons() {
    let fs = SimFs::new(1);
    let clock = ManualClock::new(1_000_000);
    let config = LogConfig {
        flush: FlushPolicy::Interval(Duration::from_millis(5)),
        ..background_config(&fs, &clock)
    };
    let log = Log::open(DIR, config).unwrap();
    assert_eq!(last_error(&log), None);
    log.append(Record::new("a")).unwrap();
    wait_for("a flush", || log.durable_offset() == 1);
    log.append(Record::new("b")).unwrap();
    fs.fail_after(1, FaultKind::Eio, FaultMode::Sticky);
    wait_for("the flusher's error", || last_error(&log).is_some());
    let error = last_error(&log).unwrap();
    assert!(error.starts_with("flusher: "), "{error}");
    fs.clear_faults();
    let e = log.append(Record::new("c")).unwrap_err();
    assert!(matches!(e, Error::Poisoned { .. }), "{e}");
    assert!(log.close().is_err());
}

#[test]
fn a_failed_retention_pass_is_reported_without_poisoning() {
    let fs = SimFs::new(2);
    let clock = ManualClock::new(1_000_000);
    let config = LogConfig {
        retention_ms: Some(Duration::from_secs(60)),
        retention_check_interval: Duration::from_millis(5),
        ..background_config(&fs, &clock)
    };
    let log = Log::open(DIR, config).unwrap();
    for i in 0..40 {
        log.append(Record::new(common::value_for(i))).unwrap();
    }
    // A fresh record keeps the active segment young; the roll syncer goes idle.
    clock.advance(Duration::from_secs(30));
    log.append(Record::new("fresh")).unwrap();
    let active = log.segments().last().unwrap().base_offset;
    wait_for("the roll syncer", || log.durable_offset() >= active);
    let segments = log.segments().len();
    assert!(segments > 2);
    fs.fail_after(1, FaultKind::Eio, FaultMode::Sticky);
    // The sealed segments expire: the retention thread tries, and fails.
    clock.advance(Duration::from_secs(40));
    wait_for("the retention error", || last_error(&log).is_some());
    let error = last_error(&log).unwrap();
    assert!(error.starts_with("retention: "), "{error}");
    assert_eq!(log.segments().len(), segments, "nothing was deleted");
    fs.clear_faults();
    // Not poisoned: appends go on, and the next pass deletes.
    log.append(Record::new("after")).unwrap();
    wait_for("a retention pass", || log.segments().len() < segments);
    log.close().unwrap();
}

#[test]
fn a_failed_roll_sync_is_reported_and_poisons() {
    let mut reported = 0;
    for n in 1..=16 {
        let ctx = format!("fault at op {n} of the rolling append");
        common::with_context(&ctx, || {
            let fs = SimFs::new(n);
            let clock = ManualClock::new(1_000_000);
            let log = Log::open(DIR, background_config(&fs, &clock)).unwrap();
            let mut i = 0;
            while log.segments()[0].size_bytes + 200 < 1024 {
                log.append(Record::new(common::value_for(i))).unwrap();
                i += 1;
            }
            fs.fail_after(n, FaultKind::Eio, FaultMode::Once);
            let mut appended = Ok(0);
            while log.segments().len() == 1 && appended.is_ok() {
                appended = log.append(Record::new(common::value_for(i)));
                i += 1;
            }
            if appended.is_err() {
                return; // the fault hit the append itself: tests/roll_failure.rs
            }
            let active = log.segments().last().unwrap().base_offset;
            wait_for("the roll syncer", || {
                log.durable_offset() >= active || last_error(&log).is_some()
            });
            if let Some(error) = last_error(&log) {
                if error.starts_with("prepare spare segment: ") {
                    // The next segment's file prepared ahead after the roll: not
                    // fatal (the next roll creates its file itself).
                    log.append(Record::new("after")).unwrap();
                    fs.clear_faults();
                    return;
                }
                assert!(error.starts_with("roll sync: "), "{ctx}: {error}");
                let e = log.append(Record::new("after")).unwrap_err();
                assert!(matches!(e, Error::Poisoned { .. }), "{ctx}: {e}");
                reported += 1;
            }
            fs.clear_faults();
        });
    }
    assert!(reported > 0, "no fault hit the roll syncer");
}
