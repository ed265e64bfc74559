//! Background work and wake-ups: the signal tailing readers and blocked receivers
//! wait on, and the loop the flusher, retention and cleaner threads run.

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Weak;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::log::{Log, LogInner};
use crate::Result;

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

/// Tells background threads to stop; shared with them apart from the log itself.
#[derive(Debug, Default)]
pub(crate) struct Shutdown {
    stop: Mutex<bool>,
    cv: Condvar,
}

impl Shutdown {
    /// Tells every background thread to stop.
    pub(crate) fn signal(&self) {
        *self.stop.lock() = true;
        self.cv.notify_all();
    }

    /// Waits up to `every` for shutdown; true when shutting down.
    fn wait(&self, every: Duration) -> bool {
        let mut stop = self.stop.lock();
        if !*stop {
            self.cv.wait_for(&mut stop, every);
        }
        *stop
    }
}

/// Runs `work` every `every` until the log is closed or dropped. Holds only a weak
/// reference between runs, so it never keeps the log open.
pub(crate) fn background_loop(
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
        // Errors poison the log; the next user call reports them.
        let _ = work(&log);
    }
}
