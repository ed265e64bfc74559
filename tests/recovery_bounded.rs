//! Recovery after a crash reads only the tail above the recovery point, never the
//! whole log: damage planted in an old, flushed segment goes unseen by open (which
//! did not read it) and is found by `verify()` (which reads everything).

mod common;

use common::{sim_config, value_for};
use logqueue::sim::SimFs;
use logqueue::{Log, ManualClock, Record};

#[test]
fn open_after_a_crash_does_not_read_old_segments() {
    let fs = SimFs::new(7);
    fs.write_file("/db/.keep", b"").unwrap();
    let clock = ManualClock::new(0);
    let log = Log::open("/db/log", sim_config(&fs, &clock, 2048)).unwrap();
    for i in 0..300 {
        log.append(Record::new(value_for(i))).unwrap();
    }
    log.flush().unwrap();
    let segments = log.segments();
    assert!(segments.len() > 10);
    // A few more records above the recovery point, not flushed.
    for i in 300..310 {
        log.append(Record::new(value_for(i))).unwrap();
    }
    // Damage the first segment (fsynced long ago, far below the recovery point).
    let first = format!("/db/log/{:020}.log", segments[0].base_offset);
    fs.corrupt_byte(&first, 100, 0xff).unwrap();
    fs.kill(); // the process dies: no clean shutdown, nothing lost
    drop(log);

    let log = Log::open("/db/log", sim_config(&fs, &clock, 2048)).unwrap();
    assert_eq!(log.end_offset(), 310, "the unflushed tail survives a kill");
    assert_eq!(
        log.stats().corrupt_ranges,
        0,
        "open must not have read the first segment"
    );
    let report = log.verify().unwrap();
    assert_eq!(
        report.corrupt.len(),
        1,
        "verify reads it: {:?}",
        report.corrupt
    );
    assert_eq!(report.corrupt[0].segment, segments[0].base_offset);
    // Everything outside the damaged batch still reads back.
    for i in segments[1].base_offset..310 {
        assert_eq!(log.read(i).unwrap().unwrap().value.unwrap(), value_for(i));
    }
}
