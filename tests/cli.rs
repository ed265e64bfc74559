//! The `logqueue` binary, run as a user runs it: read commands beside a live writer
//! in another process (correct records, no file changed, `tail --follow` fast),
//! export -> import -> export identity, verify's exit statuses, tail from a time,
//! produce, demo, perf, and write commands refusing a log open elsewhere. The queue
//! commands are in `cli_queues.rs`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::live_writer::{digest_dir, key_for, run_if_child, LiveWriter, CURSOR, CURSOR_LAG};
use common::value_for;
use logqueue::{Log, LogConfig, Record};
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

/// Checks an exported/dumped JSON record line against what the child writer wrote.
fn check_line(line: &str) -> u64 {
    let doc: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let offset = doc["offset"].as_u64().unwrap();
    assert_eq!(b64(doc["key"].as_str().unwrap()), key_for(offset), "{line}");
    assert_eq!(
        b64(doc["value"].as_str().unwrap()),
        value_for(offset),
        "{line}"
    );
    assert_eq!(doc["headers"][0][0], "offset");
    assert_eq!(
        b64(doc["headers"][0][1].as_str().unwrap()),
        offset.to_string().as_bytes()
    );
    offset
}

fn check_records(out: &Output, what: &str) -> usize {
    assert!(
        out.status.success(),
        "{what}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let mut last = None;
    let mut n = 0;
    for line in text.lines() {
        let o = check_line(line);
        assert!(last.is_none_or(|l| o > l), "{what}: offsets rise");
        last = Some(o);
        n += 1;
    }
    n
}

#[test]
fn read_commands_beside_a_live_writer_are_correct_and_change_nothing() {
    let parent = tempfile::tempdir().unwrap();
    let writer = LiveWriter::start(parent.path(), "live_writer_child");
    let dir = writer.dir.clone();
    let began = Instant::now();
    let mut rounds = 0;
    while began.elapsed() < Duration::from_secs(3) {
        let n = check_records(&logqueue(&["export"], &dir), "export");
        assert!(n > 0);
        check_records(&logqueue(&["dump", "--format", "json"], &dir), "dump");
        check_records(
            &logqueue(&["tail", "--last", "50", "--format", "json"], &dir),
            "tail",
        );
        let verify = logqueue(&["verify", "--format", "json"], &dir);
        assert_eq!(
            verify.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&verify.stdout)
        );
        let stats = logqueue(&["stats", "--format", "json"], &dir);
        assert!(stats.status.success());
        let doc: Value = serde_json::from_slice(&stats.stdout).unwrap();
        let end = doc["log"]["end_offset"].as_u64().unwrap();
        assert!(end > 0);
        // The writer keeps its cursor CURSOR_LAG behind the end it appended.
        let cursor = &doc["cursors"][0];
        assert_eq!(cursor["name"], CURSOR, "{doc}");
        assert_eq!(cursor["protect"], false);
        let (position, lag) = (
            cursor["position"].as_u64().unwrap(),
            cursor["lag"].as_u64().unwrap(),
        );
        assert_eq!(position + lag, end, "lag is end - position");
        assert!(lag >= CURSOR_LAG, "{cursor}");
        assert!(logqueue(&["queues"], &dir).status.success());
        rounds += 1;
    }
    eprintln!("{rounds} rounds of read commands beside the writer");

    // Frozen mid-run: whatever changes now is the commands' doing.
    writer.pause_settled();
    let before = digest_dir(&dir);
    let text = logqueue(&["stats"], &dir);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("cursor mirror"), "{text}");
    for args in [
        &["export"][..],
        &["dump", "--batches"],
        &["dump", "--indexes"],
        &["tail", "--last", "5"],
        &["verify"],
        &["stats"],
        &["queues"],
    ] {
        let out = logqueue(args, &dir);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        digest_dir(&dir),
        before,
        "a read command changed the directory"
    );
    // Every write command refuses while the writer holds the lock.
    for args in [
        &["delete-records", "--before", "1"][..],
        &["produce"],
        &["import"],
        &["compact"],
        &["retention", "--retention-ms", "1"],
        &["dlq", "jobs", "redrive"],
        &["dlq", "jobs", "purge"],
    ] {
        let out = logqueue(args, &dir);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("is open in another process") && err.contains("Stop that process"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        digest_dir(&dir),
        before,
        "a refused write command changed the directory"
    );
    writer.pause(false);
    writer.stop();
}

