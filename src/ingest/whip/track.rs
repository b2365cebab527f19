//! Depacketized WebRTC frames → the hub's codec-neutral events (sans-IO). H.264 arrives as
//! Annex B with its parameter sets in-band (Chromium in a STAP-A with each keyframe, OBS as
//! separate packets): the configuration record is built from them, and they stay in the
//! payload so a decoder follows a resolution change without being reopened. VP8 and VP9 are
//! sized from their keyframe headers. Video waits for a keyframe at the start and after a loss
//! the jitter buffer could not repair.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::media::{
    annexb, vpx, AudioConfig, MediaEvent, Packet, TrackKind, VideoCodec, VideoConfig,
};

/// The codec of one depacketized frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCodec {
    H264,
    Vp8,
    Vp9,
    Opus,
}

/// One whole frame as the WebRTC stack hands it over, its time already on the stream clock.
#[derive(Debug)]
pub struct Frame<'a> {
    pub codec: FrameCodec,
    pub data: &'a [u8],
    pub time: i64,
    pub keyframe: bool,
    /// False after an RTP loss that was not repaired before this frame.
    pub contiguous: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrackError {
    #[error("{0}")]
    Config(String),
}

/// What the converter wants besides the events.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Wants {
    /// A keyframe is needed (start, or the picture is broken until one comes).
    pub keyframe: bool,
}

#[derive(Debug, Default)]
pub struct Tracks {
    video: Option<Arc<VideoConfig>>,
    audio: Option<Arc<AudioConfig>>,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    /// Dropping video until the next keyframe.
    broken: bool,
    pub video_frames: u64,
    pub audio_frames: u64,
    pub dropped_frames: u64,
}

impl Tracks {
    pub fn video_config(&self) -> Option<&Arc<VideoConfig>> {
        self.video.as_ref()
    }

    /// Converts one frame, appending what the hub should get to `out`.
    pub fn frame(&mut self, f: &Frame, out: &mut Vec<MediaEvent>) -> Result<Wants, TrackError> {
        match f.codec {
            FrameCodec::Opus => {
                self.audio_frame(f, out)?;
                Ok(Wants::default())
            }
            _ => self.video_frame(f, out),
        }
    }

    fn audio_frame(&mut self, f: &Frame, out: &mut Vec<MediaEvent>) -> Result<(), TrackError> {
        if f.data.is_empty() {
            return Ok(()); // DTX / padding
        }
        if self.audio.is_none() {
            // Decoded as stereo: livegate offers `stereo=1`, and mono packets upmix.
            let config = AudioConfig::opus_from_channels(2)
                .map_err(|e| TrackError::Config(e.to_string()))?;
            let config = Arc::new(config);
            self.audio = Some(config.clone());
            out.push(MediaEvent::AudioConfig(config));
        }
        self.audio_frames += 1;
        out.push(MediaEvent::Packet(Packet {
            track: TrackKind::Audio,
            dts: f.time,
            pts: f.time,
            keyframe: true,
            data: Bytes::copy_from_slice(f.data),
        }));
        Ok(())
    }

    fn video_frame(&mut self, f: &Frame, out: &mut Vec<MediaEvent>) -> Result<Wants, TrackError> {
        let mut wants = Wants::default();
        if !f.contiguous && !f.keyframe {
            if !self.broken {
                tracing::debug!("video loss not repaired; waiting for a keyframe");
            }
            self.broken = true;
        }
        let (config, payload) = match f.codec {
            FrameCodec::H264 => self.h264(f)?,
            FrameCodec::Vp8 | FrameCodec::Vp9 => (self.vpx(f)?, Bytes::copy_from_slice(f.data)),
            FrameCodec::Opus => return Ok(wants),
        };
        if let Some(config) = config {
            let config = Arc::new(config);
            self.video = Some(config.clone());
            out.push(MediaEvent::VideoConfig(config));
        }
        if self.video.is_none() || (self.broken && !f.keyframe) {
            self.dropped_frames += 1;
            wants.keyframe = true;
            return Ok(wants);
        }
        if f.keyframe {
            self.broken = false;
        }
        self.video_frames += 1;
        out.push(MediaEvent::Packet(Packet {
            track: TrackKind::Video,
            dts: f.time,
            pts: f.time,
            keyframe: f.keyframe,
            data: payload,
        }));
        Ok(wants)
    }

    /// The new configuration (if the parameter sets changed) and the length-prefixed payload.
    fn h264(&mut self, f: &Frame) -> Result<(Option<VideoConfig>, Bytes), TrackError> {
        let mut payload = BytesMut::with_capacity(f.data.len() + 16);
        let mut idr = false;
        for nal in annexb::nal_units(f.data) {
            match nal[0] & 0x1f {
                7 => self.sps = Some(Bytes::copy_from_slice(nal)),
                8 => self.pps = Some(Bytes::copy_from_slice(nal)),
                5 => idr = true,
                _ => {}
            }
            payload.put_u32(nal.len() as u32);
            payload.put_slice(nal);
        }
        let mut config = None;
        if idr {
            if let (Some(sps), Some(pps)) = (&self.sps, &self.pps) {
                let mut sets = Vec::with_capacity(sps.len() + pps.len() + 8);
                for set in [sps, pps] {
                    sets.extend_from_slice(&[0, 0, 0, 1]);
                    sets.extend_from_slice(set);
                }
                let record = annexb::avcc_record(&sets)
                    .ok_or_else(|| TrackError::Config("H.264 parameter sets unreadable".into()))?;
                if self.video.as_ref().is_none_or(|v| v.record != record) {
                    let mut c = VideoConfig::h264(&record)
                        .map_err(|e| TrackError::Config(e.to_string()))?;
                    c.inband_parameters = true;
                    config = Some(c);
                }
            }
        }
        Ok((config, payload.freeze()))
    }

