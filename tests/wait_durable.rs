//! `Log::wait_durable`: group commit shared by every waiter, never returning before
//! the record is durable (SimFs power loss right after it returns), and waking its
//! waiters with an error when the fsync fails or once `close` made them durable.

mod common;

use std::any::Any;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use parking_lot::{Condvar, Mutex as PlMutex};

use logqueue::fs::{FileHandle, FileSystem, Mapping, OpenMode};
use logqueue::sim::SimFs;
use logqueue::{Error, FlushPolicy, Log, LogConfig, Offset, Record};

/// What the gated fsync does once released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Release {
    Succeed,
    Fail,
}

/// Holds the first armed `.log` fsync until the test releases it, so that waiters
/// arrive while an fsync is running.
#[derive(Debug, Default)]
struct Gate {
    armed: AtomicBool,
    state: PlMutex<(bool, Option<Release>)>, // (a sync is held, the release)
    cv: Condvar,
}

impl Gate {
    fn hold(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        st.0 = true;
        self.cv.notify_all();
        while st.1.is_none() {
            self.cv.wait(&mut st);
        }
        match st.1 {
            Some(Release::Fail) => Err(io::Error::from_raw_os_error(5)),
            _ => Ok(()),
        }
    }

    fn wait_held(&self) {
        let mut st = self.state.lock();
        while !st.0 {
            self.cv.wait(&mut st);
        }
    }

    fn release(&self, how: Release) {
        self.state.lock().1 = Some(how);
        self.cv.notify_all();
    }
}

#[derive(Debug, Clone)]
struct GatedFs {
    inner: SimFs,
    gate: Arc<Gate>,
}

#[derive(Debug)]
struct GatedFile {
    inner: Arc<dyn FileHandle>,
    gate: Option<Arc<Gate>>,
}

impl FileSystem for GatedFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>> {
        let inner = self.inner.open(path, mode)?;
        let is_log = path.extension().is_some_and(|e| e == "log");
        Ok(Arc::new(GatedFile {
            inner,
            gate: is_log.then(|| Arc::clone(&self.gate)),
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
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn Any + Send + Sync>>> {
        self.inner.try_lock(path)
    }
}

impl FileHandle for GatedFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.inner.read_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, pos)
    }
    fn sync_data(&self) -> io::Result<()> {
        if let Some(gate) = &self.gate {
            if gate.armed.swap(false, Ordering::AcqRel) {
                gate.hold()?;
            }
        }
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
        self.inner.map(len)
    }
}

fn gated_log(seed: u64, flush: FlushPolicy) -> (SimFs, Arc<Gate>, Log) {
    let sim = SimFs::new(seed);
    let gate = Arc::new(Gate::default());
    let fs = GatedFs {
        inner: sim.clone(),
        gate: Arc::clone(&gate),
    };
    let config = LogConfig {
        fs: Arc::new(fs),
        flush,
        ..common::small_config(1 << 20)
    };
    (sim, gate, Log::open("/log", config).unwrap())
}

/// Lets the spawned waiters reach their wait (they block on the running fsync; a
/// late one finds its record durable and returns at once, which the assertions
/// allow, so this only makes the test meaningful, never flaky).
fn let_waiters_arrive() {
    thread::sleep(Duration::from_millis(50));
}

/// Starts a waiter for offset 0 whose fsync the gate holds, then appends `n` more
/// records and starts a waiter for each; returns (leader, waiters).
type Waiter = thread::JoinHandle<logqueue::Result<()>>;
fn waiters_behind_a_held_fsync(log: &Log, gate: &Gate, n: usize) -> (Waiter, Vec<Waiter>) {
    log.append(Record::new("first")).unwrap();
    gate.armed.store(true, Ordering::Release);
    let leader = {
        let log = log.clone();
        thread::spawn(move || log.wait_durable(0))
    };
    gate.wait_held();
    let waiters = (0..n)
        .map(|i| {
            let o = log.append(Record::new(format!("r{i}"))).unwrap();
            let log = log.clone();
            thread::spawn(move || log.wait_durable(o))
        })
        .collect();
    let_waiters_arrive();
    (leader, waiters)
}

/// Waiters that arrive while an fsync runs share one more fsync, however many they
/// are: two rounds in all, whatever the scheduling.
#[test]
fn many_waiters_share_one_fsync() {
    let (_sim, gate, log) = gated_log(1, FlushPolicy::Manual);
    let (leader, waiters) = waiters_behind_a_held_fsync(&log, &gate, 16);
    assert_eq!(log.durable_offset(), 0, "returned before the fsync ended");
    assert!(waiters.iter().all(|w| !w.is_finished()));
    gate.release(Release::Succeed);
    leader.join().unwrap().unwrap();
    for w in waiters {
        w.join().unwrap().unwrap();
    }
    let stats = log.stats();
    assert_eq!(stats.durable_offset, 17);
    assert_eq!(stats.flushes, 2, "the 16 waiters shared one fsync round");
    log.close().unwrap();
}

