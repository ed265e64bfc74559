//! Read-path profile driver for callgrind (deterministic instruction counts).
//!
//! ```text
//! cargo build --release --example read_profile
//! valgrind --tool=callgrind --toggle-collect='read_profile::measure*' \
//!     target/release/examples/read_profile views 1
//! ```
//!
//! Builds a log of `RECORDS` 100-byte records appended one per call (`1`) or in
//! batches of 100 (`100`), then reads them all once with `views` (`read_views`),
//! `owned` (the iterator) or `random` (`Log::read` at pseudo-random offsets). Only the
//! `measure_*` functions are counted with `--toggle-collect`. A third argument repeats
//! the read and prints the median rate by the thread's CPU time.

use logqueue::{FlushPolicy, Log, LogConfig, Record};

const RECORDS: u64 = 200_000;

#[inline(never)]
fn measure_views(log: &Log) -> usize {
    let mut bytes = 0;
    let n = log
        .reader(0)
        .expect("reader")
        .read_views(usize::MAX, |v| bytes += v.value.map_or(0, <[u8]>::len))
        .expect("read_views");
    assert_eq!(n as u64, RECORDS);
    bytes
}

#[inline(never)]
fn measure_owned(log: &Log) -> usize {
    let mut bytes = 0;
    let mut n = 0;
    for r in log.reader(0).expect("reader") {
        bytes += r.expect("record").value.map_or(0, |v| v.len());
        n += 1;
    }
    assert_eq!(n, RECORDS);
    bytes
}

#[inline(never)]
fn measure_random(log: &Log) -> usize {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut bytes = 0;
    for _ in 0..RECORDS / 10 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let r = log.read(x % RECORDS).expect("read").expect("record");
        bytes += r.value.map_or(0, |v| v.len());
    }
    bytes
}

/// CPU time of this thread (unaffected by other processes' load, unlike wall time).
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "views".into());
    let batch: u64 = args.next().map_or(1, |a| a.parse().expect("batch size"));
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = LogConfig {
        flush: FlushPolicy::Manual,
        background: false,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config).expect("open");
    let value = vec![0xA5u8; 100];
    for _ in 0..RECORDS / batch {
        if batch == 1 {
            log.append(Record::new(value.clone())).expect("append");
        } else {
            let records = (0..batch).map(|_| Record::new(value.clone())).collect();
            log.append_batch(records).expect("append_batch");
        }
    }
    let reps: usize = args.next().map_or(1, |a| a.parse().expect("repetitions"));
    let mut rates = Vec::new();
    let mut bytes = 0;
    for _ in 0..reps {
        let cpu = thread_cpu_seconds();
        bytes = match mode.as_str() {
            "views" => measure_views(&log),
            "owned" => measure_owned(&log),
            "random" => measure_random(&log),
            other => panic!("unknown mode {other}"),
        };
        let records = if mode == "random" {
            RECORDS / 10
        } else {
            RECORDS
        };
        rates.push(records as f64 / (thread_cpu_seconds() - cpu) / 1e6);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "{mode} batch={batch}: {bytes} bytes; median {:.2} M records/s by thread CPU time ({reps} runs)",
        rates[reps / 2]
    );
    log.close().expect("close");
}
