//! A retention pass over a log of 10,000 segments touches metadata, not data: it
//! costs milliseconds.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use logqueue::fs::FileSystem;
use logqueue::sim::SimFs;
use logqueue::{Log, LogConfig, ManualClock, Record};

fn ten_thousand_segments(dir: &Path, fs: Arc<dyn FileSystem>) {
    let clock = ManualClock::new(0);
    let config = LogConfig {
        segment_bytes: 256,
        max_batch_bytes: 256,
        retention_ms: Some(Duration::from_secs(3600)),
        file_delete_delay: Duration::from_secs(3600),
        clock: Arc::new(clock.clone()),
        fs,
        ..common::small_config(256)
    };
    let log = Log::open(dir, config.clone()).unwrap();
    let value = vec![7u8; 150];
    let build = Instant::now();
    for i in 0..10_000u64 {
        // One ~200-byte batch per 256-byte segment: every append after the first rolls.
        log.append(Record::new(value.clone())).unwrap();
        if i == 8_999 {
            clock.advance(Duration::from_secs(7200));
        }
    }
    let build = build.elapsed();
    assert_eq!(log.segments().len(), 10_000);

    // A pass held back by a consumer floor decides at the first segment.
    log.add_retention_floor(|| Some(0));
    let t = Instant::now();
    let report = log.enforce_retention().unwrap();
    let held_pass = t.elapsed();
    assert_eq!(report.segments_deleted, 0);
    assert_eq!(log.stats().retention_held_segments, 10_000);

    // Reopen (cold: no segment loaded), then delete the 9,000 expired segments.
    log.close().unwrap();
    let t = Instant::now();
    let log = Log::open(dir, config).unwrap();
    let reopen = t.elapsed();
    let t = Instant::now();
    let report = log.enforce_retention().unwrap();
    let delete_pass = t.elapsed();
    assert_eq!(report.segments_deleted, 9_000);
    assert_eq!(log.start_offset(), 9_000);
    assert_eq!(log.segments().len(), 1_000);
    // A second pass has nothing to do.
    let t = Instant::now();
    assert_eq!(log.enforce_retention().unwrap().segments_deleted, 0);
    let idle_pass = t.elapsed();
    println!(
        "10,000 segments: built {build:?}; held pass {held_pass:?}; reopen {reopen:?}; \
         cold pass deleting 9,000 segments (27,000 renames, 1 dir fsync) {delete_pass:?}; \
         idle pass {idle_pass:?}"
    );
    assert!(held_pass < Duration::from_millis(50), "{held_pass:?}");
    assert!(idle_pass < Duration::from_millis(50), "{idle_pass:?}");
}

/// Engine cost alone, on the in-memory file system.
#[test]
fn retention_over_ten_thousand_segments_sim() {
    let fs = SimFs::new(1);
    fs.write_file("/db/.keep", b"").unwrap();
    ten_thousand_segments(Path::new("/db/log"), Arc::new(fs));
}

/// The same on the real file system (slow to build: 30,000 file creations). Run with
/// `cargo test --release --test retention_scale -- --ignored --nocapture`.
#[test]
#[ignore = "builds 30,000 files on disk; run by hand for the README figures"]
fn retention_over_ten_thousand_segments_os() {
    let dir = tempfile::tempdir().unwrap();
    ten_thousand_segments(dir.path(), Arc::new(logqueue::fs::OsFs));
}
