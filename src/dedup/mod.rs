//! Idempotent appends: [`Log::append_idempotent`] and the dedup window behind it.
//!
//! The id travels in the record, as the header [`DEDUP_ID`]: the window is exactly as
//! durable as the records (kill -9, power loss) and is rebuilt at open from the
//! records of the last `window` (found with the time index, so open reads O(window),
//! never the whole log). In memory each id is a 64-bit keyed fingerprint with its
//! offset and timestamp (see `table.rs`); a fingerprint match is confirmed by reading
//! the record and comparing the full id, so two different ids are never taken for
//! one another while the earlier record can be read.
//!
//! Records deleted inside the window (retention, `delete_records_before`,
//! compaction): the open log keeps their ids until they age out, and a match on one
//! of them is a duplicate without the full-id check (there is no record left to
//! compare with; a false match needs a 64-bit collision of the keyed fingerprint).
//! A reopen rebuilds the window from the records that remain, so an id whose record
//! was deleted inside the window is forgotten at the next open. Time retention
//! shorter than the window is refused at open for that reason
//! ([`Error::InvalidConfig`]); size retention, explicit deletes and compaction of
//! records inside the window are the user's choice and documented on
//! [`DedupConfig`].

mod table;

use foldhash::quality::RandomState;
use parking_lot::{Mutex, MutexGuard};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::{CleanupPolicy, DedupConfig, LogConfig};
use crate::log::Log;
use crate::{Error, Offset, Record, RecordRef, Result};
use std::ops::Range;

use table::IdTable;

/// The header that carries the id of an idempotent append (`dedup.id`, the id's bytes).
pub const DEDUP_ID: &str = "dedup.id";

/// What [`Log::append_idempotent`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The record's offset: the new one, or the original's for a duplicate.
    pub offset: Offset,
    /// True when the id was in the window and nothing was appended.
    pub duplicate: bool,
}

/// Numbers of a log's dedup window ([`Log::dedup_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DedupStats {
    /// Ids remembered now (including some past the window not yet forgotten).
    pub ids: usize,
    /// Bytes of memory the window holds.
    pub memory_bytes: usize,
}

/// Largest `max_ids`: sequence numbers and table sizes stay far from overflow.
const MAX_IDS: usize = 1 << 32;
/// Ids inserted at a time when the window is rebuilt at open.
const REBUILD_CHUNK: usize = 32;
/// Largest id: it is stored in every record that carries it.
pub(crate) const MAX_ID_BYTES: usize = 4096;

pub(crate) fn validate(dedup: &DedupConfig, config: &LogConfig) -> Result<()> {
    let bad = |why: String| Err(Error::InvalidConfig(why));
    if dedup.window.is_zero() || dedup.window.as_millis() > i64::MAX as u128 / 2 {
        return bad(format!(
            "dedup.window must be positive, got {:?}",
            dedup.window
        ));
    }
    if dedup.max_ids == 0 || dedup.max_ids > MAX_IDS {
        return bad(format!(
            "dedup.max_ids must be in [1, {MAX_IDS}], got {}",
            dedup.max_ids
        ));
    }
    if let Some(retention) = config.retention_ms {
        if config.cleanup != CleanupPolicy::Compact && retention < dedup.window {
            // A reopen forgets the ids of deleted records: time retention inside the
            // window would let duplicates in after every restart.
            return bad(format!(
                "retention_ms ({retention:?}) must not be shorter than dedup.window ({:?})",
                dedup.window
            ));
        }
    }
    Ok(())
}

/// The dedup window of an open log.
#[derive(Debug)]
pub(crate) struct DedupWindow {
    window_ms: i64,
    hasher: RandomState,
    /// Held across the check and the append: two appends of one id yield one record.
    table: Mutex<IdTable>,
    /// The table's index span as of the last release of its lock: an append asks the
    /// CPU for its id's bucket before it waits for the lock (see [`TableGuard`]).
    index_buckets: AtomicUsize,
    index_count: AtomicUsize,
    index_summaries: AtomicUsize,
}

/// The locked table; notes its index span for [`DedupWindow::prefetch`] when released.
struct TableGuard<'a> {
    table: MutexGuard<'a, IdTable>,
    window: &'a DedupWindow,
}

impl std::ops::Deref for TableGuard<'_> {
    type Target = IdTable;
    fn deref(&self) -> &IdTable {
        &self.table
    }
}

