//! The dead-letter log of a queue: `queues/<name>/dead-letter/`, a [`Log`] opened with
//! the parent log's file system and clock, flushed by [`super::Queue::flush`].

use std::path::Path;

use super::journal::{self, Event, Kind};
use super::state::{AckState, SlotState};
use crate::config::{FlushPolicy, LogConfig};
use crate::{Error, Log, Offset, Record, Result, StoredRecord};

/// Header naming the offset the record had in the queue's log.
pub const DLQ_OFFSET: &str = "dlq.offset";
/// Header counting the deliveries the record had.
pub const DLQ_ATTEMPTS: &str = "dlq.attempts";
/// Header naming the queue.
pub const DLQ_QUEUE: &str = "dlq.queue";
/// Header saying why the record was dead-lettered.
pub const DLQ_REASON: &str = "dlq.reason";
/// Header set to `true` on the dead letter of a keyed record of an
/// [`Ordering::PerKey`](super::Ordering::PerKey) queue: the key moved on to its next
/// record, which the queue may deliver before this one is redriven.
pub const DLQ_KEY_RELEASED: &str = "dlq.key_released";

/// True for the headers a dead letter gets (removed again by redrive).
pub(crate) fn is_dlq_header(key: &str) -> bool {
    [
        DLQ_OFFSET,
        DLQ_ATTEMPTS,
        DLQ_QUEUE,
        DLQ_REASON,
        DLQ_KEY_RELEASED,
    ]
    .contains(&key)
}

/// Why a queue whose dead-letter append or fsync failed refuses every call: the
/// letter may or may not be on disk, so the record's state is unknown until
/// [`super::Queue::open`] reconciles the dead-letter log with the queue state.
pub(crate) fn failure_message(dir: &Path, e: &crate::Error) -> String {
    format!(
        "the dead-letter log {} failed ({e}); the queue refuses every call until it is \
         reopened: Queue::open counts a dead letter that reached the disk as done and \
         leaves the record deliverable otherwise (free space or fix the disk first)",
        dir.display()
    )
}

/// Reason given when `max_deliveries` ran out.
pub(crate) const REASON_MAX_DELIVERIES: &str = "max_deliveries";
/// Reason given when a record was found past its `expires.at` time.
pub(crate) const REASON_EXPIRED: &str = "expired";

/// Opens the dead-letter log in `dir`. `retention` is
/// [`QueueConfig::dead_letter_retention`](super::QueueConfig::dead_letter_retention):
/// no background thread runs it; the queue applies it when its state is durable.
pub(crate) fn open(
    parent: &Log,
    dir: &Path,
    retention: Option<std::time::Duration>,
) -> Result<Log> {
    let p = parent.config();
    let config = LogConfig {
        fs: p.fs.clone(),
        clock: p.clock.clone(),
        flush: FlushPolicy::Manual,
        background: false,
        retention_ms: retention,
        retention_bytes: None,
        segment_ms: None,
        segment_bytes: p.segment_bytes.min(64 << 20).max(p.max_batch_bytes.into()),
        max_batch_bytes: p.max_batch_bytes,
        ..LogConfig::default()
    };
    Log::open(dir, config)
}

/// The dead-letter copy of `record`: key, value, headers and timestamp kept, plus the
/// `dlq.*` headers ([`DLQ_KEY_RELEASED`] when `per_key` and the record has a key).
pub(crate) fn letter(
    record: StoredRecord,
    queue: &str,
    attempts: u32,
    reason: &str,
    per_key: bool,
) -> Record {
    let key_released = per_key && record.key.is_some();
    // A record dead-lettered again (after a redrive, or sent with `dlq.*` headers
    // of its own) keeps one header of each name: the new ones.
    let mut r = Record {
        key: record.key,
        value: record.value,
        headers: record
            .headers
            .into_iter()
            .filter(|h| !is_dlq_header(&h.key))
            .collect(),
        timestamp: Some(record.timestamp),
    };
    r = r
        .with_header(DLQ_OFFSET, record.offset.to_string())
        .with_header(DLQ_ATTEMPTS, attempts.to_string())
        .with_header(DLQ_QUEUE, queue)
        .with_header(DLQ_REASON, reason);
    if key_released {
        r = r.with_header(DLQ_KEY_RELEASED, "true");
    }
    r
}

/// The UTF-8 decimal value of header `name` of `r`.
fn number(r: &StoredRecord, name: &str) -> Option<u64> {
    std::str::from_utf8(r.header(name)?).ok()?.parse().ok()
}

/// A record the reconciliation at open found dead-lettered without the state
/// knowing (see [`reconcile`]): its outcome may be missing too (`outcomes.rs`).
#[derive(Debug)]
pub(crate) struct Lettered {
    pub offset: Offset,
    pub attempts: u32,
    pub reason: String,
}

