//! The codecs livegate knows, each with its configuration record and the one payload format a
//! [`Packet`](super::Packet) of that codec carries. Every producer (RTMP, WHIP, the ladder)
//! converts to these formats, so consumers never look at where a packet came from.

use bytes::Bytes;

use super::CodecError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// Payload: length-prefixed NAL units (size from the avcC), no parameter sets required
    /// in-band. Record: AVCDecoderConfigurationRecord (`avcC`).
    H264,
    /// Payload: length-prefixed NAL units (size from the hvcC). Record: HEVC
    /// DecoderConfigurationRecord (`hvcC`).
    Hevc,
    /// Payload: one temporal unit of OBUs in the low-overhead format (each with `obu_size`), as
    /// in ISOBMFF `av01` samples. Record: AV1CodecConfigurationRecord (`av1C`).
    Av1,
    /// Payload: one whole frame. No record (the size comes from the keyframe header).
    Vp8,
    /// Payload: one whole frame (a superframe where the encoder made one). No record needed.
    Vp9,
}

impl VideoCodec {
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::H264 => "H.264",
            VideoCodec::Hevc => "HEVC",
            VideoCodec::Av1 => "AV1",
            VideoCodec::Vp8 => "VP8",
            VideoCodec::Vp9 => "VP9",
        }
    }

    /// Whether CMAF HLS (and so passthrough, and the RTMP relays) can carry it as is: only H.264
    /// today. Anything else is served through the ladder.
    pub fn passes_through(self) -> bool {
        self == VideoCodec::H264
    }
}

impl std::fmt::Display for VideoCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    /// Payload: one raw AAC frame (no ADTS header). Record: AudioSpecificConfig.
    Aac,
    /// Payload: one Opus packet. Record: the `OpusHead` identification header (RFC 7845 §5.1).
    Opus,
}

impl AudioCodec {
    pub fn name(self) -> &'static str {
        match self {
            AudioCodec::Aac => "AAC",
            AudioCodec::Opus => "Opus",
        }
    }

    /// Whether CMAF HLS passthrough and the RTMP relays carry it as is: only AAC.
    pub fn passes_through(self) -> bool {
        self == AudioCodec::Aac
    }
}

impl std::fmt::Display for AudioCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A video track's configuration: what a decoder needs before the first frame.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoConfig {
    pub codec: VideoCodec,
    /// The codec's configuration record as received (`avcC`, `hvcC`, `av1C`; empty for VP8/VP9).
    pub record: Bytes,
    pub width: u32,
    pub height: u32,
    /// From the bitstream's timing info, when the encoder wrote it.
    pub fps: Option<f64>,
    /// Bytes of the length prefix before each NAL unit (H.264/HEVC: 1, 2 or 4; 0 otherwise).
    pub nal_length_size: u8,
    /// RFC 6381 `CODECS` value, e.g. `avc1.64001f`.
    pub(super) rfc6381: String,
    /// Every keyframe carries what a decoder needs in-band (VP8/VP9 headers; H.264 parameter
    /// sets kept in the payload, as WebRTC sends them), so a decoder already open follows a new
    /// configuration of the same codec (a resolution change) without being reopened.
    pub inband_parameters: bool,
}

/// Sizes beyond this are refused at parse: no encoder livegate serves makes them, and a decoder
/// allocating for one costs gigabytes per stream.
pub const MAX_DIMENSION: u32 = 16384;

impl VideoConfig {
    /// RFC 6381 codec string from the actual parameters, e.g. `avc1.64001f`.
    pub fn codec_string(&self) -> String {
        self.rfc6381.clone()
    }

    /// A codec without an out-of-band record (VP8, VP9), sized from its first keyframe.
    pub fn from_frame_size(
        codec: VideoCodec,
        width: u32,
        height: u32,
    ) -> Result<VideoConfig, CodecError> {
        check_size(codec, width, height)?;
        let rfc6381 = match codec {
            VideoCodec::Vp8 => "vp8".to_string(),
            VideoCodec::Vp9 => "vp09.00.10.08".to_string(),
            other => {
                return Err(CodecError::Invalid(
                    other,
                    "needs its configuration record".into(),
                ))
            }
        };
        Ok(VideoConfig {
            inband_parameters: false,
            codec,
            record: Bytes::new(),
            width,
            height,
            fps: None,
            nal_length_size: 0,
            rfc6381,
        })
    }
}

/// The picture size declared by the first in-band SPS of a frame (H.264, HEVC: length-prefixed
/// NAL units), if it carries a readable one. A decoder follows in-band parameter sets, so a
/// frame can change the picture size without a new configuration record.
pub fn inband_sps_size(config: &VideoConfig, data: &[u8]) -> Option<(u32, u32)> {
    let n = usize::from(config.nal_length_size);
    if !(1..=4).contains(&n) {
        return None;
    }
    let mut at = 0usize;
    while at.checked_add(n)? <= data.len() {
        let len = data[at..at + n]
            .iter()
            .fold(0usize, |a, &b| a << 8 | usize::from(b));
        at += n;
        let nal = data.get(at..at.checked_add(len)?)?;
        at += len;
        let Some(&head) = nal.first() else { continue };
        match config.codec {
            VideoCodec::H264 if head & 0x1f == 7 => return super::avc::sps_size(nal),
            VideoCodec::Hevc if (head >> 1) & 0x3f == 33 => return super::hevc::sps_size(nal),
            _ => {}
        }
    }
    None
}

pub(super) fn check_size(codec: VideoCodec, width: u32, height: u32) -> Result<(), CodecError> {
    if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(CodecError::Invalid(
            codec,
            format!("implausible size {width}x{height}"),
        ));
    }
    Ok(())
}

/// An audio track's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioConfig {
    pub codec: AudioCodec,
    /// The configuration record as received (AudioSpecificConfig, OpusHead).
    pub record: Bytes,
    pub sample_rate: u32,
    pub channels: u8,
    /// Samples per coded frame at `sample_rate`: 1024 for AAC-LC; Opus frames vary (2.5–120 ms),
    /// so for Opus this is the common 20 ms and durations come from timestamps.
    pub frame_samples: u32,
    /// RFC 6381 `CODECS` value, e.g. `mp4a.40.2`.
    pub(super) rfc6381: String,
}

impl AudioConfig {
    pub fn codec_string(&self) -> String {
        self.rfc6381.clone()
    }
}
