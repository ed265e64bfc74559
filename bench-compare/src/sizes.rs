//! Appends of larger values and of batches, two appending threads, and the
//! machine's page-cache write bandwidth: logqueue against commitlog 0.2.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use commitlog::message::MessageBuf;
use commitlog::{CommitLog, LogOptions};
use logqueue::{FlushPolicy, Log, LogConfig, RecordRef};

/// The logqueue configuration of every append workload: no fsync, default 1 GiB
/// segments, the background threads on (the preparer maps chunks ahead).
pub fn lq_config() -> LogConfig {
    LogConfig {
        flush: FlushPolicy::Manual,
        ..LogConfig::default()
    }
}

fn cl_open(dir: &Path) -> CommitLog {
    let mut options = LogOptions::new(dir);
    options.message_max_bytes(8 << 20);
    CommitLog::new(options).expect("open commitlog")
}

/// Bytes per second of `write(2)` into the page cache: `total` bytes in 1 MiB
/// writes to a new file, no fsync.
pub fn page_cache_bandwidth(dir: &Path, total: u64) -> f64 {
    let path = dir.join("bandwidth-probe");
    let mut f = std::fs::File::create(&path).expect("create probe");
    let chunk = vec![0xC3u8; 1 << 20];
    let start = Instant::now();
    let mut written = 0;
    while written < total {
        f.write_all(&chunk).expect("write probe");
        written += chunk.len() as u64;
    }
    let took = start.elapsed();
    drop(f);
    std::fs::remove_file(&path).expect("remove probe");
    written as f64 / took.as_secs_f64()
}

/// What one append run measured: records per second, and per-append latencies.
pub struct Run {
    pub rate: f64,
    pub latencies: Vec<Duration>,
}

fn timed(n: u64, mut append: impl FnMut()) -> Run {
    let mut latencies = Vec::with_capacity(n as usize);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        append();
        latencies.push(t.elapsed());
    }
    let took = start.elapsed();
    Run {
        rate: n as f64 / took.as_secs_f64(),
        latencies,
    }
}

/// `n` appends of `value` with `append_slice`, one per call.
pub fn lq_one_per_call(dir: &Path, n: u64, value: &[u8]) -> Run {
    let log = Log::open(dir, lq_config()).expect("open logqueue");
    let run = timed(n, || {
        log.append_slice(None, value).expect("append");
    });
    log.close().expect("close");
    run
}

pub fn cl_one_per_call(dir: &Path, n: u64, value: &[u8]) -> Run {
    let mut log = cl_open(dir);
    timed(n, || {
        log.append_msg(value).expect("append_msg");
    })
}

/// `batches` batches of `per_batch` records of `value`, `append_batch_ref`.
pub fn lq_batches(dir: &Path, batches: u64, per_batch: usize, value: &[u8]) -> Run {
    let log = Log::open(dir, lq_config()).expect("open logqueue");
    let refs = vec![RecordRef::new(value); per_batch];
    let mut run = timed(batches, || {
        log.append_batch_ref(&refs).expect("append_batch_ref");
    });
    log.close().expect("close");
    run.rate *= per_batch as f64;
    run
}

/// The same with commitlog's batch append (a `MessageBuf` filled per batch).
pub fn cl_batches(dir: &Path, batches: u64, per_batch: usize, value: &[u8]) -> Run {
    let mut log = cl_open(dir);
    let mut buf = MessageBuf::default();
    let mut run = timed(batches, || {
        buf.clear();
        for _ in 0..per_batch {
            buf.push(value).expect("push");
        }
        log.append(&mut buf).expect("append");
    });
    run.rate *= per_batch as f64;
    run
}

/// commitlog takes `&mut self`: its threads share it behind a mutex.
pub fn cl_threads(dir: &Path, threads: usize, per_thread: u64, value: &[u8]) -> f64 {
    let log = Arc::new(Mutex::new(cl_open(dir)));
    in_threads(threads, per_thread, |_| {
        let log = Arc::clone(&log);
        let value = value.to_vec();
        move || {
            log.lock().unwrap().append_msg(&value).expect("append_msg");
        }
    })
}

fn in_threads<F: FnMut() + Send + 'static>(
    threads: usize,
    per_thread: u64,
    make: impl Fn(usize) -> F,
) -> f64 {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let mut append = make(t);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..per_thread {
                    append();
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().expect("appender");
    }
    (per_thread * threads as u64) as f64 / start.elapsed().as_secs_f64()
}

/// The `q` quantile of `latencies` (0.999 = p99.9), and the maximum.
pub fn quantile(latencies: &mut [Duration], q: f64) -> (Duration, Duration) {
    latencies.sort();
    let i = ((latencies.len() as f64 * q) as usize).min(latencies.len() - 1);
    (latencies[i], latencies[latencies.len() - 1])
}
