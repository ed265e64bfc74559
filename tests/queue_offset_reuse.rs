//! Promise 4: offsets reused after a truncation can never inherit an old ack — even
//! when the application appends to the reopened log before it reopens the queue.

mod common;

use std::time::Duration;

use common::sim_config;
use logqueue::fs::FileSystem;
use logqueue::sim::SimFs;
use logqueue::{Log, ManualClock, Queue, QueueConfig, Record};

const NO_WAIT: Duration = Duration::ZERO;

fn cfg() -> QueueConfig {
    QueueConfig {
        journal_bytes: 1 << 20,
        ..QueueConfig::default()
    }
}

#[test]
fn records_appended_before_the_queue_reopens_never_inherit_acks_of_lost_records() {
    let mut violations = Vec::new();
    for seed in 0..64u64 {
        let fs = SimFs::new(seed);
        let clock = ManualClock::new(0);
        {
            let log = Log::open("/log", sim_config(&fs, &clock, 4096)).unwrap();
            let q = Queue::open(&log, "q", cfg()).unwrap();
            q.flush().unwrap();
            for i in 0..10 {
                q.send(Record::new(format!("old-{i}"))).unwrap();
            }
            for d in q.receive(10, NO_WAIT).unwrap() {
                q.ack(&d.receipt).unwrap();
            }
            fs.crash(); // power loss: unsynced log records and journal frames may go
        }
        let log = Log::open("/log", sim_config(&fs, &clock, 4096)).unwrap();
        let kept = log.end_offset();
        for i in 0..10 {
            log.append(Record::new(format!("new-{i}"))).unwrap();
        }
        let q = Queue::open(&log, "q", cfg()).unwrap();
        let mut got = 0;
        loop {
            let batch = q.receive(100, NO_WAIT).unwrap();
            if batch.is_empty() {
                break;
            }
            for d in batch {
                if d.record
                    .value
                    .as_deref()
                    .is_some_and(|v| v.starts_with(b"new-"))
                {
                    got += 1;
                }
                q.ack(&d.receipt).unwrap();
            }
        }
        if got != 10 {
            violations.push(format!(
                "seed {seed}: {kept} old records kept, {got} of 10 new delivered"
            ));
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn a_damaged_crash_history_is_corrupt_and_a_lost_one_needs_a_repair() {
    let fs = SimFs::new(7);
    let clock = ManualClock::new(0);
    {
        let log = Log::open("/log", sim_config(&fs, &clock, 4096)).unwrap();
        let q = Queue::open(&log, "q", cfg()).unwrap();
        q.send(Record::new("a")).unwrap();
        q.flush().unwrap();
        fs.kill(); // a crash: the next open records a crash recovery
    }
    {
        let log = Log::open("/log", sim_config(&fs, &clock, 4096)).unwrap();
        let q = Queue::open(&log, "q", cfg()).unwrap(); // state now at epoch 1
        q.flush().unwrap();
        drop(q);
        log.close().unwrap();
    }
    let history = std::path::Path::new("/log/crash-history");
    let bytes = fs
        .read_file(history)
        .expect("a crash recovery was recorded");
    fs.corrupt_byte(history, 5, 0x01).unwrap();
    assert!(matches!(
        Log::open("/log", sim_config(&fs, &clock, 4096)),
        Err(logqueue::Error::Corrupt { .. })
    ));
    // Lost: the log opens, the queue (state at epoch 1) cannot tell what was reused.
    fs.remove_file(history).unwrap();
    let log = Log::open("/log", sim_config(&fs, &clock, 4096)).unwrap();
    assert!(matches!(
        Queue::open(&log, "q", cfg()),
        Err(logqueue::Error::Corrupt { .. })
    ));
    Queue::repair(&log, "q").unwrap();
    let q = Queue::open(&log, "q", cfg()).unwrap();
    let got = q.receive(10, NO_WAIT).unwrap();
    assert_eq!(got.len(), 1, "redelivered rather than lost");
    assert!(bytes.len() > 4);
}
