//! A scripted queue workload for the fault suite, recording what every call that
//! returned promised ([`Promises`]): sends, receives, acks, nacks, extends, dead
//! letters (by call and by `max_deliveries`), two redrive cycles (a redriven record
//! dead-lettered again and redriven again), `delete_records_before`, flushes, and an
//! unflushed tail.

use std::collections::BTreeSet;
use std::time::Duration;

use logqueue::{Delivery, Log, ManualClock, Offset, Queue, QueueConfig, Record, Result};

use super::fault::{dead_letter_offsets, Promises};

/// The queue config of the scripted workload (and of its checks).
pub fn workload_queue_config() -> QueueConfig {
    QueueConfig {
        visibility_timeout: Duration::from_secs(10),
        max_deliveries: Some(3),
        journal_bytes: 4096,
        // The outcome feed's files are written, faulted and damaged too (issue 13).
        outcomes: true,
        ..QueueConfig::default()
    }
}

/// The value of the `n`-th send: unique, so a copy can be traced to its source.
pub fn send_value(n: u64) -> Vec<u8> {
    format!("send-{n:05}-{}", "v".repeat((n % 23) as usize)).into_bytes()
}

/// Runs calls against a queue and records their promises.
pub struct Driver<'a> {
    pub log: &'a Log,
    pub q: &'a Queue,
    pub clock: &'a ManualClock,
    pub p: Promises,
    /// Dead letters already looked at.
    letters_seen: usize,
    sends: u64,
    /// Set by the first failed call.
    pub failed: Option<String>,
}

