//! Tombstones settled without delivery, and per-message expiry (`expires.at`).

mod common;

use std::time::Duration;

use common::sim_config;
use logqueue::sim::SimFs;
use logqueue::{
    Log, ManualClock, Ordering, Queue, QueueConfig, Record, DLQ_ATTEMPTS, DLQ_OFFSET, DLQ_REASON,
    EXPIRES_AT,
};

const NO_WAIT: Duration = Duration::ZERO;

fn cfg() -> QueueConfig {
    QueueConfig {
        visibility_timeout: Duration::from_secs(10),
        journal_bytes: 4096,
        ..QueueConfig::default()
    }
}

fn setup(config: QueueConfig) -> (SimFs, ManualClock, Log, Queue) {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(1_000);
    let log = Log::open("/log", sim_config(&fs, &clock, 4096)).unwrap();
    let q = Queue::open(&log, "q", config).unwrap();
    (fs, clock, log, q)
}

fn offsets(q: &Queue) -> Vec<u64> {
    q.receive(100, NO_WAIT)
        .unwrap()
        .iter()
        .map(|d| {
            q.ack(&d.receipt).unwrap();
            d.receipt.offset
        })
        .collect()
}

fn expiring(value: &str, at: i64) -> Record {
    Record::new(value).with_header(EXPIRES_AT, at.to_string())
}

#[test]
fn tombstones_are_settled_without_delivery() {
    let (_fs, _clock, _log, q) = setup(cfg());
    q.send(Record::keyed("k", "v")).unwrap();
    q.send(Record::tombstone("k")).unwrap();
    q.send(Record::new("after")).unwrap();
    assert_eq!(offsets(&q), vec![0, 2]);
    let s = q.stats();
    assert_eq!(
        (s.tombstones_skipped, s.ack_floor, s.acked_total),
        (1, 3, 2)
    );
}

#[test]
fn tombstones_are_delivered_when_asked() {
    let config = QueueConfig {
        deliver_tombstones: true,
        ..cfg()
    };
    let (_fs, _clock, _log, q) = setup(config);
    q.send(Record::tombstone("k")).unwrap();
    let d = q.receive(10, NO_WAIT).unwrap();
    assert_eq!(d[0].record.value, None);
    assert_eq!(q.stats().tombstones_skipped, 0);
}

#[test]
fn a_tombstone_behind_its_key_waits_then_is_settled_and_releases_the_key() {
    let config = QueueConfig {
        ordering: Ordering::PerKey,
        ..cfg()
    };
    let (_fs, _clock, _log, q) = setup(config);
    q.send(Record::keyed("k", "v")).unwrap();
    q.send(Record::tombstone("k")).unwrap();
    q.send(Record::keyed("k", "v2")).unwrap();
    let first = q.receive(10, NO_WAIT).unwrap();
    assert_eq!(first.len(), 1);
    q.ack(&first[0].receipt).unwrap();
    // The tombstone (1) is passed; the key moves on to 2.
    assert_eq!(offsets(&q), vec![2]);
    assert_eq!(q.stats().tombstones_skipped, 1);
}

#[test]
fn expired_records_go_to_the_dead_letter_log() {
    let (_fs, clock, _log, q) = setup(cfg());
    q.send(expiring("stale", 1_000)).unwrap(); // expires at now
    q.send(expiring("fresh", 5_000)).unwrap();
    q.send(Record::new("plain")).unwrap();
    let d = q.receive(10, NO_WAIT).unwrap();
    assert_eq!(
        d.iter().map(|d| d.receipt.offset).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let letter = q.dead_letters().read(0).unwrap().unwrap();
    assert_eq!(letter.header(DLQ_REASON), Some(&b"expired"[..]));
    assert_eq!(letter.header(DLQ_OFFSET), Some(&b"0"[..]));
    assert_eq!(letter.header(DLQ_ATTEMPTS), Some(&b"0"[..]));
    // A leased record that expires meanwhile is not delivered again.
    q.nack(&d[0].receipt, NO_WAIT).unwrap();
    clock.set(5_000);
    q.ack(&d[1].receipt).unwrap();
    assert!(q.receive(10, NO_WAIT).unwrap().is_empty());
    let letter = q.dead_letters().read(1).unwrap().unwrap();
    assert_eq!(letter.header(DLQ_OFFSET), Some(&b"1"[..]));
    assert_eq!(letter.header(DLQ_ATTEMPTS), Some(&b"1"[..]));
    let s = q.stats();
    assert_eq!(
        (s.expired_total, s.dead_lettered_total, s.ack_floor),
        (2, 2, 3)
    );
}

#[test]
fn expired_records_are_settled_silently_when_asked() {
    let config = QueueConfig {
        dead_letter_expired: false,
        ..cfg()
    };
    let (_fs, _clock, _log, q) = setup(config);
    q.send(expiring("stale", 0)).unwrap();
    q.send(Record::new("plain")).unwrap();
    assert_eq!(offsets(&q), vec![1]);
    assert_eq!(q.dead_letters().end_offset(), 0);
    let s = q.stats();
    assert_eq!(
        (s.expired_total, s.dead_lettered_total, s.ack_floor),
        (1, 0, 2)
    );
}

#[test]
fn a_delayed_record_that_expires_before_its_delay_is_never_delivered() {
    let (_fs, clock, _log, q) = setup(cfg());
    q.send_delayed(expiring("x", 2_000), Duration::from_secs(5))
        .unwrap();
    assert!(q.receive(10, NO_WAIT).unwrap().is_empty());
    clock.advance(Duration::from_secs(5));
    assert!(q.receive(10, NO_WAIT).unwrap().is_empty());
    assert_eq!(q.stats().expired_total, 1);
    assert_eq!(q.dead_letters().end_offset(), 1);
}

#[test]
fn expiry_survives_a_crash_exactly_once() {
    // The dead letter of an expired record and its journal event: after a power loss
    // the record is either dead-lettered once or still there to expire again; never
    // delivered, never two letters.
    for seed in common::seeds(20) {
        let fs = SimFs::new(seed);
        let clock = ManualClock::new(1_000);
        {
            let log = Log::open("/log", sim_config(&fs, &clock, 4096)).unwrap();
            let q = Queue::open(&log, "q", cfg()).unwrap();
            q.send(expiring("stale", 0)).unwrap();
            log.flush().unwrap();
            assert!(q.receive(10, NO_WAIT).unwrap().is_empty());
            fs.crash();
        }
        let log = Log::open("/log", sim_config(&fs, &clock, 4096)).unwrap();
        let q = Queue::open(&log, "q", cfg()).unwrap();
        assert!(
            q.receive(10, NO_WAIT).unwrap().is_empty(),
            "seed {seed}: delivered"
        );
        assert_eq!(q.dead_letters().end_offset(), 1, "seed {seed}");
        assert_eq!(q.stats().ack_floor, 1);
    }
}

#[test]
fn with_ttl_sets_expires_at_from_the_system_clock() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let r = Record::new("x")
        .with_ttl(Duration::from_secs(1))
        .with_ttl(Duration::from_secs(60));
    let at: Vec<i64> = r
        .headers
        .iter()
        .filter(|h| h.key == EXPIRES_AT)
        .map(|h| std::str::from_utf8(&h.value).unwrap().parse().unwrap())
        .collect();
    assert_eq!(at.len(), 1, "replaced, not added");
    assert!((now + 59_000..now + 62_000).contains(&at[0]), "{at:?}");
}
