//! A scripted workload (rolls, flushes, `delete_records_before`, close and reopen) is
//! crashed or failed at every one of its file-system operations on SimFs; recovery must
//! open, keep every flushed record (every appended one after process death), keep a
//! dense prefix, a consistent start offset and no corruption, and a failed write or
//! fsync must be an error that poisons the log, never a panic.

mod common;

use std::ops::Range;

use common::{check_log_matches, seeds, sim_config, with_context};
use logqueue::sim::{FaultKind, FaultMode, SimFs};
use logqueue::{Error, Log, LogConfig, ManualClock, Record, Result};

const DIR: &str = "/db/log";
const DELETE_BEFORE: u64 = 14;

fn config(fs: &SimFs, clock: &ManualClock) -> LogConfig {
    LogConfig {
        max_batch_bytes: 8 << 10,
        ..sim_config(fs, clock, 1024)
    }
}

/// What the workload did, as far as its calls returned.
#[derive(Debug, Default)]
struct Progress {
    /// Values whose append was called, by offset (the last ones may have failed).
    attempted: Vec<Vec<u8>>,
    /// Offsets below were acknowledged (their append returned Ok).
    acked: u64,
    /// Offsets below were durable (a flush or close returned Ok).
    flushed: u64,
    /// The start offset a `delete_records_before` that returned Ok set.
    start_acked: u64,
    /// The start offset a `delete_records_before` was asked for, returned or not.
    start_attempted: u64,
    batches: Vec<Range<u64>>,
}

fn value(offset: u64) -> Vec<u8> {
    format!(
        "record-{offset:04}-{}",
        "p".repeat(60 + (offset as usize * 13) % 90)
    )
    .into_bytes()
}

/// After any failed write the handle must refuse further writes.
fn assert_poisoned(log: &Log, what: &str) {
    let append = log.append(Record::new("after a failure"));
    assert!(
        matches!(append, Err(Error::Poisoned { .. })),
        "append after a failed {what} must be Err(Poisoned), got {append:?}"
    );
    let flush = log.flush();
    assert!(
        matches!(flush, Err(Error::Poisoned { .. })),
        "flush after a failed {what} must be Err(Poisoned), got {flush:?}"
    );
}

fn append(log: &Log, p: &mut Progress, n: usize) -> Result<()> {
    for _ in 0..n {
        let o = p.attempted.len() as u64;
        p.attempted.push(value(o));
        let durable = log.durable_offset();
        match log.append(Record::new(value(o))) {
            Ok(got) => {
                assert_eq!(got, o, "append offset");
                p.acked = o + 1;
            }
            Err(e) => {
                assert_eq!(
                    log.durable_offset(),
                    durable,
                    "a failed append moved durability"
                );
                assert_poisoned(log, "append");
                return Err(e);
            }
        }
    }
    Ok(())
}

fn append_batch(log: &Log, p: &mut Progress, n: u64) -> Result<()> {
    let base = p.attempted.len() as u64;
    let range = base..base + n;
    p.attempted.extend(range.clone().map(value));
    p.batches.push(range.clone());
    match log.append_batch(range.clone().map(|o| Record::new(value(o))).collect()) {
        Ok(got) => {
            assert_eq!(got, range, "batch offsets");
            p.acked = range.end;
            Ok(())
        }
        Err(e) => {
            assert_poisoned(log, "append_batch");
            Err(e)
        }
    }
}

fn flush(log: &Log, p: &mut Progress) -> Result<()> {
    let durable = log.durable_offset();
    match log.flush() {
        Ok(()) => {
            assert_eq!(
                log.durable_offset(),
                p.acked,
                "flush makes all appended durable"
            );
            p.flushed = p.acked;
            Ok(())
        }
        Err(e) => {
            assert_eq!(
                log.durable_offset(),
                durable,
                "a failed flush moved durability"
            );
            assert_poisoned(log, "flush");
            Err(e)
        }
    }
}

fn delete_before(log: &Log, p: &mut Progress, offset: u64) -> Result<()> {
    p.start_attempted = offset;
    match log.delete_records_before(offset) {
        Ok(()) => {
            assert_eq!(log.start_offset(), offset);
            p.start_acked = offset;
            Ok(())
        }
        Err(e) => {
            assert_poisoned(log, "delete_records_before");
            Err(e)
        }
    }
}

