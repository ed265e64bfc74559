//! [`Queue`]: a named consumer group over a [`Log`] with per-message acks, visibility
//! timeouts, fenced receipts and a dead-letter log.
//!
//! State lives in `<log dir>/queues/<name>/`: a snapshot, a journal of fixed-size
//! events written through a memory map (see `journal.rs`), and the dead-letter log
//! in `dead-letter/`. In memory: the ack floor, a 16-byte slot per offset between the
//! floor and the delivery cursor, and a deadline heap (see `state.rs`).

mod dead_letter;
mod journal;
mod state;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use dead_letter::{DLQ_ATTEMPTS, DLQ_OFFSET, DLQ_QUEUE, DLQ_REASON};
use journal::{Event, Journal, Kind};
use state::{AckState, SlotState};

use crate::reader::LogReader;
use crate::{Error, Log, Offset, Record, Result, StoredRecord};

/// Order in which a queue hands out records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Ordering {
    /// Any record may be delivered at any time (competing consumers in parallel).
    #[default]
    Unordered,
    /// At most one record per key in flight, each key in offset order. Not supported
    /// yet: [`Queue::open`] rejects it with [`Error::InvalidConfig`].
    PerKey,
}

/// Where a new queue starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StartPosition {
    /// At the log's start offset: every record still in the log is delivered.
    #[default]
    Earliest,
    /// At the log's end offset: only records appended after creation.
    Latest,
}

/// Configuration of a [`Queue`]. `Default` gives the values documented on each field.
///
/// ```
/// use std::time::Duration;
/// let config = logqueue::QueueConfig {
///     visibility_timeout: Duration::from_secs(5),
///     max_deliveries: Some(3),
///     ..Default::default()
/// };
/// assert_eq!(config.max_in_flight, 10_000);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// (30 s) How long a delivered record stays invisible to other receivers.
    pub visibility_timeout: Duration,
    /// (12 h) Cap for [`Queue::extend`].
    pub max_visibility: Duration,
    /// (`Some(5)`) Deliveries without an ack after which the record is dead-lettered.
    pub max_deliveries: Option<u32>,
    /// (empty) Delay before redelivery n. Not supported yet: must be empty.
    pub backoff: Vec<Duration>,
    /// (10 000) `receive` hands out no more leases than this.
    pub max_in_flight: usize,
    /// (Unordered) See [`Ordering`].
    pub ordering: Ordering,
    /// (Earliest) Used when the queue is created.
    pub start: StartPosition,
    /// (true) Time and size retention of the log never delete records at or above
    /// this open queue's ack floor.
    pub protect_unacked: bool,
    /// (64 MiB) Size of one state journal file; when full, a snapshot is written and
    /// a new journal started.
    pub journal_bytes: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            visibility_timeout: Duration::from_secs(30),
            max_visibility: Duration::from_secs(12 * 3600),
            max_deliveries: Some(5),
            backoff: Vec::new(),
            max_in_flight: 10_000,
            ordering: Ordering::Unordered,
            start: StartPosition::Earliest,
            protect_unacked: true,
            journal_bytes: 64 << 20,
        }
    }
}

impl QueueConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidConfig(m.to_string()));
        if self.visibility_timeout < Duration::from_millis(1) {
            return bad("visibility_timeout must be at least 1 ms");
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight must be at least 1");
        }
        if self.max_deliveries == Some(0) {
            return bad("max_deliveries must be at least 1");
        }
        if self.ordering != Ordering::Unordered {
            return bad("Ordering::PerKey is not supported yet");
        }
        if !self.backoff.is_empty() {
            return bad("backoff is not supported yet");
        }
        if !(4096..=1 << 40).contains(&self.journal_bytes) {
            return bad("journal_bytes must be between 4 KiB and 1 TiB");
        }
        Ok(())
    }
}

/// A fenced handle on one delivery: `(offset, attempt)`. Only the current lease's
/// receipt is accepted; any other is [`Error::StaleReceipt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// Offset of the record in the log.
    pub offset: Offset,
    /// Which delivery of the record this is (1 on the first).
    pub attempt: u32,
}

/// One record handed out by [`Queue::receive`].
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The record.
    pub record: StoredRecord,
    /// What to pass to [`Queue::ack`] and friends.
    pub receipt: Receipt,
    /// 1 on the first delivery.
    pub attempt: u32,
    /// When the lease ends (clock milliseconds) unless extended.
    pub deadline_ms: i64,
}

