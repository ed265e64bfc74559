//! Redrive: dead letters go back into the log as new records (headers kept, `dlq.*`
//! removed, `redrive.from` added), each exactly once, also when a crash hits any
//! file-system operation of a redrive.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::sim_config;
use logqueue::sim::SimFs;
use logqueue::{Log, ManualClock, Queue, QueueConfig, Record};

const NO_WAIT: Duration = Duration::ZERO;

fn cfg() -> QueueConfig {
    QueueConfig {
        journal_bytes: 4096,
        ..QueueConfig::default()
    }
}

fn open(fs: &SimFs, clock: &ManualClock) -> (Log, Queue) {
    let log = Log::open("/log", sim_config(fs, clock, 4096)).unwrap();
    let q = Queue::open(&log, "q", cfg()).unwrap();
    (log, q)
}

/// `n` records sent, received and dead-lettered, all flushed.
fn dead_letter_n(q: &Queue, n: u64) {
    for i in 0..n {
        q.send(Record::keyed(format!("k{i}"), format!("v{i}")).with_header("h", "x"))
            .unwrap();
    }
    for d in q.receive(n as usize, NO_WAIT).unwrap() {
        q.dead_letter(&d.receipt, "test").unwrap();
    }
    q.flush().unwrap();
}

/// Main-log records carrying `redrive.from`, by dead-letter offset: how many copies.
fn redriven(log: &Log) -> BTreeMap<u64, usize> {
    let mut out = BTreeMap::new();
    for r in common::read_all(log) {
        if let Some(from) = r.header("redrive.from") {
            let from: u64 = std::str::from_utf8(from).unwrap().parse().unwrap();
            assert_eq!(r.value.as_deref(), Some(format!("v{from}").as_bytes()));
            assert_eq!(r.header("h"), Some(&b"x"[..]));
            assert!(r.headers.iter().all(|h| !h.key.starts_with("dlq.")));
            *out.entry(from).or_insert(0) += 1;
        }
    }
    out
}

#[test]
fn redrive_moves_each_dead_letter_once() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let (log, q) = open(&fs, &clock);
    dead_letter_n(&q, 5);
    assert_eq!(q.redrive(2).unwrap(), 2);
    assert_eq!(q.redrive(10).unwrap(), 3);
    assert_eq!(q.redrive(10).unwrap(), 0);
    let got = q.receive(100, NO_WAIT).unwrap();
    let from: Vec<_> = got
        .iter()
        .map(|d| d.record.header("redrive.from").unwrap().to_vec())
        .collect();
    assert_eq!(
        from,
        (0..5)
            .map(|i| i.to_string().into_bytes())
            .collect::<Vec<_>>()
    );
    assert_eq!(got[0].record.key.as_deref(), Some(&b"k0"[..]));
    // Redriven records are durable when redrive returns.
    fs.crash();
    drop((log, q));
    let (log, q) = open(&fs, &clock);
    assert_eq!(redriven(&log), (0..5).map(|i| (i, 1)).collect());
    assert_eq!(q.redrive(10).unwrap(), 0);
}

#[test]
fn redrive_is_exactly_once_across_a_crash_at_every_operation() {
    // Count the operations of the redrive.
    let ops = {
        let fs = SimFs::new(0);
        let clock = ManualClock::new(0);
        let (_log, q) = open(&fs, &clock);
        dead_letter_n(&q, 70);
        let before = fs.op_count();
        assert_eq!(q.redrive(100).unwrap(), 70);
        fs.op_count() - before
    };
    assert!(ops > 5);
    for k in 1..=ops {
        common::with_context(&format!("crash at redrive op {k} of {ops}"), || {
            let fs = SimFs::new(k);
            let clock = ManualClock::new(0);
            {
                let (_log, q) = open(&fs, &clock);
                dead_letter_n(&q, 70);
                fs.crash_at_op(fs.op_count() + k);
                let _ = q.redrive(100);
                if fs.op_count() < k {
                    fs.crash();
                }
                fs.clear_faults();
            }
            let (log, q) = open(&fs, &clock);
            let before = redriven(&log);
            assert!(before.values().all(|&c| c == 1), "{before:?}");
            q.redrive(100).unwrap();
            let after = redriven(&log);
            assert_eq!(after, (0..70).map(|i| (i, 1)).collect());
        });
    }
}

