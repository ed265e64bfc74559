//! [`Mirror`]: a background thread copying a log to a Kafka topic from a durable,
//! protecting cursor that advances only below records the broker acknowledged.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};

use super::rate::Rate;
use super::{broker, client_config, LOG_HEADER, OFFSET_HEADER};
use crate::{Cursor, CursorConfig, Error, Log, Offset, RecordView, Result};

/// How a [`Mirror`] runs. Build with [`MirrorConfig::new`], then set fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MirrorConfig {
    /// `bootstrap.servers`: `HOST:PORT[,HOST:PORT...]`.
    pub brokers: String,
    /// The topic to write to (create it first, see [`super::create_topic`]).
    pub topic: String,
    /// The log cursor holding the mirror's position (default `kafka-mirror`). It
    /// protects: retention keeps every record the broker has not acknowledged.
    pub cursor: String,
    /// The value of the [`LOG_HEADER`] header; default [`super::log_id`].
    pub log_id: Option<String>,
    /// librdkafka producer settings, applied over the mirror's defaults
    /// (`enable.idempotence=true`, `partitioner=murmur2_random` as Kafka's Java
    /// client, `linger.ms=5`, `message.timeout.ms=30000`).
    pub producer: Vec<(String, String)>,
    /// Records sent and not yet acknowledged, at most (default 100,000).
    pub max_in_flight: usize,
    /// First wait after a broker error; doubles up to 10 s (default 100 ms).
    pub retry_backoff: Duration,
    /// [`MirrorStats::lag_alarm`] is set while the lag is at least this many records.
    pub lag_alarm: Option<u64>,
    /// How long [`Mirror::stop`] waits for the broker to acknowledge what was sent
    /// (default 30 s); what is still unacknowledged then is sent again next start.
    pub stop_timeout: Duration,
}

impl MirrorConfig {
    /// Mirror to `topic` on `brokers` with the defaults.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> MirrorConfig {
        MirrorConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            cursor: "kafka-mirror".to_string(),
            log_id: None,
            producer: Vec::new(),
            max_in_flight: 100_000,
            retry_backoff: Duration::from_millis(100),
            lag_alarm: None,
            stop_timeout: Duration::from_secs(30),
        }
    }
}

/// What a [`Mirror`] has done ([`Mirror::stats`]).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct MirrorStats {
    /// The cursor: every record below it is acknowledged by the broker.
    pub position: Offset,
    /// The log's end offset.
    pub end_offset: Offset,
    /// Records not yet acknowledged: `end_offset - position`.
    pub lag: u64,
    /// The lag reached [`MirrorConfig::lag_alarm`].
    pub lag_alarm: bool,
    /// Records handed to the producer since start (resends included).
    pub sent: u64,
    /// Records the broker acknowledged since start.
    pub acknowledged: u64,
    /// Acknowledged records per second over the last second or so.
    pub records_per_sec: f64,
    /// Errors since start (each one retried after a backoff).
    pub errors: u64,
    /// The latest error, until a later acknowledgement clears it.
    pub last_error: Option<String>,
    /// The background thread is running.
    pub running: bool,
}

/// A running copy of a log to a Kafka topic. See the [module](super) for the
/// guarantee (at-least-once, duplicates carry the same [`OFFSET_HEADER`]).
///
/// Each record goes out with its key, value (a tombstone stays a tombstone), headers
/// and timestamp (as the Kafka CreateTime), plus [`LOG_HEADER`] and
/// [`OFFSET_HEADER`]; partitioned by key with Kafka's default partitioner (murmur2),
/// so the records of a key keep their order in one partition. Keyless records go to
/// random partitions. Records deleted before the mirror read them (only
/// [`Log::delete_records_before`] can, the cursor holds retention) are an error in the
/// stats, retried, never skipped silently. Mirror a queue's dead-letter log the same
/// way, to its own topic: `Mirror::start(&queue.dead_letters(), config)`.
#[derive(Debug)]
pub struct Mirror {
    shared: Arc<Shared>,
    cursor: Cursor,
    log: Log,
    lag_alarm: Option<u64>,
    thread: Option<JoinHandle<Result<()>>>,
}

