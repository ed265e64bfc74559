//! Delayed delivery: `send_delayed` (or the `delay.until` header set by a producer
//! appending through `Log`) keeps a record from every queue until its time, also
//! across reopen; other records keep flowing.

mod common;

use std::path::Path;
use std::time::Duration;

use logqueue::{Log, ManualClock, Queue, QueueConfig, Record, DELAY_UNTIL};

const NO_WAIT: Duration = Duration::ZERO;

fn open_log(dir: &Path, clock: &ManualClock) -> Log {
    common::clocked_log(dir, clock, 1 << 20)
}

fn offsets(q: &Queue) -> Vec<(u64, u32)> {
    q.receive(100, NO_WAIT)
        .unwrap()
        .iter()
        .map(|d| (d.receipt.offset, d.attempt))
        .collect()
}

/// Everything deliverable now, over as many receives as it takes (recovered leases
/// come one per receive).
fn drain(q: &Queue) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    loop {
        let got = offsets(q);
        if got.is_empty() {
            return out;
        }
        out.extend(got);
    }
}

#[test]
fn delayed_records_wait_for_every_queue_and_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    {
        let log = open_log(dir.path(), &clock);
        let a = Queue::open(&log, "a", QueueConfig::default()).unwrap();
        let b = Queue::open(&log, "b", QueueConfig::default()).unwrap();
        a.send_delayed(Record::new("in 5 s"), Duration::from_secs(5))
            .unwrap();
        a.send(Record::new("now")).unwrap();
        log.append(Record::new("in 2 s, by header").with_header(DELAY_UNTIL, "3000"))
            .unwrap();
        log.append(Record::new("past").with_header(DELAY_UNTIL, "999"))
            .unwrap();
        for q in [&a, &b] {
            assert_eq!(offsets(q), vec![(1, 1), (3, 1)]);
            let s = q.stats();
            assert_eq!((s.delayed, s.in_flight, s.backlog), (2, 2, 2));
        }
        clock.advance(Duration::from_secs(2));
        assert_eq!(offsets(&a), vec![(2, 1)]);
        assert_eq!(a.stats().delayed, 1);
        // Queue b is closed now; a keeps going.
        drop(b);
        a.flush().unwrap();
    }
    // Across reopen the delays hold (journaled for a, read again from the header for b).
    let log = open_log(dir.path(), &clock);
    let a = Queue::open(&log, "a", QueueConfig::default()).unwrap();
    let b = Queue::open(&log, "b", QueueConfig::default()).unwrap();
    assert_eq!(a.stats().delayed, 1);
    // a's leases of 1, 2 and 3 come back at once (attempt 2); 0 still waits.
    assert_eq!(drain(&a), vec![(1, 2), (2, 2), (3, 2)]);
    // b had read 0..4 (0 and 2 delayed, 1 and 3 leased): recovered leases first, then
    // 2, due by now.
    assert_eq!(drain(&b), vec![(1, 2), (3, 2), (2, 1)]);
    clock.set(5_999);
    assert!(offsets(&a).is_empty());
    clock.set(6_000);
    assert_eq!(offsets(&a), vec![(0, 1)]);
    assert_eq!(offsets(&b), vec![(0, 1)]);
    assert_eq!(a.stats().delayed, 0);
}
