//! The timeline (`media::timeline::TimestampNormalizer`) and the HLS segmenter
//! (`hls::segmenter::Segmenter`) fed arbitrary event sequences: configuration changes (real
//! H.264/HEVC/AV1/AAC/Opus records), packets stamped with a publisher's raw 32-bit clock (through
//! the normalizer, as ingest does), packets with any 64-bit timestamps (what any other producer
//! could hand the segmenter), wall-clock steps and the end of the stream.
//!
//! Contract: no panic (no overflow in the timestamp math); every segment (and LL-HLS part, when
//! configured) is within the size limit plus one sample and lasts a sane, non-negative time; the normalized timeline moves at
//! most 10 s per message; nothing is emitted after the end.
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use bytes::Bytes;
use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use livegate::hls::segmenter::{Segmenter, SegmenterConfig, SegmenterOutput};
use livegate::media::timeline::{TimestampNormalizer, MAX_PLAUSIBLE_STEP_MS};
use livegate::media::{
    AudioConfig, EndReason, MediaEvent, Packet, TrackKind, VideoConfig, VIDEO_TIMESCALE,
};

/// avcC of the 640x360 High fixture (see media/avc.rs).
const AVCC: &[u8] = &[
    0x01, 0x64, 0x00, 0x1e, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0,
    0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16,
    0x2d, 0x96, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0, 0xfd, 0xf8, 0xf8, 0x00,
];
const HVCC: &[u8] = include_bytes!("../../src/media/testdata/hvcc_426x240.bin");
const AV1C: &[u8] = include_bytes!("../../src/media/testdata/av1c_426x240.bin");

#[derive(Arbitrary, Debug)]
enum Op {
    VideoConfig(u8),
    AudioConfig(u8),
    /// A publisher's tag: raw 32-bit milliseconds, a 24-bit composition offset.
    Video {
        raw_ms: u32,
        cts_ms: i32,
        keyframe: bool,
        len: u16,
    },
    Audio {
        raw_ms: u32,
        len: u16,
    },
    /// Timestamps straight from another producer (the ladder, a future protocol).
    VideoAt {
        dts: i64,
        pts: i64,
        keyframe: bool,
        len: u16,
    },
    AudioAt {
        dts: i64,
        len: u16,
    },
    Wall(u32),
    End(bool),
}

#[derive(Arbitrary, Debug)]
struct Input {
    target_ms: u16,
    /// LL-HLS parts of this many ms (at most half the target), or none.
    part_ms: Option<u16>,
    max_segment_kib: u16,
    anchor: Option<(i64, u32)>,
    ops: Vec<Op>,
}

fn video_config(pick: u8) -> Arc<VideoConfig> {
    Arc::new(
        match pick % 3 {
            0 => VideoConfig::h264(AVCC),
            1 => VideoConfig::hevc(HVCC),
            _ => VideoConfig::av1(AV1C),
        }
        .expect("fixture"),
    )
}

fn audio_config(pick: u8) -> Arc<AudioConfig> {
    Arc::new(
        match pick % 4 {
            0 => AudioConfig::aac(&[0x11, 0x90]), // 48 kHz stereo
            1 => AudioConfig::aac(&[0x12, 0x08]), // 44.1 kHz mono
            2 => AudioConfig::aac(&[0x15, 0x88]), // 8 kHz (index 11) mono
            _ => AudioConfig::opus_from_channels(2),
        }
        .expect("fixture"),
    )
}

