//! Queue lease rules with a ManualClock: expiry and redelivery, stale receipts, extend
//! and nack delays, max deliveries into the dead-letter log, max_in_flight.

mod common;

use std::time::Duration;

use logqueue::{Error, Log, ManualClock, Queue, QueueConfig, Receipt, Record};

const NO_WAIT: Duration = Duration::ZERO;

fn setup(config: QueueConfig) -> (tempfile::TempDir, ManualClock, Log, Queue) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let log = common::clocked_log(dir.path(), &clock, 1 << 20);
    let q = Queue::open(&log, "q", config).unwrap();
    (dir, clock, log, q)
}

fn cfg() -> QueueConfig {
    QueueConfig {
        visibility_timeout: Duration::from_secs(10),
        max_visibility: Duration::from_secs(60),
        max_deliveries: Some(3),
        ..QueueConfig::default()
    }
}

fn values(d: &[logqueue::Delivery]) -> Vec<Vec<u8>> {
    d.iter().map(|d| d.record.value.clone().unwrap()).collect()
}

#[test]
fn lease_expires_and_is_redelivered_with_next_attempt() {
    let (_d, clock, _log, q) = setup(cfg());
    for i in 0..3 {
        q.send(Record::new(format!("m{i}"))).unwrap();
    }
    let first = q.receive(2, NO_WAIT).unwrap();
    assert_eq!(values(&first), vec![b"m0".to_vec(), b"m1".to_vec()]);
    assert_eq!(first[0].attempt, 1);
    assert_eq!(
        first[0].receipt,
        Receipt {
            offset: 0,
            attempt: 1
        }
    );
    assert_eq!(first[0].deadline_ms, 1_000_000 + 10_000);
    // Leased records are invisible until the deadline.
    let rest = q.receive(10, NO_WAIT).unwrap();
    assert_eq!(values(&rest), vec![b"m2".to_vec()]);
    q.ack(&first[1].receipt).unwrap();
    clock.advance(Duration::from_millis(9_999));
    assert!(q.receive(10, NO_WAIT).unwrap().is_empty());
    clock.advance(Duration::from_millis(1));
    let again = q.receive(10, NO_WAIT).unwrap();
    let got: Vec<_> = again
        .iter()
        .map(|d| (d.receipt.offset, d.attempt))
        .collect();
    assert_eq!(got, vec![(0, 2), (2, 2)]);
    assert_eq!(again[0].deadline_ms, 1_010_000 + 10_000);
    let s = q.stats();
    assert_eq!((s.in_flight, s.redelivered_total, s.acked_total), (2, 2, 1));
    assert_eq!(s.ack_floor, 0);
    q.ack(&again[0].receipt).unwrap();
    q.ack(&again[1].receipt).unwrap();
    assert_eq!(q.stats().ack_floor, 3);
    assert_eq!(q.stats().backlog, 0);
}

#[test]
fn stale_receipts_change_nothing() {
    let (_d, clock, _log, q) = setup(cfg());
    q.send(Record::new("a")).unwrap();
    let old = q.receive(1, NO_WAIT).unwrap()[0].receipt;
    clock.advance(Duration::from_secs(11));
    let new = q.receive(1, NO_WAIT).unwrap()[0].receipt;
    assert_eq!(new.attempt, 2);
    let stale = |r: logqueue::Result<()>| {
        matches!(
            r,
            Err(Error::StaleReceipt {
                offset: 0,
                attempt: 1
            })
        )
    };
    assert!(stale(q.ack(&old)));
    assert!(stale(q.nack(&old, NO_WAIT)));
    assert!(stale(q.extend(&old, Duration::from_secs(5))));
    assert!(stale(q.dead_letter(&old, "x")));
    assert!(matches!(
        q.ack(&Receipt {
            offset: 7,
            attempt: 1
        }),
        Err(Error::StaleReceipt { .. })
    ));
    assert_eq!(q.stats().in_flight, 1);
    assert_eq!(q.dead_letters().end_offset(), 0);
    // The current lease still works, exactly once.
    q.ack(&new).unwrap();
    assert!(matches!(q.ack(&new), Err(Error::StaleReceipt { .. })));
    assert!(matches!(
        q.nack(&new, NO_WAIT),
        Err(Error::StaleReceipt { .. })
    ));
    assert_eq!(q.stats().acked_total, 1);
    clock.advance(Duration::from_secs(100));
    assert!(q.receive(10, NO_WAIT).unwrap().is_empty());
}

