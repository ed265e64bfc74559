//! [`Queue`]: a named consumer group over a [`Log`] with per-message acks, visibility
//! timeouts, fenced receipts and a dead-letter log.
//!
//! State lives in `<log dir>/queues/<name>/`: a snapshot, a journal of fixed-size
//! events written through a memory map (see `journal.rs`; read back at open by
//! `replay.rs`, which also says when a queue directory is new), a log cursor
//! `queue.<name>` that lets the log's retention keep what the queue still needs while
//! it is closed (see `floors.rs`), the `redrive` intent file (see `redrive.rs`), the dead-letter log in
//! `dead-letter/`, reconciled with the state at open (see `dead_letter.rs`), with the
//! outcome feed on the outcomes log in `outcomes/` (see `outcomes.rs`,
//! `outcome_writes.rs`), and the lock file `queue.lock`. In memory: the ack floor, a 12-byte slot per offset between
//! the floor and the delivery cursor, and a deadline heap (see `state.rs`).
//!
//! A queue of several lanes ([`QueueConfig::lanes`]) is that many of the above over
//! one log, each owning every N-th block of offsets: lane 0 in the queue's directory,
//! lane `i` in `lane-<i>/` with a snapshot, journal and cursor of its own, all
//! sharing lane 0's lock and dead-letter log (see `lanes.rs`). A `QueueInner` is one
//! lane; lane 0's holds the others and routes every call.

mod config;
mod dead_letter;
mod deliver;
mod floors;
mod housekeeping;
mod inner;
mod inspect;
mod journal;
mod lanes;
mod lifecycle;
mod many;
mod open;
mod outcome_writes;
mod outcomes;
mod peek;
mod per_key;
mod read_ahead;
mod redrive;
mod repair;
mod replay;
mod settle;
mod state;
mod synced;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use config::{
    Delivery, Ordering, QueueConfig, QueueStats, Receipt, ReceiveOptions, StartPosition,
};
pub use dead_letter::{DLQ_ATTEMPTS, DLQ_KEY_RELEASED, DLQ_OFFSET, DLQ_QUEUE, DLQ_REASON};
pub use outcomes::{
    ACKED, CORRELATION_ID, DEAD_LETTERED, EXPIRED, OUTCOME, OUTCOME_ATTEMPTS, OUTCOME_OFFSET,
    OUTCOME_REASON, OUTCOME_RECORD_TIMESTAMP, PURGED,
};
pub use redrive::REDRIVE_FROM;
pub use repair::RepairReport;

/// Header holding the clock time (milliseconds, UTF-8 decimal) before which no queue
/// delivers the record; set by [`Queue::send_delayed`].
pub const DELAY_UNTIL: &str = "delay.until";
pub use crate::record::EXPIRES_AT;
pub(crate) use floors::migrate_floors;
use journal::{Event, Journal, Kind};
use read_ahead::{ReadAhead, Refill, Unread};
pub(crate) use replay::LOCK_FILE;
use state::{AckState, SlotState};

use crate::{Error, Log, Offset, Record, Result, StoredRecord};

/// A named consumer group over one [`Log`]: each record goes to one receiver at a
/// time, is invisible while leased, and is delivered again when its lease expires
/// unless acked. Cheap to clone (clones share one open queue); `Send + Sync`.
///
/// ```
/// use std::time::Duration;
/// use logqueue::{Log, LogConfig, Queue, QueueConfig, Record};
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
/// let queue = Queue::open(&log, "workers", QueueConfig::default()).unwrap();
/// queue.send(Record::new("job 1")).unwrap();
/// let got = queue.receive(10, Duration::from_millis(100)).unwrap();
/// assert_eq!(got.len(), 1);
/// assert_eq!(got[0].record.value.as_deref(), Some(&b"job 1"[..]));
/// queue.ack(&got[0].receipt).unwrap();
/// assert!(queue.ack(&got[0].receipt).is_err()); // a receipt works once
/// queue.flush().unwrap();
/// assert_eq!(queue.stats().ack_floor, 1);
/// ```
#[derive(Clone, Debug)]
pub struct Queue {
    inner: Arc<QueueInner>,
}

