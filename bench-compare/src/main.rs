//! logqueue against the `commitlog` crate (0.2), in one process, on the same disk.
//!
//! ```text
//! cd bench-compare && cargo run --release [-- RECORDS [RUNS]]
//! ```
//!
//! Workloads, in this order (`WORKLOADS=machine,sizes,durable,append` picks groups;
//! all by default):
//! - machine: the page cache's write bandwidth (`write(2)`, 1 MiB chunks, no fsync);
//! - sizes: appends of 64 KiB and 1 KiB one per call, batches of 100 x 100 B and
//!   100 x 1 KiB (`append_batch_ref` vs commitlog's `append(&mut MessageBuf)`), with
//!   latency quantiles, and 1 vs 2 appending threads (commitlog behind a `Mutex`);
//! - maintenance: append latency (p50, p99.9, max) while the cleaner swaps and
//!   retention deletes, beside the same appends idle (see `maintenance.rs`);
//! - durable: `fdatasync` latency, `FlushPolicy::Always` from 1 and 16 threads
//!   (records per fsync round), one thread pipelining appends with `wait_durable`;
//! - append (`RECORDS` 100-byte values, no fsync): logqueue `append(Record)` and
//!   `append_slice` vs commitlog `append_msg`; sequential read of everything:
//!   logqueue zero-copy (`read_views`) and owned (the `LogReader` iterator) vs
//!   commitlog `read(offset, ReadLimit::max_bytes(1 MiB))` chunks.
//!
//! `cargo run --release -- queue [RECORDS [RUNS]]` instead compares logqueue's
//! `Queue` with SQLite used as a job queue (see `queue.rs`).
//!
//! logqueue appends run with `FlushPolicy::Manual` and the background threads on
//! (its preparer maps the segment ahead of the writer). Each measurement runs `RUNS`
//! times (default 5; at most 3 for the size and durable groups), the two engines
//! alternating so that both see the same background noise; medians are printed.
//! `PROFILE_APPEND_BYTES=N` runs only logqueue's one-per-call appends of N bytes
//! (for `perf record`).

mod durable;
mod limits;
mod maintenance;
mod sizes;

mod queue;

use std::path::Path;
use std::time::{Duration, Instant};

/// True when the workload group `name` was asked for: `WORKLOADS=a,b` (all by default).
fn wanted(name: &str) -> bool {
    std::env::var("WORKLOADS").map_or(true, |w| w.split(',').any(|x| x == name))
}

/// Wall-clock and on-CPU time of this thread: on a shared, noisy machine the CPU time
/// (`CLOCK_THREAD_CPUTIME_ID`) shows what an idle core would do, the wall time what
/// this run got.
#[derive(Clone, Copy)]
struct Took {
    wall: Duration,
    cpu: Duration,
}

