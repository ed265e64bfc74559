//! Handing records out: expired and nacked leases first, then records never
//! delivered, read ahead of the cursor from the log.

use super::journal::{self, Event, Kind};
use super::outcomes::Outcome;
use super::per_key::BLOCKED;
use super::state::SlotState;
use super::{
    dead_letter, millis, Core, Delivery, QueueInner, ReadAhead, Receipt, Unread, DELAY_UNTIL,
    EXPIRES_AT,
};
use crate::{Error, Offset, Result, StoredRecord};

/// The time a record is held back to, from its [`DELAY_UNTIL`] header.
pub(super) fn delay_until(record: &StoredRecord) -> Option<i64> {
    std::str::from_utf8(record.header(DELAY_UNTIL)?)
        .ok()?
        .parse()
        .ok()
}

/// The time from which a record is no longer delivered, from its [`EXPIRES_AT`] header.
pub(super) fn expires_at(record: &StoredRecord) -> Option<i64> {
    std::str::from_utf8(record.header(EXPIRES_AT)?)
        .ok()?
        .parse()
        .ok()
}

/// What one receive attempt on one lane (or on several, merged) found.
#[derive(Default)]
pub(super) struct Round {
    pub got: Vec<Delivery>,
    /// Where the reading of the lane stands (the lowest of the lanes'), unless its
    /// leases are at its `max_in_flight`: records appended past it are news to it.
    pub cursor: Option<Offset>,
    /// The earliest deadline of a lease or a waiting record.
    pub next_due: Option<i64>,
    /// The read-ahead ran dry while another consumer was refilling it.
    pub dry: bool,
}

