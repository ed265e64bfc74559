//! [`Import`]: a background thread copying every partition of a Kafka topic into a
//! log with [`Log::append_idempotent_batch`], keyed by (topic, partition, offset).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset as KafkaOffset, TopicPartitionList};

use super::rate::Rate;
use super::{broker, client_config};
use crate::{Cursor, CursorConfig, Error, Log, Offset, Record, Result, DEDUP_ID};

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

#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    running: AtomicBool,
    stats: Mutex<ImportStats>,
    rate: Mutex<Rate>,
    consumed: Mutex<u64>,
}

impl Shared {
    fn error(&self, e: &Error) {
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
        let mut worker = Worker {
            log: log.clone(),
            cursor,
            config,
            shared: Arc::clone(&shared),
            positions: BTreeMap::new(),
            started: false,
        };
        let thread = std::thread::Builder::new()
            .name("logqueue-import".into())
            .spawn(move || {
                let result = worker.run();
                worker.shared.running.store(false, Ordering::Release);
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
        let deadline = Instant::now() + timeout;
        loop {
            if self.shared.stats.lock().caught_up {
                return Ok(true);
            }
            if !self.shared.running.load(Ordering::Acquire) {
                return Err(Error::Broker("the import thread has ended".into()));
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the thread, flushes the log and commits the final positions to Kafka;
    /// returns the final stats.
    pub fn stop(mut self) -> Result<ImportStats> {
        self.join()?;
        Ok(self.stats())
    }

    fn join(&mut self) -> Result<()> {
        self.shared.stop.store(true, Ordering::Release);
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| Error::Broker("the import thread panicked".into()))?,
            None => Ok(()),
        }
    }
}

impl Drop for Import {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

/// Records per idempotent append at most: `append_idempotent_batch` compares each
/// id with the earlier ones of its batch (quadratic), so batches stay short.
const APPEND_CHUNK: usize = 512;

/// Longest wait between retries after errors.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The consumer's context: keeps the high watermarks from its statistics.
#[derive(Default)]
struct Watermarks {
    high: Mutex<BTreeMap<i32, i64>>,
}

impl ClientContext for Watermarks {
    fn stats(&self, statistics: Statistics) {
        let mut high = self.high.lock();
        for topic in statistics.topics.values() {
            for (p, s) in &topic.partitions {
                if *p >= 0 && s.hi_offset >= 0 {
                    high.insert(*p, s.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for Watermarks {}

struct Worker {
    log: Log,
    /// Everything of the topic below it in the log is committed to Kafka.
    cursor: Cursor,
    config: ImportConfig,
    shared: Arc<Shared>,
    /// Next offset to import per partition, kept across sessions.
    positions: BTreeMap<i32, i64>,
    /// The first session has set `positions` from [`ImportConfig::start`].
    started: bool,
}

/// A record with its idempotence id `<topic>/<partition>/<offset>`.
type IdRecord = (Vec<u8>, Record);

/// A batch appended to the log, to be committed to Kafka once durable.
struct Pending {
    /// Offset after the batch's last record in the log (original offsets for
    /// duplicates).
    log_end: Offset,
    positions: BTreeMap<i32, i64>,
}

impl Worker {
    fn run(&mut self) -> Result<()> {
        let mut backoff = self.config.retry_backoff;
        loop {
            match self.session() {
                Ok(()) => return Ok(()),
                Err(Error::Closed) => return Err(Error::Closed),
                Err(e) => self.shared.error(&e),
            }
            let until = Instant::now() + backoff;
            while Instant::now() < until {
                if self.shared.stop.load(Ordering::Acquire) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn consumer(&self) -> Result<BaseConsumer<Watermarks>> {
        let mut config = client_config(&self.config.brokers, &[]);
        config
            .set("group.id", &self.config.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", "1000");
        for (k, v) in &self.config.consumer {
            config.set(k, v);
        }
        config
            .create_with_context(Watermarks::default())
            .map_err(|e| broker("create consumer", e))
    }

    /// The topic's partitions, from the broker's metadata.
    fn partitions(&self, consumer: &BaseConsumer<Watermarks>) -> Result<Vec<i32>> {
        let topic = &self.config.topic;
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| broker("fetch metadata", e))?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| Error::Broker(format!("topic {topic} not in the metadata")))?;
        if let Some(e) = t.error() {
            return Err(Error::Broker(format!("topic {topic}: {e:?}")));
        }
        Ok(t.partitions().iter().map(|p| p.id()).collect())
    }

    /// Sets `positions` for partitions without one, from the configured start.
    fn initial_positions(
        &mut self,
        consumer: &BaseConsumer<Watermarks>,
        partitions: &[i32],
    ) -> Result<()> {
        let mut from: BTreeMap<i32, i64> = partitions.iter().map(|p| (*p, 0)).collect();
        if !self.started {
            match &self.config.start {
                ImportStart::Earliest => {}
                ImportStart::Offsets(given) => from.extend(given.iter().copied()),
                ImportStart::Committed => {
                    let mut tpl = TopicPartitionList::new();
                    for p in partitions {
                        tpl.add_partition(&self.config.topic, *p);
                    }
                    let committed = consumer
                        .committed_offsets(tpl, Duration::from_secs(10))
                        .map_err(|e| broker("fetch committed offsets", e))?;
                    for e in committed.elements() {
                        if let KafkaOffset::Offset(o) = e.offset() {
                            from.insert(e.partition(), o);
                        }
                    }
                    self.scan_uncommitted(&mut from)?;
                }
            }
            self.started = true;
        }
        for (p, o) in from {
            self.positions.entry(p).or_insert(o);
        }
        Ok(())
    }

    /// Moves `from` past the records of the topic the log holds after the cursor:
    /// imported, but not committed to Kafka when the last run ended.
    fn scan_uncommitted(&self, from: &mut BTreeMap<i32, i64>) -> Result<()> {
        let start = self.cursor.position().max(self.log.start_offset());
        let prefix = format!("{}/", self.config.topic);
        let mut reader = self.log.reader(start)?;
        let mut unreadable = None;
        reader.read_views(usize::MAX, |view| {
            for (name, value) in view.headers() {
                if name != DEDUP_ID {
                    continue;
                }
                let Some(rest) = value.strip_prefix(prefix.as_bytes()) else {
                    continue;
                };
                match parse_id_rest(rest) {
                    Some((p, o)) => {
                        let next = from.entry(p).or_insert(0);
                        *next = (*next).max(o + 1);
                    }
                    None => {
                        unreadable.get_or_insert(view.offset);
                    }
                }
            }
        })?;
        match unreadable {
            // Fail closed: a resume point we cannot read is not guessed.
            Some(offset) => Err(Error::InvalidArgument(format!(
                "record {offset} of {} has a {DEDUP_ID} header for topic {} that is not \
                 <topic>/<partition>/<offset>",
                self.log.dir().display(),
                self.config.topic
            ))),
            None => Ok(()),
        }
    }

    /// One consumer from `positions` on; `Ok` when stopped.
    fn session(&mut self) -> Result<()> {
        let consumer = self.consumer()?;
        let partitions = self.partitions(&consumer)?;
        self.initial_positions(&consumer, &partitions)?;
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &self.positions {
            tpl.add_partition_offset(&self.config.topic, *p, KafkaOffset::Offset(*o))
                .map_err(|e| broker("assign", e))?;
        }
        consumer.assign(&tpl).map_err(|e| broker("assign", e))?;
        let mut at_end: BTreeMap<i32, bool> = partitions.iter().map(|p| (*p, false)).collect();
        let mut pending: VecDeque<Pending> = VecDeque::new();
        loop {
            if self.shared.stop.load(Ordering::Acquire) {
                // Everything appended becomes durable, then is committed.
                self.log.flush()?;
                self.commit_durable(&consumer, &mut pending)?;
                return Ok(());
            }
            let (batch, next) = self.poll_batch(&consumer, &mut at_end)?;
            if !batch.is_empty() {
                let log_end = self.append(batch)?;
                // Only now: a failed append is consumed again by the next session.
                self.positions.extend(next);
                pending.push_back(Pending {
                    log_end,
                    positions: self.positions.clone(),
                });
            }
            self.commit_durable(&consumer, &mut pending)?;
            self.publish(&consumer, &at_end);
        }
    }

    /// Up to `max_batch` messages: waits up to 100 ms for the first, then takes what
    /// is already fetched. Returns them with the positions after them.
    fn poll_batch(
        &self,
        consumer: &BaseConsumer<Watermarks>,
        at_end: &mut BTreeMap<i32, bool>,
    ) -> Result<(Vec<IdRecord>, BTreeMap<i32, i64>)> {
        let mut batch = Vec::new();
        let mut next = BTreeMap::new();
        let mut wait = Duration::from_millis(100);
        while batch.len() < self.config.max_batch {
            let message = match consumer.poll(wait) {
                None => break,
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p, true);
                    continue;
                }
                Some(Err(e)) => return Err(broker("consume", e)),
                Some(Ok(m)) => m,
            };
            wait = Duration::ZERO;
            at_end.insert(message.partition(), false);
            next.insert(message.partition(), message.offset() + 1);
            batch.push(self.record(&message));
        }
        Ok((batch, next))
    }

    /// A consumed message as `(id, record)`.
    fn record(&self, m: &BorrowedMessage<'_>) -> IdRecord {
        let id = format!("{}/{}/{}", m.topic(), m.partition(), m.offset()).into_bytes();
        let mut record = Record {
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: Vec::new(),
            timestamp: m.timestamp().to_millis(),
        };
        if let Some(headers) = m.headers() {
            for h in headers.iter() {
                record = record.with_header(h.key, h.value.unwrap_or_default());
            }
        }
        (id, record)
    }

    /// Appends a batch idempotently, in log batches of at most [`APPEND_CHUNK`]
    /// records and half the log's `max_batch_bytes` (estimated); returns the offset
    /// after its last record.
    fn append(&self, batch: Vec<IdRecord>) -> Result<Offset> {
        let consumed = batch.len() as u64;
        let limit = u64::from(self.log.config().max_batch_bytes / 2).max(1);
        let mut appended = Vec::with_capacity(batch.len());
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for (id, record) in batch {
            let size = estimated_size(&id, &record);
            if !chunk.is_empty() && (bytes + size > limit || chunk.len() == APPEND_CHUNK) {
                appended.extend(
                    self.log
                        .append_idempotent_batch(std::mem::take(&mut chunk))?,
                );
                bytes = 0;
            }
            bytes += size;
            chunk.push((id, record));
        }
        if !chunk.is_empty() {
            appended.extend(self.log.append_idempotent_batch(chunk)?);
        }
        let duplicates = appended.iter().filter(|a| a.duplicate).count() as u64;
        let log_end = appended.iter().map(|a| a.offset + 1).max().unwrap_or(0);
        let mut s = self.shared.stats.lock();
        s.imported += consumed - duplicates;
        s.duplicates += duplicates;
        s.last_error = None;
        drop(s);
        let mut total = self.shared.consumed.lock();
        *total += consumed;
        self.shared.rate.lock().update(*total);
        Ok(log_end)
    }

    /// Commits to Kafka the positions of the batches now durable in the log.
    fn commit_durable(
        &self,
        consumer: &BaseConsumer<Watermarks>,
        pending: &mut VecDeque<Pending>,
    ) -> Result<()> {
        let durable = self.log.durable_offset();
        let mut last = None;
        while pending.front().is_some_and(|p| p.log_end <= durable) {
            last = pending.pop_front();
        }
        let Some(done) = last else {
            return Ok(());
        };
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &done.positions {
            tpl.add_partition_offset(&self.config.topic, *p, KafkaOffset::Offset(*o))
                .map_err(|e| broker("commit", e))?;
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            // Not committed: keep it for the next try (a later batch supersedes it).
            pending.push_front(done);
            return Err(broker("commit offsets", e));
        }
        // Only after Kafka has them: a restart scans the log from here.
        if done.log_end > self.cursor.position() {
            self.cursor.commit(done.log_end)?;
        }
        Ok(())
    }

    /// Positions, lag and whether every partition is at its end, for `stats()`.
    fn publish(&self, consumer: &BaseConsumer<Watermarks>, at_end: &BTreeMap<i32, bool>) {
        let high = consumer.context().high.lock().clone();
        let lag = (!high.is_empty()).then(|| {
            self.positions
                .iter()
                .map(|(p, o)| high.get(p).map_or(0, |h| (h - o).max(0) as u64))
                .sum()
        });
        let mut s = self.shared.stats.lock();
        s.positions = self.positions.clone();
        s.caught_up = at_end.values().all(|e| *e);
        s.lag = lag;
        drop(s);
        let total = *self.shared.consumed.lock();
        self.shared.rate.lock().update(total);
    }
}

/// `<partition>/<offset>` (the rest of an id after `<topic>/`).
fn parse_id_rest(rest: &[u8]) -> Option<(i32, i64)> {
    let text = std::str::from_utf8(rest).ok()?;
    let (p, o) = text.split_once('/')?;
    Some((p.parse().ok()?, o.parse().ok()?))
}

/// Bytes a record takes in a log batch, about (fields plus framing).
fn estimated_size(id: &[u8], record: &Record) -> u64 {
    let fields = record.key.as_ref().map_or(0, Vec::len)
        + record.value.as_ref().map_or(0, Vec::len)
        + record
            .headers
            .iter()
            .map(|h| h.key.len() + h.value.len() + 10)
            .sum::<usize>();
    (fields + id.len() + crate::DEDUP_ID.len() + 40) as u64
}
