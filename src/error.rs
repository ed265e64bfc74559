//! The one error type of the crate.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::Offset;

/// Every failure logqueue reports. Library code returns these instead of panicking,
/// whatever the input bytes on disk.
#[non_exhaustive]
#[derive(Debug)]
pub enum Error {
    /// An operating-system I/O call failed.
    Io {
        /// What the engine was doing ("sync", "open segment", ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The error the file system returned.
        source: io::Error,
    },
    /// Bytes on disk failed a check (CRC, framing, offsets) inside data that was durable.
    Corrupt {
        /// The file holding the bad bytes.
        path: PathBuf,
        /// Byte position of the bad data in that file.
        position: u64,
        /// The offset that could not be read, when known.
        offset: Option<Offset>,
        /// What check failed.
        reason: String,
    },
    /// The log directory is already open, in this process or another; or, when `path`
    /// is a queue's `queue.lock`, the queue is already open.
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The offset lies below the log's start offset.
    OffsetOutOfRange {
        /// The offset asked for.
        offset: Offset,
        /// The log's start offset at the time.
        start: Offset,
        /// The log's end offset at the time.
        end: Offset,
    },
    /// An append whose encoded batch exceeds `LogConfig::max_batch_bytes`.
    RecordTooLarge {
        /// Encoded size of the batch in bytes.
        size: u64,
        /// The configured maximum.
        max: u64,
    },
    /// An append without a key to a log whose cleanup policy includes compaction.
    MissingKey,
    /// A configuration value is out of range.
    InvalidConfig(String),
    /// A queue receipt that is not the record's current lease.
    StaleReceipt {
        /// The receipt's offset.
        offset: Offset,
        /// The receipt's attempt number.
        attempt: u32,
    },
    /// The log (or queue) was closed; this handle can no longer be used.
    Closed,
    /// An earlier fsync or write failed, so the on-disk state is unknown; the handle
    /// refuses further writes. Reopen the log to recover.
    Poisoned {
        /// The failure that poisoned the handle.
        reason: String,
    },
    /// A write or sync of a queue's own files (journal, snapshot, floor) or a flush it
    /// depends on failed, so the queue's state on disk may lag what it acknowledged in
    /// memory; the queue refuses further changes. Drop every handle of the queue and
    /// open it again ([`crate::Queue::open`]) to recover: open rebuilds the state
    /// from what is on disk.
    QueuePoisoned {
        /// The queue's name.
        queue: String,
        /// The failure that poisoned the queue (operation and file).
        reason: String,
    },
    /// An argument of a call is out of range (a visibility timeout beyond
    /// `QueueConfig::max_visibility`, a queue name that names no queue, ...); the call
    /// changed nothing. The text says which argument and why.
    InvalidArgument(String),
    /// A write call on a log opened with [`crate::Log::open_read_only`] (or a queue of
    /// one): a read-only view never changes a byte of the directory.
    ReadOnly,
    /// A Kafka broker or client call failed (the `kafka` feature's
    /// mirror and import); the text says which call and why.
    Broker(String),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        position: u64,
        offset: Option<Offset>,
        reason: impl Into<String>,
    ) -> Error {
        Error::Corrupt {
            path: path.into(),
            position,
            offset,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, source } => {
                write!(f, "I/O error during {op} on {}: {source}", path.display())
            }
            Error::Corrupt {
                path,
                position,
                offset,
                reason,
            } => {
                write!(f, "corrupt data in {} at byte {position}", path.display())?;
                if let Some(o) = offset {
                    write!(f, " (offset {o})")?;
                }
                write!(f, ": {reason}")
            }
            Error::Locked { path } => match queue_of_lock(path) {
                Some(queue) => write!(
                    f,
                    "queue {queue} is already open, in this process or another (lock {} is held)",
                    path.display()
                ),
                None => write!(f, "log is already open (lock {} is held)", path.display()),
            },
            Error::OffsetOutOfRange { offset, start, end } => write!(
                f,
                "offset {offset} is out of range (log holds [{start}, {end}))"
            ),
            Error::RecordTooLarge { size, max } => {
                write!(f, "batch of {size} bytes exceeds max_batch_bytes = {max}")
            }
            Error::MissingKey => write!(f, "a compacted log needs a key on every record"),
            Error::InvalidConfig(why) => write!(f, "invalid configuration: {why}"),
            Error::StaleReceipt { offset, attempt } => write!(
                f,
                "receipt (offset {offset}, attempt {attempt}) is not the current lease"
            ),
            Error::Closed => write!(f, "the log is closed"),
            Error::Poisoned { reason } => write!(
                f,
                "the log refuses writes after an earlier failure ({reason}); reopen it"
            ),
            Error::QueuePoisoned { queue, reason } => write!(
                f,
                "queue {queue} refuses changes after an earlier failure ({reason}); its state \
                 on disk may lag what it acknowledged: drop the queue's handles and open it \
                 again with Queue::open to recover"
            ),
            Error::InvalidArgument(why) => write!(f, "invalid argument: {why}"),
            Error::ReadOnly => write!(
                f,
                "the log was opened read-only (Log::open_read_only): writes are refused"
            ),
            Error::Broker(why) => write!(f, "kafka: {why}"),
        }
    }
}

/// The name of a queue's lock file (`queues/<name>/queue.lock`). Kept here, the
/// lowest layer, so that a `Locked` error can name the queue without this module
/// importing the queue's.
pub(crate) const QUEUE_LOCK_FILE: &str = "queue.lock";

/// The queue name when `path` is a queue's lock file (`queues/<name>/queue.lock`).
fn queue_of_lock(path: &std::path::Path) -> Option<String> {
    if path.file_name()? != QUEUE_LOCK_FILE {
        return None;
    }
    Some(path.parent()?.file_name()?.to_string_lossy().into_owned())
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
