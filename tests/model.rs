//! Model-based test of the Log on SimFs: random sequences of appends, batches, flushes,
//! reads, readers, timestamp lookups, clean reopens, power losses and process deaths
//! against an in-memory model (records by offset plus a durable mark). After a power
//! loss the log must hold the durable prefix plus some prefix of the rest, ending on a
//! batch boundary; after a kill or a clean reopen, everything.

mod common;

use std::ops::Range;
use std::time::Duration;

use common::sim_config;
use logqueue::sim::SimFs;
use logqueue::{Clock, Log, LogConfig, ManualClock, Offset, Record, StoredRecord};
use proptest::prelude::*;

const DIR: &str = "/db/log";
const T0: i64 = 1_700_000_000_000;

#[derive(Clone, Debug)]
enum Op {
    /// A record with a value of `len` bytes, a key when `key` is set, and an explicit
    /// timestamp `now + ts` when `ts` is set.
    Append {
        len: usize,
        key: Option<u8>,
        ts: Option<i64>,
    },
    AppendBatch {
        n: usize,
        len: usize,
    },
    Flush,
    Read(u64),
    ReadFrom(u64),
    Advance(u64),
    TimeQuery(u64),
    Reopen,
    Crash,
    Kill,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..250usize, proptest::option::of(0u8..4), proptest::option::of(-3_000i64..3_000))
            .prop_map(|(len, key, ts)| Op::Append { len, key, ts }),
        3 => (1..6usize, 0..150usize).prop_map(|(n, len)| Op::AppendBatch { n, len }),
        3 => Just(Op::Flush),
        3 => any::<u64>().prop_map(Op::Read),
        1 => any::<u64>().prop_map(Op::ReadFrom),
        2 => (0..3_000u64).prop_map(Op::Advance),
        2 => any::<u64>().prop_map(Op::TimeQuery),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => Just(Op::Kill),
    ]
}

#[derive(Clone, Debug, PartialEq)]
struct Rec {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    timestamp: i64,
}

#[derive(Debug, Default)]
struct Model {
    recs: Vec<Rec>,
    /// Offsets below are durable.
    durable: u64,
    batches: Vec<Range<u64>>,
    /// Makes every value unique, so a stale record cannot pass for a new one.
    counter: u64,
}

impl Model {
    fn end(&self) -> u64 {
        self.recs.len() as u64
    }

    fn value(&mut self, len: usize) -> Vec<u8> {
        self.counter += 1;
        let mut v = format!("v{}-", self.counter).into_bytes();
        v.extend(std::iter::repeat_n(b'z', len));
        v
    }
}

fn matches(r: &StoredRecord, offset: Offset, want: &Rec) -> bool {
    r.offset == offset
        && r.key == want.key
        && r.value.as_deref() == Some(&want.value[..])
        && r.timestamp == want.timestamp
        && r.headers.is_empty()
}

/// Everything the log holds equals the model.
fn check_all(log: &Log, m: &Model, ctx: &str) {
    assert_eq!(log.start_offset(), 0, "{ctx}: start offset");
    assert_eq!(log.end_offset(), m.end(), "{ctx}: end offset");
    let all: Vec<StoredRecord> = log
        .reader(0)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{ctx}: reader failed: {e}"));
    assert_eq!(all.len() as u64, m.end(), "{ctx}: reader length");
    for (i, (r, want)) in all.iter().zip(&m.recs).enumerate() {
        assert!(
            matches(r, i as u64, want),
            "{ctx}: reader at {i}: {r:?}, want {want:?}"
        );
    }
    let report = log.verify().unwrap();
    assert!(
        report.corrupt.is_empty(),
        "{ctx}: corrupt: {:?}",
        report.corrupt
    );
    assert_eq!(report.records, m.end(), "{ctx}: verify record count");
}

