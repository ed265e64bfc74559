//! Queue state across reopen: acks, attempt counts, nack delays, journal rotation,
//! several queues on one log (fan-out), StartPosition::Latest.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::small_config;
use logqueue::{Log, LogConfig, ManualClock, Queue, QueueConfig, Record, StartPosition};

const NO_WAIT: Duration = Duration::ZERO;

fn open_log(dir: &Path, clock: &ManualClock) -> Log {
    common::clocked_log(dir, clock, 64 << 10)
}

fn cfg() -> QueueConfig {
    QueueConfig {
        visibility_timeout: Duration::from_secs(10),
        max_deliveries: Some(4),
        ..QueueConfig::default()
    }
}

#[test]
fn acks_and_attempts_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    {
        let log = open_log(dir.path(), &clock);
        let q = Queue::open(&log, "q", cfg()).unwrap();
        for i in 0..10 {
            q.send(Record::new(format!("{i}"))).unwrap();
        }
        let got = q.receive(6, NO_WAIT).unwrap();
        // Ack 0, 2, 3; nack 4 with a long delay; 1 and 5 stay leased.
        for i in [0, 2, 3] {
            q.ack(&got[i].receipt).unwrap();
        }
        q.nack(&got[4].receipt, Duration::from_secs(100)).unwrap();
        // No flush, no close: as after kill -9 of the process.
    }
    let log = open_log(dir.path(), &clock);
    let q = Queue::open(&log, "q", cfg()).unwrap();
    let s = q.stats();
    assert_eq!((s.ack_floor, s.acked_total, s.in_flight), (1, 3, 0));
    // Leased records come back at once with their attempt kept, each in a batch of
    // its own (one of them may be what killed the process); 4 waits for its delay.
    let mut got = Vec::new();
    let mut batches = Vec::new();
    loop {
        let batch = q.receive(100, NO_WAIT).unwrap();
        if batch.is_empty() {
            break;
        }
        batches.push(batch.len());
        got.extend(batch);
    }
    assert_eq!(batches, vec![1, 1, 4]);
    let seen: Vec<_> = got.iter().map(|d| (d.receipt.offset, d.attempt)).collect();
    assert_eq!(seen, vec![(1, 2), (5, 2), (6, 1), (7, 1), (8, 1), (9, 1)]);
    for d in &got {
        q.ack(&d.receipt).unwrap();
    }
    clock.advance(Duration::from_secs(100));
    let four = q.receive(100, NO_WAIT).unwrap();
    assert_eq!(four.len(), 1);
    assert_eq!((four[0].receipt.offset, four[0].attempt), (4, 2));
    q.ack(&four[0].receipt).unwrap();
    q.flush().unwrap();
    drop(q);
    log.close().unwrap();
    let log = open_log(dir.path(), &clock);
    let q = Queue::open(&log, "q", cfg()).unwrap();
    assert_eq!(q.stats().ack_floor, 10);
    assert_eq!(q.stats().acked_total, 10);
    assert!(q.receive(100, NO_WAIT).unwrap().is_empty());
}

#[test]
fn journal_rotation_keeps_state() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let config = QueueConfig {
        journal_bytes: 4096,
        ..cfg()
    };
    let mut unacked = BTreeSet::new();
    {
        let log = open_log(dir.path(), &clock);
        let q = Queue::open(&log, "q", config.clone()).unwrap();
        for i in 0..2000u64 {
            q.send(Record::new(format!("{i}"))).unwrap();
        }
        // Many journal files' worth of events: every 7th record stays unacked.
        loop {
            let got = q.receive(50, NO_WAIT).unwrap();
            if got.is_empty() {
                break;
            }
            for d in got {
                if d.receipt.offset % 7 == 0 {
                    unacked.insert(d.receipt.offset);
                } else {
                    q.ack(&d.receipt).unwrap();
                }
            }
        }
        let names = std::fs::read_dir(dir.path().join("queues/q"))
            .unwrap()
            .count();
        // snapshot, one journal, floor, redrive intent, dead-letter/, queue.lock
        assert!(names <= 6, "old journals are removed");
    }
    let log = open_log(dir.path(), &clock);
    let q = Queue::open(&log, "q", config).unwrap();
    // Recovered leases come one per receive.
    let mut got = Vec::new();
    loop {
        let batch = q.receive(1000, NO_WAIT).unwrap();
        if batch.is_empty() {
            break;
        }
        assert_eq!(batch.len(), 1);
        got.extend(batch);
    }
    let offsets: BTreeSet<_> = got.iter().map(|d| d.receipt.offset).collect();
    assert_eq!(offsets, unacked);
    assert!(got.iter().all(|d| d.attempt == 2));
    assert_eq!(q.stats().acked_total, 2000 - unacked.len() as u64);
}

#[test]
fn several_queues_each_see_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = open_log(dir.path(), &clock);
    let a = Queue::open(&log, "a", cfg()).unwrap();
    let b = Queue::open(&log, "b", cfg()).unwrap();
    for i in 0..5 {
        log.append(Record::new(format!("{i}"))).unwrap();
    }
    let ga = a.receive(10, NO_WAIT).unwrap();
    assert_eq!(ga.len(), 5);
    for d in &ga {
        a.ack(&d.receipt).unwrap();
    }
    let gb = b.receive(3, NO_WAIT).unwrap();
    assert_eq!(gb.len(), 3);
    assert_eq!(a.stats().ack_floor, 5);
    assert_eq!(b.stats().ack_floor, 0);
    assert_eq!(b.stats().backlog, 2);
    // A queue created later at Latest sees only new records.
    let c = Queue::open(
        &log,
        "c",
        QueueConfig {
            start: StartPosition::Latest,
            ..cfg()
        },
    )
    .unwrap();
    assert!(c.receive(10, NO_WAIT).unwrap().is_empty());
    c.send(Record::new("new")).unwrap();
    let gc = c.receive(10, NO_WAIT).unwrap();
    assert_eq!(gc.len(), 1);
    assert_eq!(gc[0].receipt.offset, 5);
    assert_eq!(b.receive(10, NO_WAIT).unwrap().len(), 3);
    assert_eq!(a.receive(10, NO_WAIT).unwrap().len(), 1);
}

#[test]
fn retention_floor_holds_unacked_records() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = Log::open(
        dir.path(),
        LogConfig {
            clock: Arc::new(clock.clone()),
            retention_bytes: Some(1),
            ..small_config(1024)
        },
    )
    .unwrap();
    let q = Queue::open(&log, "q", cfg()).unwrap();
    for _ in 0..100 {
        q.send(Record::new(vec![7u8; 100])).unwrap();
    }
    log.enforce_retention().unwrap();
    assert_eq!(log.start_offset(), 0, "nothing acked: nothing deleted");
    for d in q.receive(50, NO_WAIT).unwrap() {
        q.ack(&d.receipt).unwrap();
    }
    log.enforce_retention().unwrap();
    // Acks not yet durable can be undone by power loss, and then the records must
    // still be there to be delivered again: the floor moves with the flush.
    assert_eq!(log.start_offset(), 0, "acks not flushed: nothing deleted");
    q.flush().unwrap();
    log.enforce_retention().unwrap();
    let start = log.start_offset();
    assert!(start > 0 && start <= 50, "start {start}");
    assert_eq!(q.receive(100, NO_WAIT).unwrap()[0].receipt.offset, 50);
}
