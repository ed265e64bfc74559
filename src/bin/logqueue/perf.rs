//! perf produce | consume | queue: throughput and latency percentiles, like Kafka's
//! perf-test tools. Runs in a fresh directory (removed after) unless --dir is given.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use logqueue::{FlushPolicy, Log, LogConfig, Queue, QueueConfig, Record};
use serde_json::json;

use crate::output::{print_json, progress, CmdResult, Failure, Format, EXIT_USAGE};

#[derive(Args)]
pub struct PerfArgs {
    #[command(subcommand)]
    kind: PerfKind,
}

#[derive(Subcommand)]
enum PerfKind {
    /// Appends: latency of each append call.
    Produce(PerfOpts),
    /// Sequential reads of records appended first: latency of each read.
    Consume(PerfOpts),
    /// Queue send -> receive -> ack: end-to-end latency of each record.
    Queue(PerfOpts),
}

#[derive(Args, Clone)]
struct PerfOpts {
    /// Records in the run.
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Producer (and, for queue, consumer) threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Records per append call (produce).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Records per second to send at, over all threads (0: as fast as possible). The
    /// queue's end-to-end latency is only meaningful below its peak throughput.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Flush policy: always, manual, every:N (records), interval:MS.
    #[arg(long, default_value = "interval:1000")]
    flush: String,
    /// Directory to run in (default: a new one under the temp directory, removed after).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

fn parse_flush(s: &str) -> Result<FlushPolicy, Failure> {
    let bad = || {
        Failure::new(
            EXIT_USAGE,
            format!("--flush {s:?}: use always, manual, every:N or interval:MS"),
        )
    };
    Ok(match s.split_once(':') {
        None if s == "always" => FlushPolicy::Always,
        None if s == "manual" => FlushPolicy::Manual,
        Some(("every", n)) => FlushPolicy::EveryRecords(n.parse().map_err(|_| bad())?),
        Some(("interval", ms)) => {
            FlushPolicy::Interval(Duration::from_millis(ms.parse().map_err(|_| bad())?))
        }
        _ => return Err(bad()),
    })
}

/// The run's directory, removed on drop when it was made for the run.
struct RunDir {
    path: PathBuf,
    remove: bool,
}

impl RunDir {
    fn new(given: Option<PathBuf>) -> RunDir {
        match given {
            Some(path) => RunDir {
                path,
                remove: false,
            },
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos());
                let path = std::env::temp_dir()
                    .join(format!("logqueue-perf-{}-{nanos}", std::process::id()));
                RunDir { path, remove: true }
            }
        }
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Nanosecond latencies -> (p50, p99, p99.9, max) in microseconds.
fn percentiles(mut ns: Vec<u64>) -> [f64; 4] {
    if ns.is_empty() {
        return [0.0; 4];
    }
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() as f64 * q) as usize).min(ns.len() - 1)] as f64 / 1000.0;
    [
        at(0.50),
        at(0.99),
        at(0.999),
        *ns.last().expect("non-empty") as f64 / 1000.0,
    ]
}

pub fn perf(a: PerfArgs) -> CmdResult {
    let (kind, o) = match &a.kind {
        PerfKind::Produce(o) => ("produce", o),
        PerfKind::Consume(o) => ("consume", o),
        PerfKind::Queue(o) => ("queue", o),
    };
    let flush = parse_flush(&o.flush)?;
    let threads = o.threads.max(1);
    let run = RunDir::new(o.dir.clone());
    let config = LogConfig {
        flush,
        ..LogConfig::default()
    };
    let log = Log::open(&run.path, config).map_err(|e| Failure::engine("open", e))?;
    let (elapsed, latencies) = match kind {
        "produce" => produce(&log, o, threads),
        "consume" => consume(&log, o, threads),
        _ => queue(&log, o, threads),
    }
    .map_err(|e| Failure::engine(kind, e))?;
    log.close().map_err(|e| Failure::engine("close", e))?;
    let secs = elapsed.as_secs_f64();
    let rate = o.records as f64 / secs;
    let mb = rate * o.size as f64 / 1e6;
    let [p50, p99, p999, max] = percentiles(latencies);
    match o.format {
        Format::Json => print_json(&json!({
            "kind": kind, "records": o.records, "size": o.size, "threads": threads,
            "batch": o.batch, "flush": o.flush, "rate": o.rate, "seconds": secs,
            "records_per_sec": rate, "mb_per_sec": mb,
            "latency_us": { "p50": p50, "p99": p99, "p99_9": p999, "max": max },
        })),
        Format::Text => println!(
            "perf {kind}: {} records of {} bytes, {threads} thread(s), flush {}: {secs:.2} s, \
             {rate:.0} records/s, {mb:.1} MB/s; latency us p50 {p50:.1} p99 {p99:.1} \
             p99.9 {p999:.1} max {max:.1}",
            o.records, o.size, o.flush
        ),
    }
    Ok(ExitCode::SUCCESS)
}

type Run = logqueue::Result<(Duration, Vec<u64>)>;

/// Runs `work(thread, count)` on `threads` threads splitting `total`; joins the
/// latencies.
fn on_threads(
    total: u64,
    threads: usize,
    work: impl Fn(usize, u64) -> logqueue::Result<Vec<u64>> + Sync,
) -> Run {
    let start = Instant::now();
    let per = total / threads as u64;
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let n = if t == 0 {
                    total - per * (threads as u64 - 1)
                } else {
                    per
                };
                let work = &work;
                s.spawn(move || work(t, n))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("perf thread"))
            .collect()
    });
    let elapsed = start.elapsed();
    let mut all = Vec::with_capacity(total as usize);
    for r in results {
        all.extend(r?);
    }
    Ok((elapsed, all))
}

