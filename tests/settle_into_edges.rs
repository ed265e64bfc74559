//! Edges of the exactly-once steps (settle_into, the dedup window, the outcome feed)
//! that the other suites did not walk: an input lost after its outputs were made
//! durable, outputs with old timestamps, another spelling of the input's path, a
//! late settle of a dead-lettered input, and every file operation of settle_into
//! with the outcome feed on.

mod common;

use std::time::Duration;

use common::sim_config;
use logqueue::sim::SimFs;
use logqueue::{DedupConfig, Log, LogConfig, ManualClock, Queue, QueueConfig, Record};

const NO_WAIT: Duration = Duration::ZERO;

fn dedup() -> Option<DedupConfig> {
    Some(DedupConfig {
        window: Duration::from_secs(3600),
        max_ids: 10_000,
    })
}

fn qcfg() -> QueueConfig {
    QueueConfig {
        visibility_timeout: Duration::from_secs(10),
        journal_bytes: 4096,
        ..QueueConfig::default()
    }
}

/// The output log, with a dedup window.
fn open_out(fs: &SimFs, clock: &ManualClock) -> Log {
    let config = LogConfig {
        dedup: dedup(),
        ..sim_config(fs, clock, 4096)
    };
    Log::open("/out", config).unwrap()
}

/// The input log "/in" with the queue "q" of `config`, and the output log.
fn open_with(fs: &SimFs, clock: &ManualClock, config: QueueConfig) -> (Log, Log, Queue) {
    let input = Log::open("/in", sim_config(fs, clock, 4096)).unwrap();
    let out = open_out(fs, clock);
    let q = Queue::open(&input, "q", config).unwrap();
    (input, out, q)
}

fn open_pipeline(fs: &SimFs, clock: &ManualClock) -> (Log, Log, Queue) {
    open_with(fs, clock, qcfg())
}

fn values(log: &Log) -> Vec<String> {
    common::read_all(log)
        .into_iter()
        .map(|r| String::from_utf8(r.value.unwrap()).unwrap())
        .collect()
}

/// An input that was never flushed is delivered and settled into B (B is made
/// durable). Were the input left unsynced, a power loss could take it but not its
/// output; the producer's next record would reuse the offset, its settle_into would
/// find the lost record's ids in B's window and append nothing, and the flushed
/// input would be acked without its output. settle_into makes the input durable
/// before it appends: no seed loses the input, and every later record at a new
/// offset gets its own output.
#[test]
fn settle_into_makes_its_input_durable_before_its_outputs() {
    for seed in 0..16 {
        let fs = SimFs::new(seed);
        let clock = ManualClock::new(1_000);
        {
            let (_input, out, q) = open_pipeline(&fs, &clock);
            q.flush().unwrap();
            q.send(Record::new("x")).unwrap();
            let d = q.receive(1, NO_WAIT).unwrap().remove(0);
            assert_eq!(d.receipt.offset, 0);
            q.settle_into(&d, &out, vec![Record::new("out-of-x")])
                .unwrap();
            fs.crash();
        }
        let (input, out, q) = open_pipeline(&fs, &clock);
        assert_eq!(
            input.end_offset(),
            1,
            "seed {seed}: the settled input was lost"
        );
        assert_eq!(values(&out), vec!["out-of-x".to_string()], "seed {seed}");
        let offset = q.send(Record::new("y")).unwrap();
        assert_eq!(offset, 1);
        q.flush().unwrap();
        clock.advance(Duration::from_secs(11));
        let mut settled = 0;
        for _ in 0..10 {
            let got = q.receive(10, NO_WAIT).unwrap();
            if got.is_empty() {
                break;
            }
            for d in got {
                let value = String::from_utf8(d.record.value.clone().unwrap()).unwrap();
                q.settle_into(&d, &out, vec![Record::new(format!("out-of-{value}"))])
                    .unwrap();
                settled += 1;
            }
        }
        assert!(settled >= 1, "seed {seed}");
        assert_eq!(q.stats().ack_floor, 2, "seed {seed}");
        assert_eq!(
            values(&out),
            vec!["out-of-x".to_string(), "out-of-y".to_string()],
            "seed {seed}"
        );
    }
}

