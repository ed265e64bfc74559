//! `Queue::settle_into` (issue 13, item 2): outputs exactly once in the output log and
//! the input acked once, through redeliveries, stale leases, and a process kill or a
//! power loss at every file operation (both logs on one SimFs).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{sim_config, with_context};
use logqueue::sim::{FaultKind, FaultMode, SimFs};
use logqueue::{
    DedupConfig, Delivery, Error, Log, LogConfig, ManualClock, Queue, QueueConfig, Record, DEDUP_ID,
};

const NO_WAIT: Duration = Duration::ZERO;
const VISIBILITY: Duration = Duration::from_secs(10);

fn dedup() -> Option<DedupConfig> {
    Some(DedupConfig {
        window: Duration::from_secs(3600),
        max_ids: 10_000,
    })
}

fn qcfg() -> QueueConfig {
    QueueConfig {
        visibility_timeout: VISIBILITY,
        journal_bytes: 4096,
        ..QueueConfig::default()
    }
}

struct Pipeline {
    input: Log,
    out: Log,
    q: Queue,
}

fn open(fs: &SimFs, clock: &ManualClock) -> logqueue::Result<Pipeline> {
    let input = Log::open("/in", sim_config(fs, clock, 4096))?;
    let out = Log::open(
        "/out",
        LogConfig {
            dedup: dedup(),
            ..sim_config(fs, clock, 4096)
        },
    )?;
    let q = Queue::open(&input, "q", qcfg())?;
    Ok(Pipeline { input, out, q })
}

/// The transform: input `i<n>` gives `n % 3 + 1` outputs `o<n>-<k>`.
fn transform(d: &Delivery) -> Vec<Record> {
    let v = d.record.value.clone().unwrap();
    let n: u64 = std::str::from_utf8(&v[1..]).unwrap().parse().unwrap();
    (0..n % 3 + 1)
        .map(|k| Record::keyed(v.clone(), format!("o{n}-{k}")))
        .collect()
}

fn expected_outputs(inputs: u64) -> BTreeMap<String, usize> {
    (0..inputs)
        .flat_map(|n| (0..n % 3 + 1).map(move |k| (format!("o{n}-{k}"), 1)))
        .collect()
}

fn outputs(out: &Log) -> BTreeMap<String, usize> {
    let mut got = BTreeMap::new();
    for r in common::read_all(out) {
        assert!(r.header(DEDUP_ID).is_some());
        *got.entry(String::from_utf8(r.value.unwrap()).unwrap())
            .or_default() += 1;
    }
    got
}

fn drive(p: &Pipeline) -> logqueue::Result<()> {
    loop {
        let got = p.q.receive(3, NO_WAIT)?;
        if got.is_empty() {
            return p.q.flush();
        }
        for d in got {
            let records = transform(&d);
            let n = records.len() as u64;
            let range = p.q.settle_into(&d, &p.out, records)?;
            assert_eq!(range.end - range.start, n);
        }
    }
}

const INPUTS: u64 = 12;

fn setup(p: &Pipeline) {
    for n in 0..INPUTS {
        p.q.send(Record::new(format!("i{n}"))).unwrap();
    }
    p.input.flush().unwrap();
}

#[test]
fn outputs_are_appended_once_and_the_input_acked() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let p = open(&fs, &clock).unwrap();
    setup(&p);
    drive(&p).unwrap();
    assert_eq!(outputs(&p.out), expected_outputs(INPUTS));
    assert_eq!(p.q.stats().ack_floor, INPUTS);
}

#[test]
fn a_redelivery_finds_its_outputs_and_acks() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let p = open(&fs, &clock).unwrap();
    p.q.send(Record::new("i2")).unwrap();
    let first = p.q.receive(1, NO_WAIT).unwrap().remove(0);
    assert_eq!(
        p.q.settle_into(&first, &p.out, transform(&first)).unwrap(),
        0..3
    );
    // A second delivery of one input: the first consumer's lease runs out.
    p.q.send(Record::new("i1")).unwrap();
    let d = p.q.receive(1, NO_WAIT).unwrap().remove(0);
    clock.advance(VISIBILITY + Duration::from_secs(1));
    let again = p.q.receive(1, NO_WAIT).unwrap().remove(0);
    assert_eq!(again.receipt.offset, d.receipt.offset);
    // The stale consumer appends first; its ack is stale.
    assert!(matches!(
        p.q.settle_into(&d, &p.out, transform(&d)),
        Err(Error::StaleReceipt { .. })
    ));
    // The current one finds the outputs there and acks.
    assert_eq!(
        p.q.settle_into(&again, &p.out, transform(&again)).unwrap(),
        3..5
    );
    assert_eq!(p.out.end_offset(), 5);
    assert_eq!(p.q.stats().ack_floor, 2);
    assert_eq!(p.q.stats().in_flight, 0);
}

