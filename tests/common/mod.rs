//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod fault;
pub mod live_writer;
pub mod queue_check;
pub mod queue_workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use logqueue::sim::SimFs;
use logqueue::{Error, FlushPolicy, Log, LogConfig, ManualClock, Offset, Queue, StoredRecord};

/// A config for tests: small segments, no background threads, manual flush.
pub fn small_config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 256,
        flush: FlushPolicy::Manual,
        background: false,
        segment_ms: None,
        retention_ms: None,
        file_delete_delay: Duration::ZERO,
        ..LogConfig::default()
    }
}

/// A log in `dir` on the real file system with [`small_config`] and `clock` as its time.
pub fn clocked_log(dir: &Path, clock: &ManualClock, segment_bytes: u64) -> Log {
    let config = LogConfig {
        clock: Arc::new(clock.clone()),
        ..small_config(segment_bytes)
    };
    Log::open(dir, config).unwrap()
}

/// Like [`small_config`], on a SimFs with a manual clock.
pub fn sim_config(fs: &SimFs, clock: &ManualClock, segment_bytes: u64) -> LogConfig {
    LogConfig {
        fs: Arc::new(fs.clone()),
        clock: Arc::new(clock.clone()),
        ..small_config(segment_bytes)
    }
}

/// A value that says which offset it was written at.
pub fn value_for(i: u64) -> Vec<u8> {
    format!("value-{i:08}-{}", "x".repeat((i % 37) as usize)).into_bytes()
}

/// A seed from `LOGQUEUE_SEED` or the given default, printed so a failure can be replayed.
pub fn seeds(default_count: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("LOGQUEUE_SEED") {
        let seed = s.parse().expect("LOGQUEUE_SEED must be a u64");
        return vec![seed];
    }
    (0..default_count).collect()
}

/// The seed of a randomized run: `LOGQUEUE_SEED` when set (a replay), else the
/// clock. The caller prints it with what it runs, so a failure can be replayed.
pub fn seed_from_env_or_clock() -> u64 {
    std::env::var("LOGQUEUE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// splitmix64: a tiny seeded generator for reproducible random workloads.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (different seeds give unrelated streams).
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x2545_F491_4F6C_DD1D)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (0 when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Uniform-ish in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo)
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Runs `f`; if it panics, first prints `context` (say, the seed to replay) to stderr.
pub fn with_context<T>(context: &str, f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(panic) => {
            eprintln!("FAILED at {context}");
            std::panic::resume_unwind(panic)
        }
    }
}

/// Checks that `log` holds exactly `values[o]` at every offset `o` in
/// `start..values.len()`, nothing at or past the end, and that readers, `verify` and
/// the offsets agree. `ctx` goes into every assert message.
pub fn check_log_matches(log: &Log, start: Offset, values: &[Vec<u8>], ctx: &str) {
    let end = values.len() as Offset;
    assert_eq!(log.end_offset(), end, "{ctx}: end offset");
    assert_eq!(log.start_offset(), start, "{ctx}: start offset");
    for o in start..end {
        let r = log
            .read(o)
            .unwrap_or_else(|e| panic!("{ctx}: read({o}) failed: {e}"))
            .unwrap_or_else(|| panic!("{ctx}: read({o}) found nothing below the end {end}"));
        assert_eq!(r.offset, o, "{ctx}: read({o}) returned the wrong offset");
        assert!(
            r.value.as_deref() == Some(&values[o as usize][..]),
            "{ctx}: read({o}) returned {:?}, appended {:?}",
            r.value.as_deref().map(String::from_utf8_lossy),
            String::from_utf8_lossy(&values[o as usize])
        );
    }
    for o in [end, end + 1, end + 100] {
        assert!(
            log.read(o)
                .unwrap_or_else(|e| panic!("{ctx}: read({o}) failed: {e}"))
                .is_none(),
            "{ctx}: read({o}) found a record at or past the end {end}"
        );
    }
    if start > 0 {
        assert!(
            matches!(log.read(start - 1), Err(Error::OffsetOutOfRange { .. })),
            "{ctx}: read below the start offset {start} must be OffsetOutOfRange"
        );
    }
    let all: Vec<StoredRecord> = log
        .reader(start)
        .unwrap_or_else(|e| panic!("{ctx}: reader({start}) failed: {e}"))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{ctx}: reader({start}) failed: {e}"));
    let got: Vec<(Offset, Option<&[u8]>)> =
        all.iter().map(|r| (r.offset, r.value.as_deref())).collect();
    let want: Vec<(Offset, Option<&[u8]>)> = (start..end)
        .map(|o| (o, Some(&values[o as usize][..])))
        .collect();
    assert!(
        got == want,
        "{ctx}: reader({start}) returned offsets {:?}, want {start}..{end}",
        all.iter().map(|r| r.offset).collect::<Vec<_>>()
    );
    let report = log
        .verify()
        .unwrap_or_else(|e| panic!("{ctx}: verify failed: {e}"));
    assert!(
        report.corrupt.is_empty(),
        "{ctx}: verify reports corruption: {:?}",
        report.corrupt
    );
    assert!(
        report.records >= end - start,
        "{ctx}: verify saw {} records, the log holds {}",
        report.records,
        end - start
    );
    assert_eq!(
        log.stats().corrupt_ranges,
        0,
        "{ctx}: corrupt ranges in stats"
    );
}

