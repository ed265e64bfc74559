//! Under `Ordering::PerKey` the dead letter of a keyed record says that its key moved
//! on (`dlq.key_released`); redrive removes the header with the other `dlq.*` ones.

mod common;

use std::time::Duration;

use common::sim_config;
use logqueue::sim::SimFs;
use logqueue::{Log, ManualClock, Ordering, Queue, QueueConfig, Record, DLQ_KEY_RELEASED};

const NO_WAIT: Duration = Duration::ZERO;

fn cfg(ordering: Ordering) -> QueueConfig {
    QueueConfig {
        ordering,
        visibility_timeout: Duration::from_secs(10),
        max_deliveries: Some(2),
        ..QueueConfig::default()
    }
}

#[test]
fn per_key_dead_letters_say_the_key_moved_on() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let log = Log::open("/log", sim_config(&fs, &clock, 4096)).unwrap();
    let q = Queue::open(&log, "q", cfg(Ordering::PerKey)).unwrap();
    q.send(Record::keyed("a", "poison")).unwrap();
    q.send(Record::keyed("a", "next")).unwrap();
    q.send(Record::new("keyless")).unwrap();
    q.send(Record::keyed("b", "explicit")).unwrap();

    let first = q.receive(10, NO_WAIT).unwrap();
    let offs: Vec<_> = first.iter().map(|d| d.receipt.offset).collect();
    assert_eq!(offs, vec![0, 2, 3]);
    // An explicit dead letter of a keyed record, and of a keyless one.
    q.dead_letter(&first[2].receipt, "bad b").unwrap();
    q.dead_letter(&first[1].receipt, "bad keyless").unwrap();
    // The poison record runs out of deliveries: dead-lettered by the queue.
    clock.advance(Duration::from_secs(10));
    let second = q.receive(10, NO_WAIT).unwrap();
    assert_eq!(second[0].receipt.offset, 0);
    clock.advance(Duration::from_secs(10));
    let third = q.receive(10, NO_WAIT).unwrap();
    assert_eq!(third.len(), 1, "key a moved on");
    assert_eq!(third[0].receipt.offset, 1);

    let dlq = q.dead_letters();
    let letters: Vec<_> = (0..3).map(|i| dlq.read(i).unwrap().unwrap()).collect();
    let released = |i: usize| letters[i].header(DLQ_KEY_RELEASED).map(<[u8]>::to_vec);
    assert_eq!(letters[0].value.as_deref(), Some(&b"explicit"[..]));
    assert_eq!(released(0), Some(b"true".to_vec()));
    assert_eq!(letters[1].value.as_deref(), Some(&b"keyless"[..]));
    assert_eq!(released(1), None, "keyless records are unordered");
    assert_eq!(letters[2].value.as_deref(), Some(&b"poison"[..]));
    assert_eq!(
        letters[2].header("dlq.reason"),
        Some(&b"max_deliveries"[..])
    );
    assert_eq!(released(2), Some(b"true".to_vec()));

    // Redrive strips it like the other dlq.* headers.
    q.ack(&third[0].receipt).unwrap();
    assert_eq!(q.redrive(10).unwrap(), 3);
    for d in q.receive(10, NO_WAIT).unwrap() {
        assert_eq!(d.record.header(DLQ_KEY_RELEASED), None);
        assert!(d.record.header("redrive.from").is_some());
    }
}

#[test]
fn unordered_dead_letters_have_no_key_released_header() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let log = Log::open("/log", sim_config(&fs, &clock, 4096)).unwrap();
    let q = Queue::open(&log, "q", cfg(Ordering::Unordered)).unwrap();
    q.send(Record::keyed("a", "x")).unwrap();
    let d = q.receive(1, NO_WAIT).unwrap();
    q.dead_letter(&d[0].receipt, "no").unwrap();
    let letter = q.dead_letters().read(0).unwrap().unwrap();
    assert_eq!(letter.header(DLQ_KEY_RELEASED), None);
}
