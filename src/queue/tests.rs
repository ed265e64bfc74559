//! Unit tests of the queue's internals.

use super::*;

#[test]
fn names_are_checked() {
    assert!(valid_name("orders-1.v2_x"));
    for bad in ["", ".", "..", "a/b", "a b", "é"] {
        assert!(!valid_name(bad), "{bad}");
    }
}

/// A queue on a SimFs whose record 0 is leased (expired) at `attempt`.
fn leased_at(attempt: u32) -> (crate::ManualClock, Log, Queue) {
    let fs = crate::sim::SimFs::new(0);
    let clock = crate::ManualClock::new(0);
    let config = crate::LogConfig {
        fs: Arc::new(fs),
        clock: Arc::new(clock.clone()),
        flush: crate::FlushPolicy::Manual,
        background: false,
        ..crate::LogConfig::default()
    };
    let log = Log::open("/log", config).unwrap();
    let q = Queue::open(
        &log,
        "q",
        QueueConfig {
            max_deliveries: None,
            ..QueueConfig::default()
        },
    )
    .unwrap();
    q.send(Record::new("r")).unwrap();
    q.receive(1, Duration::ZERO).unwrap();
    q.inner
        .core
        .lock()
        .state
        .set(0, SlotState::Leased, attempt, 0);
    (clock, log, q)
}

#[test]
fn a_record_past_2_pow_24_attempts_stays_settleable() {
    // Issue 9, defect 12: attempts saturated at 2^24 in the slot, so from then on
    // every receipt was stale and the record was redelivered forever.
    let (clock, _log, q) = leased_at((1 << 24) - 1);
    clock.advance(Duration::from_secs(30));
    let d = q.receive(1, Duration::ZERO).unwrap();
    assert_eq!(d[0].attempt, 1 << 24);
    q.nack(&d[0].receipt, Duration::ZERO).unwrap();
    let d = q.receive(1, Duration::ZERO).unwrap();
    assert_eq!(d[0].attempt, (1 << 24) + 1);
    q.ack(&d[0].receipt).unwrap();
    assert_eq!(q.stats().ack_floor, 1);
}

#[test]
fn a_record_at_u32_max_attempts_is_dead_lettered_not_redelivered() {
    // One more lease would need attempt u32::MAX + 1: no receipt could carry it.
    let (clock, _log, q) = leased_at(u32::MAX - 1);
    clock.advance(Duration::from_secs(30));
    let d = q.receive(1, Duration::ZERO).unwrap();
    assert_eq!(d[0].attempt, u32::MAX);
    q.nack(&d[0].receipt, Duration::ZERO).unwrap();
    assert!(q.receive(1, Duration::ZERO).unwrap().is_empty());
    let letter = q.dead_letters().read(0).unwrap().unwrap();
    assert_eq!(
        letter.header(DLQ_ATTEMPTS),
        Some(u32::MAX.to_string().as_bytes())
    );
    assert_eq!(q.stats().ack_floor, 1);
}

#[test]
fn in_flight_memory_is_small() {
    // 12-byte slot + 16-byte heap entry; 120,000 leases fill most of the
    // power-of-two capacities the collections grow to.
    let mut s = AckState::new(0);
    for o in 0..120_000 {
        s.set(o, SlotState::Leased, 1, o as i64);
    }
    let per = s.memory_bytes() as f64 / 120_000.0;
    assert!(per <= 32.0, "{per} bytes per in-flight record");
}

/// A thread visiting a lane from its own dry one backs off, once per receive,
/// while another thread is taking records there, and not when the lane's last
/// taker was itself or has gone quiet (see `lanes::VISIT_BACKOFF`).
#[test]
fn a_visitor_backs_off_only_from_a_lane_another_thread_is_at_work_on() {
    let clock = crate::ManualClock::new(0);
    let config = crate::LogConfig {
        fs: Arc::new(crate::sim::SimFs::new(0)),
        clock: Arc::new(clock.clone()),
        flush: crate::FlushPolicy::Manual,
        background: false,
        ..crate::LogConfig::default()
    };
    let log = Log::open("/log", config).unwrap();
    let lanes = QueueConfig {
        lanes: 2,
        lane_block: 4,
        ..QueueConfig::default()
    };
    let q = Queue::open(&log, "q", lanes).unwrap();
    for i in 0..8 {
        q.send(Record::new(format!("{i}"))).unwrap();
    }
    let backoffs = || lanes::BACKOFFS.with(|b| b.get());
    // One receive on another thread: its offset and back-offs. Threads are numbered
    // in the order they first receive: the test's thread 0 starts at lane 0, the
    // next at lane 1, the one after at lane 0 (the clock never reaches a rotation).
    let on_new_thread = |q: &Queue| {
        let q = q.clone();
        std::thread::spawn(move || {
            let d = q.receive(1, Duration::ZERO).unwrap().remove(0);
            q.ack(&d.receipt).unwrap();
            (d.receipt.offset, lanes::BACKOFFS.with(|b| b.get()))
        })
        .join()
        .unwrap()
    };
    let own: Vec<_> = q.receive(4, Duration::ZERO).unwrap();
    assert_eq!(
        own.iter().map(|d| d.receipt.offset).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    for d in &own {
        q.ack(&d.receipt).unwrap();
    }
    // Thread 1 takes from its lane, lane 1, without backing off.
    assert_eq!(on_new_thread(&q), (4, 0));
    // Thread 0's lane is dry: it visits lane 1, where thread 1 took a record this
    // millisecond, and backs off once (a sleep of at least VISIT_BACKOFF).
    let started = std::time::Instant::now();
    let d = q.receive(1, Duration::ZERO).unwrap().remove(0);
    assert!(started.elapsed() >= lanes::VISIT_BACKOFF);
    assert_eq!((d.receipt.offset, backoffs()), (5, 1));
    q.ack(&d.receipt).unwrap();
    // It took lane 1's last record itself: no back-off.
    let d = q.receive(1, Duration::ZERO).unwrap().remove(0);
    assert_eq!((d.receipt.offset, backoffs()), (6, 1));
    q.ack(&d.receipt).unwrap();
    // Thread 2 (lane 0, dry) visits lane 1, whose last taker, thread 0, has been
    // quiet for longer than a millisecond: no back-off.
    clock.advance(Duration::from_millis(2));
    assert_eq!(on_new_thread(&q), (7, 0));
    assert!(q.receive(1, Duration::ZERO).unwrap().is_empty());
}
