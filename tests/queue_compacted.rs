//! A queue over a compacted log: offsets compaction removed are never delivered, and a
//! lease held below a long removed stretch costs memory per record, not per offset of
//! the stretch (it used to cost 12 bytes per offset: 100 MB behind a 5,000,000-offset
//! stretch), before and after a reopen.

mod common;

use std::time::Duration;

use common::small_config;
use logqueue::{CleanupPolicy, CompactionConfig, Log, LogConfig, Queue, QueueConfig, Record};

const NO_WAIT: Duration = Duration::ZERO;
/// Versions of key b written between the first record and the tail: compaction
/// removes all but the last of those in sealed segments.
const STRETCH: u64 = 300_000;
/// Records of key c after the stretch (the active segment: not compacted).
const TAIL: u64 = 2_000;
/// What the queue's state may hold here: the slots of the few thousand records
/// past the stretch, not 12 bytes for each of the ~300,000 removed offsets (3.6 MB).
const SMALL_BYTES: usize = 1 << 20;

fn compacting() -> LogConfig {
    LogConfig {
        cleanup: CleanupPolicy::Compact,
        compaction: CompactionConfig {
            min_cleanable_dirty_ratio: 0.0,
            ..CompactionConfig::default()
        },
        ..small_config(64 << 10)
    }
}

/// `first` (key a) at 0, `STRETCH` versions of key b, then `TAIL` of key c;
/// compacted. Returns the log and the offsets it still holds after 0.
fn compacted_log(dir: &std::path::Path) -> (Log, Vec<u64>) {
    let log = Log::open(dir, compacting()).unwrap();
    log.append(Record::keyed("a", "first")).unwrap();
    for (key, mut left) in [("b", STRETCH), ("c", TAIL)] {
        while left > 0 {
            let n = left.min(1000);
            log.append_batch((0..n).map(|_| Record::keyed(key, "v")).collect())
                .unwrap();
            left -= n;
        }
    }
    let report = log.compact().unwrap();
    assert!(report.records_removed >= STRETCH / 2, "{report:?}");
    let kept: Vec<u64> = log.reader(1).unwrap().map(|r| r.unwrap().offset).collect();
    // A long removed stretch right after offset 0.
    assert!(kept[0] > STRETCH / 2, "{:?}", &kept[..3]);
    assert!(kept.len() < 20_000, "{}", kept.len());
    (log, kept)
}

/// Receives everything deliverable now, acking each as it comes; the offsets.
fn receive_and_ack_all(q: &Queue) -> Vec<u64> {
    let mut offsets = Vec::new();
    loop {
        let got = q.receive(1000, NO_WAIT).unwrap();
        if got.is_empty() {
            return offsets;
        }
        for d in &got {
            offsets.push(d.receipt.offset);
            q.ack(&d.receipt).unwrap();
        }
    }
}

#[test]
fn a_lease_below_a_compacted_stretch_costs_no_memory_per_removed_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (log, kept) = compacted_log(dir.path());
    let q = Queue::open(&log, "q", QueueConfig::default()).unwrap();
    let first = q.receive(1, NO_WAIT).unwrap();
    assert_eq!(first[0].receipt.offset, 0);
    // Crossing the stretch with the lease at 0 still out.
    assert_eq!(receive_and_ack_all(&q), kept);
    assert!(
        q.state_memory_bytes() < SMALL_BYTES,
        "{} bytes",
        q.state_memory_bytes()
    );
    let s = q.stats();
    assert_eq!((s.ack_floor, s.in_flight, s.backlog), (0, 1, 0));
    q.ack(&first[0].receipt).unwrap();
    assert_eq!(q.stats().ack_floor, log.end_offset());
    q.close().unwrap();
    log.close().unwrap();
}

#[test]
fn the_stretch_stays_cheap_through_a_reopen_with_the_lease_still_out() {
    let dir = tempfile::tempdir().unwrap();
    let (log, kept) = compacted_log(dir.path());
    let q = Queue::open(&log, "q", QueueConfig::default()).unwrap();
    let first = q.receive(1, NO_WAIT).unwrap();
    // One record past the stretch leased, the rest acked.
    let second = q.receive(1, NO_WAIT).unwrap();
    assert_eq!(second[0].receipt.offset, kept[0]);
    assert_eq!(receive_and_ack_all(&q), kept[1..]);
    q.close().unwrap();
    log.close().unwrap();

    // Replayed from the journal: the two leases come back as recovered leases
    // (one per receive), the acks hold, the stretch is a gap again.
    let log = Log::open(dir.path(), compacting()).unwrap();
    let q = Queue::open(&log, "q", QueueConfig::default()).unwrap();
    assert!(
        q.state_memory_bytes() < SMALL_BYTES,
        "{} bytes",
        q.state_memory_bytes()
    );
    let s = q.stats();
    assert_eq!((s.ack_floor, s.acked_total), (0, kept.len() as u64 - 1));
    let mut again = Vec::new();
    for _ in 0..4 {
        again.extend(q.receive(10, NO_WAIT).unwrap());
    }
    let offsets: Vec<u64> = again.iter().map(|d| d.receipt.offset).collect();
    assert_eq!(offsets, [0, kept[0]]);
    assert!(again.iter().all(|d| d.attempt == 2));
    assert_ne!(first[0].receipt, again[0].receipt);
    for d in &again {
        q.ack(&d.receipt).unwrap();
    }
    assert_eq!(q.stats().ack_floor, log.end_offset());
    assert!(q.receive(10, NO_WAIT).unwrap().is_empty());
    q.close().unwrap();
    log.close().unwrap();
}