#[test]
fn redrive_falls_back_to_single_records_when_a_chunk_is_too_large() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let config = logqueue::LogConfig {
        max_batch_bytes: 1024,
        ..sim_config(&fs, &clock, 4096)
    };
    let log = Log::open("/log", config).unwrap();
    let q = Queue::open(&log, "q", cfg()).unwrap();
    for i in 0..20u64 {
        // About 150 bytes each: 20 of them do not fit one 1 KiB batch.
        let r = Record::keyed(format!("k{i}"), format!("v{i}"))
            .with_header("h", "x")
            .with_header("pad", vec![7u8; 100]);
        q.send(r).unwrap();
    }
    for d in q.receive(20, NO_WAIT).unwrap() {
        q.dead_letter(&d.receipt, "a reason long enough to make the letters large")
            .unwrap();
    }
    assert_eq!(q.redrive(100).unwrap(), 20);
    assert_eq!(redriven(&log), (0..20).map(|i| (i, 1)).collect());
    assert_eq!(q.redrive(100).unwrap(), 0);
}

/// Main-log records carrying `redrive.from`: copies per dead-letter offset, checking
/// each carries exactly one `redrive.from` and the value of the dead letter it names.
fn copies_per_letter(log: &Log, q: &Queue) -> BTreeMap<u64, usize> {
    let mut out = BTreeMap::new();
    for r in common::read_all(log) {
        let n = r.headers.iter().filter(|h| h.key == "redrive.from").count();
        assert!(n <= 1, "{n} redrive.from headers at {}", r.offset);
        if let Some(from) = r.header("redrive.from") {
            let from: u64 = std::str::from_utf8(from).unwrap().parse().unwrap();
            let letter = q.dead_letters().read(from).unwrap().unwrap();
            assert_eq!(r.value, letter.value, "copy of {from}");
            assert!(r.headers.iter().all(|h| !h.key.starts_with("dlq.")));
            *out.entry(from).or_insert(0) += 1;
        }
    }
    out
}

/// `n` records dead-lettered and redriven, their copies dead-lettered again, flushed:
/// the second cycle's dead letters are `n..2n`.
fn second_cycle_ready(q: &Queue, n: u64) {
    dead_letter_n(q, n);
    assert_eq!(q.redrive(1000).unwrap(), n as usize);
    let copies = q.receive(n as usize, NO_WAIT).unwrap();
    assert_eq!(copies.len() as u64, n);
    for d in copies {
        q.dead_letter(&d.receipt, "again").unwrap();
    }
    q.flush().unwrap();
}

#[test]
fn a_second_redrive_cycle_replaces_redrive_from() {
    // Issue 9, defect 4: the second copy carried two `redrive.from` headers and
    // `header("redrive.from")` returned the first cycle's.
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let (log, q) = open(&fs, &clock);
    second_cycle_ready(&q, 3);
    let letter = q.dead_letters().read(3).unwrap().unwrap();
    assert_eq!(
        letter
            .headers
            .iter()
            .filter(|h| h.key.starts_with("dlq."))
            .count(),
        4,
        "one of each dlq.* header"
    );
    assert_eq!(q.redrive(10).unwrap(), 3);
    let again = q.receive(10, NO_WAIT).unwrap();
    let from: Vec<_> = again
        .iter()
        .map(|d| d.record.header("redrive.from").unwrap().to_vec())
        .collect();
    assert_eq!(from, vec![b"3".to_vec(), b"4".to_vec(), b"5".to_vec()]);
    assert_eq!(
        copies_per_letter(&log, &q),
        (0..6).map(|i| (i, 1)).collect()
    );
}