#[derive(Debug)]
struct QueueInner {
    /// The queue's lock file, held until [`Queue::close`] (or the last clone drops).
    lock: Mutex<Option<QueueLock>>,
    /// Set by [`Queue::close`], under the core lock: every call then is `Closed`.
    closed: std::sync::atomic::AtomicBool,
    log: Log,
    name: String,
    config: QueueConfig,
    dlq: Log,
    /// The outcomes log, when [`QueueConfig::outcomes`] is on (see `outcomes.rs`).
    outcomes: Option<Log>,
    /// Lock order: `reader`, then `unread`, then `core`; under `unread` or `core`
    /// the reader is only ever `try_lock`ed (see `read_ahead.rs`). Each on cache
    /// lines of its own, so that taking one lock does not move the line of another
    /// lock or of the fields next to it between cores (false sharing; its effect
    /// alone was within the noise of the shared machine; see docs/queue.md,
    /// "Locking").
    reader: Padded<Mutex<Refill>>,
    unread: Padded<Mutex<ReadAhead>>,
    core: Padded<Mutex<Core>>,
    /// Bumped when a lease ends, to wake receivers blocked by `max_in_flight`.
    released: AtomicU64,
    /// Serialises [`Queue::redrive`].
    redriving: Mutex<()>,
    /// The offsets this lane owns (see `lanes.rs`).
    lane: lanes::Lane,
    /// Lanes 1.. of the queue, held by lane 0 (empty for them and for a queue of
    /// one lane).
    others: Vec<Arc<QueueInner>>,
    /// Threads that have received from the queue (lane 0's), numbered in that
    /// order to pick their lanes (see `lanes::thread_lane`).
    receivers: std::sync::atomic::AtomicUsize,
    /// The thread that last took records from this lane, and when.
    taker: Padded<lanes::Taker>,
}

/// Directory of the dead-letter log inside the queue's directory.
const DEAD_LETTER_DIR: &str = "dead-letter";
/// Directory of the outcomes log inside the queue's directory.
const OUTCOMES_DIR: &str = "outcomes";

/// A held lock on `queues/<name>/queue.lock`.
struct QueueLock(#[allow(dead_code)] Box<dyn std::any::Any + Send + Sync>);

impl std::fmt::Debug for QueueLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueueLock")
    }
}

/// Takes the lock of the queue in `dir`: [`Error::Locked`] when the queue is open
/// (in this process or another).
fn lock_queue(fs: &dyn crate::fs::FileSystem, dir: &Path) -> Result<QueueLock> {
    let path = dir.join(LOCK_FILE);
    let lock = fs
        .try_lock(&path)
        .map_err(|e| Error::io("lock queue", &path, e))?
        .ok_or(Error::Locked { path })?;
    Ok(QueueLock(lock))
}

/// `T` alone on its cache lines (128 bytes: two lines, as the adjacent-line
/// prefetcher fetches them in pairs), so that writes to it do not move the lines of
/// its neighbours between cores.
#[derive(Debug)]
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

#[derive(Debug)]
struct Core {
    state: AckState,
    journal: Journal,
    per_key: Option<per_key::PerKey>,
    /// Decoded records of the batch last read for a redelivery.
    reread: Vec<StoredRecord>,
    events: Vec<Event>,
    dir: PathBuf,
    poisoned: Option<String>,
    /// The log cursor holding the queue's floor for retention (see `floors.rs`).
    floor_cursor: crate::Cursor,
    /// The outcomes log's cursor at the end the state accounts for (see `outcomes.rs`).
    outcomes_cursor: Option<crate::Cursor>,
    /// What the outcomes of leased records copy from them, by offset (feed on only).
    sources: std::collections::HashMap<Offset, outcomes::Source>,
    /// Offset and timestamp of the record last read for `oldest_unacked_age_ms`.
    oldest: Option<(Offset, i64)>,
    /// Counters kept in memory since open.
    counts: Counts,
}

