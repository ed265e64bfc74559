//! An email sender on a logqueue queue: a business system enqueues jobs, a pool of
//! worker threads sends them (acks in batches, retries transient failures with
//! backoff, dead-letters a poison job), the service shuts down gracefully with
//! `Queue::close`, and an operator redrives the dead letters worth retrying, leaving
//! the permanent failures where they are.
//!
//! ```text
//! cargo run --example email_sender
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use logqueue::{
    Error, Log, LogConfig, Queue, QueueConfig, Receipt, Record, StoredRecord, DLQ_REASON,
};

/// What sending one email did.
enum Outcome {
    Sent,
    /// Worth retrying later (the mail server timed out).
    Transient,
    /// Never going to work (the address is malformed).
    Permanent(&'static str),
}

/// The pretend mail server. `slow.example.com` times out until `smtp_fixed` is set.
fn send_email(job: &StoredRecord, smtp_fixed: &AtomicBool) -> Outcome {
    let to = std::str::from_utf8(job.value.as_deref().unwrap_or_default()).unwrap_or("");
    if !to.contains('@') {
        Outcome::Permanent("invalid address")
    } else if to.ends_with("@slow.example.com") && !smtp_fixed.load(Ordering::Relaxed) {
        Outcome::Transient
    } else {
        Outcome::Sent
    }
}

/// One worker: receives up to 10 jobs at a time, acks the sent ones in one call,
/// nacks the transient failures (redelivered after the queue's backoff) and
/// dead-letters the permanent ones. Returns when the queue is closed.
fn worker(id: usize, queue: Queue, smtp_fixed: Arc<AtomicBool>) -> usize {
    let mut sent = 0;
    loop {
        let jobs = match queue.receive(10, Duration::from_millis(50)) {
            Ok(jobs) => jobs,
            Err(Error::Closed) => return sent, // graceful shutdown
            Err(e) => panic!("worker {id}: {e}"),
        };
        let mut done: Vec<Receipt> = Vec::new();
        for job in &jobs {
            match send_email(&job.record, &smtp_fixed) {
                Outcome::Sent => done.push(job.receipt),
                // Zero delay: the queue's backoff schedule for this attempt.
                Outcome::Transient => match queue.nack(&job.receipt, Duration::ZERO) {
                    Ok(()) | Err(Error::StaleReceipt { .. }) => {}
                    Err(Error::Closed) => return sent,
                    Err(e) => panic!("worker {id}: {e}"),
                },
                Outcome::Permanent(why) => match queue.dead_letter(&job.receipt, why) {
                    Ok(()) | Err(Error::StaleReceipt { .. }) => {}
                    Err(Error::Closed) => return sent,
                    Err(e) => panic!("worker {id}: {e}"),
                },
            }
        }
        match queue.ack_many(&done) {
            // Stale receipts (a lease that expired while sending) were sent twice at
            // worst: at-least-once delivery.
            Ok(stale) => sent += done.len() - stale.len(),
            Err(Error::Closed) => return sent,
            Err(e) => panic!("worker {id}: {e}"),
        }
    }
}

fn config() -> QueueConfig {
    QueueConfig {
        visibility_timeout: Duration::from_secs(30),
        // Three tries, 20 ms then 40 ms apart, then the dead-letter log.
        max_deliveries: Some(3),
        backoff: vec![Duration::from_millis(20), Duration::from_millis(40)],
        // One lane per worker: the four workers share no lock. Lanes hand out
        // records of different blocks in no particular order (an email sender does
        // not need any), and blocks of 16 offsets spread even a small backlog.
        lanes: 4,
        lane_block: 16,
        ..QueueConfig::default()
    }
}

/// Runs a pool of `n` workers until every job in the log is settled, then shuts down
/// gracefully: `Queue::close` makes the state durable and every worker's next call
/// returns `Error::Closed`.
fn run_pool(log: &Log, n: usize, smtp_fixed: &Arc<AtomicBool>) -> usize {
    let queue = Queue::open(log, "emails", config()).expect("open queue");
    let workers: Vec<_> = (0..n)
        .map(|id| {
            let (q, fixed) = (queue.clone(), Arc::clone(smtp_fixed));
            thread::spawn(move || worker(id, q, fixed))
        })
        .collect();
    while queue.stats().ack_floor < log.end_offset() {
        thread::sleep(Duration::from_millis(10));
    }
    queue.close().expect("close queue");
    workers.into_iter().map(|w| w.join().expect("worker")).sum()
}

fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = Log::open(dir.path(), LogConfig::default()).expect("open log");

    // The business system enqueues jobs (any process holding the log can).
    let producer = Queue::open(&log, "emails", config()).expect("open queue");
    for i in 0..40 {
        producer
            .send(Record::new(format!("user{i}@example.com")))
            .expect("send");
    }
    producer
        .send(Record::new("not-an-address")) // the poison job
        .expect("send");
    producer
        .send(Record::new("ops@slow.example.com")) // its server is down
        .expect("send");
    producer.close().expect("close producer handle");

    let smtp_fixed = Arc::new(AtomicBool::new(false));
    let sent = run_pool(&log, 4, &smtp_fixed);
    println!("first run: {sent} emails sent");
    assert_eq!(sent, 40);

    // The operator looks at the dead letters...
    let queue = Queue::open(&log, "emails", config()).expect("reopen queue");
    for letter in dead_letters_of(&queue) {
        println!(
            "dead letter: {:?} ({})",
            String::from_utf8_lossy(letter.value.as_deref().unwrap_or_default()),
            String::from_utf8_lossy(letter.header(DLQ_REASON).unwrap_or_default()),
        );
    }
    // ...the mail server is fixed: redrive what may work now, not the bad address.
    smtp_fixed.store(true, Ordering::Relaxed);
    let worth_retrying = |r: &StoredRecord| r.header(DLQ_REASON) != Some(b"invalid address");
    let redriven = queue.redrive_where(100, worth_retrying).expect("redrive");
    println!("redriven: {redriven}");
    assert_eq!(redriven, 1);
    queue.close().expect("close");

    let sent = run_pool(&log, 4, &smtp_fixed);
    println!("second run: {sent} emails sent");
    assert_eq!(sent, 1);

    // The bad address stays in the dead-letter log, never redriven by that filter.
    let queue = Queue::open(&log, "emails", config()).expect("reopen queue");
    assert_eq!(
        queue.redrive_where(100, worth_retrying).expect("redrive"),
        0
    );
    assert_eq!(dead_letters_of(&queue).len(), 2);
    log.close().expect("close log"); // closes the queue first
}

/// Every dead letter of `queue`.
fn dead_letters_of(queue: &Queue) -> Vec<StoredRecord> {
    let letters = queue.dead_letters();
    let reader = letters.reader(letters.start_offset()).expect("reader");
    reader
        .collect::<logqueue::Result<_>>()
        .expect("read dead letters")
}
