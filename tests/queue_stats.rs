//! `QueueStats::consumer_lag` and `oldest_unacked_age_ms`, with a manual clock.

mod common;

use std::time::Duration;

use logqueue::{ManualClock, Queue, QueueConfig, Record};

const NO_WAIT: Duration = Duration::ZERO;

#[test]
fn lag_and_oldest_age_follow_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    let log = common::clocked_log(dir.path(), &clock, 1 << 20);
    let q = Queue::open(&log, "q", QueueConfig::default()).unwrap();
    let s = q.stats();
    assert_eq!((s.consumer_lag, s.oldest_unacked_age_ms), (0, None));

    // Offsets 0..5 appended at 1000, 1100, ..., 1400.
    for _ in 0..5 {
        q.send(Record::new("x")).unwrap();
        clock.advance(Duration::from_millis(100));
    }
    // now = 1500
    let s = q.stats();
    assert_eq!((s.consumer_lag, s.oldest_unacked_age_ms), (5, Some(500)));

    let got = q.receive(5, NO_WAIT).unwrap();
    // Acking above the floor moves neither the lag nor the oldest record.
    q.ack(&got[1].receipt).unwrap();
    q.ack(&got[2].receipt).unwrap();
    clock.advance(Duration::from_millis(50));
    let s = q.stats();
    assert_eq!((s.consumer_lag, s.oldest_unacked_age_ms), (5, Some(550)));
    assert_eq!(s.backlog + s.in_flight, 3, "not done: backlog + in flight");

    // Acking the floor: the oldest not-done record is offset 3 (appended at 1300).
    q.ack(&got[0].receipt).unwrap();
    let s = q.stats();
    assert_eq!((s.ack_floor, s.consumer_lag), (3, 2));
    assert_eq!(s.oldest_unacked_age_ms, Some(1550 - 1300));

    // A nacked record still counts as not done.
    q.nack(&got[3].receipt, Duration::from_secs(5)).unwrap();
    q.ack(&got[4].receipt).unwrap();
    let s = q.stats();
    assert_eq!((s.consumer_lag, s.oldest_unacked_age_ms), (2, Some(250)));

    clock.advance(Duration::from_secs(5));
    let again = q.receive(1, NO_WAIT).unwrap();
    q.ack(&again[0].receipt).unwrap();
    let s = q.stats();
    assert_eq!(
        (s.ack_floor, s.consumer_lag, s.oldest_unacked_age_ms),
        (5, 0, None)
    );
}

#[test]
fn given_timestamps_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(10_000);
    let log = common::clocked_log(dir.path(), &clock, 1 << 20);
    let q = Queue::open(&log, "q", QueueConfig::default()).unwrap();
    q.send(Record::new("old").with_timestamp(4_000)).unwrap();
    assert_eq!(q.stats().oldest_unacked_age_ms, Some(6_000));
}