/// [`QueueStats`] counters kept in memory only, since the queue was opened.
#[derive(Debug, Default)]
struct Counts {
    tombstones_skipped: u64,
    expired: u64,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl Queue {
    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Appends a record to the log (the same as [`Log::append`]); every queue of the
    /// log will deliver it.
    pub fn send(&self, record: Record) -> Result<Offset> {
        self.inner.log.append(record)
    }

    /// Appends a record that no queue of the log delivers before now + `delay`: it
    /// gets the header [`DELAY_UNTIL`] (clock milliseconds, UTF-8 decimal), which
    /// producers appending through [`Log`] directly can set themselves.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use logqueue::{Log, LogConfig, ManualClock, Queue, QueueConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let clock = ManualClock::new(0);
    /// let config = LogConfig { clock: Arc::new(clock.clone()), ..LogConfig::default() };
    /// let log = Log::open(dir.path(), config).unwrap();
    /// let q = Queue::open(&log, "jobs", QueueConfig::default()).unwrap();
    /// q.send_delayed(Record::new("later"), Duration::from_secs(60)).unwrap();
    /// assert!(q.receive(1, Duration::ZERO).unwrap().is_empty());
    /// assert_eq!(q.stats().delayed, 1);
    /// clock.advance(Duration::from_secs(60));
    /// assert_eq!(q.receive(1, Duration::ZERO).unwrap().len(), 1);
    /// ```
    pub fn send_delayed(&self, record: Record, delay: Duration) -> Result<Offset> {
        let until = self
            .inner
            .log
            .config()
            .clock
            .now_ms()
            .saturating_add(millis(delay));
        self.inner
            .log
            .append(record.with_header(DELAY_UNTIL, until.to_string()))
    }

    /// Hands out up to `max` records, waiting up to `wait` for at least one (woken
    /// by appends, not by polling). Records whose lease expired come first, with
    /// `attempt + 1`; a record already delivered `max_deliveries` times (`u32::MAX`
    /// when `None`) goes to the dead-letter log instead. A lease recovered after a
    /// crash comes alone, in a batch of its own. The leases are written to the OS
    /// before this returns. With several consumers, a call can return fewer than
    /// `max` records while more are in the log (another consumer was decoding
    /// them); it returns none only when none could be delivered.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use logqueue::{Log, LogConfig, ManualClock, Queue, QueueConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let clock = ManualClock::new(0);
    /// let config = LogConfig { clock: Arc::new(clock.clone()), ..LogConfig::default() };
    /// let log = Log::open(dir.path(), config).unwrap();
    /// let q = Queue::open(&log, "jobs", QueueConfig::default()).unwrap();
    /// q.send(Record::new("job")).unwrap();
    /// let first = q.receive(1, Duration::ZERO).unwrap();
    /// assert_eq!(first[0].attempt, 1);
    /// // Not acked within the visibility timeout (30 s): delivered again.
    /// clock.advance(Duration::from_secs(30));
    /// let again = q.receive(1, Duration::ZERO).unwrap();
    /// assert_eq!(again[0].attempt, 2);
    /// // The first receipt is fenced off.
    /// assert!(q.ack(&first[0].receipt).is_err());
    /// q.ack(&again[0].receipt).unwrap();
    /// ```
    pub fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        self.receive_with(max, wait, &ReceiveOptions::default())
    }

    /// [`Queue::receive`] with per-call options: `options.visibility_timeout` leases
    /// the records of this call for that long instead of the queue's
    /// [`QueueConfig::visibility_timeout`] (a worker that knows its jobs are long).
    /// A timeout below 1 ms or beyond [`QueueConfig::max_visibility`] is
    /// [`Error::InvalidArgument`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use logqueue::{Log, LogConfig, ManualClock, Queue, QueueConfig, ReceiveOptions, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let clock = ManualClock::new(0);
    /// let config = LogConfig { clock: Arc::new(clock.clone()), ..LogConfig::default() };
    /// let log = Log::open(dir.path(), config).unwrap();
    /// let q = Queue::open(&log, "jobs", QueueConfig::default()).unwrap();
    /// q.send(Record::new("long job")).unwrap();
    /// let mut options = ReceiveOptions::default();
    /// options.visibility_timeout = Some(Duration::from_secs(600));
    /// let d = q.receive_with(1, Duration::ZERO, &options).unwrap();
    /// assert_eq!(d[0].deadline_ms, 600_000);
    /// ```
    pub fn receive_with(
        &self,
        max: usize,
        wait: Duration,
        options: &ReceiveOptions,
    ) -> Result<Vec<Delivery>> {
        let inner = &*self.inner;
        let visibility = match options.visibility_timeout {
            None => inner.config.visibility_timeout,
            Some(v) if v < Duration::from_millis(1) => {
                return Err(Error::InvalidArgument(format!(
                    "visibility_timeout {v:?} is below 1 ms"
                )))
            }
            Some(v) => {
                inner.check_visibility("visibility_timeout", v)?;
                v
            }
        };
        // Read only when there is a wait: a clock read is not free, and the common
        // call (records ready, or no wait) needs none.
        let mut until = None;
        let count = inner.lane.count as usize;
        // The caller's lane first, then the others (see `lanes.rs`).
        loop {
            // Before the locks: the time (one clock read less inside the critical
            // section).
            let now_ms = inner.log.config().clock.now_ms();
            let first = match options.lane {
                _ if count == 1 => (0, 0),
                pinned => {
                    let queue = (inner as *const QueueInner as usize, &inner.receivers);
                    let (lane, thread) = lanes::thread_lane(queue, count, now_ms);
                    (pinned.map_or(lane, |l| l as usize % count), thread)
                }
            };
            let released = inner.released_total();
            let round = inner.receive_lanes(first, max, now_ms, visibility)?;
            if !round.got.is_empty() {
                return Ok(round.got);
            }
            let (cursor, next_due) = (round.cursor, round.next_due);
            if round.dry {
                // The buffer ran dry while another consumer was refilling it: there
                // may be records; the next round waits for that refill.
                continue;
            }
            if max == 0 || wait.is_zero() {
                return Ok(Vec::new());
            }
            let now = Instant::now();
            let until = *until.get_or_insert(now + wait);
            if now >= until {
                return Ok(Vec::new());
            }
            let mut wake = until;
            if let Some(due) = next_due {
                let ms = due.saturating_sub(inner.log.config().clock.now_ms()).max(1);
                wake = wake.min(now + Duration::from_millis(ms as u64));
            }
            let log = &inner.log;
            log.inner.appended.wait_until(wake, || {
                log.inner.is_closed()
                    || inner.closed.load(AtomicOrdering::Acquire)
                    || inner.released_total() != released
                    || cursor.is_some_and(|c| log.end_offset() > c)
            });
            inner.check_open()?;
        }
    }

