//! Media events → CMAF segments, sans-IO.
//!
//! Cuts at the first video keyframe once the segment has reached (nearly) the target duration,
//! so every segment starts with an IDR. Audio goes into the segment its timestamp falls in (an
//! encoder's latency makes audio arrive ahead of its video); audio before the first keyframe is
//! trimmed so playback starts on a picture; audio timestamps are kept continuous (RTMP's
//! millisecond clock jitters around the exact 1024-sample cadence). A change of codec
//! configuration closes the segment and starts a new init segment with a discontinuity.
//!
//! With parts (LL-HLS), each segment is built as a run of CMAF fragments ("parts"), each one
//! emitted as soon as it closes: a part is cut before the frame that would take it past the part
//! target, counted from its segment's start, so rungs fed the same frames (the ladder) cut the
//! same parts. A segment is the concatenation of its parts. Without parts a segment is one
//! fragment.
//!
//! A segment never outgrows the target duration (RFC 8216 §4.3.3.1: EXTINF rounded ≤ the
//! playlist's fixed target): a source whose keyframes are further apart is cut mid-GOP (marked
//! not independent), and the first keyframe after such a cut starts a segment again.
//!
//! Hostile input is bounded here too: a segment (one fMP4 fragment) holds at most
//! `max_segment_bytes` and `max_segment_samples`; reaching either cuts it at once (mid-GOP if
//! need be, marked not independent), so tiny samples on a constant timestamp cannot grow a
//! segment without bound. A keyframe cut needs at least [`MIN_SEGMENT_SECS`] of media, and all
//! timestamp arithmetic saturates, so a timeline pushed to the ends of i64 cannot overflow.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::util::log_throttle::RateLimit;

use super::fmp4::Sample;
use crate::media::{AudioConfig, MediaEvent, Packet, TrackKind, VideoConfig, VIDEO_TIMESCALE};
pub use output::{InitInfo, Part, Segment, SegmenterOutput};

/// A keyframe this close to the target (as a fraction) already ends the segment, so a source
/// with keyframes exactly at the target cadence is not cut one GOP late by rounding.
const CUT_TOLERANCE: f64 = 0.9;
/// Audio frames held while waiting for the first video keyframe (~10 s at 48 kHz).
const MAX_EARLY_AUDIO: usize = 480;
/// The shortest segment a keyframe cut makes, whatever the target: a source with a keyframe per
/// frame and a tiny target must not make a segment per frame.
pub const MIN_SEGMENT_SECS: f64 = 0.5;

