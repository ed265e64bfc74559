//! Damaged, missing and unreadable queue state files (issue 9, defects 1, 2, 5, 13,
//! 14): a queue never silently starts over. A damaged or missing snapshot is
//! `Corrupt` naming it; a damaged frame below the journal's synced length is `Corrupt`
//! naming the journal, while a torn unsynced tail is cut; power loss at any file
//! operation never produces a false `Corrupt` nor loses a flushed ack; a damaged floor
//! protects everything and is reported; open reads only what the journal holds; and
//! the errors say what is wrong.

mod common;

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{sim_config, with_context};
use logqueue::fs::{FileHandle, FileSystem, Mapping, OpenMode};
use logqueue::sim::SimFs;
use logqueue::{
    Error, Log, LogConfig, ManualClock, Offset, Queue, QueueConfig, Record, StartPosition,
};

const NO_WAIT: Duration = Duration::ZERO;
const QDIR: &str = "/log/queues/q";
/// Where the frames of a journal begin (after the two synced-length slots).
const FRAMES_START: u64 = 1024;

fn cfg(start: StartPosition) -> QueueConfig {
    QueueConfig {
        visibility_timeout: Duration::from_secs(10),
        start,
        journal_bytes: 1 << 20,
        ..QueueConfig::default()
    }
}

fn open(fs: &SimFs, clock: &ManualClock, config: QueueConfig) -> logqueue::Result<(Log, Queue)> {
    let log = Log::open("/log", sim_config(fs, clock, 4096))?;
    let q = Queue::open(&log, "q", config)?;
    Ok((log, q))
}

fn journal_path(fs: &SimFs) -> PathBuf {
    let names = fs.list(Path::new(QDIR)).unwrap();
    let name = names
        .iter()
        .find(|n| n.starts_with("journal-"))
        .expect("a journal");
    Path::new(QDIR).join(name)
}

/// Sends `n` records, acks the first `acked` one by one with a flush after each
/// (every ack synced), leaves the rest leased. Returns the acked offsets.
fn acked_and_flushed(q: &Queue, n: u64, acked: u64) -> BTreeSet<Offset> {
    for i in 0..n {
        q.send(Record::new(format!("r{i}"))).unwrap();
    }
    let got = q.receive(n as usize, NO_WAIT).unwrap();
    assert_eq!(got.len() as u64, n);
    q.flush().unwrap();
    let mut done = BTreeSet::new();
    for d in &got[..acked as usize] {
        q.ack(&d.receipt).unwrap();
        q.flush().unwrap();
        done.insert(d.receipt.offset);
    }
    done
}

/// Everything deliverable now and after the leases expire, drained with acks.
fn drain(q: &Queue, clock: &ManualClock) -> BTreeSet<Offset> {
    let mut out = BTreeSet::new();
    for _ in 0..3 {
        loop {
            let got = q.receive(1000, NO_WAIT).unwrap();
            if got.is_empty() {
                break;
            }
            for d in got {
                out.insert(d.receipt.offset);
                q.ack(&d.receipt).unwrap();
            }
        }
        clock.advance(Duration::from_secs(11));
    }
    out
}

fn assert_corrupt_naming(r: logqueue::Result<(Log, Queue)>, file: &str, ctx: &str) {
    match r {
        Err(Error::Corrupt { path, .. }) => assert!(
            path.to_string_lossy().contains(file),
            "{ctx}: Corrupt names {} instead of {file}",
            path.display()
        ),
        Err(e) => panic!("{ctx}: expected Corrupt naming {file}, got {e}"),
        Ok(_) => panic!("{ctx}: expected Corrupt naming {file}, the queue opened"),
    }
}

/// A queue with 100 records, 60 acked and flushed, closed cleanly.
fn closed_queue(start: StartPosition) -> (SimFs, ManualClock) {
    closed_queue_with(cfg(start))
}

