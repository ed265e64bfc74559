use super::encode::put_varlong;
use super::*;
use crate::Record;

fn meta(base: Offset, last_delta: u32) -> BatchMeta {
    BatchMeta {
        base_offset: base,
        last_offset_delta: last_delta,
        append_time: 5_000,
        delete_horizon: None,
    }
}

fn encode_records(base: Offset, records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    let parts = records
        .iter()
        .enumerate()
        .map(|(i, r)| RecordParts::from_record(r, i as u32, 5_000));
    encode(&mut out, meta(base, records.len() as u32 - 1), parts);
    out
}

/// An empty batch (compaction's end marker) decodes with no records; a record
/// count of 0 without the empty attribute, or the attribute with records, does not.
#[test]
fn empty_batches_need_their_attribute() {
    let mut out = Vec::new();
    encode(&mut out, meta(10, 4), std::iter::empty());
    let b = decode(&out).unwrap();
    assert_eq!(
        (b.base_offset, b.last_offset(), b.record_count),
        (10, 14, 0)
    );
    b.validate_records().unwrap();
    assert_eq!(b.records().count(), 0);
    let reseal = |mut bytes: Vec<u8>| {
        let crc = crc32fast::hash(&bytes[POS_MAGIC..]);
        bytes[POS_CRC..POS_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        bytes
    };
    let mut no_attr = out.clone();
    no_attr[POS_ATTRIBUTES] &= !ATTR_EMPTY;
    assert!(decode(&reseal(no_attr)).is_err());
    let mut with_records = encode_records(10, &[Record::new("x")]);
    with_records[POS_ATTRIBUTES] |= ATTR_EMPTY;
    assert!(decode(&reseal(with_records)).is_err());
}

#[test]
fn roundtrip_all_field_kinds() {
    let records = vec![
        Record::new("v1"),
        Record::keyed("k", "v2")
            .with_header("a", "1")
            .with_header("b", ""),
        Record::tombstone("k").with_timestamp(-7),
        Record::keyed(vec![0u8; 300], vec![1u8; 70_000]).with_timestamp(i64::MAX),
    ];
    let bytes = encode_records(42, &records);
    let batch = decode(&bytes).unwrap();
    let hasher = crc32fast::Hasher::new();
    assert_eq!(decode_with(&bytes, &hasher).unwrap().bytes, batch.bytes);
    assert_eq!(batch.base_offset, 42);
    assert_eq!(batch.last_offset(), 45);
    assert_eq!(batch.record_count, 4);
    assert_eq!(batch.append_time, 5_000);
    assert_eq!(batch.max_timestamp, i64::MAX);
    batch.validate_records().unwrap();
    let got: Vec<StoredRecord> = batch
        .records()
        .map(|r| r.unwrap().to_owned_record())
        .collect();
    for (i, (g, r)) in got.iter().zip(&records).enumerate() {
        assert_eq!(g.offset, 42 + i as u64);
        assert_eq!(g.key, r.key);
        assert_eq!(g.value, r.value);
        assert_eq!(g.headers, r.headers);
        assert_eq!(g.timestamp, r.timestamp.unwrap_or(5_000));
    }
}

#[test]
fn every_flipped_bit_is_detected() {
    let bytes = encode_records(1, &[Record::keyed("key", "value").with_header("h", "x")]);
    for bit in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        let ok = decode(&b).and_then(|batch| batch.validate_records().map(|_| batch.base_offset));
        // A flip in the length field may shorten the batch; any decode that
        // still succeeds would have to match the CRC, which a single flip can't.
        assert!(ok.is_err(), "bit {bit} flip went unnoticed");
        let hasher = crc32fast::Hasher::new();
        let ok = decode_with(&b, &hasher)
            .and_then(|batch| batch.validate_records().map(|_| batch.base_offset));
        assert!(ok.is_err(), "bit {bit} flip went unnoticed by decode_with");
    }
}

#[test]
fn every_truncation_is_detected() {
    let bytes = encode_records(1, &[Record::new("hello"), Record::new("world")]);
    for cut in 0..bytes.len() {
        assert!(decode(&bytes[..cut]).is_err(), "cut at {cut} decoded");
    }
    assert_eq!(decode(&[0u8; 64]).unwrap_err(), BatchError::Zero);
}

