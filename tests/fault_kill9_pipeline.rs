//! Real kill -9 loop on an exactly-once pipeline (issue 13): a child process (this
//! test binary run again: `--exact child_pipeline --ignored`) runs a producer sending
//! inputs to a queue over log A and worker threads that receive, transform and
//! `settle_into` log B, on the real file system; the parent SIGKILLs it at a random
//! moment, checks, and runs the next child on the same directories. Each thread
//! writes an external ledger line before and after every call (one `write(2)` per
//! line, `O_APPEND`: it survives kill -9).
//!
//! Checked after every round: no output is in B twice; the outputs of one input are
//! all there or none, consecutive (one batch); an input whose `settle_into` returned
//! has all its outputs in B and is never delivered again. After a final drain (the
//! parent settles what is left with the same transform): every input in A has its
//! outputs in B exactly once and the queue has acked everything, nothing in flight.
//!
//! The queue runs with its outcome feed on (issue 13, item 3): after every round no
//! input has two outcomes and every input whose `settle_into` returned has one; after
//! the drain every input has exactly one, `acked`, carrying the input's
//! `correlation.id`.
//!
//! `LOGQUEUE_FAULT_ROUNDS` (default 20) sets the rounds, `LOGQUEUE_SEED` replays the
//! kill timings and the children's choices (thread timing is not replayed).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fault::print_violations;
use common::{small_config, Rng};
use logqueue::{
    DedupConfig, Delivery, Log, LogConfig, Queue, QueueConfig, Record, CORRELATION_ID, DEDUP_ID,
    OUTCOME, OUTCOME_OFFSET,
};

const DIR_VAR: &str = "LOGQUEUE_KILL9P_DIR";
const ROUND_VAR: &str = "LOGQUEUE_KILL9P_ROUND";
const SEED_VAR: &str = "LOGQUEUE_KILL9P_SEED";
const WORKERS: u64 = 3;
/// The producer stops here, so long runs stay bounded.
const MAX_INPUTS: u64 = 20_000;

fn input_config() -> LogConfig {
    small_config(16 << 10)
}

fn output_config() -> LogConfig {
    LogConfig {
        dedup: Some(DedupConfig {
            window: Duration::from_secs(3600),
            max_ids: 1 << 20,
        }),
        ..small_config(16 << 10)
    }
}

fn queue_config() -> QueueConfig {
    QueueConfig {
        visibility_timeout: Duration::from_secs(1),
        max_deliveries: None,
        journal_bytes: 64 << 10,
        outcomes: true,
        ..QueueConfig::default()
    }
}

struct Pipeline {
    input: Log,
    out: Log,
    q: Queue,
}

fn open(base: &Path) -> logqueue::Result<Pipeline> {
    let input = Log::open(base.join("a"), input_config())?;
    let out = Log::open(base.join("b"), output_config())?;
    let q = Queue::open(&input, "q", queue_config())?;
    Ok(Pipeline { input, out, q })
}

/// The transform: 1 to 3 outputs `<input>/<j>`, keyed by the input's value.
fn outputs_of(value: &str) -> Vec<String> {
    let n = value.bytes().map(u64::from).sum::<u64>() % 3 + 1;
    (0..n).map(|j| format!("{value}/{j}")).collect()
}

fn transform(d: &Delivery) -> Vec<Record> {
    let v = String::from_utf8_lossy(d.record.value.as_deref().unwrap_or_default()).into_owned();
    outputs_of(&v)
        .into_iter()
        .map(|o| Record::keyed(v.clone(), o))
        .collect()
}

// ---------------------------------------------------------------------------------
// The child.

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
        self.file
            .write_all(format!("{n} {text}\n").as_bytes())
            .unwrap();
    }
}

fn word(e: &logqueue::Error) -> String {
    e.to_string().replace(char::is_whitespace, "_")
}