fn closed_queue_with(config: QueueConfig) -> (SimFs, ManualClock) {
    let fs = SimFs::new(1);
    let clock = ManualClock::new(0);
    let (_log, q) = open(&fs, &clock, config).unwrap();
    acked_and_flushed(&q, 100, 60);
    (fs, clock)
}

#[test]
fn flipped_snapshot_byte_is_corrupt() {
    for start in [StartPosition::Earliest, StartPosition::Latest] {
        let (fs, clock) = closed_queue(start);
        let snapshot = format!("{QDIR}/snapshot");
        let len = fs.file_len(&snapshot).unwrap();
        for pos in (0..len).step_by(7).chain([len - 1]) {
            let ctx = format!("{start:?}, byte {pos} of {len}");
            fs.corrupt_byte(&snapshot, pos, 0x08).unwrap();
            assert_corrupt_naming(open(&fs, &clock, cfg(start)), "snapshot", &ctx);
            fs.corrupt_byte(&snapshot, pos, 0x08).unwrap();
        }
        // Undamaged again: nothing was reset by the failed opens.
        let (_log, q) = open(&fs, &clock, cfg(start)).unwrap();
        assert_eq!(q.stats().acked_total, 60, "{start:?}");
        assert_eq!(drain(&q, &clock), (60..100).collect(), "{start:?}");
    }
}

#[test]
fn deleted_snapshot_is_corrupt() {
    for start in [StartPosition::Earliest, StartPosition::Latest] {
        let (fs, clock) = closed_queue(start);
        fs.remove_file(Path::new(&format!("{QDIR}/snapshot")))
            .unwrap();
        assert_corrupt_naming(
            open(&fs, &clock, cfg(start)),
            "snapshot",
            &format!("{start:?}"),
        );
        // Also when the journal and the floor file are gone: the dead-letter log
        // still holds records, so the queue existed.
        let (fs, clock) = closed_queue(start);
        {
            let (_log, q) = open(&fs, &clock, cfg(start)).unwrap();
            let d = q.receive(1, NO_WAIT).unwrap();
            q.dead_letter(&d[0].receipt, "test").unwrap();
        }
        for name in fs.list(Path::new(QDIR)).unwrap() {
            if name == "snapshot" || name == "floor" || name.starts_with("journal-") {
                fs.remove_file(&Path::new(QDIR).join(name)).unwrap();
            }
        }
        assert_corrupt_naming(
            open(&fs, &clock, cfg(start)),
            "snapshot",
            &format!("{start:?}, only the dead-letter log left"),
        );
    }
}

#[test]
fn missing_or_cut_journal_is_corrupt() {
    let (fs, clock) = closed_queue(StartPosition::Earliest);
    let journal = journal_path(&fs);
    let bytes = fs.read_file(&journal).unwrap();
    // Cut below the synced length (the 60 acks are synced).
    fs.write_file(&journal, &bytes[..FRAMES_START as usize + 100])
        .unwrap();
    assert_corrupt_naming(
        open(&fs, &clock, cfg(StartPosition::Earliest)),
        "journal-",
        "cut",
    );
    fs.write_file(&journal, &bytes[..100]).unwrap();
    assert_corrupt_naming(
        open(&fs, &clock, cfg(StartPosition::Earliest)),
        "journal-",
        "cut in header",
    );
    fs.remove_file(&journal).unwrap();
    assert_corrupt_naming(
        open(&fs, &clock, cfg(StartPosition::Earliest)),
        "journal-",
        "missing",
    );
}

/// A file system that counts the bytes read from journal files and can fail the
/// reads of files whose name contains a given string; otherwise a [`SimFs`].
#[derive(Debug, Clone)]
struct WatchedFs {
    inner: SimFs,
    journal_bytes_read: Arc<AtomicU64>,
    fail_reads_of: Arc<Mutex<Option<String>>>,
}

#[derive(Debug)]
struct WatchedFile {
    inner: Arc<dyn FileHandle>,
    counter: Option<Arc<AtomicU64>>,
    fail: bool,
    read_only: bool,
}

