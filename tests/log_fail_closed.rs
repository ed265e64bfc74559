//! The log fails closed on lost data (issue 9, defects 6 and 7): a segment file removed
//! or cut short, a lost recovery point, a damaged start-offset checkpoint. Records that
//! are gone are reported (`Error::Corrupt` on read, an `Err` item from readers, a range
//! in `verify()`), never read as compacted away, and no durable record is cut or
//! deleted because a checkpoint is damaged. A compacted log, whose segments end in
//! removed records, must not be taken for a damaged one.

mod common;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{batches_of, copy_dir, flip_bit, seg_path, segment_files, sim_config, small_config};
use common::{value_for, Rng};
use logqueue::fs::FileSystem;
use logqueue::sim::SimFs;
use logqueue::{CleanupPolicy, Error, Log, LogConfig, ManualClock, Queue, QueueConfig, Record};

const TOTAL: u64 = 400;

fn config() -> LogConfig {
    small_config(4096)
}

/// A closed log of `TOTAL` records (`value_for(offset)`) over many segments.
fn template() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    for i in 0..TOTAL {
        assert_eq!(log.append(Record::new(value_for(i))).unwrap(), i);
    }
    log.close().unwrap();
    assert!(segment_files(dir.path()).len() >= 6);
    dir
}

fn copy_of(template: &Path, crashed: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(template, dir.path());
    if crashed {
        std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
    }
    dir
}

/// Cuts the segment file at `path` after its first `keep` batches; returns the first
/// offset cut away.
fn cut_after_batches(path: &Path, keep: usize) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let batches = batches_of(&bytes);
    assert!(keep < batches.len());
    std::fs::write(path, &bytes[..batches[keep].start as usize]).unwrap();
    batches[keep].base_offset
}

/// Asserts that exactly the offsets in `gap` are missing from a log of `0..end`: every
/// other record reads back by `read` and by a reader, each offset in the gap is
/// `Error::Corrupt`, a reader from the start reports the gap once as an `Err` item and
/// goes on after it, and `verify()` reports one range, ending where the data resumes.
fn assert_gap(log: &Log, gap: Range<u64>, end: u64, ctx: &str) {
    assert_eq!(log.end_offset(), end, "{ctx}: end offset");
    for o in 0..end {
        let r = log.read(o);
        if gap.contains(&o) {
            assert!(
                matches!(r, Err(Error::Corrupt { .. })),
                "{ctx}: read({o}) = {r:?}"
            );
        } else {
            let r = r.unwrap_or_else(|e| panic!("{ctx}: read({o}): {e}"));
            assert_eq!(r.unwrap().value.unwrap(), value_for(o), "{ctx}: read({o})");
        }
    }
    let mut seen = Vec::new();
    let mut errors = 0;
    for item in log.reader(0).unwrap() {
        match item {
            Ok(r) => seen.push(r.offset),
            Err(Error::Corrupt { .. }) => errors += 1,
            Err(e) => panic!("{ctx}: reader: {e}"),
        }
    }
    let want: Vec<u64> = (0..end).filter(|o| !gap.contains(o)).collect();
    assert_eq!(seen, want, "{ctx}: records by reader");
    assert_eq!(errors, 1, "{ctx}: the reader reports the gap once");
    let report = log.verify().unwrap();
    assert_eq!(report.corrupt.len(), 1, "{ctx}: {:?}", report.corrupt);
    assert_eq!(report.corrupt[0].next_offset, Some(gap.end), "{ctx}");
}

#[test]
fn a_removed_middle_segment_is_a_reported_gap() {
    let t = template();
    let segs = segment_files(t.path());
    let mid = segs.len() / 2;
    let gap = segs[mid].0..segs[mid + 1].0;
    for crashed in [false, true] {
        let ctx = format!("middle segment removed (crashed: {crashed})");
        let dir = copy_of(t.path(), crashed);
        for suffix in ["log", "index", "timeindex"] {
            std::fs::remove_file(seg_path(dir.path(), gap.start, suffix)).unwrap();
        }
        let log = Log::open(dir.path(), config()).unwrap();
        assert_gap(&log, gap.clone(), TOTAL, &ctx);
        assert_eq!(log.append(Record::new(value_for(TOTAL))).unwrap(), TOTAL);
        log.close().unwrap();
        // Still reported after a reopen: the gap is on disk, not in memory.
        let log = Log::open(dir.path(), config()).unwrap();
        assert_gap(&log, gap.clone(), TOTAL + 1, &format!("{ctx}, reopened"));
    }
}

