//! Recovery of an un-promised tail on the real file system: a segment cut at any byte,
//! extended with zeros (a preallocated file after a crash) or followed by garbage
//! keeps exactly the batches wholly before the damage, appends continue at the next
//! offset, a second crash-reopen is stable, and a multi-record batch is all-or-nothing.
//!
//! Every case removes `clean-shutdown` and moves the recovery point to byte 0 of the
//! first segment, so all data is tail.
//! Byte-by-byte sweeps run in [`common::sweep_tempdir`] (tmpfs when available); a
//! spread of the same cases runs on the disk-backed temp directory.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use common::{
    assert_dense_prefix, batches_of, copy_dir, forget_everything_durable, seg_path, segment_files,
    small_config, sweep_tempdir, value_for, BatchPos, Rng,
};
use logqueue::{Log, LogConfig, Record};

const SEGMENT_BYTES: u64 = 2048;

fn config() -> LogConfig {
    small_config(SEGMENT_BYTES)
}

struct SegmentTemplate {
    base: u64,
    bytes: Vec<u8>,
    batches: Vec<BatchPos>,
}

/// A closed log with a few segments whose last batches mix single records and
/// multi-record batches; every record `i` holds `value_for(i)`.
struct Template {
    dir: tempfile::TempDir,
    segments: Vec<SegmentTemplate>,
    total: u64,
}

fn template() -> Template {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let mut next = 0u64;
    let single = |log: &Log, next: &mut u64| {
        assert_eq!(log.append(Record::new(value_for(*next))).unwrap(), *next);
        *next += 1;
    };
    let batch = |log: &Log, next: &mut u64, n: u64| {
        let recs = (*next..*next + n)
            .map(|i| Record::new(value_for(i)))
            .collect();
        assert_eq!(log.append_batch(recs).unwrap(), *next..*next + n);
        *next += n;
    };
    for _ in 0..30 {
        single(&log, &mut next);
    }
    batch(&log, &mut next, 4);
    // Short values at offsets just past a multiple of 37 keep the last batches small.
    while next < 73 {
        single(&log, &mut next);
    }
    batch(&log, &mut next, 3);
    single(&log, &mut next);
    single(&log, &mut next);
    batch(&log, &mut next, 2);
    log.close().unwrap();
    let segments: Vec<_> = segment_files(dir.path())
        .into_iter()
        .map(|(base, path)| {
            let bytes = std::fs::read(path).unwrap();
            let batches = batches_of(&bytes);
            SegmentTemplate {
                base,
                bytes,
                batches,
            }
        })
        .collect();
    assert!(segments.len() >= 3, "want several segments");
    Template {
        dir,
        segments,
        total: next,
    }
}

impl Template {
    /// Records that must survive when segment `seg` now holds `damaged`: everything in
    /// earlier segments, and each batch of this one up to the first whose bytes
    /// changed. (A cut that removes only trailing zero bytes of a batch, refilled by a
    /// zero tail, leaves that batch intact: it must survive.) Anything after the
    /// damage, later segments included, is tail after the first invalid batch: gone.
    fn expected(&self, seg: usize, damaged: &[u8]) -> u64 {
        let s = &self.segments[seg];
        if damaged == s.bytes {
            // Not damaged at all: the later segments continue it.
            return self.total;
        }
        s.batches
            .iter()
            .take_while(|b| {
                let r = b.start as usize..b.end as usize;
                damaged.get(r.clone()) == Some(&s.bytes[r])
            })
            .last()
            .map_or(s.base, |b| b.last_offset + 1)
    }

    fn last_segment(&self) -> usize {
        self.segments.len() - 1
    }

    /// Byte positions covering every byte of the last `n` batches of the last segment,
    /// both ends included.
    fn last_batches_bytes(&self, n: usize) -> std::ops::RangeInclusive<u64> {
        let batches = &self.segments[self.last_segment()].batches;
        batches[batches.len() - n].start..=batches.last().unwrap().end
    }
}

