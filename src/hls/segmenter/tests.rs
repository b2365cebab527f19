use super::*;
use crate::media::avc::tests::AVCC_640X360_HIGH;
use crate::media::EndReason;

fn cfg() -> SegmenterConfig {
    SegmenterConfig {
        target_duration: 2.0,
        part_duration: None,
        max_segment_bytes: 1 << 20,
        max_segment_samples: 16_384,
    }
}

fn video_cfg() -> MediaEvent {
    MediaEvent::VideoConfig(Arc::new(VideoConfig::h264(AVCC_640X360_HIGH).unwrap()))
}

fn audio_cfg() -> MediaEvent {
    MediaEvent::AudioConfig(Arc::new(AudioConfig::aac(&[0x11, 0x90]).unwrap()))
}

fn vframe(ms: i64, key: bool) -> MediaEvent {
    MediaEvent::Packet(Packet {
        track: TrackKind::Video,
        dts: ms * 90,
        pts: ms * 90 + 3000,
        keyframe: key,
        data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
    })
}

fn aframe(ms: i64) -> MediaEvent {
    MediaEvent::Packet(Packet {
        track: TrackKind::Audio,
        dts: ms * 48,
        pts: ms * 48,
        keyframe: true,
        data: Bytes::from_static(&[0x21, 0x10]),
    })
}

