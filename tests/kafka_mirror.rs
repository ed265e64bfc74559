//! `kafka::Mirror` against a real broker (`KAFKA_BROKERS`; skipped when unset). Read
//! back with a plain rdkafka consumer, not with `kafka::Import`.
#![cfg(feature = "kafka")]

mod kafka_support;

use std::time::Duration;

use kafka_support::{brokers, check_mirrored, java_partition, read_all, unique_topic};
use logqueue::kafka::{create_topic, Mirror, MirrorConfig};
use logqueue::{FlushPolicy, Log, LogConfig, Queue, QueueConfig, Record, StoredRecord};

const PARTITIONS: i32 = 3;

fn all_records(log: &Log) -> Vec<StoredRecord> {
    log.reader(log.start_offset())
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// Keys, headers, timestamps, tombstones and keyless records.
fn varied(i: u64) -> Record {
    let key = format!("key-{}", i % 7);
    let record = match i % 5 {
        0 => Record::tombstone(key),
        1 => Record::new(format!("keyless-{i}")),
        _ => Record::keyed(key, format!("value-{i}")),
    };
    let record = if i.is_multiple_of(3) {
        record
            .with_header("source", format!("s{i}"))
            .with_header("empty", Vec::new())
    } else {
        record
    };
    record.with_timestamp(1_700_000_000_000 + i as i64 * 17)
}

fn open(dir: &std::path::Path) -> Log {
    let config = LogConfig {
        flush: FlushPolicy::Manual,
        ..LogConfig::default()
    };
    Log::open(dir, config).unwrap()
}

#[test]
fn mirrored_records_equal_the_log_record_by_record_with_key_order_in_partitions() {
    let Some(brokers) = brokers("mirror_equal") else {
        return;
    };
    let topic = unique_topic("mirror-equal");
    create_topic(&brokers, &topic, PARTITIONS).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for i in 0..2_000 {
        log.append(varied(i)).unwrap();
    }
    let mirror = Mirror::start(&log, MirrorConfig::new(&brokers, &topic)).unwrap();
    assert!(mirror
        .wait_for(log.end_offset(), Duration::from_secs(60))
        .unwrap());
    let stats = mirror.stop().unwrap();
    assert_eq!((stats.position, stats.lag), (2_000, 0));
    assert_eq!(stats.acknowledged, 2_000);
    assert_eq!(stats.last_error, None, "{stats:?}");
    assert_eq!(log.cursors().unwrap()[0].position, 2_000);

    let msgs = read_all(&brokers, &topic);
    assert_eq!(msgs.len(), 2_000);
    let duplicates = check_mirrored(&msgs, &all_records(&log));
    assert_eq!(duplicates, 0);
    // Kafka's default partitioner: a Java producer puts each key where we did.
    let id = logqueue::kafka::log_id(&log).unwrap();
    for m in &msgs {
        assert_eq!(m.header("logqueue.log"), Some(id.as_bytes()));
        if let Some(k) = &m.key {
            assert_eq!(m.partition, java_partition(k, PARTITIONS), "key {k:?}");
        }
    }
    // Tombstones stay tombstones.
    assert_eq!(msgs.iter().filter(|m| m.value.is_none()).count(), 400);
}

#[test]
fn mirror_follows_new_appends_and_resumes_from_its_cursor() {
    let Some(brokers) = brokers("mirror_follows") else {
        return;
    };
    let topic = unique_topic("mirror-follow");
    create_topic(&brokers, &topic, PARTITIONS).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let mirror = Mirror::start(&log, MirrorConfig::new(&brokers, &topic)).unwrap();
    for round in 0..5u64 {
        for i in 0..200 {
            log.append(varied(round * 200 + i)).unwrap();
        }
        assert!(mirror
            .wait_for(log.end_offset(), Duration::from_secs(60))
            .unwrap());
        assert_eq!(mirror.stats().lag, 0);
    }
    mirror.stop().unwrap();
    // A new mirror on the same cursor sends only what came after.
    for i in 1_000..1_100 {
        log.append(varied(i)).unwrap();
    }
    let mirror = Mirror::start(&log, MirrorConfig::new(&brokers, &topic)).unwrap();
    assert!(mirror.wait_for(1_100, Duration::from_secs(60)).unwrap());
    let stats = mirror.stop().unwrap();
    assert_eq!(stats.sent, 100);
    let msgs = read_all(&brokers, &topic);
    assert_eq!(check_mirrored(&msgs, &all_records(&log)), 0);
}

#[test]
fn retention_waits_for_the_broker_to_acknowledge() {
    let Some(brokers) = brokers("mirror_retention") else {
        return;
    };
    let topic = unique_topic("mirror-retention");
    create_topic(&brokers, &topic, PARTITIONS).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush: FlushPolicy::Manual,
        segment_bytes: 4096,
        retention_bytes: Some(8192),
        retention_ms: None,
        background: false,
        file_delete_delay: Duration::ZERO,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config).unwrap();
    for i in 0..1_000 {
        log.append(Record::keyed(format!("k{}", i % 10), vec![b'x'; 100]))
            .unwrap();
    }
    // No broker listens here: nothing is acknowledged, so nothing may be deleted.
    let mut unreachable = MirrorConfig::new("127.0.0.1:1", &topic);
    unreachable.producer = vec![("message.timeout.ms".into(), "500".into())];
    unreachable.lag_alarm = Some(500);
    let mirror = Mirror::start(&log, unreachable).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let stats = mirror.stats();
    assert_eq!(stats.position, 0);
    assert!(stats.lag_alarm);
    assert!(stats.errors > 0 && stats.last_error.is_some(), "{stats:?}");
    assert_eq!(log.enforce_retention().unwrap().segments_deleted, 0);
    assert_eq!(log.start_offset(), 0);
    mirror.stop().unwrap();

    let mirror = Mirror::start(&log, MirrorConfig::new(&brokers, &topic)).unwrap();
    assert!(mirror.wait_for(1_000, Duration::from_secs(60)).unwrap());
    let stats = mirror.stop().unwrap();
    assert!(!stats.lag_alarm);
    assert!(log.enforce_retention().unwrap().segments_deleted > 0);
    assert!(log.start_offset() > 0);
    let msgs = read_all(&brokers, &topic);
    let firsts: std::collections::BTreeSet<u64> = msgs.iter().map(|m| m.source_offset()).collect();
    assert_eq!(firsts, (0..1_000).collect());
}

