//! Helpers of the fault suite (`tests/fault_*.rs`): disk images of a SimFs, a case
//! runner that turns a panic or a hang into a reported violation, and a model of what
//! a queue workload was promised (see `queue_check.rs` for the checks).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use logqueue::fs::FileSystem;
use logqueue::sim::SimFs;
use logqueue::{Log, Offset, StoredRecord, DLQ_OFFSET};

/// Every file under a directory of a SimFs, by full path, with its current content.
pub type Image = BTreeMap<String, Vec<u8>>;

/// The files under `root` on `fs` (recursively; the `LOCK` files are skipped, as a
/// copy of a directory is a fresh one).
pub fn image_of(fs: &SimFs, root: &str) -> Image {
    let mut out = Image::new();
    let mut dirs = vec![root.to_string()];
    while let Some(dir) = dirs.pop() {
        let Ok(names) = fs.list(Path::new(&dir)) else {
            continue;
        };
        for name in names {
            let path = format!("{dir}/{name}");
            match fs.file_len(&path) {
                Some(_) if name == "LOCK" => {}
                Some(_) => {
                    out.insert(path.clone(), fs.read_file(&path).expect("readable file"));
                }
                None => dirs.push(path),
            }
        }
    }
    out
}

/// A fresh disk holding exactly `image`, every file durable.
pub fn plant(image: &Image, seed: u64) -> SimFs {
    let fs = SimFs::new(seed);
    for (path, bytes) in image {
        fs.write_file(path, bytes).expect("planting a file");
    }
    fs
}

/// The result of one fault case.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Damage the engine reported (`Error::Corrupt`, a corrupt range, a read error).
    pub reported: Vec<String>,
    /// Broken promises: wrong data, lost durable records or acks, a record in two
    /// states, a panic, a hang.
    pub violations: Vec<String>,
}

impl Outcome {
    /// Adds a violation.
    pub fn violation(&mut self, v: impl Into<String>) {
        self.violations.push(v.into());
    }

    /// Adds a report of damage.
    pub fn report(&mut self, r: impl Into<String>) {
        self.reported.push(r.into());
    }

    /// True when the engine reported damage somewhere.
    pub fn was_reported(&self) -> bool {
        !self.reported.is_empty()
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

/// Runs one case on its own thread: a panic (of the engine or of the case) and a case
/// still running after `timeout` become violations. A hung thread is left behind.
pub fn run_case(timeout: Duration, case: impl FnOnce() -> Outcome + Send + 'static) -> Outcome {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(case));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(p)) => Outcome {
            violations: vec![format!("panic: {}", panic_message(&*p))],
            ..Outcome::default()
        },
        Err(_) => Outcome {
            violations: vec![format!("hang: the case ran longer than {timeout:?}")],
            ..Outcome::default()
        },
    }
}

/// Silences the default panic message while `f` runs (panics are counted as
/// violations by [`run_case`] and printed in the summary instead).
pub fn quiet_panics<T>(f: impl FnOnce() -> T) -> T {
    let old = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = f();
    std::panic::set_hook(old);
    r
}

/// What a queue workload was promised, at two levels: what survives the death of the
/// process (the call returned) and what survives a power loss (a flush returned
/// after it).
#[derive(Debug, Default, Clone)]
pub struct Promises {
    /// Value written at each offset of the main log whose append returned (sends and
    /// redrive copies).
    pub values: BTreeMap<Offset, Vec<u8>>,
    /// Values of appends that were called (returned or not), and of every dead letter
    /// a redrive may have copied: a record at an offset not in `values` must hold one.
    pub maybe_values: BTreeSet<Vec<u8>>,
    /// Offsets below this were appended (returned).
    pub returned_end: Offset,
    /// Offsets below this were durable (a flush returned).
    pub flushed_end: Offset,
    /// Acks that returned / that a later flush made durable.
    pub acked_returned: BTreeSet<Offset>,
    /// Acks made durable by a flush.
    pub acked_flushed: BTreeSet<Offset>,
    /// Records in the dead-letter log (by `dlq.offset`) as seen after a call returned.
    pub dead_returned: BTreeSet<Offset>,
    /// The same, made durable by a flush.
    pub dead_flushed: BTreeSet<Offset>,
    /// Offsets an ack or dead-letter was called for, returned or not (may be done).
    pub maybe_settled: BTreeSet<Offset>,
    /// Highest attempt handed out per offset by a receive that returned.
    pub attempts_returned: BTreeMap<Offset, u32>,
    /// The same, as of the last flush that returned.
    pub attempts_flushed: BTreeMap<Offset, u32>,
    /// Dead-letter offsets whose redrive copy is durable (redrive returned).
    pub redriven: BTreeSet<Offset>,
    /// Offsets below this were deleted on purpose (`delete_records_before` returned).
    pub deleted_before: Offset,
}