#[test]
fn a_queue_counts_a_gap_as_corrupt_not_as_done() {
    let t = template();
    let segs = segment_files(t.path());
    let mid = segs.len() / 2;
    let gap = segs[mid].0..segs[mid + 1].0;
    let dir = copy_of(t.path(), false);
    std::fs::remove_file(seg_path(dir.path(), gap.start, "log")).unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let q = Queue::open(&log, "q", QueueConfig::default()).unwrap();
    let mut delivered = Vec::new();
    loop {
        let got = q.receive(64, Duration::ZERO).unwrap();
        if got.is_empty() {
            break;
        }
        for d in got {
            delivered.push(d.receipt.offset);
            q.ack(&d.receipt).unwrap();
        }
    }
    let want: Vec<u64> = (0..TOTAL).filter(|o| !gap.contains(o)).collect();
    assert_eq!(delivered, want);
    let s = q.stats();
    assert_eq!(s.corrupt_skipped, gap.end - gap.start, "{s:?}");
}

#[test]
fn a_sealed_segment_cut_at_a_batch_boundary_is_a_reported_gap() {
    let t = template();
    let segs = segment_files(t.path());
    let mid = segs.len() / 2;
    for crashed in [false, true] {
        let ctx = format!("sealed segment cut (crashed: {crashed})");
        let dir = copy_of(t.path(), crashed);
        let path = seg_path(dir.path(), segs[mid].0, "log");
        let keep = batches_of(&std::fs::read(&path).unwrap()).len() / 2;
        let cut = cut_after_batches(&path, keep);
        let log = Log::open(dir.path(), config()).unwrap();
        assert_gap(&log, cut..segs[mid + 1].0, TOTAL, &ctx);
    }
}

#[test]
fn the_last_segment_cut_at_a_batch_boundary_after_a_clean_close_is_reported() {
    let t = template();
    let (last, _) = *segment_files(t.path()).last().unwrap();
    let dir = copy_of(t.path(), false);
    let path = seg_path(dir.path(), last, "log");
    let keep = batches_of(&std::fs::read(&path).unwrap()).len() / 2;
    let cut = cut_after_batches(&path, keep);
    let log = Log::open(dir.path(), config()).unwrap();
    // The end stays where the clean close left it: the lost offsets are never reused.
    assert_gap(&log, cut..TOTAL, TOTAL, "last segment cut");
    assert_eq!(log.append(Record::new(value_for(TOTAL))).unwrap(), TOTAL);
    log.close().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    assert_gap(&log, cut..TOTAL, TOTAL + 1, "last segment cut, reopened");
}

const SIM_DIR: &str = "/db/log";

/// A SimFs log of `flushed` records, flushed, then `unflushed` more, then the process
/// dies (nothing lost); returns the disk and the segment paths, oldest first.
fn sim_image(flushed: u64, unflushed: u64) -> (SimFs, ManualClock, Vec<(u64, PathBuf)>) {
    let fs = SimFs::new(7);
    fs.write_file("/db/.keep", b"").unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let log = Log::open(SIM_DIR, sim_config(&fs, &clock, 2048)).unwrap();
    for i in 0..flushed + unflushed {
        log.append(Record::new(value_for(i))).unwrap();
        if i + 1 == flushed {
            log.flush().unwrap();
        }
    }
    fs.kill();
    drop(log);
    let mut segs: Vec<(u64, PathBuf)> = fs
        .list(Path::new(SIM_DIR))
        .unwrap()
        .into_iter()
        .filter_map(|n| {
            let base = n.strip_suffix(".log")?.parse().ok()?;
            Some((base, Path::new(SIM_DIR).join(n)))
        })
        .collect();
    segs.sort();
    (fs, clock, segs)
}

/// Cuts the SimFs file at `path` after its first `keep` batches (or, with `None`, at
/// the end of its data); returns the first offset cut away.
fn sim_cut(fs: &SimFs, path: &Path, keep: Option<usize>) -> u64 {
    let bytes = fs.read_file(path).unwrap();
    // The active segment is preallocated: its data ends at the first zero length.
    let data = batches_of_prefix(&bytes);
    let keep = keep.unwrap_or(data.len());
    let (end, first_cut) = match data.get(keep) {
        Some(b) => (b.start as usize, b.base_offset),
        None => (bytes.len(), u64::MAX),
    };
    fs.write_file(path, &bytes[..end]).unwrap();
    first_cut
}

