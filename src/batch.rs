//! The on-disk record batch: encode and decode. The byte layout is documented in
//! `docs/format.md`; this module is the only code that knows it.
//!
//! A batch is a fixed 60-byte header followed by records in Kafka v2 style
//! (zig-zag varints). All integers little-endian. The CRC covers every byte after
//! the CRC field, so a torn, zeroed or garbage tail never decodes.

use std::fmt;
use std::str;

use crate::record::{Header, StoredRecord};
use crate::Offset;

mod encode;
mod scatter;

pub(crate) use encode::{encode, encode_empty, encode_into, encoded_len, BatchMeta, RecordParts};
pub(crate) use scatter::{Scattered, BORROW_MIN_BYTES};

/// Bytes of the fixed batch header.
pub(crate) const HEADER_LEN: usize = 60;
/// The format version written in every batch.
pub(crate) const MAGIC: u8 = 1;
/// Attribute bits 0-2: compression codec (0 = none; others reserved).
pub(crate) const ATTR_COMPRESSION_MASK: u8 = 0b0000_0111;
/// Attribute bit 3: the `delete_horizon_ms` field is set (KIP-534 style).
pub(crate) const ATTR_HAS_DELETE_HORIZON: u8 = 0b0000_1000;
/// Attribute bit 4: an empty batch (record count 0). Compaction writes one where it
/// removed every record up to the end of a segment, so the segment still says where
/// its offsets end (a shorter segment would look like lost data).
pub(crate) const ATTR_EMPTY: u8 = 0b0001_0000;
const ATTR_KNOWN: u8 = ATTR_COMPRESSION_MASK | ATTR_HAS_DELETE_HORIZON | ATTR_EMPTY;

// Field positions inside the header.
const POS_LENGTH: usize = 0;
const POS_CRC: usize = 4;
const POS_MAGIC: usize = 8;
const POS_ATTRIBUTES: usize = 9;
const POS_RESERVED: usize = 10;
const POS_LAST_OFFSET_DELTA: usize = 12;
const POS_BASE_OFFSET: usize = 16;
const POS_FIRST_TIMESTAMP: usize = 24;
const POS_MAX_TIMESTAMP: usize = 32;
const POS_APPEND_TIME: usize = 40;
const POS_DELETE_HORIZON: usize = 48;
const POS_RECORD_COUNT: usize = 56;

/// Why bytes did not decode as a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BatchError {
    /// The length field is zero: the end of written data in a zero-filled file.
    Zero,
    /// Fewer bytes are available than the batch claims: a torn write.
    Truncated,
    /// The bytes are not a valid batch.
    Invalid(&'static str),
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Zero => write!(f, "zero length (unwritten space)"),
            BatchError::Truncated => write!(f, "batch runs past the end of the data"),
            BatchError::Invalid(why) => write!(f, "{why}"),
        }
    }
}

/// The decoded fixed header of a batch, and its record bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Batch<'a> {
    /// The whole batch, header included.
    pub bytes: &'a [u8],
    pub base_offset: Offset,
    pub last_offset_delta: u32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    /// The log clock when the batch was appended (retention and rolling use it).
    pub append_time: i64,
    /// Set by compaction: tombstones in this batch may be dropped after this time.
    pub delete_horizon: Option<i64>,
    pub record_count: u32,
}

impl<'a> Batch<'a> {
    /// Total bytes of the batch on disk.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Offset of the last record the batch was written with (kept through compaction).
    pub fn last_offset(&self) -> Offset {
        self.base_offset + u64::from(self.last_offset_delta)
    }

    /// Iterates the records; each is fully checked as it is decoded.
    #[inline]
    pub fn records(&self) -> RecordIter<'a> {
        RecordIter {
            rest: &self.bytes[HEADER_LEN..],
            remaining: self.record_count,
            base_offset: self.base_offset,
            first_timestamp: self.first_timestamp,
            last_offset_delta: self.last_offset_delta,
            prev_delta: None,
        }
    }

    /// The records at or after offset `from` (a reader resuming inside the batch):
    /// those before it are passed over by [`RecordIter::skip_before`], whose error,
    /// if any, comes first.
    #[inline]
    pub fn records_from(&self, from: Offset) -> RecordsFrom<'a> {
        let mut records = self.records();
        let skipped = records.skip_before(from).err().map(Err);
        skipped.into_iter().chain(records)
    }

    /// Decodes every record, checking that they fill the batch exactly.
    pub fn validate_records(&self) -> Result<(), BatchError> {
        let mut it = self.records();
        for record in it.by_ref() {
            record?;
        }
        if !it.rest.is_empty() {
            return Err(BatchError::Invalid("bytes left after the last record"));
        }
        Ok(())
    }
}