// ---------------------------------------------------------------------------------
// Helpers for tests that damage files of a closed log on the real file system.

/// Copies every file of `src` into `dst` (created), recursing into directories.
/// The `LOCK` file is skipped: a copy is a fresh directory.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let to = dst.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to);
        } else if name != "LOCK" {
            std::fs::copy(entry.path(), to).unwrap();
        }
    }
}

/// The `.log` segment files of a log directory, by base offset, oldest first.
pub fn segment_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|n| {
            let digits = n.strip_suffix(".log")?;
            (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| (digits.parse().unwrap(), dir.join(&n)))
        })
        .collect();
    out.sort();
    out
}

/// Path of `<base>.<suffix>` in `dir`.
pub fn seg_path(dir: &Path, base: u64, suffix: &str) -> PathBuf {
    dir.join(format!("{base:020}.{suffix}"))
}

/// One batch found by walking a segment file by its length prefixes (no CRC check:
/// for files this test wrote itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPos {
    pub start: u64,
    pub end: u64,
    pub base_offset: u64,
    pub last_offset: u64,
}

/// The batches of a clean segment file (4-byte length, then base offset at byte 16
/// and last offset delta at byte 12 of the 60-byte header; little-endian).
pub fn batches_of(bytes: &[u8]) -> Vec<BatchPos> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 60 <= bytes.len() {
        let u32_at = |p: usize| u32::from_le_bytes(bytes[p..p + 4].try_into().unwrap());
        let len = u32_at(pos) as usize + 4;
        if u32_at(pos) == 0 || pos + len > bytes.len() {
            break;
        }
        let base = u64::from_le_bytes(bytes[pos + 16..pos + 24].try_into().unwrap());
        let delta = u32_at(pos + 12);
        out.push(BatchPos {
            start: pos as u64,
            end: (pos + len) as u64,
            base_offset: base,
            last_offset: base + u64::from(delta),
        });
        pos += len;
    }
    assert_eq!(
        pos,
        bytes.len(),
        "segment file does not end at a batch boundary"
    );
    out
}

/// Makes a closed log look crashed with nothing promised: no clean-shutdown marker
/// and a recovery point at byte 0 of the first segment, so recovery treats every byte
/// as un-promised tail. (Without any valid recovery point, recovery takes every sealed
/// segment as durable and reports damage there instead of cutting it.)
pub fn forget_everything_durable(dir: &Path) {
    let p = dir.join("clean-shutdown");
    if p.exists() {
        std::fs::remove_file(p).unwrap();
    }
    let first = segment_files(dir).first().map_or(0, |(base, _)| *base);
    write_recovery_point(dir, first, 0, first);
}

/// Every record of the log through a reader from the start offset; panics on an error.
pub fn read_all(log: &Log) -> Vec<StoredRecord> {
    log.reader(log.start_offset())
        .unwrap()
        .collect::<logqueue::Result<Vec<_>>>()
        .unwrap()
}

