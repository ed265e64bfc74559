//! `Queue::inspect`: a queue's counters from its files, while the queue is open, from
//! the owning log and from a read-only view, without writing.

mod common;

use std::time::Duration;

use common::live_writer::digest_dir;
use logqueue::{Error, Log, LogConfig, Queue, QueueConfig, QueueStats, Record};

fn without_age(mut s: QueueStats) -> QueueStats {
    s.oldest_unacked_age_ms = None;
    s
}

#[test]
fn inspect_matches_the_open_queue_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let queue = Queue::open(&log, "jobs", QueueConfig::default()).unwrap();
    for i in 0..10 {
        queue.send(Record::new(format!("job {i}"))).unwrap();
    }
    let got = queue.receive(4, Duration::ZERO).unwrap();
    queue.ack(&got[0].receipt).unwrap();
    queue.ack(&got[2].receipt).unwrap();
    queue.dead_letter(&got[1].receipt, "bad input").unwrap();
    queue.flush().unwrap();
    let live = without_age(queue.stats());
    assert_eq!(
        (live.in_flight, live.acked_total, live.dead_lettered_total),
        (1, 2, 1)
    );

    let before = digest_dir(dir.path());
    assert_eq!(without_age(Queue::inspect(&log, "jobs").unwrap()), live);
    let view = Log::open_read_only(dir.path()).unwrap();
    let seen = Queue::inspect(&view, "jobs").unwrap();
    assert!(seen.oldest_unacked_age_ms.is_some());
    assert_eq!(without_age(seen), live);
    assert_eq!(
        digest_dir(dir.path()),
        before,
        "inspect wrote to the directory"
    );

    assert!(matches!(
        Queue::inspect(&view, "nope"),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        Queue::open(&view, "other", QueueConfig::default()),
        Err(Error::ReadOnly)
    ));
}

#[test]
fn inspect_of_a_damaged_snapshot_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let queue = Queue::open(&log, "jobs", QueueConfig::default()).unwrap();
        queue.send(Record::new("x")).unwrap();
        queue.flush().unwrap();
    }
    let snapshot = dir.path().join("queues/jobs/snapshot");
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&snapshot, bytes).unwrap();
    let view = Log::open_read_only(dir.path()).unwrap();
    match Queue::inspect(&view, "jobs") {
        Err(Error::Corrupt { path, .. }) => assert_eq!(path, snapshot),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
