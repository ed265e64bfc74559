//! The fault suite's check of a queue directory after a fault: open the log and the
//! queue, read everything, drain the queue, redrive, and compare with what the
//! workload was promised ([`Promises`]). Damage may be reported (`Error::Corrupt`,
//! corrupt ranges); wrong data, lost durable records or acks, a record both done and
//! delivered, a record dead-lettered twice or redriven twice never may.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use logqueue::sim::SimFs;
use logqueue::{
    Error, FlushPolicy, Log, LogConfig, ManualClock, Offset, Queue, QueueConfig, OUTCOME_OFFSET,
    REDRIVE_FROM,
};

use super::fault::{dead_letter_offsets, Outcome, Promises};

/// The first few of `offsets`, for a message.
fn few(offsets: &[Offset]) -> String {
    let shown: Vec<String> = offsets.iter().take(6).map(|o| o.to_string()).collect();
    let more = if offsets.len() > 6 { ", ..." } else { "" };
    format!("{}{more}", shown.join(", "))
}

/// Which promises a fault must keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Survives {
    /// The process died: every call that returned is kept.
    Kill,
    /// Power loss: what a flush made durable is kept.
    PowerLoss,
}

/// Where and how the checked queue lives.
#[derive(Clone, Debug)]
pub struct QueueSetup {
    pub dir: String,
    pub name: String,
    pub segment_bytes: u64,
    pub queue: QueueConfig,
    /// Runs a retention pass (size retention of 1 byte, held back only by the queue's
    /// `floor` file) before the queue opens, and checks that it deleted no record the
    /// queue has not durably done.
    pub retention_check: bool,
}

impl QueueSetup {
    /// The log config of the check (manual flush, no background threads).
    pub fn log_config(&self, fs: &SimFs, clock: &ManualClock) -> LogConfig {
        LogConfig {
            fs: Arc::new(fs.clone()),
            clock: Arc::new(clock.clone()),
            segment_bytes: self.segment_bytes,
            index_interval_bytes: 256,
            flush: FlushPolicy::Manual,
            background: false,
            segment_ms: None,
            retention_ms: None,
            retention_bytes: self.retention_check.then_some(1),
            file_delete_delay: Duration::ZERO,
            ..LogConfig::default()
        }
    }
}

fn is_corrupt(e: &Error) -> bool {
    matches!(e, Error::Corrupt { .. })
}

/// The promised sets for `level`.
struct Promised<'a> {
    end: Offset,
    /// The log's end when it opened: offsets at or past it are new records (a log
    /// that lost its tail reuses them), judged by the log checks alone.
    log_end: Offset,
    acked: &'a BTreeSet<Offset>,
    dead: &'a BTreeSet<Offset>,
    attempts: &'a BTreeMap<Offset, u32>,
}

fn promised(p: &Promises, level: Survives) -> Promised<'_> {
    match level {
        Survives::Kill => Promised {
            end: p.returned_end,
            log_end: Offset::MAX,
            acked: &p.acked_returned,
            dead: &p.dead_returned,
            attempts: &p.attempts_returned,
        },
        Survives::PowerLoss => Promised {
            end: p.flushed_end,
            log_end: Offset::MAX,
            acked: &p.acked_flushed,
            dead: &p.dead_flushed,
            attempts: &p.attempts_flushed,
        },
    }
}

/// A record value read at `offset`: right when it is what was appended there, or an
/// append that did not return; anything else is wrong data.
fn check_value(p: &Promises, offset: Offset, value: Option<&[u8]>, what: &str, out: &mut Outcome) {
    let ok = match (p.values.get(&offset), value) {
        (Some(want), Some(got)) => want[..] == *got,
        (None, Some(got)) => p.maybe_values.contains(got),
        (_, None) => false,
    };
    if !ok {
        out.violation(format!(
            "wrong data: {what} at offset {offset} returned {:?}, written {:?}",
            value.map(String::from_utf8_lossy),
            p.values.get(&offset).map(|v| String::from_utf8_lossy(v))
        ));
    }
}

