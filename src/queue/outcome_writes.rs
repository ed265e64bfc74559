//! Writing the outcome feed while the queue is open (the format, the crash-safety
//! rules and the reconciliation at open are in `outcomes.rs`): what an ack's outcome
//! copies is kept from the delivery, outcomes are appended under the queue's lock
//! (`acked` ones after their journal event, unsynced; the others fsynced before
//! theirs), and `purge` writes its outcomes in batches before its event.

use super::outcomes::{append_items, failure_message, read_source, Item, Outcome, Source, BATCH};
use crate::{Error, Log, Offset, Result, StoredRecord};

impl super::QueueInner {
    /// Keeps what the outcome of `record`, just leased, copies from it (when the feed
    /// is on). Entries of records no longer leased are dropped once the map holds
    /// twice `max_in_flight`.
    pub(super) fn remember_source(&self, core: &mut super::Core, record: &StoredRecord) {
        if self.outcomes.is_none() {
            return;
        }
        if core.sources.len() >= 2 * self.config.max_in_flight {
            let state = &core.state;
            core.sources.retain(|&o, _| {
                state
                    .slot(o)
                    .is_some_and(|s| s.state == super::SlotState::Leased)
            });
        }
        core.sources.insert(record.offset, Source::of(record));
    }

    /// Forgets what was kept for the outcome of the record at `offset` (a nack: its
    /// next delivery keeps it again). Nothing to do, and no hashing on the ack path,
    /// when the feed is off.
    pub(super) fn forget_source(&self, core: &mut super::Core, offset: Offset) {
        if self.outcomes.is_some() {
            core.sources.remove(&offset);
        }
    }

    /// The source of the record at `offset` for its outcome: kept from its delivery,
    /// else read back from the log.
    pub(super) fn take_source(&self, core: &mut super::Core, offset: Offset) -> Option<Source> {
        core.sources
            .remove(&offset)
            .or_else(|| read_source(&self.log, offset))
    }

    /// Appends the outcome of the record at `offset` (nothing when the feed is off);
    /// with `sync`, fsyncs it before returning (every outcome but `acked`, see the
    /// module docs). `source` is the record, `None` to take it from the deliveries'
    /// or read it. A failure poisons the queue naming the outcomes log.
    pub(super) fn append_outcome(
        &self,
        core: &mut super::Core,
        (outcome, offset, attempts): (Outcome, Offset, u32),
        reason: Option<&str>,
        source: Option<&StoredRecord>,
        sync: bool,
    ) -> Result<()> {
        if self.outcomes.is_none() {
            return Ok(());
        }
        let source = match source {
            Some(s) => {
                core.sources.remove(&offset);
                Some(Source::of(s))
            }
            None => self.take_source(core, offset),
        };
        let item = Item {
            outcome,
            offset,
            attempts,
            reason,
            source,
        };
        self.append_outcomes(core, &[item], sync)
    }

    /// Appends `items` as one batch, fsynced with `sync`; moves `state.outcome_end`
    /// past them. A failure poisons the queue.
    pub(super) fn append_outcomes(
        &self,
        core: &mut super::Core,
        items: &[Item<'_>],
        sync: bool,
    ) -> Result<()> {
        let Some(out) = &self.outcomes else {
            return Ok(());
        };
        let now = self.log.config().clock.now_ms();
        let r = append_items(out, items, now);
        let r = r.and_then(|()| if sync { out.flush() } else { Ok(()) });
        self.outcomes_failure(core, r)?;
        core.state.outcome_end = Some(out.end_offset());
        Ok(())
    }

    /// fsyncs the outcomes log (if the feed is on); a failure poisons the queue.
    pub(super) fn flush_outcomes(&self, core: &mut super::Core) -> Result<()> {
        let r = self.outcomes.as_ref().map_or(Ok(()), Log::flush);
        self.outcomes_failure(core, r)
    }

    /// Moves the outcomes log's [`ACCOUNTED_CURSOR`] up to the end the snapshot just
    /// written accounts for.
    pub(super) fn commit_accounted(&self, core: &mut super::Core) -> Result<()> {
        match (&core.outcomes_cursor, core.state.outcome_end) {
            (Some(c), Some(end)) if c.position() != end => c.commit(end),
            _ => Ok(()),
        }
    }

    /// Applies [`QueueConfig::outcome_retention`](super::QueueConfig::outcome_retention)
    /// (the accounted cursor keeps what the next open needs).
    pub(super) fn outcome_retention(&self) -> Result<()> {
        match &self.outcomes {
            Some(out) if self.config.outcome_retention.is_some() => {
                out.enforce_retention().map(|_| ())
            }
            _ => Ok(()),
        }
    }

    /// A failed outcomes write or fsync poisons the queue with a reason that names
    /// the outcomes log and says how to recover.
    fn outcomes_failure(&self, core: &mut super::Core, r: Result<()>) -> Result<()> {
        if let (Err(e), Some(out)) = (&r, &self.outcomes) {
            if core.poisoned.is_none() && !matches!(e, Error::Closed) {
                core.poisoned = Some(failure_message(out.dir(), e));
            }
        }
        r
    }

    /// For [`Queue::purge`](super::Queue::purge), before its event: appends and
    /// fsyncs a `purged` outcome for every record below `end` that is not done (not
    /// tombstones the queue would not deliver), reading the log from the floor,
    /// [`BATCH`] at a time.
    pub(super) fn purge_outcomes(&self, core: &mut super::Core, end: Offset) -> Result<()> {
        if self.outcomes.is_none() {
            return Ok(());
        }
        let from = core.state.floor.max(self.log.start_offset());
        let mut batch = Vec::with_capacity(BATCH);
        for r in self.log.reader(from)? {
            // Unreadable: no outcome for it (delivery would pass it) nor, the reader
            // being unable to go on, for the rest of its stretch.
            let Ok(r) = r else { break };
            if r.offset >= end {
                break;
            }
            let attempts = match core.state.slot(r.offset) {
                Some(s) if s.state == super::SlotState::Done => continue,
                Some(s) => s.attempt,
                None if r.offset < core.state.next() => continue,
                None => 0,
            };
            if r.value.is_none() && !self.config.deliver_tombstones {
                continue;
            }
            batch.push(Item {
                outcome: Outcome::Purged,
                offset: r.offset,
                attempts,
                reason: None,
                source: Some(Source::of(&r)),
            });
            if batch.len() == BATCH {
                self.append_outcomes(core, &batch, false)?;
                batch.clear();
            }
        }
        self.append_outcomes(core, &batch, false)?;
        core.sources.retain(|&o, _| o >= end);
        self.flush_outcomes(core)
    }
}
