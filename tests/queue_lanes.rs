//! Queues of several lanes (`QueueConfig::lanes`): every record delivered and settled
//! once across lanes, acks routed to the lane that owns the record, the lane layout
//! fixed at creation and failing closed on damage, and the queue-wide calls (stats,
//! purge, peek, close, delete, inspect, repair, dead letters) covering every lane.

mod common;

use common::drain_acking as drain;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use logqueue::{Error, Log, LogConfig, ManualClock, Offset, Ordering, Queue, QueueConfig, Record};

const NO_WAIT: Duration = Duration::ZERO;

fn lanes(count: u32, block: u64) -> QueueConfig {
    QueueConfig {
        lanes: count,
        lane_block: block,
        max_deliveries: Some(3),
        ..QueueConfig::default()
    }
}

fn log_at(dir: &std::path::Path, clock: &ManualClock) -> Log {
    common::clocked_log(dir, clock, 64 << 10)
}

fn send_n(q: &Queue, n: u64) {
    for i in 0..n {
        q.send(Record::new(format!("job {i}"))).unwrap();
    }
}

/// Receives (batches of 100) until nothing comes, acking nothing; the deliveries.
fn receive_all(q: &Queue) -> Vec<logqueue::Delivery> {
    let mut all = Vec::new();
    loop {
        let got = q.receive(100, NO_WAIT).unwrap();
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
}

#[test]
fn every_record_is_delivered_once_across_lanes_and_stats_add_up() {
    for (count, block) in [(2, 8), (3, 5), (4, 1), (2, 1024)] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(0);
        let log = log_at(dir.path(), &clock);
        let q = Queue::open(&log, "q", lanes(count, block)).unwrap();
        send_n(&q, 300);
        let s = q.stats();
        assert_eq!((s.backlog, s.ack_floor, s.consumer_lag), (300, 0, 300));
        let mut seen = drain(&q, 7);
        assert_eq!(seen.len(), 300, "lanes {count} block {block}");
        seen.sort_unstable();
        assert_eq!(seen, (0..300).collect::<Vec<_>>());
        let s = q.stats();
        assert_eq!(s.acked_total, 300);
        assert_eq!((s.backlog, s.in_flight, s.consumer_lag), (0, 0, 0));
        assert_eq!(s.ack_floor, 300, "lanes {count} block {block}");
        // Records appended later go to their lanes too.
        send_n(&q, 10);
        assert_eq!(drain(&q, 100).len(), 10);
        assert_eq!(q.stats().ack_floor, 310);
    }
}

#[test]
fn the_ack_floor_is_the_lowest_lane_floor_and_a_reopen_keeps_every_lane() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = log_at(dir.path(), &clock);
    let q = Queue::open(&log, "q", lanes(2, 4)).unwrap();
    send_n(&q, 16);
    // Lane 0 owns 0-3 and 8-11; lane 1 owns 4-7 and 12-15.
    let got = q.receive(100, NO_WAIT).unwrap();
    let held = got
        .iter()
        .find(|d| d.receipt.offset == 5)
        .map(|d| d.receipt);
    let held = match held {
        Some(r) => r,
        None => {
            let rest = q.receive(100, NO_WAIT).unwrap();
            let r = rest.iter().find(|d| d.receipt.offset == 5).unwrap().receipt;
            for d in rest.iter().filter(|d| d.receipt.offset != 5) {
                q.ack(&d.receipt).unwrap();
            }
            r
        }
    };
    for d in got.iter().filter(|d| d.receipt.offset != 5) {
        q.ack(&d.receipt).unwrap();
    }
    for o in drain(&q, 100) {
        assert_ne!(o, 5);
    }
    assert_eq!(q.stats().ack_floor, 5);
    assert_eq!(q.stats().in_flight, 1);
    q.flush().unwrap();
    // Every lane's floor holds retention: lane 1's cursor is at the lease.
    let cursors = log.cursors().unwrap();
    let lane1 = cursors.iter().find(|c| c.name == "queue-lane.1.q").unwrap();
    assert_eq!(lane1.position, 5);
    assert!(cursors.iter().any(|c| c.name == "queue.q"));
    q.close().unwrap();
    let q = Queue::open(&log, "q", lanes(2, 4)).unwrap();
    // The lease is recovered, delivered alone; nothing else comes back.
    let again = q.receive(100, NO_WAIT).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receipt.offset, 5);
    assert!(q.ack(&held).is_err(), "the old receipt is fenced off");
    q.ack(&again[0].receipt).unwrap();
    assert!(q.receive(100, NO_WAIT).unwrap().is_empty());
    assert_eq!(q.stats().ack_floor, 16);
}