impl WatchedFs {
    fn new(fs: &SimFs) -> WatchedFs {
        WatchedFs {
            inner: fs.clone(),
            journal_bytes_read: Arc::default(),
            fail_reads_of: Arc::default(),
        }
    }

    fn config(&self, clock: &ManualClock) -> LogConfig {
        LogConfig {
            fs: Arc::new(self.clone()),
            ..sim_config(&self.inner, clock, 4096)
        }
    }
}

impl FileSystem for WatchedFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>> {
        let name = path.to_string_lossy();
        let fail = (self.fail_reads_of.lock().unwrap())
            .as_deref()
            .is_some_and(|f| name.contains(f));
        let counter = name
            .contains("journal-")
            .then(|| Arc::clone(&self.journal_bytes_read));
        Ok(Arc::new(WatchedFile {
            inner: self.inner.open(path, mode)?,
            counter,
            fail,
            read_only: mode == OpenMode::Read,
        }))
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_dir_all(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn std::any::Any + Send + Sync>>> {
        self.inner.try_lock(path)
    }
}

impl FileHandle for WatchedFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        if self.fail {
            return Err(io::Error::from_raw_os_error(5));
        }
        let n = self.inner.read_at(buf, pos)?;
        if let Some(c) = &self.counter {
            c.fetch_add(n as u64, AtomicOrdering::Relaxed);
        }
        Ok(n)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, pos)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        self.inner.allocate(len)
    }
    fn map(&self, len: usize) -> io::Result<Arc<dyn Mapping>> {
        if let Some(c) = self.counter.as_ref().filter(|_| self.read_only) {
            // A read-only mapping of the journal would read it without read_at.
            c.fetch_add(len as u64, AtomicOrdering::Relaxed);
        }
        self.inner.map(len)
    }
}

#[test]
fn snapshot_read_error_is_an_error_not_a_reset() {
    for start in [StartPosition::Earliest, StartPosition::Latest] {
        let (fs, clock) = closed_queue(start);
        let watched = WatchedFs::new(&fs);
        *watched.fail_reads_of.lock().unwrap() = Some("/snapshot".into());
        let log = Log::open("/log", watched.config(&clock)).unwrap();
        match Queue::open(&log, "q", cfg(start)) {
            Err(Error::Io { path, .. }) | Err(Error::Corrupt { path, .. }) => {
                assert!(path.ends_with("snapshot"), "{start:?}: {}", path.display())
            }
            Err(e) => panic!("{start:?}: unexpected error {e}"),
            Ok(_) => panic!("{start:?}: the queue opened without its snapshot"),
        }
        *watched.fail_reads_of.lock().unwrap() = None;
        let q = Queue::open(&log, "q", cfg(start)).unwrap();
        assert_eq!(q.stats().acked_total, 60, "{start:?}: state kept");
        assert_eq!(drain(&q, &clock), (60..100).collect(), "{start:?}");
    }
}

#[test]
fn damaged_synced_journal_frame_is_corrupt() {
    // The first frame (the lease of all 100 records) is followed by 60 synced acks:
    // cutting the journal there would silently undo all of them.
    for (what, pos, len) in [
        ("flip in the first frame", FRAMES_START + 20, 1),
        (
            "flip in a later ack frame",
            FRAMES_START + 8 + 100 * 24 + 40,
            1,
        ),
        ("16 zero bytes", FRAMES_START + 8 + 100 * 24 + 32 * 10, 16),
    ] {
        let (fs, clock) = closed_queue(StartPosition::Earliest);
        let journal = journal_path(&fs);
        let mut bytes = fs.read_file(&journal).unwrap();
        for b in &mut bytes[pos as usize..(pos + len) as usize] {
            *b = if len == 1 { *b ^ 0x10 } else { 0 };
        }
        fs.write_file(&journal, &bytes).unwrap();
        assert_corrupt_naming(
            open(&fs, &clock, cfg(StartPosition::Earliest)),
            "journal-",
            what,
        );
    }
}

