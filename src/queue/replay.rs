//! Reading a queue's state at open: the snapshot, the journal it names (only as far as
//! it was written: O(state + journal written), never O(journal capacity)), and the rule
//! that tells a new queue from one whose snapshot is gone.
//!
//! Fail closed: a snapshot that is damaged, or missing while the queue has other state,
//! and a journal that is missing, or damaged below its synced length, are
//! `Error::Corrupt` naming the file; an I/O error reading them is `Error::Io`. Never a
//! silent restart, which would deliver every acked record again (or, with
//! `StartPosition::Latest`, skip every unacked one).
//!
//! A queue directory is NEW when it has no `snapshot` and nothing in it holds state:
//! no `floor`, no `redrive`, no other file the queue writes once open (their `.tmp`
//! files included), no journal with a non-zero byte among its first
//! [`JOURNAL_DATA_PROBE`] bytes, and a dead-letter log without records. The queue's
//! lock file and `snapshot.tmp` do not count. Creation (see `Queue::open`) writes, in
//! order: the lock file, the dead-letter log (empty), `journal-1` (zero-filled), the
//! `snapshot` naming it (durable replace: after this the queue exists), then `floor`.
//! A crash before the snapshot's rename is durable leaves only files that do not
//! count, so the next open creates the queue again (nothing was promised: `open` had
//! not returned). Every later state change happens after the snapshot exists, and the
//! snapshot is only ever replaced by a rename, never removed: a directory with state
//! and no snapshot lost its snapshot, which is `Corrupt`.

use std::ops::Range;
use std::path::Path;

use super::journal::{self, Event, Format, Kind, FRAME_HEADER, SNAPSHOT};
use super::lanes::Lane;
use super::state::AckState;
use super::synced::{self, Synced};
use crate::fs::{FileHandle, FileSystem, OpenMode};
use crate::{Error, Log, Offset, Result};

/// Bytes read per read call when scanning a journal.
const CHUNK: usize = 64 << 10;
/// Bytes of a journal looked at to decide whether it holds anything: both header slots
/// and the first frame header of format 2, the first frame header of format 1.
pub(crate) const JOURNAL_DATA_PROBE: usize = synced::FRAMES_START + FRAME_HEADER;
/// Name of the queue's lock file (see `Queue::open`); defined with the errors that
/// recognize it in a path.
pub(crate) use crate::error::QUEUE_LOCK_FILE as LOCK_FILE;

/// Reads the queue state in `dir`: the snapshot's generation and the state it and
/// its journal hold, keeping only what names offsets in `log` (the queue passes
/// `0..end`: state is never ahead of the log, and planted offsets cannot make the
/// window huge; what lies below the log's start is kept so the caller can count what
/// was skipped, see `AckState::clamp`). `None`: a new queue (see the module docs);
/// `side_logs` are the queue's dead-letter and outcomes logs, looked at only then.
/// When the snapshot accounts for an outcomes log, the acks the journal applies (a
/// leased record settled) are appended to `acks` as `(offset, attempt)`, in journal
/// order: the outcomes reconciliation (`outcomes.rs`) fills in those missing from it.
pub(crate) fn load(
    fs: &dyn FileSystem,
    (dir, lane): (&Path, Lane),
    log: Range<Offset>,
    side_logs: (&Log, Option<&Log>),
    acks: &mut Vec<(Offset, u32)>,
) -> Result<Option<(u64, AckState)>> {
    let path = dir.join(SNAPSHOT);
    let Some(bytes) = read_whole(fs, &path, "read queue snapshot")? else {
        check_new(fs, dir, side_logs)?;
        return Ok(None);
    };
    let (format, generation, mut state) = journal::decode_snapshot(&bytes, log.clone())
        .ok_or_else(|| {
            Error::corrupt(
                &path,
                0,
                None,
                "queue snapshot fails its check (magic, layout or CRC)",
            )
        })?;
    // Before the journal: its events count offsets by the lane's ownership (a
    // corrupt range counts only the lane's own offsets in it).
    state.lane = lane;
    let acks = state.outcome_end.is_some().then_some(acks);
    replay_journal(fs, dir, (format, generation), log, &mut state, acks)?;
    Ok(Some((generation, state)))
}