/// Opens the log in `setup.dir` on `fs` and checks it and its queue against `p`.
pub fn check_queue(
    fs: &SimFs,
    clock: &ManualClock,
    setup: &QueueSetup,
    p: &Promises,
    level: Survives,
) -> Outcome {
    let mut out = Outcome::default();
    let mut want = promised(p, level);
    let log = match Log::open(&setup.dir, setup.log_config(fs, clock)) {
        Ok(l) => l,
        Err(e) if is_corrupt(&e) => {
            out.report(format!("Log::open: {e}"));
            return out;
        }
        Err(e) => {
            out.violation(format!("Log::open failed without Corrupt: {e}"));
            return out;
        }
    };
    want.log_end = log.end_offset();
    let settled = |o: &Offset| want.acked.contains(o) || want.dead.contains(o);
    if setup.retention_check {
        match log.enforce_retention() {
            Ok(_) => {
                let start = log.start_offset();
                let lost: Vec<Offset> = (p.deleted_before..start.min(want.end))
                    .filter(|o| !settled(o))
                    .collect();
                if !lost.is_empty() {
                    out.violation(format!(
                        "after a retention pass the log starts at {start}, above {} records the queue had not done ({})",
                        lost.len(),
                        few(&lost)
                    ));
                }
            }
            Err(e) if is_corrupt(&e) => out.report(format!("enforce_retention: {e}")),
            Err(e) => out.violation(format!("enforce_retention failed without Corrupt: {e}")),
        }
    }
    check_log_reads(&log, p, want.end, &mut out);
    let q = match Queue::open(&log, &setup.name, setup.queue.clone()) {
        Ok(q) => q,
        Err(e) if is_corrupt(&e) => {
            out.report(format!("Queue::open: {e}"));
            return out;
        }
        Err(e) => {
            out.violation(format!("Queue::open failed without Corrupt: {e}"));
            return out;
        }
    };
    let before = dead_letters(&q, &mut out);
    for o in want.dead {
        if !before.contains_key(o) && !out.was_reported() {
            out.violation(format!("dead letter of {o} lost from the dead-letter log"));
        }
    }
    let delivered = drain(&log, &q, clock, setup, p, &want, &mut out);
    let after = dead_letters(&q, &mut out);
    let log_start = log.start_offset();
    let missing: Vec<Offset> = (p.deleted_before.max(log_start)..want.end)
        .filter(|o| {
            let done = settled(o) || p.maybe_settled.contains(o) || after.contains_key(o);
            !done && !delivered.contains_key(o)
        })
        .collect();
    if !missing.is_empty() && !out.was_reported() {
        out.violation(format!(
            "{} durable records not done were never delivered ({})",
            missing.len(),
            few(&missing)
        ));
    }
    for (o, n) in &after {
        if *n > 1 {
            out.violation(format!("record {o} dead-lettered {n} times"));
        }
        if delivered.contains_key(o) {
            out.violation(format!(
                "record {o} is in the dead-letter log and was delivered again"
            ));
        }
        if want.acked.contains(o) {
            out.violation(format!("record {o} both acked and dead-lettered"));
        }
    }
    check_redrive_copies(&log, &mut out);
    if setup.queue.outcomes {
        let settled = want
            .acked
            .iter()
            .chain(want.dead.iter())
            .chain(delivered.keys())
            .chain(after.keys())
            .copied()
            .filter(|&o| o < want.log_end)
            .collect();
        check_outcomes(&q, &settled, &mut out);
    }
    out
}

/// The outcome feed (issue 13): never two outcomes for one record, and one for every
/// record known to be settled (acked or dead-lettered) unless damage was reported.
fn check_outcomes(q: &Queue, settled: &BTreeSet<Offset>, out: &mut Outcome) {
    let Some(feed) = q.outcomes() else {
        return out.violation("the outcome feed is on but Queue::outcomes is None");
    };
    let mut count: BTreeMap<Offset, u32> = BTreeMap::new();
    let reader = match feed.reader(feed.start_offset()) {
        Ok(r) => r,
        Err(e) if is_corrupt(&e) => return out.report(format!("outcomes: {e}")),
        Err(e) => return out.violation(format!("reading the outcomes failed: {e}")),
    };
    for r in reader {
        match r {
            Ok(r) => {
                let o = r
                    .header(OUTCOME_OFFSET)
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
                match o {
                    Some(o) => *count.entry(o).or_default() += 1,
                    None => out.violation(format!("outcome at {} names no offset", r.offset)),
                }
            }
            Err(e) if is_corrupt(&e) => return out.report(format!("outcomes: {e}")),
            Err(e) => return out.violation(format!("reading the outcomes failed: {e}")),
        }
    }
    for (o, n) in &count {
        if *n > 1 {
            out.violation(format!("record {o} has {n} outcomes"));
        }
    }
    let missing: Vec<Offset> = settled
        .iter()
        .filter(|o| !count.contains_key(o))
        .copied()
        .collect();
    if !missing.is_empty() && !out.was_reported() {
        out.violation(format!(
            "{} settled records have no outcome ({})",
            missing.len(),
            few(&missing)
        ));
    }
}

