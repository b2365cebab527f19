//! Throttling for log lines that an input can repeat at message rate (queue drops, timeline
//! jumps, segment anomalies, a writer that is behind): at most one line per key per interval,
//! and the line that goes out says how many were suppressed since the last one.
//!
//! ```
//! use std::time::Duration;
//! use livegate::util::log_throttle::LogThrottle;
//!
//! static BEHIND: LogThrottle = LogThrottle::new(Duration::from_secs(10));
//! let mut lines = 0;
//! for _ in 0..1000 {
//!     if let Some(suppressed) = BEHIND.check("alice") {
//!         tracing::warn!(suppressed, "recording writer is behind");
//!         lines += 1;
//!     }
//! }
//! assert_eq!(lines, 1);
//! ```
//!
//! [`RateLimit`] is the single-key form for an owner that has `&mut self` (no lock).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys a [`LogThrottle`] tracks at most; beyond it, expired keys are forgotten, and if none has
/// expired every key is (the throttle's memory must not grow with hostile key variety).
const MAX_KEYS: usize = 4096;

/// One key's throttle: allows an event at most once per interval, counting the others.
#[derive(Debug, Clone)]
pub struct RateLimit {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    pub const fn new(interval: Duration) -> Self {
        RateLimit {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Whether to log now: `Some(n)` with the number of events suppressed since the last line.
    pub fn check(&mut self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    /// As [`RateLimit::check`] at a given instant (tests).
    pub fn check_at(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed = self.suppressed.saturating_add(1);
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Events suppressed since the last allowed one.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

/// A shareable throttle keyed by a string (a stream name, a peer): usable from a `static`.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    keys: Mutex<Option<HashMap<String, RateLimit>>>,
}

impl LogThrottle {
    pub const fn new(interval: Duration) -> Self {
        LogThrottle {
            interval,
            keys: Mutex::new(None),
        }
    }

    /// Whether to log a line for `key` now: `Some(n)` with the lines suppressed since its last.
    pub fn check(&self, key: &str) -> Option<u64> {
        self.check_at(key, Instant::now())
    }

    /// As [`LogThrottle::check`] at a given instant (tests).
    pub fn check_at(&self, key: &str, now: Instant) -> Option<u64> {
        // A poisoned lock only means a panic elsewhere mid-check; the map is still usable.
        let mut guard = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let keys = guard.get_or_insert_with(HashMap::new);
        if let Some(limit) = keys.get_mut(key) {
            return limit.check_at(now);
        }
        if keys.len() >= MAX_KEYS {
            let interval = self.interval;
            keys.retain(|_, l| {
                l.last
                    .is_some_and(|t| now.saturating_duration_since(t) < interval)
            });
            if keys.len() >= MAX_KEYS {
                keys.clear();
            }
        }
        let mut limit = RateLimit::new(self.interval);
        let allowed = limit.check_at(now);
        keys.insert(key.to_string(), limit);
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_suppressed_count() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(Duration::from_secs(10));
        assert_eq!(r.check_at(t0), Some(0));
        for i in 1..=1000 {
            assert_eq!(r.check_at(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(r.suppressed(), 1000);
        assert_eq!(r.check_at(t0 + Duration::from_secs(10)), Some(1000));
        assert_eq!(r.check_at(t0 + Duration::from_secs(11)), None);
        assert_eq!(r.check_at(t0 + Duration::from_secs(20)), Some(1));
    }

    #[test]
    fn keys_are_throttled_independently() {
        static T: LogThrottle = LogThrottle::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(T.check_at("a", t0), Some(0));
        assert_eq!(T.check_at("b", t0), Some(0));
        assert_eq!(T.check_at("a", t0), None);
        assert_eq!(T.check_at("a", t0 + Duration::from_secs(5)), Some(1));
    }

    #[test]
    fn hostile_key_variety_does_not_grow_memory() {
        let t = LogThrottle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS * 3) {
            assert_eq!(t.check_at(&i.to_string(), t0), Some(0));
        }
        let len = t.keys.lock().unwrap().as_ref().map_or(0, |m| m.len());
        assert!(len <= MAX_KEYS, "{len}");
    }
}
