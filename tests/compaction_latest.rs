//! Compaction keeps exactly the newest record of every key, at its original offset,
//! across many segments: removed offsets read as `Ok(None)` and readers skip them.

mod common;

use std::collections::BTreeMap;

use common::sim_config;
use logqueue::sim::SimFs;
use logqueue::{CleanupPolicy, Log, LogConfig, ManualClock, Record};

const DIR: &str = "/db/log";

fn value(key: u64, version: u64) -> Vec<u8> {
    format!(
        "key-{key}-version-{version}-{}",
        "v".repeat((key % 13) as usize)
    )
    .into_bytes()
}

#[test]
fn newest_per_key_at_original_offsets() {
    let fs = SimFs::new(1);
    let clock = ManualClock::new(1_000_000);
    let config = LogConfig {
        cleanup: CleanupPolicy::Compact,
        ..sim_config(&fs, &clock, 2048)
    };
    let log = Log::open(DIR, config).unwrap();
    // 40 keys, 12 versions each, interleaved, some in multi-record batches.
    let mut all = Vec::new();
    for version in 0..12u64 {
        for key in 0..40u64 {
            let k = format!("k{key:03}").into_bytes();
            let v = value(key, version);
            let o = if key % 10 == 0 {
                let r = log
                    .append_batch(vec![
                        Record::keyed(k.clone(), b"tmp".to_vec()),
                        Record::keyed(k.clone(), v.clone()),
                    ])
                    .unwrap();
                all.push((r.start, k.clone(), b"tmp".to_vec()));
                r.end - 1
            } else {
                log.append(Record::keyed(k.clone(), v.clone())).unwrap()
            };
            all.push((o, k, v));
        }
    }
    let segments_before = log.segments().len();
    assert!(segments_before > 10, "{segments_before} segments");
    let end = log.end_offset();
    let report = log.compact().unwrap();
    assert!(report.segments_cleaned > 0, "{report:?}");
    assert!(report.bytes_after < report.bytes_before, "{report:?}");
    // Groups are formed by input size (as Kafka's), so segments shrunk by this pass
    // merge on the next one.
    assert_eq!(log.end_offset(), end);
    // The active segment is never cleaned: its records all stay.
    let active_base = log.segments().last().unwrap().base_offset;
    // What the cleaner could see: the newest offset of each key below the active segment.
    let mut newest_cleanable: BTreeMap<&[u8], u64> = BTreeMap::new();
    for (o, k, _) in all.iter().filter(|(o, _, _)| *o < active_base) {
        newest_cleanable.insert(k, *o);
    }
    let survives = |o: u64, k: &[u8]| o >= active_base || newest_cleanable[k] == o;
    let mut removed = 0;
    for (o, k, v) in &all {
        let got = log.read(*o).unwrap();
        let is_newest = survives(*o, k);
        if is_newest || *o >= active_base {
            let got = got.unwrap_or_else(|| panic!("offset {o} was removed"));
            assert_eq!((&got.key.unwrap(), &got.value.unwrap()), (k, v));
            assert_eq!(got.offset, *o);
        } else {
            assert_eq!(got, None, "offset {o} of key {:?} is not the newest", k);
            removed += 1;
        }
    }
    assert_eq!(removed, report.records_removed);
    // A reader skips the gaps and returns the survivors in offset order.
    let read: Vec<_> = log.reader(0).unwrap().map(|r| r.unwrap()).collect();
    let offsets: Vec<u64> = read.iter().map(|r| r.offset).collect();
    let mut want: Vec<u64> = all
        .iter()
        .filter(|(o, k, _)| survives(*o, k))
        .map(|(o, _, _)| *o)
        .collect();
    want.sort_unstable();
    assert_eq!(offsets, want);
    assert!(log.verify().unwrap().corrupt.is_empty());
    // A second pass finds nothing more to remove.
    let again = log.compact().unwrap();
    assert_eq!(again.records_removed, 0, "{again:?}");
    assert!(
        again.segments_cleaned > 0,
        "small neighbours merge: {again:?}"
    );
    assert!(log.segments().len() < segments_before / 2);
    let after: Vec<_> = log.reader(0).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(after, read);
    let stats = log.stats();
    assert_eq!(stats.cleaner_runs, 2);
    assert_eq!(stats.dirty_bytes, 0);
    assert_eq!(stats.dirty_ratio(), 0.0);
}
