//! Sparse offset and time indexes of one segment: in memory while the segment is
//! written, as raw little-endian entries and a checksummed trailer on disk once
//! sealed. An index file is a cache: it is validated against the log before use and
//! rebuilt when it fails.

use crate::Offset;

/// Bytes of one offset-index entry: relative offset u32, position u32.
pub(crate) const OFFSET_ENTRY_LEN: usize = 8;
/// Bytes of one time-index entry: timestamp i64, relative offset u32.
pub(crate) const TIME_ENTRY_LEN: usize = 12;

/// Bytes of the trailer ending each index file: the `.log` length the index
/// describes (u64), the largest append time of the segment's batches (i64, ms) and a
/// CRC32 of the entries and both (u32). An index file is written without an fsync
/// (it is a cache) and replaces an earlier one in place, so a crash can leave a mix
/// of two versions (new entries over an old length, or the reverse) whose entries
/// each look plausible: a time entry with the timestamp of one version and the
/// offset of the other would make `offset_for_timestamp` skip records. The CRC
/// rejects the mix; the length rejects a whole index of an earlier, shorter state of
/// the segment. (An index of an earlier state of the same length cannot be on disk:
/// only the active segment changes, and recovery removes its index files durably
/// before any append.) The append time is the segment's, not the tail's: a segment
/// loaded from its index files reads only the batches after the last time entry,
/// and with a clock that went back within the segment the largest append time lies
/// before it (retention by time would judge the segment older than it is).
pub(crate) const TRAILER_LEN: usize = 20;

/// The most entries one index file of a segment may hold when its files must stay
/// within `segment_index_bytes` (`LogConfig`), the trailer included: a time entry
/// is the larger kind, so it bounds both files.
pub(crate) fn max_entries(segment_index_bytes: u32) -> u64 {
    let body = (segment_index_bytes as usize).saturating_sub(TRAILER_LEN);
    (body / TIME_ENTRY_LEN) as u64
}

/// What an index file's trailer says of its segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Trailer {
    /// The `.log` length the index describes.
    pub log_len: u64,
    /// The largest append time of the segment's batches (`i64::MIN` when empty).
    pub max_append_time: i64,
}

/// `entries` with `trailer`.
fn seal(mut entries: Vec<u8>, trailer: Trailer) -> Vec<u8> {
    entries.extend_from_slice(&trailer.log_len.to_le_bytes());
    entries.extend_from_slice(&trailer.max_append_time.to_le_bytes());
    let crc = crc32fast::hash(&entries);
    entries.extend_from_slice(&crc.to_le_bytes());
    entries
}

/// The entries of an index file whose trailer checks out and names `log_len`, and
/// the segment's largest append time it records.
fn unseal(file: &[u8], log_len: u64) -> Option<(&[u8], i64)> {
    let body_len = file.len().checked_sub(TRAILER_LEN)?;
    let (body, crc) = file.split_at(body_len + 16);
    let crc = u32::from_le_bytes(crc.try_into().ok()?);
    if crc32fast::hash(body) != crc {
        return None;
    }
    let (entries, trailer) = body.split_at(body_len);
    let len = u64::from_le_bytes(trailer[..8].try_into().ok()?);
    let max_append_time = i64::from_le_bytes(trailer[8..16].try_into().ok()?);
    (len == log_len).then_some((entries, max_append_time))
}

/// One offset-index entry: the batch holding `base + rel_offset` starts at `position`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub rel_offset: u32,
    pub position: u32,
}

/// One time-index entry: every record up to `base + rel_offset` has a timestamp
/// at most `timestamp`, and that batch starts at an indexed position at or before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub rel_offset: u32,
}

/// The two sparse indexes of a segment.
#[derive(Clone, Debug, Default)]
pub(crate) struct Indexes {
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
}

impl Indexes {
    /// Adds an entry for a batch at `position` whose first offset is `base + rel_offset`
    /// and whose records all have timestamps at most `max_ts_so_far`.
    pub fn push(&mut self, rel_offset: u32, position: u32, max_ts_so_far: i64) {
        if let Some(last) = self.offsets.last() {
            debug_assert!(rel_offset > last.rel_offset && position > last.position);
        }
        self.offsets.push(OffsetEntry {
            rel_offset,
            position,
        });
        if self
            .times
            .last()
            .is_none_or(|t| max_ts_so_far > t.timestamp)
        {
            self.times.push(TimeEntry {
                timestamp: max_ts_so_far,
                rel_offset,
            });
        }
    }

