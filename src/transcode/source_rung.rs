//! The source as the ladder's top rung (`transcode.source_rung`), like the platforms' "Source"
//! quality: encoding the top rung is most of a ladder's CPU, and a source that already fits it is
//! served as published. Pure, so the rules are unit-tested without libav.
//!
//! The rungs stay aligned because the grid follows the source: when the source is served, the
//! encoded rungs force their IDRs on exactly the frames that are keyframes in the source (see
//! [`SourceKeys`]), so every rung's segmenter sees keyframes at the same presentation times and
//! cuts the same segments. In `auto`, the source is only served once its first keyframe interval
//! is seen to fit a segment ([`KeyframeProbe`], which holds the stream's first events for at most
//! that long).

use std::collections::VecDeque;

use crate::config::SourceRung;
use crate::media::{MediaEvent, TrackKind, VideoCodec, VideoConfig, VIDEO_TIMESCALE};

use super::plan::PlannedRung;

/// H.264 profiles every HLS player decodes (8-bit 4:2:0): Baseline, Main, High.
const PLAYABLE_PROFILES: [u8; 3] = [66, 77, 100];
/// The highest level served as is in `auto` (4.2: 1080p60; a rung-sized source needs less).
const MAX_AUTO_LEVEL: u8 = 42;

/// Where the source goes in the ladder.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// The rung name it is served under.
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// It takes the top planned rung's place (same size); otherwise it is one more rung on top.
    pub replaces_top: bool,
}

/// What `/api/v1/streams` says about the choice (under `transcode.source_rung`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SourceRungStatus {
    pub mode: &'static str,
    /// The rung the source is served as; `None` when every rung is encoded.
    pub rung: Option<String>,
    pub reason: String,
}

/// Whether `source` can be served as a rung of the `planned` ladder under `mode`, before any of
/// its frames is seen; `Err` says why not. `always` skips the size, level and frame-rate checks
/// (the operator vouches for the source) but not what a player or the pipeline cannot handle.
pub fn place(
    mode: SourceRung,
    source: &VideoConfig,
    planned: &[PlannedRung],
) -> Result<Placement, String> {
    if mode == SourceRung::Never {
        return Err("transcode.source_rung is never".into());
    }
    if source.codec != VideoCodec::H264 {
        return Err(format!(
            "the source is {}; only H.264 is served as published",
            source.codec.name()
        ));
    }
    if source.inband_parameters {
        return Err(
            "a WebRTC source changes its picture size and keyframes with the network".into(),
        );
    }
    let (profile, level) = source.h264_profile_level().unwrap_or((0, 0));
    if !PLAYABLE_PROFILES.contains(&profile) {
        return Err(format!(
            "H.264 profile {profile} is not one every player decodes (Baseline, Main or High)"
        ));
    }
    let Some(top) = planned.last() else {
        return Err("the ladder has no rungs".into());
    };
    let size = format!("{}x{}", source.width, source.height);
    let same_size = (top.width, top.height) == (source.width, source.height);
    if mode == SourceRung::Auto {
        if !same_size {
            return Err(format!(
                "the source ({size}) is not the size of a rung (top rung {} is {}x{})",
                top.config.name, top.width, top.height
            ));
        }
        if level > MAX_AUTO_LEVEL {
            return Err(format!(
                "H.264 level {}.{} is above {}.{}",
                level / 10,
                level % 10,
                MAX_AUTO_LEVEL / 10,
                MAX_AUTO_LEVEL % 10
            ));
        }
        if let Some(fps) = source.fps {
            let cap = top.config.max_fps;
            if cap > 0.0 && fps > cap + 0.5 {
                return Err(format!(
                    "the source's {fps:.0} fps is above the rung's cap of {cap:.0}"
                ));
            }
        }
    }
    let short = source.width.min(source.height);
    let top_short = top.width.min(top.height);
    let replaces_top = same_size || top_short == short & !1;
    Ok(Placement {
        name: if replaces_top {
            top.config.name.clone()
        } else {
            format!("{short}p")
        },
        width: source.width,
        height: source.height,
        replaces_top,
    })
}