#[test]
fn extend_and_nack_delays() {
    let (_d, clock, _log, q) = setup(cfg());
    q.send(Record::new("a")).unwrap();
    q.send(Record::new("b")).unwrap();
    let got = q.receive(2, NO_WAIT).unwrap();
    let (a, b) = (got[0].receipt, got[1].receipt);
    // Extend a by 30 s from now (t+5 s): deadline t+35 s.
    clock.advance(Duration::from_secs(5));
    q.extend(&a, Duration::from_secs(30)).unwrap();
    // Nack b with a 2 s delay.
    q.nack(&b, Duration::from_secs(2)).unwrap();
    assert!(matches!(q.ack(&b), Err(Error::StaleReceipt { .. })));
    clock.advance(Duration::from_millis(1_999));
    assert!(q.receive(10, NO_WAIT).unwrap().is_empty());
    clock.advance(Duration::from_millis(1));
    let again = q.receive(10, NO_WAIT).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].receipt.offset, again[0].attempt), (1, 2));
    q.ack(&again[0].receipt).unwrap();
    // a is still leased at t+34.999 s, not at t+35 s.
    clock.set(1_000_000 + 34_999);
    assert!(q.receive(10, NO_WAIT).unwrap().is_empty());
    // Beyond max_visibility (60 s): refused, not clamped (issue 11); the lease is
    // unchanged.
    assert!(matches!(
        q.extend(&a, Duration::from_secs(3600)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        q.nack(&a, Duration::MAX),
        Err(Error::InvalidArgument(_))
    ));
    q.extend(&a, Duration::from_secs(60)).unwrap();
    clock.advance(Duration::from_secs(60) - Duration::from_millis(1));
    assert!(q.receive(10, NO_WAIT).unwrap().is_empty());
    clock.advance(Duration::from_millis(1));
    let a2 = q.receive(10, NO_WAIT).unwrap();
    assert_eq!((a2[0].receipt.offset, a2[0].attempt), (0, 2));
    // A nack with no delay makes it deliverable at once.
    q.nack(&a2[0].receipt, NO_WAIT).unwrap();
    let a3 = q.receive(10, NO_WAIT).unwrap();
    assert_eq!((a3[0].receipt.offset, a3[0].attempt), (0, 3));
}

#[test]
fn max_deliveries_dead_letters_with_headers() {
    let (_d, clock, _log, q) = setup(cfg());
    q.send(
        Record::keyed("k", "poison")
            .with_header("h", "v")
            .with_timestamp(42),
    )
    .unwrap();
    q.send(Record::new("fine")).unwrap();
    for attempt in 1..=3 {
        let got = q.receive(1, NO_WAIT).unwrap();
        assert_eq!((got[0].receipt.offset, got[0].attempt), (0, attempt));
        clock.advance(Duration::from_secs(10));
    }
    // Delivered 3 times without an ack: the next receive dead-letters it.
    let got = q.receive(10, NO_WAIT).unwrap();
    assert_eq!(values(&got), vec![b"fine".to_vec()]);
    let s = q.stats();
    assert_eq!((s.dead_lettered_total, s.ack_floor), (1, 1));
    let dl = q.dead_letters().read(0).unwrap().unwrap();
    assert_eq!(dl.key.as_deref(), Some(&b"k"[..]));
    assert_eq!(dl.value.as_deref(), Some(&b"poison"[..]));
    assert_eq!(dl.timestamp, 42);
    assert_eq!(dl.header("h"), Some(&b"v"[..]));
    assert_eq!(dl.header("dlq.offset"), Some(&b"0"[..]));
    assert_eq!(dl.header("dlq.attempts"), Some(&b"3"[..]));
    assert_eq!(dl.header("dlq.queue"), Some(&b"q"[..]));
    assert_eq!(dl.header("dlq.reason"), Some(&b"max_deliveries"[..]));
    // An explicit dead_letter.
    q.dead_letter(&got[0].receipt, "bad input").unwrap();
    let dl = q.dead_letters().read(1).unwrap().unwrap();
    assert_eq!(dl.header("dlq.offset"), Some(&b"1"[..]));
    assert_eq!(dl.header("dlq.attempts"), Some(&b"1"[..]));
    assert_eq!(dl.header("dlq.reason"), Some(&b"bad input"[..]));
    assert_eq!(q.stats().ack_floor, 2);
    assert_eq!(q.stats().dead_lettered_total, 2);
    clock.advance(Duration::from_secs(100));
    assert!(q.receive(10, NO_WAIT).unwrap().is_empty());
}

