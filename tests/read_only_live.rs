//! `Log::open_read_only` beside a writer in another process that appends, rolls, and
//! runs retention and the compaction cleaner: every record read is the one written at
//! its offset, tailing sees new records quickly, and the reader changes no file.

mod common;

use std::time::{Duration, Instant};

use common::live_writer::{digest_dir, key_for, run_if_child, LiveWriter, CURSOR, CURSOR_LAG};
use common::value_for;
use logqueue::{Error, Log, LogConfig, Offset, Queue, QueueConfig, Record, StoredRecord};

#[test]
fn live_writer_child() {
    run_if_child();
}

fn check_record(r: &StoredRecord) {
    assert_eq!(
        r.key.as_deref(),
        Some(&key_for(r.offset)[..]),
        "key at {}",
        r.offset
    );
    assert!(
        r.value.as_deref() == Some(&value_for(r.offset)[..]),
        "value at {}: {:?}",
        r.offset,
        r.value.as_deref().map(String::from_utf8_lossy)
    );
    assert_eq!(r.header("offset"), Some(r.offset.to_string().as_bytes()));
}

/// Reads the whole log with a reader and with point reads; returns the records seen.
fn read_everything(log: &Log) -> u64 {
    let mut seen = 0;
    let mut reader = log.reader(0).unwrap();
    let mut last: Option<Offset> = None;
    loop {
        match reader.next() {
            Some(Ok(r)) => {
                check_record(&r);
                assert!(last.is_none_or(|l| r.offset > l), "offsets rise");
                last = Some(r.offset);
                seen += 1;
            }
            // Retention moved the start past the reader: go on from the new start.
            Some(Err(Error::OffsetOutOfRange { start, .. })) => reader.seek(start).unwrap(),
            Some(Err(e)) => panic!("reader: {e}"),
            None => break,
        }
    }
    let (start, end) = (log.start_offset(), log.end_offset());
    let step = ((end - start) / 50).max(1);
    let mut o = start;
    while o < end {
        match log.read(o) {
            Ok(Some(r)) => {
                assert_eq!(r.offset, o);
                check_record(&r);
            }
            // Removed by compaction.
            Ok(None) => {}
            Err(Error::OffsetOutOfRange { .. }) => {}
            Err(e) => panic!("read({o}): {e}"),
        }
        o += step;
    }
    seen
}

#[test]
fn reads_beside_a_live_writer_with_rolls_retention_and_compaction() {
    let parent = tempfile::tempdir().unwrap();
    let writer = LiveWriter::start(parent.path(), "live_writer_child");
    let log = Log::open_read_only(&writer.dir).unwrap();
    let began = Instant::now();
    let bases = |log: &Log| {
        log.segments()
            .iter()
            .map(|s| s.base_offset)
            .collect::<Vec<_>>()
    };
    let first_bases = bases(&log);
    let (first_start, first_segments) = (log.start_offset(), first_bases.len());
    let mut rounds = 0;
    let mut total = 0;
    // Until segment files the reader had open were removed or swapped away under it.
    let mut seen = std::collections::BTreeSet::new();
    let mut removed = false;
    while began.elapsed() < Duration::from_secs(4) || !removed {
        let now = bases(&log);
        removed |= seen.iter().any(|b| !now.contains(b));
        seen.extend(now);
        total += read_everything(&log);
        rounds += 1;
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "no segment was ever removed: first {first_bases:?}, now {:?}, stats {:?}",
            bases(&log),
            log.stats()
        );
    }
    let report = log.verify().unwrap();
    assert!(report.corrupt.is_empty(), "{:?}", report.corrupt);
    eprintln!(
        "{rounds} rounds, {total} records checked; start {first_start} -> {}, \
         {first_segments} -> {} segments, end {}",
        log.start_offset(),
        log.segments().len(),
        log.end_offset()
    );
    assert!(
        log.start_offset() > first_start,
        "the start moved under the reader"
    );
    assert!(matches!(
        log.append(Record::keyed("k", "v")),
        Err(Error::ReadOnly)
    ));
    assert!(matches!(log.flush(), Err(Error::ReadOnly)));
    assert!(matches!(log.delete_records_before(1), Err(Error::ReadOnly)));
    assert!(matches!(log.compact(), Err(Error::ReadOnly)));
    assert!(matches!(log.enforce_retention(), Err(Error::ReadOnly)));
    writer.stop();
    // After a clean close the view still reads everything the writer left.
    read_everything(&log);
    log.close().unwrap();
}

#[test]
fn tailing_reader_sees_appends_from_another_process_quickly() {
    let parent = tempfile::tempdir().unwrap();
    let writer = LiveWriter::start(parent.path(), "live_writer_child");
    let log = Log::open_read_only(&writer.dir).unwrap();
    let mut tail = log.reader(log.end_offset()).unwrap();
    let mut delays = Vec::new();
    let mut expected = tail.position();
    while delays.len() < 300 {
        let r = tail
            .next_blocking(Duration::from_secs(10))
            .unwrap()
            .expect("a record within 10 s");
        assert_eq!(r.offset, expected, "no record skipped");
        check_record(&r);
        expected += 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        delays.push(now - r.timestamp);
    }
    delays.sort_unstable();
    let (median, p90, max) = (delays[150], delays[270], delays[299]);
    eprintln!("append-to-tail delay ms: median {median}, p90 {p90}, max {max}");
    assert!(
        p90 < 100,
        "90% of appends are seen within 100 ms: p90 {p90} ms"
    );
    writer.stop();
}

