//! The writer keeps one 8 MiB chunk of the active segment allocated ahead of itself
//! (prefaulted off the append path). The allocation ahead is a file operation like
//! any other: a failure of it fails no append (the space is not needed yet), and a
//! crash at it loses nothing durable.

mod common;

use logqueue::sim::{FaultKind, FaultMode, SimFs};
use logqueue::{Log, LogConfig, ManualClock, Record};

const CHUNK: u64 = 8 << 20;
const SEGMENT: &str = "/log/00000000000000000000.log";

fn config(fs: &SimFs) -> LogConfig {
    common::sim_config(fs, &ManualClock::new(0), 64 << 20)
}

fn value(i: u64) -> Vec<u8> {
    let mut v = common::value_for(i);
    // 64 KiB records: about 128 to a chunk.
    v.resize(64 << 10, (i % 251) as u8);
    v
}

#[test]
fn a_chunk_stays_allocated_ahead_of_the_writer() {
    let fs = SimFs::new(1);
    let log = Log::open("/log", config(&fs)).unwrap();
    // A new log's segment is empty: the first append allocates a chunk. From the
    // next one on, a chunk more is allocated ahead.
    log.append(Record::new(value(0))).unwrap();
    assert_eq!(fs.file_len(SEGMENT), Some(CHUNK));
    log.append(Record::new(value(0))).unwrap();
    assert_eq!(fs.file_len(SEGMENT), Some(2 * CHUNK), "no chunk ahead");
    // 8 MiB of appends later the writer is in the second chunk: the third is there.
    for i in 2..130 {
        log.append(Record::new(value(i))).unwrap();
    }
    assert_eq!(fs.file_len(SEGMENT), Some(3 * CHUNK));
    log.close().unwrap();
}

/// The allocation ahead fails (a full disk): the append that asked for it still
/// succeeds and the log is not poisoned; the space is asked for again when needed.
#[test]
fn a_failed_allocation_ahead_fails_no_append() {
    let fs = SimFs::new(2);
    let log = Log::open("/log", config(&fs)).unwrap();
    log.append(Record::new(value(0))).unwrap();
    // The next counted operation of the second append is the allocation ahead (the
    // record goes into the first chunk, which is already allocated).
    fs.fail_after(1, FaultKind::NoSpace, FaultMode::Once);
    let o = log.append(Record::new(value(1))).unwrap();
    assert_eq!(
        fs.file_len(SEGMENT),
        Some(CHUNK),
        "the allocation did not fail"
    );
    for i in 2..200 {
        log.append(Record::new(value(i))).unwrap();
    }
    log.flush().unwrap();
    assert!(fs.file_len(SEGMENT).unwrap() > CHUNK);
    assert_eq!(log.read(o).unwrap().unwrap().value, Some(value(1)));
    assert_eq!(log.read(199).unwrap().unwrap().value, Some(value(199)));
    log.close().unwrap();
}

/// A crash at each operation from just before the writer crosses into its second
/// chunk (where it allocates the third): every flushed record survives, and the
/// reopened log appends on.
#[test]
fn a_crash_around_the_allocation_ahead_loses_nothing_durable() {
    for k in 1..8u64 {
        let fs = SimFs::new(k);
        let log = Log::open("/log", config(&fs)).unwrap();
        for i in 0..120 {
            log.append(Record::new(value(i))).unwrap();
        }
        log.flush().unwrap();
        fs.crash_at_op(fs.op_count() + k);
        let mut ok = 120;
        for i in 120..140 {
            if log.append(Record::new(value(i))).is_err() {
                break;
            }
            ok += 1;
        }
        let _ = log.flush();
        fs.crash();
        drop(log);
        let log = Log::open("/log", config(&fs)).unwrap();
        let end = log.end_offset();
        assert!((120..=ok).contains(&end), "crash at op +{k}: end {end}");
        for i in 0..end {
            assert_eq!(
                log.read(i).unwrap().unwrap().value,
                Some(value(i)),
                "crash at op +{k}: offset {i}"
            );
        }
        let next = log.append(Record::new(value(end))).unwrap();
        assert_eq!(next, end);
        assert!(log.verify().unwrap().corrupt.is_empty());
    }
}

/// With background threads the preparer allocates the chunk ahead (the append only
/// asks), and a segment sealed by a roll is never grown again: after many rolls of
/// segments larger than a chunk, every sealed file is exactly its data.
#[test]
fn the_preparer_allocates_ahead_and_never_grows_a_sealed_segment() {
    let fs = SimFs::new(3);
    let config = LogConfig {
        background: true,
        segment_bytes: 20 << 20,
        ..config(&fs)
    };
    let log = Log::open("/log", config.clone()).unwrap();
    log.append(Record::new(value(0))).unwrap();
    log.append(Record::new(value(1))).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while fs.file_len(SEGMENT) != Some(2 * CHUNK) {
        assert!(
            std::time::Instant::now() < deadline,
            "no chunk ahead: {:?}",
            fs.file_len(SEGMENT)
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    for i in 2..1000 {
        log.append(Record::new(value(i))).unwrap();
    }
    let segments = log.segments();
    assert!(segments.len() >= 4, "{} segments", segments.len());
    log.close().unwrap();
    for s in &segments {
        let path = format!("/log/{:020}.log", s.base_offset);
        assert_eq!(fs.file_len(&path), Some(s.size_bytes), "{path}");
    }
    let log = Log::open("/log", config).unwrap();
    assert_eq!(log.end_offset(), 1000);
    assert_eq!(log.read(999).unwrap().unwrap().value, Some(value(999)));
}
