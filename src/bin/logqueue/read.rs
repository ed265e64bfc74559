//! Read commands: dump, verify, tail. Each opens the log read-only.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use logqueue::{BatchHeader, Error, Log, Offset};
use serde_json::json;

use crate::output::{
    open_read, print_json, print_record, progress, CmdResult, Failure, Format, EXIT_PROBLEM,
    EXIT_USAGE,
};

#[derive(Args)]
pub struct DumpArgs {
    /// The log directory.
    dir: PathBuf,
    /// First offset (default: the start of the log).
    #[arg(long)]
    from: Option<Offset>,
    /// Records to print at most (default: all).
    #[arg(long)]
    count: Option<u64>,
    /// Print each batch's header (position, size, CRC, offsets, times) before its records.
    #[arg(long)]
    batches: bool,
    /// Print the entries of every segment's `.index` and `.timeindex` file as stored
    /// (the active segment's indexes live in the writer's memory until it rolls).
    #[arg(long)]
    indexes: bool,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Reports a damaged stretch met while reading; counts it.
fn report_damage(e: &Error, damaged: &mut u64) {
    *damaged += 1;
    eprintln!("logqueue: {e}");
}

pub fn dump(a: DumpArgs) -> CmdResult {
    let log = open_read(&a.dir)?;
    if a.indexes {
        return dump_indexes(&log, a.format);
    }
    let from = a.from.unwrap_or_else(|| log.start_offset());
    let mut reader = log.reader(from).map_err(|e| Failure::engine("dump", e))?;
    let count = a.count.unwrap_or(u64::MAX);
    let span = log
        .end_offset()
        .saturating_sub(reader.position())
        .min(count);
    let bar = progress(Some(span), "dump");
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut printed, mut damaged) = (0u64, 0u64);
    while printed < count {
        let batch = match reader.next_batch() {
            Ok(Some(b)) => b,
            Ok(None) => break,
            Err(e @ (Error::Corrupt { .. } | Error::OffsetOutOfRange { .. })) => {
                report_damage(&e, &mut damaged);
                if matches!(e, Error::OffsetOutOfRange { .. }) {
                    break;
                }
                continue;
            }
            Err(e) => return Err(Failure::engine("dump", e)),
        };
        if a.batches {
            let line = batch_header_line(&batch.header(), a.format);
            if writeln!(out, "{line}").is_err() {
                return Ok(ExitCode::SUCCESS);
            }
        }
        for view in batch.records() {
            match view {
                Ok(v) => {
                    if printed >= count {
                        break;
                    }
                    if !print_record(&mut out, &v.to_owned_record(), a.format) {
                        return Ok(ExitCode::SUCCESS);
                    }
                    printed += 1;
                    bar.inc(1);
                }
                Err(e) => {
                    report_damage(&e, &mut damaged);
                    break;
                }
            }
        }
    }
    let _ = out.flush();
    bar.finish_and_clear();
    Ok(if damaged > 0 {
        ExitCode::from(EXIT_PROBLEM)
    } else {
        ExitCode::SUCCESS
    })
}

/// The line `dump --batches` prints before a batch's records.
fn batch_header_line(h: &BatchHeader, format: Format) -> String {
    match format {
        Format::Json => json!({ "batch": h }).to_string(),
        Format::Text => format!(
            "batch segment={} position={} size={} crc={:#010x} offsets={}..={} records={} \
             first_time={} max_time={} append_time={}{}",
            h.segment,
            h.position,
            h.size_bytes,
            h.crc,
            h.base_offset,
            h.last_offset,
            h.record_count,
            crate::time::format_ms(h.first_timestamp),
            crate::time::format_ms(h.max_timestamp),
            crate::time::format_ms(h.append_time),
            h.delete_horizon
                .map(|t| format!(" delete_horizon={}", crate::time::format_ms(t)))
                .unwrap_or_default()
        ),
    }
}

/// An index file's trailer as stored: the `.log` length it describes, the segment's
/// largest append time, and whether its CRC checks out.
#[derive(Clone, Copy)]
struct Trailer {
    log_len: u64,
    max_append_time: i64,
    crc_ok: bool,
}

/// One index file as stored: its entries, the bytes that are not a whole entry, and
/// its trailer.
struct IndexFile<T> {
    entries: Vec<T>,
    extra: usize,
    trailer: Option<Trailer>,
}

