//! Writes one small batch through the real engine on the simulated disk and prints
//! the `.log`, `.index`, `.timeindex` and checkpoint files in hex, for
//! `docs/format.md`. Deterministic: a manual clock and fixed timestamps.
//!
//! `cargo run --example format_example` (from `fuzz/`).

use std::sync::Arc;

use logqueue::sim::SimFs;
use logqueue::{FlushPolicy, Log, LogConfig, ManualClock, Record};

fn hexdump(name: &str, bytes: &[u8]) {
    println!("{name} ({} bytes):", bytes.len());
    for (i, row) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = row.iter().map(|b| format!("{b:02x}")).collect();
        let text: String = row
            .iter()
            .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
            .collect();
        println!("{:08x}  {:<47}  {text}", i * 16, hex.join(" "));
    }
    println!();
}

fn main() {
    let fs = SimFs::new(0);
    let config = LogConfig {
        fs: Arc::new(fs.clone()),
        clock: Arc::new(ManualClock::new(1_700_000_000_000)),
        background: false,
        flush: FlushPolicy::Manual,
        segment_bytes: 1 << 20,
        ..LogConfig::default()
    };
    let log = Log::open("/demo", config).unwrap();
    log.append_batch(vec![
        Record::keyed("k", "hi").with_header("h", "v"),
        Record::new("yo").with_timestamp(1_700_000_000_005),
    ])
    .unwrap();
    log.delete_records_before(1).unwrap();
    log.close().unwrap();
    for name in [
        "00000000000000000000.log",
        "00000000000000000000.index",
        "00000000000000000000.timeindex",
        "recovery-point",
        "log-start-offset",
        "clean-shutdown",
    ] {
        match fs.read_file(format!("/demo/{name}")) {
            Some(bytes) => hexdump(name, &bytes),
            None => println!("{name}: absent\n"),
        }
    }
}