fuzz_target!(|input: Input| {
    let target = f64::from(input.target_ms.clamp(100, 20_000)) / 1000.0;
    let max_bytes = usize::from(input.max_segment_kib.max(1)) * 1024;
    let part = input
        .part_ms
        .map(|p| f64::from(p.clamp(50, 10_000)) / 1000.0)
        .map(|p| p.min(target / 2.0));
    let mut segmenter = Segmenter::new(SegmenterConfig {
        target_duration: target,
        part_duration: part,
        max_segment_bytes: max_bytes,
        // Small caps too, so the forced sample-count cut is exercised.
        max_segment_samples: (usize::from(input.max_segment_kib) % 1024).max(1) * 16,
    });
    let mut now = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    if let Some((media_us, wall)) = input.anchor {
        segmenter.set_clock_anchor(media_us, now + chrono::Duration::seconds(i64::from(wall)));
    }
    // One clock per publisher, shared by its audio and video (as in the FLV demuxer).
    let mut clock = TimestampNormalizer::new();
    let mut clock_messages = 0i64;
    let mut audio_rate = 48_000i64;
    let mut largest_sample = 0usize;
    let mut ended = false;
    let payload = Bytes::from(vec![0u8; 1 << 16]);

    let ops = input.ops.len();
    for op in input.ops {
        let event = match op {
            Op::VideoConfig(pick) => MediaEvent::VideoConfig(video_config(pick)),
            Op::AudioConfig(pick) => {
                let config = audio_config(pick);
                audio_rate = i64::from(config.sample_rate);
                MediaEvent::AudioConfig(config)
            }
            Op::Video {
                raw_ms,
                cts_ms,
                keyframe,
                len,
            } => {
                let ms = clock.normalize(raw_ms);
                clock_messages += 1;
                assert!(ms.abs() <= clock_messages * MAX_PLAUSIBLE_STEP_MS);
                let cts = i64::from((cts_ms << 8) >> 8);
                let ticks = i64::from(VIDEO_TIMESCALE / 1000);
                MediaEvent::Packet(Packet {
                    track: TrackKind::Video,
                    dts: ms * ticks,
                    pts: (ms + cts) * ticks,
                    keyframe,
                    data: payload.slice(..usize::from(len)),
                })
            }
            Op::Audio { raw_ms, len } => {
                let ms = clock.normalize(raw_ms);
                clock_messages += 1;
                assert!(ms.abs() <= clock_messages * MAX_PLAUSIBLE_STEP_MS);
                let ts = ms * audio_rate / 1000;
                MediaEvent::Packet(Packet {
                    track: TrackKind::Audio,
                    dts: ts,
                    pts: ts,
                    keyframe: true,
                    data: payload.slice(..usize::from(len)),
                })
            }
            Op::VideoAt {
                dts,
                pts,
                keyframe,
                len,
            } => MediaEvent::Packet(Packet {
                track: TrackKind::Video,
                dts,
                pts,
                keyframe,
                data: payload.slice(..usize::from(len)),
            }),
            Op::AudioAt { dts, len } => MediaEvent::Packet(Packet {
                track: TrackKind::Audio,
                dts,
                pts: dts,
                keyframe: true,
                data: payload.slice(..usize::from(len)),
            }),
            Op::Wall(ms) => {
                now += chrono::Duration::milliseconds(i64::from(ms));
                continue;
            }
            Op::End(replaced) => MediaEvent::End(if replaced {
                EndReason::Replaced
            } else {
                EndReason::Stopped
            }),
        };
        if let MediaEvent::Packet(p) = &event {
            largest_sample = largest_sample.max(p.data.len());
        }
        let is_end = matches!(event, MediaEvent::End(_));
        let out = segmenter.push(event, now);
        if ended {
            assert!(out.is_empty(), "output after the end");
        }
        for o in out {
            match o {
                SegmenterOutput::Segment(s) => {
                    // Bounded by the limit: what was pending (at most the limit), the early
                    // audio taken at the first keyframe (at most the limit), the sample that
                    // crossed it, and the boxes (a few dozen bytes a sample, a few hundred a part).
                    let media_limit = 2 * max_bytes + 2 * largest_sample;
                    assert!(s.data.len() <= media_limit + 1024 + 288 * ops);
                    assert!(s.duration.is_finite() && s.duration >= 0.0);
                    assert!(s.start_time.is_finite());
                }
                SegmenterOutput::Part(p) => {
                    assert!(part.is_some(), "a part without parts configured");
                    assert!(p.data.len() <= 2 * max_bytes + 2 * largest_sample + 1024 + 32 * ops);
                    assert!(p.duration.is_finite() && p.duration >= 0.0);
                }
                SegmenterOutput::Init { data, .. } => assert!(!data.is_empty()),
                SegmenterOutput::End(_) => {}
            }
        }
        ended |= is_end;
    }
});
