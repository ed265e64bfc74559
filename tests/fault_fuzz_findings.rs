//! Inputs of the `open_dir` fuzz target (`fuzz/`, issue 9's fault suite) that broke a
//! promise, replayed on SimFs as regression tests. Each file of `tests/data/fuzz-open_dir/`
//! is a directory in the target's input format (`fuzz/fuzz_targets/common/dir_input.rs`);
//! whatever its bytes, a log that opens must hand out strictly increasing offsets from
//! a reader, each equal to what `read` returns at it, and a fresh append must be
//! readable at once.

#[path = "../fuzz/fuzz_targets/common/dir_input.rs"]
mod dir_input;

use std::path::Path;
use std::sync::Arc;

use logqueue::sim::SimFs;
use logqueue::{FlushPolicy, Log, LogConfig, Record};

/// The `open_dir` target's config.
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

/// The target's log checks, returning the first broken promise.
fn replay(input: &[u8]) -> Result<(), String> {
    let (interval, files) = dir_input::parse(input);
    let fs = SimFs::new(0);
    for (name, body) in &files {
        fs.write_file(format!("{}/{name}", dir_input::DIR), body)
            .unwrap();
    }
    let Ok(log) = Log::open(dir_input::DIR, config(&fs, interval)) else {
        return Ok(()); // refusing the directory keeps every promise
    };
    let (start, end) = (log.start_offset(), log.end_offset());
    // The reads the target does first.
    let _ = log.read(start.saturating_sub(1));
    for o in start..end.min(start.saturating_add(128)) {
        let _ = log.read(o);
    }
    for o in end.saturating_sub(128).max(start)..end.saturating_add(2) {
        if let Ok(Some(r)) = log.read(o) {
            if r.offset != o {
                return Err(format!("read({o}) returned offset {}", r.offset));
            }
        }
    }
    if let Ok(reader) = log.reader(start) {
        let mut last = None;
        for r in reader.take(128) {
            let Ok(r) = r else { break };
            if let Some(l) = last {
                if r.offset <= l {
                    return Err(format!("reader went from {l} to {}", r.offset));
                }
            }
            last = Some(r.offset);
        }
    }
    if let Ok(offset) = log.append(Record::keyed("fuzz-key", "fuzz-value")) {
        match log.read(offset) {
            Ok(Some(r)) if r.value.as_deref() == Some(&b"fuzz-value"[..]) => {}
            other => return Err(format!("fresh append at {offset} reads back as {other:?}")),
        }
    }
    Ok(())
}

fn finding(name: &str) -> Result<(), String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz-open_dir")
        .join(name);
    replay(&std::fs::read(path).unwrap())
}

#[test]
fn reader_never_repeats_an_offset() {
    // A segment at base 0 with damaged batches and a segment named near u64::MAX: the
    // reader returned offset 1 twice.
    let r = finding("reader-repeats-an-offset");
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn a_fresh_append_is_readable() {
    // An append returned an offset that `read` then did not find.
    let r = finding("fresh-append-unreadable");
    assert!(r.is_ok(), "{r:?}");
}

/// The queue over the `receive-hangs-on-a-corrupt-stretch` directory: a segment the
/// reader cannot read on in, followed by one based near u64::MAX. The read-ahead used
/// to skip one offset per step across the whole stretch (a hang); it must settle the
/// stretch (counted as corrupt) in bounded time.
#[test]
fn a_receive_over_an_unreadable_stretch_is_bounded() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz-open_dir/receive-hangs-on-a-corrupt-stretch");
    let input = std::fs::read(path).unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (interval, files) = dir_input::parse(&input);
        let fs = SimFs::new(0);
        for (name, body) in &files {
            fs.write_file(format!("{}/{name}", dir_input::DIR), body)
                .unwrap();
        }
        let log = Log::open(dir_input::DIR, config(&fs, interval)).unwrap();
        let queue_config = logqueue::QueueConfig {
            journal_bytes: 4096,
            ..logqueue::QueueConfig::default()
        };
        let q = logqueue::Queue::open(&log, dir_input::QUEUE, queue_config).unwrap();
        for _ in 0..3 {
            let _ = q.receive(8, std::time::Duration::ZERO);
        }
        let skipped = q.stats().corrupt_skipped;
        done_tx.send(skipped).unwrap();
    });
    let skipped = done_rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("receive over an unreadable stretch finishes");
    assert!(skipped > 0, "the unreadable stretch is counted");
}
