//! Criterion benchmarks of exactly-once appends (issue 13), side by side in one run:
//! `append_idempotent` vs `append` of 100 B records with a full 1,000,000-id window
//! (one at a time, and `append_idempotent_batch` vs `append_batch` of 100),
//! the window's memory per id (printed), `Log::open` with a full window vs without
//! one, and `Queue::settle_into` vs `append` + `ack` (with and without the
//! `wait_durable` that `settle_into` does), and `settle_into` of a live input (each
//! record appended just before it is settled, so its own fsync of the input counts).
//!
//! ```text
//! cargo bench --bench dedup
//! ```
//!
//! `LOGQUEUE_BENCH_DEDUP_IDS=200000 cargo bench --bench dedup -- none` prints the
//! interleaved medians alone for a window of another size.
//!
//! Logs live in temporary directories (`$LOGQUEUE_BENCH_DIR`, default the system
//! temp dir). Numbers are in `docs/benchmarks.md`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use logqueue::{DedupConfig, FlushPolicy, Log, LogConfig, Queue, QueueConfig, Record};
use tempfile::TempDir;

/// The window's size: 1,000,000 ids, or `$LOGQUEUE_BENCH_DEDUP_IDS` (to see how the
/// cost of a new id grows with the index's size against the caches).
fn window_ids() -> usize {
    std::env::var("LOGQUEUE_BENCH_DEDUP_IDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

fn bench_dir() -> TempDir {
    let base =
        std::env::var_os("LOGQUEUE_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    tempfile::tempdir_in(base).expect("temporary directory")
}

fn config(dedup: bool) -> LogConfig {
    LogConfig {
        flush: FlushPolicy::Manual,
        background: false,
        retention_ms: None,
        dedup: dedup.then_some(DedupConfig {
            window: Duration::from_secs(3600),
            max_ids: window_ids(),
        }),
        ..LogConfig::default()
    }
}

fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(10)
}

/// A 14-byte id for record `n`: what a caller typically has (an order number).
fn id(n: u64) -> [u8; 14] {
    let mut id = *b"order-00000000";
    id[6..].copy_from_slice(&n.to_be_bytes());
    id
}

/// A log whose window holds `window_ids()` ids of 100 B records.
fn full_window(dir: &Path) -> Log {
    let log = Log::open(dir, config(true)).unwrap();
    let value = vec![0x5Au8; 100];
    for n in 0..window_ids() as u64 {
        log.append_idempotent(&id(n), Record::new(value.clone()))
            .unwrap();
    }
    log.flush().unwrap();
    let s = log.dedup_stats().unwrap();
    eprintln!(
        "dedup window: {} ids, {} bytes, {:.1} bytes per id",
        s.ids,
        s.memory_bytes,
        s.memory_bytes as f64 / s.ids as f64
    );
    log
}

/// `Log::open` of a log holding exactly a full window (1M records with ids, all
/// within the window's time), with the window and without.
fn open(c: &mut Criterion, dir: &Path) {
    let mut g = c.benchmark_group("dedup_open_1M_ids");
    g.sampling_mode(SamplingMode::Flat);
    g.measurement_time(Duration::from_secs(10));
    for with_window in [false, true] {
        let name = if with_window {
            "with_window"
        } else {
            "without_window"
        };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let log = Log::open(dir, config(with_window)).unwrap();
                    total += start.elapsed();
                    log.close().unwrap();
                }
                total
            })
        });
    }
    g.finish();
}

/// This thread's CPU time: unlike the wall clock, it leaves out the time other
/// processes on this shared machine take the core away.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which lives across the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Seconds per operation of `ops` calls of `f`, by the wall clock and by CPU time.
fn timed(ops: u32, mut f: impl FnMut()) -> (f64, f64) {
    let (wall, cpu) = (Instant::now(), thread_cpu());
    for _ in 0..ops {
        f();
    }
    (
        wall.elapsed().as_secs_f64() / f64::from(ops),
        (thread_cpu() - cpu).as_secs_f64() / f64::from(ops),
    )
}

