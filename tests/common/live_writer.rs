//! A writer in a child process, for tests of readers beside a live log: it appends
//! keyed records whose value names their offset ([`super::value_for`]), rolls small
//! segments, and runs retention (by size) and the compaction cleaner in the
//! background, and keeps the cursor [`CURSOR`] 100 records behind its end, until the
//! test stops it.
//!
//! The child is the test binary itself, run with [`CHILD_DIR_ENV`] set: every test
//! file using this has a `#[test] fn live_writer_child()` calling [`run_if_child`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use logqueue::{CleanupPolicy, CompactionConfig, FlushPolicy, Log, LogConfig, Offset, Record};

/// Set in the child: the log directory to write.
pub const CHILD_DIR_ENV: &str = "LOGQUEUE_LIVE_WRITER_DIR";
/// Set in the child: run the queue workload ([`run_queue`]) instead.
const QUEUE_ENV: &str = "LOGQUEUE_LIVE_WRITER_QUEUE";
/// The cursor the plain workload commits (not protecting): [`CURSOR_LAG`] behind the end.
pub const CURSOR: &str = "mirror";
/// How far [`CURSOR`] stays behind the end the writer has appended.
pub const CURSOR_LAG: u64 = 100;
/// The queue of the queue workload.
pub const QUEUE: &str = "jobs";
/// Name of the file whose appearance stops the child.
const STOP_FILE: &str = "stop-writer";
/// The child gives up after this long, whatever happens to the test.
const MAX_RUN: Duration = Duration::from_secs(120);

/// The key of the record at `offset`: 40 keys, so compaction has work.
pub fn key_for(offset: Offset) -> Vec<u8> {
    format!("k{:02}", offset % 40).into_bytes()
}

/// The writer's configuration: 16 KiB segments, retention by time (1.5 s) and size, compaction.
pub fn writer_config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 << 10,
        index_interval_bytes: 512,
        flush: FlushPolicy::Interval(Duration::from_millis(20)),
        retention_ms: Some(Duration::from_millis(1500)),
        retention_bytes: Some(128 << 10),
        cleanup: CleanupPolicy::CompactAndDelete,
        compaction: CompactionConfig {
            min_cleanable_dirty_ratio: 0.3,
            check_interval: Duration::from_millis(50),
            ..CompactionConfig::default()
        },
        file_delete_delay: Duration::from_millis(10),
        retention_check_interval: Duration::from_millis(50),
        ..LogConfig::default()
    }
}

/// In the child: writes until stopped, then closes. A no-op in a normal test run.
pub fn run_if_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let stop = dir.parent().expect("dir has a parent").join(STOP_FILE);
    if std::env::var(QUEUE_ENV).is_ok() {
        return run_queue(&dir, &stop);
    }
    let log = Log::open(&dir, writer_config()).expect("child: open");
    let cursor = log
        .cursor(CURSOR, logqueue::CursorConfig { protect: false })
        .expect("child: cursor");
    let began = Instant::now();
    let mut rng = super::Rng::new(7);
    while !stop.exists() && began.elapsed() < MAX_RUN {
        let end = log.end_offset();
        let n = rng.range(1, 6);
        let records = (end..end + n)
            .map(|o| {
                Record::keyed(key_for(o), super::value_for(o)).with_header("offset", o.to_string())
            })
            .collect();
        let range = log.append_batch(records).expect("child: append");
        assert_eq!(range, end..end + n, "child: offsets");
        cursor
            .commit((end + n).saturating_sub(CURSOR_LAG))
            .expect("child: commit cursor");
        // Move the start now and then, so retention deletes from the front too.
        if end / 500 != (end + n) / 500 && end > 1500 {
            log.delete_records_before(end - 1500)
                .expect("child: delete records");
        }
        std::thread::sleep(Duration::from_micros(rng.range(200, 2000)));
    }
    log.close().expect("child: close");
}

/// The queue workload: queue [`QUEUE`] on a log of small segments, its journal small
/// enough to rotate every few hundred events. Each record sent is
/// [`super::value_for`] of its offset; receivers ack most, dead-letter every
/// seventh (reason `r<offset % 3>`) and let every eleventh's lease expire.
fn run_queue(dir: &Path, stop: &Path) {
    use logqueue::{Queue, QueueConfig};
    let config = LogConfig {
        retention_ms: None,
        retention_bytes: None,
        cleanup: CleanupPolicy::Delete,
        ..writer_config()
    };
    let log = Log::open(dir, config).expect("child: open");
    let queue_config = QueueConfig {
        journal_bytes: 8 << 10,
        visibility_timeout: Duration::from_millis(100),
        ..QueueConfig::default()
    };
    let q = Queue::open(&log, QUEUE, queue_config).expect("child: open queue");
    let began = Instant::now();
    let mut round = 0u64;
    while !stop.exists() && began.elapsed() < MAX_RUN {
        let o = log.end_offset();
        let record =
            Record::keyed(key_for(o), super::value_for(o)).with_header("offset", o.to_string());
        assert_eq!(q.send(record).expect("child: send"), o, "child: offsets");
        for d in q.receive(3, Duration::ZERO).expect("child: receive") {
            let offset = d.record.offset;
            if offset % 7 == 0 {
                q.dead_letter(&d.receipt, &format!("r{}", offset % 3))
                    .expect("child: dead letter");
            } else if offset % 11 != 0 || d.attempt > 1 {
                q.ack(&d.receipt).expect("child: ack");
            }
        }
        round += 1;
        if round.is_multiple_of(20) {
            q.flush().expect("child: flush queue");
        }
        std::thread::sleep(Duration::from_micros(300));
    }
    q.flush().expect("child: flush queue");
    drop(q);
    log.close().expect("child: close");
}

