//! Appends without a key to a log whose cleanup policy compacts are
//! `Error::MissingKey` and append nothing; a delete-only log takes them.

mod common;

use common::small_config;
use logqueue::{CleanupPolicy, Error, Log, LogConfig, Record};

#[test]
fn keyless_appends_to_a_compacted_log_fail() {
    for policy in [CleanupPolicy::Compact, CleanupPolicy::CompactAndDelete] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            cleanup: policy,
            ..small_config(4096)
        };
        let log = Log::open(dir.path(), config).unwrap();
        assert!(matches!(
            log.append(Record::new("v")),
            Err(Error::MissingKey)
        ));
        assert!(matches!(
            log.append_batch(vec![Record::keyed("k", "v"), Record::new("no key")]),
            Err(Error::MissingKey)
        ));
        assert_eq!(log.end_offset(), 0, "{policy:?}: nothing appended");
        assert_eq!(log.append(Record::keyed("k", "v")).unwrap(), 0);
        assert_eq!(log.append(Record::tombstone("k")).unwrap(), 1);
        log.close().unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(4096)).unwrap();
    assert_eq!(log.append(Record::new("v")).unwrap(), 0);
}
