//! `Log::append_batch_ref`: borrowed records, encoded straight into the segment. It
//! writes exactly the bytes `append_batch` writes, reads back what was given, keeps
//! the same refusal rules, and is atomic across a power loss.

mod common;

use logqueue::sim::SimFs;
use logqueue::{
    CleanupPolicy, Error, Header, Log, LogConfig, ManualClock, Offset, Record, RecordRef,
};

/// Owned records and the borrowed headers their `RecordRef`s point at.
struct Workload {
    records: Vec<Record>,
    headers: Vec<Vec<(String, Vec<u8>)>>,
}

fn workload(n: usize, seed: u64) -> Workload {
    let mut rng = common::Rng::new(seed);
    let mut records = Vec::new();
    let mut headers = Vec::new();
    for i in 0..n {
        let mut r = Record::default();
        if rng.below(3) > 0 {
            r.key = Some(format!("key-{}", rng.below(10)).into_bytes());
        }
        if rng.below(8) > 0 {
            let len = rng.below(300) as usize;
            r.value = Some(vec![(i % 251) as u8; len]);
        }
        if rng.below(4) == 0 {
            r.timestamp = Some(1_000 + rng.below(1_000_000) as i64);
        }
        let hs: Vec<(String, Vec<u8>)> = (0..rng.below(3))
            .map(|h| (format!("h{h}"), vec![h as u8; rng.below(20) as usize]))
            .collect();
        r.headers = hs
            .iter()
            .map(|(k, v)| Header {
                key: k.clone(),
                value: v.clone(),
            })
            .collect();
        records.push(r);
        headers.push(hs);
    }
    Workload { records, headers }
}

/// The `RecordRef`s of `w`; `pairs` holds the header slices they borrow.
fn refs<'a>(w: &'a Workload, pairs: &'a [Vec<(&'a str, &'a [u8])>]) -> Vec<RecordRef<'a>> {
    w.records
        .iter()
        .zip(pairs)
        .map(|(r, hs)| RecordRef {
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            headers: hs,
            timestamp: r.timestamp,
        })
        .collect()
}

fn header_pairs(w: &Workload) -> Vec<Vec<(&str, &[u8])>> {
    w.headers
        .iter()
        .map(|hs| hs.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect())
        .collect()
}

fn sim_log(fs: &SimFs, clock: &ManualClock, dir: &str) -> Log {
    Log::open(dir, common::sim_config(fs, clock, 1 << 20)).unwrap()
}

#[test]
fn writes_the_same_bytes_as_append_batch() {
    let fs = SimFs::new(1);
    let clock = ManualClock::new(5_000);
    let owned = sim_log(&fs, &clock, "/owned");
    let borrowed = sim_log(&fs, &clock, "/borrowed");
    for (round, n) in [1usize, 2, 17, 100, 3].into_iter().enumerate() {
        let w = workload(n, round as u64);
        let pairs = header_pairs(&w);
        let a = owned.append_batch(w.records.clone()).unwrap();
        let b = borrowed.append_batch_ref(&refs(&w, &pairs)).unwrap();
        assert_eq!(a, b, "round {round}");
        clock.advance(std::time::Duration::from_millis(7));
    }
    // One append_slice and one single-record batch each way as well.
    owned.append(Record::keyed("k", "v")).unwrap();
    borrowed
        .append_batch_ref(&[RecordRef::keyed(b"k", b"v")])
        .unwrap();
    owned.close().unwrap();
    borrowed.close().unwrap();
    let name = "00000000000000000000.log";
    let a = fs.read_file(format!("/owned/{name}")).unwrap();
    let b = fs.read_file(format!("/borrowed/{name}")).unwrap();
    assert!(!a.is_empty());
    assert_eq!(a, b, "segment bytes differ");
}