/// The complete batches at the start of `bytes`, stopping at zero-filled space.
fn batches_of_prefix(bytes: &[u8]) -> Vec<common::BatchPos> {
    let mut end = 0;
    while end + 4 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[end..end + 4].try_into().unwrap()) as usize;
        if len == 0 || end + 4 + len > bytes.len() {
            break;
        }
        end += 4 + len;
    }
    batches_of(&bytes[..end])
}

#[test]
fn a_sealed_segment_cut_in_a_crash_image_after_flush_is_reported() {
    let (fs, clock, segs) = sim_image(200, 0);
    assert!(segs.len() >= 4, "{segs:?}");
    let mid = segs.len() / 2;
    let keep = batches_of(&fs.read_file(&segs[mid].1).unwrap()).len() / 2;
    let cut = sim_cut(&fs, &segs[mid].1, Some(keep));
    let log = Log::open(SIM_DIR, sim_config(&fs, &clock, 2048)).unwrap();
    assert_gap(
        &log,
        cut..segs[mid + 1].0,
        200,
        "crash image, sealed segment cut",
    );
}

#[test]
fn the_active_segment_cut_below_the_flushed_end_in_a_crash_image_is_reported() {
    let (fs, clock, segs) = sim_image(200, 0);
    let (base, path) = segs.last().unwrap();
    let batches = batches_of_prefix(&fs.read_file(path).unwrap());
    assert!(batches.len() >= 2, "{batches:?}");
    let cut = sim_cut(&fs, path, Some(batches.len() / 2));
    assert!(cut > *base);
    let log = Log::open(SIM_DIR, sim_config(&fs, &clock, 2048)).unwrap();
    assert_gap(
        &log,
        cut..200,
        200,
        "crash image, flushed records of the active segment cut",
    );
    assert_eq!(log.append(Record::new(value_for(200))).unwrap(), 200);
}

#[test]
fn a_cut_of_the_unflushed_tail_in_a_crash_image_is_a_torn_tail() {
    let (fs, clock, segs) = sim_image(200, 30);
    let (_, path) = segs.last().unwrap();
    let batches = batches_of_prefix(&fs.read_file(path).unwrap());
    // Keep everything flushed and half of the unflushed records of the last segment.
    let first_unflushed = batches.iter().position(|b| b.base_offset >= 200).unwrap();
    let keep = first_unflushed + (batches.len() - first_unflushed) / 2;
    let end = sim_cut(&fs, path, Some(keep));
    assert!((201..230).contains(&end), "{end}");
    let log = Log::open(SIM_DIR, sim_config(&fs, &clock, 2048)).unwrap();
    assert_eq!(log.end_offset(), end);
    let report = log.verify().unwrap();
    assert!(report.corrupt.is_empty(), "{:?}", report.corrupt);
    assert_eq!(report.records, end);
    assert_eq!(log.append(Record::new(value_for(end))).unwrap(), end);
}

/// Keys that make compaction remove the last batches of most segments: every fifth
/// record has a key of its own, the others share three keys.
fn compacted_key(i: u64) -> String {
    if i.is_multiple_of(5) {
        format!("own-{i}")
    } else {
        format!("shared-{}", i % 3)
    }
}

/// Checks a compacted log of `total` records: no offset reads as corrupt, `verify`
/// reports nothing, every record with a key of its own and the newest of each shared
/// key are there, and a reader yields exactly what `read` finds. Returns the offsets
/// kept.
fn check_compacted(log: &Log, total: u64, ctx: &str) -> Vec<u64> {
    let report = log.verify().unwrap();
    assert!(report.corrupt.is_empty(), "{ctx}: {:?}", report.corrupt);
    let kept: Vec<u64> = (0..total)
        .filter(|&o| {
            log.read(o)
                .unwrap_or_else(|e| panic!("{ctx}: read({o}): {e}"))
                .is_some()
        })
        .collect();
    for k in 0..3 {
        let newest = (0..total).rev().find(|i| i % 5 != 0 && i % 3 == k).unwrap();
        assert!(kept.contains(&newest), "{ctx}: newest of shared-{k}");
    }
    assert!((0..total).step_by(5).all(|o| kept.contains(&o)), "{ctx}");
    let read: Vec<u64> = log
        .reader(0)
        .unwrap()
        .map(|r| r.unwrap_or_else(|e| panic!("{ctx}: reader: {e}")).offset)
        .collect();
    assert_eq!(read, kept, "{ctx}");
    kept
}

