//! `Queue::repair`, the explicit repair path for a queue whose state files
//! `Queue::open` refuses as `Corrupt` (issue 9): redeliver rather than lose. After a
//! repair every record that was not acked or dead-lettered is delivered; records
//! whose acks the damage hid may come again; the replaced files are saved; a crash at
//! any file operation of the repair leaves a queue that opens (repaired) or that a
//! second repair fixes.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::sim_config;
use logqueue::fs::FileSystem;
use logqueue::sim::{FaultKind, FaultMode, SimFs};
use logqueue::{Error, Log, ManualClock, Offset, Queue, QueueConfig, Record};

const NO_WAIT: Duration = Duration::ZERO;
const QDIR: &str = "/log/queues/q";
const RECORDS: u64 = 40;

fn cfg() -> QueueConfig {
    QueueConfig {
        visibility_timeout: Duration::from_secs(10),
        journal_bytes: 1 << 20,
        max_deliveries: Some(3),
        ..QueueConfig::default()
    }
}

fn open_log(fs: &SimFs, clock: &ManualClock) -> Log {
    Log::open("/log", sim_config(fs, clock, 4096)).unwrap()
}

/// What the workload settled: acked offsets and the dead-lettered one.
struct Settled {
    acked: BTreeSet<Offset>,
    dead: Offset,
}

/// Sends [`RECORDS`], acks the even ones below 30 (flushing, so the floor moves and
/// the `floor` file is written), dead-letters offset 1, leaves the rest unacked.
fn workload(fs: &SimFs, clock: &ManualClock) -> Settled {
    let log = open_log(fs, clock);
    let q = Queue::open(&log, "q", cfg()).unwrap();
    for i in 0..RECORDS {
        q.send(Record::new(format!("r{i}"))).unwrap();
    }
    let got = q.receive(RECORDS as usize, NO_WAIT).unwrap();
    assert_eq!(got.len() as u64, RECORDS);
    let mut acked = BTreeSet::new();
    for d in &got {
        let o = d.receipt.offset;
        if o == 0 || (o % 2 == 0 && o < 30) {
            q.ack(&d.receipt).unwrap();
            acked.insert(o);
        }
    }
    q.dead_letter(&got[1].receipt, "bad").unwrap();
    q.flush().unwrap();
    // Later acks, journaled after the flush (written to the OS, not synced).
    for d in &got {
        if d.receipt.offset == 31 || d.receipt.offset == 33 {
            q.ack(&d.receipt).unwrap();
            acked.insert(d.receipt.offset);
        }
    }
    drop(q);
    log.close().unwrap();
    Settled { acked, dead: 1 }
}

/// Delivers everything the queue holds now and after the leases expire, acking it.
fn drain(q: &Queue, clock: &ManualClock) -> BTreeSet<Offset> {
    let mut out = BTreeSet::new();
    for _ in 0..3 {
        loop {
            let got = q.receive(1000, NO_WAIT).unwrap();
            if got.is_empty() {
                break;
            }
            for d in got {
                assert_eq!(
                    d.record.value.as_deref(),
                    Some(format!("r{}", d.receipt.offset).as_bytes()),
                    "a delivered record has its own value"
                );
                out.insert(d.receipt.offset);
                q.ack(&d.receipt).unwrap();
            }
        }
        clock.advance(Duration::from_secs(60));
    }
    out
}

/// Every record not settled is delivered after the repair; none is lost, the dead
/// letter is not delivered again.
fn check_nothing_lost(delivered: &BTreeSet<Offset>, settled: &Settled, ctx: &str) {
    for o in 0..RECORDS {
        if !settled.acked.contains(&o) && o != settled.dead {
            assert!(delivered.contains(&o), "{ctx}: unacked record {o} lost");
        }
    }
    assert!(
        !delivered.contains(&settled.dead),
        "{ctx}: the dead-lettered record was delivered again"
    );
}

fn repair_and_drain(fs: &SimFs, clock: &ManualClock) -> (logqueue::RepairReport, BTreeSet<Offset>) {
    let log = open_log(fs, clock);
    let err = Queue::open(&log, "q", cfg()).expect_err("a damaged queue does not open");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    let report = Queue::repair(&log, "q").unwrap();
    let q = Queue::open(&log, "q", cfg()).unwrap();
    let delivered = drain(&q, clock);
    (report, delivered)
}

#[test]
fn a_lost_snapshot_is_rebuilt_from_the_floor_file_and_the_journal() {
    let fs = SimFs::new(1);
    let clock = ManualClock::new(0);
    let settled = workload(&fs, &clock);
    fs.remove_file(&Path::new(QDIR).join("snapshot")).unwrap();
    let (report, delivered) = repair_and_drain(&fs, &clock);
    assert!(!report.snapshot_kept);
    assert_eq!(report.floor_from, "durable floor");
    assert!(
        report.floor >= 1,
        "the durable floor moved past the first ack"
    );
    check_nothing_lost(&delivered, &settled, "lost snapshot");
    // The acks the newest journal holds are kept: those records are not delivered.
    for o in [31, 33] {
        assert!(
            !delivered.contains(&o),
            "ack of {o} in the journal was kept"
        );
    }
    let saved = fs.list(&report.saved_to).unwrap();
    assert!(saved.iter().any(|n| n.starts_with("journal-")), "{saved:?}");
}

