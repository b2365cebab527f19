//! AV1: the `av1C` record through `VideoConfig::av1` (its sequence header OBU read by hand), and
//! the OBU walker (`av1::obus`) and frame check (`av1::is_well_formed`) that every AV1 frame from
//! a publisher goes through.
//!
//! Contract: no panic; an accepted record has a size within the limit and an `av01.` string;
//! the walker never yields more payload than the input holds; a frame the check accepts is
//! walked to its end, every OBU with its size field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livegate::media::av1;
use livegate::media::codec::MAX_DIMENSION;
use livegate::media::{VideoCodec, VideoConfig};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = VideoConfig::av1(data) {
        assert_eq!(c.codec, VideoCodec::Av1);
        assert!((1..=MAX_DIMENSION).contains(&c.width));
        assert!((1..=MAX_DIMENSION).contains(&c.height));
        assert!(c.codec_string().starts_with("av01."));
        assert_eq!(&c.record[..], data);
    }

    let mut payload = 0usize;
    let mut count = 0usize;
    for (kind, body) in av1::obus(data) {
        assert!(kind < 16);
        payload += body.len();
        count += 1;
    }
    // Each OBU takes at least its header byte besides its payload.
    assert!(payload + count <= data.len());

    if av1::is_well_formed(data) {
        assert!(count > 0);
        // Sized OBUs that fill the frame: the walker consumes exactly the whole input, so
        // the headers (1-2 bytes) and size fields (1-8 bytes) account for the rest.
        assert!(data.len() - payload <= count * 10);
    }
});
