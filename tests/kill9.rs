//! The real kill -9: a child process appends with `FlushPolicy::Manual` (no fsync at
//! all) and prints each offset after `append` returned; the parent SIGKILLs it at a
//! random moment and reopens the log: every printed offset is there with its exact
//! value, the log is a dense prefix, and a batch is all-or-nothing. Several rounds on
//! one directory, each child appending on top of what the last one left.
//!
//! The child is this test binary run again (`--exact child_appender --ignored`) with
//! `LOGQUEUE_KILL9_DIR` naming the directory; without it `child_appender` does nothing.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{copy_dir, small_config, value_for, Rng};
use logqueue::{Log, LogConfig, Record};

const DIR_VAR: &str = "LOGQUEUE_KILL9_DIR";
const MODE_VAR: &str = "LOGQUEUE_KILL9_MODE";

fn config() -> LogConfig {
    // Small segments so the child rolls (and leaves sealed, never-fsynced segments).
    small_config(64 << 10)
}

/// The value at `offset`: in "mixed" mode every third one is 16-32 KiB, large enough
/// to be written through the file (`pwrite`) rather than stored into the map, so both
/// write paths interleave in one segment.
fn value_in(mode: &str, offset: u64) -> Vec<u8> {
    let mut v = value_for(offset);
    if mode == "mixed" && offset.is_multiple_of(3) {
        v.resize(v.len() + (16 << 10) + (offset % 5) as usize * 4096, b'L');
    }
    v
}

/// Records in the batch that starts at `start` (batch mode): 1 to 13, decided by the
/// offset so that the parent knows where every batch boundary is.
fn batch_len(start: u64) -> u64 {
    1 + (start.wrapping_mul(2_654_435_761) >> 7) % 13
}

/// The child: appends until killed (or for 30 s at most, or until stdout is gone).
#[test]
#[ignore = "run by the kill9 tests as a child process"]
fn child_appender() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let mode = std::env::var(MODE_VAR).unwrap_or_default();
    let batches = mode == "batch";
    let log = Log::open(&dir, config()).unwrap();
    let mut out = std::io::stdout().lock();
    let mut next = log.end_offset();
    writeln!(out, "START {next}").unwrap();
    out.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    if mode == "threads" {
        drop(out);
        return append_in_threads(&log, deadline);
    }
    while Instant::now() < deadline {
        let line = if batches {
            let n = batch_len(next);
            let recs = (next..next + n)
                .map(|o| Record::new(value_for(o)))
                .collect();
            let got = log.append_batch(recs).unwrap();
            assert_eq!(got, next..next + n);
            format!("BATCH {} {}", got.start, got.end)
        } else {
            let got = log.append(Record::new(value_in(&mode, next))).unwrap();
            assert_eq!(got, next);
            format!("OFFSET {got}")
        };
        next = log.end_offset();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return; // the parent is gone
        }
    }
}

/// Appenders in the "threads" mode of the child.
const THREADS: u64 = 3;

/// The value thread `t` appends in its `i`-th append ("threads" mode).
fn thread_value(t: u64, i: u64) -> Vec<u8> {
    format!(
        "thread-{t}-{i}-{}",
        "y".repeat(((t * 13 + i) % 41) as usize)
    )
    .into_bytes()
}

/// The child's "threads" mode: `THREADS` threads append in parallel, each printing
/// `REC <thread> <i> <offset>` once its `i`-th append returned (the ledger the parent
/// checks the reopened log against).
fn append_in_threads(log: &Log, deadline: Instant) {
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    if Instant::now() >= deadline {
                        return;
                    }
                    let offset = log.append(Record::new(thread_value(t, i))).unwrap();
                    let mut out = std::io::stdout().lock();
                    if writeln!(out, "REC {t} {i} {offset}")
                        .and_then(|()| out.flush())
                        .is_err()
                    {
                        return; // the parent is gone
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

enum Event {
    Start(u64),
    /// Offsets `start..end` were acknowledged by append.
    Acked(u64, u64),
    /// Thread `.1`'s append number `.2` returned offset `.0` ("threads" mode).
    Rec(u64, u64, u64),
}

/// Runs one child on `dir` for a random 0.2-1 s after it started appending, kills it
/// with SIGKILL; returns the offset it started at, the highest acknowledged end, the
/// number of acknowledgements and ("threads" mode) the ledger of returned records.
fn run_child(dir: &Path, mode: &str, rng: &mut Rng) -> (u64, u64, usize, Vec<(u64, Vec<u8>)>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_appender", "--nocapture", "--ignored"])
        .env(DIR_VAR, dir)
        .env(MODE_VAR, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match lines.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            // A line cut by the kill has no newline: it was never fully acknowledged.
            let Some(l) = line.strip_suffix('\n') else {
                return;
            };
            let words: Vec<&str> = l.split_whitespace().collect();
            let num = |i: usize| words[i].parse::<u64>().unwrap();
            let ev = match words.first() {
                Some(&"START") => Event::Start(num(1)),
                Some(&"OFFSET") => Event::Acked(num(1), num(1) + 1),
                Some(&"BATCH") => Event::Acked(num(1), num(2)),
                Some(&"REC") => Event::Rec(num(3), num(1), num(2)),
                _ => continue, // the test harness's own output
            };
            if tx.send(ev).is_err() {
                return;
            }
        }
    });
    let start = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Event::Start(s)) => s,
        _ => {
            let _ = child.kill();
            panic!("the child did not start");
        }
    };
    // While the child holds the log, this process cannot open it (flock).
    assert!(
        matches!(
            Log::open(dir, config()),
            Err(logqueue::Error::Locked { .. })
        ),
        "a second process must get Error::Locked"
    );
    std::thread::sleep(Duration::from_millis(200 + rng.below(800)));
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the child must have been killed: {status:?}"
    );
    reader.join().unwrap();
    let mut acked_end = start;
    let mut count = 0;
    let mut ledger = Vec::new();
    let mut next_of_thread = [0u64; THREADS as usize];
    for ev in rx.try_iter() {
        match ev {
            Event::Acked(s, e) => {
                assert_eq!(s, acked_end, "the child acknowledges in order");
                acked_end = e;
                count += 1;
            }
            Event::Rec(offset, t, i) => {
                // Each thread's appends return in its own order, offsets increasing.
                assert_eq!(i, next_of_thread[t as usize], "thread {t}'s acks in order");
                next_of_thread[t as usize] += 1;
                assert!(
                    offset >= start,
                    "offset {offset} before the child's start {start}"
                );
                acked_end = acked_end.max(offset + 1);
                ledger.push((offset, thread_value(t, i)));
                count += 1;
            }
            Event::Start(_) => {}
        }
    }
    (start, acked_end, count, ledger)
}

