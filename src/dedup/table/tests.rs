//! Unit tests of the dedup window's id table.

use super::*;

#[test]
fn finds_what_it_keeps_and_forgets_by_count_and_age() {
    let mut t = IdTable::new(100);
    for i in 0..1000u64 {
        // Few distinct fingerprints: full buckets and long overflow runs.
        t.insert(i % 37, i, i as i64, i64::MIN);
        assert!(t.len() <= 100);
    }
    for i in 900..1000u64 {
        assert!(t.candidates(i % 37, i64::MIN).contains(&i), "{i}");
    }
    assert!(t.candidates(899 % 37, i64::MIN).iter().all(|&o| o >= 900));
    t.age_out(950);
    assert_eq!(t.len(), 50);
    assert!(t.candidates(949 % 37, i64::MIN).iter().all(|&o| o >= 950));
    assert!(t.candidates(960 % 37, 0).contains(&960));
    assert!(t.candidates(960 % 37, 961).iter().all(|&o| o != 960));
}

#[test]
fn random_fingerprints_survive_many_deletions() {
    let mut t = IdTable::new(1000);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut kept = std::collections::VecDeque::new();
    for i in 0..20_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        t.insert(x, i, 0, i64::MIN);
        kept.push_back((x, i));
        if kept.len() > 1000 {
            kept.pop_front();
        }
    }
    for &(fp, o) in &kept {
        assert_eq!(t.candidates(fp, i64::MIN), vec![o]);
    }
    let per_id = t.memory_bytes() as f64 / t.len() as f64;
    assert!(per_id <= 40.0, "{per_id} bytes per id");
}

/// Ids that all share one home bucket (what a broken or attacked fingerprint
/// would give) overflow into the next buckets and are all found; once they age
/// out, the slots they held are reused and a lookup stops at the home again.
#[test]
fn ids_sharing_a_home_overflow_and_are_found_until_they_age_out() {
    let mut t = IdTable::new(1000);
    // Low 32 bits zero: one home bucket; the tags differ.
    let fp = |i: u64| (i + 1) << 40;
    for i in 0..40u64 {
        t.insert(fp(i), i, i as i64, i64::MIN);
    }
    for i in 0..40u64 {
        assert_eq!(t.candidates(fp(i), i64::MIN), vec![i], "{i}");
    }
    let home = t.home(fp(0));
    assert!(t.passes(t.buckets[home].overflow), "the home overflowed");
    // The oldest age out: the home's slots are free again (never cleared) and a new
    // id takes one of them, while those placed past it are still found.
    t.age_out(3);
    t.insert(fp(100), 100, 100, 3);
    // Found before it is placed (at the next insert), and after.
    assert_eq!(t.candidates(fp(100), i64::MIN), vec![100]);
    t.place_unplaced();
    assert!(t.buckets[home].slots.contains(&slot(tag(fp(100)), 40)));
    for i in 3..40u64 {
        assert_eq!(t.candidates(fp(i), i64::MIN), vec![i], "{i}");
    }
    assert!(t.candidates(fp(0), i64::MIN).is_empty());
    // All of them age out: the home's mark names a dead entry, a lookup stops there.
    t.age_out(1_000);
    assert_eq!(t.len(), 0);
    assert!(!t.passes(t.buckets[home].overflow));
    assert!(t.candidates(fp(39), i64::MIN).is_empty());
}

