//! Queue on SimFs: power loss keeps flushed acks and dead letters, never leaves queue
//! state ahead of the log; a crash at every file-system operation of a scripted
//! workload always reopens to a consistent state.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{seeds, sim_config, with_context, Rng};
use logqueue::sim::SimFs;
use logqueue::{Log, ManualClock, Offset, Queue, QueueConfig, ReceiveOptions, Record};

const NO_WAIT: Duration = Duration::ZERO;

/// The queue's config: one lane, or `lanes` of blocks of 2 offsets (so that the
/// workload's few hundred records spread over every lane).
fn cfg(lanes: u32) -> QueueConfig {
    QueueConfig {
        visibility_timeout: Duration::from_secs(10),
        max_deliveries: Some(3),
        journal_bytes: 4096,
        lanes,
        lane_block: 2,
        ..QueueConfig::default()
    }
}

fn open(fs: &SimFs, clock: &ManualClock, lanes: u32) -> (Log, Queue) {
    let log = Log::open("/log", sim_config(fs, clock, 4096)).unwrap();
    let q = Queue::open(&log, "q", cfg(lanes)).unwrap();
    (log, q)
}

/// What the workload was promised.
#[derive(Default, Debug)]
struct Promised {
    /// Acked, then flushed successfully.
    acked: BTreeSet<Offset>,
    /// Dead-lettered, then flushed successfully.
    dead: BTreeSet<Offset>,
    /// Acked or dead-lettered at all (maybe not durable).
    settled: BTreeSet<Offset>,
}

