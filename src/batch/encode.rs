//! Encoding batches: the write side of the format in `super`.

use super::{
    varint_len, zigzag, HeaderIter, RecordView, ATTR_EMPTY, ATTR_HAS_DELETE_HORIZON, HEADER_LEN,
    MAGIC, POS_APPEND_TIME, POS_ATTRIBUTES, POS_BASE_OFFSET, POS_CRC, POS_DELETE_HORIZON,
    POS_FIRST_TIMESTAMP, POS_LAST_OFFSET_DELTA, POS_LENGTH, POS_MAGIC, POS_MAX_TIMESTAMP,
    POS_RECORD_COUNT,
};
use crate::record::{Header, Record};
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

/// Headers to encode, from either an owned record or a decoded view.
#[derive(Clone, Debug)]
pub(crate) enum Headers<'a> {
    Owned(&'a [Header]),
    Raw(HeaderIter<'a>),
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

/// What [`encode`] wrote.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Encoded {
    pub max_timestamp: i64,
}

/// Header fields chosen by the writer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchMeta {
    pub base_offset: Offset,
    pub last_offset_delta: u32,
    pub append_time: i64,
    pub delete_horizon: Option<i64>,
}

/// Appends one batch holding `records` (offset deltas increasing) to `out`. With no
/// records it is an empty batch (attribute [`ATTR_EMPTY`]): only compaction writes
/// one, to mark where a segment's offsets end.
pub(crate) fn encode<'r>(
    out: &mut Vec<u8>,
    meta: BatchMeta,
    records: impl IntoIterator<Item = RecordParts<'r>>,
) -> Encoded {
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
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
        put_varint(out, body_len as i64);
        let body_start = out.len();
        out.push(0); // record attributes: unused
        put_varlong(out, ts_delta);
        put_varint(out, i64::from(r.offset_delta));
        put_bytes_field(out, r.key);
        put_bytes_field(out, r.value);
        match r.headers {
            Headers::Owned(hs) => {
                put_varint(out, hs.len() as i64);
                for h in hs {
                    put_bytes_field(out, Some(h.key.as_bytes()));
                    put_bytes_field(out, Some(&h.value));
                }
            }
            Headers::Raw(it) => {
                put_varint(out, i64::from(it.remaining));
                for (k, v) in it {
                    put_bytes_field(out, Some(k.as_bytes()));
                    put_bytes_field(out, Some(v));
                }
            }
        }
        debug_assert_eq!(out.len() - body_start, body_len, "record length prediction");
    }
    let len = out.len() - start;
    let header = &mut out[start..start + HEADER_LEN];
    let length = u32::try_from(len - 4).unwrap_or(u32::MAX);
    header[POS_LENGTH..POS_LENGTH + 4].copy_from_slice(&length.to_le_bytes());
    header[POS_MAGIC] = MAGIC;
    header[POS_ATTRIBUTES] = if meta.delete_horizon.is_some() {
        ATTR_HAS_DELETE_HORIZON
    } else {
        0
    } | if count == 0 { ATTR_EMPTY } else { 0 };
    header[POS_LAST_OFFSET_DELTA..POS_LAST_OFFSET_DELTA + 4]
        .copy_from_slice(&meta.last_offset_delta.to_le_bytes());
    header[POS_BASE_OFFSET..POS_BASE_OFFSET + 8].copy_from_slice(&meta.base_offset.to_le_bytes());
    header[POS_FIRST_TIMESTAMP..POS_FIRST_TIMESTAMP + 8]
        .copy_from_slice(&first_ts.unwrap_or(0).to_le_bytes());
    header[POS_MAX_TIMESTAMP..POS_MAX_TIMESTAMP + 8].copy_from_slice(&max_ts.to_le_bytes());
    header[POS_APPEND_TIME..POS_APPEND_TIME + 8].copy_from_slice(&meta.append_time.to_le_bytes());
    header[POS_DELETE_HORIZON..POS_DELETE_HORIZON + 8]
        .copy_from_slice(&meta.delete_horizon.unwrap_or(0).to_le_bytes());
    header[POS_RECORD_COUNT..POS_RECORD_COUNT + 4].copy_from_slice(&count.to_le_bytes());
    let crc = crc32fast::hash(&out[start + POS_MAGIC..]);
    out[start + POS_CRC..start + POS_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    Encoded {
        max_timestamp: max_ts,
    }
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
    match &r.headers {
        Headers::Owned(hs) => {
            len += varint_len(hs.len() as i64);
            for h in hs.iter() {
                len += field_len(Some(h.key.as_bytes())) + field_len(Some(&h.value));
            }
        }
        Headers::Raw(it) => {
            len += varint_len(i64::from(it.remaining));
            for (k, v) in it.clone() {
                len += field_len(Some(k.as_bytes())) + field_len(Some(v));
            }
        }
    }
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
pub(super) fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut u = zigzag(v);
    while u >= 0x80 {
        out.push((u as u8) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
}

#[inline(always)]
fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_varlong(out, v);
}

#[inline(always)]
fn put_bytes_field(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}
