//! Small checkpoint files: the one durable-replace helper, and the recovery point,
//! which is updated in place in two CRC'd slots so a flush costs no rename.

use std::path::Path;
use std::sync::Arc;

use crate::fs::{FileHandle, FileSystem, OpenMode};
use crate::{Error, Offset, Result};

/// Name of the recovery-point checkpoint file.
pub(crate) const RECOVERY_POINT: &str = "recovery-point";
/// Name of the log-start-offset checkpoint file.
pub(crate) const LOG_START_OFFSET: &str = "log-start-offset";
/// Present only after a clean close.
pub(crate) const CLEAN_SHUTDOWN: &str = "clean-shutdown";
/// Suffix of the temporary file of a durable replace.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// Replaces `dir/name` with `bytes` so that after a crash the file holds either the
/// old or the new bytes: write a temporary file, fsync it, rename it over, fsync the
/// directory. Every rename the engine does goes through here or [`rename_durably`].
pub(crate) fn durable_replace(
    fs: &dyn FileSystem,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<()> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let dst = dir.join(name);
    let f = fs
        .open(&tmp, OpenMode::Create)
        .map_err(|e| Error::io("create checkpoint", &tmp, e))?;
    f.set_len(0)
        .and_then(|()| f.write_all_at(bytes, 0))
        .and_then(|()| f.sync_data())
        .map_err(|e| Error::io("write checkpoint", &tmp, e))?;
    drop(f);
    rename_durably(fs, dir, &tmp, &dst)
}

/// Renames within `dir` and fsyncs the directory.
pub(crate) fn rename_durably(
    fs: &dyn FileSystem,
    dir: &Path,
    from: &Path,
    to: &Path,
) -> Result<()> {
    fs.rename(from, to)
        .map_err(|e| Error::io("rename", from, e))?;
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))
}

/// Renames each of `paths` to the same name plus `suffix`, then fsyncs `dir` once;
/// returns the new paths. Used to retire segment files before they are unlinked.
pub(crate) fn retire_files(
    fs: &dyn FileSystem,
    dir: &Path,
    paths: &[std::path::PathBuf],
    suffix: &str,
) -> Result<Vec<std::path::PathBuf>> {
    let mut renamed = Vec::with_capacity(paths.len());
    for p in paths {
        let mut name = p.as_os_str().to_owned();
        name.push(suffix);
        let to = std::path::PathBuf::from(name);
        fs.rename(p, &to).map_err(|e| Error::io("rename", p, e))?;
        renamed.push(to);
    }
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))?;
    Ok(renamed)
}

/// Reads a small file whole; `None` when missing or unreadable.
pub(crate) fn read_small(fs: &dyn FileSystem, path: &Path) -> Option<Vec<u8>> {
    let f = fs.open(path, OpenMode::Read).ok()?;
    let len = usize::try_from(f.size().ok()?).ok()?;
    if len > 1 << 20 {
        return None;
    }
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, 0).ok()?;
    Some(buf)
}

/// Reads a whole file of any size; `None` when missing or unreadable.
pub(crate) fn read_small_unbounded(fs: &dyn FileSystem, path: &Path) -> Option<Vec<u8>> {
    let f = fs.open(path, OpenMode::Read).ok()?;
    let len = usize::try_from(f.size().ok()?).ok()?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, 0).ok()?;
    Some(buf)
}

/// The offset stored in the checkpoint file at `path` by [`durable_replace`] of
/// [`encode_offset`] bytes: `None` when the file does not exist. A replace is atomic,
/// so a file that exists but does not hold a valid offset was damaged:
/// [`Error::Corrupt`] naming it.
pub(crate) fn read_offset_file(fs: &dyn FileSystem, path: &Path) -> Result<Option<Offset>> {
    if !fs.exists(path) {
        return Ok(None);
    }
    let f = fs
        .open(path, OpenMode::Read)
        .map_err(|e| Error::io("open checkpoint", path, e))?;
    let len = f
        .size()
        .map_err(|e| Error::io("stat checkpoint", path, e))?;
    let mut buf = vec![0u8; usize::try_from(len.min(64)).unwrap_or(64)];
    f.read_exact_at(&mut buf, 0)
        .map_err(|e| Error::io("read checkpoint", path, e))?;
    match decode_offset(&buf) {
        Some(o) if len == buf.len() as u64 => Ok(Some(o)),
        _ => Err(Error::corrupt(
            path,
            0,
            None,
            format!("checkpoint of {len} bytes does not hold a valid offset and CRC"),
        )),
    }
}

