//! The log's crash history, `crash-history`: for each open that recovered from a crash
//! (no clean-shutdown marker), the end offset recovery left. It lets state kept
//! outside the log (a queue's journal) tell which of the offsets it names may since
//! have been lost and handed out again (DESIGN.md promise 4).
//!
//! Why: a queue's journal and the log are separate files. After a power loss the
//! journal's unsynced frames can survive while the log's unsynced records do not; if
//! the application then appends to the reopened log *before* it reopens the queue, the
//! new records take the lost records' offsets, and replaying the journal would hand
//! them the old acks — new records silently never delivered. With the history, the
//! queue drops what it knew at or above the lowest end any crash recovery left since
//! its state was written (`tests/queue_offset_reuse.rs`).
//!
//! Format: `"LQH1" | epoch u64 | complete_since u64 | count u32 | count × (epoch u64,
//! end u64) | crc32` (little-endian), replaced durably. `epoch` counts crash
//! recoveries. Only entries that can be the answer are kept: ends strictly increase
//! with epoch (an entry followed by a later one with a lower or equal end can never be
//! the lowest since any epoch). At most [`MAX_ENTRIES`]; dropping the oldest sets
//! `complete_since`, below which the history is no longer known.
//!
//! Fail closed: missing = no crash recovery recorded yet (a new log, or one from before
//! this file); damaged = `Error::Corrupt` from `Log::open` naming it (way back: remove
//! it; queues whose state names a later epoch then refuse to open with `Corrupt` until
//! `Queue::repair`).

use std::path::Path;

use crate::checkpoint;
use crate::fs::{FileSystem, OpenMode};
use crate::{Error, Offset, Result};

/// Name of the file in the log directory.
pub(crate) const CRASH_HISTORY: &str = "crash-history";
const MAGIC: &[u8; 4] = b"LQH1";
/// Entries kept at most.
const MAX_ENTRIES: usize = 1024;
const HEADER: usize = 4 + 8 + 8 + 4;
const ENTRY: usize = 16;

/// The crash recoveries of a log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CrashHistory {
    /// Crash recoveries so far.
    epoch: u64,
    /// The history is complete for every epoch above this one.
    complete_since: u64,
    /// `(epoch, end recovery left)`, ends strictly increasing.
    entries: Vec<(u64, Offset)>,
}

/// What may have been lost since an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LostSince {
    /// No crash recovery since: everything named then is still what it was.
    Nothing,
    /// Offsets at or above this one may have been lost and reused since.
    From(Offset),
    /// The history does not reach back that far (or the epoch is from a later history
    /// than this file knows: the file was lost or replaced).
    Unknown,
}

impl CrashHistory {
    /// Reads the history of the log in `dir`.
    pub fn load(fs: &dyn FileSystem, dir: &Path) -> Result<CrashHistory> {
        let path = dir.join(CRASH_HISTORY);
        if !fs.exists(&path) {
            return Ok(CrashHistory::default());
        }
        let io = |e| Error::io("read crash history", &path, e);
        let f = fs.open(&path, OpenMode::Read).map_err(io)?;
        let len = f.size().map_err(io)?;
        let max = (HEADER + MAX_ENTRIES * ENTRY + 4) as u64;
        if len > max {
            return Err(Error::corrupt(
                &path,
                0,
                None,
                format!("{len} bytes: too large"),
            ));
        }
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, 0).map_err(io)?;
        decode(&buf).ok_or_else(|| {
            Error::corrupt(
                &path,
                0,
                None,
                "crash history fails its check (magic, layout or CRC)",
            )
        })
    }

    /// Records a crash recovery that left the log ending at `end`, durably.
    pub fn record(&mut self, fs: &dyn FileSystem, dir: &Path, end: Offset) -> Result<()> {
        let mut next = self.clone();
        next.epoch += 1;
        while next.entries.last().is_some_and(|&(_, e)| e >= end) {
            next.entries.pop();
        }
        next.entries.push((next.epoch, end));
        if next.entries.len() > MAX_ENTRIES {
            let (dropped, _) = next.entries.remove(0);
            next.complete_since = dropped;
        }
        checkpoint::durable_replace(fs, dir, CRASH_HISTORY, &encode(&next))?;
        *self = next;
        Ok(())
    }

    /// Crash recoveries so far: what state written now names as its epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// What may have been lost since state written at `epoch`.
    pub fn lost_since(&self, epoch: u64) -> LostSince {
        if epoch > self.epoch || epoch < self.complete_since {
            return LostSince::Unknown;
        }
        // Ends increase with epoch: the first entry after `epoch` has the lowest end.
        match self.entries.iter().find(|&&(e, _)| e > epoch) {
            Some(&(_, end)) => LostSince::From(end),
            None => LostSince::Nothing,
        }
    }
}

