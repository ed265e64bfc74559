//! Random operation sequences on a log over the simulated disk, against a model:
//! reads match what was appended, a clean reopen or a process kill loses nothing,
//! and a power loss keeps at least everything flushed and never returns anything
//! that was not appended.
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use logqueue::sim::SimFs;
use logqueue::{FlushPolicy, Log, LogConfig, ManualClock, Offset, Record};

const DIR: &str = "/ops";

#[derive(Arbitrary, Debug)]
enum Op {
    Append { key: Option<u8>, fill: u8, len: u8 },
    AppendBatch { count: u8, fill: u8, len: u8 },
    Flush,
    Read { offset: u16 },
    Reader { from: u16, max: u8 },
    Reopen,
    Crash,
    Kill,
}

#[derive(Arbitrary, Debug)]
struct Input {
    seed: u64,
    ops: Vec<Op>,
}

/// What the log must hold: every appended record by offset (the log starts at 0),
/// and how many of them were flushed.
#[derive(Default)]
struct Model {
    records: Vec<(Option<Vec<u8>>, Vec<u8>)>,
    durable: usize,
}

fn config(fs: &SimFs) -> LogConfig {
    LogConfig {
        fs: Arc::new(fs.clone()),
        clock: Arc::new(ManualClock::new(1_000)),
        background: false,
        flush: FlushPolicy::Manual,
        // Small segments, so sequences roll often.
        segment_bytes: 1024,
        max_batch_bytes: 4096,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

fn open(fs: &SimFs) -> Log {
    Log::open(DIR, config(fs)).expect("open must work on anything a crash leaves behind")
}

fn record(key: Option<u8>, fill: u8, len: u8) -> Record {
    let value = vec![fill; usize::from(len)];
    match key {
        Some(k) => Record::keyed(vec![k], value),
        None => Record::new(value),
    }
}

fn check_read(log: &Log, model: &Model, offset: Offset) {
    let got = log.read(offset).expect("read");
    match model.records.get(offset as usize) {
        Some((key, value)) => {
            let got = got.unwrap_or_else(|| panic!("offset {offset} missing"));
            assert_eq!(got.offset, offset);
            assert_eq!(got.key.as_ref(), key.as_ref(), "key at {offset}");
            assert_eq!(got.value.as_ref(), Some(value), "value at {offset}");
        }
        None => assert!(got.is_none(), "offset {offset} past the end was read"),
    }
}

/// After a reopen: the log is exactly the model (nothing lost, nothing invented).
fn check_all(log: &Log, model: &Model) {
    assert_eq!(log.start_offset(), 0);
    assert_eq!(log.end_offset(), model.records.len() as Offset);
    assert_eq!(log.durable_offset(), log.end_offset());
    let got: Vec<_> = log
        .reader(0)
        .expect("reader")
        .collect::<Result<_, _>>()
        .expect("reading the whole log");
    assert_eq!(got.len(), model.records.len());
    for (r, (key, value)) in got.iter().zip(&model.records) {
        assert_eq!(r.key.as_ref(), key.as_ref(), "key at {}", r.offset);
        assert_eq!(r.value.as_ref(), Some(value), "value at {}", r.offset);
    }
    let report = log.verify().expect("verify");
    assert!(
        report.corrupt.is_empty(),
        "corruption after reopen: {report:?}"
    );
}

fuzz_target!(|input: Input| {
    let fs = SimFs::new(input.seed);
    let mut log = open(&fs);
    let mut model = Model::default();
    for op in input.ops.into_iter().take(64) {
        match op {
            Op::Append { key, fill, len } => {
                let offset = log.append(record(key, fill, len)).expect("append");
                assert_eq!(offset, model.records.len() as Offset);
                model
                    .records
                    .push((key.map(|k| vec![k]), vec![fill; usize::from(len)]));
            }
            Op::AppendBatch { count, fill, len } => {
                let count = usize::from(count % 8) + 1;
                let records: Vec<_> = (0..count)
                    .map(|i| record(None, fill.wrapping_add(i as u8), len))
                    .collect();
                let range = log.append_batch(records).expect("append_batch");
                assert_eq!(range.start, model.records.len() as Offset);
                assert_eq!(range.end - range.start, count as Offset);
                for i in 0..count {
                    model
                        .records
                        .push((None, vec![fill.wrapping_add(i as u8); usize::from(len)]));
                }
            }
            Op::Flush => {
                log.flush().expect("flush");
                model.durable = model.records.len();
                assert_eq!(log.durable_offset(), model.durable as Offset);
            }
            Op::Read { offset } => check_read(&log, &model, Offset::from(offset)),
            Op::Reader { from, max } => {
                let from = Offset::from(from) % (model.records.len() as Offset + 2);
                let got: Vec<_> = log
                    .reader(from)
                    .expect("reader")
                    .take(usize::from(max))
                    .collect::<Result<_, _>>()
                    .expect("reader");
                let want = model.records.len().saturating_sub(from as usize);
                assert_eq!(got.len(), want.min(usize::from(max)));
                for (i, r) in got.iter().enumerate() {
                    assert_eq!(r.offset, from + i as Offset);
                    assert_eq!(r.value.as_ref(), Some(&model.records[r.offset as usize].1));
                }
            }
            Op::Reopen => {
                log.close().expect("close");
                log = open(&fs);
                model.durable = model.records.len();
                check_all(&log, &model);
            }
            Op::Kill => {
                fs.kill();
                drop(log);
                log = open(&fs);
                model.durable = model.records.len();
                check_all(&log, &model);
            }
            Op::Crash => {
                fs.crash();
                drop(log);
                log = open(&fs);
                let end = log.end_offset() as usize;
                assert!(
                    end >= model.durable && end <= model.records.len(),
                    "after a crash the log ends at {end}, flushed {}, appended {}",
                    model.durable,
                    model.records.len()
                );
                model.records.truncate(end);
                model.durable = end;
                check_all(&log, &model);
            }
        }
    }
    let _ = log.close();
});
