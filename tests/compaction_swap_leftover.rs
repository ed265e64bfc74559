//! A cleaner swap file `<base>-<end>.log.swap` left by a crash replaces every segment
//! based in `[base, end)` at open, including a segment whose records were all removed
//! (which the swap file's own batches cannot show), and nothing after `end`.

mod common;

use common::{segment_files, small_config};
use logqueue::{CleanupPolicy, Log, LogConfig, Record};

#[test]
fn a_ranged_swap_replaces_its_whole_range() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        cleanup: CleanupPolicy::Compact,
        ..small_config(1024)
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    for i in 0..60u32 {
        log.append(Record::keyed(
            format!("k{i}"),
            format!("value-{i}-{}", "s".repeat(40)),
        ))
        .unwrap();
    }
    let segs = log.segments();
    assert!(segs.len() >= 4);
    let (b0, b1, b2) = (
        segs[0].base_offset,
        segs[1].base_offset,
        segs[2].base_offset,
    );
    log.close().unwrap();
    // As if a pass merged segments 0 and 1 and removed every record of segment 1: the
    // swap file holds segment 0's batches, then the empty batch the cleaner writes over
    // the removed offsets so the segment still says where it ends.
    let files = segment_files(dir.path());
    let mut seg0 = std::fs::read(&files[0].1).unwrap();
    seg0.extend_from_slice(&empty_batch(b1, b2 - 1));
    std::fs::write(
        dir.path().join(format!("{b0:020}-{b2:020}.log.swap")),
        &seg0,
    )
    .unwrap();
    let log = Log::open(dir.path(), config).unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".swap")), "{names:?}");
    assert!(!names.contains(&format!("{b1:020}.log")), "{names:?}");
    assert!(log.segments().iter().all(|s| s.base_offset != b1));
    for o in b0..b1 {
        assert!(log.read(o).unwrap().is_some());
    }
    for o in b1..b2 {
        assert_eq!(log.read(o).unwrap(), None, "offset {o}");
    }
    for o in b2..60 {
        assert!(log.read(o).unwrap().is_some(), "offset {o}");
    }
    assert_eq!(log.end_offset(), 60);
    assert!(log.verify().unwrap().corrupt.is_empty());
}

/// An empty batch over `base..=last` as docs/format.md §2 lays it out: a bare 60-byte
/// header with attribute bit 4 set and record count 0.
fn empty_batch(base: u64, last: u64) -> Vec<u8> {
    let mut b = vec![0u8; 60];
    b[0..4].copy_from_slice(&56u32.to_le_bytes());
    b[8] = 1; // magic
    b[9] = 0x10; // attributes: empty batch
    b[12..16].copy_from_slice(&u32::try_from(last - base).unwrap().to_le_bytes());
    b[16..24].copy_from_slice(&base.to_le_bytes());
    b[32..40].copy_from_slice(&i64::MIN.to_le_bytes()); // max timestamp
    let crc = crc32fast::hash(&b[8..]);
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    b
}