/// How far into the log `state` may still be trusted: the log's end, or lower when a
/// crash recovery of the log since `state` was written left the log ending below
/// what `state` may name (those offsets may hold new records now: promise 4, see
/// `crash_history.rs`). State from before the epoch was kept trusts the log's end
/// (the old behaviour). A history that does not reach back to the state's epoch is
/// `Corrupt` naming it (way back: `Queue::repair`).
pub(crate) fn usable_end(log: &Log, state: &AckState) -> Result<Offset> {
    use crate::crash_history::{LostSince, CRASH_HISTORY};
    let end = log.end_offset();
    let Some(epoch) = state.log_epoch else {
        return Ok(end);
    };
    match log.inner.crash_history.lost_since(epoch) {
        LostSince::Nothing => Ok(end),
        LostSince::From(lost) => Ok(lost.min(end)),
        LostSince::Unknown => Err(Error::corrupt(
            log.dir().join(CRASH_HISTORY),
            0,
            None,
            format!(
                "the queue state was written at crash epoch {epoch}, which the log's crash \
                 history does not reach (it is at epoch {}): which of its offsets were \
                 reused cannot be told",
                log.inner.crash_history.epoch()
            ),
        )),
    }
}

/// Reads a whole file; `None` when it does not exist.
pub(super) fn read_whole(
    fs: &dyn FileSystem,
    path: &Path,
    op: &'static str,
) -> Result<Option<Vec<u8>>> {
    let f = match fs.open(path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(op, path, e)),
    };
    let len = f.size().map_err(|e| Error::io(op, path, e))?;
    let mut buf = Vec::new();
    usize::try_from(len)
        .ok()
        .and_then(|n| buf.try_reserve_exact(n).ok().map(|()| n))
        .map(|n| buf.resize(n, 0))
        .ok_or_else(|| Error::corrupt(path, 0, None, format!("{len} bytes: too large")))?;
    f.read_exact_at(&mut buf, 0)
        .map_err(|e| Error::io(op, path, e))?;
    Ok(Some(buf))
}

/// No snapshot: succeeds when nothing in `dir` holds queue state (a new queue, or one
/// whose creation crashed before its snapshot was durable), else `Corrupt` naming the
/// missing snapshot and what was found.
fn check_new(fs: &dyn FileSystem, dir: &Path, side_logs: (&Log, Option<&Log>)) -> Result<()> {
    let (dead_letters, outcomes) = side_logs;
    let snapshot = dir.join(SNAPSHOT);
    let missing = |what: String| {
        Err(Error::corrupt(
            &snapshot,
            0,
            None,
            format!("queue snapshot is missing, but {what}: the queue existed"),
        ))
    };
    let mut names = fs
        .list(dir)
        .map_err(|e| Error::io("list queue directory", dir, e))?;
    names.sort();
    let snapshot_tmp = format!("{SNAPSHOT}{}", crate::checkpoint::TMP_SUFFIX);
    for name in names {
        // The lane layout and the other lanes come before lane 0's state (see
        // `lanes.rs`): they do not say that it existed.
        let lane_file = name == super::lanes::LANES_FILE || name.starts_with("lane-");
        if name == LOCK_FILE || name == snapshot_tmp || lane_file {
            continue;
        }
        if name == super::DEAD_LETTER_DIR {
            if dead_letters.end_offset() > 0 {
                return missing(format!(
                    "its dead-letter log holds {} records",
                    dead_letters.end_offset()
                ));
            }
            continue;
        }
        if name == super::OUTCOMES_DIR {
            // Created before the snapshot when a queue starts with the feed on.
            let end = outcomes.map_or(0, Log::end_offset);
            if end > 0 {
                return missing(format!("its outcomes log holds {end} records"));
            }
            continue;
        }
        if name.starts_with("journal-") {
            if journal_has_data(fs, &dir.join(&name))? {
                return missing(format!("{name} holds events"));
            }
            continue;
        }
        return missing(format!("{name} exists"));
    }
    Ok(())
}

/// True when the journal at `path` has a non-zero byte among its first
/// [`JOURNAL_DATA_PROBE`] bytes (a synced-length slot or a first frame).
fn journal_has_data(fs: &dyn FileSystem, path: &Path) -> Result<bool> {
    let op = JOURNAL_READ;
    let f = fs
        .open(path, OpenMode::Read)
        .map_err(|e| Error::io(op, path, e))?;
    let len = f.size().map_err(|e| Error::io(op, path, e))?;
    let mut buf = vec![0u8; JOURNAL_DATA_PROBE.min(usize::try_from(len).unwrap_or(usize::MAX))];
    f.read_exact_at(&mut buf, 0)
        .map_err(|e| Error::io(op, path, e))?;
    Ok(buf.iter().any(|&b| b != 0))
}