/// Reads every offset of the log: right values only; durable records present unless
/// damage is reported.
fn check_log_reads(log: &Log, p: &Promises, durable_end: Offset, out: &mut Outcome) {
    match log.verify() {
        Ok(r) if !r.corrupt.is_empty() => out.report(format!("verify: {:?}", r.corrupt[0])),
        Ok(_) => {}
        Err(e) if is_corrupt(&e) => out.report(format!("verify: {e}")),
        Err(e) => out.violation(format!("verify failed without Corrupt: {e}")),
    }
    let (start, end) = (log.start_offset(), log.end_offset());
    let mut nothing = Vec::new();
    for o in start..end.min(start + 100_000) {
        match log.read(o) {
            Ok(Some(r)) => {
                if r.offset != o {
                    out.violation(format!("read({o}) returned offset {}", r.offset));
                }
                check_value(p, r.offset, r.value.as_deref(), "read", out);
            }
            Ok(None) => nothing.push(o),
            Err(e) if is_corrupt(&e) => out.report(format!("read({o}): {e}")),
            Err(e) => out.violation(format!("read({o}) failed without Corrupt: {e}")),
        }
    }
    if !nothing.is_empty() && !out.was_reported() {
        out.violation(format!(
            "read found nothing at {} offsets below the end {end} ({}), nothing reported",
            nothing.len(),
            few(&nothing)
        ));
    }
    if end < durable_end && !out.was_reported() {
        out.violation(format!(
            "log ends at {end}, below the durable end {durable_end}, and nothing was reported"
        ));
    }
}

/// Dead letters by `dlq.offset`, with their count.
fn dead_letters(q: &Queue, out: &mut Outcome) -> BTreeMap<Offset, u32> {
    let dlq = q.dead_letters();
    let (letters, err) = dead_letter_offsets(&dlq);
    match err {
        Some(e) if is_corrupt(&e) => out.report(format!("dead-letter log: {e}")),
        Some(e) => out.violation(format!("reading the dead-letter log failed: {e}")),
        None => {}
    }
    match dlq.verify() {
        Ok(r) if !r.corrupt.is_empty() => {
            out.report(format!("dead-letter verify: {:?}", r.corrupt[0]))
        }
        Ok(_) => {}
        Err(e) if is_corrupt(&e) => out.report(format!("dead-letter verify: {e}")),
        Err(e) => out.violation(format!("dead-letter verify failed: {e}")),
    }
    let mut by_offset = BTreeMap::new();
    for (o, _) in letters {
        *by_offset.entry(o).or_insert(0) += 1;
    }
    by_offset
}

/// Receives everything (acking it), redrives what is left and receives the copies;
/// returns the offsets delivered with their first attempt.
fn drain(
    log: &Log,
    q: &Queue,
    clock: &ManualClock,
    setup: &QueueSetup,
    p: &Promises,
    want: &Promised<'_>,
    out: &mut Outcome,
) -> BTreeMap<Offset, u32> {
    let mut again = Again::default();
    let delivered = drain_into(log, q, clock, setup, p, want, out, &mut again);
    for (what, offsets) in [
        ("durably acked records delivered again", &again.acked),
        ("durably dead-lettered records delivered again", &again.dead),
        (
            "records delivered with an attempt not above one handed out before",
            &again.attempt_down,
        ),
    ] {
        if !offsets.is_empty() {
            out.violation(format!("{} {what} ({})", offsets.len(), few(offsets)));
        }
    }
    delivered
}

