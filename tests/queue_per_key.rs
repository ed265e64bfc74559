//! `Ordering::PerKey`: one record per key in flight, each key in offset order under
//! nack, timeout, reopen and crash; other keys and keyless records keep flowing; a
//! poison record is dead-lettered and its key moves on.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::{sim_config, with_context, Rng};
use logqueue::sim::SimFs;
use logqueue::{Log, ManualClock, Ordering, Queue, QueueConfig, Record};

const NO_WAIT: Duration = Duration::ZERO;

fn cfg() -> QueueConfig {
    QueueConfig {
        ordering: Ordering::PerKey,
        visibility_timeout: Duration::from_secs(10),
        max_deliveries: Some(3),
        journal_bytes: 4096,
        ..QueueConfig::default()
    }
}

fn open(fs: &SimFs, clock: &ManualClock) -> (Log, Queue) {
    let log = Log::open("/log", sim_config(fs, clock, 4096)).unwrap();
    let q = Queue::open(&log, "q", cfg()).unwrap();
    (log, q)
}

fn got(q: &Queue) -> Vec<(u64, u32)> {
    q.receive(100, NO_WAIT)
        .unwrap()
        .iter()
        .map(|d| (d.receipt.offset, d.attempt))
        .collect()
}

#[test]
fn one_per_key_in_order_other_keys_flow() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let (_log, q) = open(&fs, &clock);
    // a0 b1 a2 (none)3 a4 b5
    for (k, v) in [("a", "0"), ("b", "1"), ("a", "2")] {
        q.send(Record::keyed(k, v)).unwrap();
    }
    q.send(Record::new("keyless")).unwrap();
    q.send(Record::keyed("a", "4")).unwrap();
    q.send(Record::keyed("b", "5")).unwrap();
    let first = q.receive(100, NO_WAIT).unwrap();
    let offs: Vec<_> = first.iter().map(|d| d.receipt.offset).collect();
    assert_eq!(offs, vec![0, 1, 3]);
    assert_eq!(q.stats().delayed, 0, "blocked records are not 'delayed'");
    // Nack a0: a0 again (not a2) once the delay passes.
    q.nack(&first[0].receipt, Duration::from_secs(1)).unwrap();
    assert!(got(&q).is_empty());
    clock.advance(Duration::from_secs(1));
    let a0 = q.receive(100, NO_WAIT).unwrap();
    assert_eq!((a0[0].receipt.offset, a0[0].attempt), (0, 2));
    // Ack b1: b5 comes; a0 still holds a2 and a4.
    q.ack(&first[1].receipt).unwrap();
    assert_eq!(got(&q), vec![(5, 1)]);
    // Let a0 time out: it comes back, still before a2.
    clock.advance(Duration::from_secs(10));
    let again = got(&q);
    assert!(again.contains(&(0, 3)), "{again:?}");
    assert!(!again.iter().any(|&(o, _)| o == 2 || o == 4), "{again:?}");
    // Attempt 3 times out too: a0 is dead-lettered and a2 is next.
    clock.advance(Duration::from_secs(10));
    let next = got(&q);
    assert!(next.contains(&(2, 1)), "{next:?}");
    assert!(!next.iter().any(|&(o, _)| o == 4), "{next:?}");
    assert_eq!(q.stats().dead_lettered_total, 1);
    let dl = q.dead_letters().read(0).unwrap().unwrap();
    assert_eq!(dl.header("dlq.offset"), Some(&b"0"[..]));
}

