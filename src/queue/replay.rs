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

use super::journal::{self, Format, Kind, Synced, FRAME_HEADER, SNAPSHOT};
use super::state::AckState;
use crate::fs::{FileHandle, FileSystem, OpenMode};
use crate::{Error, Log, Offset, Result};

/// Bytes read per read call when scanning a journal.
const CHUNK: usize = 64 << 10;
/// Bytes of a journal looked at to decide whether it holds anything: both header slots
/// and the first frame header of format 2, the first frame header of format 1.
pub(crate) const JOURNAL_DATA_PROBE: usize = journal::FRAMES_START + FRAME_HEADER;
/// Name of the queue's lock file (see `Queue::open`).
pub(crate) const LOCK_FILE: &str = "queue.lock";

/// Reads the queue state in `dir`: the snapshot's generation and the state it and
/// its journal hold, keeping only what names offsets in `log` (the queue passes
/// `0..end`: state is never ahead of the log, and planted offsets cannot make the
/// window huge; what lies below the log's start is kept so the caller can count what
/// was skipped, see `AckState::clamp`). `None`: a new queue (see the module docs);
/// `dead_letters` is the queue's dead-letter log, looked at only then.
pub(crate) fn load(
    fs: &dyn FileSystem,
    dir: &Path,
    log: Range<Offset>,
    dead_letters: &Log,
) -> Result<Option<(u64, AckState)>> {
    let path = dir.join(SNAPSHOT);
    let Some(bytes) = read_whole(fs, &path, "read queue snapshot")? else {
        check_new(fs, dir, dead_letters)?;
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
    replay_journal(fs, dir, format, generation, log, &mut state)?;
    Ok(Some((generation, state)))
}

/// Reads a whole file; `None` when it does not exist.
fn read_whole(fs: &dyn FileSystem, path: &Path, op: &'static str) -> Result<Option<Vec<u8>>> {
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
fn check_new(fs: &dyn FileSystem, dir: &Path, dead_letters: &Log) -> Result<()> {
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
        if name == LOCK_FILE || name == snapshot_tmp {
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
    let op = "read queue journal";
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
    format: Format,
    generation: u64,
    log: Range<Offset>,
    state: &mut AckState,
) -> Result<()> {
    let path = dir.join(journal::journal_name(generation));
    let op = "read queue journal";
    let corrupt = |position: u64, reason: String| Error::corrupt(&path, position, None, reason);
    let file =
        match fs.open(&path, OpenMode::Read) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(corrupt(
                0,
                format!(
                    "the queue journal named by {SNAPSHOT} (generation {generation}) is missing"
                ),
            )),
            Err(e) => return Err(Error::io(op, &path, e)),
        };
    let len = file.size().map_err(|e| Error::io(op, &path, e))?;
    let mut reader = Chunks {
        file: &*file,
        len,
        buf: Vec::new(),
        buf_start: 0,
    };
    let start = format.frames_start() as u64;
    let synced = match format {
        Format::V1 => 0,
        Format::V2 => {
            let header = reader
                .get(0, start)
                .map_err(|e| Error::io(op, &path, e))?
                .ok_or_else(|| {
                    corrupt(len, format!("{len} bytes: shorter than the journal header"))
                })?;
            match journal::read_synced(header, generation) {
                Synced::Upto(synced) => synced,
                Synced::WrongGeneration(g) => {
                    return Err(corrupt(
                        0,
                        format!("journal header names generation {g}, not {generation}"),
                    ))
                }
            }
        }
    };
    if synced > len {
        return Err(corrupt(
            len,
            format!("{len} bytes: shorter than its synced length {synced}"),
        ));
    }
    let mut pos = start;
    let mut events = Vec::new();
    loop {
        // Past the synced length, anything that does not check out is a torn tail.
        let end_here = |why: String| {
            if pos < synced {
                Err(corrupt(
                    pos,
                    format!("{why}, below the synced length {synced}"),
                ))
            } else {
                Ok(())
            }
        };
        let header = reader
            .get(pos, FRAME_HEADER as u64)
            .map_err(|e| Error::io(op, &path, e))?;
        let Some(frame_len) = header.and_then(journal::frame_len) else {
            return end_here(if header.is_none() {
                "journal ends inside a frame header".into()
            } else {
                "zero frame (end of journal)".into()
            });
        };
        let frame_end = pos.saturating_add(frame_len);
        if pos < synced && frame_end > synced {
            // Sync happens between frames: a frame crossing the synced length has a
            // damaged count.
            return end_here(format!(
                "frame of {frame_len} bytes crosses the synced length"
            ));
        }
        let Some(frame) = reader
            .get(pos, frame_len)
            .map_err(|e| Error::io(op, &path, e))?
        else {
            return end_here(format!("frame of {frame_len} bytes runs past the end"));
        };
        events.clear();
        if let Err(why) = journal::decode_frame(frame, &mut events) {
            return end_here(why.into());
        }
        for mut e in events.drain(..) {
            if !log.contains(&e.offset) {
                continue;
            }
            if e.kind == Kind::CorruptRange {
                e.deadline = e.deadline.clamp(0, log.end as i64);
            }
            journal::apply(state, e);
        }
        pos = frame_end;
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
