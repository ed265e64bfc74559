//! Queue lifecycle: close, names, delete, purge, peek — behaviour and crash safety
//! (SimFs kill and power loss at every operation of delete and purge).

mod common;

use std::time::Duration;

use common::{sim_config, with_context};
use logqueue::fs::FileSystem;
use logqueue::sim::{FaultKind, FaultMode, SimFs};
use logqueue::{Error, Log, ManualClock, Ordering, Queue, QueueConfig, Record};

const NO_WAIT: Duration = Duration::ZERO;

fn cfg() -> QueueConfig {
    QueueConfig {
        visibility_timeout: Duration::from_secs(10),
        journal_bytes: 4096,
        ..QueueConfig::default()
    }
}

fn sim() -> (SimFs, ManualClock, Log) {
    let fs = SimFs::new(1);
    let clock = ManualClock::new(0);
    let log = Log::open("/log", sim_config(&fs, &clock, 4096)).unwrap();
    (fs, clock, log)
}

fn send(q: &Queue, n: u64) {
    for i in 0..n {
        q.send(Record::new(format!("r{i}"))).unwrap();
    }
}

#[test]
fn close_releases_the_lock_and_other_clones_get_closed() {
    let (_fs, _clock, log) = sim();
    let q = Queue::open(&log, "q", cfg()).unwrap();
    let other = q.clone();
    send(&q, 2);
    let d = q.receive(1, NO_WAIT).unwrap();
    q.close().unwrap();
    assert!(matches!(other.receive(1, NO_WAIT), Err(Error::Closed)));
    assert!(matches!(other.ack(&d[0].receipt), Err(Error::Closed)));
    assert!(matches!(other.peek(1), Err(Error::Closed)));
    assert!(matches!(other.purge(), Err(Error::Closed)));
    assert!(matches!(other.redrive(1), Err(Error::Closed)));
    assert!(matches!(other.flush(), Err(Error::Closed)));
    assert!(matches!(other.clone().close(), Err(Error::Closed)));
    // The lock is gone while `other` still lives: the queue opens again, its lease
    // recovered.
    let again = Queue::open(&log, "q", cfg()).unwrap();
    let d = again.receive(2, NO_WAIT).unwrap();
    assert_eq!((d[0].receipt.offset, d[0].attempt), (0, 2));
    drop(other);
}

#[test]
fn close_makes_acks_durable() {
    let (fs, clock, log) = sim();
    let q = Queue::open(&log, "q", cfg()).unwrap();
    send(&q, 3);
    log.flush().unwrap();
    for d in q.receive(3, NO_WAIT).unwrap() {
        q.ack(&d.receipt).unwrap();
    }
    q.close().unwrap();
    fs.crash();
    drop(log);
    let log = Log::open("/log", sim_config(&fs, &clock, 4096)).unwrap();
    let q = Queue::open(&log, "q", cfg()).unwrap();
    assert_eq!(q.stats().ack_floor, 3);
}

#[test]
fn closing_the_log_closes_its_queues_first() {
    let (fs, clock, log) = sim();
    let q = Queue::open(&log, "q", cfg()).unwrap();
    send(&q, 1);
    let d = q.receive(1, NO_WAIT).unwrap();
    q.ack(&d[0].receipt).unwrap();
    log.clone().close().unwrap();
    assert!(matches!(q.receive(1, NO_WAIT), Err(Error::Closed)));
    // `q` is still alive, yet both reopen; the ack was flushed by the close.
    fs.crash();
    let log = Log::open("/log", sim_config(&fs, &clock, 4096)).unwrap();
    let again = Queue::open(&log, "q", cfg()).unwrap();
    assert_eq!(again.stats().ack_floor, 1);
    drop(q);
}

