//! Durable named cursors: commit, reopen, crash at every file operation, protect vs
//! retention, damaged files, and the migration of queue floor files of earlier
//! versions.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{sim_config, small_config};
use logqueue::fs::FileSystem;
use logqueue::sim::SimFs;
use logqueue::{
    CursorConfig, CursorInfo, Error, Log, LogConfig, ManualClock, Queue, QueueConfig, Record,
};

const PROTECT: CursorConfig = CursorConfig { protect: true };
const NO_PROTECT: CursorConfig = CursorConfig { protect: false };

fn fill(log: &Log, n: usize) {
    for _ in 0..n {
        log.append(Record::new(vec![7u8; 100])).unwrap();
    }
}

fn sim_log(fs: &SimFs, clock: &ManualClock) -> logqueue::Result<Log> {
    Log::open(
        "/log",
        LogConfig {
            retention_bytes: Some(1),
            ..sim_config(fs, clock, 1024)
        },
    )
}

#[test]
fn commit_reopen_list_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(1024)).unwrap();
    fill(&log, 10);
    let a = log.cursor("a", PROTECT).unwrap();
    assert_eq!(a.position(), 0, "a new cursor starts at the start offset");
    a.commit(7).unwrap();
    let again = log.cursor("a", PROTECT).unwrap();
    assert_eq!(again.position(), 7, "handles of one name share one state");
    log.cursor("b", NO_PROTECT).unwrap().commit(3).unwrap();
    assert!(matches!(
        a.commit(11),
        Err(Error::OffsetOutOfRange { offset: 11, .. })
    ));
    assert!(matches!(
        log.cursor("../x", PROTECT),
        Err(Error::InvalidConfig(_))
    ));
    log.close().unwrap();
    let log = Log::open(dir.path(), small_config(1024)).unwrap();
    let info = |name: &str, position, protect| CursorInfo {
        name: name.into(),
        position,
        protect,
    };
    assert_eq!(
        log.cursors().unwrap(),
        vec![info("a", 7, true), info("b", 3, false)]
    );
    // Opening with another `protect` replaces the stored one.
    log.cursor("b", PROTECT).unwrap();
    log.delete_cursor("a").unwrap();
    log.delete_cursor("never-existed").unwrap();
    log.close().unwrap();
    let log = Log::open(dir.path(), small_config(1024)).unwrap();
    assert_eq!(log.cursors().unwrap(), vec![info("b", 3, true)]);
}

#[test]
fn a_commit_survives_kill_9_and_power_loss_after_the_next_flush() {
    let fs = SimFs::new(1);
    let clock = ManualClock::new(0);
    let log = sim_log(&fs, &clock).unwrap();
    fill(&log, 20);
    log.flush().unwrap();
    let c = log.cursor("c", PROTECT).unwrap();
    c.commit(5).unwrap();
    fs.kill();
    drop((c, log));
    let log = sim_log(&fs, &clock).unwrap();
    let c = log.cursor("c", PROTECT).unwrap();
    assert_eq!(c.position(), 5, "kill -9 after commit returned");
    c.commit(9).unwrap();
    log.flush().unwrap();
    c.commit(12).unwrap();
    fs.crash();
    drop((c, log));
    let log = sim_log(&fs, &clock).unwrap();
    let p = log.cursor("c", PROTECT).unwrap().position();
    assert!(
        p == 9 || p == 12,
        "power loss: the flushed commit or a later one, got {p}"
    );
}

#[test]
fn protecting_cursors_hold_back_retention_and_delete_records_before_wins() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: Some(1),
        ..small_config(1024)
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    fill(&log, 100);
    let watcher = log.cursor("watcher", NO_PROTECT).unwrap();
    let c = log.cursor("c", PROTECT).unwrap();
    log.enforce_retention().unwrap();
    assert_eq!(log.start_offset(), 0, "a cursor at 0 protects everything");
    assert!(log.stats().retention_held_segments > 0);
    c.commit(40).unwrap();
    log.enforce_retention().unwrap();
    let start = log.start_offset();
    assert!(start > 0 && start <= 40, "start {start}");
    assert_eq!(log.stats().retention_floor, Some(40));
    // Closed and reopened: the cursor still protects.
    drop((watcher, c));
    log.close().unwrap();
    let log = Log::open(dir.path(), config).unwrap();
    log.enforce_retention().unwrap();
    assert!(log.start_offset() <= 40);
    // An explicit deletion passes the cursor; the cursor keeps its position.
    log.delete_records_before(60).unwrap();
    log.enforce_retention().unwrap();
    assert_eq!(log.start_offset(), 60);
    let c = log.cursor("c", PROTECT).unwrap();
    assert_eq!(c.position(), 40);
    // Moving down is allowed; with protect off the cursor holds nothing.
    c.commit(50).unwrap();
    log.cursor("c", NO_PROTECT).unwrap();
    fill(&log, 50);
    log.enforce_retention().unwrap();
    assert!(log.start_offset() > 100, "start {}", log.start_offset());
}

