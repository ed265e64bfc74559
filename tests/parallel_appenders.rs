//! Appenders in parallel (issue 10, item 3): offsets and space are reserved under
//! the append lock, the batch is encoded outside it and published in order. These
//! tests check what that must keep: dense offsets in each thread's own order, every
//! returned offset reading back its record, a tailing reader that never sees a hole
//! or a record out of order (also across rolls and flushes, which wait for the
//! appends in flight), and a failed write that hangs no other appender.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::{sim_config, small_config, Rng};
use logqueue::sim::{FaultKind, FaultMode, SimFs};
use logqueue::{Error, Log, ManualClock, Offset, Record, RecordRef};

/// The value thread `t` writes in its `i`-th append (record `j` of the batch).
fn value(t: u64, i: u64, j: u64) -> Vec<u8> {
    let pad = "p".repeat(((t * 31 + i * 7 + j) % 200) as usize);
    format!("t{t}-i{i}-j{j}-{pad}").into_bytes()
}

/// One thread's appends: single records, borrowed slices and batches of 1-5, as the
/// seeded `rng` decides; returns (offset, value) for each record, in call order.
fn appender(log: &Log, t: u64, appends: u64, mut rng: Rng) -> Vec<(Offset, Vec<u8>)> {
    let mut mine = Vec::new();
    for i in 0..appends {
        match rng.below(3) {
            0 => {
                let v = value(t, i, 0);
                let o = log.append(Record::new(v.clone())).unwrap();
                mine.push((o, v));
            }
            1 => {
                let v = value(t, i, 0);
                let o = log.append_slice(None, &v).unwrap();
                mine.push((o, v));
            }
            _ => {
                let n = 1 + rng.below(5);
                let values: Vec<Vec<u8>> = (0..n).map(|j| value(t, i, j)).collect();
                let refs: Vec<RecordRef<'_>> = values.iter().map(|v| RecordRef::new(v)).collect();
                let range = log.append_batch_ref(&refs).unwrap();
                assert_eq!(range.end - range.start, n);
                mine.extend(range.zip(values));
            }
        }
    }
    mine
}

/// What one appending thread returns: (offset, value) per record, in call order.
type ThreadRecords = Vec<(Offset, Vec<u8>)>;