impl std::ops::DerefMut for TableGuard<'_> {
    fn deref_mut(&mut self) -> &mut IdTable {
        &mut self.table
    }
}

impl Drop for TableGuard<'_> {
    fn drop(&mut self) {
        let span = self.table.index_span();
        let w = self.window;
        // Written only when the index moved (it grew or shrank): the common release
        // writes nothing to the lines other appenders read before their lock.
        if w.index_buckets.load(Ordering::Relaxed) == span.buckets
            && w.index_count.load(Ordering::Relaxed) == span.count
            && w.index_summaries.load(Ordering::Relaxed) == span.summaries
        {
            return;
        }
        // Relaxed: a hint; a reader that sees a mix of two spans prefetches a wrong
        // line, which is harmless.
        w.index_buckets.store(span.buckets, Ordering::Relaxed);
        w.index_count.store(span.count, Ordering::Relaxed);
        w.index_summaries.store(span.summaries, Ordering::Relaxed);
    }
}

impl DedupWindow {
    pub(crate) fn new(config: &DedupConfig) -> DedupWindow {
        DedupWindow {
            window_ms: i64::try_from(config.window.as_millis()).unwrap_or(i64::MAX / 2),
            hasher: RandomState::default(),
            table: Mutex::new(IdTable::new(config.max_ids)),
            index_buckets: AtomicUsize::new(0),
            index_count: AtomicUsize::new(0),
            index_summaries: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> TableGuard<'_> {
        TableGuard {
            table: self.table.lock(),
            window: self,
        }
    }

    /// Starts loading the index bucket of `fingerprint` before the table's lock is
    /// taken: at a full window it is a cache miss, and the earlier it starts, the
    /// more of it overlaps with the append's own work up to the check.
    fn prefetch(&self, fingerprint: u64) {
        let span = table::IndexSpan {
            buckets: self.index_buckets.load(Ordering::Relaxed),
            count: self.index_count.load(Ordering::Relaxed),
            summaries: self.index_summaries.load(Ordering::Relaxed),
        };
        table::prefetch_home(span, fingerprint);
    }

    fn fingerprint(&self, id: &[u8]) -> u64 {
        self.hasher.hash_one(id)
    }

    fn cutoff(&self, now: i64) -> i64 {
        now.saturating_sub(self.window_ms)
    }

    /// Open: remembers the ids of the records of the last `window`, oldest first.
    /// Reads from the first record at or after the cutoff (the time index) to the end.
    pub(crate) fn rebuild(&self, log: &Log) -> Result<()> {
        let cutoff = self.cutoff(log.config().clock.now_ms());
        // An id's time is the later of its record's timestamp and its batch's append
        // time (see `id_time`): the window's records start at the first one stamped
        // at or after the cutoff, or in the first segment appended to at or after
        // it (records with old timestamps appended recently), whichever is earlier.
        let by_timestamp = log.offset_for_timestamp(cutoff)?;
        let by_append = first_segment_appended_since(log, cutoff)?;
        let Some(from) = by_timestamp.into_iter().chain(by_append).min() else {
            return Ok(());
        };
        let mut table = self.lock();
        // At most one id per record from `from` on: sized once, not grown step by step
        // (every growth places all entries again). Never past `max_ids`, the bound the
        // window's memory has anyway; what records without ids leave unused is given
        // back below.
        let records = log.end_offset().saturating_sub(from);
        table.reserve(usize::try_from(records).unwrap_or(usize::MAX));
        // Decoded in place (no copy): O(window). Inserted a chunk at a time, so that
        // the chunk's cache misses in the index overlap (see `IdTable::insert_all`).
        let mut chunk = Vec::with_capacity(REBUILD_CHUNK);
        log.reader(from)?
            .read_views_with_append_time(usize::MAX, |view, appended| {
                let time = view.timestamp.max(appended);
                if time < cutoff {
                    return;
                }
                if let Some(id) = view.header(DEDUP_ID) {
                    chunk.push((self.fingerprint(id), view.offset, time));
                    if chunk.len() == REBUILD_CHUNK {
                        table.insert_all(&chunk, cutoff);
                        chunk.clear();
                    }
                }
            })?;
        table.insert_all(&chunk, cutoff);
        table.shrink_to_fit();
        Ok(())
    }
}

fn validate_id(id: &[u8]) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(Error::InvalidArgument(format!(
            "a dedup id must have 1 to {MAX_ID_BYTES} bytes, got {}",
            id.len()
        )));
    }
    Ok(())
}