#[test]
fn damaged_synced_length_slot_loses_nothing() {
    // One slot spoiled: the other holds an earlier synced length, and the frames past
    // it are intact, so every ack is still read.
    for slot in [0u64, 512] {
        let (fs, clock) = closed_queue(StartPosition::Earliest);
        fs.corrupt_byte(journal_path(&fs), slot + 5, 0xFF).unwrap();
        let (_log, q) = open(&fs, &clock, cfg(StartPosition::Earliest)).unwrap();
        assert_eq!(q.stats().acked_total, 60, "slot at {slot}");
        assert_eq!(drain(&q, &clock), (60..100).collect(), "slot at {slot}");
    }
}

/// A new disk holding the files of `fs` (durably).
fn copy_disk(fs: &SimFs) -> SimFs {
    fn copy(from: &SimFs, to: &SimFs, dir: &Path) {
        for name in from.list(dir).unwrap() {
            let path = dir.join(name);
            match from.read_file(&path) {
                Some(bytes) => to.write_file(&path, &bytes).unwrap(),
                None => copy(from, to, &path),
            }
        }
    }
    let to = SimFs::new(0);
    copy(fs, &to, Path::new("/"));
    to
}

/// The position of the last non-zero byte of `bytes`.
fn last_written(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .rposition(|&b| b != 0)
        .expect("something written")
}

#[test]
fn torn_unsynced_tail_is_cut_and_synced_acks_kept() {
    // Planted: the last unsynced frame torn, the process killed.
    let fs = SimFs::new(3);
    let clock = ManualClock::new(0);
    {
        let (_log, q) = open(&fs, &clock, cfg(StartPosition::Earliest)).unwrap();
        for i in 0..20 {
            q.send(Record::new(format!("r{i}"))).unwrap();
        }
        let got = q.receive(20, NO_WAIT).unwrap();
        for d in &got[..10] {
            q.ack(&d.receipt).unwrap();
        }
        q.flush().unwrap();
        for d in &got[10..15] {
            q.ack(&d.receipt).unwrap(); // never synced
        }
        let journal = journal_path(&fs);
        let at = last_written(&fs.read_file(&journal).unwrap());
        fs.corrupt_byte(&journal, at as u64, 0x01).unwrap();
    }
    fs.kill();
    let (_log, q) = open(&fs, &clock, cfg(StartPosition::Earliest)).unwrap();
    // The torn frame is the last ack (offset 14); the ones before it survived the kill.
    let again = drain(&q, &clock);
    assert_eq!(again, (14..20).collect());

    // Real power losses: every seed keeps the synced acks and opens.
    let mut lost_some = 0;
    for seed in common::seeds(30) {
        with_context(&format!("seed {seed}"), || {
            let fs = SimFs::new(seed);
            let clock = ManualClock::new(0);
            {
                let (_log, q) = open(&fs, &clock, cfg(StartPosition::Earliest)).unwrap();
                let synced = acked_and_flushed(&q, 40, 20);
                assert_eq!(synced.len(), 20);
                clock.advance(Duration::from_secs(11));
                for d in q.receive(40, NO_WAIT).unwrap() {
                    q.ack(&d.receipt).unwrap(); // never synced
                }
                fs.crash();
            }
            let (_log, q) = open(&fs, &clock, cfg(StartPosition::Earliest)).unwrap();
            let again = drain(&q, &clock);
            assert!(
                again.iter().all(|&o| o >= 20),
                "a synced ack was undone: {again:?}"
            );
            if !again.is_empty() {
                lost_some += 1;
            }
        });
    }
    assert!(
        lost_some > 0,
        "no seed lost an unsynced ack: the tail was never torn"
    );
}

