//! What one source may cost: its picture size and frame rate (checked on every configuration
//! record and every decoded frame, since an in-band SPS can change the size the decoder follows),
//! and how often its configuration may change (each change rebuilds the decoder and every rung's
//! encoder). Sans-IO, so the rules are unit-tested without libav.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::TranscodeConfig;
use crate::media::{VideoConfig, VIDEO_TIMESCALE};

/// Configuration changes (video or audio, an identical record is not a change) allowed within
/// [`CONFIG_CHANGE_WINDOW`]; one more ends the stream. An encoder restarting at a new size makes
/// one; a source alternating two records makes one per frame.
pub const MAX_CONFIG_CHANGES: usize = 4;
pub const CONFIG_CHANGE_WINDOW: Duration = Duration::from_secs(10);

/// Why a source is refused. The message names what was seen and the limit (never a key).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "source picture {width}x{height} is larger than this server accepts \
         (transcode.max_source_pixels = {max_pixels}, transcode.max_source_dimension = \
         {max_dimension})"
    )]
    Size {
        width: u32,
        height: u32,
        max_pixels: u64,
        max_dimension: u32,
    },
    #[error(
        "source frame rate {fps:.0} fps is above what this server accepts \
         (transcode.max_source_fps = {max_fps})"
    )]
    FrameRate { fps: f64, max_fps: f64 },
    #[error(
        "the source changed its configuration {changes} times within {}s (at most {} allowed); \
         the stream is ended",
        window.as_secs(), MAX_CONFIG_CHANGES
    )]
    Flapping { changes: usize, window: Duration },
}

/// The configured source limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceLimits {
    pub max_pixels: u64,
    pub max_dimension: u32,
    pub max_fps: f64,
}

impl SourceLimits {
    pub fn from_config(t: &TranscodeConfig) -> Self {
        SourceLimits {
            max_pixels: t.max_source_pixels,
            max_dimension: t.max_source_dimension,
            max_fps: t.max_source_fps,
        }
    }

    pub fn check_size(&self, width: u32, height: u32) -> Result<(), LimitError> {
        let pixels = u64::from(width) * u64::from(height);
        if pixels > self.max_pixels || width.max(height) > self.max_dimension {
            return Err(LimitError::Size {
                width,
                height,
                max_pixels: self.max_pixels,
                max_dimension: self.max_dimension,
            });
        }
        Ok(())
    }

    /// The size in the record, and the frame rate when the SPS declares one.
    pub fn check_config(&self, config: &VideoConfig) -> Result<(), LimitError> {
        self.check_size(config.width, config.height)?;
        match config.fps {
            Some(fps) if fps > self.max_fps => Err(LimitError::FrameRate {
                fps,
                max_fps: self.max_fps,
            }),
            _ => Ok(()),
        }
    }

    /// Frames allowed in one second of media time: the limit with room for timestamp jitter
    /// (RTMP timestamps are whole milliseconds).
    fn frames_per_second_allowed(&self) -> u32 {
        (self.max_fps * 1.25).ceil() as u32 + 2
    }
}

/// Measures the decoded frame rate in media time: frames counted per second of presentation
/// time. A flood of frames with equal or tiny timestamp steps is refused, whatever the SPS says;
/// a network burst (many frames in little wall time) is not.
#[derive(Debug, Default)]
pub struct FrameRateMeter {
    window_start: Option<i64>,
    frames: u32,
}

impl FrameRateMeter {
    /// One decoded frame at `pts` (90 kHz).
    pub fn observe(&mut self, limits: &SourceLimits, pts: i64) -> Result<(), LimitError> {
        match self.window_start {
            Some(start) if (0..i64::from(VIDEO_TIMESCALE)).contains(&pts.saturating_sub(start)) => {
                self.frames += 1
            }
            _ => {
                self.window_start = Some(pts);
                self.frames = 1;
            }
        }
        if self.frames > limits.frames_per_second_allowed() {
            return Err(LimitError::FrameRate {
                fps: f64::from(self.frames),
                max_fps: limits.max_fps,
            });
        }
        Ok(())
    }
}

/// Counts configuration changes in a sliding wall-clock window.
#[derive(Debug, Default)]
pub struct ConfigChangeLimiter {
    changes: VecDeque<Instant>,
}

