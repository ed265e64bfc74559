//! stats: offsets, segments, bytes, dirty ratio, cursors and queues with their lag
//! (read-only); and the cursor lag that `queues` shows too.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use logqueue::{CursorInfo, Log, LogStats, Offset, Queue, QueueStats, SegmentInfo};
use serde_json::{json, Value};

use crate::output::{open_read, print_json, CmdResult, Failure, Format, EXIT_PROBLEM};

#[derive(Args)]
pub struct StatsArgs {
    /// The log directory.
    dir: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// A cursor and how far it is behind the log's end.
pub struct CursorLag {
    pub name: String,
    pub position: Offset,
    pub protect: bool,
    /// End offset minus position: records not yet consumed by this cursor.
    pub lag: u64,
}

impl CursorLag {
    pub fn json(&self) -> Value {
        json!({
            "name": self.name,
            "position": self.position,
            "protect": self.protect,
            "lag": self.lag,
        })
    }
}

impl CursorLag {
    /// `cursor` with its lag behind `end`.
    pub fn new(cursor: &CursorInfo, end: Offset) -> CursorLag {
        CursorLag {
            name: cursor.name.clone(),
            position: cursor.position,
            protect: cursor.protect,
            lag: end.saturating_sub(cursor.position),
        }
    }
}

/// The name of the cursor holding queue `queue`'s retention floor.
pub fn queue_cursor(queue: &str) -> String {
    format!("queue.{queue}")
}

/// The queues of the log ([`Queue::names`]: directories holding a queue's state).
pub fn queue_names(log: &Log) -> Result<Vec<String>, Failure> {
    Queue::names(log).map_err(|e| Failure::engine("list queues", e))
}

pub fn stats(a: StatsArgs) -> CmdResult {
    let log = open_read(&a.dir)?;
    // The cursors (read again from their files) before the end is looked at: a
    // cursor the owner moved meanwhile is never past that end.
    let cursors = log.cursors().map_err(|e| e.to_string());
    let stats = log.stats();
    let cursors = cursors.map(|c| {
        let lags: Vec<_> = c
            .iter()
            .map(|c| CursorLag::new(c, stats.end_offset))
            .collect();
        (lags, stats.end_offset)
    });
    let segments = log.segments();
    let queues: Vec<_> = queue_names(&log)?
        .into_iter()
        .map(|name| {
            let s = Queue::inspect(&log, &name).map_err(|e| e.to_string());
            (name, s)
        })
        .collect();
    let failed = cursors.is_err() || queues.iter().any(|(_, s)| s.is_err());
    let dirty = stats.dirty_bytes as f64 / (stats.clean_bytes + stats.dirty_bytes).max(1) as f64;
    match a.format {
        Format::Json => print_json(&json!({
            "log": stats,
            "dirty_ratio": dirty,
            "segments": segments,
            "cursors": match &cursors {
                Ok((c, _)) => json!(c.iter().map(CursorLag::json).collect::<Vec<_>>()),
                Err(e) => json!({ "error": e }),
            },
            "queues": queues.iter().map(|(n, s)| match s {
                Ok(s) => json!({ "name": n, "stats": s }),
                Err(e) => json!({ "name": n, "error": e }),
            }).collect::<Vec<_>>(),
        })),
        Format::Text => print_text(&a.dir, &stats, dirty, &segments, &cursors, &queues),
    }
    Ok(if failed {
        ExitCode::from(EXIT_PROBLEM)
    } else {
        ExitCode::SUCCESS
    })
}

/// The text form of `stats`: the log, its segments, its cursors, its queues.
fn print_text(
    dir: &Path,
    stats: &LogStats,
    dirty: f64,
    segments: &[SegmentInfo],
    cursors: &Result<(Vec<CursorLag>, Offset), String>,
    queues: &[(String, Result<QueueStats, String>)],
) {
    println!("directory      {}", dir.display());
    println!(
        "offsets        start {}  durable {}  end {}",
        stats.start_offset, stats.durable_offset, stats.end_offset
    );
    println!(
        "segments       {} ({} bytes of batches)",
        stats.segments, stats.size_bytes
    );
    println!(
        "compaction     clean {} bytes, dirty {} bytes (dirty ratio {dirty:.2}), cleaner offset {}",
        stats.clean_bytes, stats.dirty_bytes, stats.cleaner_offset
    );
    println!("corrupt ranges {}", stats.corrupt_ranges);
    if let Some(e) = &stats.last_background_error {
        println!("last error     {e}");
    }
    for s in segments {
        println!(
            "  segment {:>20} next {:>20} {:>12} bytes{}",
            s.base_offset,
            s.next_offset,
            s.size_bytes,
            if s.active { "  (active)" } else { "" }
        );
    }
    match cursors {
        Ok((cursors, end)) => {
            println!("cursors        {} (lag: behind end {end})", cursors.len());
            for c in cursors {
                println!(
                    "  cursor {:<30} position {:>12} lag {:>12}{}",
                    c.name,
                    c.position,
                    c.lag,
                    if c.protect { "  (protects)" } else { "" }
                );
            }
        }
        Err(e) => println!("cursors        cannot read: {e}"),
    }
    for (name, s) in queues {
        match s {
            Ok(s) => println!(
                "queue {name}: floor {} in flight {} backlog {} lag {}",
                s.ack_floor, s.in_flight, s.backlog, s.consumer_lag
            ),
            Err(e) => println!("queue {name}: cannot read: {e}"),
        }
    }
}
