//! Queue state on disk: a snapshot (`snapshot`, replaced durably) naming a
//! generation, and the journal of that generation (`journal-<gen>`), a preallocated
//! file written through a memory map. Reading them back at open is `replay.rs`.
//!
//! Journal format 2 (named by an `LQS2` snapshot): a 1024-byte header holding two
//! synced-length slots, one per 512-byte sector (bytes 0 and 512), then frames from
//! byte 1024. A slot is `"LQJS" | generation u64 | sequence u64 | synced u64 | crc32`
//! (32 bytes, little-endian, the CRC covering the 28 bytes before it): every frame
//! below byte `synced` was fsynced before the slot was written. [`Journal::sync`]
//! fdatasyncs the frames, then writes the next sequence into the older slot and
//! fdatasyncs again, so the newest valid slot never claims more than is durable and a
//! torn slot write leaves the other slot (the previous sync) intact. No slot: nothing
//! was synced (a journal is zero-filled when created).
//!
//! Frames (both formats): `crc32 u32 | count u32` followed by `count` 24-byte events
//! `offset u64 | deadline i64 | attempt u32 | kind u8 | 0 0 0`, the CRC covering the
//! count and the events (little-endian). A zero count ends the journal. Below the
//! synced length a frame that fails its check is damage (`Error::Corrupt`); at or past
//! it, it is a torn tail, never fsynced, and replay stops there. Each open starts a new
//! generation, so a journal is never appended to after a torn tail.
//!
//! Journal format 1 (named by an `LQS1` snapshot, written by earlier versions): frames
//! from byte 0, no header; nothing is known to be synced, so replay stops at the first
//! bad frame, as those versions did. Opening such a queue starts a format-2 journal.
//!
//! Snapshot format: `"LQS2" | generation u64 | floor u64 | next u64 | acked u64 |
//! redelivered u64 | dead_lettered u64 | corrupt_skipped u64 | count u64`, then
//! `count` 24-byte slots as events (kind = slot state), then (optional, absent in
//! snapshots from before issue 9) `dead_letter_end u64`, then (optional) the log's
//! crash epoch `u64`, then (only with the outcome feed on, issue 13)
//! `outcome_end u64` (an absent field before it is `u64::MAX`), then a CRC32 of all
//! before.
//! `"LQS1"` is the same layout naming a format-1 journal.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::state::{AckState, SlotState, Totals};
pub(crate) use super::synced::FRAMES_START;
use super::synced::{encode_slot, slot_position};
use crate::checkpoint;
use crate::fs::{FileHandle, FileSystem, Mapping, OpenMode};
use crate::{Error, Offset, Result};

pub(crate) const SNAPSHOT: &str = "snapshot";
/// Snapshot naming a format-1 journal (earlier versions; read, never written).
const MAGIC_V1: &[u8; 4] = b"LQS1";
/// Snapshot naming a format-2 journal.
const MAGIC: &[u8; 4] = b"LQS2";
pub(crate) const EVENT_LEN: usize = 24;
pub(crate) const FRAME_HEADER: usize = 8;

/// The layout of a journal, named by the snapshot that names the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// Frames from byte 0, no synced length (earlier versions).
    V1,
    /// Synced-length slots, then frames from [`FRAMES_START`].
    V2,
}

impl Format {
    /// Byte where the frames begin.
    pub fn frames_start(self) -> usize {
        match self {
            Format::V1 => 0,
            Format::V2 => FRAMES_START,
        }
    }
}

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
    /// [`Queue::purge`](super::Queue::purge): every offset up to and including
    /// `offset` is done.
    Purge = 9,
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
            9 => Kind::Purge,
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
                state.totals.corrupt_skipped += state.lane.owned_in(from..end);
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
        Kind::Purge => {
            state.purge(e.offset.saturating_add(1));
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
    /// Sequence of the synced-length slot last written (0: none yet).
    sequence: u64,
    /// Events written since the last sync.
    pub dirty: bool,
    /// End of the bytes whose pages were asked to be faulted in (see
    /// [`Journal::prefault_ahead`]).
    prefaulted: usize,
}

/// Bytes of journal pages faulted in ahead of the write position at a time.
const PREFAULT_CHUNK: usize = 256 << 10;

/// Pages of a journal to fault in, handed out under the queue's core lock and done
/// after it is released (see [`Journal::prefault_ahead`]).
pub(crate) struct Prefault {
    map: Arc<dyn Mapping>,
    pos: usize,
    len: usize,
}

impl Prefault {
    /// Faults the pages in. Only a hint: the data is not touched, so this may run
    /// while the journal is written elsewhere.
    pub fn run(self) {
        self.map.prefault(self.pos, self.len);
    }
}

