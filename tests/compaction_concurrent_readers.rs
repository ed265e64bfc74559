//! Readers running while passes swap segments in (on the real file system) always see
//! consistent data: offsets rising, every record the one appended at its offset, and
//! the newest record of every key present in every full scan; readers holding an old
//! segment keep reading it after its files are retired.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::small_config;
use logqueue::{CleanupPolicy, CompactionConfig, Log, LogConfig, Record};

fn value(offset_hint: u32, key: u32) -> String {
    format!(
        "key{key}-round{offset_hint}-{}",
        "q".repeat((key % 11) as usize)
    )
}

#[test]
fn readers_see_consistent_data_during_swaps() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        cleanup: CleanupPolicy::Compact,
        compaction: CompactionConfig {
            // A small map: many partial passes, so many swaps.
            offset_map_bytes: 24 * 40,
            ..CompactionConfig::default()
        },
        ..small_config(2048)
    };
    let log = Log::open(dir.path(), config).unwrap();
    let mut values: BTreeMap<u64, (String, String)> = BTreeMap::new();
    let mut newest: BTreeMap<String, u64> = BTreeMap::new();
    for round in 0..8 {
        for key in 0..120 {
            let k = format!("key{key}");
            let v = value(round, key);
            let o = log.append(Record::keyed(k.clone(), v.clone())).unwrap();
            values.insert(o, (k.clone(), v));
            newest.insert(k, o);
        }
    }
    log.flush().unwrap();
    let values = Arc::new(values);
    let must: Arc<Vec<u64>> = Arc::new(newest.values().copied().collect());
    // A batch held across every swap.
    let held = log.reader(0).unwrap().next_batch().unwrap().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let scans = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|t| {
            let (log, values, must, stop, scans) = (
                log.clone(),
                Arc::clone(&values),
                Arc::clone(&must),
                Arc::clone(&stop),
                Arc::clone(&scans),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut seen = Vec::new();
                    for r in log.reader(0).unwrap() {
                        let r = r.unwrap();
                        let (k, v) = &values[&r.offset];
                        assert_eq!(r.key.as_deref(), Some(k.as_bytes()));
                        assert_eq!(r.value.as_deref(), Some(v.as_bytes()));
                        seen.push(r.offset);
                    }
                    assert!(seen.windows(2).all(|p| p[0] < p[1]));
                    for o in must.iter() {
                        assert!(
                            seen.binary_search(o).is_ok(),
                            "thread {t}: newest {o} missed"
                        );
                    }
                    // Point reads too.
                    for o in must.iter().step_by(7) {
                        let r = log.read(*o).unwrap().expect("newest record");
                        assert_eq!(r.value.as_deref(), Some(values[o].1.as_bytes()));
                    }
                    scans.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut passes = 0;
    loop {
        log.compact().unwrap();
        passes += 1;
        std::thread::sleep(Duration::from_millis(2));
        if log.stats().dirty_bytes == 0 || passes > 60 {
            break;
        }
    }
    // Let the readers scan the final state too.
    let at = scans.load(Ordering::Relaxed);
    while scans.load(Ordering::Relaxed) < at + 4 {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert!(passes > 3, "{passes} passes");
    let first = held.records().next().unwrap().unwrap();
    assert_eq!(first.value.unwrap(), values[&0].1.as_bytes());
    // Everything but the newest per key below the active segment (which is never
    // cleaned, so the cleaner cannot know its keys) and the active segment is gone.
    let active_base = log.segments().last().unwrap().base_offset;
    let mut newest_sealed: BTreeMap<&str, u64> = BTreeMap::new();
    for (o, (k, _)) in values.range(..active_base) {
        newest_sealed.insert(k, *o);
    }
    let left: Vec<u64> = log.reader(0).unwrap().map(|r| r.unwrap().offset).collect();
    let want: Vec<u64> = values
        .keys()
        .copied()
        .filter(|o| *o >= active_base || newest_sealed[values[o].0.as_str()] == *o)
        .collect();
    assert_eq!(left, want);
}
