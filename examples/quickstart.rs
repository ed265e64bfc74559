//! Quick start: append a million records, read them back three ways, reopen.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```

use std::time::{Duration, Instant};

use logqueue::{FlushPolicy, Log, LogConfig, Record};

const RECORDS: u64 = 1_000_000;
const VALUE_BYTES: usize = 100;

fn main() -> logqueue::Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = || LogConfig {
        // Explicit flushes only, so the timings below show the append path itself.
        flush: FlushPolicy::Manual,
        // 64 MiB segments, so a million 100-byte records span a few of them.
        segment_bytes: 64 << 20,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config())?;
    println!("opened a log in {}", dir.path().display());

    // Append one record per call. Each returns its offset; once `append` returns the
    // record survives a crash of the process, and after `flush` a power loss too.
    let start = Instant::now();
    let mut first = None;
    let mut last = 0;
    for i in 0..RECORDS {
        let offset = log.append(Record::new(value(i)))?;
        first.get_or_insert(offset);
        last = offset;
    }
    let appended = start.elapsed();
    let start = Instant::now();
    log.flush()?;
    let flushed = start.elapsed();
    println!(
        "appended {RECORDS} records of {VALUE_BYTES} B one per call: offsets {}..={last}, {} ({}); flush (fsync) {:.1} ms",
        first.unwrap_or(0),
        fmt_secs(appended),
        rate(RECORDS, appended),
        flushed.as_secs_f64() * 1e3,
    );
    log.append_batch((0..100).map(|i| Record::keyed("batch", value(i))).collect())?;
    println!(
        "append_batch of 100 records: offsets {}..{} (all survive a crash or none)",
        log.end_offset() - 100,
        log.end_offset()
    );

    // Zero-copy sequential read: each record is decoded in place from the memory map.
    let start = Instant::now();
    let mut bytes = 0usize;
    let n = log.reader(0)?.read_views(usize::MAX, |view| {
        bytes += view.value.map_or(0, <[u8]>::len);
    })?;
    let took = start.elapsed();
    println!(
        "zero-copy read (read_views): {n} records, {} MB of values, {} ({})",
        bytes / 1_000_000,
        fmt_secs(took),
        rate(n as u64, took)
    );

    // Owned sequential read: the reader is an Iterator of StoredRecord.
    let start = Instant::now();
    let mut n = 0u64;
    for record in log.reader(0)? {
        let record = record?;
        debug_assert_eq!(record.offset, n);
        n += 1;
    }
    let took = start.elapsed();
    println!(
        "owned read (iterator): {n} records, {} ({})",
        fmt_secs(took),
        rate(n, took)
    );

    // Random access by offset through the sparse offset index.
    let wanted = RECORDS / 2 + 7;
    let record = log.read(wanted)?.expect("the record is there");
    assert_eq!(record.value.as_deref(), Some(&value(wanted)[..]));
    println!(
        "read({wanted}): offset {}, timestamp {} ms, value starts with {:?}",
        record.offset,
        record.timestamp,
        String::from_utf8_lossy(&record.value.as_deref().unwrap_or_default()[..16])
    );

    let segments = log.segments();
    println!(
        "{} segments ({} MiB in all):",
        segments.len(),
        segments.iter().map(|s| s.size_bytes).sum::<u64>() >> 20
    );
    for s in &segments {
        println!(
            "  base offset {:>8}, next offset {:>8}, {:>3} MiB{}",
            s.base_offset,
            s.next_offset,
            s.size_bytes >> 20,
            if s.active { " (active)" } else { "" }
        );
    }

    // Close (flush, trim, clean-shutdown marker) and reopen: everything is still there.
    let end = log.end_offset();
    log.close()?;
    let start = Instant::now();
    let log = Log::open(dir.path(), config())?;
    let reopened = start.elapsed();
    assert_eq!(log.end_offset(), end);
    let again = log.read(wanted)?.expect("the record survived the reopen");
    assert_eq!(again, record);
    println!(
        "closed and reopened in {:.1} ms: offsets {}..{}, read({wanted}) gives the same record",
        reopened.as_secs_f64() * 1e3,
        log.start_offset(),
        log.end_offset()
    );
    log.close()?;
    Ok(())
}

/// A 100-byte value that names its record: "record 000000000042 ....".
/// (Digits written by hand: `format!` would cost as much as the append itself.)
fn value(i: u64) -> Vec<u8> {
    let mut v = vec![b'.'; VALUE_BYTES];
    v[..7].copy_from_slice(b"record ");
    let mut n = i;
    for d in v[7..19].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    v
}

fn fmt_secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn rate(n: u64, d: Duration) -> String {
    format!("{:.2} M records/s", n as f64 / d.as_secs_f64() / 1e6)
}
