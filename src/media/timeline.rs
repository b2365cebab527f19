//! One monotonic 64-bit timeline per stream from a protocol's 32-bit clock, at any clock rate:
//! RTMP's milliseconds (1 kHz), RTP's 90 kHz video and 48 kHz audio clocks.
//!
//! 32-bit timestamps wrap (RTMP after ~49.7 days, RTP's 90 kHz clock after ~13 hours), and
//! encoders restart their clock on reconnect or jump it after a stall. Audio and video are
//! interleaved with small reorderings between the tracks, so a small step backwards is normal; a
//! large jump either way is a clock restart and is stitched onto the timeline so that time keeps
//! advancing smoothly. Output is in the input's clock rate, starting at 0.
//!
//! Media time is also held to wall time: it may run at most [`MAX_MEDIA_LEAD_MS`] ahead of the
//! time since the first timestamp arrived. A source whose clock runs ahead of that (a +10 s jump
//! per message, or a file pushed far faster than real time) is rebased: its timestamps are
//! clamped to the bound, as a clock restart is stitched, and the stream goes on (the jumps are
//! counted and logged, throttled). Ending the stream instead would punish a merely misbehaving
//! encoder; the rebase already keeps every downstream rate (segments, playlist entries)
//! bounded by wall time. Message floods are ended by the hub's message-rate limit.

use std::time::{Duration, Instant};

use crate::util::log_throttle::RateLimit;

/// Forward steps larger than this are treated as an encoder clock restart (smaller ones are a
/// real pause in the source and kept).
pub const MAX_PLAUSIBLE_STEP_MS: i64 = 10_000;
/// Backward steps larger than this are a restart too; audio/video interleaving stays well below.
pub const MAX_BACKWARD_STEP_MS: i64 = 1_000;
/// How far media time may run ahead of wall time (since the first timestamp). Generous enough
/// for an encoder's start-up burst and a short file pushed without `-re`.
pub const MAX_MEDIA_LEAD_MS: i64 = 15_000;

/// Gap inserted after a clock restart: about one frame, so the next packet follows the last.
const RESTART_GAP_MS: i64 = 20;

/// RTMP's clock: milliseconds.
pub const RTMP_CLOCK_RATE: u32 = 1_000;

#[derive(Debug, Clone)]
pub struct TimestampNormalizer {
    /// Ticks per second of the input (and output).
    clock_rate: i64,
    last_raw: Option<u32>,
    last_out: i64,
    /// Highest output so far; after a restart the timeline continues from here.
    max_out: i64,
    restarts: u64,
    /// When the first timestamp arrived (the wall-time bound counts from it).
    first_arrival: Option<Instant>,
    /// Timestamps clamped to the wall-time bound.
    clamped: u64,
    clamp_log: RateLimit,
}

impl Default for TimestampNormalizer {
    /// RTMP's millisecond clock.
    fn default() -> Self {
        Self::with_clock_rate(RTMP_CLOCK_RATE)
    }
}

impl TimestampNormalizer {
    /// A normalizer for RTMP's millisecond clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// A normalizer for a 32-bit clock of `clock_rate` ticks per second (at least 1).
    pub fn with_clock_rate(clock_rate: u32) -> Self {
        TimestampNormalizer {
            clock_rate: i64::from(clock_rate.max(1)),
            last_raw: None,
            last_out: 0,
            max_out: 0,
            restarts: 0,
            first_arrival: None,
            clamped: 0,
            clamp_log: RateLimit::new(Duration::from_secs(10)),
        }
    }

    fn ticks(&self, ms: i64) -> i64 {
        ms.saturating_mul(self.clock_rate) / 1000
    }

    /// Maps a raw 32-bit timestamp to the stream's 64-bit timeline (starting at 0), held to
    /// the wall time since the first call.
    pub fn normalize(&mut self, raw: u32) -> i64 {
        let now = Instant::now();
        let first = *self.first_arrival.get_or_insert(now);
        let wall_ms =
            i64::try_from(now.saturating_duration_since(first).as_millis()).unwrap_or(i64::MAX);
        self.normalize_at(raw, wall_ms)
    }

