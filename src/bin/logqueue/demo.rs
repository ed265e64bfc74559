//! demo: a short tour of what logqueue does, in a fresh directory: the log, a queue,
//! a crash-safe redelivery and a dead letter. The README's first command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use logqueue::{Delivery, Log, LogConfig, Queue, QueueConfig, Record, StartPosition, DLQ_REASON};

use crate::output::{CmdResult, Failure};

#[derive(Args)]
pub struct DemoArgs {
    /// Directory to run in (default: a new one under the temp directory, removed after).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Internal: the process that takes a delivery and crashes (step 3).
    #[arg(long, hide = true)]
    crash_child: bool,
}

fn step(n: u32, text: &str) {
    println!("\n{n}. {text}");
}

pub fn demo(a: DemoArgs) -> CmdResult {
    if a.crash_child {
        let dir = a
            .dir
            .ok_or_else(|| Failure::new(64, "--crash-child needs --dir"))?;
        take_and_crash(&dir).map_err(|e| Failure::engine("demo", e))?;
        return Ok(ExitCode::SUCCESS);
    }
    let (dir, remove) = match a.dir {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("logqueue-demo-{}", std::process::id())),
            true,
        ),
    };
    let result = tour(&dir).map_err(|e| Failure::engine("demo", e));
    if remove {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Step 3's other process: takes a delivery, makes the lease durable, and aborts.
fn take_and_crash(dir: &Path) -> logqueue::Result<()> {
    let log = Log::open(dir, LogConfig::default())?;
    let queue = Queue::open(&log, "emails", QueueConfig::default())?;
    let d = one(queue.receive(1, Duration::ZERO)?)?;
    queue.flush()?;
    println!(
        "   (crashing process) got: {}; aborting before the ack",
        text(d.record.value.as_deref())
    );
    std::process::abort();
}

fn text(bytes: Option<&[u8]>) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes.unwrap_or_default())
}

/// The one delivery a `receive(1, ..)` was expected to return.
fn one(mut got: Vec<Delivery>) -> logqueue::Result<Delivery> {
    got.pop()
        .ok_or_else(|| logqueue::Error::InvalidConfig("demo: the queue delivered nothing".into()))
}

fn queue_config() -> QueueConfig {
    QueueConfig {
        visibility_timeout: Duration::from_millis(200),
        max_deliveries: Some(2),
        start: StartPosition::Latest,
        ..QueueConfig::default()
    }
}

fn tour(dir: &Path) -> logqueue::Result<()> {
    println!("logqueue demo in {}", dir.display());
    the_log(dir)?;
    a_queue(dir)?;
    let (log, queue) = a_crash(dir)?;
    a_dead_letter(&queue)?;
    step(5, "Inspect it from the shell, even while a service has it open (keep the directory with --dir):");
    println!("   logqueue stats {0}\n   logqueue queues {0}\n   logqueue dlq {0} emails list\n   logqueue tail {0} --follow", dir.display());
    println!("\nNext: `logqueue perf queue` measures throughput and latency on this machine.");
    drop(queue);
    log.close()
}

fn the_log(dir: &Path) -> logqueue::Result<()> {
    step(1, "The log: append records, read them back by offset.");
    let log = Log::open(dir, LogConfig::default())?;
    let range = log.append_batch(vec![
        Record::keyed("user-1", "signed up"),
        Record::keyed("user-2", "signed up"),
        Record::keyed("user-1", "upgraded").with_header("plan", "pro"),
    ])?;
    log.flush()?;
    for o in range {
        if let Some(r) = log.read(o)? {
            println!(
                "   offset {o}: {} -> {}",
                text(r.key.as_deref()),
                text(r.value.as_deref())
            );
        }
    }
    log.close()
}

fn a_queue(dir: &Path) -> logqueue::Result<()> {
    step(2, "A queue on the log: send jobs, receive one, ack it.");
    let log = Log::open(dir, LogConfig::default())?;
    let queue = Queue::open(&log, "emails", queue_config())?;
    for to in ["ann@example.com", "bob@example.com", "cyd@example.com"] {
        queue.send(Record::new(format!("welcome mail to {to}")))?;
    }
    let first = one(queue.receive(1, Duration::ZERO)?)?;
    queue.ack(&first.receipt)?;
    println!(
        "   delivered and acked: {}",
        text(first.record.value.as_deref())
    );
    queue.flush()?;
    drop(queue);
    log.close()
}

/// Another process takes a job and aborts; the job comes back on reopen.
fn a_crash(dir: &Path) -> logqueue::Result<(Log, Queue)> {
    step(
        3,
        "Crash: another process takes the next job and dies (abort) before its ack.",
    );
    let io = |op| {
        move |e| logqueue::Error::Io {
            op,
            path: dir.to_path_buf(),
            source: e,
        }
    };
    let status =
        std::process::Command::new(std::env::current_exe().map_err(io("find own executable"))?)
            .args(["demo", "--crash-child", "--dir"])
            .arg(dir)
            .status()
            .map_err(io("run the crashing process"))?;
    println!("   that process ended with {status}");
    let log = Log::open(dir, LogConfig::default())?;
    let queue = Queue::open(&log, "emails", queue_config())?;
    let again = one(queue.receive(1, Duration::ZERO)?)?;
    println!(
        "   after reopening, redelivered (attempt {}): {}",
        again.attempt,
        text(again.record.value.as_deref())
    );
    queue.ack(&again.receipt)?;
    Ok((log, queue))
}

fn a_dead_letter(queue: &Queue) -> logqueue::Result<()> {
    step(
        4,
        "A poison message: the consumer gives up, it goes to the dead-letter log.",
    );
    let bad = one(queue.receive(1, Duration::ZERO)?)?;
    queue.dead_letter(&bad.receipt, "mailbox does not exist")?;
    for r in queue.dead_letters().reader(0)? {
        let r = r?;
        println!(
            "   dead letter: {} (reason: {})",
            text(r.value.as_deref()),
            text(r.header(DLQ_REASON))
        );
    }
    let s = queue.stats();
    println!(
        "   queue stats: floor {}, in flight {}, backlog {}, acked {}, dead-lettered {}",
        s.ack_floor, s.in_flight, s.backlog, s.acked_total, s.dead_lettered_total
    );
    queue.flush()
}
