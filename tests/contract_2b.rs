//! The second round's contract additions (DESIGN.md §2b) that have landed, name by
//! name and signature by signature: outside tests compile against exactly these.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use logqueue::{
    Appended, Cursor, CursorConfig, CursorInfo, DedupConfig, Delivery, Error, Log, LogConfig,
    Offset, Queue, QueueConfig, QueueStats, Receipt, ReceiveOptions, Record, RecordRef,
    StoredRecord,
};

#[test]
fn log_core_v2_names() {
    let _: fn(&Log, Offset) -> logqueue::Result<()> = Log::wait_durable;
    let _: for<'a, 'b> fn(&'a Log, &'b [RecordRef<'b>]) -> logqueue::Result<Range<Offset>> =
        Log::append_batch_ref;
    let _: fn(&Log, &str, CursorConfig) -> logqueue::Result<Cursor> = Log::cursor;
    let _: fn(&Log) -> logqueue::Result<Vec<CursorInfo>> = Log::cursors;
    let _: fn(&Log, &str) -> logqueue::Result<()> = Log::delete_cursor;
    let _: fn(&Cursor, Offset) -> logqueue::Result<()> = Cursor::commit;
    let _: fn(&Cursor) -> Offset = Cursor::position;
    let CursorConfig { protect } = CursorConfig::default();
    assert!(protect, "cursors protect by default");
    let CursorInfo {
        name: _,
        position: _,
        protect: _,
    } = CursorInfo {
        name: String::new(),
        position: 0,
        protect: true,
    };
    let (key, value, header) = (b"k".as_slice(), b"v".as_slice(), b"h".as_slice());
    let headers = [("h", header)];
    let r = RecordRef {
        key: Some(key),
        value: Some(value),
        headers: &headers,
        timestamp: Some(1),
    };
    let _ = (r, RecordRef::new(value), RecordRef::keyed(key, value));
    let c = LogConfig::default();
    let _: usize = c.max_open_segments;
    let _: Option<DedupConfig> = c.dedup;
}

#[test]
fn queue_api_names() {
    let _: fn(Queue) -> logqueue::Result<()> = Queue::close;
    let _: fn(&Log) -> logqueue::Result<Vec<String>> = Queue::names;
    let _: fn(&Log, &str) -> logqueue::Result<()> = Queue::delete;
    let _: fn(&Queue) -> logqueue::Result<u64> = Queue::purge;
    let _: fn(&Queue, usize) -> logqueue::Result<Vec<StoredRecord>> = Queue::peek;
    let _: fn(&Queue, &[Receipt]) -> logqueue::Result<Vec<Receipt>> = Queue::ack_many;
    let _: fn(&Queue, &[Receipt], Duration) -> logqueue::Result<Vec<Receipt>> = Queue::nack_many;
    let _: fn(&Queue, usize, Duration, &ReceiveOptions) -> logqueue::Result<Vec<Delivery>> =
        Queue::receive_with;
    let _: fn(&Queue) -> logqueue::Result<u64> = Queue::purge_dead_letters;
    let _: fn(&Log, &str) -> logqueue::Result<QueueStats> = Queue::inspect;
    fn redrive_where_takes_a_closure(q: &Queue) -> logqueue::Result<usize> {
        q.redrive_where(10, |r: &StoredRecord| r.header("dlq.reason").is_some())
    }
    let _ = redrive_where_takes_a_closure;
    let options = ReceiveOptions::default();
    let _: Option<Duration> = options.visibility_timeout;
    let _: Record = Record::new("v").with_ttl(Duration::from_secs(1));
    let c = QueueConfig::default();
    let _: u64 = c.journal_bytes;
    let _: Option<Duration> = c.dead_letter_retention;
    let _: bool = c.deliver_tombstones;
    let _: bool = c.dead_letter_expired;
    let _: bool = c.outcomes;
    let _: Option<Duration> = c.outcome_retention;
    let s = QueueStats {
        tombstones_skipped: 1,
        expired_total: 2,
        ..QueueStats::default()
    };
    assert_eq!((s.tombstones_skipped, s.expired_total), (1, 2));
    let _ = Error::InvalidArgument(String::new());
    let _ = Error::ReadOnly;
}

#[test]
fn operator_and_exactly_once_names() {
    let _: fn(&Path) -> logqueue::Result<Log> = |p| Log::open_read_only(p);
    let _: fn(&Log, &[u8], Record) -> logqueue::Result<Appended> = Log::append_idempotent;
    let Appended {
        offset: _,
        duplicate: _,
    } = Appended {
        offset: 0,
        duplicate: false,
    };
    let DedupConfig {
        window: _,
        max_ids: _,
    } = DedupConfig {
        window: Duration::from_secs(60),
        max_ids: 10,
    };
    type SettleInto = fn(&Queue, &Delivery, &Log, Vec<Record>) -> logqueue::Result<Range<Offset>>;
    let _: SettleInto = Queue::settle_into;
    let _: fn(&Queue) -> Option<Log> = Queue::outcomes;
}
