//! The outcome feed of a queue (issue 13, item 3): with [`QueueConfig::outcomes`]
//! on, every record the queue settles gets exactly one outcome record in the log
//! `queues/<name>/outcomes/`, which producers follow with a cursor
//! ([`Queue::outcomes`](super::Queue::outcomes)).
//!
//! What settles a record, and its outcome (`outcome` header):
//! - `ack`, `ack_many`, `settle_into`: `acked`;
//! - `dead_letter`, `max_deliveries`, and an expired record while
//!   `dead_letter_expired` is on: `dead-lettered`, with `outcome.reason` = the
//!   letter's `dlq.reason` (`expired` for the expired ones);
//! - an expired record while `dead_letter_expired` is off: `expired`;
//! - `purge`: `purged`, for every record it settled.
//!
//! No outcome: tombstones settled without delivery (`deliver_tombstones` off; also
//! in a purge), records passed because they were gone or unreadable (retention,
//! compaction, corruption), and records the queue could not read at the time it
//! dead-lettered them (nothing to copy, no letter). A redriven record is a new
//! record at a new offset: its settlement gets its own outcome (so a producer may
//! see `dead-lettered`, then `acked` for the same `correlation.id`; the redriven
//! copy's outcome names the new offset).
//!
//! Crash safety: the queue state (snapshot) records the outcomes log's end it
//! accounts for (`AckState::outcome_end`), and:
//! - outcomes other than `acked` are appended and fsynced *before* the journal event
//!   that settles the record (as the dead letter is): the outcome is the evidence of
//!   the settlement, and at open an outcome past the accounted end whose record is
//!   not done rolls the settlement forward (`dead_letter::roll_forward`, shared with
//!   the dead-letter reconciliation). A dead letter found by the dead-letter
//!   reconciliation without its outcome (the process died between the two appends)
//!   gets its outcome then;
//! - `acked` outcomes are appended *after* the ack's journal event, without an
//!   fsync (an fsync per ack would cost the ack path its speed): the journal is the
//!   evidence, and at open every ack the current journal generation holds whose
//!   outcome is not in the log past the accounted end gets it then (filled in). An
//!   `acked` outcome that reached the disk without its journal event (a power loss)
//!   rolls the ack forward like the others.
//!
//! The accounted end only moves when a snapshot is written (open and journal
//! rotation), after the outcomes log was fsynced; the outcomes at or past it are
//! protected from the outcomes log's retention by its cursor [`ACCOUNTED_CURSOR`],
//! so that an outcome the reconciliation needs is never deleted before it.

use std::collections::HashMap;
use std::path::Path;

use super::dead_letter::{self, Evidence, Lettered};
use super::journal::Kind;
use super::state::AckState;
use crate::{Cursor, CursorConfig, Error, Log, Offset, RecordRef, Result, StoredRecord};

/// Header holding how the record ended: [`ACKED`], [`DEAD_LETTERED`], [`EXPIRED`] or
/// [`PURGED`].
pub const OUTCOME: &str = "outcome";
/// Header naming the record's offset in the queue's log (UTF-8 decimal).
pub const OUTCOME_OFFSET: &str = "outcome.offset";
/// Header counting the deliveries the record had (UTF-8 decimal; 0: never delivered).
pub const OUTCOME_ATTEMPTS: &str = "outcome.attempts";
/// Header saying why the record was dead-lettered (its `dlq.reason`).
pub const OUTCOME_REASON: &str = "outcome.reason";
/// Header holding the settled record's own timestamp (UTF-8 decimal milliseconds):
/// the outcome's timestamp is when it settled.
pub const OUTCOME_RECORD_TIMESTAMP: &str = "outcome.record_timestamp";
/// Header a producer sets on its records to find their outcomes: copied to the
/// outcome when present.
pub const CORRELATION_ID: &str = "correlation.id";
/// [`OUTCOME`] of an acked record.
pub const ACKED: &str = "acked";
/// [`OUTCOME`] of a dead-lettered record.
pub const DEAD_LETTERED: &str = "dead-lettered";
/// [`OUTCOME`] of a record found expired and settled without a dead letter.
pub const EXPIRED: &str = "expired";
/// [`OUTCOME`] of a record settled by [`Queue::purge`](super::Queue::purge).
pub const PURGED: &str = "purged";

/// Cursor of the outcomes log at the end the queue state accounts for: it protects
/// what the reconciliation at open still needs from retention.
pub(crate) const ACCOUNTED_CURSOR: &str = "accounted";

/// Outcomes appended in one batch (purge, fill-in at open): bounds the memory.
pub(crate) const BATCH: usize = 256;

