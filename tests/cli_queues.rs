//! The `logqueue` binary's queue commands, run as a user runs them: `queues`, `stats`
//! and `dlq list` beside a queue live in another process (correct, no file changed),
//! and `dlq redrive [--reason]` / `dlq purge` (each letter moved at most once).

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::live_writer::{digest_dir, run_if_child, LiveWriter};
use common::value_for;
use logqueue::{Log, LogConfig, Queue, QueueConfig, Record, REDRIVE_FROM};
use serde_json::Value;

#[test]
fn live_writer_child() {
    run_if_child();
}

fn logqueue(args: &[&str], dir: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_logqueue"));
    cmd.arg(args[0]).arg(dir).args(&args[1..]);
    cmd.output().expect("run logqueue")
}

fn b64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Runs `logqueue dlq DIR QUEUE ARGS... --format json`; the exit status and the
/// JSON document printed (Null when none).
fn dlq(dir: &Path, queue: &str, args: &[&str]) -> (Option<i32>, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_logqueue"))
        .arg("dlq")
        .arg(dir)
        .arg(queue)
        .args(args)
        .args(["--format", "json"])
        .output()
        .unwrap();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), doc)
}

#[test]
fn dlq_redrive_with_a_reason_moves_only_matching_letters_each_once_and_purge_empties() {
    dlq_redrive_and_purge(QueueConfig {
        protect_unacked: false,
        ..QueueConfig::default()
    });
}

/// The same on a queue of three lanes (blocks of 2 offsets: the letters come from
/// every lane): the tool opens it with the lanes it was created with.
#[test]
fn dlq_redrive_and_purge_work_on_a_queue_of_lanes() {
    dlq_redrive_and_purge(QueueConfig {
        protect_unacked: false,
        lanes: 3,
        lane_block: 2,
        ..QueueConfig::default()
    });
}

fn dlq_redrive_and_purge(config: QueueConfig) {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let q = Queue::open(&log, "jobs", config.clone()).unwrap();
        for i in 0..6 {
            q.send(Record::new(format!("job {i}")).with_header("n", i.to_string()))
                .unwrap();
        }
        let mut got = Vec::new();
        while got.len() < 6 {
            got.extend(q.receive(6, Duration::ZERO).unwrap());
        }
        got.sort_by_key(|d| d.receipt.offset);
        let reasons = [
            "timeout",
            "bad input",
            "timeout",
            "bad input",
            "timeout",
            "other",
        ];
        for (d, reason) in got.iter().zip(reasons) {
            q.dead_letter(&d.receipt, reason).unwrap();
        }
        q.close().unwrap();
        log.close().unwrap();
    }
    let list = logqueue(&["dlq"], dir.path());
    assert!(!list.status.success(), "dlq needs a queue and an action");
    let listed = Command::new(env!("CARGO_BIN_EXE_logqueue"))
        .args(["dlq"])
        .arg(dir.path())
        .args(["jobs", "list", "--reason", "timeout", "--format", "json"])
        .output()
        .unwrap();
    assert!(listed.status.success());
    assert_eq!(String::from_utf8_lossy(&listed.stdout).lines().count(), 3);

    let redriven = |args: &[&str]| {
        let (code, doc) = dlq(dir.path(), "jobs", args);
        assert_eq!(code, Some(0), "{args:?}: {doc}");
        doc["redriven"].as_u64().unwrap()
    };
    assert_eq!(
        redriven(&["redrive", "--reason", "timeout", "--max", "2"]),
        2
    );
    assert_eq!(redriven(&["redrive", "--reason", "timeout"]), 1);
    assert_eq!(
        redriven(&["redrive", "--reason", "timeout"]),
        0,
        "none twice"
    );
    // Only the timeouts went back, each once.
    let copies = |log: &Log| -> Vec<String> {
        let mut ns: Vec<String> = log
            .reader(6)
            .unwrap()
            .map(Result::unwrap)
            .map(|r| {
                assert!(r.header(REDRIVE_FROM).is_some());
                assert!(r.headers.iter().all(|h| !h.key.starts_with("dlq.")));
                String::from_utf8(r.header("n").unwrap().to_vec()).unwrap()
            })
            .collect();
        ns.sort();
        ns
    };
    assert_eq!(
        copies(&Log::open_read_only(dir.path()).unwrap()),
        ["0", "2", "4"]
    );
    // A plain redrive later moves the rest, and none of the timeouts again.
    assert_eq!(redriven(&["redrive"]), 3);
    assert_eq!(redriven(&["redrive"]), 0);
    let view = Log::open_read_only(dir.path()).unwrap();
    assert_eq!(copies(&view), ["0", "1", "2", "3", "4", "5"]);
    // The queue's cursor kept the owner's setting (protect_unacked: false).
    let cursors = view.cursors().unwrap();
    let own = cursors.iter().find(|c| c.name == "queue.jobs").unwrap();
    assert!(!own.protect, "{cursors:?}");
    assert_eq!(cursors.len(), config.lanes as usize, "{cursors:?}");
    assert!(cursors.iter().all(|c| !c.protect), "{cursors:?}");
    drop(view);

    // Purge: every dead letter goes; list is empty, stats count none.
    let (code, doc) = dlq(dir.path(), "jobs", &["purge"]);
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(doc["purged"], 6);
    let (code, doc) = dlq(dir.path(), "jobs", &["purge"]);
    assert_eq!((code, &doc["purged"]), (Some(0), &Value::from(0)));
    let listed = Command::new(env!("CARGO_BIN_EXE_logqueue"))
        .args(["dlq"])
        .arg(dir.path())
        .args(["jobs", "list"])
        .output()
        .unwrap();
    assert!(listed.status.success() && listed.stdout.is_empty());
    let queues: Value =
        serde_json::from_slice(&logqueue(&["queues", "--format", "json"], dir.path()).stdout)
            .unwrap();
    assert_eq!(queues[0]["dead_letters"], 0, "{queues}");

    // A queue that does not exist is not created; a log open elsewhere is refused.
    let (code, _) = dlq(dir.path(), "nope", &["purge"]);
    assert_eq!(code, Some(2));
    assert!(!dir.path().join("queues/nope").exists());
    let _held = Log::open(dir.path(), LogConfig::default()).unwrap();
    for args in [&["purge"][..], &["redrive"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_logqueue"))
            .arg("dlq")
            .arg(dir.path())
            .arg("jobs")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("open in another process"));
    }
}