struct Timer {
    wall: Instant,
    cpu: Duration,
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Timer {
    fn start() -> Timer {
        Timer {
            wall: Instant::now(),
            cpu: thread_cpu(),
        }
    }
    fn stop(&self) -> Took {
        Took {
            wall: self.wall.elapsed(),
            cpu: thread_cpu() - self.cpu,
        }
    }
}

use commitlog::message::MessageSet;
use commitlog::{CommitLog, LogOptions, ReadLimit};
use logqueue::{Log, Record};

const VALUE_BYTES: usize = 100;

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("queue") {
        args.next();
        let records = args.next().map_or(100_000, |a| a.parse().expect("RECORDS"));
        let runs = args.next().map_or(3, |a| a.parse().expect("RUNS"));
        let base = std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
        queue::compare(records, runs, &base);
        return;
    }
    let records: u64 = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("RECORDS"));
    let runs: usize = args.next().map_or(5, |a| a.parse().expect("RUNS"));
    let value = vec![0xABu8; VALUE_BYTES];
    let base = std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    println!(
        "{records} records of {VALUE_BYTES} B, {runs} runs each, in {}",
        base.display()
    );

    // Per workload: (records per wall second, records per CPU second) of each run.
    if let Ok(size) = std::env::var("PROFILE_APPEND_BYTES") {
        // For `perf record`: only logqueue's one-per-call appends of this size.
        let size: usize = size.parse().expect("PROFILE_APPEND_BYTES");
        let n = (512u64 << 20) / size as u64;
        for _ in 0..runs {
            let dir = tempfile::tempdir_in(&base).expect("temp dir");
            let run = sizes::lq_one_per_call(dir.path(), n, &vec![1u8; size]);
            println!("{size} B: {:.0} MB/s", run.rate * size as f64 / 1e6);
        }
        return;
    }
    if wanted("machine") || wanted("sizes") {
        sizes_section(&base, runs.min(3));
    }
    if wanted("maintenance") {
        maintenance_section(&base, runs.min(3));
    }
    if wanted("durable") {
        durable_section(&base, &value);
    }
    if !wanted("append") {
        return;
    }
    let mut lq_append = Vec::new();
    let mut lq_append_slice = Vec::new();
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
        {
            // The borrowed-bytes append, like commitlog's `append_msg(&[u8])`.
            let dir = tempfile::tempdir_in(&base).expect("temp dir");
            let (log, took) = logqueue_append_slice(dir.path(), records, &value);
            lq_append_slice.push(rate(records, took));
            log.close().expect("close");
        }

        let (log, clog) = (lq.0, cl.0);
        lq_views.push(rate(records, logqueue_read_views(&log, records)));
        lq_owned.push(rate(records, logqueue_read_owned(&log, records)));
        cl_read.push(rate(records, commitlog_read(&clog, records)));
        let m = |r: (f64, f64)| format!("{:.2} ({:.2} cpu)", r.0 / 1e6, r.1 / 1e6);
        println!(
            "run {}: M records/s wall (cpu): append lq {}, lq slice {}, cl {}; read lq views {}, lq owned {}, cl {}",
            run + 1,
            m(lq_append[run]),
            m(lq_append_slice[run]),
            m(cl_append[run]),
            m(lq_views[run]),
            m(lq_owned[run]),
            m(cl_read[run]),
        );
        log.close().expect("close");
        drop(clog);
    }

    println!();
    println!(
        "Medians of {runs} runs, M records/s by wall-clock time (by on-CPU time of the thread)."
    );
    println!();
    println!("| workload | logqueue | commitlog 0.2 | ratio wall (cpu) |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, lq: &[(f64, f64)], cl: &[(f64, f64)]| {
        let (lw, lc) = medians(lq);
        let (cw, cc) = medians(cl);
        println!(
            "| {name} | {:.2} ({:.2}) | {:.2} ({:.2}) | {:.2}x ({:.2}x) |",
            lw / 1e6,
            lc / 1e6,
            cw / 1e6,
            cc / 1e6,
            lw / cw,
            lc / cc
        );
    };
    row(
        "append 100 B, one per call, no fsync (`append(Record)`, allocating)",
        &lq_append,
        &cl_append,
    );
    row(
        "append 100 B, one per call, no fsync (`append_slice(&[u8])`, like `append_msg`)",
        &lq_append_slice,
        &cl_append,
    );
    row(
        "sequential read: logqueue zero-copy `read_views` vs commitlog 1 MiB `read`s",
        &lq_views,
        &cl_read,
    );
    row(
        "sequential read: logqueue owned iterator vs commitlog 1 MiB `read`s",
        &lq_owned,
        &cl_read,
    );
}

fn logqueue_append(dir: &Path, records: u64, value: &[u8]) -> (Log, Took) {
    let log = Log::open(dir, sizes::lq_config()).expect("open logqueue");
    let start = Timer::start();
    for _ in 0..records {
        // `Record` owns its value: the copy into a Vec is part of the API's cost.
        log.append(Record::new(value.to_vec())).expect("append");
    }
    let took = start.stop();
    assert_eq!(log.end_offset(), records);
    (log, took)
}

fn logqueue_append_slice(dir: &Path, records: u64, value: &[u8]) -> (Log, Took) {
    let log = Log::open(dir, sizes::lq_config()).expect("open logqueue");
    let start = Timer::start();
    for _ in 0..records {
        log.append_slice(None, value).expect("append_slice");
    }
    let took = start.stop();
    assert_eq!(log.end_offset(), records);
    (log, took)
}

