//! Random operation sequences on a queue over the simulated disk: nothing panics,
//! every delivery carries what was sent at its offset, attempts only grow, a stale
//! receipt changes nothing, an ack that returned (kill) or was flushed (power loss)
//! is never undone, and open always works.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use logqueue::sim::SimFs;
use logqueue::{
    Delivery, Error, FlushPolicy, Log, LogConfig, ManualClock, Ordering, Queue, QueueConfig, Record,
};

const DIR: &str = "/q";

#[derive(Arbitrary, Debug)]
enum Op {
    Send { fill: u8, key: Option<u8> },
    SendDelayed { fill: u8, secs: u8 },
    Receive { max: u8 },
    Ack { which: u8 },
    Nack { which: u8, secs: u8 },
    Extend { which: u8, secs: u8 },
    DeadLetter { which: u8 },
    Advance { secs: u8 },
    Flush,
    Redrive { max: u8 },
    Reopen,
    Kill,
    Crash,
}

#[derive(Arbitrary, Debug)]
struct Input {
    seed: u64,
    per_key: bool,
    /// Two lanes of blocks of 2 offsets (unordered only: per-key keeps one lane).
    lanes: bool,
    ops: Vec<Op>,
}

/// How the queue is opened: per key, or over lanes, or plain.
#[derive(Clone, Copy)]
struct Shape {
    per_key: bool,
    lanes: bool,
}

struct Open {
    log: Log,
    queue: Queue,
}

fn open(fs: &SimFs, clock: &ManualClock, shape: Shape) -> Open {
    let per_key = shape.per_key;
    let lanes = if shape.lanes && !per_key { 2 } else { 1 };
    let log = Log::open(
        DIR,
        LogConfig {
            fs: Arc::new(fs.clone()),
            clock: Arc::new(clock.clone()),
            background: false,
            flush: FlushPolicy::Manual,
            segment_bytes: 2048,
            ..LogConfig::default()
        },
    )
    .expect("open must work on anything a crash leaves behind");
    let config = QueueConfig {
        visibility_timeout: Duration::from_secs(10),
        max_deliveries: Some(3),
        ordering: if per_key {
            Ordering::PerKey
        } else {
            Ordering::Unordered
        },
        journal_bytes: 64 * 1024,
        lanes,
        lane_block: 2,
        ..QueueConfig::default()
    };
    let queue = Queue::open(&log, "fz", config).expect("queue open must work after a crash");
    Open { log, queue }
}

fuzz_target!(|input: Input| {
    let fs = SimFs::new(input.seed);
    fs.write_file("/.keep", b"").expect("plant the root");
    let clock = ManualClock::new(1_000_000);
    let shape = Shape {
        per_key: input.per_key,
        lanes: input.lanes,
    };
    let mut o = open(&fs, &clock, shape);
    // offset -> value sent there (only offsets below the log's end are meaningful)
    let mut sent: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut acked: HashSet<u64> = HashSet::new();
    let mut acked_durable: HashSet<u64> = HashSet::new();
    let mut last_attempt: HashMap<u64, u32> = HashMap::new();
    let mut held: Vec<Delivery> = Vec::new();
    for op in input.ops.into_iter().take(200) {
        match op {
            Op::Send { fill, key } => {
                let value = vec![fill; 8];
                let r = match key {
                    Some(k) => Record::keyed(vec![k], value.clone()),
                    None => Record::new(value.clone()),
                };
                if let Ok(off) = o.queue.send(r) {
                    sent.insert(off, value);
                }
            }
            Op::SendDelayed { fill, secs } => {
                let value = vec![fill; 8];
                let delay = Duration::from_secs(u64::from(secs));
                if let Ok(off) = o.queue.send_delayed(Record::new(value.clone()), delay) {
                    sent.insert(off, value);
                }
            }
            Op::Receive { max } => {
                let got = o
                    .queue
                    .receive(usize::from(max % 8) + 1, Duration::ZERO)
                    .expect("receive");
                for d in got {
                    let off = d.receipt.offset;
                    assert!(
                        !acked.contains(&off),
                        "offset {off} delivered after its ack"
                    );
                    if let Some(v) = sent.get(&off) {
                        if d.record.header("redrive.from").is_none() {
                            assert_eq!(d.record.value.as_ref(), Some(v), "value at {off}");
                        }
                    }
                    let prev = last_attempt.insert(off, d.attempt).unwrap_or(0);
                    assert!(
                        d.attempt > prev,
                        "attempt at {off} went {prev} -> {}",
                        d.attempt
                    );
                    assert_eq!(d.attempt, d.receipt.attempt);
                    held.push(d);
                }
            }
            Op::Ack { which } | Op::DeadLetter { which } if !held.is_empty() => {
                let d = held.swap_remove(usize::from(which) % held.len());
                let is_ack = matches!(op, Op::Ack { .. });
                let r = if is_ack {
                    o.queue.ack(&d.receipt)
                } else {
                    o.queue.dead_letter(&d.receipt, "fuzz")
                };
                match r {
                    Ok(()) if is_ack => {
                        acked.insert(d.receipt.offset);
                    }
                    Ok(()) | Err(Error::StaleReceipt { .. }) => {}
                    Err(e) => panic!("ack/dead_letter: {e}"),
                }
            }
            Op::Nack { which, secs } if !held.is_empty() => {
                let d = held.swap_remove(usize::from(which) % held.len());
                let delay = Duration::from_secs(u64::from(secs));
                match o.queue.nack(&d.receipt, delay) {
                    Ok(()) | Err(Error::StaleReceipt { .. }) => {}
                    Err(e) => panic!("nack: {e}"),
                }
            }
            Op::Extend { which, secs } if !held.is_empty() => {
                let d = &held[usize::from(which) % held.len()];
                match o
                    .queue
                    .extend(&d.receipt, Duration::from_secs(u64::from(secs)))
                {
                    Ok(()) | Err(Error::StaleReceipt { .. }) => {}
                    Err(e) => panic!("extend: {e}"),
                }
            }
            Op::Ack { .. } | Op::DeadLetter { .. } | Op::Nack { .. } | Op::Extend { .. } => {}
            Op::Advance { secs } => clock.advance(Duration::from_secs(u64::from(secs))),
            Op::Flush => {
                o.queue.flush().expect("flush");
                acked_durable.extend(acked.iter().copied());
            }
            Op::Redrive { max } => {
                o.queue.redrive(usize::from(max % 4)).expect("redrive");
            }
            Op::Reopen => {
                held.clear();
                drop(o);
                o = open(&fs, &clock, shape);
            }
            Op::Kill => {
                held.clear();
                fs.kill();
                drop(o);
                o = open(&fs, &clock, shape);
            }
            Op::Crash => {
                held.clear();
                fs.crash();
                drop(o);
                o = open(&fs, &clock, shape);
                let end = o.log.end_offset();
                // Un-flushed sends may be gone; their offsets can be handed out again.
                sent.retain(|&off, _| off < end);
                last_attempt.retain(|&off, _| off < end);
                // Only flushed acks must survive a power loss.
                acked = acked_durable
                    .iter()
                    .copied()
                    .filter(|&off| off < end)
                    .collect();
                acked_durable = acked.clone();
                // Attempt counts of un-flushed leases may go back after a power loss.
                last_attempt.clear();
            }
        }
    }
});
