//! Corruption inside durable data (below the recovery point, or after a clean
//! shutdown) is reported and skipped, never truncated with the good data after it:
//! reads of the damaged batch are `Error::Corrupt`, every other record reads back,
//! the reader reports the corruption as an `Err` item, `verify()` lists exactly the
//! damaged batch, and appends continue.
//!
//! What a reader does after the `Err` item is pinned by
//! `reader_reports_corruption_then_goes_on`.

mod common;

use std::path::Path;

use common::{
    batches_of, copy_dir, flip_bit, seg_path, segment_files, small_config, sweep_tempdir,
    value_for, write_recovery_point, BatchPos,
};
use logqueue::{Error, Log, LogConfig, Record};

const TOTAL: u64 = 400;

fn config() -> LogConfig {
    small_config(4096)
}

/// A closed log of `TOTAL` records over many segments, mixing single records and
/// batches of 3.
fn template() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let mut i = 0;
    while i < TOTAL {
        let n = if i % 4 == 1 { 3.min(TOTAL - i) } else { 1 };
        let recs = (i..i + n).map(|o| Record::new(value_for(o))).collect();
        assert_eq!(log.append_batch(recs).unwrap(), i..i + n);
        i += n;
    }
    log.close().unwrap();
    assert!(segment_files(dir.path()).len() >= 6);
    dir
}

/// A multi-record batch in the middle of the middle sealed segment.
fn victim(dir: &Path) -> (u64, BatchPos) {
    let segs = segment_files(dir);
    let (base, path) = &segs[segs.len() / 2];
    let batches = batches_of(&std::fs::read(path).unwrap());
    let mid = &batches[batches.len() / 2..];
    let b = *mid
        .iter()
        .find(|b| b.last_offset > b.base_offset)
        .expect("a multi-record batch in the second half");
    (*base, b)
}

/// Asserts: every record outside `bad` reads back (by `read`), every offset in it is
/// `Error::Corrupt` naming the segment file, and `verify()` reports exactly one range.
fn check_one_corrupt_batch(log: &Log, dir: &Path, base: u64, b: &BatchPos, total: u64) {
    assert_eq!(log.end_offset(), total);
    for o in 0..total {
        let got = log.read(o);
        if (b.base_offset..=b.last_offset).contains(&o) {
            match got {
                Err(Error::Corrupt { path, position, .. }) => {
                    assert_eq!(path, seg_path(dir, base, "log"));
                    assert_eq!(position, b.start, "position of the damaged batch");
                }
                other => panic!("offset {o} in the damaged batch: {other:?}"),
            }
        } else {
            let r = got
                .unwrap_or_else(|e| panic!("offset {o}: {e}"))
                .unwrap_or_else(|| panic!("offset {o} missing"));
            assert_eq!(r.offset, o);
            let want = if o < TOTAL {
                value_for(o)
            } else {
                b"after".to_vec()
            };
            assert_eq!(r.value.unwrap(), want, "value of {o}");
        }
    }
    let report = log.verify().unwrap();
    assert_eq!(report.corrupt.len(), 1, "{:?}", report.corrupt);
    let c = &report.corrupt[0];
    assert_eq!(c.segment, base);
    assert_eq!(c.start_position, b.start);
    assert_eq!(c.end_position, b.end);
    assert_eq!(c.next_offset, Some(b.last_offset + 1));
    let damaged = b.last_offset - b.base_offset + 1;
    assert_eq!(report.records, total - damaged);
    assert_eq!(log.stats().corrupt_ranges, 1);
}

/// Flips a bit in the record data of the victim batch; returns it.
fn damage(dir: &Path) -> (u64, BatchPos) {
    let (base, b) = victim(dir);
    flip_bit(
        &seg_path(dir, base, "log"),
        b.start + 60 + (b.end - b.start - 60) / 2,
        3,
    );
    (base, b)
}

fn reopen_and_check(dir: &Path, base: u64, b: &BatchPos) {
    let log = Log::open(dir, config()).unwrap();
    check_one_corrupt_batch(&log, dir, base, b, TOTAL);
    // Appends continue at the end, after the corruption.
    assert_eq!(log.append(Record::new("after")).unwrap(), TOTAL);
    check_one_corrupt_batch(&log, dir, base, b, TOTAL + 1);
    log.close().unwrap();
    // And again, after a crash: still exactly the one damaged batch missing.
    std::fs::remove_file(dir.join("clean-shutdown")).unwrap();
    let log = Log::open(dir, config()).unwrap();
    check_one_corrupt_batch(&log, dir, base, b, TOTAL + 1);
    log.close().unwrap();
}