fn close(log: Log, p: &mut Progress) -> Result<()> {
    let probe = log.clone();
    match log.close() {
        Ok(()) => {
            p.flushed = p.acked;
            Ok(())
        }
        Err(e) => {
            assert!(
                matches!(probe.append(Record::new("x")), Err(Error::Closed)),
                "a log whose close failed is still closed"
            );
            Err(e)
        }
    }
}

/// Appends across several rolls with flushes, raises the start offset, reads an old
/// segment, closes, reopens (the clean-shutdown path) and appends more.
fn workload(fs: &SimFs, clock: &ManualClock, p: &mut Progress) -> Result<()> {
    let log = Log::open(DIR, config(fs, clock))?;
    append(&log, p, 12)?;
    flush(&log, p)?;
    append_batch(&log, p, 5)?;
    append(&log, p, 8)?;
    flush(&log, p)?;
    delete_before(&log, p, DELETE_BEFORE)?;
    append(&log, p, 6)?;
    log.read(DELETE_BEFORE + 1)?;
    append_batch(&log, p, 3)?;
    close(log, p)?;

    let log = Log::open(DIR, config(fs, clock))?;
    log.read(DELETE_BEFORE + 2)?;
    append(&log, p, 7)?;
    // The start offset becomes durable above records that are not: after a power
    // loss the log may have to restart at the start offset.
    delete_before(&log, p, p.acked - 2)?;
    append_batch(&log, p, 4)?;
    flush(&log, p)?;
    append(&log, p, 3)?;
    close(log, p)
}

/// Reopens the state the workload left and checks the promises; `must_keep` is what
/// has to be there (flushed, or everything acknowledged after a process death).
fn check_recovered(fs: &SimFs, clock: &ManualClock, p: &Progress, must_keep: u64, ctx: &str) {
    fs.clear_faults();
    let log =
        Log::open(DIR, config(fs, clock)).unwrap_or_else(|e| panic!("{ctx}: open failed: {e}"));
    let (start, end) = (log.start_offset(), log.end_offset());
    assert!(
        start >= p.start_acked && start <= p.start_attempted,
        "{ctx}: start offset {start} outside [{}, {}]",
        p.start_acked,
        p.start_attempted
    );
    assert!(
        end >= must_keep,
        "{ctx}: recovered end {end} lost records below {must_keep} (progress {p:?})"
    );
    assert!(end >= start, "{ctx}: end {end} below start {start}");
    let attempted = p.attempted.len() as u64;
    assert!(
        end <= attempted.max(start),
        "{ctx}: recovered end {end} is past the {attempted} records appended"
    );
    for b in &p.batches {
        assert!(
            !(b.start.max(start) < end && end < b.end),
            "{ctx}: batch {b:?} split by recovered end {end}"
        );
    }
    // Offsets in [start, end) hold exactly what was appended there (when the log
    // restarted at the start offset, there are none).
    let mut values = p.attempted.clone();
    values.resize(end as usize, Vec::new());
    check_log_matches(&log, start, &values, ctx);
    assert_eq!(
        log.durable_offset(),
        end,
        "{ctx}: open makes the log durable"
    );
    let o = log
        .append(Record::new("after recovery"))
        .unwrap_or_else(|e| panic!("{ctx}: append after recovery failed: {e}"));
    assert_eq!(o, end, "{ctx}: append after recovery continues at the end");
    log.close()
        .unwrap_or_else(|e| panic!("{ctx}: close after recovery failed: {e}"));
}

fn fresh(seed: u64) -> SimFs {
    let fs = SimFs::new(seed);
    // The log's parent exists durably: crash semantics concern the engine only.
    fs.write_file("/db/.keep", b"").unwrap();
    fs
}

fn clock() -> ManualClock {
    ManualClock::new(1_700_000_000_000)
}

fn total_ops(seed: u64) -> u64 {
    let fs = fresh(seed);
    let mut p = Progress::default();
    workload(&fs, &clock(), &mut p).expect("the workload runs without faults");
    assert_eq!(p.flushed, p.attempted.len() as u64);
    let total = fs.op_count();
    fs.crash();
    check_recovered(&fs, &clock(), &p, p.flushed, "no fault, then power loss");
    total
}

