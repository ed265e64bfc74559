//! Write commands: produce, delete-records, compact, retention. Each takes the log's
//! lock (see [`crate::output::open_write`]).

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use logqueue::{CleanupPolicy, Offset, Record};
use serde_json::json;

use crate::output::{open_write, print_json, tool_config, CmdResult, Failure, Format, EXIT_USAGE};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Input {
    /// Each line is a record's value.
    Lines,
    /// Each line is a JSON document, stored as the record's value.
    Json,
}

#[derive(Args)]
pub struct ProduceArgs {
    /// The log directory (created if missing).
    dir: PathBuf,
    /// How stdin is read.
    #[arg(long, value_enum, default_value_t = Input::Lines)]
    input: Input,
    /// With JSON input: the top-level field whose value becomes the record's key.
    #[arg(long)]
    key_field: Option<String>,
    /// Records appended per batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// The key of a JSON document: the field's text (a string as is, anything else as JSON).
fn key_of(doc: &serde_json::Value, field: &str) -> Option<Vec<u8>> {
    match doc.get(field)? {
        serde_json::Value::String(s) => Some(s.clone().into_bytes()),
        serde_json::Value::Null => None,
        other => Some(other.to_string().into_bytes()),
    }
}

pub fn produce(a: ProduceArgs) -> CmdResult {
    if a.key_field.is_some() && a.input != Input::Json {
        return Err(Failure::new(EXIT_USAGE, "--key-field needs --input json"));
    }
    let log = open_write(&a.dir, tool_config())?;
    let batch_size = a.batch.max(1);
    let mut pending = Vec::with_capacity(batch_size);
    let (mut first, mut count) = (None::<Offset>, 0u64);
    let mut append = |pending: &mut Vec<Record>| -> Result<(), Failure> {
        if pending.is_empty() {
            return Ok(());
        }
        let range = log
            .append_batch(std::mem::take(pending))
            .map_err(|e| Failure::engine("append", e))?;
        first.get_or_insert(range.start);
        count += range.end - range.start;
        Ok(())
    };
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.map_err(|e| Failure::new(1, format!("reading stdin: {e}")))?;
        if a.input == Input::Json && line.trim().is_empty() {
            continue;
        }
        let record = match a.input {
            Input::Lines => Record::new(line),
            Input::Json => {
                let doc: serde_json::Value = serde_json::from_str(&line)
                    .map_err(|e| Failure::new(1, format!("line {}: not JSON: {e}", n + 1)))?;
                let key = a.key_field.as_deref().and_then(|f| key_of(&doc, f));
                Record {
                    key,
                    value: Some(line.trim().as_bytes().to_vec()),
                    ..Record::default()
                }
            }
        };
        pending.push(record);
        if pending.len() >= batch_size {
            append(&mut pending)?;
        }
    }
    append(&mut pending)?;
    log.flush().map_err(|e| Failure::engine("flush", e))?;
    let end = log.end_offset();
    log.close().map_err(|e| Failure::engine("close", e))?;
    let first = first.unwrap_or(end);
    match a.format {
        Format::Json => {
            print_json(&json!({ "records": count, "first_offset": first, "end_offset": end }))
        }
        Format::Text => println!("appended {count} records at offsets [{first}, {end})"),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct DeleteArgs {
    /// The log directory.
    dir: PathBuf,
    /// Records below this offset are deleted (reads get OffsetOutOfRange).
    #[arg(long)]
    before: Offset,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn delete_records(a: DeleteArgs) -> CmdResult {
    let log = open_write(&a.dir, tool_config())?;
    log.delete_records_before(a.before)
        .map_err(|e| Failure::engine("delete records", e))?;
    // No time or size limit: the pass deletes only the whole segments below the start.
    let report = log
        .enforce_retention()
        .map_err(|e| Failure::engine("retention", e))?;
    let start = log.start_offset();
    log.close().map_err(|e| Failure::engine("close", e))?;
    match a.format {
        Format::Json => print_json(&json!({ "start_offset": start, "retention": report })),
        Format::Text => println!(
            "start offset now {start}; {} segments ({} bytes) deleted",
            report.segments_deleted, report.bytes_deleted
        ),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct CompactArgs {
    /// The log directory.
    dir: PathBuf,
    /// Tombstones stay this many seconds after the pass that first sees them.
    #[arg(long, default_value_t = 86_400)]
    delete_retention_secs: u64,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn compact(a: CompactArgs) -> CmdResult {
    let mut config = tool_config();
    config.cleanup = CleanupPolicy::Compact;
    config.compaction.delete_retention = Duration::from_secs(a.delete_retention_secs);
    let log = open_write(&a.dir, config)?;
    let report = log.compact().map_err(|e| Failure::engine("compact", e))?;
    log.close().map_err(|e| Failure::engine("close", e))?;
    match a.format {
        Format::Json => print_json(&report),
        Format::Text => println!(
            "{} segments cleaned: {} records and {} tombstones removed, {} -> {} bytes",
            report.segments_cleaned,
            report.records_removed,
            report.tombstones_removed,
            report.bytes_before,
            report.bytes_after
        ),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct RetentionArgs {
    /// The log directory.
    dir: PathBuf,
    /// Delete segments whose newest record is older than this many milliseconds.
    #[arg(long)]
    retention_ms: Option<u64>,
    /// Delete the oldest segments while the log is larger than this many bytes.
    #[arg(long)]
    retention_bytes: Option<u64>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn retention(a: RetentionArgs) -> CmdResult {
    if a.retention_ms.is_none() && a.retention_bytes.is_none() {
        return Err(Failure::new(
            EXIT_USAGE,
            "give --retention-ms and/or --retention-bytes (the log's own settings live in \
             the program that writes it)",
        ));
    }
    let mut config = tool_config();
    config.retention_ms = a.retention_ms.map(Duration::from_millis);
    config.retention_bytes = a.retention_bytes;
    let log = open_write(&a.dir, config)?;
    let report = log
        .enforce_retention()
        .map_err(|e| Failure::engine("retention", e))?;
    log.close().map_err(|e| Failure::engine("close", e))?;
    match a.format {
        Format::Json => print_json(&report),
        Format::Text => println!(
            "{} segments ({} bytes) deleted; start offset now {}",
            report.segments_deleted, report.bytes_deleted, report.start_offset
        ),
    }
    Ok(ExitCode::SUCCESS)
}
