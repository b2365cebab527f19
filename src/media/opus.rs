//! Opus identification header (`OpusHead`, RFC 7845 §5.1): the channel count and pre-skip a
//! decoder needs. WebRTC sessions describe Opus in SDP instead; they build the same header.

use bytes::Bytes;

use super::codec::{AudioCodec, AudioConfig};
use super::CodecError;

/// Opus always decodes at 48 kHz, whatever rate the encoder was fed.
pub const OPUS_RATE: u32 = 48_000;

impl AudioConfig {
    /// An Opus track from its `OpusHead`.
    pub fn opus(head: &[u8]) -> Result<AudioConfig, CodecError> {
        let err = |m: &str| CodecError::InvalidAudio(AudioCodec::Opus, m.to_string());
        if head.len() < 19 {
            return Err(err("OpusHead shorter than 19 bytes"));
        }
        if &head[..8] != b"OpusHead" {
            return Err(err("no OpusHead magic"));
        }
        if head[8] & 0xf0 != 0 {
            return Err(err("unsupported OpusHead major version"));
        }
        let channels = head[9];
        if channels == 0 {
            return Err(err("zero channels"));
        }
        if head[18] == 0 && channels > 2 {
            return Err(err("channel mapping family 0 allows at most 2 channels"));
        }
        // Other families carry a mapping table: stream count, coupled count, one byte a channel.
        if head[18] != 0 && head.len() < 21 + usize::from(channels) {
            return Err(err("OpusHead shorter than its channel mapping table"));
        }
        Ok(AudioConfig {
            codec: AudioCodec::Opus,
            record: Bytes::copy_from_slice(head),
            sample_rate: OPUS_RATE,
            channels,
            frame_samples: OPUS_RATE / 50,
            rfc6381: "opus".to_string(),
        })
    }

    /// The `OpusHead` for a stream described out of band (SDP): family 0, no pre-skip.
    pub fn opus_from_channels(channels: u8) -> Result<AudioConfig, CodecError> {
        let mut head = b"OpusHead".to_vec();
        head.extend_from_slice(&[1, channels, 0, 0]);
        head.extend_from_slice(&OPUS_RATE.to_le_bytes());
        head.extend_from_slice(&[0, 0, 0]);
        AudioConfig::opus(&head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stereo_head() {
        let c = AudioConfig::opus_from_channels(2).unwrap();
        assert_eq!(
            (c.codec, c.sample_rate, c.channels),
            (AudioCodec::Opus, 48_000, 2)
        );
        assert_eq!(c.codec_string(), "opus");
        assert_eq!(c.record.len(), 19);
    }

    #[test]
    fn malformed_heads_are_errors() {
        assert!(AudioConfig::opus(b"OpusHead").is_err());
        let mut head = AudioConfig::opus_from_channels(1).unwrap().record.to_vec();
        head[0] = b'X';
        assert!(AudioConfig::opus(&head).is_err());
        assert!(AudioConfig::opus_from_channels(0).is_err());
        assert!(AudioConfig::opus_from_channels(6).is_err());
        let mut family1 = AudioConfig::opus_from_channels(2).unwrap().record.to_vec();
        family1[18] = 1;
        assert!(AudioConfig::opus(&family1).is_err(), "no mapping table");
        family1.extend_from_slice(&[1, 1, 0, 1]);
        assert!(AudioConfig::opus(&family1).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..32)) {
            let _ = AudioConfig::opus(&data);
        }
    }
}