impl<'a> Driver<'a> {
    pub fn new(log: &'a Log, q: &'a Queue, clock: &'a ManualClock, p: Promises) -> Driver<'a> {
        let letters_seen = dead_letter_offsets(&q.dead_letters()).0.len();
        Driver {
            log,
            q,
            clock,
            sends: p.values.len() as u64 + p.maybe_values.len() as u64,
            p,
            letters_seen,
            failed: None,
        }
    }

    fn note<T>(&mut self, what: &str, r: &Result<T>) {
        if let Err(e) = r {
            if self.failed.is_none() {
                self.failed = Some(format!("{what}: {e}"));
            }
        }
    }

    /// Looks at dead letters appended since the last look: promised when the call
    /// that appended them returned, possible otherwise.
    fn scan_letters(&mut self, returned: bool) {
        let (letters, _) = dead_letter_offsets(&self.q.dead_letters());
        for (o, _) in letters.iter().skip(self.letters_seen) {
            self.p.maybe_settled.insert(*o);
            if returned {
                self.p.dead_returned.insert(*o);
            }
        }
        self.letters_seen = self.letters_seen.max(letters.len());
    }

    pub fn send(&mut self, key: &str) -> Result<Offset> {
        let value = send_value(self.sends);
        self.sends += 1;
        self.p.maybe_values.insert(value.clone());
        let r = self.q.send(Record::keyed(key, value.clone()));
        self.note("send", &r);
        if let Ok(o) = r {
            self.p.appended(o, value);
        }
        r
    }

    pub fn receive(&mut self, max: usize) -> Result<Vec<Delivery>> {
        let r = self.q.receive(max, Duration::ZERO);
        self.note("receive", &r);
        if let Ok(got) = &r {
            for d in got {
                self.p.delivered(d.receipt.offset, d.attempt);
            }
        }
        self.scan_letters(r.is_ok());
        r
    }

    pub fn ack(&mut self, d: &Delivery) -> Result<()> {
        self.p.maybe_settled.insert(d.receipt.offset);
        let r = self.q.ack(&d.receipt);
        self.note("ack", &r);
        if r.is_ok() {
            self.p.acked_returned.insert(d.receipt.offset);
        }
        r
    }

    pub fn nack(&mut self, d: &Delivery, delay: Duration) -> Result<()> {
        let r = self.q.nack(&d.receipt, delay);
        self.note("nack", &r);
        r
    }

    pub fn extend(&mut self, d: &Delivery) -> Result<()> {
        let r = self.q.extend(&d.receipt, Duration::from_secs(20));
        self.note("extend", &r);
        r
    }

    pub fn dead_letter(&mut self, d: &Delivery) -> Result<()> {
        self.p.maybe_settled.insert(d.receipt.offset);
        let r = self.q.dead_letter(&d.receipt, "fault-suite");
        self.note("dead_letter", &r);
        self.scan_letters(r.is_ok());
        r
    }

    pub fn flush(&mut self) -> Result<()> {
        let r = self.q.flush();
        self.note("flush", &r);
        if r.is_ok() {
            self.p.flushed();
        }
        r
    }

    pub fn redrive(&mut self, max: usize) -> Result<usize> {
        let before = self.log.end_offset();
        let (letters, _) = dead_letter_offsets(&self.q.dead_letters());
        for (_, l) in &letters {
            if let Some(v) = &l.value {
                self.p.maybe_values.insert(v.clone());
            }
        }
        let r = self.q.redrive(max);
        self.note("redrive", &r);
        if r.is_ok() {
            if let Ok(reader) = self.log.reader(before) {
                for rec in reader.flatten() {
                    if let Some(v) = &rec.value {
                        self.p.appended(rec.offset, v.clone());
                    }
                    if let Some(from) = rec
                        .header(logqueue::REDRIVE_FROM)
                        .and_then(|b| std::str::from_utf8(b).ok())
                        .and_then(|s| s.parse().ok())
                    {
                        self.p.redriven.insert(from);
                    }
                }
            }
        }
        r
    }

    pub fn delete_before(&mut self, o: Offset) -> Result<()> {
        let r = self.log.delete_records_before(o);
        self.note("delete_records_before", &r);
        if r.is_ok() {
            self.p.deleted_before = self.p.deleted_before.max(o);
        }
        r
    }
}

/// Sizes of the scripted workload.
#[derive(Clone, Copy, Debug)]
pub struct Script {
    /// Sends before the first receive.
    pub first_sends: u64,
    /// Sends after the redrive cycles.
    pub later_sends: u64,
    /// Leave an unflushed tail (sends, acks, a dead letter, a nack) at the end.
    pub tail: bool,
}

/// Stops the script at the first failed call when `stop` (the process would die
/// there); otherwise keeps calling (a call that returns after a failure must still
/// keep its promise).
macro_rules! step {
    ($stop:expr, $e:expr) => {
        match $e {
            Ok(v) => Some(v),
            Err(_) if $stop => return,
            Err(_) => None,
        }
    };
}

/// Runs the script. Returns early (when `stop`) at the first failed call.
pub fn run_script(d: &mut Driver<'_>, s: Script, stop: bool) {
    for i in 0..s.first_sends {
        step!(stop, d.send(&format!("k{}", i % 7)));
    }
    step!(stop, d.flush());
    // Acks, nacks, dead letters, leases left out (two of them extended).
    let got = step!(stop, d.receive(30)).unwrap_or_default();
    let mut nacked = BTreeSet::new();
    for (i, dl) in got.iter().enumerate() {
        match i % 10 {
            0..=5 => drop(step!(stop, d.ack(dl))),
            6 => {
                nacked.insert(dl.receipt.offset);
                step!(stop, d.nack(dl, Duration::ZERO));
            }
            7 => drop(step!(stop, d.dead_letter(dl))),
            8 => drop(step!(stop, d.extend(dl))),
            _ => {}
        }
    }
    step!(stop, d.flush());
    // The max_deliveries path: the nacked records come back and are nacked until the
    // queue dead-letters them itself.
    for _ in 0..4 {
        let got = step!(stop, d.receive(10)).unwrap_or_default();
        for dl in &got {
            if nacked.contains(&dl.receipt.offset) {
                step!(stop, d.nack(dl, Duration::ZERO));
            } else {
                step!(stop, d.ack(dl));
            }
        }
    }
    step!(stop, d.flush());
    // Two redrive cycles: the first dead letter is copied back (alone), then the
    // others; the first copy is dead-lettered again and redriven again, alone, so
    // that its second cycle is the first record of its chunk (the one a crash
    // midway is resolved by).
    let end = d.log.end_offset();
    step!(stop, d.redrive(1));
    step!(stop, d.redrive(100));
    for _ in 0..20 {
        let got = step!(stop, d.receive(50)).unwrap_or_default();
        if got.is_empty() {
            break;
        }
        for dl in &got {
            if dl.receipt.offset == end {
                step!(stop, d.dead_letter(dl));
            } else {
                step!(stop, d.ack(dl));
            }
        }
    }
    step!(stop, d.flush());
    step!(stop, d.redrive(100));
    step!(stop, d.delete_before(3));
    for i in 0..s.later_sends {
        step!(stop, d.send(&format!("k{}", i % 5)));
    }
    let got = step!(stop, d.receive(40)).unwrap_or_default();
    for (i, dl) in got.iter().enumerate() {
        match i % 4 {
            0 | 1 => drop(step!(stop, d.ack(dl))),
            2 if i == 2 => drop(step!(stop, d.dead_letter(dl))),
            _ => {}
        }
    }
    step!(stop, d.flush());
    if !s.tail {
        return;
    }
    for i in 0..5 {
        step!(stop, d.send(&format!("t{i}")));
    }
    d.clock.advance(Duration::from_secs(11));
    let got = step!(stop, d.receive(8)).unwrap_or_default();
    for (i, dl) in got.iter().enumerate() {
        match i {
            0..=2 => drop(step!(stop, d.ack(dl))),
            3 => drop(step!(stop, d.dead_letter(dl))),
            4 => drop(step!(stop, d.nack(dl, Duration::from_secs(1)))),
            _ => {}
        }
    }
}
