//! `kafka::Import` against a real broker (`KAFKA_BROKERS`; skipped when unset). The
//! topic is written with a plain rdkafka producer, not with `kafka::Mirror`.
#![cfg(feature = "kafka")]

mod kafka_support;

use std::collections::HashMap;
use std::time::Duration;

use kafka_support::{brokers, produce, produced, unique_topic, ProducedRecord};
use logqueue::kafka::{create_topic, Import, ImportConfig, ImportStart};
use logqueue::{DedupConfig, Error, FlushPolicy, Log, LogConfig, StoredRecord};

fn dedup_log(dir: &std::path::Path) -> Log {
    let config = LogConfig {
        flush: FlushPolicy::Manual,
        retention_ms: None,
        dedup: Some(DedupConfig {
            window: Duration::from_secs(3600),
            max_ids: 1_000_000,
        }),
        ..LogConfig::default()
    };
    Log::open(dir, config).unwrap()
}

/// `(partition, offset)` from the record's dedup id `<topic>/<partition>/<offset>`.
fn source(r: &StoredRecord) -> (i32, i64) {
    let id = std::str::from_utf8(r.header("dedup.id").unwrap()).unwrap();
    let mut parts = id.rsplitn(3, '/');
    let offset = parts.next().unwrap().parse().unwrap();
    let partition = parts.next().unwrap().parse().unwrap();
    (partition, offset)
}

/// The log holds each produced record exactly once, equal to it, and the records
/// of each partition in partition order. Returns the records by value index.
fn check_imported(log: &Log, expected: &[ProducedRecord]) {
    let records: Vec<StoredRecord> = log.reader(0).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(records.len(), expected.len(), "records in the log");
    let mut last: HashMap<i32, i64> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for r in &records {
        let (p, o) = source(r);
        assert!(seen.insert((p, o)), "({p}, {o}) twice");
        if let Some(prev) = last.insert(p, o) {
            assert!(prev < o, "partition {p}: {o} after {prev}");
        }
        let want = expected
            .iter()
            .find(|e| e.timestamp == r.timestamp)
            .expect("a produced record");
        assert_eq!((&r.key, &r.value), (&want.key, &want.value));
        let headers: Vec<(String, Vec<u8>)> = r
            .headers
            .iter()
            .filter(|h| h.key != "dedup.id")
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect();
        assert_eq!(headers, want.headers);
    }
}

#[test]
fn import_round_trip_keeps_records_and_partition_order() {
    let Some(brokers) = brokers("import_round_trip") else {
        return;
    };
    let topic = unique_topic("import-rt");
    create_topic(&brokers, &topic, 3).unwrap();
    let records: Vec<_> = (0..2_000).map(produced).collect();
    produce(&brokers, &topic, &records);
    let dir = tempfile::tempdir().unwrap();
    let log = dedup_log(dir.path());
    let import = Import::start(&log, ImportConfig::new(&brokers, &topic)).unwrap();
    assert!(import.wait_caught_up(Duration::from_secs(60)).unwrap());
    let stats = import.stop().unwrap();
    assert_eq!((stats.imported, stats.duplicates), (2_000, 0), "{stats:?}");
    assert_eq!(stats.positions.values().sum::<i64>(), 2_000);
    check_imported(&log, &records);
}

#[test]
fn restarts_resume_from_committed_offsets_and_never_duplicate() {
    let Some(brokers) = brokers("import_restart") else {
        return;
    };
    let topic = unique_topic("import-restart");
    create_topic(&brokers, &topic, 3).unwrap();
    let records: Vec<_> = (0..3_000).map(produced).collect();
    produce(&brokers, &topic, &records[..1_000]);
    let dir = tempfile::tempdir().unwrap();
    let log = dedup_log(dir.path());
    let mut config = ImportConfig::new(&brokers, &topic);
    config.group = unique_topic("group");
    let import = Import::start(&log, config.clone()).unwrap();
    assert!(import.wait_caught_up(Duration::from_secs(60)).unwrap());
    assert_eq!(import.stop().unwrap().imported, 1_000);

    // Resumes from the offsets committed in Kafka: only the new records.
    produce(&brokers, &topic, &records[1_000..2_000]);
    let import = Import::start(&log, config.clone()).unwrap();
    assert!(import.wait_caught_up(Duration::from_secs(60)).unwrap());
    let stats = import.stop().unwrap();
    assert_eq!((stats.imported, stats.duplicates), (1_000, 0), "{stats:?}");

    // As after a crash before any commit: everything is consumed again, and the
    // dedup window (rebuilt at reopen) recognizes it.
    produce(&brokers, &topic, &records[2_000..]);
    log.close().unwrap();
    let log = dedup_log(dir.path());
    config.start = ImportStart::Earliest;
    let import = Import::start(&log, config).unwrap();
    assert!(import.wait_caught_up(Duration::from_secs(60)).unwrap());
    let stats = import.stop().unwrap();
    assert_eq!(
        (stats.imported, stats.duplicates),
        (1_000, 2_000),
        "{stats:?}"
    );
    check_imported(&log, &records);
}

