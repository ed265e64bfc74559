//! Real kill -9 loops on a queue (issue 9, fault suite). A child process (this test
//! binary run again: `--exact child_queue_worker --ignored`) runs threads doing send /
//! receive / ack / nack / extend / dead_letter / redrive / flush on the real file
//! system; the parent SIGKILLs it at a random moment, reopens and verifies, and runs
//! the next child on the same directory. Each child thread writes an external ledger
//! line before and after every call (one `write(2)` per line on a file opened
//! `O_APPEND`, which survives kill -9). After every round and after a final drain the
//! parent checks: every returned send is readable with its value; a record whose ack
//! (or dead letter) returned is never delivered again; attempts never go down; every
//! record ends exactly one of acked or dead-lettered, once; redrive copies are unique;
//! per-key order holds under `Ordering::PerKey`. Three variants: unordered, per key,
//! and unordered over three lanes.
//!
//! `LOGQUEUE_FAULT_ROUNDS` (default 30) sets the rounds per variant, `LOGQUEUE_SEED`
//! replays the kill timings and the children's choices (thread timing is not replayed).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fault::{dead_letter_offsets, print_violations};
use common::{small_config, Rng};
use logqueue::{
    Delivery, Log, LogConfig, Offset, Ordering, Queue, QueueConfig, Record, DLQ_REASON,
    REDRIVE_FROM,
};

const DIR_VAR: &str = "LOGQUEUE_KILL9Q_DIR";
const ROUND_VAR: &str = "LOGQUEUE_KILL9Q_ROUND";
const ORDER_VAR: &str = "LOGQUEUE_KILL9Q_ORDER";
const SEED_VAR: &str = "LOGQUEUE_KILL9Q_SEED";
const CONSUMERS: u64 = 3;
/// The producer stops here, so long runs stay bounded.
const MAX_RECORDS: u64 = 30_000;

fn log_config() -> LogConfig {
    small_config(16 << 10)
}

/// Which queue the loop runs: one lane unordered, one lane per key, or unordered
/// over three lanes (blocks of 64 offsets, so that every lane gets records).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Unordered,
    PerKey,
    Lanes,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Unordered => "unordered",
            Variant::PerKey => "per-key",
            Variant::Lanes => "lanes",
        }
    }

    fn from_name(name: &str) -> Variant {
        [Variant::Unordered, Variant::PerKey, Variant::Lanes]
            .into_iter()
            .find(|v| v.name() == name)
            .unwrap_or(Variant::Unordered)
    }

    fn per_key(self) -> bool {
        self == Variant::PerKey
    }
}

fn queue_config(variant: Variant) -> QueueConfig {
    let (lanes, lane_block) = match variant {
        Variant::Lanes => (3, 64),
        _ => (1, 1024),
    };
    QueueConfig {
        visibility_timeout: Duration::from_secs(2),
        max_deliveries: Some(4),
        ordering: if variant.per_key() {
            Ordering::PerKey
        } else {
            Ordering::Unordered
        },
        journal_bytes: 64 << 10,
        lanes,
        lane_block,
        ..QueueConfig::default()
    }
}

fn log_dir(base: &Path) -> PathBuf {
    base.join("log")
}

// ---------------------------------------------------------------------------------
// The child.

/// One thread's ledger: every line is numbered from a counter shared by the threads
/// of the process (taken when the line is written), then written with one write(2).
struct Ledger {
    file: std::fs::File,
    seq: Arc<AtomicU64>,
}

