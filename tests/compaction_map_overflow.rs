//! With an offset map far too small for the dirty keys, each pass cleans up to where
//! the map filled and moves the cleaner offset on; repeated passes converge to the
//! newest record per key, exactly as one pass with a large map does.

mod common;

use std::collections::BTreeMap;

use common::sim_config;
use logqueue::sim::SimFs;
use logqueue::{CleanupPolicy, CompactionConfig, Log, LogConfig, ManualClock, Record};

const DIR: &str = "/db/log";

#[test]
fn a_tiny_map_converges_over_rounds() {
    let fs = SimFs::new(1);
    fs.write_file("/db/.keep", b"").unwrap();
    let clock = ManualClock::new(1_000_000);
    let config = LogConfig {
        cleanup: CleanupPolicy::Compact,
        compaction: CompactionConfig {
            // 20 slots: at most 18 keys per pass.
            offset_map_bytes: 24 * 20,
            ..CompactionConfig::default()
        },
        ..sim_config(&fs, &clock, 2048)
    };
    let log = Log::open(DIR, config).unwrap();
    let mut written = Vec::new();
    for version in 0..5 {
        for key in 0..60u32 {
            let k = format!("key{key:02}");
            let v = format!("{k}-v{version}-{}", "z".repeat((key % 7) as usize));
            let o = log.append(Record::keyed(k.clone(), v.clone())).unwrap();
            written.push((o, k, v));
        }
    }
    log.flush().unwrap();
    let active_base = log.segments().last().unwrap().base_offset;
    let mut newest: BTreeMap<&str, u64> = BTreeMap::new();
    for (o, k, _) in written.iter().filter(|(o, _, _)| *o < active_base) {
        newest.insert(k, *o);
    }
    let mut rounds = 0;
    let mut removed = 0;
    let mut last_offset = log.stats().cleaner_offset;
    loop {
        let report = log.compact().unwrap();
        rounds += 1;
        removed += report.records_removed;
        let offset = log.stats().cleaner_offset;
        assert!(
            offset > last_offset || offset >= active_base,
            "round {rounds}: the cleaner offset must move ({last_offset} -> {offset})"
        );
        last_offset = offset;
        // Every round leaves a correct log: newest values all there, at their offsets.
        for (k, &o) in &newest {
            let r = log
                .read(o)
                .unwrap()
                .unwrap_or_else(|| panic!("{k}@{o} lost"));
            assert_eq!(r.key.unwrap(), k.as_bytes());
        }
        if offset >= active_base {
            break;
        }
        assert!(rounds < 100, "no convergence");
    }
    assert!(
        rounds > 3,
        "the map should have filled several times: {rounds}"
    );
    // One more pass sees everything clean.
    removed += log.compact().unwrap().records_removed;
    for (o, k, v) in &written {
        let r = log.read(*o).unwrap();
        if *o >= active_base || newest[k.as_str()] == *o {
            assert_eq!(r.unwrap().value.unwrap(), v.as_bytes());
        } else {
            assert_eq!(r, None, "{k}@{o}");
        }
    }
    let expected_removed = written
        .iter()
        .filter(|(o, k, _)| *o < active_base && newest[k.as_str()] != *o)
        .count();
    assert_eq!(removed, expected_removed as u64);
    assert!(log.verify().unwrap().corrupt.is_empty());
}