/// Appends to `flat` the headers of `record` with `id` as its [`DEDUP_ID`] header
/// (replacing one it carries, last); returns where they are in `flat`.
fn push_headers_with_id<'a>(
    flat: &mut Vec<(&'a str, &'a [u8])>,
    record: &'a Record,
    id: &'a [u8],
) -> Range<usize> {
    let start = flat.len();
    flat.extend(
        record
            .headers
            .iter()
            .filter(|h| h.key != DEDUP_ID)
            .map(|h| (h.key.as_str(), h.value.as_slice())),
    );
    flat.push((DEDUP_ID, id));
    start..flat.len()
}

/// The time an id's window counts from: the later of its record's timestamp (`now`
/// when it has none) and its append time `now`. A record may carry an old timestamp
/// (event time: a transform copying its input's onto its output, a backlog being
/// replayed): timed by that alone, its id would age out of the window early, at
/// once for one older than the window, and a retry would append the record again.
fn id_time(timestamp: Option<i64>, now: i64) -> i64 {
    timestamp.unwrap_or(now).max(now)
}

/// `record` borrowed, with `headers` and its timestamp (`now` when it has none).
fn borrow<'a>(record: &'a Record, headers: &'a [(&'a str, &'a [u8])], now: i64) -> RecordRef<'a> {
    RecordRef {
        key: record.key.as_deref(),
        value: record.value.as_deref(),
        headers,
        timestamp: Some(record.timestamp.unwrap_or(now)),
    }
}

/// One id checked against the window: a duplicate of `offset`, or new.
enum Seen {
    Duplicate(Offset),
    New,
}

/// For each pair, the first earlier pair with the same id, if any: sorted by
/// fingerprint (O(n log n), not a scan of all earlier pairs per pair).
fn earlier_pairs_with_the_same_id(
    items: &[(Vec<u8>, Record)],
    fingerprints: &[u64],
) -> Vec<Option<usize>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    // Stable: within one fingerprint, in the order given.
    order.sort_by_key(|&k| fingerprints[k]);
    let mut earlier = vec![None; items.len()];
    for (n, &k) in order.iter().enumerate() {
        let same_fingerprint = order[..n]
            .iter()
            .rev()
            .take_while(|&&j| fingerprints[j] == fingerprints[k]);
        // The earliest with the same id: it is the one that is not itself a duplicate.
        earlier[k] = same_fingerprint
            .filter(|&&j| items[j].0 == items[k].0)
            .last()
            .copied();
    }
    earlier
}

impl Log {
    fn dedup_window(&self) -> Result<&DedupWindow> {
        self.inner.dedup.as_ref().ok_or_else(|| {
            Error::InvalidConfig(format!(
                "{}: idempotent appends need LogConfig::dedup",
                self.dir().display()
            ))
        })
    }

