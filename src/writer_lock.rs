//! The append lock ([`crate::writer::Writer`]'s mutex) and its rule: no file
//! operation while it is held. Work that needs the file system under the writer's
//! state (a roll, growing the active segment) closes the *gate* first, so no other
//! append starts, and releases the lock for the file operations themselves: flush
//! rounds, `stats`, retention and the cleaner keep taking the lock meanwhile.
//!
//! In debug builds a thread-local flag says whether this thread holds the lock, so
//! tests can check the rule at every file operation (see the tests below).

use std::ops::{Deref, DerefMut};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::writer::Writer;

#[cfg(debug_assertions)]
thread_local! {
    static APPEND_LOCK_HELD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn set_held(_held: bool) {
    #[cfg(debug_assertions)]
    APPEND_LOCK_HELD.with(|h| h.set(_held));
}

/// True when this thread holds the append lock (always false in release builds).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn append_lock_held() -> bool {
    #[cfg(debug_assertions)]
    return APPEND_LOCK_HELD.with(std::cell::Cell::get);
    #[cfg(not(debug_assertions))]
    false
}

/// The held append lock.
pub(crate) struct WriterGuard<'a> {
    guard: MutexGuard<'a, Writer>,
}

impl<'a> WriterGuard<'a> {
    pub(crate) fn lock(mutex: &'a Mutex<Writer>) -> WriterGuard<'a> {
        let guard = mutex.lock();
        set_held(true);
        WriterGuard { guard }
    }

    /// Runs `f` with the lock released (for file operations), then takes it again.
    pub(crate) fn unlocked<R>(&mut self, f: impl FnOnce() -> R) -> R {
        set_held(false);
        let r = MutexGuard::unlocked(&mut self.guard, f);
        set_held(true);
        r
    }

    /// Waits until the gate is open (no roll or growth under way), releasing the
    /// lock while waiting.
    pub(crate) fn wait_for_gate(&mut self, gate: &Condvar) {
        while self.guard.gate {
            set_held(false);
            gate.wait(&mut self.guard);
            set_held(true);
        }
    }
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        set_held(false);
    }
}

impl Deref for WriterGuard<'_> {
    type Target = Writer;
    fn deref(&self) -> &Writer {
        &self.guard
    }
}