#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    running: AtomicBool,
    counters: Mutex<Counters>,
}

#[derive(Debug)]
struct Counters {
    sent: u64,
    acknowledged: u64,
    errors: u64,
    last_error: Option<String>,
    rate: Rate,
}

impl Shared {
    fn error(&self, e: &Error) {
        let mut c = self.counters.lock();
        c.errors += 1;
        c.last_error = Some(e.to_string());
    }
}

impl Mirror {
    /// Opens (or creates) the cursor [`MirrorConfig::cursor`], protecting, and starts
    /// the background thread copying from its position.
    pub fn start(log: &Log, config: MirrorConfig) -> Result<Mirror> {
        if config.max_in_flight == 0 {
            return Err(Error::InvalidConfig(
                "MirrorConfig::max_in_flight must be positive".into(),
            ));
        }
        let cursor = log.cursor(&config.cursor, CursorConfig { protect: true })?;
        let log_id = match &config.log_id {
            Some(id) => id.clone(),
            None => super::log_id(log)?,
        };
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            running: AtomicBool::new(true),
            counters: Mutex::new(Counters {
                sent: 0,
                acknowledged: 0,
                errors: 0,
                last_error: None,
                rate: Rate::new(),
            }),
        });
        let lag_alarm = config.lag_alarm;
        let worker = Worker {
            log: log.clone(),
            cursor: cursor.clone(),
            config,
            log_id,
            shared: Arc::clone(&shared),
        };
        let thread = std::thread::Builder::new()
            .name("logqueue-mirror".into())
            .spawn(move || {
                let result = worker.run();
                worker.shared.running.store(false, Ordering::Release);
                result
            })
            .map_err(|e| Error::io("spawn mirror thread", log.dir(), e))?;
        Ok(Mirror {
            shared,
            cursor,
            log: log.clone(),
            lag_alarm,
            thread: Some(thread),
        })
    }

    /// Position, lag, counts, rate and the latest error.
    pub fn stats(&self) -> MirrorStats {
        let position = self.cursor.position();
        let end_offset = self.log.end_offset();
        let lag = end_offset.saturating_sub(position);
        let c = self.shared.counters.lock();
        MirrorStats {
            position,
            end_offset,
            lag,
            lag_alarm: self.lag_alarm.is_some_and(|alarm| lag >= alarm),
            sent: c.sent,
            acknowledged: c.acknowledged,
            records_per_sec: c.rate.per_sec(),
            errors: c.errors,
            last_error: c.last_error.clone(),
            running: self.shared.running.load(Ordering::Acquire),
        }
    }

    /// Waits until every record below `offset` is acknowledged (the cursor is at or
    /// past it). `Ok(false)` on timeout; the thread's error if it ended.
    pub fn wait_for(&self, offset: Offset, timeout: Duration) -> Result<bool> {
        super::worker::wait_until(
            "mirror",
            &self.shared.running,
            timeout,
            Duration::from_millis(2),
            || self.cursor.position() >= offset,
        )
    }

    /// Stops the thread after the broker acknowledged what was sent (up to
    /// [`MirrorConfig::stop_timeout`]), commits the cursor, and returns the final stats.
    pub fn stop(mut self) -> Result<MirrorStats> {
        self.join()?;
        Ok(self.stats())
    }

    fn join(&mut self) -> Result<()> {
        super::worker::stop_and_join("mirror", &self.shared.stop, &mut self.thread)
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

/// Longest wait between retries after broker errors.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Records read from the log per round of the loop, at most.
const READ_CHUNK: usize = 4096;

/// The background thread's state.
struct Worker {
    log: Log,
    cursor: Cursor,
    config: MirrorConfig,
    log_id: String,
    shared: Arc<Shared>,
}

/// Delivery reports, collected by the producer's callback (run inside `poll`).
#[derive(Default)]
struct Acks {
    reports: Mutex<Vec<(Offset, std::result::Result<(), String>)>>,
    client_error: Mutex<Option<String>>,
}

impl ClientContext for Acks {
    fn error(&self, error: KafkaError, reason: &str) {
        *self.client_error.lock() = Some(format!("{error}: {reason}"));
    }
}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, offset: usize) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.to_string()),
        };
        self.reports.lock().push((offset as Offset, outcome));
    }
}

