//! Writes seed inputs for the `decode_batch` and `open_dir` targets into
//! `corpus/<target>/`: directories the real engine leaves behind (closed cleanly,
//! killed, crashed), with the files of a queue (snapshot, journal, floor, redrive
//! intent, dead-letter log), so the fuzzer starts from valid batches, indexes,
//! checkpoints and queue state instead of having to find CRCs by itself.
//!
//! `cargo run --example gen_seeds` (from `fuzz/`).

use std::fs;
use std::path::Path;
use std::sync::Arc;

use logqueue::sim::SimFs;
use std::time::Duration;

use logqueue::{FlushPolicy, Log, LogConfig, ManualClock, Queue, QueueConfig, Record};

#[path = "../fuzz_targets/common/dir_input.rs"]
mod dir_input;

/// How a scenario ends.
#[derive(Clone, Copy, Debug)]
enum End {
    Close,
    Kill,
    Crash,
}

fn files_of(fs: &SimFs) -> Vec<(&'static str, Vec<u8>)> {
    dir_input::NAMES
        .iter()
        .filter(|n| **n != "LOCK")
        .filter_map(|n| {
            fs.read_file(format!("{}/{n}", dir_input::DIR))
                .filter(|b| b.len() <= usize::from(u16::MAX))
                .map(|b| (*n, b))
        })
        .collect()
}

/// Two segments (based at 0 and 100), some flushed, some not, ending as `end`.
fn scenario(seed: u64, interval_flag: u8, end: End, start_before: Option<u64>) -> Vec<u8> {
    let fs = SimFs::new(seed);
    let config = LogConfig {
        fs: Arc::new(fs.clone()),
        clock: Arc::new(ManualClock::new(1_000)),
        background: false,
        flush: FlushPolicy::Manual,
        segment_bytes: 1024,
        max_batch_bytes: 16 << 10,
        index_interval_bytes: dir_input::INTERVALS[usize::from(interval_flag)],
        ..LogConfig::default()
    };
    let log = Log::open(dir_input::DIR, config).unwrap();
    // Offsets 0..100 in one batch fill most of the first segment...
    log.append_batch((0..100).map(|i| Record::new(vec![i as u8; 2])).collect())
        .unwrap();
    // ...so the next batch rolls to a segment based at 100.
    log.append_batch(vec![Record::keyed("a", vec![7u8; 300]); 3])
        .unwrap();
    log.flush().unwrap();
    for i in 0..6i64 {
        log.append(
            Record::keyed(format!("k{i}"), format!("v{i}"))
                .with_header("h", "x")
                .with_timestamp(2_000 + i),
        )
        .unwrap();
    }
    if let Some(o) = start_before {
        log.delete_records_before(o).unwrap();
    }
    // The queue `q`: acks, a nack, dead letters, a redrive, a flush, then an
    // unflushed ack.
    let config = QueueConfig {
        journal_bytes: 4096,
        max_deliveries: Some(2),
        ..QueueConfig::default()
    };
    let q = Queue::open(&log, dir_input::QUEUE, config).unwrap();
    let got = q.receive(6, Duration::ZERO).unwrap();
    for (i, d) in got.iter().enumerate().take(5) {
        match i {
            0 => q.ack(&d.receipt).unwrap(),
            1 => q.nack(&d.receipt, Duration::ZERO).unwrap(),
            2 | 3 => q.dead_letter(&d.receipt, "seed").unwrap(),
            _ => {}
        }
    }
    q.redrive(1).unwrap();
    q.flush().unwrap();
    if let Some(d) = got.get(4) {
        q.ack(&d.receipt).unwrap();
    }
    match end {
        End::Close => {
            drop(q);
            log.close().unwrap();
        }
        End::Kill => fs.kill(),
        End::Crash => fs.crash(),
    }
    dir_input::encode(interval_flag, &files_of(&fs))
}

/// CRC-32 (IEEE), as the engine's checkpoints use (crc32fast); bitwise, seeds only.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let open_dir = root.join("open_dir");
    let decode = root.join("decode_batch");
    fs::create_dir_all(&open_dir).unwrap();
    fs::create_dir_all(&decode).unwrap();
    let mut n = 0;
    for (i, end) in [End::Close, End::Kill, End::Crash].into_iter().enumerate() {
        for flag in 0..4u8 {
            for start in [None, Some(50), Some(103)] {
                let input = scenario(i as u64 * 10 + u64::from(flag), flag, end, start);
                fs::write(open_dir.join(format!("seed-{n:03}")), &input).unwrap();
                n += 1;
            }
        }
    }
    // Checkpoints planted at the edges of their value space (valid CRCs, which the
    // fuzzer would otherwise have to find).
    let slot = |seq: u64, segment: u64, position: u32, offset: u64| {
        let mut s = Vec::new();
        s.extend_from_slice(&seq.to_le_bytes());
        s.extend_from_slice(&segment.to_le_bytes());
        s.extend_from_slice(&position.to_le_bytes());
        s.extend_from_slice(&offset.to_le_bytes());
        let crc = crc32(&s);
        s.extend_from_slice(&crc.to_le_bytes());
        s
    };
    let offset_file = |v: u64| {
        let mut b = v.to_le_bytes().to_vec();
        let crc = crc32(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    };
    let planted = [
        vec![(
            "recovery-point",
            [slot(u64::MAX, 0, 0, 0), vec![0; 32]].concat(),
        )],
        vec![(
            "recovery-point",
            [slot(1, 100, 9999, 5), slot(2, 0, 1, 1)].concat(),
        )],
        vec![("log-start-offset", offset_file(u64::MAX))],
        vec![("log-start-offset", offset_file(u64::MAX - 1))],
        vec![("log-start-offset", offset_file(150))],
    ];
    for files in planted {
        fs::write(
            open_dir.join(format!("seed-{n:03}")),
            dir_input::encode(0, &files),
        )
        .unwrap();
        n += 1;
    }
    // Batches for the decoder: the first ones of a closed scenario's segments.
    let input = scenario(1, 1, End::Close, None);
    let (_, files) = dir_input::parse(&input);
    let mut m = 0;
    for (name, body) in files {
        if name.ends_with(".log") {
            let mut pos = 0;
            while pos + 4 <= body.len() && m < 16 {
                let len = u32::from_le_bytes(body[pos..pos + 4].try_into().unwrap()) as usize + 4;
                if len < 60 || pos + len > body.len() {
                    break;
                }
                fs::write(decode.join(format!("seed-{m:03}")), &body[pos..pos + len]).unwrap();
                pos += len;
                m += 1;
            }
        }
    }
    println!(
        "wrote {n} open_dir seeds and {m} decode_batch seeds under {}",
        root.display()
    );
}
