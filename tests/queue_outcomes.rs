//! The outcome feed (issue 13, item 3): one outcome record per settled record in
//! `queues/<name>/outcomes/`, followed by producers with a cursor; each kind; the
//! feed switched on and off; fail-closed answers for a missing, damaged, behind or
//! foreign outcomes log; retention; and a process kill or power loss at every file
//! operation of a workload with acks, dead letters, expiry and purge (SimFs).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{read_all, sim_config, with_context};
use logqueue::fs::FileSystem;
use logqueue::sim::{FaultKind, FaultMode, SimFs};
use logqueue::{
    CursorConfig, DedupConfig, Error, Log, LogConfig, ManualClock, Queue, QueueConfig, Record,
    StoredRecord, CORRELATION_ID, EXPIRES_AT, OUTCOME, OUTCOME_ATTEMPTS, OUTCOME_OFFSET,
    OUTCOME_REASON,
};

const NO_WAIT: Duration = Duration::ZERO;
const VISIBILITY: Duration = Duration::from_secs(10);

fn qcfg() -> QueueConfig {
    QueueConfig {
        visibility_timeout: VISIBILITY,
        max_deliveries: Some(2),
        journal_bytes: 4096,
        outcomes: true,
        dead_letter_expired: false,
        ..QueueConfig::default()
    }
}

fn open_log(fs: &SimFs, clock: &ManualClock) -> Log {
    Log::open("/log", sim_config(fs, clock, 4096)).unwrap()
}

/// A log on a fresh SimFs and manual clock, and its queue "q" with the feed on.
fn sim_queue() -> (SimFs, ManualClock, Log, Queue) {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let log = open_log(&fs, &clock);
    let q = Queue::open(&log, "q", qcfg()).unwrap();
    (fs, clock, log, q)
}

fn header(r: &StoredRecord, name: &str) -> String {
    String::from_utf8(r.header(name).unwrap_or_default().to_vec()).unwrap()
}

/// `(offset, outcome, attempts, reason)` of every outcome, in feed order.
fn feed(q: &Queue) -> Vec<(u64, String, u32, String)> {
    read_all(&q.outcomes().expect("feed on"))
        .iter()
        .map(|r| {
            (
                header(r, OUTCOME_OFFSET).parse().unwrap(),
                header(r, OUTCOME),
                header(r, OUTCOME_ATTEMPTS).parse().unwrap(),
                header(r, OUTCOME_REASON),
            )
        })
        .collect()
}

#[test]
fn a_producer_follows_the_feed_with_a_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let q = Queue::open(&log, "mailer", qcfg()).unwrap();
    let feed_log = q.outcomes().unwrap();
    const N: u64 = 50;
    let follower = std::thread::spawn(move || {
        let cursor = feed_log
            .cursor("business", CursorConfig::default())
            .unwrap();
        let mut reader = feed_log.reader(cursor.position()).unwrap();
        let mut seen = Vec::new();
        while (seen.len() as u64) < N {
            let o = reader
                .next_blocking(Duration::from_secs(10))
                .unwrap()
                .expect("an outcome within 10 s");
            seen.push(header(&o, CORRELATION_ID));
            cursor.commit(o.offset + 1).unwrap();
        }
        (seen, cursor.position())
    });
    for i in 0..N {
        q.send(
            Record::keyed(format!("order-{i}"), "mail")
                .with_header(CORRELATION_ID, format!("c{i}")),
        )
        .unwrap();
        let d = q.receive(1, NO_WAIT).unwrap().remove(0);
        q.ack(&d.receipt).unwrap();
    }
    let (seen, position) = follower.join().unwrap();
    assert_eq!(seen, (0..N).map(|i| format!("c{i}")).collect::<Vec<_>>());
    assert_eq!(position, N);
}

