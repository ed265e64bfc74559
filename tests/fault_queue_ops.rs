//! Faults at every file operation of a scripted queue workload (issue 9, fault suite):
//! the workload (send, receive, ack, nack, extend, dead_letter, the `max_deliveries`
//! path, two redrive cycles, `delete_records_before`, flushes, an unflushed tail) runs
//! once on SimFs to count its file operations; then for every operation n it runs
//! again with, at n: a power loss (`SimFs::crash_at_op`), the death of the process (n
//! and every later operation fail, then `SimFs::kill`), one EIO, one ENOSPC (the
//! workload carries on after the failure; then the process dies). Reopened, the queue
//! must keep every promise of the calls that returned (flushed ones after a power
//! loss): no durable ack or dead letter undone, every record exactly one of acked or
//! dead-lettered, no record dead-lettered twice, unique redrive copies, no wrong data.
//!
//! `LOGQUEUE_FAULT_LONG=1` runs a larger workload, and its faults with four seeds of
//! power-loss outcomes. `LOGQUEUE_SEED` picks another seed for the crash outcomes.

mod common;

use std::time::{Duration, Instant};

use common::fault::{quiet_panics, run_case, Outcome, Promises, Tally};
use common::queue_check::{check_queue, QueueSetup, Survives};
use common::queue_workload::{run_script, workload_queue_config, Driver, Script};
use logqueue::sim::{FaultKind, FaultMode, SimFs};
use logqueue::{Log, ManualClock, Queue};

fn long() -> bool {
    std::env::var_os("LOGQUEUE_FAULT_LONG").is_some()
}

fn seed() -> u64 {
    std::env::var("LOGQUEUE_SEED").map_or(11, |s| s.parse().expect("LOGQUEUE_SEED: a u64"))
}

fn setup() -> QueueSetup {
    QueueSetup {
        dir: "/data/log".into(),
        name: "jobs".into(),
        segment_bytes: 1024,
        queue: workload_queue_config(),
        retention_check: true,
    }
}

fn script() -> Script {
    if long() {
        Script {
            first_sends: 60,
            later_sends: 20,
            tail: true,
        }
    } else {
        Script {
            first_sends: 30,
            later_sends: 8,
            tail: true,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    PowerLoss,
    Kill,
    Eio,
    NoSpace,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::PowerLoss => "power loss at op n",
            Fault::Kill => "kill -9 at op n",
            Fault::Eio => "EIO at op n, then kill",
            Fault::NoSpace => "ENOSPC at op n, then kill",
        }
    }
}

/// Opens the log and the queue and runs the script; returns the promises of the
/// calls that returned. `stop`: the script ends at the first failed call.
fn run_workload(fs: &SimFs, clock: &ManualClock, stop: bool) -> Promises {
    let s = setup();
    let Ok(log) = Log::open(&s.dir, s.log_config(fs, clock)) else {
        return Promises::default();
    };
    let Ok(q) = Queue::open(&log, &s.name, s.queue.clone()) else {
        return Promises::default();
    };
    let mut d = Driver::new(&log, &q, clock, Promises::default());
    run_script(&mut d, script(), stop);
    d.p
}

fn run_fault(fault: Fault, n: u64, seed: u64) -> Outcome {
    let fs = SimFs::new(seed ^ n.wrapping_mul(0x9E37_79B9));
    let clock = ManualClock::new(1_000_000);
    let level = match fault {
        Fault::PowerLoss => {
            fs.crash_at_op(n);
            Survives::PowerLoss
        }
        Fault::Kill => {
            fs.fail_after(n, FaultKind::Eio, FaultMode::Sticky);
            Survives::Kill
        }
        Fault::Eio => {
            fs.fail_after(n, FaultKind::Eio, FaultMode::Once);
            Survives::Kill
        }
        Fault::NoSpace => {
            fs.fail_after(n, FaultKind::NoSpace, FaultMode::Once);
            Survives::Kill
        }
    };
    let stop = matches!(fault, Fault::PowerLoss | Fault::Kill);
    let p = run_workload(&fs, &clock, stop);
    match fault {
        Fault::PowerLoss if fs.op_count() < n => fs.crash(),
        Fault::PowerLoss => {}
        _ => fs.kill(),
    }
    fs.clear_faults();
    check_queue(&fs, &clock, &setup(), &p, level)
}

#[test]
fn faults_at_every_queue_file_operation() {
    let started = Instant::now();
    let seed = seed();
    println!("fault_queue_ops: LOGQUEUE_SEED={seed}");
    let total = {
        let fs = SimFs::new(seed);
        let clock = ManualClock::new(1_000_000);
        let p = run_workload(&fs, &clock, true);
        assert!(
            !p.dead_returned.is_empty() && !p.redriven.is_empty(),
            "{p:?}"
        );
        fs.op_count()
    };
    // Without a fault the workload keeps its promises.
    let clean = run_case(Duration::from_secs(60), move || {
        let fs = SimFs::new(seed);
        let clock = ManualClock::new(1_000_000);
        let p = run_workload(&fs, &clock, true);
        fs.kill();
        check_queue(&fs, &clock, &setup(), &p, Survives::Kill)
    });
    let step = 1;
    println!("workload: {total} file operations, a fault at each");
    let mut tally = Tally::default();
    // The long form draws other power-loss outcomes (kept, dropped or torn writes)
    // from more seeds.
    let crash_seeds: Vec<u64> = if long() {
        (0..4).map(|i| seed + i).collect()
    } else {
        vec![seed]
    };
    quiet_panics(|| {
        for &crash_seed in &crash_seeds {
            for fault in [Fault::PowerLoss, Fault::Kill, Fault::Eio, Fault::NoSpace] {
                let mut n = 1;
                while n <= total + 1 {
                    let mut outcome = run_case(Duration::from_secs(60), move || {
                        run_fault(fault, n, crash_seed)
                    });
                    outcome.violations.retain(|v| !clean.violations.contains(v));
                    let case = format!("seed {crash_seed} op {n} of {total}");
                    tally.add(fault.name(), &case, &outcome);
                    n += step;
                }
            }
        }
    });
    tally.print(
        "faults at queue file operations (crash points per fault kind)",
        150,
    );
    println!("without faults: {clean:?}");
    println!("elapsed {:?}", started.elapsed());
    assert!(
        clean.violations.is_empty(),
        "the workload without faults: {:?}",
        clean.violations
    );
    assert!(
        tally.violations.is_empty(),
        "{} violations (listed above); replay with LOGQUEUE_SEED={seed}",
        tally.violations.len()
    );
}