#[test]
fn a_blocked_receive_wakes_up_closed() {
    let (_fs, _clock, log) = sim();
    let q = Queue::open(&log, "q", cfg()).unwrap();
    let waiter = q.clone();
    let t = std::thread::spawn(move || waiter.receive(1, Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(50));
    let started = std::time::Instant::now();
    q.close().unwrap();
    assert!(matches!(t.join().unwrap(), Err(Error::Closed)));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn names_lists_queues_sorted() {
    let (fs, _clock, log) = sim();
    assert!(Queue::names(&log).unwrap().is_empty());
    let b = Queue::open(&log, "b", cfg()).unwrap();
    let _a = Queue::open(&log, "a", cfg()).unwrap();
    b.close().unwrap();
    // Not queues: a stray file, a directory whose creation never wrote a snapshot.
    fs.write_file("/log/queues/stray", b"x").unwrap();
    fs.write_file("/log/queues/c/queue.lock", b"").unwrap();
    assert_eq!(Queue::names(&log).unwrap(), vec!["a", "b"]);
}

#[test]
fn delete_refuses_an_open_queue_and_unknown_names() {
    let (_fs, _clock, log) = sim();
    let q = Queue::open(&log, "q", cfg()).unwrap();
    assert!(matches!(
        Queue::delete(&log, "q"),
        Err(Error::Locked { .. })
    ));
    assert!(matches!(
        Queue::delete(&log, "nope"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Queue::delete(&log, "../x"),
        Err(Error::InvalidArgument(_))
    ));
    // Its dead-letter log opened as a log also holds it.
    let dlq = q.dead_letters();
    drop(q);
    assert!(matches!(
        Queue::delete(&log, "q"),
        Err(Error::Locked { .. })
    ));
    drop(dlq);
    Queue::delete(&log, "q").unwrap();
}

#[test]
fn delete_removes_state_dead_letters_and_the_retention_floor() {
    let fs = SimFs::new(1);
    let clock = ManualClock::new(0);
    let config = logqueue::LogConfig {
        retention_bytes: Some(1),
        ..sim_config(&fs, &clock, 4096)
    };
    let log = Log::open("/log", config).unwrap();
    let q = Queue::open(&log, "q", cfg()).unwrap();
    for i in 0..200u64 {
        q.send(Record::new(vec![i as u8; 100])).unwrap();
    }
    let d = q.receive(1, NO_WAIT).unwrap();
    q.dead_letter(&d[0].receipt, "bad").unwrap();
    q.close().unwrap();
    // The closed queue's floor (1) holds retention.
    log.enforce_retention().unwrap();
    assert_eq!(log.start_offset(), 0);
    Queue::delete(&log, "q").unwrap();
    assert!(!fs.exists(std::path::Path::new("/log/queues/q")));
    assert!(!fs.exists(std::path::Path::new("/log/queues/q~deleted")));
    assert!(Queue::names(&log).unwrap().is_empty());
    log.enforce_retention().unwrap();
    assert!(log.start_offset() > 150, "start {}", log.start_offset());
    // The name is free: a new queue, no dead letters, starting at the log's start.
    let q = Queue::open(&log, "q", cfg()).unwrap();
    assert_eq!(q.dead_letters().end_offset(), 0);
    assert_eq!(q.stats().ack_floor, log.start_offset());
}

#[test]
fn purge_settles_everything_in_the_log_and_stales_receipts() {
    let (_fs, clock, log) = sim();
    let q = Queue::open(&log, "q", cfg()).unwrap();
    send(&q, 3);
    q.send_delayed(Record::new("later"), Duration::from_secs(60))
        .unwrap();
    let leased = q.receive(1, NO_WAIT).unwrap();
    let nacked = q.receive(1, NO_WAIT).unwrap();
    q.nack(&nacked[0].receipt, Duration::from_secs(5)).unwrap();
    let acked = q.receive(1, NO_WAIT).unwrap();
    q.ack(&acked[0].receipt).unwrap();
    q.receive(1, NO_WAIT).unwrap(); // reads past the delayed record
                                    // Leased 0, waiting 1, acked 2, delayed 3: three settled.
    assert_eq!(q.purge().unwrap(), 3);
    assert!(matches!(
        q.ack(&leased[0].receipt),
        Err(Error::StaleReceipt { .. })
    ));
    clock.advance(Duration::from_secs(120));
    assert!(q.receive(10, NO_WAIT).unwrap().is_empty());
    let s = q.stats();
    assert_eq!(
        (s.ack_floor, s.in_flight, s.backlog, s.delayed),
        (4, 0, 0, 0)
    );
    assert_eq!(q.purge().unwrap(), 0);
    // Later records flow as usual.
    q.send(Record::new("new")).unwrap();
    let d = q.receive(10, NO_WAIT).unwrap();
    assert_eq!(d[0].receipt.offset, 4);
}

#[test]
fn purge_under_per_key_releases_every_key() {
    let (_fs, _clock, log) = sim();
    let config = QueueConfig {
        ordering: Ordering::PerKey,
        ..cfg()
    };
    let q = Queue::open(&log, "q", config).unwrap();
    for i in 0..4 {
        q.send(Record::keyed("k", format!("{i}"))).unwrap();
    }
    assert_eq!(q.receive(10, NO_WAIT).unwrap().len(), 1);
    assert_eq!(q.purge().unwrap(), 4);
    q.send(Record::keyed("k", "after")).unwrap();
    let d = q.receive(10, NO_WAIT).unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].record.value.as_deref(), Some(&b"after"[..]));
}

#[test]
fn purge_is_durable_when_it_returns() {
    let (fs, clock, log) = sim();
    let q = Queue::open(&log, "q", cfg()).unwrap();
    send(&q, 5);
    assert_eq!(q.purge().unwrap(), 5);
    fs.crash();
    drop((q, log));
    let log = Log::open("/log", sim_config(&fs, &clock, 4096)).unwrap();
    let q = Queue::open(&log, "q", cfg()).unwrap();
    assert_eq!(q.stats().ack_floor, 5);
    assert!(q.receive(10, NO_WAIT).unwrap().is_empty());
}

#[test]
fn peek_shows_what_receive_would_consider_without_leasing() {
    let (_fs, clock, log) = sim();
    let q = Queue::open(&log, "q", cfg()).unwrap();
    send(&q, 3);
    q.send_delayed(Record::new("later"), Duration::from_secs(60))
        .unwrap();
    send(&q, 1);
    let offsets = |v: Vec<logqueue::StoredRecord>| v.iter().map(|r| r.offset).collect::<Vec<_>>();
    assert_eq!(offsets(q.peek(10).unwrap()), vec![0, 1, 2, 4]);
    assert_eq!(offsets(q.peek(2).unwrap()), vec![0, 1]);
    assert_eq!(q.stats().in_flight, 0);
    // A lease expires: it comes first, then the records never delivered.
    let d = q.receive(2, NO_WAIT).unwrap();
    assert_eq!(offsets(q.peek(10).unwrap()), vec![2, 4]);
    q.nack(&d[1].receipt, Duration::ZERO).unwrap();
    assert_eq!(offsets(q.peek(10).unwrap()), vec![1, 2, 4]);
    clock.advance(Duration::from_secs(60));
    // The nacked record was due first (at the nack), the expired lease at 10 s.
    assert_eq!(offsets(q.peek(10).unwrap()), vec![1, 0, 2, 3, 4]);
    // Same as receive hands out, in that order.
    let got: Vec<_> = q
        .receive(10, NO_WAIT)
        .unwrap()
        .iter()
        .map(|d| d.receipt.offset)
        .collect();
    assert_eq!(got, vec![1, 0, 2, 3, 4]);
    assert!(q.peek(10).unwrap().is_empty());
    assert!(q.peek(0).unwrap().is_empty());
}

/// What a crash in the middle of an operation may leave.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill,
    PowerLoss,
}

