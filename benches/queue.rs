//! Criterion benchmarks of the queue: receive+ack cycles (batch 1 and 100; 1, 2 and 4
//! consumer threads, on a queue of one lane and of two (`QueueConfig::lanes`); acking
//! one by one or with `ack_many`; beside them two queues on
//! two logs with a consumer each, the machine's ceiling for two consumers), ack+flush (the cost of
//! making one ack durable), receive+ack with the outcome feed off and on (its cost),
//! plus a report of memory and disk state with 1,000,000 records in flight.
//!
//! ```text
//! cargo bench --bench queue                 # everything
//! cargo bench --bench queue -- receive_ack  # the consumer grid only (no report)
//! cargo bench --bench queue -- outcomes     # the outcome feed off vs on
//! cargo bench --bench queue -- live         # a producer and consumers at once
//! ```
//!
//! Logs live in temporary directories (`$LOGQUEUE_BENCH_DIR`, default the system temp
//! dir). Results are in records received and acked per second.

use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use logqueue::{FlushPolicy, Log, LogConfig, Queue, QueueConfig, Record};
use tempfile::TempDir;

fn bench_dir() -> TempDir {
    let base =
        std::env::var_os("LOGQUEUE_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    tempfile::tempdir_in(base).expect("temporary directory")
}

fn log_config() -> LogConfig {
    LogConfig {
        flush: FlushPolicy::Manual,
        background: false,
        ..LogConfig::default()
    }
}

/// A log holding `n` records of 64 bytes.
fn filled_log(dir: &TempDir, n: u64) -> Log {
    let log = Log::open(dir.path(), log_config()).expect("open");
    let mut left = n;
    while left > 0 {
        let k = left.min(1000);
        log.append_batch((0..k).map(|_| Record::new(vec![0x5Au8; 64])).collect())
            .expect("append");
        left -= k;
    }
    log
}

/// How a consumer acks what it received.
#[derive(Clone, Copy, Debug)]
enum Acks {
    /// `Queue::ack` per record.
    OneByOne,
    /// One `Queue::ack_many` per receive.
    Many,
}

/// Receives and acks `total` records on `threads` threads, `batch` per receive.
fn cycle(queue: &Queue, total: u64, batch: usize, threads: usize, acks: Acks) -> Duration {
    let queues = vec![queue.clone(); threads];
    let took = consume_all(&queues, batch, acks);
    assert_eq!(queue.stats().ack_floor, total);
    took
}

/// One consumer thread per entry of `queues` (clones of one queue, or queues of
/// their own), each receiving `batch` at a time and acking until its queue is
/// drained; the wall time until all are done.
fn consume_all(queues: &[Queue], batch: usize, acks: Acks) -> Duration {
    let barrier = Arc::new(Barrier::new(queues.len() + 1));
    let handles: Vec<_> = queues
        .iter()
        .map(|q| {
            let q = q.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                drain(&q, batch, acks);
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().expect("consumer");
    }
    start.elapsed()
}

/// Receives `batch` at a time from `q` and acks, until a receive finds nothing.
fn drain(q: &Queue, batch: usize, acks: Acks) {
    let mut receipts = Vec::with_capacity(batch);
    loop {
        let got = q.receive(batch, Duration::ZERO).expect("receive");
        if got.is_empty() {
            return;
        }
        match acks {
            Acks::OneByOne => {
                for d in &got {
                    q.ack(&d.receipt).expect("ack");
                }
            }
            Acks::Many => {
                receipts.clear();
                receipts.extend(got.iter().map(|d| d.receipt));
                let stale = q.ack_many(&receipts).expect("ack_many");
                assert!(stale.is_empty());
            }
        }
    }
}

/// Records one benchmark iteration receives and acks.
const CHUNK: u64 = 100_000;

fn receive_ack(c: &mut Criterion) {
    let mut g = c.benchmark_group("receive_ack");
    g.sampling_mode(SamplingMode::Flat);
    let dir = bench_dir();
    let log = filled_log(&dir, CHUNK);
    let half_dirs = [bench_dir(), bench_dir()];
    let halves = [
        filled_log(&half_dirs[0], CHUNK / 2),
        filled_log(&half_dirs[1], CHUNK / 2),
    ];
    let mut n = 0u64;
    for acks in [Acks::OneByOne, Acks::Many] {
        for batch in [1usize, 100] {
            if batch == 1 && matches!(acks, Acks::Many) {
                continue; // the same calls as one by one
            }
            for (threads, lanes) in [(1usize, 1u32), (2, 1), (4, 1), (1, 2), (2, 2), (4, 2)] {
                g.throughput(Throughput::Elements(CHUNK));
                let ack = match acks {
                    Acks::OneByOne => "ack",
                    Acks::Many => "ack_many",
                };
                let consumers = match lanes {
                    1 => format!("{threads}_consumers"),
                    _ => format!("{threads}_consumers_{lanes}_lanes"),
                };
                let id = BenchmarkId::new(format!("{ack}/batch_{batch}"), consumers);
                g.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            // A fresh queue over the same records each time (untimed).
                            n += 1;
                            let name = format!("b{n}");
                            let config = QueueConfig {
                                journal_bytes: 16 << 20,
                                lanes,
                                ..QueueConfig::default()
                            };
                            let q = Queue::open(&log, &name, config).expect("queue");
                            total += cycle(&q, CHUNK, batch, threads, acks);
                            q.close().expect("close");
                            Queue::delete(&log, &name).expect("delete");
                        }
                        total
                    })
                });
            }
            ceiling(&mut g, &halves, &mut n, batch, acks);
        }
    }
    g.finish();
}