/// The entries of one index file: `width`-byte little-endian entries, decoded by
/// `entry`, before the 20-byte trailer (`log length u64 | max append time i64 |
/// crc32 u32`, docs/format.md §4); `None` when the file is missing (never written,
/// or the active segment).
fn index_file<T>(
    path: &std::path::Path,
    width: usize,
    entry: impl Fn(&[u8]) -> T,
) -> Option<IndexFile<T>> {
    const TRAILER: usize = 20;
    let bytes = std::fs::read(path).ok()?;
    let (body, trailer) = match bytes.len().checked_sub(TRAILER) {
        Some(n) => {
            let (body, t) = bytes.split_at(n);
            let crc = u32::from_le_bytes(t[16..].try_into().expect("4 bytes"));
            let trailer = Trailer {
                log_len: u64::from_le_bytes(t[..8].try_into().expect("8 bytes")),
                max_append_time: i64::from_le_bytes(t[8..16].try_into().expect("8 bytes")),
                crc_ok: crc32fast::hash(&bytes[..n + 16]) == crc,
            };
            (body, Some(trailer))
        }
        None => (&bytes[..], None),
    };
    let whole = body.len() / width * width;
    Some(IndexFile {
        entries: body[..whole].chunks_exact(width).map(entry).collect(),
        extra: body.len() - whole,
        trailer,
    })
}

/// `dump --indexes`: the index files of every segment, as stored on disk (format in
/// docs/format.md §4). `verify` cross-checks them against the batches.
fn dump_indexes(log: &Log, format: Format) -> CmdResult {
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    let mut docs = Vec::new();
    for s in log.segments() {
        let path = |suffix: &str| log.dir().join(format!("{:020}{suffix}", s.base_offset));
        let offsets = index_file(&path(".index"), 8, |e| {
            (s.base_offset + u64::from(u32_at(e, 0)), u32_at(e, 4))
        });
        let times = index_file(&path(".timeindex"), 12, |e| {
            let ts = i64::from_le_bytes(e[..8].try_into().expect("8 bytes"));
            (ts, s.base_offset + u64::from(u32_at(e, 8)))
        });
        match format {
            Format::Json => {
                let trailers = [
                    offsets.as_ref().and_then(|f| f.trailer),
                    times.as_ref().and_then(|f| f.trailer),
                ]
                .map(|t| {
                    t.map(|t| {
                        json!({"log_length": t.log_len, "max_append_time": t.max_append_time, "crc_ok": t.crc_ok})
                    })
                });
                docs.push(json!({
                "segment": s.base_offset,
                "active": s.active,
                "offset_index": offsets.as_ref().map(|f| f.entries.iter().map(|(o, p)| json!({"offset": o, "position": p})).collect::<Vec<_>>()),
                "time_index": times.as_ref().map(|f| f.entries.iter().map(|(t, o)| json!({"max_timestamp_before": t, "offset": o})).collect::<Vec<_>>()),
                "trailing_bytes": offsets.as_ref().map_or(0, |f| f.extra) + times.as_ref().map_or(0, |f| f.extra),
                "index_trailers": trailers,
            }))
            }
            Format::Text => {
                println!(
                    "segment {}{}",
                    s.base_offset,
                    if s.active { " (active)" } else { "" }
                );
                match &offsets {
                    None => println!("  .index: none on disk"),
                    Some(f) => {
                        for (o, p) in &f.entries {
                            println!("  offset {o} at position {p}");
                        }
                        print_index_tail(".index", f.extra, f.trailer);
                    }
                }
                match &times {
                    None => println!("  .timeindex: none on disk"),
                    Some(f) => {
                        for (t, o) in &f.entries {
                            println!("  time {t} before offset {o}");
                        }
                        print_index_tail(".timeindex", f.extra, f.trailer);
                    }
                }
            }
        }
    }
    if format == Format::Json {
        print_json(&docs);
    }
    Ok(ExitCode::SUCCESS)
}

