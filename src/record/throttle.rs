//! A log-line throttle for one emitter (a tap or a writer): at most one line per interval, with
//! the count of occurrences left out since the last one. Local to the recorder for now; a shared
//! one in `util` is being written on another branch and should replace it.

use std::time::{Duration, Instant};

/// Repeated recording errors are logged at most this often.
pub(super) const LOG_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(super) struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Something to log happened at `now`: Some(occurrences left out since the last line) if a
    /// line is due, None to stay quiet.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.every);
        if due {
            self.last = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_left_out() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(5));
        assert_eq!(t.allow(t0), Some(0));
        let quiet = (1..10_000)
            .filter_map(|i| t.allow(t0 + Duration::from_micros(i)))
            .count();
        assert_eq!(quiet, 0);
        assert_eq!(t.allow(t0 + Duration::from_secs(5)), Some(9_999));
        assert_eq!(t.allow(t0 + Duration::from_secs(6)), None);
    }
}
