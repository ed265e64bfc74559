//! A queue over a compacted log: offsets compaction removed are never delivered, and a
//! lease held below a long removed stretch costs memory per record, not per offset of
//! the stretch (it used to cost 12 bytes per offset: 100 MB behind a 5,000,000-offset
//! stretch), before and after a reopen; and a crash at every file operation of a
//! workload across such a stretch reopens with every flushed ack kept and every other
//! record still deliverable.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{small_config, with_context};
use logqueue::sim::SimFs;
use logqueue::{
    CleanupPolicy, CompactionConfig, Log, LogConfig, ManualClock, Offset, Queue, QueueConfig,
    Record,
};

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

/// The queue's state holds less than [`SMALL_BYTES`].
fn assert_state_small(q: &Queue) {
    let bytes = q.state_memory_bytes();
    assert!(bytes < SMALL_BYTES, "{bytes} bytes of queue state");
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
    assert_state_small(&q);
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
    assert_state_small(&q);
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

/// The compacted log of the crash test, on `fs`: key a at 0, 3,000 versions of key b
/// (all but the last removed), 200 of key c after them.
fn sim_log(fs: &SimFs, clock: &ManualClock) -> logqueue::Result<Log> {
    let config = LogConfig {
        fs: Arc::new(fs.clone()),
        clock: Arc::new(clock.clone()),
        ..small_config(8 << 10)
    };
    Log::open(
        "/log",
        LogConfig {
            cleanup: CleanupPolicy::Compact,
            compaction: CompactionConfig {
                min_cleanable_dirty_ratio: 0.0,
                ..CompactionConfig::default()
            },
            ..config
        },
    )
}

fn build_sim_log(fs: &SimFs, clock: &ManualClock) -> Vec<Offset> {
    let log = sim_log(fs, clock).unwrap();
    log.append(Record::keyed("a", "first")).unwrap();
    for (key, batches) in [("b", 30), ("c", 2)] {
        for _ in 0..batches {
            log.append_batch((0..100).map(|_| Record::keyed(key, "v")).collect())
                .unwrap();
        }
    }
    log.compact().unwrap();
    log.close().unwrap();
    let log = sim_log(fs, clock).unwrap();
    let kept: Vec<Offset> = log.reader(0).unwrap().map(|r| r.unwrap().offset).collect();
    assert!(kept[1] > 1_000, "{:?}", &kept[..3]);
    log.close().unwrap();
    kept
}

fn crash_cfg() -> QueueConfig {
    QueueConfig {
        visibility_timeout: Duration::from_secs(10),
        // Small: the workload rotates the journal, so snapshots hold the gap too.
        journal_bytes: 4096,
        ..QueueConfig::default()
    }
}

/// Holds the lease at 0, then receives across the stretch in batches, acking all
/// but every seventh record and flushing every third batch; then acks the lease at 0
/// and flushes. Records each flushed ack in `flushed` and every ack in `acked`.
fn crash_workload(
    q: &Queue,
    flushed: &mut BTreeSet<Offset>,
    acked: &mut BTreeSet<Offset>,
) -> logqueue::Result<()> {
    let first = q.receive(1, NO_WAIT)?;
    let mut unflushed = Vec::new();
    for round in 0.. {
        let got = q.receive(20, NO_WAIT)?;
        if got.is_empty() {
            break;
        }
        for d in &got {
            if d.receipt.offset % 7 != 3 {
                q.ack(&d.receipt)?;
                acked.insert(d.receipt.offset);
                unflushed.push(d.receipt.offset);
            }
        }
        if round % 3 == 2 {
            q.flush()?;
            flushed.extend(unflushed.drain(..));
        }
    }
    if let Some(d) = first.first() {
        q.ack(&d.receipt)?;
        acked.insert(d.receipt.offset);
        unflushed.push(d.receipt.offset);
    }
    q.flush()?;
    flushed.extend(unflushed.drain(..));
    Ok(())
}

#[test]
fn a_crash_at_every_operation_across_a_compacted_stretch() {
    let clock = ManualClock::new(0);
    let setup = SimFs::new(1);
    let kept = build_sim_log(&setup, &clock);
    let setup_ops = setup.op_count();
    let total = {
        let log = sim_log(&setup, &clock).unwrap();
        let q = Queue::open(&log, "q", crash_cfg()).unwrap();
        crash_workload(&q, &mut BTreeSet::new(), &mut BTreeSet::new()).unwrap();
        setup.op_count() - setup_ops
    };
    assert!(total > 20, "{total} ops");
    for n in 1..=total {
        with_context(&format!("crash at op {n} of {total}"), || {
            let fs = SimFs::new(n);
            let clock = ManualClock::new(0);
            assert_eq!(build_sim_log(&fs, &clock), kept);
            fs.crash_at_op(fs.op_count() + n);
            let (mut flushed, mut acked) = (BTreeSet::new(), BTreeSet::new());
            if let Ok(log) = sim_log(&fs, &clock) {
                if let Ok(q) = Queue::open(&log, "q", crash_cfg()) {
                    let _ = crash_workload(&q, &mut flushed, &mut acked);
                }
            }
            fs.crash();
            fs.clear_faults();
            let log = sim_log(&fs, &clock).unwrap();
            let q = Queue::open(&log, "q", crash_cfg()).unwrap();
            assert_state_small(&q);
            clock.advance(Duration::from_secs(60));
            let mut delivered = BTreeSet::new();
            // A recovered lease is delivered alone: one receive each.
            for _ in 0..1000 {
                let got = q.receive(100, NO_WAIT).unwrap();
                if got.is_empty() {
                    break;
                }
                for d in got {
                    assert!(
                        kept.contains(&d.receipt.offset),
                        "{} was compacted",
                        d.receipt.offset
                    );
                    assert!(
                        !flushed.contains(&d.receipt.offset),
                        "flushed ack of {} lost",
                        d.receipt.offset
                    );
                    delivered.insert(d.receipt.offset);
                    q.ack(&d.receipt).unwrap();
                }
            }
            for o in &kept {
                assert!(
                    delivered.contains(o) || acked.contains(o),
                    "{o} neither acked before the crash nor delivered after it"
                );
            }
            assert_eq!(q.stats().ack_floor, log.end_offset());
        });
    }
}

/// Dead-lettering a record that compaction removed after it was delivered settles it
/// as gone: no letter that says nothing, not counted as dead-lettered, not delivered
/// again.
#[test]
fn dead_lettering_a_record_compacted_since_delivery_settles_it_as_gone() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), compacting()).unwrap();
    log.append(Record::keyed("a", "old")).unwrap();
    let q = Queue::open(&log, "q", QueueConfig::default()).unwrap();
    let d = q.receive(1, NO_WAIT).unwrap();
    assert_eq!(d[0].receipt.offset, 0);
    // Newer versions of key a, enough to seal segments; compaction removes 0.
    for _ in 0..20 {
        log.append_batch((0..500).map(|_| Record::keyed("a", "new")).collect())
            .unwrap();
    }
    log.compact().unwrap();
    assert_eq!(log.read(0).unwrap(), None);
    q.dead_letter(&d[0].receipt, "too late").unwrap();
    assert_eq!(
        q.dead_letters().end_offset(),
        0,
        "no letter for a removed record"
    );
    let s = q.stats();
    assert_eq!(s.dead_lettered_total, 0);
    let again = receive_and_ack_all(&q);
    assert!(!again.contains(&0));
    assert_eq!(q.stats().ack_floor, log.end_offset());
    q.close().unwrap();
    log.close().unwrap();
}
