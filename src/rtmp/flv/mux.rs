//! Sans-IO: the hub's codec-neutral events back into FLV tag bodies for an RTMP push, starting
//! at a keyframe with the codec configuration and with timestamps rebased to zero.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::media::{AudioConfig, MediaEvent, Packet, TrackKind, VideoConfig, VIDEO_TIMESCALE};

/// One tag to send: audio or video data and its RTMP timestamp (ms).
#[derive(Debug, Clone, PartialEq)]
pub enum OutTag {
    Video {
        ts: u32,
        body: Bytes,
        keyframe: bool,
    },
    Audio {
        ts: u32,
        body: Bytes,
    },
}

impl OutTag {
    pub fn len(&self) -> usize {
        match self {
            OutTag::Video { body, .. } | OutTag::Audio { body, .. } => body.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// FLV AVC codec id 7, AAC sound format 10 (the header byte 0xAF: AAC, 44 kHz, 16-bit, stereo
/// is what every FLV muxer writes for AAC; the real values are in the AudioSpecificConfig).
const AAC_HEADER: u8 = 0xAF;

pub fn avc_sequence_header(config: &VideoConfig) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + config.record.len());
    b.put_slice(&[0x17, 0x00, 0, 0, 0]);
    b.put_slice(&config.record);
    b.freeze()
}

pub fn avc_frame(keyframe: bool, composition_ms: i32, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + data.len());
    b.put_u8(if keyframe { 0x17 } else { 0x27 });
    b.put_u8(0x01);
    let cts = composition_ms.clamp(-(1 << 23), (1 << 23) - 1);
    b.put_slice(&cts.to_be_bytes()[1..]);
    b.put_slice(data);
    b.freeze()
}

pub fn aac_sequence_header(config: &AudioConfig) -> Bytes {
    let mut b = BytesMut::with_capacity(2 + config.record.len());
    b.put_slice(&[AAC_HEADER, 0x00]);
    b.put_slice(&config.record);
    b.freeze()
}

pub fn aac_frame(data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(2 + data.len());
    b.put_slice(&[AAC_HEADER, 0x01]);
    b.put_slice(data);
    b.freeze()
}

/// Turns a stream's events into tags for one RTMP connection. [`FlvMuxer::restart`] before each
/// (re)connection: the next tags then start with the configuration at the next keyframe.
#[derive(Default)]
pub struct FlvMuxer {
    video: Option<Arc<VideoConfig>>,
    audio: Option<Arc<AudioConfig>>,
    /// Stream time (ms) that maps to timestamp 0 on this connection.
    base_ms: Option<i64>,
    last_video_ts: u32,
    last_audio_ts: u32,
}

