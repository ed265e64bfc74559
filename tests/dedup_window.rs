//! Idempotent appends (issue 13, item 1): the dedup window's answers, its two bounds,
//! its rebuild at open (clean close, process kill, power loss), concurrency, and
//! retention and compaction inside the window.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{sim_config, small_config};
use logqueue::sim::SimFs;
use logqueue::{
    Appended, CleanupPolicy, DedupConfig, Error, Log, LogConfig, ManualClock, Record, DEDUP_ID,
};

const WINDOW: Duration = Duration::from_secs(60);

fn dedup(max_ids: usize) -> Option<DedupConfig> {
    Some(DedupConfig {
        window: WINDOW,
        max_ids,
    })
}

fn sim_log(fs: &SimFs, clock: &ManualClock, max_ids: usize) -> Log {
    let config = LogConfig {
        dedup: dedup(max_ids),
        ..sim_config(fs, clock, 4096)
    };
    Log::open("/log", config).unwrap()
}

fn new_at(offset: u64) -> Appended {
    Appended {
        offset,
        duplicate: false,
    }
}

fn dup_of(offset: u64) -> Appended {
    Appended {
        offset,
        duplicate: true,
    }
}

#[test]
fn a_duplicate_returns_the_original_offset_and_appends_nothing() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(1_000_000);
    let log = sim_log(&fs, &clock, 1000);
    assert_eq!(
        log.append_idempotent(b"a", Record::new("1")).unwrap(),
        new_at(0)
    );
    log.append(Record::new("plain")).unwrap();
    assert_eq!(
        log.append_idempotent(b"b", Record::new("2")).unwrap(),
        new_at(2)
    );
    assert_eq!(
        log.append_idempotent(b"a", Record::new("other")).unwrap(),
        dup_of(0)
    );
    assert_eq!(
        log.append_idempotent(b"b", Record::new("2")).unwrap(),
        dup_of(2)
    );
    assert_eq!(log.end_offset(), 3);
    // The id is in the record, as documented.
    let r = log.read(0).unwrap().unwrap();
    assert_eq!(r.header(DEDUP_ID), Some(&b"a"[..]));
    assert_eq!(r.value.as_deref(), Some(&b"1"[..]));
}

#[test]
fn a_batch_appends_its_new_ids_as_one_batch() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(1_000_000);
    let log = sim_log(&fs, &clock, 1000);
    log.append_idempotent(b"x", Record::new("x")).unwrap();
    let got = log
        .append_idempotent_batch(vec![
            (b"y".to_vec(), Record::new("y")),
            (b"x".to_vec(), Record::new("x")),
            (b"z".to_vec(), Record::new("z")),
            (b"y".to_vec(), Record::new("y")),
        ])
        .unwrap();
    assert_eq!(got, vec![new_at(1), dup_of(0), new_at(2), dup_of(1)]);
    assert_eq!(log.stats().batches_appended, 2);
    // A whole batch again: nothing appended.
    let again = log
        .append_idempotent_batch(vec![
            (b"y".to_vec(), Record::new("y")),
            (b"z".to_vec(), Record::new("z")),
        ])
        .unwrap();
    assert_eq!(again, vec![dup_of(1), dup_of(2)]);
    assert_eq!(log.end_offset(), 3);
}

