//! Ladder or passthrough: decided once the stream's codecs are known. Pure, so the rules are
//! unit-tested without libav.

use std::sync::Arc;

use crate::config::TranscodeConfig;
use crate::media::{AudioCodec, MediaEvent, TrackKind, VideoCodec, VideoConfig};

/// A source that sends audio frames but no video configuration for this long is audio-only (the
/// ladder waits as long before serving audio alone).
const AUDIO_ONLY_AFTER_SECS: i64 = 3;

/// Watches a stream's first events until its codecs are known: at its first frame after a video
/// configuration, or after 3 s of audio frames without one, or at its end.
#[derive(Debug, Default)]
pub struct Lookahead {
    pub video: Option<VideoCodec>,
    /// The latest video configuration (its size is checked whatever the route).
    pub video_config: Option<Arc<VideoConfig>>,
    pub audio: Option<AudioCodec>,
    audio_rate: i64,
    first_audio: Option<i64>,
}

impl Lookahead {
    /// True once the route can be decided (this event included).
    pub fn observe(&mut self, event: &MediaEvent) -> bool {
        match event {
            MediaEvent::VideoConfig(v) => {
                self.video = Some(v.codec);
                self.video_config = Some(v.clone());
                false
            }
            MediaEvent::AudioConfig(a) => {
                self.audio = Some(a.codec);
                self.audio_rate = i64::from(a.sample_rate);
                false
            }
            MediaEvent::Packet(p) if self.video.is_none() && p.track == TrackKind::Audio => {
                let first = *self.first_audio.get_or_insert(p.pts);
                self.audio_rate > 0 && p.pts - first >= AUDIO_ONLY_AFTER_SECS * self.audio_rate
            }
            MediaEvent::Packet(_) => self.video.is_some(),
            MediaEvent::End(_) => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Decode once, serve the ladder.
    Ladder,
    /// Serve the stream as published (one `source` rendition).
    Passthrough,
    /// Neither can serve it: end the session with this reason.
    Refuse(String),
}

/// `video`/`audio`: the source's codecs as far as known when its first frame arrived.
pub fn choose(
    config: &TranscodeConfig,
    user: &str,
    video: Option<VideoCodec>,
    audio: Option<AudioCodec>,
) -> Route {
    if config.transcodes(user) {
        return Route::Ladder;
    }
    match blocker(video, audio) {
        None => Route::Passthrough,
        // Per-user passthrough is a preference; a codec HLS cannot carry as is needs the ladder.
        Some(_) if config.enabled => Route::Ladder,
        Some(codec) => Route::Refuse(refusal(codec)),
    }
}

/// The first codec of the stream that HLS passthrough and RTMP relays cannot carry as is.
fn blocker(video: Option<VideoCodec>, audio: Option<AudioCodec>) -> Option<&'static str> {
    video
        .filter(|v| !v.passes_through())
        .map(|v| v.name())
        .or_else(|| audio.filter(|a| !a.passes_through()).map(|a| a.name()))
}

/// A stream the ladder would serve when every ladder slot (`transcode.max_ladders`) is taken:
/// served as published when its codecs allow it, otherwise refused by name.
pub fn without_ladder(
    max_ladders: usize,
    video: Option<VideoCodec>,
    audio: Option<AudioCodec>,
) -> Route {
    match blocker(video, audio) {
        None => Route::Passthrough,
        Some(codec) => Route::Refuse(format!(
            "all {max_ladders} ladders are in use (transcode.max_ladders) and {codec} cannot be \
             served as published without one; publish H.264/AAC or try again later"
        )),
    }
}

/// Why a codec that cannot be carried as is stops a stream that is not transcoded.
pub fn refusal(codec: &str) -> String {
    format!(
        "{codec} cannot be served as published (HLS passthrough carries H.264 and AAC) and this \
         stream is not transcoded (transcode.enabled is off, or the codec changed mid-stream); \
         publish H.264/AAC or enable transcoding"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(enabled: bool, passthrough_users: &[&str]) -> TranscodeConfig {
        TranscodeConfig {
            enabled,
            passthrough_users: passthrough_users.iter().map(|u| u.to_string()).collect(),
            ..TranscodeConfig::default()
        }
    }

    fn audio_frame(pts: i64) -> MediaEvent {
        MediaEvent::Packet(crate::media::Packet {
            track: TrackKind::Audio,
            dts: pts,
            pts,
            keyframe: true,
            data: bytes::Bytes::from_static(&[1]),
        })
    }

    fn hevc_config() -> MediaEvent {
        MediaEvent::VideoConfig(std::sync::Arc::new(
            crate::media::VideoConfig::hevc(crate::media::hevc::tests::HVCC_426X240).unwrap(),
        ))
    }

    fn aac_config() -> MediaEvent {
        MediaEvent::AudioConfig(std::sync::Arc::new(
            crate::media::AudioConfig::aac(&[0x11, 0x90]).unwrap(),
        ))
    }

    #[test]
    fn audio_first_publishers_are_decided_when_the_video_shows_up() {
        let mut l = Lookahead::default();
        assert!(!l.observe(&aac_config()));
        // Audio frames before the video configuration do not decide (under 3 s of them).
        for i in 0..100 {
            assert!(!l.observe(&audio_frame(i * 1024)));
        }
        assert!(!l.observe(&hevc_config()));
        assert!(l.observe(&audio_frame(100 * 1024)));
        assert_eq!(
            (l.video, l.audio),
            (Some(VideoCodec::Hevc), Some(AudioCodec::Aac))
        );
    }

    #[test]
    fn audio_only_is_decided_after_three_seconds_and_an_end_decides_at_once() {
        let mut l = Lookahead::default();
        l.observe(&aac_config());
        let decided = (0..200).position(|i| l.observe(&audio_frame(i * 1024)));
        assert_eq!(decided, Some(141), "3 s of 1024-sample frames at 48 kHz");
        let mut l = Lookahead::default();
        assert!(l.observe(&MediaEvent::End(crate::media::EndReason::Stopped)));
    }

    #[test]
    fn h264_aac_follows_the_configuration() {
        let (v, a) = (Some(VideoCodec::H264), Some(AudioCodec::Aac));
        assert_eq!(choose(&config(true, &[]), "al", v, a), Route::Ladder);
        assert_eq!(
            choose(&config(true, &["al"]), "al", v, a),
            Route::Passthrough
        );
        assert_eq!(choose(&config(false, &[]), "al", v, a), Route::Passthrough);
        assert_eq!(
            choose(&config(false, &[]), "al", None, a),
            Route::Passthrough
        );
    }

    #[test]
    fn other_codecs_always_go_through_the_ladder() {
        for v in [
            VideoCodec::Hevc,
            VideoCodec::Av1,
            VideoCodec::Vp8,
            VideoCodec::Vp9,
        ] {
            assert_eq!(
                choose(&config(true, &["al"]), "al", Some(v), None),
                Route::Ladder
            );
        }
        let opus = Some(AudioCodec::Opus);
        assert_eq!(
            choose(&config(true, &["al"]), "al", Some(VideoCodec::H264), opus),
            Route::Ladder
        );
    }

    #[test]
    fn over_the_ladder_limit_h264_aac_is_served_as_published_and_the_rest_refused() {
        let (h264, aac) = (Some(VideoCodec::H264), Some(AudioCodec::Aac));
        assert_eq!(without_ladder(1, h264, aac), Route::Passthrough);
        assert_eq!(without_ladder(1, None, aac), Route::Passthrough);
        for (v, a, name) in [
            (Some(VideoCodec::Hevc), aac, "HEVC"),
            (h264, Some(AudioCodec::Opus), "Opus"),
        ] {
            match without_ladder(3, v, a) {
                Route::Refuse(reason) => assert!(
                    reason.starts_with("all 3 ladders are in use") && reason.contains(name),
                    "{reason}"
                ),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn without_a_ladder_they_are_refused_by_name() {
        match choose(
            &config(false, &[]),
            "al",
            Some(VideoCodec::Hevc),
            Some(AudioCodec::Aac),
        ) {
            Route::Refuse(reason) => {
                assert!(reason.starts_with("HEVC cannot be served"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        match choose(&config(false, &[]), "al", None, Some(AudioCodec::Opus)) {
            Route::Refuse(reason) => assert!(reason.starts_with("Opus"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
