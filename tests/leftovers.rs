//! Open works, with the right data, on whatever maintenance and checkpointing leave
//! behind: `.deleted`, `.cleaned` and `.tmp` files, orphan index files, a complete
//! `.swap` segment, garbage `recovery-point` / `clean-shutdown` files, and unknown
//! files (left alone). A garbage `log-start-offset` is `Error::Corrupt`, and a recovery
//! point past the data a reported gap. Each case runs after a clean shutdown and
//! after a crash (no `clean-shutdown` marker).

mod common;

use std::path::Path;

use common::{
    assert_dense_prefix, copy_dir, seg_path, segment_files, small_config, value_for, Rng,
};
use logqueue::{Log, LogConfig, Record};

const TOTAL: u64 = 300;

fn config() -> LogConfig {
    small_config(4096)
}

fn template() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    for i in 0..TOTAL {
        assert_eq!(log.append(Record::new(value_for(i))).unwrap(), i);
    }
    log.close().unwrap();
    assert!(segment_files(dir.path()).len() >= 5);
    dir
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// Runs `setup` on a copy of the template (clean and crashed), opens it and checks
/// the data is exactly `0..TOTAL`; then `after` checks the directory; then an append
/// and a crash-reopen.
fn check_case(template: &Path, what: &str, setup: impl Fn(&Path), after: impl Fn(&Path, &Log)) {
    for crashed in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(template, dir.path());
        setup(dir.path());
        if crashed {
            let _ = std::fs::remove_file(dir.path().join("clean-shutdown"));
        }
        let what = format!("{what} (crashed: {crashed})");
        let log = Log::open(dir.path(), config()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_dense_prefix(&log, TOTAL);
        after(dir.path(), &log);
        assert_eq!(log.append(Record::new(value_for(TOTAL))).unwrap(), TOTAL);
        log.close().unwrap();
        std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
        let log = Log::open(dir.path(), config()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_dense_prefix(&log, TOTAL + 1);
        log.close().unwrap();
    }
}

fn assert_gone(dir: &Path, leftovers: &[&str]) {
    let now = names(dir);
    for l in leftovers {
        assert!(!now.iter().any(|n| n == l), "{l} still there: {now:?}");
    }
}

#[test]
fn deleted_cleaned_and_tmp_files_are_removed() {
    let t = template();
    let segs = segment_files(t.path());
    let (b0, p0) = &segs[0];
    let (b1, p1) = &segs[1];
    let leftovers = [
        format!("{b0:020}.log.deleted"),
        format!("{b0:020}.index.deleted"),
        format!("{b0:020}.timeindex.deleted"),
        format!("{b1:020}.log.cleaned"),
        format!("{b1:020}.index.cleaned"),
        // A segment retired before this log's start, long gone otherwise.
        format!("{:020}.log.deleted", 0),
        "recovery-point.tmp".to_string(),
        "log-start-offset.tmp".to_string(),
        "cleaner-offset.tmp".to_string(),
    ];
    let leftover_refs: Vec<&str> = leftovers.iter().map(String::as_str).collect();
    check_case(
        t.path(),
        "deleted/cleaned/tmp",
        |d| {
            let mut rng = Rng::new(1);
            // Copies of real segments (stale data) and garbage.
            std::fs::copy(p0, d.join(&leftovers[0])).unwrap();
            std::fs::write(d.join(&leftovers[1]), rng.bytes(24)).unwrap();
            std::fs::write(d.join(&leftovers[2]), rng.bytes(36)).unwrap();
            // A half-written cleaned segment: the start of segment 1, cut mid-batch.
            let bytes = std::fs::read(p1).unwrap();
            std::fs::write(d.join(&leftovers[3]), &bytes[..bytes.len() / 2 + 7]).unwrap();
            std::fs::write(d.join(&leftovers[4]), rng.bytes(16)).unwrap();
            std::fs::write(d.join(&leftovers[5]), rng.bytes(4000)).unwrap();
            // Torn checkpoint replacements, with values that would be wrong.
            std::fs::write(d.join(&leftovers[6]), rng.bytes(64)).unwrap();
            std::fs::write(d.join(&leftovers[7]), 250u64.to_le_bytes()).unwrap();
            std::fs::write(d.join(&leftovers[8]), b"").unwrap();
        },
        |d, log| {
            assert_gone(d, &leftover_refs);
            assert_eq!(log.start_offset(), 0);
        },
    );
}

#[test]
fn a_log_start_offset_tmp_left_by_a_crash_mid_replace_is_ignored() {
    // delete_records_before writes log-start-offset.tmp, fsyncs, renames. A crash
    // before the rename leaves the old value in force.
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    for i in 0..50 {
        log.append(Record::new(value_for(i))).unwrap();
    }
    log.delete_records_before(10).unwrap();
    log.close().unwrap();
    let committed = std::fs::read(dir.path().join("log-start-offset")).unwrap();
    // What a replace to 40 would have written first.
    let log = Log::open(dir.path(), config()).unwrap();
    log.delete_records_before(40).unwrap();
    log.close().unwrap();
    let next = std::fs::read(dir.path().join("log-start-offset")).unwrap();
    std::fs::write(dir.path().join("log-start-offset"), committed).unwrap();
    std::fs::write(dir.path().join("log-start-offset.tmp"), next).unwrap();
    std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.start_offset(), 10);
    assert!(log.read(9).is_err());
    assert_eq!(log.read(10).unwrap().unwrap().value.unwrap(), value_for(10));
    assert!(!dir.path().join("log-start-offset.tmp").exists());
    log.close().unwrap();
}

