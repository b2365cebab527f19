use super::*;
use crate::media::avc::tests::AVCC_640X360_HIGH;
use crate::media::{AudioConfig, VideoConfig};

fn init() -> SegmenterOutput {
    SegmenterOutput::Init {
        data: Bytes::from_static(b"init"),
        info: InitInfo {
            video: Some(Arc::new(VideoConfig::h264(AVCC_640X360_HIGH).unwrap())),
            audio: Some(Arc::new(AudioConfig::aac(&[0x11, 0x90]).unwrap())),
        },
    }
}

fn seg(duration: f64, discontinuity: bool) -> SegmenterOutput {
    SegmenterOutput::Segment(Segment {
        duration,
        data: Bytes::from(vec![0u8; 1000]),
        discontinuity,
        program_date_time: Utc::now(),
        independent: true,
        video_frames: (duration * 30.0) as usize,
        start_time: 0.0,
    })
}

fn parse_media(text: &str) -> m3u8_rs::MediaPlaylist {
    match m3u8_rs::parse_playlist_res(text.as_bytes()).unwrap() {
        m3u8_rs::Playlist::MediaPlaylist(p) => p,
        _ => panic!("not a media playlist"),
    }
}

#[test]
fn sliding_window_and_endlist() {
    let reg = HlsRegistry::new(HlsConfig::default());
    let (hls, generation) = reg.attach("alice");
    let mut h = hls.write().unwrap();
    assert!(h.media_playlist(SOURCE_RENDITION).is_none());
    assert!(h.master_playlist().is_none());
    h.apply(generation, SOURCE_RENDITION, init());
    for _ in 0..10 {
        h.apply(generation, SOURCE_RENDITION, seg(2.0, false));
    }
    let text = h.media_playlist(SOURCE_RENDITION).unwrap();
    let p = parse_media(&text);
    assert_eq!(p.segments.len(), 6);
    assert_eq!(p.media_sequence, 4);
    assert_eq!(p.target_duration, 2);
    assert!(!p.end_list);
    assert!(p.segments[0].map.is_some());
    assert!(p.segments.iter().all(|s| s.program_date_time.is_some()));
    assert!(text.contains("#EXT-X-INDEPENDENT-SEGMENTS"));
    // Segments just out of the window are still served; older ones are gone.
    let name = |seq: u64| format!("{}-{}.m4s", h.instance, seq);
    assert!(h.file(SOURCE_RENDITION, &name(2)).is_some());
    assert!(h.file(SOURCE_RENDITION, &name(0)).is_none());
    assert!(h.file(SOURCE_RENDITION, "../etc/passwd").is_none());
    h.apply(
        generation,
        SOURCE_RENDITION,
        SegmenterOutput::End(EndReason::Stopped),
    );
    assert!(parse_media(&h.media_playlist(SOURCE_RENDITION).unwrap()).end_list);
}

#[test]
fn master_lists_codecs_and_bandwidth() {
    let reg = HlsRegistry::new(HlsConfig::default());
    let (hls, g) = reg.attach("bob");
    let mut h = hls.write().unwrap();
    h.apply(g, SOURCE_RENDITION, init());
    h.apply(g, SOURCE_RENDITION, seg(2.0, false));
    let text = h.master_playlist().unwrap();
    assert!(text.contains("CODECS=\"avc1.64001e,mp4a.40.2\""), "{text}");
    assert!(text.contains("RESOLUTION=640x360"), "{text}");
    assert!(text.contains("BANDWIDTH=4000"), "{text}");
    assert!(text.contains("AVERAGE-BANDWIDTH=4000"), "{text}");
    assert!(text.contains("FRAME-RATE=30"), "{text}");
    assert!(text.contains("source/index.m3u8"), "{text}");
}

#[test]
fn takeover_continues_with_discontinuity() {
    let reg = HlsRegistry::new(HlsConfig::default());
    let (hls, g1) = reg.attach("carol");
    {
        let mut h = hls.write().unwrap();
        h.apply(g1, SOURCE_RENDITION, init());
        h.apply(g1, SOURCE_RENDITION, seg(2.0, false));
        h.apply(
            g1,
            SOURCE_RENDITION,
            SegmenterOutput::End(EndReason::Replaced),
        );
    }
    let (hls2, g2) = reg.attach("carol");
    assert!(Arc::ptr_eq(&hls, &hls2));
    let mut h = hls2.write().unwrap();
    h.apply(g2, SOURCE_RENDITION, init());
    h.apply(g2, SOURCE_RENDITION, seg(2.0, false));
    let p = parse_media(&h.media_playlist(SOURCE_RENDITION).unwrap());
    assert_eq!(p.segments.len(), 2);
    assert!(p.segments[1].discontinuity);
    assert!(p.segments[1].map.is_some(), "new init after takeover");
    // A late segment from the replaced session is dropped.
    h.apply(g1, SOURCE_RENDITION, seg(1.0, false));
    assert_eq!(
        parse_media(&h.media_playlist(SOURCE_RENDITION).unwrap())
            .segments
            .len(),
        2
    );
}

