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
//! `measure_*` functions are counted with `--toggle-collect`.

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
    let bytes = match mode.as_str() {
        "views" => measure_views(&log),
        "owned" => measure_owned(&log),
        "random" => measure_random(&log),
        other => panic!("unknown mode {other}"),
    };
    println!("{mode} batch={batch}: {bytes} bytes");
    log.close().expect("close");
}