/// Offsets delivered against a promise, gathered over a drain.
#[derive(Default)]
struct Again {
    acked: Vec<Offset>,
    dead: Vec<Offset>,
    attempt_down: Vec<Offset>,
}

#[allow(clippy::too_many_arguments)]
fn drain_into(
    log: &Log,
    q: &Queue,
    clock: &ManualClock,
    setup: &QueueSetup,
    p: &Promises,
    want: &Promised<'_>,
    out: &mut Outcome,
    again: &mut Again,
) -> BTreeMap<Offset, u32> {
    let mut delivered: BTreeMap<Offset, u32> = BTreeMap::new();
    // A redrive copy holds the value of some record sent or dead-lettered.
    let mut copies: BTreeSet<Vec<u8>> = p.values.values().cloned().collect();
    copies.extend(p.maybe_values.iter().cloned());
    let mut copies_from = Offset::MAX;
    let step = setup.queue.visibility_timeout + Duration::from_secs(60);
    for pass in 0..2 {
        for _ in 0..6 {
            for _ in 0..400 {
                let got = match q.receive(256, Duration::ZERO) {
                    Ok(g) => g,
                    Err(e) if is_corrupt(&e) => {
                        out.report(format!("receive: {e}"));
                        return delivered;
                    }
                    Err(e) => {
                        out.violation(format!("receive failed: {e}"));
                        return delivered;
                    }
                };
                if got.is_empty() {
                    break;
                }
                for d in got {
                    let o = d.receipt.offset;
                    if o >= copies_from {
                        let v = d.record.value.clone().unwrap_or_default();
                        if !copies.contains(&v) {
                            out.violation(format!(
                                "wrong data: redrive copy at {o} holds {:?}, no dead letter's value",
                                String::from_utf8_lossy(&v)
                            ));
                        }
                    } else {
                        check_value(p, o, d.record.value.as_deref(), "delivery", out);
                    }
                    let old = o < want.log_end;
                    if old && want.acked.contains(&o) {
                        again.acked.push(o);
                    }
                    if old && want.dead.contains(&o) {
                        again.dead.push(o);
                    }
                    if old && want.attempts.get(&o).is_some_and(|a| d.attempt <= *a) {
                        again.attempt_down.push(o);
                    }
                    if delivered.insert(o, d.attempt).is_some() {
                        out.violation(format!("record {o} delivered twice in the drain"));
                    }
                    if let Err(e) = q.ack(&d.receipt) {
                        out.violation(format!("ack of a fresh delivery of {o} failed: {e}"));
                    }
                }
            }
            clock.advance(step);
        }
        if pass == 0 {
            // Copies appended by this redrive carry a dead letter's value.
            let (letters, _) = dead_letter_offsets(&q.dead_letters());
            copies.extend(letters.into_iter().filter_map(|(_, r)| r.value));
            copies_from = log.end_offset();
            match q.redrive(100_000) {
                Ok(_) => {}
                Err(e) if is_corrupt(&e) => {
                    out.report(format!("redrive: {e}"));
                    return delivered;
                }
                Err(e) => {
                    out.violation(format!("redrive failed: {e}"));
                    return delivered;
                }
            }
        }
    }
    delivered
}

/// Each dead letter is copied back at most once, and a copy names one source.
fn check_redrive_copies(log: &Log, out: &mut Outcome) {
    let Ok(reader) = log.reader(log.start_offset()) else {
        return;
    };
    let mut seen: BTreeMap<Vec<u8>, Offset> = BTreeMap::new();
    for r in reader.take(1_000_000) {
        let Ok(r) = r else { return };
        let froms: Vec<&[u8]> = r
            .headers
            .iter()
            .filter(|h| h.key == REDRIVE_FROM)
            .map(|h| h.value.as_slice())
            .collect();
        if froms.len() > 1 {
            out.violation(format!(
                "redrive copy at {} carries {} `redrive.from` headers",
                r.offset,
                froms.len()
            ));
        }
        if let Some(from) = froms.last() {
            if let Some(first) = seen.insert(from.to_vec(), r.offset) {
                out.violation(format!(
                    "dead letter {} redriven twice (copies at {first} and {})",
                    String::from_utf8_lossy(from),
                    r.offset
                ));
            }
        }
    }
}
