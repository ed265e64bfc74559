//! Consumers racing each other (issue 11, consumers that scale): receives refill the
//! read-ahead buffer outside the queue's locks while other consumers receive, ack,
//! nack, extend and `ack_many`; a purge or a retention jump can empty the buffer
//! in the middle of a refill. Whatever the interleaving, every record is settled
//! exactly once, and the state after a reopen agrees. Two threads racing to ack
//! one receipt: one succeeds, the other is `StaleReceipt`.
//!
//! The threads' choices come from a seed (printed on failure; replay one with
//! `LOGQUEUE_SEED=<n>`); the interleaving is the scheduler's.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use logqueue::{Error, Log, ManualClock, Queue, QueueConfig, Record};

fn config() -> QueueConfig {
    QueueConfig {
        // Nacked records are due again at once (no backoff; the clock never moves).
        backoff: Vec::new(),
        // Every record is acked in the end, however often it was nacked.
        max_deliveries: None,
        journal_bytes: 1 << 20,
        ..QueueConfig::default()
    }
}

/// Appends `n` records in batches of up to 100 (several batches per read-ahead).
fn fill(log: &Log, n: u64) {
    let mut i = 0;
    while i < n {
        let k = (n - i).min(100);
        log.append_batch(
            (i..i + k)
                .map(|v| Record::new(v.to_le_bytes().to_vec()))
                .collect(),
        )
        .unwrap();
        i += k;
    }
}

/// Successful acks per offset, shared by the consumers.
type Acked = Arc<Mutex<HashMap<u64, u32>>>;

/// One consumer: receives batches of 1 to 40 and settles each delivery by a seeded
/// choice (ack, nack, extend then ack, or `ack_many` of the rest of the batch) until
/// `settled` reaches `total`.
fn consume(q: Queue, seed: u64, acked: Acked, settled: Arc<AtomicU64>, total: u64) {
    let mut rng = common::Rng::new(seed);
    // A record lost by the queue would keep the others waiting: give up (the
    // checks after then fail) instead of hanging.
    let give_up = Instant::now() + Duration::from_secs(60);
    while settled.load(Ordering::SeqCst) < total && Instant::now() < give_up {
        let max = rng.range(1, 41) as usize;
        let got = match q.receive(max, Duration::from_millis(2)) {
            Ok(got) => got,
            Err(e) => panic!("receive: {e}"),
        };
        let mut rest = Vec::new();
        for d in got {
            let ok = match rng.below(10) {
                0 | 1 => {
                    current(q.nack(&d.receipt, Duration::ZERO));
                    false
                }
                2 => current(q.extend(&d.receipt, Duration::from_secs(60))) && ack(&q, &d.receipt),
                3 | 4 => {
                    rest.push(d.receipt);
                    continue;
                }
                _ => ack(&q, &d.receipt),
            };
            if ok {
                count(&acked, &settled, d.receipt.offset);
            }
        }
        if !rest.is_empty() {
            let stale = q.ack_many(&rest).unwrap();
            for r in rest.iter().filter(|r| !stale.contains(r)) {
                count(&acked, &settled, r.offset);
            }
        }
    }
}

/// True when the ack settled the record; false when something settled it first (a
/// purge, or another thread's ack of the same receipt).
fn ack(q: &Queue, receipt: &logqueue::Receipt) -> bool {
    current(q.ack(receipt))
}

/// True when the call took effect; false for a stale receipt (settled by a purge
/// or by another thread's ack of it).
fn current(r: logqueue::Result<()>) -> bool {
    match r {
        Ok(()) => true,
        Err(Error::StaleReceipt { .. }) => false,
        Err(e) => panic!("{e}"),
    }
}

fn count(acked: &Acked, settled: &AtomicU64, offset: u64) {
    *acked.lock().unwrap().entry(offset).or_default() += 1;
    settled.fetch_add(1, Ordering::SeqCst);
}

/// Closes `q` and opens it again: the state read back has everything below `floor`
/// settled and delivers nothing more.
fn closed_and_reopened_agree(log: &Log, q: Queue, floor: u64) {
    q.close().unwrap();
    let q = Queue::open(log, "q", config()).unwrap();
    assert_eq!(q.stats().ack_floor, floor, "the state after reopen agrees");
    assert!(q.receive(10, Duration::ZERO).unwrap().is_empty());
}

