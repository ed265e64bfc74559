use super::*;

#[test]
fn snapshot_round_trips() {
    let mut s = AckState::new(5);
    s.set(6, SlotState::Leased, 2, 77);
    s.set(9, SlotState::Waiting, 1, -3);
    s.skip_to(12);
    s.totals.acked = 4;
    s.dead_letter_end = Some(17);
    s.log_epoch = Some(2);
    let bytes = encode_snapshot(3, &s);
    let (f, g, d) = decode_snapshot(&bytes, 0..100).unwrap();
    assert_eq!((f, g), (Format::V2, 3));
    assert_eq!((d.floor, d.next(), d.totals), (6, 12, s.totals));
    assert_eq!((d.dead_letter_end, d.log_epoch), (Some(17), Some(2)));
    // Each trailer form round-trips.
    for (end, epoch) in [(None, None), (Some(4), None), (None, Some(9))] {
        s.dead_letter_end = end;
        s.log_epoch = epoch;
        let (_, _, d) = decode_snapshot(&encode_snapshot(3, &s), 0..100).unwrap();
        assert_eq!((d.dead_letter_end, d.log_epoch), (end, epoch));
        assert_eq!(d.outcome_end, None);
        s.outcome_end = Some(21);
        let (_, _, d) = decode_snapshot(&encode_snapshot(3, &s), 0..100).unwrap();
        assert_eq!((d.dead_letter_end, d.log_epoch), (end, epoch));
        assert_eq!(d.outcome_end, Some(21));
        s.outcome_end = None;
    }
    s.dead_letter_end = Some(17);
    s.log_epoch = Some(2);
    assert_eq!(
        d.pending().collect::<Vec<_>>(),
        s.pending().collect::<Vec<_>>()
    );
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x10;
        assert!(decode_snapshot(&b, 0..100).is_none(), "flip at {i}");
    }
    assert!(decode_snapshot(&bytes[..bytes.len() - 1], 0..100).is_none());
    assert!(decode_snapshot(&[], 0..100).is_none());
    // Only what names offsets inside the log is kept.
    let (_, _, d) = decode_snapshot(&bytes, 7..10).unwrap();
    assert_eq!((d.floor, d.next()), (9, 10));
    assert_eq!(d.pending().map(|(o, _)| o).collect::<Vec<_>>(), vec![9]);
}

/// Journal pages are handed out for faulting in a chunk at a time, once the
/// writes come within half a chunk of the last one, contiguous, never past the
/// journal's end, and never twice.
#[test]
fn prefault_chunks_run_ahead_of_the_writes() {
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn FileSystem> = Arc::new(crate::fs::OsFs);
    let capacity = FRAMES_START + 3 * PREFAULT_CHUNK / 2;
    let mut j = Journal::create(fs, dir.path(), 1, capacity, &AckState::new(0)).unwrap();
    assert!(
        j.prefault_ahead().is_none(),
        "the first chunk is faulted in at create"
    );
    j.position = FRAMES_START + PREFAULT_CHUNK / 2 - 1;
    assert!(j.prefault_ahead().is_none());
    j.position += 1;
    let p = j.prefault_ahead().expect("due");
    assert_eq!(
        (p.pos, p.len),
        (FRAMES_START + PREFAULT_CHUNK, PREFAULT_CHUNK / 2)
    );
    p.run();
    assert!(j.prefault_ahead().is_none(), "handed out once");
    j.position = capacity - 1;
    assert!(j.prefault_ahead().is_none(), "nothing past the end");
    // Faulted-in pages are written like any other.
    j.position = FRAMES_START + PREFAULT_CHUNK;
    let e = Event {
        kind: Kind::Ack,
        offset: 0,
        attempt: 1,
        deadline: 0,
    };
    j.write([e]).unwrap();
    let mut out = Vec::new();
    let frame = &j.map_bytes()[FRAMES_START + PREFAULT_CHUNK..][..FRAME_HEADER + EVENT_LEN];
    decode_frame(frame, &mut out).unwrap();
    assert_eq!(out, vec![e]);
}

#[test]
fn planted_offsets_cannot_blow_up_the_window() {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(MAGIC);
    for v in [1u64, 0, u64::MAX - 1, 0, 0, 0, 0, 0] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let (_, _, d) = decode_snapshot(&bytes, 0..5).unwrap();
    assert_eq!((d.floor, d.next()), (5, 5));
}

#[test]
fn old_snapshots_name_format_1_journals() {
    let mut bytes = encode_snapshot(4, &AckState::new(2));
    bytes[..4].copy_from_slice(MAGIC_V1);
    let n = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..n]);
    bytes[n..].copy_from_slice(&crc.to_le_bytes());
    let (f, g, d) = decode_snapshot(&bytes, 0..10).unwrap();
    assert_eq!((f, g, d.floor), (Format::V1, 4, 2));
}

/// A frame encoded ahead of the lock is byte for byte the frame `write` makes.
#[test]
fn one_event_frames_match_written_frames() {
    for e in [
        Event {
            kind: Kind::Ack,
            offset: 7,
            attempt: 3,
            deadline: 0,
        },
        Event {
            kind: Kind::Nack,
            offset: u64::MAX,
            attempt: u32::MAX,
            deadline: -5,
        },
    ] {
        assert_eq!(encode_one(e).to_vec(), encode_frame(&[e]));
    }
}

#[test]
fn frames_decode_and_check() {
    let mut frame = vec![0u8; FRAME_HEADER];
    encode_event(&mut frame, Kind::Ack as u8, 5, 1, 0);
    encode_event(&mut frame, Kind::Nack as u8, 6, 2, 9);
    frame[4..8].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32fast::hash(&frame[4..]);
    frame[0..4].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(frame_len(&frame), Some(frame.len() as u64));
    let mut out = Vec::new();
    decode_frame(&frame, &mut out).unwrap();
    assert_eq!(out.iter().map(|e| e.offset).collect::<Vec<_>>(), vec![5, 6]);
    for i in 0..frame.len() {
        let mut bad = frame.clone();
        bad[i] ^= 0x40;
        let mut out = Vec::new();
        assert!(decode_frame(&bad, &mut out).is_err(), "flip at {i}");
        assert!(out.is_empty());
    }
    assert_eq!(frame_len(&[0u8; FRAME_HEADER]), None);
}