/// A transform that keeps the input's timestamp on its output (event time), for an
/// input older than the dedup window (a backlog): timed by its timestamp alone, the
/// output's id would never be in the window, and a redelivery (the lease ran out
/// after the append, before the ack) would append the output again. An id's time
/// is the later of its timestamp and its append time, in the live window and in the
/// one rebuilt at open.
#[test]
fn an_output_carrying_an_old_timestamp_is_not_appended_again_on_redelivery() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(10_000_000);
    let (_input, out, q) = open_pipeline(&fs, &clock);
    // Event time two hours ago; the window is one hour.
    q.send(Record::new("x").with_timestamp(10_000_000 - 7_200_000))
        .unwrap();
    let d = q.receive(1, NO_WAIT).unwrap().remove(0);
    let outputs =
        |d: &logqueue::Delivery| vec![Record::new("out-of-x").with_timestamp(d.record.timestamp)];
    // First consumer: its lease runs out while it works; the second gets the record.
    clock.advance(Duration::from_secs(11));
    let again = q.receive(1, NO_WAIT).unwrap().remove(0);
    assert!(q.settle_into(&d, &out, outputs(&d)).is_err(), "stale");
    q.settle_into(&again, &out, outputs(&again)).unwrap();
    assert_eq!(
        values(&out),
        vec!["out-of-x".to_string()],
        "one input, its output twice in B"
    );
    // The window rebuilt at open times the id the same way: a redelivery after a
    // restart (the same record, sent again and settled under the same offset's ids)
    // finds it.
    drop((out, q));
    let out = open_out(&fs, &clock);
    let again = out
        .append_idempotent(b"k", Record::new("old").with_timestamp(1))
        .unwrap();
    assert!(!again.duplicate);
    drop(out);
    let out = open_out(&fs, &clock);
    let retry = out
        .append_idempotent(b"k", Record::new("old").with_timestamp(1))
        .unwrap();
    assert!(
        retry.duplicate,
        "the rebuilt window lost an id with an old timestamp"
    );
    assert_eq!(out.end_offset(), 2);
}

/// The settle ids name the input log by its path, made absolute with `.` and
/// trailing separators dropped. Taken as spelled, the same log opened after a
/// restart as "/in/" instead of "/in" derived other ids: an input whose outputs
/// were durable in B but which was not acked (kill -9 between the two) got its
/// outputs appended a second time on redelivery.
#[test]
fn the_same_input_log_spelled_differently_after_a_restart_does_not_duplicate_outputs() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(1_000);
    {
        let (_input, out, q) = open_pipeline(&fs, &clock);
        q.send(Record::new("x")).unwrap();
        q.flush().unwrap();
        let d = q.receive(1, NO_WAIT).unwrap().remove(0);
        // The lease runs out while the consumer works: its settle_into appends the
        // outputs (durable) and its ack is stale; then the process is killed.
        clock.advance(Duration::from_secs(11));
        let _ = q.receive(1, NO_WAIT).unwrap();
        assert!(q
            .settle_into(&d, &out, vec![Record::new("out-of-x")])
            .is_err());
        fs.kill();
    }
    let input = Log::open("/in/", sim_config(&fs, &clock, 4096)).unwrap();
    let out = open_out(&fs, &clock);
    let q = Queue::open(&input, "q", qcfg()).unwrap();
    clock.advance(Duration::from_secs(11));
    let d = q.receive(1, NO_WAIT).unwrap().remove(0);
    assert_eq!(d.record.value.as_deref(), Some(&b"x"[..]));
    q.settle_into(&d, &out, vec![Record::new("out-of-x")])
        .unwrap();
    assert_eq!(
        values(&out),
        vec!["out-of-x".to_string()],
        "one input, two outputs"
    );
}

/// A lease runs out while the consumer works and, with `max_deliveries` 1, the
/// record is dead-lettered instead of redelivered. The late consumer's settle_into
/// appended the outputs before it found its receipt stale: B held the outputs of an
/// input whose outcome is `dead-lettered`. A receipt already stale appends nothing.
#[test]
fn a_stale_settle_into_of_a_dead_lettered_input_appends_nothing() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(1_000);
    let config = QueueConfig {
        max_deliveries: Some(1),
        ..qcfg()
    };
    let (_input, out, q) = open_with(&fs, &clock, config);
    q.send(Record::new("x")).unwrap();
    let d = q.receive(1, NO_WAIT).unwrap().remove(0);
    clock.advance(Duration::from_secs(11));
    assert!(q.receive(1, NO_WAIT).unwrap().is_empty());
    assert_eq!(q.stats().dead_lettered_total, 1);
    let r = q.settle_into(&d, &out, vec![Record::new("out-of-x")]);
    assert!(
        matches!(r, Err(logqueue::Error::StaleReceipt { .. })),
        "{r:?}"
    );
    assert_eq!(
        out.end_offset(),
        0,
        "the dead-lettered input has its outputs in B: {:?}",
        values(&out)
    );
}

// ---------------------------------------------------------------------------------
// settle_into with the outcome feed on, a crash at every file operation
// (tests/settle_into.rs runs without the feed, tests/queue_outcomes.rs without
// settle_into).

mod sweep {
    use super::*;
    use common::with_context;
    use logqueue::sim::{FaultKind, FaultMode};
    use logqueue::{OUTCOME, OUTCOME_OFFSET};
    use std::collections::BTreeMap;

    const INPUTS: u64 = 90;

    fn qcfg_feed() -> QueueConfig {
        QueueConfig {
            outcomes: true,
            journal_bytes: 4096,
            ..qcfg()
        }
    }