#[test]
fn a_damaged_cursor_file_is_corrupt_and_protects_everything() {
    for damage in ["flip both slots", "truncate", "garbage"] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            retention_bytes: Some(1),
            ..small_config(1024)
        };
        let log = Log::open(dir.path(), config.clone()).unwrap();
        fill(&log, 100);
        log.cursor("c", NO_PROTECT).unwrap().commit(90).unwrap();
        log.cursor("ok", NO_PROTECT).unwrap();
        log.close().unwrap();
        let path = dir.path().join("cursors/c.cursor");
        match damage {
            "flip both slots" => {
                common::flip_bit(&path, 14, 0);
                common::flip_bit(&path, 32 + 14, 0);
            }
            "truncate" => {
                let b = std::fs::read(&path).unwrap();
                std::fs::write(&path, &b[..40]).unwrap();
            }
            _ => std::fs::write(&path, [0xAB; 64]).unwrap(),
        }
        let log = Log::open(dir.path(), config).unwrap();
        let corrupt = |e: Error| matches!(&e, Error::Corrupt { path: p, .. } if *p == path);
        assert!(
            corrupt(log.cursor("c", NO_PROTECT).unwrap_err()),
            "{damage}"
        );
        assert!(corrupt(log.cursors().unwrap_err()), "{damage}");
        assert!(
            log.cursor("ok", NO_PROTECT).is_ok(),
            "{damage}: others work"
        );
        // Even a cursor that did not protect now protects everything, reported.
        assert_eq!(log.enforce_retention().unwrap().segments_deleted, 0);
        assert_eq!(log.stats().damaged_floor_files, vec![path.clone()]);
        log.delete_cursor("c").unwrap();
        assert!(log.enforce_retention().unwrap().segments_deleted > 0);
        assert!(log.stats().damaged_floor_files.is_empty());
        assert_eq!(log.cursors().unwrap().len(), 1);
    }
}

/// What the crash workload got through, for the checks after the crash.
#[derive(Default)]
struct Progress {
    a_created: bool,
    /// Positions `a` may hold after power loss: the last flushed one and every commit
    /// tried since.
    a_allowed: Vec<u64>,
    b_created: bool,
    b_allowed: Vec<u64>,
    b_delete_tried: bool,
    b_deleted: bool,
}

fn crash_workload(fs: &SimFs, clock: &ManualClock, p: &mut Progress) -> logqueue::Result<()> {
    let log = sim_log(fs, clock)?;
    for _ in 0..200 {
        log.append(Record::new(vec![1u8; 100]))?;
    }
    log.flush()?;
    p.a_allowed = vec![0];
    let a = log.cursor("a", PROTECT)?;
    p.a_created = true;
    for (v, flush) in [(10, true), (20, false), (30, true)] {
        p.a_allowed.push(v);
        a.commit(v)?;
        if flush {
            log.flush()?;
            p.a_allowed = vec![v];
        }
    }
    p.b_allowed = vec![0];
    let b = log.cursor("b", NO_PROTECT)?;
    p.b_created = true;
    p.b_allowed.push(50);
    b.commit(50)?;
    log.flush()?;
    p.b_allowed = vec![50];
    log.enforce_retention()?;
    p.a_allowed.push(60);
    a.commit(60)?;
    p.b_delete_tried = true;
    log.delete_cursor("b")?;
    p.b_deleted = true;
    p.a_allowed.push(25);
    a.commit(25)?;
    log.flush()?;
    p.a_allowed = vec![25];
    p.a_allowed.push(35);
    a.commit(35)?;
    log.close()
}

