//! Lanes: a queue of [`QueueConfig::lanes`](super::QueueConfig::lanes) = N is N
//! sub-queues over the same log, so that consumers on different lanes share no lock
//! and no state (see `docs/queue.md`, "Lanes").
//!
//! Lane `i` owns the offsets of every N-th block of
//! [`QueueConfig::lane_block`](super::QueueConfig::lane_block) offsets (B, 1,024 by
//! default): `(offset / B) % N == i`. Each lane has its own state, journal, snapshot, lock
//! and floor cursor; to a lane's state the other lanes' offsets are gaps, done, as
//! compacted offsets are. Lane 0 keeps the queue's own directory and files (a queue
//! of one lane is exactly a queue of earlier versions); lane `i > 0` lives in
//! `lane-<i>/` inside it and holds its floor in the cursor `queue-lane.<i>.<name>`.
//! The dead-letter log, its redrive file and the outcome feed are the queue's, in
//! lane 0's directory; every lane appends its dead letters there and reconciles at
//! open only the letters of the offsets it owns.
//!
//! The lane count and block are fixed when the queue is created, in the file `lanes`
//! of the queue's directory (`"LQN1" | count u32 | block u64 | crc32`, little-endian,
//! replaced durably), written before any lane's state. What each file's absence or damage means (fail closed):
//! - `lanes` damaged or unreadable: `Corrupt`.
//! - `lanes` missing: the queue has one lane (earlier versions wrote none), unless a
//!   `lane-*` directory exists: then `Corrupt`.
//! - A count or block other than the configured one: `InvalidConfig` (offsets
//!   cannot move between lanes: a lane's state would count another lane's records
//!   as done).
//! - A lane `i > 0` without state while lane 0 has state: `Corrupt` (the lanes are
//!   created from the last to lane 0, so no crash leaves this).

use std::cell::{Cell, RefCell};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering as AtomicOrdering};
use std::time::Duration;

use super::QueueStats;
use crate::checkpoint;
use crate::fs::FileSystem;
use crate::{Error, Log, Offset, Result};

/// Offsets per block by default: a lane owns whole blocks.
pub(crate) const DEFAULT_BLOCK: u64 = 1024;
/// The largest block.
pub(crate) const MAX_BLOCK: u64 = 1 << 30;
/// The most lanes a queue can have.
pub(crate) const MAX_LANES: u32 = 64;
/// The file holding the lane count, in the queue's directory.
pub(crate) const LANES_FILE: &str = "lanes";
const MAGIC: &[u8; 4] = b"LQN1";
/// Prefix of the floor cursors of lanes `i > 0` (`queue-lane.<i>.<name>`).
pub(crate) const CURSOR_PREFIX: &str = "queue-lane.";

/// Which offsets a lane owns: lane `index` of `count`, by blocks of `block`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lane {
    pub index: u32,
    pub count: u32,
    pub block: u64,
}

impl Default for Lane {
    fn default() -> Lane {
        Lane::ONLY
    }
}

impl Lane {
    /// The one lane of a queue without lanes: owns every offset.
    pub const ONLY: Lane = Lane {
        index: 0,
        count: 1,
        block: DEFAULT_BLOCK,
    };

    /// Lane `index` of `(count, block)` (`index < count`, `1 <= count <= MAX_LANES`,
    /// `1 <= block <= MAX_BLOCK`).
    pub fn new(index: u32, (count, block): (u32, u64)) -> Lane {
        debug_assert!(index < count && (1..=MAX_LANES).contains(&count));
        debug_assert!((1..=MAX_BLOCK).contains(&block));
        Lane {
            index,
            count,
            block,
        }
    }

    /// The lane count and block of this lane's queue.
    pub fn layout(self) -> Layout {
        (self.count, self.block)
    }

    /// Whether this is the only lane of its queue.
    #[inline]
    pub fn is_only(self) -> bool {
        self.count == 1
    }

    /// The lane owning `offset`, of this lane's queue.
    #[inline]
    pub fn owner(self, offset: Offset) -> u32 {
        ((offset / self.block) % u64::from(self.count)) as u32
    }