#[test]
fn gaps_and_horizon_survive_reencoding() {
    let bytes = encode_records(10, &[Record::new("a"), Record::new("b"), Record::new("c")]);
    let batch = decode(&bytes).unwrap();
    let views: Vec<_> = batch.records().map(Result::unwrap).collect();
    let mut out = Vec::new();
    let kept = [views[0], views[2]];
    encode(
        &mut out,
        BatchMeta {
            delete_horizon: Some(99),
            ..meta(10, batch.last_offset_delta)
        },
        kept.iter().map(|v| RecordParts::from_view(v, 10)),
    );
    let again = decode(&out).unwrap();
    assert_eq!(again.delete_horizon, Some(99));
    assert_eq!(again.last_offset(), 12);
    let offsets: Vec<_> = again.records().map(|r| r.unwrap().offset).collect();
    assert_eq!(offsets, vec![10, 12]);
}

/// Found by fuzz/open_dir: a batch ending at offset u64::MAX decoded, and recovery
/// computed the next offset as `last + 1`, an overflow (a panic in debug builds).
#[test]
fn a_batch_must_leave_room_for_the_next_offset() {
    let ok = encode_records(u64::MAX - 2, &[Record::new("a"), Record::new("b")]);
    assert_eq!(decode(&ok).unwrap().last_offset(), u64::MAX - 1);
    let full = encode_records(u64::MAX - 1, &[Record::new("a"), Record::new("b")]);
    assert_eq!(
        decode(&full).unwrap_err(),
        BatchError::Invalid("offset overflow")
    );
}

#[test]
fn varint_edges() {
    for v in [
        0i64,
        1,
        -1,
        63,
        -64,
        64,
        8191,
        -8192,
        8192,
        -8193,
        i64::from(i32::MAX),
        i64::from(i32::MIN),
        i64::MIN,
        i64::MAX,
    ] {
        let mut out = Vec::new();
        put_varlong(&mut out, v);
        assert_eq!(out.len(), varint_len(v));
        assert_eq!(Cursor { bytes: &out }.varlong().unwrap(), v);
        let as_varint = Cursor { bytes: &out }.varint();
        if i32::try_from(v).is_ok() {
            assert_eq!(as_varint.unwrap(), v);
        } else {
            assert!(as_varint.is_err(), "{v} accepted as a 32-bit varint");
        }
    }
    // Overlong encodings decode to the same value on every path.
    assert_eq!(
        Cursor {
            bytes: &[0x82, 0x00]
        }
        .varint()
        .unwrap(),
        1
    );
    assert_eq!(
        Cursor {
            bytes: &[0x82, 0x80, 0x00]
        }
        .varint()
        .unwrap(),
        1
    );
    // Truncated and over-long varints fail.
    assert!(Cursor { bytes: &[0x80] }.varint().is_err());
    assert!(Cursor { bytes: &[] }.varlong().is_err());
    assert!(Cursor { bytes: &[0xff; 11] }.varlong().is_err());
}

/// A batch with offsets 10, 12, 15, 16 (compacted), records of every field kind.
fn gapped_batch() -> Vec<u8> {
    let records = [
        Record::new("a"),
        Record::keyed("k", "b").with_header("h", "1"),
        Record::tombstone("k"),
        Record::keyed(vec![7u8; 200], vec![1u8; 9_000]),
    ];
    encode_at_deltas(10, &records, &[0, 2, 5, 6], 6)
}

/// `records` at offset deltas `deltas` (as given: order unchecked) of a batch at
/// `base` whose last delta is `last_delta`, with a valid CRC.
fn encode_at_deltas(base: Offset, records: &[Record], deltas: &[u32], last_delta: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let parts = records
        .iter()
        .zip(deltas)
        .map(|(r, &d)| RecordParts::from_record(r, d, 5_000));
    encode(&mut out, meta(base, last_delta), parts);
    out
}

