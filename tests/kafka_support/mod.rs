//! Helpers for the tests against a real Kafka-protocol broker (`KAFKA_BROKERS`,
//! started by `scripts/kafka-broker.sh`). Reading back uses a plain rdkafka consumer,
//! independent of `logqueue::kafka::Import`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The broker list, or `None` with a message saying the test is skipped.
pub fn brokers(test: &str) -> Option<String> {
    match std::env::var("KAFKA_BROKERS") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            eprintln!(
                "{test}: skipped, KAFKA_BROKERS is not set \
                 (run `scripts/kafka-broker.sh run cargo test --features kafka --test 'kafka_*'`)"
            );
            None
        }
    }
}

/// A topic name no other test (or earlier run against the same broker) uses.
pub fn unique_topic(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

/// One message as a consumer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msg {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub timestamp: Option<i64>,
}

impl Msg {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The `logqueue.offset` header, parsed.
    pub fn source_offset(&self) -> u64 {
        std::str::from_utf8(self.header("logqueue.offset").expect("logqueue.offset"))
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// The partitions of `topic`, from the broker's metadata.
pub fn partitions(brokers: &str, topic: &str) -> Vec<i32> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    md.topics()[0].partitions().iter().map(|p| p.id()).collect()
}

/// Every message of `topic` up to the partitions' ends as Fetch reports them
/// (partition EOF; ListOffsets LATEST is unreliable on Tansu), read with a plain
/// consumer (assign, from offset 0, no group join).
pub fn read_all(brokers: &str, topic: &str) -> Vec<Msg> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "logqueue-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let parts = partitions(brokers, topic);
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, Offset::Offset(0))
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut at_end: HashMap<i32, bool> = parts.iter().map(|p| (*p, false)).collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while at_end.values().any(|e| !e) {
        assert!(Instant::now() < deadline, "read_all timed out: {at_end:?}");
        let m = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p, true);
                continue;
            }
            Some(m) => m.unwrap(),
        };
        at_end.insert(m.partition(), false);
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Msg {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
            timestamp: m.timestamp().to_millis(),
        });
    }
    out
}

/// Kafka's default partitioner for keyed records (murmur2 of the key, Java client).
pub fn java_partition(key: &[u8], partitions: i32) -> i32 {
    let seed: u32 = 0x9747_b28c;
    let m: u32 = 0x5bd1_e995;
    let len = key.len();
    let mut h: u32 = seed ^ len as u32;
    let chunks = key.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(m);
        k ^= k >> 24;
        k = k.wrapping_mul(m);
        h = h.wrapping_mul(m);
        h ^= k;
    }
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(m);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(m);
    h ^= h >> 15;
    ((h & 0x7fff_ffff) % partitions as u32) as i32
}

/// Checks the ledger of a mirrored log: every offset in `expected` is there, a
/// duplicate equals its first copy, and per key the first copies come in offset
/// order within one partition. Returns the number of duplicates.
pub fn check_mirrored(msgs: &[Msg], expected: &[logqueue::StoredRecord]) -> usize {
    let mut first: HashMap<u64, &Msg> = HashMap::new();
    let mut duplicates = 0;
    let mut sorted: Vec<&Msg> = msgs.iter().collect();
    sorted.sort_by_key(|m| (m.partition, m.offset));
    let mut last_of_key: HashMap<Vec<u8>, (i32, u64)> = HashMap::new();
    for m in sorted {
        let o = m.source_offset();
        if let Some(f) = first.get(&o) {
            assert_eq!(
                (&f.key, &f.value, &f.headers, f.timestamp),
                (&m.key, &m.value, &m.headers, m.timestamp),
                "duplicate of offset {o} differs"
            );
            duplicates += 1;
            continue;
        }
        first.insert(o, m);
        if let Some(k) = &m.key {
            if let Some((p, prev)) = last_of_key.insert(k.clone(), (m.partition, o)) {
                assert_eq!(p, m.partition, "key {k:?} in two partitions");
                assert!(
                    prev < o,
                    "key {k:?}: offset {o} after {prev} in partition {p}"
                );
            }
        }
    }
    for r in expected {
        let m = first
            .get(&r.offset)
            .unwrap_or_else(|| panic!("offset {} missing from the topic", r.offset));
        assert_eq!(m.key, r.key, "key of offset {}", r.offset);
        assert_eq!(m.value, r.value, "value of offset {}", r.offset);
        assert_eq!(
            m.timestamp,
            Some(r.timestamp),
            "timestamp of offset {}",
            r.offset
        );
        let mut headers: Vec<(String, Vec<u8>)> = r
            .headers
            .iter()
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect();
        headers.push(("logqueue.offset".into(), r.offset.to_string().into_bytes()));
        let own: Vec<_> = m
            .headers
            .iter()
            .filter(|(k, _)| k != "logqueue.log")
            .cloned()
            .collect();
        assert_eq!(own, headers, "headers of offset {}", r.offset);
        assert!(m.header("logqueue.log").is_some());
    }
    assert_eq!(
        first.len(),
        expected.len(),
        "records in the topic not in the log"
    );
    duplicates
}

/// Produces `records` `(key, value, headers, timestamp)` with a plain idempotent
/// rdkafka producer (Kafka's default partitioner) and waits for every ack.
pub fn produce(brokers: &str, topic: &str, records: &[ProducedRecord]) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    for r in records {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
            .headers(headers)
            .timestamp(r.timestamp);
        record.key = r.key.as_deref();
        record.payload = r.value.as_deref();
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// A record to produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducedRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub timestamp: i64,
}

/// Keys, headers, timestamps, tombstones and keyless records; `i` is in the value.
pub fn produced(i: u64) -> ProducedRecord {
    let key = format!("key-{}", i % 7).into_bytes();
    let (key, value) = match i % 5 {
        0 => (Some(key), None),
        1 => (None, Some(format!("keyless-{i}").into_bytes())),
        _ => (Some(key), Some(format!("value-{i}").into_bytes())),
    };
    let headers = if i.is_multiple_of(3) {
        vec![("n".to_string(), i.to_string().into_bytes())]
    } else {
        Vec::new()
    };
    ProducedRecord {
        key,
        value,
        headers,
        timestamp: base_ms() + i as i64,
    }
}

/// Milliseconds at the first call in this process: produced records carry recent
/// timestamps, as live ones do (the log's dedup window judges ids by them).
pub fn base_ms() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    })
}
