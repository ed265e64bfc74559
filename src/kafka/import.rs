//! [`Import`]: a background thread copying every partition of a Kafka topic into a
//! log with [`Log::append_idempotent_batch`], keyed by (topic, partition, offset).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use super::import_worker::Worker;
use super::rate::Rate;
use crate::{CursorConfig, Error, Log, Result};

/// Where an [`Import`] starts reading each partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportStart {
    /// Resuming: the offsets committed in Kafka for [`ImportConfig::group`], moved
    /// past the records of the topic the log holds after [`ImportConfig::cursor`]
    /// (imported, not yet committed when the process stopped); offset 0 (or the
    /// earliest kept) for a partition with neither.
    Committed,
    /// Offset 0 of every partition (or the earliest the broker still keeps).
    Earliest,
    /// These `(partition, offset)` positions; partitions not listed start at 0.
    Offsets(Vec<(i32, i64)>),
}

/// How an [`Import`] runs. Build with [`ImportConfig::new`], then set fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ImportConfig {
    /// `bootstrap.servers`: `HOST:PORT[,HOST:PORT...]`.
    pub brokers: String,
    /// The topic to read, all of its partitions.
    pub topic: String,
    /// The consumer group whose committed offsets hold the resume point (default
    /// `logqueue-import`). The import commits offsets for it but never joins it:
    /// partitions are assigned, not subscribed.
    pub group: String,
    /// Where to start (default [`ImportStart::Committed`]).
    pub start: ImportStart,
    /// The log cursor (not protecting) marking the log offset up to which the
    /// Kafka offsets are committed (default `kafka-import`); a restart scans the log
    /// from it for records imported after the last commit. Give each import into
    /// one log its own cursor.
    pub cursor: String,
    /// librdkafka consumer settings, applied over the import's defaults.
    pub consumer: Vec<(String, String)>,
    /// Records appended per batch, at most (default 10,000).
    pub max_batch: usize,
    /// First wait after an error; doubles up to 10 s (default 100 ms).
    pub retry_backoff: Duration,
}

impl ImportConfig {
    /// Import `topic` from `brokers` with the defaults.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> ImportConfig {
        ImportConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            group: "logqueue-import".to_string(),
            start: ImportStart::Committed,
            cursor: "kafka-import".to_string(),
            consumer: Vec::new(),
            max_batch: 10_000,
            retry_backoff: Duration::from_millis(100),
        }
    }
}

/// What an [`Import`] has done ([`Import::stats`]).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ImportStats {
    /// Records appended to the log since start.
    pub imported: u64,
    /// Records consumed again and recognized as already in the log (not appended).
    pub duplicates: u64,
    /// Records in the topic past the import's positions, from the high watermarks
    /// the broker reported on fetches (refreshed about once a second; `None` before
    /// the first report).
    pub lag: Option<u64>,
    /// Every partition was read to its end at the last fetch.
    pub caught_up: bool,
    /// Next offset to import, per partition.
    pub positions: BTreeMap<i32, i64>,
    /// Records consumed per second over the last second or so.
    pub records_per_sec: f64,
    /// Errors since start (each one retried after a backoff).
    pub errors: u64,
    /// The latest error, until a later successful batch clears it.
    pub last_error: Option<String>,
    /// The background thread is running.
    pub running: bool,
}

/// A running copy of a Kafka topic into a log.
///
/// Every partition is read in order and its records are appended in that order, so
/// the records of one partition (hence of one key, under Kafka's key partitioning)
/// keep their order in the log; records of different partitions interleave. Each
/// record keeps its key, value (a tombstone stays one), headers (a header with a
/// null value becomes an empty one) and timestamp, and gets the id
/// `<topic>/<partition>/<offset>` in the header [`crate::DEDUP_ID`].
///
/// No duplicates across crashes and restarts: offsets are committed to Kafka (for
/// [`ImportConfig::group`]) only once the records are durable in the log
/// ([`Log::durable_offset`]), then the cursor [`ImportConfig::cursor`] moves to
/// the log offset they cover. A restart ([`ImportStart::Committed`]) reads the
/// records after that cursor (those appended since the last commit: about one
/// flush interval) and resumes after the last one of each partition, so nothing the
/// log holds is consumed again. As a second line, every append goes through
/// [`Log::append_idempotent_batch`], which needs the log's dedup window
/// ([`crate::LogConfig::dedup`]; [`Import::start`] refuses a log without one): it
/// recognizes records consumed again after an explicit [`ImportStart::Earliest`] or
/// [`ImportStart::Offsets`] while their ids are in the window (the window judges
/// ids by the records' timestamps, the Kafka CreateTime the import keeps).
#[derive(Debug)]
pub struct Import {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Result<()>>>,
}

/// State shared with the worker thread.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) stop: AtomicBool,
    pub(super) running: AtomicBool,
    pub(super) stats: Mutex<ImportStats>,
    pub(super) rate: Mutex<Rate>,
    /// Records consumed since start (appended or duplicates), for the rate.
    pub(super) consumed: Mutex<u64>,
}

impl Shared {
    pub(super) fn error(&self, e: &Error) {
        let mut s = self.stats.lock();
        s.errors += 1;
        s.last_error = Some(e.to_string());
    }
}

impl Import {
    /// Starts the background thread. [`Error::InvalidConfig`] when the log has no
    /// dedup window.
    pub fn start(log: &Log, config: ImportConfig) -> Result<Import> {
        if log.config().dedup.is_none() {
            return Err(Error::InvalidConfig(format!(
                "{}: kafka::Import needs LogConfig::dedup (idempotent appends)",
                log.dir().display()
            )));
        }
        if config.max_batch == 0 {
            return Err(Error::InvalidConfig(
                "ImportConfig::max_batch must be positive".into(),
            ));
        }
        let cursor = log.cursor(&config.cursor, CursorConfig { protect: false })?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            running: AtomicBool::new(true),
            stats: Mutex::new(ImportStats::default()),
            rate: Mutex::new(Rate::new()),
            consumed: Mutex::new(0),
        });
        let mut worker = Worker::new(log.clone(), cursor, config, Arc::clone(&shared));
        let running = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("logqueue-import".into())
            .spawn(move || {
                let result = worker.run();
                running.running.store(false, Ordering::Release);
                result
            })
            .map_err(|e| Error::io("spawn import thread", log.dir(), e))?;
        Ok(Import {
            shared,
            thread: Some(thread),
        })
    }

    /// Counts, positions, lag, rate and the latest error.
    pub fn stats(&self) -> ImportStats {
        let mut s = self.shared.stats.lock().clone();
        s.records_per_sec = self.shared.rate.lock().per_sec();
        s.running = self.shared.running.load(Ordering::Acquire);
        s
    }

    /// Waits until every partition was read to its end ([`ImportStats::caught_up`]).
    /// `Ok(false)` on timeout; an error if the thread ended.
    pub fn wait_caught_up(&self, timeout: Duration) -> Result<bool> {
        super::worker::wait_until(
            "import",
            &self.shared.running,
            timeout,
            Duration::from_millis(5),
            || self.shared.stats.lock().caught_up,
        )
    }

    /// Stops the thread, flushes the log and commits the final positions to Kafka;
    /// returns the final stats.
    pub fn stop(mut self) -> Result<ImportStats> {
        self.join()?;
        Ok(self.stats())
    }

    fn join(&mut self) -> Result<()> {
        super::worker::stop_and_join("import", &self.shared.stop, &mut self.thread)
    }
}

impl Drop for Import {
    fn drop(&mut self) {
        let _ = self.join();
    }
}
