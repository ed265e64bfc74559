//! A queue's life: [`Queue::close`], listing ([`Queue::names`]), deleting
//! ([`Queue::delete`]) and emptying ([`Queue::purge`]).
//!
//! Deleting is crash-safe by a rename: the queue's directory `queues/<name>/` is first
//! renamed to the tombstone `queues/<name>~deleted` (`~` is not allowed in queue
//! names, so no queue is ever called that) and the rename made durable; only then are
//! its files removed. A crash before the rename is durable leaves the queue whole
//! (it opens as it was); after it, the queue is gone under its name (opening `<name>`
//! creates a new queue, which is what the delete asked for) and the tombstone is
//! removed by the next [`Queue::open`], [`Queue::names`] or [`Queue::delete`] of that
//! log. Until then the tombstone's `floor` file keeps holding retention at the old
//! floor: more is kept, never less. Inside the tombstone the `snapshot` is removed
//! before the `floor` file, so that no moment leaves a snapshot without its floor
//! (which retention would read as "protect everything").

use super::*;
use crate::fs::FileSystem;

/// Suffix of a queue directory being deleted.
const TOMBSTONE: &str = "~deleted";

impl crate::dependents::Dependent for QueueInner {
    fn close_before_log(&self) -> Result<()> {
        self.close()
    }
}

impl QueueInner {
    /// See [`Queue::close`]. On lane 0, closes the other lanes first (each makes its
    /// state durable; the dead-letter log they share is lane 0's to close).
    fn close(&self) -> Result<()> {
        if self.closed.load(AtomicOrdering::Acquire) {
            return Err(Error::Closed);
        }
        let mut lanes = Ok(());
        for other in &self.others {
            match other.close() {
                Ok(()) | Err(Error::Closed) => {}
                Err(e) => lanes = lanes.and(Err(e)),
            }
        }
        self.close_lane().and(lanes)
    }

    fn close_lane(&self) -> Result<()> {
        let mut core = self.core.lock();
        if self.closed.load(AtomicOrdering::Acquire) {
            return Err(Error::Closed);
        }
        let flushed = match self.check(&core) {
            Ok(()) => {
                let r = self
                    .log
                    .flush()
                    .and_then(|()| self.flush_dead_letters(&mut core))
                    .and_then(|()| self.flush_outcomes(&mut core))
                    .and_then(|()| core.journal.sync())
                    .and_then(|()| self.write_floor(&mut core))
                    .and_then(|()| self.dead_letter_retention())
                    .and_then(|()| self.outcome_retention());
                self.poison_on_err(&mut core, r)
            }
            Err(e) => Err(e),
        };
        self.closed.store(true, AtomicOrdering::Release);
        // The dead-letter log's lock and the queue's lock go, in that order (open
        // takes them the other way round), whatever the flush said.
        let closed = |log: Log| match log.close() {
            Err(Error::Closed) => Ok(()),
            r => r,
        };
        let dlq = match self.lane.index {
            0 => closed(self.dlq.clone()),
            _ => Ok(()),
        };
        let dlq = match self.outcomes.clone().map(closed) {
            Some(r) => dlq.and(r),
            None => dlq,
        };
        self.lock.lock().take();
        drop(core);
        // Receivers blocked in `receive` wake up and see `Closed`.
        self.released.fetch_add(1, AtomicOrdering::SeqCst);
        self.log.inner.appended.notify();
        match flushed {
            // A queue closed because its log was closed has nothing more to flush.
            Err(Error::Closed) => dlq,
            r => r.and(dlq),
        }
    }
}

/// `queues/` of `log`.
fn queues_dir(log: &Log) -> PathBuf {
    log.dir().join("queues")
}

/// Removes the tombstones of deletes a crash interrupted (see the module docs).
fn finish_deletes(fs: &dyn FileSystem, queues: &Path) -> Result<()> {
    let names = match fs.list(queues) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list queues", queues, e)),
    };
    let mut removed = false;
    for name in names.iter().filter(|n| n.ends_with(TOMBSTONE)) {
        remove_tombstone(fs, &queues.join(name))?;
        removed = true;
    }
    if removed {
        fs.sync_dir(queues)
            .map_err(|e| Error::io("sync directory", queues, e))?;
    }
    Ok(())
}