#[test]
fn nack_extend_and_dead_letter_go_to_the_owning_lane() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = log_at(dir.path(), &clock);
    let q = Queue::open(&log, "q", lanes(2, 2)).unwrap();
    send_n(&q, 8);
    let mut all = receive_all(&q);
    assert_eq!(all.len(), 8);
    all.sort_by_key(|d| d.receipt.offset);
    // One of each per lane: 0, 1 and 4 in lane 0; 2, 3 and 6 in lane 1.
    q.dead_letter(&all[1].receipt, "bad").unwrap();
    q.dead_letter(&all[2].receipt, "bad").unwrap();
    q.nack(&all[0].receipt, Duration::from_secs(5)).unwrap();
    q.nack(&all[3].receipt, Duration::from_secs(5)).unwrap();
    q.extend(&all[4].receipt, Duration::from_secs(100)).unwrap();
    q.extend(&all[6].receipt, Duration::from_secs(100)).unwrap();
    for d in [&all[5], &all[7]] {
        q.ack(&d.receipt).unwrap();
    }
    let letters: BTreeSet<String> = common::read_all(&q.dead_letters())
        .iter()
        .map(|r| String::from_utf8(r.header("dlq.offset").unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(letters, ["1", "2"].map(String::from).into());
    assert_eq!(q.stats().dead_lettered_total, 2);
    // The nacks come back after their delay; the extended leases not at 30 s.
    clock.advance(Duration::from_secs(31));
    let mut again: Vec<Offset> = receive_all(&q).iter().map(|d| d.receipt.offset).collect();
    again.sort_unstable();
    assert_eq!(again, vec![0, 3]);
    // A reopen reconciles each lane's letters once: none is delivered again.
    q.close().unwrap();
    clock.advance(Duration::from_secs(300));
    let q = Queue::open(&log, "q", lanes(2, 2)).unwrap();
    let mut back = drain(&q, 100);
    back.sort_unstable();
    assert_eq!(back, vec![0, 3, 4, 6]);
    assert_eq!(q.stats().ack_floor, 8);
    assert_eq!(q.stats().dead_lettered_total, 2);
}

#[test]
fn ack_many_spans_lanes_and_returns_the_stale_receipts_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = log_at(dir.path(), &clock);
    let q = Queue::open(&log, "q", lanes(3, 1)).unwrap();
    send_n(&q, 9);
    let mut receipts: Vec<_> = receive_all(&q).iter().map(|d| d.receipt).collect();
    assert_eq!(receipts.len(), 9);
    receipts.sort_by_key(|r| r.offset);
    let first = [receipts[4], receipts[0], receipts[8]];
    assert!(q.ack_many(&first).unwrap().is_empty());
    // Stale ones (already acked, and a copy given twice) come back in call order.
    let call = [
        receipts[1],
        receipts[4],
        receipts[2],
        receipts[0],
        receipts[2],
        receipts[7],
    ];
    let stale = q.ack_many(&call).unwrap();
    assert_eq!(stale, vec![receipts[4], receipts[0], receipts[2]]);
    let rest = [receipts[3], receipts[5], receipts[6]];
    assert!(q
        .nack_many(&rest, Duration::from_secs(1))
        .unwrap()
        .is_empty());
    clock.advance(Duration::from_secs(2));
    assert_eq!(drain(&q, 10).len(), 3);
    assert_eq!(q.stats().ack_floor, 9);
}