    fn open(fs: &SimFs, clock: &ManualClock) -> (Log, Log, Queue) {
        open_with(fs, clock, qcfg_feed())
    }

    fn drive(q: &Queue, out: &Log, clock: &ManualClock) -> logqueue::Result<()> {
        let mut idle = 0;
        while idle < 2 {
            let got = q.receive(3, NO_WAIT)?;
            if got.is_empty() {
                idle += 1;
                clock.advance(Duration::from_secs(11));
                continue;
            }
            idle = 0;
            for d in got {
                let v = String::from_utf8(d.record.value.clone().unwrap()).unwrap();
                let n: u64 = v[1..].parse().unwrap();
                let outs = (0..n % 3 + 1)
                    .map(|k| Record::keyed(v.clone(), format!("o{n}-{k}")))
                    .collect();
                // Every third input is first abandoned once (its lease runs out).
                if n.is_multiple_of(3) && d.receipt.attempt == 1 {
                    continue;
                }
                q.settle_into(&d, out, outs)?;
            }
        }
        q.flush()
    }

    fn setup(input: &Log, q: &Queue) {
        for n in 0..INPUTS {
            q.send(Record::new(format!("i{n}"))).unwrap();
        }
        input.flush().unwrap();
        q.flush().unwrap();
    }

    fn check(input: &Log, out: &Log, q: &Queue, ctx: &str) {
        let s = q.stats();
        assert_eq!((s.ack_floor, s.in_flight), (INPUTS, 0), "{ctx}: {s:?}");
        assert_eq!(input.end_offset(), INPUTS, "{ctx}");
        let mut got: BTreeMap<String, usize> = BTreeMap::new();
        for v in values(out) {
            *got.entry(v).or_default() += 1;
        }
        let want: BTreeMap<String, usize> = (0..INPUTS)
            .flat_map(|n| (0..n % 3 + 1).map(move |k| (format!("o{n}-{k}"), 1)))
            .collect();
        assert_eq!(got, want, "{ctx}: outputs");
        let mut outcomes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for r in common::read_all(&q.outcomes().unwrap()) {
            let o: u64 = std::str::from_utf8(r.header(OUTCOME_OFFSET).unwrap())
                .unwrap()
                .parse()
                .unwrap();
            let kind = String::from_utf8(r.header(OUTCOME).unwrap().to_vec()).unwrap();
            outcomes.entry(o).or_default().push(kind);
        }
        for o in 0..INPUTS {
            assert_eq!(
                outcomes.get(&o).cloned().unwrap_or_default(),
                vec!["acked".to_string()],
                "{ctx}: outcomes of offset {o}"
            );
        }
        assert_eq!(outcomes.len() as u64, INPUTS, "{ctx}: {outcomes:?}");
    }

    fn ops() -> u64 {
        let fs = SimFs::new(0);
        let clock = ManualClock::new(1_000);
        let (input, out, q) = open(&fs, &clock);
        setup(&input, &q);
        let before = fs.op_count();
        drive(&q, &out, &clock).unwrap();
        check(&input, &out, &q, "no fault");
        use logqueue::fs::FileSystem;
        let journals = fs.list(std::path::Path::new("/in/queues/q")).unwrap();
        assert!(
            !journals.contains(&"journal-00000000000000000001".to_string()),
            "the workload rotates the journal: {journals:?}"
        );
        fs.op_count() - before
    }

    fn run(k: u64, seed: u64, power_loss: bool) {
        let fs = SimFs::new(seed);
        let clock = ManualClock::new(1_000);
        {
            let (input, out, q) = open(&fs, &clock);
            setup(&input, &q);
            if power_loss {
                fs.crash_at_op(fs.op_count() + k);
            } else {
                fs.fail_after(k, FaultKind::Eio, FaultMode::Sticky);
            }
            let _ = drive(&q, &out, &clock);
            if power_loss {
                fs.crash();
            } else {
                fs.kill();
            }
            fs.clear_faults();
        }
        let ctx = format!("power loss {power_loss} at op {k}, seed {seed}");
        clock.advance(Duration::from_secs(11));
        let (input, out, q) = open(&fs, &clock);
        drive(&q, &out, &clock).unwrap_or_else(|e| panic!("{ctx}: drive: {e}"));
        check(&input, &out, &q, &ctx);
        q.close().unwrap();
        let q = Queue::open(&input, "q", qcfg_feed()).unwrap();
        check(&input, &out, &q, &format!("{ctx}, reopened"));
    }

    #[test]
    fn settle_into_with_the_outcome_feed_survives_a_crash_at_every_operation() {
        let n = ops();
        assert!(n > 20, "{n}");
        println!("{n} operations");
        for k in 1..=n {
            with_context(&format!("kill at op {k}"), || run(k, k, false));
            for base in 0..3 {
                let seed = base * 1_000_003 + k;
                with_context(&format!("power loss at op {k} seed {seed}"), || {
                    run(k, seed, true)
                });
            }
        }
    }
}
