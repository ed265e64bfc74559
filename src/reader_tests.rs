//! Unit tests of `LogReader` paths that are not public.

use crate::{Log, LogConfig, Record};

/// A log of `batches` batches of 10 records each (offsets `10 b .. 10 b + 10`).
fn log_of_batches(dir: &std::path::Path, batches: u64) -> Log {
    let log = Log::open(dir, LogConfig::default()).unwrap();
    for b in 0..batches {
        log.append_batch(
            (0..10)
                .map(|i| Record::new(format!("{}", b * 10 + i)))
                .collect(),
        )
        .unwrap();
    }
    log
}

#[test]
fn read_views_whole_batches_finishes_the_batch_it_stops_in() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_of_batches(dir.path(), 3);
    let mut reader = log.reader(0).unwrap();
    let mut seen = Vec::new();
    // 3 asked: the first batch whole.
    let n = reader
        .read_views_whole_batches(3, u64::MAX, |v| seen.push(v.offset))
        .unwrap();
    assert_eq!((n, reader.position()), (10, 10));
    // 12 asked from the start of the second batch: both remaining batches.
    let n = reader
        .read_views_whole_batches(12, u64::MAX, |v| seen.push(v.offset))
        .unwrap();
    assert_eq!((n, reader.position()), (20, 30));
    assert_eq!(seen, (0..30).collect::<Vec<_>>());
    // Resumed mid-batch (a seek), it goes on from there to the batch's end.
    reader.seek(14).unwrap();
    seen.clear();
    let n = reader
        .read_views_whole_batches(1, u64::MAX, |v| seen.push(v.offset))
        .unwrap();
    assert_eq!((n, seen), (6, (14..20).collect::<Vec<_>>()));
    // `read_views` stops where it is told, mid-batch.
    reader.seek(0).unwrap();
    assert_eq!(reader.read_views(3, |_| {}).unwrap(), 3);
    assert_eq!(reader.position(), 3);
}

/// A limit stops whole-batch reads exactly there, mid-batch or not, on the general
/// path (the first batch read) and on the in-segment path (the batches after it),
/// and the reader resumes at the limit.
#[test]
fn read_views_whole_batches_stops_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_of_batches(dir.path(), 4);
    let mut reader = log.reader(0).unwrap();
    let mut seen = Vec::new();
    for (max, limit, want_n, want_position) in [
        // General path, limit inside the first batch.
        (100, 4, 4, 4),
        // Resumed mid-batch (general path again), the limit two batches on: the
        // in-segment path stops in the third batch.
        (100, 25, 21, 25),
        // The count reached first: whole batches as before, limit not reached.
        (1, 38, 5, 30),
        // A limit on a batch boundary: nothing of the next batch.
        (100, 30, 0, 30),
        (100, 40, 10, 40),
    ] {
        let from = reader.position();
        let n = reader
            .read_views_whole_batches(max, limit, |v| seen.push(v.offset))
            .unwrap();
        assert_eq!(
            (n, reader.position()),
            (want_n, want_position),
            "max {max} limit {limit}"
        );
        assert_eq!(seen, (from..want_position).collect::<Vec<_>>());
        seen.clear();
    }
}