/// Applies the journal of `generation` to `state`: every frame up to the synced
/// length (a frame there that fails its check is `Corrupt`), then the frames written
/// after the last sync up to the first zero or torn one (cut: never fsynced, so a power
/// loss may have torn it). Reads in chunks of [`CHUNK`], only as far as that.
fn replay_journal(
    fs: &dyn FileSystem,
    dir: &Path,
    (format, generation): (Format, u64),
    log: Range<Offset>,
    state: &mut AckState,
    mut acks: Option<&mut Vec<(Offset, u32)>>,
) -> Result<()> {
    let path = dir.join(journal::journal_name(generation));
    let file = match fs.open(&path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let why = format!(
                "the queue journal named by {SNAPSHOT} (generation {generation}) is missing"
            );
            return Err(Error::corrupt(&path, 0, None, why));
        }
        Err(e) => return Err(Error::io(JOURNAL_READ, &path, e)),
    };
    let len = file.size().map_err(|e| Error::io(JOURNAL_READ, &path, e))?;
    let mut journal = JournalFile {
        path: &path,
        chunks: Chunks {
            file: &*file,
            len,
            buf: Vec::new(),
            buf_start: 0,
        },
    };
    let synced = match format {
        Format::V1 => 0,
        Format::V2 => journal.synced_length(generation)?,
    };
    journal.replay_frames(format.frames_start() as u64, synced, |mut e| {
        if log.contains(&e.offset) {
            if e.kind == Kind::CorruptRange {
                e.deadline = e.deadline.clamp(0, log.end as i64);
            }
            if let Some(acks) = acks.as_deref_mut().filter(|_| e.kind == Kind::Ack) {
                let settles = state
                    .slot(e.offset)
                    .is_some_and(|s| s.state != super::state::SlotState::Done);
                if settles {
                    acks.push((e.offset, e.attempt));
                }
            }
            journal::apply(state, e);
        }
    })
}

const JOURNAL_READ: &str = "read queue journal";

/// A journal being replayed.
struct JournalFile<'a> {
    path: &'a Path,
    chunks: Chunks<'a>,
}

impl JournalFile<'_> {
    fn corrupt(&self, position: u64, reason: String) -> Error {
        Error::corrupt(self.path, position, None, reason)
    }

    fn get(&mut self, pos: u64, n: u64) -> Result<Option<&[u8]>> {
        let path = self.path;
        self.chunks
            .get(pos, n)
            .map_err(|e| Error::io(JOURNAL_READ, path, e))
    }

    /// The synced length its header slots record (format 2).
    fn synced_length(&mut self, generation: u64) -> Result<u64> {
        let len = self.chunks.len;
        let Some(header) = self.get(0, synced::FRAMES_START as u64)? else {
            return Err(self.corrupt(len, format!("{len} bytes: shorter than its header")));
        };
        let synced = match synced::read_synced(header, generation) {
            Synced::Upto(synced) => synced,
            Synced::WrongGeneration(g) => {
                let why = format!("journal header names generation {g}, not {generation}");
                return Err(self.corrupt(0, why));
            }
        };
        if synced > len {
            let why = format!("{len} bytes: shorter than its synced length {synced}");
            return Err(self.corrupt(len, why));
        }
        Ok(synced)
    }

    /// Hands every event of the frames from `start` to `apply`, in order, up to the
    /// first frame that does not check out: `Corrupt` when that frame begins below
    /// `synced`, the end of the journal (a torn tail) otherwise.
    fn replay_frames(
        &mut self,
        start: u64,
        synced: u64,
        mut apply: impl FnMut(Event),
    ) -> Result<()> {
        let mut pos = start;
        let mut events = Vec::new();
        loop {
            let end_here = |this: &Self, why: String| {
                if pos < synced {
                    Err(this.corrupt(pos, format!("{why}, below the synced length {synced}")))
                } else {
                    Ok(())
                }
            };
            let header = self.get(pos, FRAME_HEADER as u64)?;
            let Some(frame_len) = header.and_then(journal::frame_len) else {
                let why = if header.is_none() {
                    "journal ends inside a frame header"
                } else {
                    "zero frame (end of journal)"
                };
                return end_here(self, why.into());
            };
            let frame_end = pos.saturating_add(frame_len);
            if pos < synced && frame_end > synced {
                // Syncs happen between frames: one crossing the synced length has a
                // damaged count.
                let why = format!("frame of {frame_len} bytes crosses the synced length");
                return end_here(self, why);
            }
            let Some(frame) = self.get(pos, frame_len)? else {
                let why = format!("frame of {frame_len} bytes runs past the end");
                return end_here(self, why);
            };
            events.clear();
            if let Err(why) = journal::decode_frame(frame, &mut events) {
                return end_here(self, why.into());
            }
            events.drain(..).for_each(&mut apply);
            pos = frame_end;
        }
    }
}

