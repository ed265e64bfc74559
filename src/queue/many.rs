//! [`Queue::ack_many`] and [`Queue::nack_many`]: many receipts under one lock
//! acquisition, written as one journal frame.
//!
//! All or none: the events of one call go into one frame with one CRC (see
//! `journal.rs`), written to the OS by one write through the journal's mapping. A
//! process killed during the write leaves a frame whose CRC fails, past the synced
//! length: replay cuts it, with every ack of the call. A power loss before the next
//! sync keeps or tears the frame likewise. So after any crash, either every ack of a
//! call that was accepted is in the state or none is. The limit is one frame's size:
//! a call with more receipts than a journal frame holds
//! ((`journal_bytes` - 1033) / 24: 2.8 million with the default 64 MiB) is written
//! as several frames, each all or none.

use super::*;

/// Which receipts repeat an earlier receipt of the same call (same offset and
/// attempt): those are stale, the first copy settles the record. A receipt can only
/// be current if it equals the record's lease, so "an earlier current copy" and "an
/// earlier equal receipt" pick the same ones. Worked out before the core lock is
/// taken; `None` (nothing repeats) without sorting when the offsets rise, as
/// `receive` hands them out.
fn repeats(receipts: &[Receipt]) -> Option<Vec<bool>> {
    if receipts.windows(2).all(|w| w[0].offset < w[1].offset) {
        return None;
    }
    let mut order: Vec<(Offset, u32, usize)> = receipts
        .iter()
        .enumerate()
        .map(|(i, r)| (r.offset, r.attempt, i))
        .collect();
    order.sort_unstable();
    let mut repeat = vec![false; receipts.len()];
    for w in order.windows(2) {
        if (w[0].0, w[0].1) == (w[1].0, w[1].1) {
            repeat[w[1].2] = true;
        }
    }
    Some(repeat)
}

impl QueueInner {
    /// Checks every receipt, writes one event per current one in one frame, applies
    /// them; returns the stale receipts (including a second copy of one receipt).
    fn settle_many(
        &self,
        receipts: &[Receipt],
        event: impl Fn(&Core, &Receipt, i64) -> (Kind, i64),
    ) -> Result<Vec<Receipt>> {
        let repeat = repeats(receipts);
        let now = self.log.config().clock.now_ms();
        let mut core = self.core.lock();
        self.check(&core)?;
        let mut stale = Vec::new();
        for (i, r) in receipts.iter().enumerate() {
            let current = core
                .state
                .slot(r.offset)
                .is_some_and(|s| s.state == SlotState::Leased && s.attempt == r.attempt);
            if !current || repeat.as_ref().is_some_and(|rep| rep[i]) {
                stale.push(*r);
                continue;
            }
            let (kind, deadline) = event(&core, r, now);
            core.events.push(Event {
                kind,
                offset: r.offset,
                attempt: r.attempt,
                deadline,
            });
        }
        if core.events.is_empty() {
            return Ok(stale);
        }
        let was_at_cap = core.state.leased() >= self.config.max_in_flight;
        let events = core.events.clone();
        self.write_events(&mut core)?;
        let mut acked = Vec::new();
        for e in events {
            journal::apply(&mut core.state, e);
            if e.kind == Kind::Ack {
                self.finished(&mut core, e.offset);
                if self.outcomes.is_some() {
                    acked.push((e.offset, e.attempt));
                }
            } else {
                self.forget_source(&mut core, e.offset);
            }
        }
        // The acks' outcomes, after their journal frame (see `outcomes.rs`).
        for chunk in acked.chunks(outcomes::BATCH) {
            let items: Vec<_> = chunk
                .iter()
                .map(|&(offset, attempts)| outcomes::Item {
                    outcome: outcomes::Outcome::Acked,
                    offset,
                    attempts,
                    reason: None,
                    source: self.take_source(&mut core, offset),
                })
                .collect();
            self.append_outcomes(&mut core, &items, false)?;
        }
        // Keys released under `PerKey` (rebuilt at open if this frame is lost).
        self.write_events(&mut core)?;
        self.unlock(core, None);
        if was_at_cap {
            self.released.fetch_add(1, AtomicOrdering::SeqCst);
            self.log.inner.appended.notify();
        }
        Ok(stale)
    }
}

