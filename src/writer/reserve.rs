//! Appenders in parallel: a batch's offsets and bytes are reserved under the append
//! lock, encoded (and checksummed) into the mapping with the lock released, and
//! published in position order, each appender waiting for the one before it. An
//! append returns only once it is published, and a batch is published only after
//! every batch before it: a returned record never lies after a hole, for readers or
//! after a kill -9 (recovery cuts at the first batch that does not decode).
//!
//! A reservation that fails (or whose thread unwinds) between the two poisons the
//! log, and every waiter behind it returns `Poisoned` instead of waiting for it.

use std::ptr::NonNull;
use std::sync::atomic::Ordering as AtomicOrdering;

use super::{PlannedBatch, Writer};
use crate::batch::{Scattered, BORROW_MIN_BYTES};
use crate::fs::Mapping;
use crate::log::LogInner;
use crate::segment::{Decision, Segment};
use crate::{Error, Offset, Result};

/// A batch's place in the active segment, taken under the append lock.
pub(super) struct Reservation<'a> {
    inner: &'a LogInner,
    /// The active segment and its mapping, used past the lock without a reference
    /// count (two contended read-modify-writes per append saved). Valid until the
    /// turn passes (see [`Reservation::segment`]).
    segment: NonNull<Segment>,
    map: NonNull<dyn Mapping>,
    position: u64,
    len: usize,
    base: Offset,
    next: Offset,
    max_timestamp: i64,
    now: i64,
    /// The index entry's timestamp when the batch gets one.
    index_ts: Option<i64>,
    /// Published, or given up without consequence (a decision's no): nothing left
    /// to poison on drop.
    done: bool,
}

impl LogInner {
    /// Under the lock: where `batch` goes (the end of the reservations so far) and
    /// whether it gets an index entry; changes nothing yet.
    fn plan_reservation<'a>(&'a self, w: &Writer, batch: &PlannedBatch) -> Reservation<'a> {
        let len = batch.len as u64;
        assert!(
            w.position + len <= w.allocated.min(self.config.segment_capacity()),
            "the writer grows the segment before writing"
        );
        let interval = u64::from(self.config.index_interval_bytes);
        Reservation {
            inner: self,
            segment: NonNull::from(&*w.active),
            map: NonNull::from(&*w.active_map),
            position: w.position,
            len: batch.len,
            base: batch.base,
            next: batch.base + u64::from(batch.last_delta) + 1,
            max_timestamp: batch.max_timestamp,
            now: batch.now,
            index_ts: (w.bytes_since_index >= interval).then_some(w.max_timestamp),
            done: false,
        }
    }

    /// Under the lock: takes the planned place, so the next batch goes after it.
    fn take_reservation(w: &mut Writer, r: &Reservation<'_>) {
        let len = r.len as u64;
        if r.index_ts.is_some() {
            w.bytes_since_index = 0;
            w.index_entries += 1;
        }
        w.bytes_since_index = w.bytes_since_index.saturating_add(len);
        w.position += len;
        w.next_offset = r.next;
        w.max_timestamp = w.max_timestamp.max(r.max_timestamp);
        if w.first_append_time == i64::MIN {
            w.first_append_time = r.now;
        }
    }

    /// Under the lock, gate open, room made: reserves the place of `batch`. The
    /// caller releases the lock and then writes and publishes it with
    /// [`Reservation::complete`].
    pub(super) fn reserve<'a>(&'a self, w: &mut Writer, batch: &PlannedBatch) -> Reservation<'a> {
        let r = self.plan_reservation(w, batch);
        Self::take_reservation(w, &r);
        r
    }

    /// Under the lock, gate open, room made: a batch whose publication `decide`
    /// decides, wholly under the lock (check-and-append stays atomic). Waits first
    /// for every reservation in flight to be published, so the batch is written at
    /// the published end; a no leaves the writer as it was (the bytes written never
    /// decode: see [`crate::batch::withhold_crc`]). False when `decide` said no.
    pub(super) fn append_decided<'s, D: Decision>(
        &self,
        w: &mut Writer,
        batch: &PlannedBatch,
        fill: impl FnOnce(&mut [u8]) -> Result<()>,
        parts: impl FnOnce() -> Scattered<'s>,
        decide: &mut D,
    ) -> Result<bool> {
        self.wait_published(&w.active, w.position)?;
        let mut r = self.plan_reservation(w, batch);
        // Encoded by `fill` into place, or as `parts` (a large batch: one copy).
        let crc = if r.wants_parts() {
            let mut parts = parts();
            let crc = D::ASKS.then(|| parts.withhold_crc());
            r.write_parts(&parts)?;
            crc
        } else {
            r.write(fill, D::ASKS)?
        };
        if let Some(crc) = crc {
            if !decide.publish() {
                r.done = true;
                return Ok(false);
            }
            r.segment()
                .restore_crc(r.map(), r.position, crc)
                .inspect_err(|e| self.poison(e))?;
        }
        Self::take_reservation(w, &r);
        // Nobody can be waiting for this turn: every reservation before it is
        // published (waited for above) and none after it can be made while the lock
        // is held, so the turn passes without looking for sleepers.
        r.publish(false);
        Ok(true)
    }

    /// Waits until every batch of `segment` below `position` is published, or the
    /// log is poisoned (`Poisoned`: a reservation before it failed).
    pub(crate) fn wait_published(&self, segment: &Segment, position: u64) -> Result<()> {
        segment.wait_settled(position, &self.turn, || self.poisoned_error())
    }

    /// `Poisoned` once the log is: what a waiter for a publication returns instead of
    /// waiting for a batch that will never be published.
    pub(crate) fn poisoned_error(&self) -> Result<()> {
        if self.is_poisoned.load(AtomicOrdering::Acquire) {
            let reason = self.poisoned.lock().clone().unwrap_or_default();
            return Err(Error::Poisoned { reason });
        }
        Ok(())
    }
}