#[test]
fn bit_flip_in_a_sealed_segment_after_clean_shutdown() {
    let t = template();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(t.path(), dir.path());
    let (base, b) = damage(dir.path());
    reopen_and_check(dir.path(), base, &b);
}

#[test]
fn bit_flip_in_a_sealed_segment_after_crash_with_recovery_point_past_it() {
    let t = template();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(t.path(), dir.path());
    let (base, b) = damage(dir.path());
    std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
    reopen_and_check(dir.path(), base, &b);
}

#[test]
fn bit_flip_in_the_segment_holding_the_recovery_point() {
    // The recovery point sits in the damaged segment, after the damaged batch: the scan
    // starts in that segment, sees the damage below the point, and must keep going.
    let t = template();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(t.path(), dir.path());
    let (base, b) = damage(dir.path());
    std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
    let path = seg_path(dir.path(), base, "log");
    let batches = batches_of(&std::fs::read(&path).unwrap());
    let after = batches.iter().find(|x| x.start > b.start).unwrap();
    write_recovery_point(dir.path(), base, after.end, after.last_offset + 1);
    reopen_and_check(dir.path(), base, &b);
}

#[test]
fn corruption_in_the_active_segment_below_the_recovery_point_is_not_truncated() {
    // Kafka truncates the active segment at the first bad batch, dropping the good
    // batches after it. Here the corrupt batch is skipped and reported.
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(1 << 20)).unwrap();
    for i in 0..100 {
        log.append(Record::new(value_for(i))).unwrap();
    }
    log.append_batch((100..105).map(|i| Record::new(value_for(i))).collect())
        .unwrap();
    for i in 105..TOTAL {
        log.append(Record::new(value_for(i))).unwrap();
    }
    log.flush().unwrap();
    log.close().unwrap();
    let segs = segment_files(dir.path());
    assert_eq!(segs.len(), 1, "one active segment");
    let (base, path) = &segs[0];
    let batches = batches_of(&std::fs::read(path).unwrap());
    let b = *batches.iter().find(|b| b.base_offset == 100).unwrap();
    assert_eq!(b.last_offset, 104);
    flip_bit(path, b.start + 70, 0);
    // A crash: no clean-shutdown marker; the recovery point covers everything.
    std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
    let log = Log::open(dir.path(), small_config(1 << 20)).unwrap();
    check_one_corrupt_batch(&log, dir.path(), *base, &b, TOTAL);
    assert_eq!(log.append(Record::new("after")).unwrap(), TOTAL);
    log.close().unwrap();
    // Crash again, now with the recovery point half-way (the damaged batch below it,
    // good batches above it): the tail above the point is valid and is kept.
    std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
    let half = batches.iter().find(|x| x.base_offset == 200).unwrap();
    write_recovery_point(dir.path(), *base, half.start, 200);
    let log = Log::open(dir.path(), small_config(1 << 20)).unwrap();
    check_one_corrupt_batch(&log, dir.path(), *base, &b, TOTAL + 1);
    log.close().unwrap();
}

#[test]
fn corruption_above_the_recovery_point_is_a_torn_tail() {
    // The contrast: above the recovery point nothing was promised, so the first bad
    // batch ends the log there.
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(1 << 20)).unwrap();
    for i in 0..TOTAL {
        log.append(Record::new(value_for(i))).unwrap();
    }
    log.close().unwrap();
    let (base, path) = segment_files(dir.path()).remove(0);
    let batches = batches_of(&std::fs::read(&path).unwrap());
    let point = batches[100];
    let bad = batches[300];
    flip_bit(&path, bad.start + 70, 0);
    std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
    write_recovery_point(dir.path(), base, point.start, point.base_offset);
    let log = Log::open(dir.path(), small_config(1 << 20)).unwrap();
    common::assert_dense_prefix(&log, bad.base_offset);
    log.close().unwrap();
}