impl Round {
    /// Adds what another lane found (which handed out nothing).
    pub fn merge(&mut self, other: Round) {
        self.dry |= other.dry;
        self.cursor = match (self.cursor, other.cursor) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.next_due = match (self.next_due, other.next_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

impl QueueInner {
    /// One receive attempt on this lane at clock time `now_ms`: up to `max` records
    /// leased for `visibility`, decoded before the core lock is taken (see
    /// `read_ahead.rs`).
    pub(super) fn receive_round(
        &self,
        max: usize,
        now_ms: i64,
        visibility: std::time::Duration,
    ) -> Result<Round> {
        // Before the locks: the output (one allocation less inside the critical
        // section).
        let out = Vec::with_capacity(max.min(1024));
        let mut unread = self.fill_ahead(max);
        let mut core = self.core.lock();
        let got = self.try_receive(&mut core, &mut unread, (max, out), now_ms, visibility);
        let at_cap = core.state.leased() >= self.config.max_in_flight;
        let round = |got| Round {
            got,
            cursor: (!at_cap).then(|| core.state.next().max(unread.resume)),
            next_due: core.state.next_deadline(),
            dry: unread.dry,
        };
        let round = got.map(round);
        self.unlock(core, Some(unread));
        round
    }

    /// Settles `record` instead of delivering it, when it must not be delivered: a
    /// tombstone (unless [`QueueConfig::deliver_tombstones`](super::QueueConfig)) or
    /// a record at or past its [`EXPIRES_AT`] time (dead-lettered with reason
    /// `expired`, or settled, per `dead_letter_expired`). `attempt` is its deliveries
    /// so far (0 for a record at the cursor, never delivered). True when settled.
    fn settle_undeliverable(
        &self,
        core: &mut Core,
        record: &StoredRecord,
        attempt: u32,
        now: i64,
    ) -> Result<bool> {
        let offset = record.offset;
        let expired = expires_at(record).is_some_and(|at| at <= now);
        let tombstone = record.value.is_none() && !self.config.deliver_tombstones;
        if !expired && !tombstone {
            return Ok(false);
        }
        if offset >= core.state.next() {
            // Give it a slot first, so that the event below counts it like any
            // record the queue had read.
            self.push(core, Kind::Delay, offset, 0, now);
        }
        if expired {
            core.counts.expired += 1;
            if self.config.dead_letter_expired {
                // The record in hand is the letter's source: no second read.
                let reason = dead_letter::REASON_EXPIRED;
                let end = self.append_dead_letter(core, record.clone(), attempt, reason)?;
                self.push(core, Kind::DeadLetter, offset, attempt, end as i64);
            } else {
                // Durable before the event (see `outcomes.rs`).
                let what = (Outcome::Expired, offset, attempt);
                self.append_outcome(core, what, None, Some(record), true)?;
                self.push(core, Kind::Gone, offset, attempt, 0);
            }
        } else {
            core.counts.tombstones_skipped += 1;
            self.push(core, Kind::Gone, offset, attempt, 0);
        }
        self.finished(core, offset);
        Ok(true)
    }

    /// Applies an event and queues it for the journal.
    fn push(&self, core: &mut Core, kind: Kind, offset: Offset, attempt: u32, deadline: i64) {
        let e = Event {
            kind,
            offset,
            attempt,
            deadline,
        };
        journal::apply(&mut core.state, e);
        core.events.push(e);
    }

    fn lease(&self, core: &mut Core, offset: Offset, attempt: u32, deadline: i64) {
        let e = Event {
            kind: Kind::Lease,
            offset,
            attempt,
            deadline,
        };
        journal::apply(&mut core.state, e);
        core.events.push(e);
    }

    /// One receive attempt: hands out up to `max_out.0` records into `max_out.1`
    /// (empty), leasing them from `now` (read before the locks) for `visibility`.
    pub(super) fn try_receive(
        &self,
        core: &mut Core,
        unread: &mut ReadAhead,
        max_out: (usize, Vec<Delivery>),
        now: i64,
        visibility: std::time::Duration,
    ) -> Result<Vec<Delivery>> {
        self.check(core)?;
        unread.dry = false;
        let r = self
            .jump_to_start(core, unread)
            .and_then(|()| self.collect(core, unread, max_out, now, visibility));
        // Whatever was leased is written before anything is returned.
        let w = self.write_events(core);
        let out = self.poison_on_err(core, r)?;
        w?;
        Ok(out)
    }

    /// Reads a record to deliver again. The rest of its batch is kept decoded, so
    /// redelivering a run of records of one batch (a hot key under `PerKey`, a burst
    /// of expiries) decodes the batch once, not once per record.
    fn read_again(&self, core: &mut Core, offset: Offset) -> Result<Option<StoredRecord>> {
        let cache = &mut core.reread;
        if let Ok(i) = cache.binary_search_by_key(&offset, |r| r.offset) {
            return Ok(Some(cache[i].clone()));
        }
        let found = self.log.read(offset)?;
        if found.is_some() {
            cache.clear();
            // Only a cache: any trouble filling it just leaves it short.
            let mut reader = self.log.reader(offset)?;
            if let Ok(Some(batch)) = reader.next_batch() {
                cache.extend(
                    batch
                        .records()
                        .map_while(|r| r.ok())
                        .map(|v| v.to_owned_record()),
                );
            }
        }
        Ok(found)
    }

    fn collect(
        &self,
        core: &mut Core,
        unread: &mut ReadAhead,
        (max, mut out): (usize, Vec<Delivery>),
        now: i64,
        visibility: std::time::Duration,
    ) -> Result<Vec<Delivery>> {
        let deadline = now.saturating_add(millis(visibility));
        // Expired leases and nacked records first.
        if self.collect_due(core, &mut out, max, now, deadline)? {
            return Ok(out);
        }
        // Then records never delivered, read in place from the log ahead of need.
        self.collect_unread(core, unread, &mut out, max, now, deadline)?;
        Ok(out)
    }

    /// Leases due records (expired leases, nacked records) into `out`, up to `max`,
    /// dead-lettering those out of deliveries and settling those gone or damaged.
    /// True when a recovered lease was delivered alone: the call returns it as is.
    fn collect_due(
        &self,
        core: &mut Core,
        out: &mut Vec<Delivery>,
        max: usize,
        now: i64,
        deadline: i64,
    ) -> Result<bool> {
        let cap = self.config.max_in_flight;
        while out.len() < max {
            let Some((offset, slot)) = core.state.pop_due(now) else {
                break;
            };
            if slot.state == SlotState::Waiting && core.state.leased() >= cap {
                // Put it back: it stays due.
                core.state
                    .set(offset, SlotState::Waiting, slot.attempt, slot.deadline);
                break;
            }
            // Without `max_deliveries` a record still stops at `u32::MAX` deliveries:
            // one more lease would need an attempt no receipt can carry.
            let limit = self.config.max_deliveries.unwrap_or(u32::MAX);
            if slot.attempt >= limit {
                self.dead_letter_exhausted(core, offset, slot.attempt)?;
                continue;
            }
            // A recovered lease goes alone: it may be the record that killed the
            // process, and must not take its batch neighbours to `max_deliveries`
            // with it (issue 9, defect 11). Once a batch has started it waits for
            // the next call.
            let alone = slot.is_recovered();
            if alone && !out.is_empty() {
                core.state
                    .set(offset, SlotState::Waiting, slot.attempt, slot.deadline);
                break;
            }
            match self.read_again(core, offset) {
                // Settled without delivery: no lease, nothing that could kill the
                // process, so the batch goes on even after a recovered lease.
                Ok(Some(record))
                    if self.settle_undeliverable(core, &record, slot.attempt, now)? => {}
                Ok(Some(record)) => {
                    let attempt = slot.attempt + 1;
                    self.lease(core, offset, attempt, deadline);
                    self.remember_source(core, &record);
                    out.push(Delivery {
                        record,
                        receipt: Receipt { offset, attempt },
                        attempt,
                        deadline_ms: deadline,
                    });
                    if alone {
                        return Ok(true);
                    }
                }
                Ok(None) | Err(Error::OffsetOutOfRange { .. }) => {
                    let e = Event {
                        kind: Kind::Gone,
                        offset,
                        attempt: slot.attempt,
                        deadline: 0,
                    };
                    self.journal_settled(core, e);
                }
                Err(Error::Corrupt { .. }) => {
                    let e = Event {
                        kind: Kind::CorruptRange,
                        offset,
                        attempt: slot.attempt,
                        deadline: offset as i64 + 1,
                    };
                    self.journal_settled(core, e);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Dead-letters `offset`, delivered `attempt` times already: out of deliveries.
    /// A record that cannot be copied is never recorded as dead-lettered: gone
    /// legitimately (compacted away, below the start), it is settled as gone;
    /// damaged, or missing where nothing can be missing (see `letter_source`), it
    /// is settled as delivery settles a damaged record, counted in `corrupt_skipped`.
    fn dead_letter_exhausted(&self, core: &mut Core, offset: Offset, attempt: u32) -> Result<()> {
        let reason = dead_letter::REASON_MAX_DELIVERIES;
        let (kind, end) = match self.letter_source(offset) {
            Err(Error::Corrupt { .. }) => (Kind::CorruptRange, offset as i64 + 1),
            Err(e) => return Err(e),
            Ok(None) => (Kind::Gone, 0),
            Ok(Some(record)) => {
                let end = self.append_dead_letter(core, record, attempt, reason)?;
                (Kind::DeadLetter, end as i64)
            }
        };
        let e = Event {
            kind,
            offset,
            attempt,
            deadline: end,
        };
        self.journal_settled(core, e);
        Ok(())
    }

    /// Applies and journals `e`, which settles its record, then releases the record's
    /// key for the next of its key.
    fn journal_settled(&self, core: &mut Core, e: Event) {
        journal::apply(&mut core.state, e);
        core.events.push(e);
        self.finished(core, e.offset);
    }

    /// Leases records never delivered into `out`, up to `max` and the in-flight cap,
    /// holding back those blocked behind their key or delayed.
    fn collect_unread(
        &self,
        core: &mut Core,
        unread: &mut ReadAhead,
        out: &mut Vec<Delivery>,
        max: usize,
        now: i64,
        deadline: i64,
    ) -> Result<()> {
        let cap = self.config.max_in_flight;
        while out.len() < max && core.state.leased() < cap {
            let Some(item) = self.next_unread(unread)? else {
                break;
            };
            match item {
                Unread::Record(record) => {
                    let offset = record.offset;
                    if offset < core.state.next() {
                        continue;
                    }
                    // Blocked behind an earlier record of its key, or held back by a
                    // delay: waits (journaled, so it survives reopen), not delivered.
                    let hold = if core.per_key.as_mut().is_some_and(|pk| pk.admit(&record)) {
                        Some(BLOCKED)
                    } else {
                        delay_until(&record).filter(|&u| u > now)
                    };
                    if let Some(deadline) = hold {
                        let e = Event {
                            kind: Kind::Delay,
                            offset,
                            attempt: 0,
                            deadline,
                        };
                        journal::apply(&mut core.state, e);
                        core.events.push(e);
                        continue;
                    }
                    if self.settle_undeliverable(core, &record, 0, now)? {
                        continue;
                    }
                    self.lease(core, offset, 1, deadline);
                    self.remember_source(core, &record);
                    out.push(Delivery {
                        record,
                        receipt: Receipt { offset, attempt: 1 },
                        attempt: 1,
                        deadline_ms: deadline,
                    });
                }
                Unread::Corrupt(to) => {
                    let e = Event {
                        kind: Kind::CorruptRange,
                        offset: core.state.next(),
                        attempt: 0,
                        deadline: to as i64,
                    };
                    journal::apply(&mut core.state, e);
                    core.events.push(e);
                }
            }
        }
        Ok(())
    }
}