/// Reads the length of the batch at the start of `bytes` without checking anything
/// else: the number of bytes the batch occupies, or an error for a zero or short prefix.
#[inline]
pub(crate) fn peek_len(bytes: &[u8]) -> Result<usize, BatchError> {
    if bytes.len() < 4 {
        return Err(BatchError::Truncated);
    }
    let length = read_u32(bytes, POS_LENGTH) as usize;
    if length == 0 {
        return Err(BatchError::Zero);
    }
    if length < HEADER_LEN - 4 {
        return Err(BatchError::Invalid("length shorter than a batch header"));
    }
    Ok(length + 4)
}

/// Reads the base offset of the batch at the start of `bytes` without checking the CRC:
/// for skipping over batches that are not the one wanted.
pub(crate) fn peek_offsets(bytes: &[u8]) -> Result<(usize, Offset, Offset), BatchError> {
    let len = peek_len(bytes)?;
    if bytes.len() < HEADER_LEN {
        return Err(BatchError::Truncated);
    }
    let base = read_u64(bytes, POS_BASE_OFFSET);
    let last = base.saturating_add(u64::from(read_u32(bytes, POS_LAST_OFFSET_DELTA)));
    Ok((len, base, last))
}

/// Decodes and CRC-checks the batch at the start of `bytes`. Records are checked
/// as they are iterated (or by [`Batch::validate_records`]).
pub(crate) fn decode(bytes: &[u8]) -> Result<Batch<'_>, BatchError> {
    let len = peek_len(bytes)?;
    if bytes.len() < len {
        return Err(BatchError::Truncated);
    }
    let bytes = &bytes[..len];
    let stored_crc = read_u32(bytes, POS_CRC);
    if crc32fast::hash(&bytes[POS_MAGIC..]) != stored_crc {
        return Err(BatchError::Invalid("CRC mismatch"));
    }
    parse_header(bytes)
}

/// Where the CRC of an encoded batch is (see [`withhold_crc`]).
pub(crate) const CRC_FIELD: std::ops::Range<usize> = POS_CRC..POS_CRC + 4;

/// Makes the encoded batch at the start of `bytes` fail its CRC check until the
/// returned bytes are put back at [`CRC_FIELD`]: the field gets the CRC's complement,
/// which never equals it. A batch written that way past the published end and then
/// abandoned is a torn tail to recovery, never a record.
pub(crate) fn withhold_crc(bytes: &mut [u8]) -> [u8; 4] {
    let crc = read_u32(bytes, POS_CRC);
    bytes[CRC_FIELD].copy_from_slice(&(!crc).to_le_bytes());
    crc.to_le_bytes()
}

/// [`decode`] with a CRC hasher made once by the caller (`crc32fast::Hasher::new()`
/// detects the CPU's features on every call): for loops over many batches.
#[inline]
pub(crate) fn decode_with<'b>(
    bytes: &'b [u8],
    hasher: &crc32fast::Hasher,
) -> Result<Batch<'b>, BatchError> {
    let len = peek_len(bytes)?;
    if bytes.len() < len {
        return Err(BatchError::Truncated);
    }
    let bytes = &bytes[..len];
    let stored_crc = read_u32(bytes, POS_CRC);
    let mut h = hasher.clone();
    h.update(&bytes[POS_MAGIC..]);
    if h.finalize() != stored_crc {
        return Err(BatchError::Invalid("CRC mismatch"));
    }
    parse_header(bytes)
}

/// Parses the header of a batch of exactly `bytes` that already passed [`decode`]
/// (its CRC is not checked again).
pub(crate) fn decode_checked(bytes: &[u8]) -> Result<Batch<'_>, BatchError> {
    if bytes.len() < HEADER_LEN || peek_len(bytes)? != bytes.len() {
        return Err(BatchError::Truncated);
    }
    parse_header(bytes)
}

