//! The damage sweep of the fault suite (issue 9): every kind of file the engine writes
//! (segments, both indexes, every checkpoint, the queue's floor cursor, snapshot,
//! journal and redrive intent, the lane file and every lane's snapshot and journal,
//! the dead-letter and outcomes logs' files) × {flip a byte, zero 16 bytes,
//! truncate, remove} at positions spread over the file × {after a clean close, in a
//! crash image (SimFs power loss after a flush)}. Each case must not panic or hang,
//! never return wrong data, and either keep every durable record and ack or report
//! `Error::Corrupt` (from open, a read or `verify()`); a damaged floor must still
//! protect the unacked records from retention.
//!
//! Short form: `cargo test --test fault_damage_sweep`; `LOGQUEUE_FAULT_LONG=1` widens
//! the positions. Prints the cases per file kind and every violation.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fault::{image_of, plant, quiet_panics, run_case, Image, Outcome, Promises, Tally};
use common::queue_check::{check_queue, QueueSetup, Survives};
use common::queue_workload::{run_script, workload_queue_config, Driver, Script};
use logqueue::sim::SimFs;
use logqueue::Clock;
use logqueue::{
    CleanupPolicy, CompactionConfig, Error, FlushPolicy, Log, LogConfig, ManualClock, Offset,
    Queue, Record,
};

const SEED: u64 = 9;
const CLOCK_START: i64 = 1_000_000;

fn long() -> bool {
    std::env::var_os("LOGQUEUE_FAULT_LONG").is_some()
}

fn setup() -> QueueSetup {
    QueueSetup {
        dir: "/log".into(),
        name: "q".into(),
        segment_bytes: 1024,
        queue: workload_queue_config(),
        retention_check: true,
    }
}

/// The queue of the lanes images: three lanes of blocks of 4 offsets (every lane gets
/// records), without the outcome feed (lanes do not feed it).
fn lanes_setup() -> QueueSetup {
    let mut s = setup();
    s.queue.outcomes = false;
    s.queue.lanes = 3;
    s.queue.lane_block = 4;
    s
}

/// One image to damage, with what it promised and how to check it.
struct Subject {
    name: &'static str,
    setup: QueueSetup,
    image: Image,
    promises: Promises,
    clock_ms: i64,
    compacted: bool,
}

/// The queue workload, ending in a clean close or (after a flush and an unflushed
/// tail) in a power loss.
fn queue_image(crash: bool, lanes: bool) -> Subject {
    let fs = SimFs::new(SEED);
    let clock = ManualClock::new(CLOCK_START);
    let s = if lanes { lanes_setup() } else { setup() };
    let log = Log::open(&s.dir, s.log_config(&fs, &clock)).unwrap();
    let q = Queue::open(&log, &s.name, s.queue.clone()).unwrap();
    let mut d = Driver::new(&log, &q, &clock, Promises::default());
    let script = Script {
        first_sends: 80,
        later_sends: 30,
        tail: crash,
    };
    run_script(&mut d, script, true);
    assert_eq!(d.failed, None, "the workload runs without faults");
    let mut promises = d.p.clone();
    if crash {
        fs.crash();
    } else {
        d.flush().unwrap();
        promises = d.p.clone();
        drop(q);
        log.close().unwrap();
    }
    let name = match (lanes, crash) {
        (false, false) => "queue/clean",
        (false, true) => "queue/crash",
        (true, false) => "lanes/clean",
        (true, true) => "lanes/crash",
    };
    Subject {
        name,
        setup: s,
        image: image_of(&fs, "/log"),
        promises,
        clock_ms: clock.now_ms(),
        compacted: false,
    }
}

fn compact_config(fs: &SimFs, clock: &ManualClock) -> LogConfig {
    LogConfig {
        fs: Arc::new(fs.clone()),
        clock: Arc::new(clock.clone()),
        segment_bytes: 1024,
        index_interval_bytes: 256,
        flush: FlushPolicy::Manual,
        background: false,
        segment_ms: None,
        retention_ms: None,
        cleanup: CleanupPolicy::Compact,
        compaction: CompactionConfig {
            min_cleanable_dirty_ratio: 0.0,
            delete_retention: Duration::ZERO,
            ..CompactionConfig::default()
        },
        file_delete_delay: Duration::ZERO,
        ..LogConfig::default()
    }
}

