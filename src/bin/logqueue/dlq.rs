//! queues and dlq: queue counters (read-only, [`logqueue::Queue::inspect`]) and dead
//! letters (list read-only; redrive takes the log's and the queue's locks).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use logqueue::{
    Log, Queue, QueueConfig, Record, StoredRecord, DLQ_ATTEMPTS, DLQ_OFFSET, DLQ_QUEUE, DLQ_REASON,
    REDRIVE_FROM,
};
use serde_json::json;

use crate::output::{
    open_read, open_write, print_json, print_record, record_json, tool_config, CmdResult, Failure,
    Format, EXIT_CANNOT_OPEN, EXIT_PROBLEM,
};
use crate::read::queue_names;

/// The dead-letter log's directory inside a queue's directory.
const DEAD_LETTER_DIR: &str = "dead-letter";

fn dead_letter_dir(log_dir: &Path, queue: &str) -> PathBuf {
    log_dir.join("queues").join(queue).join(DEAD_LETTER_DIR)
}

#[derive(Args)]
pub struct QueuesArgs {
    /// The log directory.
    dir: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn queues(a: QueuesArgs) -> CmdResult {
    let log = open_read(&a.dir)?;
    let mut rows = Vec::new();
    let mut failed = false;
    for name in queue_names(&log) {
        let stats = Queue::inspect(&log, &name);
        let dead_letters = Log::open_read_only(dead_letter_dir(&a.dir, &name))
            .map(|d| d.end_offset() - d.start_offset())
            .ok();
        failed |= stats.is_err();
        rows.push((name, stats, dead_letters));
    }
    match a.format {
        Format::Json => print_json(
            &rows
                .iter()
                .map(|(name, s, dl)| match s {
                    Ok(s) => json!({ "name": name, "stats": s, "dead_letters": dl }),
                    Err(e) => json!({ "name": name, "error": e.to_string() }),
                })
                .collect::<Vec<_>>(),
        ),
        Format::Text => {
            println!(
                "{:<20} {:>12} {:>9} {:>9} {:>8} {:>12} {:>16} {:>10}",
                "QUEUE",
                "FLOOR",
                "IN-FLIGHT",
                "BACKLOG",
                "DELAYED",
                "DEAD-LETTERS",
                "OLDEST-UNACKED",
                "LAG"
            );
            for (name, s, dl) in &rows {
                match s {
                    Ok(s) => println!(
                        "{name:<20} {:>12} {:>9} {:>9} {:>8} {:>12} {:>16} {:>10}",
                        s.ack_floor,
                        s.in_flight,
                        s.backlog,
                        s.delayed,
                        dl.map_or("?".into(), |n| n.to_string()),
                        s.oldest_unacked_age_ms
                            .map_or("-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0)),
                        s.consumer_lag
                    ),
                    Err(e) => println!("{name:<20} cannot read: {e}"),
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::from(EXIT_PROBLEM)
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Args)]
pub struct DlqArgs {
    /// The log directory.
    dir: PathBuf,
    /// The queue's name.
    queue: String,
    #[command(subcommand)]
    action: DlqAction,
}

#[derive(Subcommand)]
pub enum DlqAction {
    /// Print the dead letters (read-only).
    List {
        /// Only letters with this reason.
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Move dead letters back into the log as new records (takes the log's lock).
    Redrive {
        /// Only letters with this reason (see the note in docs/operations.md).
        #[arg(long)]
        reason: Option<String>,
        /// Letters to move at most.
        #[arg(long, default_value_t = usize::MAX)]
        max: usize,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

pub fn dlq(a: DlqArgs) -> CmdResult {
    match a.action {
        DlqAction::List { reason, format } => list(&a.dir, &a.queue, reason.as_deref(), format),
        DlqAction::Redrive {
            reason,
            max,
            format,
        } => redrive(&a.dir, &a.queue, reason.as_deref(), max, format),
    }
}

fn reason_of(r: &StoredRecord) -> Option<&[u8]> {
    r.header(DLQ_REASON)
}

fn number(r: &StoredRecord, header: &str) -> Option<u64> {
    std::str::from_utf8(r.header(header)?).ok()?.parse().ok()
}

/// Every dead letter of `queue` (optionally only those with `reason`).
fn letters(dlq: &Log, queue: &str, reason: Option<&str>) -> Result<Vec<StoredRecord>, Failure> {
    let reader = dlq
        .reader(dlq.start_offset())
        .map_err(|e| Failure::engine("read dead letters", e))?;
    let mut out = Vec::new();
    for r in reader {
        let r = r.map_err(|e| Failure::engine("read dead letters", e))?;
        if r.header(DLQ_QUEUE).is_some_and(|q| q != queue.as_bytes()) {
            continue;
        }
        if reason.is_some_and(|want| reason_of(&r) != Some(want.as_bytes())) {
            continue;
        }
        out.push(r);
    }
    Ok(out)
}

fn list(dir: &Path, queue: &str, reason: Option<&str>, format: Format) -> CmdResult {
    let _log = open_read(dir)?;
    let dlq = open_dead_letters(dir, queue)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for r in letters(&dlq, queue, reason)? {
        let ok = match format {
            Format::Json => {
                let mut doc = record_json(&r);
                doc["reason"] = json!(reason_of(&r).map(|b| String::from_utf8_lossy(b)));
                doc["original_offset"] = json!(number(&r, DLQ_OFFSET));
                doc["attempts"] = json!(number(&r, DLQ_ATTEMPTS));
                use std::io::Write;
                writeln!(out, "{doc}").is_ok()
            }
            Format::Text => print_record(&mut out, &r, format),
        };
        if !ok {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn open_dead_letters(dir: &Path, queue: &str) -> Result<Log, Failure> {
    let path = dead_letter_dir(dir, queue);
    if !path.is_dir() {
        return Err(Failure::new(
            EXIT_CANNOT_OPEN,
            format!(
                "queue {queue:?} has no dead-letter log in {}",
                dir.display()
            ),
        ));
    }
    open_read(&path)
}

fn redrive(dir: &Path, queue: &str, reason: Option<&str>, max: usize, format: Format) -> CmdResult {
    let log = open_write(dir, tool_config())?;
    let q = Queue::open(&log, queue, QueueConfig::default()).map_err(|e| match e {
        logqueue::Error::Locked { .. } => Failure::new(EXIT_CANNOT_OPEN, e.to_string()),
        e => Failure::engine("open queue", e),
    })?;
    let moved = match reason {
        None => q.redrive(max).map_err(|e| Failure::engine("redrive", e))?,
        Some(reason) => redrive_matching(&log, &q, queue, reason, max)?,
    };
    q.flush().map_err(|e| Failure::engine("flush queue", e))?;
    drop(q);
    log.close().map_err(|e| Failure::engine("close", e))?;
    match format {
        Format::Json => print_json(&json!({ "redriven": moved })),
        Format::Text => println!("{moved} dead letters redriven"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Redrive of the letters with `reason` only, by reading: the queue API has no
/// filtered redrive yet (`Queue::redrive` moves every letter in order behind a
/// durable cursor). Each matching letter is sent again as a new record with
/// [`REDRIVE_FROM`] set, unless the log already holds a record redriven from it, so
/// running this twice moves nothing twice. Follow-up: a later unfiltered
/// `Queue::redrive` does not know about these copies and moves the letters again;
/// see docs/operations.md.
fn redrive_matching(
    log: &Log,
    q: &Queue,
    queue: &str,
    reason: &str,
    max: usize,
) -> Result<usize, Failure> {
    let mut already = HashSet::new();
    for r in log
        .reader(log.start_offset())
        .map_err(|e| Failure::engine("read log", e))?
    {
        let r = r.map_err(|e| Failure::engine("read log", e))?;
        if let Some(from) = number(&r, REDRIVE_FROM) {
            already.insert(from);
        }
    }
    let mut moved = 0;
    for letter in letters(&q.dead_letters(), queue, Some(reason))? {
        if moved == max {
            break;
        }
        if already.contains(&letter.offset) {
            continue;
        }
        let record = Record {
            key: letter.key.clone(),
            value: letter.value.clone(),
            headers: letter
                .headers
                .iter()
                .filter(|h| !h.key.starts_with("dlq.") && h.key != REDRIVE_FROM)
                .cloned()
                .chain(std::iter::once(logqueue::Header {
                    key: REDRIVE_FROM.to_string(),
                    value: letter.offset.to_string().into_bytes(),
                }))
                .collect(),
            timestamp: Some(letter.timestamp),
        };
        q.send(record).map_err(|e| Failure::engine("send", e))?;
        moved += 1;
    }
    log.flush().map_err(|e| Failure::engine("flush", e))?;
    Ok(moved)
}