fn commitlog_append(dir: &Path, records: u64, value: &[u8]) -> (CommitLog, Took) {
    let mut log = CommitLog::new(LogOptions::new(dir)).expect("open commitlog");
    let start = Timer::start();
    for _ in 0..records {
        log.append_msg(value).expect("append_msg");
    }
    let took = start.stop();
    assert_eq!(log.next_offset(), records);
    (log, took)
}

fn logqueue_read_views(log: &Log, records: u64) -> Took {
    let start = Timer::start();
    let mut bytes = 0usize;
    let n = log
        .reader(0)
        .expect("reader")
        .read_views(usize::MAX, |v| bytes += v.value.map_or(0, <[u8]>::len))
        .expect("read_views");
    let took = start.stop();
    assert_eq!((n as u64, bytes), (records, records as usize * VALUE_BYTES));
    took
}

fn logqueue_read_owned(log: &Log, records: u64) -> Took {
    let start = Timer::start();
    let mut n = 0u64;
    let mut bytes = 0usize;
    for r in log.reader(0).expect("reader") {
        bytes += r.expect("record").value.map_or(0, |v| v.len());
        n += 1;
    }
    let took = start.stop();
    assert_eq!((n, bytes), (records, records as usize * VALUE_BYTES));
    took
}

fn commitlog_read(log: &CommitLog, records: u64) -> Took {
    let start = Timer::start();
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
    let took = start.stop();
    assert_eq!((n, bytes), (records, records as usize * VALUE_BYTES));
    took
}

/// (records per wall second, records per CPU second)
fn rate(n: u64, d: Took) -> (f64, f64) {
    (
        n as f64 / d.wall.as_secs_f64(),
        n as f64 / d.cpu.as_secs_f64(),
    )
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

/// Medians of the wall-clock and the CPU-time rates.
fn medians(v: &[(f64, f64)]) -> (f64, f64) {
    let mut wall: Vec<f64> = v.iter().map(|r| r.0).collect();
    let mut cpu: Vec<f64> = v.iter().map(|r| r.1).collect();
    (median(&mut wall), median(&mut cpu))
}

/// Append latency with and without maintenance running, alternating runs.
fn maintenance_section(base: &Path, runs: usize) {
    let appends = 2_000_000;
    let mut idle = Vec::new();
    let mut busy = Vec::new();
    let mut passes = (0, 0);
    for _ in 0..runs {
        for (is_busy, into) in [(false, &mut idle), (true, &mut busy)] {
            let dir = tempfile::tempdir_in(base).expect("temp dir");
            let run = maintenance::run(dir.path(), appends, is_busy);
            into.extend(run.latencies);
            passes.0 += run.passes.0;
            passes.1 += run.passes.1;
        }
    }
    println!();
    println!("## append latency while the cleaner swaps / retention deletes ({runs} x {appends} appends each, 100 B, pooled)");
    println!(
        "maintenance in the busy runs: {} compactions, {} segments deleted",
        passes.0, passes.1
    );
    println!("| appends | p50 | p99 | p99.9 | p99.99 | max | appends > 1 ms |");
    println!("|---|---|---|---|---|---|---|");
    let mut p999 = [Duration::ZERO; 2];
    for (i, (name, lat)) in [
        ("idle", &mut idle),
        ("cleaner + retention running", &mut busy),
    ]
    .into_iter()
    .enumerate()
    {
        let (p50, _) = sizes::quantile(lat, 0.5);
        let (p99, _) = sizes::quantile(lat, 0.99);
        let (q, max) = sizes::quantile(lat, 0.999);
        let (p9999, _) = sizes::quantile(lat, 0.9999);
        let slow = lat
            .iter()
            .filter(|d| **d > Duration::from_millis(1))
            .count();
        p999[i] = q;
        println!("| {name} | {p50:.2?} | {p99:.2?} | {q:.2?} | {p9999:.2?} | {max:.2?} | {slow} |");
    }
    println!(
        "p99.9 busy / idle: {:.2}x",
        p999[1].as_secs_f64() / p999[0].as_secs_f64().max(1e-9)
    );
}

/// Group commit and pipelined durability, with the machine's fsync latency beside them.
fn durable_section(base: &Path, value: &[u8]) {
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let fsync = durable::fsync_latency(dir.path(), 200);
    println!(
        "fdatasync of a 4 KiB write, median of 200: {:.3} ms",
        fsync.as_secs_f64() * 1e3
    );
    for threads in [1usize, 16] {
        let mut rates = Vec::new();
        let mut per_fsync = Vec::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir_in(base).expect("temp dir");
            let per_thread = if threads == 1 { 300 } else { 600 };
            let (r, p) = durable::always(dir.path(), threads, per_thread, value);
            rates.push(r);
            per_fsync.push(p);
        }
        println!(
            "| FlushPolicy::Always, {threads} threads, 100 B | {:.0} records/s | {:.1} records per fsync |",
            median(&mut rates),
            median(&mut per_fsync)
        );
    }
    for window in [100u64, 1_000, 10_000] {
        let mut rates = Vec::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir_in(base).expect("temp dir");
            rates.push(durable::pipelined(dir.path(), 1_000_000, window, value));
        }
        println!(
            "| one thread, append_slice 100 B + wait_durable(end of the window before) every {window} | {:.2} M durable records/s |",
            median(&mut rates) / 1e6
        );
    }
}

