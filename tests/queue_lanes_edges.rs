//! Edges of queues of several lanes (`QueueConfig::lanes`), from an adversarial
//! review: four defects it found (each test names what went wrong before the fix),
//! and paths the other lane suites do not walk (64 lanes, blocks of 2^30, a log
//! start moved into another lane's block, dead letters and `redrive_where` across
//! lanes, `ack_many` / `nack_many` / purge / redrive with a kill -9 or a power loss
//! at every file operation).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::drain_acking as drain;
use common::{batches_of, sim_config};
use logqueue::sim::SimFs;
use logqueue::{Error, Log, ManualClock, Offset, Queue, QueueConfig, Record};

const NO_WAIT: Duration = Duration::ZERO;

fn lanes(count: u32, block: u64) -> QueueConfig {
    QueueConfig {
        lanes: count,
        lane_block: block,
        max_deliveries: Some(3),
        ..QueueConfig::default()
    }
}

fn send_n(q: &Queue, n: u64) {
    for i in 0..n {
        q.send(Record::new(format!("job {i}"))).unwrap();
    }
}

/// A record of lane 1 (of two, blocks of 4) that cannot be read is counted once in
/// `corrupt_skipped` while the queue is open; reopening the queue (which replays
/// lane 1's journal) must give the same count. The journal event's range starts at
/// lane 1's cursor, which stands in lane 0's block (offsets 0..4): replayed before
/// the state knew its lane, every offset of the range was counted (5, and written
/// into the next snapshot).
#[test]
fn corrupt_skipped_is_the_same_after_a_reopen_replays_a_lane_journal() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    {
        let log = common::clocked_log(dir.path(), &clock, 1 << 20);
        for i in 0..8 {
            log.append(Record::new(format!("r{i}"))).unwrap();
        }
        log.close().unwrap();
    }
    let seg = dir.path().join("00000000000000000000.log");
    let batches = batches_of(&std::fs::read(&seg).unwrap());
    assert_eq!(batches.len(), 8);
    // Offset 4: the first record of lane 1.
    common::flip_bit(&seg, batches[4].end - 2, 3);
    let log = common::clocked_log(dir.path(), &clock, 1 << 20);
    let q = Queue::open(&log, "q", lanes(2, 4)).unwrap();
    let seen: BTreeSet<Offset> = drain(&q, 1).into_iter().collect();
    assert_eq!(seen, [0, 1, 2, 3, 5, 6, 7].into_iter().collect());
    let live = q.stats();
    assert_eq!(live.corrupt_skipped, 1, "live: {live:?}");
    q.close().unwrap();
    let inspected = Queue::inspect(&log, "q").unwrap();
    let q = Queue::open(&log, "q", lanes(2, 4)).unwrap();
    let reopened = q.stats();
    assert_eq!(
        (reopened.corrupt_skipped, inspected.corrupt_skipped),
        (1, 1),
        "after reopen: {reopened:?}; inspect: {inspected:?} (live it was {live:?})"
    );
}

/// `Queue::inspect` documents that damaged or missing state is `Corrupt`, as for
/// `Queue::open`. A lane whose files are gone (lane 0 has state) is `Corrupt` for
/// open; inspect must not read it as a fresh lane.
#[test]
fn inspect_of_a_lane_without_state_is_corrupt_as_open_is() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = common::clocked_log(dir.path(), &clock, 64 << 10);
    let q = Queue::open(&log, "q", lanes(2, 4)).unwrap();
    send_n(&q, 20);
    // Everything acked: inspect would show backlog 0.
    assert_eq!(drain(&q, 100).len(), 20);
    q.close().unwrap();
    let lane1 = dir.path().join("queues/q/lane-1");
    for entry in std::fs::read_dir(&lane1).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let r = Queue::open(&log, "q", lanes(2, 4));
    assert!(matches!(r, Err(Error::Corrupt { .. })), "open: {r:?}");
    let r = Queue::inspect(&log, "q");
    assert!(
        matches!(r, Err(Error::Corrupt { .. })),
        "inspect: {r:?} (open says Corrupt)"
    );
}