/// Reconciles the queue state with the dead-letter log at open (issue 9, defect 3).
///
/// Dead-lettering spans two files: the letter is appended to the dead-letter log and
/// fsynced, then the journal says done. A process killed in between (or a power loss
/// after the fsync) leaves a letter the state does not know about. Every letter at or
/// past `state.dead_letter_end` (the end the state accounts for) is therefore read
/// here and its `dlq.offset` marked dead-lettered, unless already done: the record
/// ends dead-lettered, exactly once, and is never delivered (or dead-lettered) again.
/// A letter naming an offset at or past the log's end is skipped: that record was lost
/// from the log in a power loss and the offset may be reused by a new record; so is a
/// letter whose record differs from the one now at its offset (key, value, timestamp).
///
/// The state accounting for more letters than the log holds means letters that were
/// durable are gone: `Error::Corrupt` naming the dead-letter log. State from a
/// snapshot without the field accounts for the whole log (the behaviour before).
/// Returns the records marked.
pub(crate) fn reconcile(
    log: &Log,
    dlq: &Log,
    queue: &str,
    state: &mut AckState,
) -> Result<Vec<Lettered>> {
    let end = dlq.end_offset();
    let accounted = state.dead_letter_end.unwrap_or(end);
    if accounted > end {
        return Err(Error::corrupt(
            dlq.dir(),
            0,
            Some(end),
            format!(
                "the queue state accounts for dead letters up to offset {accounted} but the \
                 dead-letter log ends at {end}: durable dead letters are missing"
            ),
        ));
    }
    let mut marked = Vec::new();
    for r in dlq.reader(accounted.max(dlq.start_offset()))? {
        let r = r?;
        if r.header(DLQ_QUEUE) != Some(queue.as_bytes()) {
            continue;
        }
        let Some(offset) = number(&r, DLQ_OFFSET) else {
            continue;
        };
        // Every lane of the queue appends here; each reconciles its own offsets.
        if !state.lane.owns(offset) {
            continue;
        }
        let attempts = number(&r, DLQ_ATTEMPTS).and_then(|a| u32::try_from(a).ok());
        let evidence = Evidence {
            offset,
            kind: Kind::DeadLetter,
            attempts: attempts.unwrap_or(0),
        };
        if roll_forward(log, state, evidence, |stored| same_record(stored, &r)) {
            marked.push(Lettered {
                offset,
                attempts: state.slot(offset).map_or(evidence.attempts, |s| s.attempt),
                reason: String::from_utf8_lossy(r.header(DLQ_REASON).unwrap_or_default())
                    .into_owned(),
            });
        }
    }
    state.dead_letter_end = Some(end);
    Ok(marked)
}

/// A settlement found in a side log (a dead letter, an outcome) at open.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Evidence {
    pub offset: Offset,
    /// The event that settles it: `DeadLetter`, `Ack` or `Gone`.
    pub kind: Kind,
    /// Deliveries the side log says the record had (used when the state lost its
    /// lease).
    pub attempts: u32,
}

/// Marks `e.offset` settled in `state` as `e.kind` unless it is already done, below
/// the floor or at or past the log's end, or the record now at the offset is not
/// the one the evidence is about (`same` is false: the record was lost from the log
/// in a power loss and the offset reused). True when marked. Shared by the
/// dead-letter and outcomes reconciliations.
pub(crate) fn roll_forward(
    log: &Log,
    state: &mut AckState,
    e: Evidence,
    same: impl FnOnce(&StoredRecord) -> bool,
) -> bool {
    let offset = e.offset;
    if offset >= log.end_offset()
        || offset < state.floor
        || state
            .slot(offset)
            .is_some_and(|s| s.state == SlotState::Done)
    {
        return false;
    }
    // An unreadable record counts as the same: the side log then holds the only
    // trace of it.
    if let Ok(Some(stored)) = log.read(offset) {
        if !same(&stored) {
            return false;
        }
    }
    let attempt = match state.slot(offset) {
        Some(s) => s.attempt,
        None => {
            // Its lease was lost with the journal's tail (a power loss), or it was
            // never delivered (a purge): the records between the cursor and it were
            // never delivered, as far as the state knows, and must stay deliverable,
            // not be skipped.
            open_gap(log, state, offset);
            match e.kind {
                Kind::Ack => state.totals.acked += 1,
                Kind::DeadLetter => state.totals.dead_lettered += 1,
                _ => {}
            }
            e.attempts
        }
    };
    journal::apply(
        state,
        Event {
            kind: e.kind,
            offset,
            attempt,
            deadline: 0,
        },
    );
    true
}

/// False when `stored` (the record now at the letter's offset) is not the one
/// `letter` copied (key, value and timestamp differ).
fn same_record(stored: &StoredRecord, letter: &StoredRecord) -> bool {
    stored.key == letter.key && stored.value == letter.value && stored.timestamp == letter.timestamp
}

