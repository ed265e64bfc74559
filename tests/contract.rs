//! The public API contract of DESIGN.md §2, name by name and signature by signature:
//! outside acceptance tests compile against exactly these, so any drift fails here.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use logqueue::fs::{FileSystem, OsFs};
use logqueue::sim::SimFs;
use logqueue::{
    CleanupPolicy, Clock, CompactionConfig, CompactionReport, CorruptRange, Delivery, Error,
    FlushPolicy, Header, Log, LogConfig, LogReader, LogStats, ManualClock, Offset, Ordering, Queue,
    QueueConfig, QueueStats, Receipt, Record, RetentionReport, SegmentInfo, StartPosition,
    StoredRecord, SystemClock, VerifyReport,
};

fn assert_send_sync<T: Send + Sync>() {}
fn assert_clone<T: Clone>() {}

#[test]
fn types_and_traits() {
    assert_send_sync::<Log>();
    assert_send_sync::<Queue>();
    assert_clone::<Log>();
    assert_clone::<Queue>();
    assert_clone::<ManualClock>();
    fn is_clock<C: Clock + std::fmt::Debug + Send + Sync>() {}
    is_clock::<SystemClock>();
    is_clock::<ManualClock>();
    fn is_error<E: std::error::Error + std::fmt::Display>() {}
    is_error::<Error>();
    let _: fn(&Path, LogConfig) -> logqueue::Result<Log> = |p, c| Log::open(p, c);
    let _: Arc<dyn FileSystem> = Arc::new(OsFs);
    let _: Arc<dyn FileSystem> = Arc::new(SimFs::new(1));
    let _: Offset = 0u64;
    fn receipt_like<T: Copy + Clone + std::fmt::Debug + PartialEq + Eq + std::hash::Hash>() {}
    receipt_like::<Receipt>();
    fn record_like<T: Clone + std::fmt::Debug + PartialEq + Eq + Default>() {}
    record_like::<Record>();
    fn stored_like<T: Clone + std::fmt::Debug + PartialEq + Eq>() {}
    stored_like::<StoredRecord>();
    stored_like::<Header>();
    fn delivery_like<T: Clone + std::fmt::Debug>() {}
    delivery_like::<Delivery>();
}

#[test]
fn records_clock_and_config_shapes() {
    let clock = ManualClock::new(5);
    clock.advance(Duration::from_millis(10));
    clock.set(20);
    assert_eq!(clock.now_ms(), 20);
    let r: Record = Record::new("v").with_header("h", "x").with_timestamp(7);
    let Record {
        key,
        value,
        headers,
        timestamp,
    } = r.clone();
    assert_eq!(
        (key, value, timestamp),
        (None, Some(b"v".to_vec()), Some(7))
    );
    assert_eq!(
        headers,
        vec![Header {
            key: "h".into(),
            value: b"x".to_vec()
        }]
    );
    assert_eq!(Record::keyed("k", "v").key, Some(b"k".to_vec()));
    assert_eq!(Record::tombstone("k").value, None);
    assert_eq!(Record::default(), Record::default());
    let stored = StoredRecord {
        offset: 1,
        timestamp: 2,
        key: None,
        value: None,
        headers: vec![],
    };
    assert_eq!(stored.header("none"), None);

    let c = LogConfig::default();
    let LogConfig {
        segment_bytes,
        segment_ms,
        index_interval_bytes,
        segment_index_bytes,
        max_batch_bytes,
        flush,
        retention_ms,
        retention_bytes,
        cleanup,
        compaction,
        file_delete_delay,
        background,
        clock: _,
        fs: _,
        ..
    } = c;
    assert_eq!(segment_bytes, 1 << 30);
    assert_eq!(segment_ms, Some(Duration::from_secs(7 * 24 * 3600)));
    assert_eq!(index_interval_bytes, 4096);
    assert_eq!(segment_index_bytes, 10 << 20);
    assert_eq!(max_batch_bytes, 1 << 20);
    assert_eq!(flush, FlushPolicy::Interval(Duration::from_secs(1)));
    assert_eq!(retention_ms, Some(Duration::from_secs(7 * 24 * 3600)));
    assert_eq!(retention_bytes, None);
    assert_eq!(cleanup, CleanupPolicy::Delete);
    assert_eq!(file_delete_delay, Duration::from_secs(60));
    assert!(background);
    let CompactionConfig {
        min_cleanable_dirty_ratio,
        min_lag,
        max_lag,
        delete_retention,
        offset_map_bytes,
        max_io_bytes_per_sec,
        ..
    } = compaction;
    assert_eq!(min_cleanable_dirty_ratio, 0.5);
    assert_eq!((min_lag, max_lag), (Duration::ZERO, None));
    assert_eq!(delete_retention, Duration::from_secs(24 * 3600));
    assert_eq!((offset_map_bytes, max_io_bytes_per_sec), (64 << 20, None));
    for p in [
        FlushPolicy::Always,
        FlushPolicy::EveryRecords(1),
        FlushPolicy::Interval(Duration::from_secs(1)),
        FlushPolicy::Manual,
    ] {
        let _ = p;
    }
    let _ = [
        CleanupPolicy::Delete,
        CleanupPolicy::Compact,
        CleanupPolicy::CompactAndDelete,
    ];

    let q = QueueConfig::default();
    let QueueConfig {
        visibility_timeout,
        max_visibility,
        max_deliveries,
        backoff,
        max_in_flight,
        ordering,
        start,
        protect_unacked,
        ..
    } = q;
    assert_eq!(visibility_timeout, Duration::from_secs(30));
    assert_eq!(max_visibility, Duration::from_secs(12 * 3600));
    assert_eq!(max_deliveries, Some(5));
    assert!(backoff.is_empty());
    assert_eq!(max_in_flight, 10_000);
    assert!(matches!(ordering, Ordering::Unordered));
    assert!(matches!(start, StartPosition::Earliest));
    assert!(protect_unacked);
    let _ = [Ordering::Unordered, Ordering::PerKey];
    let _ = [StartPosition::Earliest, StartPosition::Latest];
}

