//! Encoding batches: the write side of the format in `super`.

use super::{
    varint_len, zigzag, HeaderIter, RecordView, ATTR_EMPTY, ATTR_HAS_DELETE_HORIZON, HEADER_LEN,
    MAGIC, POS_APPEND_TIME, POS_ATTRIBUTES, POS_BASE_OFFSET, POS_CRC, POS_DELETE_HORIZON,
    POS_FIRST_TIMESTAMP, POS_LAST_OFFSET_DELTA, POS_LENGTH, POS_MAGIC, POS_MAX_TIMESTAMP,
    POS_RECORD_COUNT,
};
use crate::record::{Header, Record, RecordRef};
use crate::Offset;

/// One record to encode: borrowed parts, with its offset relative to the batch base.
#[derive(Clone, Debug)]
pub(crate) struct RecordParts<'a> {
    pub offset_delta: u32,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Headers<'a>,
}

/// Headers to encode, from an owned record, a borrowed one, or a decoded view.
#[derive(Clone, Debug)]
pub(crate) enum Headers<'a> {
    Owned(&'a [Header]),
    Borrowed(&'a [(&'a str, &'a [u8])]),
    Raw(HeaderIter<'a>),
}

impl Headers<'_> {
    /// Calls `f` with each header's key and value bytes, in order; returns the count.
    #[inline]
    fn for_each(&self, mut f: impl FnMut(&[u8], &[u8])) {
        match self {
            Headers::Owned(hs) => hs.iter().for_each(|h| f(h.key.as_bytes(), &h.value)),
            Headers::Borrowed(hs) => hs.iter().for_each(|(k, v)| f(k.as_bytes(), v)),
            Headers::Raw(it) => it.clone().for_each(|(k, v)| f(k.as_bytes(), v)),
        }
    }

    fn count(&self) -> usize {
        match self {
            Headers::Owned(hs) => hs.len(),
            Headers::Borrowed(hs) => hs.len(),
            Headers::Raw(it) => it.remaining as usize,
        }
    }
}

impl<'a> RecordParts<'a> {
    /// Parts of a user record, with `default_ts` when the record has no timestamp.
    pub fn from_record(record: &'a Record, offset_delta: u32, default_ts: i64) -> Self {
        RecordParts {
            offset_delta,
            timestamp: record.timestamp.unwrap_or(default_ts),
            key: record.key.as_deref(),
            value: record.value.as_deref(),
            headers: Headers::Owned(&record.headers),
        }
    }

    /// Parts of a single record of borrowed bytes with no headers (offset delta 0).
    pub fn borrowed(key: Option<&'a [u8]>, value: Option<&'a [u8]>, timestamp: i64) -> Self {
        RecordParts {
            offset_delta: 0,
            timestamp,
            key,
            value,
            headers: Headers::Owned(&[]),
        }
    }

    /// Parts of a borrowed record, with `default_ts` when it has no timestamp.
    pub fn from_ref(record: &RecordRef<'a>, offset_delta: u32, default_ts: i64) -> Self {
        RecordParts {
            offset_delta,
            timestamp: record.timestamp.unwrap_or(default_ts),
            key: record.key,
            value: record.value,
            headers: Headers::Borrowed(record.headers),
        }
    }

    /// Parts of a stored record view, keeping its offset.
    pub fn from_view(view: &RecordView<'a>, base_offset: Offset) -> Self {
        RecordParts {
            offset_delta: u32::try_from(view.offset - base_offset)
                .expect("views come from a batch whose offset deltas are u32"),
            timestamp: view.timestamp,
            key: view.key,
            value: view.value,
            headers: Headers::Raw(view.headers()),
        }
    }
}

/// Header fields chosen by the writer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchMeta {
    pub base_offset: Offset,
    pub last_offset_delta: u32,
    pub append_time: i64,
    pub delete_horizon: Option<i64>,
}

/// Where encoded bytes go: a growing `Vec`, an exactly sized slice (the mapped
/// region of the active segment: one copy of each byte, no scratch buffer), or a
/// list of parts that borrows the records' large keys and values (`Scattered`:
/// written with one vectored write, no copy in between).
pub(crate) trait Sink<'r> {
    fn put(&mut self, b: u8);
    fn put_slice(&mut self, b: &[u8]);
    /// A record's key or value, which lives as long as the records (`'r`): a sink
    /// may keep a reference to it instead of copying it.
    #[inline(always)]
    fn put_borrowed(&mut self, b: &'r [u8]) {
        self.put_slice(b);
    }
    /// About `n` more bytes are coming.
    fn reserve(&mut self, _n: usize) {}
}

