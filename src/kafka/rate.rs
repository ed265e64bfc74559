//! A records-per-second meter over roughly one-second windows.

use std::time::{Duration, Instant};

/// Counts updated by a worker thread; the rate of the last full window.
#[derive(Debug)]
pub(crate) struct Rate {
    since: Instant,
    count_then: u64,
    per_sec: f64,
}

impl Rate {
    pub(crate) fn new() -> Rate {
        Rate {
            since: Instant::now(),
            count_then: 0,
            per_sec: 0.0,
        }
    }

    /// Takes the running total `count`; closes a window once a second has passed.
    pub(crate) fn update(&mut self, count: u64) {
        let elapsed = self.since.elapsed();
        if elapsed >= Duration::from_secs(1) {
            self.per_sec = count.saturating_sub(self.count_then) as f64 / elapsed.as_secs_f64();
            self.since = Instant::now();
            self.count_then = count;
        }
    }

    pub(crate) fn per_sec(&self) -> f64 {
        self.per_sec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_zero_until_a_window_closes_then_counts_per_second() {
        let mut rate = Rate::new();
        rate.update(10);
        assert_eq!(rate.per_sec(), 0.0);
        rate.since -= Duration::from_secs(2);
        rate.update(100);
        assert!((rate.per_sec() - 50.0).abs() < 1.0, "{}", rate.per_sec());
    }
}