/// Removes a tombstone directory: the snapshot before the floor file (see the module
/// docs), then the rest.
fn remove_tombstone(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    for file in [journal::SNAPSHOT, floors::FLOOR_FILE] {
        let path = dir.join(file);
        match fs.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove deleted queue file", path, e)),
        }
    }
    fs.remove_dir_all(dir)
        .map_err(|e| Error::io("remove deleted queue", dir, e))
}

/// Best effort at open: a leftover tombstone only holds retention back a little
/// longer, which is no reason to refuse opening a queue.
pub(super) fn finish_deletes_quietly(log: &Log) {
    let _ = finish_deletes(&*log.config().fs, &queues_dir(log));
}

impl Queue {
    /// Closes this queue: makes its state durable (as [`Queue::flush`]), closes its
    /// dead-letter log and releases its lock, so that it can be opened again, here or
    /// in another process. Every clone of it then gets [`Error::Closed`] (a
    /// [`Queue::receive`] blocked waiting wakes up with it). The lock is released and
    /// the queue closed even when the flush fails; that failure is returned. Closing
    /// the log ([`Log::close`]) closes its queues first. A queue closed already is
    /// [`Error::Closed`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use logqueue::{Error, Log, LogConfig, Queue, QueueConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let q = Queue::open(&log, "jobs", QueueConfig::default()).unwrap();
    /// let other = q.clone();
    /// q.close().unwrap();
    /// assert!(matches!(other.receive(1, Duration::ZERO), Err(Error::Closed)));
    /// let again = Queue::open(&log, "jobs", QueueConfig::default()).unwrap();
    /// again.send(Record::new("x")).unwrap();
    /// ```
    pub fn close(self) -> Result<()> {
        self.inner.close()
    }