fn producer(p: &Pipeline, mut ledger: Ledger, round: u64, mut rng: Rng, until: Instant) {
    let mut n = 0u64;
    while Instant::now() < until {
        if p.input.end_offset() < MAX_INPUTS {
            for _ in 0..rng.range(1, 5) {
                let v = format!("r{round}-n{n}");
                n += 1;
                match p
                    .q
                    .send(Record::new(v.clone()).with_header(CORRELATION_ID, v.clone()))
                {
                    Ok(o) => ledger.line(&format!("send-ok off={o} v={v}")),
                    Err(e) => ledger.line(&format!("send-err v={v} e={}", word(&e))),
                }
            }
        }
        std::thread::sleep(Duration::from_millis(3));
    }
}

fn worker(p: &Pipeline, mut ledger: Ledger, mut rng: Rng, until: Instant) {
    while Instant::now() < until {
        let got = match p.q.receive(4, Duration::from_millis(20)) {
            Ok(g) => g,
            Err(e) => {
                ledger.line(&format!("recv-err e={}", word(&e)));
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        for d in &got {
            let (o, a) = (d.receipt.offset, d.attempt);
            ledger.line(&format!("dlv off={o} att={a}"));
            if rng.below(20) == 0 {
                continue; // the lease runs out: another worker gets it later
            }
            ledger.line(&format!("settle-begin off={o} att={a}"));
            match p.q.settle_into(d, &p.out, transform(d)) {
                Ok(r) => ledger.line(&format!(
                    "settle-ok off={o} att={a} from={} to={}",
                    r.start, r.end
                )),
                Err(e) => ledger.line(&format!("settle-err off={o} att={a} e={}", word(&e))),
            }
        }
    }
}

#[test]
#[ignore = "run by the kill9 pipeline test as a child process"]
fn child_pipeline() {
    let Some(base) = std::env::var_os(DIR_VAR).map(PathBuf::from) else {
        return;
    };
    let num = |var: &str| -> u64 { std::env::var(var).unwrap().parse().unwrap() };
    let (round, seed) = (num(ROUND_VAR), num(SEED_VAR));
    let p = open(&base).unwrap();
    println!("START");
    std::io::stdout().flush().unwrap();
    let seq = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(30);
    let rng = |tid: u64| Rng::new(seed ^ round.wrapping_mul(1_000_003) ^ tid);
    std::thread::scope(|s| {
        let ledger = |tid| Ledger::open(&base, round, tid, Arc::clone(&seq));
        let (p0, l0, r0) = (&p, ledger(0), rng(0));
        s.spawn(move || producer(p0, l0, round, r0, until));
        for tid in 1..=WORKERS {
            let (pw, lw, rw) = (&p, ledger(tid), rng(tid));
            s.spawn(move || worker(pw, lw, rw, until));
        }
    });
}

// ---------------------------------------------------------------------------------
// The parent.

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
            let mut words = l.trim_end().split(' ');
            let (Some(seq), Some(event)) = (words.next(), words.next()) else {
                continue;
            };
            out.push(Line {
                at: (round, seq.parse().unwrap()),
                event: event.to_string(),
                fields: words
                    .filter_map(|w| w.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            });
        }
    }
    out.sort_by_key(|l| l.at);
    out
}

#[derive(Default)]
struct History {
    lines: Vec<Line>,
    violations: Vec<String>,
}

impl History {
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
}

/// What the logs hold: inputs by offset, outputs by input value (offset, output),
/// outcomes by input offset (outcome, correlation id).
struct Contents {
    inputs: BTreeMap<u64, String>,
    outputs: BTreeMap<String, Vec<(u64, String)>>,
    outcomes: BTreeMap<u64, Vec<(String, String)>>,
}