/// Reopens after a crash and checks the promises: flushed acks and dead letters kept,
/// nothing delivered at or past the log's end, everything else delivered, and new
/// records appended after the crash delivered (no inherited ack).
fn check_after_crash(fs: &SimFs, clock: &ManualClock, p: &Promised, ctx: &str, lanes: u32) {
    let (log, q) = open(fs, clock, lanes);
    let end = log.end_offset();
    let floor = q.stats().ack_floor;
    assert!(floor <= end, "{ctx}: floor {floor} ahead of log end {end}");
    for o in &p.acked {
        assert!(
            *o < end,
            "{ctx}: flushed ack of {o} but the log ends at {end}"
        );
    }
    let dead_letters = || -> BTreeSet<Offset> {
        common::read_all(&q.dead_letters())
            .iter()
            .map(|r| {
                std::str::from_utf8(r.header("dlq.offset").unwrap())
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect()
    };
    assert!(
        dead_letters().is_superset(&p.dead),
        "{ctx}: flushed dead letters lost"
    );
    // Fresh records after the crash: a reused offset must not inherit an old ack.
    let fresh = q.send(Record::new("fresh")).unwrap();
    let mut delivered = BTreeSet::new();
    for _ in 0..6 {
        loop {
            let got = q.receive(100, NO_WAIT).unwrap();
            if got.is_empty() {
                break;
            }
            for d in got {
                assert!(d.receipt.offset <= fresh, "{ctx}: delivered past the end");
                delivered.insert(d.receipt.offset);
            }
        }
        clock.advance(Duration::from_secs(11));
    }
    // Records dead-lettered by the receives just above count as handled.
    let dl = dead_letters();
    assert!(
        delivered.contains(&fresh),
        "{ctx}: fresh record {fresh} never delivered"
    );
    for o in &p.acked {
        assert!(!delivered.contains(o), "{ctx}: flushed ack of {o} undone");
    }
    for o in &p.dead {
        assert!(
            !delivered.contains(o),
            "{ctx}: flushed dead letter {o} redelivered"
        );
    }
    for o in 0..end {
        if !p.settled.contains(&o) && !dl.contains(&o) {
            assert!(
                delivered.contains(&o),
                "{ctx}: record {o} lost by the queue"
            );
        }
    }
}

/// A random workload; returns what was promised. Stops at the first error (a crash).
fn workload(q: &Queue, clock: &ManualClock, rng: &mut Rng, steps: usize, p: &mut Promised) {
    let mut out = Vec::new();
    let mut pending_acks = Vec::new();
    let mut pending_dead = Vec::new();
    for _ in 0..steps {
        let r = (|| -> logqueue::Result<()> {
            match rng.below(10) {
                0..=2 => {
                    let n = rng.range(1, 5);
                    for _ in 0..n {
                        q.send(Record::new(rng.bytes(20)))?;
                    }
                }
                3..=4 => {
                    // A lane chosen by the seed (with lanes; ignored with one).
                    let mut options = ReceiveOptions::default();
                    options.lane = Some(rng.below(4) as u32);
                    let max = rng.range(1, 6) as usize;
                    out.extend(q.receive_with(max, NO_WAIT, &options)?)
                }
                5..=6 if !out.is_empty() => {
                    let d: logqueue::Delivery =
                        out.swap_remove(rng.below(out.len() as u64) as usize);
                    if q.ack(&d.receipt).is_ok() {
                        p.settled.insert(d.receipt.offset);
                        pending_acks.push(d.receipt.offset);
                    }
                }
                7 if !out.is_empty() => {
                    let d = out.swap_remove(0);
                    let _ = q.nack(&d.receipt, Duration::from_secs(rng.below(3)));
                }
                8 if !out.is_empty() => {
                    let d = out.swap_remove(0);
                    if q.dead_letter(&d.receipt, "test").is_ok() {
                        p.settled.insert(d.receipt.offset);
                        pending_dead.push(d.receipt.offset);
                    }
                }
                9 => {
                    q.flush()?;
                    p.acked.extend(pending_acks.drain(..));
                    p.dead.extend(pending_dead.drain(..));
                }
                _ => clock.advance(Duration::from_secs(rng.below(12))),
            }
            Ok(())
        })();
        if let Err(e) = r {
            if std::env::var_os("LOGQUEUE_DEBUG").is_some() {
                eprintln!("workload stops: {e}");
            }
            return;
        }
    }
}

#[test]
fn power_loss_keeps_flushed_acks_and_never_leaves_state_ahead() {
    power_loss(1);
}

#[test]
fn power_loss_with_three_lanes() {
    power_loss(3);
}

fn power_loss(lanes: u32) {
    for seed in seeds(40) {
        with_context(&format!("seed {seed}, {lanes} lanes"), || {
            let fs = SimFs::new(seed);
            let clock = ManualClock::new(0);
            let mut rng = Rng::new(seed);
            let mut p = Promised::default();
            {
                let (_log, q) = open(&fs, &clock, lanes);
                workload(&q, &clock, &mut rng, 200, &mut p);
                fs.crash();
            }
            check_after_crash(&fs, &clock, &p, &format!("seed {seed}"), lanes);
        });
    }
}

#[test]
fn crash_at_every_operation() {
    crash_at_every_op(1);
}

/// Lanes add file operations of their own (the lane file, each lane's directory,
/// snapshot, journal and cursor, created from the last lane to lane 0): a crash at
/// any of them reopens to a consistent state too.
#[test]
fn crash_at_every_operation_with_two_lanes() {
    crash_at_every_op(2);
}

fn crash_at_every_op(lanes: u32) {
    // LOGQUEUE_SEED picks another workload.
    let seed = std::env::var("LOGQUEUE_SEED").map_or(7, |s| s.parse().expect("a u64"));
    let count_ops = || {
        let fs = SimFs::new(seed);
        let clock = ManualClock::new(0);
        let (log, q) = open(&fs, &clock, lanes);
        let mut p = Promised::default();
        workload(&q, &clock, &mut Rng::new(seed), 120, &mut p);
        eprintln!("{lanes} lane(s): {} operations", fs.op_count());
        // Every lane has its floor cursor and settled records of its own (lane `i`
        // owns the offsets `o` with `(o / 2) % lanes == i`).
        assert_eq!(log.cursors().unwrap().len(), lanes as usize);
        for lane in 0..u64::from(lanes) {
            let own = p
                .settled
                .iter()
                .filter(|&&o| (o / 2) % u64::from(lanes) == lane);
            assert!(
                own.count() > 0,
                "lane {lane} settled nothing: {:?}",
                p.settled
            );
        }
        fs.op_count()
    };
    let total = count_ops();
    assert!(total > 50, "{total} ops");
    for n in 1..=total {
        with_context(
            &format!("crash at op {n} of {total}, {lanes} lanes"),
            || {
                let fs = SimFs::new(seed ^ n);
                let clock = ManualClock::new(0);
                let mut p = Promised::default();
                fs.crash_at_op(n);
                let opened = Log::open("/log", sim_config(&fs, &clock, 4096))
                    .and_then(|log| Queue::open(&log, "q", cfg(lanes)).map(|q| (log, q)));
                if let Ok((_log, q)) = opened {
                    workload(&q, &clock, &mut Rng::new(seed), 120, &mut p);
                }
                if fs.op_count() < n {
                    fs.crash();
                }
                fs.clear_faults();
                check_after_crash(&fs, &clock, &p, &format!("op {n}"), lanes);
            },
        );
    }
}
