//! Opus `OpusHead` (RFC 7845 §5.1) through `AudioConfig::opus`.
//!
//! Contract: no panic; an accepted header is 48 kHz with at least one channel, family 0 has at
//! most 2 channels, other families carry their whole mapping table.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livegate::media::{AudioCodec, AudioConfig};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = AudioConfig::opus(data) {
        assert_eq!(c.codec, AudioCodec::Opus);
        assert_eq!(c.sample_rate, 48_000);
        assert!(c.channels >= 1);
        assert_eq!(c.channels, data[9]);
        if data[18] == 0 {
            assert!(c.channels <= 2);
        } else {
            assert!(data.len() >= 21 + usize::from(c.channels));
        }
    }
    if let Some(&n) = data.first() {
        let _ = AudioConfig::opus_from_channels(n);
    }
});