    /// True when this lane owns `offset`.
    #[inline]
    pub fn owns(self, offset: Offset) -> bool {
        self.is_only() || self.owner(offset) == self.index
    }

    /// The first offset at or after `offset` this lane owns (saturating at
    /// `Offset::MAX`).
    pub fn next_owned(self, offset: Offset) -> Offset {
        if self.owns(offset) {
            return offset;
        }
        let block = offset / self.block;
        let count = u64::from(self.count);
        let ahead = (u64::from(self.index) + count - block % count) % count;
        block
            .saturating_add(ahead)
            .saturating_mul(self.block)
            .max(offset)
    }

    /// How many offsets of `range` this lane owns.
    pub fn owned_in(self, range: Range<Offset>) -> u64 {
        if range.start >= range.end {
            return 0;
        }
        if self.is_only() {
            return range.end - range.start;
        }
        self.owned_below(range.end) - self.owned_below(range.start)
    }

    /// How many offsets below `end` this lane owns.
    fn owned_below(self, end: Offset) -> u64 {
        let count = u64::from(self.count);
        let blocks = end / self.block;
        // Whole rounds of `count` blocks hold one block of this lane each.
        let mut owned = (blocks / count) * self.block;
        let rest = blocks % count;
        if u64::from(self.index) < rest {
            owned += self.block;
        }
        if self.owner(end) == self.index {
            owned += end % self.block;
        }
        owned
    }

    /// The directory of this lane, inside the queue's directory `queue_dir`.
    pub fn dir(self, queue_dir: &Path) -> PathBuf {
        match self.index {
            0 => queue_dir.to_path_buf(),
            i => queue_dir.join(format!("lane-{i}")),
        }
    }
}

/// Every this many milliseconds of the queue's clock, every thread's lane moves on
/// to the next one.
const ROTATE_MS: i64 = 100;

/// Queues a thread remembers its number in (the most recent first); past this, the
/// oldest is forgotten (the thread then gets a new number there: only a lane
/// choice).
const NUMBERS_KEPT: usize = 16;

/// The lane of `count` a receive of the calling thread tries first, and the
/// thread's number on the queue (see [`Taker`]), at clock time
/// `now_ms`, on the queue identified by `queue` (its lane 0's address) whose
/// receiving threads `numbered` counts. A thread gets the queue's next number
/// when it first receives from it, and thread number `t` starts at lane
/// `(t + now_ms / ROTATE_MS) % count`: N consumer threads of a queue start on N
/// different lanes (they share no lock), whatever other queues they or other
/// threads consume, and all of them move on to the next lane together every
/// [`ROTATE_MS`], so that a consumer with a lane to itself still serves every lane
/// in turn (no lane's records wait for another lane to run dry), without ever
/// landing on another consumer's lane. (A lane visited by a second consumer while
/// its own has records moves the lane's state between the cores on every visit:
/// one call in 32 doing that cost a third of two consumers' rate.)
pub(crate) fn thread_lane(
    (queue, numbered): (usize, &AtomicUsize),
    count: usize,
    now_ms: i64,
) -> (usize, usize) {
    thread_local! {
        /// (queue, this thread's number there), the most recently used first.
        static NUMBERS: RefCell<Vec<(usize, usize)>> = const { RefCell::new(Vec::new()) };
        /// `NUMBERS`' first entry, read on every receive: a plain cell (no
        /// destructor to register, no borrow flag) costs a load, where the `Vec`
        /// behind its `RefCell` cost some 40 instructions per receive.
        static LAST: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    }
    let own = match LAST.get() {
        (q, own) if q == queue && queue != 0 => own,
        _ => {
            let own = number_of(&NUMBERS, queue, numbered);
            LAST.set((queue, own));
            own
        }
    };
    let epoch = (now_ms.max(0) / ROTATE_MS) as u64;
    let lane = ((own as u64).wrapping_add(epoch) % count as u64) as usize;
    (lane, own)
}