/// The machine's ceiling for two consumers, beside the grid: two logs of half the
/// records each, a queue on each and one consumer per queue, so that the two share
/// nothing in logqueue. What keeps this from 2x one consumer is the machine (the
/// other core's load, memory), not the queue's locks; "2_consumers" over one queue
/// is judged against it.
fn ceiling(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    halves: &[Log; 2],
    n: &mut u64,
    batch: usize,
    acks: Acks,
) {
    g.throughput(Throughput::Elements(CHUNK));
    let ack = match acks {
        Acks::OneByOne => "ack",
        Acks::Many => "ack_many",
    };
    let id = BenchmarkId::new(format!("{ack}/batch_{batch}"), "2_queues_on_2_logs");
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                *n += 1;
                let name = format!("b{n}");
                let config = QueueConfig {
                    journal_bytes: 16 << 20,
                    ..QueueConfig::default()
                };
                let queues = halves
                    .iter()
                    .map(|log| Queue::open(log, &name, config.clone()).expect("queue"))
                    .collect::<Vec<_>>();
                total += consume_all(&queues, batch, acks);
                for (q, log) in queues.into_iter().zip(halves) {
                    assert_eq!(q.stats().ack_floor, CHUNK / 2);
                    q.close().expect("close");
                    Queue::delete(log, &name).expect("delete");
                }
            }
            total
        })
    });
}

/// Receive+ack of 100,000 records by one consumer with the outcome feed off and on,
/// acking one by one (batch 1) and with `ack_many` (batch 100), side by side.
fn outcomes(c: &mut Criterion) {
    let mut g = c.benchmark_group("outcomes");
    g.sampling_mode(SamplingMode::Flat);
    let dir = bench_dir();
    let log = filled_log(&dir, CHUNK);
    let mut n = 0u64;
    for (acks, batch) in [(Acks::OneByOne, 1usize), (Acks::Many, 100)] {
        for feed in [false, true] {
            g.throughput(Throughput::Elements(CHUNK));
            let ack = match acks {
                Acks::OneByOne => "ack",
                Acks::Many => "ack_many",
            };
            let id = BenchmarkId::new(
                format!("{ack}/batch_{batch}"),
                if feed { "feed_on" } else { "feed_off" },
            );
            g.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        n += 1;
                        let name = format!("o{n}");
                        let config = QueueConfig {
                            journal_bytes: 16 << 20,
                            outcomes: feed,
                            ..QueueConfig::default()
                        };
                        let q = Queue::open(&log, &name, config).expect("queue");
                        total += cycle(&q, CHUNK, batch, 1, acks);
                        if feed {
                            assert_eq!(q.outcomes().expect("feed").end_offset(), CHUNK);
                        }
                        q.close().expect("close");
                        Queue::delete(&log, &name).expect("delete");
                    }
                    total
                })
            });
        }
    }
    g.finish();
}