#[test]
fn max_in_flight_is_split_among_the_lanes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = log_at(dir.path(), &clock);
    let config = QueueConfig {
        max_in_flight: 5,
        ..lanes(2, 1)
    };
    let q = Queue::open(&log, "q", config).unwrap();
    send_n(&q, 20);
    let out = receive_all(&q);
    assert_eq!(out.len(), 5);
    assert_eq!(q.stats().in_flight, 5);
    q.ack(&out[0].receipt).unwrap();
    assert_eq!(q.receive(100, NO_WAIT).unwrap().len(), 1);
}

#[test]
fn the_layout_is_fixed_at_creation() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = log_at(dir.path(), &clock);
    Queue::open(&log, "q", lanes(2, 16))
        .unwrap()
        .close()
        .unwrap();
    for (count, block) in [(3, 16), (2, 8), (1, 1024)] {
        let r = Queue::open(&log, "q", lanes(count, block));
        assert!(
            matches!(r, Err(Error::InvalidConfig(_))),
            "{count}/{block}: {r:?}"
        );
    }
    // A queue of one lane with state stays one lane.
    Queue::open(&log, "one", QueueConfig::default())
        .unwrap()
        .close()
        .unwrap();
    let r = Queue::open(&log, "one", lanes(2, 16));
    assert!(matches!(r, Err(Error::InvalidConfig(_))), "{r:?}");
    Queue::open(&log, "q", lanes(2, 16)).unwrap();
}

#[test]
fn bad_lane_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = log_at(dir.path(), &clock);
    let bad = [
        lanes(0, 16),
        lanes(65, 16),
        lanes(2, 0),
        lanes(2, (1 << 30) + 1),
        QueueConfig {
            ordering: Ordering::PerKey,
            ..lanes(2, 16)
        },
        QueueConfig {
            outcomes: true,
            ..lanes(2, 16)
        },
        QueueConfig {
            max_in_flight: 3,
            ..lanes(4, 16)
        },
    ];
    for config in bad {
        let r = Queue::open(&log, "q", config.clone());
        assert!(
            matches!(r, Err(Error::InvalidConfig(_))),
            "{config:?}: {r:?}"
        );
    }
    assert!(Queue::names(&log).unwrap().is_empty());
}

/// Makes queue `q` of two lanes with state in every lane, closed; the one offset
/// acked.
fn two_lane_queue(dir: &std::path::Path, clock: &ManualClock) -> (Log, Offset) {
    let log = log_at(dir, clock);
    let q = Queue::open(&log, "q", lanes(2, 4)).unwrap();
    send_n(&q, 20);
    let got = q.receive(3, NO_WAIT).unwrap();
    q.ack(&got[0].receipt).unwrap();
    q.close().unwrap();
    (log, got[0].receipt.offset)
}

/// A damage done to a queue's directory.
type Damage = fn(&std::path::Path);

#[test]
fn a_damaged_or_missing_lane_file_or_lane_is_corrupt_never_a_fresh_start() {
    let clock = ManualClock::new(0);
    let cases: [(&str, Damage); 4] = [
        ("lanes file flipped", |q| {
            common::flip_bit(&q.join("lanes"), 9, 2)
        }),
        ("lanes file truncated", |q| {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(q.join("lanes"))
                .unwrap();
            f.set_len(7).unwrap();
        }),
        ("lanes file removed", |q| {
            std::fs::remove_file(q.join("lanes")).unwrap()
        }),
        ("lane 1 removed", |q| {
            std::fs::remove_dir_all(q.join("lane-1")).unwrap()
        }),
    ];
    for (what, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = two_lane_queue(dir.path(), &clock);
        damage(&dir.path().join("queues/q"));
        for config in [lanes(2, 4), QueueConfig::default()] {
            let r = Queue::open(&log, "q", config);
            assert!(
                matches!(r, Err(Error::Corrupt { .. }) | Err(Error::InvalidConfig(_))),
                "{what}: {r:?}"
            );
            if let Err(Error::InvalidConfig(m)) = &r {
                // Only the one-lane config of an intact lane file can say this.
                assert!(what == "lane 1 removed", "{what}: {m}");
            }
        }
    }
}