/// The calling thread's number on `queue` from `numbers` (moved to the front), or
/// the queue's next one.
fn number_of(
    numbers: &'static std::thread::LocalKey<RefCell<Vec<(usize, usize)>>>,
    queue: usize,
    numbered: &AtomicUsize,
) -> usize {
    numbers.with(|numbers| {
        let mut numbers = numbers.borrow_mut();
        if let Some(&(q, own)) = numbers.first() {
            if q == queue {
                return own;
            }
        }
        let own = match numbers.iter().position(|&(q, _)| q == queue) {
            Some(i) => numbers.remove(i).1,
            None => numbered.fetch_add(1, AtomicOrdering::Relaxed),
        };
        numbers.insert(0, (queue, own));
        numbers.truncate(NUMBERS_KEPT);
        own
    })
}

/// How long a thread visiting a lane from its own dry one waits, once per receive,
/// before it takes a record of a lane another thread is at work on
/// ([`Taker::busy_for`]). Two threads taking turns on one lane's locks and state
/// move them between the cores on every call, and take fewer records together
/// than the lane's own consumer alone (0.45x at one record per receive): when one
/// consumer's lane ran dry before the other's, its help made the other lane's rest
/// take longer, not shorter. Backing off leaves the lane's consumer to run at its
/// own rate while the visitor still takes a record per receive (a receive never
/// returns nothing while records are ready); a lane nobody else is taking from
/// (its consumer stalled or gone) is served at once. A sleep, not a spin: the
/// visitor's core is free for the consumer it would disturb.
pub(crate) const VISIT_BACKOFF: Duration = Duration::from_micros(50);

