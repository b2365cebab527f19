//! WHIP signalling bodies: an SDP offer through `offer::check` (and read as an answer), and a
//! trickle-ice-sdpfrag through `Fragment::parse`.
//!
//! Contract: no panic; an accepted offer has one or two tracks, at most one of each kind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livegate::ingest::whip::offer::{self, Accepts};
use livegate::ingest::whip::Fragment;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let all = Accepts {
        h264: true,
        vp8: true,
        vp9: true,
    };
    if let Ok((audio, video)) = offer::check(text, all) {
        assert!(audio <= 1 && video <= 1 && audio + video >= 1);
    }
    let _ = offer::answer_complete((1, 1), text);
    let _ = Fragment::parse(text);
});