fn run(seed: u64, segment_bytes: u64, ops: &[Op]) {
    let fs = SimFs::new(seed);
    fs.write_file("/db/.keep", b"").unwrap();
    let clock = ManualClock::new(T0);
    let config = || LogConfig {
        max_batch_bytes: 8 << 10,
        ..sim_config(&fs, &clock, segment_bytes)
    };
    let mut log = Log::open(DIR, config()).unwrap();
    let mut m = Model::default();
    for (step, op) in ops.iter().enumerate() {
        let ctx = format!("step {step} ({op:?})");
        match *op {
            Op::Append { len, key, ts } => {
                let value = m.value(len);
                let key = key.map(|k| vec![b'k', k]);
                let timestamp = ts.map_or(clock.now_ms(), |d| clock.now_ms() + d);
                let mut record = Record::new(value.clone());
                record.key = key.clone();
                if let Some(d) = ts {
                    record = record.with_timestamp(clock.now_ms() + d);
                }
                let o = log.append(record).unwrap();
                assert_eq!(o, m.end(), "{ctx}: append offset");
                m.recs.push(Rec {
                    key,
                    value,
                    timestamp,
                });
            }
            Op::AppendBatch { n, len } => {
                let base = m.end();
                let recs: Vec<Rec> = (0..n)
                    .map(|i| Rec {
                        key: None,
                        value: m.value(len + i),
                        timestamp: clock.now_ms(),
                    })
                    .collect();
                let r = log
                    .append_batch(recs.iter().map(|r| Record::new(r.value.clone())).collect())
                    .unwrap();
                assert_eq!(r, base..base + n as u64, "{ctx}: batch offsets");
                m.recs.extend(recs);
                if n > 1 {
                    m.batches.push(r);
                }
            }
            Op::Flush => {
                log.flush().unwrap();
                m.durable = m.end();
            }
            Op::Read(x) => {
                let o = x % (m.end() + 3);
                let got = log.read(o).unwrap();
                match m.recs.get(o as usize) {
                    Some(want) => {
                        let got = got.unwrap_or_else(|| panic!("{ctx}: read({o}) found nothing"));
                        assert!(
                            matches(&got, o, want),
                            "{ctx}: read({o}) = {got:?}, want {want:?}"
                        );
                    }
                    None => assert!(got.is_none(), "{ctx}: read({o}) past the end = {got:?}"),
                }
            }
            Op::ReadFrom(x) => {
                let from = x % (m.end() + 3);
                let mut reader = log.reader(from).unwrap();
                assert_eq!(reader.position(), from, "{ctx}: reader position");
                let got: Vec<StoredRecord> = reader.by_ref().collect::<Result<_, _>>().unwrap();
                let want = m.recs.get(from as usize..).unwrap_or(&[]);
                assert_eq!(got.len(), want.len(), "{ctx}: reader({from}) length");
                for (i, (r, w)) in got.iter().zip(want).enumerate() {
                    let o = from + i as u64;
                    assert!(
                        matches(r, o, w),
                        "{ctx}: reader({from}) at {o}: {r:?}, want {w:?}"
                    );
                }
                assert_eq!(
                    reader.position(),
                    from.max(m.end()),
                    "{ctx}: position at the end"
                );
            }
            Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
            Op::TimeQuery(x) => {
                let span = u64::try_from(clock.now_ms() - T0).unwrap() + 8_000;
                let ms = T0 - 4_000 + i64::try_from(x % span).unwrap();
                let want = m
                    .recs
                    .iter()
                    .position(|r| r.timestamp >= ms)
                    .map(|i| i as u64);
                let got = log.offset_for_timestamp(ms).unwrap();
                assert_eq!(got, want, "{ctx}: offset_for_timestamp({ms})");
            }
            Op::Reopen => {
                log.close().unwrap();
                log = Log::open(DIR, config()).unwrap();
                assert_eq!(log.end_offset(), m.end(), "{ctx}: end after clean reopen");
                m.durable = m.end();
                check_all(&log, &m, &ctx);
            }
            Op::Kill => {
                fs.kill();
                drop(log);
                log = Log::open(DIR, config()).unwrap();
                assert_eq!(log.end_offset(), m.end(), "{ctx}: end after process death");
                m.durable = m.end();
                check_all(&log, &m, &ctx);
            }
            Op::Crash => {
                fs.crash();
                drop(log);
                log = Log::open(DIR, config()).unwrap();
                let end = log.end_offset();
                assert!(
                    m.durable <= end && end <= m.end(),
                    "{ctx}: end after power loss {end} outside [{}, {}]",
                    m.durable,
                    m.end()
                );
                for b in &m.batches {
                    assert!(
                        !(b.start < end && end < b.end),
                        "{ctx}: batch {b:?} split by {end}"
                    );
                }
                m.recs.truncate(end as usize);
                m.batches.retain(|b| b.end <= end);
                m.durable = end;
                check_all(&log, &m, &ctx);
            }
        }
        assert_eq!(log.end_offset(), m.end(), "{ctx}: end offset");
        // Flushes make everything durable; between them, each roll makes the segment
        // it sealed durable (the model's config has no background threads, so that
        // fsync is done by the time the rolling append returns).
        let durable = log.durable_offset();
        let active_base = log.segments().last().unwrap().base_offset;
        assert!(
            m.durable.max(active_base) <= durable && durable <= m.end(),
            "{ctx}: durable offset {durable} outside [max({}, active base {active_base}), {}]",
            m.durable,
            m.end()
        );
        m.durable = durable;
    }
    log.close().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn log_matches_model(
        seed in any::<u64>(),
        segment_bytes in 512u64..4096,
        ops in proptest::collection::vec(op(), 1..100),
    ) {
        run(seed, segment_bytes, &ops);
    }
}