impl Ledger {
    fn open(base: &Path, round: u64, tid: u64, seq: Arc<AtomicU64>) -> Ledger {
        std::fs::create_dir_all(base.join("ledger")).unwrap();
        let path = base.join("ledger").join(format!("r{round:05}-t{tid}"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        Ledger { file, seq }
    }

    fn line(&mut self, text: &str) {
        let n = self.seq.fetch_add(1, AtomicOrdering::SeqCst);
        let l = format!("{n} {text}\n");
        self.file.write_all(l.as_bytes()).unwrap();
    }
}

fn producer(q: &Queue, log: &Log, mut ledger: Ledger, round: u64, mut rng: Rng, until: Instant) {
    let mut n = 0u64;
    while Instant::now() < until {
        if log.end_offset() < MAX_RECORDS {
            for _ in 0..rng.range(1, 4) {
                let v = format!("r{round}-n{n}");
                let key = format!("k{}", rng.below(6));
                n += 1;
                ledger.line(&format!("send-begin v={v} key={key}"));
                match q.send(Record::keyed(key.clone(), v.clone())) {
                    Ok(o) => ledger.line(&format!("send-ok off={o} v={v} key={key}")),
                    Err(e) => ledger.line(&format!("send-err v={v} e={}", word(&e))),
                }
            }
        }
        std::thread::sleep(Duration::from_millis(4));
    }
}

fn word(e: &logqueue::Error) -> String {
    e.to_string().replace(char::is_whitespace, "_")
}

fn settle(q: &Queue, ledger: &mut Ledger, d: &Delivery, rng: &mut Rng) {
    let (o, a) = (d.receipt.offset, d.attempt);
    let call = |ledger: &mut Ledger, what: &str, r: &dyn Fn() -> logqueue::Result<()>| {
        ledger.line(&format!("{what}-begin off={o} att={a}"));
        match r() {
            Ok(()) => ledger.line(&format!("{what}-ok off={o} att={a}")),
            Err(e) => ledger.line(&format!("{what}-err off={o} att={a} e={}", word(&e))),
        }
    };
    match rng.below(100) {
        0..=49 => call(ledger, "ack", &|| q.ack(&d.receipt)),
        50..=69 => {
            let delay = Duration::from_millis(rng.below(50));
            call(ledger, "nack", &|| q.nack(&d.receipt, delay));
        }
        70..=74 => {
            call(ledger, "ext", &|| {
                q.extend(&d.receipt, Duration::from_secs(1))
            });
            call(ledger, "ack", &|| q.ack(&d.receipt));
        }
        75..=92 => call(ledger, "dl", &|| q.dead_letter(&d.receipt, "kill9")),
        _ => {} // the lease runs out
    }
}

fn consumer(q: &Queue, mut ledger: Ledger, mut rng: Rng, until: Instant) {
    while Instant::now() < until {
        ledger.line("recv-begin");
        let got = match q.receive(8, Duration::from_millis(20)) {
            Ok(g) => g,
            Err(e) => {
                ledger.line(&format!("recv-err e={}", word(&e)));
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        for d in &got {
            let v = d.record.value.as_deref().map(String::from_utf8_lossy);
            ledger.line(&format!(
                "dlv off={} att={} v={}",
                d.receipt.offset,
                d.attempt,
                v.unwrap_or_default()
            ));
        }
        for d in &got {
            settle(q, &mut ledger, d, &mut rng);
        }
    }
}

fn maintenance(q: &Queue, mut ledger: Ledger, mut rng: Rng, until: Instant) {
    let mut i = 0u64;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(rng.range(10, 40)));
        i += 1;
        if i.is_multiple_of(3) {
            let max = rng.range(1, 10) as usize;
            ledger.line(&format!("redrive-begin max={max}"));
            match q.redrive(max) {
                Ok(n) => ledger.line(&format!("redrive-ok n={n}")),
                Err(e) => ledger.line(&format!("redrive-err e={}", word(&e))),
            }
        } else {
            ledger.line("flush-begin");
            match q.flush() {
                Ok(()) => ledger.line("flush-ok"),
                Err(e) => ledger.line(&format!("flush-err e={}", word(&e))),
            }
        }
    }
}

/// The child: opens the queue, prints `START`, works until killed (30 s at most).
#[test]
#[ignore = "run by the kill9 queue tests as a child process"]
fn child_queue_worker() {
    let Some(base) = std::env::var_os(DIR_VAR).map(PathBuf::from) else {
        return;
    };
    let num = |var: &str| -> u64 { std::env::var(var).unwrap().parse().unwrap() };
    let (round, seed) = (num(ROUND_VAR), num(SEED_VAR));
    let variant = Variant::from_name(std::env::var(ORDER_VAR).as_deref().unwrap_or(""));
    let log = Log::open(log_dir(&base), log_config()).unwrap();
    let q = Queue::open(&log, "q", queue_config(variant)).unwrap();
    println!("START");
    std::io::stdout().flush().unwrap();
    let seq = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(30);
    let rng = |tid: u64| Rng::new(seed ^ round.wrapping_mul(1_000_003) ^ tid);
    std::thread::scope(|s| {
        let ledger = |tid| Ledger::open(&base, round, tid, Arc::clone(&seq));
        let (q0, log0, l0, r0) = (&q, &log, ledger(0), rng(0));
        s.spawn(move || producer(q0, log0, l0, round, r0, until));
        for tid in 1..=CONSUMERS {
            let (qc, lc, rc) = (&q, ledger(tid), rng(tid));
            s.spawn(move || consumer(qc, lc, rc, until));
        }
        let (qm, lm, rm) = (&q, ledger(CONSUMERS + 1), rng(CONSUMERS + 1));
        s.spawn(move || maintenance(qm, lm, rm, until));
    });
}

// ---------------------------------------------------------------------------------
// The parent.

/// One ledger line: (round, seq) orders lines of different threads.
#[derive(Clone, Debug)]
struct Line {
    at: (u64, u64),
    event: String,
    fields: BTreeMap<String, String>,
}

impl Line {
    fn num(&self, k: &str) -> u64 {
        self.fields[k].parse().unwrap()
    }
}

fn parse_line(round: u64, l: &str) -> Option<Line> {
    let mut words = l.split(' ');
    let seq = words.next()?.parse().ok()?;
    let event = words.next()?.to_string();
    let fields = words
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Some(Line {
        at: (round, seq),
        event,
        fields,
    })
}

fn read_ledgers(base: &Path, round: u64) -> Vec<Line> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(base.join("ledger")) else {
        return out;
    };
    for e in entries {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if !name.starts_with(&format!("r{round:05}-")) {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap();
        // A line cut by the kill has no newline.
        for l in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            if let Some(line) = parse_line(round, l.trim_end()) {
                out.push(line);
            }
        }
    }
    out.sort_by_key(|l| l.at);
    out
}

/// Everything the parent knows, over all rounds.
#[derive(Default)]
struct History {
    lines: Vec<Line>,
    violations: Vec<String>,
    /// (round, seq) for the parent's own drain.
    parent_seq: u64,
}

impl History {
    /// Adds a violation `"<when>: <what>"` unless the same `<what>` was found before
    /// (a violation stays in the directory for every later round).
    fn violation(&mut self, v: String) {
        let what = |v: &str| {
            v.split_once(": ")
                .map_or(v.to_string(), |(_, w)| w.to_string())
        };
        if !self.violations.iter().any(|old| what(old) == what(&v)) {
            self.violations.push(v);
        }
    }