/// Forward reads of a file in chunks: holds at most one chunk or one frame.
struct Chunks<'a> {
    file: &'a dyn FileHandle,
    len: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl Chunks<'_> {
    /// The `n` bytes at `pos` (`None` when the file ends before them), reading
    /// from `pos` on when they are not already held. Positions only move forward.
    fn get(&mut self, pos: u64, n: u64) -> std::io::Result<Option<&[u8]>> {
        let Some(end) = pos.checked_add(n).filter(|&end| end <= self.len) else {
            return Ok(None);
        };
        let held_end = self.buf_start + self.buf.len() as u64;
        if pos < self.buf_start || end > held_end {
            let want = n.max(CHUNK as u64).min(self.len - pos);
            let want = usize::try_from(want).map_err(|_| std::io::ErrorKind::OutOfMemory)?;
            self.buf.clear();
            self.buf
                .try_reserve_exact(want)
                .map_err(|_| std::io::ErrorKind::OutOfMemory)?;
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, pos)?;
            self.buf_start = pos;
        }
        let from = (pos - self.buf_start) as usize;
        Ok(Some(&self.buf[from..from + n as usize]))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::queue::journal::{encode_frame, encode_snapshot};
    use crate::queue::state::SlotState;
    use crate::queue::synced::{encode_slot, slot_position, FRAMES_START};
    use crate::sim::SimFs;
    use crate::LogConfig;

    const DIR: &str = "/q";

    fn acks(range: Range<Offset>) -> Vec<Event> {
        range
            .map(|offset| Event {
                kind: Kind::Ack,
                offset,
                attempt: 1,
                deadline: 0,
            })
            .collect()
    }

    /// A snapshot of generation 1 with `n` leased records, in `format`.
    fn snapshot(n: Offset, format: Format) -> Vec<u8> {
        let mut s = AckState::new(0);
        for o in 0..n {
            s.set(o, SlotState::Leased, 1, 0);
        }
        s.skip_to(n);
        let mut bytes = encode_snapshot(1, &s);
        if format == Format::V1 {
            bytes[..4].copy_from_slice(b"LQS1");
            let body = bytes.len() - 4;
            let crc = crc32fast::hash(&bytes[..body]);
            bytes[body..].copy_from_slice(&crc.to_le_bytes());
        }
        bytes
    }

    /// Plants the snapshot and a journal of `frames` (format 2: synced up to the end
    /// of the first `synced_frames` frames), padded with zeros; loads it.
    fn load_planted(
        n: Offset,
        format: Format,
        frames: &[Vec<u8>],
        synced_frames: usize,
        damage: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Option<(u64, AckState)>> {
        let fs = SimFs::new(0);
        fs.write_file(format!("{DIR}/snapshot"), &snapshot(n, format))
            .unwrap();
        let mut journal = vec![0u8; format.frames_start()];
        for (i, f) in frames.iter().enumerate() {
            journal.extend_from_slice(f);
            if format == Format::V2 && i + 1 == synced_frames {
                let at = slot_position(1);
                let synced = journal.len() as u64;
                journal[at..at + 32].copy_from_slice(&encode_slot(1, 1, synced));
            }
        }
        journal.resize(journal.len() + 4096, 0);
        damage(&mut journal);
        fs.write_file(format!("{DIR}/{}", journal::journal_name(1)), &journal)
            .unwrap();
        let config = LogConfig {
            fs: Arc::new(fs.clone()),
            background: false,
            ..LogConfig::default()
        };
        let dlq = Log::open(format!("{DIR}/dead-letter"), config).unwrap();
        load(
            &fs,
            (Path::new(DIR), Lane::ONLY),
            0..n,
            (&dlq, None),
            &mut Vec::new(),
        )
    }

    fn acked(r: Result<Option<(u64, AckState)>>) -> u64 {
        r.unwrap().unwrap().1.totals.acked
    }

    #[test]
    fn frames_across_chunks_and_larger_than_a_chunk() {
        // 3,000 one-ack frames (96,000 bytes, crossing the first chunk boundary), one
        // frame of 4,000 acks (96,008 bytes, larger than a chunk), then 100 more.
        let mut frames: Vec<Vec<u8>> = (0..3000).map(|o| encode_frame(&acks(o..o + 1))).collect();
        frames.push(encode_frame(&acks(3000..7000)));
        frames.extend((7000..7100).map(|o| encode_frame(&acks(o..o + 1))));
        assert_eq!(
            acked(load_planted(7100, Format::V2, &frames, 3001, |_| ())),
            7100
        );
        assert_eq!(
            acked(load_planted(7100, Format::V2, &frames, 0, |_| ())),
            7100
        );
        assert_eq!(
            acked(load_planted(7100, Format::V1, &frames, 0, |_| ())),
            7100
        );
    }

    #[test]
    fn damage_below_the_synced_length_is_corrupt_above_it_a_torn_tail() {
        let frames: Vec<Vec<u8>> = (0..10).map(|o| encode_frame(&acks(o..o + 1))).collect();
        let frame = frames[0].len();
        let at = |i: usize| FRAMES_START + i * frame;
        for i in 0..10 {
            let r = load_planted(10, Format::V2, &frames, 6, |j| j[at(i) + 9] ^= 1);
            if i < 6 {
                assert!(matches!(r, Err(Error::Corrupt { .. })), "frame {i}: {r:?}");
            } else {
                assert_eq!(acked(r), i as u64, "frame {i}");
            }
        }
        // A zeroed frame inside the synced region is damage too.
        let r = load_planted(10, Format::V2, &frames, 6, |j| j[at(2)..at(3)].fill(0));
        assert!(matches!(r, Err(Error::Corrupt { .. })), "{r:?}");
        // A count grown so the frame crosses the synced length.
        let r = load_planted(10, Format::V2, &frames, 6, |j| j[at(5) + 4] = 2);
        assert!(matches!(r, Err(Error::Corrupt { .. })), "{r:?}");
        // Format 1 knows nothing synced: it stops at the first bad frame, as before.
        assert_eq!(
            acked(load_planted(10, Format::V1, &frames, 0, |j| j
                [3 * frame + 9] ^=
                1)),
            3
        );
    }

    #[test]
    fn a_slot_of_another_generation_is_corrupt() {
        let frames = vec![encode_frame(&acks(0..1))];
        let r = load_planted(1, Format::V2, &frames, 0, |j| {
            j[..32].copy_from_slice(&encode_slot(9, 2, 1000));
        });
        assert!(matches!(r, Err(Error::Corrupt { .. })), "{r:?}");
    }

    #[test]
    fn new_only_without_state_files() {
        let fs = SimFs::new(0);
        let config = LogConfig {
            fs: Arc::new(fs.clone()),
            background: false,
            ..LogConfig::default()
        };
        let dlq = Log::open(format!("{DIR}/dead-letter"), config).unwrap();
        let dir = Path::new(DIR);
        let load = || load(&fs, (dir, Lane::ONLY), 0..10, (&dlq, None), &mut Vec::new());
        fs.write_file(format!("{DIR}/{LOCK_FILE}"), b"").unwrap();
        fs.write_file(format!("{DIR}/snapshot.tmp"), b"half")
            .unwrap();
        fs.write_file(format!("{DIR}/journal-00000000000000000001"), &[0u8; 8192])
            .unwrap();
        assert!(load().unwrap().is_none());
        for planted in ["floor", "floor.tmp", "redrive", "unknown"] {
            let path = format!("{DIR}/{planted}");
            fs.write_file(&path, b"x").unwrap();
            assert!(matches!(load(), Err(Error::Corrupt { .. })), "{planted}");
            fs.remove_file(Path::new(&path)).unwrap();
        }
        let mut journal = vec![0u8; 8192];
        journal[FRAMES_START + 3] = 1;
        fs.write_file(format!("{DIR}/journal-00000000000000000001"), &journal)
            .unwrap();
        assert!(matches!(load(), Err(Error::Corrupt { .. })));
        fs.write_file(format!("{DIR}/journal-00000000000000000001"), &[])
            .unwrap();
        assert!(load().unwrap().is_none());
        dlq.append(crate::Record::new("dead")).unwrap();
        assert!(matches!(load(), Err(Error::Corrupt { .. })));
    }
}