pub(crate) fn journal_name(generation: u64) -> String {
    format!("journal-{generation:020}")
}

impl Journal {
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
        // The first pages now, the rest ahead of the writes (see `prefault_ahead`).
        map.prefault(0, FRAMES_START + PREFAULT_CHUNK);
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
            position: FRAMES_START,
            capacity,
            buf: Vec::with_capacity(4096),
            sequence: 0,
            dirty: false,
            prefaulted: FRAMES_START + PREFAULT_CHUNK,
        })
    }

    /// The next stretch of pages to fault in, once the writes come within half a
    /// chunk of the stretch faulted in so far; `None` otherwise. The first write to a
    /// page of a fresh journal is a page fault (the kernel reads the page in and makes
    /// it writable: microseconds); run under the core lock it would stall every other
    /// consumer, so the caller runs the returned [`Prefault`] after unlocking.
    pub fn prefault_ahead(&mut self) -> Option<Prefault> {
        if self.position + PREFAULT_CHUNK / 2 < self.prefaulted || self.prefaulted >= self.capacity
        {
            return None;
        }
        let pos = self.prefaulted;
        let len = PREFAULT_CHUNK.min(self.capacity - pos);
        self.prefaulted = pos + len;
        Some(Prefault {
            map: Arc::clone(&self.map),
            pos,
            len,
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
        (self.capacity - FRAMES_START - FRAME_HEADER - 1) / EVENT_LEN
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
        let buf = std::mem::take(&mut self.buf);
        let r = self.write_frame(&buf);
        self.buf = buf;
        r
    }

    /// Writes one whole frame (as [`encode_one`] or [`Journal::write`] makes it)
    /// into the mapping. The caller checked [`Journal::fits`].
    pub fn write_frame(&mut self, frame: &[u8]) -> Result<()> {
        debug_assert!(self.position + frame.len() < self.capacity);
        self.map
            .write(self.position, frame)
            .map_err(|e| Error::io("write queue journal", self.path(), e))?;
        self.position += frame.len();
        self.dirty = true;
        Ok(())
    }

    /// Makes every frame written so far durable and records how far that is: fsyncs
    /// the frames, then writes the synced length into the older slot and fsyncs again.
    /// Two fsyncs, so that the slot is written only once the frames it covers are
    /// durable: a power loss can tear the slot being written (the other one still
    /// holds the previous sync) or the frames past the last sync, never make a slot
    /// claim frames that are not on disk. Replay can then tell damage below the
    /// synced length (reported) from a torn tail (cut).
    pub fn sync(&mut self) -> Result<()> {
        if self.dirty {
            let io = |e| Error::io("sync queue journal", self.path(), e);
            self.file.sync_data().map_err(io)?;
            let sequence = self.sequence + 1;
            let slot = encode_slot(self.generation, sequence, self.position as u64);
            self.map
                .write(slot_position(sequence), &slot)
                .map_err(|e| Error::io("write queue journal synced length", self.path(), e))?;
            self.file.sync_data().map_err(io)?;
            self.sequence = sequence;
            self.dirty = false;
        }
        Ok(())
    }

    fn path(&self) -> PathBuf {
        self.dir.join(journal_name(self.generation))
    }

    #[cfg(test)]
    fn map_bytes(&self) -> &[u8] {
        // SAFETY: the mapping lives as long as `self`; tests read what they wrote.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.map.len()) }
    }

    /// The file system of the journal.
    pub fn fs(&self) -> &Arc<dyn FileSystem> {
        &self.fs
    }
}

/// The frame of the one event `e`, as [`Journal::write`] writes it: encoded and
/// checksummed by the caller before it takes the queue's lock (an ack's frame
/// depends on its receipt only), so that only the copy is done under it.
pub(crate) fn encode_one(e: Event) -> [u8; FRAME_HEADER + EVENT_LEN] {
    let mut out = [0u8; FRAME_HEADER + EVENT_LEN];
    out[4..8].copy_from_slice(&1u32.to_le_bytes());
    out[8..16].copy_from_slice(&e.offset.to_le_bytes());
    out[16..24].copy_from_slice(&e.deadline.to_le_bytes());
    out[24..28].copy_from_slice(&e.attempt.to_le_bytes());
    out[28] = e.kind as u8;
    let crc = crc32fast::hash(&out[4..]);
    out[0..4].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The length of the frame whose 8-byte header is `header` (header included); `None`
/// for a zero count, which ends the journal.
pub(crate) fn frame_len(header: &[u8]) -> Option<u64> {
    let count = u32::from_le_bytes(header[4..8].try_into().ok()?);
    (count > 0).then(|| FRAME_HEADER as u64 + u64::from(count) * EVENT_LEN as u64)
}

/// Appends the events of the whole frame `frame` (header included, its length given
/// by [`frame_len`]) to `out`; on a failed check, appends nothing and says why.
pub(crate) fn decode_frame(
    frame: &[u8],
    out: &mut Vec<Event>,
) -> std::result::Result<(), &'static str> {
    if frame.len() < FRAME_HEADER || !(frame.len() - FRAME_HEADER).is_multiple_of(EVENT_LEN) {
        return Err("frame length is not a whole number of events");
    }
    let crc = u32::from_le_bytes(frame[0..4].try_into().expect("4 bytes"));
    if crc32fast::hash(&frame[4..]) != crc {
        return Err("frame CRC mismatch");
    }
    let before = out.len();
    for chunk in frame[FRAME_HEADER..].chunks_exact(EVENT_LEN) {
        let (kind, offset, attempt, deadline) = decode_event(chunk);
        let Some(kind) = Kind::from_u8(kind) else {
            out.truncate(before);
            return Err("unknown event kind");
        };
        out.push(Event {
            kind,
            offset,
            attempt,
            deadline,
        });
    }
    Ok(())
}

/// One frame holding `events`, as [`Journal::write`] writes it.
#[cfg(test)]
pub(crate) fn encode_frame(events: &[Event]) -> Vec<u8> {
    let mut out = vec![0u8; FRAME_HEADER];
    for e in events {
        encode_event(&mut out, e.kind as u8, e.offset, e.attempt, e.deadline);
    }
    out[4..8].copy_from_slice(&(events.len() as u32).to_le_bytes());
    let crc = crc32fast::hash(&out[4..]);
    out[0..4].copy_from_slice(&crc.to_le_bytes());
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
    // The optional trailer: 8 bytes, the dead-letter log's end; 16 bytes, that end
    // (u64::MAX: none) and the log's crash epoch; 24 bytes, those two and the
    // outcomes log's end (written only when the outcome feed is on).
    match (state.dead_letter_end, state.log_epoch) {
        (end, epoch) if state.outcome_end.is_some() => {
            out.extend_from_slice(&end.unwrap_or(u64::MAX).to_le_bytes());
            out.extend_from_slice(&epoch.unwrap_or(u64::MAX).to_le_bytes());
            out.extend_from_slice(&state.outcome_end.unwrap_or(u64::MAX).to_le_bytes());
        }
        (end, Some(epoch)) => {
            out.extend_from_slice(&end.unwrap_or(u64::MAX).to_le_bytes());
            out.extend_from_slice(&epoch.to_le_bytes());
        }
        (Some(end), None) => out.extend_from_slice(&end.to_le_bytes()),
        (None, None) => {}
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a snapshot, keeping only offsets in `log` (see `replay::load`): the
/// format of the journal it names, its generation and the state; `None` when it fails
/// a check.
pub(crate) fn decode_snapshot(bytes: &[u8], log: Range<Offset>) -> Option<(Format, u64, AckState)> {
    let (body, crc) = bytes.split_at(bytes.len().checked_sub(4)?);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let format = if body.starts_with(MAGIC) {
        Format::V2
    } else if body.starts_with(MAGIC_V1) {
        Format::V1
    } else {
        return None;
    };
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
    // The optional trailer: the dead-letter log's end (`AckState::dead_letter_end`),
    // then the log's crash epoch (`AckState::log_epoch`). Slot bytes are a multiple
    // of 24, so 8 or 16 more bytes cannot be mistaken for slots.
    let mut dead_letter_end = None;
    let mut log_epoch = None;
    let mut outcome_end = None;
    let trailer = slots.len().checked_sub(slot_bytes)?;
    if trailer == 8 || trailer == 16 || trailer == 24 {
        let (s, t) = slots.split_at(slot_bytes);
        let end = u64::from_le_bytes(t[..8].try_into().ok()?);
        let field = |i: usize| u64::from_le_bytes(t[8 * i..8 * i + 8].try_into().expect("8"));
        if trailer == 24 {
            // Written only with the outcome feed on: its end is never "none".
            dead_letter_end = (end != u64::MAX).then_some(end);
            log_epoch = Some(field(1)).filter(|&e| e != u64::MAX);
            outcome_end = Some(field(2)).filter(|&e| e != u64::MAX);
            outcome_end?;
        } else if trailer == 16 {
            dead_letter_end = (end != u64::MAX).then_some(end);
            log_epoch = Some(field(1));
        } else {
            dead_letter_end = Some(end);
        }
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
    state.log_epoch = log_epoch;
    state.outcome_end = outcome_end;
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
    Some((format, generation, state))
}

#[cfg(test)]
mod tests;
