//! Background work and wake-ups: the signal tailing readers and blocked receivers
//! wait on, the background threads (retention, roll sync, cleaner, interval
//! flusher) and the loops they run.

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::config::FlushPolicy;
use crate::log::{Log, LogInner};
use crate::segment::Segment;
use crate::{Error, Result};

/// Wakes tailing readers when records are appended, without a lock on the append
/// path unless someone is waiting.
#[derive(Debug, Default)]
pub(crate) struct AppendSignal {
    lock: Mutex<()>,
    cv: Condvar,
    waiters: AtomicUsize,
}

impl AppendSignal {
    /// Wakes the waiters, if any.
    pub(crate) fn notify(&self) {
        if self.waiters.load(AtomicOrdering::SeqCst) > 0 {
            let _guard = self.lock.lock();
            self.cv.notify_all();
        }
    }

    /// Waits until `ready()` or the deadline; true when ready.
    pub fn wait_until(&self, deadline: Instant, ready: impl Fn() -> bool) -> bool {
        self.waiters.fetch_add(1, AtomicOrdering::SeqCst);
        let mut guard = self.lock.lock();
        let ok = loop {
            if ready() {
                break true;
            }
            if self.cv.wait_until(&mut guard, deadline).timed_out() {
                break ready();
            }
        };
        drop(guard);
        self.waiters.fetch_sub(1, AtomicOrdering::SeqCst);
        ok
    }

    /// Wakes every waiter (on close).
    pub fn wake_all(&self) {
        let _guard = self.lock.lock();
        self.cv.notify_all();
    }
}

/// Work for the preparer: map `[from, to)` of an active segment for writing, after
/// allocating the file up to `to` when `allocate`.
#[derive(Debug)]
pub(crate) struct Prepare {
    pub segment: Arc<Segment>,
    pub from: u64,
    pub to: u64,
    pub allocate: bool,
}

impl Prepare {
    /// Allocates (unless the segment was sealed meanwhile; a failure is left to the
    /// writer, which allocates again when it needs the space), then prefaults; a
    /// failed prefault is returned for the log to report.
    pub(crate) fn run(&self) -> Result<()> {
        if self.allocate && self.segment.allocate_ahead(self.to).is_err() {
            return Ok(());
        }
        crate::writer::prefault_now(&self.segment, self.from, self.to)
    }
}

/// Tells background threads to stop, and the roll syncer that a segment was sealed;
/// shared with them apart from the log itself.
#[derive(Debug, Default)]
pub(crate) struct Shutdown {
    flags: Mutex<Flags>,
    /// Wakes the periodic threads (on stop).
    cv: Condvar,
    /// Wakes the roll syncer (on stop and on roll).
    rolled_cv: Condvar,
    /// Wakes the preparer (on stop and on a prefault request).
    prepare_cv: Condvar,
}

#[derive(Debug, Default)]
struct Flags {
    stop: bool,
    /// A roll sealed a segment the roll syncer has not picked up yet.
    rolled: bool,
    /// The preparer runs and takes prefault requests.
    preparing: bool,
    /// Ranges of active segments to map for writing ahead of the writer.
    prefault: Vec<Prepare>,
}

impl Shutdown {
    /// Tells every background thread to stop.
    pub(crate) fn signal(&self) {
        self.flags.lock().stop = true;
        self.cv.notify_all();
        self.rolled_cv.notify_all();
        self.prepare_cv.notify_all();
    }

    /// Hands `[from, to)` of `segment` to the preparer to allocate (where not yet)
    /// and prefault; false when no preparer runs (the caller then does it).
    pub(crate) fn request_prepare(&self, request: Prepare) -> bool {
        let mut flags = self.flags.lock();
        if !flags.preparing || flags.stop {
            return false;
        }
        flags.prefault.push(request);
        self.prepare_cv.notify_one();
        true
    }

    /// Waits for prefault requests (`None`: shutting down).
    fn wait_prefault(&self) -> Option<Vec<Prepare>> {
        let mut flags = self.flags.lock();
        loop {
            if flags.stop {
                flags.preparing = false;
                flags.prefault.clear();
                return None;
            }
            if !flags.prefault.is_empty() {
                return Some(std::mem::take(&mut flags.prefault));
            }
            self.prepare_cv.wait(&mut flags);
        }
    }

    /// Tells the roll syncer a segment was sealed.
    pub(crate) fn notify_rolled(&self) {
        self.flags.lock().rolled = true;
        self.rolled_cv.notify_one();
    }

    /// Waits up to `every` for shutdown; true when shutting down.
    fn wait(&self, every: Duration) -> bool {
        let mut flags = self.flags.lock();
        if !flags.stop {
            self.cv.wait_for(&mut flags, every);
        }
        flags.stop
    }