    fn with<'a>(&'a self, event: &'a str) -> impl Iterator<Item = &'a Line> + 'a {
        self.lines.iter().filter(move |l| l.event == event)
    }

    fn parent(&mut self, round: u64, text: String) {
        self.parent_seq += 1;
        if let Some(l) = parse_line(round, &format!("{} {text}", self.parent_seq)) {
            self.lines.push(l);
        }
    }
}

/// Checks the directory and the ledgers so far; returns the records in the log.
fn check(base: &Path, variant: Variant, h: &mut History, when: &str) -> u64 {
    let log = match common::open_log_retrying_locked(log_dir(base), log_config()) {
        Ok(l) => l,
        Err(e) => {
            h.violation(format!("{when}: Log::open failed: {e}"));
            return 0;
        }
    };
    match log.verify() {
        Ok(r) if r.corrupt.is_empty() => {}
        r => h.violation(format!("{when}: log verify: {r:?}")),
    }
    let mut records = BTreeMap::new();
    for r in log.reader(log.start_offset()).unwrap() {
        match r {
            Ok(r) => {
                records.insert(r.offset, r);
            }
            Err(e) => {
                h.violation(format!("{when}: reading the log: {e}"));
                break;
            }
        }
    }
    let mut found = Vec::new();
    for l in h.with("send-ok") {
        let o = l.num("off");
        let got = records.get(&o).and_then(|r| r.value.clone());
        if got.as_deref() != Some(l.fields["v"].as_bytes()) {
            found.push(format!(
                "{when}: send-ok of {} at {o}, the log holds {:?}",
                l.fields["v"],
                got.map(|v| String::from_utf8_lossy(&v).into_owned())
            ));
        }
    }
    for l in h.with("dlv") {
        let o = l.num("off");
        let got = records.get(&o).and_then(|r| r.value.clone());
        if got.as_deref() != Some(l.fields["v"].as_bytes()) {
            found.push(format!(
                "{when}: delivery of {o} held {}, the log {got:?}",
                l.fields["v"]
            ));
        }
    }
    check_redrive_copies(&records, &mut found, when);
    let q = match common::retry_locked(|| Queue::open(&log, "q", queue_config(variant))) {
        Ok(q) => q,
        Err(e) => {
            h.violation(format!("{when}: Queue::open failed: {e}"));
            return records.len() as u64;
        }
    };
    let (letters, err) = dead_letter_offsets(&q.dead_letters());
    if let Some(e) = err {
        found.push(format!("{when}: reading the dead-letter log: {e}"));
    }
    let mut dead: BTreeMap<Offset, u32> = BTreeMap::new();
    for (o, _) in &letters {
        *dead.entry(*o).or_default() += 1;
    }
    for (o, n) in &dead {
        if *n > 1 {
            found.push(format!("{when}: record {o} dead-lettered {n} times"));
        }
    }
    for l in h.with("dl-ok") {
        if !dead.contains_key(&l.num("off")) {
            found.push(format!(
                "{when}: dl-ok of {} but not in the dead-letter log",
                l.num("off")
            ));
        }
    }
    for l in h.with("ack-ok") {
        if dead.contains_key(&l.num("off")) {
            found.push(format!(
                "{when}: record {} acked (ack returned) and dead-lettered",
                l.num("off")
            ));
        }
    }
    check_deliveries(h, &mut found, when);
    if variant.per_key() {
        let max_deliveries: BTreeSet<Offset> = letters
            .iter()
            .filter(|(_, r)| r.header(DLQ_REASON) == Some(&b"max_deliveries"[..]))
            .map(|(o, _)| *o)
            .collect();
        check_per_key(h, &records, &max_deliveries, &mut found, when);
    }
    for v in found {
        h.violation(v);
    }
    records.len() as u64
}