#[test]
fn redrive_is_exactly_once_across_a_crash_at_every_operation_of_a_second_cycle() {
    let ops = {
        let fs = SimFs::new(0);
        let clock = ManualClock::new(0);
        let (_log, q) = open(&fs, &clock);
        second_cycle_ready(&q, 70);
        let before = fs.op_count();
        assert_eq!(q.redrive(1000).unwrap(), 70);
        fs.op_count() - before
    };
    assert!(ops > 5);
    for k in 1..=ops {
        common::with_context(&format!("crash at second-cycle op {k} of {ops}"), || {
            let fs = SimFs::new(k);
            let clock = ManualClock::new(0);
            {
                let (_log, q) = open(&fs, &clock);
                second_cycle_ready(&q, 70);
                fs.crash_at_op(fs.op_count() + k);
                let _ = q.redrive(1000);
                if fs.op_count() < k {
                    fs.crash();
                }
                fs.clear_faults();
            }
            let (log, q) = open(&fs, &clock);
            let before = copies_per_letter(&log, &q);
            assert!(before.values().all(|&c| c == 1), "{before:?}");
            q.redrive(1000).unwrap();
            assert_eq!(
                copies_per_letter(&log, &q),
                (0..140).map(|i| (i, 1)).collect()
            );
        });
    }
}

fn assert_corrupt_intent(r: logqueue::Result<usize>) {
    match r {
        Err(logqueue::Error::Corrupt { path, .. }) => {
            assert!(path.ends_with("queues/q/redrive"), "{}", path.display())
        }
        other => panic!("want Corrupt naming the intent, got {other:?}"),
    }
}

#[test]
fn a_damaged_redrive_intent_is_corrupt_not_a_restart() {
    // Issue 9, defect 5: a damaged intent made redrive copy every dead letter again.
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let (log, q) = open(&fs, &clock);
    dead_letter_n(&q, 5);
    assert_eq!(q.redrive(10).unwrap(), 5);
    fs.corrupt_byte("/log/queues/q/redrive", 3, 0x40).unwrap();
    assert_corrupt_intent(q.redrive(10));
    assert_eq!(redriven(&log), (0..5).map(|i| (i, 1)).collect());
    // The repair: the operator sets the cursor past the copies found in the log.
    q.reset_redrive_cursor(5).unwrap();
    assert_eq!(q.redrive(10).unwrap(), 0);
    assert!(
        q.reset_redrive_cursor(6).is_err(),
        "past the dead-letter log's end"
    );
}

#[test]
fn a_missing_redrive_intent_is_corrupt_once_there_are_dead_letters() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    {
        let (_log, q) = open(&fs, &clock);
        // Created with the queue.
        assert!(fs.read_file("/log/queues/q/redrive").is_some());
        dead_letter_n(&q, 3);
        assert_eq!(q.redrive(10).unwrap(), 3);
    }
    use logqueue::fs::FileSystem;
    fs.remove_file(std::path::Path::new("/log/queues/q/redrive"))
        .unwrap();
    let (log, q) = open(&fs, &clock);
    assert_corrupt_intent(q.redrive(10));
    assert_eq!(redriven(&log), (0..3).map(|i| (i, 1)).collect());
}

#[test]
fn a_redrive_intent_ahead_of_the_dead_letter_log_is_corrupt() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let (_log, q) = open(&fs, &clock);
    dead_letter_n(&q, 2);
    // cursor 9, nothing pending: the dead-letter log ends at 2.
    let mut bytes = Vec::new();
    for v in [9u64, 9, 0] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    fs.write_file("/log/queues/q/redrive", &bytes).unwrap();
    assert_corrupt_intent(q.redrive(10));
}