/// Acking 100 receipts: 100 `Queue::ack` calls against one `Queue::ack_many` (the
/// receive before is not timed).
fn ack_100(c: &mut Criterion) {
    let mut g = c.benchmark_group("ack_100");
    g.sampling_mode(SamplingMode::Flat);
    let dir = bench_dir();
    let log = filled_log(&dir, CHUNK);
    for acks in [Acks::OneByOne, Acks::Many] {
        let name = format!("{acks:?}");
        let config = QueueConfig {
            journal_bytes: 16 << 20,
            ..QueueConfig::default()
        };
        let q = Queue::open(&log, &name, config).expect("queue");
        g.throughput(Throughput::Elements(100));
        g.bench_function(name.as_str(), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut got = q.receive(100, Duration::ZERO).expect("receive");
                    if got.len() < 100 {
                        // Out of records (untimed): 10,000 more.
                        q.purge().expect("purge");
                        for _ in 0..10 {
                            let more = (0..1000).map(|_| Record::new(vec![0x5Au8; 64]));
                            log.append_batch(more.collect()).expect("append");
                        }
                        got = q.receive(100, Duration::ZERO).expect("receive");
                    }
                    let receipts: Vec<_> = got.iter().map(|d| d.receipt).collect();
                    let start = Instant::now();
                    match acks {
                        Acks::OneByOne => {
                            for r in &receipts {
                                q.ack(r).expect("ack");
                            }
                        }
                        Acks::Many => {
                            q.ack_many(&receipts).expect("ack_many");
                        }
                    }
                    total += start.elapsed();
                }
                total
            })
        });
        q.close().expect("close");
    }
    g.finish();
}

/// A live queue: one producer appends 100,000 records in batches of 10 while the
/// consumers receive (up to 100, waiting up to 1 ms) and `ack_many`, until every
/// record is acked; the wall time from the start to the last ack. Unlike
/// `receive_ack` the backlog stays small, so the records arrive in offset order into
/// one lane's block at a time: what lanes do for consumers that keep up depends on
/// the block (`QueueConfig::lane_block`). A fresh log per iteration (untimed).
fn live(c: &mut Criterion) {
    let mut g = c.benchmark_group("live");
    g.sampling_mode(SamplingMode::Flat);
    let cells = [
        ("1_consumer", 1usize, 1u32, 1024u64),
        ("2_consumers", 2, 1, 1024),
        ("2_consumers_2_lanes_block_1024", 2, 2, 1024),
        ("2_consumers_2_lanes_block_16", 2, 2, 16),
    ];
    for (name, consumers, lanes, lane_block) in cells {
        g.throughput(Throughput::Elements(CHUNK));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = bench_dir();
                    let log = Log::open(dir.path(), log_config()).expect("open");
                    let config = QueueConfig {
                        journal_bytes: 16 << 20,
                        lanes,
                        lane_block,
                        ..QueueConfig::default()
                    };
                    let q = Queue::open(&log, "live", config).expect("queue");
                    total += produce_and_consume(&log, &q, consumers);
                    assert_eq!(q.stats().ack_floor, CHUNK);
                    q.close().expect("close");
                }
                total
            })
        });
    }
    g.finish();
}