/// How a record ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Acked,
    DeadLettered,
    Expired,
    Purged,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Acked => ACKED,
            Outcome::DeadLettered => DEAD_LETTERED,
            Outcome::Expired => EXPIRED,
            Outcome::Purged => PURGED,
        }
    }

    fn parse(b: &[u8]) -> Option<Outcome> {
        [
            Outcome::Acked,
            Outcome::DeadLettered,
            Outcome::Expired,
            Outcome::Purged,
        ]
        .into_iter()
        .find(|o| o.name().as_bytes() == b)
    }

    /// The journal event that settles a record this way.
    fn event_kind(self) -> Kind {
        match self {
            Outcome::Acked => Kind::Ack,
            Outcome::DeadLettered => Kind::DeadLetter,
            Outcome::Expired | Outcome::Purged => Kind::Gone,
        }
    }
}

/// Opens the outcomes log in `dir` (as the dead-letter log: the parent's file
/// system and clock, flushed by the queue, retention applied by the queue).
pub(crate) fn open(
    parent: &Log,
    dir: &Path,
    retention: Option<std::time::Duration>,
) -> Result<Log> {
    dead_letter::open(parent, dir, retention)
}

/// What an outcome copies from its record. Kept from the delivery (see
/// `QueueInner::remember_source`), so that an ack needs no read of the log: reading
/// one record back costs a decode of its whole batch.
#[derive(Clone, Debug)]
pub(crate) struct Source {
    key: Option<Vec<u8>>,
    correlation: Option<Vec<u8>>,
    timestamp: i64,
}

impl Source {
    pub fn of(r: &StoredRecord) -> Source {
        Source {
            key: r.key.clone(),
            correlation: r.header(CORRELATION_ID).map(<[u8]>::to_vec),
            timestamp: r.timestamp,
        }
    }
}

/// One outcome to append: of the record at `offset`, key and `correlation.id` from
/// `source` (the record, when it could be read).
#[derive(Debug)]
pub(crate) struct Item<'a> {
    pub outcome: Outcome,
    pub offset: Offset,
    pub attempts: u32,
    pub reason: Option<&'a str>,
    pub source: Option<Source>,
}

