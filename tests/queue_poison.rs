//! A child process that aborts on a poison message, run again and again: the message is
//! dead-lettered after exactly `max_deliveries` crashes, and every other message is
//! acked once.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use logqueue::{FlushPolicy, Log, LogConfig, Queue, QueueConfig, Record};

const CHILD_ENV: &str = "LOGQUEUE_POISON_CHILD";
const TEST_NAME: &str = "poison_message_is_dead_lettered_after_max_deliveries_crashes";

fn log_config() -> LogConfig {
    LogConfig {
        flush: FlushPolicy::Manual,
        background: false,
        ..LogConfig::default()
    }
}

fn queue_config() -> QueueConfig {
    QueueConfig {
        max_deliveries: Some(3),
        ..QueueConfig::default()
    }
}

/// The worker: acks everything but the poison, on which it dies like a segfault would.
fn child(dir: &Path) {
    let log = Log::open(dir, log_config()).unwrap();
    let q = Queue::open(&log, "work", queue_config()).unwrap();
    loop {
        let got = q.receive(1, Duration::from_millis(50)).unwrap();
        if got.is_empty() {
            return;
        }
        for d in got {
            if d.record.value.as_deref() == Some(b"poison") {
                std::process::abort();
            }
            q.ack(&d.receipt).unwrap();
        }
    }
}

#[test]
fn poison_message_is_dead_lettered_after_max_deliveries_crashes() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), log_config()).unwrap();
        for v in ["a", "b", "poison", "c", "d"] {
            log.append(Record::keyed("k", v).with_header("trace", "t1"))
                .unwrap();
        }
        log.close().unwrap();
    }
    let mut crashes = 0;
    let mut clean = false;
    for _ in 0..10 {
        let status = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST_NAME, "--test-threads=1", "--nocapture"])
            .env(CHILD_ENV, dir.path())
            .status()
            .unwrap();
        if status.success() {
            clean = true;
            break;
        }
        crashes += 1;
    }
    assert!(clean, "the worker never got past the poison message");
    assert_eq!(crashes, 3, "one crash per delivery, max_deliveries = 3");
    let log = Log::open(dir.path(), log_config()).unwrap();
    let q = Queue::open(&log, "work", queue_config()).unwrap();
    let s = q.stats();
    assert_eq!(s.ack_floor, 5);
    assert_eq!(s.acked_total, 4);
    assert_eq!(s.dead_lettered_total, 1);
    let dl = q.dead_letters().read(0).unwrap().unwrap();
    assert_eq!(dl.value.as_deref(), Some(&b"poison"[..]));
    assert_eq!(dl.key.as_deref(), Some(&b"k"[..]));
    assert_eq!(dl.header("trace"), Some(&b"t1"[..]));
    assert_eq!(dl.header("dlq.offset"), Some(&b"2"[..]));
    assert_eq!(dl.header("dlq.attempts"), Some(&b"3"[..]));
    assert_eq!(dl.header("dlq.queue"), Some(&b"work"[..]));
    assert_eq!(dl.header("dlq.reason"), Some(&b"max_deliveries"[..]));
    assert_eq!(q.dead_letters().end_offset(), 1);
}