/// Random inserts, ageing and lookups against a plain list of what the window
/// holds: fingerprints from a small pool (shared homes, shared tags, overflow
/// runs, summaries with stale bits), timestamps that mostly grow, cutoffs that
/// jump. Every lookup must give exactly the model's offsets: a summary or an
/// entry not placed yet may never hide one. `LOGQUEUE_SEED` replays a run.
#[test]
fn lookups_agree_with_a_model_through_random_inserts_and_ageing() {
    let mut rng = crate::test_rng::TestRng::from_env();
    let seed = rng.seed();
    let mut next = move || rng.next();
    for round in 0..20 {
        let max_ids = 1 + (next() % 300) as usize;
        let mut t = IdTable::new(max_ids);
        let mut model: VecDeque<Entry> = VecDeque::new();
        // A pool of fingerprints: few homes (low bits) and few tags (high bits).
        let pool: Vec<u64> = (0..1 + next() % 200)
            .map(|_| ((next() % 64) << 40) | ((next() % 16) << 28) | (next() % 4))
            .collect();
        let (mut now, mut cutoff) = (0i64, i64::MIN);
        for offset in 0..3_000u64 {
            now += (next() % 3) as i64;
            let timestamp = now - (next() % 4 == 0) as i64 * (next() % 5) as i64;
            if next() % 50 == 0 {
                cutoff = now - (next() % 40) as i64;
            }
            let fp = pool[(next() % pool.len() as u64) as usize];
            t.insert(fp, offset, timestamp, cutoff);
            while model.front().is_some_and(|e| e.timestamp < cutoff) {
                model.pop_front();
            }
            while model.len() >= max_ids {
                model.pop_front();
            }
            model.push_back(Entry {
                fingerprint: fp,
                offset,
                timestamp,
            });
            assert_eq!(t.len(), model.len(), "seed {seed} round {round}");
            let probe = pool[(next() % pool.len() as u64) as usize];
            let lookup_cutoff = cutoff.max(now - (next() % 60) as i64);
            let want: Vec<Offset> = model
                .iter()
                .filter(|e| e.fingerprint == probe && e.timestamp >= lookup_cutoff)
                .map(|e| e.offset)
                .collect();
            assert_eq!(
                t.candidates(probe, lookup_cutoff),
                want,
                "seed {seed} round {round} offset {offset}"
            );
        }
    }
}

/// The summaries do their job: at a full window of random ids (load 5/7), a
/// lookup of a new id reads its home bucket about a quarter of the time (not the
/// 70% of a single overflow bit), at about 38 bytes per id.
#[test]
fn summaries_spare_most_lookups_of_new_ids_the_bucket() {
    let mut t = IdTable::new(100_000);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..300_000u64 {
        t.insert(next(), i, 0, i64::MIN);
    }
    let reads = (0..100_000)
        .filter(|_| {
            let fp = next();
            t.summaries[t.home(fp)] & (slot_bit(tag(fp)) | passer_bit(tag(fp))) != 0
        })
        .count();
    assert!(reads < 35_000, "{reads} of 100000 lookups read the bucket");
    let per_id = t.memory_bytes() as f64 / t.len() as f64;
    assert!(per_id <= 40.0, "{per_id} bytes per id");
}

/// Sequence numbers past 2^40 (slots keep them modulo 2^40): entries before and
/// after the wrap are found, and those that aged out are not.
#[test]
fn sequence_numbers_wrapping_in_the_slots_find_the_right_entries() {
    let mut t = IdTable::new(64);
    t.first_seq = (1 << SEQ_BITS) - 250;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut fps = Vec::new();
    for i in 0..300u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Sixteen homes at most: overflow across the wrap too.
        let fp = x & !0xFFFF_FFF0;
        t.insert(fp, i, 0, i64::MIN);
        fps.push(fp);
    }
    assert!(t.first_seq < (1 << SEQ_BITS) && t.first_seq + 64 > (1 << SEQ_BITS));
    for (i, &fp) in fps.iter().enumerate() {
        let want: Vec<u64> = if i >= 300 - 64 {
            vec![i as u64]
        } else {
            vec![]
        };
        assert_eq!(t.candidates(fp, i64::MIN), want, "{i}");
    }
}

/// `reserve` sizes the index and the ring once (what the rebuild at open does):
/// inserting that many ids then grows neither, and every id is found.
#[test]
fn reserve_sizes_the_table_once_for_the_ids_to_come() {
    let mut t = IdTable::new(10_000);
    t.reserve(3_000);
    let (buckets, ring) = (t.buckets.len(), t.ring.capacity());
    assert_eq!(buckets, 600);
    let ids: Vec<(u64, Offset, i64)> = (0..3_000u64)
        .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i, 0))
        .collect();
    t.insert_all(&ids, i64::MIN);
    assert_eq!((t.buckets.len(), t.ring.capacity()), (buckets, ring));
    for &(fp, o, _) in &ids {
        assert_eq!(t.candidates(fp, i64::MIN), vec![o]);
    }
    // Never past max_ids.
    t.reserve(1 << 40);
    assert_eq!(t.buckets.len(), 2_000);
    assert!(t.ring.capacity() >= 10_000);
    // Fewer ids came than reserved for: the rest is given back, the ids stay found.
    t.shrink_to_fit();
    assert_eq!(t.buckets.len(), 600);
    assert!(t.ring.capacity() < 10_000);
    for &(fp, o, _) in &ids {
        assert_eq!(t.candidates(fp, i64::MIN), vec![o]);
    }
}
