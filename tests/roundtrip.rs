//! Appends survive across many segments and reopen; reads, readers and indexes agree.

mod common;

use common::{small_config, value_for};
use logqueue::{Error, Log, Record};

#[test]
fn roundtrip_across_segments_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(4096)).unwrap();
    for i in 0..2_000u64 {
        assert_eq!(log.append(Record::new(value_for(i))).unwrap(), i);
    }
    let batch = log
        .append_batch((2_000..2_100).map(|i| Record::new(value_for(i))).collect())
        .unwrap();
    assert_eq!(batch, 2_000..2_100);
    assert!(log.segments().len() > 20, "expected many segments");
    let check =
        |log: &Log| {
            assert_eq!(log.end_offset(), 2_100);
            for i in (0..2_100u64).step_by(7) {
                let r = log.read(i).unwrap().unwrap();
                assert_eq!(r.offset, i);
                assert_eq!(r.value.unwrap(), value_for(i));
            }
            let all: Vec<_> = log.reader(0).unwrap().map(Result::unwrap).collect();
            assert_eq!(all.len(), 2_100);
            assert!(all.iter().enumerate().all(|(i, r)| r.offset == i as u64
                && r.value.as_deref() == Some(&value_for(i as u64)[..])));
            assert!(log.read(2_100).unwrap().is_none());
            let report = log.verify().unwrap();
            assert_eq!(report.records, 2_100);
            assert!(report.corrupt.is_empty(), "{:?}", report.corrupt);
        };
    check(&log);
    log.close().unwrap();
    let log = Log::open(dir.path(), small_config(4096)).unwrap();
    check(&log);
    // Drop without close: recovery path.
    drop(log);
    let log = Log::open(dir.path(), small_config(4096)).unwrap();
    check(&log);
    assert_eq!(log.append(Record::new("more")).unwrap(), 2_100);
}

#[test]
fn second_open_is_locked_and_close_releases() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(1 << 20)).unwrap();
    let clone = log.clone();
    assert!(matches!(
        Log::open(dir.path(), small_config(1 << 20)),
        Err(Error::Locked { .. })
    ));
    log.close().unwrap();
    assert!(matches!(clone.append(Record::new("x")), Err(Error::Closed)));
    assert!(matches!(clone.read(0), Err(Error::Closed)));
    let again = Log::open(dir.path(), small_config(1 << 20)).unwrap();
    again.close().unwrap();
}

#[test]
fn append_slice_matches_append() {
    let dir = tempfile::tempdir().unwrap();
    let config = || logqueue::LogConfig {
        max_batch_bytes: 1024,
        ..small_config(1 << 20)
    };
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.append_slice(None, b"plain").unwrap(), 0);
    assert_eq!(log.append_slice(Some(b"k"), b"keyed").unwrap(), 1);
    let a = log.read(0).unwrap().unwrap();
    assert_eq!((a.key, a.value.as_deref()), (None, Some(&b"plain"[..])));
    let b = log.read(1).unwrap().unwrap();
    assert_eq!(b.key.as_deref(), Some(&b"k"[..]));
    assert!(b.headers.is_empty());
    assert!(matches!(
        log.append_slice(None, &[0u8; 2000]),
        Err(Error::RecordTooLarge { .. })
    ));
    assert_eq!(log.end_offset(), 2);
    drop(log);
    let compacted = tempfile::tempdir().unwrap();
    let log = Log::open(
        compacted.path(),
        logqueue::LogConfig {
            cleanup: logqueue::CleanupPolicy::Compact,
            ..config()
        },
    )
    .unwrap();
    assert!(matches!(
        log.append_slice(None, b"v"),
        Err(Error::MissingKey)
    ));
    assert_eq!(log.append_slice(Some(b"k"), b"v").unwrap(), 0);
}