/// Asserts the log holds exactly offsets `0..n` with `value_for(offset)` (by reader and
/// by `read`), ends at `n`, and verifies clean.
pub fn assert_dense_prefix(log: &Log, n: u64) {
    assert_eq!(log.start_offset(), 0);
    assert_eq!(log.end_offset(), n, "end offset");
    let all = read_all(log);
    assert_eq!(all.len() as u64, n, "records by reader");
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.offset, i as u64);
        assert_eq!(
            r.value.as_deref(),
            Some(&value_for(i as u64)[..]),
            "value at {i}"
        );
    }
    if n > 0 {
        let last = log.read(n - 1).unwrap().expect("last record reads back");
        assert_eq!(last.value.unwrap(), value_for(n - 1));
    }
    assert!(log.read(n).unwrap().is_none());
    let report = log.verify().unwrap();
    assert_eq!(report.records, n, "records by verify");
    assert!(report.corrupt.is_empty(), "{:?}", report.corrupt);
}

/// A temporary directory for sweeps over hundreds of damaged copies of a log: on tmpfs
/// (`/dev/shm`) when the machine has one, where the engine runs the same `OsFs` code
/// (mmap, ftruncate, fallocate) but an fsync costs nothing. `LOGQUEUE_TEST_ON_DISK=1`
/// keeps them on the disk-backed default temp directory. Tests that sweep also run a
/// spread of the same cases on the disk-backed directory.
pub fn sweep_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if std::env::var_os("LOGQUEUE_TEST_ON_DISK").is_none() && shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("logqueue-test")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

/// Writes a `recovery-point` file holding one valid slot: every batch of segment
/// `segment` below byte `position`, and every earlier segment, is promised durable.
/// Format (see `src/checkpoint.rs`): two 32-byte slots, each `sequence u64 | segment
/// u64 | position u32 | offset u64 | crc32 of the 28 bytes before`, little-endian; the
/// valid slot with the highest sequence wins. The other slot is left invalid.
pub fn write_recovery_point(dir: &Path, segment: u64, position: u64, offset: u64) {
    let mut slot = Vec::with_capacity(32);
    slot.extend_from_slice(&1u64.to_le_bytes());
    slot.extend_from_slice(&segment.to_le_bytes());
    slot.extend_from_slice(&u32::try_from(position).unwrap().to_le_bytes());
    slot.extend_from_slice(&offset.to_le_bytes());
    let crc = crc32fast::hash(&slot);
    slot.extend_from_slice(&crc.to_le_bytes());
    let mut file = vec![0xEEu8; 32];
    file.extend_from_slice(&slot);
    std::fs::write(dir.join("recovery-point"), file).unwrap();
}

/// Flips bit `bit` of byte `pos` of the file at `path`.
pub fn flip_bit(path: &Path, pos: u64, bit: u8) {
    let mut b = std::fs::read(path).unwrap();
    b[pos as usize] ^= 1 << bit;
    std::fs::write(path, b).unwrap();
}

/// Runs `open` again while it fails with `Error::Locked`, for up to 10 s. In a test
/// binary whose tests run in parallel and spawn child processes, a child forked by one
/// test holds a copy of every descriptor of this process (another test's log or queue
/// `LOCK` included) until it execs and close-on-exec drops them: for that moment a log
/// or queue closed just before still looks locked (seen once under load). A real
/// second holder keeps it past 10 s.
pub fn retry_locked<T>(mut open: impl FnMut() -> logqueue::Result<T>) -> logqueue::Result<T> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match open() {
            Err(Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// `Log::open` through [`retry_locked`].
pub fn open_log_retrying_locked(dir: impl AsRef<Path>, config: LogConfig) -> logqueue::Result<Log> {
    retry_locked(|| Log::open(dir.as_ref(), config.clone()))
}

/// Receives (batches of `batch`, no wait) and acks until nothing comes; the offsets
/// delivered, in delivery order.
pub fn drain_acking(q: &Queue, batch: usize) -> Vec<Offset> {
    let mut seen = Vec::new();
    loop {
        let got = q.receive(batch, Duration::ZERO).unwrap();
        if got.is_empty() {
            return seen;
        }
        for d in got {
            seen.push(d.receipt.offset);
            q.ack(&d.receipt).unwrap();
        }
    }
}