/// The text form of an index file's bytes past its entries and its trailer.
fn print_index_tail(name: &str, extra: usize, trailer: Option<Trailer>) {
    if extra > 0 {
        println!("  {name}: {extra} trailing bytes (not a whole entry)");
    }
    match trailer {
        Some(t) if t.crc_ok => println!(
            "  {name}: describes {} bytes of the .log, largest append time {} ms",
            t.log_len, t.max_append_time
        ),
        Some(t) => println!(
            "  {name}: trailer CRC does not check out (claims {} bytes); rebuilt on load",
            t.log_len
        ),
        None => println!("  {name}: no trailer; rebuilt on load"),
    }
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The log directory.
    dir: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn verify(a: VerifyArgs) -> CmdResult {
    let log = open_read(&a.dir)?;
    let bar = progress(None, "verifying");
    let result = log.verify();
    bar.finish_and_clear();
    let segments = log.segments().len();
    let report = match result {
        Ok(r) => r,
        // A check that stops the whole verification (a gap, an unreadable file).
        Err(e) => {
            match a.format {
                Format::Json => print_json(&json!({ "clean": false, "error": e.to_string() })),
                Format::Text => println!("CORRUPT: {e}"),
            }
            return Ok(ExitCode::from(EXIT_PROBLEM));
        }
    };
    let clean = report.corrupt.is_empty();
    match a.format {
        Format::Json => print_json(&json!({
            "clean": clean,
            "segments": segments,
            "start_offset": log.start_offset(),
            "end_offset": log.end_offset(),
            "report": report,
        })),
        Format::Text => {
            println!(
                "{}: {} batches, {} records in {segments} segments, offsets [{}, {})",
                if clean { "clean" } else { "CORRUPT" },
                report.batches,
                report.records,
                log.start_offset(),
                log.end_offset()
            );
            for r in &report.corrupt {
                println!(
                    "  segment {} bytes [{}, {}){}: {}",
                    r.segment,
                    r.start_position,
                    r.end_position,
                    r.next_offset
                        .map(|o| format!(", readable again from offset {o}"))
                        .unwrap_or_default(),
                    r.reason
                );
            }
        }
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PROBLEM)
    })
}

#[derive(Args)]
pub struct TailArgs {
    /// The log directory.
    dir: PathBuf,
    /// Start at this offset.
    #[arg(long, conflicts_with_all = ["from_time", "last"])]
    from: Option<Offset>,
    /// Start at the first record at or after this time (RFC 3339, e.g. 2024-05-01T12:00:00Z).
    #[arg(long, conflicts_with = "last")]
    from_time: Option<String>,
    /// Start this many records before the end (default 10, when no --from is given).
    #[arg(long)]
    last: Option<u64>,
    /// Keep waiting for new records (until interrupted or --max is reached).
    #[arg(long, short)]
    follow: bool,
    /// Stop after printing this many records.
    #[arg(long)]
    max: Option<u64>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn tail(a: TailArgs) -> CmdResult {
    let log = open_read(&a.dir)?;
    let from = match (a.from, &a.from_time) {
        (Some(o), _) => o,
        (None, Some(t)) => {
            let ms = crate::time::parse_rfc3339(t).map_err(|e| Failure::new(EXIT_USAGE, e))?;
            log.offset_for_timestamp(ms)
                .map_err(|e| Failure::engine("tail", e))?
                .unwrap_or_else(|| log.end_offset())
        }
        (None, None) => log
            .end_offset()
            .saturating_sub(a.last.unwrap_or(10))
            .max(log.start_offset()),
    };
    let mut reader = log.reader(from).map_err(|e| Failure::engine("tail", e))?;
    let max = a.max.unwrap_or(u64::MAX);
    let stdout = std::io::stdout();
    let mut printed = 0;
    let mut damaged = 0;
    while printed < max {
        let next = if a.follow {
            reader.next_blocking(Duration::from_millis(500))
        } else {
            reader.next().transpose()
        };
        let record = match next {
            Ok(Some(r)) => r,
            Ok(None) if a.follow => continue,
            Ok(None) => break,
            Err(Error::OffsetOutOfRange { start, .. }) => {
                // Retention moved the start past the reader: go on from the new start.
                eprintln!("logqueue: records below {start} were deleted; skipping to {start}");
                reader.seek(start).map_err(|e| Failure::engine("tail", e))?;
                continue;
            }
            Err(e @ Error::Corrupt { .. }) => {
                report_damage(&e, &mut damaged);
                continue;
            }
            Err(e) => return Err(Failure::engine("tail", e)),
        };
        let mut out = stdout.lock();
        if !print_record(&mut out, &record, a.format) || out.flush().is_err() {
            break;
        }
        printed += 1;
    }
    Ok(if damaged > 0 {
        ExitCode::from(EXIT_PROBLEM)
    } else {
        ExitCode::SUCCESS
    })
}