/// Events held while the probe waits; beyond either bound the source is encoded.
const MAX_HELD_EVENTS: usize = 4096;
const MAX_HELD_BYTES: usize = 64 << 20;

/// What a [`KeyframeProbe`] decided.
#[derive(Debug, PartialEq)]
pub enum Probe {
    Holding,
    /// `Ok`: the keyframes fit; `Err`: why the source is encoded instead.
    Decided(Result<(), String>),
}

/// Holds a stream's first events (its configuration first) until the interval between its first
/// two keyframes is known: at most `max_gap` of media after the first keyframe.
#[derive(Debug)]
pub struct KeyframeProbe {
    max_gap: i64,
    held: Vec<MediaEvent>,
    bytes: usize,
    first_video: Option<i64>,
    first_key: Option<i64>,
}

impl KeyframeProbe {
    /// `config`: the video configuration event that starts the probe.
    pub fn new(config: MediaEvent, max_gap_secs: f64) -> Self {
        KeyframeProbe {
            max_gap: (max_gap_secs * f64::from(VIDEO_TIMESCALE)) as i64,
            held: vec![config],
            bytes: 0,
            first_video: None,
            first_key: None,
        }
    }

    /// Holds `event` and says whether the probe is decided (the event included).
    pub fn push(&mut self, event: MediaEvent) -> Probe {
        let verdict = self.judge(&event);
        if let MediaEvent::Packet(p) = &event {
            self.bytes = self.bytes.saturating_add(p.data.len());
        }
        self.held.push(event);
        match verdict {
            Some(v) => Probe::Decided(v),
            None if self.held.len() > MAX_HELD_EVENTS || self.bytes > MAX_HELD_BYTES => {
                Probe::Decided(Err("too much data before the second keyframe".into()))
            }
            None => Probe::Holding,
        }
    }

    fn judge(&mut self, event: &MediaEvent) -> Option<Result<(), String>> {
        let secs = |ticks: i64| ticks as f64 / f64::from(VIDEO_TIMESCALE);
        let max = secs(self.max_gap);
        match event {
            MediaEvent::VideoConfig(_) => {
                Some(Err("the source changed its configuration at once".into()))
            }
            MediaEvent::End(_) => Some(Err("the stream ended before its second keyframe".into())),
            MediaEvent::Packet(p) if p.track == TrackKind::Video => {
                let Some(first_key) = self.first_key else {
                    if p.keyframe {
                        self.first_key = Some(p.dts);
                        return None;
                    }
                    let first = *self.first_video.get_or_insert(p.dts);
                    return (p.dts.saturating_sub(first) > self.max_gap)
                        .then(|| Err(format!("no keyframe in the first {max:.2} s")));
                };
                let gap = p.dts.saturating_sub(first_key);
                if p.keyframe {
                    Some(if gap <= self.max_gap {
                        Ok(())
                    } else {
                        Err(format!(
                            "its keyframes are {:.2} s apart; a segment is at most {max:.2} s",
                            secs(gap)
                        ))
                    })
                } else {
                    (gap > self.max_gap).then(|| {
                        Err(format!(
                            "its keyframes are more than {max:.2} s apart (a segment's most)"
                        ))
                    })
                }
            }
            _ => None,
        }
    }

    /// The held events, in arrival order.
    pub fn into_held(self) -> Vec<MediaEvent> {
        self.held
    }
}

/// Keyframes of the source remembered until their decoded pictures come out of the decoder.
const MAX_PENDING_KEYS: usize = 64;

/// The source's keyframes, by presentation time: the decoded picture of a source keyframe is a
/// forced IDR in every encoded rung, so the encoded rungs have keyframes exactly where the
/// source rung has them.
#[derive(Debug, Default)]
pub struct SourceKeys {
    pending: VecDeque<i64>,
}

impl SourceKeys {
    /// A source packet at `pts` is a keyframe.
    pub fn keyframe_at(&mut self, pts: i64) {
        if self.pending.len() == MAX_PENDING_KEYS {
            self.pending.pop_front();
        }
        self.pending.push_back(pts);
    }