/// A u64 with a CRC, as stored by [`encode_offset`].
pub(crate) fn encode_offset(value: Offset) -> Vec<u8> {
    let mut out = value.to_le_bytes().to_vec();
    out.extend_from_slice(&crc32fast::hash(&out).to_le_bytes());
    out
}

/// The value of [`encode_offset`] bytes; `None` for anything else (garbage is ignored).
pub(crate) fn decode_offset(bytes: &[u8]) -> Option<Offset> {
    if bytes.len() != 12 {
        return None;
    }
    let crc = u32::from_le_bytes(bytes[8..12].try_into().ok()?);
    (crc32fast::hash(&bytes[..8]) == crc)
        .then(|| u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")))
}

/// Where durable data ends: every batch of segment `segment` below byte `position`,
/// and every earlier segment, was fsynced; `offset` is the first offset not covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecoveryPoint {
    pub segment: Offset,
    pub position: u64,
    pub offset: Offset,
}

const SLOT_LEN: usize = 32;
/// Largest slot sequence taken as genuine. One per flush, the engine never gets near
/// it; a larger one (planted or garbage with a matching CRC) is ignored, so the
/// sequence can never overflow when it is incremented.
const MAX_SEQUENCE: u64 = u64::MAX / 2;

/// The recovery-point file: two 32-byte slots `(sequence, segment, position, offset)`
/// each with a CRC, written alternately in place. A torn write spoils at most the slot
/// being written; the other still holds the previous point.
#[derive(Debug)]
pub(crate) struct RecoveryPointFile {
    file: Arc<dyn FileHandle>,
    path: std::path::PathBuf,
    sequence: u64,
    /// The point last written (not necessarily synced yet).
    last: Option<RecoveryPoint>,
}

impl RecoveryPointFile {
    /// Opens (creating) the file and reads the newest valid slot.
    pub fn open(
        fs: &dyn FileSystem,
        dir: &Path,
    ) -> Result<(RecoveryPointFile, Option<RecoveryPoint>)> {
        let path = dir.join(RECOVERY_POINT);
        let file = fs
            .open(&path, OpenMode::Create)
            .map_err(|e| Error::io("open recovery point", &path, e))?;
        let mut buf = [0u8; 2 * SLOT_LEN];
        let len = file.size().unwrap_or(0);
        let mut best: Option<(u64, RecoveryPoint)> = None;
        if len >= buf.len() as u64 && file.read_exact_at(&mut buf, 0).is_ok() {
            for slot in buf.chunks_exact(SLOT_LEN) {
                if let Some((seq, rp)) = decode_slot(slot) {
                    if best.is_none_or(|(s, _)| seq > s) {
                        best = Some((seq, rp));
                    }
                }
            }
        }
        let sequence = best.map_or(0, |(s, _)| s);
        Ok((
            RecoveryPointFile {
                file,
                path,
                sequence,
                last: best.map(|(_, rp)| rp),
            },
            best.map(|(_, rp)| rp),
        ))
    }

    /// A recovery-point file for a read-only view: `file` is never written (the view
    /// refuses every write before it gets here).
    pub fn unwritten(file: Arc<dyn FileHandle>, path: std::path::PathBuf) -> RecoveryPointFile {
        RecoveryPointFile {
            file,
            path,
            sequence: 0,
            last: None,
        }
    }

    /// The newest valid slot, read without creating or changing the file; `None`
    /// when it is missing or both slots are damaged.
    pub fn read(fs: &dyn FileSystem, dir: &Path) -> Option<RecoveryPoint> {
        let bytes = read_small(fs, &dir.join(RECOVERY_POINT))?;
        bytes
            .get(..2 * SLOT_LEN)?
            .chunks_exact(SLOT_LEN)
            .filter_map(decode_slot)
            .max_by_key(|(seq, _)| *seq)
            .map(|(_, rp)| rp)
    }

    /// Writes `rp` into the older slot. Not synced: see [`RecoveryPointFile::sync`].
    /// Only ever called with a point whose data is already durable.
    pub fn write(&mut self, rp: RecoveryPoint) -> Result<()> {
        self.sequence += 1;
        let encoded = encode_slot(self.sequence, rp);
        let pos = (self.sequence % 2) * SLOT_LEN as u64;
        debug_assert_eq!(decode_slot(&encoded).map(|(_, r)| r), Some(rp));
        self.file
            .write_all_at(&encoded, pos)
            .map_err(|e| Error::io("write recovery point", &self.path, e))?;
        self.last = Some(rp);
        Ok(())
    }

