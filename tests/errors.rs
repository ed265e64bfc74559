//! Error paths of the public API on the real file system: `RecordTooLarge`,
//! `OffsetOutOfRange` (and that `delete_records_before` survives reopen),
//! `MissingKey` on compacted logs, `InvalidConfig`, `Locked`, `Io`; `Error` is a
//! `std::error::Error` with useful text; `LogReader::next_blocking` wakes on an
//! append from another thread, times out with `Ok(None)`, and wakes on close.

mod common;

use std::time::{Duration, Instant};

use common::{small_config, value_for};
use logqueue::{CleanupPolicy, CompactionConfig, Error, FlushPolicy, Log, LogConfig, Record};

#[test]
fn record_too_large_leaves_the_log_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let config = || LogConfig {
        max_batch_bytes: 1024,
        ..small_config(1 << 20)
    };
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.append(Record::new("small")).unwrap(), 0);
    match log.append(Record::new(vec![7u8; 2000])) {
        Err(Error::RecordTooLarge { size, max }) => {
            assert_eq!(max, 1024);
            assert!(size > 2000, "size {size}");
        }
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    // Many small records that together pass the limit: the whole batch is refused.
    let many: Vec<Record> = (0..100).map(|i| Record::new(value_for(i))).collect();
    assert!(matches!(
        log.append_batch(many),
        Err(Error::RecordTooLarge { max: 1024, .. })
    ));
    // A large key or header counts too.
    assert!(matches!(
        log.append(Record::keyed(vec![1u8; 1500], "v")),
        Err(Error::RecordTooLarge { .. })
    ));
    assert!(matches!(
        log.append(Record::new("v").with_header("h", vec![0u8; 1500])),
        Err(Error::RecordTooLarge { .. })
    ));
    assert_eq!(log.end_offset(), 1);
    assert_eq!(log.append(Record::new("next")).unwrap(), 1);
    log.close().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.end_offset(), 2);
    assert_eq!(log.read(1).unwrap().unwrap().value.unwrap(), b"next");
    log.close().unwrap();
}

#[test]
fn offset_out_of_range_below_the_start_and_start_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(4096)).unwrap();
    for i in 0..300 {
        log.append(Record::new(value_for(i))).unwrap();
    }
    log.delete_records_before(140).unwrap();
    let check = |log: &Log, start: u64, end: u64| {
        assert_eq!(log.start_offset(), start);
        assert_eq!(log.end_offset(), end);
        for o in [0, start - 1] {
            match log.read(o) {
                Err(Error::OffsetOutOfRange {
                    offset,
                    start: s,
                    end: e,
                }) => {
                    assert_eq!((offset, s, e), (o, start, end));
                }
                other => panic!("read({o}) below the start: {other:?}"),
            }
        }
        if start < end {
            assert_eq!(
                log.read(start).unwrap().unwrap().value.unwrap(),
                value_for(start)
            );
        }
        // A reader asked for an earlier offset starts at the start offset.
        let mut reader = log.reader(0).unwrap();
        assert_eq!(reader.position(), start);
        let first = reader.next().transpose().unwrap();
        assert_eq!(first.map(|r| r.offset), (start < end).then_some(start));
        assert!(matches!(
            reader.seek(start - 1),
            Err(Error::OffsetOutOfRange { .. })
        ));
        assert!(log
            .offset_for_timestamp(0)
            .unwrap()
            .is_none_or(|o| o >= start));
    };
    check(&log, 140, 300);
    // Lower than the start: no change.
    log.delete_records_before(10).unwrap();
    check(&log, 140, 300);
    log.close().unwrap();
    let log = Log::open(dir.path(), small_config(4096)).unwrap();
    check(&log, 140, 300);
    // Past the end: clamped to the end; appends go on from there.
    log.delete_records_before(10_000).unwrap();
    check(&log, 300, 300);
    assert_eq!(log.append(Record::new(value_for(300))).unwrap(), 300);
    check(&log, 300, 301);
    drop(log);
    // A crash (no clean-shutdown marker, no recovery point): the start still holds.
    std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
    std::fs::remove_file(dir.path().join("recovery-point")).unwrap();
    let log = Log::open(dir.path(), small_config(4096)).unwrap();
    check(&log, 300, 301);
    log.close().unwrap();
    // A crash that lost the un-promised tail below the (durable) start offset: the log
    // restarts empty at the start offset, never handing out an offset twice.
    std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
    std::fs::remove_file(dir.path().join("recovery-point")).unwrap();
    let (_, last) = common::segment_files(dir.path()).pop().unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(0)
        .unwrap();
    let log = Log::open(dir.path(), small_config(4096)).unwrap();
    assert_eq!(log.start_offset(), 300);
    assert_eq!(log.end_offset(), 300);
    assert!(matches!(log.read(299), Err(Error::OffsetOutOfRange { .. })));
    assert_eq!(log.append(Record::new(value_for(300))).unwrap(), 300);
    check(&log, 300, 301);
    log.close().unwrap();
}

