//! H.264 `avcC` (AVCDecoderConfigurationRecord) through `VideoConfig::h264`, as carried in an
//! RTMP/Enhanced RTMP sequence header.
//!
//! Contract: no panic; an accepted record has a size within the limit, a NAL length size of 1,
//! 2 or 4, a plausible frame rate, an `avc1.PPCCLL` codec string, and keeps the record as given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livegate::media::codec::MAX_DIMENSION;
use livegate::media::{VideoCodec, VideoConfig};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = VideoConfig::h264(data) {
        assert_eq!(c.codec, VideoCodec::H264);
        assert!((1..=MAX_DIMENSION).contains(&c.width));
        assert!((1..=MAX_DIMENSION).contains(&c.height));
        assert!(matches!(c.nal_length_size, 1 | 2 | 4));
        assert!(c.fps.is_none_or(|f| f > 0.0 && f <= 480.0));
        let s = c.codec_string();
        assert!(s.starts_with("avc1.") && s.len() == 11, "{s}");
        assert_eq!(&c.record[..], data);
    }
});