    /// Position of the last indexed batch starting at or before `rel_offset` (0 if none).
    pub fn floor_position(&self, rel_offset: u32) -> u32 {
        let i = self.offsets.partition_point(|e| e.rel_offset <= rel_offset);
        if i == 0 {
            0
        } else {
            self.offsets[i - 1].position
        }
    }

    /// A relative offset from which a scan finds the first record with timestamp >= ts:
    /// every record before the returned one is older than `ts`.
    pub fn scan_start_for_time(&self, ts: i64) -> u32 {
        let i = self.times.partition_point(|e| e.timestamp < ts);
        if i == 0 {
            0
        } else {
            self.times[i - 1].rel_offset
        }
    }

    /// The offset index file's bytes, ending in `trailer`.
    pub fn encode_offsets(&self, trailer: Trailer) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.offsets.len() * OFFSET_ENTRY_LEN + TRAILER_LEN);
        for e in &self.offsets {
            out.extend_from_slice(&e.rel_offset.to_le_bytes());
            out.extend_from_slice(&e.position.to_le_bytes());
        }
        seal(out, trailer)
    }

    /// The time index file's bytes, ending in `trailer`.
    pub fn encode_times(&self, trailer: Trailer) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.times.len() * TIME_ENTRY_LEN + TRAILER_LEN);
        for e in &self.times {
            out.extend_from_slice(&e.timestamp.to_le_bytes());
            out.extend_from_slice(&e.rel_offset.to_le_bytes());
        }
        seal(out, trailer)
    }

    /// Decodes index files, or `None` when they are not a plausible index of a log of
    /// `log_len` bytes (a trailer that does not check out or names another length,
    /// wrong length, entries out of order, positions past the end, a zero-filled
    /// tail, two files whose trailers disagree). The caller still cross-checks
    /// entries against the log. With the segment's largest append time.
    pub fn decode(offset_bytes: &[u8], time_bytes: &[u8], log_len: u64) -> Option<(Indexes, i64)> {
        let (offset_bytes, append_time) = unseal(offset_bytes, log_len)?;
        let (time_bytes, time_file_append_time) = unseal(time_bytes, log_len)?;
        if append_time != time_file_append_time {
            return None;
        }
        if !offset_bytes.len().is_multiple_of(OFFSET_ENTRY_LEN)
            || !time_bytes.len().is_multiple_of(TIME_ENTRY_LEN)
        {
            return None;
        }
        let mut idx = Indexes::default();
        for chunk in offset_bytes.chunks_exact(OFFSET_ENTRY_LEN) {
            let e = OffsetEntry {
                rel_offset: u32::from_le_bytes(chunk[0..4].try_into().ok()?),
                position: u32::from_le_bytes(chunk[4..8].try_into().ok()?),
            };
            if u64::from(e.position) >= log_len {
                return None;
            }
            if let Some(last) = idx.offsets.last() {
                if e.rel_offset <= last.rel_offset || e.position <= last.position {
                    return None;
                }
            }
            idx.offsets.push(e);
        }
        for chunk in time_bytes.chunks_exact(TIME_ENTRY_LEN) {
            let e = TimeEntry {
                timestamp: i64::from_le_bytes(chunk[0..8].try_into().ok()?),
                rel_offset: u32::from_le_bytes(chunk[8..12].try_into().ok()?),
            };
            if let Some(last) = idx.times.last() {
                if e.timestamp <= last.timestamp || e.rel_offset < last.rel_offset {
                    return None;
                }
            }
            // Every time entry points at an indexed batch.
            if idx
                .offsets
                .binary_search_by_key(&e.rel_offset, |o| o.rel_offset)
                .is_err()
            {
                return None;
            }
            idx.times.push(e);
        }
        Some((idx, append_time))
    }
}