impl Reservation<'_> {
    /// The active segment the place is in.
    ///
    /// Valid while the reservation lives and its turn has not passed: the writer
    /// holds the segment and its mapping (`Writer::active`, `Writer::active_map`)
    /// and replaces them only in a roll, which first waits until every reservation
    /// made so far has passed its turn (or fails, the log poisoned, without
    /// replacing them); `close` takes clones, and the writer itself lives as long
    /// as `inner`. [`Reservation::publish`] touches neither after passing the turn.
    fn segment(&self) -> &Segment {
        // SAFETY: see above; the pointer came from a live `Arc<Segment>`.
        unsafe { self.segment.as_ref() }
    }

    /// The active segment's writable mapping (valid as [`Reservation::segment`]).
    fn map(&self) -> &dyn Mapping {
        // SAFETY: as for `segment`: `Writer::active_map` holds it until a roll,
        // which waits for this reservation first.
        unsafe { self.map.as_ref() }
    }

    /// Encodes the batch into its reserved bytes (`withhold`: CRC withheld, returned).
    /// A failure poisons the log.
    fn write(
        &mut self,
        fill: impl FnOnce(&mut [u8]) -> Result<()>,
        withhold: bool,
    ) -> Result<Option<[u8; 4]>> {
        self.segment()
            .write_reserved(self.map(), self.position, self.len, fill, withhold)
            .inspect_err(|e| self.inner.poison(e))
    }

    /// With no lock held: encodes the batch into its reserved bytes, waits for its
    /// turn (every batch before it published) and publishes it.
    pub(super) fn complete(mut self, fill: impl FnOnce(&mut [u8]) -> Result<()>) -> Result<()> {
        self.write(fill, false)?;
        self.inner.wait_published(self.segment(), self.position)?;
        self.publish(true);
        Ok(())
    }

    /// Whether the batch is better written as parts ([`Mapping::wants_parts`]: a
    /// large batch, which goes through the file with a system call). A batch smaller
    /// than the smallest borrowed value has nothing to borrow: not asked (no call
    /// through the mapping's vtable on the path of small appends).
    #[inline]
    pub(super) fn wants_parts(&self) -> bool {
        self.len >= BORROW_MIN_BYTES && self.map().wants_parts(self.len)
    }

    /// [`Reservation::complete`] of a batch encoded as parts.
    pub(super) fn complete_parts(mut self, batch: &Scattered<'_>) -> Result<()> {
        self.write_parts(batch)?;
        self.inner.wait_published(self.segment(), self.position)?;
        self.publish(true);
        Ok(())
    }

    /// Writes a batch encoded as parts into its reserved bytes, after checking that
    /// it is exactly the reserved length. A failure poisons the log.
    fn write_parts(&mut self, batch: &Scattered<'_>) -> Result<()> {
        if batch.len() != self.len {
            let err = Error::io(
                "encode batch",
                &self.inner.dir,
                std::io::Error::other("encoded size differs from its prediction"),
            );
            self.inner.poison(&err);
            return Err(err);
        }
        self.segment()
            .write_reserved_parts(self.map(), self.position, batch)
            .inspect_err(|e| self.inner.poison(e))
    }

    /// Its turn: publishes the batch to readers, then the log's end offset, then
    /// passes the turn on (the last use of the segment), waking the appenders asleep
    /// for it if `may_have_sleepers`.
    fn publish(&mut self, may_have_sleepers: bool) {
        let segment = self.segment();
        segment.publish(
            self.position,
            self.len,
            (self.base, self.next, self.max_timestamp, self.now),
            self.index_ts,
        );
        // SeqCst, paired with the waiter count of `AppendSignal`: a tailing reader
        // either sees the new end or is woken. Monotonic: one publisher at a time.
        self.inner
            .end_offset
            .store(self.next, AtomicOrdering::SeqCst);
        let end = self.position + self.len as u64;
        if may_have_sleepers {
            segment.pass_turn(end, &self.inner.turn);
        } else {
            segment.pass_turn_unwatched(end);
        }
        self.done = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.done {
            // A failed write poisoned the log already; an unwinding thread has not:
            // either way the batches reserved after this one wait for a turn that
            // will never come, so they must find the log poisoned.
            self.inner.poison(&Error::io(
                "append",
                &self.inner.dir,
                std::io::Error::other(
                    "an append stopped between its reservation and its publication",
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    use super::super::source::AppendSource;
    use super::super::PlannedBatch;
    use crate::sim::SimFs;
    use crate::{Error, FlushPolicy, Log, LogConfig, Record, Result};

    /// A log on `fs` without background threads, flushed by hand.
    fn config(fs: &SimFs) -> LogConfig {
        LogConfig {
            fs: Arc::new(fs.clone()),
            background: false,
            flush: FlushPolicy::Manual,
            ..LogConfig::default()
        }
    }

    /// A log on `fs` holding one record, "first".
    fn log_on(fs: &SimFs) -> Log {
        let log = Log::open("/log", config(fs)).unwrap();
        log.append(Record::new("first")).unwrap();
        log
    }

    fn log() -> Log {
        log_on(&SimFs::new(0))
    }

    /// Reserves the place of one record `value` under the lock (as an append does)
    /// and releases the lock, leaving the reservation in flight.
    fn hold_reservation<'a>(log: &'a Log, value: &'static [u8]) -> super::Reservation<'a> {
        let inner = &*log.inner;
        let records = [Record::new(value)];
        let now = inner.config.clock.now_ms();
        let (last_delta, len, max_timestamp) = inner.batch_size(&records[..], 1, now).unwrap();
        let mut w = inner.lock_writer();
        let batch = PlannedBatch {
            len,
            base: w.next_offset,
            last_delta,
            max_timestamp,
            now,
        };
        inner.reserve(&mut w, &batch)
    }

    /// Encodes the record `held` into its reservation and publishes it (in turn).
    fn complete_held(held: super::Reservation<'_>) {
        let (base, now) = (held.base, held.now);
        held.complete(|buf| {
            let meta = crate::batch::BatchMeta {
                base_offset: base,
                last_offset_delta: 0,
                append_time: now,
                delete_horizon: None,
            };
            let records = [Record::new(&b"held"[..])];
            records[..]
                .encode_into(buf, meta, now)
                .ok_or_else(|| Error::io("encode", "/log", std::io::Error::other("size")))
        })
        .unwrap();
    }

    /// Runs `op` on `log` on another thread; its outcome comes on the channel.
    fn on_thread<T: Send + 'static>(
        log: &Log,
        op: impl FnOnce(&Log) -> T + Send + 'static,
    ) -> mpsc::Receiver<T> {
        let (tx, rx) = mpsc::channel();
        let log = log.clone();
        std::thread::spawn(move || {
            let _ = tx.send(op(&log));
        });
        rx
    }

    /// Appends `value` on another thread; its outcome comes on the channel.
    fn append_on_thread(log: &Log, value: &'static [u8]) -> mpsc::Receiver<Result<u64>> {
        on_thread(log, move |log| log.append(Record::new(value)))
    }

    /// The log on `fs`, reopened, ends with the held record: "first", then "held".
    fn reopened_holds_the_held_record(fs: &SimFs) {
        let log = Log::open("/log", config(fs)).unwrap();
        assert_eq!(log.end_offset(), 2);
        assert_eq!(
            log.read(1).unwrap().unwrap().value.as_deref(),
            Some(&b"held"[..])
        );
    }

    /// An append reserved after one still in flight waits for it (it is not
    /// published before it, so readers see no hole) and returns once it is.
    #[test]
    fn an_append_waits_for_the_reservation_before_it() {
        let log = log();
        let held = hold_reservation(&log, b"held");
        let later = append_on_thread(&log, b"later");
        // The later append reserved offset 2, encoded it and waits for offset 1.
        assert!(later.recv_timeout(Duration::from_millis(200)).is_err());
        assert_eq!(log.end_offset(), 1, "nothing published past the hole");
        assert!(log.read(2).is_err() || log.read(2).unwrap().is_none());
        complete_held(held);
        let offset = later
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!(offset, 2);
        assert_eq!(log.end_offset(), 3);
        let values: Vec<_> = (0..3)
            .map(|o| log.read(o).unwrap().unwrap().value.unwrap())
            .collect();
        assert_eq!(values, [&b"first"[..], b"held", b"later"]);
    }

    /// A flush round covers every reservation made before it took its plan, and
    /// fsyncs only once they are published: with one in flight it waits (before,
    /// it would have fsynced and recorded a recovery point naming bytes not yet
    /// written). Once the append completes, the round ends, and both records
    /// survive a power loss.
    #[test]
    fn a_flush_waits_for_the_appends_in_flight() {
        let fs = SimFs::new(1);
        let log = log_on(&fs);
        let held = hold_reservation(&log, b"held");
        let flushed = on_thread(&log, |log| log.flush().map(|()| log.durable_offset()));
        assert!(
            flushed.recv_timeout(Duration::from_millis(300)).is_err(),
            "the flush round fsynced before the append in flight was written"
        );
        complete_held(held);
        let durable = flushed
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!(durable, 2, "the round covered the reservation");
        fs.crash();
        drop(log);
        reopened_holds_the_held_record(&fs);
    }

    /// `close` seals the active segment only once the appends in flight are
    /// published (it would otherwise cut the file under a batch still being
    /// written): it waits for one, and the record is in the closed log.
    #[test]
    fn close_waits_for_the_appends_in_flight() {
        let fs = SimFs::new(2);
        let log = log_on(&fs);
        let held = hold_reservation(&log, b"held");
        let closed = on_thread(&log, |log| log.clone().close());
        assert!(
            closed.recv_timeout(Duration::from_millis(300)).is_err(),
            "close sealed the segment under an append in flight"
        );
        complete_held(held);
        closed
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap();
        drop(log);
        reopened_holds_the_held_record(&fs);
    }

    /// A reservation abandoned between its reservation and its publication (a
    /// failed write, a panic) poisons the log: the append waiting behind it returns
    /// `Poisoned` instead of waiting forever, and nothing past the hole is published.
    #[test]
    fn an_abandoned_reservation_poisons_and_releases_the_appends_behind_it() {
        let log = log();
        let held = hold_reservation(&log, b"held");
        let later = append_on_thread(&log, b"later");
        assert!(later.recv_timeout(Duration::from_millis(200)).is_err());
        drop(held);
        let got = later.recv_timeout(Duration::from_secs(10));
        assert!(
            matches!(got, Ok(Err(Error::Poisoned { .. }))),
            "the waiter returns Poisoned: {got:?}"
        );
        assert_eq!(log.end_offset(), 1);
        assert!(matches!(
            log.append(Record::new("after")),
            Err(Error::Poisoned { .. })
        ));
        assert!(matches!(log.flush(), Err(Error::Poisoned { .. })) || log.durable_offset() <= 1);
    }
}