fn parse_header(bytes: &[u8]) -> Result<Batch<'_>, BatchError> {
    if bytes[POS_MAGIC] != MAGIC {
        return Err(BatchError::Invalid("unknown format version"));
    }
    let attributes = bytes[POS_ATTRIBUTES];
    if attributes & !ATTR_KNOWN != 0 || read_u16(bytes, POS_RESERVED) != 0 {
        return Err(BatchError::Invalid("unknown attribute bits"));
    }
    if attributes & ATTR_COMPRESSION_MASK != 0 {
        return Err(BatchError::Invalid("unsupported compression codec"));
    }
    let record_count = read_u32(bytes, POS_RECORD_COUNT);
    let last_offset_delta = read_u32(bytes, POS_LAST_OFFSET_DELTA);
    let empty = attributes & ATTR_EMPTY != 0;
    if (record_count == 0) != empty || u64::from(record_count) > u64::from(last_offset_delta) + 1 {
        return Err(BatchError::Invalid(
            "record count does not fit the offset range",
        ));
    }
    let base_offset = read_u64(bytes, POS_BASE_OFFSET);
    // The offset after the batch must exist too: readers and recovery compute it.
    if base_offset
        .checked_add(u64::from(last_offset_delta) + 1)
        .is_none()
    {
        return Err(BatchError::Invalid("offset overflow"));
    }
    let has_horizon = attributes & ATTR_HAS_DELETE_HORIZON != 0;
    let batch = Batch {
        bytes,
        base_offset,
        last_offset_delta,
        first_timestamp: read_i64(bytes, POS_FIRST_TIMESTAMP),
        max_timestamp: read_i64(bytes, POS_MAX_TIMESTAMP),
        append_time: read_i64(bytes, POS_APPEND_TIME),
        delete_horizon: has_horizon.then(|| read_i64(bytes, POS_DELETE_HORIZON)),
        record_count,
    };
    Ok(batch)
}

/// A record decoded in place: key, value and headers borrow the batch's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Offset of the record.
    pub offset: Offset,
    /// Timestamp in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The value; `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    headers: &'a [u8],
    header_count: u32,
}

impl<'a> RecordView<'a> {
    /// The headers, in order, as `(name, value)`.
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            rest: self.headers,
            remaining: self.header_count,
        }
    }

    /// The value of the first header named `key`.
    pub fn header(&self, key: &str) -> Option<&'a [u8]> {
        self.headers().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Copies the record out of the log.
    pub fn to_owned_record(&self) -> StoredRecord {
        StoredRecord {
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.map(<[u8]>::to_vec),
            headers: if self.header_count == 0 {
                Vec::new()
            } else {
                self.headers()
                    .map(|(k, v)| Header {
                        key: k.to_string(),
                        value: v.to_vec(),
                    })
                    .collect()
            },
        }
    }
}

/// Iterator over a record's headers. The headers were validated when the record was
/// decoded, so this cannot fail.
#[derive(Clone, Debug)]
pub struct HeaderIter<'a> {
    rest: &'a [u8],
    remaining: u32,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let mut cur = Cursor { bytes: self.rest };
        // Validated at record decode; a failure here would mean a logic error, so the
        // iterator just ends rather than panicking.
        let key = cur.bytes_field().ok()??;
        let value = cur.bytes_field().ok()??;
        let key = str::from_utf8(key).ok()?;
        self.rest = cur.bytes;
        Some((key, value))
    }
}

/// [`Batch::records_from`]: the skip's error, if any, then the records (a concrete
/// type, with nothing to drop, so a caller may change what the batch borrows from as
/// soon as it stops iterating).
pub(crate) type RecordsFrom<'a> =
    std::iter::Chain<std::option::IntoIter<Result<RecordView<'a>, BatchError>>, RecordIter<'a>>;

/// Iterator over the records of one batch.
#[derive(Clone, Debug)]
pub(crate) struct RecordIter<'a> {
    rest: &'a [u8],
    remaining: u32,
    base_offset: Offset,
    first_timestamp: i64,
    last_offset_delta: u32,
    prev_delta: Option<u32>,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordView<'a>, BatchError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        match self.decode_one() {
            Ok(r) => Some(Ok(r)),
            Err(e) => {
                self.remaining = 0;
                Some(Err(e))
            }
        }
    }
}