#[test]
fn a_compacted_log_with_emptied_segment_tails_has_no_gap() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        cleanup: CleanupPolicy::Compact,
        ..small_config(2048)
    };
    let total = 300;
    let log = Log::open(dir.path(), config.clone()).unwrap();
    for i in 0..total {
        log.append(Record::keyed(compacted_key(i), value_for(i)))
            .unwrap();
    }
    let report = log.compact().unwrap();
    assert!(report.records_removed > 100, "{report:?}");
    let kept = check_compacted(&log, total, "compacted");
    assert!(kept.len() < 150, "{} kept", kept.len());
    log.close().unwrap();
    // The case this guards: a cleaned segment whose last records were removed ends in
    // an empty batch (record count 0 at header byte 56) over their offsets.
    let empty_batches = segment_files(dir.path())
        .iter()
        .flat_map(|(_, p)| {
            let bytes = std::fs::read(p).unwrap();
            batches_of(&bytes)
                .into_iter()
                .filter(move |b| {
                    let at = b.start as usize + 56;
                    bytes[at..at + 4] == [0, 0, 0, 0]
                })
                .collect::<Vec<_>>()
        })
        .count();
    assert!(empty_batches > 0, "no segment ended in removed records");
    let log = Log::open(dir.path(), config.clone()).unwrap();
    assert_eq!(check_compacted(&log, total, "compacted, reopened"), kept);
    log.close().unwrap();
    std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
    let log = Log::open(dir.path(), config.clone()).unwrap();
    assert_eq!(
        check_compacted(&log, total, "compacted, crash-reopened"),
        kept
    );
    // A second pass over the cleaned segments changes nothing and keeps them whole.
    log.compact().unwrap();
    assert_eq!(check_compacted(&log, total, "compacted twice"), kept);
    log.close().unwrap();
    // A damaged cleaner-offset reads as 0 (everything dirty): the safe reading, since
    // cleaning again only redoes work.
    std::fs::write(dir.path().join("cleaner-offset"), b"garbage").unwrap();
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.stats().cleaner_offset, 0);
    log.compact().unwrap();
    assert_eq!(check_compacted(&log, total, "damaged cleaner-offset"), kept);
    assert!(log.stats().cleaner_offset > 0);
}

#[test]
fn a_lost_recovery_point_deletes_no_segment_and_cuts_no_record() {
    let t = template();
    let segs = segment_files(t.path());
    // One bad batch early in the log, in the second segment.
    let (base, path) = &segs[1];
    let batches = batches_of(&std::fs::read(path).unwrap());
    let bad = batches[batches.len() / 2];
    let mut rng = Rng::new(9);
    for damage in ["both slots garbage", "file missing"] {
        let dir = copy_of(t.path(), true);
        flip_bit(&seg_path(dir.path(), *base, "log"), bad.start + 70, 3);
        let rp = dir.path().join("recovery-point");
        if damage == "file missing" {
            std::fs::remove_file(&rp).unwrap();
        } else {
            std::fs::write(&rp, rng.bytes(64)).unwrap();
        }
        let log = Log::open(dir.path(), config()).unwrap();
        assert_eq!(segment_files(dir.path()).len(), segs.len(), "{damage}");
        assert_eq!(log.end_offset(), TOTAL, "{damage}");
        for o in 0..TOTAL {
            let r = log.read(o);
            if (bad.base_offset..=bad.last_offset).contains(&o) {
                assert!(
                    matches!(r, Err(Error::Corrupt { .. })),
                    "{damage}: {o}: {r:?}"
                );
            } else {
                assert_eq!(r.unwrap().unwrap().value.unwrap(), value_for(o), "{damage}");
            }
        }
        let report = log.verify().unwrap();
        assert_eq!(report.corrupt.len(), 1, "{damage}: {:?}", report.corrupt);
        assert_eq!(report.corrupt[0].segment, *base, "{damage}");
        assert_eq!(report.corrupt[0].start_position, bad.start, "{damage}");
        assert_eq!(log.append(Record::new("after")).unwrap(), TOTAL);
    }
}