#[test]
fn power_loss_at_every_operation() {
    for seed in seeds(1) {
        let total = total_ops(seed);
        assert!(total > 50, "the workload does {total} operations");
        for n in 1..=total {
            let ctx = format!("seed {seed}, power loss at op {n} of {total}");
            with_context(&ctx, || {
                let fs = fresh(seed);
                let clock = clock();
                fs.crash_at_op(n);
                let mut p = Progress::default();
                let result = workload(&fs, &clock, &mut p);
                assert!(
                    result.is_err(),
                    "{ctx}: the workload did not notice the crash"
                );
                check_recovered(&fs, &clock, &p, p.flushed, &ctx);
            });
        }
    }
}

#[test]
fn power_loss_during_recovery() {
    let seed = seeds(1)[0];
    let total = total_ops(seed);
    for n in 1..=total {
        let ctx = format!("seed {seed}, power loss at op {n} of {total}");
        // How many operations the recovery of that state does.
        let recovery_ops = {
            let fs = fresh(seed);
            fs.crash_at_op(n);
            let _ = workload(&fs, &clock(), &mut Progress::default());
            fs.clear_faults();
            let before = fs.op_count();
            drop(Log::open(DIR, config(&fs, &clock())).unwrap());
            fs.op_count() - before
        };
        // Crash the recovery itself at one of its operations, then recover again.
        let k = 1 + n % recovery_ops.max(1);
        let ctx = format!("{ctx}, then again at op {k} of {recovery_ops} of the recovery");
        with_context(&ctx, || {
            let fs = fresh(seed);
            let clock = clock();
            fs.crash_at_op(n);
            let mut p = Progress::default();
            assert!(workload(&fs, &clock, &mut p).is_err());
            fs.clear_faults();
            fs.crash_at_op(fs.op_count() + k);
            if let Ok(log) = Log::open(DIR, config(&fs, &clock)) {
                // The crash hit an operation whose failure open absorbed; the handles
                // are dead all the same.
                assert!(log.close().is_err(), "{ctx}: close after the crash worked");
            }
            check_recovered(&fs, &clock, &p, p.flushed, &ctx);
        });
    }
}

#[test]
fn process_death_at_every_operation() {
    for seed in seeds(1) {
        let total = total_ops(seed);
        for n in 1..=total {
            let ctx = format!("seed {seed}, process death at op {n} of {total}");
            with_context(&ctx, || {
                let fs = fresh(seed);
                let clock = clock();
                // The process dies at op n: that and every later operation never
                // reaches the disk. Everything acknowledged before must survive.
                fs.fail_after(n, FaultKind::Eio, FaultMode::Sticky);
                let mut p = Progress::default();
                let result = workload(&fs, &clock, &mut p);
                assert!(result.is_err(), "{ctx}: the workload did not notice");
                fs.clear_faults();
                fs.kill();
                check_recovered(&fs, &clock, &p, p.acked, &ctx);
            });
        }
    }
}

#[test]
fn io_errors_at_every_operation() {
    for seed in seeds(1) {
        let total = total_ops(seed);
        for n in 1..=total {
            for kind in [FaultKind::Eio, FaultKind::NoSpace] {
                let ctx = format!("seed {seed}, {kind:?} once at op {n} of {total}");
                with_context(&ctx, || {
                    let fs = fresh(seed);
                    let clock = clock();
                    fs.fail_after(n, kind, FaultMode::Once);
                    let mut p = Progress::default();
                    // Err or Ok (a failed best-effort write, e.g. of an index cache,
                    // may be absorbed), never a panic; the helpers check poisoning.
                    let _ = workload(&fs, &clock, &mut p);
                    fs.clear_faults();
                    fs.kill();
                    check_recovered(&fs, &clock, &p, p.acked, &format!("{ctx}, then kill"));
                });
                let ctx =
                    format!("seed {seed}, {kind:?} once at op {n} of {total}, then power loss");
                with_context(&ctx, || {
                    let fs = fresh(seed);
                    let clock = clock();
                    fs.fail_after(n, kind, FaultMode::Once);
                    let mut p = Progress::default();
                    let _ = workload(&fs, &clock, &mut p);
                    fs.clear_faults();
                    fs.crash();
                    check_recovered(&fs, &clock, &p, p.flushed, &ctx);
                });
            }
        }
    }
}