// ---------------------------------------------------------------------------------
// Passing: paths tests/queue_lanes.rs and queue_sim_crash.rs do not cover (64
// lanes, blocks of 2^30, a start moved into another lane's block, redrive_where over
// lanes, ack_many / nack_many / purge / redrive under kill -9 and power loss).
// ---------------------------------------------------------------------------------

fn small_journal(count: u32, block: u64) -> QueueConfig {
    QueueConfig {
        journal_bytes: 4096,
        max_in_flight: 10_000,
        ..lanes(count, block)
    }
}

/// 64 lanes of blocks of 1, and 2 lanes of blocks of 2^30 (lane 1 owns nothing
/// below 2^30): every record delivered once, before and after a reopen.
#[test]
fn extreme_layouts_deliver_every_record_once() {
    for (count, block) in [(64u32, 1u64), (64, 3), (2, 1 << 30), (64, 1 << 30)] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(0);
        let log = common::clocked_log(dir.path(), &clock, 4096);
        let q = Queue::open(&log, "q", small_journal(count, block)).unwrap();
        send_n(&q, 300);
        let mut seen = drain(&q, 7);
        seen.sort_unstable();
        assert_eq!(seen, (0..300).collect::<Vec<_>>(), "{count}x{block}");
        let s = q.stats();
        assert_eq!(
            (s.backlog, s.in_flight, s.ack_floor, s.acked_total),
            (0, 0, 300, 300)
        );
        send_n(&q, 50);
        // Half received and left leased, then a reopen: they come back.
        let mut got = Vec::new();
        while got.len() < 25 {
            got.extend(q.receive(25 - got.len(), NO_WAIT).unwrap());
        }
        q.close().unwrap();
        let q = Queue::open(&log, "q", small_journal(count, block)).unwrap();
        let mut seen = Vec::new();
        // Recovered leases come one per receive.
        for _ in 0..200 {
            let got = q.receive(100, NO_WAIT).unwrap();
            if got.is_empty() {
                break;
            }
            for d in got {
                seen.push(d.receipt.offset);
                q.ack(&d.receipt).unwrap();
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, (300..350).collect::<Vec<_>>(), "{count}x{block}");
        let s = q.stats();
        assert_eq!(
            (s.backlog, s.in_flight, s.ack_floor),
            (0, 0, 350),
            "{count}x{block}"
        );
        q.close().unwrap();
    }
}

/// `delete_records_before` moves the log's start past lane floors, into the middle of
/// another lane's block: each lane counts only its own records it never settled,
/// and delivers everything at or past the start once.
#[test]
fn a_start_moved_past_lane_floors_counts_only_each_lanes_own_records() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = common::clocked_log(dir.path(), &clock, 4096);
    let q = Queue::open(&log, "q", small_journal(2, 4)).unwrap();
    send_n(&q, 40);
    // Lane 1 (4..8, 12..16, ...) takes one record and acks it; lane 0 nothing.
    let mut options = logqueue::ReceiveOptions::default();
    options.lane = Some(1);
    let got = q.receive_with(1, NO_WAIT, &options).unwrap();
    assert_eq!(got[0].receipt.offset, 4);
    q.ack(&got[0].receipt).unwrap();
    q.flush().unwrap();
    // 0..14 gone: lane 0 never settled 0..4, 8..12 (8 records); lane 1 5..8, 12..14
    // (5 records).
    log.delete_records_before(14).unwrap();
    let mut seen = drain(&q, 5);
    seen.sort_unstable();
    assert_eq!(seen, (14..40).collect::<Vec<_>>());
    let s = q.stats();
    assert_eq!(s.skipped_by_retention, 13, "{s:?}");
    assert_eq!((s.backlog, s.in_flight, s.ack_floor), (0, 0, 40), "{s:?}");
    q.close().unwrap();
    let q = Queue::open(&log, "q", small_journal(2, 4)).unwrap();
    assert!(q.receive(100, NO_WAIT).unwrap().is_empty());
}