#[test]
fn per_key_order_holds_across_reopen_and_crash() {
    for seed in common::seeds(30) {
        with_context(&format!("seed {seed}"), || {
            let fs = SimFs::new(seed);
            let clock = ManualClock::new(0);
            let mut rng = Rng::new(seed);
            let (mut log, mut q) = open(&fs, &clock);
            let mut keys = Vec::new(); // key of each offset
                                       // Per key: the offsets delivered since the last reopen, in delivery order.
                                       // (After a power loss, un-flushed acks are lost and a key starts again
                                       // from its oldest record not durably done: order restarts there.)
            let mut seen: HashMap<u64, Vec<u64>> = HashMap::new();
            let check = |seen: &HashMap<u64, Vec<u64>>| {
                for (k, offs) in seen {
                    assert!(
                        offs.windows(2).all(|w| w[0] <= w[1]),
                        "key {k} out of order: {offs:?}"
                    );
                }
            };
            let mut acked: BTreeMap<u64, ()> = BTreeMap::new();
            let mut out = Vec::new();
            for _ in 0..300 {
                match rng.below(9) {
                    0..=1 => {
                        let k = rng.below(4);
                        let o = q.send(Record::keyed(vec![k as u8], "v")).unwrap();
                        assert_eq!(o, keys.len() as u64);
                        keys.push(k);
                    }
                    2..=3 => {
                        let ds = q.receive(rng.range(1, 5) as usize, NO_WAIT).unwrap();
                        for d in ds {
                            let k = keys[d.receipt.offset as usize];
                            // At most one per key in flight.
                            assert!(
                                !out.iter()
                                    .any(|r: &logqueue::Receipt| keys[r.offset as usize] == k),
                                "two records of key {k} in flight"
                            );
                            seen.entry(k).or_default().push(d.receipt.offset);
                            out.push(d.receipt);
                        }
                    }
                    4..=5 if !out.is_empty() => {
                        let r = out.swap_remove(rng.below(out.len() as u64) as usize);
                        if q.ack(&r).is_ok() {
                            acked.insert(r.offset, ());
                        }
                    }
                    6 if !out.is_empty() => {
                        let r = out.swap_remove(0);
                        let _ = q.nack(&r, NO_WAIT);
                    }
                    7 => {
                        clock.advance(Duration::from_secs(rng.below(12)));
                        // Leases may have expired: they no longer count as in flight.
                        out.retain(|r| q.extend(r, Duration::from_secs(10)).is_ok());
                    }
                    _ => {
                        if rng.below(2) == 0 {
                            q.flush().unwrap();
                            fs.kill();
                        } else {
                            fs.crash();
                        }
                        drop((q, log));
                        check(&seen);
                        seen.clear();
                        (log, q) = open(&fs, &clock);
                        let end = log.end_offset();
                        keys.truncate(end as usize);
                        out.clear();
                        acked.retain(|&o, _| o < end);
                    }
                }
            }
            check(&seen);
            // In the end every record is delivered (drain, with time passing).
            let mut done: BTreeMap<u64, ()> = acked;
            for _ in 0..50 {
                for d in q.receive(100, NO_WAIT).unwrap() {
                    q.ack(&d.receipt).unwrap();
                    done.insert(d.receipt.offset, ());
                }
                clock.advance(Duration::from_secs(11));
            }
            let s = q.stats();
            assert_eq!(s.ack_floor, log.end_offset(), "{s:?}");
        });
    }
}

#[test]
fn a_delayed_record_behind_its_key_keeps_its_delay() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let (_log, q) = open(&fs, &clock);
    q.send(Record::keyed("a", "0")).unwrap();
    q.send_delayed(Record::keyed("a", "1"), Duration::from_secs(5))
        .unwrap();
    q.send(Record::keyed("a", "2")).unwrap();
    let a0 = q.receive(10, NO_WAIT).unwrap();
    assert_eq!(a0.len(), 1);
    q.ack(&a0[0].receipt).unwrap();
    // a1 is the head now but delayed; a2 stays behind it.
    assert!(got(&q).is_empty());
    assert_eq!(q.stats().delayed, 1);
    clock.advance(Duration::from_secs(5));
    let a1 = q.receive(10, NO_WAIT).unwrap();
    assert_eq!(a1.len(), 1);
    assert_eq!(a1[0].receipt.offset, 1);
    q.dead_letter(&a1[0].receipt, "poison").unwrap();
    assert_eq!(got(&q), vec![(2, 1)]);
}