#[test]
fn a_damaged_log_start_offset_is_corrupt() {
    let t = template();
    let seeded = tempfile::tempdir().unwrap();
    copy_dir(t.path(), seeded.path());
    let log = Log::open(seeded.path(), config()).unwrap();
    log.delete_records_before(50).unwrap();
    log.close().unwrap();
    let file = seeded.path().join("log-start-offset");
    let good = std::fs::read(&file).unwrap();
    for (what, bytes) in [
        ("a flipped bit", {
            let mut b = good.clone();
            b[2] ^= 4;
            b
        }),
        ("truncated", good[..7].to_vec()),
        ("empty", Vec::new()),
    ] {
        for crashed in [false, true] {
            let dir = copy_of(seeded.path(), crashed);
            std::fs::write(dir.path().join("log-start-offset"), &bytes).unwrap();
            match Log::open(dir.path(), config()) {
                Err(Error::Corrupt { path, .. }) => {
                    assert!(path.ends_with("log-start-offset"), "{what}: {path:?}")
                }
                other => panic!("{what} (crashed: {crashed}): {other:?}"),
            }
        }
    }
}

#[test]
fn a_missing_log_start_offset_after_retention_leaves_a_reported_gap() {
    let t = template();
    let dir = copy_of(t.path(), false);
    let log = Log::open(dir.path(), config()).unwrap();
    let second = log.segments()[2].base_offset;
    log.delete_records_before(second).unwrap();
    log.enforce_retention().unwrap();
    assert_eq!(log.segments()[0].base_offset, second);
    log.close().unwrap();
    std::fs::remove_file(dir.path().join("log-start-offset")).unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    // The first segments are gone and nothing says they were deleted on purpose.
    assert!(matches!(log.read(0), Err(Error::Corrupt { .. })));
    let report = log.verify().unwrap();
    assert_eq!(report.corrupt.len(), 1, "{:?}", report.corrupt);
    assert_eq!(report.corrupt[0].next_offset, Some(second));
    for o in second..TOTAL {
        assert_eq!(log.read(o).unwrap().unwrap().value.unwrap(), value_for(o));
    }
    // The operator's repair: accept the loss by moving the start past the gap.
    log.delete_records_before(second).unwrap();
    let log2 = log.clone();
    log.close().unwrap();
    drop(log2);
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.start_offset(), second);
    assert!(log.verify().unwrap().corrupt.is_empty());
}

/// A cleaner swap file `<b0>-<b2>.log.swap` merging the first two segments of the
/// template (their batches back to back), with one bit flipped in the middle.
fn damaged_swap(dir: &Path) -> (u64, u64, common::BatchPos) {
    let segs = segment_files(dir);
    let (b0, b2) = (segs[0].0, segs[2].0);
    let mut merged = std::fs::read(&segs[0].1).unwrap();
    merged.extend(std::fs::read(&segs[1].1).unwrap());
    let bad = batches_of(&merged)[batches_of(&merged).len() / 2];
    let swap = dir.join(format!("{b0:020}-{b2:020}.log.swap"));
    std::fs::write(&swap, &merged).unwrap();
    flip_bit(&swap, bad.start + 70, 1);
    (b0, segs[1].0, bad)
}

#[test]
fn a_damaged_swap_file_never_replaces_whole_originals() {
    let t = template();
    for crashed in [false, true] {
        let dir = copy_of(t.path(), crashed);
        damaged_swap(dir.path());
        let log = Log::open(dir.path(), config()).unwrap();
        common::assert_dense_prefix(&log, TOTAL);
        assert!(!std::fs::read_dir(dir.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".swap")));
    }
}

#[test]
fn a_damaged_swap_file_whose_originals_are_retired_is_installed_and_reported() {
    let t = template();
    let dir = copy_of(t.path(), true);
    let (_, b1, bad) = damaged_swap(dir.path());
    // The swap had begun: one original is already retired.
    let original = seg_path(dir.path(), b1, "log");
    std::fs::rename(&original, original.with_extension("log.deleted")).unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.end_offset(), TOTAL);
    for o in 0..TOTAL {
        let r = log.read(o);
        if (bad.base_offset..=bad.last_offset).contains(&o) {
            assert!(matches!(r, Err(Error::Corrupt { .. })), "{o}: {r:?}");
        } else {
            assert_eq!(r.unwrap().unwrap().value.unwrap(), value_for(o));
        }
    }
    assert_eq!(log.verify().unwrap().corrupt.len(), 1);
}