#[test]
fn missing_key_on_compacted_logs() {
    for cleanup in [CleanupPolicy::Compact, CleanupPolicy::CompactAndDelete] {
        let dir = tempfile::tempdir().unwrap();
        let config = || LogConfig {
            cleanup,
            ..small_config(1 << 20)
        };
        let log = Log::open(dir.path(), config()).unwrap();
        assert!(matches!(
            log.append(Record::new("no key")),
            Err(Error::MissingKey)
        ));
        // One keyless record spoils the whole batch.
        let batch = vec![
            Record::keyed("a", "1"),
            Record::new("no key"),
            Record::keyed("b", "2"),
        ];
        assert!(matches!(log.append_batch(batch), Err(Error::MissingKey)));
        assert_eq!(log.end_offset(), 0);
        assert_eq!(log.append(Record::keyed("a", "1")).unwrap(), 0);
        assert_eq!(log.append(Record::tombstone("a")).unwrap(), 1);
        log.close().unwrap();
        let log = Log::open(dir.path(), config()).unwrap();
        assert_eq!(log.end_offset(), 2);
        assert_eq!(log.read(1).unwrap().unwrap().value, None);
        log.close().unwrap();
    }
    // A delete-only log takes keyless records.
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(1 << 20)).unwrap();
    assert_eq!(log.append(Record::new("no key")).unwrap(), 0);
    log.close().unwrap();
}

#[test]
fn invalid_configs_are_refused() {
    let base = || small_config(1 << 20);
    let bad: Vec<(&str, LogConfig)> = vec![
        (
            "segment_bytes 0",
            LogConfig {
                segment_bytes: 0,
                ..base()
            },
        ),
        (
            "segment_bytes past u32",
            LogConfig {
                segment_bytes: 1 << 40,
                ..base()
            },
        ),
        (
            "max_batch_bytes 10",
            LogConfig {
                max_batch_bytes: 10,
                ..base()
            },
        ),
        (
            "index_interval_bytes 0",
            LogConfig {
                index_interval_bytes: 0,
                ..base()
            },
        ),
        (
            "segment_index_bytes 8",
            LogConfig {
                segment_index_bytes: 8,
                ..base()
            },
        ),
        (
            "EveryRecords(0)",
            LogConfig {
                flush: FlushPolicy::EveryRecords(0),
                ..base()
            },
        ),
        (
            "Interval(0)",
            LogConfig {
                flush: FlushPolicy::Interval(Duration::ZERO),
                ..base()
            },
        ),
    ];
    let ratios = [1.5, -0.1, f64::NAN];
    let bad = bad.into_iter().chain(ratios.iter().map(|&r| {
        (
            "dirty ratio",
            LogConfig {
                compaction: CompactionConfig {
                    min_cleanable_dirty_ratio: r,
                    ..CompactionConfig::default()
                },
                ..base()
            },
        )
    }));
    for (what, config) in bad {
        let dir = tempfile::tempdir().unwrap();
        match Log::open(dir.path().join("log"), config) {
            Err(e @ Error::InvalidConfig(_)) => {
                let text = e.to_string();
                assert!(text.contains("invalid configuration"), "{what}: {text}");
                let Error::InvalidConfig(why) = e else {
                    unreachable!()
                };
                assert!(!why.is_empty(), "{what}");
            }
            other => panic!("{what}: expected InvalidConfig, got {other:?}"),
        }
    }
    // The edges that are valid.
    let dir = tempfile::tempdir().unwrap();
    let ok = LogConfig {
        segment_bytes: 60,
        max_batch_bytes: 60,
        index_interval_bytes: 1,
        segment_index_bytes: 64,
        ..base()
    };
    Log::open(dir.path(), ok).unwrap().close().unwrap();
}

