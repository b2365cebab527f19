//! One monotonic 64-bit timeline per WebRTC stream, from RTP timestamps (sans-IO: arrival times
//! are passed in). Each track is anchored at its first frame's network arrival (so the stream
//! starts near zero and the tracks start aligned to within network jitter); once both tracks
//! have a valid RTCP sender report, the audio track is re-aligned to the video by their NTP
//! times (capture = ntp + (rtp - rtp_sr) / rate). Robust to the 32-bit RTP wrap and to a
//! timestamp jump (a new SSRC, an encoder restart): a track that leaves its arrival times by
//! more than [`MAX_DRIFT`] is re-anchored on arrival.

use std::time::Duration;

use crate::media::TrackKind;

/// How far a track's RTP time may run from its arrival times before it is re-anchored.
const MAX_DRIFT: Duration = Duration::from_secs(5);
/// Sender-report alignment moves a track by at most this much (more means a bogus report).
const MAX_ALIGN_STEP: Duration = Duration::from_secs(2);

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
    /// Sender reports have aligned the tracks (until a re-anchor).
    aligned: bool,
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
            aligned: false,
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
        track.last_raw = Some(rtp);
        track.extended = extended;
        let arrived = track.units(arrival);
        let offset = *track.offset.get_or_insert(arrived - extended);
        let mut out = extended + offset;
        let drift = track.units(MAX_DRIFT);
        let mut reanchored = false;
        if (out - arrived).abs() > drift {
            track.offset = Some(arrived - extended);
            track.reanchors += 1;
            out = arrived;
            reanchored = true;
        }
        if let Some(r) = report.filter(|r| r.packets > 0 && r.ntp_secs.is_finite()) {
            let rtp_ext = extended + i64::from(r.rtp.wrapping_sub(rtp) as i32);
            track.report = Some((r.ntp_secs, rtp_ext));
        }
        if reanchored {
            self.aligned = false;
        }
        if !self.aligned {
            self.align();
        }
        let track = self.track(kind);
        let out = match track.offset {
            Some(o) => extended + o,
            None => out,
        };
        let out = match track.last_out {
            Some(last) if out <= last => last + 1,
            _ => out,
        };
        track.last_out = Some(out);
        out
    }

    /// Moves the audio track onto the video track's capture clock once both have reports.
    fn align(&mut self) {
        let (Some((ntp_v, rtp_v)), Some((ntp_a, rtp_a)), Some(off_v), Some(off_a)) = (
            self.video.report,
            self.audio.report,
            self.video.offset,
            self.audio.offset,
        ) else {
            return;
        };
        // At the video report's instant: video's stream time, and audio's RTP time.
        let video_secs = (rtp_v + off_v) as f64 / f64::from(self.video.rate);
        let audio_rtp = rtp_a as f64 + (ntp_v - ntp_a) * f64::from(self.audio.rate);
        let wanted = (video_secs * f64::from(self.audio.rate) - audio_rtp).round() as i64;
        let step = (wanted - off_a).abs();
        self.aligned = true;
        if step <= self.audio.units(MAX_ALIGN_STEP) {
            self.audio.offset = Some(wanted);
            if step > 0 {
                tracing::debug!(
                    step_ms = step * 1000 / i64::from(self.audio.rate),
                    "audio aligned to video by RTCP sender reports"
                );
            }
        } else {
            tracing::warn!(
                step_ms = step * 1000 / i64::from(self.audio.rate),
                "sender reports disagree with arrival times by too much; ignored"
            );
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