#[test]
fn a_lane_without_state_is_corrupt_once_lane_zero_has_state() {
    let cases: [(&str, Damage); 2] = [
        ("snapshot removed", |q| {
            std::fs::remove_file(q.join("lane-1/snapshot")).unwrap()
        }),
        ("directory removed", |q| {
            std::fs::remove_dir_all(q.join("lane-1")).unwrap()
        }),
    ];
    for (what, damage) in cases {
        let clock = ManualClock::new(0);
        let dir = tempfile::tempdir().unwrap();
        let (log, acked) = two_lane_queue(dir.path(), &clock);
        damage(&dir.path().join("queues/q"));
        let r = Queue::open(&log, "q", lanes(2, 4));
        assert!(matches!(r, Err(Error::Corrupt { .. })), "{what}: {r:?}");
        // The operator's repair rebuilds it, redelivering rather than losing.
        let report = Queue::repair(&log, "q").unwrap();
        assert!(!report.snapshot_kept, "{what}");
        let q = Queue::open(&log, "q", lanes(2, 4)).unwrap();
        let seen: BTreeSet<Offset> = drain(&q, 100).into_iter().collect();
        for o in (0..20).filter(|&o| o != acked) {
            assert!(seen.contains(&o), "{what}: {o} lost by the repair");
        }
    }
}

/// Retention keeps what the slowest lane still needs, and an idle lane holds back
/// nothing of the other lanes' offsets (promise 1: retention never deletes a record
/// a queue has not durably done).
#[test]
fn retention_keeps_what_any_lane_needs_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let config = LogConfig {
        clock: Arc::new(clock.clone()),
        retention_ms: Some(Duration::from_secs(60)),
        ..common::small_config(1024)
    };
    let log = Log::open(dir.path(), config).unwrap();
    let q = Queue::open(&log, "q", lanes(2, 16)).unwrap();
    send_n(&q, 200);
    // Lane 1 owns 16-31: its record 20 stays leased; everything else is acked.
    let mut options = logqueue::ReceiveOptions::default();
    options.lane = Some(1);
    let held = q.receive_with(5, NO_WAIT, &options).unwrap();
    let held = held
        .iter()
        .find(|d| d.receipt.offset == 20)
        .unwrap()
        .receipt;
    for d in receive_all(&q) {
        q.ack(&d.receipt).unwrap();
    }
    for o in [16, 17, 18, 19] {
        q.ack(&logqueue::Receipt {
            offset: o,
            attempt: 1,
        })
        .unwrap();
    }
    q.flush().unwrap();
    clock.advance(Duration::from_secs(120));
    log.enforce_retention().unwrap();
    assert!(log.start_offset() <= 20, "start {}", log.start_offset());
    assert!(log.read(20).unwrap().is_some());
    // Once it is acked, nothing holds retention: both lanes' floors moved on.
    q.ack(&held).unwrap();
    q.flush().unwrap();
    log.enforce_retention().unwrap();
    assert!(log.start_offset() > 100, "start {}", log.start_offset());
    assert_eq!(q.stats().ack_floor, 200);
}

