//! Queue state on disk: a snapshot (`snapshot`, replaced durably) naming a
//! generation, and the journal of that generation (`journal-<gen>`), a preallocated
//! file written through a memory map.
//!
//! Journal format: frames of `crc32 u32 | count u32` followed by `count` 24-byte
//! events `offset u64 | deadline i64 | attempt u32 | kind u8 | 0 0 0`, the CRC
//! covering the count and the events (little-endian). A zero count ends the journal
//! (the file is zero-filled when created); so does a frame whose CRC fails (a torn
//! tail, never fsynced). Each open starts a new generation, so a journal is never
//! appended to after a torn tail.
//!
//! Snapshot format: `"LQS1" | generation u64 | floor u64 | next u64 | acked u64 |
//! redelivered u64 | dead_lettered u64 | corrupt_skipped u64 | count u64`, then
//! `count` 24-byte slots as events (kind = slot state), then (optional, absent in
//! snapshots from before issue 9) `dead_letter_end u64`, then a CRC32 of all before.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::state::{AckState, SlotState, Totals};
use crate::checkpoint;
use crate::fs::{FileHandle, FileSystem, Mapping, OpenMode};
use crate::{Error, Offset, Result};

pub(crate) const SNAPSHOT: &str = "snapshot";
const MAGIC: &[u8; 4] = b"LQS1";
pub(crate) const EVENT_LEN: usize = 24;
const FRAME_HEADER: usize = 8;

/// What one journal event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// Delivered with `attempt`, leased until `deadline`.
    Lease = 1,
    /// Acked: done.
    Ack = 2,
    /// Nacked: deliverable again at `deadline`.
    Nack = 3,
    /// The lease now ends at `deadline`.
    Extend = 4,
    /// Appended to the dead-letter log: done. `deadline` holds the dead-letter log's
    /// end offset after the append (0 when unknown, from older journals): every dead
    /// letter below it is accounted for (see `AckState::dead_letter_end`).
    DeadLetter = 5,
    /// Gone from the log (compacted away or deleted by retention): done.
    Gone = 6,
    /// `[offset, deadline)` could not be read (corrupt): done, counted.
    CorruptRange = 7,
    /// Never delivered, held back until `deadline` (delayed delivery).
    Delay = 8,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Lease,
            2 => Kind::Ack,
            3 => Kind::Nack,
            4 => Kind::Extend,
            5 => Kind::DeadLetter,
            6 => Kind::Gone,
            7 => Kind::CorruptRange,
            8 => Kind::Delay,
            _ => return None,
        })
    }
}

/// One state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    pub kind: Kind,
    pub offset: Offset,
    pub attempt: u32,
    pub deadline: i64,
}

fn encode_event(out: &mut Vec<u8>, kind: u8, offset: Offset, attempt: u32, deadline: i64) {
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&deadline.to_le_bytes());
    out.extend_from_slice(&attempt.to_le_bytes());
    out.extend_from_slice(&[kind, 0, 0, 0]);
}

fn decode_event(b: &[u8]) -> (u8, Offset, u32, i64) {
    let u64_at = |p: usize| u64::from_le_bytes(b[p..p + 8].try_into().expect("8 bytes"));
    (
        b[20],
        u64_at(0),
        u32::from_le_bytes(b[16..20].try_into().expect("4 bytes")),
        u64_at(8) as i64,
    )
}