impl Promises {
    /// Records that a flush returned: everything returned so far is durable.
    pub fn flushed(&mut self) {
        self.flushed_end = self.returned_end;
        self.acked_flushed = self.acked_returned.clone();
        self.dead_flushed = self.dead_returned.clone();
        self.attempts_flushed = self.attempts_returned.clone();
    }

    /// Records an append of `value` that returned `offset`.
    pub fn appended(&mut self, offset: Offset, value: Vec<u8>) {
        self.values.insert(offset, value);
        self.returned_end = self.returned_end.max(offset + 1);
    }

    /// Records a delivery handed out by a receive that returned.
    pub fn delivered(&mut self, offset: Offset, attempt: u32) {
        let a = self.attempts_returned.entry(offset).or_insert(0);
        *a = (*a).max(attempt);
    }
}

/// The `dlq.offset` of every record of a dead-letter log, in dead-letter order, and
/// the first error met reading it.
pub fn dead_letter_offsets(dlq: &Log) -> (Vec<(Offset, StoredRecord)>, Option<logqueue::Error>) {
    let mut out = Vec::new();
    let reader = match dlq.reader(dlq.start_offset()) {
        Ok(r) => r,
        Err(e) => return (out, Some(e)),
    };
    for r in reader.take(1_000_000) {
        match r {
            Ok(r) => {
                let from = r
                    .header(DLQ_OFFSET)
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(u64::MAX);
                out.push((from, r));
            }
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// Per fault kind: cases run, cases where damage was reported, cases with a violation.
#[derive(Debug, Default)]
pub struct Tally {
    rows: BTreeMap<String, (u64, u64, u64)>,
    /// Every violation, with its case.
    pub violations: Vec<String>,
}

impl Tally {
    /// Counts `outcome` of case `case` under `kind`.
    pub fn add(&mut self, kind: &str, case: &str, outcome: &Outcome) {
        let row = self.rows.entry(kind.to_string()).or_default();
        row.0 += 1;
        row.1 += u64::from(outcome.was_reported());
        row.2 += u64::from(!outcome.violations.is_empty());
        for v in &outcome.violations {
            self.violations.push(format!("[{kind}] {case}: {v}"));
        }
    }

    /// True when some case of `kind` ran.
    pub fn has_kind(&self, kind: &str) -> bool {
        self.rows.contains_key(kind)
    }

    /// Total cases.
    pub fn cases(&self) -> u64 {
        self.rows.values().map(|r| r.0).sum()
    }

    /// Prints the table and up to `max_listed` violations.
    pub fn print(&self, title: &str, max_listed: usize) {
        println!("== {title}: {} cases", self.cases());
        println!(
            "{:<40} {:>7} {:>9} {:>10}",
            "kind", "cases", "reported", "violating"
        );
        for (k, (n, r, v)) in &self.rows {
            println!("{k:<40} {n:>7} {r:>9} {v:>10}");
        }
        print_violations(&self.violations, max_listed);
    }
}

/// Violations grouped by their text with every number replaced by `#`: how many of
/// each kind, with the first one as the example.
pub fn summarize(violations: &[String]) -> Vec<(usize, String, String)> {
    let mut kinds: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for v in violations {
        let mut shape = String::new();
        let mut in_number = false;
        // The text before the first ": " names the case or round.
        let what = v.split_once(": ").map_or(v.as_str(), |(_, w)| w);
        for c in what.chars() {
            if c.is_ascii_digit() {
                if !in_number {
                    shape.push('#');
                }
                in_number = true;
            } else {
                shape.push(c);
                in_number = false;
            }
        }
        let e = kinds.entry(shape).or_insert((0, v.clone()));
        e.0 += 1;
    }
    let mut out: Vec<(usize, String, String)> = kinds
        .into_iter()
        .map(|(k, (n, first))| (n, k, first))
        .collect();
    out.sort_by_key(|k| std::cmp::Reverse(k.0));
    out
}

/// Prints [`summarize`] and the first `max_listed` violations.
pub fn print_violations(violations: &[String], max_listed: usize) {
    println!("violations: {}", violations.len());
    if violations.is_empty() {
        return;
    }
    println!("violations by kind (numbers as #):");
    for (n, _, first) in summarize(violations) {
        println!("  {n:>6} x  e.g. {first}");
    }
    for v in violations.iter().take(max_listed) {
        println!("  {v}");
    }
    if violations.len() > max_listed {
        println!("  ... and {} more", violations.len() - max_listed);
    }
}