#[test]
fn without_a_window_or_with_a_bad_id_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(4096)).unwrap();
    assert!(matches!(
        log.append_idempotent(b"a", Record::new("1")),
        Err(Error::InvalidConfig(_))
    ));
    log.close().unwrap();
    let config = LogConfig {
        dedup: dedup(10),
        ..small_config(4096)
    };
    let log = Log::open(dir.path(), config).unwrap();
    assert!(matches!(
        log.append_idempotent(b"", Record::new("1")),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        log.append_idempotent(&[7; 4097], Record::new("1")),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(log.end_offset(), 0);
}

#[test]
fn bad_window_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        DedupConfig {
            window: Duration::ZERO,
            max_ids: 10,
        },
        DedupConfig {
            window: WINDOW,
            max_ids: 0,
        },
    ] {
        let config = LogConfig {
            dedup: Some(bad),
            ..small_config(4096)
        };
        assert!(matches!(
            Log::open(dir.path(), config),
            Err(Error::InvalidConfig(_))
        ));
    }
    // Time retention shorter than the window would forget ids at every reopen.
    let config = LogConfig {
        dedup: dedup(10),
        retention_ms: Some(Duration::from_secs(30)),
        ..small_config(4096)
    };
    assert!(matches!(
        Log::open(dir.path(), config),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn ids_older_than_the_window_append_again_before_and_after_reopen() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(1_000_000);
    {
        let log = sim_log(&fs, &clock, 1000);
        log.append_idempotent(b"old", Record::new("1")).unwrap();
        clock.advance(Duration::from_secs(30));
        log.append_idempotent(b"young", Record::new("2")).unwrap();
        clock.advance(Duration::from_secs(31));
        // "old" is 61 s old, "young" 31 s.
        assert_eq!(
            log.append_idempotent(b"old", Record::new("1")).unwrap(),
            new_at(2)
        );
        assert_eq!(
            log.append_idempotent(b"young", Record::new("2")).unwrap(),
            dup_of(1)
        );
        log.close().unwrap();
    }
    clock.advance(Duration::from_secs(40));
    // 71 s: "young" (offset 1) is out, the second "old" (offset 2, 40 s) is in.
    let log = sim_log(&fs, &clock, 1000);
    assert_eq!(log.dedup_stats().unwrap().ids, 1);
    assert_eq!(
        log.append_idempotent(b"young", Record::new("2")).unwrap(),
        new_at(3)
    );
    assert_eq!(
        log.append_idempotent(b"old", Record::new("1")).unwrap(),
        dup_of(2)
    );
}

#[test]
fn max_ids_bounds_the_window() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(1_000_000);
    {
        let log = sim_log(&fs, &clock, 3);
        for id in [b"a", b"b", b"c", b"d"] {
            log.append_idempotent(id, Record::new("v")).unwrap();
        }
        assert_eq!(log.dedup_stats().unwrap().ids, 3);
        // "a" is the oldest of four: forgotten; "b" is still in.
        assert_eq!(
            log.append_idempotent(b"b", Record::new("v")).unwrap(),
            dup_of(1)
        );
        assert_eq!(
            log.append_idempotent(b"a", Record::new("v")).unwrap(),
            new_at(4)
        );
        log.close().unwrap();
    }
    // The rebuild keeps the newest three: b was pushed out by a.
    let log = sim_log(&fs, &clock, 3);
    assert_eq!(log.dedup_stats().unwrap().ids, 3);
    assert_eq!(
        log.append_idempotent(b"d", Record::new("v")).unwrap(),
        dup_of(3)
    );
    assert_eq!(
        log.append_idempotent(b"b", Record::new("v")).unwrap(),
        new_at(5)
    );
}

#[test]
fn the_window_survives_a_process_kill() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(1_000_000);
    {
        let log = sim_log(&fs, &clock, 1000);
        for i in 0..50u32 {
            log.append_idempotent(
                format!("id-{i}").as_bytes(),
                Record::new(i.to_le_bytes().to_vec()),
            )
            .unwrap();
        }
        // Nothing flushed: a kill keeps what the process wrote.
        fs.kill();
    }
    let log = sim_log(&fs, &clock, 1000);
    assert_eq!(log.end_offset(), 50);
    for i in 0..50u32 {
        let got = log
            .append_idempotent(format!("id-{i}").as_bytes(), Record::new("again"))
            .unwrap();
        assert_eq!(got, dup_of(u64::from(i)));
    }
    assert_eq!(log.end_offset(), 50);
}