/// `threads` threads each running [`appender`] (thread `t` from its own stream of
/// `seed`, starting `stream_offset` streams in) after they all meet `start`.
fn spawn_appenders(
    log: &Log,
    threads: u64,
    appends: u64,
    seed: u64,
    stream_offset: u64,
    start: &Arc<Barrier>,
) -> Vec<thread::JoinHandle<ThreadRecords>> {
    (0..threads)
        .map(|t| {
            let (log, start) = (log.clone(), Arc::clone(start));
            let rng = Rng::new(seed ^ (t + stream_offset).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            thread::spawn(move || {
                start.wait();
                appender(&log, t, appends, rng)
            })
        })
        .collect()
}

fn seed() -> u64 {
    let seed = common::seed_from_env_or_clock();
    println!("LOGQUEUE_SEED={seed}");
    seed
}

/// After a reopen (`when` names the round and the crash): every `(offset, value)`
/// an append returned or a flush covered is there with its value, the log is dense
/// from 0 to its end, and it verifies clean.
fn check_reopened(log: &Log, kept: &[(Offset, Vec<u8>)], when: &str) {
    let end = log.end_offset();
    for (o, v) in kept {
        assert!(*o < end, "{when}: offset {o} lost (end {end})");
        let r = log.read(*o).unwrap().unwrap();
        assert_eq!(r.value.as_deref(), Some(&v[..]), "{when}: offset {o}");
    }
    let mut n = 0u64;
    for r in log.reader(0).unwrap() {
        assert_eq!(r.unwrap().offset, n, "{when}: dense");
        n += 1;
    }
    assert_eq!(n, end, "{when}");
    assert!(log.verify().unwrap().corrupt.is_empty(), "{when}");
}

/// Checks every thread's records: offsets increase in each thread's call order,
/// together they are dense from `from`, and each reads back its value. Returns
/// them by offset.
fn check_dense(
    log: &Log,
    from: Offset,
    per_thread: Vec<Vec<(Offset, Vec<u8>)>>,
) -> BTreeMap<Offset, Vec<u8>> {
    let mut all = BTreeMap::new();
    for (t, mine) in per_thread.into_iter().enumerate() {
        for w in mine.windows(2) {
            assert!(
                w[0].0 < w[1].0,
                "thread {t}: offsets out of its call order: {} then {}",
                w[0].0,
                w[1].0
            );
        }
        for (o, v) in mine {
            assert!(all.insert(o, v).is_none(), "offset {o} returned twice");
        }
    }
    let n = all.len() as u64;
    assert_eq!(all.keys().next().copied(), Some(from));
    assert_eq!(
        all.keys().next_back().copied(),
        Some(from + n - 1),
        "offsets are dense"
    );
    assert_eq!(log.end_offset(), from + n);
    for (o, v) in &all {
        let r = log
            .read(*o)
            .unwrap()
            .unwrap_or_else(|| panic!("offset {o} is gone"));
        assert_eq!(r.value.as_deref(), Some(&v[..]), "offset {o}");
    }
    all
}

/// N threads appending (single records, slices, borrowed batches) through many
/// rolls, with flushes and `stats` meanwhile: dense offsets, each thread's in its
/// own order, each reading back its record, also after a reopen.
#[test]
fn parallel_appenders_get_dense_ordered_offsets() {
    const THREADS: u64 = 4;
    const APPENDS: u64 = 1_500;
    let seed = seed();
    let dir = tempfile::tempdir().unwrap();
    // Small segments: appends in flight meet many rolls (which wait for them).
    let log = Log::open(dir.path(), small_config(32 << 10)).unwrap();
    let start = Arc::new(Barrier::new(THREADS as usize + 1));
    let done = Arc::new(AtomicBool::new(false));
    let flusher = {
        let (log, done) = (log.clone(), Arc::clone(&done));
        thread::spawn(move || {
            let mut rounds = 0u64;
            while !done.load(Ordering::Acquire) {
                log.flush().unwrap();
                let stats = log.stats();
                assert!(stats.end_offset <= log.end_offset());
                assert!(log.durable_offset() <= log.end_offset());
                rounds += 1;
                thread::sleep(Duration::from_micros(300));
            }
            rounds
        })
    };
    let threads = spawn_appenders(&log, THREADS, APPENDS, seed, 1, &start);
    start.wait();
    let per_thread: Vec<_> = threads.into_iter().map(|h| h.join().unwrap()).collect();
    done.store(true, Ordering::Release);
    assert!(flusher.join().unwrap() > 0);
    assert!(log.stats().rolls > 10, "the appends rolled");
    let all = check_dense(&log, 0, per_thread);
    log.flush().unwrap();
    assert_eq!(log.durable_offset(), log.end_offset());
    log.close().unwrap();
    let log = Log::open(dir.path(), small_config(32 << 10)).unwrap();
    assert_eq!(log.end_offset(), all.len() as u64);
    for (i, r) in log.reader(0).unwrap().enumerate() {
        let r = r.unwrap();
        assert_eq!(r.offset, i as u64);
        assert_eq!(r.value.as_deref(), Some(&all[&r.offset][..]));
    }
    assert!(log.verify().unwrap().corrupt.is_empty());
}

/// A reader tailing the log while threads append in parallel never sees a hole or a
/// record out of order: whenever the end offset says `e`, every offset below `e`
/// reads back, and the records it sees are those the appenders were given.
#[test]
fn a_tailing_reader_never_sees_a_hole() {
    const THREADS: u64 = 3;
    const APPENDS: u64 = 1_500;
    let seed = seed();
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(64 << 10)).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    // A blocking reader: consecutive offsets, nothing skipped.
    let tail = {
        let mut reader = log.reader(0).unwrap();
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let mut seen: Vec<(Offset, Vec<u8>)> = Vec::new();
            loop {
                match reader.next_blocking(Duration::from_millis(20)).unwrap() {
                    Some(r) => {
                        assert_eq!(
                            r.offset,
                            seen.len() as u64,
                            "a hole or a record out of order"
                        );
                        seen.push((r.offset, r.value.unwrap()));
                    }
                    None if done.load(Ordering::Acquire) => return seen,
                    None => {}
                }
            }
        })
    };
    // A poller: reads everything below the end offset it just loaded.
    let poll = {
        let (log, done) = (log.clone(), Arc::clone(&done));
        thread::spawn(move || {
            let mut checked = 0u64;
            let mut rounds = 0u64;
            while !done.load(Ordering::Acquire) {
                let end = log.end_offset();
                for o in checked..end {
                    assert!(
                        log.read(o).unwrap().is_some(),
                        "offset {o} below the end offset {end} is missing"
                    );
                }
                checked = end;
                rounds += 1;
            }
            rounds
        })
    };
    let threads = spawn_appenders(&log, THREADS, APPENDS, seed, 7, &Arc::new(Barrier::new(1)));
    let per_thread: Vec<_> = threads.into_iter().map(|h| h.join().unwrap()).collect();
    let all = check_dense(&log, 0, per_thread);
    done.store(true, Ordering::Release);
    assert!(poll.join().unwrap() > 0);
    let seen = tail.join().unwrap();
    assert_eq!(seen.len(), all.len(), "the tailing reader saw every record");
    for (o, v) in seen {
        assert_eq!(
            all[&o], v,
            "the reader's record at {o} is the one appended there"
        );
    }
    log.close().unwrap();
}

