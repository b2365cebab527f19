//! Depacketized WebRTC frames (any bytes, any RTP times, loss, sender reports) through the
//! stream clock and the frame converter (`ingest::whip::fuzzing::frames`).
//!
//! Contract: no panic; each track's timestamps rise strictly; no packet before its track's
//! configuration; video configurations within the size limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livegate::ingest::whip::fuzzing;
use livegate::media::{MediaEvent, TrackKind};

fuzz_target!(|data: &[u8]| {
    let (mut video, mut audio) = (None::<i64>, None::<i64>);
    let (mut video_config, mut audio_config) = (false, false);
    for event in fuzzing::frames(data) {
        match event {
            MediaEvent::VideoConfig(c) => {
                assert!(c.width > 0 && c.height > 0 && c.width <= 16384 && c.height <= 16384);
                video_config = true;
            }
            MediaEvent::AudioConfig(_) => audio_config = true,
            MediaEvent::Packet(p) => {
                let last = match p.track {
                    TrackKind::Video => {
                        assert!(video_config);
                        &mut video
                    }
                    TrackKind::Audio => {
                        assert!(audio_config);
                        &mut audio
                    }
                };
                assert!(last.is_none_or(|l| p.dts > l), "{last:?} then {}", p.dts);
                *last = Some(p.dts);
            }
            MediaEvent::End(_) => {}
        }
    }
});