#[test]
fn log_and_queue_methods() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let o: Offset = log.append(Record::new("a")).unwrap();
    let r: Range<Offset> = log.append_batch(vec![Record::new("b")]).unwrap();
    assert_eq!((o, r), (0, 1..2));
    log.flush().unwrap();
    let _: Option<StoredRecord> = log.read(0).unwrap();
    let mut reader: LogReader = log.reader(0).unwrap();
    let _: Option<logqueue::Result<StoredRecord>> = reader.next();
    let _: Option<StoredRecord> = reader.next_blocking(Duration::from_millis(1)).unwrap();
    let _: Offset = reader.position();
    reader.seek(0).unwrap();
    let _: Option<Offset> = log.offset_for_timestamp(0).unwrap();
    let (_, _, _): (Offset, Offset, Offset) =
        (log.start_offset(), log.end_offset(), log.durable_offset());
    log.delete_records_before(0).unwrap();
    let RetentionReport {
        segments_deleted,
        bytes_deleted,
        start_offset,
    } = log.enforce_retention().unwrap();
    let _ = (segments_deleted, bytes_deleted, start_offset);
    let CompactionReport {
        segments_cleaned,
        records_removed,
        tombstones_removed,
        bytes_before,
        bytes_after,
    } = log.compact().unwrap();
    let _ = (
        segments_cleaned,
        records_removed,
        tombstones_removed,
        bytes_before,
        bytes_after,
    );
    let VerifyReport {
        batches,
        records,
        corrupt,
    } = log.verify().unwrap();
    let _: (u64, u64, Vec<CorruptRange>) = (batches, records, corrupt);
    let infos: Vec<SegmentInfo> = log.segments();
    let SegmentInfo {
        base_offset,
        next_offset,
        size_bytes,
        max_timestamp,
        active,
    } = infos[0].clone();
    let _ = (base_offset, next_offset, size_bytes, max_timestamp, active);
    let _: LogStats = log.stats();

    let queue = Queue::open(&log, "contract", QueueConfig::default()).unwrap();
    let _: Offset = queue.send(Record::new("q")).unwrap();
    let _: Offset = queue
        .send_delayed(Record::new("later"), Duration::from_secs(60))
        .unwrap();
    let deliveries: Vec<Delivery> = queue.receive(10, Duration::from_millis(10)).unwrap();
    let Delivery {
        record,
        receipt,
        attempt,
        deadline_ms,
    } = deliveries[0].clone();
    let _: (StoredRecord, u32, i64) = (record, attempt, deadline_ms);
    let Receipt { offset, attempt } = receipt;
    let _: (Offset, u32) = (offset, attempt);
    queue.extend(&receipt, Duration::from_secs(5)).unwrap();
    queue.nack(&receipt, Duration::ZERO).unwrap();
    assert!(matches!(
        queue.ack(&receipt),
        Err(Error::StaleReceipt { .. })
    ));
    let d = queue.receive(1, Duration::from_millis(10)).unwrap();
    if let Some(d) = d.first() {
        queue.dead_letter(&d.receipt, "contract").unwrap();
    }
    let _: Log = queue.dead_letters();
    let _: usize = queue.redrive(10).unwrap();
    let QueueStats {
        ack_floor,
        in_flight,
        backlog,
        delayed,
        acked_total,
        redelivered_total,
        dead_lettered_total,
        corrupt_skipped,
        ..
    } = queue.stats();
    let _ = (
        ack_floor,
        in_flight,
        backlog,
        delayed,
        acked_total,
        redelivered_total,
        dead_lettered_total,
        corrupt_skipped,
    );
    queue.flush().unwrap();
    log.close().unwrap();
}

#[test]
fn error_variants() {
    let variants = [
        Error::MissingKey,
        Error::InvalidConfig("x".into()),
        Error::Closed,
    ];
    for e in &variants {
        match e {
            Error::Io { .. }
            | Error::Corrupt { .. }
            | Error::Locked { .. }
            | Error::OffsetOutOfRange { .. }
            | Error::RecordTooLarge { .. }
            | Error::MissingKey
            | Error::InvalidConfig(_)
            | Error::StaleReceipt { .. }
            | Error::Closed => {}
            _ => {}
        }
        assert!(!e.to_string().is_empty());
    }
}