#[test]
fn tail_follow_sees_new_records_within_100_ms() {
    let parent = tempfile::tempdir().unwrap();
    let writer = LiveWriter::start(parent.path(), "live_writer_child");
    let mut child = Command::new(env!("CARGO_BIN_EXE_logqueue"))
        .args(["tail"])
        .arg(&writer.dir)
        .args([
            "--follow", "--last", "0", "--max", "300", "--format", "json",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut delays = Vec::new();
    let mut expected = None;
    for line in stdout.lines() {
        let line = line.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let offset = check_line(&line);
        if let Some(e) = expected {
            assert_eq!(offset, e, "no record skipped");
        }
        expected = Some(offset + 1);
        let doc: Value = serde_json::from_str(&line).unwrap();
        delays.push(now - doc["timestamp"].as_i64().unwrap());
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(delays.len(), 300);
    delays.sort_unstable();
    let (median, p90, max) = (delays[150], delays[270], delays[299]);
    eprintln!("append-to-print delay ms: median {median}, p90 {p90}, max {max}");
    assert!(
        p90 < 100,
        "90% of appends printed within 100 ms: p90 {p90} ms"
    );
    writer.stop();
}

#[test]
fn tail_from_time_starts_at_the_first_record_at_or_after_it() {
    let dir = tempfile::tempdir().unwrap();
    // 2024-05-01T12:00:00Z, then one record a second.
    const T0: i64 = 1_714_564_800_000;
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        for i in 0..10 {
            log.append(Record::new(format!("r{i}")).with_timestamp(T0 + i * 1000))
                .unwrap();
        }
        log.close().unwrap();
    }
    let offsets = |time: &str| -> Vec<u64> {
        let out = logqueue(
            &["tail", "--from-time", time, "--format", "json"],
            dir.path(),
        );
        assert!(
            out.status.success(),
            "{time}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["offset"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(offsets("2024-05-01T12:00:04.500Z"), [5, 6, 7, 8, 9]);
    assert_eq!(offsets("2024-05-01T14:00:07+02:00"), [7, 8, 9]);
    assert_eq!(offsets("2024-05-01T11:00:00Z"), (0..10).collect::<Vec<_>>());
    assert!(
        offsets("2024-05-01T12:00:10Z").is_empty(),
        "past the last record"
    );
    let text = logqueue(&["tail", "--from-time", "2024-05-01T12:00:09Z"], dir.path());
    assert_eq!(
        String::from_utf8_lossy(&text.stdout).trim(),
        "9 2024-05-01T12:00:09.000Z key=- value=\"r9\""
    );
    let bad = logqueue(&["tail", "--from-time", "yesterday"], dir.path());
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("RFC 3339"));
}

#[test]
fn export_import_export_is_byte_identical() {
    let parent = tempfile::tempdir().unwrap();
    let (a, b) = (parent.path().join("a"), parent.path().join("b"));
    {
        let log = Log::open(&a, LogConfig::default()).unwrap();
        let mut records = vec![
            Record::keyed("k1", "plain text").with_timestamp(1_000),
            Record::new(vec![0u8, 159, 146, 150, 255]).with_timestamp(-5),
            Record::tombstone("k1").with_timestamp(i64::MAX),
            Record::keyed(vec![0xffu8, 0], vec![])
                .with_header("h", vec![1u8, 2, 3])
                .with_header("h", "again")
                .with_header("", ""),
            Record::new("line\nbreak \"quoted\" \u{1F600}"),
        ];
        for i in 0..500u32 {
            records.push(Record::keyed(
                format!("k{}", i % 7),
                i.to_le_bytes().to_vec(),
            ));
        }
        for chunk in records.chunks(37) {
            log.append_batch(chunk.to_vec()).unwrap();
        }
        log.close().unwrap();
    }
    let first = logqueue(&["export"], &a);
    assert!(first.status.success());
    let import = Command::new(env!("CARGO_BIN_EXE_logqueue"))
        .arg("import")
        .arg(&b)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = import.stdin.as_ref().unwrap();
        stdin.write_all(&first.stdout).unwrap();
    }
    let out = import.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = logqueue(&["export"], &b);
    assert!(second.status.success());
    assert_eq!(String::from_utf8_lossy(&first.stdout).lines().count(), 505);
    assert!(
        first.stdout == second.stdout,
        "export -> import -> export differs"
    );
    // And the records themselves, through the library.
    let (la, lb) = (
        Log::open_read_only(&a).unwrap(),
        Log::open_read_only(&b).unwrap(),
    );
    let ra: Vec<_> = la.reader(0).unwrap().map(Result::unwrap).collect();
    let rb: Vec<_> = lb.reader(0).unwrap().map(Result::unwrap).collect();
    assert_eq!(ra, rb);
    assert_eq!(ra[2].value, None, "the tombstone stays a tombstone");
}

#[test]
fn verify_exit_status_clean_damaged_and_unopenable() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("log");
    {
        let config = LogConfig {
            segment_bytes: 4096,
            ..LogConfig::default()
        };
        let log = Log::open(&dir, config).unwrap();
        for i in 0..300u64 {
            log.append(Record::keyed(key_for(i), value_for(i))).unwrap();
        }
        log.close().unwrap();
    }
    let clean = logqueue(&["verify"], &dir);
    assert_eq!(
        clean.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );
    assert!(String::from_utf8_lossy(&clean.stdout).starts_with("clean"));

    let indexes = logqueue(&["dump", "--indexes", "--format", "json"], &dir);
    assert!(indexes.status.success());
    let doc: Value = serde_json::from_slice(&indexes.stdout).unwrap();
    assert!(doc.as_array().unwrap().len() > 1, "several segments");
    assert_eq!(doc[0]["offset_index"][0]["offset"], 0);
    assert_eq!(doc[0]["offset_index"][0]["position"], 0);
    assert_eq!(doc[0]["trailing_bytes"], 0);
    // Both files end in a trailer that checks out and names the sealed .log's length.
    let sealed_len = std::fs::metadata(dir.join(format!("{:020}.log", 0)))
        .unwrap()
        .len();
    for t in doc[0]["index_trailers"].as_array().unwrap() {
        assert_eq!(t["crc_ok"], true, "{t}");
        assert_eq!(t["log_length"], sealed_len, "{t}");
        // The segment's largest append time: the system clock's, in ms.
        assert!(
            t["max_append_time"].as_i64().unwrap() > 1_600_000_000_000,
            "{t}"
        );
    }

    // Damage a byte in the middle of the first (sealed, durable) segment.
    let first = dir.join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&first).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&first, bytes).unwrap();
    let damaged = logqueue(&["verify"], &dir);
    let text = String::from_utf8_lossy(&damaged.stdout);
    assert_eq!(damaged.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("CORRUPT") && text.contains("segment 0 bytes ["),
        "{text}"
    );
    let json = logqueue(&["verify", "--format", "json"], &dir);
    assert_eq!(json.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["clean"], false);
    assert!(!doc["report"]["corrupt"].as_array().unwrap().is_empty());

    let missing = logqueue(&["verify"], &parent.path().join("missing"));
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn produce_reads_lines_and_json_with_a_key_field() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], input: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_logqueue"))
            .arg("produce")
            .arg(dir.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
    };
    run(&[], "first\nsecond\n");
    run(
        &["--input", "json", "--key-field", "user"],
        "{\"user\":\"ann\",\"n\":1}\n{\"user\":7}\n",
    );
    let log = Log::open_read_only(dir.path()).unwrap();
    let all: Vec<_> = log.reader(0).unwrap().map(Result::unwrap).collect();
    assert_eq!(all.len(), 4);
    assert_eq!(all[1].value.as_deref(), Some(&b"second"[..]));
    assert_eq!(all[2].key.as_deref(), Some(&b"ann"[..]));
    assert_eq!(
        all[2].value.as_deref(),
        Some(&b"{\"user\":\"ann\",\"n\":1}"[..])
    );
    assert_eq!(all[3].key.as_deref(), Some(&b"7"[..]));
    // Refused while the log is open in another process (here: this one).
    let _held = Log::open(dir.path(), LogConfig::default()).unwrap();
    let out = logqueue(&["produce"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("open in another process"));
}