#[test]
fn after_a_power_loss_durable_ids_are_duplicates_and_lost_ones_append_again() {
    for seed in common::seeds(8) {
        println!("LOGQUEUE_SEED={seed}");
        let fs = SimFs::new(seed);
        let clock = ManualClock::new(1_000_000);
        {
            let log = sim_log(&fs, &clock, 1000);
            for i in 0..20u32 {
                log.append_idempotent(format!("id-{i}").as_bytes(), Record::new("v"))
                    .unwrap();
            }
            log.flush().unwrap();
            for i in 20..40u32 {
                log.append_idempotent(format!("id-{i}").as_bytes(), Record::new("v"))
                    .unwrap();
            }
            fs.crash();
        }
        let log = sim_log(&fs, &clock, 1000);
        let survived = log.end_offset();
        assert!((20..=40).contains(&survived), "seed {seed}: {survived}");
        for i in 0..40u32 {
            let got = log
                .append_idempotent(format!("id-{i}").as_bytes(), Record::new("v"))
                .unwrap();
            if u64::from(i) < survived {
                assert_eq!(got, dup_of(u64::from(i)), "seed {seed}: id-{i}");
            } else {
                // Its record was lost with the power: appending it again is correct.
                assert!(!got.duplicate, "seed {seed}: id-{i}");
            }
        }
        // Each id exactly once in the log.
        let mut ids: Vec<Vec<u8>> = common::read_all(&log)
            .iter()
            .map(|r| r.header(DEDUP_ID).unwrap().to_vec())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 40, "seed {seed}");
        assert_eq!(log.end_offset(), 40, "seed {seed}");
    }
}

#[test]
fn threads_appending_the_same_ids_yield_one_record_each() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        dedup: dedup(100_000),
        ..small_config(64 << 10)
    };
    let log = Log::open(dir.path(), config).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut fresh = 0;
                for i in 0..500u32 {
                    // Every thread appends every id, in different orders.
                    let id = (i * 7 + t * 131) % 500;
                    let got = log
                        .append_idempotent(format!("id-{id}").as_bytes(), Record::new("v"))
                        .unwrap();
                    fresh += u32::from(!got.duplicate);
                }
                fresh
            })
        })
        .collect();
    let fresh: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(fresh, 500);
    assert_eq!(log.end_offset(), 500);
}

#[test]
fn records_deleted_inside_the_window_keep_their_ids_while_open() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(1_000_000);
    let log = sim_log(&fs, &clock, 1000);
    for i in 0..10u32 {
        log.append_idempotent(format!("id-{i}").as_bytes(), Record::new("v"))
            .unwrap();
    }
    log.delete_records_before(5).unwrap();
    log.enforce_retention().unwrap();
    for i in 0..10u32 {
        let got = log
            .append_idempotent(format!("id-{i}").as_bytes(), Record::new("v"))
            .unwrap();
        assert_eq!(got, dup_of(u64::from(i)), "id-{i}");
    }
    assert_eq!(log.end_offset(), 10);
}

#[test]
fn records_compacted_inside_the_window_keep_their_ids_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let config = LogConfig {
        dedup: dedup(1000),
        cleanup: CleanupPolicy::Compact,
        clock: Arc::new(clock.clone()),
        ..small_config(512)
    };
    let log = Log::open(dir.path(), config).unwrap();
    // Ten versions of one key, each with its own id: compaction keeps the last.
    for i in 0..10u32 {
        log.append_idempotent(
            format!("id-{i}").as_bytes(),
            Record::keyed("k", vec![b'v'; 100]),
        )
        .unwrap();
    }
    log.append(Record::keyed("other", "roll")).unwrap();
    log.flush().unwrap();
    log.compact().unwrap();
    assert_eq!(
        log.read(0).unwrap(),
        None,
        "compaction removed the first version"
    );
    for i in 0..10u32 {
        let got = log
            .append_idempotent(format!("id-{i}").as_bytes(), Record::keyed("k", "again"))
            .unwrap();
        assert_eq!(got, dup_of(u64::from(i)), "id-{i}");
    }
}

#[test]
fn the_id_header_replaces_one_the_record_carries_and_keeps_the_others() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(1_000_000);
    let log = sim_log(&fs, &clock, 1000);
    let record = Record::new("v")
        .with_header("h", "x")
        .with_header(DEDUP_ID, "forged");
    assert_eq!(log.append_idempotent(b"real", record).unwrap(), new_at(0));
    let r = log.read(0).unwrap().unwrap();
    assert_eq!(r.header("h"), Some(&b"x"[..]));
    let ids: Vec<&[u8]> = r
        .headers
        .iter()
        .filter(|h| h.key == DEDUP_ID)
        .map(|h| h.value.as_slice())
        .collect();
    assert_eq!(ids, vec![&b"real"[..]]);
    assert_eq!(r.timestamp, 1_000_000);
    assert_eq!(
        log.append_idempotent(b"real", Record::new("v")).unwrap(),
        dup_of(0)
    );
    assert!(
        !log.append_idempotent(b"forged", Record::new("v"))
            .unwrap()
            .duplicate
    );
}

