//! One monotonic 64-bit timeline per WebRTC stream, from RTP timestamps (sans-IO: arrival times
//! are passed in). Each track is anchored at its first frame's network arrival (so the stream
//! starts near zero and the tracks start aligned to within network jitter); whenever both tracks
//! have a new RTCP sender report, the audio track is aligned to the video by their NTP times
//! (capture = ntp + (rtp - rtp_sr) / rate), so a sender whose clocks drift apart stays in sync.
//! Robust to the 32-bit RTP wrap and to a timestamp jump (a new SSRC, an encoder restart): a
//! track whose RTP time moves more than [`MAX_DRIFT`] beyond the time that passed between its
//! arrivals (or back) is re-anchored on arrival. Late arrival alone never moves a track: after a
//! stall (a starved server reading a full socket buffer) packets arrive in a burst, and their
//! RTP times, not their arrival, say when they were captured.

use std::time::Duration;

use crate::media::TrackKind;

/// How far a track's RTP time may run from its arrival times before it is re-anchored.
const MAX_DRIFT: Duration = Duration::from_secs(5);
/// Sender-report alignment moves a track by at most this much (more means a bogus report).
const MAX_ALIGN_STEP: Duration = Duration::from_secs(2);
/// Smaller alignment steps are report jitter, left alone (players do not notice 15 ms).
const MIN_ALIGN_STEP: Duration = Duration::from_millis(15);

/// An RTCP sender report's mapping of NTP time to RTP time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SenderReport {
    /// NTP time in seconds (any epoch: only differences between the tracks' reports count).
    pub ntp_secs: f64,
    pub rtp: u32,
    /// Packets sent when it was made: OBS's first report says 0 with a bogus RTP time.
    pub packets: u32,
}

#[derive(Debug, Default)]
struct Track {
    rate: u32,
    last_raw: Option<u32>,
    extended: i64,
    /// Output = extended + offset (track units).
    offset: Option<i64>,
    last_out: Option<i64>,
    /// Arrival of the previous frame (track units).
    last_arrived: Option<i64>,
    /// The latest valid sender report: (NTP seconds, extended RTP time).
    report: Option<(f64, i64)>,
    reanchors: u64,
}

impl Track {
    fn new(rate: u32) -> Self {
        Track {
            rate,
            ..Track::default()
        }
    }

    fn extend(&self, raw: u32) -> i64 {
        match self.last_raw {
            Some(last) => self.extended + i64::from(raw.wrapping_sub(last) as i32),
            None => i64::from(raw),
        }
    }

    fn units(&self, d: Duration) -> i64 {
        (d.as_secs_f64() * f64::from(self.rate)).round() as i64
    }
}

#[derive(Debug)]
pub struct StreamClock {
    video: Track,
    audio: Track,
    /// The sender reports the tracks were last aligned by (video's, audio's NTP seconds).
    aligned_by: Option<(f64, f64)>,
    /// An alignment was tried since the last (re-)anchor: later refusals are logged at debug.
    tried: bool,
}

impl Default for StreamClock {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamClock {
    pub fn new() -> Self {
        StreamClock {
            video: Track::new(crate::media::VIDEO_TIMESCALE),
            audio: Track::new(crate::media::opus::OPUS_RATE),
            aligned_by: None,
            tried: false,
        }
    }

    fn track(&mut self, kind: TrackKind) -> &mut Track {
        match kind {
            TrackKind::Video => &mut self.video,
            TrackKind::Audio => &mut self.audio,
        }
    }

    /// The stream time (in the track's clock: 90 kHz video, 48 kHz audio) of a frame with RTP
    /// time `rtp` that arrived `arrival` after the session's start. `report` is the track's
    /// latest sender report, if any. Never earlier than the track's previous frame.
    pub fn map(
        &mut self,
        kind: TrackKind,
        rtp: u32,
        arrival: Duration,
        report: Option<SenderReport>,
    ) -> i64 {
        let track = self.track(kind);
        let extended = track.extend(rtp);
        let arrived = track.units(arrival);
        let drift = track.units(MAX_DRIFT);
        // How far the RTP time moved beyond the time between arrivals: a jump, not lateness.
        let jumped = match (track.last_raw, track.last_arrived) {
            (Some(_), Some(last_arrived)) => {
                let step = extended - track.extended;
                step - (arrived - last_arrived) > drift || step < -drift
            }
            _ => false,
        };
        track.last_raw = Some(rtp);
        track.extended = extended;
        track.last_arrived = Some(arrived);
        track.offset.get_or_insert(arrived - extended);
        if jumped {
            track.offset = Some(arrived - extended);
            track.reanchors += 1;
        }
        if let Some(r) = report.filter(|r| r.packets > 0 && r.ntp_secs.is_finite()) {
            let rtp_ext = extended + i64::from(r.rtp.wrapping_sub(rtp) as i32);
            track.report = Some((r.ntp_secs, rtp_ext));
        }
        if jumped {
            self.aligned_by = None;
            self.tried = false;
        }
        self.align();
        let track = self.track(kind);
        let out = extended + track.offset.unwrap_or(0);
        let out = match track.last_out {
            Some(last) if out <= last => last + 1,
            _ => out,
        };
        track.last_out = Some(out);
        out
    }

