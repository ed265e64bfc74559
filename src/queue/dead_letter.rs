//! The dead-letter log of a queue: `queues/<name>/dead-letter/`, a [`Log`] opened with
//! the parent log's file system and clock, flushed by [`super::Queue::flush`].

use std::path::Path;

use crate::config::{FlushPolicy, LogConfig};
use crate::{Log, Record, Result, StoredRecord};

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

/// Reason given when `max_deliveries` ran out.
pub(crate) const REASON_MAX_DELIVERIES: &str = "max_deliveries";

pub(crate) fn open(parent: &Log, dir: &Path) -> Result<Log> {
    let p = parent.config();
    let config = LogConfig {
        fs: p.fs.clone(),
        clock: p.clock.clone(),
        flush: FlushPolicy::Manual,
        background: false,
        retention_ms: None,
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
    let mut r = Record {
        key: record.key,
        value: record.value,
        headers: record.headers,
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
