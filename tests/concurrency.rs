//! Concurrent appenders get dense, unique offsets; tailing readers on other threads
//! see every record in order, woken by appends, while the writer keeps going.

mod common;

use std::collections::BTreeMap;
use std::thread;
use std::time::Duration;

use common::small_config;
use logqueue::{Log, Record};

#[test]
fn appenders_and_tailing_readers() {
    const WRITERS: u64 = 4;
    const PER_WRITER: u64 = 2_000;
    const TOTAL: u64 = WRITERS * PER_WRITER;
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(16 * 1024)).unwrap();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let mut reader = log.reader(0).unwrap();
            thread::spawn(move || {
                let mut seen = Vec::with_capacity(TOTAL as usize);
                while (seen.len() as u64) < TOTAL {
                    match reader.next_blocking(Duration::from_secs(10)).unwrap() {
                        Some(r) => seen.push((r.offset, r.value.unwrap())),
                        None => panic!("no record for 10 s after {}", seen.len()),
                    }
                }
                seen
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let log = log.clone();
            thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..PER_WRITER {
                    let value = format!("w{w}-{i}").into_bytes();
                    let offset = if i % 10 == 0 {
                        log.append_batch(vec![Record::new(value.clone())])
                            .unwrap()
                            .start
                    } else {
                        log.append(Record::new(value.clone())).unwrap()
                    };
                    mine.push((offset, value));
                }
                mine
            })
        })
        .collect();
    let mut written = BTreeMap::new();
    for w in writers {
        for (offset, value) in w.join().unwrap() {
            assert!(
                written.insert(offset, value).is_none(),
                "offset {offset} twice"
            );
        }
    }
    assert_eq!(written.len() as u64, TOTAL);
    assert_eq!(
        *written.keys().next_back().unwrap(),
        TOTAL - 1,
        "offsets are dense"
    );
    for r in readers {
        let seen = r.join().unwrap();
        for (i, (offset, value)) in seen.iter().enumerate() {
            assert_eq!(*offset, i as u64);
            assert_eq!(&written[offset], value);
        }
    }
}