/// A compacted log (for `cleaner-offset`): keyed records overwritten many times,
/// compacted, closed cleanly or crashed after a flush.
fn compacted_image(crash: bool) -> Subject {
    let fs = SimFs::new(SEED + 1);
    let clock = ManualClock::new(CLOCK_START);
    let log = Log::open("/log", compact_config(&fs, &clock)).unwrap();
    let mut p = Promises::default();
    for i in 0..160u64 {
        let v = format!("compact-{i:04}-{}", "c".repeat((i % 19) as usize)).into_bytes();
        let o = log
            .append(Record::keyed(format!("key{}", i % 12), v.clone()))
            .unwrap();
        p.appended(o, v);
    }
    log.flush().unwrap();
    p.flushed();
    let report = log.compact().unwrap();
    assert!(report.records_removed > 0, "{report:?}");
    if crash {
        for i in 0..10u64 {
            let v = format!("tail-{i}").into_bytes();
            p.maybe_values.insert(v.clone());
            log.append(Record::keyed(format!("key{i}"), v)).unwrap();
        }
        fs.crash();
    } else {
        log.close().unwrap();
    }
    Subject {
        setup: setup(),
        name: if crash {
            "compacted/crash"
        } else {
            "compacted/clean"
        },
        image: image_of(&fs, "/log"),
        promises: p,
        clock_ms: clock.now_ms(),
        compacted: true,
    }
}

/// Checks a compacted log: every record read is what was written at its offset, the
/// newest durable value of every key is there unless damage was reported, and a
/// compaction pass after the damage keeps both true.
fn check_compacted(fs: &SimFs, clock: &ManualClock, p: &Promises) -> Outcome {
    let mut out = Outcome::default();
    let corrupt = |e: &Error| matches!(e, Error::Corrupt { .. });
    let log = match Log::open("/log", compact_config(fs, clock)) {
        Ok(l) => l,
        Err(e) if corrupt(&e) => {
            out.report(format!("Log::open: {e}"));
            return out;
        }
        Err(e) => {
            out.violation(format!("Log::open failed without Corrupt: {e}"));
            return out;
        }
    };
    // Newest durable offset of every key.
    let mut newest: BTreeMap<Vec<u8>, Offset> = BTreeMap::new();
    for (o, v) in p.values.range(..p.flushed_end) {
        let key = format!("key{}", o % 12).into_bytes();
        let _ = v;
        newest.insert(key, *o);
    }
    for round in 0..2 {
        match log.verify() {
            Ok(r) if !r.corrupt.is_empty() => out.report(format!("verify: {:?}", r.corrupt[0])),
            Ok(_) => {}
            Err(e) if corrupt(&e) => out.report(format!("verify: {e}")),
            Err(e) => out.violation(format!("verify failed without Corrupt: {e}")),
        }
        let mut found: BTreeMap<Offset, Vec<u8>> = BTreeMap::new();
        match log.reader(log.start_offset()) {
            Ok(reader) => {
                for r in reader.take(100_000) {
                    match r {
                        Ok(r) => {
                            let v = r.value.clone().unwrap_or_default();
                            let right =
                                p.values.get(&r.offset) == Some(&v) || p.maybe_values.contains(&v);
                            if !right {
                                out.violation(format!(
                                    "wrong data at {} (round {round}): {:?}",
                                    r.offset,
                                    String::from_utf8_lossy(&v)
                                ));
                            }
                            found.insert(r.offset, v);
                        }
                        Err(e) if corrupt(&e) => {
                            out.report(format!("reader: {e}"));
                            break;
                        }
                        Err(e) => {
                            out.violation(format!("reader failed without Corrupt: {e}"));
                            break;
                        }
                    }
                }
            }
            Err(e) if corrupt(&e) => out.report(format!("reader: {e}")),
            Err(e) => out.violation(format!("reader failed: {e}")),
        }
        let lost: Vec<String> = newest
            .iter()
            .filter(|(_, o)| !found.contains_key(o))
            .map(|(k, o)| format!("{}@{o}", String::from_utf8_lossy(k)))
            .collect();
        if !lost.is_empty() && !out.was_reported() {
            out.violation(format!(
                "newest durable value of {} keys lost, nothing reported (round {round}): {}",
                lost.len(),
                lost.join(", ")
            ));
        }
        if round == 0 {
            match log.compact() {
                Ok(_) => {}
                Err(e) if corrupt(&e) => {
                    out.report(format!("compact: {e}"));
                    return out;
                }
                Err(e) => {
                    out.violation(format!("compact failed without Corrupt: {e}"));
                    return out;
                }
            }
        }
    }
    out
}

/// The kind of file at `path`, for the table.
fn kind_of(path: &str) -> String {
    let (area, name) = match path.rsplit_once('/') {
        Some((dir, name)) if dir.ends_with("/dead-letter") => ("dead-letter", name),
        Some((dir, name)) if dir.contains("/outcomes") => ("outcomes", name),
        Some((dir, name)) if dir.contains("/lane-") => ("queue lane", name),
        Some((dir, name)) if dir.contains("/queues/") => ("queue", name),
        // A queue's floor is a log cursor (`queues/<q>/floor` in earlier versions).
        Some((dir, name)) if dir.ends_with("/cursors") && name.ends_with(".cursor") => {
            ("log", "cursor")
        }
        Some((_, name)) => ("log", name),
        None => ("log", path),
    };
    let kind = if name.ends_with(".log") {
        "segment .log"
    } else if name.ends_with(".timeindex") {
        ".timeindex"
    } else if name.ends_with(".index") {
        ".index"
    } else if name.starts_with("journal-") {
        "journal-<gen>"
    } else {
        name
    };
    format!("{area}/{kind}")
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    Flip(usize),
    Zero16(usize),
    Truncate(usize),
    Remove,
}

