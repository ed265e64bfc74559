//! The seeded generator of the crate's randomized unit tests: the seed comes from
//! `LOGQUEUE_SEED` when set (to replay a run), else from the clock, and is printed.

/// An xorshift generator for tests, seeded as the module says.
pub(crate) struct TestRng {
    seed: u64,
    state: u64,
}

impl TestRng {
    /// Seeded from `LOGQUEUE_SEED` or the clock; prints the seed.
    pub(crate) fn from_env() -> TestRng {
        let seed = std::env::var("LOGQUEUE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1
            });
        eprintln!("LOGQUEUE_SEED={seed}");
        TestRng {
            seed,
            state: seed.max(1),
        }
    }

    /// The seed, for failure messages.
    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    /// The next 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        let x = &mut self.state;
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }
}