#[test]
fn the_reader_changes_no_file_of_a_live_log() {
    let parent = tempfile::tempdir().unwrap();
    let writer = LiveWriter::start(parent.path(), "live_writer_child");
    writer.wait_for_records(2000);
    // The writer is frozen mid-run (its lock held, its active segment half full):
    // anything that changes now is the reader's doing. Not mid-swap: frozen there, the
    // directory stays as a crash would leave it, and the reader rightly reports the
    // offsets the swap is moving as missing (seen once under heavy load).
    writer.pause_settled();
    let before = digest_dir(&writer.dir);
    {
        let log = Log::open_read_only(&writer.dir).unwrap();
        read_everything(&log);
        log.verify().unwrap();
        let _ = log.stats();
        let mut tail = log.reader(log.end_offset()).unwrap();
        assert!(tail
            .next_blocking(Duration::from_millis(50))
            .unwrap()
            .is_none());
        let _ = log.offset_for_timestamp(0).unwrap();
        log.close().unwrap();
    }
    let after = digest_dir(&writer.dir);
    writer.pause(false);
    assert_eq!(before, after, "the read-only log changed the directory");
    writer.stop();
}

#[test]
fn read_only_open_of_a_missing_directory_fails_and_creates_nothing() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("nope");
    assert!(matches!(
        Log::open_read_only(&missing),
        Err(Error::Io { .. })
    ));
    assert!(!missing.exists());
}

#[test]
fn cursors_committed_by_a_live_writer_are_read_fresh_by_a_long_lived_view() {
    let parent = tempfile::tempdir().unwrap();
    let writer = LiveWriter::start(parent.path(), "live_writer_child");
    writer.wait_for_records(500);
    let view = Log::open_read_only(&writer.dir).unwrap();
    let began = Instant::now();
    let mut positions = Vec::new();
    while began.elapsed() < Duration::from_millis(1500) {
        let cursors = view.cursors().unwrap();
        let mirror = cursors
            .iter()
            .find(|c| c.name == CURSOR)
            .unwrap_or_else(|| panic!("{cursors:?}"));
        assert!(!mirror.protect);
        // Looked at after the cursor: the writer committed it behind an end it had
        // appended, which the view sees now.
        let end = view.stats().end_offset;
        assert!(
            end >= mirror.position + CURSOR_LAG,
            "end {end}, cursor {}",
            mirror.position
        );
        positions.push(mirror.position);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(positions.windows(2).all(|w| w[0] <= w[1]), "{positions:?}");
    assert!(
        positions.last() > positions.first(),
        "the view saw the cursor move: {positions:?}"
    );
    writer.stop();
}

/// The floor file of earlier versions: `"LQF1" | floor u64 | protect u8 | crc32`.
fn legacy_floor(floor: u64, protect: bool) -> Vec<u8> {
    let mut out = b"LQF1".to_vec();
    out.extend_from_slice(&floor.to_le_bytes());
    out.push(u8::from(protect));
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

#[test]
fn a_read_only_open_migrates_no_legacy_queue_floor_and_changes_no_byte() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let q = Queue::open(&log, "q", QueueConfig::default()).unwrap();
        for i in 0..50 {
            q.send(Record::new(format!("r{i}"))).unwrap();
        }
        for d in q.receive(10, Duration::ZERO).unwrap() {
            q.ack(&d.receipt).unwrap();
        }
        q.close().unwrap();
        log.close().unwrap();
    }
    // Laid out as an earlier version left it: the floor in `queues/q/floor`, no cursor.
    std::fs::remove_file(dir.path().join("cursors/queue.q.cursor")).unwrap();
    let floor_file = dir.path().join("queues/q/floor");
    std::fs::write(&floor_file, legacy_floor(10, true)).unwrap();
    let before = digest_dir(dir.path());

    let view = Log::open_read_only(dir.path()).unwrap();
    assert_eq!(view.reader(0).unwrap().count(), 50);
    assert!(view.cursors().unwrap().is_empty(), "no cursor was created");
    assert_eq!(Queue::names(&view).unwrap(), ["q"]);
    assert_eq!(Queue::inspect(&view, "q").unwrap().ack_floor, 10);
    let _ = view.stats();
    view.close().unwrap();
    for args in [&["stats"][..], &["queues"], &["dlq", "q", "list"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_logqueue"))
            .arg(args[0])
            .arg(dir.path())
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        digest_dir(dir.path()),
        before,
        "a read-only open changed a file"
    );

    // The migration a writable open runs would have changed them.
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert!(!floor_file.exists(), "a writable open migrates the floor");
    assert_eq!(log.cursors().unwrap()[0].name, "queue.q");
    log.close().unwrap();
}

#[test]
fn queue_names_on_a_read_only_view_leave_an_interrupted_delete_alone() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        for name in ["kept", "gone"] {
            let q = Queue::open(&log, name, QueueConfig::default()).unwrap();
            q.send(Record::new("x")).unwrap();
            q.close().unwrap();
        }
        log.close().unwrap();
    }
    // A delete interrupted by a crash after its rename (see queue/lifecycle.rs).
    let queues = dir.path().join("queues");
    std::fs::rename(queues.join("gone"), queues.join("gone~deleted")).unwrap();
    let before = digest_dir(dir.path());
    let view = Log::open_read_only(dir.path()).unwrap();
    assert_eq!(Queue::names(&view).unwrap(), ["kept"]);
    assert_eq!(
        digest_dir(dir.path()),
        before,
        "names() on a view changed a file"
    );
    // A writable log finishes the delete.
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(Queue::names(&log).unwrap(), ["kept"]);
    assert!(!queues.join("gone~deleted").exists());
    log.close().unwrap();
}
