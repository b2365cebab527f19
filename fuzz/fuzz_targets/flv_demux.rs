//! FLV / Enhanced RTMP tag bodies through `rtmp::flv::FlvDemuxer`, as ingest feeds it one
//! publisher's audio and video messages. Input: an FLV file (or bare FLV tags), so real
//! captures seed it; each tag is (type, timestamp, body).
//!
//! Contract: no panic; a packet's payload is the tag's (never larger than the tag); the timeline
//! starts at 0 and each step is bounded (at most 10 s of media per message, the normalizer's
//! limit); configurations are within the size limit with a valid NAL length size.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use livegate::media::codec::MAX_DIMENSION;
use livegate::media::timeline::MAX_PLAUSIBLE_STEP_MS;
use livegate::media::{MediaEvent, TrackKind, VideoCodec, VIDEO_TIMESCALE};
use livegate::rtmp::flv::FlvDemuxer;

fuzz_target!(|data: &[u8]| {
    let mut demuxer = FlvDemuxer::new();
    let mut messages = 0i64;
    for (kind, ts, body) in livegate_fuzz::flv_tags(data) {
        let body = Bytes::copy_from_slice(body);
        let event = match kind {
            8 => demuxer.audio(&body, ts),
            9 => demuxer.video(&body, ts),
            _ => continue,
        };
        messages += 1;
        match event {
            Ok(Some(MediaEvent::Packet(p))) => {
                assert!(p.data.len() < body.len());
                let (rate, at) = match p.track {
                    TrackKind::Video => (i64::from(VIDEO_TIMESCALE), p.dts),
                    TrackKind::Audio => {
                        let rate = demuxer.audio_config().expect("audio config").sample_rate;
                        (i64::from(rate), p.dts)
                    }
                };
                // Media time grows by at most the normalizer's plausible step per message.
                let bound = messages * MAX_PLAUSIBLE_STEP_MS * rate / 1000 + rate;
                assert!(at.abs() <= bound, "dts {at} after {messages} messages");
                if p.track == TrackKind::Video {
                    // Composition offsets are 24-bit milliseconds.
                    assert!((p.pts - p.dts).abs() <= (1 << 23) * 90);
                }
            }
            Ok(Some(MediaEvent::VideoConfig(v))) => {
                assert!((1..=MAX_DIMENSION).contains(&v.width));
                assert!((1..=MAX_DIMENSION).contains(&v.height));
                if v.codec != VideoCodec::Av1 {
                    assert!(matches!(v.nal_length_size, 1 | 2 | 4));
                }
                assert!(!v.codec_string().is_empty());
            }
            Ok(Some(MediaEvent::AudioConfig(a))) => {
                assert!(a.sample_rate > 0 && a.channels > 0);
            }
            Ok(_) => {}
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});