#[test]
fn a_batch_carries_each_id_in_its_record_with_the_other_headers_and_timestamps() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(1_000_000);
    let log = sim_log(&fs, &clock, 1000);
    let got = log
        .append_idempotent_batch(vec![
            (
                b"p".to_vec(),
                Record::new("1")
                    .with_header("h", "x")
                    .with_header(DEDUP_ID, "forged"),
            ),
            (b"q".to_vec(), Record::keyed("k", "2")),
            (b"r".to_vec(), Record::new("3").with_timestamp(999_000)),
        ])
        .unwrap();
    assert_eq!(got, vec![new_at(0), new_at(1), new_at(2)]);
    let records: Vec<_> = (0..3).map(|o| log.read(o).unwrap().unwrap()).collect();
    let headers: Vec<Vec<(&str, &[u8])>> = records
        .iter()
        .map(|r| {
            r.headers
                .iter()
                .map(|h| (h.key.as_str(), h.value.as_slice()))
                .collect()
        })
        .collect();
    assert_eq!(
        headers,
        vec![
            vec![("h", &b"x"[..]), (DEDUP_ID, &b"p"[..])],
            vec![(DEDUP_ID, &b"q"[..])],
            vec![(DEDUP_ID, &b"r"[..])],
        ]
    );
    assert_eq!(records[1].key.as_deref(), Some(&b"k"[..]));
    let timestamps: Vec<i64> = records.iter().map(|r| r.timestamp).collect();
    assert_eq!(timestamps, [1_000_000, 1_000_000, 999_000]);
    // The forged id is not remembered; the real ones are.
    let again = log
        .append_idempotent_batch(vec![
            (b"forged".to_vec(), Record::new("4")),
            (b"p".to_vec(), Record::new("1")),
            (b"r".to_vec(), Record::new("3")),
        ])
        .unwrap();
    assert_eq!(again, vec![new_at(3), dup_of(0), dup_of(2)]);
}

/// The rebuild at open sizes the table for the records in the window; when most of
/// them carry no id it gives the unused memory back (the ids stay duplicates).
#[test]
fn a_reopen_over_records_without_ids_keeps_the_memory_of_the_ids_only() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(1_000_000);
    {
        let log = sim_log(&fs, &clock, 100_000);
        let plain: Vec<Record> = (0..5_000).map(|_| Record::new("p")).collect();
        log.append_batch(plain).unwrap();
        for n in 0..10u32 {
            log.append_idempotent(&n.to_be_bytes(), Record::new("i"))
                .unwrap();
        }
        log.close().unwrap();
    }
    let log = sim_log(&fs, &clock, 100_000);
    let stats = log.dedup_stats().unwrap();
    assert_eq!(stats.ids, 10);
    // A table sized for the 5,010 records would hold about 185 KB.
    assert!(stats.memory_bytes <= 16 * 1024, "{stats:?}");
    for n in 0..10u32 {
        let got = log
            .append_idempotent(&n.to_be_bytes(), Record::new("i"))
            .unwrap();
        assert_eq!(got, dup_of(5_000 + u64::from(n)));
    }
}

/// A value of `len` bytes that differs by `i`.
fn large_value(i: u32, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize * 7 + j) as u8).collect()
}

/// Large idempotent records (from 16 KiB a batch is written as parts with one
/// `pwritev`, its CRC withheld until the id is checked) on the real file system:
/// they read back whole, their ids are duplicates before and after a reopen, and a
/// duplicate leaves nothing behind (the log verifies clean, offsets stay dense).
#[test]
fn large_idempotent_records_are_written_once_and_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let config = || LogConfig {
        dedup: dedup(1000),
        ..small_config(1 << 20)
    };
    let log = Log::open(dir.path(), config()).unwrap();
    for i in 0..30u32 {
        let id = format!("big-{}", i % 20);
        let got = log
            .append_idempotent(id.as_bytes(), Record::new(large_value(i % 20, 20 << 10)))
            .unwrap();
        let want = if i < 20 {
            new_at(i.into())
        } else {
            dup_of((i % 20).into())
        };
        assert_eq!(got, want, "{id}");
    }
    let check = |log: &Log| {
        assert_eq!(log.end_offset(), 20);
        for i in 0..20u32 {
            let r = log.read(i.into()).unwrap().unwrap();
            assert!(r.value == Some(large_value(i, 20 << 10)), "value {i}");
            assert_eq!(r.header(DEDUP_ID), Some(format!("big-{i}").as_bytes()));
        }
        assert!(log.verify().unwrap().corrupt.is_empty());
    };
    check(&log);
    log.close().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    check(&log);
    assert_eq!(
        log.append_idempotent(b"big-3", Record::new("again"))
            .unwrap(),
        dup_of(3)
    );
}