/// A compacted log where lane 1 (of two, blocks of 4) has its next record at 20 and
/// its blocks before it (4..8, 12..16) were compacted away, while lane 0's blocks
/// 8..12 and 16..20 are whole; 20..40 all kept. Clock fixed: the receiving thread
/// starts at lane 0 on every call.
fn compacted_gaps(dir: &std::path::Path, clock: &ManualClock) -> (Log, Vec<Offset>) {
    use logqueue::{CleanupPolicy, CompactionConfig, LogConfig};
    let config = LogConfig {
        cleanup: CleanupPolicy::Compact,
        compaction: CompactionConfig {
            min_cleanable_dirty_ratio: 0.0,
            ..CompactionConfig::default()
        },
        clock: std::sync::Arc::new(clock.clone()),
        ..common::small_config(256)
    };
    let log = Log::open(dir, config).unwrap();
    let key = |o: u64| match o {
        0..=7 | 12..=15 => "dup".to_string(),
        _ => format!("keep{o}"),
    };
    for o in 0..40 {
        log.append(Record::keyed(key(o), format!("v{o}"))).unwrap();
    }
    // The last "dup" goes after 0..40, so that every earlier one is removed.
    log.append(Record::keyed("dup", "last")).unwrap();
    for p in 0..10 {
        log.append(Record::keyed(format!("pad{p}"), "pad")).unwrap();
    }
    log.compact().unwrap();
    let left: Vec<Offset> = log.reader(0).unwrap().map(|r| r.unwrap().offset).collect();
    assert_eq!(&left[..6], &[8, 9, 10, 11, 16, 17], "{left:?}");
    assert!(left.contains(&20) && !left.contains(&12), "{left:?}");
    (log, left)
}

/// docs/queue.md, "Lanes": "a receive never returns nothing while records are
/// ready" (and `Queue::receive`: "it returns none only when none could be
/// delivered"). Over a compacted log, a lane's refill reads as many *records* as
/// there are offsets to its block's end, and they can all be other lanes' records:
/// the lane then reported nothing, and a receive that found lane 0 dry returned
/// nothing although lane 1 had record 20 ready. A consumer draining with
/// `receive(.., 0)` stopped there, with 12 records never delivered.
#[test]
fn a_receive_on_a_compacted_log_never_returns_nothing_while_a_lane_has_records_ready() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let (log, left) = compacted_gaps(dir.path(), &clock);
    let q = Queue::open(&log, "q", small_journal(2, 4)).unwrap();
    let mut seen = drain(&q, 1);
    seen.sort_unstable();
    let missed: Vec<Offset> = left.iter().copied().filter(|o| !seen.contains(o)).collect();
    let s = q.stats();
    assert!(
        missed.is_empty(),
        "receive returned nothing with {missed:?} ready (stats {s:?})"
    );
}

