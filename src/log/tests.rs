use super::*;
use crate::config::FlushPolicy;
use crate::sim::SimFs;
use crate::Record;

fn sim_config(fs: &SimFs) -> LogConfig {
    LogConfig {
        fs: Arc::new(fs.clone()),
        background: false,
        flush: FlushPolicy::Manual,
        segment_bytes: 64 << 10,
        max_batch_bytes: 16 << 10,
        ..LogConfig::default()
    }
}

/// Found by fuzz/open_dir: a log-start-offset checkpoint at the top of the offset
/// space made the next append overflow (a panic in debug builds, a wrap to offset
/// 0 in release).
#[test]
fn append_at_the_end_of_the_offset_space_is_an_error() {
    let fs = SimFs::new(0);
    fs.write_file(
        "/log/log-start-offset",
        &checkpoint::encode_offset(u64::MAX - 1),
    )
    .unwrap();
    let log = Log::open("/log", sim_config(&fs)).unwrap();
    assert_eq!(log.end_offset(), u64::MAX - 1);
    assert_eq!(log.append(Record::new("last")).unwrap(), u64::MAX - 1);
    assert_eq!(log.end_offset(), u64::MAX);
    assert!(matches!(
        log.append(Record::new("no room")),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        log.append_batch(vec![Record::new("a"), Record::new("b")]),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        log.read(u64::MAX - 1).unwrap().unwrap().value.as_deref(),
        Some(&b"last"[..])
    );
    log.close().unwrap();
}

/// Sealed segments holding an open file or a mapping.
fn sealed_with_handles(log: &Log) -> usize {
    let segments = log.inner.snapshot();
    segments[..segments.len() - 1]
        .iter()
        .filter(|s| s.holds_handles())
        .count()
}

fn many_segments(fs: &SimFs, max_open: usize) -> LogConfig {
    LogConfig {
        segment_bytes: 512,
        max_open_segments: max_open,
        ..sim_config(fs)
    }
}

#[test]
fn open_does_not_open_or_map_sealed_segments() {
    let fs = SimFs::new(0);
    let log = Log::open("/log", many_segments(&fs, 8)).unwrap();
    for i in 0..2000u32 {
        log.append(Record::new(i.to_le_bytes().repeat(20))).unwrap();
    }
    let sealed = log.segments().len() - 1;
    assert!(sealed > 100, "{sealed}");
    log.close().unwrap();
    // After a clean close, and after a crash (recovery scans from the recovery
    // point: the tail only).
    for crash in [false, true] {
        let log = Log::open("/log", many_segments(&fs, 8)).unwrap();
        assert_eq!(sealed_with_handles(&log), 0, "crash {crash}");
        // Listing the segments loads every segment's metadata, keeping at most
        // the limit open (earlier versions kept every one mapped from then on).
        assert!(log.segments().len() > sealed);
        log.stats();
        assert!(sealed_with_handles(&log) <= 8, "crash {crash}");
        if crash {
            log.append(Record::new("tail")).unwrap();
            fs.crash();
        } else {
            log.close().unwrap();
        }
    }
}

#[test]
fn rolls_with_the_background_roll_syncer_release_sealed_segments() {
    let fs = SimFs::new(0);
    let config = LogConfig {
        background: true,
        ..many_segments(&fs, 4)
    };
    let log = Log::open("/log", config).unwrap();
    for i in 0..3000u32 {
        log.append(Record::new(i.to_le_bytes().repeat(20))).unwrap();
    }
    log.flush().unwrap();
    assert!(
        sealed_with_handles(&log) <= 4,
        "{}",
        sealed_with_handles(&log)
    );
}

#[test]
fn reads_and_rolls_keep_at_most_max_open_segments_open() {
    let fs = SimFs::new(0);
    let log = Log::open("/log", many_segments(&fs, 4)).unwrap();
    for i in 0..3000u32 {
        log.append(Record::new(i.to_le_bytes().repeat(20))).unwrap();
        // Sealed segments waiting for their fsync are pinned on top of the limit.
        assert!(sealed_with_handles(&log) <= 4 + 1, "append {i}");
    }
    for (i, r) in log.reader(0).unwrap().enumerate() {
        let value = r.unwrap().value.unwrap();
        assert_eq!(value, (i as u32).to_le_bytes().repeat(20));
        assert!(sealed_with_handles(&log) <= 4, "read {i}");
    }
    for o in (0..3000).rev().step_by(7) {
        assert!(log.read(o).unwrap().is_some());
    }
    assert!(sealed_with_handles(&log) <= 4);
    assert!(log.inner.segment_cache.released() > 100);
    assert!(log.verify().unwrap().corrupt.is_empty());
}