/// Counters and sizes of a queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Every offset below it is done (acked, dead-lettered or skipped).
    pub ack_floor: Offset,
    /// Leases out (including expired ones not yet handed out again).
    pub in_flight: u64,
    /// Records waiting for delivery: never delivered, nacked or recovered.
    pub backlog: u64,
    /// Records held back by a delay (always 0 until delayed delivery exists).
    pub delayed: u64,
    /// Acks so far (kept across reopen).
    pub acked_total: u64,
    /// Deliveries with attempt > 1 so far.
    pub redelivered_total: u64,
    /// Records appended to the dead-letter log so far.
    pub dead_lettered_total: u64,
    /// Records passed because they could not be read (corrupt).
    pub corrupt_skipped: u64,
}

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
    log: Log,
    name: String,
    config: QueueConfig,
    dlq: Log,
    core: Mutex<Core>,
    /// Mirror of the ack floor, for retention.
    floor: AtomicU64,
    /// Bumped when a lease ends, to wake receivers blocked by `max_in_flight`.
    released: AtomicU64,
}

/// Records read ahead of the delivery cursor.
const READ_AHEAD: usize = 256;

/// One item past the delivery cursor.
#[derive(Debug)]
enum Unread {
    Record(StoredRecord),
    /// Offsets from the cursor up to this one could not be read.
    Corrupt(Offset),
}

#[derive(Debug)]
struct Core {
    state: AckState,
    journal: Journal,
    reader: LogReader,
    ahead: std::collections::VecDeque<Unread>,
    events: Vec<Event>,
    dir: PathBuf,
    poisoned: Option<String>,
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

/// Creates `dir` and fsyncs the parents of every directory it had to create.
fn create_dirs(fs: &dyn crate::fs::FileSystem, dir: &Path) -> Result<()> {
    let mut created = Vec::new();
    let mut missing = Some(dir);
    while let Some(d) = missing.filter(|d| !d.as_os_str().is_empty() && !fs.exists(d)) {
        created.push(d);
        missing = d.parent();
    }
    fs.create_dir_all(dir)
        .map_err(|e| Error::io("create queue directory", dir, e))?;
    for d in created {
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs.sync_dir(parent)
                .map_err(|e| Error::io("sync directory", parent, e))?;
        }
    }
    Ok(())
}

