//! The queue's internals behind its lock: writing events to the journal, rotating
//! it, the floor cursor, settling a receipt, and dead-lettering.

use super::*;

impl QueueInner {
    /// Every lane of the queue, lane 0 (this one, when called on the queue's
    /// `inner`) first.
    pub(super) fn lanes(&self) -> impl Iterator<Item = &QueueInner> + '_ {
        std::iter::once(self).chain(self.others.iter().map(|l| &**l))
    }

    /// Lane `index` of the queue (called on lane 0; lane 0 past the last).
    pub(super) fn lane_at(&self, index: usize) -> &QueueInner {
        match index {
            0 => self,
            i => self.others.get(i - 1).map_or(self, |l| &**l),
        }
    }

    /// Leases ended so far in every lane (each lane's `released`, summed: they only
    /// grow, so the sum changes whenever one does).
    pub(super) fn released_total(&self) -> u64 {
        self.lanes()
            .map(|l| l.released.load(AtomicOrdering::SeqCst))
            .sum()
    }

    /// The lane owning `offset` (called on lane 0).
    pub(super) fn lane_of(&self, offset: Offset) -> &QueueInner {
        self.lane_at(self.lane.owner(offset) as usize)
    }

    /// One receive attempt on every lane, lane `first` first, until one hands out
    /// records (see `lanes.rs`): what the lanes found, merged.
    pub(super) fn receive_lanes(
        &self,
        (first, thread): (usize, usize),
        max: usize,
        now_ms: i64,
        visibility: Duration,
    ) -> Result<deliver::Round> {
        let count = self.lane.count as usize;
        let mut all = deliver::Round::default();
        let mut backed_off = false;
        for k in 0..count {
            let lane = self.lane_at((first + k) % count);
            if k > 0 && !backed_off && lane.taker.busy_for(thread, now_ms) {
                // A visit to a lane another thread is at work on: once per
                // receive, under no lock (see `lanes::VISIT_BACKOFF`).
                backed_off = true;
                #[cfg(test)]
                lanes::BACKOFFS.with(|b| b.set(b.get() + 1));
                std::thread::sleep(lanes::VISIT_BACKOFF);
            }
            let round = lane.receive_round(max, now_ms, visibility)?;
            if !round.got.is_empty() {
                if count > 1 {
                    lane.taker.note(thread, now_ms);
                }
                return Ok(round);
            }
            all.merge(round);
        }
        Ok(all)
    }

    /// Timestamp of the record at the ack floor (cached per floor), if it is not done.
    pub(super) fn oldest_timestamp(&self, core: &mut Core, end: Offset) -> Option<i64> {
        let floor = core.state.lane_floor(end).max(self.log.start_offset());
        if floor >= end {
            return None;
        }
        if let Some((o, ts)) = core.oldest.filter(|(o, _)| *o == floor) {
            debug_assert_eq!(o, floor);
            return Some(ts);
        }
        let ts = self.log.read(floor).ok().flatten()?.timestamp;
        core.oldest = Some((floor, ts));
        Some(ts)
    }

    /// `Closed` when the log or this queue was closed.
    pub(super) fn check_open(&self) -> Result<()> {
        self.log.inner.check_open()?;
        if self.closed.load(AtomicOrdering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// [`Error::InvalidArgument`] for a lease or delay beyond `max_visibility`: a
    /// slot held that long holds the ack floor, and with it retention, that long.
    pub(super) fn check_visibility(&self, what: &str, d: Duration) -> Result<()> {
        if d > self.config.max_visibility {
            return Err(Error::InvalidArgument(format!(
                "{what} {d:?} exceeds max_visibility {:?}",
                self.config.max_visibility
            )));
        }
        Ok(())
    }

    pub(super) fn check(&self, core: &Core) -> Result<()> {
        self.check_open()?;
        match &core.poisoned {
            Some(reason) => Err(Error::QueuePoisoned {
                queue: self.name.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    pub(super) fn poison_on_err<T>(&self, core: &mut Core, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            if !matches!(e, Error::Closed) && core.poisoned.is_none() {
                crate::trace::event_error!(queue = %self.name, error = %e, "queue poisoned: it refuses changes until reopened");
                core.poisoned = Some(e.to_string());
            }
        }
        r
    }

    /// Releases the core lock (then the read-ahead lock, if held: a receiver waiting
    /// for the read-ahead must not get it while the core lock is still held, or it
    /// would wait on the core lock holding the read-ahead lock that the next
    /// receive needs), then faults in the journal pages the next writes will touch
    /// if they are due (see `Journal::prefault_ahead`), so that no consumer waits on
    /// the lock while another takes a page fault.
    pub(super) fn unlock(
        &self,
        mut core: parking_lot::MutexGuard<'_, Core>,
        unread: Option<parking_lot::MutexGuard<'_, ReadAhead>>,
    ) {
        let prefault = core.journal.prefault_ahead();
        drop(core);
        drop(unread);
        if let Some(p) = prefault {
            p.run();
        }
    }

    /// Writes `core.events` as one or more frames, rotating the journal when full.
    pub(super) fn write_events(&self, core: &mut Core) -> Result<()> {
        let mut events = std::mem::take(&mut core.events);
        let r = (|| {
            let mut rest = &events[..];
            while !rest.is_empty() {
                let n = rest.len().min(core.journal.max_events());
                if !core.journal.fits(n) {
                    self.rotate(core)?;
                    continue;
                }
                core.journal.write(rest[..n].iter().copied())?;
                rest = &rest[n..];
            }
            Ok(())
        })();
        events.clear();
        core.events = events;
        self.poison_on_err(core, r)
    }

    /// Snapshot of the current state and a new journal. The log (and dead-letter log)
    /// are made durable first: the snapshot never names a record that is not.
    pub(super) fn rotate(&self, core: &mut Core) -> Result<()> {
        self.log.flush()?;
        self.flush_dead_letters(core)?;
        // The snapshot accounts for the outcomes up to `state.outcome_end`.
        self.flush_outcomes(core)?;
        let generation = core.journal.generation() + 1;
        let fs = Arc::clone(core.journal.fs());
        let capacity = self.config.journal_bytes as usize;
        core.journal = Journal::create(fs, &core.dir, generation, capacity, &core.state)?;
        self.write_floor(core)?;
        self.commit_accounted(core)
    }

    /// Commits the floor to the queue's cursor if it moved since. The caller has made
    /// the state durable up to the floor.
    pub(super) fn write_floor(&self, core: &mut Core) -> Result<()> {
        let floor = core.state.lane_floor(self.log.end_offset());
        floors::commit(&core.floor_cursor, floor)
    }

    /// Checks `receipt` against the current lease, then runs `f` (which gives the
    /// event to record) and records it.
    pub(super) fn settle(
        &self,
        receipt: &Receipt,
        f: impl FnOnce(&dyn Fn() -> i64, &mut Core) -> Result<(Kind, i64)>,
    ) -> Result<()> {
        self.settle_framed(receipt, None, f)
    }

    /// [`QueueInner::settle`] with the journal frame of the event `f` will give
    /// encoded ahead, outside the lock (an ack: see `journal::encode_one`).
    /// [`Error::StaleReceipt`] unless `receipt` is its record's current lease (or
    /// the queue's error, when it is closed or poisoned).
    pub(super) fn check_current(&self, core: &Core, receipt: &Receipt) -> Result<()> {
        self.check(core)?;
        let current = core.state.slot(receipt.offset);
        if !current.is_some_and(|s| s.state == SlotState::Leased && s.attempt == receipt.attempt) {
            return Err(Error::StaleReceipt {
                offset: receipt.offset,
                attempt: receipt.attempt,
            });
        }
        Ok(())
    }

    pub(super) fn settle_framed(
        &self,
        receipt: &Receipt,
        frame: Option<&[u8; journal::FRAME_HEADER + journal::EVENT_LEN]>,
        f: impl FnOnce(&dyn Fn() -> i64, &mut Core) -> Result<(Kind, i64)>,
    ) -> Result<()> {
        let mut core = self.core.lock();
        self.check_current(&core, receipt)?;
        // Only nack and extend need the time: no clock read on the ack path.
        let clock = &self.log.config().clock;
        let (kind, deadline) = f(&|| clock.now_ms(), &mut core)?;
        let was_at_cap = core.state.leased() >= self.config.max_in_flight;
        let event = Event {
            kind,
            offset: receipt.offset,
            attempt: receipt.attempt,
            deadline,
        };
        match frame {
            Some(frame) if core.events.is_empty() && core.journal.fits(1) => {
                debug_assert_eq!(*frame, journal::encode_one(event));
                let r = core.journal.write_frame(frame);
                self.poison_on_err(&mut core, r)?;
            }
            _ => {
                core.events.push(event);
                self.write_events(&mut core)?;
            }
        }
        journal::apply(&mut core.state, event);
        if kind == Kind::Ack {
            // After the journal event, unsynced: a missing one is filled in at open
            // from the journal (see `outcomes.rs`).
            let what = (outcomes::Outcome::Acked, receipt.offset, receipt.attempt);
            self.append_outcome(&mut core, what, None, None, false)?;
        } else if kind == Kind::Nack {
            self.forget_source(&mut core, receipt.offset);
        }
        if matches!(kind, Kind::Ack | Kind::DeadLetter | Kind::Gone) {
            self.finished(&mut core, receipt.offset);
            self.write_events(&mut core)?;
        }
        self.unlock(core, None);
        if kind != Kind::Extend && was_at_cap {
            self.released.fetch_add(1, AtomicOrdering::SeqCst);
            self.log.inner.appended.notify();
        }
        Ok(())
    }

    /// The log's start offset passed the floor ([`Log::delete_records_before`]): the
    /// records below it that were not done are counted in
    /// [`QueueStats::skipped_by_retention`] and passed, their keys released.
    pub(super) fn jump_to_start(&self, core: &mut Core, unread: &mut ReadAhead) -> Result<()> {
        let start = self.log.start_offset();
        if core.state.floor >= start {
            return Ok(());
        }
        let skipped: Vec<Offset> = core
            .state
            .pending()
            .map(|(o, _)| o)
            .take_while(|&o| o < start)
            .collect();
        core.state.clamp(start, Offset::MAX);
        for o in skipped {
            self.finished(core, o);
        }
        let next = core.state.next();
        if unread.resume < next {
            // The reader's lock is not waited for under the core lock: the next
            // holder of the reader seeks (see `read_ahead.rs`).
            unread.restart_at(next);
        }
        Ok(())
    }

    /// `offset` is done: under `PerKey`, the next record of its key is unblocked.
    pub(super) fn finished(&self, core: &mut Core, offset: Offset) {
        if let Some(pk) = &mut core.per_key {
            if let Some(e) = pk.done(offset) {
                journal::apply(&mut core.state, e);
                core.events.push(e);
            }
        }
    }

    /// The record at `offset`, delivered under a lease, to copy into a dead letter:
    /// `None` when it is legitimately gone (compaction removed it, or it is below
    /// the log's start); an error when it reads as damaged, or as missing from a log
    /// that never compacts (where no offset below the end can be missing). Every
    /// dead-lettering reads through here, so none records a letter it did not write.
    pub(super) fn letter_source(&self, offset: Offset) -> Result<Option<StoredRecord>> {
        let refused = |e: Error| {
            crate::trace::event_error!(queue = %self.name, offset, error = %e, "dead letter refused");
            e
        };
        match self.log.read(offset) {
            Ok(Some(record)) => Ok(Some(record)),
            Ok(None) if self.log.config().cleanup.compacts() => Ok(None),
            Ok(None) => Err(refused(Error::corrupt(
                self.log.dir(),
                0,
                Some(offset),
                "a delivered record is missing from a log that never compacts",
            ))),
            Err(Error::OffsetOutOfRange { .. }) => Ok(None),
            Err(e) => Err(refused(e)),
        }
    }

    /// Appends the dead letter of `record` and makes it durable; returns the
    /// dead-letter log's end after it. A failure poisons the queue, naming the
    /// dead-letter log: the letter may or may not be on disk, and only the
    /// reconciliation at open can tell (issue 9, defects 3 and 14).
    pub(super) fn append_dead_letter(
        &self,
        core: &mut Core,
        record: StoredRecord,
        attempts: u32,
        reason: &str,
    ) -> Result<Offset> {
        let per_key = core.per_key.is_some();
        let offset = record.offset;
        let outcome = self.outcomes.as_ref().map(|_| {
            core.sources.remove(&offset);
            outcomes::Item {
                outcome: outcomes::Outcome::DeadLettered,
                offset,
                attempts,
                reason: Some(reason),
                source: Some(outcomes::Source::of(&record)),
            }
        });
        let letter = dead_letter::letter(record, &self.name, attempts, reason, per_key);
        // Durable before the journal says done: a journal write can outlive an
        // un-synced dead-letter append in a power loss.
        let at = match self.dlq.append(letter) {
            Ok(at) => at,
            Err(e) => return self.dead_letter_failure(core, Err(e)).map(|()| 0),
        };
        self.flush_dead_letters(core)?;
        // The end this lane accounts for: just past its own letter, not the log's
        // end now, which may hold another lane's letter appended since, not yet
        // synced: a power loss could take that one back and leave this lane's state
        // accounting for more letters than the log holds (`Corrupt` at open).
        let end = at + 1;
        // After the letter (a letter without its outcome gets it at open), durable
        // before the journal event too.
        if let Some(outcome) = outcome {
            self.append_outcomes(core, &[outcome], true)?;
        }
        Ok(end)
    }

    /// fsyncs the dead-letter log; a failure poisons the queue naming it.
    pub(super) fn flush_dead_letters(&self, core: &mut Core) -> Result<()> {
        let r = self.dlq.flush();
        self.dead_letter_failure(core, r)
    }

    /// A failed dead-letter write or fsync poisons the queue with a reason that names
    /// the dead-letter log and says how to recover (issue 9, defect 14).
    fn dead_letter_failure(&self, core: &mut Core, r: Result<()>) -> Result<()> {
        if let Err(e) = &r {
            if core.poisoned.is_none() && !matches!(e, Error::Closed) {
                core.poisoned = Some(dead_letter::failure_message(self.dlq.dir(), e));
            }
        }
        r
    }
}
