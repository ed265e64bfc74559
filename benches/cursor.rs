//! Criterion benchmarks of durable cursors: one `Cursor::commit` (a `pwrite` into the
//! slot that is not the fsynced one), and a commit followed by `Log::flush` (which
//! fsyncs the cursor file: the cost of making one commit survive power loss).
//!
//! ```text
//! cargo bench --bench cursor
//! ```
//!
//! Logs live in temporary directories (`$LOGQUEUE_BENCH_DIR`, default the system temp
//! dir).

use std::path::PathBuf;

use criterion::Criterion;
use logqueue::{CursorConfig, FlushPolicy, Log, LogConfig, Record};

fn main() {
    let base =
        std::env::var_os("LOGQUEUE_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = tempfile::tempdir_in(base).expect("temporary directory");
    let config = LogConfig {
        flush: FlushPolicy::Manual,
        background: false,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config).expect("open");
    let n = 1_000_000u64;
    for chunk in 0..n / 1000 {
        let _ = chunk;
        log.append_batch((0..1000).map(|_| Record::new(vec![1u8; 16])).collect())
            .expect("append");
    }
    log.flush().expect("flush");
    let cursor = log
        .cursor("bench", CursorConfig::default())
        .expect("cursor");
    let mut c = Criterion::default().configure_from_args();
    let mut next = 0u64;
    c.bench_function("cursor_commit", |b| {
        b.iter(|| {
            next = next % n + 1;
            cursor.commit(next).expect("commit");
        })
    });
    c.bench_function("cursor_commit_and_flush", |b| {
        b.iter(|| {
            next = next % n + 1;
            cursor.commit(next).expect("commit");
            log.flush().expect("flush");
        })
    });
    c.final_summary();
}