/// A scripted workload with flushes; `promised` gets the acks whose flush returned.
fn scripted(
    q: &Queue,
    clock: &ManualClock,
    promised: &mut BTreeSet<Offset>,
) -> logqueue::Result<()> {
    for round in 0..5u64 {
        for i in 0..12 {
            q.send(Record::new(format!("{round}-{i}")))?;
        }
        let got = q.receive(12, NO_WAIT)?;
        let mut pending = Vec::new();
        for d in got.iter().take(4) {
            q.ack(&d.receipt)?;
            pending.push(d.receipt.offset);
        }
        q.flush()?;
        promised.extend(pending.drain(..));
        for d in got.iter().skip(4).take(4) {
            q.ack(&d.receipt)?;
            pending.push(d.receipt.offset);
        }
        if let Some(d) = got.get(8) {
            q.nack(&d.receipt, Duration::from_secs(1))?;
        }
        if let Some(d) = got.get(9) {
            q.extend(&d.receipt, Duration::from_secs(20))?;
        }
        q.flush()?;
        promised.extend(pending.drain(..));
        if let Some(d) = got.get(10) {
            q.ack(&d.receipt)?; // not flushed: may be lost
        }
        clock.advance(Duration::from_secs(2));
    }
    Ok(())
}

#[test]
fn power_loss_at_every_operation_never_corrupt_never_loses_a_flushed_ack() {
    // A small journal, so the workload also rotates it (snapshot + new journal).
    let config = || QueueConfig {
        journal_bytes: 4096,
        ..cfg(StartPosition::Earliest)
    };
    let total = {
        let fs = SimFs::new(0);
        let clock = ManualClock::new(0);
        let (_log, q) = open(&fs, &clock, config()).unwrap();
        scripted(&q, &clock, &mut BTreeSet::new()).unwrap();
        let rotated = fs
            .list(Path::new(QDIR))
            .unwrap()
            .iter()
            .any(|n| n.starts_with("journal-") && !n.ends_with("0001"));
        assert!(rotated, "the workload should rotate the journal");
        fs.op_count()
    };
    for n in 1..=total {
        for seed in [n, n ^ 0x5EED] {
            with_context(
                &format!("power loss at op {n} of {total}, seed {seed}"),
                || {
                    let fs = SimFs::new(seed);
                    let clock = ManualClock::new(0);
                    let mut promised = BTreeSet::new();
                    fs.crash_at_op(n);
                    if let Ok((_log, q)) = open(&fs, &clock, config()) {
                        let _ = scripted(&q, &clock, &mut promised);
                    }
                    if fs.op_count() < n {
                        fs.crash();
                    }
                    fs.clear_faults();
                    let (_log, q) = match open(&fs, &clock, config()) {
                        Ok(opened) => opened,
                        Err(e) => panic!("reopen after power loss failed: {e}"),
                    };
                    clock.advance(Duration::from_secs(60));
                    let again = drain(&q, &clock);
                    let undone: Vec<_> = promised.intersection(&again).collect();
                    assert!(
                        undone.is_empty(),
                        "flushed acks delivered again: {undone:?}"
                    );
                },
            );
        }
    }
}

#[test]
fn open_reads_only_what_the_journal_holds() {
    // A 512 MiB journal holding one ack: open must not read the preallocated space.
    let fs = SimFs::new(5);
    let clock = ManualClock::new(0);
    let watched = WatchedFs::new(&fs);
    let config = QueueConfig {
        journal_bytes: 512 << 20,
        ..cfg(StartPosition::Earliest)
    };
    {
        let log = Log::open("/log", watched.config(&clock)).unwrap();
        let q = Queue::open(&log, "q", config.clone()).unwrap();
        q.send(Record::new("one")).unwrap();
        let d = q.receive(1, NO_WAIT).unwrap();
        q.ack(&d[0].receipt).unwrap();
        q.flush().unwrap();
    }
    watched.journal_bytes_read.store(0, AtomicOrdering::Relaxed);
    let log = Log::open("/log", watched.config(&clock)).unwrap();
    let q = Queue::open(&log, "q", config).unwrap();
    let read = watched.journal_bytes_read.load(AtomicOrdering::Relaxed);
    assert!(read <= 128 << 10, "open read {read} bytes of the journal");
    assert_eq!(q.stats().acked_total, 1);
    assert!(q.receive(1, NO_WAIT).unwrap().is_empty());
}