    /// Appends `record` unless a record with the same `id` was appended within the
    /// log's dedup window ([`LogConfig::dedup`]); then nothing is appended and the
    /// original's offset comes back with `duplicate: true`.
    ///
    /// The id is stored in the record as the header [`DEDUP_ID`] (`dedup.id`,
    /// replacing one the record carries), which makes the window survive crashes and
    /// power loss exactly as the records do: a record lost to a power loss takes its
    /// id with it, and appending it again is correct. A record without a timestamp
    /// gets the log clock's now; the window counts from the later of the record's
    /// timestamp and its append time (an old timestamp does not shorten it).
    /// Idempotent appends of one log are serialized (the check and the append happen
    /// under one lock; with [`crate::FlushPolicy::Always`] that includes the fsync).
    ///
    /// Errors: [`Error::InvalidConfig`] when the log has no dedup window,
    /// [`Error::InvalidArgument`] for an empty id or one over 4096 bytes, and those of
    /// [`Log::append`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use logqueue::{DedupConfig, Log, LogConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let dedup = Some(DedupConfig { window: Duration::from_secs(300), max_ids: 10_000 });
    /// let log = Log::open(dir.path(), LogConfig { dedup, ..LogConfig::default() }).unwrap();
    /// let first = log.append_idempotent(b"order-17", Record::new("charge")).unwrap();
    /// let again = log.append_idempotent(b"order-17", Record::new("charge")).unwrap();
    /// assert!(!first.duplicate && again.duplicate);
    /// assert_eq!((first.offset, again.offset, log.end_offset()), (0, 0, 1));
    /// ```
    pub fn append_idempotent(&self, id: &[u8], record: Record) -> Result<Appended> {
        let window = self.dedup_window()?;
        self.inner.check_writable()?;
        validate_id(id)?;
        // Read before the prefetch, not after: the vDSO's clock read puts a fence
        // ahead of RDTSC, and after the prefetch it measured slower (less of the
        // miss overlapped with the work below).
        let now = self.config().clock.now_ms();
        let fingerprint = window.fingerprint(id);
        // At a full window the id's bucket is a cache miss: started first, it overlaps
        // with the lock, the header flattening and the append's own work up to the
        // decision, where the check finds the bucket loaded.
        window.prefetch(fingerprint);
        let mut table = window.lock();
        let cutoff = window.cutoff(now);
        // The table's own upkeep first (it would come at the insert): its memory work
        // also overlaps with the id's bucket loading.
        table.tidy(cutoff);
        // Borrowed, not copied into a new `Record`: no allocation without other headers.
        let only_id = [(DEDUP_ID, id)];
        let mut flat = Vec::new();
        let headers = if record.headers.is_empty() {
            &only_id[..]
        } else {
            let span = push_headers_with_id(&mut flat, &record, id);
            &flat[span]
        };
        let borrowed = borrow(&record, headers, now);
        let records = std::slice::from_ref(&borrowed);
        // Decided under the append lock, memory only: a new id is published at once; a
        // fingerprint match publishes nothing (its bytes past the end never decode) and
        // is confirmed below, with the append lock released (reading the earlier record
        // may open a sealed segment). The table lock is held throughout: no other
        // idempotent append comes between.
        let appended = self.append_refs_if(records, now, &mut || {
            !table.has_candidates(fingerprint, cutoff)
        })?;
        let offset = match appended {
            Some(range) => range.start,
            None => {
                if let Seen::Duplicate(offset) = self.check_id(&table, fingerprint, id, cutoff)? {
                    return Ok(Appended {
                        offset,
                        duplicate: true,
                    });
                }
                self.append_refs_at(records, now)?.start
            }
        };
        table.insert(
            fingerprint,
            offset,
            id_time(borrowed.timestamp, now),
            cutoff,
        );
        Ok(Appended {
            offset,
            duplicate: false,
        })
    }

    /// [`Log::append_idempotent`] for many `(id, record)` pairs at once: the records
    /// whose ids are new are appended as one batch (atomic like
    /// [`Log::append_batch`]: after a crash all of them are there or none), in the
    /// order given; the others are duplicates (of an earlier record, or of an earlier
    /// pair of the same call). One [`Appended`] per pair, in order.
    ///
    /// ```
    /// use std::time::Duration;
    /// use logqueue::{DedupConfig, Log, LogConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let dedup = Some(DedupConfig { window: Duration::from_secs(300), max_ids: 10_000 });
    /// let log = Log::open(dir.path(), LogConfig { dedup, ..LogConfig::default() }).unwrap();
    /// log.append_idempotent(b"a", Record::new("1")).unwrap();
    /// let got = log.append_idempotent_batch(vec![
    ///     (b"a".to_vec(), Record::new("1")),
    ///     (b"b".to_vec(), Record::new("2")),
    ///     (b"b".to_vec(), Record::new("2")),
    /// ]).unwrap();
    /// let offsets: Vec<_> = got.iter().map(|a| (a.offset, a.duplicate)).collect();
    /// assert_eq!(offsets, [(0, true), (1, false), (1, true)]);
    /// ```
    pub fn append_idempotent_batch(&self, items: Vec<(Vec<u8>, Record)>) -> Result<Vec<Appended>> {
        let window = self.dedup_window()?;
        self.inner.check_writable()?;
        let mut fingerprints = Vec::with_capacity(items.len());
        for (id, _) in &items {
            validate_id(id)?;
            fingerprints.push(window.fingerprint(id));
        }
        let mut table = window.lock();
        // All buckets requested at once: their cache misses overlap.
        for &fingerprint in &fingerprints {
            table.prefetch(fingerprint);
        }
        let now = self.config().clock.now_ms();
        let cutoff = window.cutoff(now);
        let earlier = earlier_pairs_with_the_same_id(&items, &fingerprints);
        // Per pair: a duplicate of a record, of an earlier pair (its index), or new.
        let mut seen: Vec<std::result::Result<Seen, usize>> = Vec::with_capacity(items.len());
        for (k, (id, _)) in items.iter().enumerate() {
            seen.push(match earlier[k] {
                Some(j) => Err(j),
                None => Ok(self.check_id(&table, fingerprints[k], id, cutoff)?),
            });
        }
        let is_new = |s: &std::result::Result<Seen, usize>| matches!(s, Ok(Seen::New));
        let mut flat = Vec::new();
        let mut spans = Vec::new();
        for ((id, record), s) in items.iter().zip(&seen) {
            if is_new(s) {
                spans.push(push_headers_with_id(&mut flat, record, id));
            }
        }
        let fresh: Vec<RecordRef<'_>> = items
            .iter()
            .zip(&seen)
            .filter(|(_, s)| is_new(s))
            .zip(spans)
            .map(|(((_, record), _), span)| borrow(record, &flat[span], now))
            .collect();
        let range = self.append_refs_at(&fresh, now)?;
        let mut next = range.start;
        let mut out: Vec<Appended> = Vec::with_capacity(seen.len());
        for ((fingerprint, (_, record)), s) in fingerprints.iter().zip(&items).zip(&seen) {
            out.push(match s {
                Ok(Seen::Duplicate(offset)) => Appended {
                    offset: *offset,
                    duplicate: true,
                },
                Ok(Seen::New) => {
                    let time = id_time(record.timestamp, now);
                    table.insert(*fingerprint, next, time, cutoff);
                    next += 1;
                    Appended {
                        offset: next - 1,
                        duplicate: false,
                    }
                }
                Err(j) => Appended {
                    offset: out[*j].offset,
                    duplicate: true,
                },
            });
        }
        Ok(out)
    }