#[test]
fn queue_commands_and_inspect_beside_a_live_queue_in_another_process() {
    use common::live_writer::QUEUE;
    let parent = tempfile::tempdir().unwrap();
    let writer = LiveWriter::start_queue(parent.path(), "live_writer_child");
    let dir = writer.dir.clone();
    let view = Log::open_read_only(&dir).unwrap();
    let began = Instant::now();
    let (mut last_acked, mut letters_seen, mut rounds) = (0, 0, 0);
    while began.elapsed() < Duration::from_secs(3) {
        // The library: inspect from a read-only view while the journal rotates.
        let s = Queue::inspect(&view, QUEUE).unwrap();
        assert!(s.ack_floor <= view.end_offset());
        assert!(s.acked_total >= last_acked, "acks only grow");
        last_acked = s.acked_total;
        // The CLI.
        let out = logqueue(&["queues", "--format", "json"], &dir);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc[0]["name"], QUEUE);
        assert!(doc[0]["stats"]["acked_total"].as_u64().unwrap() >= last_acked);
        // The queue's cursor, read before its state, is never above its floor.
        let cursor = &doc[0]["cursor"];
        assert_eq!(cursor["name"], format!("queue.{QUEUE}"), "{doc}");
        let position = cursor["position"].as_u64().unwrap();
        assert!(
            position <= doc[0]["stats"]["ack_floor"].as_u64().unwrap(),
            "{doc}"
        );
        let (floor, lag) = (
            doc[0]["stats"]["ack_floor"].as_u64().unwrap(),
            doc[0]["stats"]["consumer_lag"].as_u64().unwrap(),
        );
        assert_eq!(cursor["lag"].as_u64().unwrap(), lag + floor - position);
        let out = Command::new(env!("CARGO_BIN_EXE_logqueue"))
            .arg("dlq")
            .arg(&dir)
            .args([QUEUE, "list", "--format", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        for letter in &lines {
            let original = letter["original_offset"].as_u64().unwrap();
            assert_eq!(
                original % 7,
                0,
                "only every seventh record is dead-lettered"
            );
            assert_eq!(b64(letter["value"].as_str().unwrap()), value_for(original));
            assert_eq!(letter["reason"], format!("r{}", original % 3));
        }
        letters_seen = lines.len();
        rounds += 1;
    }
    eprintln!("{rounds} rounds; {letters_seen} dead letters; {last_acked} acks");
    assert!(letters_seen > 0 && last_acked > 0);
    // Frozen mid-run (the queue's lock held): the queue commands change no file.
    writer.pause_settled();
    let before = digest_dir(&dir);
    for args in [
        &["queues"][..],
        &["queues", "--format", "json"],
        &["stats"],
        &["dlq", QUEUE, "list"],
    ] {
        let out = logqueue(args, &dir);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(digest_dir(&dir), before, "a queue command changed a file");
    writer.pause(false);
    // The journal rotated (new generations) while inspect and the CLI read it.
    let generation = std::fs::read_dir(dir.join("queues").join(QUEUE))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_prefix("journal-")?.parse::<u64>().ok()
        })
        .max()
        .unwrap();
    assert!(generation > 3, "journal generation {generation}");
    writer.stop();
    // Closed: the last state on disk is what inspect reads.
    let s = Queue::inspect(&Log::open_read_only(&dir).unwrap(), QUEUE).unwrap();
    assert!(s.acked_total >= last_acked);
}