    /// Whether the decoded picture at `pts` (pictures come out in presentation order) is one.
    pub fn is_key(&mut self, pts: i64) -> bool {
        while self.pending.front().is_some_and(|&k| k < pts) {
            self.pending.pop_front();
        }
        if self.pending.front() == Some(&pts) {
            self.pending.pop_front();
            return true;
        }
        false
    }

    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::TranscodeConfig;
    use crate::media::avc::tests::AVCC_640X360_HIGH;
    use crate::media::{EndReason, Packet};
    use crate::transcode::plan::plan_ladder;

    fn source_360p() -> VideoConfig {
        VideoConfig::h264(AVCC_640X360_HIGH).unwrap()
    }

    fn ladder_for(config: &VideoConfig) -> Vec<PlannedRung> {
        plan_ladder(
            &TranscodeConfig::default().rungs,
            config.width,
            config.height,
        )
    }

    #[test]
    fn a_rung_sized_h264_source_takes_the_top_rung() {
        let source = source_360p();
        let placed = place(SourceRung::Auto, &source, &ladder_for(&source)).unwrap();
        assert_eq!(
            placed,
            Placement {
                name: "360p".into(),
                width: 640,
                height: 360,
                replaces_top: true
            }
        );
    }

    #[test]
    fn never_and_what_players_or_the_pipeline_cannot_take_are_encoded() {
        let source = source_360p();
        let ladder = ladder_for(&source);
        assert_eq!(
            place(SourceRung::Never, &source, &ladder).unwrap_err(),
            "transcode.source_rung is never"
        );
        let mut webrtc = source.clone();
        webrtc.inband_parameters = true;
        for mode in [SourceRung::Auto, SourceRung::Always] {
            assert!(place(mode, &webrtc, &ladder)
                .unwrap_err()
                .starts_with("a WebRTC source"));
        }
        let vp8 = VideoConfig::from_frame_size(VideoCodec::Vp8, 640, 360).unwrap();
        assert_eq!(
            place(SourceRung::Always, &vp8, &ladder).unwrap_err(),
            "the source is VP8; only H.264 is served as published"
        );
    }

    #[test]
    fn auto_needs_a_rung_size_and_always_adds_a_rung_of_its_own() {
        // 640x360 published, but the ladder is planned for a larger picture's top rung.
        let source = source_360p();
        let ladder = plan_ladder(&TranscodeConfig::default().rungs, 1280, 720);
        assert!(place(SourceRung::Auto, &source, &ladder)
            .unwrap_err()
            .starts_with("the source (640x360) is not the size of a rung (top rung 720p"));
        // Between rungs (a 562p source over a 360p/480p plan): `always` serves it on top.
        let ladder = plan_ladder(&TranscodeConfig::default().rungs, 854, 480);
        let mut between = source.clone();
        (between.width, between.height) = (1000, 562);
        let placed = place(SourceRung::Always, &between, &ladder).unwrap();
        assert_eq!((placed.name.as_str(), placed.replaces_top), ("562p", false));
        assert!(place(SourceRung::Auto, &between, &ladder).is_err());
    }

    #[test]
    fn auto_checks_the_frame_rate_cap() {
        let mut source = source_360p();
        source.fps = Some(60.0);
        let mut ladder = ladder_for(&source);
        ladder.last_mut().unwrap().config.max_fps = 30.0;
        assert_eq!(
            place(SourceRung::Auto, &source, &ladder).unwrap_err(),
            "the source's 60 fps is above the rung's cap of 30"
        );
        assert!(place(SourceRung::Always, &source, &ladder).is_ok());
    }

    fn video(dts: i64, keyframe: bool) -> MediaEvent {
        MediaEvent::Packet(Packet {
            track: TrackKind::Video,
            dts,
            pts: dts,
            keyframe,
            data: bytes::Bytes::from_static(&[0; 100]),
        })
    }

    fn probe() -> KeyframeProbe {
        KeyframeProbe::new(MediaEvent::VideoConfig(Arc::new(source_360p())), 2.49)
    }

