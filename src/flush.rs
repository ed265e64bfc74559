//! Durability: group-commit flush, the recovery point, and close with its
//! clean-shutdown marker.

use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;

use crate::checkpoint::{self, RecoveryPoint};
use crate::log::{Log, LogInner};
use crate::{Error, Offset, Result};

#[derive(Debug)]
pub(crate) struct FlushState {
    pub(crate) syncing: bool,
    pub(crate) durable_offset: Offset,
}

impl Log {
    /// Makes every record below [`Log::end_offset`] (at the time of the call) durable.
    /// Concurrent callers share one fsync (group commit).
    pub fn flush(&self) -> Result<()> {
        self.inner.check_open()?;
        self.flush_to(self.end_offset())
    }

    pub(crate) fn flush_to(&self, target: Offset) -> Result<()> {
        let inner = &*self.inner;
        let mut st = inner.flush_state.lock();
        loop {
            if let Some(reason) = inner.poisoned.lock().clone() {
                return Err(Error::Poisoned { reason });
            }
            if st.durable_offset >= target {
                return Ok(());
            }
            if !st.syncing {
                st.syncing = true;
                break;
            }
            inner.flush_done.wait(&mut st);
        }
        drop(st);
        let result = inner.sync_now();
        let mut st = inner.flush_state.lock();
        st.syncing = false;
        if let Ok(durable) = result {
            st.durable_offset = st.durable_offset.max(durable);
            inner
                .durable_offset
                .fetch_max(durable, AtomicOrdering::AcqRel);
        }
        inner.flush_done.notify_all();
        drop(st);
        inner.counters.flushes.fetch_add(1, AtomicOrdering::Relaxed);
        result.map(|_| ())
    }
}

impl LogInner {
    /// fsyncs everything appended so far and records the new recovery point; returns
    /// the offset now durable. A failure poisons the log.
    fn sync_now(&self) -> Result<Offset> {
        let (rolled, active, position, end, dir_dirty) = {
            let mut w = self.writer.lock();
            let dirty = std::mem::take(&mut w.dir_dirty);
            // Whoever asked for it, this fsync covers every record so far.
            w.records_since_flush = 0;
            (
                std::mem::take(&mut w.unsynced),
                Arc::clone(&w.active),
                w.position,
                w.next_offset,
                dirty,
            )
        };
        let result = (|| {
            for s in &rolled {
                s.sync()?;
                self.counters.fsyncs.fetch_add(1, AtomicOrdering::Relaxed);
            }
            active.sync()?;
            self.counters.fsyncs.fetch_add(1, AtomicOrdering::Relaxed);
            if dir_dirty {
                self.config
                    .fs
                    .sync_dir(&self.dir)
                    .map_err(|e| Error::io("sync directory", &self.dir, e))?;
                self.counters.fsyncs.fetch_add(1, AtomicOrdering::Relaxed);
            }
            // The data is durable: the recovery point may now move (written, synced
            // later; it is never ahead of durable data).
            let mut w = self.writer.lock();
            w.recovery_point.write(RecoveryPoint {
                segment: active.base_offset,
                position,
                offset: end,
            })?;
            if dir_dirty {
                w.recovery_point.sync()?;
            }
            Ok(end)
        })();
        if let Err(e) = &result {
            self.poison(e);
        }
        result
    }

    pub(crate) fn close(&self) -> Result<()> {
        if self.closed.swap(true, AtomicOrdering::AcqRel) {
            return Err(Error::Closed);
        }
        self.stop_background();
        self.appended.wake_all();
        let result = self.write_clean_shutdown();
        self.unlink_due(i64::MAX, true);
        // Release the directory even when the final flush failed.
        self.lock.lock().take();
        result
    }

    fn stop_background(&self) {
        self.shutdown.signal();
        let handles = std::mem::take(&mut *self.background.lock());
        let me = std::thread::current().id();
        for h in handles {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }

    fn write_clean_shutdown(&self) -> Result<()> {
        if let Some(reason) = self.poisoned.lock().clone() {
            return Err(Error::Poisoned { reason });
        }
        let fs = &*self.config.fs;
        let mut w = self.writer.lock();
        let active = Arc::clone(&w.active);
        let position = w.position;
        let result = (|| {
            active.seal()?;
            w.allocated = position;
            for s in std::mem::take(&mut w.unsynced) {
                s.sync()?;
            }
            active.sync()?;
            for suffix in [
                crate::segment::INDEX_SUFFIX,
                crate::segment::TIMEINDEX_SUFFIX,
            ] {
                let p = crate::segment::file_path(&self.dir, active.base_offset, suffix);
                if let Ok(f) = fs.open(&p, crate::fs::OpenMode::Write) {
                    f.sync_data().map_err(|e| Error::io("sync index", &p, e))?;
                }
            }
            // The recovery point is about to name the active segment: its directory
            // entry must be durable first, or a crash before the final directory
            // fsync leaves a point naming a file that is not there (which open
            // reports as lost records).
            fs.sync_dir(&self.dir)
                .map_err(|e| Error::io("sync directory", &self.dir, e))?;
            w.dir_dirty = false;
            let offset = w.next_offset;
            w.recovery_point.write(RecoveryPoint {
                segment: active.base_offset,
                position,
                offset,
            })?;
            w.recovery_point.sync()?;
            let marker = self.dir.join(checkpoint::CLEAN_SHUTDOWN);
            let f = fs
                .open(&marker, crate::fs::OpenMode::Create)
                .map_err(|e| Error::io("create clean-shutdown marker", &marker, e))?;
            f.sync_data()
                .map_err(|e| Error::io("sync clean-shutdown marker", &marker, e))?;
            fs.sync_dir(&self.dir)
                .map_err(|e| Error::io("sync directory", &self.dir, e))
        })();
        if let Err(e) = &result {
            drop(w);
            self.poison(e);
        }
        result
    }
}