    /// The point last written, durable after the next [`RecoveryPointFile::sync`].
    pub fn last(&self) -> Option<RecoveryPoint> {
        self.last
    }

    /// fsyncs the file.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io("sync recovery point", &self.path, e))
    }
}

fn encode_slot(sequence: u64, rp: RecoveryPoint) -> [u8; SLOT_LEN] {
    let mut slot = [0u8; SLOT_LEN];
    // sequence (u64) | segment (u64) | position (u32, segments fit u32) | offset (u64) | crc
    slot[0..8].copy_from_slice(&sequence.to_le_bytes());
    slot[8..16].copy_from_slice(&rp.segment.to_le_bytes());
    slot[16..20].copy_from_slice(&u32::try_from(rp.position).unwrap_or(u32::MAX).to_le_bytes());
    slot[20..28].copy_from_slice(&rp.offset.to_le_bytes());
    let crc = crc32fast::hash(&slot[..28]);
    slot[28..32].copy_from_slice(&crc.to_le_bytes());
    slot
}

fn decode_slot(slot: &[u8]) -> Option<(u64, RecoveryPoint)> {
    let crc = u32::from_le_bytes(slot[28..32].try_into().ok()?);
    if crc32fast::hash(&slot[..28]) != crc {
        return None;
    }
    let u64_at = |p: usize| u64::from_le_bytes(slot[p..p + 8].try_into().expect("8 bytes"));
    let sequence = u64_at(0);
    if sequence == 0 || sequence > MAX_SEQUENCE {
        return None;
    }
    Some((
        sequence,
        RecoveryPoint {
            segment: u64_at(8),
            position: u64::from(u32::from_le_bytes(slot[16..20].try_into().ok()?)),
            offset: u64_at(20),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::OsFs;

    #[test]
    fn slots_survive_a_torn_slot() {
        let dir = tempfile::tempdir().unwrap();
        let fs = OsFs;
        let (mut f, rp) = RecoveryPointFile::open(&fs, dir.path()).unwrap();
        assert_eq!(rp, None);
        let a = RecoveryPoint {
            segment: 0,
            position: 10,
            offset: 3,
        };
        let b = RecoveryPoint {
            segment: 5,
            position: 20,
            offset: 9,
        };
        f.write(a).unwrap();
        f.write(b).unwrap();
        drop(f);
        let (_, got) = RecoveryPointFile::open(&fs, dir.path()).unwrap();
        assert_eq!(got, Some(b));
        // Tear the newer slot (sequence 2 lives in slot 0).
        let h = fs
            .open(&dir.path().join(RECOVERY_POINT), OpenMode::Write)
            .unwrap();
        h.write_all_at(&[0xAB; 7], 3).unwrap();
        let (mut f, got) = RecoveryPointFile::open(&fs, dir.path()).unwrap();
        assert_eq!(got, Some(a));
        // Writing again continues from the surviving sequence and wins.
        f.write(b).unwrap();
        let (_, got) = RecoveryPointFile::open(&fs, dir.path()).unwrap();
        assert_eq!(got, Some(b));
    }

    /// Found by fuzz/open_dir: a slot with a valid CRC and sequence u64::MAX made the
    /// next write overflow the sequence (a panic in debug builds; in release the new
    /// slot got sequence 0, which is ignored, so the point could never move again).
    #[test]
    fn implausible_sequences_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let fs = OsFs;
        let old = RecoveryPoint {
            segment: 0,
            position: 10,
            offset: 3,
        };
        let planted = RecoveryPoint {
            segment: 7,
            position: 1,
            offset: 1,
        };
        let mut bytes = encode_slot(1, old).to_vec();
        bytes.extend_from_slice(&encode_slot(u64::MAX, planted));
        std::fs::write(dir.path().join(RECOVERY_POINT), bytes).unwrap();
        let (mut f, got) = RecoveryPointFile::open(&fs, dir.path()).unwrap();
        assert_eq!(got, Some(old));
        let new = RecoveryPoint {
            segment: 0,
            position: 20,
            offset: 5,
        };
        f.write(new).unwrap();
        let (_, got) = RecoveryPointFile::open(&fs, dir.path()).unwrap();
        assert_eq!(got, Some(new));
    }

    #[test]
    fn offsets_reject_garbage() {
        assert_eq!(decode_offset(&encode_offset(42)), Some(42));
        assert_eq!(decode_offset(b"garbage garbage"), None);
        let mut b = encode_offset(42);
        b[0] ^= 1;
        assert_eq!(decode_offset(&b), None);
    }
}