#[test]
fn each_way_a_record_settles_has_its_outcome() {
    let (fs, clock, log, q) = sim_queue();
    let out = Log::open(
        "/out",
        LogConfig {
            dedup: Some(DedupConfig {
                window: Duration::from_secs(3600),
                max_ids: 100,
            }),
            ..sim_config(&fs, &clock, 4096)
        },
    )
    .unwrap();
    for i in 0..5 {
        q.send(Record::keyed(format!("k{i}"), "v").with_header(CORRELATION_ID, format!("c{i}")))
            .unwrap();
    }
    q.send(Record::new("short-lived").with_header(EXPIRES_AT, "1000"))
        .unwrap(); // 5
    q.send(Record {
        key: Some(b"k6".to_vec()),
        value: None,
        headers: Vec::new(),
        timestamp: None,
    })
    .unwrap(); // 6: a tombstone, settled without delivery and without outcome
    let got = q.receive(3, NO_WAIT).unwrap();
    q.ack(&got[0].receipt).unwrap(); // 0
    assert!(q.ack_many(&[got[1].receipt]).unwrap().is_empty()); // 1
    q.settle_into(&got[2], &out, vec![Record::new("x")])
        .unwrap(); // 2
    let got = q.receive(2, NO_WAIT).unwrap();
    q.dead_letter(&got[0].receipt, "cannot parse").unwrap(); // 3
    clock.advance(VISIBILITY); // 4's lease runs out; 5 expires
    let again = q.receive(1, NO_WAIT).unwrap();
    assert_eq!(again[0].attempt, 2);
    clock.advance(VISIBILITY);
    assert!(q.receive(5, NO_WAIT).unwrap().is_empty()); // 4: max_deliveries, 5, 6
    q.send(Record::new("never delivered")).unwrap(); // 7
    q.send(Record::new("leased")).unwrap(); // 8
    assert_eq!(q.receive(1, NO_WAIT).unwrap()[0].receipt.offset, 7);
    assert_eq!(q.purge().unwrap(), 2);
    let f = feed(&q);
    let want = |o: u64, kind: &str, attempts: u32, reason: &str| {
        (o, kind.to_string(), attempts, reason.to_string())
    };
    assert_eq!(
        f,
        vec![
            want(0, "acked", 1, ""),
            want(1, "acked", 1, ""),
            want(2, "acked", 1, ""),
            want(3, "dead-lettered", 1, "cannot parse"),
            want(4, "dead-lettered", 2, "max_deliveries"),
            want(5, "expired", 0, ""),
            want(7, "purged", 1, ""),
            want(8, "purged", 0, ""),
        ]
    );
    let records = read_all(&q.outcomes().unwrap());
    for r in &records[..5] {
        let o: u64 = header(r, OUTCOME_OFFSET).parse().unwrap();
        assert_eq!(
            r.key,
            Some(format!("k{o}").into_bytes()),
            "the record's key"
        );
        assert_eq!(header(r, CORRELATION_ID), format!("c{o}"));
    }
    assert_eq!(records[5].header(CORRELATION_ID), None);
    // Reopened: nothing is written again.
    q.close().unwrap();
    let q = Queue::open(&log, "q", qcfg()).unwrap();
    assert_eq!(feed(&q), f);
}

#[test]
fn an_expired_record_dead_lettered_is_dead_lettered_with_reason_expired() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let log = open_log(&fs, &clock);
    let config = QueueConfig {
        dead_letter_expired: true,
        ..qcfg()
    };
    let q = Queue::open(&log, "q", config).unwrap();
    q.send(Record::new("x").with_header(EXPIRES_AT, "1000"))
        .unwrap();
    clock.advance(Duration::from_secs(2));
    assert!(q.receive(1, NO_WAIT).unwrap().is_empty());
    assert_eq!(
        feed(&q),
        vec![(0, "dead-lettered".into(), 0, "expired".into())]
    );
}

#[test]
fn a_redriven_record_gets_its_own_outcome() {
    let (_fs, _clock, _log, q) = sim_queue();
    q.send(Record::new("job").with_header(CORRELATION_ID, "c-9"))
        .unwrap();
    let d = q.receive(1, NO_WAIT).unwrap().remove(0);
    q.dead_letter(&d.receipt, "downstream down").unwrap();
    assert_eq!(q.redrive(10).unwrap(), 1);
    let d = q.receive(1, NO_WAIT).unwrap().remove(0);
    assert_eq!(d.receipt.offset, 1);
    q.ack(&d.receipt).unwrap();
    let records = read_all(&q.outcomes().unwrap());
    let got: Vec<_> = records
        .iter()
        .map(|r| {
            (
                header(r, OUTCOME),
                header(r, OUTCOME_OFFSET),
                header(r, CORRELATION_ID),
            )
        })
        .collect();
    let s = |a: &str, b: &str| (a.to_string(), b.to_string(), "c-9".to_string());
    assert_eq!(got, vec![s("dead-lettered", "0"), s("acked", "1")]);
}

