//! H.264 sequence parameter sets as they arrive in-band (Annex B, from a decoder's point of
//! view) or in a sequence header: the input is one SPS NAL unit (header byte forced to type 7),
//! wrapped with a fixed PPS into an `avcC` by `annexb::avcc_record` and read by
//! `VideoConfig::h264`, so the mutations go straight into the SPS fields (profile, VUI, cropping,
//! sizes).
//!
//! Contract: no panic; an accepted SPS gives a picture within the size limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livegate::media::annexb;
use livegate::media::codec::MAX_DIMENSION;
use livegate::media::VideoConfig;

/// The PPS of the 640x360 High fixture.
const PPS: [u8; 6] = [0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 || data.len() > 4096 {
        return;
    }
    let mut annex_b = vec![0, 0, 0, 1, 0x67];
    annex_b.extend_from_slice(&data[1..]);
    annex_b.extend_from_slice(&[0, 0, 0, 1]);
    annex_b.extend_from_slice(&PPS);
    let Some(record) = annexb::avcc_record(&annex_b) else {
        return;
    };
    if let Ok(c) = VideoConfig::h264(&record) {
        assert!((1..=MAX_DIMENSION).contains(&c.width));
        assert!((1..=MAX_DIMENSION).contains(&c.height));
        assert_eq!(c.nal_length_size, 4);
    }
});