#[test]
fn purge_peek_and_inspect_cover_every_lane() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = log_at(dir.path(), &clock);
    let q = Queue::open(&log, "q", lanes(2, 3)).unwrap();
    send_n(&q, 30);
    let peeked: Vec<Offset> = q.peek(100).unwrap().iter().map(|r| r.offset).collect();
    let distinct: BTreeSet<Offset> = peeked.iter().copied().collect();
    assert_eq!((peeked.len(), distinct.len()), (30, 30));
    assert_eq!(q.peek(4).unwrap().len(), 4);
    let got = q.receive(2, NO_WAIT).unwrap();
    q.ack(&got[0].receipt).unwrap();
    q.flush().unwrap();
    let live = q.stats();
    let stale = got[1].receipt;
    q.close().unwrap();
    let seen = Queue::inspect(&log, "q").unwrap();
    assert_eq!(seen.ack_floor, live.ack_floor);
    assert_eq!(seen.backlog + seen.in_flight, live.backlog + live.in_flight);
    assert_eq!(seen.acked_total, 1);
    let q = Queue::open(&log, "q", lanes(2, 3)).unwrap();
    assert_eq!(q.purge().unwrap(), 29, "each record counted once");
    assert!(q.ack(&stale).is_err());
    assert!(q.receive(100, NO_WAIT).unwrap().is_empty());
    assert_eq!(q.stats().ack_floor, 30);
    send_n(&q, 5);
    assert_eq!(drain(&q, 100).len(), 5);
}

#[test]
fn close_and_delete_take_every_lane_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = log_at(dir.path(), &clock);
    let q = Queue::open(&log, "q", lanes(3, 2)).unwrap();
    send_n(&q, 12);
    let other = q.clone();
    q.close().unwrap();
    assert!(matches!(other.receive(1, NO_WAIT), Err(Error::Closed)));
    assert!(matches!(
        other.ack(&logqueue::Receipt {
            offset: 3,
            attempt: 1
        }),
        Err(Error::Closed)
    ));
    let names: Vec<String> = log.cursors().unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    Queue::delete(&log, "q").unwrap();
    assert!(log.cursors().unwrap().is_empty());
    assert!(!dir.path().join("queues/q").exists());
    // Opened again under the name: a new queue, every record delivered.
    let q = Queue::open(&log, "q", lanes(3, 2)).unwrap();
    assert_eq!(drain(&q, 100).len(), 12);
    // Closing the log closes every lane (so reopening works).
    log.close().unwrap();
    let log = log_at(dir.path(), &clock);
    Queue::open(&log, "q", lanes(3, 2)).unwrap();
}

#[test]
fn a_waiting_receive_wakes_for_a_record_of_any_lane() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let q = Queue::open(&log, "q", lanes(2, 1)).unwrap();
    send_n(&q, 1);
    assert_eq!(drain(&q, 10), vec![0]);
    // The next record (offset 1) is lane 1's, whichever lane the receiver starts at.
    let sender = q.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        sender.send(Record::new("late")).unwrap();
    });
    let start = std::time::Instant::now();
    let got = q.receive(1, Duration::from_secs(10)).unwrap();
    t.join().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].receipt.offset, 1);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn consumers_racing_on_lanes_settle_every_record_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let q = Queue::open(&log, "q", lanes(2, 16)).unwrap();
    let total = 5_000u64;
    let producer = {
        let q = q.clone();
        std::thread::spawn(move || send_n(&q, total))
    };
    let acked = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (q, acked) = (q.clone(), Arc::clone(&acked));
            std::thread::spawn(move || {
                let mut idle = 0;
                while idle < 20 {
                    let got = q.receive(1 + w * 20, Duration::from_millis(20)).unwrap();
                    if got.is_empty() {
                        idle += 1;
                        continue;
                    }
                    idle = 0;
                    let receipts: Vec<_> = got.iter().map(|d| d.receipt).collect();
                    if w % 2 == 0 {
                        assert!(q.ack_many(&receipts).unwrap().is_empty());
                    } else {
                        for r in &receipts {
                            q.ack(r).unwrap();
                        }
                    }
                    acked.lock().extend(receipts.iter().map(|r| r.offset));
                }
            })
        })
        .collect();
    producer.join().unwrap();
    for w in workers {
        w.join().unwrap();
    }
    let mut acked = acked.lock().clone();
    acked.sort_unstable();
    assert_eq!(acked, (0..total).collect::<Vec<_>>());
    assert_eq!(q.stats().ack_floor, total);
    assert_eq!(q.stats().acked_total, total);
}

