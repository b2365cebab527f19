//! VP8 and VP9 keyframe headers → `media::vpx` (how WHIP sizes a VP8/VP9 track).
//!
//! Contract: no panic; a size read is non-zero and within the 14-bit (VP8) / 16-bit (VP9)
//! fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livegate::media::vpx;

fuzz_target!(|data: &[u8]| {
    if let Some((w, h)) = vpx::vp8_keyframe_size(data) {
        assert!((1..=0x3fff).contains(&w) && (1..=0x3fff).contains(&h));
    }
    if let Some((profile, w, h)) = vpx::vp9_keyframe_size(data) {
        assert!(profile <= 3);
        assert!((1..=65536).contains(&w) && (1..=65536).contains(&h));
    }
});
