//! The queue's public value types: configuration, receipts, deliveries, statistics.

use std::time::Duration;

use crate::{Error, Offset, Result, StoredRecord};

/// Order in which a queue hands out records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Ordering {
    /// Any record may be delivered at any time (competing consumers in parallel).
    #[default]
    Unordered,
    /// At most one record per key in flight, each key's records delivered in offset
    /// order (also after nack, timeout, reopen and crash); other keys keep flowing;
    /// keyless records are unordered. A dead-lettered record lets its key move on.
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

/// Configuration of a [`Queue`](super::Queue). `Default` gives the values documented on each field.
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
    /// (12 h) Cap for [`Queue::extend`](super::Queue::extend).
    pub max_visibility: Duration,
    /// (`Some(5)`) Deliveries without an ack after which the record is dead-lettered.
    pub max_deliveries: Option<u32>,
    /// (empty) Delay before redelivery n, after a lease of attempt n expired or was
    /// nacked with a zero delay: `backoff[min(n - 1, len - 1)]` (RocketMQ-style
    /// schedules). An explicit non-zero nack delay overrides it. Empty: none.
    pub backoff: Vec<Duration>,
    /// (10 000) `receive` hands out no more leases than this.
    pub max_in_flight: usize,
    /// (Unordered) See [`Ordering`].
    pub ordering: Ordering,
    /// (Earliest) Used when the queue is created.
    pub start: StartPosition,
    /// (true) Time and size retention of the log never delete records at or above
    /// this queue's ack floor, whether the queue is open or not: a closed queue
    /// protects from the floor it last persisted (at open, snapshot or
    /// [`Queue::flush`](super::Queue::flush)), which may be lower than its last ack.
    /// Deleting the queue's directory lifts it.
    pub protect_unacked: bool,
    /// (64 MiB) Size of one state journal file; when full, a snapshot is written and
    /// a new journal started.
    pub journal_bytes: u64,
    /// (None: forever) Time retention of the dead-letter log, as
    /// [`LogConfig::retention_ms`](crate::LogConfig::retention_ms) of that log: whole
    /// sealed segments whose newest letter is older than this are deleted. A letter
    /// keeps its record's timestamp, so its age counts from when the record was
    /// written (never from later than when it was dead-lettered): a letter lives at
    /// most this long after it was dead-lettered. Applied when the queue's state is
    /// durable: at open, [`Queue::flush`](super::Queue::flush) and
    /// [`Queue::close`](super::Queue::close) (no thread runs it). See also
    /// [`Queue::purge_dead_letters`](super::Queue::purge_dead_letters).
    pub dead_letter_retention: Option<Duration>,
    /// (false) Deliver tombstones (records without a value) like any record. When
    /// false, `receive` settles them without delivering them, counted in
    /// [`QueueStats::tombstones_skipped`].
    pub deliver_tombstones: bool,
    /// (true) A record found past its [`EXPIRES_AT`](super::EXPIRES_AT) time
    /// ([`Record::with_ttl`](crate::Record::with_ttl)) goes to the dead-letter log
    /// with `dlq.reason = expired`; when false it is settled without a trace but the
    /// count [`QueueStats::expired_total`]. Either way it is never delivered.
    pub dead_letter_expired: bool,
    /// (false) The outcome feed: every record the queue settles gets exactly one
    /// outcome record in the log `queues/<name>/outcomes/`
    /// ([`Queue::outcomes`](super::Queue::outcomes); what counts as settled and the
    /// headers: `docs/queue.md`). Switched on for an existing queue, the feed starts
    /// with the settlements after that open; switched off, the open reconciles the
    /// log one last time and later settlements get no outcome (switched on again, the
    /// log continues from its end).
    pub outcomes: bool,
    /// (None: forever) Time retention of the outcomes log, as
    /// [`LogConfig::retention_ms`](crate::LogConfig::retention_ms) of that log: whole
    /// sealed segments whose newest outcome is older than this (an outcome's
    /// timestamp is when its record settled) are deleted. Applied at open,
    /// [`Queue::flush`](super::Queue::flush) and [`Queue::close`](super::Queue::close)
    /// (no thread runs it), never to outcomes the queue state does not yet account
    /// for, nor past a protecting cursor of a follower.
    pub outcome_retention: Option<Duration>,
    /// Lanes: independent sub-queues over the log, so that consumers scale with
    /// cores (see `docs/queue.md`, "Lanes"). Lane `i` of N owns the offsets of
    /// every N-th block of 1,024; a receive takes from the caller's lane first
    /// (chosen per thread), then from the others, and an ack goes to the lane that
    /// owns the record, so consumers on different lanes share no lock. With more
    /// than one lane, records of different blocks are handed out in no particular
    /// order (even to a single consumer), `max_in_flight` is split evenly among the
    /// lanes, and `ack_many`/`nack_many` are all-or-none after a crash per lane,
    /// not per call. Fixed when the queue is created: opening it with another
    /// count is [`Error::InvalidConfig`]. 1 to 64; more than 1 needs
    /// [`Ordering::Unordered`] and no `outcomes` feed. Default 1.
    pub lanes: u32,
    /// Offsets per lane block (see [`QueueConfig::lanes`]): lane `i` of N owns the
    /// offsets `o` with `(o / lane_block) % N == i`. Fixed at creation with the lane
    /// count. 1 to 2^30; default 1,024. Smaller blocks spread a small backlog over
    /// the lanes; larger ones make a lane's reader skip the others' records less
    /// often. Ignored with one lane.
    pub lane_block: u64,
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
            dead_letter_retention: None,
            deliver_tombstones: false,
            dead_letter_expired: true,
            outcomes: false,
            outcome_retention: None,
            lanes: 1,
            lane_block: 1024,
        }
    }
}

