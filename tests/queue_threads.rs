//! Queue with threads: competing consumers get each record exactly once, and a blocking
//! receive is woken by a send (and by an ack when max_in_flight held it back).

mod common;

use std::time::{Duration, Instant};

use logqueue::{Log, ManualClock, Queue, QueueConfig, Record};

fn setup(config: QueueConfig) -> (tempfile::TempDir, Log, Queue) {
    let dir = tempfile::tempdir().unwrap();
    let log = common::clocked_log(dir.path(), &ManualClock::new(0), 1 << 20);
    let q = Queue::open(&log, "q", config).unwrap();
    (dir, log, q)
}

#[test]
fn competing_consumers_get_each_record_exactly_once() {
    let (_d, _log, q) = setup(QueueConfig::default());
    const N: u64 = 4000;
    let producer = {
        let q = q.clone();
        std::thread::spawn(move || {
            for i in 0..N {
                q.send(Record::new(i.to_le_bytes().to_vec())).unwrap();
            }
        })
    };
    let consumers: Vec<_> = (0..4)
        .map(|t| {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                loop {
                    let got = q.receive(1 + t * 7, Duration::from_millis(300)).unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    for d in got {
                        let v = u64::from_le_bytes(d.record.value.unwrap().try_into().unwrap());
                        assert_eq!(v, d.receipt.offset);
                        assert_eq!(d.attempt, 1);
                        q.ack(&d.receipt).unwrap();
                        mine.push(v);
                    }
                }
            })
        })
        .collect();
    producer.join().unwrap();
    let mut all: Vec<u64> = consumers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..N).collect::<Vec<_>>());
    let s = q.stats();
    assert_eq!((s.ack_floor, s.acked_total, s.in_flight), (N, N, 0));
}

#[test]
fn blocking_receive_is_woken_by_send() {
    let (_d, _log, q) = setup(QueueConfig::default());
    let waiter = {
        let q = q.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let got = q.receive(10, Duration::from_secs(20)).unwrap();
            (got.len(), start.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    q.send(Record::new("wake")).unwrap();
    let (n, took) = waiter.join().unwrap();
    assert_eq!(n, 1);
    assert!(took < Duration::from_secs(5), "woken after {took:?}");
    // With nothing to come, receive returns empty after its wait.
    let start = Instant::now();
    assert!(q.receive(1, Duration::from_millis(50)).unwrap().is_empty());
    assert!(start.elapsed() >= Duration::from_millis(50));
}

#[test]
fn blocking_receive_at_the_cap_is_woken_by_ack() {
    let (_d, _log, q) = setup(QueueConfig {
        max_in_flight: 1,
        ..QueueConfig::default()
    });
    q.send(Record::new("a")).unwrap();
    q.send(Record::new("b")).unwrap();
    let a = q.receive(1, Duration::ZERO).unwrap();
    let waiter = {
        let q = q.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let got = q.receive(10, Duration::from_secs(20)).unwrap();
            (got[0].receipt.offset, start.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    q.ack(&a[0].receipt).unwrap();
    let (offset, took) = waiter.join().unwrap();
    assert_eq!(offset, 1);
    assert!(took < Duration::from_secs(5), "woken after {took:?}");
}

#[test]
fn queue_handles_are_clone_send_sync() {
    fn check<T: Clone + Send + Sync + 'static>() {}
    check::<Queue>();
    check::<logqueue::Delivery>();
    check::<logqueue::Receipt>();
}