impl QueueInner {
    /// [`QueueInner::settle_many`] on each lane for the receipts it owns (called on
    /// lane 0): one lock acquisition and one frame per lane touched. The stale
    /// receipts come back in the order they were given.
    fn settle_many_lanes(
        &self,
        receipts: &[Receipt],
        event: impl Fn(&Core, &Receipt, i64) -> (Kind, i64),
    ) -> Result<Vec<Receipt>> {
        if self.others.is_empty() {
            return self.settle_many(receipts, event);
        }
        let mut by_lane: Vec<Vec<Receipt>> = vec![Vec::new(); self.others.len() + 1];
        for r in receipts {
            by_lane[self.lane.owner(r.offset) as usize].push(*r);
        }
        let mut stale_by_lane = Vec::with_capacity(by_lane.len());
        for (lane, mine) in self.lanes().zip(&by_lane) {
            let stale = match mine.is_empty() {
                true => Vec::new(),
                false => lane.settle_many(mine, &event)?,
            };
            stale_by_lane.push(stale.into_iter().rev().peekable());
        }
        // Each lane's stale receipts are in the order given: merged back by walking
        // the call's receipts from the last. Of the copies of one receipt, the stale
        // ones are the last (every copy, or all but the first).
        let mut stale = Vec::new();
        for r in receipts.iter().rev() {
            let of_lane = &mut stale_by_lane[self.lane.owner(r.offset) as usize];
            if of_lane.next_if_eq(r).is_some() {
                stale.push(*r);
            }
        }
        stale.reverse();
        Ok(stale)
    }
}

impl Queue {
    /// Acknowledges many deliveries at once: one lock acquisition and one journal
    /// write for the whole call (per lane touched, with
    /// [`QueueConfig::lanes`] above 1). Returns the receipts that were stale (not the
    /// record's current lease, or given twice), which changed nothing; every other
    /// one is acked. After a crash, either all of a call's acks survive or none does
    /// (they are one journal frame; see `docs/queue.md`; per lane with lanes); durable against a process
    /// crash once this returns, against power loss once flushed.
    ///
    /// ```
    /// use std::time::Duration;
    /// use logqueue::{Log, LogConfig, Queue, QueueConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let q = Queue::open(&log, "jobs", QueueConfig::default()).unwrap();
    /// for i in 0..3 {
    ///     q.send(Record::new(format!("job {i}"))).unwrap();
    /// }
    /// let got = q.receive(10, Duration::ZERO).unwrap();
    /// let receipts: Vec<_> = got.iter().map(|d| d.receipt).collect();
    /// assert!(q.ack_many(&receipts).unwrap().is_empty());
    /// assert_eq!(q.ack_many(&receipts[..1]).unwrap(), receipts[..1]); // stale now
    /// ```
    pub fn ack_many(&self, receipts: &[Receipt]) -> Result<Vec<Receipt>> {
        self.inner
            .settle_many_lanes(receipts, |_, _, _| (Kind::Ack, 0))
    }

    /// Gives many deliveries back at once, each visible again after `delay` (zero:
    /// the [`QueueConfig::backoff`] delay for its attempt), like [`Queue::nack`];
    /// one lock acquisition and one journal write. Returns the stale receipts. A
    /// `delay` beyond [`QueueConfig::max_visibility`] is [`Error::InvalidArgument`]
    /// and changes nothing.
    pub fn nack_many(&self, receipts: &[Receipt], delay: Duration) -> Result<Vec<Receipt>> {
        self.inner.check_visibility("nack delay", delay)?;
        self.inner.settle_many_lanes(receipts, |core, r, now| {
            let delay = if delay.is_zero() {
                core.state.backoff_ms(r.attempt)
            } else {
                millis(delay)
            };
            (Kind::Nack, now.saturating_add(delay))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(offset: Offset, attempt: u32) -> Receipt {
        Receipt { offset, attempt }
    }

    /// Later copies of one receipt repeat it; the same offset with another attempt
    /// does not (at most one of them is the lease), in any order.
    #[test]
    fn repeats_are_later_copies_of_one_receipt() {
        assert_eq!(repeats(&[]), None);
        assert_eq!(repeats(&[r(1, 1), r(2, 1), r(5, 3)]), None);
        let got = repeats(&[r(3, 1), r(1, 7), r(1, 1), r(3, 1), r(1, 1), r(3, 2)]);
        assert_eq!(got, Some(vec![false, false, false, true, true, false]));
    }
}