fn check_redrive_copies(
    records: &BTreeMap<Offset, logqueue::StoredRecord>,
    found: &mut Vec<String>,
    when: &str,
) {
    let mut copies: BTreeMap<Vec<u8>, Offset> = BTreeMap::new();
    for r in records.values() {
        let froms: Vec<&[u8]> = r
            .headers
            .iter()
            .filter(|h| h.key == REDRIVE_FROM)
            .map(|h| h.value.as_slice())
            .collect();
        if froms.len() > 1 {
            found.push(format!(
                "{when}: copy at {} has {} redrive.from headers",
                r.offset,
                froms.len()
            ));
        }
        if let Some(from) = froms.last() {
            if let Some(first) = copies.insert(from.to_vec(), r.offset) {
                found.push(format!(
                    "{when}: dead letter {} redriven twice (at {first} and {})",
                    String::from_utf8_lossy(from),
                    r.offset
                ));
            }
        }
    }
}

/// A record whose ack or dead letter returned is never delivered again; attempts only
/// grow across rounds and never repeat.
fn check_deliveries(h: &History, found: &mut Vec<String>, when: &str) {
    let mut done: BTreeMap<Offset, (u64, &str)> = BTreeMap::new();
    for l in h.with("ack-ok").chain(h.with("dl-ok")) {
        let e = done.entry(l.num("off")).or_insert((u64::MAX, ""));
        if l.num("att") < e.0 {
            *e = (
                l.num("att"),
                if l.event == "ack-ok" {
                    "acked"
                } else {
                    "dead-lettered"
                },
            );
        }
    }
    let mut attempts: BTreeMap<Offset, Vec<(u64, u64)>> = BTreeMap::new();
    for l in h.with("dlv") {
        let (o, a) = (l.num("off"), l.num("att"));
        if let Some((da, what)) = done.get(&o) {
            if a > *da {
                found.push(format!(
                    "{when}: record {o} {what} at attempt {da} (the call returned), delivered again with attempt {a}"
                ));
            }
        }
        attempts.entry(o).or_default().push((l.at.0, a));
    }
    for (o, seen) in attempts {
        let mut by_attempt = BTreeSet::new();
        for (round, a) in &seen {
            if !by_attempt.insert(*a) {
                found.push(format!(
                    "{when}: record {o} delivered twice with attempt {a}"
                ));
            }
            if let Some((r0, a0)) = seen.iter().find(|(r0, a0)| r0 < round && a0 >= a) {
                found.push(format!(
                    "{when}: record {o}: attempt {a} in round {round} after attempt {a0} in round {r0}"
                ));
            }
        }
    }
}