/// Records dead-lettered out of deliveries in every lane, redriven (filtered, then
/// all), delivered and acked once each; the dead-letter counts and the reconcile at
/// reopen agree across lanes.
#[test]
fn dead_letters_of_every_lane_redrive_once_and_reconcile_per_lane() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = common::clocked_log(dir.path(), &clock, 4096);
    let config = QueueConfig {
        max_deliveries: Some(1),
        visibility_timeout: Duration::from_secs(1),
        ..small_journal(3, 2)
    };
    let q = Queue::open(&log, "q", config.clone()).unwrap();
    send_n(&q, 30);
    let mut got = Vec::new();
    loop {
        let g = q.receive(100, NO_WAIT).unwrap();
        if g.is_empty() {
            break;
        }
        got.extend(g);
    }
    assert_eq!(got.len(), 30);
    clock.advance(Duration::from_secs(2));
    // Out of deliveries: dead-lettered by the next receives.
    assert!(q.receive(100, NO_WAIT).unwrap().is_empty());
    let s = q.stats();
    assert_eq!(
        (s.dead_lettered_total, s.in_flight, s.ack_floor),
        (30, 0, 30),
        "{s:?}"
    );
    assert_eq!(q.dead_letters().end_offset(), 30);
    q.close().unwrap();
    let q = Queue::open(&log, "q", config.clone()).unwrap();
    assert_eq!(q.stats().dead_lettered_total, 30);
    let even = |r: &logqueue::StoredRecord| {
        let o: u64 = std::str::from_utf8(r.header("dlq.offset").unwrap())
            .unwrap()
            .parse()
            .unwrap();
        o.is_multiple_of(2)
    };
    assert_eq!(q.redrive_where(100, even).unwrap(), 15);
    assert_eq!(q.redrive(100).unwrap(), 15);
    assert_eq!(q.redrive(100).unwrap(), 0);
    let mut seen = drain(&q, 4);
    seen.sort_unstable();
    assert_eq!(seen, (30..60).collect::<Vec<_>>());
    q.close().unwrap();
    let q = Queue::open(&log, "q", config).unwrap();
    let s = q.stats();
    assert_eq!(
        (s.dead_lettered_total, s.acked_total, s.ack_floor),
        (30, 30, 60),
        "{s:?}"
    );
    assert!(q.receive(100, NO_WAIT).unwrap().is_empty());
}

// ---------------------------------------------------------------------------------
// Process death (kill -9) at every file operation of a workload that uses the
// calls the lane crash tests do not: ack_many / nack_many spanning lanes, purge,
// redrive, dead-lettering out of deliveries.
// ---------------------------------------------------------------------------------

#[derive(Default, Debug)]
struct Settled {
    /// Acked or dead-lettered by a call that returned Ok (kill -9 keeps these).
    done: BTreeSet<Offset>,
    /// Every offset a call may have settled (even one that failed).
    maybe: BTreeSet<Offset>,
    /// Of `done`, those a later `flush` made durable (power loss keeps these).
    durable: BTreeSet<Offset>,
    /// Log end of purges that returned Ok (durable when they return).
    purged_to: Offset,
}

fn kill_cfg() -> QueueConfig {
    QueueConfig {
        visibility_timeout: Duration::from_secs(10),
        max_deliveries: Some(2),
        journal_bytes: 4096,
        lanes: 3,
        lane_block: 2,
        ..QueueConfig::default()
    }
}

fn kill_workload(
    log: &Log,
    q: &Queue,
    clock: &ManualClock,
    rng: &mut common::Rng,
    p: &mut Settled,
) {
    let mut out: Vec<logqueue::Delivery> = Vec::new();
    for _ in 0..140 {
        let r = (|| -> logqueue::Result<()> {
            match rng.below(14) {
                0..=2 => {
                    for _ in 0..rng.range(1, 6) {
                        q.send(Record::new(rng.bytes(16)))?;
                    }
                }
                3..=4 => out.extend(q.receive(rng.range(1, 8) as usize, NO_WAIT)?),
                5 if !out.is_empty() => {
                    let d = out.swap_remove(rng.below(out.len() as u64) as usize);
                    p.maybe.insert(d.receipt.offset);
                    q.ack(&d.receipt)?;
                    p.done.insert(d.receipt.offset);
                }
                6..=7 if !out.is_empty() => {
                    let n = rng.range(1, out.len() as u64 + 1) as usize;
                    let batch: Vec<_> = out.drain(..n).collect();
                    let receipts: Vec<_> = batch.iter().map(|d| d.receipt).collect();
                    p.maybe.extend(receipts.iter().map(|r| r.offset));
                    let stale = q.ack_many(&receipts)?;
                    for r in receipts.iter().filter(|r| !stale.contains(r)) {
                        p.done.insert(r.offset);
                    }
                }
                8 if !out.is_empty() => {
                    let n = rng.range(1, out.len() as u64 + 1) as usize;
                    let receipts: Vec<_> = out.drain(..n).map(|d| d.receipt).collect();
                    q.nack_many(&receipts, Duration::ZERO)?;
                }
                9 if !out.is_empty() => {
                    let d = out.swap_remove(0);
                    p.maybe.insert(d.receipt.offset);
                    q.dead_letter(&d.receipt, "test")?;
                    p.done.insert(d.receipt.offset);
                }
                10 => {
                    q.redrive(rng.range(1, 5) as usize)?;
                }
                11 if rng.below(4) == 0 => {
                    // The log's end as the purge sees it (no appends in between).
                    let to = log.end_offset();
                    p.maybe.extend(0..to);
                    q.purge()?;
                    p.purged_to = p.purged_to.max(to);
                    out.clear();
                }
                12 => {
                    q.flush()?;
                    p.durable.extend(p.done.iter().copied());
                }
                _ => clock.advance(Duration::from_secs(rng.below(12))),
            }
            Ok(())
        })();
        if r.is_err() {
            return;
        }
    }
}

