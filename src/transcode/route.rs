//! Ladder or passthrough: decided once the stream's codecs are known. Pure, so the rules are
//! unit-tested without libav.

use crate::config::TranscodeConfig;
use crate::media::{AudioCodec, VideoCodec};

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
    let blocker = video
        .filter(|v| !v.passes_through())
        .map(|v| v.name())
        .or_else(|| audio.filter(|a| !a.passes_through()).map(|a| a.name()));
    match blocker {
        None => Route::Passthrough,
        // Per-user passthrough is a preference; a codec HLS cannot carry as is needs the ladder.
        Some(_) if config.enabled => Route::Ladder,
        Some(codec) => Route::Refuse(refusal(codec)),
    }
}

/// Why a codec that cannot be carried as is stops a stream when there is no ladder.
pub fn refusal(codec: &str) -> String {
    format!(
        "{codec} cannot be served as published (HLS passthrough carries H.264 and AAC) and \
         transcoding is off on this server (transcode.enabled); publish H.264/AAC or enable it"
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
