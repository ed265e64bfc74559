//! Throughput, side by side against one local broker (`KAFKA_BROKERS`): the mirror
//! vs a plain idempotent rdkafka producer writing the same records, and the import
//! vs a plain consumer reading the same topic. Ignored by default; run with
//! `scripts/kafka-broker.sh run cargo test --release --features kafka --test
//! kafka_throughput -- --ignored --nocapture` (`KAFKA_BENCH_RECORDS`, default 100,000
//! records of 100 bytes; 3 runs, medians).
#![cfg(feature = "kafka")]

mod kafka_support;

use std::time::{Duration, Instant};

use kafka_support::{brokers, unique_topic};
use logqueue::kafka::{create_topic, Import, ImportConfig, Mirror, MirrorConfig};
use logqueue::{DedupConfig, FlushPolicy, Log, LogConfig, Record};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

fn records() -> u64 {
    std::env::var("KAFKA_BENCH_RECORDS").map_or(100_000, |n| n.parse().unwrap())
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{}", i % 100).into_bytes()
}

const VALUE: [u8; 100] = [b'v'; 100];

fn plain_produce(brokers: &str, topic: &str, n: u64) -> Duration {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "100000")
        .create()
        .unwrap();
    let start = Instant::now();
    for i in 0..n {
        let k = key(i);
        let mut record = BaseRecord::to(topic).key(&k).payload(&VALUE[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    start.elapsed()
}

fn mirror(brokers: &str, topic: &str, n: u64) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush: FlushPolicy::Manual,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config).unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        log.append_batch(
            chunk
                .iter()
                .map(|i| Record::keyed(key(*i), VALUE))
                .collect(),
        )
        .unwrap();
    }
    let start = Instant::now();
    let m = Mirror::start(&log, MirrorConfig::new(brokers, topic)).unwrap();
    assert!(m.wait_for(n, Duration::from_secs(300)).unwrap());
    let took = start.elapsed();
    m.stop().unwrap();
    took
}

/// A plain consumer; with `into`, each record is also appended to that log
/// (`append_batch` per 1,000, no idempotence): what a hand-written import costs.
fn plain_consume(brokers: &str, topic: &str, n: u64, into: Option<&Log>) -> Duration {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let start = Instant::now();
    let mut tpl = TopicPartitionList::new();
    for p in kafka_support::partitions(brokers, topic) {
        tpl.add_partition_offset(topic, p, Offset::Offset(0))
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let (mut got, mut bytes) = (0u64, 0usize);
    let mut batch = Vec::new();
    while got < n {
        match consumer.poll(Duration::from_millis(100)) {
            None | Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(m) => {
                use rdkafka::Message;
                let m = m.unwrap();
                bytes += m.payload().map_or(0, <[u8]>::len);
                got += 1;
                if let Some(log) = into {
                    batch.push(Record {
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                        headers: Vec::new(),
                        timestamp: m.timestamp().to_millis(),
                    });
                    if batch.len() == 1000 || got == n {
                        log.append_batch(std::mem::take(&mut batch)).unwrap();
                    }
                }
            }
        }
    }
    assert!(bytes > 0);
    start.elapsed()
}

fn import(brokers: &str, topic: &str, n: u64) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush: FlushPolicy::Manual,
        dedup: Some(DedupConfig {
            window: Duration::from_secs(3600),
            max_ids: 1_000_000,
        }),
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config).unwrap();
    let start = Instant::now();
    let mut c = ImportConfig::new(brokers, topic);
    c.group = unique_topic("bench-import");
    let i = Import::start(&log, c).unwrap();
    while log.end_offset() < n {
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = start.elapsed();
    i.stop().unwrap();
    took
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
#[ignore = "a measurement: run by hand with --release against a broker"]
fn mirror_vs_plain_producer_and_import_vs_plain_consumer() {
    let Some(brokers) = brokers("kafka_throughput") else {
        return;
    };
    let n = records();
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let (mut produce, mut mirrored, mut consume, mut imported) = (vec![], vec![], vec![], vec![]);
    let mut hand = vec![];
    for run in 0..3 {
        let (a, b) = (unique_topic("bench-plain"), unique_topic("bench-mirror"));
        create_topic(&brokers, &a, 1).unwrap();
        create_topic(&brokers, &b, 1).unwrap();
        let p = rate(plain_produce(&brokers, &a, n));
        let m = rate(mirror(&brokers, &b, n));
        let c = rate(plain_consume(&brokers, &a, n, None));
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(
            dir.path(),
            LogConfig {
                flush: FlushPolicy::Manual,
                ..LogConfig::default()
            },
        )
        .unwrap();
        let h = rate(plain_consume(&brokers, &a, n, Some(&log)));
        let i = rate(import(&brokers, &a, n));
        eprintln!(
            "run {run}: plain producer {p:.0}/s, mirror {m:.0}/s; plain consumer {c:.0}/s, \
             plain consumer + append_batch {h:.0}/s, import {i:.0}/s"
        );
        hand.push(h);
        produce.push(p);
        mirrored.push(m);
        consume.push(c);
        imported.push(i);
    }
    let (p, m, c, i) = (
        median(produce),
        median(mirrored),
        median(consume),
        median(imported),
    );
    let h = median(hand);
    eprintln!(
        "medians over 3 runs, {n} records of 100 B, 1 partition: plain producer {p:.0}/s, \
         mirror {m:.0}/s ({:.2}x); plain consumer {c:.0}/s, plain consumer + append_batch \
         {h:.0}/s, import {i:.0}/s ({:.2}x of the plain consumer, {:.2}x of consumer + append)",
        m / p,
        i / c,
        i / h
    );
}
