//! The cursor file: two 32-byte slots written in place (see `docs/format.md` §5.3 and
//! the parent module's docs for the crash argument).

use std::path::Path;
use std::sync::Arc;

use crate::fs::{FileHandle, FileSystem, OpenMode};
use crate::{Error, Offset, Result};

const MAGIC: &[u8; 4] = b"LQC1";
pub(super) const SLOT_LEN: usize = 32;
pub(super) const FILE_LEN: usize = 2 * SLOT_LEN;
/// Largest sequence taken as genuine (as the recovery point's): never overflows.
const MAX_SEQUENCE: u64 = u64::MAX / 2;

/// The on-disk side of one cursor.
#[derive(Debug)]
pub(super) struct SlotFile {
    pub handle: Option<Arc<dyn FileHandle>>,
    /// Highest sequence written.
    pub sequence: u64,
    /// The slot last known fsynced (never overwritten until the other one is synced).
    pub synced_slot: usize,
    /// False until this process has fsynced the file: after a kill -9 the newest slot
    /// read at open may still sit in the page cache only.
    pub synced_known: bool,
    /// Written since the last fsync.
    pub dirty: bool,
}

/// The bytes of a new cursor file: both slots valid, the first one newest.
pub(super) fn new_file(position: Offset, protect: bool) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(FILE_LEN);
    bytes.extend_from_slice(&encode_slot(2, position, protect));
    bytes.extend_from_slice(&encode_slot(1, position, protect));
    bytes
}

fn encode_slot(sequence: u64, position: Offset, protect: bool) -> [u8; SLOT_LEN] {
    let mut slot = [0u8; SLOT_LEN];
    slot[0..4].copy_from_slice(MAGIC);
    slot[4..12].copy_from_slice(&sequence.to_le_bytes());
    slot[12..20].copy_from_slice(&position.to_le_bytes());
    slot[20] = u8::from(protect);
    let crc = crc32fast::hash(&slot[..28]);
    slot[28..32].copy_from_slice(&crc.to_le_bytes());
    slot
}

/// `(sequence, position, protect)` of a valid slot.
fn decode_slot(slot: &[u8]) -> Option<(u64, Offset, bool)> {
    if slot.len() != SLOT_LEN || &slot[0..4] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(slot[28..32].try_into().ok()?);
    if crc32fast::hash(&slot[..28]) != crc || slot[20] > 1 || slot[21..28] != [0; 7] {
        return None;
    }
    let sequence = u64::from_le_bytes(slot[4..12].try_into().ok()?);
    if sequence == 0 || sequence > MAX_SEQUENCE {
        return None;
    }
    let position = u64::from_le_bytes(slot[12..20].try_into().ok()?);
    Some((sequence, position, slot[20] == 1))
}

/// `(slot index, sequence, position, protect)` of the newest valid slot of a file.
pub(super) fn decode_file(bytes: &[u8]) -> std::result::Result<(usize, u64, Offset, bool), String> {
    if bytes.len() != FILE_LEN {
        return Err(format!(
            "cursor file of {} bytes, expected {FILE_LEN}",
            bytes.len()
        ));
    }
    let best = bytes
        .chunks_exact(SLOT_LEN)
        .enumerate()
        .filter_map(|(i, s)| decode_slot(s).map(|(seq, p, pr)| (i, seq, p, pr)))
        .max_by_key(|&(_, seq, _, _)| seq);
    best.ok_or_else(|| "no valid slot in the cursor file".to_string())
}

/// The bytes of a cursor file (at most one byte more than a valid one holds).
pub(super) fn read_cursor_file(fs: &dyn FileSystem, path: &Path) -> std::io::Result<Vec<u8>> {
    let f = fs.open(path, OpenMode::Read)?;
    let len = f.size()?.min(FILE_LEN as u64 + 1) as usize;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

impl SlotFile {
    pub fn sync(&mut self, path: &Path) -> Result<()> {
        if let Some(h) = &self.handle {
            h.sync_data()
                .map_err(|e| Error::io("sync cursor", path, e))?;
        }
        if self.dirty {
            self.synced_slot = 1 - self.synced_slot;
        }
        self.dirty = false;
        self.synced_known = true;
        Ok(())
    }

    /// Writes `(position, protect)` into the slot that is not the fsynced one.
    pub fn write(
        &mut self,
        fs: &dyn FileSystem,
        path: &Path,
        position: Offset,
        protect: bool,
    ) -> Result<()> {
        if self.handle.is_none() {
            let h = fs
                .open(path, OpenMode::Write)
                .map_err(|e| Error::io("open cursor", path, e))?;
            self.handle = Some(h);
        }
        if !self.synced_known {
            // The newest slot may not be durable yet (read after a kill -9): make it
            // so before overwriting the other one.
            self.sync(path)?;
        }
        let h = self.handle.as_ref().expect("opened above");
        self.sequence += 1;
        let slot = 1 - self.synced_slot;
        h.write_all_at(
            &encode_slot(self.sequence, position, protect),
            (slot * SLOT_LEN) as u64,
        )
        .map_err(|e| Error::io("write cursor", path, e))?;
        self.dirty = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_reject_any_flip() {
        let s = encode_slot(7, 1234, true);
        assert_eq!(decode_slot(&s), Some((7, 1234, true)));
        for i in 0..SLOT_LEN {
            let mut c = s;
            c[i] ^= 4;
            assert_eq!(decode_slot(&c), None, "flip at {i}");
        }
        assert_eq!(decode_slot(&encode_slot(0, 1, false)), None, "sequence 0");
        assert_eq!(decode_slot(&encode_slot(MAX_SEQUENCE + 1, 1, false)), None);
    }

    #[test]
    fn the_newest_valid_slot_wins_and_a_torn_one_is_skipped() {
        let mut f = Vec::new();
        f.extend_from_slice(&encode_slot(3, 30, true));
        f.extend_from_slice(&encode_slot(4, 40, false));
        assert_eq!(decode_file(&f), Ok((1, 4, 40, false)));
        f[SLOT_LEN + 13] ^= 1;
        assert_eq!(decode_file(&f), Ok((0, 3, 30, true)));
        f[13] ^= 1;
        assert!(decode_file(&f).is_err());
        assert!(decode_file(&f[..SLOT_LEN]).is_err(), "short file");
    }
}
