//! Append latency while maintenance runs, beside the same appends idle (issue 10's
//! row "append latency while the cleaner swaps / retention deletes").
//!
//! One thread appends 100 B keyed records one per call (`append_slice`,
//! `FlushPolicy::Manual`, background threads on for the preparer) into a log of
//! 8 MiB segments with `CleanupPolicy::CompactAndDelete` and `retention_bytes` of 32
//! MiB. In the busy runs a second thread loops `compact()` (the cleaner rewrites and
//! swaps segments), `enforce_retention()` (deletes segments past 32 MiB) and
//! `delete_records_before` (start-offset checkpoint), back to back. The idle runs
//! are the same appends with no second thread. Runs alternate idle / busy.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use logqueue::{CleanupPolicy, CompactionConfig, FlushPolicy, Log, LogConfig};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 8 << 20,
        flush: FlushPolicy::Manual,
        cleanup: CleanupPolicy::CompactAndDelete,
        retention_bytes: Some(32 << 20),
        retention_ms: None,
        // The explicit loop below does the maintenance, not the periodic threads.
        retention_check_interval: Duration::from_secs(3600),
        compaction: CompactionConfig {
            check_interval: Duration::from_secs(3600),
            min_cleanable_dirty_ratio: 0.0,
            ..CompactionConfig::default()
        },
        file_delete_delay: Duration::ZERO,
        ..LogConfig::default()
    }
}

pub struct Run {
    pub latencies: Vec<Duration>,
    /// Maintenance passes done during the run: (compactions, segments deleted).
    pub passes: (u64, u64),
}

/// `appends` one-per-call appends; with `busy`, maintenance in a second thread.
pub fn run(dir: &Path, appends: u64, busy: bool) -> Run {
    let log = Log::open(dir, config()).expect("open");
    let value = [0x5Au8; 100];
    let stop = Arc::new(AtomicBool::new(false));
    let compactions = Arc::new(AtomicU64::new(0));
    let deleted = Arc::new(AtomicU64::new(0));
    let maintenance = busy.then(|| {
        let (log, stop) = (log.clone(), Arc::clone(&stop));
        let (compactions, deleted) = (Arc::clone(&compactions), Arc::clone(&deleted));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if log.compact().is_ok() {
                    compactions.fetch_add(1, Ordering::Relaxed);
                }
                if let Ok(r) = log.enforce_retention() {
                    deleted.fetch_add(r.segments_deleted as u64, Ordering::Relaxed);
                }
                let _ = log.delete_records_before(log.end_offset().saturating_sub(50_000));
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    });
    let mut latencies = Vec::with_capacity(appends as usize);
    for i in 0..appends {
        let key = (i % 1000).to_le_bytes();
        let t = Instant::now();
        log.append_slice(Some(&key), &value).expect("append");
        latencies.push(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(h) = maintenance {
        h.join().expect("maintenance thread");
    }
    log.close().expect("close");
    Run {
        latencies,
        passes: (
            compactions.load(Ordering::Relaxed),
            deleted.load(Ordering::Relaxed),
        ),
    }
}