#[derive(Clone, Copy, Debug)]
enum Tail {
    /// Cut only.
    None,
    /// Cut, then extended with this many zero bytes.
    Zeros(u64),
    /// Cut, then this many random bytes appended.
    Garbage(usize),
}

/// Copies the template into `dir`, cuts segment `seg` at `cut`, adds the tail, forgets
/// the recovery point and the clean-shutdown marker; returns the records expected.
fn damage(t: &Template, dir: &Path, seg: usize, cut: u64, tail: Tail, rng: &mut Rng) -> u64 {
    copy_dir(t.dir.path(), dir);
    let path = seg_path(dir, t.segments[seg].base, "log");
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(cut).unwrap();
    match tail {
        Tail::None => {}
        Tail::Zeros(n) => f.set_len(cut + n).unwrap(),
        Tail::Garbage(n) => {
            let mut f = OpenOptions::new().append(true).open(&path).unwrap();
            f.write_all(&rng.bytes(n)).unwrap();
        }
    }
    drop(f);
    forget_everything_durable(dir);
    t.expected(seg, &std::fs::read(&path).unwrap())
}

/// Opens the damaged copy: it must hold exactly `0..expected`; an append gets
/// `expected`; after another crash-like reopen (nothing promised) all is still there.
fn check_recovers(dir: &Path, expected: u64, what: &str) {
    let log = Log::open(dir, config()).unwrap_or_else(|e| panic!("{what}: open: {e}"));
    assert_eq!(log.end_offset(), expected, "{what}: end offset");
    assert_dense_prefix(&log, expected);
    assert_eq!(
        log.append(Record::new(value_for(expected))).unwrap(),
        expected,
        "{what}: append offset"
    );
    log.close().unwrap();
    forget_everything_durable(dir);
    let log = Log::open(dir, config()).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    assert_eq!(log.end_offset(), expected + 1, "{what}: end after reopen");
    assert_dense_prefix(&log, expected + 1);
    log.close().unwrap();
}

/// Runs every cut of `cuts` in segment `seg` with `tail`, each in a fresh directory
/// made by `tempdir`.
fn run_cuts(
    t: &Template,
    seg: usize,
    cuts: impl IntoIterator<Item = u64>,
    tail: Tail,
    seed: u64,
    tempdir: fn() -> tempfile::TempDir,
) {
    let mut rng = Rng::new(seed);
    let mut count = 0;
    for cut in cuts {
        let dir = tempdir();
        let expected = damage(t, dir.path(), seg, cut, tail, &mut rng);
        let what = format!("segment #{seg} cut at byte {cut}, tail {tail:?}");
        check_recovers(dir.path(), expected, &what);
        count += 1;
    }
    assert!(count > 0);
}

fn disk_tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn truncated_at_every_byte_of_the_last_batches() {
    let t = template();
    let seg = t.last_segment();
    // Every byte across the last three batches (a 2-record batch among them).
    run_cuts(
        &t,
        seg,
        t.last_batches_bytes(3),
        Tail::None,
        1,
        sweep_tempdir,
    );
    // Every 7th byte over the rest of the last segment (a 3-record batch among them).
    let start = *t.last_batches_bytes(3).start();
    run_cuts(&t, seg, (0..start).step_by(7), Tail::None, 2, sweep_tempdir);
}

#[test]
fn truncated_in_earlier_segments_drops_everything_after() {
    let t = template();
    assert_eq!(t.total, 80);
    for seg in 0..t.last_segment() {
        let end = t.segments[seg].batches.last().unwrap().end;
        // A cut in a sealed segment leaves it the last one: it is reopened for appends,
        // and the later segments are gone.
        let cuts = (0..end).step_by(41).chain([end - 1, end]);
        run_cuts(&t, seg, cuts, Tail::None, 3, sweep_tempdir);
    }
}