fn arm(fs: &SimFs, fault: Fault, k: u64) {
    match fault {
        Fault::Kill => fs.fail_after(k, FaultKind::Eio, FaultMode::Sticky),
        Fault::PowerLoss => fs.crash_at_op(fs.op_count() + k),
    }
}

fn crash(fs: &SimFs, fault: Fault) {
    match fault {
        Fault::Kill => fs.kill(),
        Fault::PowerLoss => fs.crash(),
    }
    fs.clear_faults();
}

/// A queue with 6 records: 0 and 1 acked, 2 dead-lettered, all flushed.
fn delete_setup(fs: &SimFs, clock: &ManualClock) -> Log {
    let log = Log::open("/log", sim_config(fs, clock, 4096)).unwrap();
    let q = Queue::open(&log, "q", cfg()).unwrap();
    send(&q, 6);
    let d = q.receive(3, NO_WAIT).unwrap();
    q.ack(&d[0].receipt).unwrap();
    q.ack(&d[1].receipt).unwrap();
    q.dead_letter(&d[2].receipt, "bad").unwrap();
    q.close().unwrap();
    log
}

fn delete_ops() -> u64 {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let log = delete_setup(&fs, &clock);
    let before = fs.op_count();
    Queue::delete(&log, "q").unwrap();
    fs.op_count() - before
}

#[test]
fn a_crash_at_every_operation_of_delete_leaves_the_queue_whole_or_gone() {
    let ops = delete_ops();
    assert!(ops >= 4, "{ops} ops");
    for fault in [Fault::Kill, Fault::PowerLoss] {
        for k in 1..=ops + 1 {
            for seed in 0..3 {
                let ctx = format!("{fault:?} at op {k} of {ops}, SimFs seed {seed}");
                with_context(&ctx, || {
                    let fs = SimFs::new(seed);
                    let clock = ManualClock::new(0);
                    {
                        let log = delete_setup(&fs, &clock);
                        arm(&fs, fault, k);
                        let _ = Queue::delete(&log, "q");
                        crash(&fs, fault);
                    }
                    let log = Log::open("/log", sim_config(&fs, &clock, 4096)).unwrap();
                    let names = Queue::names(&log).unwrap();
                    assert!(!fs.exists(std::path::Path::new("/log/queues/q~deleted")));
                    let q = Queue::open(&log, "q", cfg()).unwrap();
                    if names == vec!["q".to_string()] {
                        // Whole: its state and dead letters as they were.
                        assert_eq!(q.stats().ack_floor, 3, "{ctx}");
                        assert_eq!(q.dead_letters().end_offset(), 1);
                        let d = q.receive(10, NO_WAIT).unwrap();
                        assert_eq!(d.len(), 3);
                    } else {
                        // Gone: the name opens a new queue from the log's start.
                        assert!(names.is_empty(), "{names:?}");
                        assert_eq!(q.stats().ack_floor, 0);
                        assert_eq!(q.dead_letters().end_offset(), 0);
                        assert_eq!(q.receive(10, NO_WAIT).unwrap().len(), 6);
                    }
                });
            }
        }
    }
}