#[test]
fn a_record_the_broker_refuses_is_retried_and_reported_never_skipped() {
    let Some(brokers) = brokers("mirror_refused") else {
        return;
    };
    let topic = unique_topic("mirror-refused");
    create_topic(&brokers, &topic, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(Record::new("small")).unwrap();
    log.append(Record::new(vec![b'x'; 20_000])).unwrap();
    log.append(Record::new("after")).unwrap();
    let mut config = MirrorConfig::new(&brokers, &topic);
    // The client refuses messages above 10,000 bytes.
    config.producer = vec![("message.max.bytes".into(), "10000".into())];
    let mirror = Mirror::start(&log, config).unwrap();
    assert!(mirror.wait_for(1, Duration::from_secs(30)).unwrap());
    std::thread::sleep(Duration::from_millis(1_500));
    let stats = mirror.stats();
    assert_eq!((stats.position, stats.lag), (1, 2), "{stats:?}");
    assert!(stats.errors >= 2, "retried: {stats:?}");
    let error = stats.last_error.unwrap();
    assert!(error.contains("offset 1"), "{error}");
    assert!(stats.running);
    mirror.stop().unwrap();
    assert_eq!(log.cursors().unwrap()[0].position, 1);
    let msgs = read_all(&brokers, &topic);
    assert_eq!(msgs.len(), 1, "nothing after the refused record was sent");
}

#[test]
fn a_queues_dead_letter_log_mirrors_to_its_own_topic() {
    let Some(brokers) = brokers("mirror_dead_letters") else {
        return;
    };
    let topic = unique_topic("mirror-dlq");
    create_topic(&brokers, &topic, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let queue = Queue::open(&log, "orders", QueueConfig::default()).unwrap();
    for i in 0..10 {
        log.append(Record::keyed(format!("k{i}"), format!("order-{i}")))
            .unwrap();
    }
    for d in queue.receive(10, Duration::from_secs(1)).unwrap() {
        queue.dead_letter(&d.receipt, "bad order").unwrap();
    }
    let dead = queue.dead_letters();
    assert_eq!(dead.end_offset(), 10);
    let mirror = Mirror::start(&dead, MirrorConfig::new(&brokers, &topic)).unwrap();
    assert!(mirror.wait_for(10, Duration::from_secs(60)).unwrap());
    mirror.stop().unwrap();
    let msgs = read_all(&brokers, &topic);
    assert_eq!(check_mirrored(&msgs, &all_records(&dead)), 0);
    for m in &msgs {
        assert_eq!(m.header("dlq.reason"), Some(&b"bad order"[..]));
        assert_eq!(m.header("dlq.queue"), Some(&b"orders"[..]));
    }
}

#[test]
fn a_missing_cursor_sends_everything_again_and_a_damaged_one_is_corrupt() {
    let Some(brokers) = brokers("mirror_cursor_file") else {
        return;
    };
    let topic = unique_topic("mirror-cursor-file");
    create_topic(&brokers, &topic, PARTITIONS).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for i in 0..300 {
        log.append(varied(i)).unwrap();
    }
    let mirror = Mirror::start(&log, MirrorConfig::new(&brokers, &topic)).unwrap();
    assert!(mirror.wait_for(300, Duration::from_secs(60)).unwrap());
    mirror.stop().unwrap();
    log.close().unwrap();
    let cursor_file = dir.path().join("cursors").join("kafka-mirror.cursor");

    std::fs::remove_file(&cursor_file).unwrap();
    let log = open(dir.path());
    let mirror = Mirror::start(&log, MirrorConfig::new(&brokers, &topic)).unwrap();
    assert!(mirror.wait_for(300, Duration::from_secs(60)).unwrap());
    assert_eq!(
        mirror.stop().unwrap().sent,
        300,
        "from the log's start again"
    );
    let msgs = read_all(&brokers, &topic);
    assert_eq!(
        check_mirrored(&msgs, &all_records(&log)),
        300,
        "each once more, dedupable"
    );
    log.close().unwrap();

    std::fs::write(&cursor_file, [0xAB; 64]).unwrap();
    let log = open(dir.path());
    let err = Mirror::start(&log, MirrorConfig::new(&brokers, &topic)).unwrap_err();
    match err {
        logqueue::Error::Corrupt { path, .. } => assert_eq!(path, cursor_file),
        other => panic!("{other}"),
    }
}