#[test]
fn demo_shows_a_crash_safe_redelivery_and_a_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_logqueue"))
        .args(["demo", "--dir"])
        .arg(dir.path().join("demo"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("aborting before the ack"), "{text}");
    assert!(
        text.contains("redelivered (attempt 2): welcome mail to bob@example.com"),
        "{text}"
    );
    assert!(
        text.contains(
            "dead letter: welcome mail to cyd@example.com (reason: mailbox does not exist)"
        ),
        "{text}"
    );
    // The directory it leaves is a healthy log.
    assert_eq!(
        logqueue(&["verify"], &dir.path().join("demo"))
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn perf_reports_throughput_and_latency_percentiles() {
    for kind in [
        &["produce", "--records", "5000"][..],
        &[
            "produce",
            "--records",
            "5000",
            "--batch",
            "50",
            "--threads",
            "2",
        ],
        &["consume", "--records", "5000", "--threads", "2"],
        &["queue", "--records", "3000", "--threads", "2"],
        &["queue", "--records", "500", "--rate", "5000"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_logqueue"))
            .arg("perf")
            .args(kind)
            .args(["--format", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{kind:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(doc["records_per_sec"].as_f64().unwrap() > 0.0, "{doc}");
        let lat = &doc["latency_us"];
        let (p50, p99, p999, max) = (
            lat["p50"].as_f64().unwrap(),
            lat["p99"].as_f64().unwrap(),
            lat["p99_9"].as_f64().unwrap(),
            lat["max"].as_f64().unwrap(),
        );
        assert!(
            p50 > 0.0 && p50 <= p99 && p99 <= p999 && p999 <= max,
            "{kind:?}: {lat}"
        );
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_logqueue"))
        .args(["perf", "produce", "--flush", "sometimes"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(64));
}