impl QueueConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidConfig(m.to_string()));
        if self.visibility_timeout < Duration::from_millis(1) {
            return bad("visibility_timeout must be at least 1 ms");
        }
        if self.visibility_timeout > self.max_visibility {
            return Err(Error::InvalidConfig(format!(
                "visibility_timeout ({:?}) exceeds max_visibility ({:?})",
                self.visibility_timeout, self.max_visibility
            )));
        }
        if self.dead_letter_retention == Some(Duration::ZERO) {
            return bad("dead_letter_retention must be at least 1 ms (None keeps forever)");
        }
        if self.outcome_retention == Some(Duration::ZERO) {
            return bad("outcome_retention must be at least 1 ms (None keeps forever)");
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight must be at least 1");
        }
        if self.max_deliveries == Some(0) {
            return bad("max_deliveries must be at least 1");
        }
        if !(1..=super::lanes::MAX_LANES).contains(&self.lanes) {
            return bad("lanes must be between 1 and 64");
        }
        if !(1..=super::lanes::MAX_BLOCK).contains(&self.lane_block) {
            return bad("lane_block must be between 1 and 2^30");
        }
        if self.lanes > 1 && self.ordering == Ordering::PerKey {
            return bad("lanes above 1 need Ordering::Unordered");
        }
        if self.lanes > 1 && self.outcomes {
            return bad("lanes above 1 cannot feed outcomes");
        }
        if self.max_in_flight < self.lanes as usize {
            return bad("max_in_flight must be at least the number of lanes");
        }
        if !(4096..=1 << 40).contains(&self.journal_bytes) {
            return bad("journal_bytes must be between 4 KiB and 1 TiB");
        }
        Ok(())
    }
}

/// Options of one [`Queue::receive_with`](super::Queue::receive_with) call.
/// `Default` gives the queue's own settings. Non-exhaustive (filters may come): build
/// it with `ReceiveOptions::default()` and set fields.
///
/// ```
/// use std::time::Duration;
/// let mut options = logqueue::ReceiveOptions::default();
/// options.visibility_timeout = Some(Duration::from_secs(600));
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// The lease of the records handed out by this call, instead of the queue's
    /// [`QueueConfig::visibility_timeout`]. At least 1 ms and at most
    /// [`QueueConfig::max_visibility`], else [`Error::InvalidArgument`].
    pub visibility_timeout: Option<Duration>,
    /// With [`QueueConfig::lanes`] above 1: the lane this call takes records from
    /// first (taken modulo the lane count), before the others. `None` (the
    /// default): the calling thread's own lane, a different one for each of the
    /// first N threads that receive from the queue (so that N consumer threads
    /// share no lock); every
    /// 100 ms of the queue's clock every thread moves on to the next lane, so that
    /// no lane waits for the others to run dry. Set it to pin a consumer to a lane.
    pub lane: Option<u32>,
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

/// One record handed out by [`Queue::receive`](super::Queue::receive).
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The record.
    pub record: StoredRecord,
    /// What to pass to [`Queue::ack`](super::Queue::ack) and friends.
    pub receipt: Receipt,
    /// 1 on the first delivery.
    pub attempt: u32,
    /// When the lease ends (clock milliseconds) unless extended.
    pub deadline_ms: i64,
}

/// Counters and sizes of a queue.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Every offset below it is done (acked, dead-lettered or skipped).
    pub ack_floor: Offset,
    /// Leases out (including expired ones not yet handed out again).
    pub in_flight: u64,
    /// Records waiting for delivery: never delivered, nacked or recovered.
    pub backlog: u64,
    /// Records held back by a delivery delay ([`Queue::send_delayed`](super::Queue::send_delayed))
    /// that this queue has already read past.
    pub delayed: u64,
    /// Acks so far (kept across reopen).
    pub acked_total: u64,
    /// Deliveries with attempt > 1 so far.
    pub redelivered_total: u64,
    /// Records appended to the dead-letter log so far.
    pub dead_lettered_total: u64,
    /// Records passed because they could not be read (corrupt).
    pub corrupt_skipped: u64,
    /// Records passed without being done because the log's start offset moved above
    /// them (an explicit [`Log::delete_records_before`](crate::Log::delete_records_before),
    /// or retention without `protect_unacked`): never delivered, leased, waiting or
    /// delayed records below the new start. Counted when the queue opens (from its
    /// persisted state) and when `receive` finds the start above the floor; kept in
    /// memory only, since this queue was opened (a reopen after a crash may count a
    /// stretch again). Leases on such records become stale.
    pub skipped_by_retention: u64,
    /// Log end offset minus the ack floor: the records between the floor and the end
    /// of the log, including those above the floor already done (as a Kafka
    /// consumer's lag). The records not yet done are `backlog + in_flight`.
    pub consumer_lag: u64,
    /// Clock milliseconds since the timestamp of the oldest record not yet done (the
    /// record at the ack floor, whether never delivered, leased, waiting or delayed);
    /// `None` when every record in the log is done (or that record cannot be read).
    /// The timestamp is the record's own, or the clock at append when none was given.
    pub oldest_unacked_age_ms: Option<u64>,
    /// Tombstones (records without a value) settled without being delivered, since
    /// this queue was opened (see [`QueueConfig::deliver_tombstones`]). In memory
    /// only: `Queue::inspect` reports 0.
    pub tombstones_skipped: u64,
    /// Records not delivered because their [`EXPIRES_AT`](super::EXPIRES_AT) time had
    /// passed (dead-lettered or settled, see [`QueueConfig::dead_letter_expired`]),
    /// since this queue was opened. In memory only: `Queue::inspect` reports 0.
    pub expired_total: u64,
}