/// `skip_before` lands on the record a full decode and filter would hand out first,
/// for every resume point in and around a batch with gaps, and the records after it
/// decode as before.
#[test]
fn skipping_lands_where_decoding_would() {
    let contiguous = encode_records(
        10,
        &[
            Record::new("a"),
            Record::keyed("k", "b").with_header("h", "1"),
            Record::tombstone("k"),
            Record::keyed(vec![7u8; 200], vec![1u8; 9_000]),
        ],
    );
    for bytes in [gapped_batch(), contiguous] {
        lands_where_decoding_would(&bytes);
    }
}

fn lands_where_decoding_would(bytes: &[u8]) {
    let batch = decode(bytes).unwrap();
    for from in 0..20u64 {
        let want: Vec<Offset> = batch
            .records()
            .map(|r| r.unwrap().offset)
            .filter(|&o| o >= from)
            .collect();
        let mut it = batch.records();
        it.skip_before(from).unwrap();
        let got: Vec<Offset> = it.map(|r| r.unwrap().offset).collect();
        assert_eq!(got, want, "resumed at {from}");
    }
}

/// Skipped records are still read for their place: a length running past the batch
/// or offsets out of order among them is an error, not a silent landing elsewhere.
#[test]
fn skipping_reports_what_it_cannot_cross() {
    // Offsets out of order (deltas 2, 1, 3), sealed with a valid CRC.
    let records = [Record::new("a"), Record::new("b"), Record::new("c")];
    let out = encode_at_deltas(0, &records, &[2, 1, 3], 3);
    let batch = decode(&out).unwrap();
    assert_eq!(
        batch.records().skip_before(3).unwrap_err(),
        BatchError::Invalid("record offsets out of order")
    );
    // As many records as offsets, out of order (deltas 1, 0, 2): skipped by their
    // lengths alone, the disorder shows in the first record handed out.
    let out = encode_at_deltas(0, &records, &[1, 0, 2], 2);
    let batch = decode(&out).unwrap();
    let mut it = batch.records();
    it.skip_before(1).unwrap();
    assert_eq!(
        it.next().unwrap().unwrap_err(),
        BatchError::Invalid("record offsets out of order")
    );
    // The first record's length made to run past the batch (CRC resealed).
    let mut long = encode_records(0, &records);
    assert_eq!(
        long[HEADER_LEN], 0x0e,
        "zig-zag 7: the first record's length"
    );
    long[HEADER_LEN] = 0x7e; // zig-zag 63: more than all three records' bytes
    let crc = crc32fast::hash(&long[POS_MAGIC..]);
    long[POS_CRC..POS_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    let batch = decode(&long).unwrap();
    // Landing anywhere past the first record needs its length.
    assert_eq!(
        batch.records().skip_before(1).unwrap_err(),
        BatchError::Invalid("field runs past the record")
    );
    // Landing on it needs nothing of it: the decode that follows reports it.
    let mut it = batch.records();
    it.skip_before(0).unwrap();
    assert!(it.next().unwrap().is_err());
}

/// Every byte of the records of a gapped and a contiguous batch changed (three ways,
/// CRC resealed so the record parser sees it): resuming at any offset agrees with
/// decoding the batch whole whenever that works, and nothing panics.
#[test]
fn skipping_agrees_with_decoding_under_every_byte_change() {
    let contiguous = encode_records(
        10,
        &[Record::new("a"), Record::keyed("k", "b"), Record::new("c")],
    );
    for bytes in [gapped_batch(), contiguous] {
        // The gapped batch's 9,000-byte value: its first bytes are enough.
        for at in HEADER_LEN..bytes.len().min(HEADER_LEN + 400) {
            for xor in [0x01u8, 0x80, 0xff] {
                let mut changed = bytes.clone();
                changed[at] ^= xor;
                let crc = crc32fast::hash(&changed[POS_MAGIC..]);
                changed[POS_CRC..POS_CRC + 4].copy_from_slice(&crc.to_le_bytes());
                assert!(
                    crate::reader::fuzz_skip_agrees(&changed),
                    "byte {at} ^ {xor:#x}"
                );
            }
        }
    }
}
