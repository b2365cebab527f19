//! AAC AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1). Parsed by hand: it is a dozen bits, and
//! the crates that cover it come with a whole demuxer attached.

use bytes::Bytes;

use super::CodecError;

const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioConfig {
    /// The AudioSpecificConfig as received (goes into the MP4 `esds`).
    pub asc: Bytes,
    /// Audio object type (2 = AAC-LC, 5 = HE-AAC/SBR, 29 = HE-AACv2).
    pub object_type: u8,
    pub sample_rate: u32,
    pub channels: u8,
    /// Samples per coded frame at `sample_rate` (1024 for AAC-LC).
    pub frame_samples: u32,
}

impl AudioConfig {
    pub fn parse(asc: &[u8]) -> Result<AudioConfig, CodecError> {
        let mut bits = BitReader::new(asc);
        let err = |m: &str| CodecError::Aac(m.to_string());
        let mut object_type = bits.read(5).ok_or_else(|| err("too short"))? as u8;
        if object_type == 31 {
            object_type = 32 + bits.read(6).ok_or_else(|| err("too short"))? as u8;
        }
        if object_type == 0 {
            return Err(err("object type 0 is invalid"));
        }
        let freq_index = bits.read(4).ok_or_else(|| err("too short"))?;
        let sample_rate = if freq_index == 15 {
            bits.read(24).ok_or_else(|| err("too short"))?
        } else {
            *SAMPLE_RATES
                .get(freq_index as usize)
                .ok_or_else(|| err("reserved sampling frequency index"))?
        };
        if sample_rate == 0 {
            return Err(err("sampling frequency 0"));
        }
        let channel_config = bits.read(4).ok_or_else(|| err("too short"))? as u8;
        // Channel configuration 0 means "defined in a program config element"; treat as stereo,
        // the only common case, rather than refusing the stream.
        let channels = match channel_config {
            0 => 2,
            7 => 8,
            n @ 1..=6 => n,
            _ => return Err(err("reserved channel configuration")),
        };
        Ok(AudioConfig {
            asc: Bytes::copy_from_slice(asc),
            object_type,
            sample_rate,
            channels,
            frame_samples: 1024,
        })
    }

    /// RFC 6381 codec string, e.g. `mp4a.40.2`.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }
}

/// MSB-first bit reader over a byte slice; returns None past the end instead of panicking.
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    fn read(&mut self, count: u32) -> Option<u32> {
        let mut value = 0u32;
        for _ in 0..count {
            let byte = *self.data.get(self.pos / 8)?;
            let bit = (byte >> (7 - (self.pos % 8))) & 1;
            value = (value << 1) | u32::from(bit);
            self.pos += 1;
        }
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aac_lc_48k_stereo() {
        // 00010 0011 0010 000 → AOT 2, index 3 (48 kHz), 2 channels.
        let c = AudioConfig::parse(&[0x11, 0x90]).unwrap();
        assert_eq!((c.object_type, c.sample_rate, c.channels), (2, 48000, 2));
        assert_eq!(c.codec_string(), "mp4a.40.2");
    }

    #[test]
    fn aac_lc_44k_mono() {
        let c = AudioConfig::parse(&[0x12, 0x08]).unwrap();
        assert_eq!((c.object_type, c.sample_rate, c.channels), (2, 44100, 1));
    }

    #[test]
    fn explicit_frequency_and_escape() {
        // AOT 31 escape → 32 + 0 = 32? Use AOT 2 with explicit 24-bit frequency 22050.
        // 00010 1111 000000000101011000100010 0001 ...
        let mut bits: u64 = 0;
        let mut n = 0;
        for (v, w) in [(2u64, 5), (15, 4), (22050, 24), (1, 4)] {
            bits = (bits << w) | v;
            n += w;
        }
        bits <<= 64 - n;
        let bytes = bits.to_be_bytes();
        let c = AudioConfig::parse(&bytes[..5]).unwrap();
        assert_eq!((c.sample_rate, c.channels), (22050, 1));
    }

    #[test]
    fn malformed_is_an_error() {
        assert!(AudioConfig::parse(&[]).is_err());
        assert!(AudioConfig::parse(&[0x10]).is_err());
        assert!(AudioConfig::parse(&[0x00, 0x00]).is_err());
        assert!(AudioConfig::parse(&[0x16, 0x80]).is_err()); // reserved index 13
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16)) {
            let _ = AudioConfig::parse(&data);
        }
    }
}
