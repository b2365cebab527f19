//! Closing fragments: the pending samples become a CMAF fragment (a part), parts become a
//! segment, and the init segment is re-emitted first when the codec configuration changed.

use chrono::{Duration as ChronoDuration, Utc};

use super::{rescale, InitInfo, Part, Segment, Segmenter, SegmenterOutput};
use crate::hls::fmp4::{self, Sample, TrackRun, AUDIO_TRACK_ID, VIDEO_TRACK_ID};
use crate::media::VIDEO_TIMESCALE;

impl Segmenter {
    pub(super) fn emit_init_if_stale(&mut self, out: &mut Vec<SegmenterOutput>) {
        if !self.init_stale {
            return;
        }
        let video = if self.audio_only {
            None
        } else {
            self.video.clone()
        };
        let data = fmp4::init_segment(video.as_deref(), self.audio.as_deref());
        out.push(SegmenterOutput::Init {
            data,
            info: InitInfo {
                video,
                audio: self.audio.clone(),
            },
        });
        self.init_stale = false;
    }

    /// Closes the segment being built. `next_video_dts` is the decode time of the sample after
    /// it (the keyframe that starts the next segment), which gives the last sample its duration.
    pub(super) fn flush(&mut self, next_video_dts: Option<i64>, out: &mut Vec<SegmenterOutput>) {
        self.close_part(next_video_dts, out);
        self.close_segment(out);
    }

    /// Closes the pending fragment as a part of the segment being built (and emits it when
    /// parts are configured). `next_video_dts` as for [`Segmenter::flush`].
    pub(super) fn close_part(
        &mut self,
        next_video_dts: Option<i64>,
        out: &mut Vec<SegmenterOutput>,
    ) {
        let mut pending = std::mem::take(&mut self.pending);
        if pending.video.is_empty() && pending.audio.is_empty() {
            return;
        }
        // Audio at or after the cut belongs to the next segment.
        let mut carry: Vec<(i64, Sample)> = Vec::new();
        if let (Some(next), Some(audio)) = (next_video_dts, &self.audio) {
            if !pending.video.is_empty() {
                let cut = rescale(
                    next,
                    i64::from(VIDEO_TIMESCALE),
                    i64::from(audio.sample_rate),
                );
                let keep = pending.audio_dts.iter().take_while(|&&d| d < cut).count();
                let dts_tail = pending.audio_dts.split_off(keep);
                let sample_tail = pending.audio.split_off(keep);
                carry = dts_tail.into_iter().zip(sample_tail).collect();
                pending.audio_start = pending.audio_dts.first().copied();
            }
        }
        self.emit_init_if_stale(out);
        let n = pending.video.len();
        for i in 0..n {
            let next = if i + 1 < n {
                pending.video_dts[i + 1]
            } else {
                next_video_dts
                    .unwrap_or(pending.video_dts[i].saturating_add(self.last_video_duration))
            };
            pending.video[i].duration = next
                .saturating_sub(pending.video_dts[i])
                .clamp(1, i64::from(u32::MAX)) as u32;
        }
        let (duration, start_us) = if let Some(&first) = pending.video_dts.first() {
            let total: u64 = pending.video.iter().map(|s| u64::from(s.duration)).sum();
            // Presentation time of the first frame (a keyframe: the first picture shown), so
            // rungs with and without B-frames (the source as a rung) date a segment alike.
            let shown = first.saturating_add(
                pending
                    .video
                    .first()
                    .map_or(0, |s| i64::from(s.composition_offset)),
            );
            (
                total as f64 / f64::from(VIDEO_TIMESCALE),
                rescale(shown, i64::from(VIDEO_TIMESCALE), 1_000_000),
            )
        } else {
            let rate = self.audio.as_ref().map_or(48_000, |a| a.sample_rate);
            let total: u64 = pending.audio.iter().map(|s| u64::from(s.duration)).sum();
            (
                total as f64 / f64::from(rate),
                rescale(pending.audio_start.unwrap_or(0), i64::from(rate), 1_000_000),
            )
        };
        let mut runs = Vec::with_capacity(2);
        if let Some(&first) = pending.video_dts.first() {
            runs.push(TrackRun {
                track_id: VIDEO_TRACK_ID,
                base_decode_time: first.max(0) as u64,
                samples: &pending.video,
            });
        }
        if let Some(start) = pending.audio_start {
            runs.push(TrackRun {
                track_id: AUDIO_TRACK_ID,
                base_decode_time: start.max(0) as u64,
                samples: &pending.audio,
            });
        }
        self.sequence = self.sequence.wrapping_add(1);
        let data = fmp4::media_fragment(self.sequence, &runs);
        let open = &mut self.open;
        if open.parts.is_empty() {
            open.video_start = pending.video_dts.first().copied();
            open.audio_start = pending.audio_start;
            open.start_us = start_us;
            open.independent = pending.independent;
            open.discontinuity = std::mem::take(&mut self.discontinuity_next);
            open.program_date_time = Some(match self.clock_anchor {
                // Saturating: a timeline pushed to the ends of i64 must not overflow the date.
                Some((anchor_us, wall)) => wall
                    .checked_add_signed(ChronoDuration::microseconds(
                        start_us.saturating_sub(anchor_us),
                    ))
                    .unwrap_or(wall),
                None => Utc::now(),
            });
        }
        if self.config.part_duration.is_some() {
            out.push(SegmenterOutput::Part(Part {
                index: u32::try_from(open.parts.len()).unwrap_or(u32::MAX),
                duration,
                data: data.clone(),
                independent: pending.independent,
                discontinuity: open.discontinuity,
                program_date_time: open.program_date_time.unwrap_or_else(Utc::now),
            }));
        }
        open.bytes += data.len();
        open.samples += n + pending.audio.len();
        open.duration += duration;
        open.video_frames += n;
        open.parts.push(data);
        for (dts, sample) in carry {
            self.append_audio(dts, sample);
        }
    }

    /// Emits the segment being built: its parts, concatenated.
    pub(super) fn close_segment(&mut self, out: &mut Vec<SegmenterOutput>) {
        let open = std::mem::take(&mut self.open);
        if open.parts.is_empty() {
            return;
        }
        let data = if open.parts.len() == 1 {
            open.parts[0].clone()
        } else {
            let mut all = bytes::BytesMut::with_capacity(open.bytes);
            for p in &open.parts {
                all.extend_from_slice(p);
            }
            all.freeze()
        };
        out.push(SegmenterOutput::Segment(Segment {
            duration: open.duration,
            data,
            discontinuity: open.discontinuity,
            program_date_time: open.program_date_time.unwrap_or_else(Utc::now),
            independent: open.independent,
            video_frames: open.video_frames,
            start_time: open.start_us as f64 / 1e6,
        }));
        self.emitted_any = true;
    }
}
