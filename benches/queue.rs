//! Criterion benchmarks of the queue: receive+ack cycles (batch 1 and 100, 1 and 4
//! consumer threads), ack+flush (the cost of making one ack durable), plus a report of memory and disk state with 1,000,000 records
//! in flight.
//!
//! ```text
//! cargo bench --bench queue
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

/// Receives and acks `total` records on `threads` threads, `batch` per receive.
fn cycle(queue: &Queue, total: u64, batch: usize, threads: usize) -> Duration {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let q = queue.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                loop {
                    let got = q.receive(batch, Duration::ZERO).expect("receive");
                    if got.is_empty() {
                        return;
                    }
                    for d in &got {
                        q.ack(&d.receipt).expect("ack");
                    }
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().expect("consumer");
    }
    let took = start.elapsed();
    assert_eq!(queue.stats().ack_floor, total);
    took
}

/// Records one benchmark iteration receives and acks.
const CHUNK: u64 = 200_000;

fn receive_ack(c: &mut Criterion) {
    let mut g = c.benchmark_group("receive_ack");
    g.sampling_mode(SamplingMode::Flat);
    let dir = bench_dir();
    let log = filled_log(&dir, CHUNK);
    let mut n = 0u64;
    for threads in [1usize, 4] {
        for batch in [1usize, 100] {
            g.throughput(Throughput::Elements(CHUNK));
            let id = BenchmarkId::new(format!("{threads}_consumers"), format!("batch_{batch}"));
            g.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        // A fresh queue over the same records each time (untimed).
                        n += 1;
                        let name = format!("b{n}");
                        let config = QueueConfig {
                            journal_bytes: 16 << 20,
                            ..QueueConfig::default()
                        };
                        let q = Queue::open(&log, &name, config).expect("queue");
                        total += cycle(&q, CHUNK, batch, threads);
                        drop(q);
                        let _ = std::fs::remove_dir_all(dir.path().join("queues").join(&name));
                    }
                    total
                })
            });
        }
    }
    g.finish();
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
                    total += cycle(&q, N, 100, 1);
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
    in_flight_report();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
        .nresamples(1000)
        .configure_from_args();
    receive_ack(&mut c);
    ack_flush(&mut c);
    per_key(&mut c);
    c.final_summary();
}
