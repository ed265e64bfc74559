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

#[test]
fn a_long_gap_above_a_pending_lease_costs_a_run_not_a_slot_per_offset() {
    // A lease stuck below a compacted stretch once held a done slot for every
    // offset of the stretch: 12 bytes each, 100 MB for 5,000,000 offsets.
    let mut s = AckState::new(0);
    s.set(0, SlotState::Leased, 1, 100);
    let far = 20_000_000;
    s.skip_to(far);
    s.set(far + 5, SlotState::Leased, 1, 200);
    assert_eq!((s.floor, s.next(), s.leased()), (0, far + 6, 2));
    assert!(s.memory_bytes() < 1 << 16, "{} bytes", s.memory_bytes());
    assert_eq!(s.slot(far / 2).map(|x| x.state), Some(SlotState::Done));
    assert_eq!(s.slot(far + 2).map(|x| x.state), Some(SlotState::Done));
    let pending: Vec<Offset> = s.pending().map(|(o, _)| o).collect();
    assert_eq!(pending, [0, far + 5]);
    assert_eq!(s.pop_due(150).map(|(o, _)| o), Some(0));
    // Acking the lease moves the floor over the gap to the next pending slot.
    s.set(0, SlotState::Done, 1, 0);
    assert_eq!(s.floor, far + 5);
    s.set(far + 5, SlotState::Done, 1, 0);
    assert_eq!((s.floor, s.next(), s.leased()), (far + 6, far + 6, 0));
}

/// A reference for `AckState`'s window: the slots not done in a map, every other
/// offset below `next` done.
#[derive(Debug, Default)]
struct Model {
    floor: Offset,
    next: Offset,
    pending: std::collections::BTreeMap<Offset, (SlotState, u32)>,
}

impl Model {
    fn settle_floor(&mut self) {
        self.floor = self
            .pending
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next)
            .max(self.floor);
    }

    fn set(&mut self, o: Offset, state: SlotState, attempt: u32) {
        if o < self.floor {
            return;
        }
        self.next = self.next.max(o + 1);
        match state {
            SlotState::Done => {
                self.pending.remove(&o);
            }
            _ => {
                self.pending.insert(o, (state, attempt));
            }
        }
        self.settle_floor();
    }

    fn skip_to(&mut self, to: Offset) {
        self.next = self.next.max(to);
        self.settle_floor();
    }

    fn purge(&mut self, to: Offset) -> u64 {
        let below: Vec<Offset> = self.pending.range(..to).map(|(o, _)| *o).collect();
        let mut settled = below.len() as u64;
        for o in below {
            self.pending.remove(&o);
        }
        if to > self.next {
            settled += to - self.next.max(self.floor);
            self.next = to;
        }
        self.floor = self.floor.max(to);
        self.settle_floor();
        settled
    }

    fn clamp(&mut self, start: Offset, end: Offset) -> u64 {
        if self.floor > end {
            self.pending.clear();
            self.floor = end;
            self.next = end;
        }
        self.pending.retain(|o, _| *o < end);
        self.next = self.next.min(end);
        self.purge(start)
    }
}

/// Random sets, gaps short and long, purges and clamps: the window (runs with gaps)
/// agrees with the model after every step. `LOGQUEUE_SEED` replays a run.
#[test]
fn the_window_agrees_with_a_model_through_random_gaps() {
    let mut rng = crate::test_rng::TestRng::from_env();
    let mut rand = move |n: u64| rng.next() % n.max(1);
    for round in 0..200 {
        let mut s = AckState::new(0);
        let mut m = Model::default();
        for step in 0..300 {
            let next = s.next();
            match rand(10) {
                // Deliver at or past the end, after a gap of any size.
                0..=3 => {
                    let gap = match rand(4) {
                        0 => 0,
                        1 => rand(8),
                        2 => rand(200),
                        _ => rand(1_000_000),
                    };
                    let state = if rand(3) == 0 {
                        SlotState::Waiting
                    } else {
                        SlotState::Leased
                    };
                    s.set(next + gap, state, 1, 5);
                    m.set(next + gap, state, 1);
                }
                // Settle or redeliver something inside the window (gaps included).
                4..=6 => {
                    let span = next - s.floor + 3;
                    let o = s.floor.saturating_sub(1) + rand(span);
                    let (state, attempt) = match rand(3) {
                        0 => (SlotState::Waiting, 2),
                        1 => (SlotState::Leased, 2),
                        _ => (SlotState::Done, 1),
                    };
                    if o < next {
                        s.set(o, state, attempt, 7);
                        m.set(o, state, attempt);
                    }
                }
                7 => {
                    let to = next + rand(300);
                    s.skip_to(to);
                    m.skip_to(to);
                }
                8 => {
                    let to = s.floor + rand(next - s.floor + 100);
                    assert_eq!(
                        s.purge(to),
                        m.purge(to),
                        "round {round} step {step}: purge {to}"
                    );
                }
                _ => {
                    let end = s.floor.saturating_sub(50) + rand(next - s.floor + 100);
                    let start = end.saturating_sub(rand(100));
                    let before = s.skipped_by_retention;
                    s.clamp(start, end);
                    let settled = m.clamp(start, end);
                    assert_eq!(
                        s.skipped_by_retention - before,
                        settled,
                        "round {round} step {step}: clamp {start} {end}"
                    );
                }
            }
            let what = format!("round {round} step {step}");
            assert_eq!((s.floor, s.next()), (m.floor, m.next), "{what}");
            let pending: Vec<(Offset, SlotState, u32)> =
                s.pending().map(|(o, x)| (o, x.state, x.attempt)).collect();
            let expected: Vec<(Offset, SlotState, u32)> =
                m.pending.iter().map(|(o, (st, a))| (*o, *st, *a)).collect();
            assert_eq!(pending, expected, "{what}");
            let leased = expected.iter().filter(|p| p.1 == SlotState::Leased).count();
            assert_eq!(s.leased(), leased, "{what}");
            assert_eq!(s.waiting(), expected.len() - leased, "{what}");
            for _ in 0..4 {
                let o = s.floor.saturating_sub(2) + rand(s.next() - s.floor + 4);
                let want = if o < m.floor || o >= m.next {
                    None
                } else {
                    Some(m.pending.get(&o).map_or(SlotState::Done, |p| p.0))
                };
                assert_eq!(s.slot(o).map(|x| x.state), want, "{what}: slot {o}");
            }
            assert!(
                s.memory_bytes() < 4 << 20,
                "{what}: {} bytes",
                s.memory_bytes()
            );
        }
    }
}