impl DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut Writer {
        &mut self.guard
    }
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use std::any::Any;
    use std::io;
    use std::path::Path;
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    use parking_lot::Mutex;

    use super::append_lock_held;
    use crate::fs::{FileHandle, FileSystem, Mapping, OpenMode};
    use crate::sim::SimFs;
    use crate::{CleanupPolicy, FlushPolicy, Log, LogConfig, ManualClock, Record};

    /// Records every file operation made while the calling thread holds the append
    /// lock.
    #[derive(Debug, Clone)]
    struct CheckedFs {
        inner: SimFs,
        violations: Arc<Mutex<Vec<String>>>,
        /// When set, the next `open` of a segment (`.log`) file other than the
        /// first says so on the first channel and waits for the second.
        block_open: Arc<Mutex<Option<BlockOpen>>>,
    }

    type BlockOpen = (mpsc::Sender<()>, mpsc::Receiver<()>);

    impl CheckedFs {
        fn new() -> CheckedFs {
            CheckedFs {
                inner: SimFs::new(0),
                violations: Arc::default(),
                block_open: Arc::default(),
            }
        }
    }

    impl CheckedFs {
        fn check(&self, op: &str, path: &Path) {
            if append_lock_held() {
                self.violations
                    .lock()
                    .push(format!("{op} {}", path.display()));
            }
        }
    }

    #[derive(Debug)]
    struct CheckedFile {
        inner: Arc<dyn FileHandle>,
        fs: CheckedFs,
        path: std::path::PathBuf,
    }

    impl FileHandle for CheckedFile {
        fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
            self.fs.check("read", &self.path);
            self.inner.read_at(buf, pos)
        }
        fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
            self.fs.check("write", &self.path);
            self.inner.write_all_at(buf, pos)
        }
        fn sync_data(&self) -> io::Result<()> {
            self.fs.check("sync", &self.path);
            self.inner.sync_data()
        }
        fn size(&self) -> io::Result<u64> {
            self.fs.check("size", &self.path);
            self.inner.size()
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.fs.check("set_len", &self.path);
            self.inner.set_len(len)
        }
        fn allocate(&self, len: u64) -> io::Result<()> {
            self.fs.check("allocate", &self.path);
            self.inner.allocate(len)
        }
        fn map(&self, len: usize) -> io::Result<Arc<dyn Mapping>> {
            self.fs.check("map", &self.path);
            self.inner.map(len)
        }
    }

    impl FileSystem for CheckedFs {
        fn create_dir_all(&self, path: &Path) -> io::Result<()> {
            self.check("create_dir_all", path);
            self.inner.create_dir_all(path)
        }
        fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>> {
            self.check("open", path);
            let new_segment = path.extension().is_some_and(|e| e == "log")
                && !path.ends_with("00000000000000000000.log");
            if new_segment {
                if let Some((entered, release)) = self.block_open.lock().take() {
                    entered.send(()).unwrap();
                    release.recv().unwrap();
                }
            }
            let inner = self.inner.open(path, mode)?;
            Ok(Arc::new(CheckedFile {
                inner,
                fs: self.clone(),
                path: path.to_path_buf(),
            }))
        }
        fn exists(&self, path: &Path) -> bool {
            self.check("exists", path);
            self.inner.exists(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            self.check("rename", from);
            self.inner.rename(from, to)
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            self.check("remove_file", path);
            self.inner.remove_file(path)
        }
        fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
            self.check("remove_dir_all", path);
            self.inner.remove_dir_all(path)
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
            self.check("list", dir);
            self.inner.list(dir)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            self.check("sync_dir", dir);
            self.inner.sync_dir(dir)
        }
        fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn Any + Send + Sync>>> {
            self.check("try_lock", path);
            self.inner.try_lock(path)
        }
    }

    /// Rolls (by size, and retention's roll of an expired active segment), growing
    /// the active segment, retention's and the cleaner's swaps, `delete_records_before`,
    /// flushes, `stats` and `close`: none makes a file operation under the append lock.
    #[test]
    fn no_file_operation_under_the_append_lock() {
        let fs = CheckedFs::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let config = LogConfig {
            fs: Arc::new(fs.clone()),
            clock: clock.clone(),
            background: false,
            flush: FlushPolicy::EveryRecords(50),
            segment_bytes: 4 << 10,
            max_batch_bytes: 2 << 10,
            cleanup: CleanupPolicy::CompactAndDelete,
            retention_ms: Some(Duration::from_secs(3600)),
            ..LogConfig::default()
        };
        let log = Log::open("/log", config).unwrap();
        for round in 0..4u32 {
            for i in 0..300u32 {
                let key = (i % 7).to_le_bytes();
                log.append(Record::keyed(key.to_vec(), vec![round as u8; 100]))
                    .unwrap();
            }
            log.flush().unwrap();
            log.compact().unwrap();
            log.stats();
            log.delete_records_before(log.end_offset() / 4).unwrap();
            log.enforce_retention().unwrap();
        }
        // Everything expires, the active segment too: retention rolls it away.
        clock.advance(Duration::from_secs(7200));
        let report = log.enforce_retention().unwrap();
        assert!(report.segments_deleted > 0);
        assert!(log.stats().rolls > 10);
        log.append(Record::keyed(b"k".to_vec(), b"after".to_vec()))
            .unwrap();
        log.close().unwrap();
        let violations = fs.violations.lock();
        assert!(
            violations.is_empty(),
            "{} file operations under the append lock, first: {:?}",
            violations.len(),
            &violations[..violations.len().min(5)]
        );
    }

    /// Idempotent appends: new ids (decided under the append lock), duplicates and
    /// fingerprint matches (confirmed by reading the earlier record, which may open a
    /// sealed segment, with the append lock released), across rolls.
    #[test]
    fn no_file_operation_under_the_append_lock_in_idempotent_appends() {
        let fs = CheckedFs::new();
        let config = LogConfig {
            fs: Arc::new(fs.clone()),
            clock: Arc::new(ManualClock::new(1_000_000)),
            background: false,
            flush: FlushPolicy::EveryRecords(50),
            segment_bytes: 4 << 10,
            dedup: Some(crate::DedupConfig {
                window: Duration::from_secs(3600),
                max_ids: 10_000,
            }),
            ..LogConfig::default()
        };
        let log = Log::open("/log", config).unwrap();
        for round in 0..3u32 {
            for i in 0..300u32 {
                let id = i.to_le_bytes();
                let got = log
                    .append_idempotent(&id, Record::new(vec![round as u8; 100]))
                    .unwrap();
                assert_eq!((got.offset, got.duplicate), (u64::from(i), round > 0));
            }
        }
        assert!(log.stats().rolls > 5);
        log.close().unwrap();
        let violations = fs.violations.lock();
        assert!(
            violations.is_empty(),
            "{} file operations under the append lock, first: {:?}",
            violations.len(),
            &violations[..violations.len().min(5)]
        );
    }

    /// While a roll's file operations are under way (here: held inside the
    /// creation of the new segment file), `stats`, `flush` and
    /// `delete_records_before` do not wait for it: the append lock is free. (Before,
    /// the roll held the lock throughout and each of them waited.)
    #[test]
    fn a_roll_under_way_blocks_no_other_user_of_the_lock() {
        let fs = CheckedFs::new();
        let config = LogConfig {
            fs: Arc::new(fs.clone()),
            background: false,
            flush: FlushPolicy::Manual,
            segment_bytes: 4 << 10,
            ..LogConfig::default()
        };
        let log = Log::open("/log", config).unwrap();
        log.append(Record::new(vec![1u8; 100])).unwrap();
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        *fs.block_open.lock() = Some((entered_tx, release_rx));
        let appender = {
            let log = log.clone();
            std::thread::spawn(move || {
                for _ in 0..100 {
                    log.append(Record::new(vec![2u8; 100])).unwrap();
                }
            })
        };
        entered_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the appender rolls");
        // The roll is stuck in its file operation. Each of these must finish.
        let (done_tx, done_rx) = mpsc::channel();
        let others = {
            let log = log.clone();
            std::thread::spawn(move || {
                let stats = log.stats();
                log.flush().unwrap();
                log.delete_records_before(1).unwrap();
                done_tx.send(stats.end_offset).unwrap();
            })
        };
        let end_during_roll = done_rx.recv_timeout(Duration::from_secs(30));
        release_tx.send(()).unwrap();
        appender.join().unwrap();
        others.join().unwrap();
        let end_during_roll = end_during_roll.expect("stats/flush/delete waited for the roll");
        assert!(end_during_roll < 101);
        assert_eq!(log.end_offset(), 101);
        assert!(log.durable_offset() >= end_during_roll);
        assert_eq!(log.read(100).unwrap().unwrap().value, Some(vec![2u8; 100]));
        log.close().unwrap();
    }
}
