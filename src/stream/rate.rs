//! Ingest rate over a sliding window, in constant memory: bytes and messages are summed into a
//! fixed ring of time buckets (not an entry per message), so a flood of tiny messages costs
//! nothing more than a normal stream. Sans-IO: every call takes the instant.

use std::time::{Duration, Instant};

/// Buckets in the window; the window is `BUCKETS × bucket width`.
const BUCKETS: usize = 20;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which bucket of the timeline (counted from `origin`) this slot holds.
    index: u64,
    bytes: u64,
    messages: u64,
}

/// Totals over the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub bits_per_sec: u64,
    pub messages_per_sec: f64,
}

#[derive(Debug, Clone)]
pub struct RateWindow {
    origin: Instant,
    width: Duration,
    buckets: [Bucket; BUCKETS],
}

impl RateWindow {
    /// A window of `window` (at least 20 ms) starting at `origin`.
    pub fn new(origin: Instant, window: Duration) -> Self {
        let width = (window / BUCKETS as u32).max(Duration::from_millis(1));
        RateWindow {
            origin,
            width,
            // Index 0 is a real bucket; u64::MAX marks an unused slot.
            buckets: [Bucket {
                index: u64::MAX,
                ..Bucket::default()
            }; BUCKETS],
        }
    }

    fn index(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(elapsed / self.width.as_nanos().max(1)).unwrap_or(u64::MAX - 1)
    }

    /// Counts one message of `bytes` at `now`.
    pub fn add(&mut self, now: Instant, bytes: usize) {
        let index = self.index(now);
        let slot = &mut self.buckets[(index % BUCKETS as u64) as usize];
        if slot.index != index {
            *slot = Bucket {
                index,
                ..Bucket::default()
            };
        }
        slot.bytes = slot.bytes.saturating_add(bytes as u64);
        slot.messages = slot.messages.saturating_add(1);
    }

    /// Rates over the window ending at `now`. The span is the window, or the time since
    /// `origin` when shorter (not below `min_span`, so the first messages do not read as a
    /// huge rate).
    pub fn rates(&self, now: Instant, min_span: Duration) -> Rates {
        let current = self.index(now);
        let oldest = current.saturating_sub(BUCKETS as u64 - 1);
        let (bytes, messages) = self
            .buckets
            .iter()
            .filter(|b| b.index != u64::MAX && (oldest..=current).contains(&b.index))
            .fold((0u64, 0u64), |(by, m), b| {
                (by.saturating_add(b.bytes), m.saturating_add(b.messages))
            });
        let window = self.width * BUCKETS as u32;
        let span = now
            .saturating_duration_since(self.origin)
            .min(window)
            .max(min_span)
            .as_secs_f64()
            .max(1e-3);
        Rates {
            bits_per_sec: (bytes as f64 * 8.0 / span) as u64,
            messages_per_sec: messages as f64 / span,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HALF: Duration = Duration::from_millis(500);

    #[test]
    fn a_steady_stream_reads_its_rate() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(t0, Duration::from_secs(5));
        // 100 messages of 1250 bytes a second for 10 s: 1 Mbit/s.
        for i in 0..1000u64 {
            w.add(t0 + Duration::from_millis(i * 10), 1250);
        }
        let r = w.rates(t0 + Duration::from_secs(10), HALF);
        assert!((950_000..=1_050_000).contains(&r.bits_per_sec), "{r:?}");
        assert!((95.0..=105.0).contains(&r.messages_per_sec), "{r:?}");
    }

    #[test]
    fn old_traffic_leaves_the_window() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(t0, Duration::from_secs(5));
        w.add(t0, 1_000_000);
        assert!(w.rates(t0 + Duration::from_secs(1), HALF).bits_per_sec > 0);
        assert_eq!(w.rates(t0 + Duration::from_secs(6), HALF).bits_per_sec, 0);
        // A slot reused after wrapping around the ring starts from zero.
        w.add(t0 + Duration::from_secs(10), 10);
        let r = w.rates(t0 + Duration::from_secs(10), HALF);
        assert_eq!(r.bits_per_sec, 16, "{r:?}");
    }

    #[test]
    fn memory_is_constant_whatever_the_message_rate() {
        // The regression: an entry per message grew RSS by 100 MiB in 2 s of 1-byte frames.
        let t0 = Instant::now();
        let mut w = RateWindow::new(t0, Duration::from_secs(5));
        for i in 0..2_000_000u64 {
            w.add(t0 + Duration::from_nanos(i * 1000), 1);
        }
        assert_eq!(std::mem::size_of_val(&w), std::mem::size_of::<RateWindow>());
        let r = w.rates(t0 + Duration::from_secs(2), HALF);
        assert!(r.messages_per_sec > 900_000.0, "{r:?}");
    }

    #[test]
    fn a_clock_before_the_origin_does_not_panic() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut w = RateWindow::new(t0, Duration::from_secs(5));
        w.add(Instant::now(), 5);
        let _ = w.rates(Instant::now(), HALF);
    }
}
