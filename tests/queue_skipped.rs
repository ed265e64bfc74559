//! `delete_records_before` wins over a queue's floor, and the queue counts the records
//! it had not done that were jumped over (`QueueStats::skipped_by_retention`).

mod common;

use std::time::Duration;

use common::{sim_config, small_config};
use logqueue::sim::SimFs;
use logqueue::{Log, ManualClock, Ordering, Queue, QueueConfig, Record};

const NO_WAIT: Duration = Duration::ZERO;

fn offsets(q: &Queue) -> Vec<u64> {
    q.receive(100, NO_WAIT)
        .unwrap()
        .iter()
        .map(|d| d.receipt.offset)
        .collect()
}

#[test]
fn an_open_queue_counts_what_the_start_offset_jumped_over() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(256)).unwrap();
    let q = Queue::open(&log, "q", QueueConfig::default()).unwrap();
    for _ in 0..20 {
        q.send(Record::new(vec![1u8; 50])).unwrap();
    }
    // 0 and 2 leased, 1 acked, 3..20 never delivered.
    let got = q.receive(3, NO_WAIT).unwrap();
    q.ack(&got[1].receipt).unwrap();
    log.delete_records_before(8).unwrap();
    assert_eq!(log.start_offset(), 8);

    // Nothing below the start is delivered; 0, 2 and 3..8 are counted.
    assert_eq!(offsets(&q), (8..20).collect::<Vec<_>>());
    let s = q.stats();
    assert_eq!(s.skipped_by_retention, 2 + 5);
    assert_eq!((s.ack_floor, s.in_flight, s.acked_total), (8, 12, 1));
    assert!(q.ack(&got[0].receipt).is_err(), "its lease is stale");
}

#[test]
fn a_closed_queue_counts_at_open_without_losing_its_totals() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(256)).unwrap();
    let q = Queue::open(&log, "q", QueueConfig::default()).unwrap();
    for _ in 0..20 {
        q.send(Record::new(vec![1u8; 50])).unwrap();
    }
    let got = q.receive(4, NO_WAIT).unwrap();
    q.ack(&got[1].receipt).unwrap();
    q.ack(&got[3].receipt).unwrap();
    q.flush().unwrap();
    drop(q);
    log.delete_records_before(8).unwrap();

    let q = Queue::open(&log, "q", QueueConfig::default()).unwrap();
    let s = q.stats();
    // 0 and 2 leased, 4..8 never delivered; 1 and 3 were acked.
    assert_eq!(s.skipped_by_retention, 2 + 4);
    assert_eq!((s.ack_floor, s.acked_total), (8, 2));
    assert_eq!(offsets(&q), (8..20).collect::<Vec<_>>());
}

#[test]
fn per_key_keys_move_on_past_skipped_records() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let log = Log::open("/log", sim_config(&fs, &clock, 256)).unwrap();
    let config = QueueConfig {
        ordering: Ordering::PerKey,
        ..QueueConfig::default()
    };
    let q = Queue::open(&log, "q", config).unwrap();
    for i in 0..20 {
        q.send(Record::keyed("k", vec![i as u8; 50])).unwrap();
    }
    // 0 leased, 1..20 blocked behind it.
    assert_eq!(offsets(&q), vec![0]);
    log.delete_records_before(8).unwrap();
    assert_eq!(offsets(&q), vec![8]);
    assert_eq!(q.stats().skipped_by_retention, 8);
}