fn contents(p: &Pipeline, h: &mut History, when: &str) -> Contents {
    let mut inputs = BTreeMap::new();
    for r in p.input.reader(p.input.start_offset()).unwrap() {
        match r {
            Ok(r) => {
                let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default());
                inputs.insert(r.offset, v.into_owned());
            }
            Err(e) => return fail(h, format!("{when}: reading A: {e}")),
        }
    }
    let mut outputs: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for r in p.out.reader(p.out.start_offset()).unwrap() {
        match r {
            Ok(r) => {
                if r.header(DEDUP_ID).is_none() {
                    h.violation(format!("{when}: output at {} without {DEDUP_ID}", r.offset));
                }
                let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default());
                let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default());
                outputs
                    .entry(key.into_owned())
                    .or_default()
                    .push((r.offset, v.into_owned()));
            }
            Err(e) => return fail(h, format!("{when}: reading B: {e}")),
        }
    }
    let mut outcomes: BTreeMap<u64, Vec<(String, String)>> = BTreeMap::new();
    let feed = p.q.outcomes().expect("the feed is on");
    for r in feed.reader(feed.start_offset()).unwrap() {
        match r {
            Ok(r) => {
                let text =
                    |k: &str| String::from_utf8_lossy(r.header(k).unwrap_or_default()).into_owned();
                match text(OUTCOME_OFFSET).parse::<u64>() {
                    Ok(o) => outcomes
                        .entry(o)
                        .or_default()
                        .push((text(OUTCOME), text(CORRELATION_ID))),
                    Err(_) => {
                        h.violation(format!("{when}: outcome at {} without an offset", r.offset))
                    }
                }
            }
            Err(e) => return fail(h, format!("{when}: reading the outcomes: {e}")),
        }
    }
    Contents {
        inputs,
        outputs,
        outcomes,
    }
}

fn fail(h: &mut History, v: String) -> Contents {
    h.violation(v);
    Contents {
        inputs: BTreeMap::new(),
        outputs: BTreeMap::new(),
        outcomes: BTreeMap::new(),
    }
}

/// At most one outcome per input, `acked` and carrying the input's correlation id;
/// returns how many outcomes there are.
fn check_outcomes(c: &Contents, h: &mut History, when: &str) -> u64 {
    for (o, got) in &c.outcomes {
        let want = c.inputs.get(o).map(|v| ("acked".to_string(), v.clone()));
        if got.len() != 1 || Some(&got[0]) != want.as_ref() {
            h.violation(format!(
                "{when}: outcomes of input {o}: {got:?}, want one {want:?}"
            ));
        }
    }
    c.outcomes.values().map(|v| v.len() as u64).sum()
}

/// Outputs in B of one input: exactly `outputs_of(input)`, consecutive.
fn check_outputs_of(input: &str, got: &[(u64, String)], h: &mut History, when: &str) {
    let values: Vec<&str> = got.iter().map(|(_, v)| v.as_str()).collect();
    let want = outputs_of(input);
    if values != want.iter().map(String::as_str).collect::<Vec<_>>() {
        h.violation(format!(
            "{when}: outputs of {input}: {values:?}, want {want:?}"
        ));
    }
    if got.windows(2).any(|w| w[0].0 + 1 != w[1].0) {
        h.violation(format!("{when}: outputs of {input} not one batch: {got:?}"));
    }
}

fn check(base: &Path, h: &mut History, when: &str) -> (u64, u64) {
    let p = match open(base) {
        Ok(p) => p,
        Err(e) => {
            h.violation(format!("{when}: open failed: {e}"));
            return (0, 0);
        }
    };
    let c = contents(&p, h, when);
    let by_value: BTreeMap<&str, u64> = c.inputs.iter().map(|(o, v)| (v.as_str(), *o)).collect();
    for (input, got) in &c.outputs {
        if !by_value.contains_key(input.as_str()) {
            h.violation(format!("{when}: outputs of an input not in A: {input}"));
        }
        check_outputs_of(input, got, h, when);
    }
    let mut settled: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for l in h.with("settle-ok") {
        settled.entry(l.num("off")).or_insert(l.at);
    }
    let mut found = Vec::new();
    for o in settled.keys() {
        let has = c.inputs.get(o).is_some_and(|v| c.outputs.contains_key(v));
        if !has {
            found.push(format!(
                "{when}: settle_into of {o} returned, its outputs are not in B"
            ));
        }
        if !c.outcomes.contains_key(o) {
            found.push(format!(
                "{when}: settle_into of {o} returned, it has no outcome"
            ));
        }
    }
    check_outcomes(&c, h, when);
    for l in h.with("dlv") {
        let o = l.num("off");
        if settled.get(&o).is_some_and(|at| *at < l.at) {
            found.push(format!(
                "{when}: input {o} delivered again after its settle_into returned"
            ));
        }
    }
    for v in found {
        h.violation(v);
    }
    let outputs = c.outputs.values().map(Vec::len).sum::<usize>() as u64;
    (c.inputs.len() as u64, outputs)
}