/// Appends `items` as one batch of outcome records with timestamp `now`. Built as
/// borrowed records: a handful of allocations per call, none per header (this is
/// on the ack path).
pub(crate) fn append_items(out: &Log, items: &[Item<'_>], now: i64) -> Result<()> {
    use std::io::Write;
    if items.is_empty() {
        return Ok(());
    }
    // The decimal numbers, three per item, in one buffer.
    let mut digits: Vec<u8> = Vec::with_capacity(items.len() * 48);
    let mut spans = Vec::with_capacity(items.len() * 3);
    for it in items {
        let ts = it.source.as_ref().map_or(0, |s| s.timestamp);
        let start = digits.len();
        write!(digits, "{}", it.offset).expect("writing to a Vec");
        let (offset, start) = (start..digits.len(), digits.len());
        write!(digits, "{}", it.attempts).expect("writing to a Vec");
        let (attempts, start) = (start..digits.len(), digits.len());
        write!(digits, "{ts}").expect("writing to a Vec");
        spans.extend([offset, attempts, start..digits.len()]);
    }
    let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(items.len() * 6);
    let mut bounds = Vec::with_capacity(items.len());
    for (it, n) in items.iter().zip(spans.chunks_exact(3)) {
        let start = headers.len();
        headers.push((OUTCOME, it.outcome.name().as_bytes()));
        headers.push((OUTCOME_OFFSET, &digits[n[0].clone()]));
        headers.push((OUTCOME_ATTEMPTS, &digits[n[1].clone()]));
        if let Some(reason) = it.reason {
            headers.push((OUTCOME_REASON, reason.as_bytes()));
        }
        if let Some(s) = &it.source {
            headers.push((OUTCOME_RECORD_TIMESTAMP, &digits[n[2].clone()]));
            if let Some(id) = &s.correlation {
                headers.push((CORRELATION_ID, id));
            }
        }
        bounds.push(start..headers.len());
    }
    let records: Vec<RecordRef<'_>> = items
        .iter()
        .zip(bounds)
        .map(|(it, b)| RecordRef {
            key: it.source.as_ref().and_then(|s| s.key.as_deref()),
            value: None,
            headers: &headers[b],
            timestamp: Some(now),
        })
        .collect();
    out.append_batch_ref(&records).map(|_| ())
}

/// The source of the record at `offset` of `log`, read back (`None`: unreadable).
pub(crate) fn read_source(log: &Log, offset: Offset) -> Option<Source> {
    log.read(offset).ok().flatten().as_ref().map(Source::of)
}

/// The UTF-8 decimal value of header `name` of `r`.
fn number(r: &StoredRecord, name: &str) -> Option<u64> {
    std::str::from_utf8(r.header(name)?).ok()?.parse().ok()
}

/// False when `stored` (the record now at the outcome's offset) is not the one the
/// outcome is about (key or timestamp differ).
fn same_source(stored: &StoredRecord, outcome: &StoredRecord) -> bool {
    stored.key == outcome.key
        && number(outcome, OUTCOME_RECORD_TIMESTAMP).is_none_or(|t| t as i64 == stored.timestamp)
}

fn corrupt(outcomes: &Log, at: Option<Offset>, why: String) -> Error {
    Error::corrupt(outcomes.dir(), 0, at, why)
}

/// Reconciles the queue state with the outcomes log at open; `state.outcome_end`
/// is `Some` (the state accounts for this log). `acks` are the acks the journal
/// replay applied, `letters` the records the dead-letter reconciliation marked.
///
/// 1. The state accounting for more outcomes than the log holds: durable outcomes
///    are gone, `Error::Corrupt` naming the outcomes log.
/// 2. Every outcome at or past the accounted end rolls its settlement forward
///    (unless its record is done already: see [`dead_letter::roll_forward`]). One
///    that is not an outcome (no `outcome` or `outcome.offset` header) is `Corrupt`.
/// 3. Every ack and dead letter of step 0 without an outcome there gets one.
///
/// Memory: the acks and letters (at most one per journal event), never the outcomes
/// log; the fill-in is appended [`BATCH`] outcomes at a time. Returns how many
/// outcomes were filled in.
pub(crate) fn reconcile(
    log: &Log,
    outcomes: &Log,
    state: &mut AckState,
    acks: &[(Offset, u32)],
    letters: &[Lettered],
) -> Result<u64> {
    let end = outcomes.end_offset();
    let accounted = state.outcome_end.unwrap_or(end);
    if accounted > end {
        return Err(corrupt(
            outcomes,
            Some(end),
            format!(
                "the queue state accounts for outcomes up to offset {accounted} but the \
                 outcomes log ends at {end}: durable outcomes are missing"
            ),
        ));
    }
    // What may lack its outcome: offset -> (attempts, reason).
    let mut wanted: HashMap<Offset, (u32, Option<&str>)> = HashMap::new();
    for &(offset, attempt) in acks.iter().filter(|(o, _)| *o < state.next()) {
        wanted.insert(offset, (attempt, None));
    }
    for l in letters {
        wanted.insert(l.offset, (l.attempts, Some(l.reason.as_str())));
    }
    for r in outcomes.reader(accounted.max(outcomes.start_offset()))? {
        let r = r?;
        let (Some(outcome), Some(offset)) = (
            r.header(OUTCOME).and_then(Outcome::parse),
            number(&r, OUTCOME_OFFSET),
        ) else {
            let why = "a record without valid outcome and outcome.offset headers".to_string();
            return Err(corrupt(outcomes, Some(r.offset), why));
        };
        wanted.remove(&offset);
        let evidence = Evidence {
            offset,
            kind: outcome.event_kind(),
            attempts: number(&r, OUTCOME_ATTEMPTS)
                .and_then(|a| u32::try_from(a).ok())
                .unwrap_or(0),
        };
        dead_letter::roll_forward(log, state, evidence, |stored| same_source(stored, &r));
    }
    // In the order the settlements happened (acks, then the letters found at open).
    let mut missing: Vec<(Offset, u32, Option<&str>)> = acks
        .iter()
        .filter_map(|&(o, _)| wanted.remove(&o).map(|(a, why)| (o, a, why)))
        .collect();
    missing.extend(
        letters
            .iter()
            .filter_map(|l| wanted.remove(&l.offset).map(|(a, why)| (l.offset, a, why))),
    );
    let now = log.config().clock.now_ms();
    for chunk in missing.chunks(BATCH) {
        let batch: Vec<Item<'_>> = chunk
            .iter()
            .map(|&(offset, attempts, reason)| Item {
                outcome: match reason {
                    Some(_) => Outcome::DeadLettered,
                    None => Outcome::Acked,
                },
                offset,
                attempts,
                reason,
                source: read_source(log, offset),
            })
            .collect();
        append_items(outcomes, &batch, now)?;
    }
    outcomes.flush()?;
    state.outcome_end = Some(outcomes.end_offset());
    Ok(missing.len() as u64)
}

/// At [`Queue::open`](super::Queue::open), before the state is read: the outcomes
/// log in `dir` when the directory exists (not created here: a state that accounts
/// for a log whose directory is gone must fail, see [`at_open`]).
pub(crate) fn open_existing(
    parent: &Log,
    dir: &Path,
    retention: Option<std::time::Duration>,
) -> Result<Option<Log>> {
    if !parent.config().fs.exists(dir) {
        return Ok(None);
    }
    open(parent, dir, retention).map(Some)
}

/// At [`Queue::open`](super::Queue::open), after the dead-letter reconciliation:
/// reconciles the outcomes log the state accounts for (a directory that is gone is
/// `Corrupt`: its durable outcomes are lost), then returns the log to keep when the
/// feed is `on` (created when new; the feed starts at its end) with
/// `state.outcome_end` set, or closes it and clears the field when the feed is off
/// (a feed turned off is reconciled one last time; settlements while it is off get
/// no outcome, and turning it on again continues the log from its end).
pub(crate) fn at_open(
    log: &Log,
    dir: &Path,
    (on, retention): (bool, Option<std::time::Duration>),
    existing: Option<Log>,
    state: &mut AckState,
    (acks, letters): (&[(Offset, u32)], &[Lettered]),
) -> Result<Option<Log>> {
    if state.outcome_end.is_some() {
        let Some(outcomes) = &existing else {
            return Err(Error::corrupt(
                dir,
                0,
                None,
                "the queue state accounts for an outcomes log, but its directory is missing: \
                 its durable outcomes are gone",
            ));
        };
        reconcile(log, outcomes, state, acks, letters)?;
    }
    if !on {
        state.outcome_end = None;
        if let Some(outcomes) = existing {
            outcomes.close()?;
        }
        return Ok(None);
    }
    let outcomes = match existing {
        Some(o) => o,
        None => open(log, dir, retention)?,
    };
    state.outcome_end = Some(outcomes.end_offset());
    Ok(Some(outcomes))
}

/// After the snapshot `Queue::open` wrote: the outcomes log's [`ACCOUNTED_CURSOR`]
/// at the end the state accounts for (created if missing), so that retention keeps
/// what the next open may need.
pub(crate) fn attach_accounted(outcomes: Option<&Log>, state: &AckState) -> Result<Option<Cursor>> {
    let (Some(o), Some(end)) = (outcomes, state.outcome_end) else {
        return Ok(None);
    };
    let c = o.cursor(ACCOUNTED_CURSOR, CursorConfig::default())?;
    if c.position() != end {
        c.commit(end)?;
    }
    Ok(Some(c))
}

impl super::Queue {
    /// The outcome feed (`queues/<name>/outcomes/`) when [`QueueConfig::outcomes`](super::QueueConfig::outcomes) is
    /// on: one record per settled record, with the headers [`OUTCOME`] (`acked`,
    /// `dead-lettered`, `expired` or `purged`), [`OUTCOME_OFFSET`],
    /// [`OUTCOME_ATTEMPTS`], [`OUTCOME_REASON`] (dead letters),
    /// [`OUTCOME_RECORD_TIMESTAMP`] and the record's [`CORRELATION_ID`] when it has
    /// one; its key is the record's key, its timestamp when it settled. Exactly one
    /// outcome per settled record across crashes; what counts as settled is in
    /// `docs/queue.md` (the outcome feed). A producer follows it with a cursor.
    ///
    /// ```
    /// use std::time::Duration;
    /// use logqueue::{CursorConfig, Log, LogConfig, Queue, QueueConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let config = QueueConfig { outcomes: true, ..QueueConfig::default() };
    /// let q = Queue::open(&log, "mailer", config).unwrap();
    /// q.send(Record::keyed("order-1", "mail").with_header("correlation.id", "c-1")).unwrap();
    /// let d = q.receive(1, Duration::ZERO).unwrap().remove(0);
    /// q.ack(&d.receipt).unwrap();
    /// let feed = q.outcomes().unwrap();
    /// let follower = feed.cursor("business-system", CursorConfig::default()).unwrap();
    /// let mut reader = feed.reader(follower.position()).unwrap();
    /// let o = reader.next_blocking(Duration::from_secs(1)).unwrap().unwrap();
    /// assert_eq!(o.header("outcome"), Some(&b"acked"[..]));
    /// assert_eq!(o.header("correlation.id"), Some(&b"c-1"[..]));
    /// assert_eq!(o.key.as_deref(), Some(&b"order-1"[..]));
    /// follower.commit(o.offset + 1).unwrap();
    /// ```
    pub fn outcomes(&self) -> Option<Log> {
        self.inner.outcomes.clone()
    }
}

/// Why a queue whose outcomes append or fsync failed refuses every call: the outcome
/// may or may not be on disk, so only [`super::Queue::open`] can tell.
pub(crate) fn failure_message(dir: &Path, e: &Error) -> String {
    format!(
        "the outcomes log {} failed ({e}); the queue refuses every call until it is \
         reopened: Queue::open writes the outcomes the log lacks and counts an outcome \
         that reached the disk as its record's settlement (free space or fix the disk \
         first)",
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LogConfig, Record};

    fn sim_log(dir: &str) -> Log {
        let config = LogConfig {
            fs: std::sync::Arc::new(crate::sim::SimFs::new(0)),
            background: false,
            ..LogConfig::default()
        };
        Log::open(dir, config).unwrap()
    }

    /// Items become outcome records with every header, in order, one batch.
    #[test]
    fn items_are_appended_as_outcome_records() {
        let log = sim_log("/o");
        let source = Record::keyed("k", "v")
            .with_header(CORRELATION_ID, "c-1")
            .with_timestamp(42);
        log.append(source).unwrap();
        let stored = log.read(0).unwrap().unwrap();
        let items = [
            Item {
                outcome: Outcome::Acked,
                offset: 7,
                attempts: 2,
                reason: None,
                source: Some(Source::of(&stored)),
            },
            Item {
                outcome: Outcome::DeadLettered,
                offset: u64::MAX,
                attempts: 0,
                reason: Some("bad"),
                source: None,
            },
        ];
        append_items(&log, &items, 99).unwrap();
        let a = log.read(1).unwrap().unwrap();
        let b = log.read(2).unwrap().unwrap();
        let h = |r: &StoredRecord, k: &str| r.header(k).map(<[u8]>::to_vec);
        assert_eq!((a.key.as_deref(), a.timestamp), (Some(&b"k"[..]), 99));
        assert_eq!(h(&a, OUTCOME), Some(b"acked".to_vec()));
        assert_eq!(h(&a, OUTCOME_OFFSET), Some(b"7".to_vec()));
        assert_eq!(h(&a, OUTCOME_ATTEMPTS), Some(b"2".to_vec()));
        assert_eq!(h(&a, OUTCOME_REASON), None);
        assert_eq!(h(&a, OUTCOME_RECORD_TIMESTAMP), Some(b"42".to_vec()));
        assert_eq!(h(&a, CORRELATION_ID), Some(b"c-1".to_vec()));
        assert!(same_source(&stored, &a));
        assert_eq!(b.key, None);
        assert_eq!(h(&b, OUTCOME), Some(b"dead-lettered".to_vec()));
        assert_eq!(
            h(&b, OUTCOME_OFFSET),
            Some(u64::MAX.to_string().into_bytes())
        );
        assert_eq!(h(&b, OUTCOME_REASON), Some(b"bad".to_vec()));
        assert_eq!(h(&b, CORRELATION_ID), None);
        for o in [
            Outcome::Acked,
            Outcome::DeadLettered,
            Outcome::Expired,
            Outcome::Purged,
        ] {
            assert_eq!(Outcome::parse(o.name().as_bytes()), Some(o));
        }
        assert_eq!(Outcome::parse(b"done"), None);
        append_items(&log, &[], 1).unwrap();
        assert_eq!(log.end_offset(), 3, "nothing appended for no items");
    }

    /// An outcome is about the record at its offset only if key and record
    /// timestamp match (an offset reused after a power loss holds another).
    #[test]
    fn same_source_compares_key_and_record_timestamp() {
        let log = sim_log("/o");
        log.append(Record::keyed("k", "v").with_timestamp(5))
            .unwrap();
        log.append(Record::keyed("k", "v").with_timestamp(6))
            .unwrap();
        log.append(Record::keyed("j", "v").with_timestamp(5))
            .unwrap();
        let r = |o| log.read(o).unwrap().unwrap();
        let item = |s: &StoredRecord| Item {
            outcome: Outcome::Acked,
            offset: 0,
            attempts: 1,
            reason: None,
            source: Some(Source::of(s)),
        };
        append_items(&log, &[item(&r(0))], 0).unwrap();
        let outcome = r(3);
        assert!(same_source(&r(0), &outcome));
        assert!(!same_source(&r(1), &outcome), "another timestamp");
        assert!(!same_source(&r(2), &outcome), "another key");
    }
}