#[test]
fn offsets_not_appended_yet_are_refused() {
    let (_sim, _gate, log) = gated_log(2, FlushPolicy::Manual);
    assert!(matches!(
        log.wait_durable(0),
        Err(Error::OffsetOutOfRange {
            offset: 0,
            end: 0,
            ..
        })
    ));
    log.append(Record::new("a")).unwrap();
    log.wait_durable(0).unwrap();
    assert!(matches!(
        log.wait_durable(1),
        Err(Error::OffsetOutOfRange { offset: 1, .. })
    ));
    // Durable already: no second round.
    log.wait_durable(0).unwrap();
    assert_eq!(log.stats().flushes, 1);
    let other = log.clone();
    log.close().unwrap();
    assert!(matches!(other.wait_durable(0), Err(Error::Closed)));
}

/// A failed fsync poisons the log and wakes every waiter with an error, including
/// those waiting for a round that never started.
#[test]
fn a_failed_fsync_wakes_waiters_with_an_error() {
    let (_sim, gate, log) = gated_log(3, FlushPolicy::Manual);
    let (leader, waiters) = waiters_behind_a_held_fsync(&log, &gate, 8);
    gate.release(Release::Fail);
    // The leader gets the fsync's own error, the others the poisoning it caused.
    assert!(matches!(leader.join().unwrap(), Err(Error::Io { .. })));
    for w in waiters {
        assert!(matches!(w.join().unwrap(), Err(Error::Poisoned { .. })));
    }
    assert_eq!(log.durable_offset(), 0);
}

/// `close` during a running fsync makes every waiter's record durable; they return
/// `Ok` (the recovery point and the marker are close's), and the records survive a
/// power loss.
#[test]
fn close_wakes_waiters_once_their_records_are_durable() {
    let (sim, gate, log) = gated_log(4, FlushPolicy::Manual);
    let (leader, waiters) = waiters_behind_a_held_fsync(&log, &gate, 8);
    log.clone().close().unwrap();
    gate.release(Release::Succeed);
    leader.join().unwrap().unwrap();
    for w in waiters {
        w.join().unwrap().unwrap();
    }
    drop(log);
    sim.crash();
    let log = Log::open(
        "/log",
        LogConfig {
            fs: Arc::new(sim),
            ..common::small_config(1 << 20)
        },
    )
    .unwrap();
    assert_eq!(log.end_offset(), 9);
}

/// A record's offset and value.
type Written = (Offset, Vec<u8>);

/// Threads append and some wait; the disk loses power at a seeded moment. Every
/// record whose `wait_durable` returned before the power loss is there after it.
#[test]
fn a_record_is_durable_when_wait_durable_returns() {
    for seed in common::seeds(8) {
        println!("seed {seed} (replay with LOGQUEUE_SEED={seed})");
        let sim = SimFs::new(seed);
        let config = LogConfig {
            fs: Arc::new(sim.clone()),
            ..common::small_config(4 << 10)
        };
        let log = Log::open("/log", config.clone()).unwrap();
        let durable: Arc<Mutex<Vec<Written>>> = Arc::default();
        let appended = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let (log, durable, appended) =
                    (log.clone(), Arc::clone(&durable), Arc::clone(&appended));
                thread::spawn(move || {
                    for i in 0u64.. {
                        let value = format!("t{t}-{i}-{}", "x".repeat((i % 90) as usize));
                        let Ok(o) = log.append(Record::new(value.clone())) else {
                            return;
                        };
                        appended.fetch_add(1, Ordering::Relaxed);
                        if i % 3 != t % 3 {
                            continue;
                        }
                        if log.wait_durable(o).is_err() {
                            return;
                        }
                        durable.lock().unwrap().push((o, value.into_bytes()));
                    }
                })
            })
            .collect();
        let crash_after = 20 + seed * 37 % 300;
        while appended.load(Ordering::Relaxed) < crash_after || durable.lock().unwrap().is_empty() {
            thread::yield_now();
        }
        // What returned so far; more may return after this line (still before the
        // crash), which only makes the check below cover less.
        let must_survive: Vec<Written> = durable.lock().unwrap().clone();
        sim.crash();
        for t in threads {
            t.join().unwrap();
        }
        drop(log);
        let log = Log::open("/log", config).unwrap();
        for (o, v) in &must_survive {
            let r = log.read(*o).unwrap().unwrap_or_else(|| {
                panic!("seed {seed}: record {o} lost after wait_durable returned");
            });
            assert_eq!(r.value.as_deref(), Some(&v[..]), "seed {seed}: offset {o}");
        }
    }
}
