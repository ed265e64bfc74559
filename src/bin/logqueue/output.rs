//! What every command shares: opening logs with the right exit status, the output
//! format, records as text or JSON, and progress bars.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use logqueue::{Error, Header, Log, LogConfig, StoredRecord};
use serde_json::{json, Value};

/// Exit status of a command that ran and found a problem.
pub const EXIT_PROBLEM: u8 = 1;
/// Exit status when the log cannot be opened.
pub const EXIT_CANNOT_OPEN: u8 = 2;
/// Exit status for arguments that make no sense together.
pub const EXIT_USAGE: u8 = 64;

/// Why a command stopped: the exit status and what to tell the user.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// A failure of the engine during a command (exit status 1).
    pub fn engine(what: &str, e: Error) -> Failure {
        Failure::new(EXIT_PROBLEM, format!("{what}: {e}"))
    }
}

pub type CmdResult = Result<std::process::ExitCode, Failure>;

/// Output format of the commands that print data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Opens `dir` read-only (beside a live writer); exit status 2 when it cannot.
pub fn open_read(dir: &Path) -> Result<Log, Failure> {
    Log::open_read_only(dir).map_err(|e| {
        Failure::new(
            EXIT_CANNOT_OPEN,
            format!("cannot open {} for reading: {e}", dir.display()),
        )
    })
}

/// The configuration write commands open a log with: no time or size retention and
/// no background threads, so opening it changes nothing the command was not asked to.
pub fn tool_config() -> LogConfig {
    LogConfig {
        retention_ms: None,
        retention_bytes: None,
        segment_ms: None,
        background: false,
        ..LogConfig::default()
    }
}

/// Opens `dir` for writing, taking its lock; exit status 2 with a clear message when
/// another process has it open.
pub fn open_write(dir: &Path, config: LogConfig) -> Result<Log, Failure> {
    Log::open(dir, config).map_err(|e| match e {
        Error::Locked { path } => Failure::new(
            EXIT_CANNOT_OPEN,
            format!(
                "{} is open in another process (its lock {} is held): write commands need \
                 the log to themselves. Stop that process first; read commands (dump, stats, \
                 tail, queues, dlq list, export, verify) work beside it.",
                dir.display(),
                path.display()
            ),
        ),
        e => Failure::new(
            EXIT_CANNOT_OPEN,
            format!("cannot open {} for writing: {e}", dir.display()),
        ),
    })
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn unb64(text: &str, what: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("{what} is not base64: {e}"))
}

/// A record as a JSON object: the export format (binary as base64; `null` key: none,
/// `null` value: a tombstone).
pub fn record_json(r: &StoredRecord) -> Value {
    json!({
        "offset": r.offset,
        "timestamp": r.timestamp,
        "key": r.key.as_deref().map(b64),
        "value": r.value.as_deref().map(b64),
        "headers": r.headers.iter().map(|h| json!([h.key, b64(&h.value)])).collect::<Vec<_>>(),
    })
}

/// Bytes for a person: quoted text when printable UTF-8, else `base64:...`.
pub fn show_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(|c| c.is_control() && c != '\t') => format!("{s:?}"),
        _ => format!("base64:{}", b64(bytes)),
    }
}

/// A record on one line for a person.
pub fn record_text(r: &StoredRecord) -> String {
    let mut line = format!("{} {}", r.offset, crate::time::format_ms(r.timestamp));
    match &r.key {
        Some(k) => line += &format!(" key={}", show_bytes(k)),
        None => line += " key=-",
    }
    match &r.value {
        Some(v) => line += &format!(" value={}", show_bytes(v)),
        None => line += " value=<tombstone>",
    }
    for Header { key, value } in &r.headers {
        line += &format!(" {key}={}", show_bytes(value));
    }
    line
}

/// Prints a record in `format`. False when stdout is closed (a pipe reader left).
pub fn print_record(out: &mut impl Write, r: &StoredRecord, format: Format) -> bool {
    let line = match format {
        Format::Text => record_text(r),
        Format::Json => record_json(r).to_string(),
    };
    writeln!(out, "{line}").is_ok()
}

/// Prints `value` as one JSON document.
pub fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("logqueue: cannot encode JSON: {e}"),
    }
}

/// A progress bar of `len` steps (a spinner when unknown); hidden when stdout is not
/// a terminal, so piped and redirected output stays clean.
pub fn progress(len: Option<u64>, message: &str) -> ProgressBar {
    if !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner(),
    };
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
