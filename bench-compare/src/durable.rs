//! Durable workloads: group commit under `FlushPolicy::Always` from many threads, one
//! thread pipelining appends with `Log::wait_durable`, and the machine's fsync latency.

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use logqueue::{FlushPolicy, Log, LogConfig, Record};

/// Median latency of `fdatasync` after a 4 KiB write, on a file in `dir`.
pub fn fsync_latency(dir: &Path, rounds: usize) -> Duration {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).expect("create probe");
    let page = vec![0x5Au8; 4096];
    let mut took = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        f.write_all(&page).expect("write probe");
        let start = Instant::now();
        f.sync_data().expect("fdatasync");
        took.push(start.elapsed());
    }
    took.sort();
    took[took.len() / 2]
}

/// `FlushPolicy::Always` from `threads` threads, `per_thread` records each:
/// (records per second, records per fsync round).
pub fn always(dir: &Path, threads: usize, per_thread: u64, value: &[u8]) -> (f64, f64) {
    let config = LogConfig {
        flush: FlushPolicy::Always,
        background: false,
        ..LogConfig::default()
    };
    let log = Log::open(dir, config).expect("open");
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (log, barrier, value) = (log.clone(), Arc::clone(&barrier), value.to_vec());
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..per_thread {
                    log.append(Record::new(value.clone())).expect("append");
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
    let stats = log.stats();
    log.close().expect("close");
    let records = per_thread * threads as u64;
    (
        records as f64 / took.as_secs_f64(),
        records as f64 / stats.flushes.max(1) as f64,
    )
}

/// One thread appends `records` records with `append_slice` and, after every
/// `window` of them, waits for the end of the window before (`Log::wait_durable`),
/// then for the last record: durable records per second.
pub fn pipelined(dir: &Path, records: u64, window: u64, value: &[u8]) -> f64 {
    let config = LogConfig {
        flush: FlushPolicy::Manual,
        background: false,
        ..LogConfig::default()
    };
    let log = Log::open(dir, config).expect("open");
    let start = Instant::now();
    let mut previous_window_end = None;
    let mut appended = 0;
    while appended < records {
        let n = window.min(records - appended);
        let mut last = 0;
        for _ in 0..n {
            last = log.append_slice(None, value).expect("append");
        }
        appended += n;
        if let Some(o) = previous_window_end.replace(last) {
            log.wait_durable(o).expect("wait_durable");
        }
    }
    if let Some(o) = previous_window_end {
        log.wait_durable(o).expect("wait_durable");
    }
    let took = start.elapsed();
    assert_eq!(log.durable_offset(), records);
    log.close().expect("close");
    records as f64 / took.as_secs_f64()
}