/// Segment anomalies (forced cuts), at most one line per 10 s per segmenter.
const ANOMALY_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// `t` ticks of `from` per second in ticks of `to`, saturating at the ends of i64.
fn rescale(t: i64, from: i64, to: i64) -> i64 {
    let v = i128::from(t) * i128::from(to) / i128::from(from.max(1));
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Frame durations remembered to predict the next one's.
const RECENT_FRAMES: usize = 8;
/// Keyframe intervals remembered to predict the next one's.
const RECENT_GOPS: usize = 3;
/// Parts are cut this much (seconds) short of the part target, so a source clock jittering by a
/// millisecond (RTMP) never makes a part longer than the target it is listed against.
const PART_MARGIN: f64 = 0.002;

#[derive(Debug, Clone)]
pub struct SegmenterConfig {
    pub target_duration: f64,
    /// LL-HLS part target (seconds); `None`: one fragment per segment, no parts.
    pub part_duration: Option<f64>,
    pub max_segment_bytes: usize,
    /// Samples (video and audio) in one segment, which is one fragment.
    pub max_segment_samples: usize,
}

/// The segment being built: the parts closed so far.
#[derive(Default)]
struct Open {
    parts: Vec<Bytes>,
    bytes: usize,
    samples: usize,
    /// Decode time of its first video frame (video ticks).
    video_start: Option<i64>,
    /// Decode time of its first audio frame (samples), for audio-only segments.
    audio_start: Option<i64>,
    /// Presentation start, µs.
    start_us: i64,
    /// Media seconds closed so far.
    duration: f64,
    video_frames: usize,
    independent: bool,
    discontinuity: bool,
    program_date_time: Option<DateTime<Utc>>,
}

/// The fragment being filled (a part, or the whole segment without parts).
#[derive(Default)]
struct Pending {
    video: Vec<Sample>,
    video_dts: Vec<i64>,
    audio: Vec<Sample>,
    audio_dts: Vec<i64>,
    audio_start: Option<i64>,
    bytes: usize,
    independent: bool,
}

pub struct Segmenter {
    config: SegmenterConfig,
    video: Option<Arc<VideoConfig>>,
    audio: Option<Arc<AudioConfig>>,
    init_stale: bool,
    started: bool,
    audio_only: bool,
    emitted_any: bool,
    discontinuity_next: bool,
    open: Open,
    pending: Pending,
    last_video_dts: Option<i64>,
    last_video_duration: i64,
    /// The last frame durations: their maximum is how long the next frame may last, so a part
    /// cut before it never outgrows the part target on a jittering clock.
    recent_video_durations: [i64; RECENT_FRAMES],
    video_frames_seen: usize,
    /// Decode time of the last keyframe, and the last keyframe intervals (ticks; 0: unknown).
    last_keyframe_dts: Option<i64>,
    recent_gops: [i64; RECENT_GOPS],
    next_audio_dts: Option<i64>,
    /// Audio that arrived before the first video keyframe: (dts, sample).
    early_audio: std::collections::VecDeque<(i64, Sample)>,
    sequence: u32,
    /// (stream time in µs, wall clock) of the first sample: maps media time to PDT.
    clock_anchor: Option<(i64, DateTime<Utc>)>,
    ended: bool,
    anomaly_log: RateLimit,
}

impl Segmenter {
    pub fn new(config: SegmenterConfig) -> Self {
        Segmenter {
            config,
            video: None,
            audio: None,
            init_stale: true,
            started: false,
            audio_only: false,
            emitted_any: false,
            discontinuity_next: false,
            open: Open::default(),
            pending: Pending::default(),
            last_video_dts: None,
            last_video_duration: i64::from(VIDEO_TIMESCALE / 30),
            recent_video_durations: [i64::from(VIDEO_TIMESCALE / 30); RECENT_FRAMES],
            video_frames_seen: 0,
            last_keyframe_dts: None,
            recent_gops: [0; RECENT_GOPS],
            next_audio_dts: None,
            early_audio: std::collections::VecDeque::new(),
            sequence: 0,
            clock_anchor: None,
            ended: false,
            anomaly_log: RateLimit::new(ANOMALY_LOG_INTERVAL),
        }
    }

    /// Feeds one event; `now` is the wall clock at its arrival (for PROGRAM-DATE-TIME).
    pub fn push(&mut self, event: MediaEvent, now: DateTime<Utc>) -> Vec<SegmenterOutput> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        match event {
            // A new configuration instance is a change even with identical bytes: the ladder
            // re-opens every rung's encoder on a source change, and all rungs must mark the same
            // discontinuity for players to switch between them. Repeats of the same instance (a
            // hub re-announcement) are not; ingest already drops repeated identical headers.
            MediaEvent::VideoConfig(v) => {
                if !self.video.as_ref().is_some_and(|old| Arc::ptr_eq(old, &v)) {
                    self.config_change(&mut out);
                    self.video = Some(v);
                    if self.audio_only {
                        // Video showed up after we started audio-only: restart on a keyframe.
                        self.audio_only = false;
                        self.started = false;
                    }
                }
            }
            MediaEvent::AudioConfig(a) => {
                if !self.audio.as_ref().is_some_and(|old| Arc::ptr_eq(old, &a)) {
                    // Audio announced just after the first video frames (WebRTC tracks start
                    // independently; a ladder's first frame can beat the audio encoder): the
                    // first segment takes both tracks, instead of a one-frame segment without
                    // audio and a discontinuity.
                    let joins_start = self.audio.is_none()
                        && !self.audio_only
                        && !self.emitted_any
                        && self.open.parts.is_empty()
                        && self.pending.audio.is_empty();
                    if joins_start {
                        self.init_stale = true;
                    } else {
                        self.config_change(&mut out);
                    }
                    self.audio = Some(a);
                    if joins_start && self.has_media() {
                        self.emit_init_if_stale(&mut out);
                    }
                }
            }
            MediaEvent::Packet(p) => match p.track {
                TrackKind::Video => self.push_video(p, now, &mut out),
                TrackKind::Audio => self.push_audio(p, now, &mut out),
            },
            MediaEvent::End(reason) => {
                self.flush(None, &mut out);
                self.ended = true;
                out.push(SegmenterOutput::End(reason));
            }
        }
        out
    }

    fn config_change(&mut self, out: &mut Vec<SegmenterOutput>) {
        let has_media = self.has_media();
        if has_media {
            let next = self
                .last_video_dts
                .map(|d| d.saturating_add(self.last_video_duration.max(1)));
            self.flush(next, out);
        }
        if self.emitted_any || has_media {
            self.discontinuity_next = true;
        }
        self.init_stale = true;
    }

    fn has_media(&self) -> bool {
        !self.pending.video.is_empty()
            || !self.pending.audio.is_empty()
            || !self.open.parts.is_empty()
    }

    /// The longest segment that still rounds to the target duration (RFC 8216 §4.3.3.1).
    fn max_segment_secs(&self) -> f64 {
        crate::media::max_segment_secs(self.config.target_duration)
    }

    /// The usual frame duration (the median of the recent ones), for a frame before a gap.
    fn typical_frame_duration(&self) -> i64 {
        let mut recent = self.recent_video_durations;
        recent.sort_unstable();
        recent[RECENT_FRAMES / 2].max(1)
    }

    /// The next frame's duration, predicted on the long side: the longest recent one within
    /// twice the usual, so jitter is allowed for while a sender's short pause (kept as a frame
    /// duration up to half a segment) is not taken for the frame rate — it would close a part
    /// per frame, or cut a segment mid-GOP, for the next frames.
    fn predicted_frame_duration(&self) -> i64 {
        let usual = self.typical_frame_duration();
        self.recent_video_durations
            .iter()
            .copied()
            .filter(|&d| d <= usual.saturating_mul(2))
            .max()
            .unwrap_or(usual)
    }

    /// Whether the segment being built starts with a keyframe.
    fn segment_independent(&self) -> bool {
        if self.open.parts.is_empty() {
            self.pending.independent
        } else {
            self.open.independent
        }
    }

    /// Fixes the media-time ↔ wall-clock mapping used for PROGRAM-DATE-TIME, so several
    /// segmenters (the rungs of one ladder) agree to the millisecond.
    pub fn set_clock_anchor(&mut self, media_us: i64, wall: DateTime<Utc>) {
        self.clock_anchor = Some((media_us, wall));
    }

    fn anchor(&mut self, time_us: i64, now: DateTime<Utc>) {
        if self.clock_anchor.is_none() {
            self.clock_anchor = Some((time_us, now));
        }
    }

    fn push_video(&mut self, p: Packet, now: DateTime<Utc>, out: &mut Vec<SegmenterOutput>) {
        if self.video.is_none() {
            return;
        }
        if !self.started {
            if !p.keyframe {
                return; // wait for a keyframe: a segment must start decodable
            }
            self.started = true;
            self.pending.independent = true;
            self.take_early_audio(p.dts);
        }
        let mut dts = p.dts;
        if let Some(last) = self.last_video_dts {
            if dts <= last {
                dts = last.saturating_add(1); // decode times must increase strictly
            }
        }
        let pts = p.pts.max(dts);
        self.anchor(rescale(dts, i64::from(VIDEO_TIMESCALE), 1_000_000), now);

        if let Some(&part_start) = self.pending.video_dts.first() {
            let secs = |ticks: i64| ticks as f64 / f64::from(VIDEO_TIMESCALE);
            let elapsed = secs(dts.saturating_sub(self.open.video_start.unwrap_or(part_start)));
            let frame = secs(self.predicted_frame_duration());
            let min = (self.config.target_duration * CUT_TOLERANCE).max(MIN_SEGMENT_SECS);
            // A keyframe early in the segment (a short GOP: a scene cut, a looped clip's tail)
            // ends it when the GOP it starts, as long as the recent ones, would not fit in what
            // is left: one short segment instead of a cut mid-GOP and a sliver after it.
            let next_gop = secs(self.recent_gops.iter().copied().max().unwrap_or(0));
            let early = elapsed >= MIN_SEGMENT_SECS
                && next_gop > 0.0
                && elapsed + next_gop > self.max_segment_secs();
            // After a cut mid-GOP, the next keyframe starts a segment again at once.
            let due = p.keyframe && (elapsed >= min || early || !self.segment_independent());
            // A gap (frames dropped by a ladder behind real time, a source that stalled) the
            // segment cannot span without outgrowing its target: the segment ends where its last
            // frame does, and the next one starts after the gap. A shorter pause is held on its
            // last frame, as players expect, rather than cut into a hole they must jump.
            let gap = elapsed > self.max_segment_secs();
            let full = !p.keyframe && elapsed + frame >= self.max_segment_secs();
            let oversized = self.open.bytes + self.pending.bytes + p.data.len()
                > self.config.max_segment_bytes
                || self.pending_samples() >= self.config.max_segment_samples;
            if gap {
                let last = self.last_video_dts.unwrap_or(dts);
                let step = secs(dts.saturating_sub(last));
                let start = self.open.video_start.unwrap_or(part_start);
                let longest = (self.max_segment_secs() * f64::from(VIDEO_TIMESCALE)) as i64;
                let end = last
                    .saturating_add(self.typical_frame_duration())
                    .min(start.saturating_add(longest))
                    .max(last.saturating_add(1));
                if let Some(suppressed) = self.anomaly_log.check() {
                    tracing::warn!(
                        gap_secs = step,
                        suppressed,
                        "a gap in the video; the segment ends before it"
                    );
                }
                self.flush(Some(end), out);
                self.pending.independent = p.keyframe;
            } else if due || full || oversized {
                if !p.keyframe {
                    if let Some(suppressed) = self.anomaly_log.check() {
                        tracing::warn!(
                            elapsed,
                            suppressed,
                            "no keyframe within the target duration or the segment limits; \
                             cutting mid-GOP (set the encoder's keyframe interval to the \
                             segment duration)"
                        );
                    }
                }
                self.flush(Some(dts), out);
                self.pending.independent = p.keyframe;
            } else if let Some(part) = self.config.part_duration {
                if secs(dts.saturating_sub(part_start)) + frame > part - PART_MARGIN {
                    self.close_part(Some(dts), out);
                    self.pending.independent = p.keyframe;
                }
            }
        }
        if !self.has_media() {
            self.emit_init_if_stale(out);
        }
        if let Some(last) = self.last_video_dts {
            let step = dts.saturating_sub(last);
            // A gap is not a frame duration: it would predict every next frame as long.
            let longest = self.max_segment_secs() / 2.0 * f64::from(VIDEO_TIMESCALE);
            if (step as f64) <= longest {
                self.last_video_duration = step.max(1);
                let slot = self.video_frames_seen % RECENT_FRAMES;
                self.recent_video_durations[slot] = self.last_video_duration;
                self.video_frames_seen = self.video_frames_seen.wrapping_add(1);
            }
        }
        self.last_video_dts = Some(dts);
        if p.keyframe {
            if let Some(last) = self.last_keyframe_dts {
                let gop = dts.saturating_sub(last);
                // A gap (dropped GOPs, a paused source) says nothing about the GOP length.
                let gap = 2.0 * self.max_segment_secs() * f64::from(VIDEO_TIMESCALE);
                if (gop as f64) < gap {
                    self.recent_gops.rotate_left(1);
                    self.recent_gops[RECENT_GOPS - 1] = gop;
                }
            }
            self.last_keyframe_dts = Some(dts);
        }
        self.pending.bytes += p.data.len();
        self.pending.video_dts.push(dts);
        self.pending.video.push(Sample {
            duration: 0, // filled at flush from the next decode time
            composition_offset: pts
                .saturating_sub(dts)
                .clamp(i64::from(i32::MIN), i64::from(i32::MAX))
                as i32,
            keyframe: p.keyframe,
            data: p.data,
        });
    }

    fn push_audio(&mut self, p: Packet, now: DateTime<Utc>, out: &mut Vec<SegmenterOutput>) {
        let Some(audio) = self.audio.clone() else {
            return;
        };
        if self.video.is_none() && !self.started {
            self.audio_only = true;
            self.started = true;
            self.pending.independent = true;
        }
        let frame = i64::from(audio.frame_samples);
        let rate = i64::from(audio.sample_rate);
        // Keep the exact cadence unless the source clock really moved (a gap or a jump).
        let dts = match self.next_audio_dts {
            Some(expected) if p.dts.saturating_sub(expected).saturating_abs() < rate / 10 => {
                expected
            }
            _ => p.dts,
        };
        self.next_audio_dts = Some(dts.saturating_add(frame));
        let sample = Sample {
            duration: audio.frame_samples,
            composition_offset: 0,
            keyframe: true,
            data: p.data,
        };
        if !self.started {
            // Held until the first video keyframe decides where the stream starts.
            if self.early_audio.len() == MAX_EARLY_AUDIO {
                self.early_audio.pop_front();
            }
            let early_bytes: usize = self.early_audio.iter().map(|(_, s)| s.data.len()).sum();
            if early_bytes + sample.data.len() > self.config.max_segment_bytes {
                self.early_audio.clear();
            }
            self.early_audio.push_back((dts, sample));
            return;
        }
        self.anchor(rescale(dts, rate, 1_000_000), now);

        if self.audio_only {
            if let Some(part_start) = self.pending.audio_start {
                // Every AAC frame is a sync point: cut as close to the target as frames allow.
                let secs = |samples: i64| samples as f64 / rate as f64;
                let start = self.open.audio_start.unwrap_or(part_start);
                let half_frame = secs(frame) / 2.0;
                if secs(dts.saturating_sub(start)) >= self.config.target_duration - half_frame {
                    self.flush(None, out);
                    self.pending.independent = true;
                } else if let Some(part) = self.config.part_duration {
                    if secs(dts.saturating_sub(part_start).saturating_add(frame))
                        > part - PART_MARGIN
                    {
                        self.close_part(None, out);
                        self.pending.independent = true;
                    }
                }
            }
            if self.pending.audio.is_empty() && self.open.parts.is_empty() {
                self.emit_init_if_stale(out);
            }
        }
        if self.open.bytes + self.pending.bytes + sample.data.len() > self.config.max_segment_bytes
            || self.pending_samples() >= self.config.max_segment_samples
        {
            // A source that sends audio but no video keyframe for this long: cut anyway.
            if let Some(suppressed) = self.anomaly_log.check() {
                tracing::warn!(
                    suppressed,
                    "no video keyframe within the segment size or sample limit; cutting on audio"
                );
            }
            // Everything pending goes into this segment (carrying audio over would not shrink it).
            self.flush(None, out);
            self.pending.independent = self.audio_only;
        }
        self.append_audio(dts, sample);
    }

    /// Samples in the segment being built.
    fn pending_samples(&self) -> usize {
        self.open.samples + self.pending.video.len() + self.pending.audio.len()
    }

    fn append_audio(&mut self, dts: i64, sample: Sample) {
        if self.pending.audio_start.is_none() {
            self.pending.audio_start = Some(dts);
        }
        self.pending.bytes += sample.data.len();
        self.pending.audio_dts.push(dts);
        self.pending.audio.push(sample);
    }

    /// At the first video keyframe (decode time `video_dts`), keeps the early audio from that
    /// point on (frames ending before it are trimmed).
    fn take_early_audio(&mut self, video_dts: i64) {
        let Some(audio) = &self.audio else {
            self.early_audio.clear();
            return;
        };
        let rate = i64::from(audio.sample_rate);
        let half_frame = i64::from(audio.frame_samples) / 2;
        let start = rescale(video_dts, i64::from(VIDEO_TIMESCALE), rate);
        for (dts, sample) in std::mem::take(&mut self.early_audio) {
            if dts.saturating_add(half_frame) >= start {
                self.append_audio(dts, sample);
            }
        }
    }
}

mod fragment;
mod output;
#[cfg(test)]
mod tests;
