//! Exactly-once consume-transform-produce (issue 13): a business system enqueues
//! orders; a mail worker receives each, "sends" the mail and settles the order into a
//! results log with `Queue::settle_into` (result appended exactly once, order acked
//! once, whatever crash hits in between); the business system follows the results
//! log with a durable cursor and learns how each order ended.
//!
//! `cargo run --example mail_pipeline`

use std::time::Duration;

use logqueue::{CursorConfig, DedupConfig, Log, LogConfig, Queue, QueueConfig, Record};

fn main() -> logqueue::Result<()> {
    let dir = tempfile::tempdir().expect("temporary directory");
    // The business system's orders, and the queue the mail worker consumes.
    let orders = Log::open(dir.path().join("orders"), LogConfig::default())?;
    let mailer = Queue::open(&orders, "mailer", QueueConfig::default())?;
    // The results log needs a dedup window longer than a delivery's redeliveries.
    let results = Log::open(
        dir.path().join("results"),
        LogConfig {
            dedup: Some(DedupConfig {
                window: Duration::from_secs(24 * 3600),
                max_ids: 1 << 20,
            }),
            ..LogConfig::default()
        },
    )?;

    // 1. The business system enqueues, with a correlation id of its own.
    for n in 1..=3 {
        let order = format!("order-{n}");
        mailer.send(Record::keyed(order.clone(), "paid").with_header("correlation.id", order))?;
    }

    // 2. The mail worker: one result per order, settled exactly once.
    loop {
        let got = mailer.receive(10, Duration::from_millis(100))?;
        if got.is_empty() {
            break;
        }
        for d in got {
            let key = d.record.key.clone().unwrap_or_default();
            // ... send the mail here (the mail server dedups on its side, or the
            // mail is sent at least once: settle_into makes the *record* exactly once).
            let result = Record::keyed(key, "mail sent").with_header(
                "correlation.id",
                d.record.header("correlation.id").unwrap_or_default(),
            );
            mailer.settle_into(&d, &results, vec![result])?;
        }
    }

    // 3. The business system follows the results with a durable cursor.
    let cursor = results.cursor("business", CursorConfig::default())?;
    let mut reader = results.reader(cursor.position())?;
    while let Some(r) = reader.next_blocking(Duration::from_millis(100))? {
        println!(
            "{}: {}",
            String::from_utf8_lossy(r.header("correlation.id").unwrap_or_default()),
            String::from_utf8_lossy(r.value.as_deref().unwrap_or_default())
        );
        cursor.commit(r.offset + 1)?;
    }
    Ok(())
}
