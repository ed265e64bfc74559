//! The input format of the `open_dir` target, shared with the seed generator:
//!
//! ```text
//! flags: u8                      bits 0-1 pick index_interval_bytes
//! then repeated until the input ends:
//!   name: u8                     index into NAMES (mod its length)
//!   len:  u16 little-endian      file length (cut to what is left of the input)
//!   data: [u8; len]
//! ```
//! A later file with the same name replaces an earlier one. Names with a `/` plant
//! files in subdirectories (the queue `q` under `queues/`).

#![allow(dead_code)]

/// The directory the log lives in, on the simulated disk.
pub const DIR: &str = "/log";

/// Plausible names a log directory can hold, including crash leftovers.
pub const NAMES: &[&str] = &[
    "00000000000000000000.log",
    "00000000000000000000.index",
    "00000000000000000000.timeindex",
    "00000000000000000100.log",
    "00000000000000000100.index",
    "00000000000000000100.timeindex",
    "recovery-point",
    "log-start-offset",
    "clean-shutdown",
    "00000000000000000000.log.swap",
    "00000000000000000100.log.deleted",
    "00000000000000000050.log.cleaned",
    "recovery-point.tmp",
    "00000000000000000200.index",
    "00000000000000000100.log.swap",
    "LOCK",
    // Near the top of the offset space: offsets in it overflow easily.
    "18446744073709551000.log",
    // The files of the queue `q` (see `Queue::open`): state, journals of three
    // generations, retention floor, redrive intent, the dead-letter log.
    "queues/q/snapshot",
    "queues/q/journal-00000000000000000001",
    "queues/q/journal-00000000000000000002",
    "queues/q/journal-00000000000000000003",
    "queues/q/floor",
    "queues/q/redrive",
    "queues/q/snapshot.tmp",
    "queues/q/dead-letter/00000000000000000000.log",
    "queues/q/dead-letter/00000000000000000000.index",
    "queues/q/dead-letter/00000000000000000000.timeindex",
    "queues/q/dead-letter/00000000000000000002.log",
    "queues/q/dead-letter/recovery-point",
    "queues/q/dead-letter/clean-shutdown",
    "queues/q/dead-letter/log-start-offset",
];

/// The queue whose files [`NAMES`] holds.
pub const QUEUE: &str = "q";

/// Index intervals the flags byte chooses from.
pub const INTERVALS: [u32; 4] = [4096, 1, 100, 1000];

/// The files and the index interval an input describes.
pub fn parse(data: &[u8]) -> (u32, Vec<(&'static str, &[u8])>) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return (INTERVALS[0], Vec::new());
    };
    let interval = INTERVALS[usize::from(flags & 3)];
    let mut files: Vec<(&'static str, &[u8])> = Vec::new();
    while rest.len() >= 3 {
        let name = NAMES[usize::from(rest[0]) % NAMES.len()];
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]]));
        rest = &rest[3..];
        let (body, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        files.retain(|(n, _)| *n != name);
        files.push((name, body));
    }
    (interval, files)
}

/// The input that [`parse`] reads back as these files.
pub fn encode(flags: u8, files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![flags];
    for (name, body) in files {
        let i = NAMES
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("{name} is not in NAMES"));
        let len = u16::try_from(body.len()).expect("files of the seeds fit u16");
        out.push(i as u8);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(body);
    }
    out
}
