//! The thread behind [`super::Import`]: one consumer session after another (a
//! failed one is retried after a backoff), appending batches idempotently and
//! committing what is durable.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset as KafkaOffset, TopicPartitionList};

use super::import::{ImportConfig, ImportStart, Shared};
use super::{broker, client_config};
use crate::{Cursor, Error, Log, Offset, Record, Result, DEDUP_ID};

/// Records per idempotent append at most: a bounded batch (its records, ids and the
/// window's prefetches) per call, and a durable point reached often.
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

pub(super) struct Worker {
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
    pub(super) fn new(
        log: Log,
        cursor: Cursor,
        config: ImportConfig,
        shared: Arc<Shared>,
    ) -> Worker {
        Worker {
            log,
            cursor,
            config,
            shared,
            positions: BTreeMap::new(),
            started: false,
        }
    }

    pub(super) fn run(&mut self) -> Result<()> {
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
