//! `close` racing appends (issue 9, defect 8). Appenders that passed the closed check
//! before `close` took the writer lock used to write after `close` had sealed the
//! segment and written the clean-shutdown marker: the reopened log then read the
//! zero-filled space after them as corruption. Now, once `close` returns, every append
//! returns `Closed`, every append that returned `Ok` is in the closed files, the
//! closed log verifies clean, and no flush under way rewrites the recovery point.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use logqueue::fs::FileSystem;
use logqueue::sim::SimFs;
use logqueue::{Error, FlushPolicy, Log, LogConfig, Offset, Record};

const APPENDERS: u64 = 4;

/// One round: `APPENDERS` threads append until they see `Closed` while the main
/// thread closes the log once some appends went through, and calls `after_close` at
/// once. Returns what was `Ok`'d.
fn race_close(log: Log, seed: u64, after_close: impl FnOnce()) -> BTreeMap<Offset, Vec<u8>> {
    let started = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(APPENDERS as usize + 1));
    let threads: Vec<_> = (0..APPENDERS)
        .map(|t| {
            let log = log.clone();
            let started = Arc::clone(&started);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                let mut ok = Vec::new();
                for i in 0u64.. {
                    let value = format!("s{seed}-t{t}-{i}-{}", "v".repeat((i % 50) as usize));
                    match log.append(Record::new(value.clone())) {
                        Ok(o) => ok.push((o, value.into_bytes())),
                        Err(Error::Closed) => break,
                        Err(e) => panic!("seed {seed}: append failed: {e}"),
                    }
                    started.fetch_add(1, Ordering::Relaxed);
                }
                // Once closed, closed for good.
                assert!(matches!(
                    log.append(Record::new("late")),
                    Err(Error::Closed)
                ));
                ok
            })
        })
        .collect();
    barrier.wait();
    // Let a few appends through (varying with the seed), then close under them.
    let wait_for = 1 + seed % 40;
    while started.load(Ordering::Relaxed) < wait_for {
        thread::yield_now();
    }
    log.close().unwrap();
    after_close();
    let mut ok = BTreeMap::new();
    for t in threads {
        for (o, v) in t.join().unwrap() {
            assert!(ok.insert(o, v).is_none(), "seed {seed}: offset {o} twice");
        }
    }
    ok
}

/// The reopened log holds exactly the `Ok`'d records, and verifies clean.
fn check_reopened(log: &Log, ok: &BTreeMap<Offset, Vec<u8>>, ctx: &str) {
    let values: Vec<Vec<u8>> = ok.values().cloned().collect();
    assert!(
        ok.keys().copied().eq(0..ok.len() as u64),
        "{ctx}: Ok'd offsets are not dense"
    );
    common::check_log_matches(log, 0, &values, ctx);
}

fn config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        flush,
        max_batch_bytes: 1024,
        ..common::small_config(4096)
    }
}

fn policies() -> [FlushPolicy; 3] {
    [
        FlushPolicy::Manual,
        FlushPolicy::Always,
        FlushPolicy::EveryRecords(7),
    ]
}

#[test]
fn close_racing_appends_on_the_os_file_system() {
    for seed in common::seeds(30) {
        let flush = policies()[(seed % 3) as usize].clone();
        let ctx = format!("seed {seed} ({flush:?}); replay with LOGQUEUE_SEED={seed}");
        common::with_context(&ctx, || {
            let dir = tempfile::tempdir().unwrap();
            let log = Log::open(dir.path(), config(flush.clone())).unwrap();
            let ok = race_close(log, seed, || {});
            let log = Log::open(dir.path(), config(flush)).unwrap();
            check_reopened(&log, &ok, &ctx);
            log.close().unwrap();
        });
    }
}

const DIR: &str = "/db/log";

/// Every file of the log directory with its content.
fn files(fs: &SimFs) -> BTreeMap<String, Vec<u8>> {
    fs.list(Path::new(DIR))
        .unwrap()
        .into_iter()
        .map(|name| {
            let bytes = fs.read_file(Path::new(DIR).join(&name)).unwrap();
            (name, bytes)
        })
        .collect()
}

#[test]
fn close_racing_appends_on_simfs() {
    for seed in common::seeds(60) {
        let flush = policies()[(seed % 3) as usize].clone();
        let ctx = format!("seed {seed} ({flush:?}); replay with LOGQUEUE_SEED={seed}");
        common::with_context(&ctx, || {
            let fs = SimFs::new(seed);
            fs.write_file("/db/.keep", b"").unwrap();
            let config = LogConfig {
                fs: Arc::new(fs.clone()),
                ..config(flush)
            };
            let log = Log::open(DIR, config.clone()).unwrap();
            let mut at_close = BTreeMap::new();
            let ok = race_close(log, seed, || at_close = files(&fs));
            // No append and no flush under way wrote anything after close returned:
            // not a record, not the recovery point after the clean-shutdown marker.
            let after = files(&fs);
            let changed: Vec<&String> = after
                .keys()
                .chain(at_close.keys())
                .filter(|name| after.get(*name) != at_close.get(*name))
                .collect();
            assert!(
                changed.is_empty(),
                "{ctx}: files changed after close: {changed:?}"
            );
            assert!(at_close.contains_key("clean-shutdown"));
            let log = Log::open(DIR, config).unwrap();
            check_reopened(&log, &ok, &ctx);
            log.close().unwrap();
        });
    }
}