#[test]
fn damaged_or_missing_floor_protects_everything_and_is_reported() {
    for damage in ["flip", "truncate", "remove"] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(0);
        let config = LogConfig {
            retention_bytes: Some(1),
            clock: Arc::new(clock.clone()),
            ..common::small_config(1024)
        };
        let log = Log::open(dir.path(), config.clone()).unwrap();
        {
            let q = Queue::open(&log, "q", QueueConfig::default()).unwrap();
            for i in 0..200 {
                q.send(Record::new(vec![i as u8; 64])).unwrap();
            }
            for d in q.receive(50, NO_WAIT).unwrap() {
                q.ack(&d.receipt).unwrap();
            }
            q.flush().unwrap();
        }
        log.close().unwrap();
        // The queue's floor is its cursor (earlier versions: `queues/q/floor`).
        let floor = dir.path().join("cursors/queue.q.cursor");
        match damage {
            "flip" => {
                common::flip_bit(&floor, 6, 2);
                common::flip_bit(&floor, 32 + 6, 2);
            }
            "truncate" => {
                let b = std::fs::read(&floor).unwrap();
                std::fs::write(&floor, &b[..10]).unwrap();
            }
            _ => std::fs::remove_file(&floor).unwrap(),
        }
        let log = Log::open(dir.path(), config).unwrap();
        let before = log.segments().len();
        let report = log.enforce_retention().unwrap();
        assert_eq!(
            report.segments_deleted, 0,
            "{damage}: deleted unacked records"
        );
        assert_eq!(log.start_offset(), 0, "{damage}");
        assert_eq!(log.segments().len(), before, "{damage}");
        let stats = log.stats();
        assert_eq!(stats.damaged_floor_files, vec![floor.clone()], "{damage}");
        assert_eq!(stats.retention_floor, Some(0), "{damage}");
        if damage != "remove" {
            let e = log.cursors().unwrap_err();
            assert!(
                matches!(&e, Error::Corrupt { path, .. } if *path == floor),
                "{damage}: {e:?}"
            );
        }
        // Opening the queue rewrites its cursor: retention moves up to it again.
        let q = Queue::open(&log, "q", QueueConfig::default()).unwrap();
        drop(q);
        let report = log.enforce_retention().unwrap();
        assert!(report.segments_deleted > 0, "{damage}");
        assert!(log.start_offset() <= 50, "{damage}: deleted past the floor");
        assert!(log.stats().damaged_floor_files.is_empty(), "{damage}");
        assert_eq!(log.cursors().unwrap()[0].position, 50, "{damage}");
    }
}

#[test]
fn second_open_says_the_queue_is_open() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let (log, _q) = open(&fs, &clock, cfg(StartPosition::Earliest)).unwrap();
    let e = Queue::open(&log, "q", cfg(StartPosition::Earliest)).unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("queue q is already open"), "{msg}");
    assert!(!msg.contains("dead-letter"), "{msg}");
    assert!(!msg.contains("log is already open"), "{msg}");
}