/// Relative offset of `offset` in a segment based at `base`, if it fits in u32.
pub(crate) fn relative(base: Offset, offset: Offset) -> Option<u32> {
    offset.checked_sub(base).and_then(|d| u32::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The trailer of a `.log` of `log_len` bytes whose largest append time is 7.
    fn at(log_len: u64) -> Trailer {
        Trailer {
            log_len,
            max_append_time: 7,
        }
    }

    #[test]
    fn floor_and_time_lookups() {
        let mut idx = Indexes::default();
        idx.push(0, 0, 100);
        idx.push(10, 4096, 100); // no new time entry: max did not grow
        idx.push(20, 8192, 300);
        assert_eq!(idx.times.len(), 2);
        assert_eq!(idx.floor_position(0), 0);
        assert_eq!(idx.floor_position(15), 4096);
        assert_eq!(idx.floor_position(99), 8192);
        assert_eq!(idx.scan_start_for_time(50), 0);
        assert_eq!(idx.scan_start_for_time(200), 0);
        assert_eq!(idx.scan_start_for_time(301), 20);
    }

    #[test]
    fn decode_roundtrip_and_rejects_bad_files() {
        let mut idx = Indexes::default();
        idx.push(0, 0, 1);
        idx.push(5, 100, 2);
        let (o, t) = (idx.encode_offsets(at(200)), idx.encode_times(at(200)));
        let (back, append_time) = Indexes::decode(&o, &t, 200).unwrap();
        assert_eq!(append_time, 7);
        assert_eq!(back.offsets, idx.offsets);
        assert_eq!(back.times, idx.times);
        // Zero-filled preallocated tail.
        let mut zeroed = o.clone();
        zeroed.extend_from_slice(&[0u8; 16]);
        assert!(Indexes::decode(&zeroed, &t, 200).is_none());
        // Torn entry.
        assert!(Indexes::decode(&o[..11], &t, 200).is_none());
        // Written for another length of the log (an earlier state of the segment).
        assert!(Indexes::decode(&o, &t, 100).is_none());
        assert!(Indexes::decode(&o, &t, 201).is_none());
        // Position beyond the log, under a trailer that checks out.
        let (o100, t100) = (idx.encode_offsets(at(100)), idx.encode_times(at(100)));
        assert!(Indexes::decode(&o100, &t100, 100).is_none());
        // Garbage, and files of the earlier format (entries only).
        assert!(Indexes::decode(&[0xff; 24], &[], 200).is_none());
        assert!(Indexes::decode(&o[..16], &t[..24], 200).is_none());
        // Two files whose trailers name another append time (two writes).
        let other = idx.encode_times(Trailer {
            log_len: 200,
            max_append_time: 8,
        });
        assert!(Indexes::decode(&o, &other, 200).is_none());
        let empty = Indexes::default();
        assert!(
            Indexes::decode(&empty.encode_offsets(at(0)), &empty.encode_times(at(0)), 0).is_some()
        );
    }

    /// A crash can leave an index file half new, half old: every such mix is
    /// rejected, whatever byte the new write stopped at (the case the model test
    /// found: a time entry with the new timestamp and the old offset).
    #[test]
    fn a_file_mixing_two_versions_is_rejected() {
        let mut old = Indexes::default();
        old.push(0, 0, i64::MIN);
        old.push(4, 466, 146);
        old.push(13, 1136, 1979);
        old.push(19, 2246, 3444);
        let mut new = Indexes::default();
        new.push(0, 0, i64::MIN);
        new.push(4, 466, 146);
        new.push(13, 1136, 1979);
        new.push(18, 1932, 2672);
        new.push(19, 2246, 3444);
        let (old_t, new_t) = (old.encode_times(at(2378)), new.encode_times(at(2616)));
        let new_o = new.encode_offsets(at(2616));
        for cut in 0..new_t.len() {
            // The new bytes up to `cut` over the old file, at either length.
            for len in [old_t.len(), new_t.len()] {
                let mut mixed = old_t.clone();
                mixed.resize(len.max(cut), 0);
                mixed[..cut].copy_from_slice(&new_t[..cut]);
                mixed.truncate(len);
                if mixed == new_t {
                    continue;
                }
                assert!(
                    Indexes::decode(&new_o, &mixed, 2616).is_none(),
                    "cut {cut}, length {len}"
                );
            }
        }
        assert!(Indexes::decode(&new_o, &new_t, 2616).is_some());
    }
}
