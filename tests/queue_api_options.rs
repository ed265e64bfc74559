//! `receive_with` and validation instead of clamping (issue 11).

mod common;

use std::time::Duration;

use common::sim_config;
use logqueue::sim::SimFs;
use logqueue::{Error, Log, ManualClock, Queue, QueueConfig, ReceiveOptions, Record};

const NO_WAIT: Duration = Duration::ZERO;

fn cfg() -> QueueConfig {
    QueueConfig {
        visibility_timeout: Duration::from_secs(10),
        max_visibility: Duration::from_secs(3600),
        journal_bytes: 4096,
        ..QueueConfig::default()
    }
}

fn setup() -> (ManualClock, Log, Queue) {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let log = Log::open("/log", sim_config(&fs, &clock, 4096)).unwrap();
    let q = Queue::open(&log, "q", cfg()).unwrap();
    (clock, log, q)
}

fn with_visibility(v: Duration) -> ReceiveOptions {
    let mut o = ReceiveOptions::default();
    o.visibility_timeout = Some(v);
    o
}

#[test]
fn receive_with_leases_for_the_asked_time() {
    let (clock, _log, q) = setup();
    assert_eq!(ReceiveOptions::default().visibility_timeout, None);
    for i in 0..2 {
        q.send(Record::new(format!("{i}"))).unwrap();
    }
    let long = q
        .receive_with(1, NO_WAIT, &with_visibility(Duration::from_secs(600)))
        .unwrap();
    assert_eq!(long[0].deadline_ms, 600_000);
    let short = q
        .receive_with(1, NO_WAIT, &ReceiveOptions::default())
        .unwrap();
    assert_eq!(short[0].deadline_ms, 10_000, "default: the queue's timeout");
    clock.advance(Duration::from_secs(10));
    let again = q.receive(10, NO_WAIT).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receipt.offset, 1);
    clock.set(599_999);
    q.ack(&again[0].receipt).unwrap();
    assert!(q.receive(10, NO_WAIT).unwrap().is_empty());
    clock.set(600_000);
    let d = q.receive(10, NO_WAIT).unwrap();
    assert_eq!((d[0].receipt.offset, d[0].attempt), (0, 2));
    // The expired long lease's receipt is fenced off.
    assert!(matches!(
        q.ack(&long[0].receipt),
        Err(Error::StaleReceipt { .. })
    ));
}

#[test]
fn receive_with_refuses_out_of_range_timeouts() {
    let (_clock, _log, q) = setup();
    q.send(Record::new("x")).unwrap();
    for bad in [Duration::ZERO, Duration::from_secs(3601), Duration::MAX] {
        assert!(
            matches!(
                q.receive_with(1, NO_WAIT, &with_visibility(bad)),
                Err(Error::InvalidArgument(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(q.stats().in_flight, 0, "nothing leased by a refused call");
    let d = q
        .receive_with(1, NO_WAIT, &with_visibility(Duration::from_secs(3600)))
        .unwrap();
    assert_eq!(d[0].deadline_ms, 3_600_000, "max_visibility itself is fine");
}

#[test]
fn extend_and_nack_beyond_max_visibility_are_refused_not_clamped() {
    let (clock, _log, q) = setup();
    q.send(Record::new("x")).unwrap();
    let d = q.receive(1, NO_WAIT).unwrap();
    let r = d[0].receipt;
    for bad in [Duration::from_secs(3601), Duration::MAX] {
        assert!(matches!(q.extend(&r, bad), Err(Error::InvalidArgument(_))));
        assert!(matches!(q.nack(&r, bad), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            q.nack_many(&[r], bad),
            Err(Error::InvalidArgument(_))
        ));
    }
    // Unchanged: still leased until 10 s, then redelivered.
    clock.advance(Duration::from_secs(10));
    let again = q.receive(1, NO_WAIT).unwrap();
    assert_eq!(again[0].attempt, 2);
    q.extend(&again[0].receipt, Duration::from_secs(3600))
        .unwrap();
    q.nack(&again[0].receipt, Duration::from_secs(3600))
        .unwrap();
}

#[test]
fn a_visibility_timeout_beyond_max_visibility_is_invalid_config() {
    let (_clock, log, _q) = setup();
    let config = QueueConfig {
        visibility_timeout: Duration::from_secs(3601),
        ..cfg()
    };
    assert!(matches!(
        Queue::open(&log, "other", config),
        Err(Error::InvalidConfig(_))
    ));
    let zero_retention = QueueConfig {
        dead_letter_retention: Some(Duration::ZERO),
        ..cfg()
    };
    assert!(matches!(
        Queue::open(&log, "other", zero_retention),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn the_new_errors_say_what_they_are() {
    let e = Error::InvalidArgument("extend timeout 2h exceeds max_visibility 1h".into());
    assert!(e.to_string().contains("invalid argument: extend timeout"));
    assert!(Error::ReadOnly.to_string().contains("read-only"));
}
