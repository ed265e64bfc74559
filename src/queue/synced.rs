//! The synced length of a format-2 journal (see `journal.rs` for the file layout and
//! `Journal::sync` for the protocol): two 32-byte slots `"LQJS" | generation u64 |
//! sequence u64 | synced u64 | crc32` at bytes 0 and 512, written alternately, the
//! newest valid one telling how far the frames were fsynced.

const SLOT_MAGIC: &[u8; 4] = b"LQJS";
pub(crate) const SLOT_LEN: usize = 32;
/// Each slot has a 512-byte sector of its own: a torn sector write spoils one slot.
pub(crate) const SLOT_SPACING: usize = 512;
/// Where the frames of a format-2 journal begin.
pub(crate) const FRAMES_START: usize = 2 * SLOT_SPACING;
/// Largest slot sequence taken as genuine (see `checkpoint::MAX_SEQUENCE`).
const MAX_SEQUENCE: u64 = u64::MAX / 2;

/// Byte position of the slot that holds `sequence`.
pub(crate) fn slot_position(sequence: u64) -> usize {
    (sequence % 2) as usize * SLOT_SPACING
}

pub(crate) fn encode_slot(generation: u64, sequence: u64, synced: u64) -> [u8; SLOT_LEN] {
    let mut slot = [0u8; SLOT_LEN];
    slot[0..4].copy_from_slice(SLOT_MAGIC);
    slot[4..12].copy_from_slice(&generation.to_le_bytes());
    slot[12..20].copy_from_slice(&sequence.to_le_bytes());
    slot[20..28].copy_from_slice(&synced.to_le_bytes());
    let crc = crc32fast::hash(&slot[..28]);
    slot[28..32].copy_from_slice(&crc.to_le_bytes());
    slot
}

/// What the synced-length slots of a format-2 journal header say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Synced {
    /// Every frame below this byte was fsynced (from the newest valid slot; no
    /// valid slot: [`FRAMES_START`], nothing synced).
    Upto(u64),
    /// A slot with a valid CRC names another generation: the file is not the journal
    /// the snapshot names.
    WrongGeneration(u64),
}

/// Reads the two slots of `header` (the first [`FRAMES_START`] bytes of the journal
/// of `generation`). A slot that fails its check is ignored: it is the one a power
/// loss tore while it was written (or damage), and the other one holds an earlier,
/// still true, synced length.
pub(crate) fn read_synced(header: &[u8], generation: u64) -> Synced {
    let mut best: Option<(u64, u64)> = None;
    for at in [0, SLOT_SPACING] {
        let Some(slot) = header.get(at..at + SLOT_LEN) else {
            continue;
        };
        let crc = u32::from_le_bytes(slot[28..32].try_into().expect("4 bytes"));
        if !slot.starts_with(SLOT_MAGIC) || crc32fast::hash(&slot[..28]) != crc {
            continue;
        }
        let u64_at = |p: usize| u64::from_le_bytes(slot[p..p + 8].try_into().expect("8 bytes"));
        let (gen, sequence, synced) = (u64_at(4), u64_at(12), u64_at(20));
        if gen != generation {
            return Synced::WrongGeneration(gen);
        }
        if sequence == 0 || sequence > MAX_SEQUENCE || slot_position(sequence) != at {
            continue;
        }
        if best.is_none_or(|(s, _)| sequence > s) {
            best = Some((sequence, synced));
        }
    }
    Synced::Upto(best.map_or(FRAMES_START as u64, |(_, synced)| synced))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_valid_slot_wins() {
        let mut header = vec![0u8; FRAMES_START];
        assert_eq!(read_synced(&header, 7), Synced::Upto(FRAMES_START as u64));
        let put = |h: &mut Vec<u8>, seq: u64, synced: u64| {
            let at = slot_position(seq);
            h[at..at + SLOT_LEN].copy_from_slice(&encode_slot(7, seq, synced));
        };
        put(&mut header, 1, 2000);
        assert_eq!(read_synced(&header, 7), Synced::Upto(2000));
        put(&mut header, 2, 3000);
        assert_eq!(read_synced(&header, 7), Synced::Upto(3000));
        // A torn (or damaged) newest slot: the previous sync's length.
        header[3] ^= 1;
        assert_eq!(read_synced(&header, 7), Synced::Upto(2000));
        // A slot of another generation: not this journal.
        assert_eq!(read_synced(&header, 8), Synced::WrongGeneration(7));
        // A slot in the wrong place (sequence 2 belongs at 0) is ignored.
        let mut moved = vec![0u8; FRAMES_START];
        moved[SLOT_SPACING..SLOT_SPACING + SLOT_LEN].copy_from_slice(&encode_slot(7, 2, 9));
        assert_eq!(read_synced(&moved, 7), Synced::Upto(FRAMES_START as u64));
    }
}
