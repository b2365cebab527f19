//! AAC AudioSpecificConfig through `AudioConfig::aac` (read by hand, bit by bit).
//!
//! Contract: no panic; an accepted config has a nonzero sample rate, 1 to 8 channels, 1024
//! samples a frame and an `mp4a.40.N` codec string.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livegate::media::{AudioCodec, AudioConfig};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = AudioConfig::aac(data) {
        assert_eq!(c.codec, AudioCodec::Aac);
        assert!(c.sample_rate > 0 && c.sample_rate < 1 << 24);
        assert!((1..=8).contains(&c.channels));
        assert_eq!(c.frame_samples, 1024);
        assert!(c.codec_string().starts_with("mp4a.40."));
        assert_eq!(&c.record[..], data);
    }
});
