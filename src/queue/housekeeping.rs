//! Dead-letter housekeeping: [`Queue::redrive`], [`Queue::redrive_where`],
//! [`Queue::reset_redrive_cursor`], [`Queue::purge_dead_letters`]
//! and the dead-letter log's time retention ([`QueueConfig::dead_letter_retention`]).

use super::*;

impl QueueInner {
    /// Applies [`QueueConfig::dead_letter_retention`] to the dead-letter log. Called
    /// once the queue state accounts for every dead letter (after its journal sync or
    /// snapshot), so that a letter is never deleted before the state knows of it.
    pub(super) fn dead_letter_retention(&self) -> Result<()> {
        // Lane 0's, once the other lanes made their state durable (see `lanes.rs`).
        if self.lane.index == 0 && self.config.dead_letter_retention.is_some() {
            self.dlq.enforce_retention()?;
        }
        Ok(())
    }
}

impl Queue {
    /// Moves up to `max` dead letters, oldest first, back into the log as new records:
    /// key, value and headers kept, the `dlq.*` headers removed, [`REDRIVE_FROM`]
    /// (the dead-letter offset) set, replacing one from an earlier cycle. A dead
    /// letter is never redriven twice, even across crashes (a durable intent is
    /// resolved on the next call). Returns how many were moved; they are durable in
    /// the log when this returns. A missing or damaged intent file
    /// (`queues/<name>/redrive`) is [`Error::Corrupt`] naming it, never a restart
    /// from the first dead letter; see [`Queue::reset_redrive_cursor`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use logqueue::{Log, LogConfig, Queue, QueueConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let q = Queue::open(&log, "jobs", QueueConfig::default()).unwrap();
    /// q.send(Record::new("retry me")).unwrap();
    /// let d = q.receive(1, Duration::ZERO).unwrap();
    /// q.dead_letter(&d[0].receipt, "downstream was down").unwrap();
    /// assert_eq!(q.redrive(10).unwrap(), 1);
    /// assert_eq!(q.redrive(10).unwrap(), 0);
    /// let again = q.receive(1, Duration::ZERO).unwrap();
    /// assert_eq!(again[0].record.header("redrive.from"), Some(&b"0"[..]));
    /// assert_eq!(again[0].record.header("dlq.reason"), None);
    /// ```
    pub fn redrive(&self, max: usize) -> Result<usize> {
        let inner = &*self.inner;
        let _one_at_a_time = inner.redriving.lock();
        inner.check_open()?;
        let dir = inner.core.lock().dir.clone();
        redrive::redrive(&inner.log, &inner.dlq, &dir, max, &|_| true)
    }

    /// Repairs the `redrive` intent file (`queues/<name>/redrive`) after
    /// [`Queue::redrive`] reported it missing or damaged ([`Error::Corrupt`]): every
    /// dead letter below `cursor` counts as redriven, the next redrive starts at
    /// `cursor`. To choose it, look in the log for records carrying
    /// [`REDRIVE_FROM`]: one past the highest value found never copies a dead letter
    /// twice (dead letters in between that were never copied are then skipped; a
    /// lower cursor copies them, and may copy some twice). A cursor past the
    /// dead-letter log's end is [`Error::InvalidConfig`].
    pub fn reset_redrive_cursor(&self, cursor: Offset) -> Result<()> {
        let inner = &*self.inner;
        let _one_at_a_time = inner.redriving.lock();
        inner.check_open()?;
        let dir = inner.core.lock().dir.clone();
        redrive::reset(&*inner.log.config().fs, &dir, &inner.dlq, cursor)
    }

    /// Like [`Queue::redrive`], but only the dead letters `filter` accepts go back
    /// (it sees each letter as stored, `dlq.*` headers included: filter on
    /// [`DLQ_REASON`], for example); the others stay in the dead-letter log, where a
    /// later call may still redrive them. Each dead letter is redriven at most once,
    /// across calls with any filters and across crashes (a durable intent records the
    /// letters moved above the oldest one still waiting; see `docs/queue.md`).
    /// Returns how many were moved; they are durable in the log when this returns.
    /// Each call reads the dead-letter log from the oldest letter not yet redriven.
    ///
    /// ```
    /// use std::time::Duration;
    /// use logqueue::{Log, LogConfig, Queue, QueueConfig, Record, DLQ_REASON};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let q = Queue::open(&log, "mail", QueueConfig::default()).unwrap();
    /// q.send(Record::new("to: a@example.com")).unwrap();
    /// q.send(Record::new("to: nobody")).unwrap();
    /// let d = q.receive(2, Duration::ZERO).unwrap();
    /// q.dead_letter(&d[0].receipt, "smtp timeout").unwrap();
    /// q.dead_letter(&d[1].receipt, "invalid address").unwrap();
    /// let transient = |r: &logqueue::StoredRecord| r.header(DLQ_REASON) != Some(b"invalid address");
    /// assert_eq!(q.redrive_where(10, transient).unwrap(), 1);
    /// assert_eq!(q.redrive_where(10, transient).unwrap(), 0); // never twice
    /// assert_eq!(q.redrive(10).unwrap(), 1); // the other one, later, if wanted
    /// ```
    pub fn redrive_where(
        &self,
        max: usize,
        filter: impl Fn(&StoredRecord) -> bool,
    ) -> Result<usize> {
        let inner = &*self.inner;
        let _one_at_a_time = inner.redriving.lock();
        inner.check_open()?;
        let dir = inner.core.lock().dir.clone();
        redrive::redrive(&inner.log, &inner.dlq, &dir, max, &filter)
    }

    /// Deletes every dead letter now in the dead-letter log (its start offset moves
    /// to its end; offsets are never reused). Returns how many were deleted. The
    /// queue state is made durable first, so that it accounts for every deleted
    /// letter. Letters deleted are never redriven.
    ///
    /// ```
    /// use std::time::Duration;
    /// use logqueue::{Log, LogConfig, Queue, QueueConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let q = Queue::open(&log, "jobs", QueueConfig::default()).unwrap();
    /// q.send(Record::new("bad")).unwrap();
    /// let d = q.receive(1, Duration::ZERO).unwrap();
    /// q.dead_letter(&d[0].receipt, "poison").unwrap();
    /// assert_eq!(q.purge_dead_letters().unwrap(), 1);
    /// assert_eq!(q.redrive(10).unwrap(), 0);
    /// ```
    pub fn purge_dead_letters(&self) -> Result<u64> {
        let inner = &*self.inner;
        let _no_redrive = inner.redriving.lock();
        // Every lane's core, in lane order, for the whole call: no lane appends a
        // letter between its state's sync and the delete.
        let mut cores: Vec<_> = inner.lanes().map(|l| (l, l.core.lock())).collect();
        for (lane, core) in &cores {
            lane.check(core)?;
        }
        inner.log.flush()?;
        for (lane, core) in &mut cores {
            let r = lane
                .flush_dead_letters(core)
                .and_then(|()| core.journal.sync())
                .and_then(|()| lane.write_floor(core));
            lane.poison_on_err(core, r)?;
        }
        let (start, end) = (inner.dlq.start_offset(), inner.dlq.end_offset());
        inner.dlq.delete_records_before(end)?;
        Ok(end.saturating_sub(start))
    }
}