    /// As [`TimestampNormalizer::normalize`], `wall_ms` after the first timestamp arrived.
    pub fn normalize_at(&mut self, raw: u32, wall_ms: i64) -> i64 {
        let mut out = match self.last_raw {
            None => 0,
            Some(last) => {
                // Signed distance modulo 2^32: crossing the wrap point is a small positive step.
                let step = i64::from(raw.wrapping_sub(last) as i32);
                let back = self.ticks(MAX_BACKWARD_STEP_MS);
                let continued = self.last_out.saturating_add(step);
                // Interleaving stays within a second of the newest time (so does one step back,
                // the last output being at most the newest): further back, even by steps that
                // each look like interleaving, is a clock going backwards (a restart).
                if step > self.ticks(MAX_PLAUSIBLE_STEP_MS)
                    || continued < self.max_out.saturating_sub(back)
                {
                    self.restarts += 1;
                    self.max_out.saturating_add(self.ticks(RESTART_GAP_MS))
                } else {
                    continued
                }
            }
        };
        let limit = self.ticks(wall_ms.max(0).saturating_add(MAX_MEDIA_LEAD_MS));
        if out > limit {
            self.clamped += 1;
            if let Some(suppressed) = self.clamp_log.check() {
                tracing::warn!(
                    media_ms = out.saturating_mul(1000) / self.clock_rate,
                    wall_ms,
                    suppressed,
                    "source clock runs ahead of real time; holding its timestamps to the wall clock"
                );
            }
            out = limit;
        }
        self.last_raw = Some(raw);
        self.last_out = out;
        self.max_out = self.max_out.max(out);
        out
    }

