//! `protect_unacked`: time retention stops at the floor of a queue that is closed, and
//! proceeds once the queue is gone or has acked everything.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::small_config;
use logqueue::{Log, LogConfig, ManualClock, Queue, QueueConfig, Record};

const NO_WAIT: Duration = Duration::ZERO;

fn config(clock: &ManualClock) -> LogConfig {
    LogConfig {
        clock: Arc::new(clock.clone()),
        retention_ms: Some(Duration::from_secs(60)),
        ..small_config(1024)
    }
}

/// 100 records of ~100 bytes (about 10 per segment), the first 40 acked by queue
/// "q", which is then flushed and dropped.
fn setup(dir: &std::path::Path, clock: &ManualClock) -> Log {
    let log = Log::open(dir, config(clock)).unwrap();
    let q = Queue::open(&log, "q", QueueConfig::default()).unwrap();
    for _ in 0..100 {
        q.send(Record::new(vec![7u8; 100])).unwrap();
    }
    for d in q.receive(40, NO_WAIT).unwrap() {
        q.ack(&d.receipt).unwrap();
    }
    q.flush().unwrap();
    drop(q);
    log
}

fn check_held_at_40(log: &Log) {
    let report = log.enforce_retention().unwrap();
    let start = log.start_offset();
    assert!(start > 0 && start <= 40, "start {start}");
    assert_eq!(report.start_offset, start);
    let stats = log.stats();
    assert_eq!(stats.retention_floor, Some(40));
    assert!(stats.retention_held_segments > 0);
}

#[test]
fn closed_queue_holds_time_retention_until_its_directory_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = setup(dir.path(), &clock);
    clock.advance(Duration::from_secs(120));
    check_held_at_40(&log);

    // Also after the log is reopened with no queue open.
    log.close().unwrap();
    let log = Log::open(dir.path(), config(&clock)).unwrap();
    check_held_at_40(&log);

    // A directory removed by hand (not by `Queue::delete`) takes effect at the next
    // open, which deletes the queue's cursor `queue.q` with no queue behind it.
    std::fs::remove_dir_all(dir.path().join("queues").join("q")).unwrap();
    log.close().unwrap();
    let log = Log::open(dir.path(), config(&clock)).unwrap();
    log.enforce_retention().unwrap();
    assert_eq!(log.stats().retention_floor, None);
    assert!(log.start_offset() >= 90, "start {}", log.start_offset());
}

#[test]
fn closed_queue_releases_retention_once_everything_is_acked() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = setup(dir.path(), &clock);
    clock.advance(Duration::from_secs(120));
    check_held_at_40(&log);

    let q = Queue::open(&log, "q", QueueConfig::default()).unwrap();
    for d in q.receive(100, NO_WAIT).unwrap() {
        q.ack(&d.receipt).unwrap();
    }
    assert_eq!(q.stats().ack_floor, 100);
    // The floor retention sees moves when the acks are durable: power loss could
    // undo the others, and then their records must still be there.
    log.enforce_retention().unwrap();
    assert!(log.start_offset() <= 40, "start {}", log.start_offset());
    q.flush().unwrap();
    log.enforce_retention().unwrap();
    assert!(log.start_offset() >= 90, "start {}", log.start_offset());
}

#[test]
fn a_queue_without_protection_holds_nothing_and_lowest_floor_wins() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = setup(dir.path(), &clock);
    // A second queue that protects nothing, and one that acked only 20.
    let free = QueueConfig {
        protect_unacked: false,
        ..QueueConfig::default()
    };
    drop(Queue::open(&log, "free", free).unwrap());
    let slow = Queue::open(&log, "slow", QueueConfig::default()).unwrap();
    for d in slow.receive(20, NO_WAIT).unwrap() {
        slow.ack(&d.receipt).unwrap();
    }
    slow.flush().unwrap();
    drop(slow);
    clock.advance(Duration::from_secs(120));
    log.enforce_retention().unwrap();
    assert_eq!(log.stats().retention_floor, Some(20));
    assert!(log.start_offset() <= 20);
}

#[test]
fn reopening_a_queue_many_times_registers_one_floor() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = setup(dir.path(), &clock);
    for _ in 0..50 {
        drop(Queue::open(&log, "q", QueueConfig::default()).unwrap());
    }
    assert_eq!(log.cursors().unwrap().len(), 1, "one cursor per queue");
    let debug = format!("{log:?}");
    assert!(debug.contains("floors: 0"), "{debug}");
}
