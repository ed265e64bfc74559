//! `redrive_where` (selective, each letter at most once, exactly once across crashes
//! at every operation), `purge_dead_letters` and `dead_letter_retention`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{read_all, sim_config, with_context};
use logqueue::sim::{FaultKind, FaultMode, SimFs};
use logqueue::{
    Log, LogConfig, ManualClock, Queue, QueueConfig, Record, StoredRecord, DLQ_REASON, REDRIVE_FROM,
};

const NO_WAIT: Duration = Duration::ZERO;

fn cfg() -> QueueConfig {
    QueueConfig {
        visibility_timeout: Duration::from_secs(10),
        journal_bytes: 4096,
        ..QueueConfig::default()
    }
}

fn open(fs: &SimFs, clock: &ManualClock) -> (Log, Queue) {
    let log = Log::open("/log", sim_config(fs, clock, 1 << 16)).unwrap();
    let q = Queue::open(&log, "q", cfg()).unwrap();
    (log, q)
}

/// Dead-letters `n` records, reason "a" for even ones, "b" for odd ones.
fn dead_letter_n(q: &Queue, n: usize) {
    for i in 0..n {
        q.send(Record::new(format!("job {i}"))).unwrap();
    }
    let mut left = n;
    while left > 0 {
        for d in q.receive(left, NO_WAIT).unwrap() {
            let i: usize = std::str::from_utf8(&d.record.value.clone().unwrap()[4..])
                .unwrap()
                .parse()
                .unwrap();
            let reason = if i.is_multiple_of(2) { "a" } else { "b" };
            q.dead_letter(&d.receipt, reason).unwrap();
            left -= 1;
        }
    }
    q.flush().unwrap();
}

fn reason_is(reason: &'static str) -> impl Fn(&StoredRecord) -> bool {
    move |r| r.header(DLQ_REASON) == Some(reason.as_bytes())
}

/// Dead-letter offset -> copies in the main log.
fn copies(log: &Log) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for r in read_all(log) {
        if let Some(from) = r.header(REDRIVE_FROM) {
            let from: u64 = std::str::from_utf8(from).unwrap().parse().unwrap();
            *m.entry(from).or_default() += 1;
        }
    }
    m
}

#[test]
fn only_accepted_letters_go_back_and_the_others_stay() {
    let (fs, clock) = (SimFs::new(0), ManualClock::new(0));
    let (log, q) = open(&fs, &clock);
    dead_letter_n(&q, 10);
    assert_eq!(q.redrive_where(3, reason_is("a")).unwrap(), 3);
    assert_eq!(q.redrive_where(10, reason_is("a")).unwrap(), 2);
    assert_eq!(q.redrive_where(10, reason_is("a")).unwrap(), 0);
    let evens: BTreeMap<u64, usize> = (0..10).step_by(2).map(|o| (o, 1)).collect();
    assert_eq!(copies(&log), evens);
    // The redriven copies carry no dlq.* header; the dead-letter log is untouched.
    let copy = read_all(&log)
        .into_iter()
        .find(|r| r.header(REDRIVE_FROM).is_some());
    assert_eq!(copy.unwrap().header(DLQ_REASON), None);
    assert_eq!(q.dead_letters().end_offset(), 10);
    // Remembered across a reopen: the rest, once.
    drop(q);
    let q = Queue::open(&log, "q", cfg()).unwrap();
    assert_eq!(q.redrive_where(10, |_| true).unwrap(), 5);
    assert_eq!(q.redrive(10).unwrap(), 0);
    assert_eq!(copies(&log), (0..10).map(|o| (o, 1)).collect());
}

#[test]
fn plain_redrive_skips_letters_a_filtered_redrive_moved() {
    let (fs, clock) = (SimFs::new(0), ManualClock::new(0));
    let (log, q) = open(&fs, &clock);
    dead_letter_n(&q, 6);
    assert_eq!(q.redrive_where(10, reason_is("b")).unwrap(), 3);
    assert_eq!(q.redrive(2).unwrap(), 2);
    assert_eq!(q.redrive(10).unwrap(), 1);
    assert_eq!(copies(&log), (0..6).map(|o| (o, 1)).collect());
}

/// 12 letters, then: 4 of reason "a", all of reason "b", then everything.
fn workload(q: &Queue) -> logqueue::Result<()> {
    q.redrive_where(4, reason_is("a"))?;
    q.redrive_where(100, reason_is("b"))?;
    q.redrive_where(100, |_| true)?;
    Ok(())
}

fn setup(fs: &SimFs, clock: &ManualClock) -> (Log, Queue) {
    let (log, q) = open(fs, clock);
    dead_letter_n(&q, 12);
    log.flush().unwrap();
    (log, q)
}