#[test]
fn reads_back_what_was_given() {
    let fs = SimFs::new(2);
    let clock = ManualClock::new(9_000);
    let log = sim_log(&fs, &clock, "/log");
    let w = workload(500, 7);
    let pairs = header_pairs(&w);
    let range = log.append_batch_ref(&refs(&w, &pairs)).unwrap();
    assert_eq!(range, 0..500);
    for (i, r) in w.records.iter().enumerate() {
        let got = log.read(i as Offset).unwrap().unwrap();
        assert_eq!(got.key, r.key, "offset {i}");
        assert_eq!(got.value, r.value, "offset {i}");
        assert_eq!(got.headers, r.headers, "offset {i}");
        assert_eq!(got.timestamp, r.timestamp.unwrap_or(9_000), "offset {i}");
    }
    assert!(log.verify().unwrap().corrupt.is_empty());
    // Empty: nothing appended.
    assert_eq!(log.append_batch_ref(&[]).unwrap(), 500..500);
}

#[test]
fn refuses_what_append_batch_refuses() {
    let fs = SimFs::new(3);
    let clock = ManualClock::new(0);
    let config = LogConfig {
        cleanup: CleanupPolicy::Compact,
        max_batch_bytes: 4096,
        ..common::sim_config(&fs, &clock, 1 << 20)
    };
    let log = Log::open("/log", config).unwrap();
    let missing = [RecordRef::keyed(b"k", b"v"), RecordRef::new(b"no key")];
    assert!(matches!(
        log.append_batch_ref(&missing),
        Err(Error::MissingKey)
    ));
    let big = vec![0u8; 4096];
    assert!(matches!(
        log.append_batch_ref(&[RecordRef::keyed(b"k", &big)]),
        Err(Error::RecordTooLarge { .. })
    ));
    // Just over the limit once encoded (headers count too), like append_batch.
    let value = vec![1u8; 3950];
    let headers = [("h", &[2u8; 100][..])];
    let over = RecordRef {
        headers: &headers,
        ..RecordRef::keyed(b"k", &value)
    };
    let owned = Record::keyed("k", value.clone()).with_header("h", vec![2u8; 100]);
    assert!(matches!(
        log.append_batch(vec![owned]),
        Err(Error::RecordTooLarge { .. })
    ));
    assert!(matches!(
        log.append_batch_ref(&[over]),
        Err(Error::RecordTooLarge { .. })
    ));
    assert_eq!(log.end_offset(), 0);
    assert_eq!(
        log.append_batch_ref(&[RecordRef::keyed(b"k", b"v")])
            .unwrap(),
        0..1
    );
}

/// A power loss right after an unflushed batch: the reopened log has all of its
/// records or none, never a part, and what it has is what was given.
#[test]
fn a_batch_survives_power_loss_whole_or_not_at_all() {
    let mut seen = [false, false];
    for seed in common::seeds(40) {
        println!("seed {seed} (replay with LOGQUEUE_SEED={seed})");
        let fs = SimFs::new(seed);
        let clock = ManualClock::new(0);
        let log = sim_log(&fs, &clock, "/log");
        log.append_batch_ref(&[RecordRef::new(b"durable")]).unwrap();
        log.flush().unwrap();
        let w = workload(200, seed);
        let pairs = header_pairs(&w);
        assert_eq!(log.append_batch_ref(&refs(&w, &pairs)).unwrap(), 1..201);
        fs.crash();
        drop(log);
        let log = sim_log(&fs, &clock, "/log");
        let end = log.end_offset();
        assert!(
            end == 1 || end == 201,
            "seed {seed}: end {end}, a torn batch"
        );
        seen[usize::from(end == 201)] = true;
        if end == 201 {
            for (i, r) in w.records.iter().enumerate() {
                let got = log.read(1 + i as Offset).unwrap().unwrap();
                assert_eq!(got.value, r.value, "seed {seed}: offset {}", 1 + i);
            }
        }
        assert_eq!(
            log.read(0).unwrap().unwrap().value.as_deref(),
            Some(&b"durable"[..])
        );
    }
    if std::env::var("LOGQUEUE_SEED").is_err() {
        assert!(
            seen[0] && seen[1],
            "the seeds never kept / never lost the batch"
        );
    }
}