#[test]
fn reader_reports_corruption_then_goes_on() {
    let t = template();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(t.path(), dir.path());
    let (base, b) = damage(dir.path());
    let log = Log::open(dir.path(), config()).unwrap();
    let mut reader = log.reader(0).unwrap();
    for o in 0..b.base_offset {
        let r = reader.next().unwrap().unwrap();
        assert_eq!(r.offset, o);
    }
    match reader.next() {
        Some(Err(Error::Corrupt { path, position, .. })) => {
            assert_eq!(path, seg_path(dir.path(), base, "log"));
            assert_eq!(position, b.start);
        }
        other => panic!("expected the corruption, got {other:?}"),
    }
    // After the Err item the reader continues with the first record after the damaged
    // batch: the corruption is reported once, and the good data after it is not lost.
    let rest: Vec<_> = reader.by_ref().take(1000).collect();
    let rest: Vec<_> = rest
        .into_iter()
        .collect::<logqueue::Result<Vec<_>>>()
        .expect("only one Err item");
    assert_eq!(rest.len() as u64, TOTAL - b.last_offset - 1);
    for (r, o) in rest.iter().zip(b.last_offset + 1..) {
        assert_eq!(r.offset, o);
        assert_eq!(r.value.as_deref(), Some(&value_for(o)[..]));
    }
    assert!(reader.next().is_none());
    // Seeking into the damaged batch reports it again.
    reader.seek(b.base_offset + 1).unwrap();
    assert!(matches!(reader.next(), Some(Err(Error::Corrupt { .. }))));
    log.close().unwrap();
}

#[test]
fn damage_anywhere_in_a_batch_never_returns_wrong_data() {
    // One bit flipped at each byte of a batch (the header included): the log opens,
    // no read returns a record that differs from what was written, and every offset
    // outside the damaged batch still reads back.
    let t = template();
    let (base, b) = victim(t.path());
    for pos in b.start..b.end {
        let dir = sweep_tempdir();
        copy_dir(t.path(), dir.path());
        let bit = (pos % 8) as u8;
        flip_bit(&seg_path(dir.path(), base, "log"), pos, bit);
        let log = Log::open(dir.path(), config()).unwrap();
        for o in 0..TOTAL {
            match log.read(o) {
                Ok(Some(r)) => {
                    assert_eq!(r.offset, o, "byte {pos}");
                    assert_eq!(r.value.unwrap(), value_for(o), "byte {pos}, offset {o}");
                }
                Err(Error::Corrupt { .. }) if (b.base_offset..=b.last_offset).contains(&o) => {}
                other => panic!("flip at byte {pos}: offset {o}: {other:?}"),
            }
        }
        // A reader reports the damage and yields every other record.
        let items: Vec<_> = log.reader(0).unwrap().take(TOTAL as usize + 10).collect();
        let errors = items.iter().filter(|r| r.is_err()).count();
        assert!(
            errors >= 1,
            "flip at byte {pos}: the reader saw no corruption"
        );
        let offsets: Vec<u64> = items
            .into_iter()
            .filter_map(|r| r.ok())
            .map(|r| r.offset)
            .collect();
        let want: Vec<u64> = (0..TOTAL)
            .filter(|o| !(b.base_offset..=b.last_offset).contains(o))
            .collect();
        assert_eq!(offsets, want, "flip at byte {pos}: records by reader");
        let report = log.verify().unwrap();
        assert!(
            !report.corrupt.is_empty(),
            "flip at byte {pos} not reported"
        );
        log.close().unwrap();
    }
}

/// `read_views` in chunks of any size: every record once and in order, across
/// segments and mid-batch stops; a damaged batch is reported once as
/// `Error::Corrupt` and the reads go on after it.
#[test]
fn read_views_reports_corruption_once_then_goes_on() {
    let t = template();
    let damaged = tempfile::tempdir().unwrap();
    copy_dir(t.path(), damaged.path());
    let (base, b) = damage(damaged.path());
    for (dir, bad) in [(t.path(), None), (damaged.path(), Some(b))] {
        let log = Log::open(dir, config()).unwrap();
        for chunk in [1, 2, 3, 7, 100, usize::MAX] {
            let mut reader = log.reader(0).unwrap();
            let mut got = Vec::new();
            let mut errors = 0;
            loop {
                match reader.read_views(chunk, |v| got.push((v.offset, v.value.unwrap().to_vec())))
                {
                    Ok(0) => break,
                    Ok(n) => assert!(n <= chunk),
                    Err(Error::Corrupt { path, position, .. }) => {
                        let b = bad.expect("corruption only in the damaged log");
                        assert_eq!(path, seg_path(dir, base, "log"));
                        assert_eq!(position, b.start);
                        errors += 1;
                    }
                    Err(e) => panic!("chunk {chunk}: {e}"),
                }
            }
            assert_eq!(errors, usize::from(bad.is_some()), "chunk {chunk}");
            let want: Vec<_> = (0..TOTAL)
                .filter(|o| bad.is_none_or(|b| !(b.base_offset..=b.last_offset).contains(o)))
                .map(|o| (o, value_for(o)))
                .collect();
            assert_eq!(got, want, "chunk {chunk}");
            assert_eq!(reader.position(), TOTAL);
        }
        log.close().unwrap();
    }
}
