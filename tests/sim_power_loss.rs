//! Power loss (and process death) after random workloads on SimFs: every flushed record
//! survives with its exact value, the log stays a dense prefix of what was appended,
//! batches are all-or-nothing, nothing is reported corrupt, and appends continue at
//! the recovered end. Replay one seed with `LOGQUEUE_SEED=<seed>`.

mod common;

use std::ops::Range;
use std::time::Duration;

use common::{check_log_matches, seeds, sim_config, with_context, Rng};
use logqueue::sim::SimFs;
use logqueue::{Log, LogConfig, ManualClock, Record};

const DIR: &str = "/db/log";
const CYCLES: u32 = 4;

/// A value naming its seed, cycle and offset, padded to a random length.
fn value(seed: u64, cycle: u32, offset: u64, rng: &mut Rng) -> Vec<u8> {
    let mut v = format!("s{seed}-c{cycle}-o{offset}-").into_bytes();
    let pad = rng.below(200) as usize;
    v.extend(std::iter::repeat_n(b'a' + (offset % 26) as u8, pad));
    v
}

fn record(value: Vec<u8>, rng: &mut Rng) -> Record {
    if rng.below(3) == 0 {
        Record::keyed(format!("k{}", rng.below(8)), value)
    } else {
        Record::new(value)
    }
}

fn run(seed: u64) {
    let fs = SimFs::new(seed);
    // The log's parent exists durably: crash semantics concern the engine only.
    fs.write_file("/db/.keep", b"").unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let mut rng = Rng::new(seed);
    let segment_bytes = 1024 * rng.range(1, 5);
    let config = || LogConfig {
        max_batch_bytes: 16 << 10,
        ..sim_config(&fs, &clock, segment_bytes)
    };
    // What was appended at each offset (the log must be a prefix of it).
    let mut values: Vec<Vec<u8>> = Vec::new();
    // Batches of more than one record: a crash keeps all of one or none.
    let mut batches: Vec<Range<u64>> = Vec::new();
    // Offsets below were durable (flushed) before the last crash; after a kill,
    // everything appended.
    let mut must_keep = 0u64;
    for cycle in 0..=CYCLES {
        let ctx = format!("seed {seed}, cycle {cycle}, segment_bytes {segment_bytes}");
        let log = Log::open(DIR, config()).unwrap_or_else(|e| panic!("{ctx}: open failed: {e}"));
        let end = log.end_offset();
        assert!(
            end >= must_keep,
            "{ctx}: recovered end {end} lost records below {must_keep} that were durable"
        );
        assert!(
            end <= values.len() as u64,
            "{ctx}: recovered end {end} is past the {} records appended",
            values.len()
        );
        for b in &batches {
            assert!(
                !(b.start < end && end < b.end),
                "{ctx}: batch {b:?} split by recovered end {end}"
            );
        }
        values.truncate(end as usize);
        batches.retain(|b| b.end <= end);
        check_log_matches(&log, 0, &values, &ctx);
        let report = log.verify().unwrap();
        assert_eq!(report.records, end, "{ctx}: verify counts every record");
        assert_eq!(
            log.durable_offset(),
            end,
            "{ctx}: open makes the log durable"
        );
        if cycle == CYCLES {
            log.close()
                .unwrap_or_else(|e| panic!("{ctx}: close failed: {e}"));
            return;
        }

        // Appends continue right at the recovered end.
        let v = value(seed, cycle, end, &mut rng);
        assert_eq!(
            log.append(Record::new(v.clone())).unwrap(),
            end,
            "{ctx}: first append after reopen"
        );
        values.push(v);

        let ops = rng.range(10, 60);
        for _ in 0..ops {
            let next = values.len() as u64;
            match rng.below(10) {
                0..=4 => {
                    let v = value(seed, cycle, next, &mut rng);
                    let o = log
                        .append(record(v.clone(), &mut rng))
                        .unwrap_or_else(|e| panic!("{ctx}: append failed: {e}"));
                    assert_eq!(o, next, "{ctx}: append offset");
                    values.push(v);
                }
                5..=6 => {
                    let n = rng.range(2, 7);
                    let vs: Vec<Vec<u8>> = (next..next + n)
                        .map(|o| value(seed, cycle, o, &mut rng))
                        .collect();
                    let records = vs.iter().map(|v| record(v.clone(), &mut rng)).collect();
                    let r = log
                        .append_batch(records)
                        .unwrap_or_else(|e| panic!("{ctx}: append_batch failed: {e}"));
                    assert_eq!(r, next..next + n, "{ctx}: batch offsets");
                    values.extend(vs);
                    batches.push(r);
                }
                7..=8 => {
                    log.flush()
                        .unwrap_or_else(|e| panic!("{ctx}: flush failed: {e}"));
                    assert_eq!(
                        log.durable_offset(),
                        next,
                        "{ctx}: flush makes everything appended durable"
                    );
                    must_keep = next;
                }
                _ => clock.advance(Duration::from_millis(rng.below(5_000))),
            }
            assert_eq!(log.end_offset(), values.len() as u64, "{ctx}: end offset");
            assert!(log.durable_offset() >= must_keep, "{ctx}: durable offset");
        }
        if rng.below(4) == 0 {
            // Process death: everything whose append returned is in the OS.
            fs.kill();
            must_keep = values.len() as u64;
        } else {
            fs.crash();
        }
        // Handles from before the crash are dead: dropping the log writes nothing.
        drop(log);
    }
}

#[test]
fn flushed_records_survive_power_loss() {
    for seed in seeds(150) {
        with_context(
            &format!("seed {seed} (replay with LOGQUEUE_SEED={seed})"),
            || run(seed),
        );
    }
}