/// A running child writer; stopped (and waited for) on drop.
pub struct LiveWriter {
    child: Option<Child>,
    pub dir: PathBuf,
    stop: PathBuf,
}

impl LiveWriter {
    /// Starts a writer on `parent/log`, through the test `child_test` of this binary.
    pub fn start(parent: &Path, child_test: &str) -> LiveWriter {
        LiveWriter::spawn(parent, child_test, false)
    }

    /// Starts the queue workload ([`run_queue`]) on `parent/log`.
    pub fn start_queue(parent: &Path, child_test: &str) -> LiveWriter {
        LiveWriter::spawn(parent, child_test, true)
    }

    fn spawn(parent: &Path, child_test: &str, queue: bool) -> LiveWriter {
        let dir = parent.join("log");
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([child_test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_ENV, &dir);
        if queue {
            cmd.env(QUEUE_ENV, "1");
        }
        let child = cmd.spawn().expect("spawn the child writer");
        let w = LiveWriter {
            child: Some(child),
            stop: parent.join(STOP_FILE),
            dir,
        };
        w.wait_for_records(200);
        w
    }

    /// Waits until the log holds at least `n` records past its start.
    pub fn wait_for_records(&self, n: u64) {
        let began = Instant::now();
        loop {
            if let Ok(log) = Log::open_read_only(&self.dir) {
                if log.end_offset() >= n {
                    return;
                }
            }
            assert!(
                began.elapsed() < Duration::from_secs(60),
                "the child writer never wrote {n} records"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Suspends the writer at a moment when no cleaner swap is half done (no
    /// `.cleaned` or `.swap` file in its directory): a reader beside a writer frozen
    /// mid-swap sees the directory as a crash would leave it, which only the writer's
    /// own recovery completes. Tries for 10 s, then panics.
    pub fn pause_settled(&self) {
        let began = Instant::now();
        loop {
            self.pause(true);
            let unsettled = std::fs::read_dir(&self.dir)
                .unwrap()
                .filter_map(|e| e.ok())
                .any(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.ends_with(".cleaned") || name.ends_with(".swap")
                });
            if !unsettled {
                return;
            }
            self.pause(false);
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "the writer was never caught outside a cleaner swap"
            );
            std::thread::sleep(Duration::from_millis(7));
        }
    }

    /// Suspends (`SIGSTOP`) or resumes (`SIGCONT`) the writer process.
    pub fn pause(&self, paused: bool) {
        let sig = if paused { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({sig})");
        if paused {
            // SIGSTOP is asynchronous, and each thread stops on its own: wait until
            // the kernel reports every thread of the child stopped. (The main thread
            // alone is not enough: a read command once found the active segment's
            // mtime moved, its bytes unchanged, after the main thread had stopped,
            // which a background thread still running would explain.)
            let tasks = format!("/proc/{}/task", self.pid());
            let began = Instant::now();
            while began.elapsed() < Duration::from_secs(5) {
                if all_threads_stopped(Path::new(&tasks)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            panic!("the writer's threads did not all stop within 5 s");
        }
    }

    /// Stops the writer (it closes the log) and waits for it; panics if it failed.
    pub fn stop(mut self) {
        self.finish(true);
    }

    fn finish(&mut self, check: bool) {
        if let Some(mut child) = self.child.take() {
            std::fs::write(&self.stop, b"").unwrap();
            let _ = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGCONT) };
            let status = child.wait().expect("wait for the child writer");
            if check {
                assert!(status.success(), "the child writer failed: {status}");
            }
        }
    }
}

impl Drop for LiveWriter {
    fn drop(&mut self) {
        self.finish(false);
    }
}

/// A digest of every file under `dir` (name, size, content, mtime): equal digests mean
/// nothing was written.
pub fn digest_dir(dir: &Path) -> Vec<(PathBuf, u64, u32, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
                out.push((e.path(), 0, 0, m.mtime(), m.mtime_nsec()));
            } else {
                let bytes = std::fs::read(e.path()).unwrap();
                out.push((e.path(), m.len(), crc32(&bytes), m.mtime(), m.mtime_nsec()));
            }
        }
    }
    out.sort();
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(bytes);
    h.finalize()
}

/// Whether every thread listed under `/proc/<pid>/task` is stopped (state `T` or
/// `t`); false when the directory cannot be read.
fn all_threads_stopped(tasks: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(tasks) else {
        return false;
    };
    let mut any = false;
    for entry in entries.filter_map(|e| e.ok()) {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().map(str::trim_start);
        if !state.is_some_and(|r| r.starts_with('T') || r.starts_with('t')) {
            return false;
        }
        any = true;
    }
    any
}