/// Under PerKey a record of a key is delivered only after the key's previous record
/// was settled (its ack or dead letter begun, or dead-lettered by max_deliveries).
fn check_per_key(
    h: &History,
    records: &BTreeMap<Offset, logqueue::StoredRecord>,
    max_deliveries: &BTreeSet<Offset>,
    found: &mut Vec<String>,
    when: &str,
) {
    let mut first_delivery: BTreeMap<Offset, (u64, u64)> = BTreeMap::new();
    for l in h.with("dlv") {
        first_delivery.entry(l.num("off")).or_insert(l.at);
    }
    let mut settled: BTreeMap<Offset, (u64, u64)> = BTreeMap::new();
    for l in h.with("ack-begin").chain(h.with("dl-begin")) {
        let e = settled.entry(l.num("off")).or_insert(l.at);
        *e = (*e).min(l.at);
    }
    let mut by_key: BTreeMap<&[u8], Vec<Offset>> = BTreeMap::new();
    for r in records.values() {
        if let Some(k) = &r.key {
            by_key.entry(k).or_default().push(r.offset);
        }
    }
    for (key, offsets) in by_key {
        for pair in offsets.windows(2) {
            let (prev, next) = (pair[0], pair[1]);
            let Some(next_at) = first_delivery.get(&next) else {
                continue;
            };
            if max_deliveries.contains(&prev) {
                continue;
            }
            let ok = settled.get(&prev).is_some_and(|s| s < next_at);
            if !ok {
                found.push(format!(
                    "{when}: key {}: record {next} delivered at {next_at:?} before {prev} was settled ({:?})",
                    String::from_utf8_lossy(key),
                    settled.get(&prev)
                ));
            }
        }
    }
}

/// Receives everything (acking it, as ledger lines of round `round`), redrives the
/// dead letters left and receives the copies; then every record must be exactly one
/// of acked or dead-lettered.
fn final_drain(base: &Path, variant: Variant, h: &mut History, round: u64) {
    let opened = common::retry_locked(|| {
        Log::open(log_dir(base), log_config())
            .and_then(|log| Queue::open(&log, "q", queue_config(variant)).map(|q| (log, q)))
    });
    let (log, q) = match opened {
        Ok(lq) => lq,
        Err(e) => {
            h.violation(format!("drain: open failed: {e}"));
            return;
        }
    };
    for pass in 0..2 {
        let until = Instant::now() + Duration::from_secs(40);
        let mut empty = 0;
        while empty < 3 && Instant::now() < until {
            let got = match q.receive(256, Duration::from_millis(300)) {
                Ok(g) => g,
                Err(e) => {
                    h.violation(format!("drain: receive failed: {e}"));
                    return;
                }
            };
            if got.is_empty() {
                empty += 1;
                continue;
            }
            empty = 0;
            for d in got {
                let v = String::from_utf8_lossy(d.record.value.as_deref().unwrap_or_default())
                    .into_owned();
                let (o, a) = (d.receipt.offset, d.attempt);
                h.parent(round, format!("dlv off={o} att={a} v={v}"));
                h.parent(round, format!("ack-begin off={o} att={a}"));
                match q.ack(&d.receipt) {
                    Ok(()) => h.parent(round, format!("ack-ok off={o} att={a}")),
                    Err(e) => h.violation(format!("drain: ack of {o} failed: {e}")),
                }
            }
        }
        if pass == 0 {
            if let Err(e) = q.redrive(usize::MAX) {
                h.violation(format!("drain: redrive failed: {e}"));
            }
        }
    }
    if let Err(e) = q.flush() {
        h.violation(format!("drain: flush failed: {e}"));
    }
    let stats = q.stats();
    let (letters, _) = dead_letter_offsets(&q.dead_letters());
    let dead: BTreeSet<Offset> = letters.iter().map(|(o, _)| *o).collect();
    let acked: BTreeSet<Offset> = h.with("ack-ok").map(|l| l.num("off")).collect();
    let maybe_acked: BTreeSet<Offset> = h.with("ack-begin").map(|l| l.num("off")).collect();
    let mut lost = Vec::new();
    for o in log.start_offset()..log.end_offset() {
        if !dead.contains(&o) && !acked.contains(&o) && !maybe_acked.contains(&o) {
            lost.push(o);
        }
    }
    if !lost.is_empty() {
        h.violation(format!(
            "final: {} records neither acked nor dead-lettered after the drain (first {:?}); queue stats {stats:?}",
            lost.len(),
            &lost[..lost.len().min(8)]
        ));
    }
    drop(q);
    if let Err(e) = log.close() {
        h.violation(format!("drain: close failed: {e}"));
    }
}

