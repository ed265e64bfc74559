//! logqueue: an embeddable, persistent queue storage engine.
//!
//! A Kafka-style segmented log (segments named by base offset, sparse offset and time
//! indexes, crash recovery) that a Rust program opens in a directory, in-process.
//!
//! ```
//! use logqueue::{Log, LogConfig, Record};
//! let dir = tempfile::tempdir().unwrap();
//! let log = Log::open(dir.path(), LogConfig::default()).unwrap();
//! let first = log.append(Record::keyed("k", "v1")).unwrap();
//! log.append(Record::keyed("k", "v2")).unwrap();
//! log.flush().unwrap();
//! assert_eq!(log.durable_offset(), first + 2);
//! let all: Vec<_> = log.reader(first).unwrap().collect::<Result<_, _>>().unwrap();
//! assert_eq!(all.len(), 2);
//! ```
#![warn(missing_docs)]

mod background;
mod batch;
mod checkpoint;
mod cleaner;
mod clock;
mod config;
mod crash_history;
mod cursor;
mod dedup;
mod dependents;
mod error;
mod flush;
pub mod fs;
mod gaps;
mod index;
#[cfg(feature = "kafka")]
pub mod kafka;
mod log;
mod offset_map;
mod queue;
mod read_only;
mod reader;
mod record;
mod recovery;
mod retention;
mod segment;
pub mod sim;
mod stats;
#[cfg(test)]
mod test_rng;
mod trace;
mod writer;
mod writer_lock;

pub use batch::{HeaderIter, RecordView};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{CleanupPolicy, CompactionConfig, DedupConfig, FlushPolicy, LogConfig};
pub use cursor::{Cursor, CursorConfig, CursorInfo};
pub use dedup::{Appended, DedupStats, DEDUP_ID};
pub use error::{Error, Result};
pub use log::Log;
pub use queue::{
    Delivery, Ordering, Queue, QueueConfig, QueueStats, Receipt, ReceiveOptions, RepairReport,
    StartPosition, DELAY_UNTIL, DLQ_ATTEMPTS, DLQ_KEY_RELEASED, DLQ_OFFSET, DLQ_QUEUE, DLQ_REASON,
    EXPIRES_AT, REDRIVE_FROM,
};
/// The outcome feed's headers and values ([`Queue::outcomes`]).
pub use queue::{
    ACKED, CORRELATION_ID, DEAD_LETTERED, EXPIRED, OUTCOME, OUTCOME_ATTEMPTS, OUTCOME_OFFSET,
    OUTCOME_REASON, OUTCOME_RECORD_TIMESTAMP, PURGED,
};
pub use reader::{fuzz_decode_batch, fuzz_skip_agrees, BatchHeader, LogReader, RecordBatch};
pub use record::{Header, Record, RecordRef, StoredRecord};
pub use segment::CorruptRange;
pub use stats::{CompactionReport, LogStats, RetentionReport, SegmentInfo, VerifyReport};

/// Run by [`Log::open`] after recovery, before background work starts: one-time
/// upgrades of state that layers above the log keep in its directory. The crate root
/// wires them so that the log itself imports none of those layers.
pub(crate) const LOG_OPEN_HOOKS: &[fn(&Log) -> Result<()>] = &[queue::migrate_floors];

/// Position of a record in a log.
pub type Offset = u64;
