//! A directory of arbitrary files (chosen from plausible names, the queue `q`'s files
//! among them) opened as a log on the simulated disk: open either works or returns an
//! error, and once open, every read, a reader, verify, an append and a reopen must
//! not panic. An append that succeeds must be readable at once and after a clean
//! close and reopen. The queue `q` is opened over the log: open works or returns an
//! error, and receive, ack, nack, dead_letter, flush, redrive, stats and the
//! dead-letter log must not panic; every delivery holds the log's record at its
//! offset.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use logqueue::sim::SimFs;
use logqueue::{FlushPolicy, Log, LogConfig, Queue, QueueConfig, Record};

#[path = "common/dir_input.rs"]
mod dir_input;

/// Bound on the work per input, so huge offset ranges stay fast.
const MAX_READS: u64 = 128;

fn config(fs: &SimFs, index_interval_bytes: u32) -> LogConfig {
    LogConfig {
        fs: Arc::new(fs.clone()),
        background: false,
        flush: FlushPolicy::Manual,
        segment_bytes: 64 << 10,
        max_batch_bytes: 16 << 10,
        index_interval_bytes,
        ..LogConfig::default()
    }
}

fn exercise(log: &Log) {
    let (start, end) = (log.start_offset(), log.end_offset());
    assert!(start <= end, "start {start} above end {end}");
    let _ = log.read(start.saturating_sub(1));
    for o in start..end.min(start.saturating_add(MAX_READS)) {
        let _ = log.read(o);
    }
    for o in end.saturating_sub(MAX_READS).max(start)..end.saturating_add(2) {
        if let Ok(Some(r)) = log.read(o) {
            assert_eq!(r.offset, o, "read({o}) returned another offset");
        }
    }
    if let Ok(reader) = log.reader(start) {
        let mut last = None;
        for r in reader.take(MAX_READS as usize) {
            match r {
                Ok(r) => {
                    assert!(r.offset >= start && r.offset < end, "reader out of range");
                    if let Some(l) = last {
                        assert!(r.offset > l, "reader went from {l} to {}", r.offset);
                    }
                    last = Some(r.offset);
                }
                Err(_) => break,
            }
        }
    }
    if let Ok(mut reader) = log.reader(start) {
        let _ = reader.read_views(MAX_READS as usize, |_| {});
    }
    let _ = log.offset_for_timestamp(0);
    let _ = log.verify();
    let _ = log.segments();
    let _ = log.stats();
}

/// Opens the queue over `log` and runs a few operations on it.
fn exercise_queue(log: &Log) {
    let config = QueueConfig {
        journal_bytes: 4096,
        max_deliveries: Some(2),
        ..QueueConfig::default()
    };
    let Ok(q) = Queue::open(log, dir_input::QUEUE, config) else {
        return;
    };
    let _ = q.stats();
    for round in 0..3 {
        let Ok(got) = q.receive(8, Duration::ZERO) else {
            break;
        };
        for (i, d) in got.iter().enumerate() {
            if let Ok(Some(r)) = log.read(d.receipt.offset) {
                assert_eq!(r.value, d.record.value, "delivery differs from the log");
            }
            let _ = match (i + round) % 4 {
                0 => q.ack(&d.receipt),
                1 => q.nack(&d.receipt, Duration::ZERO),
                2 => q.dead_letter(&d.receipt, "fuzz"),
                _ => q.extend(&d.receipt, Duration::from_secs(1)),
            };
        }
        let _ = q.flush();
        let _ = q.redrive(4);
    }
    let dlq = q.dead_letters();
    if let Ok(reader) = dlq.reader(dlq.start_offset()) {
        for r in reader.take(MAX_READS as usize) {
            if r.is_err() {
                break;
            }
        }
    }
    let _ = dlq.verify();
    let _ = q.stats();
}

fuzz_target!(|data: &[u8]| {
    let (interval, files) = dir_input::parse(data);
    let fs = SimFs::new(0);
    for (name, body) in &files {
        fs.write_file(format!("{}/{name}", dir_input::DIR), body)
            .expect("planting a file");
    }
    let Ok(log) = Log::open(dir_input::DIR, config(&fs, interval)) else {
        return;
    };
    exercise(&log);
    exercise_queue(&log);
    let appended = log.append(Record::keyed("fuzz-key", "fuzz-value"));
    if let Ok(offset) = appended {
        assert_eq!(offset + 1, log.end_offset(), "append not at the end");
        let got = log
            .read(log.end_offset() - 1)
            .expect("reading a fresh append")
            .expect("a fresh append is readable");
        assert_eq!(got.offset, offset);
        assert_eq!(got.value.as_deref(), Some(&b"fuzz-value"[..]));
    }
    let _ = log.flush();
    let closed = log.close();
    // A clean close must leave a directory that opens and still holds the append.
    if closed.is_ok() {
        let log = Log::open(dir_input::DIR, config(&fs, interval)).expect("reopen after close");
        if let Ok(offset) = appended {
            let got = log
                .read(offset)
                .expect("reading after reopen")
                .expect("the append survives a clean close");
            assert_eq!(got.value.as_deref(), Some(&b"fuzz-value"[..]));
        }
        let _ = log.verify();
        let _ = log.close();
    }
});
