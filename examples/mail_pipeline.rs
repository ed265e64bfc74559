//! Seed 001's flow, exactly once (issue 13): a business system enqueues orders; a mail
//! worker receives each, "sends" the mail and settles the order into a results log
//! with `Queue::settle_into` (the mail's result appended exactly once, the order acked
//! once, whatever crash hits in between), or dead-letters an order it cannot mail;
//! the business system follows the queue's outcome feed (`QueueConfig::outcomes`)
//! with a durable cursor and learns how each order ended: one outcome per order,
//! matched by its `correlation.id`. The example checks what it prints.
//!
//! `cargo run --example mail_pipeline`

use std::collections::BTreeMap;
use std::time::Duration;

use logqueue::{
    CursorConfig, DedupConfig, Log, LogConfig, Queue, QueueConfig, Record, CORRELATION_ID, OUTCOME,
    OUTCOME_REASON,
};

fn text(b: Option<&[u8]>) -> String {
    String::from_utf8_lossy(b.unwrap_or_default()).into_owned()
}

fn main() -> logqueue::Result<()> {
    let dir = tempfile::tempdir().expect("temporary directory");
    // The business system's orders, and the queue the mail worker consumes, with its
    // outcome feed on.
    let orders = Log::open(dir.path().join("orders"), LogConfig::default())?;
    let config = QueueConfig {
        outcomes: true,
        ..QueueConfig::default()
    };
    let mailer = Queue::open(&orders, "mailer", config)?;
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
    let addresses = ["ann@example.com", "bob@example.com", "not an address"];
    for (n, to) in addresses.iter().enumerate() {
        let order = format!("order-{}", n + 1);
        let mail = Record::keyed(order.clone(), *to).with_header(CORRELATION_ID, order);
        mailer.send(mail)?;
    }

    // 2. The mail worker: a result per mailed order, settled exactly once; an order
    //    it cannot mail goes to the dead-letter log.
    loop {
        let got = mailer.receive(10, Duration::from_millis(100))?;
        if got.is_empty() {
            break;
        }
        for d in got {
            let to = text(d.record.value.as_deref());
            if !to.contains('@') {
                mailer.dead_letter(&d.receipt, "invalid address")?;
                continue;
            }
            // ... send the mail here (the mail server dedups on its side, or the
            // mail is sent at least once: settle_into makes the *record* exactly once).
            let key = d.record.key.clone().unwrap_or_default();
            let result = Record::keyed(key, format!("mail sent to {to}"));
            mailer.settle_into(&d, &results, vec![result])?;
        }
    }

    // 3. The business system follows the outcome feed with a durable cursor: one
    //    outcome per order, whatever happened to the processes in between.
    let feed = mailer.outcomes().expect("the feed is on");
    let cursor = feed.cursor("business", CursorConfig::default())?;
    let mut reader = feed.reader(cursor.position())?;
    let mut ended = BTreeMap::new();
    while let Some(o) = reader.next_blocking(Duration::from_millis(100))? {
        let order = text(o.header(CORRELATION_ID));
        let how = text(o.header(OUTCOME));
        let why = text(o.header(OUTCOME_REASON));
        println!("{order}: {how} {why}");
        assert!(
            ended.insert(order, (how, why)).is_none(),
            "one outcome each"
        );
        cursor.commit(o.offset + 1)?;
    }
    let want = |how: &str, why: &str| (how.to_string(), why.to_string());
    assert_eq!(
        ended,
        BTreeMap::from([
            ("order-1".to_string(), want("acked", "")),
            ("order-2".to_string(), want("acked", "")),
            (
                "order-3".to_string(),
                want("dead-lettered", "invalid address")
            ),
        ])
    );
    assert_eq!(results.end_offset(), 2, "one result per mailed order");
    mailer.close()?;
    Ok(())
}