fn run_child(base: &Path, round: u64, variant: Variant, seed: u64, rng: &mut Rng) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_queue_worker", "--nocapture", "--ignored"])
        .env(DIR_VAR, base)
        .env(ROUND_VAR, round.to_string())
        .env(ORDER_VAR, variant.name())
        .env(SEED_VAR, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let early = rng.below(5) == 0;
    if early {
        // Sometimes while it opens.
        std::thread::sleep(Duration::from_millis(rng.below(60)));
    } else {
        let mut lines = BufReader::new(stdout);
        let mut line = String::new();
        while lines.read_line(&mut line).unwrap_or(0) > 0 && !line.contains("START") {
            line.clear();
        }
        std::thread::sleep(Duration::from_millis(rng.range(100, 600)));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

fn kill9_rounds(variant: Variant) {
    let rounds: u64 = std::env::var("LOGQUEUE_FAULT_ROUNDS").map_or(30, |s| s.parse().unwrap());
    let seed = common::seed_from_env_or_clock();
    let variant_name = variant.name();
    println!("kill9 queue {variant_name}: LOGQUEUE_SEED={seed} rounds={rounds}");
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    // On the disk, not tmpfs: an fsync takes time there, as the windows between the
    // writes of one call do in production.
    let base = tempfile::tempdir().unwrap();
    let mut h = History::default();
    let mut records = 0;
    for round in 0..rounds {
        run_child(base.path(), round, variant, seed, &mut rng);
        h.lines.extend(read_ledgers(base.path(), round));
        records = check(base.path(), variant, &mut h, &format!("round {round}"));
    }
    final_drain(base.path(), variant, &mut h, rounds);
    check(base.path(), variant, &mut h, "after the drain");
    let count = |e: &str| h.with(e).count();
    println!(
        "kill9 queue {variant_name}: {rounds} rounds, {records} records, {} sends ok, {} deliveries, {} acks ok, {} nacks ok, {} dead letters ok, {} redrives ok, {} flushes ok; {:?}",
        count("send-ok"),
        count("dlv"),
        count("ack-ok"),
        count("nack-ok"),
        count("dl-ok"),
        count("redrive-ok"),
        count("flush-ok"),
        started.elapsed()
    );
    print_violations(&h.violations, 60);
    assert!(
        h.violations.is_empty(),
        "{} violations (listed above); replay with LOGQUEUE_SEED={seed}",
        h.violations.len()
    );
}

#[test]
fn kill9_queue_unordered() {
    kill9_rounds(Variant::Unordered);
}

#[test]
fn kill9_queue_per_key() {
    kill9_rounds(Variant::PerKey);
}

/// Three lanes: each lane's state, journal and cursor, and the dead-letter log they
/// share, under the same kills and checks.
#[test]
fn kill9_queue_lanes() {
    kill9_rounds(Variant::Lanes);
}