/// Applies one event to the state (replay and live path share this).
pub(crate) fn apply(state: &mut AckState, e: Event) {
    match e.kind {
        Kind::Lease => {
            if e.attempt > 1 && e.offset >= state.floor {
                state.totals.redelivered += 1;
            }
            state.set(e.offset, SlotState::Leased, e.attempt, e.deadline);
        }
        Kind::Ack | Kind::DeadLetter => {
            if e.kind == Kind::DeadLetter && e.deadline > 0 {
                let end = e.deadline as u64;
                state.dead_letter_end = Some(state.dead_letter_end.map_or(end, |d| d.max(end)));
            }
            if e.offset >= state.floor && e.offset < state.next() {
                if e.kind == Kind::Ack {
                    state.totals.acked += 1;
                } else {
                    state.totals.dead_lettered += 1;
                }
            }
            state.set(e.offset, SlotState::Done, e.attempt, 0);
        }
        Kind::Gone => state.set(e.offset, SlotState::Done, e.attempt, 0),
        Kind::Delay => state.set(e.offset, SlotState::Waiting, 0, e.deadline),
        Kind::CorruptRange => {
            let end = e.deadline as u64;
            if e.offset < state.floor || e.offset >= state.next() {
                // Never delivered: the range lies at the cursor.
                let from = e.offset.max(state.next());
                state.totals.corrupt_skipped += end.saturating_sub(from);
                state.skip_to(end);
            } else {
                state.totals.corrupt_skipped += 1;
                state.set(e.offset, SlotState::Done, e.attempt, 0);
            }
        }
        Kind::Nack => {
            if let Some(s) = state.slot(e.offset) {
                state.set(e.offset, SlotState::Waiting, s.attempt, e.deadline);
            }
        }
        Kind::Extend => {
            if let Some(s) = state.slot(e.offset) {
                state.set(e.offset, s.state, s.attempt, e.deadline);
            }
        }
    }
}

/// The journal being written.
#[derive(Debug)]
pub(crate) struct Journal {
    dir: PathBuf,
    fs: Arc<dyn FileSystem>,
    generation: u64,
    file: Arc<dyn FileHandle>,
    map: Arc<dyn Mapping>,
    position: usize,
    capacity: usize,
    buf: Vec<u8>,
    /// Events written since the last sync.
    pub dirty: bool,
}

pub(crate) fn journal_name(generation: u64) -> String {
    format!("journal-{generation:020}")
}

impl Journal {
    /// Reads the snapshot and the journal it names, keeping only what names offsets
    /// in `log` (the queue passes `0..end`: state is never ahead of the log, and
    /// planted offsets cannot make the window huge; what lies below the log's start is
    /// kept so the caller can count what was skipped, see `AckState::clamp`). `None` when there is no valid snapshot (a
    /// new queue).
    pub fn load(fs: &dyn FileSystem, dir: &Path, log: Range<Offset>) -> Option<(u64, AckState)> {
        let bytes = checkpoint::read_small_unbounded(fs, &dir.join(SNAPSHOT))?;
        let (generation, mut state) = decode_snapshot(&bytes, log.clone())?;
        let path = dir.join(journal_name(generation));
        if let Some(j) = checkpoint::read_small_unbounded(fs, &path) {
            for mut e in decode_journal(&j) {
                if !log.contains(&e.offset) {
                    continue;
                }
                if e.kind == Kind::CorruptRange {
                    e.deadline = e.deadline.clamp(0, log.end as i64);
                }
                apply(&mut state, e);
            }
        }
        Some((generation, state))
    }