impl Queue {
    /// Opens (creating if needed) the queue `name` over `log`, with its state in
    /// `<log dir>/queues/<name>/`. Names are ASCII letters, digits, `.`, `_`, `-`.
    /// Records that were leased when the queue was last open are deliverable again at
    /// once, their attempt counts kept. A queue already open is [`Error::Locked`].
    pub fn open(log: &Log, name: &str, config: QueueConfig) -> Result<Queue> {
        config.validate()?;
        if !valid_name(name) {
            return Err(Error::InvalidConfig(format!("bad queue name {name:?}")));
        }
        log.inner.check_open()?;
        let fs = Arc::clone(&log.config().fs);
        let dir = log.dir().join("queues").join(name);
        create_dirs(&*fs, &dir)?;
        // The dead-letter log's lock is the queue's lock.
        let dlq = dead_letter::open(log, &dir.join("dead-letter"))?;
        let live = log.start_offset()..log.end_offset();
        let (generation, mut state) = match Journal::load(&*fs, &dir, live) {
            Some((g, mut s)) => {
                s.recover_leases();
                (g, s)
            }
            None => {
                let floor = match config.start {
                    StartPosition::Earliest => log.start_offset(),
                    StartPosition::Latest => log.end_offset(),
                };
                (0, AckState::new(floor))
            }
        };
        state.clamp(log.start_offset(), log.end_offset());
        // The snapshot is fsynced: the log must be durable up to what it names.
        log.flush()?;
        let capacity = usize::try_from(config.journal_bytes)
            .map_err(|_| Error::InvalidConfig("journal_bytes too large".into()))?;
        let journal = Journal::create(Arc::clone(&fs), &dir, generation + 1, capacity, &state)?;
        let reader = log.reader(state.next())?;
        let floor = AtomicU64::new(state.floor);
        let inner = Arc::new(QueueInner {
            log: log.clone(),
            name: name.to_string(),
            dlq,
            core: Mutex::new(Core {
                state,
                journal,
                reader,
                ahead: std::collections::VecDeque::with_capacity(READ_AHEAD),
                events: Vec::with_capacity(256),
                dir,
                poisoned: None,
            }),
            floor,
            released: AtomicU64::new(0),
            config,
        });
        if inner.config.protect_unacked {
            let weak = Arc::downgrade(&inner);
            log.add_retention_floor(move || {
                weak.upgrade()
                    .map(|q| q.floor.load(AtomicOrdering::Acquire))
            });
        }
        Ok(Queue { inner })
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Appends a record to the log (the same as [`Log::append`]); every queue of the
    /// log will deliver it.
    pub fn send(&self, record: Record) -> Result<Offset> {
        self.inner.log.append(record)
    }

    /// Delayed delivery is not supported yet: always [`Error::InvalidConfig`], and
    /// nothing is appended.
    pub fn send_delayed(&self, record: Record, delay: Duration) -> Result<Offset> {
        let _ = (record, delay);
        Err(Error::InvalidConfig(
            "send_delayed is not supported yet".into(),
        ))
    }

    /// Hands out up to `max` records, waiting up to `wait` for at least one (woken
    /// by appends, not by polling). Records whose lease expired come first, with
    /// `attempt + 1`; a record already delivered `max_deliveries` times goes to the
    /// dead-letter log instead. The leases are written to the OS before this returns.
    pub fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let inner = &*self.inner;
        let until = Instant::now() + wait;
        loop {
            let released = inner.released.load(AtomicOrdering::SeqCst);
            let (got, cursor, at_cap, next_due) = {
                let mut core = inner.core.lock();
                let got = inner.try_receive(&mut core, max)?;
                let at_cap = core.state.leased() >= inner.config.max_in_flight;
                let due = core.state.next_deadline();
                (got, core.state.next(), at_cap, due)
            };
            if !got.is_empty() || max == 0 {
                return Ok(got);
            }
            let now = Instant::now();
            if now >= until {
                return Ok(got);
            }
            let mut wake = until;
            if let Some(due) = next_due {
                let ms = due.saturating_sub(inner.log.config().clock.now_ms()).max(1);
                wake = wake.min(now + Duration::from_millis(ms as u64));
            }
            let log = &inner.log;
            log.inner.appended.wait_until(wake, || {
                log.inner.is_closed()
                    || inner.released.load(AtomicOrdering::SeqCst) != released
                    || (!at_cap && log.end_offset() > cursor)
            });
            log.inner.check_open()?;
        }
    }

    /// Acknowledges a delivery: the record is done and never delivered again. Survives
    /// a crash of the process once this returns, power loss once flushed.
    pub fn ack(&self, receipt: &Receipt) -> Result<()> {
        self.inner.settle(receipt, |_, _| Ok((Kind::Ack, 0)))
    }

    /// Gives a delivery back: the record is delivered again (with `attempt + 1`) once
    /// `delay` has passed.
    pub fn nack(&self, receipt: &Receipt, delay: Duration) -> Result<()> {
        self.inner.settle(receipt, |now, _| {
            Ok((Kind::Nack, now().saturating_add(millis(delay))))
        })
    }

    /// Moves the lease's deadline to now + `timeout` (at most `max_visibility`).
    pub fn extend(&self, receipt: &Receipt, timeout: Duration) -> Result<()> {
        let timeout = timeout.min(self.inner.config.max_visibility);
        self.inner.settle(receipt, |now, _| {
            Ok((Kind::Extend, now().saturating_add(millis(timeout))))
        })
    }

    /// Appends the delivered record to the dead-letter log with `dlq.reason` =
    /// `reason`, then counts it as done.
    pub fn dead_letter(&self, receipt: &Receipt, reason: &str) -> Result<()> {
        let inner = &*self.inner;
        inner.settle(receipt, |_, core| {
            inner.append_dead_letter(core, receipt.offset, receipt.attempt, reason)?;
            Ok((Kind::DeadLetter, 0))
        })
    }

    /// The dead-letter log (`queues/<name>/dead-letter/`).
    pub fn dead_letters(&self) -> Log {
        self.inner.dlq.clone()
    }