    /// Moves the audio track onto the video track's capture clock, once per new pair of reports.
    fn align(&mut self) {
        let (Some((ntp_v, rtp_v)), Some((ntp_a, rtp_a)), Some(off_v), Some(off_a)) = (
            self.video.report,
            self.audio.report,
            self.video.offset,
            self.audio.offset,
        ) else {
            return;
        };
        if self.aligned_by == Some((ntp_v, ntp_a)) {
            return;
        }
        self.aligned_by = Some((ntp_v, ntp_a));
        // At the video report's instant: video's stream time, and audio's RTP time.
        let video_secs = (rtp_v + off_v) as f64 / f64::from(self.video.rate);
        let audio_rtp = rtp_a as f64 + (ntp_v - ntp_a) * f64::from(self.audio.rate);
        let wanted = (video_secs * f64::from(self.audio.rate) - audio_rtp).round() as i64;
        let step = (wanted - off_a).abs();
        let step_ms = step * 1000 / i64::from(self.audio.rate);
        let first = !self.tried;
        self.tried = true;
        if step > self.audio.units(MAX_ALIGN_STEP) {
            if first {
                tracing::warn!(
                    step_ms,
                    "sender reports disagree with arrival times by too much; ignored"
                );
            } else {
                tracing::debug!(step_ms, "sender reports disagree by too much; ignored");
            }
        } else if first || step >= self.audio.units(MIN_ALIGN_STEP) {
            self.audio.offset = Some(wanted);
            if step > 0 {
                tracing::debug!(step_ms, "audio aligned to video by RTCP sender reports");
            }
        }
    }