    /// Starts generation `generation`: creates its zeroed journal, then durably
    /// replaces the snapshot with `state` naming it, then removes older journals.
    /// The caller has made the log durable up to `state.next()`.
    pub fn create(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        generation: u64,
        capacity: usize,
        state: &AckState,
    ) -> Result<Journal> {
        let path = dir.join(journal_name(generation));
        let io = |e| Error::io("create queue journal", &path, e);
        let file = fs.open(&path, OpenMode::Create).map_err(io)?;
        file.set_len(0).map_err(io)?;
        file.allocate(capacity as u64).map_err(io)?;
        file.sync_data().map_err(io)?;
        let map = file.map(capacity).map_err(io)?;
        checkpoint::durable_replace(&*fs, dir, SNAPSHOT, &encode_snapshot(generation, state))?;
        let keep = journal_name(generation);
        if let Ok(names) = fs.list(dir) {
            for n in names {
                if n.starts_with("journal-") && n != keep {
                    let _ = fs.remove_file(&dir.join(n));
                }
            }
        }
        Ok(Journal {
            dir: dir.to_path_buf(),
            fs,
            generation,
            file,
            map,
            position: 0,
            capacity,
            buf: Vec::with_capacity(4096),
            dirty: false,
        })
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Room for a frame of `events` events?
    pub fn fits(&self, events: usize) -> bool {
        self.position + FRAME_HEADER + events * EVENT_LEN < self.capacity
    }

    /// Largest number of events in one frame of an empty journal.
    pub fn max_events(&self) -> usize {
        (self.capacity - FRAME_HEADER - 1) / EVENT_LEN
    }

    /// Writes one frame into the mapping (and so to the OS). The caller checked
    /// [`Journal::fits`].
    pub fn write(&mut self, events: impl IntoIterator<Item = Event>) -> Result<()> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; FRAME_HEADER]);
        for e in events {
            encode_event(&mut self.buf, e.kind as u8, e.offset, e.attempt, e.deadline);
        }
        let count = ((self.buf.len() - FRAME_HEADER) / EVENT_LEN) as u32;
        if count == 0 {
            return Ok(());
        }
        self.buf[4..8].copy_from_slice(&count.to_le_bytes());
        let crc = crc32fast::hash(&self.buf[4..]);
        self.buf[0..4].copy_from_slice(&crc.to_le_bytes());
        debug_assert!(self.position + self.buf.len() < self.capacity);
        self.map
            .write(self.position, &self.buf)
            .map_err(|e| Error::io("write queue journal", self.path(), e))?;
        self.position += self.buf.len();
        self.dirty = true;
        Ok(())
    }

    /// fsyncs the journal.
    pub fn sync(&mut self) -> Result<()> {
        if self.dirty {
            self.file
                .sync_data()
                .map_err(|e| Error::io("sync queue journal", self.path(), e))?;
            self.dirty = false;
        }
        Ok(())
    }

    fn path(&self) -> PathBuf {
        self.dir.join(journal_name(self.generation))
    }

    /// The file system of the journal.
    pub fn fs(&self) -> &Arc<dyn FileSystem> {
        &self.fs
    }
}

/// The valid frames of a journal, in order, up to the first zero or torn frame.
pub(crate) fn decode_journal(bytes: &[u8]) -> Vec<Event> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + FRAME_HEADER <= bytes.len() {
        let crc = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes"));
        let count =
            u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes")) as usize;
        let Some(end) = count
            .checked_mul(EVENT_LEN)
            .and_then(|n| n.checked_add(pos + FRAME_HEADER))
            .filter(|&end| count > 0 && end <= bytes.len())
        else {
            break;
        };
        let body = &bytes[pos + FRAME_HEADER..end];
        if crc32fast::hash(&bytes[pos + 4..end]) != crc {
            break;
        }
        let before = out.len();
        for chunk in body.chunks_exact(EVENT_LEN) {
            let (kind, offset, attempt, deadline) = decode_event(chunk);
            let Some(kind) = Kind::from_u8(kind) else {
                out.truncate(before);
                return out;
            };
            out.push(Event {
                kind,
                offset,
                attempt,
                deadline,
            });
        }
        pos = end;
    }
    out
}