    /// Moving dead letters back is not supported yet: always [`Error::InvalidConfig`].
    pub fn redrive(&self, max: usize) -> Result<usize> {
        let _ = max;
        Err(Error::InvalidConfig("redrive is not supported yet".into()))
    }

    /// Counters and sizes.
    pub fn stats(&self) -> QueueStats {
        let inner = &*self.inner;
        let core = inner.core.lock();
        let s = &core.state;
        let end = inner.log.end_offset();
        QueueStats {
            ack_floor: s.floor,
            in_flight: s.leased() as u64,
            backlog: end.saturating_sub(s.next()) + s.waiting() as u64,
            delayed: 0,
            acked_total: s.totals.acked,
            redelivered_total: s.totals.redelivered,
            dead_lettered_total: s.totals.dead_lettered,
            corrupt_skipped: s.totals.corrupt_skipped,
        }
    }

    /// Bytes of memory held by the in-memory ack state (slots and deadline heap).
    pub fn state_memory_bytes(&self) -> usize {
        self.inner.core.lock().state.memory_bytes()
    }

    /// Makes every ack, nack and lease so far durable: fsyncs the log (so the state
    /// never names a record that is not durable), the dead-letter log, then the state.
    pub fn flush(&self) -> Result<()> {
        let inner = &*self.inner;
        let mut core = inner.core.lock();
        inner.check(&core)?;
        let r = inner
            .log
            .flush()
            .and_then(|()| inner.dlq.flush())
            .and_then(|()| core.journal.sync());
        inner.poison_on_err(&mut core, r)
    }
}

