//! Random sequences of keyed appends, batches, tombstones, flushes, compactions (with
//! small and large key maps), clock steps, reopens and power losses, checked after
//! every step against a model of everything appended: every record read is the one
//! appended at its offset, a record is missing only if a newer one of its key exists
//! (or it is a tombstone past its horizon), the newest record of every key is always
//! there, and readers agree with point reads. Seeds: `LOGQUEUE_SEED` to replay one.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::{seeds, sim_config, with_context, Rng};
use logqueue::sim::SimFs;
use logqueue::{CleanupPolicy, Clock, CompactionConfig, Log, LogConfig, ManualClock, Record};

const DIR: &str = "/db/log";

#[derive(Clone, Debug)]
struct Entry {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    /// Clock at the append.
    at: i64,
}

const RETENTION_MS: i64 = 60_000;

fn check(log: &Log, model: &BTreeMap<u64, Entry>, now: i64, ctx: &str) {
    let end = log.end_offset();
    let mut newest: HashMap<&[u8], u64> = HashMap::new();
    for (o, e) in model.range(..end) {
        newest.insert(&e.key, *o);
    }
    let mut present = Vec::new();
    for (o, e) in model.range(..end) {
        match log
            .read(*o)
            .unwrap_or_else(|err| panic!("{ctx}: read {o}: {err}"))
        {
            Some(r) => {
                assert_eq!(r.key.as_deref(), Some(&e.key[..]), "{ctx}: key at {o}");
                assert_eq!(r.value, e.value, "{ctx}: value at {o}");
                present.push(*o);
            }
            None => {
                let superseded = newest[&e.key[..]] != *o;
                // A newest tombstone may go once its horizon (set by a cleaning
                // after its append) has passed.
                let expired = e.value.is_none() && now >= e.at + RETENTION_MS;
                assert!(superseded || expired, "{ctx}: newest {o} lost");
            }
        }
    }
    let read: Vec<u64> = log
        .reader(0)
        .unwrap()
        .map(|r| {
            r.unwrap_or_else(|err| panic!("{ctx}: reader: {err}"))
                .offset
        })
        .collect();
    assert_eq!(read, present, "{ctx}: reader vs point reads");
    assert_eq!(
        end,
        model.keys().next_back().map_or(0, |o| o + 1),
        "{ctx}: end"
    );
}

fn run(seed: u64) {
    let mut rng = Rng::new(seed);
    let fs = SimFs::new(seed);
    fs.write_file("/db/.keep", b"").unwrap();
    let clock = ManualClock::new(1_000_000);
    let config = LogConfig {
        cleanup: CleanupPolicy::Compact,
        compaction: CompactionConfig {
            delete_retention: Duration::from_millis(RETENTION_MS as u64),
            offset_map_bytes: if rng.below(2) == 0 { 24 * 6 } else { 1 << 20 },
            ..CompactionConfig::default()
        },
        ..sim_config(&fs, &clock, rng.range(300, 1500))
    };
    let mut log = Log::open(DIR, config.clone()).unwrap();
    let mut model: BTreeMap<u64, Entry> = BTreeMap::new();
    let keys = rng.range(3, 25);
    for step in 0..150 {
        let ctx = format!("seed {seed} step {step}");
        match rng.below(20) {
            0..=9 => {
                let n = if rng.below(4) == 0 {
                    rng.range(2, 5)
                } else {
                    1
                };
                let records: Vec<Record> = (0..n)
                    .map(|_| {
                        let k = format!("key{}", rng.below(keys));
                        if rng.below(6) == 0 {
                            Record::tombstone(k)
                        } else {
                            let len = rng.below(60) as usize;
                            Record::keyed(k, rng.bytes(len))
                        }
                    })
                    .collect();
                let range = log.append_batch(records.clone()).unwrap();
                for (o, r) in range.zip(records) {
                    model.insert(
                        o,
                        Entry {
                            key: r.key.unwrap(),
                            value: r.value,
                            at: clock.now_ms(),
                        },
                    );
                }
            }
            10..=11 => log.flush().unwrap(),
            12..=14 => {
                log.compact()
                    .unwrap_or_else(|e| panic!("{ctx}: compact: {e}"));
            }
            15 => clock.advance(Duration::from_secs(rng.range(1, 90))),
            16 => {
                log.close().unwrap();
                log = Log::open(DIR, config.clone()).unwrap();
            }
            17 => {
                // Power loss: what was not flushed may go.
                fs.crash();
                drop(log);
                log = Log::open(DIR, config.clone()).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                let end = log.end_offset();
                model.retain(|o, _| *o < end);
            }
            _ => {
                let _ = log.stats();
            }
        }
        check(&log, &model, clock.now_ms(), &ctx);
    }
    log.compact().unwrap();
    check(&log, &model, clock.now_ms(), &format!("seed {seed} final"));
    assert!(log.verify().unwrap().corrupt.is_empty());
}

#[test]
fn random_operations_match_the_model() {
    for seed in seeds(40) {
        with_context(&format!("seed {seed}"), || run(seed));
    }
}