#[test]
fn poisoned_queue_says_what_failed_and_how_to_recover() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let (log, q) = open(&fs, &clock, cfg(StartPosition::Earliest)).unwrap();
    q.send(Record::new("a")).unwrap();
    q.send(Record::new("b")).unwrap();
    let got = q.receive(2, NO_WAIT).unwrap();
    q.ack(&got[0].receipt).unwrap();
    // The queue's cursor (its floor) cannot be written: a directory took its place.
    let cursor = Path::new("/log/cursors/queue.q.cursor");
    let saved = fs.read_file(cursor).unwrap();
    fs.remove_file(cursor).unwrap();
    fs.create_dir_all(cursor).unwrap();
    let first = q.flush().unwrap_err();
    assert!(first.to_string().contains("queue.q.cursor"), "{first}");
    let e = q.ack(&got[1].receipt).unwrap_err();
    let Error::QueuePoisoned { queue, reason } = &e else {
        panic!("expected QueuePoisoned, got {e:?}");
    };
    assert_eq!(queue, "q");
    assert!(reason.contains("queue.q.cursor"), "{reason}");
    let msg = e.to_string();
    assert!(msg.contains("queue q"), "{msg}");
    assert!(msg.contains("Queue::open"), "{msg}");
    assert!(!msg.contains("the log refuses"), "{msg}");
    // The log is fine; reopening the queue recovers.
    log.append(Record::new("c")).unwrap();
    drop(q);
    fs.remove_dir_all(cursor).unwrap();
    fs.write_file(cursor, &saved).unwrap();
    let q = Queue::open(&log, "q", cfg(StartPosition::Earliest)).unwrap();
    q.flush().unwrap();
}

/// `(offset, deadline, attempt, kind)` as a 24-byte journal event.
fn event(offset: u64, deadline: i64, attempt: u32, kind: u8) -> Vec<u8> {
    let mut out = offset.to_le_bytes().to_vec();
    out.extend_from_slice(&deadline.to_le_bytes());
    out.extend_from_slice(&attempt.to_le_bytes());
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out
}

#[test]
fn queue_directories_of_earlier_versions_still_open() {
    // Written by hand in the format-1 layout (docs/queue.md): an LQS1 snapshot of
    // generation 1 with 10 leased records, and journal-1 with frames from byte 0.
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    {
        let (_log, q) = open(&fs, &clock, cfg(StartPosition::Earliest)).unwrap();
        for i in 0..10 {
            q.send(Record::new(format!("{i}"))).unwrap();
        }
        q.flush().unwrap();
    }
    for name in fs.list(Path::new(QDIR)).unwrap() {
        if name.starts_with("journal-") {
            fs.remove_file(&Path::new(QDIR).join(name)).unwrap();
        }
    }
    let mut snapshot = b"LQS1".to_vec();
    for v in [1u64, 0, 10, 0, 0, 0, 0, 10] {
        snapshot.extend_from_slice(&v.to_le_bytes());
    }
    for o in 0..10 {
        snapshot.extend(event(o, 0, 1, 1)); // leased
    }
    let crc = crc32fast::hash(&snapshot);
    snapshot.extend_from_slice(&crc.to_le_bytes());
    fs.write_file(format!("{QDIR}/snapshot"), &snapshot)
        .unwrap();
    let mut frame = vec![0u8; 8];
    for o in 0..5 {
        frame.extend(event(o, 0, 1, 2)); // acked
    }
    frame[4..8].copy_from_slice(&5u32.to_le_bytes());
    let crc = crc32fast::hash(&frame[4..]);
    frame[0..4].copy_from_slice(&crc.to_le_bytes());
    frame.resize(4096, 0);
    fs.write_file(format!("{QDIR}/journal-00000000000000000001"), &frame)
        .unwrap();
    {
        let (_log, q) = open(&fs, &clock, cfg(StartPosition::Earliest)).unwrap();
        assert_eq!(q.stats().acked_total, 5);
        // Recovered leases come one per receive (issue 9, defect 11).
        let mut got = Vec::new();
        loop {
            let batch = q.receive(100, NO_WAIT).unwrap();
            if batch.is_empty() {
                break;
            }
            assert_eq!(batch.len(), 1, "a recovered lease comes alone");
            got.extend(batch);
        }
        let offsets: Vec<_> = got.iter().map(|d| d.receipt.offset).collect();
        assert_eq!(offsets, vec![5, 6, 7, 8, 9]);
        assert!(got.iter().all(|d| d.attempt == 2));
        q.ack(&got[0].receipt).unwrap();
        q.flush().unwrap();
    }
    // Now in the current format.
    assert!(fs
        .read_file(format!("{QDIR}/snapshot"))
        .unwrap()
        .starts_with(b"LQS2"));
    let (_log, q) = open(&fs, &clock, cfg(StartPosition::Earliest)).unwrap();
    assert_eq!(q.stats().acked_total, 6);
}