/// One producer appending [`CHUNK`] records in batches of 10 and `consumers`
/// consumer threads acking them; the wall time until all are acked.
fn produce_and_consume(log: &Log, q: &Queue, consumers: usize) -> Duration {
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(consumers + 2));
    let producer = {
        let (log, barrier) = (log.clone(), Arc::clone(&barrier));
        std::thread::spawn(move || {
            barrier.wait();
            for _ in 0..CHUNK / 10 {
                let batch = (0..10).map(|_| Record::new(vec![0x5Au8; 64])).collect();
                log.append_batch(batch).expect("append");
            }
        })
    };
    let handles: Vec<_> = (0..consumers)
        .map(|_| {
            let (q, acked, barrier) = (q.clone(), Arc::clone(&acked), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let ordering = std::sync::atomic::Ordering::Relaxed;
                let mut receipts = Vec::with_capacity(100);
                while acked.load(ordering) < CHUNK {
                    let got = q.receive(100, Duration::from_millis(1)).expect("receive");
                    receipts.clear();
                    receipts.extend(got.iter().map(|d| d.receipt));
                    assert!(q.ack_many(&receipts).expect("ack_many").is_empty());
                    acked.fetch_add(receipts.len() as u64, ordering);
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    producer.join().expect("producer");
    for h in handles {
        h.join().expect("consumer");
    }
    start.elapsed()
}

/// One receive, one ack and one `Queue::flush` per iteration: the cost of a durable
/// ack (the log has nothing new to sync, so this is the queue journal's sync).
fn ack_flush(c: &mut Criterion) {
    let mut g = c.benchmark_group("ack_flush");
    g.sampling_mode(SamplingMode::Flat);
    let dir = bench_dir();
    let log = filled_log(&dir, CHUNK);
    let q = Queue::open(&log, "flushed", QueueConfig::default()).expect("queue");
    g.throughput(Throughput::Elements(1));
    g.bench_function("1_record", |b| {
        b.iter(|| {
            for d in q.receive(1, Duration::ZERO).expect("receive") {
                q.ack(&d.receipt).expect("ack");
            }
            q.flush().expect("flush");
        })
    });
    g.finish();
}

/// A log of `n` keyed records: `hot_percent` of them with key "hot", the rest spread
/// over 10,000 keys.
fn keyed_log(dir: &TempDir, n: u64, hot_percent: u64) -> Log {
    let log = Log::open(dir.path(), log_config()).expect("open");
    let mut i = 0u64;
    while i < n {
        let k = 1000.min(n - i);
        let batch = (i..i + k)
            .map(|j| {
                // A cheap scramble so hot records are spread through the log.
                let r = j.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
                let key = if r % 100 < hot_percent {
                    b"hot".to_vec()
                } else {
                    format!("key-{}", r % 10_000).into_bytes()
                };
                Record::keyed(key, vec![0x5Au8; 64])
            })
            .collect();
        log.append_batch(batch).expect("append");
        i += k;
    }
    log
}

/// PerKey receive+ack, batch 100, one consumer: 10,000 keys, and one hot key holding
/// 90% of the records (the queue must scan past its backlog cheaply).
fn per_key(c: &mut Criterion) {
    const N: u64 = 100_000;
    let mut g = c.benchmark_group("per_key");
    g.sampling_mode(SamplingMode::Flat);
    for (name, hot) in [("10000_keys", 0u64), ("hot_key_90pct", 90)] {
        let dir = bench_dir();
        let log = keyed_log(&dir, N, hot);
        let mut n = 0u64;
        g.throughput(Throughput::Elements(N));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let qname = format!("k{n}");
                    let config = QueueConfig {
                        ordering: logqueue::Ordering::PerKey,
                        journal_bytes: 16 << 20,
                        ..QueueConfig::default()
                    };
                    let q = Queue::open(&log, &qname, config).expect("queue");
                    total += cycle(&q, N, 100, 1, Acks::OneByOne);
                    drop(q);
                    let _ = std::fs::remove_dir_all(dir.path().join("queues").join(&qname));
                }
                total
            })
        });
    }
    g.finish();
}

/// Memory and disk state with 1,000,000 records in flight.
fn in_flight_report() {
    const N: u64 = 1_000_000;
    let dir = bench_dir();
    let log = filled_log(&dir, N);
    let q = Queue::open(
        &log,
        "held",
        QueueConfig {
            max_in_flight: N as usize,
            ..QueueConfig::default()
        },
    )
    .expect("queue");
    let mut got = 0;
    while got < N {
        got += q.receive(10_000, Duration::ZERO).expect("receive").len() as u64;
    }
    let mem = q.state_memory_bytes();
    let journal_dir = dir.path().join("queues/held");
    drop(q);
    drop(log);
    // Reopening writes a snapshot of the million leases.
    let log = Log::open(dir.path(), log_config()).expect("reopen");
    let start = Instant::now();
    let q = Queue::open(&log, "held", QueueConfig::default()).expect("reopen queue");
    let reopen = start.elapsed();
    let snapshot = std::fs::metadata(journal_dir.join("snapshot"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "in_flight/{N}: memory {mem} bytes ({:.1} bytes per record); snapshot on disk \
         {snapshot} bytes ({:.1} per record), journal 24 bytes per event plus 8 per frame; reopen {reopen:?}; \
         deliverable at once after reopen {}",
        mem as f64 / N as f64,
        snapshot as f64 / N as f64,
        q.stats().backlog,
    );
}

fn main() {
    // A filter that does not name the report skips it (it takes a while).
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.is_none_or(|f| "in_flight".contains(f.as_str())) {
        in_flight_report();
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
        .nresamples(1000)
        .configure_from_args();
    receive_ack(&mut c);
    live(&mut c);
    ack_100(&mut c);
    ack_flush(&mut c);
    outcomes(&mut c);
    per_key(&mut c);
    c.final_summary();
}