#[test]
fn a_consumer_visits_the_other_lanes_while_its_own_has_records() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = log_at(dir.path(), &clock);
    let q = Queue::open(&log, "q", lanes(2, 100)).unwrap();
    send_n(&q, 1000);
    // One thread keeps to one lane while the clock stands still, and moves on to
    // the next every 100 ms of the queue's clock.
    let (q2, clock2) = (q.clone(), clock.clone());
    let lanes_seen = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..4 {
            let mut now = BTreeSet::new();
            for _ in 0..10 {
                let d = q2.receive(1, NO_WAIT).unwrap().remove(0);
                now.insert((d.receipt.offset / 100) % 2);
                q2.ack(&d.receipt).unwrap();
            }
            seen.push(now);
            clock2.advance(Duration::from_millis(100));
        }
        seen
    })
    .join()
    .unwrap();
    for (i, lanes) in lanes_seen.iter().enumerate() {
        assert_eq!(lanes.len(), 1, "one lane per 100 ms: {lanes_seen:?}");
        assert_ne!(Some(lanes), lanes_seen.get(i + 1), "{lanes_seen:?}");
    }
    // A receive can be pinned to a lane.
    for lane in [0u32, 1, 3] {
        let mut options = logqueue::ReceiveOptions::default();
        options.lane = Some(lane);
        let got = q.receive_with(5, NO_WAIT, &options).unwrap();
        assert_eq!(got.len(), 5);
        for d in got {
            assert_eq!((d.receipt.offset / 100) % 2, u64::from(lane % 2));
        }
    }
}

#[test]
fn a_lost_lane_cursor_holds_retention_until_the_queue_opens_and_orphans_go() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    {
        let log = log_at(dir.path(), &clock);
        let q = Queue::open(&log, "q", lanes(2, 4)).unwrap();
        send_n(&q, 20);
        assert_eq!(drain(&q, 100).len(), 20);
        q.close().unwrap();
        log.close().unwrap();
    }
    let lane_cursor = dir.path().join("cursors/queue-lane.1.q.cursor");
    std::fs::remove_file(&lane_cursor).unwrap();
    // The lane has state but no floor: everything is held back, and reported.
    let log = log_at(dir.path(), &clock);
    assert_eq!(log.stats().damaged_floor_files, vec![lane_cursor.clone()]);
    let q = Queue::open(&log, "q", lanes(2, 4)).unwrap();
    assert!(log.stats().damaged_floor_files.is_empty());
    let cursors = log.cursors().unwrap();
    let lane1 = cursors.iter().find(|c| c.name == "queue-lane.1.q").unwrap();
    assert_eq!(lane1.position, 20);
    q.close().unwrap();
    log.close().unwrap();
    // A delete that crashed after the queue's directory went: the next open deletes
    // every cursor of the queue, its lanes' too.
    std::fs::remove_dir_all(dir.path().join("queues/q")).unwrap();
    let log = log_at(dir.path(), &clock);
    assert!(log.cursors().unwrap().is_empty());
}

/// Threads are numbered per queue in the order they first receive from it, so the
/// consumers of one queue start on different lanes whatever else they consume.
#[test]
fn consumers_of_each_queue_start_on_different_lanes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = log_at(dir.path(), &clock);
    let a = Queue::open(&log, "a", lanes(2, 100)).unwrap();
    let b = Queue::open(&log, "b", lanes(2, 100)).unwrap();
    send_n(&a, 400);
    // One thread after the other: A, B, A, B. The lane each got its record from.
    let lane_of = |q: &Queue| {
        let q = q.clone();
        std::thread::spawn(move || {
            let d = q.receive(1, NO_WAIT).unwrap().remove(0);
            (d.receipt.offset / 100) % 2
        })
        .join()
        .unwrap()
    };
    let (a1, b1, a2, b2) = (lane_of(&a), lane_of(&b), lane_of(&a), lane_of(&b));
    assert_ne!(a1, a2, "A's two consumers on one lane");
    assert_ne!(b1, b2, "B's two consumers on one lane");
}