fn encode(h: &CrashHistory) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + h.entries.len() * ENTRY + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&h.epoch.to_le_bytes());
    out.extend_from_slice(&h.complete_since.to_le_bytes());
    out.extend_from_slice(&(h.entries.len() as u32).to_le_bytes());
    for &(e, end) in &h.entries {
        out.extend_from_slice(&e.to_le_bytes());
        out.extend_from_slice(&end.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<CrashHistory> {
    let (body, crc) = bytes.split_at(bytes.len().checked_sub(4)?);
    if !body.starts_with(MAGIC) || crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?)
    {
        return None;
    }
    let u64_at = |p: usize| Some(u64::from_le_bytes(body.get(p..p + 8)?.try_into().ok()?));
    let epoch = u64_at(4)?;
    let complete_since = u64_at(12)?;
    let count = u32::from_le_bytes(body.get(20..24)?.try_into().ok()?) as usize;
    if count > MAX_ENTRIES || body.len() != HEADER + count * ENTRY || complete_since > epoch {
        return None;
    }
    let mut entries = Vec::with_capacity(count);
    for i in 0..count {
        let (e, end) = (u64_at(HEADER + i * ENTRY)?, u64_at(HEADER + i * ENTRY + 8)?);
        // Epochs and ends strictly increase, every epoch within the history.
        if e > epoch || e <= complete_since {
            return None;
        }
        if let Some(&(pe, pend)) = entries.last() {
            if e <= pe || end <= pend {
                return None;
            }
        }
        entries.push((e, end));
    }
    Some(CrashHistory {
        epoch,
        complete_since,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimFs;

    #[test]
    fn lowest_end_since_an_epoch() {
        let fs = SimFs::new(0);
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let mut h = CrashHistory::load(&fs, dir).unwrap();
        assert_eq!(h.lost_since(0), LostSince::Nothing);
        for end in [100, 50, 70, 200] {
            h.record(&fs, dir, end).unwrap();
        }
        assert_eq!(h.epoch(), 4);
        assert_eq!(h.lost_since(0), LostSince::From(50));
        assert_eq!(h.lost_since(1), LostSince::From(50));
        assert_eq!(h.lost_since(2), LostSince::From(70));
        assert_eq!(h.lost_since(3), LostSince::From(200));
        assert_eq!(h.lost_since(4), LostSince::Nothing);
        assert_eq!(h.lost_since(5), LostSince::Unknown);
        assert_eq!(CrashHistory::load(&fs, dir).unwrap(), h);
    }

    #[test]
    fn a_bounded_history_knows_where_it_stops() {
        let fs = SimFs::new(0);
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let mut h = CrashHistory::default();
        for end in 0..(MAX_ENTRIES as u64 + 10) {
            h.record(&fs, dir, end).unwrap();
        }
        assert_eq!(h.entries.len(), MAX_ENTRIES);
        assert_eq!(h.lost_since(0), LostSince::Unknown);
        assert_eq!(h.lost_since(h.epoch() - 1), LostSince::From(h.epoch() - 1));
        assert_eq!(CrashHistory::load(&fs, dir).unwrap(), h);
    }

    #[test]
    fn every_damaged_byte_is_corrupt() {
        let fs = SimFs::new(0);
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let mut h = CrashHistory::default();
        h.record(&fs, dir, 10).unwrap();
        h.record(&fs, dir, 20).unwrap();
        let bytes = fs.read_file(dir.join(CRASH_HISTORY)).unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(decode(&b).is_none(), "flip at {i}");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_none());
        fs.write_file(dir.join(CRASH_HISTORY), b"junk").unwrap();
        assert!(matches!(
            CrashHistory::load(&fs, dir),
            Err(Error::Corrupt { .. })
        ));
    }
}
