//! `logqueue`: look at, repair and exercise a logqueue directory from the shell.
//!
//! Read commands (`dump`, `verify`, `stats`, `tail`, `queues`, `dlq list`, `export`)
//! open the log with [`logqueue::Log::open_read_only`]: they work beside a service
//! that has the log open and change no file. Write commands (`produce`, `import`,
//! `delete-records`, `compact`, `retention`, `dlq redrive`, `dlq purge`) take the
//! log's lock and refuse, with exit status 2, while another process has it open.
//!
//! With the `kafka` feature, `mirror` and `import-kafka` copy a log to a Kafka topic
//! and a topic into a log (write commands: they take the lock).
//!
//! Exit status: 0 success; 1 the command ran and found a problem (corrupt data,
//! failed records); 2 the log could not be opened (missing, locked, unreadable); 64
//! bad arguments.

mod admin;
mod demo;
mod dlq;
mod export;
#[cfg(feature = "kafka")]
mod kafka;
mod output;
mod perf;
mod read;
mod stats;
mod time;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Inspect, repair and benchmark logqueue logs.
#[derive(Parser)]
#[command(name = "logqueue", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Records with offsets, timestamps, keys, headers and values; batch headers.
    Dump(read::DumpArgs),
    /// CRC-check everything, cross-check indexes and segment contiguity
    /// (exit 0 clean, 1 corrupt, 2 cannot open).
    Verify(read::VerifyArgs),
    /// Segments, bytes, offsets, dirty ratio, cursors and queues with their lag.
    Stats(stats::StatsArgs),
    /// Print the last records, or records from an offset or time; --follow waits for more.
    Tail(read::TailArgs),
    /// Append lines (or JSON documents) from stdin as records.
    Produce(admin::ProduceArgs),
    /// Per queue: floor, in flight, backlog, delayed, dead letters, oldest unacked, lag.
    Queues(dlq::QueuesArgs),
    /// A queue's dead letters: list, redrive or purge.
    Dlq(dlq::DlqArgs),
    /// Move the start offset up and delete the whole segments below it.
    DeleteRecords(admin::DeleteArgs),
    /// Run one compaction pass (keep the latest record per key).
    Compact(admin::CompactArgs),
    /// Run one retention pass with the given limits.
    Retention(admin::RetentionArgs),
    /// Write records as JSON lines (binary as base64) to stdout.
    Export(export::ExportArgs),
    /// Append records from JSON lines (as written by export) on stdin.
    Import(export::ImportArgs),
    /// Throughput and latency of appends, reads and the queue.
    Perf(perf::PerfArgs),
    /// A guided tour: the log, a queue, a crash-safe redelivery and a dead letter.
    Demo(demo::DemoArgs),
    /// Copy the log to a Kafka topic (at-least-once, from a durable cursor).
    #[cfg(feature = "kafka")]
    Mirror(kafka::MirrorArgs),
    /// Copy a Kafka topic into the log (idempotent: a restart never duplicates).
    #[cfg(feature = "kafka")]
    ImportKafka(kafka::ImportKafkaArgs),
}

fn main() -> ExitCode {
    // Like other Unix tools: output into a closed pipe (`logqueue dump DIR | head`)
    // ends the process quietly instead of a panic in `println!`.
    // SAFETY: setting a signal's disposition to the default at start-up, before any
    // thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dump(a) => read::dump(a),
        Command::Verify(a) => read::verify(a),
        Command::Stats(a) => stats::stats(a),
        Command::Tail(a) => read::tail(a),
        Command::Produce(a) => admin::produce(a),
        Command::Queues(a) => dlq::queues(a),
        Command::Dlq(a) => dlq::dlq(a),
        Command::DeleteRecords(a) => admin::delete_records(a),
        Command::Compact(a) => admin::compact(a),
        Command::Retention(a) => admin::retention(a),
        Command::Export(a) => export::export(a),
        Command::Import(a) => export::import(a),
        Command::Perf(a) => perf::perf(a),
        Command::Demo(a) => demo::demo(a),
        #[cfg(feature = "kafka")]
        Command::Mirror(a) => kafka::mirror(a),
        #[cfg(feature = "kafka")]
        Command::ImportKafka(a) => kafka::import_kafka(a),
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            if !failure.message.is_empty() {
                eprintln!("logqueue: {}", failure.message);
            }
            ExitCode::from(failure.code)
        }
    }
}