#[test]
fn a_crash_at_every_operation_of_redrive_where_moves_each_letter_exactly_once() {
    let ops = {
        let (fs, clock) = (SimFs::new(0), ManualClock::new(0));
        let (log, q) = setup(&fs, &clock);
        let before = fs.op_count();
        workload(&q).unwrap();
        assert_eq!(copies(&log), (0..12).map(|o| (o, 1)).collect());
        fs.op_count() - before
    };
    assert!(ops > 20, "{ops} ops");
    for kill in [true, false] {
        for k in 1..=ops + 1 {
            for seed in 0..3 {
                let ctx = format!("kill {kill}, op {k} of {ops}, SimFs seed {seed}");
                with_context(&ctx, || {
                    let (fs, clock) = (SimFs::new(seed), ManualClock::new(0));
                    {
                        let (_log, q) = setup(&fs, &clock);
                        if kill {
                            fs.fail_after(k, FaultKind::Eio, FaultMode::Sticky);
                        } else {
                            fs.crash_at_op(fs.op_count() + k);
                        }
                        let _ = workload(&q);
                        if kill {
                            fs.kill();
                        } else {
                            fs.crash();
                        }
                        fs.clear_faults();
                    }
                    let (log, q) = open(&fs, &clock);
                    // Nothing moved twice so far, and only through the workload's calls.
                    assert!(
                        copies(&log).values().all(|&c| c == 1),
                        "{ctx}: {:?}",
                        copies(&log)
                    );
                    workload(&q).unwrap_or_else(|e| panic!("{ctx}: rerun: {e}"));
                    assert_eq!(copies(&log), (0..12).map(|o| (o, 1)).collect(), "{ctx}");
                });
            }
        }
    }
}

#[test]
fn purge_dead_letters_deletes_them_and_they_are_never_redriven() {
    let (fs, clock) = (SimFs::new(0), ManualClock::new(0));
    let (log, q) = open(&fs, &clock);
    dead_letter_n(&q, 4);
    assert_eq!(q.redrive_where(10, reason_is("a")).unwrap(), 2);
    assert_eq!(q.purge_dead_letters().unwrap(), 4);
    assert_eq!(q.purge_dead_letters().unwrap(), 0);
    assert_eq!(q.redrive(10).unwrap(), 0);
    let dlq = q.dead_letters();
    assert_eq!((dlq.start_offset(), dlq.end_offset()), (4, 4));
    // New letters after the purge are redriven as usual, and a reopen (which
    // reconciles the state with the dead-letter log) is clean.
    dead_letter_n(&q, 1);
    drop((q, dlq));
    let q = Queue::open(&log, "q", cfg()).unwrap();
    assert_eq!(q.stats().dead_lettered_total, 5);
    assert_eq!(q.redrive(10).unwrap(), 1);
    assert_eq!(
        copies(&log).keys().copied().collect::<Vec<_>>(),
        vec![0, 2, 4]
    );
}

#[test]
fn dead_letter_retention_deletes_old_letters_when_the_queue_flushes() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let config = LogConfig {
        max_batch_bytes: 1024,
        ..sim_config(&fs, &clock, 1024)
    };
    let log = Log::open("/log", config).unwrap();
    let qc = QueueConfig {
        dead_letter_retention: Some(Duration::from_secs(3600)),
        ..cfg()
    };
    let q = Queue::open(&log, "q", qc.clone()).unwrap();
    let big = || Record::new(vec![7u8; 300]);
    for _ in 0..10 {
        q.send(big()).unwrap();
    }
    for d in q.receive(10, NO_WAIT).unwrap() {
        q.dead_letter(&d.receipt, "old").unwrap();
    }
    q.flush().unwrap();
    assert_eq!(q.dead_letters().start_offset(), 0, "young: kept");
    clock.advance(Duration::from_secs(1800));
    for _ in 0..3 {
        q.send(big()).unwrap();
    }
    for d in q.receive(10, NO_WAIT).unwrap() {
        q.dead_letter(&d.receipt, "new").unwrap();
    }
    clock.advance(Duration::from_secs(1801));
    q.flush().unwrap();
    let dlq = q.dead_letters();
    let start = dlq.start_offset();
    assert!(
        start > 0 && start <= 10,
        "old sealed segments deleted: start {start}"
    );
    let kept = read_all(&dlq);
    assert!(kept.iter().all(|r| r.offset >= start));
    assert!(
        kept.iter()
            .filter(|r| r.header(DLQ_REASON) == Some(b"new"))
            .count()
            == 3
    );
    // Without the setting, nothing is deleted.
    drop((q, dlq));
    let q = Queue::open(&log, "q", cfg()).unwrap();
    clock.advance(Duration::from_secs(100 * 3600));
    q.flush().unwrap();
    assert_eq!(q.dead_letters().start_offset(), start);
}
