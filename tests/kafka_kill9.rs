//! kill -9 loops against a real broker (`KAFKA_BROKERS`; skipped when unset): a child
//! process runs a `kafka::Mirror` (or a `kafka::Import`) and is killed at a random
//! moment, round after round, while records keep coming (the mirror's child appends
//! to its log as a service would; for the import the parent produces to the topic).
//! After the last round and a final drain:
//! - mirror: every log record is in the topic, per key the first copies are in
//!   offset order in one partition, and every duplicate equals its original (same
//!   `logqueue.offset`, same content): at-least-once.
//! - import: every topic record is in the log exactly once, per partition in order.
//!
//! Rounds: `LOGQUEUE_KAFKA_ROUNDS` (default 4); kill delays from `LOGQUEUE_SEED`.
#![cfg(feature = "kafka")]

mod kafka_support;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use kafka_support::{
    brokers, check_mirrored, produce, produced, read_all, unique_topic, ProducedRecord,
};
use logqueue::kafka::{create_topic, Import, ImportConfig, Mirror, MirrorConfig};
use logqueue::{DedupConfig, Log, LogConfig, Record, StoredRecord};

const RECORDS_PER_ROUND: u64 = 5_000;
const CHILD: &str = "LOGQUEUE_KAFKA_KILL9_CHILD";

fn rounds() -> u64 {
    std::env::var("LOGQUEUE_KAFKA_ROUNDS").map_or(4, |r| r.parse().expect("a number"))
}

fn seed() -> u64 {
    let seed = std::env::var("LOGQUEUE_SEED").map_or_else(
        |_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        },
        |s| s.parse().expect("LOGQUEUE_SEED must be a u64"),
    );
    eprintln!("kafka_kill9: LOGQUEUE_SEED={seed}");
    seed
}

/// xorshift64*: kill delays in milliseconds.
fn next_delay(state: &mut u64, min: u64, max: u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    min + state.wrapping_mul(0x2545_f491_4f6c_dd1d) % (max - min)
}

fn import_log(dir: &Path) -> Log {
    let config = LogConfig {
        // The records carry old timestamps (below): no time retention.
        retention_ms: None,
        dedup: Some(DedupConfig {
            window: Duration::from_secs(3600),
            max_ids: 1_000_000,
        }),
        ..LogConfig::default()
    };
    Log::open(dir, config).unwrap()
}

/// The child: runs a mirror or an import on the directory until killed.
#[test]
fn kill9_child() {
    let Ok(role) = std::env::var(CHILD) else {
        return;
    };
    let dir = std::env::var("KILL9_DIR").unwrap();
    let brokers = std::env::var("KAFKA_BROKERS").unwrap();
    let topic = std::env::var("KILL9_TOPIC").unwrap();
    if role == "mirror" {
        // A service: appends all the time while its mirror runs.
        let log = Log::open(&dir, LogConfig::default()).unwrap();
        let _mirror = Mirror::start(&log, MirrorConfig::new(&brokers, &topic)).unwrap();
        let mut next = log.end_offset();
        loop {
            let batch = (next..next + 100)
                .map(|n| {
                    Record::keyed(format!("k{}", n % 20), format!("v{n}"))
                        .with_header("n", n.to_string())
                })
                .collect();
            log.append_batch(batch).unwrap();
            next += 100;
            // About 10,000 records a second.
            std::thread::sleep(Duration::from_millis(10));
        }
    } else {
        let log = import_log(Path::new(&dir));
        let mut config = ImportConfig::new(&brokers, &topic);
        config.group = std::env::var("KILL9_GROUP").unwrap();
        let _import = Import::start(&log, config).unwrap();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

fn spawn_child(role: &str, dir: &Path, brokers: &str, topic: &str, group: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "kill9_child", "--nocapture", "--test-threads=1"])
        .env(CHILD, role)
        .env("KILL9_DIR", dir)
        .env("KAFKA_BROKERS", brokers)
        .env("KILL9_TOPIC", topic)
        .env("KILL9_GROUP", group)
        .spawn()
        .unwrap()
}

fn kill9(mut child: Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    child.wait().unwrap();
}

