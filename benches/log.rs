//! Criterion benchmarks of the log: append (owned and borrowed batches), sequential and
//! random reads, group commit, pipelined `wait_durable`.
//!
//! ```text
//! cargo bench --bench log                 # everything, a few minutes
//! cargo bench --bench log -- append       # one group
//! ```
//!
//! Logs live in temporary directories on the real file system (`$LOGQUEUE_BENCH_DIR`,
//! default the system temp dir). Every result is a throughput in records per second.
//! The numbers and the machine they were measured on are in `docs/benchmarks.md`.

use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use logqueue::{FlushPolicy, Log, LogConfig, Record, RecordRef};
use tempfile::TempDir;

/// Records in each log the read benchmarks read.
const READ_LOG_RECORDS: u64 = 1_000_000;
/// Records one read iteration consumes.
const READ_CHUNK: u64 = 100_000;

fn bench_dir() -> TempDir {
    let base =
        std::env::var_os("LOGQUEUE_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    tempfile::tempdir_in(base).expect("temporary directory")
}

fn config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        flush,
        // No flusher, retention or cleaner threads competing for the 2 cores.
        background: false,
        ..LogConfig::default()
    }
}

fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
}

/// Appends, one record per call and batches of 100, without fsync (`Manual`). Each
/// sample appends to a fresh log, so the log never grows past one sample's records.
fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    g.sampling_mode(SamplingMode::Flat);
    for size in [100usize, 1024] {
        let value = vec![0x5Au8; size];
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("one_per_call", format!("{size}B")), |b| {
            b.iter_custom(|iters| {
                let dir = bench_dir();
                let log = Log::open(dir.path(), config(FlushPolicy::Manual)).expect("open");
                let start = Instant::now();
                for _ in 0..iters {
                    // `Record` owns its value: building it is part of what a caller pays.
                    log.append(Record::new(value.clone())).expect("append");
                }
                let took = start.elapsed();
                log.close().expect("close");
                took
            });
        });
    }
    let value = vec![0x5Au8; 100];
    g.throughput(Throughput::Elements(100));
    g.bench_function(BenchmarkId::new("batch_of_100", "100B"), |b| {
        b.iter_custom(|iters| {
            let dir = bench_dir();
            let log = Log::open(dir.path(), config(FlushPolicy::Manual)).expect("open");
            let start = Instant::now();
            for _ in 0..iters {
                let batch = (0..100).map(|_| Record::new(value.clone())).collect();
                log.append_batch(batch).expect("append_batch");
            }
            let took = start.elapsed();
            log.close().expect("close");
            took
        });
    });
    for size in [100usize, 1024] {
        let value = vec![0x5Au8; size];
        g.bench_function(
            BenchmarkId::new("batch_ref_of_100", format!("{size}B")),
            |b| {
                b.iter_custom(|iters| {
                    let dir = bench_dir();
                    let log = Log::open(dir.path(), config(FlushPolicy::Manual)).expect("open");
                    let start = Instant::now();
                    for _ in 0..iters {
                        // Borrowed records: the caller allocates nothing per record.
                        let batch = [RecordRef::new(&value); 100];
                        log.append_batch_ref(&batch).expect("append_batch_ref");
                    }
                    let took = start.elapsed();
                    log.close().expect("close");
                    took
                });
            },
        );
    }
    g.finish();
}

/// One thread appending 100 B records with `append_slice` and, after every window of
/// `window` records, waiting for the end of the window before with
/// `Log::wait_durable` (the fsyncs overlap the next window's appends only partly: one
/// thread). Throughput counts durable records.
fn pipelined(c: &mut Criterion) {
    let mut g = c.benchmark_group("wait_durable");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(1));
    let value = vec![0x5Au8; 100];
    for window in [1_000u64, 10_000] {
        g.bench_function(BenchmarkId::new("pipelined_window", window), |b| {
            b.iter_custom(|iters| {
                let dir = bench_dir();
                let log = Log::open(dir.path(), config(FlushPolicy::Manual)).expect("open");
                let start = Instant::now();
                let mut previous = None;
                let mut done = 0;
                while done < iters {
                    let n = window.min(iters - done);
                    let mut last = 0;
                    for _ in 0..n {
                        last = log.append_slice(None, &value).expect("append");
                    }
                    done += n;
                    if let Some(o) = previous.replace(last) {
                        log.wait_durable(o).expect("wait_durable");
                    }
                }
                if let Some(o) = previous {
                    log.wait_durable(o).expect("wait_durable");
                }
                let took = start.elapsed();
                log.close().expect("close");
                took
            });
        });
    }
    g.finish();
}

