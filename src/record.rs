//! The records users append and read back.

use std::time::Duration;

use crate::Offset;

/// Header holding the clock time (milliseconds, UTF-8 decimal) from which no queue
/// delivers the record any more; set by [`Record::with_ttl`]. See
/// [`QueueConfig::dead_letter_expired`](crate::QueueConfig::dead_letter_expired).
pub const EXPIRES_AT: &str = "expires.at";

/// A record to append. `value: None` is a tombstone (deletes the key in a compacted log).
///
/// ```
/// use logqueue::Record;
/// let r = Record::keyed("user-1", "alice").with_header("source", "signup").with_timestamp(1_000);
/// assert_eq!(r.key.as_deref(), Some(&b"user-1"[..]));
/// assert_eq!(r.timestamp, Some(1_000));
/// assert!(Record::tombstone("user-1").value.is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Record {
    /// Optional key (required by compacted logs).
    pub key: Option<Vec<u8>>,
    /// The payload; `None` marks a tombstone.
    pub value: Option<Vec<u8>>,
    /// Application headers, kept in order.
    pub headers: Vec<Header>,
    /// Milliseconds since the Unix epoch; `None` takes the log clock at append.
    pub timestamp: Option<i64>,
}

impl Record {
    /// A record with a value and no key.
    pub fn new(value: impl Into<Vec<u8>>) -> Record {
        Record {
            value: Some(value.into()),
            ..Record::default()
        }
    }

    /// A record with a key and a value.
    pub fn keyed(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Record {
        Record {
            key: Some(key.into()),
            value: Some(value.into()),
            ..Record::default()
        }
    }

    /// A tombstone for `key`: compaction removes earlier records of the key, and later
    /// the tombstone itself.
    pub fn tombstone(key: impl Into<Vec<u8>>) -> Record {
        Record {
            key: Some(key.into()),
            ..Record::default()
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Record {
        self.headers.push(Header {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Sets the timestamp (milliseconds since the Unix epoch).
    pub fn with_timestamp(mut self, ms: i64) -> Record {
        self.timestamp = Some(ms);
        self
    }

    /// Makes the record expire `ttl` after now (the system clock; see below): it gets
    /// the header [`EXPIRES_AT`](EXPIRES_AT) (`expires.at`, clock
    /// milliseconds, UTF-8 decimal, like `delay.until`), replacing one set before. No
    /// queue delivers it at or after that time: it goes to the dead-letter log with
    /// `dlq.reason = expired`, or is settled silently when
    /// [`QueueConfig::dead_letter_expired`](crate::QueueConfig::dead_letter_expired)
    /// is false. The log itself keeps it like any record.
    ///
    /// The deadline is computed here, from [`SystemClock`](crate::SystemClock): a
    /// record is built before the log that will hold it is known. With another clock
    /// (a [`ManualClock`](crate::ManualClock) in tests), set the header yourself:
    /// `record.with_header("expires.at", deadline_ms.to_string())`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use logqueue::Record;
    /// let r = Record::new("offer").with_ttl(Duration::from_secs(60));
    /// let at: i64 = std::str::from_utf8(&r.headers[0].value).unwrap().parse().unwrap();
    /// assert_eq!(r.headers[0].key, "expires.at");
    /// assert!(at > 0);
    /// ```
    pub fn with_ttl(mut self, ttl: Duration) -> Record {
        let now = crate::clock::Clock::now_ms(&crate::SystemClock);
        let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        self.headers.retain(|h| h.key != EXPIRES_AT);
        self.with_header(EXPIRES_AT, now.saturating_add(ms).to_string())
    }
}

/// A record of borrowed bytes, for [`crate::Log::append_batch_ref`]: a batch of them
/// costs the caller no allocation, and the log copies each byte once, straight into
/// the segment. The fields mean what they mean in [`Record`].
///
/// ```
/// use logqueue::{Log, LogConfig, RecordRef};
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
/// let headers = [("source", &b"web"[..])];
/// let batch = [
///     RecordRef::new(b"plain"),
///     RecordRef { headers: &headers, timestamp: Some(1_000), ..RecordRef::keyed(b"k", b"v") },
/// ];
/// assert_eq!(log.append_batch_ref(&batch).unwrap(), 0..2);
/// let r = log.read(1).unwrap().unwrap();
/// assert_eq!((r.timestamp, r.header("source")), (1_000, Some(&b"web"[..])));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RecordRef<'a> {
    /// Optional key (required by compacted logs).
    pub key: Option<&'a [u8]>,
    /// The payload; `None` marks a tombstone.
    pub value: Option<&'a [u8]>,
    /// Application headers `(name, value)`, kept in order.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// Milliseconds since the Unix epoch; `None` takes the log clock at append.
    pub timestamp: Option<i64>,
}

impl<'a> RecordRef<'a> {
    /// A record with a value and no key.
    pub fn new(value: &'a [u8]) -> Self {
        RecordRef {
            value: Some(value),
            ..RecordRef::default()
        }
    }

    /// A record with a key and a value.
    pub fn keyed(key: &'a [u8], value: &'a [u8]) -> Self {
        RecordRef {
            key: Some(key),
            value: Some(value),
            ..RecordRef::default()
        }
    }
}

/// A record header: a UTF-8 key and a byte value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Header name.
    pub key: String,
    /// Header value.
    pub value: Vec<u8>,
}

/// A record as stored in the log, with its offset and timestamp.
///
/// ```
/// use logqueue::{Header, StoredRecord};
/// let r = StoredRecord { offset: 7, timestamp: 0, key: None, value: Some(b"v".to_vec()),
///     headers: vec![Header { key: "h".into(), value: b"x".to_vec() }] };
/// assert_eq!(r.header("h"), Some(&b"x"[..]));
/// assert_eq!(r.header("missing"), None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// Position of the record in the log.
    pub offset: Offset,
    /// The record's timestamp (given, or the clock at append).
    pub timestamp: i64,
    /// The key, if any.
    pub key: Option<Vec<u8>>,
    /// The value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers in the order they were given.
    pub headers: Vec<Header>,
}

impl StoredRecord {
    /// The value of the first header named `key`.
    pub fn header(&self, key: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.key == key)
            .map(|h| h.value.as_slice())
    }
}