impl<'a> RecordIter<'a> {
    /// Moves past the records below offset `from` reading only what locates the next
    /// record (its length and offset delta, still checked for order): a reader that
    /// resumes in the middle of a batch (a lane's block starting there) skipped them
    /// by decoding each in full, a sixth of the cost of every record it then read.
    /// The records skipped are not handed out, so their other fields go unchecked
    /// here; the batch's CRC was checked before.
    pub fn skip_before(&mut self, from: Offset) -> Result<(), BatchError> {
        if from <= self.base_offset {
            return Ok(());
        }
        if u64::from(self.remaining) == u64::from(self.last_offset_delta) + 1
            && self.prev_delta.is_none()
        {
            return self.skip_contiguous(from);
        }
        while self.remaining > 0 {
            let (body, after) = split_record(self.rest)?;
            let (_ts_delta, offset_delta) = self.delta_fields(&mut Cursor { bytes: body })?;
            if self.base_offset + u64::from(offset_delta) >= from {
                // The first record to hand out: left for `decode_one`.
                return Ok(());
            }
            self.prev_delta = Some(offset_delta);
            self.rest = after;
            self.remaining -= 1;
        }
        Ok(())
    }

    /// [`RecordIter::skip_before`] in a batch with a record at every offset (never
    /// compacted: as many records as offsets, at strictly increasing deltas up to the
    /// last, so record `i` is at delta `i`): only the lengths are read. The first
    /// record handed out is checked against the delta the skipped ones must have had.
    fn skip_contiguous(&mut self, from: Offset) -> Result<(), BatchError> {
        let skip = (from - self.base_offset).min(u64::from(self.remaining));
        for _ in 0..skip {
            self.rest = split_record(self.rest)?.1;
        }
        if skip > 0 {
            // `skip` is at most the record count, a u32.
            let skipped = skip as u32;
            self.remaining -= skipped;
            self.prev_delta = Some(skipped - 1);
        }
        Ok(())
    }

    /// A record's attributes, timestamp delta and offset delta, at the start of its
    /// body; the offset delta checked to come after the last one and not past the
    /// batch's last.
    #[inline(always)]
    fn delta_fields(&self, cur: &mut Cursor<'a>) -> Result<(i64, u32), BatchError> {
        let _attributes = cur.take(1)?;
        let ts_delta = cur.varlong()?;
        let offset_delta = u32::try_from(cur.varint()?)
            .map_err(|_| BatchError::Invalid("negative offset delta"))?;
        if offset_delta > self.last_offset_delta
            || self.prev_delta.is_some_and(|p| offset_delta <= p)
        {
            return Err(BatchError::Invalid("record offsets out of order"));
        }
        Ok((ts_delta, offset_delta))
    }

    #[inline]
    fn decode_one(&mut self) -> Result<RecordView<'a>, BatchError> {
        let (body, after) = split_record(self.rest)?;
        self.rest = after;
        let mut cur = Cursor { bytes: body };
        let (ts_delta, offset_delta) = self.delta_fields(&mut cur)?;
        self.prev_delta = Some(offset_delta);
        let key = cur.bytes_field()?;
        let value = cur.bytes_field()?;
        let header_count = u32::try_from(cur.varint()?)
            .map_err(|_| BatchError::Invalid("negative header count"))?;
        let headers = cur.bytes;
        if header_count != 0 {
            validate_headers(&mut cur, header_count)?;
        }
        if !cur.bytes.is_empty() {
            return Err(BatchError::Invalid(
                "record length does not match its fields",
            ));
        }
        Ok(RecordView {
            offset: self.base_offset + u64::from(offset_delta),
            timestamp: self.first_timestamp.wrapping_add(ts_delta),
            key,
            value,
            headers,
            header_count,
        })
    }
}

/// The body of the record at the start of `bytes` (after its length varint), and the
/// bytes after it.
#[inline(always)]
fn split_record(bytes: &[u8]) -> Result<(&[u8], &[u8]), BatchError> {
    let mut outer = Cursor { bytes };
    let len = usize::try_from(outer.varint()?)
        .map_err(|_| BatchError::Invalid("negative record length"))?;
    let body = outer.take(len)?;
    Ok((body, outer.bytes))
}