fn run_consumers(
    q: &Queue,
    seed: u64,
    threads: u64,
    total: u64,
    settled: &Arc<AtomicU64>,
) -> Acked {
    let acked: Acked = Arc::default();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (q, acked, settled) = (q.clone(), Arc::clone(&acked), Arc::clone(settled));
            std::thread::spawn(move || consume(q, seed * 16 + t, acked, settled, total))
        })
        .collect();
    for h in handles {
        h.join().expect("consumer");
    }
    acked
}

#[test]
fn racing_consumers_ack_every_record_exactly_once_and_reopen_agrees() {
    for seed in common::seeds(3) {
        common::with_context(&format!("LOGQUEUE_SEED={seed}"), || {
            let dir = tempfile::tempdir().unwrap();
            let clock = ManualClock::new(0);
            let log = common::clocked_log(dir.path(), &clock, 1 << 20);
            const N: u64 = 6000;
            fill(&log, N);
            let q = Queue::open(&log, "q", config()).unwrap();
            let settled = Arc::new(AtomicU64::new(0));
            let acked = run_consumers(&q, seed, 4, N, &settled);
            let acked = acked.lock().unwrap();
            assert_eq!(acked.len() as u64, N, "every record acked");
            assert!(acked.values().all(|&n| n == 1), "no record acked twice");
            let stats = q.stats();
            assert_eq!(
                (stats.ack_floor, stats.in_flight, stats.acked_total),
                (N, 0, N)
            );
            assert!(q.receive(10, Duration::ZERO).unwrap().is_empty());
            closed_and_reopened_agree(&log, q, N);
        });
    }
}

#[test]
fn purges_racing_consumers_settle_every_record_once() {
    for seed in common::seeds(3) {
        common::with_context(&format!("LOGQUEUE_SEED={seed}"), || {
            let dir = tempfile::tempdir().unwrap();
            let clock = ManualClock::new(0);
            let log = common::clocked_log(dir.path(), &clock, 1 << 20);
            const ROUNDS: u64 = 4;
            const PER_ROUND: u64 = 1500;
            let q = Queue::open(&log, "q", config()).unwrap();
            let settled = Arc::new(AtomicU64::new(0));
            // A producer appending in rounds, purging after each but the last,
            // while the consumers refill and drain the read-ahead.
            let producer = {
                let (q, log, settled) = (q.clone(), log.clone(), Arc::clone(&settled));
                std::thread::spawn(move || {
                    for round in 0..ROUNDS {
                        fill(&log, PER_ROUND);
                        if round + 1 < ROUNDS {
                            std::thread::sleep(Duration::from_millis(3));
                            let n = q.purge().unwrap();
                            settled.fetch_add(n, Ordering::SeqCst);
                        }
                    }
                })
            };
            let acked = run_consumers(&q, seed, 3, ROUNDS * PER_ROUND, &settled);
            producer.join().unwrap();
            let acked = acked.lock().unwrap();
            assert!(acked.values().all(|&n| n == 1), "no record acked twice");
            // Acks and purges together settled each record exactly once.
            assert_eq!(settled.load(Ordering::SeqCst), ROUNDS * PER_ROUND);
            let stats = q.stats();
            assert_eq!((stats.ack_floor, stats.in_flight), (ROUNDS * PER_ROUND, 0));
            assert_eq!(stats.acked_total, acked.len() as u64);
            closed_and_reopened_agree(&log, q, ROUNDS * PER_ROUND);
        });
    }
}