    /// The names of the queues of `log` (open or not), sorted: the directories under
    /// `queues/` that hold a queue's snapshot (a queue whose creation never finished
    /// is not listed). Also removes what deletes interrupted by a crash left behind,
    /// except on a [`Log::open_read_only`] view, which changes no file (and whose
    /// owner may be deleting that queue right now).
    pub fn names(log: &Log) -> Result<Vec<String>> {
        log.inner.check_open()?;
        let fs = &*log.config().fs;
        let queues = queues_dir(log);
        if !log.is_read_only() {
            finish_deletes(fs, &queues)?;
        }
        let mut names = match fs.list(&queues) {
            Ok(names) => names,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io("list queues", &queues, e)),
        };
        names.retain(|n| valid_name(n) && fs.exists(&queues.join(n).join(journal::SNAPSHOT)));
        names.sort();
        Ok(names)
    }

    /// Deletes the queue `name` of `log`: its state, its dead-letter log and its
    /// retention floor (from then on it holds no record of the log back). The log's
    /// records are untouched. A queue open (in this process or another, or its
    /// dead-letter log opened as a log) is [`Error::Locked`]: close it first. A name
    /// that names no queue is [`Error::InvalidArgument`]. Crash-safe: after a crash
    /// the queue is either whole or gone, never half there (see `docs/queue.md`).
    ///
    /// ```
    /// use logqueue::{Log, LogConfig, Queue, QueueConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let q = Queue::open(&log, "old", QueueConfig::default()).unwrap();
    /// assert!(Queue::delete(&log, "old").is_err()); // open: Locked
    /// q.close().unwrap();
    /// Queue::delete(&log, "old").unwrap();
    /// assert!(Queue::names(&log).unwrap().is_empty());
    /// ```
    pub fn delete(log: &Log, name: &str) -> Result<()> {
        if !valid_name(name) {
            return Err(Error::InvalidArgument(format!("bad queue name {name:?}")));
        }
        log.inner.check_open()?;
        let fs = &*log.config().fs;
        let queues = queues_dir(log);
        finish_deletes(fs, &queues)?;
        let dir = queues.join(name);
        if !fs.exists(&dir) {
            return Err(Error::InvalidArgument(format!("no queue named {name:?}")));
        }
        let queue_lock = lock_queue(fs, &dir)?;
        let dlq_dir = dir.join(DEAD_LETTER_DIR);
        let dlq_lock = if fs.exists(&dlq_dir) {
            let path = dlq_dir.join("LOCK");
            let lock = fs
                .try_lock(&path)
                .map_err(|e| Error::io("lock", &path, e))?
                .ok_or(Error::Locked { path })?;
            Some(lock)
        } else {
            None
        };
        let tombstone = queues.join(format!("{name}{TOMBSTONE}"));
        fs.rename(&dir, &tombstone)
            .map_err(|e| Error::io("rename deleted queue", &dir, e))?;
        fs.sync_dir(&queues)
            .map_err(|e| Error::io("sync directory", &queues, e))?;
        // Deleted from here on; what follows is cleanup a crash leaves to the next call
        // (and the next `Log::open` deletes the cursor of a queue whose directory is gone).
        drop(dlq_lock);
        drop(queue_lock);
        // The queue no longer holds back retention.
        floors::forget(log, name)?;
        remove_tombstone(fs, &tombstone)?;
        fs.sync_dir(&queues)
            .map_err(|e| Error::io("sync directory", &queues, e))
    }

    /// Empties the queue: every record now in the log (below its end offset) counts as
    /// done, whether never delivered, leased (the receipts become stale), waiting or
    /// delayed. Returns how many records that settled. Durable when it returns (the
    /// state is fsynced and the retention floor moved). Records appended later are
    /// delivered as usual. With [`QueueConfig::lanes`] above 1 each lane is emptied
    /// in turn, each durably: a crash in between leaves the lanes done so far empty.
    ///
    /// ```
    /// use std::time::Duration;
    /// use logqueue::{Log, LogConfig, Queue, QueueConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let q = Queue::open(&log, "jobs", QueueConfig::default()).unwrap();
    /// for i in 0..3 {
    ///     q.send(Record::new(format!("{i}"))).unwrap();
    /// }
    /// q.receive(1, Duration::ZERO).unwrap();
    /// assert_eq!(q.purge().unwrap(), 3);
    /// assert!(q.receive(10, Duration::ZERO).unwrap().is_empty());
    /// assert_eq!(q.stats().ack_floor, 3);
    /// ```
    pub fn purge(&self) -> Result<u64> {
        let mut settled = 0;
        let end = self.inner.log.end_offset();
        for lane in self.inner.lanes() {
            settled += lane.purge_lane(end)?;
        }
        Ok(settled)
    }
}

impl QueueInner {
    /// [`Queue::purge`] of this lane.
    fn purge_lane(&self, end: Offset) -> Result<u64> {
        let inner = self;
        let mut unread = inner.unread.lock();
        let mut core = inner.core.lock();
        inner.check(&core)?;
        if end <= core.state.floor {
            return Ok(0);
        }
        let was_at_cap = core.state.leased() >= inner.config.max_in_flight;
        // The outcomes first, durable (see `outcomes.rs`): a crash before the event
        // leaves the records with an outcome purged (rolled forward at open), the
        // rest not.
        // The log first: an outcome never names a record a power loss can take.
        let r = inner
            .log
            .flush()
            .and_then(|()| inner.purge_outcomes(&mut core, end));
        inner.poison_on_err(&mut core, r)?;
        // One event: everything up to and including `end - 1` is done.
        let event = Event {
            kind: Kind::Purge,
            offset: end - 1,
            attempt: 0,
            deadline: 0,
        };
        core.events.push(event);
        inner.write_events(&mut core)?;
        let settled = core.state.purge(end);
        unread.restart_at(end);
        core.reread.clear();
        let r = (|| {
            if core.per_key.is_some() {
                core.per_key = Some(per_key::PerKey::rebuild(&inner.log, &mut core.state)?);
            }
            // Durable now: the log up to `end` first (the state names it), then the
            // state, then the floor for retention.
            inner.log.flush()?;
            core.journal.sync()?;
            inner.write_floor(&mut core)
        })();
        inner.poison_on_err(&mut core, r)?;
        if was_at_cap {
            inner.released.fetch_add(1, AtomicOrdering::SeqCst);
            drop(core);
            inner.log.inner.appended.notify();
        }
        Ok(settled)
    }
}