/// Larger values, batches and two writers against commitlog, each beside the page
/// cache's write bandwidth measured in the same run.
fn sizes_section(base: &Path, runs: usize) {
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let mut bw: Vec<f64> = (0..runs)
        .map(|_| sizes::page_cache_bandwidth(dir.path(), 512 << 20))
        .collect();
    let bandwidth = median(&mut bw);
    println!(
        "page-cache write bandwidth (write(2) of 1 MiB chunks, 512 MiB, no fsync), median of {runs}: {:.0} MB/s",
        bandwidth / 1e6
    );
    let (mut aligned, mut shaped) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        aligned.push(limits::preallocated_bandwidth(
            dir.path(),
            512 << 20,
            64 << 10,
        ));
        let len = (64 << 10) + limits::BATCH_OVERHEAD_64K;
        shaped.push(limits::preallocated_bandwidth(dir.path(), 512 << 20, len));
    }
    let (aligned, bandwidth_64k) = (median(&mut aligned), median(&mut shaped));
    println!(
        "pwrite(2) into a file allocated ahead in 8 MiB steps (a segment's writes, nothing else), medians of {runs}: 64 KiB on 64 KiB boundaries {:.0} MB/s ({:.0}% of the above); 64 KiB + {} B, as 64 KiB appends write, {:.0} MB/s ({:.0}%)",
        aligned / 1e6,
        100.0 * aligned / bandwidth,
        limits::BATCH_OVERHEAD_64K,
        bandwidth_64k / 1e6,
        100.0 * bandwidth_64k / bandwidth
    );
    if !wanted("sizes") {
        return;
    }
    println!();
    println!("| workload | logqueue | commitlog 0.2 | ratio | logqueue MB/s (share of bandwidth) | logqueue p99.9 / max latency | commitlog p99.9 / max |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    type Work = fn(&Path, u64, &[u8]) -> sizes::Run;
    // Prints the row; gives logqueue's bytes per second.
    let one = |name: &str, size: usize, n: u64, lq: Work, cl: Work| {
        let value = vec![0x6Du8; size];
        let (mut lr, mut cr) = (Vec::new(), Vec::new());
        let (mut ll, mut cll) = (Vec::new(), Vec::new());
        for run in 0..runs {
            let (a, b) = (
                tempfile::tempdir_in(base).unwrap(),
                tempfile::tempdir_in(base).unwrap(),
            );
            let (l, c) = if run % 2 == 0 {
                let l = lq(a.path(), n, &value);
                (l, cl(b.path(), n, &value))
            } else {
                let c = cl(b.path(), n, &value);
                (lq(a.path(), n, &value), c)
            };
            lr.push(l.rate);
            cr.push(c.rate);
            ll.extend(l.latencies);
            cll.extend(c.latencies);
        }
        let (l, c) = (median(&mut lr), median(&mut cr));
        let (lp, lmax) = sizes::quantile(&mut ll, 0.999);
        let (cp, cmax) = sizes::quantile(&mut cll, 0.999);
        let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
        let mbps = l * size as f64 / 1e6;
        println!(
            "| {name} | {:.3} M/s | {:.3} M/s | {:.2}x | {mbps:.0} ({:.0}%) | {} / {} | {} / {} |",
            l / 1e6,
            c / 1e6,
            l / c,
            100.0 * mbps * 1e6 / bandwidth,
            ms(lp),
            ms(lmax),
            ms(cp),
            ms(cmax),
        );
        mbps * 1e6
    };
    let rate_64k = one(
        "append 64 KiB, one per call",
        64 << 10,
        4096,
        sizes::lq_one_per_call,
        sizes::cl_one_per_call,
    );
    one(
        "append 1 KiB, one per call",
        1 << 10,
        262_144,
        sizes::lq_one_per_call,
        sizes::cl_one_per_call,
    );
    one(
        "batch of 100 x 100 B (`append_batch_ref` vs `append(&mut MessageBuf)`); latency per batch",
        100,
        10_000,
        |d, n, v| sizes::lq_batches(d, n, 100, v),
        |d, n, v| sizes::cl_batches(d, n, 100, v),
    );
    one(
        "batch of 100 x 1 KiB; latency per batch",
        1 << 10,
        2_621,
        |d, n, v| sizes::lq_batches(d, n, 100, v),
        |d, n, v| sizes::cl_batches(d, n, 100, v),
    );
    println!();
    println!(
        "64 KiB appends: {:.0} MB/s, {:.0}% of the 1 MiB write(2) bandwidth and {:.0}% of the batch-shaped pwrite(2) into a preallocated file",
        rate_64k / 1e6,
        100.0 * rate_64k / bandwidth,
        100.0 * rate_64k / bandwidth_64k
    );
    threads_table(base, runs);
}