/// Checks the log in `dir`: dense from 0, at least `acked_end` records, each with its
/// value (in "threads" mode: each record of the `ledger` with the value its thread
/// appended, the others whatever they hold), and (batch mode) ending on a batch
/// boundary after `start`.
fn check(dir: &Path, start: u64, acked_end: u64, mode: &str, ledger: &[(u64, Vec<u8>)]) -> u64 {
    let batches = mode == "batch";
    let log = common::open_log_retrying_locked(dir, config()).unwrap();
    let end = log.end_offset();
    assert!(
        end >= acked_end,
        "acknowledged up to {acked_end}, recovered only {end}"
    );
    assert_eq!(log.start_offset(), 0);
    let mut n = 0u64;
    for r in log.reader(0).unwrap() {
        let r = r.unwrap();
        assert_eq!(r.offset, n, "dense");
        if mode != "threads" {
            assert_eq!(
                r.value.as_deref(),
                Some(&value_in(mode, n)[..]),
                "value at {n}"
            );
        }
        n += 1;
    }
    for (offset, value) in ledger {
        let r = log
            .read(*offset)
            .unwrap()
            .unwrap_or_else(|| panic!("returned offset {offset} lost"));
        assert_eq!(
            r.value.as_deref(),
            Some(&value[..]),
            "value at returned offset {offset}"
        );
    }
    assert_eq!(n, end);
    if batches {
        let mut b = start;
        while b < end {
            b += batch_len(b);
        }
        assert_eq!(b, end, "the log ends inside a batch (not all-or-nothing)");
    }
    let report = log.verify().unwrap();
    assert!(report.corrupt.is_empty(), "{:?}", report.corrupt);
    assert_eq!(report.records, end);
    log.close().unwrap();
    end
}

fn rounds(mode: &str, count: usize) {
    let seed = common::seed_from_env_or_clock();
    println!("kill9 {mode}: LOGQUEUE_SEED={seed}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut expected_start = 0;
    for round in 0..count {
        let (start, acked_end, acks, ledger) = run_child(dir.path(), mode, &mut rng);
        // Each child starts where the previous recovery ended.
        assert_eq!(start, expected_start, "round {round}");
        assert!(acks > 0, "round {round}: the child acknowledged nothing");
        // Odd rounds check a copy, so the next child recovers the crash itself.
        let end = if round % 2 == 1 {
            let copy = tempfile::tempdir().unwrap();
            copy_dir(dir.path(), copy.path());
            let end = check(copy.path(), start, acked_end, mode, &ledger);
            // The copy and the original recover the same way.
            let log = common::open_log_retrying_locked(dir.path(), config()).unwrap();
            assert_eq!(log.end_offset(), end);
            drop(log);
            end
        } else {
            check(dir.path(), start, acked_end, mode, &ledger)
        };
        println!("round {round}: {acks} acks, acked up to {acked_end}, recovered {end}");
        expected_start = end;
    }
}

#[test]
fn kill9_single_appends() {
    rounds("single", 4);
}

/// Values of 16-32 KiB among small ones: the large-write path (`pwrite` into the
/// same page cache) survives kill -9 like stores into the map.
#[test]
fn kill9_mixed_large_and_small_appends() {
    rounds("mixed", 3);
}

#[test]
fn kill9_append_batch() {
    rounds("batch", 2);
}

/// Several threads appending in parallel (reservations encoded and published out of
/// the append lock): every offset an append returned is there after the kill with
/// its thread's value, and the log is dense (no hole left by an append in flight).
#[test]
fn kill9_parallel_appenders() {
    rounds("threads", 3);
}