#[test]
fn a_queue_created_during_a_retention_pass_never_starts_below_what_it_deletes() {
    // Time of check vs time of use: a queue created while a pass is between asking
    // the floors and deleting must not start at the old log start (its records then
    // deleted under it). The pass's own floor function opens the queue from another
    // thread and gives it time; `Queue::open` must wait for the pass to finish.
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: Some(1),
        ..common::small_config(1024)
    };
    let log = Log::open(dir.path(), config).unwrap();
    for i in 0..200 {
        log.append(Record::new(vec![i as u8; 64])).unwrap();
    }
    let handle: Arc<Mutex<Option<Log>>> = Arc::new(Mutex::new(Some(log.clone())));
    let opener = Arc::new(Mutex::new(None));
    {
        let (handle, opener) = (Arc::clone(&handle), Arc::clone(&opener));
        log.add_retention_floor(move || {
            if let Some(log) = handle.lock().unwrap().take() {
                let config = QueueConfig {
                    journal_bytes: 4096,
                    ..QueueConfig::default()
                };
                *opener.lock().unwrap() = Some(std::thread::spawn(move || {
                    Queue::open(&log, "late", config).map(|q| (q, log))
                }));
                std::thread::sleep(Duration::from_millis(300));
            }
            None
        });
    }
    let report = log.enforce_retention().unwrap();
    assert!(report.segments_deleted > 0);
    let opened = opener
        .lock()
        .unwrap()
        .take()
        .expect("the pass ran the floor");
    let (q, _log) = opened.join().unwrap().unwrap();
    let start = log.start_offset();
    assert!(start > 0);
    let got = q.receive(1, NO_WAIT).unwrap();
    assert_eq!(got[0].receipt.offset, start);
    assert_eq!(
        q.stats().skipped_by_retention,
        0,
        "records skipped under a new queue"
    );
    assert_eq!(q.stats().ack_floor, start);
}

#[test]
fn any_damage_to_the_journal_is_reported_or_loses_nothing() {
    // Every third byte flipped, and every 16-byte run zeroed, over the header, the
    // frames and past their end: open reports Corrupt naming the journal, or keeps
    // every one of the 60 synced acks.
    let small = || QueueConfig {
        journal_bytes: 16 << 10,
        ..cfg(StartPosition::Earliest)
    };
    let (original, clock) = closed_queue_with(small());
    let used = last_written(&original.read_file(journal_path(&original)).unwrap()) as u64 + 1;
    let cases = (0..used + 64)
        .step_by(3)
        .map(|p| (p, 1))
        .chain((0..used + 64).step_by(16).map(|p| (p, 16)));
    let (mut reported, mut harmless) = (0, 0);
    for (pos, len) in cases {
        let ctx = format!("{len} byte(s) at {pos} of {used}");
        let fs = copy_disk(&original);
        let journal = journal_path(&fs);
        let mut bytes = fs.read_file(&journal).unwrap();
        for b in &mut bytes[pos as usize..(pos + len) as usize] {
            *b = if len == 1 { *b ^ 0x20 } else { 0 };
        }
        fs.write_file(&journal, &bytes).unwrap();
        match open(&fs, &clock, small()) {
            Err(Error::Corrupt { path, .. }) => {
                assert_eq!(path, journal, "{ctx}");
                reported += 1;
            }
            Err(e) => panic!("{ctx}: {e}"),
            Ok((_log, q)) => {
                assert_eq!(q.stats().acked_total, 60, "{ctx}");
                assert_eq!(drain(&q, &clock), (60..100).collect(), "{ctx}");
                harmless += 1;
            }
        }
    }
    println!("journal damage: {reported} reported, {harmless} harmless");
    assert!(reported > 0 && harmless > 0);
}