    /// Waits for a roll (true) or shutdown (false).
    fn wait_rolled(&self) -> bool {
        let mut flags = self.flags.lock();
        loop {
            if flags.stop {
                return false;
            }
            if std::mem::take(&mut flags.rolled) {
                return true;
            }
            self.rolled_cv.wait(&mut flags);
        }
    }
}

impl Log {
    /// Starts the retention thread, the roll syncer, and (as configured) the cleaner
    /// and the interval flusher. A thread that cannot be started fails the open: a
    /// log without its flusher would silently never fsync.
    pub(crate) fn start_background(&self) -> Result<()> {
        if !self.inner.config.background {
            return Ok(());
        }
        let every = self.inner.config.retention_check_interval;
        self.spawn("logqueue-retention", move |weak, shutdown| {
            background_loop("retention", weak, shutdown, every, |log| {
                log.enforce_retention().map(|_| ())
            })
        })?;
        self.spawn("logqueue-roll-sync", roll_sync_loop)?;
        self.inner.shutdown.flags.lock().preparing = true;
        self.spawn("logqueue-prepare", prepare_loop)?;
        // The space the active segment already has (since open) is mapped ahead too.
        {
            let w = self.inner.lock_writer();
            self.inner.prefault(&w.active, w.position, w.allocated);
        }
        self.inner.roll_syncer.store(true, AtomicOrdering::Release);
        if self.inner.config.cleanup.compacts() {
            let every = self.inner.config.compaction.check_interval;
            self.spawn("logqueue-cleaner", move |weak, shutdown| {
                background_loop("cleaner", weak, shutdown, every, |log| {
                    log.inner.maybe_clean()
                })
            })?;
        }
        if let FlushPolicy::Interval(every) = self.inner.config.flush {
            self.spawn("logqueue-flusher", move |weak, shutdown| {
                background_loop("flusher", weak, shutdown, every, |log| log.flush())
            })?;
        }
        Ok(())
    }

    fn spawn(
        &self,
        name: &str,
        run: impl FnOnce(Weak<LogInner>, &Shutdown) + Send + 'static,
    ) -> Result<()> {
        let weak = Arc::downgrade(&self.inner);
        let shutdown = Arc::clone(&self.inner.shutdown);
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(weak, &shutdown))
            .map_err(|e| Error::io("spawn background thread", &self.inner.dir, e))?;
        self.inner.background.lock().push(handle);
        Ok(())
    }
}

/// Runs `work` every `every` until the log is closed or dropped. Holds only a weak
/// reference between runs, so it never keeps the log open. A failure is recorded as
/// the log's last background error ([`crate::LogStats::last_background_error`]);
/// work that puts data at risk (a failed fsync or swap) has poisoned the log itself.
fn background_loop(
    task: &'static str,
    weak: Weak<LogInner>,
    shutdown: &Shutdown,
    every: Duration,
    work: impl Fn(&Log) -> Result<()>,
) {
    loop {
        if shutdown.wait(every) {
            return;
        }
        let Some(inner) = weak.upgrade() else { return };
        if inner.is_closed() {
            return;
        }
        let log = Log::internal(inner);
        if let Err(e) = work(&log) {
            log.inner.record_background_error(task, &e);
        }
    }
}

/// The roll syncer: fsyncs the segments each roll seals, off the append path, and
/// moves the recovery point past them (see [`LogInner::sync_sealed`]). A failure has
/// poisoned the log; it is also recorded as the last background error.
fn roll_sync_loop(weak: Weak<LogInner>, shutdown: &Shutdown) {
    while shutdown.wait_rolled() {
        let Some(inner) = weak.upgrade() else { return };
        if inner.is_closed() {
            return;
        }
        if let Err(e) = inner.sync_sealed() {
            inner.record_background_error("roll sync", &e);
        }
    }
}

/// The preparer: allocates the chunk ahead of the writer (`fallocate`) and maps it
/// (`MADV_POPULATE_WRITE`), so that the append path neither waits for those nor
/// takes a page fault every 4 KiB. Holds no log lock and only a weak reference to
/// the log, to report a failed prefault; a segment sealed meanwhile is never grown
/// again (its seal and the allocation exclude each other) and only makes the
/// prefault hint fail, which is not a failure.
fn prepare_loop(weak: Weak<LogInner>, shutdown: &Shutdown) {
    while let Some(requests) = shutdown.wait_prefault() {
        for request in requests {
            if let Err(e) = request.run() {
                // Reported, not fatal: the writes fault the pages in themselves.
                if let Some(inner) = weak.upgrade() {
                    inner.record_background_error("prefault", &e);
                }
            }
        }
    }
}
