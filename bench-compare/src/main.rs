//! logqueue against the `commitlog` crate (0.2), in one process, on the same disk.
//!
//! ```text
//! cd bench-compare && cargo run --release [-- RECORDS [RUNS]]
//! ```
//!
//! Workloads (100-byte values, one record per call, no fsync):
//! - append: logqueue `Log::append(Record::new(value))` vs commitlog `append_msg(value)`;
//! - sequential read of everything: logqueue zero-copy (`read_views`) and owned
//!   (the `LogReader` iterator) vs commitlog `read(offset, ReadLimit::max_bytes(1 MiB))`
//!   chunks, iterating the messages of each chunk.
//!
//! Each measurement runs `RUNS` times (default 5), the two engines alternating so that
//! both see the same background noise; the medians and their ratios are printed.

use std::path::Path;
use std::time::{Duration, Instant};

use commitlog::message::MessageSet;
use commitlog::{CommitLog, LogOptions, ReadLimit};
use logqueue::{FlushPolicy, Log, LogConfig, Record};

const VALUE_BYTES: usize = 100;

fn main() {
    let mut args = std::env::args().skip(1);
    let records: u64 = args.next().map_or(1_000_000, |a| a.parse().expect("RECORDS"));
    let runs: usize = args.next().map_or(5, |a| a.parse().expect("RUNS"));
    let value = vec![0xABu8; VALUE_BYTES];
    let base = std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    println!(
        "{records} records of {VALUE_BYTES} B, {runs} runs each, in {}",
        base.display()
    );

    let mut lq_append = Vec::new();
    let mut cl_append = Vec::new();
    let mut lq_views = Vec::new();
    let mut lq_owned = Vec::new();
    let mut cl_read = Vec::new();
    for run in 0..runs {
        let lq_dir = tempfile::tempdir_in(&base).expect("temp dir");
        let cl_dir = tempfile::tempdir_in(&base).expect("temp dir");
        // Alternate which engine goes first, so neither always gets the warmer cache.
        let (lq, cl) = if run % 2 == 0 {
            let lq = logqueue_append(lq_dir.path(), records, &value);
            let cl = commitlog_append(cl_dir.path(), records, &value);
            (lq, cl)
        } else {
            let cl = commitlog_append(cl_dir.path(), records, &value);
            let lq = logqueue_append(lq_dir.path(), records, &value);
            (lq, cl)
        };
        lq_append.push(rate(records, lq.1));
        cl_append.push(rate(records, cl.1));

        let (log, clog) = (lq.0, cl.0);
        lq_views.push(rate(records, logqueue_read_views(&log, records)));
        lq_owned.push(rate(records, logqueue_read_owned(&log, records)));
        cl_read.push(rate(records, commitlog_read(&clog, records)));
        println!(
            "run {}: append lq {:.2} M/s, cl {:.2} M/s; read lq views {:.2} M/s, lq owned {:.2} M/s, cl {:.2} M/s",
            run + 1,
            lq_append[run] / 1e6,
            cl_append[run] / 1e6,
            lq_views[run] / 1e6,
            lq_owned[run] / 1e6,
            cl_read[run] / 1e6,
        );
        log.close().expect("close");
        drop(clog);
    }

    let (a, b) = (median(&mut lq_append), median(&mut cl_append));
    let (v, o, c) = (
        median(&mut lq_views),
        median(&mut lq_owned),
        median(&mut cl_read),
    );
    println!();
    println!("| workload (medians of {runs}) | logqueue | commitlog 0.2 | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| append 100 B, one per call, no fsync | {} | {} | {:.2}x |",
        fmt(a),
        fmt(b),
        a / b
    );
    println!(
        "| sequential read, logqueue zero-copy (`read_views`) vs commitlog 1 MiB chunks | {} | {} | {:.2}x |",
        fmt(v),
        fmt(c),
        v / c
    );
    println!(
        "| sequential read, logqueue owned (iterator) vs commitlog 1 MiB chunks | {} | {} | {:.2}x |",
        fmt(o),
        fmt(c),
        o / c
    );
}

fn logqueue_append(dir: &Path, records: u64, value: &[u8]) -> (Log, Duration) {
    let config = LogConfig {
        flush: FlushPolicy::Manual,
        background: false,
        ..LogConfig::default()
    };
    let log = Log::open(dir, config).expect("open logqueue");
    let start = Instant::now();
    for _ in 0..records {
        // `Record` owns its value: the copy into a Vec is part of the API's cost.
        log.append(Record::new(value.to_vec())).expect("append");
    }
    let took = start.elapsed();
    assert_eq!(log.end_offset(), records);
    (log, took)
}

fn commitlog_append(dir: &Path, records: u64, value: &[u8]) -> (CommitLog, Duration) {
    let mut log = CommitLog::new(LogOptions::new(dir)).expect("open commitlog");
    let start = Instant::now();
    for _ in 0..records {
        log.append_msg(value).expect("append_msg");
    }
    let took = start.elapsed();
    assert_eq!(log.next_offset(), records);
    (log, took)
}

fn logqueue_read_views(log: &Log, records: u64) -> Duration {
    let start = Instant::now();
    let mut bytes = 0usize;
    let n = log
        .reader(0)
        .expect("reader")
        .read_views(usize::MAX, |v| bytes += v.value.map_or(0, <[u8]>::len))
        .expect("read_views");
    let took = start.elapsed();
    assert_eq!((n as u64, bytes), (records, records as usize * VALUE_BYTES));
    took
}

fn logqueue_read_owned(log: &Log, records: u64) -> Duration {
    let start = Instant::now();
    let mut n = 0u64;
    let mut bytes = 0usize;
    for r in log.reader(0).expect("reader") {
        bytes += r.expect("record").value.map_or(0, |v| v.len());
        n += 1;
    }
    let took = start.elapsed();
    assert_eq!((n, bytes), (records, records as usize * VALUE_BYTES));
    took
}

fn commitlog_read(log: &CommitLog, records: u64) -> Duration {
    let start = Instant::now();
    let mut offset = 0;
    let mut n = 0u64;
    let mut bytes = 0usize;
    loop {
        let chunk = log
            .read(offset, ReadLimit::max_bytes(1 << 20))
            .expect("read");
        let mut last = None;
        for m in chunk.iter() {
            bytes += m.payload().len();
            n += 1;
            last = Some(m.offset());
        }
        match last {
            Some(l) => offset = l + 1,
            None => break,
        }
    }
    let took = start.elapsed();
    assert_eq!((n, bytes), (records, records as usize * VALUE_BYTES));
    took
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn fmt(per_sec: f64) -> String {
    format!("{:.2} M records/s", per_sec / 1e6)
}