impl QueueInner {
    fn check(&self, core: &Core) -> Result<()> {
        self.log.inner.check_open()?;
        match &core.poisoned {
            Some(reason) => Err(Error::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poison_on_err<T>(&self, core: &mut Core, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            if !matches!(e, Error::Closed) && core.poisoned.is_none() {
                core.poisoned = Some(e.to_string());
            }
        }
        r
    }

    /// Writes `core.events` as one or more frames, rotating the journal when full.
    fn write_events(&self, core: &mut Core) -> Result<()> {
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
        let r = self.poison_on_err(core, r);
        self.floor.store(core.state.floor, AtomicOrdering::Release);
        r
    }

    /// Snapshot of the current state and a new journal. The log (and dead-letter log)
    /// are made durable first: the snapshot never names a record that is not.
    fn rotate(&self, core: &mut Core) -> Result<()> {
        self.log.flush()?;
        self.dlq.flush()?;
        let generation = core.journal.generation() + 1;
        let fs = Arc::clone(core.journal.fs());
        let capacity = self.config.journal_bytes as usize;
        core.journal = Journal::create(fs, &core.dir, generation, capacity, &core.state)?;
        Ok(())
    }

    /// Checks `receipt` against the current lease, then runs `f` (which gives the
    /// event to record) and records it.
    fn settle(
        &self,
        receipt: &Receipt,
        f: impl FnOnce(&dyn Fn() -> i64, &mut Core) -> Result<(Kind, i64)>,
    ) -> Result<()> {
        let mut core = self.core.lock();
        self.check(&core)?;
        let current = core.state.slot(receipt.offset);
        if !current.is_some_and(|s| s.state == SlotState::Leased && s.attempt == receipt.attempt) {
            return Err(Error::StaleReceipt {
                offset: receipt.offset,
                attempt: receipt.attempt,
            });
        }
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
        core.events.push(event);
        self.write_events(&mut core)?;
        journal::apply(&mut core.state, event);
        if kind != Kind::Extend && was_at_cap {
            self.released.fetch_add(1, AtomicOrdering::SeqCst);
            drop(core);
            self.log.inner.appended.notify();
        }
        Ok(())
    }

    fn append_dead_letter(
        &self,
        core: &mut Core,
        offset: Offset,
        attempts: u32,
        reason: &str,
    ) -> Result<bool> {
        let _ = core;
        match self.log.read(offset) {
            Ok(Some(record)) => {
                let letter = dead_letter::letter(record, &self.name, attempts, reason);
                self.dlq.append(letter)?;
                // Durable before the journal says done: a journal write can outlive
                // an un-synced dead-letter append in a power loss.
                self.dlq.flush()?;
                Ok(true)
            }
            Ok(None) | Err(Error::OffsetOutOfRange { .. }) | Err(Error::Corrupt { .. }) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
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

    fn try_receive(&self, core: &mut Core, max: usize) -> Result<Vec<Delivery>> {
        self.check(core)?;
        let r = self.collect(core, max);
        // Whatever was leased is written before anything is returned.
        let w = self.write_events(core);
        let out = self.poison_on_err(core, r)?;
        w?;
        Ok(out)
    }

    /// The next record past the delivery cursor, from the read-ahead buffer, which is
    /// refilled from the log a few hundred records at a time (resuming a reader
    /// mid-batch costs a scan of the batch, so it is not done per record).
    fn next_unread(&self, core: &mut Core) -> Result<Option<Unread>> {
        if let Some(u) = core.ahead.pop_front() {
            return Ok(Some(u));
        }
        let Core { reader, ahead, .. } = core;
        let before = LogReader::position(reader);
        let r = reader.read_views(READ_AHEAD, |v| {
            ahead.push_back(Unread::Record(v.to_owned_record()))
        });
        match r {
            Ok(_) => {}
            Err(Error::Corrupt { .. }) => {
                let from = match ahead.back() {
                    Some(Unread::Record(r)) => r.offset + 1,
                    _ => before,
                };
                let mut to = LogReader::position(reader);
                if to <= from {
                    // Not moved past: skip the one record.
                    to = from + 1;
                    reader.seek(to)?;
                }
                ahead.push_back(Unread::Corrupt(to));
            }
            Err(e) => return Err(e),
        }
        Ok(ahead.pop_front())
    }

    fn collect(&self, core: &mut Core, max: usize) -> Result<Vec<Delivery>> {
        let now = self.log.config().clock.now_ms();
        let deadline = now.saturating_add(millis(self.config.visibility_timeout));
        let cap = self.config.max_in_flight;
        let mut out = Vec::with_capacity(max.min(1024));
        // Expired leases and nacked records first.
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
            if self
                .config
                .max_deliveries
                .is_some_and(|m| slot.attempt >= m)
            {
                let reason = dead_letter::REASON_MAX_DELIVERIES;
                let kind = if self.append_dead_letter(core, offset, slot.attempt, reason)? {
                    Kind::DeadLetter
                } else {
                    Kind::Gone
                };
                let e = Event {
                    kind,
                    offset,
                    attempt: slot.attempt,
                    deadline: 0,
                };
                journal::apply(&mut core.state, e);
                core.events.push(e);
                continue;
            }
            match self.log.read(offset) {
                Ok(Some(record)) => {
                    let attempt = slot.attempt + 1;
                    self.lease(core, offset, attempt, deadline);
                    out.push(Delivery {
                        record,
                        receipt: Receipt { offset, attempt },
                        attempt,
                        deadline_ms: deadline,
                    });
                }
                Ok(None) | Err(Error::OffsetOutOfRange { .. }) => {
                    let e = Event {
                        kind: Kind::Gone,
                        offset,
                        attempt: slot.attempt,
                        deadline: 0,
                    };
                    journal::apply(&mut core.state, e);
                    core.events.push(e);
                }
                Err(Error::Corrupt { .. }) => {
                    let e = Event {
                        kind: Kind::CorruptRange,
                        offset,
                        attempt: slot.attempt,
                        deadline: offset as i64 + 1,
                    };
                    journal::apply(&mut core.state, e);
                    core.events.push(e);
                }
                Err(e) => return Err(e),
            }
        }
        // Then records never delivered, read in place from the log ahead of need.
        while out.len() < max && core.state.leased() < cap {
            let Some(item) = self.next_unread(core)? else {
                break;
            };
            match item {
                Unread::Record(record) => {
                    let offset = record.offset;
                    if offset < core.state.next() {
                        continue;
                    }
                    self.lease(core, offset, 1, deadline);
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
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid_name("orders-1.v2_x"));
        for bad in ["", ".", "..", "a/b", "a b", "é"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn in_flight_memory_is_small() {
        // 12-byte slot + 16-byte heap entry; 120,000 leases fill most of the
        // power-of-two capacities the collections grow to.
        let mut s = AckState::new(0);
        for o in 0..120_000 {
            s.set(o, SlotState::Leased, 1, o as i64);
        }
        let per = s.memory_bytes() as f64 / 120_000.0;
        assert!(per <= 32.0, "{per} bytes per in-flight record");
    }
}