impl FlvMuxer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tracks configuration while not connected (media is not sent then).
    pub fn observe(&mut self, event: &MediaEvent) {
        match event {
            MediaEvent::VideoConfig(c) => self.video = Some(c.clone()),
            MediaEvent::AudioConfig(c) => self.audio = Some(c.clone()),
            _ => {}
        }
    }

    pub fn restart(&mut self) {
        self.base_ms = None;
        self.last_video_ts = 0;
        self.last_audio_ts = 0;
    }

    pub fn video_config(&self) -> Option<&Arc<VideoConfig>> {
        self.video.as_ref()
    }

    pub fn audio_config(&self) -> Option<&Arc<AudioConfig>> {
        self.audio.as_ref()
    }

    fn packet_ms(&self, p: &Packet) -> Option<(i64, i32)> {
        match p.track {
            TrackKind::Video => {
                let ticks = i64::from(VIDEO_TIMESCALE / 1000);
                Some((
                    p.dts.div_euclid(ticks),
                    ((p.pts - p.dts) / ticks).clamp(i32::MIN as i64, i32::MAX as i64) as i32,
                ))
            }
            TrackKind::Audio => {
                let rate = i64::from(self.audio.as_ref()?.sample_rate.max(1));
                Some((p.dts * 1000 / rate, 0))
            }
        }
    }

    fn ts(&self, ms: i64) -> u32 {
        // RTMP timestamps are 32-bit milliseconds and wrap (after 49.7 days).
        ms.saturating_sub(self.base_ms.unwrap_or(0)).max(0) as u64 as u32
    }

    pub fn push(&mut self, event: &MediaEvent) -> Vec<OutTag> {
        match event {
            MediaEvent::VideoConfig(c) => {
                self.video = Some(c.clone());
                if self.base_ms.is_some() {
                    // A change mid-connection: the new configuration goes out at once.
                    return vec![OutTag::Video {
                        ts: self.last_video_ts,
                        body: avc_sequence_header(c),
                        keyframe: true,
                    }];
                }
                Vec::new()
            }
            MediaEvent::AudioConfig(c) => {
                self.audio = Some(c.clone());
                if self.base_ms.is_some() {
                    return vec![OutTag::Audio {
                        ts: self.last_audio_ts,
                        body: aac_sequence_header(c),
                    }];
                }
                Vec::new()
            }
            MediaEvent::Packet(p) => self.packet(p),
            MediaEvent::End(_) => Vec::new(),
        }
    }

    fn packet(&mut self, p: &Packet) -> Vec<OutTag> {
        let Some((ms, composition)) = self.packet_ms(p) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if self.base_ms.is_none() {
            // Start at a video keyframe; without video, at any audio frame.
            let starts = match p.track {
                TrackKind::Video => p.keyframe && self.video.is_some(),
                TrackKind::Audio => self.video.is_none(),
            };
            if !starts {
                return out;
            }
            self.base_ms = Some(ms);
            if let Some(v) = &self.video {
                out.push(OutTag::Video {
                    ts: 0,
                    body: avc_sequence_header(v),
                    keyframe: true,
                });
            }
            if let Some(a) = &self.audio {
                out.push(OutTag::Audio {
                    ts: 0,
                    body: aac_sequence_header(a),
                });
            }
        }
        if ms < self.base_ms.unwrap_or(0) {
            // Audio from before the starting keyframe.
            return out;
        }
        let ts = self.ts(ms);
        match p.track {
            TrackKind::Video => self.last_video_ts = ts,
            TrackKind::Audio => self.last_audio_ts = ts,
        }
        out.push(match p.track {
            TrackKind::Video => OutTag::Video {
                ts,
                body: avc_frame(p.keyframe, composition, &p.data),
                keyframe: p.keyframe,
            },
            TrackKind::Audio => OutTag::Audio {
                ts,
                body: aac_frame(&p.data),
            },
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::avc::tests::AVCC_640X360_HIGH;
    use crate::rtmp::flv::demux::{parse_audio_tag, parse_video_tag, AudioTag, VideoTag};

    fn video() -> Arc<VideoConfig> {
        Arc::new(VideoConfig::h264(AVCC_640X360_HIGH).unwrap())
    }

    fn audio() -> Arc<AudioConfig> {
        Arc::new(AudioConfig::aac(&[0x11, 0x90]).unwrap())
    }

    fn packet(track: TrackKind, ms: i64, cts_ms: i64, keyframe: bool) -> MediaEvent {
        let (dts, pts) = match track {
            TrackKind::Video => (ms * 90, (ms + cts_ms) * 90),
            TrackKind::Audio => (ms * 48, ms * 48),
        };
        MediaEvent::Packet(Packet {
            track,
            dts,
            pts,
            keyframe,
            data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
        })
    }

    #[test]
    fn starts_at_a_keyframe_with_configuration_and_rebased_time() {
        let mut m = FlvMuxer::new();
        assert!(m.push(&MediaEvent::VideoConfig(video())).is_empty());
        assert!(m.push(&MediaEvent::AudioConfig(audio())).is_empty());
        // Joining mid-GOP: nothing until the keyframe.
        assert!(m.push(&packet(TrackKind::Video, 5000, 0, false)).is_empty());
        assert!(m.push(&packet(TrackKind::Audio, 5010, 0, false)).is_empty());
        let tags = m.push(&packet(TrackKind::Video, 5033, 66, true));
        assert_eq!(tags.len(), 3);
        match &tags[0] {
            OutTag::Video { ts: 0, body, .. } => {
                assert_eq!(
                    parse_video_tag(body).unwrap(),
                    VideoTag::SequenceHeader(
                        crate::media::VideoCodec::H264,
                        Bytes::from_static(AVCC_640X360_HIGH)
                    )
                );
            }
            other => panic!("{other:?}"),
        }
        match &tags[1] {
            OutTag::Audio { ts: 0, body } => assert_eq!(
                parse_audio_tag(body).unwrap(),
                AudioTag::SequenceHeader(Bytes::from_static(&[0x11, 0x90]))
            ),
            other => panic!("{other:?}"),
        }
        match &tags[2] {
            OutTag::Video {
                ts: 0,
                body,
                keyframe: true,
            } => assert_eq!(
                parse_video_tag(body).unwrap(),
                VideoTag::Frame {
                    keyframe: true,
                    composition_ms: 66,
                    data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
                }
            ),
            other => panic!("{other:?}"),
        }
        // Audio just before the keyframe is dropped; after it, time continues from zero.
        assert!(m.push(&packet(TrackKind::Audio, 5020, 0, false)).is_empty());
        assert_eq!(
            m.push(&packet(TrackKind::Audio, 5054, 0, false)),
            vec![OutTag::Audio {
                ts: 21,
                body: aac_frame(&[0, 0, 0, 1, 0x65])
            }]
        );
        // A reconnection starts over at the next keyframe, at zero again.
        m.restart();
        assert!(m.push(&packet(TrackKind::Video, 6000, 0, false)).is_empty());
        let tags = m.push(&packet(TrackKind::Video, 7000, 0, true));
        assert_eq!(tags.len(), 3);
        assert!(matches!(tags[2], OutTag::Video { ts: 0, .. }));
    }

    #[test]
    fn audio_only_starts_at_once() {
        let mut m = FlvMuxer::new();
        m.push(&MediaEvent::AudioConfig(audio()));
        let tags = m.push(&packet(TrackKind::Audio, 100, 0, false));
        assert_eq!(tags.len(), 2);
    }

    #[test]
    fn negative_composition_offsets_survive() {
        let body = avc_frame(false, -33, &[1, 2]);
        assert_eq!(
            parse_video_tag(&body).unwrap(),
            VideoTag::Frame {
                keyframe: false,
                composition_ms: -33,
                data: Bytes::from_static(&[1, 2])
            }
        );
    }
}