/// A crash (power loss) at each file operation of a large idempotent append: after
/// the reopen the record is there whole or not at all, and appending it again is a
/// duplicate exactly when it is there: never two copies, never a torn one.
#[test]
fn a_crash_in_a_large_idempotent_append_leaves_it_once_or_not_at_all() {
    let clock = ManualClock::new(1_000_000);
    let config = |fs: &SimFs| LogConfig {
        dedup: dedup(1000),
        ..sim_config(fs, &clock, 1 << 20)
    };
    let big = || Record::new(large_value(1, 40 << 10));
    // The file operations of the append and its flush, counted on a run without a
    // crash: each of them is a crash point below.
    let ops = {
        let fs = SimFs::new(0);
        let log = Log::open("/log", config(&fs)).unwrap();
        log.append_idempotent(b"first", Record::new("small"))
            .unwrap();
        log.flush().unwrap();
        let before = fs.op_count();
        log.append_idempotent(b"big", big()).unwrap();
        log.flush().unwrap();
        fs.op_count() - before
    };
    assert!(ops >= 3, "{ops} operations");
    for k in 1..=ops {
        let fs = SimFs::new(k);
        {
            let log = Log::open("/log", config(&fs)).unwrap();
            log.append_idempotent(b"first", Record::new("small"))
                .unwrap();
            log.flush().unwrap();
            fs.crash_at_op(fs.op_count() + k);
            let _ = log.append_idempotent(b"big", big());
            let _ = log.flush();
            fs.crash();
        }
        let log = Log::open("/log", config(&fs)).unwrap();
        let end = log.end_offset();
        assert!((1..=2).contains(&end), "crash at op +{k}: end {end}");
        if end == 2 {
            let r = log.read(1).unwrap().unwrap();
            assert!(r.value == big().value, "crash at op +{k}: torn");
        }
        let again = log.append_idempotent(b"big", big()).unwrap();
        assert_eq!(again.duplicate, end == 2, "crash at op +{k}");
        assert_eq!(again.offset, 1, "crash at op +{k}");
        assert_eq!(log.end_offset(), 2, "crash at op +{k}");
        assert!(log.verify().unwrap().corrupt.is_empty(), "crash at op +{k}");
    }
}

/// A large duplicate is encoded and written past the published end before its id
/// is confirmed, with its CRC withheld: when it turns out to be a duplicate, the
/// bytes left there never decode, so no crash (power loss keeping any unsynced
/// write) brings the second copy back.
#[test]
fn a_large_duplicate_left_past_the_end_never_comes_back_after_a_crash() {
    let clock = ManualClock::new(1_000_000);
    for seed in common::seeds(16) {
        println!("LOGQUEUE_SEED={seed}");
        let fs = SimFs::new(seed);
        let config = || LogConfig {
            dedup: dedup(1000),
            ..sim_config(&fs, &clock, 1 << 20)
        };
        {
            let log = Log::open("/log", config()).unwrap();
            let big = Record::new(large_value(2, 40 << 10));
            assert_eq!(
                log.append_idempotent(b"big", big.clone()).unwrap(),
                new_at(0)
            );
            log.flush().unwrap();
            assert_eq!(log.append_idempotent(b"big", big).unwrap(), dup_of(0));
            fs.crash();
        }
        let log = Log::open("/log", config()).unwrap();
        assert_eq!(log.end_offset(), 1, "seed {seed}: the duplicate came back");
        assert!(log.verify().unwrap().corrupt.is_empty(), "seed {seed}");
    }
}