/// Puts the records in `[state.next(), to)` in the window as never delivered
/// (waiting, attempt 0, due at their `delay.until` or at once), so that marking `to`
/// done does not mark them done too. Offsets the log's reader passes over without an
/// error are not records (compaction removed them): they stay gaps, done, as when
/// delivery skips them, and cost no memory however many there are. From a read
/// error on, every offset is kept, due at once: delivery finds it gone or corrupt
/// and passes it as it would have.
pub(super) fn open_gap(log: &Log, state: &mut AckState, to: Offset) {
    let from = state.next();
    let mut due: Vec<(Offset, i64)> = Vec::new();
    // Where the reading stopped short of `to` on an error (or could not start).
    let mut unread_from = from;
    if let Ok(reader) = log.reader(from) {
        unread_from = to;
        for r in reader {
            match r {
                // The other lanes' records are gaps to this lane's state.
                Ok(r) if r.offset < to && !state.lane.owns(r.offset) => {}
                Ok(r) if r.offset < to => {
                    due.push((
                        r.offset,
                        super::deliver::delay_until(&r).unwrap_or(i64::MIN),
                    ));
                }
                Ok(_) => break,
                Err(_) => {
                    unread_from = due.last().map_or(from, |&(o, _)| o + 1);
                    break;
                }
            }
        }
    }
    for (o, at) in due {
        state.set(o, SlotState::Waiting, 0, at);
    }
    let lane = state.lane;
    for o in (unread_from.max(state.next())..to).filter(|&o| lane.owns(o)) {
        state.set(o, SlotState::Waiting, 0, i64::MIN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_record_compares_key_value_and_timestamp() {
        let fs = crate::sim::SimFs::new(0);
        let config = LogConfig {
            fs: std::sync::Arc::new(fs),
            background: false,
            ..LogConfig::default()
        };
        let log = Log::open("/log", config).unwrap();
        log.append(Record::keyed("k", "v").with_timestamp(7))
            .unwrap();
        let stored = log.read(0).unwrap().unwrap();
        let letter = |r: Record| StoredRecord {
            offset: 3,
            timestamp: r.timestamp.unwrap_or(7),
            key: r.key,
            value: r.value,
            headers: Vec::new(),
        };
        assert!(same_record(&stored, &stored));
        assert!(same_record(&stored, &letter(Record::keyed("k", "v"))));
        assert!(!same_record(&stored, &letter(Record::keyed("k", "w"))));
        assert!(!same_record(&stored, &letter(Record::keyed("j", "v"))));
        assert!(!same_record(
            &stored,
            &letter(Record::keyed("k", "v").with_timestamp(8))
        ));
        // Nothing readable at an offset: the evidence is the only copy, and counts.
        let mut state = AckState::new(0);
        let e = Evidence {
            offset: 0,
            kind: Kind::DeadLetter,
            attempts: 2,
        };
        assert!(!roll_forward(
            &log,
            &mut state,
            Evidence { offset: 5, ..e },
            |_| true
        ));
        assert!(!roll_forward(&log, &mut state, e, |_| false));
        assert!(roll_forward(&log, &mut state, e, |_| true));
        assert_eq!(state.totals.dead_lettered, 1);
        assert!(!roll_forward(&log, &mut state, e, |_| true), "done already");
    }

    /// Opening a gap across a compacted stretch keeps the records that are left
    /// deliverable and costs nothing for the offsets compaction removed.
    #[test]
    fn a_gap_opened_across_a_compacted_stretch_holds_only_the_records_left() {
        let fs = crate::sim::SimFs::new(0);
        let config = LogConfig {
            fs: std::sync::Arc::new(fs),
            background: false,
            segment_bytes: 64 << 10,
            cleanup: crate::CleanupPolicy::Compact,
            compaction: crate::CompactionConfig {
                min_cleanable_dirty_ratio: 0.0,
                ..crate::CompactionConfig::default()
            },
            ..LogConfig::default()
        };
        let log = Log::open("/log", config).unwrap();
        log.append(Record::keyed("a", "first")).unwrap();
        for _ in 0..100 {
            log.append_batch((0..1000).map(|_| Record::keyed("b", "v")).collect())
                .unwrap();
        }
        log.append_batch((0..10).map(|_| Record::keyed("c", "v")).collect())
            .unwrap();
        log.compact().unwrap();
        let left: Vec<Offset> = log.reader(1).unwrap().map(|r| r.unwrap().offset).collect();
        assert!(left[0] > 50_000 && left.len() < 20_000, "{}", left.len());
        let end = log.end_offset();
        let mut state = AckState::new(0);
        state.set(0, SlotState::Leased, 1, 10);
        open_gap(&log, &mut state, end - 1);
        let waiting: Vec<Offset> = state.pending().skip(1).map(|(o, _)| o).collect();
        assert_eq!(waiting, left[..left.len() - 1]);
        assert!(state
            .pending()
            .skip(1)
            .all(|(_, s)| s.state == SlotState::Waiting && s.attempt == 0));
        assert_eq!(state.slot(1).map(|s| s.state), Some(SlotState::Done));
        assert!(
            state.memory_bytes() < 1 << 20,
            "{} bytes",
            state.memory_bytes()
        );
    }
}