/// A log of `READ_LOG_RECORDS` 100-byte records appended in batches of `batch` records.
fn build_log(batch: u64) -> (TempDir, Log) {
    let dir = bench_dir();
    let log = Log::open(dir.path(), config(FlushPolicy::Manual)).expect("open");
    let value = vec![0xA5u8; 100];
    for _ in 0..READ_LOG_RECORDS / batch {
        if batch == 1 {
            log.append(Record::new(value.clone())).expect("append");
        } else {
            let records = (0..batch).map(|_| Record::new(value.clone())).collect();
            log.append_batch(records).expect("append_batch");
        }
    }
    log.flush().expect("flush");
    (dir, log)
}

/// Sequential reads of 100-byte records, zero-copy and owned, over a log built once,
/// appended one record per call (one record per batch) or in batches of 100. One
/// iteration reads `READ_CHUNK` records from a position that moves through the log.
/// Then random reads by offset (`Log::read`) over the log appended one per call.
fn read(c: &mut Criterion) {
    let mut g = c.benchmark_group("read");
    for batch in [1u64, 100] {
        let (_dir, log) = build_log(batch);
        let appended = if batch == 1 {
            "appended_1"
        } else {
            "appended_100"
        };
        g.throughput(Throughput::Elements(READ_CHUNK));
        let mut from = 0;
        g.bench_function(BenchmarkId::new("sequential_zero_copy", appended), |b| {
            b.iter(|| {
                let mut reader = log.reader(from).expect("reader");
                let mut bytes = 0usize;
                let n = reader
                    .read_views(READ_CHUNK as usize, |v| {
                        bytes += v.value.map_or(0, <[u8]>::len)
                    })
                    .expect("read_views");
                assert_eq!(n as u64, READ_CHUNK);
                from = (from + READ_CHUNK) % READ_LOG_RECORDS;
                bytes
            });
        });
        let mut from = 0;
        g.bench_function(BenchmarkId::new("sequential_owned", appended), |b| {
            b.iter(|| {
                let reader = log.reader(from).expect("reader");
                let mut bytes = 0usize;
                for r in reader.take(READ_CHUNK as usize) {
                    bytes += r.expect("record").value.map_or(0, |v| v.len());
                }
                from = (from + READ_CHUNK) % READ_LOG_RECORDS;
                bytes
            });
        });
        g.throughput(Throughput::Elements(1));
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        g.bench_function(BenchmarkId::new("random_by_offset", appended), |b| {
            b.iter(|| {
                // xorshift64: a cheap, repeatable stream of offsets.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                log.read(x % READ_LOG_RECORDS)
                    .expect("read")
                    .expect("present")
            });
        });
        log.close().expect("close");
    }
    g.finish();
}

/// `FlushPolicy::Always`: every append waits for an fsync that covers it. With one
/// thread that is one fsync per record; with more, concurrent appenders share an
/// fsync (group commit). Throughput counts the records of all threads.
fn flush(c: &mut Criterion) {
    let mut g = c.benchmark_group("flush_always");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(1));
    for threads in [1usize, 4, 16] {
        let (mut records, mut fsyncs) = (0u64, 0u64);
        g.bench_function(BenchmarkId::new("appenders", threads), |b| {
            b.iter_custom(|iters| {
                let dir = bench_dir();
                let log = Log::open(dir.path(), config(FlushPolicy::Always)).expect("open");
                let before = log.stats().fsyncs;
                let per_thread = iters.div_ceil(threads as u64);
                let barrier = Arc::new(Barrier::new(threads + 1));
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        let (log, barrier) = (log.clone(), Arc::clone(&barrier));
                        std::thread::spawn(move || {
                            barrier.wait();
                            for _ in 0..per_thread {
                                log.append(Record::new(vec![0x33u8; 100])).expect("append");
                            }
                        })
                    })
                    .collect();
                barrier.wait();
                let start = Instant::now();
                for h in handles {
                    h.join().expect("appender");
                }
                let took = start.elapsed();
                records += per_thread * threads as u64;
                fsyncs += log.stats().fsyncs - before;
                log.close().expect("close");
                // Report per record of the `iters` criterion asked for.
                took.mul_f64(iters as f64 / (per_thread * threads as u64) as f64)
            });
        });
        eprintln!(
            "flush_always/appenders/{threads}: {records} records, {fsyncs} fsyncs, {:.2} records per fsync",
            records as f64 / fsyncs.max(1) as f64
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = append, read, flush, pipelined
}
criterion_main!(benches);
