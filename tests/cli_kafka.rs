//! `logqueue mirror` and `logqueue import-kafka` against a real broker
//! (`KAFKA_BROKERS`; skipped when unset), run as a user runs them.
#![cfg(all(feature = "kafka", feature = "cli"))]

mod kafka_support;

use std::process::{Command, Output};

use kafka_support::{brokers, check_mirrored, read_all, unique_topic};
use logqueue::{Log, LogConfig, Record, StoredRecord};

fn logqueue(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_logqueue"))
        .args(args)
        .output()
        .expect("run logqueue")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}, stderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn mirror_then_import_kafka_round_trip_and_rerun_imports_nothing() {
    let Some(brokers) = brokers("cli_kafka") else {
        return;
    };
    let topic = unique_topic("cli");
    let source = tempfile::tempdir().unwrap();
    let records: Vec<StoredRecord> = {
        let log = Log::open(source.path(), LogConfig::default()).unwrap();
        for i in 0..500u64 {
            let r = if i.is_multiple_of(10) {
                Record::tombstone(format!("k{}", i % 4))
            } else {
                Record::keyed(format!("k{}", i % 4), format!("v{i}")).with_header("h", "x")
            };
            log.append(r).unwrap();
        }
        let all = log.reader(0).unwrap().map(|r| r.unwrap()).collect();
        log.close().unwrap();
        all
    };
    let dir = source.path().to_str().unwrap();
    let out = stdout(&logqueue(&[
        "mirror",
        dir,
        "--brokers",
        &brokers,
        "--topic",
        &topic,
        "--partitions",
        "3",
    ]));
    assert!(out.contains("mirrored 500 records"), "{out}");
    assert!(out.contains("lag 0"), "{out}");
    let msgs = read_all(&brokers, &topic);
    assert_eq!(check_mirrored(&msgs, &records), 0);
    // A second run finds nothing new: the cursor is at the end.
    let out = stdout(&logqueue(&[
        "mirror",
        dir,
        "--brokers",
        &brokers,
        "--topic",
        &topic,
    ]));
    assert!(out.contains("mirrored 0 records"), "{out}");

    let target = tempfile::tempdir().unwrap();
    let tdir = target.path().to_str().unwrap();
    let group = unique_topic("group");
    let import = [
        "import-kafka",
        tdir,
        "--brokers",
        &brokers,
        "--topic",
        &topic,
        "--group",
        &group,
    ];
    let out = stdout(&logqueue(&import));
    assert!(out.contains("imported 500 records"), "{out}");
    // Resumes from the committed offsets: nothing again.
    let out = stdout(&logqueue(&import));
    assert!(out.contains("imported 0 records"), "{out}");
    let log = Log::open_read_only(target.path()).unwrap();
    let imported: Vec<StoredRecord> = log.reader(0).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(imported.len(), 500);
    let mut offsets: Vec<u64> = imported
        .iter()
        .map(|r| {
            std::str::from_utf8(r.header("logqueue.offset").unwrap())
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (0..500).collect::<Vec<_>>());
}