#[test]
fn orphan_index_files_are_removed_and_never_used_by_a_new_segment() {
    let t = template();
    let end_base = TOTAL; // the base of the next segment the log will roll to
    let orphans = [
        format!("{:020}.index", 999_999),
        format!("{:020}.timeindex", 999_999),
        format!("{end_base:020}.index"),
        format!("{end_base:020}.timeindex"),
    ];
    let orphan_refs: Vec<&str> = orphans.iter().map(String::as_str).collect();
    check_case(
        t.path(),
        "orphan indexes",
        |d| {
            // Plausible-looking entries: a new segment at this base must not use them.
            let entries: Vec<u8> = (0..8u32)
                .flat_map(|i| {
                    (i * 3)
                        .to_le_bytes()
                        .into_iter()
                        .chain((i * 100).to_le_bytes())
                })
                .collect();
            for o in &orphans {
                std::fs::write(d.join(o), &entries[..48]).unwrap();
            }
        },
        |d, _| assert_gone(d, &orphan_refs),
    );
    // Also when the orphans come back just before a roll creates that segment.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(t.path(), dir.path());
    let log = Log::open(dir.path(), config()).unwrap();
    let next_base = log.segments().last().unwrap().base_offset;
    log.close().unwrap();
    let mut i = TOTAL;
    let log = Log::open(dir.path(), config()).unwrap();
    // Fill until the active segment rolls; the stale files sit at the new base.
    while log.segments().last().unwrap().base_offset == next_base {
        let next = log.end_offset();
        for o in &orphans[2..] {
            let stale = o.replace(&format!("{end_base:020}"), &format!("{next:020}"));
            std::fs::write(dir.path().join(stale), [0xFFu8; 24]).unwrap();
        }
        assert_eq!(log.append(Record::new(value_for(i))).unwrap(), i);
        i += 1;
    }
    log.close().unwrap();
    std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    assert_dense_prefix(&log, i);
    log.close().unwrap();
}

#[test]
fn a_complete_swap_file_replaces_the_segments_it_covers() {
    let t = template();
    let segs = segment_files(t.path());
    // A cleaning pass that merged segments 1 and 2 into one, complete on disk as
    // `<base1>.log.swap` when the process died.
    let (b1, p1) = &segs[1];
    let (b2, p2) = &segs[2];
    let swap = format!("{b1:020}.log.swap");
    check_case(
        t.path(),
        "merged swap",
        |d| {
            let mut merged = std::fs::read(p1).unwrap();
            merged.extend(std::fs::read(p2).unwrap());
            std::fs::write(d.join(&swap), merged).unwrap();
        },
        |d, log| {
            assert_gone(
                d,
                &[
                    swap.as_str(),
                    &format!("{b2:020}.log"),
                    &format!("{b2:020}.index"),
                    &format!("{b2:020}.timeindex"),
                ],
            );
            assert!(log.segments().iter().all(|s| s.base_offset != *b2));
            assert!(log.segments().iter().any(|s| s.base_offset == *b1));
        },
    );
    // A swap of one segment onto itself (the cleaner kept everything).
    let (b3, p3) = &segs[3];
    let swap3 = format!("{b3:020}.log.swap");
    check_case(
        t.path(),
        "same-segment swap",
        |d| {
            std::fs::copy(p3, d.join(&swap3)).unwrap();
            // Its index files are stale relative to the new file: recovery drops them.
            std::fs::write(seg_path(d, *b3, "index"), [0xAAu8; 16]).unwrap();
        },
        |d, _| assert_gone(d, &[swap3.as_str()]),
    );
}

