//! `FlushPolicy::Always` on the real file system: with many concurrent appenders every
//! append returns only once its record is durable, offsets are dense and unique, and
//! appenders share fsyncs (group commit). `FlushPolicy::EveryRecords(n)` flushes every
//! n records.

mod common;

use std::sync::{Arc, Barrier};

use common::small_config;
use logqueue::{FlushPolicy, Log, LogConfig, Record};

#[test]
fn always_makes_every_append_durable_and_shares_fsyncs() {
    const THREADS: usize = 12;
    const PER_THREAD: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush: FlushPolicy::Always,
        ..small_config(16 << 10)
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = log.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let mut mine = Vec::with_capacity(PER_THREAD);
                for i in 0..PER_THREAD {
                    let value = format!("t{t}-i{i}-{}", "v".repeat(100));
                    let o = log.append(Record::new(value.clone())).unwrap();
                    let durable = log.durable_offset();
                    assert!(
                        durable > o,
                        "append of offset {o} returned before it was durable ({durable})"
                    );
                    mine.push((o, value));
                }
                mine
            })
        })
        .collect();
    let mut all: Vec<(u64, String)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort();
    let n = (THREADS * PER_THREAD) as u64;
    let offsets: Vec<u64> = all.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        offsets,
        (0..n).collect::<Vec<_>>(),
        "offsets dense and unique"
    );
    for (o, value) in &all {
        let r = log.read(*o).unwrap().unwrap();
        assert_eq!(r.value.as_deref(), Some(value.as_bytes()), "offset {o}");
    }
    assert_eq!(log.end_offset(), n);
    assert_eq!(log.durable_offset(), n);
    let stats = log.stats();
    assert!(stats.flushes >= 1, "no flush round ran");
    assert!(
        stats.flushes < n,
        "{} flush rounds for {n} appends: concurrent appenders did not share fsyncs",
        stats.flushes
    );
    log.close().unwrap();
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.end_offset(), n);
}

#[test]
fn every_records_flushes_every_n_records() {
    const N: u64 = 5;
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush: FlushPolicy::EveryRecords(N),
        ..small_config(4096)
    };
    let log = Log::open(dir.path(), config).unwrap();
    for i in 0..53u64 {
        assert_eq!(log.append(Record::new(format!("r{i}"))).unwrap(), i);
        let appended = i + 1;
        let want = appended / N * N;
        assert_eq!(
            log.durable_offset(),
            want,
            "after {appended} appends, durable offset"
        );
        assert_eq!(
            log.stats().flushes,
            appended / N,
            "after {appended} appends, flush rounds"
        );
    }
    // A batch counts its records: 3 pending + 4 passes 5, so it flushes.
    let r = log
        .append_batch((0..4).map(|i| Record::new(format!("b{i}"))).collect())
        .unwrap();
    assert_eq!(r, 53..57);
    assert_eq!(
        log.durable_offset(),
        57,
        "a batch passing n records flushes"
    );
}
