//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use logqueue::sim::SimFs;
use logqueue::{Error, FlushPolicy, Log, LogConfig, ManualClock, Offset, StoredRecord};

/// A config for tests: small segments, no background threads, manual flush.
pub fn small_config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 256,
        flush: FlushPolicy::Manual,
        background: false,
        segment_ms: None,
        retention_ms: None,
        file_delete_delay: Duration::ZERO,
        ..LogConfig::default()
    }
}

/// Like [`small_config`], on a SimFs with a manual clock.
pub fn sim_config(fs: &SimFs, clock: &ManualClock, segment_bytes: u64) -> LogConfig {
    LogConfig {
        fs: Arc::new(fs.clone()),
        clock: Arc::new(clock.clone()),
        ..small_config(segment_bytes)
    }
}

/// A value that says which offset it was written at.
pub fn value_for(i: u64) -> Vec<u8> {
    format!("value-{i:08}-{}", "x".repeat((i % 37) as usize)).into_bytes()
}

/// A seed from `LOGQUEUE_SEED` or the given default, printed so a failure can be replayed.
pub fn seeds(default_count: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("LOGQUEUE_SEED") {
        let seed = s.parse().expect("LOGQUEUE_SEED must be a u64");
        return vec![seed];
    }
    (0..default_count).collect()
}

/// splitmix64: a tiny seeded generator for reproducible random workloads.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (different seeds give unrelated streams).
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x2545_F491_4F6C_DD1D)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (0 when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Uniform-ish in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo)
    }
}

/// Runs `f`; if it panics, first prints `context` (say, the seed to replay) to stderr.
pub fn with_context<T>(context: &str, f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(panic) => {
            eprintln!("FAILED at {context}");
            std::panic::resume_unwind(panic)
        }
    }
}

/// Checks that `log` holds exactly `values[o]` at every offset `o` in
/// `start..values.len()`, nothing at or past the end, and that readers, `verify` and
/// the offsets agree. `ctx` goes into every assert message.
pub fn check_log_matches(log: &Log, start: Offset, values: &[Vec<u8>], ctx: &str) {
    let end = values.len() as Offset;
    assert_eq!(log.end_offset(), end, "{ctx}: end offset");
    assert_eq!(log.start_offset(), start, "{ctx}: start offset");
    for o in start..end {
        let r = log
            .read(o)
            .unwrap_or_else(|e| panic!("{ctx}: read({o}) failed: {e}"))
            .unwrap_or_else(|| panic!("{ctx}: read({o}) found nothing below the end {end}"));
        assert_eq!(r.offset, o, "{ctx}: read({o}) returned the wrong offset");
        assert!(
            r.value.as_deref() == Some(&values[o as usize][..]),
            "{ctx}: read({o}) returned {:?}, appended {:?}",
            r.value.as_deref().map(String::from_utf8_lossy),
            String::from_utf8_lossy(&values[o as usize])
        );
    }
    for o in [end, end + 1, end + 100] {
        assert!(
            log.read(o)
                .unwrap_or_else(|e| panic!("{ctx}: read({o}) failed: {e}"))
                .is_none(),
            "{ctx}: read({o}) found a record at or past the end {end}"
        );
    }
    if start > 0 {
        assert!(
            matches!(log.read(start - 1), Err(Error::OffsetOutOfRange { .. })),
            "{ctx}: read below the start offset {start} must be OffsetOutOfRange"
        );
    }
    let all: Vec<StoredRecord> = log
        .reader(start)
        .unwrap_or_else(|e| panic!("{ctx}: reader({start}) failed: {e}"))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{ctx}: reader({start}) failed: {e}"));
    let got: Vec<(Offset, Option<&[u8]>)> =
        all.iter().map(|r| (r.offset, r.value.as_deref())).collect();
    let want: Vec<(Offset, Option<&[u8]>)> = (start..end)
        .map(|o| (o, Some(&values[o as usize][..])))
        .collect();
    assert!(
        got == want,
        "{ctx}: reader({start}) returned offsets {:?}, want {start}..{end}",
        all.iter().map(|r| r.offset).collect::<Vec<_>>()
    );
    let report = log
        .verify()
        .unwrap_or_else(|e| panic!("{ctx}: verify failed: {e}"));
    assert!(
        report.corrupt.is_empty(),
        "{ctx}: verify reports corruption: {:?}",
        report.corrupt
    );
    assert!(
        report.records >= end - start,
        "{ctx}: verify saw {} records, the log holds {}",
        report.records,
        end - start
    );
    assert_eq!(
        log.stats().corrupt_ranges,
        0,
        "{ctx}: corrupt ranges in stats"
    );
}
