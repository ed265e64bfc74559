//! queues and dlq: queue counters and cursors (read-only, [`logqueue::Queue::inspect`])
//! and dead letters (list read-only; redrive and purge take the log's and the queue's
//! locks).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use logqueue::{
    Log, Queue, QueueConfig, QueueStats, StoredRecord, DLQ_ATTEMPTS, DLQ_OFFSET, DLQ_QUEUE,
    DLQ_REASON,
};
use serde_json::json;

use crate::output::{
    open_read, open_write, print_json, print_record, record_json, tool_config, CmdResult, Failure,
    Format, EXIT_CANNOT_OPEN, EXIT_PROBLEM,
};
use crate::stats::{queue_cursor, queue_names, CursorLag};

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
    let mut failed = false;
    // Read before the queues: a cursor is never ahead of its queue's durable state.
    let cursors = match log.cursors() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("logqueue: cannot read the cursors: {e}");
            failed = true;
            Vec::new()
        }
    };
    let mut rows = Vec::new();
    for name in queue_names(&log)? {
        let stats = Queue::inspect(&log, &name);
        let dead_letters = Log::open_read_only(dead_letter_dir(&a.dir, &name))
            .map(|d| d.end_offset() - d.start_offset())
            .ok();
        // Its lag behind the end the queue's state was read against, as the queue's.
        let cursor = match &stats {
            Ok(s) => cursors
                .iter()
                .find(|c| c.name == queue_cursor(&name))
                .map(|c| CursorLag::new(c, s.ack_floor + s.consumer_lag)),
            Err(_) => None,
        };
        failed |= stats.is_err();
        rows.push((name, stats, dead_letters, cursor));
    }
    match a.format {
        Format::Json => print_json(
            &rows
                .iter()
                .map(|(name, s, dl, cursor)| match s {
                    Ok(s) => json!({
                        "name": name,
                        "stats": s,
                        "dead_letters": dl,
                        "cursor": cursor.as_ref().map(CursorLag::json),
                    }),
                    Err(e) => json!({ "name": name, "error": e.to_string() }),
                })
                .collect::<Vec<_>>(),
        ),
        Format::Text => print_queues_text(&rows),
    }
    Ok(if failed {
        ExitCode::from(EXIT_PROBLEM)
    } else {
        ExitCode::SUCCESS
    })
}

/// One queue's line of `queues`: its name, its state (or why it cannot be read), its
/// dead letters (`None`: unreadable) and its cursor.
type QueueRow = (
    String,
    logqueue::Result<QueueStats>,
    Option<u64>,
    Option<CursorLag>,
);

/// The text form of `queues`: a header, then one line per queue.
fn print_queues_text(rows: &[QueueRow]) {
    println!(
        "{:<20} {:>12} {:>9} {:>9} {:>8} {:>12} {:>16} {:>10} {:>12} {:>10}",
        "QUEUE",
        "FLOOR",
        "IN-FLIGHT",
        "BACKLOG",
        "DELAYED",
        "DEAD-LETTERS",
        "OLDEST-UNACKED",
        "LAG",
        "CURSOR",
        "CURSOR-LAG"
    );
    for (name, s, dl, cursor) in rows {
        match s {
            Ok(s) => {
                println!(
                    "{name:<20} {:>12} {:>9} {:>9} {:>8} {:>12} {:>16} {:>10} {:>12} {:>10}",
                    s.ack_floor,
                    s.in_flight,
                    s.backlog,
                    s.delayed,
                    dl.map_or("?".into(), |n| n.to_string()),
                    s.oldest_unacked_age_ms
                        .map_or("-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0)),
                    s.consumer_lag,
                    cursor
                        .as_ref()
                        .map_or("-".into(), |c| c.position.to_string()),
                    cursor.as_ref().map_or("-".into(), |c| c.lag.to_string()),
                )
            }
            Err(e) => println!("{name:<20} cannot read: {e}"),
        }
    }
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
    /// Move dead letters back into the log as new records, each at most once (takes
    /// the log's lock).
    Redrive {
        /// Only letters with this reason; the others stay, for a later redrive.
        #[arg(long)]
        reason: Option<String>,
        /// Letters to move at most.
        #[arg(long, default_value_t = usize::MAX)]
        max: usize,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Delete every dead letter now in the dead-letter log (takes the log's lock).
    Purge {
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
        DlqAction::Purge { format } => purge(&a.dir, &a.queue, format),
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

/// Opens `queue` of `dir` for a write command: the log's lock, then the queue's (exit
/// status 2 while either is held elsewhere). The queue's cursor keeps the protect
/// setting it has (the owner's `protect_unacked`): opening with another would change
/// what retention keeps until the owner opens the queue again.
fn open_queue(dir: &Path, queue: &str) -> Result<(Log, Queue), Failure> {
    let log = open_write(dir, tool_config())?;
    if !Queue::names(&log)
        .map_err(|e| Failure::engine("list queues", e))?
        .iter()
        .any(|n| n == queue)
    {
        return Err(Failure::new(
            EXIT_CANNOT_OPEN,
            format!("{} has no queue named {queue:?}", dir.display()),
        ));
    }
    let protect_unacked = log
        .cursors()
        .map_err(|e| Failure::engine("read cursors", e))?
        .into_iter()
        .find(|c| c.name == queue_cursor(queue))
        .is_none_or(|c| c.protect);
    // The lanes it was created with (opening with others is refused).
    let (lanes, lane_block) =
        Queue::lane_layout(&log, queue).map_err(|e| Failure::engine("read lane layout", e))?;
    let config = QueueConfig {
        protect_unacked,
        lanes,
        lane_block,
        ..QueueConfig::default()
    };
    let q = Queue::open(&log, queue, config).map_err(|e| match e {
        logqueue::Error::Locked { .. } => Failure::new(
            EXIT_CANNOT_OPEN,
            format!("queue {queue:?} is open in another process: {e}"),
        ),
        e => Failure::engine("open queue", e),
    })?;
    Ok((log, q))
}

/// Makes the queue's state durable and closes it and the log.
fn close_queue(log: Log, q: Queue) -> Result<(), Failure> {
    q.close().map_err(|e| Failure::engine("close queue", e))?;
    log.close().map_err(|e| Failure::engine("close", e))
}

/// `dlq QUEUE redrive [--reason R]`: [`Queue::redrive_where`], which moves each letter
/// at most once across runs with any filter (a later plain redrive moves only the
/// letters not moved yet).
fn redrive(dir: &Path, queue: &str, reason: Option<&str>, max: usize, format: Format) -> CmdResult {
    let (log, q) = open_queue(dir, queue)?;
    let moved = match reason {
        None => q.redrive(max),
        Some(reason) => q.redrive_where(max, |r| reason_of(r) == Some(reason.as_bytes())),
    }
    .map_err(|e| Failure::engine("redrive", e))?;
    close_queue(log, q)?;
    match format {
        Format::Json => print_json(&json!({ "redriven": moved })),
        Format::Text => println!("{moved} dead letters redriven"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `dlq QUEUE purge`: [`Queue::purge_dead_letters`].
fn purge(dir: &Path, queue: &str, format: Format) -> CmdResult {
    let (log, q) = open_queue(dir, queue)?;
    let deleted = q
        .purge_dead_letters()
        .map_err(|e| Failure::engine("purge dead letters", e))?;
    close_queue(log, q)?;
    match format {
        Format::Json => print_json(&json!({ "purged": deleted })),
        Format::Text => println!("{deleted} dead letters deleted"),
    }
    Ok(ExitCode::SUCCESS)
}