#[test]
fn crash_at_every_file_operation_of_cursor_create_commit_delete_and_retention() {
    let clock = ManualClock::new(0);
    let total = {
        let fs = SimFs::new(0);
        crash_workload(&fs, &clock, &mut Progress::default()).unwrap();
        fs.op_count()
    };
    for seed in common::seeds(2) {
        println!("seed {seed} (LOGQUEUE_SEED replays)");
        for n in 1..=total {
            let fs = SimFs::new(seed);
            fs.crash_at_op(n);
            let mut p = Progress::default();
            let r = crash_workload(&fs, &clock, &mut p);
            assert!(r.is_err(), "op {n}: the workload ran past the crash");
            fs.clear_faults();
            let log = sim_log(&fs, &clock).unwrap_or_else(|e| panic!("op {n}: open: {e}"));
            let cursors = log
                .cursors()
                .unwrap_or_else(|e| panic!("op {n}: a crash made a cursor unreadable: {e}"));
            let find = |name: &str| cursors.iter().find(|c| c.name == name);
            match find("a") {
                Some(a) => assert!(
                    p.a_allowed.contains(&a.position),
                    "op {n}: a at {} not in {:?}",
                    a.position,
                    p.a_allowed
                ),
                None => assert!(!p.a_created, "op {n}: a created cursor is gone"),
            }
            match find("b") {
                Some(b) => {
                    assert!(!p.b_deleted, "op {n}: a deleted cursor came back");
                    assert!(
                        p.b_allowed.contains(&b.position),
                        "op {n}: b at {}",
                        b.position
                    );
                }
                None => assert!(!p.b_created || p.b_delete_tried, "op {n}: b is gone"),
            }
            // Retention ran while `a` was at 30 (durable): nothing at or above it went.
            assert!(
                log.start_offset() <= 30,
                "op {n}: start {}",
                log.start_offset()
            );
            assert!(log.stats().damaged_floor_files.is_empty(), "op {n}");
        }
    }
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

/// A log with a queue `q` laid out as earlier versions did: its floor in
/// `queues/q/floor` (here `floor` bytes), no cursor. Closed.
fn legacy_queue(fs: &SimFs, clock: &ManualClock, floor: &[u8]) {
    let log = sim_log(fs, clock).unwrap();
    let q = Queue::open(&log, "q", QueueConfig::default()).unwrap();
    for _ in 0..200 {
        q.send(Record::new(vec![3u8; 100])).unwrap();
    }
    for d in q.receive(40, Duration::ZERO).unwrap() {
        q.ack(&d.receipt).unwrap();
    }
    q.flush().unwrap();
    drop(q);
    log.close().unwrap();
    fs.remove_file(Path::new("/log/cursors/queue.q.cursor"))
        .unwrap();
    fs.sync_dir(Path::new("/log/cursors")).unwrap();
    fs.write_file("/log/queues/q/floor", floor).unwrap();
}

#[test]
fn queue_floor_files_of_earlier_versions_become_cursors_at_open() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    legacy_queue(&fs, &clock, &legacy_floor(40, true));
    let log = sim_log(&fs, &clock).unwrap();
    let info = CursorInfo {
        name: "queue.q".into(),
        position: 40,
        protect: true,
    };
    assert_eq!(log.cursors().unwrap(), vec![info]);
    assert!(!fs.exists(Path::new("/log/queues/q/floor")));
    // The queue was never opened since the upgrade: it still protects.
    log.enforce_retention().unwrap();
    let start = log.start_offset();
    assert!(start > 0 && start <= 40, "start {start}");
    assert!(log.stats().damaged_floor_files.is_empty());
    // The queue opens over the migrated cursor.
    let q = Queue::open(&log, "q", QueueConfig::default()).unwrap();
    assert_eq!(q.stats().ack_floor, 40);
    drop(q);
    log.close().unwrap();
    // A non-protecting legacy queue migrates to a non-protecting cursor.
    let fs = SimFs::new(0);
    legacy_queue(&fs, &clock, &legacy_floor(10, false));
    let log = sim_log(&fs, &clock).unwrap();
    assert!(!log.cursors().unwrap()[0].protect);
    log.enforce_retention().unwrap();
    assert!(log.start_offset() > 100);
}

