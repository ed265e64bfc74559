//! Bounded resources: a log of thousands of segments opens, appends through many
//! rolls and reads end to end with the process's file-descriptor limit set low. The
//! limit is set with `setrlimit` in a child process (this test binary run again),
//! so the other tests keep theirs.
//!
//! The full case (20,000 segments under `ulimit -n 256`) is the same test with
//! `LOGQUEUE_FD_LIMIT=256 LOGQUEUE_FD_LIMIT_RECORDS=80000` (4 records per segment);
//! the default keeps CI short.

use std::process::Command;

use logqueue::{FlushPolicy, Log, LogConfig, Record};

const CHILD_ENV: &str = "LOGQUEUE_FD_LIMIT_CHILD";
/// The descriptor limit of the child: `LOGQUEUE_FD_LIMIT`, 64 by default.
fn fd_limit() -> u64 {
    env_number("LOGQUEUE_FD_LIMIT", 64)
}

/// Records appended in all (about 4 per 4 KiB segment): `LOGQUEUE_FD_LIMIT_RECORDS`,
/// 24,000 by default (6,000 segments).
fn records() -> u32 {
    u32::try_from(env_number("LOGQUEUE_FD_LIMIT_RECORDS", 24_000)).expect("records fit u32")
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| v.parse().expect(name))
}

#[test]
fn thousands_of_segments_under_a_low_fd_limit() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([
            "--exact",
            "thousands_of_segments_under_a_low_fd_limit",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("child done"), "{stdout}\n{stderr}");
    for line in stdout
        .lines()
        .filter(|l| l.contains("reopen of") || l.contains("child done"))
    {
        println!("{line}");
    }
}

fn value(i: u32) -> Vec<u8> {
    let mut v = i.to_le_bytes().to_vec();
    v.resize(900, (i % 251) as u8);
    v
}

fn config() -> LogConfig {
    // `max_open_segments` is left to its default, derived from the (lowered) limit.
    LogConfig {
        segment_bytes: 4096,
        flush: FlushPolicy::Manual,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn child() {
    let limit = libc::rlimit {
        rlim_cur: fd_limit(),
        rlim_max: fd_limit(),
    };
    // SAFETY: setrlimit reads the struct we pass; lowering a limit is always allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    // The default: a quarter of the soft limit, within [16, 4096].
    let expected = usize::try_from(fd_limit() / 4).unwrap().clamp(16, 4096);
    assert_eq!(LogConfig::default().max_open_segments, expected);
    let records = records();
    // Real files, but in memory where available: the point is descriptors, not disks.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let log = Log::open(dir.path(), config()).unwrap();
    for i in 0..records / 2 {
        log.append(Record::new(value(i))).unwrap();
    }
    let segments = log.segments().len();
    assert!(segments as u32 > records / 10, "{segments} segments");
    read_all(&log, records / 2);
    log.close().unwrap();
    // Reopen the thousands of segments, roll through thousands more, read it all.
    let started = std::time::Instant::now();
    let log = Log::open(dir.path(), config()).unwrap();
    println!("reopen of {segments} segments: {:?}", started.elapsed());
    for i in records / 2..records {
        log.append(Record::new(value(i))).unwrap();
    }
    assert!(log.segments().len() > 2 * segments - 10);
    read_all(&log, records);
    for o in (0..u64::from(records)).step_by(97) {
        let r = log.read(o).unwrap().unwrap();
        assert_eq!(r.value.unwrap(), value(o as u32));
    }
    let report = log.verify().unwrap();
    assert_eq!(report.records, u64::from(records));
    assert!(report.corrupt.is_empty());
    log.close().unwrap();
    println!("child done: {} segments", segments * 2);
}

fn read_all(log: &Log, n: u32) {
    let mut count = 0;
    for (i, r) in log.reader(0).unwrap().enumerate() {
        let r = r.unwrap();
        assert_eq!(r.offset, i as u64);
        assert_eq!(r.value.unwrap(), value(i as u32));
        count += 1;
    }
    assert_eq!(count, n);
}
