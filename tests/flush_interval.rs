//! `FlushPolicy::Interval` makes appends durable from a background thread, and the
//! thread stops with the log (it never keeps a dropped log open).

mod common;

use std::time::{Duration, Instant};

use logqueue::{FlushPolicy, Log, LogConfig, Record};

#[test]
fn interval_flusher_makes_appends_durable() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush: FlushPolicy::Interval(Duration::from_millis(20)),
        background: true,
        ..common::small_config(1 << 20)
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    for i in 0..100 {
        log.append(Record::new(common::value_for(i))).unwrap();
    }
    assert!(
        log.durable_offset() < 100,
        "nothing flushed it synchronously"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.durable_offset() < 100 {
        assert!(Instant::now() < deadline, "the flusher never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(log.stats().flushes >= 1);
    // Dropping the last handle closes the log even though threads were running:
    // the directory can be opened again at once.
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.end_offset(), 100);
    log.close().unwrap();
}