fn kill_check(fs: &SimFs, clock: &ManualClock, p: &Settled, ctx: &str) {
    settled_check(fs, clock, &p.done, p, ctx)
}

fn settled_check(fs: &SimFs, clock: &ManualClock, kept: &BTreeSet<Offset>, p: &Settled, ctx: &str) {
    let log = Log::open("/log", sim_config(fs, clock, 4096)).unwrap();
    let q = Queue::open(&log, "q", kill_cfg())
        .unwrap_or_else(|e| panic!("{ctx}: reopen after kill -9: {e}"));
    let end = log.end_offset();
    let mut delivered = BTreeSet::new();
    for _ in 0..6 {
        loop {
            let got = q.receive(100, NO_WAIT).unwrap();
            if got.is_empty() {
                break;
            }
            for d in got {
                let o = d.receipt.offset;
                assert!(
                    !kept.contains(&o),
                    "{ctx}: {o} settled (Ok) but delivered again"
                );
                assert!(
                    o >= p.purged_to || o >= end,
                    "{ctx}: {o} purged but delivered again"
                );
                delivered.insert(o);
            }
        }
        clock.advance(Duration::from_secs(11));
    }
    let letters: BTreeSet<Offset> = common::read_all(&q.dead_letters())
        .iter()
        .map(|r| {
            std::str::from_utf8(r.header("dlq.offset").unwrap())
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    for o in 0..end {
        if !p.maybe.contains(&o) && !letters.contains(&o) {
            assert!(delivered.contains(&o), "{ctx}: record {o} lost");
        }
    }
}

#[test]
fn kill_at_every_operation_with_lanes_keeps_every_settlement() {
    let seed = std::env::var("LOGQUEUE_SEED").map_or(11, |s| s.parse().expect("a u64"));
    let total = {
        let fs = SimFs::new(seed);
        let clock = ManualClock::new(0);
        let log = Log::open("/log", sim_config(&fs, &clock, 4096)).unwrap();
        let q = Queue::open(&log, "q", kill_cfg()).unwrap();
        let mut p = Settled::default();
        kill_workload(&log, &q, &clock, &mut common::Rng::new(seed), &mut p);
        eprintln!("{} operations, {} settled", fs.op_count(), p.done.len());
        fs.op_count()
    };
    for n in 1..=total {
        common::with_context(&format!("kill at op {n} of {total}, seed {seed}"), || {
            let fs = SimFs::new(seed ^ n);
            let clock = ManualClock::new(0);
            let mut p = Settled::default();
            fs.fail_after(
                n,
                logqueue::sim::FaultKind::Eio,
                logqueue::sim::FaultMode::Sticky,
            );
            let opened = Log::open("/log", sim_config(&fs, &clock, 4096))
                .and_then(|log| Queue::open(&log, "q", kill_cfg()).map(|q| (log, q)));
            if let Ok((log, q)) = opened {
                kill_workload(&log, &q, &clock, &mut common::Rng::new(seed), &mut p);
            }
            fs.kill();
            fs.clear_faults();
            kill_check(&fs, &clock, &p, &format!("op {n}"));
        });
    }
}

/// A two-lane queue that lost both its `lanes` file and `lane-1/` opened as a queue
/// of one lane: lane 0's state counts lane 1's offsets below its cursor as done, so
/// lane 1's records that were never delivered were skipped without an error. The
/// lane cursor `queue-lane.1.q` still names the lost lane: `Corrupt`.
#[test]
fn a_queue_that_lost_its_lanes_file_and_lane_directory_is_not_a_one_lane_queue() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = common::clocked_log(dir.path(), &clock, 64 << 10);
    let q = Queue::open(&log, "q", lanes(2, 4)).unwrap();
    send_n(&q, 16);
    // Lane 0's records (0..4, 8..12) received and acked; lane 1's (4..8, 12..16) not.
    let mut options = logqueue::ReceiveOptions::default();
    options.lane = Some(0);
    let got: Vec<_> = q
        .receive_with(100, NO_WAIT, &options)
        .unwrap()
        .into_iter()
        .map(|d| d.receipt)
        .collect();
    let offsets: BTreeSet<Offset> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [0, 1, 2, 3, 8, 9, 10, 11].into_iter().collect());
    assert!(q.ack_many(&got).unwrap().is_empty());
    q.close().unwrap();
    let qdir = dir.path().join("queues/q");
    std::fs::remove_file(qdir.join("lanes")).unwrap();
    std::fs::remove_dir_all(qdir.join("lane-1")).unwrap();
    let cursors: Vec<String> = log.cursors().unwrap().into_iter().map(|c| c.name).collect();
    assert!(
        cursors.contains(&"queue-lane.1.q".to_string()),
        "{cursors:?}"
    );
    match Queue::open(&log, "q", QueueConfig::default()) {
        Err(Error::Corrupt { .. }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(q) => {
            let seen = drain(&q, 100);
            panic!(
                "opened as a queue of one lane: delivered {seen:?}; lane 1's 4..8 and 12..16 \
                 were never delivered (stats {:?})",
                q.stats()
            );
        }
    }
}

/// The same workload, power loss at every file operation: what a flush (or a purge)
/// made durable stays settled, nothing else is lost.
#[test]
fn power_loss_at_every_operation_with_lanes_keeps_every_flushed_settlement() {
    let seed = std::env::var("LOGQUEUE_SEED").map_or(11, |s| s.parse().expect("a u64"));
    let total = {
        let fs = SimFs::new(seed);
        let clock = ManualClock::new(0);
        let log = Log::open("/log", sim_config(&fs, &clock, 4096)).unwrap();
        let q = Queue::open(&log, "q", kill_cfg()).unwrap();
        let mut p = Settled::default();
        kill_workload(&log, &q, &clock, &mut common::Rng::new(seed), &mut p);
        fs.op_count()
    };
    for n in 1..=total {
        common::with_context(
            &format!("power loss at op {n} of {total}, seed {seed}"),
            || {
                let fs = SimFs::new(seed ^ n);
                let clock = ManualClock::new(0);
                let mut p = Settled::default();
                fs.crash_at_op(n);
                let opened = Log::open("/log", sim_config(&fs, &clock, 4096))
                    .and_then(|log| Queue::open(&log, "q", kill_cfg()).map(|q| (log, q)));
                if let Ok((log, q)) = opened {
                    kill_workload(&log, &q, &clock, &mut common::Rng::new(seed), &mut p);
                }
                if fs.op_count() < n {
                    fs.crash();
                }
                fs.clear_faults();
                let durable = p.durable.clone();
                settled_check(&fs, &clock, &durable, &p, &format!("op {n}"));
            },
        );
    }
}