#[test]
fn garbage_checkpoints_and_marker() {
    let t = template();
    let mut rng = Rng::new(7);
    let junk: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0u8; 64],
        vec![0xFFu8; 64],
        rng.bytes(5),
        rng.bytes(64),
        rng.bytes(1000),
    ];
    for (i, j) in junk.iter().enumerate() {
        check_case(
            t.path(),
            &format!("garbage recovery-point #{i}"),
            |d| std::fs::write(d.join("recovery-point"), j).unwrap(),
            |_, _| {},
        );
        // A durable replace never leaves a partial file: garbage is damage, and any
        // guess at the start would either bring deleted records back or hide live ones.
        for crashed in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(t.path(), dir.path());
            std::fs::write(dir.path().join("log-start-offset"), j).unwrap();
            if crashed {
                std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
            }
            match Log::open(dir.path(), config()) {
                Err(logqueue::Error::Corrupt { path, .. }) => {
                    assert!(path.ends_with("log-start-offset"), "#{i}: {path:?}")
                }
                other => panic!("garbage log-start-offset #{i}: {other:?}"),
            }
        }
    }
    let marker = rng.bytes(100);
    check_case(
        t.path(),
        "garbage clean-shutdown",
        |d| std::fs::write(d.join("clean-shutdown"), &marker).unwrap(),
        |_, _| {},
    );
    // A recovery point beyond the data (pointing into a segment that is not there, or
    // past the end of the last one) says fsynced records are missing: the records
    // present read back, the missing offsets are a reported gap, and appends go on
    // after them (never reusing an offset the point promised).
    let last = segment_files(t.path()).last().unwrap().0;
    for (seg, pos, off) in [(last, 1 << 20, TOTAL + 100), (10_000, 64, 10_050)] {
        for crashed in [false, true] {
            let what = format!("recovery point past the data ({seg}, {pos}, crashed {crashed})");
            let dir = tempfile::tempdir().unwrap();
            copy_dir(t.path(), dir.path());
            common::write_recovery_point(dir.path(), seg, pos, off);
            if crashed {
                std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
            }
            let log = Log::open(dir.path(), config()).unwrap_or_else(|e| panic!("{what}: {e}"));
            for o in 0..TOTAL {
                assert!(log.read(o).unwrap().is_some(), "{what}: read({o})");
            }
            assert!(
                matches!(log.read(TOTAL), Err(logqueue::Error::Corrupt { .. })),
                "{what}"
            );
            let gaps: Vec<_> = log.verify().unwrap().corrupt;
            assert!(
                gaps.len() == 1 && gaps[0].next_offset == Some(off),
                "{what}: {gaps:?}"
            );
            assert_eq!(
                log.append(Record::new(value_for(off))).unwrap(),
                off,
                "{what}"
            );
            log.close().unwrap();
        }
    }
}

#[test]
fn unknown_files_are_left_alone() {
    let t = template();
    let strangers = [
        "README",
        "123.log",
        "0000000000000000000x.log",
        "00000000000000000000.log.bak",
        "notes.index",
    ];
    check_case(
        t.path(),
        "unknown files",
        |d| {
            for s in strangers {
                std::fs::write(d.join(s), b"not ours").unwrap();
            }
            std::fs::create_dir(d.join("queues")).unwrap();
        },
        |d, _| {
            let now = names(d);
            for s in strangers {
                assert!(now.iter().any(|n| n == s), "{s} was removed");
            }
        },
    );
}

#[test]
fn everything_at_once() {
    let t = template();
    let segs = segment_files(t.path());
    check_case(
        t.path(),
        "all leftovers",
        |d| {
            let mut rng = Rng::new(3);
            std::fs::copy(&segs[0].1, d.join(format!("{:020}.log.deleted", segs[0].0))).unwrap();
            std::fs::write(
                d.join(format!("{:020}.log.cleaned", segs[1].0)),
                rng.bytes(300),
            )
            .unwrap();
            std::fs::copy(&segs[2].1, d.join(format!("{:020}.log.swap", segs[2].0))).unwrap();
            std::fs::write(d.join(format!("{:020}.index", 77_777)), rng.bytes(8)).unwrap();
            std::fs::write(d.join("recovery-point"), rng.bytes(64)).unwrap();
            std::fs::write(d.join("recovery-point.tmp"), rng.bytes(64)).unwrap();
            for (b, _) in &segs {
                std::fs::write(seg_path(d, *b, "timeindex"), rng.bytes(36)).unwrap();
            }
        },
        |d, _| {
            let now = names(d);
            assert!(
                now.iter().all(|n| !n.ends_with(".deleted")
                    && !n.ends_with(".cleaned")
                    && !n.ends_with(".swap")
                    && !n.ends_with(".tmp")),
                "{now:?}"
            );
        },
    );
}
