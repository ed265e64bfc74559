//! export / import: records as JSON lines, one per line, in the format of
//! [`crate::output::record_json`]: `{"offset", "timestamp", "key", "value", "headers"}`
//! with binary as base64, `null` key for none and `null` value for a tombstone.
//! Import keeps keys, values, headers and timestamps exactly; the importing log gives
//! the records its own offsets (consecutive from its end), so an export of a log with
//! no gaps, imported into an empty log, exports again byte for byte.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use logqueue::{Error, Header, Offset, Record};
use serde_json::Value;

use crate::output::{
    open_read, open_write, print_json, progress, record_json, tool_config, unb64, CmdResult,
    Failure, Format, EXIT_PROBLEM,
};

#[derive(Args)]
pub struct ExportArgs {
    /// The log directory.
    dir: PathBuf,
    /// First offset (default: the start of the log).
    #[arg(long)]
    from: Option<Offset>,
    /// Records to write at most (default: all, up to the end at the start of the export).
    #[arg(long)]
    count: Option<u64>,
}

pub fn export(a: ExportArgs) -> CmdResult {
    let log = open_read(&a.dir)?;
    let from = a.from.unwrap_or_else(|| log.start_offset());
    // Up to the end as it is now, even if a writer keeps appending.
    let end = log.end_offset();
    let mut reader = log.reader(from).map_err(|e| Failure::engine("export", e))?;
    let count = a.count.unwrap_or(u64::MAX);
    let bar = progress(Some(end.saturating_sub(from).min(count)), "export");
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut written, mut damaged) = (0u64, 0u64);
    while written < count {
        let r = match reader.next() {
            None => break,
            Some(Ok(r)) if r.offset >= end => break,
            Some(Ok(r)) => r,
            Some(Err(e @ Error::Corrupt { .. })) => {
                eprintln!("logqueue: {e}");
                damaged += 1;
                continue;
            }
            Some(Err(e)) => return Err(Failure::engine("export", e)),
        };
        if writeln!(out, "{}", record_json(&r)).is_err() {
            return Ok(ExitCode::SUCCESS);
        }
        written += 1;
        bar.inc(1);
    }
    out.flush()
        .map_err(|e| Failure::new(EXIT_PROBLEM, format!("writing stdout: {e}")))?;
    bar.finish_and_clear();
    Ok(if damaged > 0 {
        ExitCode::from(EXIT_PROBLEM)
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Args)]
pub struct ImportArgs {
    /// The log directory (created if missing).
    dir: PathBuf,
    /// Records appended per batch.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// One export line back into a record.
fn parse_line(line: &str) -> Result<Record, String> {
    let doc: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let bytes = |field: &str| -> Result<Option<Vec<u8>>, String> {
        match doc.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => unb64(s, field).map(Some),
            Some(_) => Err(format!("{field} must be a base64 string or null")),
        }
    };
    let timestamp = doc
        .get("timestamp")
        .and_then(Value::as_i64)
        .ok_or("timestamp must be an integer (milliseconds)")?;
    let mut headers = Vec::new();
    for h in doc
        .get("headers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(k), Some(v)) = (
            h.get(0).and_then(Value::as_str),
            h.get(1).and_then(Value::as_str),
        ) else {
            return Err("a header must be [name, base64 value]".into());
        };
        headers.push(Header {
            key: k.to_string(),
            value: unb64(v, "header value")?,
        });
    }
    Ok(Record {
        key: bytes("key")?,
        value: bytes("value")?,
        headers,
        timestamp: Some(timestamp),
    })
}

pub fn import(a: ImportArgs) -> CmdResult {
    let log = open_write(&a.dir, tool_config())?;
    let bar = progress(None, "import");
    let batch_size = a.batch.max(1);
    let mut pending = Vec::with_capacity(batch_size);
    let (mut count, mut pending_bytes) = (0u64, 0usize);
    let append = |pending: &mut Vec<Record>| -> Result<u64, Failure> {
        if pending.is_empty() {
            return Ok(0);
        }
        let range = log
            .append_batch(std::mem::take(pending))
            .map_err(|e| Failure::engine("append", e))?;
        Ok(range.end - range.start)
    };
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.map_err(|e| Failure::new(EXIT_PROBLEM, format!("reading stdin: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let record = parse_line(&line)
            .map_err(|e| Failure::new(EXIT_PROBLEM, format!("line {}: {e}", n + 1)))?;
        // Batches stay well below the default max_batch_bytes (1 MiB).
        pending_bytes += line.len();
        pending.push(record);
        if pending.len() >= batch_size || pending_bytes >= 256 << 10 {
            count += append(&mut pending)?;
            pending_bytes = 0;
            bar.set_position(count);
        }
    }
    count += append(&mut pending)?;
    log.flush().map_err(|e| Failure::engine("flush", e))?;
    log.close().map_err(|e| Failure::engine("close", e))?;
    bar.finish_and_clear();
    match a.format {
        Format::Json => print_json(&serde_json::json!({ "records": count })),
        Format::Text => println!("imported {count} records"),
    }
    Ok(ExitCode::SUCCESS)
}
