//! Criterion benchmark of the compaction cleaner: throughput in bytes of input per
//! second of one full pass over a log of 100,000 keys × 10 versions (1M records, the
//! newest version of each key last), of which the pass keeps one record per key.
//!
//! ```text
//! cargo bench --bench cleaner
//! ```
//!
//! The dirty log is built once and copied into a fresh directory before each timed
//! pass (the copy is not timed). `$LOGQUEUE_BENCH_DIR` picks the file system.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use logqueue::{CleanupPolicy, FlushPolicy, Log, LogConfig, Record};
use tempfile::TempDir;

const KEYS: u32 = 100_000;
const VERSIONS: u32 = 10;

fn bench_dir() -> TempDir {
    let base =
        std::env::var_os("LOGQUEUE_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    tempfile::tempdir_in(base).expect("temporary directory")
}

fn config() -> LogConfig {
    LogConfig {
        flush: FlushPolicy::Manual,
        background: false,
        cleanup: CleanupPolicy::Compact,
        segment_bytes: 16 << 20,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// Builds the dirty log; returns its directory and the bytes a pass reads as input.
fn build() -> (TempDir, u64) {
    let dir = bench_dir();
    let log = Log::open(dir.path(), config()).expect("open");
    let value = vec![0x42u8; 50];
    for version in 0..VERSIONS {
        let batch: Vec<Record> = (0..KEYS)
            .map(|k| {
                let mut v = value.clone();
                v[..4].copy_from_slice(&version.to_le_bytes());
                Record::keyed(format!("key-{k:08}"), v)
            })
            .collect();
        for chunk in batch.chunks(100) {
            log.append_batch(chunk.to_vec()).expect("append");
        }
    }
    // Seal the last segment so every record is cleanable: reopen with tiny segments,
    // so the next append rolls.
    log.close().expect("close");
    let tiny = LogConfig {
        segment_bytes: 1024,
        ..config()
    };
    let log = Log::open(dir.path(), tiny).expect("reopen");
    log.append(Record::keyed("roll", "r")).expect("append");
    let segments = log.segments();
    let input: u64 = segments
        .iter()
        .filter(|s| !s.active)
        .map(|s| s.size_bytes)
        .sum();
    log.close().expect("close");
    (dir, input)
}

fn copy_dir(src: &Path, dst: &Path) {
    for entry in std::fs::read_dir(src).expect("read dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if name != "LOCK" {
            std::fs::copy(entry.path(), dst.join(name)).expect("copy");
        }
    }
}

fn cleaner(c: &mut Criterion) {
    let (template, input) = build();
    let mut g = c.benchmark_group("cleaner");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Bytes(input));
    g.bench_function("100k_keys_x10_versions", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = bench_dir();
                copy_dir(template.path(), dir.path());
                let log = Log::open(dir.path(), config()).expect("open");
                let t = Instant::now();
                let report = log.compact().expect("compact");
                total += t.elapsed();
                // Segments holding only newest versions are read but not rewritten.
                assert!(report.bytes_before <= input);
                assert_eq!(report.records_removed, u64::from(KEYS * (VERSIONS - 1)));
                drop(log);
            }
            total
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .sample_size(10);
    targets = cleaner
}
criterion_main!(benches);