/// Medians (wall, CPU) of ten rounds.
fn medians(rounds: &[(f64, f64)]) -> (f64, f64) {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (
        median(rounds.iter().map(|r| r.0).collect()),
        median(rounds.iter().map(|r| r.1).collect()),
    )
}

/// Prints one line of plain vs idempotent medians and their ratios.
fn print_ratio(what: &str, plain: &[(f64, f64)], idempotent: &[(f64, f64)]) {
    let (p, i) = (medians(plain), medians(idempotent));
    eprintln!(
        "interleaved medians{what} ({}-id window): wall {:.0} vs {:.0} ns = {:.2}x the plain rate; CPU time {:.0} vs {:.0} ns = {:.2}x",
        window_ids(),
        p.0 * 1e9,
        i.0 * 1e9,
        p.0 / i.0,
        p.1 * 1e9,
        i.1 * 1e9,
        p.1 / i.1
    );
}

/// Plain and idempotent appends alternating in chunks of 50,000, ten times: the
/// machine's noise hits both alike. Prints the medians and their ratio, by the wall
/// clock and by CPU time.
fn interleaved(log: &Log, next: &mut u64, value: &[u8]) {
    let plain_dir = bench_dir();
    let plain = Log::open(plain_dir.path(), config(false)).unwrap();
    let (mut p, mut i) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        p.push(timed(50_000, || {
            plain.append(Record::new(value.to_vec())).unwrap();
        }));
        i.push(timed(50_000, || {
            log.append_idempotent(&id(*next), Record::new(value.to_vec()))
                .unwrap();
            *next += 1;
        }));
    }
    print_ratio(": append vs append_idempotent", &p, &i);
    // The same with batches of 100 (500 batches of each alternately, ten times).
    let (mut p, mut i) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let (w, c) = timed(500, || {
            plain.append_batch(batch_of_100(value)).unwrap();
        });
        p.push((w / 100.0, c / 100.0));
        let (w, c) = timed(500, || {
            log.append_idempotent_batch(id_batch_of_100(next, value))
                .unwrap();
        });
        i.push((w / 100.0, c / 100.0));
    }
    print_ratio(
        " per record, batches of 100: append_batch vs append_idempotent_batch",
        &p,
        &i,
    );
}

fn batch_of_100(value: &[u8]) -> Vec<Record> {
    (0..100).map(|_| Record::new(value.to_vec())).collect()
}

/// 100 new ids from `next` on, with their records.
fn id_batch_of_100(next: &mut u64, value: &[u8]) -> Vec<(Vec<u8>, Record)> {
    (0..100)
        .map(|_| {
            *next += 1;
            (id(*next).to_vec(), Record::new(value.to_vec()))
        })
        .collect()
}

fn append(c: &mut Criterion) {
    let dir = bench_dir();
    full_window(dir.path()).close().unwrap();
    open(c, dir.path());
    let log = Log::open(dir.path(), config(true)).unwrap();
    let s = log.dedup_stats().unwrap();
    eprintln!(
        "after reopen: {} ids, {:.1} bytes per id",
        s.ids,
        s.memory_bytes as f64 / s.ids as f64
    );
    let value = vec![0x5Au8; 100];
    let mut next = window_ids() as u64;
    interleaved(&log, &mut next, &value);
    let mut g = c.benchmark_group("dedup_append_100B");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(1));
    g.bench_function("append", |b| {
        b.iter_custom(|iters| {
            let dir = bench_dir();
            let log = Log::open(dir.path(), config(false)).unwrap();
            let start = Instant::now();
            for _ in 0..iters {
                log.append(Record::new(value.clone())).unwrap();
            }
            start.elapsed()
        })
    });
    g.bench_function(BenchmarkId::new("append_idempotent", "1M-id window"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let got = log
                    .append_idempotent(&id(next), Record::new(value.clone()))
                    .unwrap();
                debug_assert!(!got.duplicate);
                next += 1;
            }
            start.elapsed()
        })
    });
    g.bench_function(
        BenchmarkId::new("append_idempotent_duplicate", "1M-id window"),
        |b| {
            let mut n = 0u64;
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    // Ids still in the window: each a fingerprint hit and a record read.
                    let got = log
                        .append_idempotent(&id(next - 1 - n % 500_000), Record::new(value.clone()))
                        .unwrap();
                    debug_assert!(got.duplicate);
                    n += 1;
                }
                start.elapsed()
            })
        },
    );
    g.finish();
    let mut g = c.benchmark_group("dedup_append_batch_100x100B");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(100));
    g.bench_function("append_batch", |b| {
        b.iter_custom(|iters| {
            let dir = bench_dir();
            let log = Log::open(dir.path(), config(false)).unwrap();
            let start = Instant::now();
            for _ in 0..iters {
                log.append_batch(batch_of_100(&value)).unwrap();
            }
            start.elapsed()
        })
    });
    g.bench_function(
        BenchmarkId::new("append_idempotent_batch", "1M-id window"),
        |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    log.append_idempotent_batch(id_batch_of_100(&mut next, &value))
                        .unwrap();
                }
                start.elapsed()
            })
        },
    );
    g.finish();
}