#[test]
fn the_feed_switched_on_for_an_existing_queue_and_off_again() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let log = open_log(&fs, &clock);
    let off = QueueConfig {
        outcomes: false,
        ..qcfg()
    };
    let settle_one = |q: &Queue, v: &str| {
        q.send(Record::new(v.to_string())).unwrap();
        let d = q.receive(1, NO_WAIT).unwrap().remove(0);
        q.ack(&d.receipt).unwrap();
    };
    let q = Queue::open(&log, "q", off.clone()).unwrap();
    assert!(q.outcomes().is_none());
    settle_one(&q, "before");
    q.close().unwrap();
    assert!(!fs.exists(std::path::Path::new("/log/queues/q/outcomes")));
    // On: the feed starts with the settlements after this open.
    let q = Queue::open(&log, "q", qcfg()).unwrap();
    settle_one(&q, "while on");
    // Acked, then the process dies before any flush: filled in or kept, once.
    drop(q);
    drop(log);
    fs.kill();
    let log = open_log(&fs, &clock);
    let q = Queue::open(&log, "q", qcfg()).unwrap();
    assert_eq!(feed(&q), vec![(1, "acked".into(), 1, String::new())]);
    q.close().unwrap();
    // Off: no feed, nothing appended; the log stays.
    let q = Queue::open(&log, "q", off.clone()).unwrap();
    assert!(q.outcomes().is_none());
    settle_one(&q, "while off");
    q.close().unwrap();
    // On again: continues from its end.
    let q = Queue::open(&log, "q", qcfg()).unwrap();
    settle_one(&q, "on again");
    assert_eq!(
        feed(&q),
        vec![
            (1, "acked".into(), 1, String::new()),
            (3, "acked".into(), 1, String::new())
        ]
    );
}

#[test]
fn switched_off_after_a_crash_the_open_still_reconciles_the_feed() {
    let (fs, clock, log, q) = sim_queue();
    q.send(Record::new("a")).unwrap();
    let d = q.receive(1, NO_WAIT).unwrap().remove(0);
    q.ack(&d.receipt).unwrap();
    // The outcome is lost, the ack is not (as a power loss can leave it).
    drop(q);
    drop(log);
    fs.kill();
    // (An empty outcomes log in place of the one holding the outcome.)
    let dir = std::path::Path::new("/log/queues/q/outcomes");
    fs.remove_dir_all(dir).unwrap();
    Log::open(dir, sim_config(&fs, &clock, 4096))
        .unwrap()
        .close()
        .unwrap();
    let off = QueueConfig {
        outcomes: false,
        ..qcfg()
    };
    let log = open_log(&fs, &clock);
    Queue::open(&log, "q", off).unwrap().close().unwrap();
    let q = Queue::open(&log, "q", qcfg()).unwrap();
    assert_eq!(feed(&q), vec![(0, "acked".into(), 1, String::new())]);
}

#[test]
fn a_missing_or_behind_outcomes_log_fails_the_open() {
    for damage in ["missing", "behind"] {
        let fs = SimFs::new(0);
        let clock = ManualClock::new(0);
        let log = open_log(&fs, &clock);
        let q = Queue::open(&log, "q", qcfg()).unwrap();
        for v in ["a", "b"] {
            q.send(Record::new(v)).unwrap();
            let d = q.receive(1, NO_WAIT).unwrap().remove(0);
            q.ack(&d.receipt).unwrap();
        }
        q.close().unwrap();
        // A snapshot that accounts for both outcomes.
        Queue::open(&log, "q", qcfg()).unwrap().close().unwrap();
        let dir = std::path::Path::new("/log/queues/q/outcomes");
        fs.remove_dir_all(dir).unwrap();
        if damage == "behind" {
            // An empty log in its place.
            Log::open(dir, sim_config(&fs, &clock, 4096))
                .unwrap()
                .close()
                .unwrap();
        }
        for on in [true, false] {
            let config = QueueConfig {
                outcomes: on,
                ..qcfg()
            };
            match Queue::open(&log, "q", config) {
                Err(Error::Corrupt { path, .. }) => assert!(
                    path.starts_with(dir),
                    "{damage}: names the outcomes log: {path:?}"
                ),
                other => panic!("{damage}, feed on {on}: {other:?}"),
            }
        }
        // The way back.
        Queue::repair(&log, "q").unwrap();
        let q = Queue::open(&log, "q", qcfg()).unwrap();
        assert_eq!(q.stats().ack_floor, 2, "{damage}: the acks kept");
        q.send(Record::new("c")).unwrap();
        let d = q.receive(1, NO_WAIT).unwrap().remove(0);
        q.ack(&d.receipt).unwrap();
        assert_eq!(feed(&q).last().unwrap().0, 2, "{damage}: the feed goes on");
    }
}