impl Sink<'_> for Vec<u8> {
    #[inline(always)]
    fn put(&mut self, b: u8) {
        self.push(b);
    }

    #[inline(always)]
    fn put_slice(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }

    #[inline(always)]
    fn reserve(&mut self, n: usize) {
        Vec::reserve(self, n);
    }
}

/// Writes into a slice of known length; a write past its end is remembered, never a
/// panic (the caller then refuses the batch).
struct SliceSink<'b> {
    buf: &'b mut [u8],
    at: usize,
    overflow: bool,
}

impl Sink<'_> for SliceSink<'_> {
    #[inline(always)]
    fn put(&mut self, b: u8) {
        match self.buf.get_mut(self.at) {
            Some(slot) => {
                *slot = b;
                self.at += 1;
            }
            None => self.overflow = true,
        }
    }

    #[inline(always)]
    fn put_slice(&mut self, b: &[u8]) {
        match self.buf.get_mut(self.at..self.at + b.len()) {
            Some(dest) => {
                dest.copy_from_slice(b);
                self.at += b.len();
            }
            None => self.overflow = true,
        }
    }
}

/// What the records of a batch came to.
pub(super) struct Summary {
    count: u32,
    first_ts: Option<i64>,
    max_ts: i64,
}

/// Appends one batch holding `records` (offset deltas increasing) to `out`. With no
/// records it is an empty batch (attribute [`ATTR_EMPTY`]): only compaction writes
/// one, to mark where a segment's offsets end.
pub(crate) fn encode<'r>(
    out: &mut Vec<u8>,
    meta: BatchMeta,
    records: impl IntoIterator<Item = RecordParts<'r>>,
) {
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    let summary = encode_records(out, records);
    finish(&mut out[start..], meta, &summary);
}

/// Exact bytes [`encode`] writes for `records`.
pub(crate) fn encoded_len<'r>(records: impl IntoIterator<Item = RecordParts<'r>>) -> usize {
    let mut len = HEADER_LEN;
    let mut first_ts = None;
    for r in records {
        let first = *first_ts.get_or_insert(r.timestamp);
        let body = record_body_len(&r, r.timestamp.wrapping_sub(first));
        len += varint_len(body as i64) + body;
    }
    len
}

/// Encodes the batch straight into `buf`, which must be exactly
/// [`encoded_len`]`(records)` long; `None` (and `buf` garbage) when it is not.
pub(crate) fn encode_into<'r>(
    buf: &mut [u8],
    meta: BatchMeta,
    records: impl IntoIterator<Item = RecordParts<'r>>,
) -> Option<()> {
    let (header, body) = buf.split_at_mut_checked(HEADER_LEN)?;
    header.fill(0);
    let mut sink = SliceSink {
        buf: body,
        at: 0,
        overflow: false,
    };
    let summary = encode_records(&mut sink, records);
    if sink.overflow || sink.at != sink.buf.len() {
        return None;
    }
    finish(buf, meta, &summary);
    Some(())
}

/// Writes the records' bodies (everything after the batch header).
#[inline]
pub(super) fn encode_records<'r, S: Sink<'r>>(
    out: &mut S,
    records: impl IntoIterator<Item = RecordParts<'r>>,
) -> Summary {
    let mut first_ts = None;
    let mut max_ts = i64::MIN;
    let mut count: u32 = 0;
    for r in records {
        let first = *first_ts.get_or_insert(r.timestamp);
        max_ts = max_ts.max(r.timestamp);
        count += 1;
        let ts_delta = r.timestamp.wrapping_sub(first);
        let body_len = record_body_len(&r, ts_delta);
        out.reserve(body_len + 5);
        put_varlong(out, body_len as i64);
        out.put(0); // record attributes: unused
        put_varlong(out, ts_delta);
        put_varlong(out, i64::from(r.offset_delta));
        put_borrowed_field(out, r.key);
        put_borrowed_field(out, r.value);
        put_varlong(out, r.headers.count() as i64);
        r.headers.for_each(|k, v| {
            put_bytes_field(out, Some(k));
            put_bytes_field(out, Some(v));
        });
    }
    Summary {
        count,
        first_ts,
        max_ts,
    }
}