    #[test]
    fn keyframes_two_seconds_apart_fit_and_everything_is_held_in_order() {
        let mut p = probe();
        assert_eq!(
            p.push(video(0, false)),
            Probe::Holding,
            "before the first keyframe"
        );
        let mut verdict = Probe::Holding;
        for i in 1..=61 {
            verdict = p.push(video(i * 3000, i % 60 == 1));
            if i < 61 {
                assert_eq!(verdict, Probe::Holding, "frame {i}");
            }
        }
        assert_eq!(verdict, Probe::Decided(Ok(())));
        let held = p.into_held();
        assert_eq!(held.len(), 63);
        assert!(matches!(held[0], MediaEvent::VideoConfig(_)));
        assert_eq!(held[62], video(61 * 3000, true));
    }

    #[test]
    fn keyframes_too_far_apart_decide_without_waiting_for_the_next() {
        let mut p = probe();
        p.push(video(0, true));
        let decided = (1..200)
            .map(|i| (i, p.push(video(i * 3000, false))))
            .find(|(_, v)| *v != Probe::Holding)
            .unwrap();
        // 2.49 s at 30 fps: the 75th frame after the keyframe is past it.
        assert_eq!(decided.0, 75);
        let Probe::Decided(Err(reason)) = decided.1 else {
            panic!("{decided:?}")
        };
        assert_eq!(
            reason,
            "its keyframes are more than 2.49 s apart (a segment's most)"
        );
        // A keyframe late by a frame says how far apart they are.
        let mut p = probe();
        p.push(video(0, true));
        let Probe::Decided(Err(reason)) = p.push(video(225_000, true)) else {
            panic!()
        };
        assert_eq!(
            reason,
            "its keyframes are 2.50 s apart; a segment is at most 2.49 s"
        );
    }

    #[test]
    fn no_keyframe_an_end_or_a_new_configuration_decide_for_encoding() {
        let mut p = probe();
        let decided = (0..500).find_map(|i| match p.push(video(i * 3000, false)) {
            Probe::Holding => None,
            Probe::Decided(v) => Some((i, v)),
        });
        assert_eq!(
            decided,
            Some((75, Err("no keyframe in the first 2.49 s".into())))
        );
        let mut p = probe();
        p.push(video(0, true));
        assert_eq!(
            p.push(MediaEvent::End(EndReason::Stopped)),
            Probe::Decided(Err("the stream ended before its second keyframe".into()))
        );
        let mut p = probe();
        assert!(matches!(
            p.push(MediaEvent::VideoConfig(Arc::new(source_360p()))),
            Probe::Decided(Err(_))
        ));
    }

    #[test]
    fn the_held_data_is_bounded() {
        let mut p = probe();
        // Audio only, no video packet: the event count bounds it.
        let audio = |i: i64| {
            MediaEvent::Packet(Packet {
                track: TrackKind::Audio,
                dts: i,
                pts: i,
                keyframe: true,
                data: bytes::Bytes::from_static(&[0; 10]),
            })
        };
        let decided = (0..10_000).find(|&i| p.push(audio(i)) != Probe::Holding);
        assert_eq!(decided, Some(MAX_HELD_EVENTS as i64 - 1));
    }

    #[test]
    fn source_keyframes_are_matched_to_decoded_pictures_by_time() {
        let mut keys = SourceKeys::default();
        // B-frames: packets in decode order, pictures in presentation order.
        keys.keyframe_at(3000);
        keys.keyframe_at(183_000);
        let decided: Vec<i64> = [3000, 6000, 9000, 180_000, 183_000, 186_000]
            .into_iter()
            .filter(|&pts| keys.is_key(pts))
            .collect();
        assert_eq!(decided, vec![3000, 183_000]);
        // A keyframe whose picture never came out (a decode error) is forgotten, not matched late.
        keys.keyframe_at(363_000);
        assert!(!keys.is_key(366_000));
        assert!(!keys.is_key(363_000));
        // Bounded.
        for i in 0..1000 {
            keys.keyframe_at(i);
        }
        assert_eq!(keys.pending.len(), MAX_PENDING_KEYS);
    }
}