#[test]
fn discontinuity_sequence_counts_removed_tags() {
    let config = HlsConfig {
        window: 3,
        ..HlsConfig::default()
    };
    let reg = HlsRegistry::new(config);
    let (hls, g) = reg.attach("dave");
    let mut h = hls.write().unwrap();
    h.apply(g, SOURCE_RENDITION, init());
    h.apply(g, SOURCE_RENDITION, seg(2.0, false));
    h.apply(g, SOURCE_RENDITION, init());
    h.apply(g, SOURCE_RENDITION, seg(2.0, true));
    for _ in 0..4 {
        h.apply(g, SOURCE_RENDITION, seg(2.0, false));
    }
    let p = parse_media(&h.media_playlist(SOURCE_RENDITION).unwrap());
    assert_eq!(p.discontinuity_sequence, 1);
    assert!(p.segments.iter().all(|s| !s.discontinuity));
}

#[test]
fn a_discontinuity_at_the_head_keeps_its_tag_and_number() {
    let config = HlsConfig {
        window: 3,
        ..HlsConfig::default()
    };
    let reg = HlsRegistry::new(config);
    let (hls, g) = reg.attach("fay");
    let mut h = hls.write().unwrap();
    h.apply(g, SOURCE_RENDITION, init());
    h.apply(g, SOURCE_RENDITION, seg(2.0, false));
    h.apply(g, SOURCE_RENDITION, seg(2.0, true)); // S1
    h.apply(g, SOURCE_RENDITION, seg(2.0, false));
    let before = parse_media(&h.media_playlist(SOURCE_RENDITION).unwrap());
    assert_eq!(before.discontinuity_sequence, 0);
    assert!(before.segments[1].discontinuity);
    h.apply(g, SOURCE_RENDITION, seg(2.0, false)); // S1 becomes the first listed segment
    let after = parse_media(&h.media_playlist(SOURCE_RENDITION).unwrap());
    assert_eq!(after.media_sequence, 1);
    assert!(after.segments[0].discontinuity, "the tag stays with S1");
    assert_eq!(after.discontinuity_sequence, 0, "and S1 keeps its number");
    h.apply(g, SOURCE_RENDITION, seg(2.0, false)); // S1 leaves: its tag is counted
    let gone = parse_media(&h.media_playlist(SOURCE_RENDITION).unwrap());
    assert_eq!(gone.discontinuity_sequence, 1);
}

#[test]
fn ended_streams_are_swept_and_restart_fresh() {
    let config = HlsConfig {
        keep_ended_secs: 0,
        ..HlsConfig::default()
    };
    let reg = HlsRegistry::new(config);
    let (hls, g) = reg.attach("erin");
    let first = hls.read().unwrap().instance.clone();
    hls.write().unwrap().apply(
        g,
        SOURCE_RENDITION,
        SegmenterOutput::End(EndReason::Stopped),
    );
    let (again, g2) = reg.attach("erin");
    assert_ne!(again.read().unwrap().instance, first);
    again.write().unwrap().apply(
        g2,
        SOURCE_RENDITION,
        SegmenterOutput::End(EndReason::Stopped),
    );
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(reg.sweep(), 1);
    assert!(reg.is_empty());
}

#[test]
fn a_successor_on_another_node_continues_the_numbering() {
    // The predecessor (another node): 8 segments, one discontinuity (a takeover there).
    let old = HlsRegistry::new(HlsConfig::default());
    let (hls, generation) = old.attach("alice");
    let mut h = hls.write().unwrap();
    h.apply(generation, SOURCE_RENDITION, init());
    for i in 0..8 {
        h.apply(generation, SOURCE_RENDITION, seg(2.0, i == 3));
    }
    let numbering = h.numbering();
    assert_eq!(
        numbering,
        [Numbering {
            rendition: SOURCE_RENDITION.into(),
            next_sequence: 8,
            discontinuities: 1,
        }]
    );
    let last = parse_media(&h.media_playlist(SOURCE_RENDITION).unwrap());
    drop(h);

    // The successor continues before its first segment, skipping what it may not have heard of.
    let new = HlsRegistry::new(HlsConfig::default());
    let (hls, generation) = new.attach("alice");
    let mut h = hls.write().unwrap();
    h.continue_after(&numbering, 3);
    h.apply(generation, SOURCE_RENDITION, init());
    h.apply(generation, SOURCE_RENDITION, seg(2.0, false));
    let p = parse_media(&h.media_playlist(SOURCE_RENDITION).unwrap());
    assert_eq!(p.media_sequence, 11);
    assert!(p.media_sequence > last.media_sequence + last.segments.len() as u64 - 1);
    assert!(
        p.segments[0].discontinuity,
        "the first segment is a discontinuity"
    );
    // Its discontinuity sequence continues the predecessor's count.
    assert_eq!(p.discontinuity_sequence, 1);
}