    /// Acknowledges a delivery: the record is done and never delivered again. Survives
    /// a crash of the process once this returns, power loss once flushed.
    pub fn ack(&self, receipt: &Receipt) -> Result<()> {
        let frame = journal::encode_one(Event {
            kind: Kind::Ack,
            offset: receipt.offset,
            attempt: receipt.attempt,
            deadline: 0,
        });
        self.inner
            .lane_of(receipt.offset)
            .settle_framed(receipt, Some(&frame), |_, _| Ok((Kind::Ack, 0)))
    }

    /// Gives a delivery back: the record is delivered again (with `attempt + 1`) once
    /// `delay` has passed. A zero `delay` means the [`QueueConfig::backoff`] delay for
    /// this attempt (none when the schedule is empty).
    ///
    /// A `delay` beyond [`QueueConfig::max_visibility`] is [`Error::InvalidArgument`]
    /// and changes nothing: the record would hold the ack floor (and so retention)
    /// that long.
    pub fn nack(&self, receipt: &Receipt, delay: Duration) -> Result<()> {
        self.inner.check_visibility("nack delay", delay)?;
        let lane = self.inner.lane_of(receipt.offset);
        lane.settle(receipt, |now, core| {
            let delay = if delay.is_zero() {
                core.state.backoff_ms(receipt.attempt)
            } else {
                millis(delay)
            };
            Ok((Kind::Nack, now().saturating_add(delay)))
        })
    }

    /// Moves the lease's deadline to now + `timeout`. A `timeout` beyond
    /// [`QueueConfig::max_visibility`] is [`Error::InvalidArgument`] and changes
    /// nothing (it used to be clamped silently).
    pub fn extend(&self, receipt: &Receipt, timeout: Duration) -> Result<()> {
        self.inner.check_visibility("extend timeout", timeout)?;
        let lane = self.inner.lane_of(receipt.offset);
        lane.settle(receipt, |now, _| {
            Ok((Kind::Extend, now().saturating_add(millis(timeout))))
        })
    }