    /// Under the table lock: is `id` in the window? A fingerprint match is confirmed
    /// by the full id in the record; a record no longer there (deleted or compacted
    /// inside the window) counts as a match.
    fn check_id(&self, table: &IdTable, fingerprint: u64, id: &[u8], cutoff: i64) -> Result<Seen> {
        for offset in table.candidates(fingerprint, cutoff) {
            match self.read(offset) {
                Ok(Some(record)) => {
                    if record.header(DEDUP_ID) == Some(id) {
                        return Ok(Seen::Duplicate(offset));
                    }
                }
                Ok(None) | Err(Error::OffsetOutOfRange { .. }) => {
                    return Ok(Seen::Duplicate(offset));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Seen::New)
    }

    /// The size of the dedup window, `None` without one.
    pub fn dedup_stats(&self) -> Option<DedupStats> {
        let window = self.inner.dedup.as_ref()?;
        let table = window.lock();
        Some(DedupStats {
            ids: table.len(),
            memory_bytes: table.memory_bytes(),
        })
    }
}

/// The base offset of the oldest segment of `log`, in the run of newest segments
/// each with a batch appended at or after `cutoff` (ms), if any. From the newest
/// back, so that only the window's segments (and one more) are loaded, as the
/// rebuild reads them anyway; appends go in order, so the run is every segment
/// appended to since the cutoff unless the clock went back across segments.
fn first_segment_appended_since(log: &Log, cutoff: i64) -> Result<Option<Offset>> {
    let mut first = None;
    for segment in log.inner.snapshot().iter().rev() {
        if segment.meta()?.max_append_time < cutoff {
            break;
        }
        first = Some(segment.base_offset.max(log.start_offset()));
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimFs;
    use crate::ManualClock;
    use std::sync::Arc;
    use std::time::Duration;

    /// A fingerprint collision (forced: the table is told that "b" lives where "a"
    /// does) is caught by the full-id check: never a false duplicate.
    #[test]
    fn a_fingerprint_collision_is_not_a_duplicate() {
        let log = Log::open("/log", sim_config(&SimFs::new(0))).unwrap();
        assert_eq!(
            log.append_idempotent(b"a", Record::new("1"))
                .unwrap()
                .offset,
            0
        );
        let window = log.inner.dedup.as_ref().unwrap();
        window
            .table
            .lock()
            .insert(window.fingerprint(b"b"), 0, 1_000, i64::MIN);
        let got = log.append_idempotent(b"b", Record::new("2")).unwrap();
        assert_eq!((got.offset, got.duplicate), (1, false));
        let again = log.append_idempotent(b"b", Record::new("2")).unwrap();
        assert_eq!((again.offset, again.duplicate), (1, true));
    }

    fn sim_config(fs: &SimFs) -> LogConfig {
        LogConfig {
            fs: Arc::new(fs.clone()),
            clock: Arc::new(ManualClock::new(1_000)),
            background: false,
            flush: crate::FlushPolicy::Manual,
            dedup: Some(DedupConfig {
                window: Duration::from_secs(60),
                max_ids: 100,
            }),
            ..LogConfig::default()
        }
    }

    /// A duplicate (and a fingerprint match that turns out new) writes its batch past
    /// the published end before the check says no: those bytes must never come back
    /// as a record. Killed (page cache kept) or power-lost, with stores into the map or
    /// writes through the file, the log reopens with the records that were appended,
    /// and the duplicates are still duplicates.
    #[test]
    fn an_abandoned_duplicate_never_comes_back_after_a_kill_or_a_power_loss() {
        for (power_loss, reserves) in [(false, true), (true, true), (false, false), (true, false)] {
            let fs = SimFs::new(7);
            // Not reserving: written through the file (`pwrite`), not into the map.
            fs.set_reserves_allocation(reserves);
            let log = Log::open("/log", sim_config(&fs)).unwrap();
            let big = vec![7u8; 20 << 10]; // written through the file, not stored
            for (id, value) in [(&b"a"[..], &b"1"[..]), (b"big", &big[..])] {
                let first = log.append_idempotent(id, Record::new(value)).unwrap();
                assert!(!first.duplicate);
            }
            log.flush().unwrap();
            for (id, value) in [(&b"big"[..], &big[..]), (b"a", b"1")] {
                let again = log.append_idempotent(id, Record::new(value)).unwrap();
                assert!(again.duplicate);
            }
            assert_eq!(log.end_offset(), 2);
            if power_loss {
                fs.crash();
            } else {
                fs.kill();
            }
            drop(log);
            let log = Log::open("/log", sim_config(&fs)).unwrap();
            assert_eq!(
                log.end_offset(),
                2,
                "power loss {power_loss}, reserves {reserves}"
            );
            for (id, offset) in [(&b"a"[..], 0), (b"big", 1)] {
                let again = log.append_idempotent(id, Record::new("x")).unwrap();
                assert_eq!((again.offset, again.duplicate), (offset, true));
            }
            assert_eq!(log.end_offset(), 2);
        }
    }

    /// `append_refs_if`: the decision is asked under the append lock, with the batch
    /// not yet published; a no publishes nothing (end, counters, reads unchanged)
    /// and the next append takes the same offset.
    #[test]
    fn a_decided_append_that_says_no_publishes_nothing() {
        let fs = SimFs::new(0);
        let log = Log::open("/log", sim_config(&fs)).unwrap();
        log.append(Record::new("first")).unwrap();
        let value = Record::new("declined");
        let headers: [(&str, &[u8]); 0] = [];
        let refs = [borrow(&value, &headers, 5)];
        let mut asked = 0;
        let got = log
            .append_refs_if(&refs, 5, &mut || {
                asked += 1;
                assert!(cfg!(not(debug_assertions)) || crate::writer_lock::append_lock_held());
                false
            })
            .unwrap();
        assert_eq!((got, asked), (None, 1));
        assert_eq!(log.end_offset(), 1);
        assert_eq!(log.stats().records_appended, 1);
        assert!(log.read(1).unwrap_or(None).is_none());
        let yes = log.append_refs_if(&refs, 5, &mut || true).unwrap();
        assert_eq!(yes, Some(1..2));
        assert_eq!(
            log.read(1).unwrap().unwrap().value.as_deref(),
            Some(&b"declined"[..])
        );
        assert_eq!(log.append(Record::new("after")).unwrap(), 2);
    }

    /// In a batch, pairs with one fingerprint but different ids (forced here) are
    /// not duplicates of each other; those with the same id are, of the first one.
    #[test]
    fn in_a_batch_only_the_same_id_is_a_duplicate_not_the_same_fingerprint() {
        let items: Vec<(Vec<u8>, Record)> = [&b"a"[..], b"b", b"a", b"c", b"b", b"a"]
            .iter()
            .map(|id| (id.to_vec(), Record::new("v")))
            .collect();
        let collide = [7, 7, 7, 3, 7, 7];
        assert_eq!(
            earlier_pairs_with_the_same_id(&items, &collide),
            [None, None, Some(0), None, Some(1), Some(0)]
        );
        let distinct = [1, 2, 1, 3, 2, 1];
        assert_eq!(
            earlier_pairs_with_the_same_id(&items, &distinct),
            [None, None, Some(0), None, Some(1), Some(0)]
        );
    }
}