#[test]
fn without_a_dedup_window_on_the_output_nothing_happens() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let p = open(&fs, &clock).unwrap();
    let plain = Log::open("/plain", sim_config(&fs, &clock, 4096)).unwrap();
    p.q.send(Record::new("i0")).unwrap();
    let d = p.q.receive(1, NO_WAIT).unwrap().remove(0);
    assert!(matches!(
        p.q.settle_into(&d, &plain, transform(&d)),
        Err(Error::InvalidConfig(_))
    ));
    assert_eq!(plain.end_offset(), 0);
    assert_eq!(p.q.stats().in_flight, 1);
    p.q.ack(&d.receipt).unwrap();
}

#[test]
fn queues_of_one_name_over_different_logs_do_not_collide() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let out = Log::open(
        "/out",
        LogConfig {
            dedup: dedup(),
            ..sim_config(&fs, &clock, 4096)
        },
    )
    .unwrap();
    let mut total = 0;
    for dir in ["/a", "/b"] {
        let log = Log::open(dir, sim_config(&fs, &clock, 4096)).unwrap();
        for name in ["q", "r"] {
            let q = Queue::open(&log, name, qcfg()).unwrap();
            q.send(Record::new("i0")).unwrap();
            let d = q.receive(1, NO_WAIT).unwrap().remove(0);
            // Same input offset (0) and output index everywhere.
            let range = q.settle_into(&d, &out, vec![Record::new("x")]).unwrap();
            assert_eq!(range, total..total + 1);
            total += 1;
        }
    }
    assert_eq!(out.end_offset(), 4);
}

#[test]
fn an_empty_output_only_acks() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let p = open(&fs, &clock).unwrap();
    p.q.send(Record::new("i0")).unwrap();
    let d = p.q.receive(1, NO_WAIT).unwrap().remove(0);
    assert_eq!(p.q.settle_into(&d, &p.out, vec![]).unwrap(), 0..0);
    assert_eq!(p.q.stats().ack_floor, 1);
}

fn workload_ops() -> u64 {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let p = open(&fs, &clock).unwrap();
    setup(&p);
    let before = fs.op_count();
    drive(&p).unwrap();
    fs.op_count() - before
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill,
    PowerLoss,
}

fn run_with_fault(k: u64, seed: u64, fault: Fault) {
    let fs = SimFs::new(seed);
    let clock = ManualClock::new(0);
    {
        let p = open(&fs, &clock).unwrap();
        setup(&p);
        match fault {
            Fault::Kill => fs.fail_after(k, FaultKind::Eio, FaultMode::Sticky),
            Fault::PowerLoss => fs.crash_at_op(fs.op_count() + k),
        }
        let _ = drive(&p);
        match fault {
            Fault::Kill => fs.kill(),
            Fault::PowerLoss => fs.crash(),
        }
        fs.clear_faults();
    }
    let p = open(&fs, &clock).unwrap_or_else(|e| panic!("reopen: {e}"));
    drive(&p).unwrap_or_else(|e| panic!("drive after reopen: {e}"));
    assert_eq!(outputs(&p.out), expected_outputs(INPUTS));
    let s = p.q.stats();
    assert_eq!(s.ack_floor, INPUTS, "{s:?}");
    assert_eq!((s.in_flight, s.backlog), (0, 0), "{s:?}");
    // Each delivery's outputs are one batch: consecutive, in index order.
    let all = common::read_all(&p.out);
    for w in all.windows(2) {
        if w[0].key == w[1].key {
            assert_eq!(w[0].offset + 1, w[1].offset);
        }
    }
}

fn sweep(fault: Fault) {
    let ops = workload_ops();
    assert!(ops > 10, "{ops} ops");
    println!("{fault:?} at each of {ops} operations");
    let seeds: Vec<u64> = match (fault, std::env::var("LOGQUEUE_SEED")) {
        (Fault::PowerLoss, Ok(s)) => vec![s.parse().expect("LOGQUEUE_SEED must be a u64")],
        (Fault::PowerLoss, Err(_)) => (0..4).collect(),
        _ => vec![0],
    };
    for k in 1..=ops {
        for &base in &seeds {
            let seed = base * 1_000_003 + k;
            let ctx = format!("{fault:?} at op {k} of {ops}, LOGQUEUE_SEED={base}");
            with_context(&ctx, || run_with_fault(k, seed, fault));
        }
    }
}

#[test]
fn a_kill_at_every_file_operation_keeps_outputs_exactly_once() {
    sweep(Fault::Kill);
}

#[test]
fn a_power_loss_at_every_file_operation_keeps_outputs_exactly_once() {
    sweep(Fault::PowerLoss);
}