#[test]
fn import_refuses_a_log_without_a_dedup_window() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let err = Import::start(&log, ImportConfig::new("127.0.0.1:1", "t")).unwrap_err();
    assert!(
        matches!(err, Error::InvalidConfig(ref why) if why.contains("dedup")),
        "{err}"
    );
}

#[test]
fn restart_resumes_after_records_imported_but_not_committed() {
    let Some(brokers) = brokers("import_uncommitted") else {
        return;
    };
    let topic = unique_topic("import-uncommitted");
    create_topic(&brokers, &topic, 3).unwrap();
    // Old timestamps: the dedup window (1 h) would not recognize these ids again.
    let records: Vec<_> = (0..300)
        .map(|i| ProducedRecord {
            timestamp: 1_600_000_000_000 + i as i64,
            ..produced(i)
        })
        .collect();
    produce(&brokers, &topic, &records);
    // As a run that appended the first half of each partition and was killed before
    // committing anything to Kafka.
    let dir = tempfile::tempdir().unwrap();
    let log = dedup_log(dir.path());
    let msgs = kafka_support::read_all(&brokers, &topic);
    let mut earlier = 0;
    for m in &msgs {
        let half = msgs.iter().filter(|x| x.partition == m.partition).count() as i64 / 2;
        if m.offset < half {
            let id = format!("{topic}/{}/{}", m.partition, m.offset);
            let record = logqueue::Record {
                key: m.key.clone(),
                value: m.value.clone(),
                headers: m
                    .headers
                    .iter()
                    .map(|(k, v)| logqueue::Header {
                        key: k.clone(),
                        value: v.clone(),
                    })
                    .collect(),
                timestamp: m.timestamp,
            };
            assert!(
                !log.append_idempotent(id.as_bytes(), record)
                    .unwrap()
                    .duplicate
            );
            earlier += 1;
        }
    }
    let mut config = ImportConfig::new(&brokers, &topic);
    config.group = unique_topic("group");
    let import = Import::start(&log, config).unwrap();
    assert!(import.wait_caught_up(Duration::from_secs(60)).unwrap());
    let stats = import.stop().unwrap();
    assert_eq!(
        (stats.imported, stats.duplicates),
        (300 - earlier, 0),
        "{stats:?}"
    );
    check_imported(&log, &records);
}

#[test]
fn a_missing_import_cursor_rescans_the_log_and_a_damaged_one_is_corrupt() {
    let Some(brokers) = brokers("import_cursor_file") else {
        return;
    };
    let topic = unique_topic("import-cursor-file");
    create_topic(&brokers, &topic, 3).unwrap();
    let records: Vec<_> = (0..600).map(produced).collect();
    produce(&brokers, &topic, &records[..300]);
    let dir = tempfile::tempdir().unwrap();
    let log = dedup_log(dir.path());
    let mut config = ImportConfig::new(&brokers, &topic);
    config.group = unique_topic("group");
    let import = Import::start(&log, config.clone()).unwrap();
    assert!(import.wait_caught_up(Duration::from_secs(60)).unwrap());
    import.stop().unwrap();
    log.close().unwrap();
    let cursor_file = dir.path().join("cursors").join("kafka-import.cursor");

    // Missing cursor and a new group (no commits): the scan of the whole log finds
    // the resume point.
    std::fs::remove_file(&cursor_file).unwrap();
    produce(&brokers, &topic, &records[300..]);
    let log = dedup_log(dir.path());
    config.group = unique_topic("group");
    let import = Import::start(&log, config.clone()).unwrap();
    assert!(import.wait_caught_up(Duration::from_secs(60)).unwrap());
    let stats = import.stop().unwrap();
    assert_eq!((stats.imported, stats.duplicates), (300, 0), "{stats:?}");
    check_imported(&log, &records);
    log.close().unwrap();

    std::fs::write(&cursor_file, [0xAB; 64]).unwrap();
    let log = dedup_log(dir.path());
    match Import::start(&log, config).unwrap_err() {
        Error::Corrupt { path, .. } => assert_eq!(path, cursor_file),
        other => panic!("{other}"),
    }
}