    /// How many clock restarts were stitched over.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// How many timestamps were held to the wall-time bound.
    pub fn clamped(&self) -> u64 {
        self.clamped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_zero_and_follows() {
        let mut n = TimestampNormalizer::new();
        assert_eq!(n.normalize(5000), 0);
        assert_eq!(n.normalize(5033), 33);
        assert_eq!(n.normalize(5021), 21); // audio slightly behind video
        assert_eq!(n.normalize(5066), 66);
    }

    #[test]
    fn crosses_the_24_bit_boundary() {
        // Past 2^24 ms (~4h40m) RTMP switches to extended timestamps; the value stays continuous.
        let mut n = TimestampNormalizer::new();
        n.normalize(0x00FF_FF00);
        assert_eq!(n.normalize(0x0100_0010), 0x110);
    }

    #[test]
    fn wraps_at_32_bits() {
        let mut n = TimestampNormalizer::new();
        assert_eq!(n.normalize(u32::MAX - 40), 0);
        assert_eq!(n.normalize(u32::MAX - 7), 33);
        assert_eq!(n.normalize(25), 66);
        assert_eq!(n.normalize(58), 99);
        assert_eq!(n.restarts(), 0);
    }

    #[test]
    fn encoder_restart_continues_the_timeline() {
        let mut n = TimestampNormalizer::new();
        n.normalize(100_000);
        assert_eq!(n.normalize(100_033), 33);
        // Encoder restarts its clock at 0.
        assert_eq!(n.normalize(0), 53);
        assert_eq!(n.normalize(33), 86);
        // And a large forward jump.
        assert_eq!(n.normalize(3_000_000), 106);
        assert_eq!(n.restarts(), 2);
    }

    #[test]
    fn a_clock_moved_back_seconds_is_a_restart() {
        let mut n = TimestampNormalizer::new();
        n.normalize(10_000);
        assert_eq!(n.normalize(10_500), 500);
        // 3 s back: not interleaving, an encoder that moved its clock.
        assert_eq!(n.normalize(7_500), 520);
        assert_eq!(n.normalize(7_533), 553);
        assert_eq!(n.restarts(), 1);
    }

    #[test]
    fn small_steps_back_that_add_up_are_a_restart() {
        // 0.9 s back per message is plausible interleaving once, not ten times in a row: the
        // timeline must not walk backwards without bound.
        let mut n = TimestampNormalizer::new();
        let mut raw = 100_000u32;
        n.normalize(raw);
        let mut lowest = 0;
        for _ in 0..10 {
            raw -= 900;
            lowest = lowest.min(n.normalize(raw));
        }
        assert!(lowest >= -MAX_BACKWARD_STEP_MS, "{lowest}");
        assert!(n.restarts() >= 4, "{}", n.restarts());
        // Ordinary interleaving (audio 200 ms behind video) is no restart.
        let mut n = TimestampNormalizer::new();
        for ms in (0..5_000u32).step_by(40) {
            n.normalize(ms + 200);
            n.normalize(ms);
        }
        assert_eq!(n.restarts(), 0);
    }

    proptest::proptest! {
        /// Whatever the input, the output never falls more than a second below its highest.
        #[test]
        fn never_more_than_a_second_below_the_newest(
            raws in proptest::collection::vec(proptest::prelude::any::<u32>(), 1..300),
        ) {
            let mut n = TimestampNormalizer::new();
            let mut highest = 0;
            for raw in raws {
                let out = n.normalize_at(raw, 0);
                highest = highest.max(out);
                proptest::prop_assert!(out >= highest - MAX_BACKWARD_STEP_MS, "{out} < {highest}");
            }
        }
    }

    #[test]
    fn rtp_clock_restart_is_stitched_in_its_own_ticks() {
        let mut n = TimestampNormalizer::with_clock_rate(90_000);
        n.normalize(1_000_000);
        assert_eq!(n.normalize(1_003_000), 3_000);
        // 20 s forward at 90 kHz is a restart; 20 ms of ticks (1800) is the gap.
        assert_eq!(n.normalize(1_003_000 + 1_800_000), 4_800);
        assert_eq!(n.restarts(), 1);
    }

    /// Feeds forward steps from `start`; each output must advance by exactly the step.
    fn follows_forward_steps(clock_rate: u32, start: u32, steps: &[u32]) -> Result<(), String> {
        let mut n = TimestampNormalizer::with_clock_rate(clock_rate);
        let mut raw = start;
        let mut expected = n.normalize_at(raw, 0);
        for &s in steps {
            raw = raw.wrapping_add(s);
            expected += i64::from(s);
            // A real-time source: its media time arrives at the same wall time.
            let wall_ms = expected * 1000 / i64::from(clock_rate);
            let got = n.normalize_at(raw, wall_ms);
            if got != expected {
                return Err(format!("step {s} at {raw}: {got} != {expected}"));
            }
        }
        Ok(())
    }

    #[test]
    fn a_jump_per_message_is_held_to_wall_time() {
        // The regression: +10 s per message was a plausible step, so 4 s of such messages made
        // hours of media (and a segment per message).
        let mut n = TimestampNormalizer::new();
        let mut raw = 0u32;
        for i in 0..10_000i64 {
            let wall_ms = i / 10; // 10 messages a millisecond: 1 s of wall time in all
            let out = n.normalize_at(raw, wall_ms);
            assert!(out <= wall_ms + MAX_MEDIA_LEAD_MS, "{out} at {wall_ms}");
            raw = raw.wrapping_add(10_000);
        }
        assert!(n.clamped() > 9_000);
        // Once the source behaves, time follows it again from where it was held.
        let held = n.normalize_at(raw, 1_000);
        assert_eq!(n.normalize_at(raw.wrapping_add(40), 1_040), held + 40);
    }

    #[test]
    fn a_burst_ahead_of_real_time_within_the_lead_is_kept() {
        // 12 s of media in the first second (a short file pushed without -re).
        let mut n = TimestampNormalizer::new();
        for ms in (0..12_000u32).step_by(33) {
            assert_eq!(n.normalize_at(ms, i64::from(ms) / 12), i64::from(ms));
        }
        assert_eq!(n.clamped(), 0);
    }

    proptest::proptest! {
        /// Timestamps never run ahead of wall time by more than the lead, whatever the input.
        #[test]
        fn media_time_is_bounded_by_wall_time(
            raws in proptest::collection::vec((proptest::prelude::any::<u32>(), 0i64..50), 1..300),
            rate in proptest::prop_oneof![proptest::strategy::Just(1000u32), proptest::strategy::Just(90_000u32)],
        ) {
            let mut n = TimestampNormalizer::with_clock_rate(rate);
            let mut wall = 0;
            for (raw, dt) in raws {
                wall += dt;
                let out = n.normalize_at(raw, wall);
                proptest::prop_assert!(out <= (wall + MAX_MEDIA_LEAD_MS) * i64::from(rate) / 1000);
            }
        }

        /// Forward steps of plausible size always advance the output by exactly the step.
        #[test]
        fn monotonic_for_forward_steps(start in proptest::prelude::any::<u32>(),
                                       steps in proptest::collection::vec(0u32..5000, 1..200)) {
            proptest::prop_assert_eq!(follows_forward_steps(1000, start, &steps), Ok(()));
        }

        /// At RTP's 90 kHz, the same steps in ticks behave as milliseconds do for RTMP.
        #[test]
        fn any_clock_rate_follows_and_wraps(start in proptest::prelude::any::<u32>(),
                                           steps in proptest::collection::vec(0u32..450_000, 1..200)) {
            proptest::prop_assert_eq!(follows_forward_steps(90_000, start, &steps), Ok(()));
        }

        /// Arbitrary input never panics and never runs the timeline away.
        #[test]
        fn arbitrary_input_stays_bounded(raws in proptest::collection::vec(proptest::prelude::any::<u32>(), 1..200)) {
            let mut n = TimestampNormalizer::new();
            for r in &raws {
                let out = n.normalize(*r);
                proptest::prop_assert!(out.abs() <= (raws.len() as i64) * MAX_PLAUSIBLE_STEP_MS);
            }
        }
    }
}
