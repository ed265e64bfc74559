//! The machine's own limits for the append rows, measured by the same program in
//! the same run, so that each logqueue figure is also a fraction of what this
//! machine can do at all:
//!
//! - **Two independent appenders:** two threads, each appending to a log of its
//!   own (separate directories, nothing shared in logqueue). Whatever stops this
//!   from reaching 2× one thread is the machine (the kernel's page-cache work,
//!   the preparer threads and the other core's load), not the sharing of one log:
//!   it bounds what two threads appending to one log can reach.
//! - **64 KiB writes into a segment-like file:** `pwrite(2)` into a file allocated
//!   ahead (`fallocate`), as a log segment is, with no framing, no CRC and no
//!   index: 64 KiB writes on 64 KiB boundaries, and writes shaped like 64 KiB
//!   appends (each 71 bytes longer, so off the boundaries). The second bounds what
//!   64 KiB appends can reach, beside the 1 MiB `write(2)` bandwidth of a new file
//!   that the sizes table divides by.

use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use logqueue::Log;

/// What a run of appending threads measured.
pub struct Threads {
    /// Records per second, all threads together (wall clock).
    pub rate: f64,
    /// On-CPU nanoseconds per record of the appending threads themselves, summed.
    pub cpu_ns_per_record: f64,
}

/// `threads` threads appending `per_thread` 100 B records one per call, each to a
/// log of its own under `base` when `separate`, else all to one log.
pub fn appenders(base: &Path, threads: usize, per_thread: u64, separate: bool) -> Threads {
    let dirs: Vec<_> = (0..if separate { threads } else { 1 })
        .map(|_| tempfile::tempdir_in(base).expect("temp dir"))
        .collect();
    let logs: Vec<Log> = dirs
        .iter()
        .map(|d| Log::open(d.path(), crate::sizes::lq_config()).expect("open logqueue"))
        .collect();
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = logs[t % logs.len()].clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let value = [0x6Du8; 100];
                barrier.wait();
                let cpu = crate::thread_cpu();
                for _ in 0..per_thread {
                    log.append_slice(None, &value).expect("append");
                }
                crate::thread_cpu() - cpu
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let cpu: Duration = handles
        .into_iter()
        .map(|h| h.join().expect("appender"))
        .sum();
    let took = start.elapsed();
    for log in logs {
        log.close().expect("close");
    }
    let records = per_thread * threads as u64;
    Threads {
        rate: records as f64 / took.as_secs_f64(),
        cpu_ns_per_record: cpu.as_nanos() as f64 / records as f64,
    }
}

/// Bytes of a 64 KiB record's batch beyond its value: the 60-byte batch header and
/// 11 bytes of the record's own fields (two appends of 64 KiB make a log of 131,214
/// bytes), for the batch-shaped probe.
pub const BATCH_OVERHEAD_64K: usize = 71;

/// Bytes per second of `pwrite(2)` of `write_len`-byte chunks, back to back from
/// offset 0, into a file allocated ahead in 8 MiB steps (as a segment is), `total`
/// bytes, no fsync. With `write_len` = 64 KiB every write starts on a 64 KiB
/// boundary; with 64 KiB + [`BATCH_OVERHEAD_64K`] (a 64 KiB append's batch) they
/// do not, and the kernel then builds the page cache from small folios (a write's
/// large folios must be aligned): on Linux 6.18 that costs about a third.
pub fn preallocated_bandwidth(dir: &Path, total: u64, write_len: usize) -> f64 {
    const STEP: u64 = 8 << 20;
    let path = dir.join("preallocated-probe");
    let file = std::fs::File::create(&path).expect("create probe");
    let chunk = vec![0x6Du8; write_len];
    let mut allocated = 0u64;
    let start = Instant::now();
    let mut written = 0u64;
    while written < total {
        if written + write_len as u64 > allocated {
            allocated += STEP;
            // SAFETY: fallocate on a file we own; mode 0 allocates and extends.
            let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, allocated as libc::off_t) };
            assert_eq!(rc, 0, "fallocate probe");
        }
        file.write_all_at(&chunk, written).expect("pwrite probe");
        written += write_len as u64;
    }
    let took = start.elapsed();
    drop(file);
    std::fs::remove_file(&path).expect("remove probe");
    written as f64 / took.as_secs_f64()
}
