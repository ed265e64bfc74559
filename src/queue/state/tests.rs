use super::*;

#[test]
fn slot_is_12_bytes_and_round_trips() {
    assert_eq!(std::mem::size_of::<Packed>(), 12);
    for (deadline, attempt, state) in [
        (i64::MIN, 0, SlotState::Waiting),
        (-5, 7, SlotState::Leased),
        (i64::MAX, u32::MAX, SlotState::Leased),
        (1 << 40, 1, SlotState::Waiting),
        (0, 1 << 24, SlotState::Leased),
        (DEADLINE_HIGH, (1 << 24) + 1, SlotState::Waiting),
        (DEADLINE_LOW, u32::MAX - 1, SlotState::Leased),
        (-1, 3, SlotState::Done),
    ] {
        let s = Slot {
            deadline,
            attempt,
            state,
        };
        assert_eq!(Packed::pack(s).unpack(), s);
    }
    assert!(DONE.is_done());
    // Out-of-range deadlines clamp, keeping their order and the two sentinels.
    let far = Packed::pack(Slot {
        deadline: i64::MAX - 1,
        attempt: 1,
        state: SlotState::Leased,
    });
    assert_eq!(far.unpack().deadline, DEADLINE_HIGH);
    let past = Packed::pack(Slot {
        deadline: i64::MIN + 1,
        attempt: 1,
        state: SlotState::Waiting,
    });
    assert_eq!(past.unpack().deadline, DEADLINE_LOW);
}

#[test]
fn attempts_past_2_pow_24_keep_the_fence() {
    // Issue 9, defect 12: attempts used to saturate at 2^24 - 1 in the slot, so a
    // receipt with attempt 2^24 never matched its own lease.
    let mut s = AckState::new(0);
    s.set(0, SlotState::Leased, 1 << 24, 100);
    assert_eq!(s.slot(0).unwrap().attempt, 1 << 24);
    s.set(0, SlotState::Leased, u32::MAX, 100);
    assert_eq!(s.slot(0).unwrap().attempt, u32::MAX);
    assert_eq!(
        s.pop_due(100).map(|(o, sl)| (o, sl.attempt)),
        Some((0, u32::MAX))
    );
}

#[test]
fn a_huge_gap_with_nothing_pending_costs_no_memory() {
    // A compacted stretch or an offset planted near u64::MAX once asked for one
    // slot per skipped offset (the open_dir fuzz target: a 3 GiB allocation).
    let mut s = AckState::new(0);
    s.skip_to(1 << 40);
    assert_eq!((s.floor, s.next()), (1 << 40, 1 << 40));
    // `set` past `next`: the offsets in between are done, the floor moves up.
    s.set((1 << 40) + 5, SlotState::Leased, 1, 10);
    assert_eq!((s.floor, s.next()), ((1 << 40) + 5, (1 << 40) + 6));
    assert!(s.memory_bytes() < 1 << 20, "{} bytes", s.memory_bytes());
    s.set((1 << 40) + 5, SlotState::Done, 1, 0);
    s.skip_to(u64::MAX - 1);
    assert_eq!(s.floor, u64::MAX - 1);
}

#[test]
fn clamped_deadlines_stay_in_the_order() {
    let mut s = AckState::new(0);
    s.set(0, SlotState::Leased, 1, i64::MAX - 1);
    s.set(1, SlotState::Waiting, 1, i64::MIN + 1);
    assert_eq!(s.pop_due(DEADLINE_LOW).map(|(o, _)| o), Some(1));
    assert_eq!(s.pop_due(i64::MAX - 1).map(|(o, _)| o), Some(0));
}

#[test]
fn floor_follows_acks() {
    let mut s = AckState::new(10);
    for o in 10..15 {
        s.set(o, SlotState::Leased, 1, 100);
    }
    assert_eq!((s.floor, s.next(), s.leased()), (10, 15, 5));
    s.set(11, SlotState::Done, 1, 0);
    assert_eq!(s.floor, 10);
    s.set(10, SlotState::Done, 1, 0);
    assert_eq!(s.floor, 12);
    assert_eq!(s.pop_due(99), None);
    assert_eq!(s.pop_due(100).map(|(o, _)| o), Some(12));
    s.set(20, SlotState::Leased, 1, 5);
    assert_eq!(s.next(), 21);
    assert_eq!(s.slot(17).unwrap().state, SlotState::Done);
    s.clamp(0, 14);
    assert_eq!((s.floor, s.next(), s.leased()), (12, 14, 2));
    s.clamp(13, 14);
    assert_eq!((s.floor, s.next(), s.leased()), (13, 14, 1));
    assert_eq!(s.skipped_by_retention, 1);
    s.clamp(20, 30);
    assert_eq!((s.floor, s.next(), s.leased()), (20, 20, 0));
    assert_eq!(s.skipped_by_retention, 1 + 1 + 6);
    s.clamp(0, 5);
    assert_eq!((s.floor, s.next(), s.leased()), (5, 5, 0));
}

#[test]
fn heap_is_rebuilt_when_stale() {
    let mut s = AckState::new(0);
    for o in 0..10_000 {
        s.set(o, SlotState::Leased, 1, 100);
        s.set(o, SlotState::Done, 1, 0);
    }
    assert!(s.heap_len() <= 1024 + 2, "{}", s.heap_len());
    assert_eq!(s.floor, 10_000);
}