    /// A new configuration when a keyframe declares a new size (or the first one).
    fn vpx(&mut self, f: &Frame) -> Result<Option<VideoConfig>, TrackError> {
        if !f.keyframe {
            return Ok(None);
        }
        let (codec, size) = match f.codec {
            FrameCodec::Vp8 => (VideoCodec::Vp8, vpx::vp8_keyframe_size(f.data)),
            _ => match vpx::vp9_keyframe_size(f.data) {
                Some((0, w, h)) => (VideoCodec::Vp9, Some((w, h))),
                Some((profile, ..)) => {
                    return Err(TrackError::Config(format!(
                        "VP9 profile {profile} (only profile 0 is served)"
                    )))
                }
                None => (VideoCodec::Vp9, None),
            },
        };
        let Some((w, h)) = size else {
            return Ok(None);
        };
        if self
            .video
            .as_ref()
            .is_some_and(|v| v.codec == codec && (v.width, v.height) == (w, h))
        {
            return Ok(None);
        }
        let mut c = VideoConfig::from_frame_size(codec, w, h)
            .map_err(|e| TrackError::Config(e.to_string()))?;
        c.inband_parameters = true;
        Ok(Some(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chromium's H.264 keyframe shape: SPS, PPS and IDR in one frame (a STAP-A, depacketized).
    fn h264_key() -> Vec<u8> {
        let record = crate::media::avc::tests::AVCC_640X360_HIGH;
        let sps = &record[8..8 + 0x1a];
        let pps = &record[8 + 0x1a + 3..];
        let mut v = Vec::new();
        for nal in [sps, pps, &[0x65, 0x88, 0x84, 0x00][..]] {
            v.extend_from_slice(&[0, 0, 0, 1]);
            v.extend_from_slice(nal);
        }
        v
    }

    fn frame(codec: FrameCodec, data: &[u8], time: i64, keyframe: bool) -> Frame<'_> {
        Frame {
            codec,
            data,
            time,
            keyframe,
            contiguous: true,
        }
    }

    #[test]
    fn h264_waits_for_a_keyframe_then_configures_once() {
        let mut t = Tracks::default();
        let mut out = Vec::new();
        let p = [0, 0, 0, 1, 0x41, 0x9a, 0x00];
        assert!(
            t.frame(&frame(FrameCodec::H264, &p, 0, false), &mut out)
                .unwrap()
                .keyframe
        );
        assert!(out.is_empty());
        let key = h264_key();
        t.frame(&frame(FrameCodec::H264, &key, 3000, true), &mut out)
            .unwrap();
        let MediaEvent::VideoConfig(c) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!((c.width, c.height, c.inband_parameters), (640, 360, true));
        let MediaEvent::Packet(pk) = &out[1] else {
            panic!()
        };
        // Parameter sets stay in-band, length-prefixed.
        assert_eq!(&pk.data[..5], &[0, 0, 0, 0x1a, 0x67]);
        assert!(pk.keyframe && pk.pts == 3000);
        out.clear();
        t.frame(&frame(FrameCodec::H264, &key, 6000, true), &mut out)
            .unwrap();
        assert_eq!(out.len(), 1, "same parameter sets: no new configuration");
    }

    #[test]
    fn loss_drops_video_until_the_next_keyframe() {
        let mut t = Tracks::default();
        let mut out = Vec::new();
        let key = [
            0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01, 0,
        ];
        let inter = [0x51, 0x42, 0x00, 1, 2, 3];
        t.frame(&frame(FrameCodec::Vp8, &key, 0, true), &mut out)
            .unwrap();
        assert_eq!(out.len(), 2);
        let mut lost = frame(FrameCodec::Vp8, &inter, 3000, false);
        lost.contiguous = false;
        assert!(t.frame(&lost, &mut out).unwrap().keyframe);
        assert!(
            t.frame(&frame(FrameCodec::Vp8, &inter, 6000, false), &mut out)
                .unwrap()
                .keyframe
        );
        assert_eq!(out.len(), 2);
        t.frame(&frame(FrameCodec::Vp8, &key, 9000, true), &mut out)
            .unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(t.dropped_frames, 2);
    }

    #[test]
    fn a_new_vp8_size_is_a_new_configuration() {
        let mut t = Tracks::default();
        let mut out = Vec::new();
        let k640 = [0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
        let k320 = [0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
        t.frame(&frame(FrameCodec::Vp8, &k640, 0, true), &mut out)
            .unwrap();
        t.frame(&frame(FrameCodec::Vp8, &k320, 3000, true), &mut out)
            .unwrap();
        let sizes: Vec<_> = out
            .iter()
            .filter_map(|e| match e {
                MediaEvent::VideoConfig(c) => Some((c.width, c.height)),
                _ => None,
            })
            .collect();
        assert_eq!(sizes, [(640, 480), (320, 240)]);
    }

    #[test]
    fn opus_configures_stereo_once() {
        let mut t = Tracks::default();
        let mut out = Vec::new();
        t.frame(&frame(FrameCodec::Opus, &[0xfc, 1, 2], 960, true), &mut out)
            .unwrap();
        t.frame(
            &frame(FrameCodec::Opus, &[0xfc, 1, 2], 1920, true),
            &mut out,
        )
        .unwrap();
        t.frame(&frame(FrameCodec::Opus, &[], 2880, true), &mut out)
            .unwrap();
        assert!(matches!(&out[0], MediaEvent::AudioConfig(a) if a.channels == 2));
        assert_eq!(out.len(), 3);
    }
}