pub(crate) fn encode_snapshot(generation: u64, state: &AckState) -> Vec<u8> {
    let pending: Vec<_> = state.pending().collect();
    let mut out = Vec::with_capacity(76 + pending.len() * EVENT_LEN);
    out.extend_from_slice(MAGIC);
    let t = state.totals;
    for v in [
        generation,
        state.floor,
        state.next(),
        t.acked,
        t.redelivered,
        t.dead_lettered,
        t.corrupt_skipped,
        pending.len() as u64,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for (o, s) in pending {
        encode_event(&mut out, s.state as u8, o, s.attempt, s.deadline);
    }
    if let Some(end) = state.dead_letter_end {
        out.extend_from_slice(&end.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a snapshot, keeping only offsets in `log` (see [`Journal::load`]).
pub(crate) fn decode_snapshot(bytes: &[u8], log: Range<Offset>) -> Option<(u64, AckState)> {
    let (body, crc) = bytes.split_at(bytes.len().checked_sub(4)?);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?) || !body.starts_with(MAGIC)
    {
        return None;
    }
    let u64_at = |i: usize| {
        body.get(4 + 8 * i..12 + 8 * i)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let generation = u64_at(0)?;
    let floor = u64_at(1)?;
    let next = u64_at(2)?;
    let count = usize::try_from(u64_at(7)?).ok()?;
    let mut slots = body.get(68..)?;
    let slot_bytes = count.checked_mul(EVENT_LEN)?;
    // The optional trailer: the dead-letter log's end (`AckState::dead_letter_end`).
    // Slot bytes are a multiple of 24, so 8 more bytes cannot be mistaken for slots.
    let mut dead_letter_end = None;
    if slots.len() == slot_bytes.checked_add(8)? {
        let (s, end) = slots.split_at(slot_bytes);
        dead_letter_end = Some(u64::from_le_bytes(end.try_into().ok()?));
        slots = s;
    }
    if next < floor || slots.len() != slot_bytes || generation > u64::MAX / 2 {
        return None;
    }
    let (floor_in, next_in) = (floor, next);
    let floor = floor.clamp(log.start, log.end.max(log.start));
    let next = next.clamp(floor, log.end.max(floor));
    let mut state = AckState::new(floor);
    state.dead_letter_end = dead_letter_end;
    state.totals = Totals {
        acked: u64_at(3)?,
        redelivered: u64_at(4)?,
        dead_lettered: u64_at(5)?,
        corrupt_skipped: u64_at(6)?,
    };
    for chunk in slots.chunks_exact(EVENT_LEN) {
        let (kind, offset, attempt, deadline) = decode_event(chunk);
        let st = match kind {
            1 => SlotState::Leased,
            2 => SlotState::Waiting,
            _ => return None,
        };
        if offset < floor_in || offset >= next_in {
            return None;
        }
        if (floor..next).contains(&offset) {
            state.set(offset, st, attempt, deadline);
        }
    }
    state.skip_to(next);
    Some((generation, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips() {
        let mut s = AckState::new(5);
        s.set(6, SlotState::Leased, 2, 77);
        s.set(9, SlotState::Waiting, 1, -3);
        s.skip_to(12);
        s.totals.acked = 4;
        s.dead_letter_end = Some(17);
        let bytes = encode_snapshot(3, &s);
        let (g, d) = decode_snapshot(&bytes, 0..100).unwrap();
        assert_eq!(g, 3);
        assert_eq!((d.floor, d.next(), d.totals), (6, 12, s.totals));
        assert_eq!(d.dead_letter_end, Some(17));
        assert_eq!(
            d.pending().collect::<Vec<_>>(),
            s.pending().collect::<Vec<_>>()
        );
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode_snapshot(&b, 0..100).is_none(), "flip at {i}");
        }
        assert!(decode_snapshot(&bytes[..bytes.len() - 1], 0..100).is_none());
        assert!(decode_snapshot(&[], 0..100).is_none());
        // Only what names offsets inside the log is kept.
        let (_, d) = decode_snapshot(&bytes, 7..10).unwrap();
        assert_eq!((d.floor, d.next()), (9, 10));
        assert_eq!(d.pending().map(|(o, _)| o).collect::<Vec<_>>(), vec![9]);
    }

    #[test]
    fn planted_offsets_cannot_blow_up_the_window() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC);
        for v in [1u64, 0, u64::MAX - 1, 0, 0, 0, 0, 0] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let (_, d) = decode_snapshot(&bytes, 0..5).unwrap();
        assert_eq!((d.floor, d.next()), (5, 5));
    }

    #[test]
    fn journal_stops_at_torn_frame() {
        let mut bytes = Vec::new();
        for (count, base) in [(1u32, 0u64), (2, 10), (1, 20)] {
            let mut frame = vec![0u8; FRAME_HEADER];
            for i in 0..count {
                encode_event(&mut frame, Kind::Ack as u8, base + u64::from(i), 1, 0);
            }
            frame[4..8].copy_from_slice(&count.to_le_bytes());
            let crc = crc32fast::hash(&frame[4..]);
            frame[0..4].copy_from_slice(&crc.to_le_bytes());
            bytes.extend_from_slice(&frame);
        }
        bytes.extend_from_slice(&[0u8; 100]);
        let all: Vec<_> = decode_journal(&bytes).iter().map(|e| e.offset).collect();
        assert_eq!(all, vec![0, 10, 11, 20]);
        let mut torn = bytes.clone();
        torn[FRAME_HEADER + EVENT_LEN + FRAME_HEADER + 3] ^= 1;
        let some: Vec<_> = decode_journal(&torn).iter().map(|e| e.offset).collect();
        assert_eq!(some, vec![0]);
        assert!(decode_journal(&bytes[..5]).is_empty());
    }
}
