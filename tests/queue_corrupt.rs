//! A record that cannot be read (corrupt durable data) is counted in
//! `corrupt_skipped` and passed; the queue never stalls on it.

mod common;

use std::time::Duration;

use common::{batches_of, sim_config};
use logqueue::sim::SimFs;
use logqueue::{Log, ManualClock, Queue, QueueConfig, Record};

#[test]
fn corrupt_records_are_skipped_and_counted() {
    let fs = SimFs::new(1);
    let clock = ManualClock::new(0);
    {
        let log = Log::open("/log", sim_config(&fs, &clock, 1 << 20)).unwrap();
        for v in ["a", "b", "c", "d"] {
            log.append(Record::new(v)).unwrap();
        }
        log.close().unwrap();
    }
    let seg = "/log/00000000000000000000.log";
    let batches = batches_of(&fs.read_file(seg).unwrap());
    assert_eq!(batches.len(), 4);
    fs.corrupt_byte(seg, batches[1].end - 2, 0xFF).unwrap();
    let log = Log::open("/log", sim_config(&fs, &clock, 1 << 20)).unwrap();
    let q = Queue::open(&log, "q", QueueConfig::default()).unwrap();
    let mut got = Vec::new();
    loop {
        let d = q.receive(1, Duration::ZERO).unwrap();
        if d.is_empty() {
            break;
        }
        q.ack(&d[0].receipt).unwrap();
        got.push(d[0].record.value.clone().unwrap());
    }
    assert_eq!(got, vec![b"a".to_vec(), b"c".to_vec(), b"d".to_vec()]);
    let s = q.stats();
    assert_eq!((s.corrupt_skipped, s.ack_floor, s.acked_total), (1, 4, 3));
    q.flush().unwrap();
    drop(q);
    // The count survives reopen.
    let q = Queue::open(&log, "q", QueueConfig::default()).unwrap();
    assert_eq!(q.stats().corrupt_skipped, 1);
}