/// Positions spread over the file and over its written (non-zero) prefix: start,
/// middle, end of each.
fn positions(bytes: &[u8]) -> Vec<usize> {
    let n = if long() { 96 } else { 8 };
    let used = bytes.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
    let mut out = Vec::new();
    for span in [bytes.len(), used] {
        if span == 0 {
            continue;
        }
        for i in 0..n {
            out.push(i * (span - 1) / (n - 1));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn damages(bytes: &[u8]) -> Vec<Damage> {
    let mut out = vec![Damage::Remove];
    for p in positions(bytes) {
        out.push(Damage::Flip(p));
        out.push(Damage::Zero16(p));
        out.push(Damage::Truncate(p));
    }
    out
}

fn apply(image: &Image, path: &str, damage: Damage) -> Image {
    let mut image = image.clone();
    match damage {
        Damage::Remove => {
            image.remove(path);
        }
        Damage::Flip(p) => image.get_mut(path).unwrap()[p] ^= 0xFF,
        Damage::Zero16(p) => {
            let b = image.get_mut(path).unwrap();
            let end = (p + 16).min(b.len());
            b[p..end].fill(0);
        }
        Damage::Truncate(p) => image.get_mut(path).unwrap().truncate(p),
    }
    image
}

fn check_subject(subject: &Subject, image: Image) -> Outcome {
    let promises = subject.promises.clone();
    let setup = subject.setup.clone();
    let compacted = subject.compacted;
    let clock_ms = subject.clock_ms;
    run_case(Duration::from_secs(60), move || {
        let fs = plant(&image, SEED);
        let clock = ManualClock::new(clock_ms);
        if compacted {
            check_compacted(&fs, &clock, &promises)
        } else {
            check_queue(&fs, &clock, &setup, &promises, Survives::PowerLoss)
        }
    })
}

#[test]
fn damage_sweep_over_every_file_kind() {
    let started = Instant::now();
    let subjects = [
        queue_image(false, false),
        queue_image(true, false),
        queue_image(false, true),
        queue_image(true, true),
        compacted_image(false),
        compacted_image(true),
    ];
    let mut tally = Tally::default();
    let mut baseline = Vec::new();
    quiet_panics(|| {
        for s in &subjects {
            // Violations of the undamaged image are counted once, not in every case.
            let clean = check_subject(s, s.image.clone());
            if !clean.violations.is_empty() || clean.was_reported() {
                baseline.push(format!("{}: {:?}", s.name, clean));
            }
            for (path, bytes) in &s.image {
                for damage in damages(bytes) {
                    let mut outcome = check_subject(s, apply(&s.image, path, damage));
                    outcome.violations.retain(|v| !clean.violations.contains(v));
                    let case = format!("{} {path} {damage:?}", s.name);
                    tally.add(&kind_of(path), &case, &outcome);
                }
            }
        }
    });
    for s in &subjects {
        let files: Vec<String> = s
            .image
            .iter()
            .map(|(p, b)| format!("{p} ({} B)", b.len()))
            .collect();
        println!(
            "image {}: {} files: {}",
            s.name,
            files.len(),
            files.join(", ")
        );
    }
    tally.print("damage sweep", 200);
    println!("elapsed {:?}", started.elapsed());
    println!("undamaged images: {baseline:#?}");
    assert!(
        baseline.is_empty(),
        "undamaged images must check clean: {baseline:#?}"
    );
    let kinds = [
        "log/segment .log",
        "log/.index",
        "log/.timeindex",
        "log/recovery-point",
        "log/log-start-offset",
        "log/cleaner-offset",
        "log/clean-shutdown",
        "queue/snapshot",
        "queue/journal-<gen>",
        "log/cursor",
        "queue/redrive",
        "queue/lanes",
        "queue lane/snapshot",
        "queue lane/journal-<gen>",
        "dead-letter/segment .log",
    ];
    let missing: Vec<&str> = kinds
        .iter()
        .filter(|k| !tally.has_kind(k))
        .copied()
        .collect();
    assert!(missing.is_empty(), "the workloads never wrote {missing:?}");
    assert!(
        tally.violations.is_empty(),
        "{} violations (listed above)",
        tally.violations.len()
    );
}