/// A queue with 6 records, 1 acked, 2 leased; the log flushed.
fn purge_setup(fs: &SimFs, clock: &ManualClock) -> (Log, Queue) {
    let log = Log::open("/log", sim_config(fs, clock, 4096)).unwrap();
    let q = Queue::open(&log, "q", cfg()).unwrap();
    send(&q, 6);
    let d = q.receive(3, NO_WAIT).unwrap();
    q.ack(&d[0].receipt).unwrap();
    q.flush().unwrap();
    (log, q)
}

#[test]
fn a_crash_at_every_operation_of_purge_keeps_all_or_nothing() {
    let ops = {
        let fs = SimFs::new(0);
        let clock = ManualClock::new(0);
        let (_log, q) = purge_setup(&fs, &clock);
        let before = fs.op_count();
        q.purge().unwrap();
        fs.op_count() - before
    };
    assert!(ops >= 2, "{ops} ops");
    for fault in [Fault::Kill, Fault::PowerLoss] {
        for k in 1..=ops + 1 {
            for seed in 0..3 {
                let ctx = format!("{fault:?} at op {k} of {ops}, SimFs seed {seed}");
                with_context(&ctx, || {
                    let fs = SimFs::new(seed);
                    let clock = ManualClock::new(0);
                    let returned = {
                        let (_log, q) = purge_setup(&fs, &clock);
                        arm(&fs, fault, k);
                        let r = q.purge();
                        crash(&fs, fault);
                        r.is_ok()
                    };
                    let log = Log::open("/log", sim_config(&fs, &clock, 4096)).unwrap();
                    let q = Queue::open(&log, "q", cfg()).unwrap();
                    let floor = q.stats().ack_floor;
                    let delivered = q.receive(10, NO_WAIT).unwrap().len();
                    match floor {
                        6 => assert_eq!(delivered, 0),
                        1 => {
                            assert!(!returned, "a purge that returned was lost");
                            // The 2 recovered leases come one per receive.
                            let mut n = delivered;
                            while let Ok(d) = q.receive(10, NO_WAIT) {
                                if d.is_empty() {
                                    break;
                                }
                                n += d.len();
                            }
                            assert_eq!(n, 5);
                        }
                        f => panic!("floor {f}: half a purge"),
                    }
                });
            }
        }
    }
}

#[test]
fn close_releases_the_lock_even_when_its_flush_fails() {
    let (fs, _clock, log) = sim();
    let q = Queue::open(&log, "q", cfg()).unwrap();
    send(&q, 1);
    let d = q.receive(1, NO_WAIT).unwrap();
    log.flush().unwrap();
    q.ack(&d[0].receipt).unwrap();
    let other = q.clone();
    // The log has nothing to sync: the first fsync is the journal's.
    fs.fail_after(1, FaultKind::Eio, FaultMode::Once);
    assert!(q.close().is_err(), "the failed flush is reported");
    fs.clear_faults();
    assert!(matches!(other.receive(1, NO_WAIT), Err(Error::Closed)));
    // Released anyway, while a clone still lives: it opens again on the same log.
    let again = Queue::open(&log, "q", cfg()).unwrap();
    assert!(again.stats().ack_floor <= 1);
    drop(other);
}

#[test]
fn a_half_removed_tombstone_is_never_a_queue_and_is_cleaned_up() {
    // On a real file system removing a directory tree is not atomic: a crash can
    // leave any part of a tombstone. None of it is a queue, and the next call
    // removes it.
    let (fs, _clock, log) = sim();
    let q = Queue::open(&log, "q", cfg()).unwrap();
    q.close().unwrap();
    for leftover in ["floor", "journal-00000000000000000002", "dead-letter/LOCK"] {
        fs.write_file(format!("/log/queues/old~deleted/{leftover}"), b"x")
            .unwrap();
    }
    assert_eq!(Queue::names(&log).unwrap(), vec!["q"]);
    assert!(!fs.exists(std::path::Path::new("/log/queues/old~deleted")));
    // Opening any queue cleans up too.
    fs.write_file("/log/queues/x~deleted/snapshot", b"x")
        .unwrap();
    let _q = Queue::open(&log, "q", cfg()).unwrap();
    assert!(!fs.exists(std::path::Path::new("/log/queues/x~deleted")));
    // A tombstone is not a name a queue can have.
    assert!(matches!(
        Queue::open(&log, "x~deleted", cfg()),
        Err(Error::InvalidConfig(_))
    ));
}