#[test]
fn mirror_killed_at_random_moments_loses_nothing() {
    let Some(brokers) = brokers("kafka_kill9_mirror") else {
        return;
    };
    let mut rng = seed() | 1;
    let topic = unique_topic("kill9-mirror");
    create_topic(&brokers, &topic, 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..rounds() {
        let child = spawn_child("mirror", dir.path(), &brokers, &topic, "");
        std::thread::sleep(Duration::from_millis(next_delay(&mut rng, 300, 2_500)));
        kill9(child);
        let log = Log::open_read_only(dir.path()).unwrap();
        let at = log.cursors().unwrap().first().map_or(0, |c| c.position);
        eprintln!(
            "kafka_kill9 mirror: killed at cursor {at} of {} appended",
            log.end_offset()
        );
    }
    // Final drain.
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let appended = log.end_offset();
    let mirror = Mirror::start(&log, MirrorConfig::new(&brokers, &topic)).unwrap();
    assert!(mirror.wait_for(appended, Duration::from_secs(120)).unwrap());
    mirror.stop().unwrap();
    let records: Vec<StoredRecord> = log.reader(0).unwrap().map(|r| r.unwrap()).collect();
    let msgs = read_all(&brokers, &topic);
    let duplicates = check_mirrored(&msgs, &records);
    eprintln!(
        "kafka_kill9 mirror: {} rounds, {appended} records, {} messages in the topic, \
         {duplicates} duplicates (each equal to its original)",
        rounds(),
        msgs.len()
    );
}

#[test]
fn import_killed_at_random_moments_never_duplicates() {
    let Some(brokers) = brokers("kafka_kill9_import") else {
        return;
    };
    let mut rng = seed() | 1;
    let topic = unique_topic("kill9-import");
    let group = unique_topic("kill9-group");
    create_topic(&brokers, &topic, 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut produced_total = 0;
    for _ in 0..rounds() {
        // Timestamps from 2020, far older than the log's dedup window: a restart must
        // not rely on the window to recognize what it consumes again.
        let batch: Vec<_> = (produced_total..produced_total + RECORDS_PER_ROUND)
            .map(|i| ProducedRecord {
                timestamp: 1_600_000_000_000 + i as i64,
                ..produced(i)
            })
            .collect();
        // The child imports while the records arrive; the kill lands during or soon
        // after.
        let child = spawn_child("import", dir.path(), &brokers, &topic, &group);
        produce(&brokers, &topic, &batch);
        produced_total += RECORDS_PER_ROUND;
        std::thread::sleep(Duration::from_millis(next_delay(&mut rng, 1, 800)));
        kill9(child);
        let log = Log::open_read_only(dir.path()).unwrap();
        let committed = log.cursors().unwrap().first().map_or(0, |c| c.position);
        eprintln!(
            "kafka_kill9 import: killed with {} of {produced_total} in the log, committed \
             below log offset {committed}",
            log.end_offset()
        );
    }
    let log = import_log(dir.path());
    let mut config = ImportConfig::new(&brokers, &topic);
    config.group = group;
    let import = Import::start(&log, config).unwrap();
    assert!(import.wait_caught_up(Duration::from_secs(120)).unwrap());
    let stats = import.stop().unwrap();
    let records: Vec<StoredRecord> = log.reader(0).unwrap().map(|r| r.unwrap()).collect();
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for r in &records {
        let id = std::str::from_utf8(r.header("dedup.id").unwrap())
            .unwrap()
            .to_string();
        let (partition, offset) = id.rsplit_once('/').unwrap();
        let offset: i64 = offset.parse().unwrap();
        assert!(seen.insert(id.clone()), "{id} imported twice");
        if let Some(prev) = last.insert(partition.to_string(), offset) {
            assert!(prev < offset, "{id} after offset {prev}");
        }
    }
    assert_eq!(records.len() as u64, produced_total, "every record, once");
    eprintln!(
        "kafka_kill9 import: {} rounds, {produced_total} records, {} in the log, \
         final drain imported {} and recognized {} duplicates",
        rounds(),
        records.len(),
        stats.imported,
        stats.duplicates
    );
}
