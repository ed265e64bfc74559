//! With the `tracing` feature: recovery decisions, rolls and maintenance passes are
//! events (`cargo test --features tracing --test tracing_events`).
#![cfg(feature = "tracing")]

use std::sync::{Arc, Mutex};

use logqueue::{Log, LogConfig, Record};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing::{Event, Metadata, Subscriber};

/// Keeps every event as "LEVEL message field=value ...".
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<String>>>);

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0 += &format!(" {}={value:?}", field.name());
    }
}

impl Subscriber for Collect {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &SpanRecord<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut line = Line(format!(
            "{} {}",
            event.metadata().level(),
            event.metadata().target()
        ));
        event.record(&mut line);
        self.0.lock().unwrap().push(line.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn recovery_rolls_and_retention_are_events() {
    let dir = tempfile::tempdir().unwrap();
    let collect = Collect::default();
    tracing::subscriber::with_default(collect.clone(), || {
        let config = LogConfig {
            segment_bytes: 2048,
            background: false,
            retention_bytes: Some(4096),
            file_delete_delay: std::time::Duration::ZERO,
            ..LogConfig::default()
        };
        let log = Log::open(dir.path(), config.clone()).unwrap();
        for i in 0..100u32 {
            log.append(Record::new(vec![i as u8; 100])).unwrap();
        }
        log.enforce_retention().unwrap();
        log.close().unwrap();
        // A crash's torn tail: bytes past the last batch, no clean-shutdown marker.
        std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
        let active = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .max()
            .unwrap();
        let mut bytes = std::fs::read(&active).unwrap();
        bytes.extend_from_slice(&[7u8; 40]);
        std::fs::write(&active, bytes).unwrap();
        Log::open(dir.path(), config).unwrap().close().unwrap();
    });
    let events = collect.0.lock().unwrap().clone();
    let has = |text: &str| events.iter().any(|e| e.contains(text));
    assert!(has("rolled to a new segment"), "{events:#?}");
    assert!(
        has("maintenance pass") && has("pass=\"retention\"") && has("bytes_deleted"),
        "{events:#?}"
    );
    assert!(
        has("WARN logqueue message=recovery cut an unsynced torn tail"),
        "{events:#?}"
    );
}