/// Checks `count` headers at the cursor: non-null keys in UTF-8, non-null values.
fn validate_headers(cur: &mut Cursor<'_>, count: u32) -> Result<(), BatchError> {
    for _ in 0..count {
        let k = cur
            .bytes_field()?
            .ok_or(BatchError::Invalid("null header key"))?;
        str::from_utf8(k).map_err(|_| BatchError::Invalid("header key is not UTF-8"))?;
        cur.bytes_field()?
            .ok_or(BatchError::Invalid("null header value"))?;
    }
    Ok(())
}

fn read_u16(b: &[u8], pos: usize) -> u16 {
    u16::from_le_bytes([b[pos], b[pos + 1]])
}

fn read_u32(b: &[u8], pos: usize) -> u32 {
    u32::from_le_bytes(b[pos..pos + 4].try_into().expect("slice of 4 bytes"))
}

fn read_u64(b: &[u8], pos: usize) -> u64 {
    u64::from_le_bytes(b[pos..pos + 8].try_into().expect("slice of 8 bytes"))
}

fn read_i64(b: &[u8], pos: usize) -> i64 {
    i64::from_le_bytes(b[pos..pos + 8].try_into().expect("slice of 8 bytes"))
}

#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[inline]
fn varint_len(v: i64) -> usize {
    let mut u = zigzag(v);
    let mut n = 1;
    while u >= 0x80 {
        u >>= 7;
        n += 1;
    }
    n
}

struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    #[inline(always)]
    fn take(&mut self, n: usize) -> Result<&'a [u8], BatchError> {
        if n > self.bytes.len() {
            return Err(BatchError::Invalid("field runs past the record"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    /// A zig-zag varint of up to 10 bytes. One- and two-byte encodings (every length
    /// below 8 KiB, small deltas and counts) take a fast path.
    #[inline(always)]
    fn varlong(&mut self) -> Result<i64, BatchError> {
        match self.short_varint() {
            Some(v) => Ok(v),
            None => self.varlong_slow(),
        }
    }

    /// The one- and two-byte encodings; `None` for anything longer (or too short).
    #[inline(always)]
    fn short_varint(&mut self) -> Option<i64> {
        match *self.bytes {
            [b0, ref rest @ ..] if b0 < 0x80 => {
                self.bytes = rest;
                Some(unzigzag(u64::from(b0)))
            }
            [b0, b1, ref rest @ ..] if b1 < 0x80 => {
                self.bytes = rest;
                Some(unzigzag(u64::from(b0 & 0x7f) | (u64::from(b1) << 7)))
            }
            _ => None,
        }
    }

    #[cold]
    #[inline(never)]
    fn varlong_slow(&mut self) -> Result<i64, BatchError> {
        let mut result: u64 = 0;
        for i in 0..10 {
            let (&byte, rest) = self
                .bytes
                .split_first()
                .ok_or(BatchError::Invalid("varint runs past the record"))?;
            self.bytes = rest;
            result |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(unzigzag(result));
            }
        }
        Err(BatchError::Invalid("varint longer than 10 bytes"))
    }

    /// A varint that must fit 32 bits. The fast paths decode at most 14 bits, always in
    /// range, so only the slow path checks the range.
    #[inline(always)]
    fn varint(&mut self) -> Result<i64, BatchError> {
        match self.short_varint() {
            Some(v) => Ok(v),
            None => self.varint_slow(),
        }
    }

    #[cold]
    #[inline(never)]
    fn varint_slow(&mut self) -> Result<i64, BatchError> {
        let v = self.varlong_slow()?;
        if v < i64::from(i32::MIN) || v > i64::from(i32::MAX) {
            return Err(BatchError::Invalid("varint out of 32-bit range"));
        }
        Ok(v)
    }

    /// A length-prefixed byte string; length -1 is null.
    #[inline(always)]
    fn bytes_field(&mut self) -> Result<Option<&'a [u8]>, BatchError> {
        match self.varint()? {
            -1 => Ok(None),
            n if n < 0 => Err(BatchError::Invalid("negative field length")),
            n => self.take(n as usize).map(Some),
        }
    }
}

#[cfg(test)]
mod tests;
