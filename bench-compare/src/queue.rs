//! logqueue's `Queue` against SQLite used as a job queue, in one process, on the same
//! disk, one consumer, the same records (64-byte payloads) for both.
//!
//! ```text
//! cd bench-compare && cargo run --release -- queue [RECORDS [RUNS]]
//! ```
//!
//! SQLite (bundled with rusqlite) is set up the usual way for a queue: a table
//! `jobs(id INTEGER PRIMARY KEY, payload BLOB, leased_until INTEGER, done INTEGER)` in
//! WAL mode with `synchronous=NORMAL` (a commit is written to the WAL, not fsynced:
//! it survives a process crash, not a power loss, as logqueue's receive and ack do
//! without `Queue::flush`). A receive is one `BEGIN IMMEDIATE` transaction running
//! `UPDATE jobs SET leased_until = now + 30 s WHERE id IN (SELECT id FROM jobs WHERE
//! done = 0 AND leased_until <= now ORDER BY id LIMIT n) RETURNING id, payload`; an
//! ack is `DELETE FROM jobs WHERE id = ?` (a batch of them in one transaction for the
//! batch-100 workload). The rows are inserted before the clock starts, as the log's
//! records are appended before it; each engine's timed part is receive + ack only.
//!
//! Workloads: receive 1 + `ack` per record; receive 100 + `ack_many` (SQLite: the
//! 100 deletes in one transaction). The two engines alternate, `RUNS` times (default
//! 3); medians are printed.

use std::path::Path;
use std::time::Duration;

use logqueue::{FlushPolicy, Log, LogConfig, Queue, QueueConfig, Record};
use rusqlite::{params, Connection};

use crate::{medians, rate, Timer, Took};

const PAYLOAD_BYTES: usize = 64;
const LEASE_MS: i64 = 30_000;

/// Runs the comparison and prints a table.
pub fn compare(records: u64, runs: usize, base: &Path) {
    println!(
        "queue: {records} records of {PAYLOAD_BYTES} B, one consumer, {runs} runs each, in {}",
        base.display()
    );
    for batch in [1usize, 100] {
        let mut lq = Vec::new();
        let mut sq = Vec::new();
        for run in 0..runs {
            let lq_dir = tempfile::tempdir_in(base).expect("temp dir");
            let sq_dir = tempfile::tempdir_in(base).expect("temp dir");
            let (a, b) = if run % 2 == 0 {
                let a = logqueue_cycle(lq_dir.path(), records, batch);
                (a, sqlite_cycle(sq_dir.path(), records, batch))
            } else {
                let b = sqlite_cycle(sq_dir.path(), records, batch);
                (logqueue_cycle(lq_dir.path(), records, batch), b)
            };
            lq.push(rate(records, a));
            sq.push(rate(records, b));
            println!(
                "batch {batch} run {}: logqueue {:.0} records/s ({:.0} cpu), sqlite {:.0} ({:.0} cpu)",
                run + 1,
                lq[run].0,
                lq[run].1,
                sq[run].0,
                sq[run].1
            );
        }
        let (lw, lc) = medians(&lq);
        let (sw, sc) = medians(&sq);
        println!(
            "| receive {batch} + {} | {:.3} M/s ({:.3} cpu) | {:.3} M/s ({:.3} cpu) | {:.1}x ({:.1}x) |",
            if batch == 1 { "ack" } else { "ack_many" },
            lw / 1e6,
            lc / 1e6,
            sw / 1e6,
            sc / 1e6,
            lw / sw,
            lc / sc
        );
    }
}

/// Receives and acks `records` records from a fresh queue, `batch` per receive.
fn logqueue_cycle(dir: &Path, records: u64, batch: usize) -> Took {
    let config = LogConfig {
        flush: FlushPolicy::Manual,
        background: false,
        ..LogConfig::default()
    };
    let log = Log::open(dir, config).expect("open logqueue");
    let mut left = records;
    while left > 0 {
        let k = left.min(1000);
        let batch = (0..k).map(|_| Record::new(vec![0x5Au8; PAYLOAD_BYTES]));
        log.append_batch(batch.collect()).expect("append");
        left -= k;
    }
    let queue = Queue::open(&log, "jobs", QueueConfig::default()).expect("open queue");
    let mut receipts = Vec::with_capacity(batch);
    let mut bytes = 0usize;
    let start = Timer::start();
    loop {
        let got = queue.receive(batch, Duration::ZERO).expect("receive");
        if got.is_empty() {
            break;
        }
        bytes += got
            .iter()
            .map(|d| d.record.value.as_ref().map_or(0, Vec::len))
            .sum::<usize>();
        if batch == 1 {
            queue.ack(&got[0].receipt).expect("ack");
        } else {
            receipts.clear();
            receipts.extend(got.iter().map(|d| d.receipt));
            assert!(queue.ack_many(&receipts).expect("ack_many").is_empty());
        }
    }
    let took = start.stop();
    assert_eq!(bytes, records as usize * PAYLOAD_BYTES);
    assert_eq!(queue.stats().ack_floor, records);
    queue.close().expect("close");
    took
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The same with SQLite as the queue.
fn sqlite_cycle(dir: &Path, records: u64, batch: usize) -> Took {
    let mut db = Connection::open(dir.join("queue.db")).expect("open sqlite");
    let mode: String = db
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .expect("wal");
    assert_eq!(mode, "wal");
    db.execute_batch(
        "PRAGMA synchronous=NORMAL;
         CREATE TABLE jobs(id INTEGER PRIMARY KEY, payload BLOB,
                           leased_until INTEGER NOT NULL DEFAULT 0,
                           done INTEGER NOT NULL DEFAULT 0);",
    )
    .expect("schema");
    {
        let tx = db.transaction().expect("begin");
        let mut insert = tx
            .prepare("INSERT INTO jobs(payload) VALUES (?1)")
            .expect("prepare");
        let payload = vec![0x5Au8; PAYLOAD_BYTES];
        for _ in 0..records {
            insert.execute(params![payload]).expect("insert");
        }
        drop(insert);
        tx.commit().expect("commit");
    }
    let receive_sql = "UPDATE jobs SET leased_until = ?1 WHERE id IN \
         (SELECT id FROM jobs WHERE done = 0 AND leased_until <= ?2 ORDER BY id LIMIT ?3) \
         RETURNING id, payload";
    let mut ids: Vec<i64> = Vec::with_capacity(batch);
    let mut bytes = 0usize;
    let mut acked = 0u64;
    let start = Timer::start();
    loop {
        ids.clear();
        {
            let tx = db
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .expect("begin");
            {
                let now = now_ms();
                let mut receive = tx.prepare_cached(receive_sql).expect("prepare");
                let mut rows = receive
                    .query(params![now + LEASE_MS, now, batch as i64])
                    .expect("receive");
                while let Some(row) = rows.next().expect("row") {
                    ids.push(row.get(0).expect("id"));
                    bytes += row
                        .get_ref(1)
                        .expect("payload")
                        .as_blob()
                        .expect("blob")
                        .len();
                }
            }
            tx.commit().expect("commit");
        }
        if ids.is_empty() {
            break;
        }
        let tx = db.transaction().expect("begin");
        {
            let mut ack = tx
                .prepare_cached("DELETE FROM jobs WHERE id = ?1")
                .expect("prepare");
            for id in &ids {
                assert_eq!(ack.execute(params![id]).expect("ack"), 1);
            }
        }
        tx.commit().expect("commit");
        acked += ids.len() as u64;
    }
    let took = start.stop();
    assert_eq!((acked, bytes), (records, records as usize * PAYLOAD_BYTES));
    took
}
