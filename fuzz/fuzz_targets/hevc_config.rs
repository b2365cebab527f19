//! HEVC `hvcC` (HEVCDecoderConfigurationRecord) through `VideoConfig::hevc`: the record's
//! arrays and the SPS size fields livegate reads itself.
//!
//! Contract: no panic; an accepted record has a size within the limit, a NAL length size of 1,
//! 2 or 4, an `hvc1.` codec string, and keeps the record as given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livegate::media::codec::MAX_DIMENSION;
use livegate::media::{VideoCodec, VideoConfig};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = VideoConfig::hevc(data) {
        assert_eq!(c.codec, VideoCodec::Hevc);
        assert!((1..=MAX_DIMENSION).contains(&c.width));
        assert!((1..=MAX_DIMENSION).contains(&c.height));
        assert!(matches!(c.nal_length_size, 1 | 2 | 4));
        assert!(c.codec_string().starts_with("hvc1."));
        assert_eq!(&c.record[..], data);
    }
});