/// Settles what is left (with the same transform), then every input in A must have
/// its outputs in B once and the queue must be done.
fn final_drain(base: &Path, h: &mut History) {
    let p = match open(base) {
        Ok(p) => p,
        Err(e) => return h.violation(format!("drain: open failed: {e}")),
    };
    let until = Instant::now() + Duration::from_secs(60);
    let mut empty = 0;
    while empty < 3 && Instant::now() < until {
        let got = match p.q.receive(256, Duration::from_millis(1500)) {
            Ok(g) => g,
            Err(e) => return h.violation(format!("drain: receive failed: {e}")),
        };
        if got.is_empty() {
            empty += 1;
        }
        for d in got {
            empty = 0;
            if let Err(e) = p.q.settle_into(&d, &p.out, transform(&d)) {
                h.violation(format!(
                    "drain: settle_into of {} failed: {e}",
                    d.receipt.offset
                ));
            }
        }
    }
    p.q.flush().unwrap();
    let c = contents(&p, h, "final");
    for (o, input) in &c.inputs {
        match c.outputs.get(input) {
            Some(got) => check_outputs_of(input, got, h, "final"),
            None => h.violation(format!("final: input {o} ({input}) has no outputs in B")),
        }
        if !c.outcomes.contains_key(o) {
            h.violation(format!("final: input {o} ({input}) has no outcome"));
        }
    }
    let outcomes = check_outcomes(&c, h, "final");
    println!("kill9 pipeline: {outcomes} outcomes in the feed after the drain");
    let s = p.q.stats();
    if s.ack_floor != p.input.end_offset() || s.in_flight != 0 || s.backlog != 0 {
        h.violation(format!(
            "final: queue not done: {s:?}, A ends at {}",
            p.input.end_offset()
        ));
    }
}

fn run_child(base: &Path, round: u64, seed: u64, rng: &mut Rng) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_pipeline", "--nocapture", "--ignored"])
        .env(DIR_VAR, base)
        .env(ROUND_VAR, round.to_string())
        .env(SEED_VAR, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    if rng.below(5) == 0 {
        // Sometimes while it opens (and rebuilds the dedup window).
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

#[test]
fn kill9_pipeline_settles_exactly_once() {
    let rounds: u64 = std::env::var("LOGQUEUE_FAULT_ROUNDS").map_or(20, |s| s.parse().unwrap());
    let seed = common::seed_from_env_or_clock();
    println!("kill9 pipeline: LOGQUEUE_SEED={seed} rounds={rounds}");
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let base = tempfile::tempdir().unwrap();
    let mut h = History::default();
    let mut sizes = (0, 0);
    for round in 0..rounds {
        run_child(base.path(), round, seed, &mut rng);
        h.lines.extend(read_ledgers(base.path(), round));
        sizes = check(base.path(), &mut h, &format!("round {round}"));
    }
    final_drain(base.path(), &mut h);
    let (inputs, outputs) = check(base.path(), &mut h, "after the drain");
    let count = |e: &str| h.with(e).count();
    let settled: BTreeSet<u64> = h.with("settle-ok").map(|l| l.num("off")).collect();
    println!(
        "kill9 pipeline: {rounds} rounds; before the drain {} inputs, {} outputs; after it \
         {inputs} inputs, {outputs} outputs; {} sends ok, {} deliveries, {} settle_into ok \
         ({} distinct inputs), {} settle_into errors; {:?}",
        sizes.0,
        sizes.1,
        count("send-ok"),
        count("dlv"),
        count("settle-ok"),
        settled.len(),
        count("settle-err"),
        started.elapsed()
    );
    print_violations(&h.violations, 60);
    assert!(inputs > 0 && outputs >= inputs, "the pipeline did nothing");
    assert!(
        h.violations.is_empty(),
        "{} violations (listed above); replay with LOGQUEUE_SEED={seed}",
        h.violations.len()
    );
}