/// Crashing at every file operation of a batch append on a segment that rolls:
/// all of the batch or none.
#[test]
fn a_batch_is_atomic_at_every_crash_point() {
    for k in 0..12u64 {
        let fs = SimFs::new(k);
        let clock = ManualClock::new(0);
        let config = common::sim_config(&fs, &clock, 4 << 10);
        let log = Log::open("/log", config.clone()).unwrap();
        for i in 0..30u64 {
            log.append(Record::new(common::value_for(i))).unwrap();
        }
        log.flush().unwrap();
        let w = workload(40, k);
        let pairs = header_pairs(&w);
        fs.crash_at_op(fs.op_count() + k);
        let result = log.append_batch_ref(&refs(&w, &pairs));
        let _ = log.flush();
        fs.crash();
        drop(log);
        let log = Log::open("/log", config).unwrap();
        let end = log.end_offset();
        assert!(end == 30 || end == 70, "crash at op +{k}: end {end}");
        if result.is_ok() && end == 70 {
            let got = log.read(69).unwrap().unwrap();
            assert_eq!(got.value, w.records[39].value);
        }
    }
}

/// A record's key and value, as read back.
type KeyAndValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Large keys and values (from 4 KiB; batches from 16 KiB go to the file as parts
/// with one `pwritev`, the values where the caller has them) come back byte for
/// byte through every append call, among small ones, on the real file system and
/// after a reopen, and the log verifies clean.
#[test]
fn large_values_written_as_parts_read_back_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let config = || LogConfig {
        flush: logqueue::FlushPolicy::Manual,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config()).unwrap();
    let big = |i: usize, len: usize| -> Vec<u8> {
        (0..len).map(|j| ((i * 31 + j) % 251) as u8).collect()
    };
    let mut expected: Vec<KeyAndValue> = Vec::new();
    // One per call: 64 KiB values.
    for i in 0..20 {
        let v = big(i, 64 << 10);
        log.append(Record::new(v.clone())).unwrap();
        expected.push((None, Some(v)));
    }
    // A batch of borrowed records mixing a large key, large and small values, headers.
    let values: Vec<Vec<u8>> = (0..30)
        .map(|i| big(i, if i % 3 == 0 { 100 } else { 5_000 + i }))
        .collect();
    let key = big(99, 8 << 10);
    let headers = [("h", &b"v"[..])];
    let batch: Vec<RecordRef<'_>> = values
        .iter()
        .enumerate()
        .map(|(i, v)| match i % 4 {
            0 => RecordRef::keyed(&key, v),
            1 => RecordRef {
                headers: &headers,
                ..RecordRef::new(v)
            },
            _ => RecordRef::new(v),
        })
        .collect();
    let range = log.append_batch_ref(&batch).unwrap();
    assert_eq!(range.end - range.start, 30);
    for (i, v) in values.iter().enumerate() {
        expected.push(((i % 4 == 0).then(|| key.clone()), Some(v.clone())));
    }
    let v = big(7, 20 << 10);
    log.append_slice(Some(b"k"), &v).unwrap();
    expected.push((Some(b"k".to_vec()), Some(v)));
    let check = |log: &Log| {
        for (offset, (key, value)) in expected.iter().enumerate() {
            let r = log.read(offset as Offset).unwrap().unwrap();
            assert_eq!(&r.key, key, "key at {offset}");
            assert!(&r.value == value, "value at {offset}");
        }
        assert_eq!(log.end_offset(), expected.len() as Offset);
        assert!(log.verify().unwrap().corrupt.is_empty());
    };
    check(&log);
    log.close().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    check(&log);
}