#[cfg(test)]
thread_local! {
    /// Back-offs of this thread's visits (see [`VISIT_BACKOFF`]), for tests.
    pub(crate) static BACKOFFS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A lane taken from within this many milliseconds of the queue's clock by
/// another thread has that thread at work on it.
const BUSY_MS: i64 = 1;

/// Which thread last took records from a lane, and when (see [`VISIT_BACKOFF`]).
#[derive(Debug, Default)]
pub(crate) struct Taker {
    /// The thread's number on the queue, plus one (0: nobody yet).
    thread: AtomicUsize,
    at_ms: AtomicI64,
}

impl Taker {
    /// Thread `thread` (its number on the queue) took records at `now_ms`. Stores
    /// only on change: the lane's own consumer writes its line about once a
    /// millisecond, not on every call.
    pub fn note(&self, thread: usize, now_ms: i64) {
        let thread = thread.wrapping_add(1);
        if self.thread.load(AtomicOrdering::Relaxed) != thread {
            self.thread.store(thread, AtomicOrdering::Relaxed);
        }
        if self.at_ms.load(AtomicOrdering::Relaxed) != now_ms {
            self.at_ms.store(now_ms, AtomicOrdering::Relaxed);
        }
    }

    /// Whether a thread other than `thread` took records within [`BUSY_MS`] before
    /// `now_ms` (a take "after" `now_ms`, from before the clock went back, is not
    /// taken for work going on: visitors would otherwise back off until the clock
    /// caught up).
    pub fn busy_for(&self, thread: usize, now_ms: i64) -> bool {
        let last = self.thread.load(AtomicOrdering::Relaxed);
        let age_ms = now_ms.saturating_sub(self.at_ms.load(AtomicOrdering::Relaxed));
        last != 0 && last != thread.wrapping_add(1) && (0..=BUSY_MS).contains(&age_ms)
    }
}

/// The stats of a queue of two sets of lanes, from theirs: counts add up, the
/// floor is the lower one.
pub(crate) fn merge_stats(a: QueueStats, b: QueueStats) -> QueueStats {
    QueueStats {
        ack_floor: a.ack_floor.min(b.ack_floor),
        in_flight: a.in_flight + b.in_flight,
        backlog: a.backlog + b.backlog,
        delayed: a.delayed + b.delayed,
        acked_total: a.acked_total + b.acked_total,
        redelivered_total: a.redelivered_total + b.redelivered_total,
        dead_lettered_total: a.dead_lettered_total + b.dead_lettered_total,
        corrupt_skipped: a.corrupt_skipped + b.corrupt_skipped,
        skipped_by_retention: a.skipped_by_retention + b.skipped_by_retention,
        consumer_lag: a.consumer_lag.max(b.consumer_lag),
        oldest_unacked_age_ms: a.oldest_unacked_age_ms.max(b.oldest_unacked_age_ms),
        tombstones_skipped: a.tombstones_skipped + b.tombstones_skipped,
        expired_total: a.expired_total + b.expired_total,
    }
}

/// The floor cursor's name of lane `index` (> 0) of queue `queue`.
pub(crate) fn cursor_name(queue: &str, index: u32) -> String {
    format!("{CURSOR_PREFIX}{index}.{queue}")
}

/// The queue and lane a lane cursor's name names, if it is one.
pub(crate) fn parse_cursor_name(name: &str) -> Option<(&str, u32)> {
    let rest = name.strip_prefix(CURSOR_PREFIX)?;
    let (index, queue) = rest.split_once('.')?;
    let index: u32 = index.parse().ok()?;
    (index > 0 && index < MAX_LANES).then_some((queue, index))
}

/// The lane count and block of a queue.
pub(crate) type Layout = (u32, u64);

fn encode((count, block): Layout) -> [u8; 20] {
    let mut out = [0u8; 20];
    out[..4].copy_from_slice(MAGIC);
    out[4..8].copy_from_slice(&count.to_le_bytes());
    out[8..16].copy_from_slice(&block.to_le_bytes());
    let crc = crc32fast::hash(&out[..16]);
    out[16..].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<Layout> {
    if bytes.len() != 20 || !bytes.starts_with(MAGIC) {
        return None;
    }
    let crc = u32::from_le_bytes(bytes[16..20].try_into().ok()?);
    if crc32fast::hash(&bytes[..16]) != crc {
        return None;
    }
    let count = u32::from_le_bytes(bytes[4..8].try_into().ok()?);
    let block = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
    let valid = (1..=MAX_LANES).contains(&count) && (1..=MAX_BLOCK).contains(&block);
    valid.then_some((count, block))
}

/// The lane count and block recorded in the directory `dir` of queue `name` of
/// `log`: `None` when no `lanes` file is there (a queue of one lane, or one not
/// created yet). `Corrupt` when the file is damaged, or missing beside lane
/// directories, or missing while the queue has state and the log still holds a
/// lane cursor of it (its lane directories lost too: opened as one lane, lane 0's
/// state would count the other lanes' records below its floor as done).
pub(crate) fn recorded(log: &Log, dir: &Path, name: &str) -> Result<Option<Layout>> {
    let fs = &*log.config().fs;
    let path = dir.join(LANES_FILE);
    if !fs.exists(&path) {
        let names = match fs.list(dir) {
            Ok(names) => names,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("list queue directory", dir, e)),
        };
        if let Some(lane) = names.iter().find(|n| n.starts_with("lane-")) {
            return Err(Error::corrupt(
                &path,
                0,
                None,
                format!("the lane count file is missing beside the lane directory {lane}"),
            ));
        }
        if fs.exists(&dir.join(super::journal::SNAPSHOT)) {
            let mut cursors = log.cursor_names().into_iter();
            if let Some(cursor) =
                cursors.find(|c| parse_cursor_name(c).is_some_and(|(queue, _)| queue == name))
            {
                return Err(Error::corrupt(
                    &path,
                    0,
                    None,
                    format!(
                        "the lane count file and every lane directory are missing, but the \
                         log holds the lane cursor {cursor}: the queue had lanes"
                    ),
                ));
            }
        }
        return Ok(None);
    }
    let bytes = checkpoint::read_small(fs, &path)
        .ok_or_else(|| Error::corrupt(&path, 0, None, "the lane count file cannot be read"))?;
    decode(&bytes)
        .map(Some)
        .ok_or_else(|| Error::corrupt(&path, 0, None, "the lane count file is damaged"))
}

/// The lane layout of the queue in `dir`: the recorded one, or one lane when no
/// `lanes` file is there (see [`recorded`] for what is `Corrupt`).
pub(crate) fn layout_of(log: &Log, dir: &Path, name: &str) -> Result<Layout> {
    Ok(recorded(log, dir, name)?.unwrap_or(Lane::ONLY.layout()))
}

/// Records the lane layout in the queue directory `dir`, durably.
pub(crate) fn record(fs: &dyn FileSystem, dir: &Path, layout: Layout) -> Result<()> {
    checkpoint::durable_replace(fs, dir, LANES_FILE, &encode(layout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_counts_agree_with_a_walk() {
        for (count, block) in [(1u32, 1024), (2, 1024), (3, 1024), (4, 5), (7, 1), (2, 3)] {
            for index in 0..count {
                let lane = Lane::new(index, (count, block));
                let mut owned = 0;
                for o in 0..(block * 9 + 17) {
                    assert_eq!(lane.owned_in(0..o), owned, "lane {index}/{count} below {o}");
                    if lane.owns(o) {
                        owned += 1;
                    }
                    let next = lane.next_owned(o);
                    assert!(next >= o && lane.owns(next), "next_owned({o}) = {next}");
                    assert!((o..next).all(|p| !lane.owns(p)), "skipped an owned offset");
                }
            }
        }
    }

    #[test]
    fn every_offset_has_exactly_one_lane() {
        for count in [1u32, 2, 5] {
            for o in (0..DEFAULT_BLOCK * 20).step_by(97) {
                let owners = (0..count)
                    .filter(|&i| Lane::new(i, (count, DEFAULT_BLOCK)).owns(o))
                    .count();
                assert_eq!(owners, 1);
            }
        }
    }

    #[test]
    fn next_owned_saturates_near_the_top() {
        let lane = Lane::new(1, (2, DEFAULT_BLOCK));
        let top = Offset::MAX - 5;
        let next = lane.next_owned(top);
        assert!(next >= top);
    }

    #[test]
    fn the_lanes_file_round_trips_and_every_flip_is_damage() {
        let b = encode((4, 1024));
        assert_eq!(decode(&b), Some((4, 1024)));
        for i in 0..b.len() {
            for bit in 0..8 {
                let mut c = b;
                c[i] ^= 1 << bit;
                assert_eq!(decode(&c), None, "flip at {i}.{bit}");
            }
        }
        assert_eq!(decode(&encode((0, 1024))), None);
        assert_eq!(decode(&encode((MAX_LANES + 1, 1024))), None);
        assert_eq!(decode(&encode((2, 0))), None);
        assert_eq!(decode(&encode((2, MAX_BLOCK + 1))), None);
        assert_eq!(decode(&b[..19]), None);
    }

    #[test]
    fn a_lane_is_busy_for_others_only_while_its_taker_is_at_work() {
        let taker = Taker::default();
        assert!(!taker.busy_for(0, 5), "nobody has taken from the lane yet");
        taker.note(0, 100);
        assert!(!taker.busy_for(0, 100), "the taker itself never waits");
        assert!(taker.busy_for(1, 100));
        assert!(taker.busy_for(1, 100 + BUSY_MS));
        assert!(
            !taker.busy_for(1, 101 + BUSY_MS),
            "a taker gone quiet is not at work"
        );
        taker.note(1, 102);
        assert!(!taker.busy_for(1, 102) && taker.busy_for(0, 102));
        assert!(
            !taker.busy_for(0, 50),
            "a take from before the clock went back"
        );
        // Thread numbers wrap around without a taker looking like nobody.
        taker.note(usize::MAX - 1, 7);
        assert!(taker.busy_for(0, 7) && !taker.busy_for(usize::MAX - 1, 7));
    }

    #[test]
    fn lane_cursor_names_parse_back() {
        assert_eq!(parse_cursor_name(&cursor_name("a.b", 3)), Some(("a.b", 3)));
        assert_eq!(parse_cursor_name("queue-lane.0.q"), None);
        assert_eq!(parse_cursor_name("queue.q"), None);
        assert_eq!(parse_cursor_name("queue-lane.x.q"), None);
    }
}
