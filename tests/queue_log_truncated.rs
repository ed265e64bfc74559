//! Queue state is never ahead of the log: when the log comes back shorter than the
//! offsets the queue state names (its tail was never made durable), the state above
//! the end is dropped and records appended at the reused offsets are delivered fresh.

mod common;

use std::time::Duration;

use common::{batches_of, forget_everything_durable, segment_files, small_config};
use logqueue::{Log, Queue, QueueConfig, Record};

#[test]
fn reused_offsets_do_not_inherit_acks() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), small_config(1 << 20)).unwrap();
        let q = Queue::open(&log, "q", QueueConfig::default()).unwrap();
        for i in 0..10 {
            q.send(Record::new(format!("old-{i}"))).unwrap();
        }
        let got = q.receive(10, Duration::ZERO).unwrap();
        for d in &got[..8] {
            q.ack(&d.receipt).unwrap();
        }
        // Offsets 8 and 9 stay leased.
        assert_eq!(q.stats().ack_floor, 8);
        drop(q);
        log.close().unwrap();
    }
    // The log loses its last 6 records, as if they were never fsynced.
    forget_everything_durable(dir.path());
    let (_, seg) = segment_files(dir.path()).pop().unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let cut = batches_of(&bytes)[4].start;
    std::fs::write(&seg, &bytes[..cut as usize]).unwrap();

    let log = Log::open(dir.path(), small_config(1 << 20)).unwrap();
    assert_eq!(log.end_offset(), 4);
    let q = Queue::open(&log, "q", QueueConfig::default()).unwrap();
    let s = q.stats();
    assert_eq!((s.ack_floor, s.in_flight, s.backlog), (4, 0, 0));
    for i in 4..10 {
        assert_eq!(q.send(Record::new(format!("new-{i}"))).unwrap(), i);
    }
    let got = q.receive(100, Duration::ZERO).unwrap();
    let seen: Vec<_> = got
        .iter()
        .map(|d| (d.receipt.offset, d.attempt, d.record.value.clone().unwrap()))
        .collect();
    let want: Vec<_> = (4..10u64)
        .map(|i| (i, 1, format!("new-{i}").into_bytes()))
        .collect();
    assert_eq!(seen, want);
}
