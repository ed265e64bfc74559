//! [`AppendSource`]: what an append encodes, behind one interface for the writer.

use crate::batch::{self, BatchMeta, RecordParts, Scattered};
use crate::{Record, RecordRef};

/// What an append encodes: owned records, borrowed ones, or one record of borrowed
/// bytes.
pub(super) trait AppendSource {
    fn count(&self) -> usize;
    fn missing_key(&self) -> bool;
    /// Key and value bytes: a lower bound of the encoded size.
    fn payload_bytes(&self) -> u64;
    /// The parts of the records, the clock reading `now` for those without a timestamp.
    fn parts(&self, now: i64) -> impl Iterator<Item = RecordParts<'_>> + Clone;
    /// The exact encoded size of the batch, and its largest timestamp.
    fn encoded_len(&self, now: i64) -> (usize, i64) {
        let max = self
            .parts(now)
            .map(|p| p.timestamp)
            .max()
            .unwrap_or(i64::MIN);
        (batch::encoded_len(self.parts(now)), max)
    }
    /// Encodes the batch into `buf`, exactly [`AppendSource::encoded_len`] long.
    fn encode_into(&self, buf: &mut [u8], meta: BatchMeta, now: i64) -> Option<()> {
        batch::encode_into(buf, meta, self.parts(now))
    }
    /// Encodes the batch as parts that borrow its large keys and values.
    fn encode_parts(&self, meta: BatchMeta, now: i64) -> Scattered<'_> {
        Scattered::encode(meta, self.parts(now))
    }
}

impl AppendSource for [Record] {
    fn count(&self) -> usize {
        self.len()
    }

    fn missing_key(&self) -> bool {
        self.iter().any(|r| r.key.is_none())
    }

    fn payload_bytes(&self) -> u64 {
        self.iter()
            .map(|r| {
                (r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len)) as u64
            })
            .sum()
    }

    fn parts(&self, now: i64) -> impl Iterator<Item = RecordParts<'_>> + Clone {
        self.iter()
            .enumerate()
            .map(move |(i, r)| RecordParts::from_record(r, i as u32, now))
    }
}

impl AppendSource for [RecordRef<'_>] {
    fn count(&self) -> usize {
        self.len()
    }

    fn missing_key(&self) -> bool {
        self.iter().any(|r| r.key.is_none())
    }

    fn payload_bytes(&self) -> u64 {
        self.iter()
            .map(|r| (r.key.map_or(0, <[u8]>::len) + r.value.map_or(0, <[u8]>::len)) as u64)
            .sum()
    }

    fn parts(&self, now: i64) -> impl Iterator<Item = RecordParts<'_>> + Clone {
        self.iter()
            .enumerate()
            .map(move |(i, r)| RecordParts::from_ref(r, i as u32, now))
    }
}

/// One record of borrowed bytes (see [`Log::append_slice`]).
pub(super) struct Borrowed<'a> {
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
}

impl AppendSource for Borrowed<'_> {
    fn count(&self) -> usize {
        1
    }

    fn missing_key(&self) -> bool {
        self.key.is_none()
    }

    fn payload_bytes(&self) -> u64 {
        (self.key.map_or(0, <[u8]>::len) + self.value.len()) as u64
    }

    fn parts(&self, now: i64) -> impl Iterator<Item = RecordParts<'_>> + Clone {
        std::iter::once(RecordParts::borrowed(self.key, Some(self.value), now))
    }
}