impl ConfigChangeLimiter {
    /// A configuration change at `now`. Err once more than [`MAX_CONFIG_CHANGES`] fall within
    /// [`CONFIG_CHANGE_WINDOW`].
    pub fn change(&mut self, now: Instant) -> Result<(), LimitError> {
        while self
            .changes
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= CONFIG_CHANGE_WINDOW)
        {
            self.changes.pop_front();
        }
        self.changes.push_back(now);
        if self.changes.len() > MAX_CONFIG_CHANGES {
            return Err(LimitError::Flapping {
                changes: self.changes.len(),
                window: CONFIG_CHANGE_WINDOW,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SourceLimits {
        SourceLimits::from_config(&TranscodeConfig::default())
    }

    #[test]
    fn default_size_limit_takes_1440p_either_way_round_and_refuses_4k_and_strips() {
        let l = limits();
        for (w, h) in [
            (1920, 1080),
            (1080, 1920),
            (2560, 1440),
            (1440, 2560),
            (320, 240),
        ] {
            assert_eq!(l.check_size(w, h), Ok(()), "{w}x{h}");
        }
        for (w, h) in [(3840, 2160), (16384, 16384), (8192, 16), (16, 4100)] {
            let e = l.check_size(w, h).unwrap_err();
            let text = e.to_string();
            assert!(text.contains(&format!("{w}x{h}")), "{text}");
            assert!(text.contains("max_source_pixels = 3686400"), "{text}");
        }
    }

    #[test]
    fn a_crafted_sps_with_a_huge_size_is_refused_with_its_size() {
        // Crafted SPSs (40 bytes): the largest H.264 allows, and a square one that only the
        // pixel count refuses.
        for (mbs_w, mbs_h) in [(1024, 136), (256, 256)] {
            let record = crate::media::avc::tests::avcc_sized(mbs_w, mbs_h);
            let config = crate::media::VideoConfig::h264(&record).unwrap();
            let (w, h) = (mbs_w * 16, mbs_h * 16);
            assert_eq!((config.width, config.height), (w, h));
            let e = limits().check_config(&config).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with(&format!("source picture {w}x{h}")),
                "{e}"
            );
        }
        let small =
            crate::media::VideoConfig::h264(crate::media::avc::tests::AVCC_640X360_HIGH).unwrap();
        assert_eq!(limits().check_config(&small), Ok(()));
    }

    #[test]
    fn declared_frame_rate_above_the_limit_is_refused() {
        let mut config =
            crate::media::VideoConfig::h264(crate::media::avc::tests::AVCC_640X360_HIGH).unwrap();
        config.fps = Some(240.0);
        assert!(matches!(
            limits().check_config(&config),
            Err(LimitError::FrameRate { .. })
        ));
    }

    #[test]
    fn measured_frame_rate() {
        let l = limits();
        // 60 fps (1500 ticks), with RTMP's millisecond rounding: fine for a minute.
        let mut m = FrameRateMeter::default();
        for i in 0..3600i64 {
            let pts = (i * 1000 / 60) * 90;
            assert_eq!(m.observe(&l, pts), Ok(()), "frame {i}");
        }
        // Frames one tick apart (a constant RTMP timestamp, forced monotonic): refused within
        // the first second's worth of frames.
        let mut m = FrameRateMeter::default();
        let refused = (0..1000i64).position(|i| m.observe(&l, 5000 + i).is_err());
        assert_eq!(refused, Some(77));
        // A jump back or forward starts a new window.
        let mut m = FrameRateMeter::default();
        for i in 0..1000i64 {
            assert_eq!(m.observe(&l, i * 900_000), Ok(()));
        }
    }

    #[test]
    fn config_changes_are_rate_limited() {
        let t0 = Instant::now();
        let mut l = ConfigChangeLimiter::default();
        for i in 0..MAX_CONFIG_CHANGES as u64 {
            assert_eq!(l.change(t0 + Duration::from_millis(i * 33)), Ok(()));
        }
        let e = l.change(t0 + Duration::from_millis(200)).unwrap_err();
        assert!(e.to_string().contains("5 times within 10s"), "{e}");
        // Spread out, changes are fine forever (an encoder restarting now and then).
        let mut l = ConfigChangeLimiter::default();
        for i in 0..100u64 {
            assert_eq!(l.change(t0 + Duration::from_secs(i * 3)), Ok(()));
        }
    }
}