fn segments(out: &[SegmenterOutput]) -> Vec<&Segment> {
    out.iter()
        .filter_map(|o| match o {
            SegmenterOutput::Segment(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// 30 fps video with a keyframe every `gop` frames, and 48 kHz audio, for `secs` seconds.
fn feed(seg: &mut Segmenter, secs: i64, gop: i64) -> Vec<SegmenterOutput> {
    let now = Utc::now();
    let mut out = seg.push(video_cfg(), now);
    out.extend(seg.push(audio_cfg(), now));
    let mut audio_ms = 0.0f64;
    for i in 0..secs * 30 {
        let ms = i * 1000 / 30;
        while audio_ms <= ms as f64 {
            out.extend(seg.push(aframe(audio_ms.round() as i64), now));
            audio_ms += 1024.0 / 48.0;
        }
        out.extend(seg.push(vframe(ms, i % gop == 0), now));
    }
    out
}

#[test]
fn cuts_at_keyframes_near_target() {
    let mut seg = Segmenter::new(cfg());
    let mut out = feed(&mut seg, 10, 30);
    out.extend(seg.push(MediaEvent::End(EndReason::Stopped), Utc::now()));
    assert!(matches!(out[0], SegmenterOutput::Init { .. }));
    let segs = segments(&out);
    assert_eq!(segs.len(), 5, "10 s in 2 s segments");
    for s in &segs[..4] {
        assert!((s.duration - 2.0).abs() < 0.05, "{}", s.duration);
        assert!(s.independent && !s.discontinuity);
        assert_eq!(s.video_frames, 60);
    }
    assert!(matches!(
        out.last(),
        Some(SegmenterOutput::End(EndReason::Stopped))
    ));
    // PDT advances with media time.
    let gap = segs[1].program_date_time - segs[0].program_date_time;
    assert!((gap.num_milliseconds() - 2000).abs() <= 40, "{gap}");
}

#[test]
fn a_long_gop_is_cut_within_the_target_and_realigned_at_keyframes() {
    let mut seg = Segmenter::new(cfg());
    let out = feed(&mut seg, 13, 150); // keyframe every 5 s
    let segs = segments(&out);
    // 0-2.47 (independent), 2.47-4.93, 4.93-5 (up to the keyframe), 5-7.47 (independent), …
    assert!(segs.len() >= 5, "{}", segs.len());
    for s in &segs {
        assert!(
            s.duration.round() <= 2.0,
            "{} rounds above the target",
            s.duration
        );
    }
    let independent_starts: Vec<f64> = segs
        .iter()
        .filter(|s| s.independent)
        .map(|s| (s.start_time * 10.0).round() / 10.0)
        .collect();
    assert_eq!(independent_starts, [0.0, 5.0, 10.0]);
}

/// 30 fps video with keyframes at the given frame numbers, for `frames` frames.
fn feed_keyframes(seg: &mut Segmenter, frames: i64, keys: &[i64]) -> Vec<SegmenterOutput> {
    let now = Utc::now();
    let mut out = seg.push(video_cfg(), now);
    for i in 0..frames {
        out.extend(seg.push(vframe(i * 1000 / 30, keys.contains(&i)), now));
    }
    out.extend(seg.push(MediaEvent::End(EndReason::Stopped), now));
    out
}

#[test]
fn a_short_gop_before_a_normal_one_ends_the_segment_early_instead_of_mid_gop() {
    // 2 s GOPs, then a 0.8 s one (a looped clip's tail, an encoder's scene cut), then 2 s GOPs.
    let keys = [0, 60, 120, 144, 204, 264];
    let out = feed_keyframes(&mut Segmenter::new(cfg()), 300, &keys);
    let segs = segments(&out);
    let starts: Vec<i64> = segs
        .iter()
        // Frame numbers: start times are presentation times, one frame after the decode time.
        .map(|s| (s.start_time * 30.0).round() as i64 - 1)
        .collect();
    assert_eq!(starts, [0, 60, 120, 144, 204, 264], "{segs:?}");
    assert!(segs.iter().all(|s| s.independent), "no cut mid-GOP");
    // Without a history of GOPs (the stream's start) a short first GOP cannot be told from a
    // normal one: the segment runs on to its longest and is cut mid-GOP.
    let out = feed_keyframes(&mut Segmenter::new(cfg()), 150, &[0, 24, 84]);
    let independent: Vec<bool> = segments(&out).iter().map(|s| s.independent).collect();
    assert_eq!(independent, [true, false, true]);
}

/// 30 fps frames `frames` (numbers), keyframes on `keys`, then the end.
fn feed_frames(seg: &mut Segmenter, frames: &[i64], keys: &[i64]) -> Vec<SegmenterOutput> {
    let now = Utc::now();
    let mut out = seg.push(video_cfg(), now);
    for &i in frames {
        out.extend(seg.push(vframe(i * 1000 / 30, keys.contains(&i)), now));
    }
    out.extend(seg.push(MediaEvent::End(EndReason::Stopped), now));
    out
}

#[test]
fn a_gap_in_the_video_ends_the_segment_before_it_instead_of_spanning_it() {
    // 2 s GOPs; frames 90..300 (7 s) dropped by a ladder behind real time. After the gap the
    // stream resumes on a keyframe, or (an encoder that forced none) mid-GOP.
    let frames: Vec<i64> = (0..90).chain(300..480).collect();
    for keys in [vec![0, 60, 300, 360, 420], vec![0, 60, 330, 390, 450]] {
        let out = feed_frames(&mut Segmenter::new(cfg()), &frames, &keys);
        let segs = segments(&out);
        let durations: Vec<f64> = segs
            .iter()
            .map(|s| (s.duration * 1000.0).round() / 1000.0)
            .collect();
        assert!(
            durations.iter().all(|&d| d <= 2.49),
            "{keys:?}: {durations:?}"
        );
        // The segment before the gap ends with its last frame (frame 89, at 3.0 s).
        assert!(
            (durations[1] - 1.0).abs() < 0.002,
            "{keys:?}: {durations:?}"
        );
        let after = (segs[2].start_time * 30.0).round() as i64 - 1;
        assert_eq!(
            after, 300,
            "{keys:?}: the next segment starts after the gap"
        );
        // No slivers after it: the gap is not taken for a frame duration.
        assert!(
            durations[2..durations.len() - 1].iter().all(|&d| d >= 0.9),
            "{keys:?}: {durations:?}"
        );
    }
}

#[test]
fn a_short_pause_is_not_taken_for_the_frame_rate() {
    // 2 s GOPs at 30 fps, LL-HLS parts of 0.3 s; the sender paused 0.9 s (frames 70..97 never
    // came): the pause is held on frame 69, and the frames after it are cut as before it.
    let frames: Vec<i64> = (0..70).chain(97..300).collect();
    let out = feed_frames(
        &mut Segmenter::new(ll_cfg(0.3)),
        &frames,
        &[0, 60, 120, 180, 240],
    );
    let segs = segments(&out);
    assert!(
        segs.iter().all(|s| s.independent),
        "no cut mid-GOP: {:?}",
        segs.iter().map(|s| s.duration).collect::<Vec<_>>()
    );
    // 8 frames a part; only a segment's last part may be shorter.
    let durations: Vec<f64> = parts(&out).iter().map(|p| p.duration).collect();
    let short = durations.iter().filter(|&&d| d < 7.5 / 30.0).count();
    assert!(short <= segs.len(), "{durations:?}");
}

#[test]
fn waits_for_a_keyframe_and_trims_audio() {
    let mut seg = Segmenter::new(cfg());
    let now = Utc::now();
    seg.push(video_cfg(), now);
    seg.push(audio_cfg(), now);
    assert!(seg.push(aframe(0), now).is_empty());
    assert!(seg.push(vframe(0, false), now).is_empty());
    let out = seg.push(vframe(33, true), now);
    assert!(matches!(out[0], SegmenterOutput::Init { .. }));
    let out = seg.push(MediaEvent::End(EndReason::Stopped), now);
    let s = segments(&out);
    assert_eq!(s[0].video_frames, 1);
    // The segment starts when its first picture is shown: decode time + composition offset.
    assert!((s[0].start_time - (0.033 + 3000.0 / 90_000.0)).abs() < 1e-6);
}

#[test]
fn config_change_makes_discontinuity_and_new_init() {
    let mut seg = Segmenter::new(cfg());
    let now = Utc::now();
    let mut out = feed(&mut seg, 3, 30);
    // A different SPS (level changed).
    let mut other = AVCC_640X360_HIGH.to_vec();
    other[3] = 0x1f;
    other[11] = 0x1f;
    out.extend(seg.push(
        MediaEvent::VideoConfig(Arc::new(VideoConfig::h264(&other).unwrap())),
        now,
    ));
    out.extend(seg.push(vframe(3100, true), now));
    out.extend(seg.push(MediaEvent::End(EndReason::Stopped), now));
    let inits = out
        .iter()
        .filter(|o| matches!(o, SegmenterOutput::Init { .. }))
        .count();
    assert_eq!(inits, 2);
    let segs = segments(&out);
    assert!(segs.last().unwrap().discontinuity);
    assert_eq!(segs.iter().filter(|s| s.discontinuity).count(), 1);
}

#[test]
fn audio_announced_after_the_first_frames_joins_the_first_segment() {
    for part_duration in [None, Some(0.3)] {
        let mut seg = Segmenter::new(SegmenterConfig {
            part_duration,
            ..cfg()
        });
        let now = Utc::now();
        let mut out = seg.push(video_cfg(), now);
        out.extend(seg.push(vframe(0, true), now));
        out.extend(seg.push(vframe(33, false), now));
        out.extend(seg.push(audio_cfg(), now));
        for ms in (40..4000).step_by(21) {
            out.extend(seg.push(aframe(ms), now));
        }
        for i in 2..120 {
            out.extend(seg.push(vframe(i * 1000 / 30, i % 60 == 0), now));
        }
        out.extend(seg.push(MediaEvent::End(EndReason::Stopped), now));
        let inits: Vec<&InitInfo> = out
            .iter()
            .filter_map(|o| match o {
                SegmenterOutput::Init { info, .. } => Some(info),
                _ => None,
            })
            .collect();
        assert!(
            inits.last().is_some_and(|i| i.audio.is_some()),
            "{part_duration:?}"
        );
        let segs = segments(&out);
        assert!(
            segs.iter().all(|s| !s.discontinuity) && (segs[0].duration - 2.0).abs() < 0.01,
            "{part_duration:?}: {:?}",
            segs.iter()
                .map(|s| (s.duration, s.discontinuity))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn audio_only_streams_are_segmented() {
    let mut seg = Segmenter::new(cfg());
    let now = Utc::now();
    seg.push(audio_cfg(), now);
    let mut out = Vec::new();
    for i in 0..300 {
        out.extend(seg.push(aframe(i * 1024 / 48), now));
    }
    let segs = segments(&out);
    assert!(segs.len() >= 2);
    assert!(
        (segs[0].duration - 2.0).abs() < 0.05,
        "{}",
        segs[0].duration
    );
    match &out[0] {
        SegmenterOutput::Init { info, .. } => assert!(info.video.is_none()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn audio_goes_to_the_segment_its_time_falls_in() {
    // Video delayed by 0.5 s (an encoder's latency): audio arrives ahead of its video.
    let mut seg = Segmenter::new(cfg());
    let now = Utc::now();
    let mut out = seg.push(video_cfg(), now);
    out.extend(seg.push(audio_cfg(), now));
    let mut audio_ms = 0.0f64;
    for i in 0..(6 * 30) {
        let ms = i * 1000 / 30;
        while audio_ms <= ms as f64 + 500.0 {
            out.extend(seg.push(aframe(audio_ms.round() as i64), now));
            audio_ms += 1024.0 / 48.0;
        }
        out.extend(seg.push(vframe(ms, i % 60 == 0), now));
    }
    out.extend(seg.push(MediaEvent::End(EndReason::Stopped), now));
    let segs = segments(&out);
    assert_eq!(segs.len(), 3);
    // Each 2 s segment holds ~2 s of audio (94 frames of 1024 at 48 kHz), not 2.5 s.
    for s in &segs[..2] {
        let audio_frames = s.data.windows(2).filter(|w| w == &[0x21, 0x10]).count();
        assert!((93..=95).contains(&audio_frames), "{audio_frames}");
    }
}

#[test]
fn audio_before_the_first_keyframe_is_kept_from_its_time() {
    let mut seg = Segmenter::new(cfg());
    let now = Utc::now();
    seg.push(video_cfg(), now);
    seg.push(audio_cfg(), now);
    for i in 0..20 {
        seg.push(aframe(i * 1024 / 48), now); // 0 .. ~406 ms
    }
    seg.push(vframe(200, true), now);
    let out = seg.push(MediaEvent::End(EndReason::Stopped), now);
    let s = segments(&out);
    let audio_frames = s[0].data.windows(2).filter(|w| w == &[0x21, 0x10]).count();
    // Frames from ~200 ms on: about 10 of the 20.
    assert!((9..=11).contains(&audio_frames), "{audio_frames}");
}

proptest::proptest! {
    /// Arbitrary interleavings and timestamps never panic, and every segment is non-empty.
    #[test]
    fn arbitrary_packets(events in proptest::collection::vec((0u8..4, -5000i64..500_000, proptest::prelude::any::<bool>()), 0..300)) {
        let mut seg = Segmenter::new(cfg());
        let now = Utc::now();
        seg.push(video_cfg(), now);
        seg.push(audio_cfg(), now);
        for (kind, ts, key) in events {
            let ev = match kind {
                0 | 1 => vframe(ts, key),
                2 => aframe(ts),
                _ => audio_cfg(),
            };
            for o in seg.push(ev, now) {
                if let SegmenterOutput::Segment(s) = o {
                    proptest::prop_assert!(!s.data.is_empty());
                    proptest::prop_assert!(s.duration >= 0.0);
                }
            }
        }
    }
}

#[test]
fn tiny_samples_on_a_constant_timestamp_are_cut_by_count() {
    // The regression: only bytes were counted, so 1-byte samples at one timestamp grew a
    // segment towards 64 Mi samples.
    let mut seg = Segmenter::new(SegmenterConfig {
        max_segment_samples: 1000,
        ..cfg()
    });
    let now = Utc::now();
    seg.push(video_cfg(), now);
    seg.push(audio_cfg(), now);
    seg.push(vframe(0, true), now);
    let mut outs = Vec::new();
    for _ in 0..10_000 {
        outs.extend(seg.push(aframe(0), now));
        assert!(seg.pending_samples() <= 1000);
    }
    let s = segments(&outs);
    assert!(s.len() >= 9, "{}", s.len());
}

#[test]
fn a_keyframe_per_frame_with_a_tiny_target_is_not_a_segment_per_frame() {
    let mut seg = Segmenter::new(SegmenterConfig {
        target_duration: 0.01,
        ..cfg()
    });
    let now = Utc::now();
    seg.push(video_cfg(), now);
    let mut outs = Vec::new();
    for i in 0..300 {
        outs.extend(seg.push(vframe(i * 33, true), now));
    }
    let s = segments(&outs);
    // 10 s of media: at most one segment per MIN_SEGMENT_SECS.
    assert!(s.len() <= 20, "{}", s.len());
    assert!(s.iter().all(|s| s.duration >= MIN_SEGMENT_SECS - 0.05));
}

fn extreme_frame(track: TrackKind, dts: i64, pts: i64, key: bool) -> MediaEvent {
    MediaEvent::Packet(Packet {
        track,
        dts,
        pts,
        keyframe: key,
        data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
    })
}

#[test]
fn a_timeline_pushed_to_the_end_of_i64_does_not_overflow() {
    let mut seg = Segmenter::new(cfg());
    let now = Utc::now();
    seg.push(video_cfg(), now);
    seg.push(audio_cfg(), now);
    for (dts, key) in [
        (0, true),
        (i64::MAX - 10, true),
        (i64::MAX, false),
        (i64::MAX, true),
    ] {
        seg.push(extreme_frame(TrackKind::Video, dts, i64::MAX, key), now);
        seg.push(extreme_frame(TrackKind::Audio, dts, dts, true), now);
    }
    seg.push(
        extreme_frame(TrackKind::Video, i64::MIN, i64::MIN, true),
        now,
    );
    let out = seg.push(MediaEvent::End(EndReason::Stopped), now);
    assert!(!segments(&out).is_empty());
}

proptest::proptest! {
    /// Timestamps anywhere in i64 (a pushed timeline) never overflow or panic.
    #[test]
    fn extreme_timestamps_never_overflow(
        events in proptest::collection::vec(
            (0u8..3, proptest::prelude::any::<i64>(), proptest::prelude::any::<i64>(), proptest::prelude::any::<bool>()),
            0..200),
    ) {
        let mut seg = Segmenter::new(cfg());
        let now = Utc::now();
        seg.push(video_cfg(), now);
        seg.push(audio_cfg(), now);
        for (kind, dts, pts, key) in events {
            let track = if kind == 2 { TrackKind::Audio } else { TrackKind::Video };
            for o in seg.push(extreme_frame(track, dts, pts, key), now) {
                if let SegmenterOutput::Segment(s) = o {
                    proptest::prop_assert!(s.duration >= 0.0);
                }
            }
        }
        seg.push(MediaEvent::End(EndReason::Stopped), now);
    }
}

fn packet(track: TrackKind, dts: i64, pts: i64, keyframe: bool) -> MediaEvent {
    MediaEvent::Packet(Packet {
        track,
        dts,
        pts,
        keyframe,
        data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
    })
}

/// Fuzz finding (timeline_segmenter): timestamps near the ends of i64 — what a pushed timeline
/// reaches, and what any producer may hand over — overflowed the tick → µs conversions
/// (`dts * 1_000_000`), the rate conversions and the decode-time steps (panic in debug,
/// wrapped PDTs and durations in release).
#[test]
fn extreme_timestamps_neither_overflow_nor_panic() {
    let now = Utc::now();
    let mut seg = Segmenter::new(cfg());
    // Audio alone first: an audio-only start anchors the clock on an audio timestamp.
    let mut out = seg.push(audio_cfg(), now);
    out.extend(seg.push(packet(TrackKind::Audio, i64::MAX / 1000, 0, true), now));
    out.extend(seg.push(video_cfg(), now));
    for dts in [
        i64::MAX / 1000,
        i64::MAX,
        i64::MIN,
        0,
        i64::MAX - 1,
        i64::MIN / 7,
    ] {
        for (pts, keyframe) in [(dts, true), (i64::MIN, false), (i64::MAX, true)] {
            out.extend(seg.push(packet(TrackKind::Video, dts, pts, keyframe), now));
            out.extend(seg.push(packet(TrackKind::Audio, dts, dts, true), now));
        }
    }
    seg.set_clock_anchor(i64::MIN, now);
    out.extend(seg.push(packet(TrackKind::Video, i64::MAX, i64::MAX, true), now));
    out.extend(seg.push(MediaEvent::End(EndReason::Stopped), now));
    let segs = segments(&out);
    assert!(!segs.is_empty());
    for s in segs {
        assert!(
            s.duration.is_finite() && s.duration >= 0.0,
            "{}",
            s.duration
        );
        assert!(s.start_time.is_finite());
    }
}

fn parts(out: &[SegmenterOutput]) -> Vec<&Part> {
    out.iter()
        .filter_map(|o| match o {
            SegmenterOutput::Part(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn ll_cfg(part: f64) -> SegmenterConfig {
    SegmenterConfig {
        part_duration: Some(part),
        ..cfg()
    }
}

#[test]
fn a_segment_is_the_concatenation_of_its_parts() {
    let mut seg = Segmenter::new(ll_cfg(0.3));
    let mut out = feed(&mut seg, 7, 60);
    out.extend(seg.push(MediaEvent::End(EndReason::Stopped), Utc::now()));
    let mut building: Vec<&Part> = Vec::new();
    let mut checked = 0;
    for o in &out {
        match o {
            SegmenterOutput::Part(p) => {
                assert_eq!(p.index as usize, building.len());
                building.push(p);
            }
            SegmenterOutput::Segment(s) => {
                let joined: Vec<u8> = building.iter().flat_map(|p| p.data.to_vec()).collect();
                assert_eq!(joined, s.data.to_vec());
                let sum: f64 = building.iter().map(|p| p.duration).sum();
                assert!((sum - s.duration).abs() < 1e-9);
                assert!(building[0].independent && s.independent);
                assert!(building[1..].iter().all(|p| !p.independent));
                // 30 fps, 0.3 s target: 8 frames (0.267 s) a part, 7 and a half in 2 s.
                assert!(building[..building.len() - 1]
                    .iter()
                    .all(|p| (p.duration - 8.0 / 30.0).abs() < 0.002));
                building.clear();
                checked += 1;
            }
            _ => {}
        }
    }
    assert_eq!(checked, 4);
}

/// Every rung of a ladder gets the same frames (same timestamps, keyframes forced on the same
/// frames) but different bytes: the parts must be cut at the same times in every rung.
#[test]
fn rungs_fed_the_same_frames_cut_the_same_parts() {
    let cut = |frame_bytes: usize| {
        let mut seg = Segmenter::new(ll_cfg(0.3));
        let now = Utc::now();
        let mut out = seg.push(video_cfg(), now);
        for i in 0..300i64 {
            out.extend(seg.push(
                MediaEvent::Packet(Packet {
                    track: TrackKind::Video,
                    dts: i * 3003,
                    pts: i * 3003,
                    keyframe: i % 60 == 0,
                    data: Bytes::from(vec![0u8; frame_bytes * (1 + (i % 7) as usize)]),
                }),
                now,
            ));
        }
        out.iter()
            .filter_map(|o| match o {
                SegmenterOutput::Part(p) => Some((
                    p.index,
                    (p.duration * 90_000.0).round() as i64,
                    p.independent,
                )),
                SegmenterOutput::Segment(s) => Some((
                    u32::MAX,
                    (s.duration * 90_000.0).round() as i64,
                    s.independent,
                )),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let low = cut(100);
    assert!(low.len() > 30);
    assert_eq!(low, cut(500));
    assert_eq!(low, cut(1500));
}

proptest::proptest! {
    /// RFC 8216bis §4.4.4.9: each part at most the part target, and at least 85 % of it except
    /// a segment's last part and independent ones: at the common frame rates, with the
    /// millisecond jitter of an RTMP clock.
    #[test]
    fn parts_fill_85_to_100_percent_of_the_target(
        fps in proptest::sample::select(vec![24.0, 25.0, 30_000.0 / 1001.0, 30.0, 50.0, 60_000.0 / 1001.0, 60.0]),
        jitter in proptest::collection::vec(-1i64..=1, 400),
    ) {
        let part = 0.3;
        let mut seg = Segmenter::new(ll_cfg(part));
        let now = Utc::now();
        let mut out = seg.push(video_cfg(), now);
        let gop = (2.0_f64 * fps).round() as usize;
        for (i, j) in jitter.iter().enumerate() {
            // RTMP: milliseconds, rounded, ±1.
            let ms = ((i as f64 * 1000.0 / fps).round() as i64 + j).max(0);
            out.extend(seg.push(
                MediaEvent::Packet(Packet {
                    track: TrackKind::Video, dts: ms * 90, pts: ms * 90,
                    keyframe: i % gop == 0, data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
                }),
                now,
            ));
        }
        let mut last_of_segment = Vec::new();
        let mut building: Vec<&Part> = Vec::new();
        for o in &out {
            match o {
                SegmenterOutput::Part(p) => building.push(p),
                SegmenterOutput::Segment(_) => {
                    last_of_segment.push(building.pop());
                    for p in building.drain(..) {
                        proptest::prop_assert!(p.duration <= part + 1e-9, "{} fps: part of {}", fps, p.duration);
                        if !p.independent {
                            proptest::prop_assert!(p.duration >= 0.85 * part, "{} fps: part of {}", fps, p.duration);
                        }
                    }
                }
                _ => {}
            }
        }
        for p in last_of_segment.into_iter().flatten() {
            proptest::prop_assert!(p.duration <= part + 1e-9, "{} fps: last part of {}", fps, p.duration);
        }
    }
}

#[test]
fn audio_only_streams_get_parts() {
    let mut seg = Segmenter::new(ll_cfg(0.3));
    let now = Utc::now();
    let mut out = seg.push(audio_cfg(), now);
    for i in 0..300 {
        out.extend(seg.push(aframe(i * 1024 / 48), now));
    }
    let ps = parts(&out);
    assert!(ps.len() > 15);
    assert!(ps.iter().all(|p| p.independent && p.duration <= 0.3));
    assert!(segments(&out).iter().all(|s| s.duration.round() <= 2.0));
}
