//! FLV tag bodies (as carried in RTMP audio/video messages) → codec-neutral [`MediaEvent`]s.
//! Sans-IO: bytes in, events out. Handles the legacy AVC/AAC headers and the Enhanced RTMP
//! ex-header (FourCC: `avc1`, `hvc1`, `av01`, as OBS 30+ sends them), so a codec we do not
//! support is refused by name instead of being misread as H.264.

use std::sync::Arc;

use bytes::Bytes;

use crate::media::timeline::TimestampNormalizer;
use crate::media::{
    av1, AudioConfig, CodecError, MediaEvent, Packet, TrackKind, VideoCodec, VideoConfig,
    VIDEO_TIMESCALE,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlvError {
    #[error("empty {0} message")]
    Empty(&'static str),
    #[error("truncated {0} tag header")]
    Truncated(&'static str),
    #[error("unsupported video codec {0} (livegate accepts H.264, HEVC and AV1)")]
    UnsupportedVideoCodec(String),
    #[error("unsupported audio codec {0} (livegate accepts AAC)")]
    UnsupportedAudioCodec(String),
    #[error("malformed video frame: {0}")]
    MalformedFrame(String),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// A parsed video tag body, borrowing the payload.
#[derive(Debug, PartialEq, Eq)]
pub enum VideoTag {
    SequenceHeader(VideoCodec, Bytes),
    Frame {
        keyframe: bool,
        composition_ms: i32,
        data: Bytes,
    },
    EndOfSequence,
    /// Command frames, metadata packets: nothing to forward.
    Ignored,
}

#[derive(Debug, PartialEq, Eq)]
pub enum AudioTag {
    SequenceHeader(Bytes),
    Frame(Bytes),
}

fn si24(b: &[u8]) -> i32 {
    let v = (i32::from(b[0]) << 16) | (i32::from(b[1]) << 8) | i32::from(b[2]);
    (v << 8) >> 8
}

fn video_codec_name(id: u8) -> String {
    match id {
        2 => "Sorenson H.263".into(),
        3 => "Screen video".into(),
        4 => "VP6".into(),
        5 => "VP6 alpha".into(),
        6 => "Screen video v2".into(),
        12 => "HEVC (legacy id 12)".into(),
        n => format!("id {n}"),
    }
}

fn fourcc_name(fourcc: &[u8]) -> String {
    let text = String::from_utf8_lossy(fourcc).into_owned();
    let known = match fourcc {
        b"hvc1" => " (HEVC)",
        b"av01" => " (AV1)",
        b"vp09" => " (VP9)",
        b"vp08" => " (VP8)",
        b"Opus" => " (Opus)",
        b"fLaC" => " (FLAC)",
        b"ac-3" => " (AC-3)",
        b"ec-3" => " (E-AC-3)",
        b".mp3" => " (MP3)",
        _ => "",
    };
    format!("'{text}'{known}")
}

pub fn parse_video_tag(body: &Bytes) -> Result<VideoTag, FlvError> {
    let first = *body.first().ok_or(FlvError::Empty("video"))?;
    if first & 0x80 != 0 {
        // Enhanced RTMP: [1 ex-header | 3 frame type | 4 packet type] [FourCC] ...
        let frame_type = (first >> 4) & 0x07;
        let packet_type = first & 0x0f;
        let fourcc = body
            .get(1..5)
            .ok_or(FlvError::Truncated("enhanced video"))?;
        let codec = match fourcc {
            b"avc1" => VideoCodec::H264,
            b"hvc1" => VideoCodec::Hevc,
            b"av01" => VideoCodec::Av1,
            _ => return Err(FlvError::UnsupportedVideoCodec(fourcc_name(fourcc))),
        };
        if frame_type == 5 {
            return Ok(VideoTag::Ignored);
        }
        return match packet_type {
            0 => Ok(VideoTag::SequenceHeader(codec, body.slice(5..))),
            // AV1 has no composition time: its coded frames start right after the FourCC.
            1 if codec == VideoCodec::Av1 => Ok(VideoTag::Frame {
                keyframe: frame_type == 1,
                composition_ms: 0,
                data: body.slice(5..),
            }),
            1 => {
                let cts = body
                    .get(5..8)
                    .ok_or(FlvError::Truncated("enhanced video"))?;
                Ok(VideoTag::Frame {
                    keyframe: frame_type == 1,
                    composition_ms: si24(cts),
                    data: body.slice(8..),
                })
            }
            2 => Ok(VideoTag::EndOfSequence),
            3 => Ok(VideoTag::Frame {
                keyframe: frame_type == 1,
                composition_ms: 0,
                data: body.slice(5..),
            }),
            // Metadata, and AV1's MPEG-2 TS descriptor: nothing a decoder needs.
            4 | 5 => Ok(VideoTag::Ignored),
            n => Err(FlvError::UnsupportedVideoCodec(format!(
                "{} with enhanced packet type {n} (multitrack/ModEx)",
                fourcc_name(fourcc)
            ))),
        };
    }
    let frame_type = first >> 4;
    let codec_id = first & 0x0f;
    if codec_id != 7 {
        return Err(FlvError::UnsupportedVideoCodec(video_codec_name(codec_id)));
    }
    if frame_type == 5 {
        return Ok(VideoTag::Ignored);
    }
    let header = body.get(1..5).ok_or(FlvError::Truncated("AVC"))?;
    match header[0] {
        0 => Ok(VideoTag::SequenceHeader(VideoCodec::H264, body.slice(5..))),
        1 => Ok(VideoTag::Frame {
            keyframe: frame_type == 1,
            composition_ms: si24(&header[1..4]),
            data: body.slice(5..),
        }),
        2 => Ok(VideoTag::EndOfSequence),
        n => Err(FlvError::MalformedFrame(format!("AVC packet type {n}"))),
    }
}

pub fn parse_audio_tag(body: &Bytes) -> Result<AudioTag, FlvError> {
    let first = *body.first().ok_or(FlvError::Empty("audio"))?;
    let sound_format = first >> 4;
    match sound_format {
        10 => {
            let packet_type = *body.get(1).ok_or(FlvError::Truncated("AAC"))?;
            match packet_type {
                0 => Ok(AudioTag::SequenceHeader(body.slice(2..))),
                1 => Ok(AudioTag::Frame(body.slice(2..))),
                n => Err(FlvError::MalformedFrame(format!("AAC packet type {n}"))),
            }
        }
        9 => {
            // Enhanced RTMP audio: [4 sound format=9 | 4 packet type] [FourCC] ...
            let packet_type = first & 0x0f;
            let fourcc = body
                .get(1..5)
                .ok_or(FlvError::Truncated("enhanced audio"))?;
            if fourcc != b"mp4a" {
                return Err(FlvError::UnsupportedAudioCodec(fourcc_name(fourcc)));
            }
            match packet_type {
                0 => Ok(AudioTag::SequenceHeader(body.slice(5..))),
                1 => Ok(AudioTag::Frame(body.slice(5..))),
                n => Err(FlvError::UnsupportedAudioCodec(format!(
                    "mp4a with enhanced packet type {n}"
                ))),
            }
        }
        n => Err(FlvError::UnsupportedAudioCodec(
            match n {
                0 => "linear PCM",
                1 => "ADPCM",
                2 => "MP3",
                3 => "PCM little-endian",
                4..=6 => "Nellymoser",
                7 | 8 => "G.711",
                11 => "Speex",
                14 => "MP3 8 kHz",
                _ => "unknown",
            }
            .to_string(),
        )),
    }
}

/// An AAC frame is at most 6144 bits per channel (8 channels): anything larger is not AAC.
const MAX_AAC_FRAME: usize = 8 * 6144 / 8;

/// Checks that a frame is a sequence of length-prefixed NAL units that exactly fills it.
fn validate_nal_lengths(data: &[u8], length_size: u8) -> Result<(), FlvError> {
    let size = usize::from(length_size);
    let mut pos = 0usize;
    while pos < data.len() {
        let prefix = data
            .get(pos..pos + size)
            .ok_or_else(|| FlvError::MalformedFrame("truncated NAL length".into()))?;
        let len = prefix
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        pos += size;
        if len == 0 || len > data.len() - pos {
            return Err(FlvError::MalformedFrame(format!(
                "NAL length {len} does not fit the remaining {} bytes",
                data.len() - pos
            )));
        }
        pos += len;
    }
    Ok(())
}

/// Counters the demuxer keeps for diagnostics.
#[derive(Debug, Default, Clone, Copy)]
pub struct DemuxStats {
    pub video_frames: u64,
    pub audio_frames: u64,
    /// Frames that arrived before their codec configuration.
    pub dropped_before_config: u64,
    pub clock_restarts: u64,
}

/// Turns one publisher's tags into media events on a normalized timeline.
#[derive(Debug, Default)]
pub struct FlvDemuxer {
    clock: TimestampNormalizer,
    video: Option<Arc<VideoConfig>>,
    audio: Option<Arc<AudioConfig>>,
    stats: DemuxStats,
}

impl FlvDemuxer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> DemuxStats {
        DemuxStats {
            clock_restarts: self.clock.restarts(),
            ..self.stats
        }
    }

    pub fn video_config(&self) -> Option<&Arc<VideoConfig>> {
        self.video.as_ref()
    }

    pub fn audio_config(&self) -> Option<&Arc<AudioConfig>> {
        self.audio.as_ref()
    }

    pub fn video(&mut self, body: &Bytes, raw_ms: u32) -> Result<Option<MediaEvent>, FlvError> {
        match parse_video_tag(body)? {
            VideoTag::SequenceHeader(codec, record) => {
                if self
                    .video
                    .as_ref()
                    .is_some_and(|v| v.codec == codec && v.record == record)
                {
                    return Ok(None); // repeated header, nothing changed
                }
                let config = Arc::new(match codec {
                    VideoCodec::Hevc => VideoConfig::hevc(&record)?,
                    VideoCodec::Av1 => VideoConfig::av1(&record)?,
                    _ => VideoConfig::h264(&record)?,
                });
                self.video = Some(config.clone());
                Ok(Some(MediaEvent::VideoConfig(config)))
            }
            VideoTag::Frame {
                keyframe,
                composition_ms,
                data,
            } => {
                let ms = self.clock.normalize(raw_ms);
                let Some(config) = &self.video else {
                    self.stats.dropped_before_config += 1;
                    return Ok(None);
                };
                if data.is_empty() {
                    return Ok(None);
                }
                match config.codec {
                    VideoCodec::Av1 => {
                        if !av1::is_well_formed(&data) {
                            return Err(FlvError::MalformedFrame(
                                "AV1 frame is not a sequence of sized OBUs".into(),
                            ));
                        }
                    }
                    _ => validate_nal_lengths(&data, config.nal_length_size)?,
                }
                self.stats.video_frames += 1;
                let ticks = i64::from(VIDEO_TIMESCALE / 1000);
                Ok(Some(MediaEvent::Packet(Packet {
                    track: TrackKind::Video,
                    dts: ms * ticks,
                    pts: (ms + i64::from(composition_ms)) * ticks,
                    keyframe,
                    data,
                })))
            }
            VideoTag::EndOfSequence | VideoTag::Ignored => Ok(None),
        }
    }

    pub fn audio(&mut self, body: &Bytes, raw_ms: u32) -> Result<Option<MediaEvent>, FlvError> {
        match parse_audio_tag(body)? {
            AudioTag::SequenceHeader(asc) => {
                if self.audio.as_ref().is_some_and(|a| a.record == asc) {
                    return Ok(None);
                }
                let config = Arc::new(AudioConfig::aac(&asc)?);
                self.audio = Some(config.clone());
                Ok(Some(MediaEvent::AudioConfig(config)))
            }
            AudioTag::Frame(data) => {
                let ms = self.clock.normalize(raw_ms);
                let Some(config) = &self.audio else {
                    self.stats.dropped_before_config += 1;
                    return Ok(None);
                };
                if data.is_empty() {
                    return Ok(None);
                }
                if data.len() > MAX_AAC_FRAME {
                    return Err(FlvError::MalformedFrame(format!(
                        "{}-byte AAC frame (at most {MAX_AAC_FRAME})",
                        data.len()
                    )));
                }
                self.stats.audio_frames += 1;
                let ts = ms * i64::from(config.sample_rate) / 1000;
                Ok(Some(MediaEvent::Packet(Packet {
                    track: TrackKind::Audio,
                    dts: ts,
                    pts: ts,
                    keyframe: true,
                    data,
                })))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::avc::tests::AVCC_640X360_HIGH;

    fn avc_header() -> Bytes {
        let mut b = vec![0x17, 0x00, 0, 0, 0];
        b.extend_from_slice(AVCC_640X360_HIGH);
        Bytes::from(b)
    }

    fn avc_frame(key: bool, cts: i32, nal: &[u8]) -> Bytes {
        let c = cts.to_be_bytes();
        let mut b = vec![if key { 0x17 } else { 0x27 }, 0x01, c[1], c[2], c[3]];
        b.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        b.extend_from_slice(nal);
        Bytes::from(b)
    }

    #[test]
    fn avc_sequence_header_and_frames_with_composition_offset() {
        let mut d = FlvDemuxer::new();
        let ev = d.video(&avc_header(), 1000).unwrap();
        match ev {
            Some(MediaEvent::VideoConfig(c)) => assert_eq!((c.width, c.height), (640, 360)),
            other => panic!("{other:?}"),
        }
        // A repeated identical header is not re-announced.
        assert_eq!(d.video(&avc_header(), 1000).unwrap(), None);
        let key = d.video(&avc_frame(true, 66, &[0x65, 1, 2]), 1000).unwrap();
        let Some(MediaEvent::Packet(p)) = key else {
            panic!()
        };
        assert!(p.keyframe);
        assert_eq!((p.dts, p.pts), (0, 66 * 90));
        assert_eq!(&p.data[..], &[0, 0, 0, 3, 0x65, 1, 2]);
        let b = d.video(&avc_frame(false, -33, &[0x41, 9]), 1033).unwrap();
        let Some(MediaEvent::Packet(p)) = b else {
            panic!()
        };
        assert!(!p.keyframe);
        assert_eq!((p.dts, p.pts), (33 * 90, 0));
    }

    #[test]
    fn aac_header_and_frames() {
        let mut d = FlvDemuxer::new();
        // Frame before config is dropped, not an error.
        assert_eq!(
            d.audio(&Bytes::from_static(&[0xaf, 1, 0x21]), 0).unwrap(),
            None
        );
        let ev = d
            .audio(&Bytes::from_static(&[0xaf, 0, 0x11, 0x90]), 0)
            .unwrap();
        assert!(matches!(ev, Some(MediaEvent::AudioConfig(ref c)) if c.sample_rate == 48000));
        let ev = d
            .audio(&Bytes::from_static(&[0xaf, 1, 0x21, 0x10]), 21)
            .unwrap();
        let Some(MediaEvent::Packet(p)) = ev else {
            panic!()
        };
        assert_eq!(p.track, TrackKind::Audio);
        assert_eq!(p.dts, 21 * 48);
        assert_eq!(&p.data[..], &[0x21, 0x10]);
        assert_eq!(d.stats().dropped_before_config, 1);
    }

    #[test]
    fn enhanced_rtmp_avc1_is_read() {
        let mut body = vec![0x80 | 0x10, b'a', b'v', b'c', b'1'];
        body.extend_from_slice(AVCC_640X360_HIGH);
        let mut d = FlvDemuxer::new();
        assert!(matches!(
            d.video(&Bytes::from(body), 0).unwrap(),
            Some(MediaEvent::VideoConfig(_))
        ));
        // CodedFramesX: no composition time.
        let body = vec![0x80 | 0x10 | 3, b'a', b'v', b'c', b'1', 0, 0, 0, 1, 0x65];
        let Some(MediaEvent::Packet(p)) = d.video(&Bytes::from(body), 40).unwrap() else {
            panic!()
        };
        assert!(p.keyframe && p.dts == p.pts);
    }

    #[test]
    fn enhanced_rtmp_hevc_is_read_with_composition_time() {
        let mut d = FlvDemuxer::new();
        let mut body = vec![0x80 | 0x10, b'h', b'v', b'c', b'1'];
        body.extend_from_slice(crate::media::hevc::tests::HVCC_426X240);
        let Some(MediaEvent::VideoConfig(c)) = d.video(&Bytes::from(body), 0).unwrap() else {
            panic!()
        };
        assert_eq!((c.codec, c.width, c.height), (VideoCodec::Hevc, 426, 240));
        // CodedFrames: SI24 composition time (66 ms), then length-prefixed NAL units.
        let body = vec![
            0x80 | 0x10 | 1,
            b'h',
            b'v',
            b'c',
            b'1',
            0,
            0,
            66,
            0,
            0,
            0,
            2,
            0x26,
            1,
        ];
        let Some(MediaEvent::Packet(p)) = d.video(&Bytes::from(body), 40).unwrap() else {
            panic!()
        };
        assert!(p.keyframe);
        assert_eq!(p.pts - p.dts, 66 * 90);
        assert_eq!(&p.data[..], &[0, 0, 0, 2, 0x26, 1]);
        let bad = vec![
            0x80 | 0x20 | 1,
            b'h',
            b'v',
            b'c',
            b'1',
            0,
            0,
            0,
            0,
            0,
            0,
            9,
            1,
        ];
        assert!(matches!(
            d.video(&Bytes::from(bad), 80),
            Err(FlvError::MalformedFrame(_))
        ));
    }

    #[test]
    fn enhanced_rtmp_av1_is_read_without_composition_time() {
        let mut d = FlvDemuxer::new();
        let mut body = vec![0x80 | 0x10, b'a', b'v', b'0', b'1'];
        body.extend_from_slice(crate::media::av1::tests::AV1C_426X240);
        let Some(MediaEvent::VideoConfig(c)) = d.video(&Bytes::from(body), 0).unwrap() else {
            panic!()
        };
        assert_eq!((c.codec, c.width, c.height), (VideoCodec::Av1, 426, 240));
        // CodedFrames for AV1 carry OBUs right after the FourCC (a temporal delimiter here).
        let body = vec![0x80 | 0x10 | 1, b'a', b'v', b'0', b'1', 0x12, 0x00];
        let Some(MediaEvent::Packet(p)) = d.video(&Bytes::from(body), 0).unwrap() else {
            panic!()
        };
        assert_eq!((p.dts, p.pts), (0, 0));
        assert_eq!(&p.data[..], &[0x12, 0x00]);
        let no_size = vec![0x80 | 0x20 | 1, b'a', b'v', b'0', b'1', 0x10];
        assert!(matches!(
            d.video(&Bytes::from(no_size), 33),
            Err(FlvError::MalformedFrame(_))
        ));
    }

    #[test]
    fn unsupported_codecs_are_named() {
        let vp9 = Bytes::from_static(&[0x90, b'v', b'p', b'0', b'9', 1, 2, 3]);
        let err = parse_video_tag(&vp9).unwrap_err();
        assert!(err.to_string().contains("VP9"), "{err}");
        let unknown = Bytes::from_static(&[0x90, b'x', b'y', b'z', b'w']);
        assert!(parse_video_tag(&unknown)
            .unwrap_err()
            .to_string()
            .contains("xyzw"));
        let legacy_hevc = Bytes::from_static(&[0x1c, 0, 0, 0, 0]);
        assert!(matches!(
            parse_video_tag(&legacy_hevc),
            Err(FlvError::UnsupportedVideoCodec(_))
        ));
        let mp3 = Bytes::from_static(&[0x2f, 0xff]);
        assert!(parse_audio_tag(&mp3)
            .unwrap_err()
            .to_string()
            .contains("MP3"));
        let opus = Bytes::from_static(&[0x90, b'O', b'p', b'u', b's']);
        assert!(parse_audio_tag(&opus)
            .unwrap_err()
            .to_string()
            .contains("Opus"));
    }

    #[test]
    fn malformed_input_is_an_error() {
        let mut d = FlvDemuxer::new();
        assert!(d.video(&Bytes::new(), 0).is_err());
        assert!(d.video(&Bytes::from_static(&[0x17, 0]), 0).is_err());
        assert!(d
            .video(&Bytes::from_static(&[0x17, 0, 0, 0, 0, 1]), 0)
            .is_err());
        d.video(&avc_header(), 0).unwrap();
        // NAL length pointing past the end.
        let bad = Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 9, 0x65]);
        assert!(matches!(d.video(&bad, 0), Err(FlvError::MalformedFrame(_))));
        assert!(d.audio(&Bytes::from_static(&[0xaf]), 0).is_err());
        assert!(d.audio(&Bytes::from_static(&[0xaf, 0, 0x00]), 0).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_tags_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
                                      ts in proptest::prelude::any::<u32>()) {
            let mut d = FlvDemuxer::new();
            let _ = d.video(&avc_header(), 0);
            let b = Bytes::from(body);
            let _ = d.video(&b, ts);
            let _ = d.audio(&b, ts);
        }
    }
}
