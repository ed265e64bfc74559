//! mirror / import-kafka (feature `kafka`): copy a log to a Kafka topic, or a topic
//! into a log, with progress and lag on stderr (one line a second) and a summary on
//! stdout. Both take the log's lock (the mirror commits its cursor, the import
//! appends). See `docs/scale-out.md`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use logqueue::kafka::{create_topic, Import, ImportConfig, ImportStart, Mirror, MirrorConfig};
use logqueue::DedupConfig;

use crate::output::{open_write, tool_config, CmdResult, Failure, EXIT_PROBLEM};

#[derive(Args)]
pub struct MirrorArgs {
    /// The log directory.
    dir: PathBuf,
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...].
    #[arg(long)]
    brokers: String,
    /// The topic to write to (created with --partitions if missing).
    #[arg(long)]
    topic: String,
    /// Partitions of the topic when it has to be created.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// The log cursor holding the mirror's position.
    #[arg(long, default_value = "kafka-mirror")]
    cursor: String,
    /// Keep mirroring new appends until killed (default: stop once caught up with
    /// the end of the log as it was at start).
    #[arg(long)]
    follow: bool,
}

pub fn mirror(a: MirrorArgs) -> CmdResult {
    create_topic(&a.brokers, &a.topic, a.partitions).map_err(|e| Failure::engine("mirror", e))?;
    let log = open_write(&a.dir, tool_config())?;
    let mut config = MirrorConfig::new(&a.brokers, &a.topic);
    config.cursor = a.cursor;
    let end = log.end_offset();
    let mirror = Mirror::start(&log, config).map_err(|e| Failure::engine("mirror", e))?;
    let mut last_line = Instant::now();
    loop {
        let done = mirror
            .wait_for(end, Duration::from_millis(200))
            .map_err(|e| Failure::engine("mirror", e))?;
        if done && !a.follow {
            break;
        }
        if last_line.elapsed() >= Duration::from_secs(1) {
            let s = mirror.stats();
            eprintln!(
                "mirror: position {} of {}, lag {}, {:.0} records/s, errors {}{}",
                s.position,
                s.end_offset,
                s.lag,
                s.records_per_sec,
                s.errors,
                s.last_error
                    .map(|e| format!(" (last: {e})"))
                    .unwrap_or_default()
            );
            last_line = Instant::now();
        }
    }
    let s = mirror.stop().map_err(|e| Failure::engine("mirror", e))?;
    println!(
        "mirrored {} records to {}: position {}, lag {}, errors {}",
        s.acknowledged, a.topic, s.position, s.lag, s.errors
    );
    log.close().map_err(|e| Failure::engine("close", e))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct ImportKafkaArgs {
    /// The log directory (created if missing).
    dir: PathBuf,
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...].
    #[arg(long)]
    brokers: String,
    /// The topic to read (all partitions).
    #[arg(long)]
    topic: String,
    /// Consumer group holding the resume point (offsets committed, group never joined).
    #[arg(long, default_value = "logqueue-import")]
    group: String,
    /// Start at offset 0 of every partition instead of the group's committed offsets
    /// (records already imported are recognized within the dedup window).
    #[arg(long)]
    from_beginning: bool,
    /// The log's dedup window in seconds: a restart within it never duplicates.
    #[arg(long, default_value_t = 3600)]
    dedup_window_secs: u64,
    /// Ids the dedup window remembers at most.
    #[arg(long, default_value_t = 1_000_000)]
    dedup_max_ids: usize,
    /// Keep importing until killed (default: stop once every partition is read to
    /// its end).
    #[arg(long)]
    follow: bool,
}

pub fn import_kafka(a: ImportKafkaArgs) -> CmdResult {
    let config = logqueue::LogConfig {
        dedup: Some(DedupConfig {
            window: Duration::from_secs(a.dedup_window_secs.max(1)),
            max_ids: a.dedup_max_ids,
        }),
        ..tool_config()
    };
    let log = open_write(&a.dir, config)?;
    let mut config = ImportConfig::new(&a.brokers, &a.topic);
    config.group = a.group;
    if a.from_beginning {
        config.start = ImportStart::Earliest;
    }
    let import = Import::start(&log, config).map_err(|e| Failure::engine("import-kafka", e))?;
    let mut last_line = Instant::now();
    loop {
        let done = import
            .wait_caught_up(Duration::from_millis(200))
            .map_err(|e| Failure::engine("import-kafka", e))?;
        if done && !a.follow {
            break;
        }
        if last_line.elapsed() >= Duration::from_secs(1) {
            let s = import.stats();
            eprintln!(
                "import-kafka: imported {}, duplicates {}, lag {}, {:.0} records/s, errors {}{}",
                s.imported,
                s.duplicates,
                s.lag.map_or("?".to_string(), |l| l.to_string()),
                s.records_per_sec,
                s.errors,
                s.last_error
                    .map(|e| format!(" (last: {e})"))
                    .unwrap_or_default()
            );
            last_line = Instant::now();
        }
    }
    let s = import
        .stop()
        .map_err(|e| Failure::engine("import-kafka", e))?;
    println!(
        "imported {} records from {} ({} duplicates skipped); log end {}",
        s.imported,
        a.topic,
        s.duplicates,
        log.end_offset()
    );
    log.close().map_err(|e| Failure::engine("close", e))?;
    Ok(if s.errors > 0 && s.last_error.is_some() {
        ExitCode::from(EXIT_PROBLEM)
    } else {
        ExitCode::SUCCESS
    })
}