/// 100 B appends from one and two threads into one log, against commitlog behind a
/// mutex, beside two threads each appending to a log of its own (the machine's
/// ceiling for two appenders: see `limits.rs`). Runs alternate the four.
fn threads_table(base: &Path, runs: usize) {
    let value = vec![0x6Du8; 100];
    let total = 4_000_000u64;
    let (mut one, mut shared, mut separate) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cl_one, mut cl_two) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        one.push(limits::appenders(base, 1, total, false));
        shared.push(limits::appenders(base, 2, total / 2, false));
        separate.push(limits::appenders(base, 2, total / 2, true));
        for (threads, out) in [(1usize, &mut cl_one), (2, &mut cl_two)] {
            let dir = tempfile::tempdir_in(base).unwrap();
            out.push(sizes::cl_threads(
                dir.path(),
                threads,
                total / threads as u64,
                &value,
            ));
        }
    }
    let mid = |v: &[limits::Threads]| {
        let mut rates: Vec<f64> = v.iter().map(|t| t.rate).collect();
        let mut cpu: Vec<f64> = v.iter().map(|t| t.cpu_ns_per_record).collect();
        (median(&mut rates), median(&mut cpu))
    };
    let (one, shared, separate) = (mid(&one), mid(&shared), mid(&separate));
    let (cl_one, cl_two) = (median(&mut cl_one), median(&mut cl_two));
    println!();
    println!("| 100 B appends, one per call, 4,000,000 in all, medians of {runs} | logqueue | appenders' CPU per record | vs 1 thread | commitlog 0.2 (behind a Mutex) | vs 1 thread |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| 1 thread | {:.2} M/s | {:.0} ns | 1.00x | {:.2} M/s | 1.00x |",
        one.0 / 1e6,
        one.1,
        cl_one / 1e6
    );
    println!(
        "| 2 threads, one log | {:.2} M/s | {:.0} ns | {:.2}x | {:.2} M/s | {:.2}x |",
        shared.0 / 1e6,
        shared.1,
        shared.0 / one.0,
        cl_two / 1e6,
        cl_two / cl_one
    );
    println!(
        "| 2 threads, a log each (the machine's ceiling for two appenders) | {:.2} M/s | {:.0} ns | {:.2}x | | |",
        separate.0 / 1e6,
        separate.1,
        separate.0 / one.0
    );
    println!();
}