#[test]
fn zero_filled_tail_after_every_byte_of_the_last_batches() {
    let t = template();
    let seg = t.last_segment();
    run_cuts(
        &t,
        seg,
        t.last_batches_bytes(3),
        Tail::Zeros(4096),
        4,
        sweep_tempdir,
    );
    // A preallocated tail far larger than the data, also right at a batch boundary
    // and on an empty segment.
    let end = *t.last_batches_bytes(1).end();
    let cuts = [0, end - 100, end];
    run_cuts(&t, seg, cuts, Tail::Zeros(1 << 20), 5, sweep_tempdir);
    // A zero tail after a cut in a sealed segment.
    let end0 = t.segments[0].batches.last().unwrap().end;
    run_cuts(&t, 0, [end0 / 2, end0], Tail::Zeros(8192), 6, sweep_tempdir);
}

#[test]
fn garbage_tail_after_every_byte_of_the_last_batches() {
    let t = template();
    let seg = t.last_segment();
    run_cuts(
        &t,
        seg,
        t.last_batches_bytes(3),
        Tail::Garbage(173),
        7,
        sweep_tempdir,
    );
    let end = *t.last_batches_bytes(1).end();
    run_cuts(&t, seg, [0, end], Tail::Garbage(5000), 8, sweep_tempdir);
    // Fewer bytes than a length field, and fewer than a header.
    run_cuts(&t, seg, [end], Tail::Garbage(3), 9, sweep_tempdir);
    run_cuts(&t, seg, [end], Tail::Garbage(59), 10, sweep_tempdir);
    let end0 = t.segments[0].batches.last().unwrap().end;
    run_cuts(
        &t,
        0,
        [end0 / 2, end0],
        Tail::Garbage(300),
        11,
        sweep_tempdir,
    );
}

/// The same kinds of damage on the disk-backed temp directory, a spread of cuts.
#[test]
fn spread_of_damage_on_disk() {
    let t = template();
    let seg = t.last_segment();
    let range = t.last_batches_bytes(3);
    let cuts: Vec<u64> = range
        .clone()
        .step_by(37)
        .chain([*range.end() - 1])
        .collect();
    run_cuts(&t, seg, cuts.clone(), Tail::None, 12, disk_tempdir);
    run_cuts(
        &t,
        seg,
        cuts.clone(),
        Tail::Zeros(1 << 16),
        13,
        disk_tempdir,
    );
    run_cuts(&t, seg, cuts, Tail::Garbage(200), 14, disk_tempdir);
    let end0 = t.segments[0].batches.last().unwrap().end;
    run_cuts(&t, 0, [end0 / 3], Tail::None, 15, disk_tempdir);
}

#[test]
fn torn_multi_record_batch_is_all_or_nothing() {
    let t = template();
    let multi: Vec<(usize, BatchPos)> = t
        .segments
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.batches.iter().map(move |b| (i, *b)))
        .filter(|(_, b)| b.last_offset > b.base_offset)
        .collect();
    assert!(multi.len() >= 3, "{multi:?}");
    let mut rng = Rng::new(16);
    for (seg, b) in multi {
        // Offsets in the middle of the batch's records; the last byte (a zero header
        // count) is left out: refilled by zeros it would restore the batch.
        for cut in [b.start + 1, b.start + 60, (b.start + b.end) / 2, b.end - 2] {
            for tail in [Tail::None, Tail::Zeros(100), Tail::Garbage(40)] {
                let dir = sweep_tempdir();
                let expected = damage(&t, dir.path(), seg, cut, tail, &mut rng);
                assert_eq!(expected, b.base_offset);
                let log = Log::open(dir.path(), config()).unwrap();
                // None of the batch's records, all of the ones before it.
                assert_eq!(log.end_offset(), b.base_offset, "cut at {cut} {tail:?}");
                for o in b.base_offset..=b.last_offset {
                    assert!(log.read(o).unwrap().is_none(), "offset {o} of a torn batch");
                }
                assert_dense_prefix(&log, b.base_offset);
                log.close().unwrap();
            }
        }
        // Cut right after it: all of its records.
        let dir = sweep_tempdir();
        let expected = damage(&t, dir.path(), seg, b.end, Tail::None, &mut rng);
        assert_eq!(expected, b.last_offset + 1);
        let log = Log::open(dir.path(), config()).unwrap();
        assert_dense_prefix(&log, b.last_offset + 1);
        log.close().unwrap();
    }
}