#[test]
fn a_retention_jump_racing_consumers_delivers_nothing_below_the_start() {
    for seed in common::seeds(3) {
        common::with_context(&format!("LOGQUEUE_SEED={seed}"), || {
            let dir = tempfile::tempdir().unwrap();
            let clock = ManualClock::new(0);
            // Small segments: retention deletes whole segments.
            let log = common::clocked_log(dir.path(), &clock, 16 << 10);
            const N: u64 = 6000;
            fill(&log, N);
            let q = Queue::open(&log, "q", config()).unwrap();
            let settled = Arc::new(AtomicU64::new(0));
            let start = Arc::new(AtomicU64::new(0));
            let cutter = {
                let (log, start) = (log.clone(), Arc::clone(&start));
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(2));
                    log.delete_records_before(N / 2).unwrap();
                    start.store(log.start_offset(), Ordering::SeqCst);
                })
            };
            // The consumers stop once everything from the middle on is settled.
            let acked = {
                let q2 = q.clone();
                let acked: Acked = Arc::default();
                let handles: Vec<_> = (0..3u64)
                    .map(|t| {
                        let (q, acked, settled) =
                            (q2.clone(), Arc::clone(&acked), Arc::clone(&settled));
                        std::thread::spawn(move || {
                            let mut rng = common::Rng::new(seed * 16 + t);
                            let give_up = Instant::now() + Duration::from_secs(60);
                            while q.stats().ack_floor < N && Instant::now() < give_up {
                                let max = rng.range(1, 41) as usize;
                                for d in q.receive(max, Duration::from_millis(2)).unwrap() {
                                    if ack(&q, &d.receipt) {
                                        count(&acked, &settled, d.receipt.offset);
                                    }
                                }
                            }
                        })
                    })
                    .collect();
                for h in handles {
                    h.join().expect("consumer");
                }
                acked
            };
            cutter.join().unwrap();
            let start = start.load(Ordering::SeqCst);
            assert!(start > 0, "retention moved the start");
            let acked = acked.lock().unwrap();
            assert!(acked.values().all(|&n| n == 1), "no record acked twice");
            assert!(
                (start..N).all(|o| acked.get(&o) == Some(&1)),
                "every record from the start on acked once"
            );
            let stats = q.stats();
            // Below the start: acked before the jump or passed by it, never both.
            assert_eq!(stats.acked_total + stats.skipped_by_retention, N);
            closed_and_reopened_agree(&log, q, N);
        });
    }
}

/// Acks only, from several threads at once (the core lock contended on every
/// call): each receipt is acked twice, by two threads racing; exactly one of the
/// two succeeds, the other is `StaleReceipt`.
#[test]
fn racing_acks_of_one_receipt_settle_it_once() {
    for seed in common::seeds(3) {
        common::with_context(&format!("LOGQUEUE_SEED={seed}"), || {
            let dir = tempfile::tempdir().unwrap();
            let log = common::clocked_log(dir.path(), &ManualClock::new(0), 1 << 20);
            const N: u64 = 8000;
            fill(&log, N);
            let q = Queue::open(&log, "q", config()).unwrap();
            let mut receipts = Vec::new();
            while receipts.len() < N as usize {
                receipts.extend(
                    q.receive(1000, Duration::ZERO)
                        .unwrap()
                        .iter()
                        .map(|d| d.receipt),
                );
            }
            let mut rng = common::Rng::new(seed);
            let shift = rng.range(1, N) as usize;
            let receipts = Arc::new(receipts);
            const THREADS: usize = 4;
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (q, receipts) = (q.clone(), Arc::clone(&receipts));
                    std::thread::spawn(move || {
                        // Thread t acks its quarter, rotated by `shift` for odd
                        // threads, so every receipt is acked by two threads.
                        let n = receipts.len();
                        let mut ok = Vec::new();
                        for i in (t / 2..n).step_by(THREADS / 2) {
                            let r = receipts[if t % 2 == 1 { (i + shift) % n } else { i }];
                            if ack(&q, &r) {
                                ok.push(r.offset);
                            }
                        }
                        ok
                    })
                })
                .collect();
            let mut acked: HashMap<u64, u32> = HashMap::new();
            for h in handles {
                for o in h.join().unwrap() {
                    *acked.entry(o).or_default() += 1;
                }
            }
            assert_eq!(acked.len() as u64, N, "every record acked");
            assert!(
                acked.values().all(|&n| n == 1),
                "each receipt succeeded once"
            );
            let stats = q.stats();
            assert_eq!(
                (stats.ack_floor, stats.in_flight, stats.acked_total),
                (N, 0, N)
            );
            closed_and_reopened_agree(&log, q, N);
        });
    }
}
