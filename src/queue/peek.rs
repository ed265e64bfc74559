//! [`Queue::peek`]: the records a receive would consider next, without leasing them.

use super::deliver::delay_until;
use super::*;

impl Queue {
    /// The next records (at most `max`) a [`Queue::receive`] would consider, in the
    /// order it considers them, without leasing them or changing anything: first the
    /// records due again (expired leases, nacked records whose delay passed,
    /// recovered leases), then records never delivered, from the delivery cursor on.
    /// Records held back by a delivery delay are left out. Under
    /// [`Ordering::PerKey`], a record blocked behind an earlier one of its key may be
    /// listed (receive would hold it back); tombstones and expired records are listed
    /// as receive finds them (see [`QueueConfig::deliver_tombstones`] and
    /// [`QueueConfig::dead_letter_expired`]). Records the log no longer holds are
    /// skipped. The queue's lock is held only to copy the offsets; the records are
    /// read after. With [`QueueConfig::lanes`] above 1, lane by lane (lane 0 first),
    /// as a receive that found each lane before empty would.
    ///
    /// ```
    /// use std::time::Duration;
    /// use logqueue::{Log, LogConfig, Queue, QueueConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let q = Queue::open(&log, "jobs", QueueConfig::default()).unwrap();
    /// q.send(Record::new("a")).unwrap();
    /// q.send(Record::new("b")).unwrap();
    /// let seen = q.peek(10).unwrap();
    /// assert_eq!(seen.len(), 2);
    /// assert_eq!(q.stats().in_flight, 0); // nothing leased
    /// assert_eq!(q.receive(10, Duration::ZERO).unwrap().len(), 2);
    /// ```
    pub fn peek(&self, max: usize) -> Result<Vec<StoredRecord>> {
        let mut records = Vec::new();
        for lane in self.inner.lanes() {
            if records.len() >= max {
                break;
            }
            records.append(&mut lane.peek_lane(max - records.len())?);
        }
        Ok(records)
    }
}

impl QueueInner {
    /// [`Queue::peek`] of this lane.
    fn peek_lane(&self, max: usize) -> Result<Vec<StoredRecord>> {
        let inner = self;
        let now = inner.log.config().clock.now_ms();
        let (due, cursor, mut out) = {
            let unread = inner.unread.lock();
            let core = inner.core.lock();
            inner.check(&core)?;
            let due = core.state.due_offsets(now, max);
            let mut out = Vec::new();
            let next = core.state.next();
            // The read-ahead buffer holds the first records past the cursor; the log
            // reader resumes after it.
            let mut cursor = Some(unread.resume.max(next));
            for u in &unread.ahead {
                if out.len() + due.len() >= max {
                    cursor = None;
                    break;
                }
                if let Unread::Record(r) = u {
                    if r.offset >= next {
                        out.push(r.clone());
                    }
                }
            }
            (due, cursor, out)
        };
        let mut records = Vec::with_capacity(max.min(1024));
        for o in due {
            match inner.log.read(o) {
                Ok(Some(r)) => records.push(r),
                Ok(None) | Err(Error::OffsetOutOfRange { .. }) | Err(Error::Corrupt { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        out.retain(|r| delay_until(r).is_none_or(|u| u <= now));
        records.append(&mut out);
        let end = inner.log.end_offset();
        if let Some(cursor) = cursor.filter(|&c| records.len() < max && c < end) {
            let mut reader = inner.log.reader(cursor.max(inner.log.start_offset()))?;
            while records.len() < max {
                match reader.next() {
                    // The other lanes' records are theirs to show.
                    Some(Ok(r)) if !inner.lane.owns(r.offset) => {}
                    Some(Ok(r)) => {
                        if delay_until(&r).is_none_or(|u| u <= now) {
                            records.push(r);
                        }
                    }
                    // Receive skips what cannot be read; a peek just stops there.
                    Some(Err(Error::Corrupt { .. })) => break,
                    Some(Err(e)) => return Err(e),
                    None => break,
                }
            }
        }
        records.truncate(max);
        Ok(records)
    }
}