#[test]
fn a_damaged_snapshot_and_floor_fall_back_to_the_log_start() {
    let fs = SimFs::new(2);
    let clock = ManualClock::new(0);
    let settled = workload(&fs, &clock);
    fs.corrupt_byte(Path::new(QDIR).join("snapshot"), 20, 0x40)
        .unwrap();
    // The queue's durable floor: its cursor (both slots).
    for at in [6, 32 + 6] {
        fs.corrupt_byte("/log/cursors/queue.q.cursor", at, 0x01)
            .unwrap();
    }
    // And the journal's first frame: no event survives, only the dead-letter log
    // says what was settled.
    let journal = fs
        .list(Path::new(QDIR))
        .unwrap()
        .into_iter()
        .find(|n| n.starts_with("journal-"))
        .unwrap();
    fs.corrupt_byte(Path::new(QDIR).join(journal), 1024 + 12, 0x08)
        .unwrap();
    let (report, delivered) = repair_and_drain(&fs, &clock);
    assert!(!report.snapshot_kept);
    assert_eq!(report.floor_from, "log start");
    assert_eq!(report.journal_events, 0, "{report:?}");
    assert!(report.journal_damage.is_some(), "{report:?}");
    // The dead letter is the one thing known settled: the floor stays at 0.
    assert_eq!(report.floor, 0);
    assert_eq!(report.dead_letters_reconciled, 1, "{report:?}");
    check_nothing_lost(&delivered, &settled, "damaged snapshot and floor");
    // The saved snapshot is the damaged one, byte for byte.
    let saved = fs.read_file(report.saved_to.join("snapshot")).unwrap();
    assert_ne!(
        saved,
        fs.read_file(Path::new(QDIR).join("snapshot")).unwrap()
    );
}

#[test]
fn a_journal_damaged_below_its_synced_length_keeps_the_snapshot_and_the_frames_before() {
    let fs = SimFs::new(3);
    let clock = ManualClock::new(0);
    let settled = workload(&fs, &clock);
    let journal = fs
        .list(Path::new(QDIR))
        .unwrap()
        .into_iter()
        .find(|n| n.starts_with("journal-"))
        .unwrap();
    let path = Path::new(QDIR).join(&journal);
    // The first frame after the 1024-byte header: below the synced length (flushed).
    fs.corrupt_byte(&path, 1024 + 12, 0x08).unwrap();
    let (report, delivered) = repair_and_drain(&fs, &clock);
    assert!(report.snapshot_kept);
    assert_eq!(report.journal_damage, Some((path, 1024)));
    check_nothing_lost(&delivered, &settled, "damaged journal");
}

#[test]
fn a_healthy_queue_repairs_to_the_same_state() {
    let fs = SimFs::new(4);
    let clock = ManualClock::new(0);
    let settled = workload(&fs, &clock);
    let log = open_log(&fs, &clock);
    let report = Queue::repair(&log, "q").unwrap();
    assert!(report.snapshot_kept);
    assert_eq!(report.journal_damage, None);
    let q = Queue::open(&log, "q", cfg()).unwrap();
    let delivered = drain(&q, &clock);
    check_nothing_lost(&delivered, &settled, "healthy");
    let expected: BTreeSet<Offset> = (0..RECORDS)
        .filter(|o| !settled.acked.contains(o) && *o != settled.dead)
        .collect();
    assert_eq!(delivered, expected, "no ack of a healthy queue is lost");
}

#[test]
fn an_open_queue_is_not_repaired() {
    let fs = SimFs::new(5);
    let clock = ManualClock::new(0);
    let log = open_log(&fs, &clock);
    let _q = Queue::open(&log, "q", cfg()).unwrap();
    assert!(matches!(
        Queue::repair(&log, "q"),
        Err(Error::Locked { .. })
    ));
    assert!(Queue::repair(&log, "nope").is_err());
}

#[test]
fn a_crash_at_every_operation_of_a_repair_loses_nothing() {
    let ops = {
        let fs = SimFs::new(6);
        let clock = ManualClock::new(0);
        workload(&fs, &clock);
        fs.remove_file(&Path::new(QDIR).join("snapshot")).unwrap();
        let log = open_log(&fs, &clock);
        let before = fs.op_count();
        Queue::repair(&log, "q").unwrap();
        fs.op_count() - before
    };
    assert!(ops > 5, "a repair does file work ({ops} ops)");
    for n in 1..=ops {
        for power_loss in [false, true] {
            let ctx = format!("crash at op {n} of {ops} (power loss: {power_loss})");
            let fs = SimFs::new(100 + n);
            let clock = ManualClock::new(0);
            let settled = workload(&fs, &clock);
            fs.remove_file(&Path::new(QDIR).join("snapshot")).unwrap();
            fs.sync_dir(Path::new(QDIR)).unwrap();
            {
                let log = open_log(&fs, &clock);
                if power_loss {
                    // Power lost at op n: what was not synced may be dropped or torn.
                    fs.crash_at_op(fs.op_count() + n);
                } else {
                    // The process stops at op n (every later operation fails), then
                    // is killed: everything written before stays.
                    fs.fail_after(n, FaultKind::Eio, FaultMode::Sticky);
                }
                let _ = Queue::repair(&log, "q");
                fs.kill();
            }
            fs.clear_faults();
            let log = open_log(&fs, &clock);
            let q = match Queue::open(&log, "q", cfg()) {
                Ok(q) => q,
                Err(Error::Corrupt { .. }) => {
                    Queue::repair(&log, "q").unwrap_or_else(|e| panic!("{ctx}: repair: {e}"));
                    Queue::open(&log, "q", cfg()).unwrap_or_else(|e| panic!("{ctx}: {e}"))
                }
                Err(e) => panic!("{ctx}: open after the crash: {e}"),
            };
            let delivered = drain(&q, &clock);
            check_nothing_lost(&delivered, &settled, &ctx);
        }
    }
}