    /// Appends the delivered record to the dead-letter log, then counts it as done.
    /// If the dead-letter append or fsync fails, the queue is poisoned (see
    /// [`Queue::poisoned`]) until reopened.
    /// The dead letter keeps the record's key, value, headers and timestamp, and gets
    /// the headers [`DLQ_OFFSET`] (`dlq.offset`, its offset in the log),
    /// [`DLQ_ATTEMPTS`] (`dlq.attempts`, deliveries so far), [`DLQ_QUEUE`]
    /// (`dlq.queue`, this queue's name), [`DLQ_REASON`] (`dlq.reason` = `reason`;
    /// `max_deliveries` when the queue dead-letters it itself) and, for a keyed record
    /// of an [`Ordering::PerKey`] queue, [`DLQ_KEY_RELEASED`] (`dlq.key_released` =
    /// `true`: the key moved on to its next record). Values are UTF-8.
    ///
    /// ```
    /// use std::time::Duration;
    /// use logqueue::{Log, LogConfig, Queue, QueueConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let q = Queue::open(&log, "jobs", QueueConfig::default()).unwrap();
    /// q.send(Record::new("bad")).unwrap();
    /// let d = q.receive(1, Duration::ZERO).unwrap();
    /// q.dead_letter(&d[0].receipt, "cannot parse").unwrap();
    /// let letter = q.dead_letters().read(0).unwrap().unwrap();
    /// assert_eq!(letter.header("dlq.reason"), Some(&b"cannot parse"[..]));
    /// assert_eq!(letter.header("dlq.offset"), Some(&b"0"[..]));
    /// ```
    ///
    /// A record that can no longer be copied is not dead-lettered silently: if
    /// compaction removed it since it was delivered, or retention deleted it, it is
    /// settled as gone (it had been superseded or expired; no letter, not counted
    /// as dead-lettered); if it reads as damaged, or as missing from a log that
    /// never compacts, the call returns the error ([`Error::Corrupt`]) and changes
    /// nothing: the lease stands, and delivery settles a damaged record as corrupt.
    pub fn dead_letter(&self, receipt: &Receipt, reason: &str) -> Result<()> {
        let inner = self.inner.lane_of(receipt.offset);
        inner.settle(receipt, |_, core| {
            Ok(match inner.letter_source(receipt.offset)? {
                Some(record) => {
                    let end = inner.append_dead_letter(core, record, receipt.attempt, reason)?;
                    // The event carries the dead-letter log's end it accounts for.
                    (Kind::DeadLetter, end as i64)
                }
                None => (Kind::Gone, 0),
            })
        })
    }

    /// The dead-letter log (`queues/<name>/dead-letter/`).
    pub fn dead_letters(&self) -> Log {
        self.inner.dlq.clone()
    }

    /// Why the queue refuses every call, if an earlier failure made its on-disk state
    /// unknown (a failed journal, log or dead-letter write or fsync); `None` when it
    /// is healthy. Every call then returns [`Error::QueuePoisoned`] with this reason;
    /// reopening the queue recovers (its open reconciles the files).
    pub fn poisoned(&self) -> Option<String> {
        self.inner
            .lanes()
            .find_map(|l| l.core.lock().poisoned.clone())
    }

    /// Counters and sizes. O(1) per lane, except that `oldest_unacked_age_ms` reads
    /// the record at the ack floor when the floor moved since the last call.
    pub fn stats(&self) -> QueueStats {
        let inner = &*self.inner;
        let mut lanes = inner.lanes().map(|l| l.lane_stats());
        let first = lanes.next().unwrap_or_default();
        lanes.fold(first, lanes::merge_stats)
    }

    /// Bytes of memory held by the in-memory ack state (slots and deadline heap).
    pub fn state_memory_bytes(&self) -> usize {
        self.inner
            .lanes()
            .map(|l| l.core.lock().state.memory_bytes())
            .sum()
    }

    /// Makes every ack, nack and lease so far durable: fsyncs the log (so the state
    /// never names a record that is not durable), the dead-letter log, then the state.
    pub fn flush(&self) -> Result<()> {
        let inner = &*self.inner;
        for lane in inner.lanes() {
            lane.flush_lane()?;
        }
        // Once every lane accounts for the letters so far (see `lanes.rs`).
        inner.dead_letter_retention()?;
        inner.outcome_retention()
    }
}

impl QueueInner {
    /// This lane's [`QueueStats`].
    fn lane_stats(&self) -> QueueStats {
        let mut core = self.core.lock();
        let end = self.log.end_offset();
        let oldest = self.oldest_timestamp(&mut core, end);
        let now = self.log.config().clock.now_ms();
        let counts = (core.counts.tombstones_skipped, core.counts.expired);
        state::stats(&core.state, end, oldest, now, counts)
    }

    /// [`Queue::flush`] of this lane's state.
    fn flush_lane(&self) -> Result<()> {
        let mut core = self.core.lock();
        self.check(&core)?;
        let r = self
            .log
            .flush()
            .and_then(|()| self.flush_dead_letters(&mut core))
            .and_then(|()| self.flush_outcomes(&mut core))
            .and_then(|()| core.journal.sync())
            .and_then(|()| self.write_floor(&mut core));
        self.poison_on_err(&mut core, r)
    }
}

#[cfg(test)]
mod tests;