/// Records sent and not all acknowledged yet, in offset order: the cursor may move to
/// the first unacknowledged one (or, with none, past the last one read).
struct InFlight {
    sent: VecDeque<(Offset, bool)>,
}

impl InFlight {
    fn ack(&mut self, offset: Offset) {
        if let Ok(i) = self.sent.binary_search_by_key(&offset, |(o, _)| *o) {
            self.sent[i].1 = true;
        }
        while self.sent.front().is_some_and(|(_, acked)| *acked) {
            self.sent.pop_front();
        }
    }

    /// Where the cursor may go when the reader stands at `read_to`.
    fn committable(&self, read_to: Offset) -> Offset {
        self.sent.front().map_or(read_to, |(o, _)| *o)
    }
}

impl Worker {
    /// Runs sessions until stopped; a failed session is retried after a backoff.
    fn run(&self) -> Result<()> {
        let mut backoff = self.config.retry_backoff;
        loop {
            match self.session() {
                Ok(()) => return Ok(()),
                Err(Error::Closed) => return Err(Error::Closed),
                // Ended by a stop while the producer's queue was full: not a failure.
                Err(_) if self.shared.stop.load(Ordering::Acquire) => return Ok(()),
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

    fn producer(&self) -> Result<BaseProducer<Acks>> {
        let defaults = [
            ("enable.idempotence", "true"),
            ("partitioner", "murmur2_random"),
            ("linger.ms", "5"),
            ("message.timeout.ms", "30000"),
        ];
        let mut config = client_config(&self.config.brokers, &[]);
        for (k, v) in defaults {
            config.set(k, v);
        }
        let in_flight = self.config.max_in_flight.clamp(1, 10_000_000).to_string();
        config.set("queue.buffering.max.messages", in_flight);
        for (k, v) in &self.config.producer {
            config.set(k, v);
        }
        config
            .create_with_context(Acks::default())
            .map_err(|e| broker("create producer", e))
    }

    /// One producer from the cursor's position on: returns `Ok` when stopped, an
    /// error on the first failed delivery (the next session sends again from the
    /// cursor: at-least-once).
    fn session(&self) -> Result<()> {
        let producer = self.producer()?;
        let mut reader = self.log.reader(self.cursor.position())?;
        let mut in_flight = InFlight {
            sent: VecDeque::new(),
        };
        loop {
            let stopping = self.shared.stop.load(Ordering::Acquire);
            if stopping {
                // Whatever is unacknowledged after the timeout is sent again next time.
                let _ = producer.flush(self.config.stop_timeout);
            }
            producer.poll(Duration::ZERO);
            self.settle(&producer, &mut in_flight)?;
            let to = in_flight.committable(reader.position());
            if to > self.cursor.position() {
                self.cursor.commit(to)?;
            }
            if stopping {
                return Ok(());
            }
            let room = self
                .config
                .max_in_flight
                .saturating_sub(in_flight.sent.len());
            if room == 0 {
                producer.poll(Duration::from_millis(10));
                continue;
            }
            let sent = self.send_some(&producer, &mut reader, &mut in_flight, room)?;
            if sent == 0 {
                // Nothing new in the log: wait for acknowledgements (or appends).
                producer.poll(Duration::from_millis(20));
            }
        }
    }

    /// Applies the delivery reports; the first failure ends the session.
    fn settle(&self, producer: &BaseProducer<Acks>, in_flight: &mut InFlight) -> Result<()> {
        let reports = std::mem::take(&mut *producer.context().reports.lock());
        let mut acked = 0;
        let mut failure = None;
        for (offset, outcome) in reports {
            match outcome {
                Ok(()) => {
                    in_flight.ack(offset);
                    acked += 1;
                }
                Err(e) => {
                    failure.get_or_insert(format!("delivery of offset {offset} failed: {e}"));
                }
            }
        }
        let client_error = producer.context().client_error.lock().take();
        let mut c = self.shared.counters.lock();
        c.acknowledged += acked;
        let total = c.acknowledged;
        c.rate.update(total);
        if let Some(e) = client_error {
            c.errors += 1;
            c.last_error = Some(e);
        } else if acked > 0 && failure.is_none() {
            c.last_error = None;
        }
        drop(c);
        match failure {
            Some(e) => Err(Error::Broker(e)),
            None => Ok(()),
        }
    }

    /// Reads up to `room` records (at most [`READ_CHUNK`]) and hands them to the
    /// producer; returns how many. On a failure, first lets the broker acknowledge
    /// what was sent before it and commits that, so a record the broker refuses
    /// holds the mirror at itself (reported, retried) without sending the records
    /// before it again and again.
    fn send_some(
        &self,
        producer: &BaseProducer<Acks>,
        reader: &mut crate::LogReader,
        in_flight: &mut InFlight,
        room: usize,
    ) -> Result<usize> {
        let mut failed: Option<Error> = None;
        let mut count = 0;
        // Everything below it was handed to the producer.
        let mut unsent = crate::LogReader::position(reader);
        let read = reader.read_views(room.min(READ_CHUNK), |view| {
            if failed.is_some() {
                return;
            }
            match self.send_one(producer, &view) {
                Ok(()) => {
                    in_flight.sent.push_back((view.offset, false));
                    unsent = view.offset + 1;
                    count += 1;
                }
                Err(e) => failed = Some(e),
            }
        });
        self.shared.counters.lock().sent += count as u64;
        let failed = match (read, failed) {
            (Ok(_), None) => return Ok(count),
            (Err(e), _) | (Ok(_), Some(e)) => e,
        };
        // The reader went past records not sent: this session ends, and the next one
        // starts again from the cursor, which must stay at or below `unsent`.
        let _ = producer.flush(self.config.stop_timeout);
        producer.poll(Duration::ZERO);
        self.settle(producer, in_flight)?;
        let to = in_flight.committable(unsent);
        if to > self.cursor.position() {
            self.cursor.commit(to)?;
        }
        Err(failed)
    }

    /// Enqueues one record, waiting while the producer's queue is full.
    fn send_one(&self, producer: &BaseProducer<Acks>, view: &RecordView<'_>) -> Result<()> {
        let offset = view.offset.to_string();
        let mut headers = OwnedHeaders::new_with_capacity(view.headers().count() + 2);
        for (key, value) in view.headers() {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        headers = headers
            .insert(Header {
                key: LOG_HEADER,
                value: Some(self.log_id.as_bytes()),
            })
            .insert(Header {
                key: OFFSET_HEADER,
                value: Some(offset.as_bytes()),
            });
        let opaque = usize::try_from(view.offset)
            .map_err(|_| Error::Broker(format!("offset {} beyond usize", view.offset)))?;
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(&self.config.topic, opaque)
                .timestamp(view.timestamp)
                .headers(headers);
        record.key = view.key;
        record.payload = view.value;
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(5));
                    if self.shared.stop.load(Ordering::Acquire) {
                        return Err(Error::Broker("stopped while the queue was full".into()));
                    }
                }
                Err((e, _)) => {
                    return Err(broker(&format!("send offset {}", view.offset), e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_may_move_only_over_the_lowest_contiguous_acknowledged_run() {
        let mut f = InFlight {
            sent: [3, 4, 7, 8].iter().map(|o| (*o, false)).collect(),
        };
        assert_eq!(f.committable(9), 3);
        f.ack(4);
        f.ack(8);
        assert_eq!(f.committable(9), 3, "3 is not acknowledged yet");
        f.ack(3);
        assert_eq!(f.committable(9), 7, "over 3 and 4, up to unacknowledged 7");
        f.ack(99); // not in flight (a late report of an earlier session): ignored
        f.ack(7);
        assert_eq!(
            f.committable(9),
            9,
            "all acknowledged: up to where reading stopped"
        );
        assert!(f.sent.is_empty());
    }
}