/// A write that fails (an I/O error on the mapping's store, SimFs) in the middle of
/// parallel appends poisons the log, and no appender hangs: each thread stops with
/// the write's own error or `Poisoned`. Every append that returned is in the log,
/// dense, after the process dies (SimFs kill) and the log is reopened.
#[test]
fn a_failed_write_hangs_no_other_appender() {
    const THREADS: u64 = 4;
    let seed = seed();
    let mut rng = Rng::new(seed);
    for round in 0..20 {
        let fs = SimFs::new(seed.wrapping_add(round));
        let clock = ManualClock::new(1_000_000);
        let log = Log::open("/log", sim_config(&fs, &clock, 16 << 10)).unwrap();
        let start = Arc::new(Barrier::new(THREADS as usize + 1));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (log, start) = (log.clone(), Arc::clone(&start));
                let (tx, rx) = std::sync::mpsc::channel();
                thread::spawn(move || {
                    start.wait();
                    let mut mine = Vec::new();
                    let err = loop {
                        let v = value(t, mine.len() as u64, 0);
                        match log.append(Record::new(v.clone())) {
                            Ok(o) => mine.push((o, v)),
                            Err(e) => break e,
                        }
                    };
                    let _ = tx.send((mine, err));
                });
                rx
            })
            .collect();
        start.wait();
        // Some appends first, then every counted operation fails from then on (the
        // first to fail is a store into the mapping, mostly: each append is one; a
        // failure in preparing the next segment ahead is no append's failure, so
        // the fault stays on until an append meets it).
        fs.fail_after(1 + rng.below(400), FaultKind::Eio, FaultMode::Sticky);
        let mut per_thread = Vec::new();
        for rx in threads {
            let (mine, err) = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("an appender hangs after a failed write");
            // The write's own error, or `Poisoned` (an append that found the log
            // poisoned, or waited behind the failed one).
            assert!(
                matches!(err, Error::Io { .. } | Error::Poisoned { .. }),
                "round {round}: unexpected error {err}"
            );
            per_thread.push(mine);
        }
        fs.clear_faults();
        assert!(
            matches!(
                log.append(Record::new("after")),
                Err(Error::Poisoned { .. })
            ),
            "round {round}: the failure poisoned the log"
        );
        let returned: Vec<(Offset, Vec<u8>)> = per_thread.iter().flatten().cloned().collect();
        fs.kill();
        drop(log);
        let log = Log::open("/log", sim_config(&fs, &clock, 16 << 10)).unwrap();
        check_reopened(&log, &returned, &format!("round {round}, after a kill"));
        log.close().unwrap();
    }
}