#[test]
fn deleting_the_queue_deletes_its_feed() {
    let (fs, _clock, log, q) = sim_queue();
    q.send(Record::new("a")).unwrap();
    let d = q.receive(1, NO_WAIT).unwrap().remove(0);
    q.ack(&d.receipt).unwrap();
    q.close().unwrap();
    Queue::delete(&log, "q").unwrap();
    assert!(!fs.exists(std::path::Path::new("/log/queues/q/outcomes")));
    let q = Queue::open(&log, "q", qcfg()).unwrap();
    assert_eq!(q.outcomes().unwrap().end_offset(), 0);
}

#[test]
fn a_foreign_record_in_the_outcomes_log_fails_the_open() {
    let (_fs, _clock, log, q) = sim_queue();
    q.outcomes()
        .unwrap()
        .append(Record::new("not an outcome"))
        .unwrap();
    q.close().unwrap();
    assert!(matches!(
        Queue::open(&log, "q", qcfg()),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn retention_deletes_old_outcomes_once_accounted_for() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    // Small batches make the outcomes log's segments small too.
    let config = LogConfig {
        max_batch_bytes: 4096,
        ..sim_config(&fs, &clock, 4096)
    };
    let log = Log::open("/log", config).unwrap();
    let config = QueueConfig {
        outcome_retention: Some(Duration::from_secs(60)),
        journal_bytes: 1 << 20,
        ..qcfg()
    };
    let q = Queue::open(&log, "q", config.clone()).unwrap();
    let settle = |n: usize| {
        for _ in 0..n {
            q.send(Record::new(vec![b'x'; 100])).unwrap();
            let d = q.receive(1, NO_WAIT).unwrap().remove(0);
            q.ack(&d.receipt).unwrap();
        }
    };
    settle(200);
    let outcomes = q.outcomes().unwrap();
    clock.advance(Duration::from_secs(120));
    settle(1);
    // Old, but the state accounts only for those before this open (none): kept.
    q.flush().unwrap();
    assert_eq!(outcomes.start_offset(), 0);
    q.close().unwrap();
    // The reopen accounts for them: retention deletes the old segments.
    let q = Queue::open(&log, "q", config).unwrap();
    let outcomes = q.outcomes().unwrap();
    assert!(outcomes.start_offset() > 0, "old outcomes deleted");
    assert_eq!(outcomes.end_offset(), 201);
    assert!(outcomes.start_offset() <= 200, "the newest is kept");
}

// ---- Crash sweeps ------------------------------------------------------------

const INPUTS: u64 = 10;

/// The workload: acks, an ack_many, a dead letter, max_deliveries, expiry, a
/// tombstone, a purge of a leased and a never-delivered record, then acks.
fn workload(log: &Log, q: &Queue, clock: &ManualClock) -> logqueue::Result<()> {
    let got = q.receive(3, NO_WAIT)?;
    q.ack(&got[0].receipt)?;
    q.ack_many(&[got[1].receipt, got[2].receipt])?;
    let got = q.receive(2, NO_WAIT)?;
    q.dead_letter(&got[0].receipt, "bad")?;
    clock.advance(VISIBILITY);
    q.receive(1, NO_WAIT)?; // redelivers the other one (attempt 2)
    clock.advance(VISIBILITY);
    q.receive(2, NO_WAIT)?; // max_deliveries, then records 5 (expired), 6 (tombstone)
    q.send(Record::new("p0"))?;
    q.send(Record::new("p1"))?;
    q.receive(1, NO_WAIT)?;
    q.purge()?;
    for i in 0..3 {
        q.send(Record::new(format!("after{i}")))?;
    }
    let got = q.receive(3, NO_WAIT)?;
    let receipts: Vec<_> = got.iter().map(|d| d.receipt).collect();
    q.ack_many(&receipts)?;
    // Enough single acks to fill the 4 KiB journal: a rotation (snapshot) happens.
    for i in 0..60 {
        q.send(Record::new(format!("more{i}")))?;
        let d = q.receive(1, NO_WAIT)?.remove(0);
        q.ack(&d.receipt)?;
    }
    log.flush()?;
    q.flush()
}

fn setup(log: &Log, q: &Queue) {
    for i in 0..INPUTS {
        let r = match i {
            5 => Record::new("ttl").with_header(EXPIRES_AT, "1000"),
            6 => Record {
                key: Some(b"t".to_vec()),
                value: None,
                headers: Vec::new(),
                timestamp: None,
            },
            _ => Record::keyed(format!("k{i}"), "v").with_header(CORRELATION_ID, format!("c{i}")),
        };
        q.send(r).unwrap();
    }
    log.flush().unwrap();
    q.flush().unwrap();
}

/// Receives and acks everything left (leases run out first).
fn drain(q: &Queue, clock: &ManualClock) -> logqueue::Result<()> {
    for _ in 0..10 {
        clock.advance(VISIBILITY);
        loop {
            let got = q.receive(16, NO_WAIT)?;
            if got.is_empty() {
                break;
            }
            for d in got {
                q.ack(&d.receipt)?;
            }
        }
    }
    q.flush()
}

/// Every record of the log (but tombstones) has exactly one outcome; dead letters
/// and `dead-lettered` outcomes name the same records; the queue is drained.
fn check(log: &Log, q: &Queue) {
    let end = log.end_offset();
    let s = q.stats();
    assert_eq!((s.ack_floor, s.in_flight, s.backlog), (end, 0, 0), "{s:?}");
    let mut count: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (o, kind, _, _) in feed(q) {
        count.entry(o).or_default().push(kind);
    }
    for o in 0..end {
        let tombstone = log.read(o).unwrap().is_some_and(|r| r.value.is_none());
        let kinds = count.get(&o).cloned().unwrap_or_default();
        let want = usize::from(!tombstone);
        assert_eq!(kinds.len(), want, "offset {o}: outcomes {kinds:?}");
    }
    // An outcome past the end names a record a power loss took from the log.
    let letters: Vec<u64> = read_all(&q.dead_letters())
        .iter()
        .map(|r| header(r, "dlq.offset").parse().unwrap())
        .filter(|&o| o < end)
        .collect();
    let dead: Vec<u64> = count
        .iter()
        .filter(|(&o, k)| o < end && k[0] == "dead-lettered")
        .map(|(&o, _)| o)
        .collect();
    assert_eq!(letters, dead, "dead letters and dead-lettered outcomes");
}

fn workload_ops() -> u64 {
    let (fs, clock, log, q) = sim_queue();
    setup(&log, &q);
    let before = fs.op_count();
    workload(&log, &q, &clock).unwrap();
    drain(&q, &clock).unwrap();
    check(&log, &q);
    let journals = fs.list(std::path::Path::new("/log/queues/q")).unwrap();
    assert!(
        !journals.contains(&"journal-00000000000000000001".to_string()),
        "the workload rotates the journal: {journals:?}"
    );
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
        let log = open_log(&fs, &clock);
        let q = Queue::open(&log, "q", qcfg()).unwrap();
        setup(&log, &q);
        match fault {
            Fault::Kill => fs.fail_after(k, FaultKind::Eio, FaultMode::Sticky),
            Fault::PowerLoss => fs.crash_at_op(fs.op_count() + k),
        }
        let _ = workload(&log, &q, &clock).and_then(|()| drain(&q, &clock));
        match fault {
            Fault::Kill => fs.kill(),
            Fault::PowerLoss => fs.crash(),
        }
        fs.clear_faults();
    }
    let log =
        Log::open("/log", sim_config(&fs, &clock, 4096)).unwrap_or_else(|e| panic!("log: {e}"));
    let q = Queue::open(&log, "q", qcfg()).unwrap_or_else(|e| panic!("reopen: {e}"));
    drain(&q, &clock).unwrap_or_else(|e| panic!("drain after reopen: {e}"));
    check(&log, &q);
    // And once more: a reopen writes nothing again.
    let before = feed(&q);
    q.close().unwrap();
    let q = Queue::open(&log, "q", qcfg()).unwrap();
    assert_eq!(feed(&q), before);
}

fn sweep(fault: Fault) {
    let ops = workload_ops();
    assert!(ops > 20, "{ops} ops");
    println!("{fault:?} at each of {ops} operations");
    let seeds: Vec<u64> = match (fault, std::env::var("LOGQUEUE_SEED")) {
        (Fault::PowerLoss, Ok(s)) => vec![s.parse().expect("LOGQUEUE_SEED must be a u64")],
        (Fault::PowerLoss, Err(_)) => (0..3).collect(),
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
fn a_kill_at_every_file_operation_keeps_one_outcome_per_settled_record() {
    sweep(Fault::Kill);
}

#[test]
fn a_power_loss_at_every_file_operation_keeps_one_outcome_per_settled_record() {
    sweep(Fault::PowerLoss);
}