/// One input received and settled per iteration: `settle_into` (idempotent append,
/// `wait_durable`, ack) against the at-least-once `append` + `ack`, with and without
/// the fsync.
fn settle(c: &mut Criterion) {
    let mut g = c.benchmark_group("settle_one_100B");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(1));
    let value = vec![0x5Au8; 100];
    for how in ["append+ack", "append+wait_durable+ack", "settle_into"] {
        let p = Pipeline::open();
        g.bench_function(how, |b| {
            b.iter_custom(|iters| {
                for n in (0..iters).step_by(1000) {
                    let batch = (n..iters.min(n + 1000)).map(|_| Record::new(value.clone()));
                    p.input.append_batch(batch.collect()).unwrap();
                }
                let start = Instant::now();
                for _ in 0..iters {
                    let d = p.q.receive(1, Duration::ZERO).unwrap().remove(0);
                    let output = Record::new(value.clone());
                    match how {
                        "settle_into" => {
                            p.q.settle_into(&d, &p.out, vec![output]).unwrap();
                        }
                        _ => {
                            let o = p.out.append(output).unwrap();
                            if how == "append+wait_durable+ack" {
                                p.out.wait_durable(o).unwrap();
                            }
                            p.q.ack(&d.receipt).unwrap();
                        }
                    }
                }
                start.elapsed()
            })
        });
    }
    // A live input: each record is appended (not flushed) just before it is received
    // and settled, so settle_into's fsync of the input is not shared with others.
    let p = Pipeline::open();
    g.bench_function("settle_into_live_input", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                p.input.append(Record::new(value.clone())).unwrap();
                let d = p.q.receive(1, Duration::ZERO).unwrap().remove(0);
                p.q.settle_into(&d, &p.out, vec![Record::new(value.clone())])
                    .unwrap();
            }
            start.elapsed()
        })
    });
    g.finish();
}

/// An input log with a queue and a dedup'd output log, opened once per bench
/// function and used by all its samples: a new log's first fsyncs took 40-180 ms
/// here, which dominated samples of the few iterations an fsync-bound step gets
/// when each sample opened logs of its own.
struct Pipeline {
    _dir: TempDir,
    input: Log,
    out: Log,
    q: Queue,
}

impl Pipeline {
    fn open() -> Pipeline {
        let dir = bench_dir();
        let input = Log::open(dir.path().join("a"), config(false)).unwrap();
        let out = Log::open(dir.path().join("b"), config(true)).unwrap();
        let q = Queue::open(&input, "q", QueueConfig::default()).unwrap();
        // One input settled and both logs flushed before any sample.
        input.append(Record::new("warm-up")).unwrap();
        input.flush().unwrap();
        let d = q.receive(1, Duration::ZERO).unwrap().remove(0);
        q.settle_into(&d, &out, vec![Record::new("warm-up")])
            .unwrap();
        out.flush().unwrap();
        Pipeline {
            _dir: dir,
            input,
            out,
            q,
        }
    }
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = append, settle
}
criterion_main!(benches);