#[test]
fn max_in_flight_caps_leases() {
    let (_d, clock, _log, q) = setup(QueueConfig {
        max_in_flight: 3,
        ..cfg()
    });
    for i in 0..10 {
        q.send(Record::new(format!("{i}"))).unwrap();
    }
    let got = q.receive(10, NO_WAIT).unwrap();
    assert_eq!(got.len(), 3);
    assert!(q.receive(10, Duration::from_millis(20)).unwrap().is_empty());
    q.ack(&got[0].receipt).unwrap();
    let more = q.receive(10, NO_WAIT).unwrap();
    assert_eq!(more.len(), 1);
    assert_eq!(more[0].receipt.offset, 3);
    // Expired leases can be handed out again at the cap.
    clock.advance(Duration::from_secs(10));
    let again = q.receive(10, NO_WAIT).unwrap();
    assert_eq!(again.len(), 3);
    assert!(again.iter().all(|d| d.attempt == 2));
    // A nacked record counts against the cap only once leased again.
    q.nack(&again[0].receipt, NO_WAIT).unwrap();
    let back = q.receive(10, NO_WAIT).unwrap();
    assert_eq!((back.len(), back[0].attempt), (1, 3));
    assert_eq!(q.stats().in_flight, 3);
}

#[test]
fn invalid_configs_are_errors() {
    let (_d, _clock, log, _q) = setup(cfg());
    for bad in [
        QueueConfig {
            max_deliveries: Some(0),
            ..cfg()
        },
        QueueConfig {
            visibility_timeout: Duration::ZERO,
            ..cfg()
        },
        QueueConfig {
            max_in_flight: 0,
            ..cfg()
        },
    ] {
        assert!(matches!(
            Queue::open(&log, "other", bad),
            Err(Error::InvalidConfig(_))
        ));
    }
    assert!(matches!(
        Queue::open(&log, "../x", cfg()),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        Queue::open(&log, "q", cfg()),
        Err(Error::Locked { .. })
    ));
}

#[test]
fn backoff_schedule_delays_redelivery() {
    let (_d, clock, _log, q) = setup(QueueConfig {
        backoff: vec![Duration::from_secs(1), Duration::from_secs(5)],
        max_deliveries: Some(10),
        ..cfg()
    });
    q.send(Record::new("a")).unwrap();
    let a1 = q.receive(1, NO_WAIT).unwrap()[0].receipt;
    // Attempt 1 expires at +10 s; redelivery 1 waits backoff[0] = 1 s more.
    clock.advance(Duration::from_millis(10_999));
    assert!(q.receive(1, NO_WAIT).unwrap().is_empty());
    // The expired lease's receipt still works until it is handed out again.
    q.extend(&a1, Duration::from_millis(1)).unwrap();
    clock.advance(Duration::from_millis(1));
    assert!(q.receive(1, NO_WAIT).unwrap().is_empty());
    clock.advance(Duration::from_millis(1_000));
    let a2 = q.receive(1, NO_WAIT).unwrap()[0].receipt;
    assert_eq!(a2.attempt, 2);
    // Attempt 2: backoff[1] = 5 s after its deadline.
    clock.advance(Duration::from_millis(10_000 + 4_999));
    assert!(q.receive(1, NO_WAIT).unwrap().is_empty());
    clock.advance(Duration::from_millis(1));
    let a3 = q.receive(1, NO_WAIT).unwrap()[0].receipt;
    assert_eq!(a3.attempt, 3);
    // A nack with zero delay uses the schedule (the last entry repeats) ...
    q.nack(&a3, NO_WAIT).unwrap();
    clock.advance(Duration::from_millis(4_999));
    assert!(q.receive(1, NO_WAIT).unwrap().is_empty());
    clock.advance(Duration::from_millis(1));
    let a4 = q.receive(1, NO_WAIT).unwrap()[0].receipt;
    assert_eq!(a4.attempt, 4);
    // ... an explicit delay overrides it.
    q.nack(&a4, Duration::from_millis(100)).unwrap();
    clock.advance(Duration::from_millis(100));
    assert_eq!(q.receive(1, NO_WAIT).unwrap()[0].attempt, 5);
}
