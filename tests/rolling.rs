//! When segments roll: on size, on age (`segment_ms`), on a full index; a batch larger
//! than `segment_bytes` gets a segment of its own.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{small_config, value_for};
use logqueue::{Log, LogConfig, ManualClock, Record};

#[test]
fn rolls_on_size_and_never_splits_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        max_batch_bytes: 64 * 1024,
        ..small_config(1024)
    };
    let log = Log::open(dir.path(), config).unwrap();
    for i in 0..50 {
        log.append(Record::new(value_for(i))).unwrap();
    }
    let segs = log.segments();
    assert!(segs.len() > 3);
    for s in &segs[..segs.len() - 1] {
        assert!(s.size_bytes <= 1024, "{s:?}");
        assert!(!s.active);
    }
    assert!(segs.last().unwrap().active);
    // Offsets are contiguous across segments.
    for w in segs.windows(2) {
        assert_eq!(w[0].next_offset, w[1].base_offset);
    }
    // A batch larger than a segment gets a segment of its own.
    let big = log.append(Record::new(vec![1u8; 4000])).unwrap();
    let segs = log.segments();
    let holder = segs.iter().find(|s| s.base_offset == big).unwrap();
    assert!(holder.size_bytes > 4000);
    assert_eq!(log.read(big).unwrap().unwrap().value.unwrap().len(), 4000);
    let next = log.append(Record::new("after")).unwrap();
    assert_eq!(log.segments().last().unwrap().base_offset, next);
}

#[test]
fn rolls_on_age_of_the_first_record() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let config = LogConfig {
        segment_ms: Some(Duration::from_secs(60)),
        clock: Arc::new(clock.clone()),
        ..small_config(1 << 20)
    };
    let log = Log::open(dir.path(), config).unwrap();
    log.append(Record::new("a")).unwrap();
    clock.advance(Duration::from_secs(59));
    log.append(Record::new("b")).unwrap();
    assert_eq!(log.segments().len(), 1);
    clock.advance(Duration::from_secs(1));
    let c = log.append(Record::new("c")).unwrap();
    let segs = log.segments();
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[1].base_offset, c);
    // The age counts from the new segment's first record.
    clock.advance(Duration::from_secs(30));
    log.append(Record::new("d")).unwrap();
    assert_eq!(log.segments().len(), 2);
}

#[test]
fn rolls_when_the_index_is_full() {
    let dir = tempfile::tempdir().unwrap();
    // The clock moves on at every append, so that every record gets a time entry
    // (records of one millisecond share one): the largest files the limit allows.
    let clock = Arc::new(ManualClock::new(1_000));
    let config = LogConfig {
        index_interval_bytes: 1,
        segment_index_bytes: 64, // room for 3 time-index entries of 12 bytes and the trailer
        clock: clock.clone(),
        ..small_config(1 << 20)
    };
    let log = Log::open(dir.path(), config).unwrap();
    for i in 0..40 {
        clock.advance(Duration::from_millis(1));
        log.append(Record::new(value_for(i))).unwrap();
    }
    let segs = log.segments();
    assert!(segs.len() >= 7, "{} segments", segs.len());
    for s in &segs[..segs.len() - 1] {
        assert!(s.next_offset - s.base_offset <= 3, "{s:?}");
    }
    for i in 0..40 {
        assert_eq!(log.read(i).unwrap().unwrap().value.unwrap(), value_for(i));
    }
    drop(log);
    // Every index file on disk stays within the limit, its trailer included.
    let mut largest = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name.ends_with(".index") || name.ends_with(".timeindex") {
            let len = entry.metadata().unwrap().len();
            assert!(len <= 64, "{name}: {len} bytes");
            largest = largest.max(len);
        }
    }
    assert_eq!(largest, 3 * 12 + 20, "a full time index");
}