fn produce(log: &Log, o: &PerfOpts, threads: usize) -> Run {
    if o.rate > 0 {
        return Err(logqueue::Error::InvalidConfig(
            "--rate applies to perf queue".into(),
        ));
    }
    let bar = progress(Some(o.records), "produce");
    let value = vec![b'x'; o.size];
    let batch = o.batch.max(1) as u64;
    let r = on_threads(o.records, threads, |_, n| {
        let mut lat = Vec::with_capacity((n / batch + 1) as usize);
        let mut done = 0;
        while done < n {
            let k = batch.min(n - done);
            let t = Instant::now();
            if k == 1 {
                log.append_slice(None, &value)?;
            } else {
                log.append_batch((0..k).map(|_| Record::new(value.clone())).collect())?;
            }
            lat.push(t.elapsed().as_nanos() as u64);
            done += k;
            bar.inc(k);
        }
        Ok(lat)
    });
    log.flush()?;
    bar.finish_and_clear();
    r
}

fn consume(log: &Log, o: &PerfOpts, threads: usize) -> Run {
    let value = vec![b'x'; o.size];
    let mut left = o.records;
    while left > 0 {
        let k = left.min(500);
        log.append_batch((0..k).map(|_| Record::new(value.clone())).collect())?;
        left -= k;
    }
    log.flush()?;
    let bar = progress(Some(o.records), "consume");
    let per = o.records / threads as u64;
    let r = on_threads(o.records, threads, |t, n| {
        let from = if t == 0 {
            0
        } else {
            o.records - per * (threads - t) as u64
        };
        let mut reader = log.reader(from)?;
        let mut lat = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let t0 = Instant::now();
            match reader.next() {
                Some(r) => drop(r?),
                None => break,
            }
            lat.push(t0.elapsed().as_nanos() as u64);
            if lat.len() % 1024 == 0 {
                bar.inc(1024);
            }
        }
        Ok(lat)
    });
    bar.finish_and_clear();
    r
}

fn queue(log: &Log, o: &PerfOpts, threads: usize) -> Run {
    let q = Queue::open(log, "perf", QueueConfig::default())?;
    let bar = progress(Some(o.records), "queue");
    let epoch = Instant::now();
    let acked = Arc::new(AtomicU64::new(0));
    // A failed producer stops the consumers, which would otherwise wait for ever.
    let failure = failure_slot::Slot::default();
    let size = o.size.max(8);
    let start = Instant::now();
    let total = o.records;
    let result = std::thread::scope(|s| -> logqueue::Result<Vec<u64>> {
        let per = total / threads as u64;
        let gap = (o.rate > 0).then(|| Duration::from_secs_f64(threads as f64 / o.rate as f64));
        for t in 0..threads {
            let q = &q;
            let n = if t == 0 {
                total - per * (threads as u64 - 1)
            } else {
                per
            };
            let failure = &failure;
            s.spawn(move || {
                for i in 0..n {
                    if let Some(gap) = gap {
                        // Paced: this thread's i-th send is due at i * gap from the start.
                        if let Some(wait) = gap.mul_f64(i as f64).checked_sub(start.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let mut value = vec![b'x'; size];
                    let sent = epoch.elapsed().as_nanos() as u64;
                    value[..8].copy_from_slice(&sent.to_le_bytes());
                    if let Err(e) = q.send(Record::new(value)) {
                        failure.set(e);
                        return;
                    }
                }
            });
        }
        let consumers: Vec<_> = (0..threads)
            .map(|_| {
                let (q, acked, bar, failure) = (&q, Arc::clone(&acked), &bar, &failure);
                s.spawn(move || -> logqueue::Result<Vec<u64>> {
                    let mut lat = Vec::new();
                    while acked.load(Ordering::Relaxed) < total && !failure.is_set() {
                        for d in q.receive(64, Duration::from_millis(50))? {
                            let v = d.record.value.as_deref().unwrap_or_default();
                            let sent = v
                                .get(..8)
                                .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
                            q.ack(&d.receipt)?;
                            lat.push((epoch.elapsed().as_nanos() as u64).saturating_sub(sent));
                            acked.fetch_add(1, Ordering::Relaxed);
                            bar.inc(1);
                        }
                    }
                    Ok(lat)
                })
            })
            .collect();
        let mut all = Vec::with_capacity(total as usize);
        for c in consumers {
            all.extend(c.join().expect("consumer thread")?);
        }
        Ok(all)
    });
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    if let Some(e) = failure.take() {
        return Err(e);
    }
    q.flush()?;
    Ok((elapsed, result?))
}

mod failure_slot {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    /// The first error of a producer thread.
    #[derive(Default)]
    pub struct Slot {
        set: AtomicBool,
        error: Mutex<Option<logqueue::Error>>,
    }

    impl Slot {
        pub fn set(&self, e: logqueue::Error) {
            if let Ok(mut slot) = self.error.lock() {
                slot.get_or_insert(e);
            }
            self.set.store(true, Ordering::Release);
        }

        pub fn is_set(&self) -> bool {
            self.set.load(Ordering::Acquire)
        }

        pub fn take(&self) -> Option<logqueue::Error> {
            self.error.lock().ok()?.take()
        }
    }
}