fn assert_std_error<E: std::error::Error + Send + Sync + 'static>(_: &E) {}

#[test]
fn errors_are_std_errors_with_useful_text() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        LogConfig {
            max_batch_bytes: 100,
            ..small_config(1 << 20)
        },
    )
    .unwrap();
    let e = log.append(Record::new(vec![0u8; 500])).unwrap_err();
    assert_std_error(&e);
    let text = e.to_string();
    assert!(
        text.contains("100") && text.contains("max_batch_bytes"),
        "{text}"
    );

    for i in 0..10 {
        log.append(Record::new(value_for(i))).unwrap();
    }
    log.delete_records_before(5).unwrap();
    let text = log.read(2).unwrap_err().to_string();
    assert!(
        text.contains('2') && text.contains('5') && text.contains("10"),
        "{text}"
    );

    let e = Log::open(dir.path(), small_config(1 << 20)).unwrap_err();
    assert!(matches!(e, Error::Locked { .. }));
    assert!(e.to_string().contains("LOCK"), "{e}");

    assert!(matches!(
        Log::open(dir.path(), small_config(1 << 20)),
        Err(Error::Locked { .. })
    ));
    let clone = log.clone();
    log.close().unwrap();
    let e = clone.append(Record::new("x")).unwrap_err();
    assert!(matches!(e, Error::Closed));
    assert!(e.to_string().contains("closed"), "{e}");

    // An I/O error carries its source and the path.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let e = Log::open(file.join("log"), small_config(1 << 20)).unwrap_err();
    match &e {
        Error::Io { path, .. } => assert!(path.starts_with(&file), "{path:?}"),
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(std::error::Error::source(&e).is_some());
    assert!(e.to_string().contains("a-file"), "{e}");
    // Boxed as a dyn Error, as applications use it.
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(e);
    assert!(!boxed.to_string().is_empty());
}

#[test]
fn next_blocking_wakes_on_append_and_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(1 << 20)).unwrap();
    log.append(Record::new("first")).unwrap();
    let mut reader = log.reader(0).unwrap();
    assert_eq!(
        reader
            .next_blocking(Duration::from_secs(5))
            .unwrap()
            .unwrap()
            .offset,
        0
    );

    // Nothing comes: Ok(None) after about the timeout.
    let t = Instant::now();
    assert!(reader
        .next_blocking(Duration::from_millis(200))
        .unwrap()
        .is_none());
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    // An append from another thread wakes the waiter long before its timeout.
    let writer = log.clone();
    let appender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        writer.append(Record::new("second")).unwrap()
    });
    let t = Instant::now();
    let r = reader
        .next_blocking(Duration::from_secs(30))
        .unwrap()
        .expect("woken by the append");
    let waited = t.elapsed();
    assert_eq!(r.offset, 1);
    assert_eq!(r.value.unwrap(), b"second");
    assert_eq!(appender.join().unwrap(), 1);
    assert!(waited < Duration::from_secs(10), "not woken: {waited:?}");

    // A batch appended while waiting: every record comes, in order.
    let writer = log.clone();
    let appender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        writer
            .append_batch((0..5).map(|i| Record::new(value_for(i))).collect())
            .unwrap()
    });
    for o in 2..7 {
        let r = reader
            .next_blocking(Duration::from_secs(30))
            .unwrap()
            .unwrap();
        assert_eq!(r.offset, o);
    }
    assert_eq!(appender.join().unwrap(), 2..7);

    // Closing the log wakes a waiter, which then sees Closed.
    let closer = log.clone();
    let t = Instant::now();
    let closing = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        closer.close().unwrap();
    });
    let got = reader.next_blocking(Duration::from_secs(30));
    assert!(matches!(got, Err(Error::Closed)), "{got:?}");
    assert!(t.elapsed() < Duration::from_secs(10));
    closing.join().unwrap();
}