    /// How often a track's RTP times jumped and it was re-anchored on arrival.
    pub fn reanchors(&self) -> u64 {
        self.video.reanchors + self.audio.reanchors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn starts_near_zero_and_follows_rtp() {
        let mut c = StreamClock::new();
        assert_eq!(c.map(TrackKind::Video, 123_456, MS(0), None), 0);
        assert_eq!(c.map(TrackKind::Video, 123_456 + 3000, MS(33), None), 3000);
        // Audio arrives 20 ms later: anchored on its arrival.
        assert_eq!(c.map(TrackKind::Audio, 9, MS(20), None), 960);
        assert_eq!(c.map(TrackKind::Audio, 9 + 960, MS(45), None), 1920);
    }

    #[test]
    fn rtp_wrap_is_seamless() {
        let mut c = StreamClock::new();
        let start = u32::MAX - 2999;
        assert_eq!(c.map(TrackKind::Video, start, MS(0), None), 0);
        assert_eq!(
            c.map(TrackKind::Video, start.wrapping_add(3000), MS(33), None),
            3000
        );
        assert_eq!(
            c.map(TrackKind::Video, start.wrapping_add(6000), MS(66), None),
            6000
        );
    }

    #[test]
    fn a_jump_reanchors_on_arrival_without_going_back() {
        let mut c = StreamClock::new();
        c.map(TrackKind::Video, 1000, MS(0), None);
        let before = c.map(TrackKind::Video, 4000, MS(33), None);
        // A new SSRC with an unrelated timestamp.
        let after = c.map(TrackKind::Video, 2_000_000_000, MS(66), None);
        assert!(after > before && after <= 66 * 90 + 1, "{after}");
        assert_eq!(c.reanchors(), 1);
        assert_eq!(
            c.map(TrackKind::Video, 2_000_003_000, MS(100), None),
            after + 3000
        );
    }

    #[test]
    fn sender_reports_align_audio_and_bogus_first_reports_are_ignored() {
        let mut c = StreamClock::new();
        // Video RTP 0 captured at NTP 100.0; audio RTP 0 captured at NTP 100.0 too, but its
        // first packet arrived 150 ms later than video's (a slower path).
        c.map(TrackKind::Video, 0, MS(0), None);
        let bogus = SenderReport {
            ntp_secs: 1.0,
            rtp: u32::MAX,
            packets: 0,
        };
        let a0 = c.map(TrackKind::Audio, 0, MS(150), Some(bogus));
        assert_eq!(a0, 150 * 48);
        let v_sr = SenderReport {
            ntp_secs: 101.0,
            rtp: 90_000,
            packets: 30,
        };
        c.map(TrackKind::Video, 90_000, MS(1000), Some(v_sr));
        let a_sr = SenderReport {
            ntp_secs: 101.0,
            rtp: 48_000,
            packets: 50,
        };
        let a = c.map(TrackKind::Audio, 48_000, MS(1150), Some(a_sr));
        // Aligned: audio at capture 101.0 s is stream time 1.0 s, like video's.
        assert_eq!(a, 48_000);
    }

    #[test]
    fn a_stalled_reader_keeps_rtp_times_and_the_tracks_in_sync() {
        let mut c = StreamClock::new();
        for i in 0..30u32 {
            let t = u64::from(i) * 33;
            c.map(TrackKind::Video, i * 3000, MS(t), None);
            c.map(TrackKind::Audio, i * 1584, MS(t), None);
        }
        // 7 s unread, then the queued packets in one burst: times follow RTP, not arrival.
        for i in 30..240u32 {
            let v = c.map(TrackKind::Video, i * 3000, MS(7990), None);
            let a = c.map(TrackKind::Audio, i * 1584, MS(7990), None);
            assert_eq!(v, i64::from(i) * 3000);
            assert_eq!(a, i64::from(i) * 1584);
        }
        assert_eq!(c.reanchors(), 0);
    }

    #[test]
    fn a_paused_track_resumes_where_its_rtp_time_says() {
        let mut c = StreamClock::new();
        c.map(TrackKind::Video, 0, MS(0), None);
        // The sender stopped for 20 s (a hidden tab) and its RTP clock ran on.
        assert_eq!(
            c.map(TrackKind::Video, 20 * 90_000, MS(20_000), None),
            20 * 90_000
        );
        assert_eq!(c.reanchors(), 0);
    }

    #[test]
    fn later_sender_reports_keep_a_drifting_audio_clock_aligned() {
        let mut c = StreamClock::new();
        let report = |ntp_secs: f64, rtp: u32| {
            Some(SenderReport {
                ntp_secs,
                rtp,
                packets: 10,
            })
        };
        c.map(TrackKind::Video, 0, MS(0), report(100.0, 0));
        assert_eq!(c.map(TrackKind::Audio, 0, MS(0), report(100.0, 0)), 0);
        // An hour on, the microphone's clock has run 100 ms slow: audio RTP 48000 × 3600 −
        // 4800 was captured at NTP 3700.
        let v = c.map(
            TrackKind::Video,
            3600 * 90_000,
            MS(3_600_000),
            report(3700.0, 3600 * 90_000),
        );
        let rtp_a = 3600 * 48_000 - 4800;
        let a = c.map(
            TrackKind::Audio,
            rtp_a,
            MS(3_600_000),
            report(3700.0, rtp_a),
        );
        assert_eq!(v, 3600 * 90_000);
        assert_eq!(
            a,
            3600 * 48_000,
            "captured together, so the same stream time"
        );
        // A report within jitter of the current alignment moves nothing.
        let a2 = c.map(
            TrackKind::Audio,
            rtp_a + 960,
            MS(3_600_020),
            report(3700.025, rtp_a + 960 + 240),
        );
        assert_eq!(a2, 3600 * 48_000 + 960);
    }

    proptest! {
        #[test]
        fn never_steps_back(
            steps in proptest::collection::vec((any::<bool>(), -100_000i64..200_000, 0u64..200, any::<bool>()), 1..200),
            start_v in any::<u32>(), start_a in any::<u32>())
        {
            let mut c = StreamClock::new();
            let (mut rv, mut ra, mut t) = (start_v, start_a, 0u64);
            let (mut last_v, mut last_a) = (i64::MIN, i64::MIN);
            for (video, delta, dt, report) in steps {
                t += dt;
                let sr = report.then_some(SenderReport { ntp_secs: t as f64 / 1000.0, rtp: rv ^ ra, packets: 1 });
                if video {
                    rv = rv.wrapping_add(delta as u32);
                    let out = c.map(TrackKind::Video, rv, MS(t), sr);
                    prop_assert!(out > last_v);
                    last_v = out;
                } else {
                    ra = ra.wrapping_add(delta as u32);
                    let out = c.map(TrackKind::Audio, ra, MS(t), sr);
                    prop_assert!(out > last_a);
                    last_a = out;
                }
            }
        }
    }
}
