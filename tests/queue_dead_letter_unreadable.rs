//! Dead-lettering a record that can no longer be copied: the queue never records a
//! dead letter it did not write. An explicit `dead_letter` of a damaged record is an
//! error that changes nothing; a record that runs out of deliveries and then reads
//! as damaged is settled as corrupt (counted), not as a dead letter.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use common::small_config;
use logqueue::{Error, Log, Queue, QueueConfig, Record};

const NO_WAIT: Duration = Duration::ZERO;

/// Overwrites 4 bytes of the first batch of the first segment (its header, under the
/// CRC): the record at offset 0 reads as damaged from then on.
fn damage_first_record(dir: &Path) {
    let segment = dir.join(format!("{:020}.log", 0));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .unwrap();
    f.seek(SeekFrom::Start(20)).unwrap();
    f.write_all(&[0xFF; 4]).unwrap();
}

/// Dead-lettering a record whose bytes were damaged after it was delivered is an
/// error that changes nothing (it used to count a dead letter it had not written):
/// the lease stands and can still be acked.
#[test]
fn dead_lettering_a_damaged_record_fails_and_keeps_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(1 << 20)).unwrap();
    let q = Queue::open(&log, "q", QueueConfig::default()).unwrap();
    q.send(Record::new("poison")).unwrap();
    let d = q.receive(1, NO_WAIT).unwrap();
    let segment = dir.path().join(format!("{:020}.log", 0));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    f.seek(SeekFrom::Start(20)).unwrap();
    f.write_all(&[0xFF; 4]).unwrap();
    drop(f);
    let err = q.dead_letter(&d[0].receipt, "bad").unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert_eq!(q.dead_letters().end_offset(), 0);
    assert_eq!(q.stats().dead_lettered_total, 0);
    q.ack(&d[0].receipt).unwrap();
    assert_eq!(q.stats().ack_floor, 1);
    q.close().unwrap();
}

/// A record out of deliveries whose bytes were damaged since its last delivery is
/// settled as corrupt (it used to be settled silently as gone): no letter, not
/// counted as dead-lettered, counted in `corrupt_skipped`, never delivered again.
#[test]
fn a_damaged_record_out_of_deliveries_is_settled_as_corrupt_not_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(1 << 20)).unwrap();
    let config = QueueConfig {
        max_deliveries: Some(1),
        ..QueueConfig::default()
    };
    let q = Queue::open(&log, "q", config).unwrap();
    q.send(Record::new("poison")).unwrap();
    q.send(Record::new("fine")).unwrap();
    let d = q.receive(1, NO_WAIT).unwrap();
    assert_eq!(d[0].receipt.offset, 0);
    q.nack(&d[0].receipt, Duration::ZERO).unwrap();
    damage_first_record(dir.path());
    // Offset 0 is due and out of deliveries: the queue would dead-letter it.
    let got = q.receive(10, NO_WAIT).unwrap();
    let offsets: Vec<u64> = got.iter().map(|d| d.receipt.offset).collect();
    assert_eq!(offsets, [1]);
    assert_eq!(q.dead_letters().end_offset(), 0);
    let s = q.stats();
    assert_eq!((s.dead_lettered_total, s.corrupt_skipped), (0, 1));
    q.ack(&got[0].receipt).unwrap();
    assert_eq!(q.stats().ack_floor, 2);
    q.close().unwrap();
}