/// Fills in the header of the batch `batch` (header and records, exactly) and its CRC.
fn finish(batch: &mut [u8], meta: BatchMeta, s: &Summary) {
    let len = batch.len();
    fill_header(&mut batch[..HEADER_LEN], len, meta, s);
    let crc = crc32fast::hash(&batch[POS_MAGIC..]);
    batch[POS_CRC..POS_CRC + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Fills in every header field of a batch of `len` bytes but its CRC.
pub(super) fn fill_header(header: &mut [u8], len: usize, meta: BatchMeta, s: &Summary) {
    let length = u32::try_from(len - 4).unwrap_or(u32::MAX);
    header[POS_LENGTH..POS_LENGTH + 4].copy_from_slice(&length.to_le_bytes());
    header[POS_MAGIC] = MAGIC;
    header[POS_ATTRIBUTES] = if meta.delete_horizon.is_some() {
        ATTR_HAS_DELETE_HORIZON
    } else {
        0
    } | if s.count == 0 { ATTR_EMPTY } else { 0 };
    header[POS_LAST_OFFSET_DELTA..POS_LAST_OFFSET_DELTA + 4]
        .copy_from_slice(&meta.last_offset_delta.to_le_bytes());
    header[POS_BASE_OFFSET..POS_BASE_OFFSET + 8].copy_from_slice(&meta.base_offset.to_le_bytes());
    header[POS_FIRST_TIMESTAMP..POS_FIRST_TIMESTAMP + 8]
        .copy_from_slice(&s.first_ts.unwrap_or(0).to_le_bytes());
    header[POS_MAX_TIMESTAMP..POS_MAX_TIMESTAMP + 8].copy_from_slice(&s.max_ts.to_le_bytes());
    header[POS_APPEND_TIME..POS_APPEND_TIME + 8].copy_from_slice(&meta.append_time.to_le_bytes());
    header[POS_DELETE_HORIZON..POS_DELETE_HORIZON + 8]
        .copy_from_slice(&meta.delete_horizon.unwrap_or(0).to_le_bytes());
    header[POS_RECORD_COUNT..POS_RECORD_COUNT + 4].copy_from_slice(&s.count.to_le_bytes());
}

/// Appends an empty batch (no records, attribute [`ATTR_EMPTY`]) over the offsets
/// `meta.base_offset ..= base + last_offset_delta`, whose removed records' largest
/// timestamp was `max_timestamp` (kept so time retention still sees their age).
pub(crate) fn encode_empty(out: &mut Vec<u8>, meta: BatchMeta, max_timestamp: i64) {
    let start = out.len();
    encode(out, meta, std::iter::empty());
    let header = &mut out[start..];
    header[POS_MAX_TIMESTAMP..POS_MAX_TIMESTAMP + 8].copy_from_slice(&max_timestamp.to_le_bytes());
    let crc = crc32fast::hash(&header[POS_MAGIC..]);
    header[POS_CRC..POS_CRC + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Exact encoded length of a record after its length prefix.
fn record_body_len(r: &RecordParts<'_>, ts_delta: i64) -> usize {
    let mut len = 1 + varint_len(ts_delta) + varint_len(i64::from(r.offset_delta));
    len += field_len(r.key) + field_len(r.value);
    len += varint_len(r.headers.count() as i64);
    r.headers
        .for_each(|k, v| len += field_len(Some(k)) + field_len(Some(v)));
    len
}

#[inline]
fn field_len(b: Option<&[u8]>) -> usize {
    match b {
        None => 1,
        Some(b) => varint_len(b.len() as i64) + b.len(),
    }
}

#[inline(always)]
pub(super) fn put_varlong<'r, S: Sink<'r> + ?Sized>(out: &mut S, v: i64) {
    let mut u = zigzag(v);
    while u >= 0x80 {
        out.put((u as u8) | 0x80);
        u >>= 7;
    }
    out.put(u as u8);
}

/// [`put_bytes_field`] of a record's own key or value (see [`Sink::put_borrowed`]).
#[inline(always)]
fn put_borrowed_field<'r, S: Sink<'r> + ?Sized>(out: &mut S, b: Option<&'r [u8]>) {
    match b {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.put_borrowed(b);
        }
    }
}

#[inline(always)]
fn put_bytes_field<'r, S: Sink<'r> + ?Sized>(out: &mut S, b: Option<&[u8]>) {
    match b {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.put_slice(b);
        }
    }
}
