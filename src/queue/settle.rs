//! [`Queue::settle_into`]: exactly-once consume-transform-produce.
//!
//! The outputs of a delivery go to the output log under ids derived from the input:
//! `settle\0<input log directory>\0<queue name>\0` then the input offset (8 bytes,
//! big-endian) and the output's index (4 bytes, big-endian). The directory (made
//! absolute, `.` and trailing separators dropped, symbolic links not resolved) tells apart
//! queues of one name over different logs; the offset tells apart the records; every
//! redelivery of one record derives the same ids. The input is made durable before
//! its outputs are appended, so an offset whose outputs are durable never goes to
//! another record after a power loss.
//!
//! The steps, and what a crash between them leaves:
//! 1. the outputs are appended as one idempotent batch (all of them or none survive
//!    a crash);
//! 2. the output log is made durable up to them ([`Log::wait_durable`]);
//! 3. the delivery is acked.
//!
//! A crash before 1 leaves nothing; the redelivery appends. A crash (or power loss)
//! between 1 and 2 leaves the batch or not: if it is there, the redelivery finds its
//! ids in the window and does not append it again; if not, it appends it. Between 2
//! and 3 the outputs are durable and the input is not acked: the redelivery's
//! append is all duplicates, then it acks. After 3 an ack lost to a power loss (the
//! queue journal not yet synced) is the same case. The ack never precedes the
//! outputs' durability, so a durable ack always has its outputs.

use std::ops::Range;

use super::*;
use crate::dedup::Appended;

impl Queue {
    /// Appends `records` (the outputs of processing `delivery`) to `out` and acks the
    /// delivery, so that whatever point a crash hits, after recovery and redelivery
    /// the outputs are in `out` exactly once and the input is acked once. Returns the
    /// outputs' offsets in `out` (the first attempt's offsets when an earlier
    /// attempt already appended them).
    ///
    /// `out` needs a dedup window ([`LogConfig::dedup`](crate::LogConfig::dedup);
    /// otherwise [`Error::InvalidConfig`] and nothing happens), longer than the time
    /// from a delivery to its last redelivery (visibility timeout times the
    /// attempts), and whose `max_ids` holds the outputs appended meanwhile: an id
    /// that aged out of the window is appended again. `out` may be in any directory
    /// (also this queue's own log). The transform must give the same number of
    /// outputs on every attempt (they are told apart by their index); their
    /// contents may differ, and the first attempt's stay.
    ///
    /// What a reader of `out` sees: the outputs of one delivery are one batch with
    /// consecutive offsets, visible together (never a part of them), each with the
    /// header [`DEDUP_ID`](crate::DEDUP_ID). They may be visible before the input is
    /// acked, and a reader may see them while the input is redelivered; it never
    /// sees them twice.
    ///
    /// A stale receipt (the lease ran out and the record went to another consumer)
    /// is [`Error::StaleReceipt`] after the outputs are appended: the other
    /// consumer's `settle_into` finds them and acks. An empty `records` only acks.
    ///
    /// ```
    /// use std::time::Duration;
    /// use logqueue::{DedupConfig, Log, LogConfig, Queue, QueueConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let input = Log::open(dir.path().join("orders"), LogConfig::default()).unwrap();
    /// let dedup = Some(DedupConfig { window: Duration::from_secs(3600), max_ids: 1 << 20 });
    /// let mails = Log::open(dir.path().join("mails"), LogConfig { dedup, ..LogConfig::default() }).unwrap();
    /// let q = Queue::open(&input, "mailer", QueueConfig::default()).unwrap();
    /// q.send(Record::keyed("order-1", "paid")).unwrap();
    /// let d = q.receive(1, Duration::ZERO).unwrap().remove(0);
    /// let sent = q.settle_into(&d, &mails, vec![Record::keyed("order-1", "mail: thanks")]).unwrap();
    /// assert_eq!(sent, 0..1);
    /// assert_eq!(q.stats().ack_floor, 1);
    /// ```
    pub fn settle_into(
        &self,
        delivery: &Delivery,
        out: &Log,
        records: Vec<Record>,
    ) -> Result<Range<Offset>> {
        if out.config().dedup.is_none() {
            return Err(Error::InvalidConfig(format!(
                "settle_into needs a dedup window on the output log {}",
                out.dir().display()
            )));
        }
        self.inner.check_open()?;
        let offset = delivery.receipt.offset;
        // A receipt that is already stale (the lease ran out, and the record went to
        // another consumer, or was dead-lettered, expired or purged) appends nothing:
        // a dead-lettered input must not have outputs. (A lease can still run out
        // during the append: then the outputs are there, and a redelivery finds
        // them; see the module docs.)
        {
            let lane = self.inner.lane_of(offset);
            let core = lane.core.lock();
            lane.check_current(&core, &delivery.receipt)?;
        }
        // The input durable before its outputs: a power loss could otherwise take
        // back an un-flushed input whose outputs are durable, and its offset would
        // go to a new record, whose outputs would get the same ids and be taken for
        // duplicates of the lost record's (the new record acked, its outputs lost).
        self.inner.log.wait_durable(offset)?;
        let prefix = self.settle_id_prefix();
        let mut items = Vec::with_capacity(records.len());
        for (index, record) in records.into_iter().enumerate() {
            let index = u32::try_from(index)
                .map_err(|_| Error::InvalidArgument("more than 2^32 outputs".into()))?;
            let mut id = prefix.clone();
            id.extend_from_slice(&offset.to_be_bytes());
            id.extend_from_slice(&index.to_be_bytes());
            items.push((id, record));
        }
        let range = if items.is_empty() {
            let end = out.end_offset();
            end..end
        } else {
            let appended = out.append_idempotent_batch(items)?;
            let range = span(&appended);
            out.wait_durable(range.end - 1)?;
            range
        };
        self.ack(&delivery.receipt)?;
        Ok(range)
    }

    /// `settle\0<input log directory>\0<queue name>\0`, the directory absolute and
    /// normalized: `.` components and trailing separators dropped, so that such
    /// spellings of one path give the same ids. `..` is kept and symbolic links are
    /// not resolved: taking `..` back lexically could make two directories one (a
    /// link's parent is not the link's target's), and ids shared by two inputs
    /// would lose outputs, where another spelling of one directory (or moving it)
    /// can at worst append outputs again.
    fn settle_id_prefix(&self) -> Vec<u8> {
        use std::path::Component;
        let dir = self.inner.log.dir();
        let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let mut dir = std::path::PathBuf::new();
        for part in absolute.components() {
            match part {
                Component::CurDir => {}
                part => dir.push(part),
            }
        }
        let mut id = b"settle\0".to_vec();
        id.extend_from_slice(dir.as_os_str().as_encoded_bytes());
        id.push(0);
        id.extend_from_slice(self.name().as_bytes());
        id.push(0);
        id
    }
}

/// The offsets the outputs occupy: one batch, so consecutive (`start..last + 1`).
fn span(appended: &[Appended]) -> Range<Offset> {
    let start = appended.iter().map(|a| a.offset).min().unwrap_or(0);
    let end = appended.iter().map(|a| a.offset + 1).max().unwrap_or(start);
    start..end
}
