//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use logqueue::sim::SimFs;
use logqueue::{FlushPolicy, LogConfig, ManualClock};

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