/// Flushes from the appending threads themselves while others append in parallel,
/// then a power loss (SimFs): every record a returned flush covered is there after
/// reopening, the log is dense and opens without `Corrupt`. A flush round takes the
/// reserved end as its recovery point and waits for the appends in flight to
/// publish up to it before it fsyncs: a point naming bytes not yet written would
/// make recovery find damage inside durable data, or lose covered records.
#[test]
fn flushes_during_parallel_appends_survive_power_loss() {
    const THREADS: u64 = 3;
    const APPENDS: u64 = 300;
    let seed = seed();
    for round in 0..10 {
        let fs = SimFs::new(seed.wrapping_add(round));
        let clock = ManualClock::new(1_000_000);
        let log = Log::open("/log", sim_config(&fs, &clock, 16 << 10)).unwrap();
        let start = Arc::new(Barrier::new(THREADS as usize));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (log, start) = (log.clone(), Arc::clone(&start));
                thread::spawn(move || {
                    start.wait();
                    let mut mine = Vec::new();
                    let mut durable = 0;
                    for i in 0..APPENDS {
                        let v = value(t, i, 0);
                        mine.push((log.append(Record::new(v.clone())).unwrap(), v));
                        if i % 7 == t {
                            log.flush().unwrap();
                            durable = mine.len();
                        }
                    }
                    mine.truncate(durable);
                    mine
                })
            })
            .collect();
        let covered: Vec<(Offset, Vec<u8>)> = threads
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        fs.crash();
        drop(log);
        let log = Log::open("/log", sim_config(&fs, &clock, 16 << 10))
            .unwrap_or_else(|e| panic!("round {round}: reopen after power loss: {e}"));
        check_reopened(
            &log,
            &covered,
            &format!("round {round}, after a power loss"),
        );
        log.close().unwrap();
    }
}

/// Idempotent appends (checked and published wholly under the append lock, after
/// waiting for the plain appends in flight, without waking anyone when they pass
/// their turn) racing plain appenders across rolls: no append hangs, offsets stay
/// dense, every record reads back, each id is in the log exactly once (ids repeat
/// across the idempotent threads), and a repeat returns the original's offset.
#[test]
fn idempotent_and_plain_appenders_race_without_holes_or_duplicates() {
    const PLAIN: u64 = 2;
    const IDEMPOTENT: u64 = 2;
    const APPENDS: u64 = 1_000;
    let seed = seed();
    let dir = tempfile::tempdir().unwrap();
    let config = logqueue::LogConfig {
        dedup: Some(logqueue::DedupConfig {
            window: Duration::from_secs(3600),
            max_ids: 100_000,
        }),
        ..small_config(32 << 10)
    };
    let log = Log::open(dir.path(), config).unwrap();
    let start = Arc::new(Barrier::new((PLAIN + IDEMPOTENT) as usize + 1));
    let plain = spawn_appenders(&log, PLAIN, APPENDS, seed, 1, &start);
    // Both idempotent threads append the ids 0..APPENDS, in different orders.
    let idempotent: Vec<_> = (0..IDEMPOTENT)
        .map(|t| {
            let (log, start) = (log.clone(), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                let mut got = Vec::new();
                for i in 0..APPENDS {
                    let id = if t == 0 { i } else { APPENDS - 1 - i };
                    let key = format!("id-{id}");
                    let a = log
                        .append_idempotent(key.as_bytes(), Record::new(key.clone()))
                        .unwrap();
                    got.push((id, a));
                }
                got
            })
        })
        .collect();
    start.wait();
    let per_thread: Vec<_> = plain.into_iter().map(|h| h.join().unwrap()).collect();
    let mut by_id: BTreeMap<u64, Vec<logqueue::Appended>> = BTreeMap::new();
    for h in idempotent {
        for (id, a) in h.join().unwrap() {
            by_id.entry(id).or_default().push(a);
        }
    }
    let plain_offsets: BTreeMap<Offset, Vec<u8>> = per_thread.iter().flatten().cloned().collect();
    // Each id: one new append and one duplicate naming the same offset.
    let mut idempotent_offsets = BTreeMap::new();
    for (id, got) in &by_id {
        assert_eq!(got.len(), 2, "id {id}");
        let new: Vec<_> = got.iter().filter(|a| !a.duplicate).collect();
        assert_eq!(new.len(), 1, "id {id} appended {} times", new.len());
        assert!(
            got.iter().all(|a| a.offset == new[0].offset),
            "id {id}: {got:?}"
        );
        let v = format!("id-{id}").into_bytes();
        assert!(idempotent_offsets.insert(new[0].offset, v).is_none());
    }
    // Together, dense from 0, and each offset reads back what its append wrote.
    let end = log.end_offset();
    assert_eq!(end as usize, plain_offsets.len() + idempotent_offsets.len());
    for o in 0..end {
        let want = plain_offsets
            .get(&o)
            .or_else(|| idempotent_offsets.get(&o))
            .unwrap_or_else(|| panic!("offset {o} was returned to nobody"));
        let r = log.read(o).unwrap().unwrap();
        assert_eq!(r.value.as_deref(), Some(&want[..]), "offset {o}");
    }
    log.close().unwrap();
}