#[test]
fn a_damaged_legacy_floor_or_a_queue_without_cursor_protects_everything_until_opened() {
    for case in ["damaged floor", "no floor, no cursor"] {
        let fs = SimFs::new(0);
        let clock = ManualClock::new(0);
        legacy_queue(&fs, &clock, &legacy_floor(40, true));
        let reported = if case == "damaged floor" {
            fs.corrupt_byte("/log/queues/q/floor", 6, 1).unwrap();
            Path::new("/log/queues/q/floor")
        } else {
            fs.remove_file(Path::new("/log/queues/q/floor")).unwrap();
            Path::new("/log/cursors/queue.q.cursor")
        };
        let log = sim_log(&fs, &clock).unwrap();
        assert_eq!(
            log.enforce_retention().unwrap().segments_deleted,
            0,
            "{case}"
        );
        assert_eq!(
            log.stats().damaged_floor_files,
            vec![reported.to_path_buf()]
        );
        assert_eq!(log.stats().retention_floor, Some(0), "{case}");
        // Reopening the log keeps protecting (nothing was made up in between).
        log.close().unwrap();
        let log = sim_log(&fs, &clock).unwrap();
        assert_eq!(
            log.enforce_retention().unwrap().segments_deleted,
            0,
            "{case}"
        );
        // Opening the queue writes its cursor from its state and ends the hold.
        let q = Queue::open(&log, "q", QueueConfig::default()).unwrap();
        q.flush().unwrap();
        assert!(log.stats().damaged_floor_files.is_empty(), "{case}");
        assert!(!fs.exists(Path::new("/log/queues/q/floor")), "{case}");
        assert_eq!(log.cursors().unwrap()[0].name, "queue.q");
    }
}

#[test]
fn crash_at_every_file_operation_of_the_migration() {
    let clock = ManualClock::new(0);
    let setup = || {
        let fs = SimFs::new(0);
        legacy_queue(&fs, &clock, &legacy_floor(40, true));
        fs
    };
    let total = {
        let fs = setup();
        let before = fs.op_count();
        sim_log(&fs, &clock).unwrap().close().unwrap();
        fs.op_count() - before
    };
    for n in 1..=total {
        let fs = setup();
        fs.crash_at_op(fs.op_count() + n);
        if let Ok(log) = sim_log(&fs, &clock) {
            let _ = log.close();
        }
        fs.clear_faults();
        fs.crash();
        let log = sim_log(&fs, &clock).unwrap_or_else(|e| panic!("op {n}: {e}"));
        let cursors = log.cursors().unwrap();
        assert_eq!(cursors.len(), 1, "op {n}");
        assert_eq!(
            (cursors[0].position, cursors[0].protect),
            (40, true),
            "op {n}"
        );
        assert!(!fs.exists(Path::new("/log/queues/q/floor")), "op {n}");
        log.enforce_retention().unwrap();
        assert!(log.start_offset() <= 40, "op {n}");
    }
}

#[test]
fn a_queue_cursor_without_its_queue_directory_is_removed_at_open() {
    // A crash inside `Queue::delete`, which removes the directory before the cursor.
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let log = sim_log(&fs, &clock).unwrap();
    Queue::open(&log, "gone", QueueConfig::default()).unwrap();
    log.cursor("mine", PROTECT).unwrap();
    log.close().unwrap();
    fs.remove_dir_all(Path::new("/log/queues/gone")).unwrap();
    let log = sim_log(&fs, &clock).unwrap();
    let names: Vec<String> = log.cursors().unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(names, vec!["mine".to_string()]);
}

#[test]
fn commit_costs_no_fsync() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let log = Log::open(
        "/log",
        LogConfig {
            clock: Arc::new(clock.clone()),
            ..sim_config(&fs, &clock, 1 << 20)
        },
    )
    .unwrap();
    fill(&log, 1000);
    let c = log.cursor("c", PROTECT).unwrap();
    c.commit(1).unwrap();
    let before = fs.op_count();
    for i in 2..1000 {
        c.commit(i).unwrap();
    }
    // One counted operation (the write) per commit: no fsync, no rename.
    assert_eq!(fs.op_count() - before, 998);
}

#[test]
fn a_legacy_floor_without_snapshot_stays_so_the_queue_still_reports_lost_state() {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    legacy_queue(&fs, &clock, &legacy_floor(40, true));
    fs.remove_file(Path::new("/log/queues/q/snapshot")).unwrap();
    let log = sim_log(&fs, &clock).unwrap();
    assert_eq!(log.cursors().unwrap()[0].position, 40, "still protects");
    assert!(fs.exists(Path::new("/log/queues/q/floor")));
    let e = Queue::open(&log, "q", QueueConfig::default()).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
}
