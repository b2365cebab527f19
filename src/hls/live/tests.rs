use super::*;
use crate::hls::HlsRegistry;
use crate::media::avc::tests::AVCC_640X360_HIGH;
use crate::media::{AudioConfig, VideoConfig};
use std::sync::RwLock;
use std::time::Duration;

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

#[test]
fn corrupt_numbering_from_the_cluster_store_is_ignored() {
    // A value no stream reaches (a corrupt or hostile store): carrying it would wrap the media
    // sequence; the successor numbers from zero, as a first publish does.
    let registry = HlsRegistry::new(HlsConfig::default());
    let (hls, generation) = registry.attach("alice");
    let mut h = hls.write().unwrap();
    h.continue_after(
        &[Numbering {
            rendition: SOURCE_RENDITION.into(),
            next_sequence: u64::MAX - 1,
            discontinuities: u64::MAX,
        }],
        3,
    );
    h.apply(generation, SOURCE_RENDITION, init());
    for _ in 0..3 {
        h.apply(generation, SOURCE_RENDITION, seg(2.0, false));
    }
    let p = parse_media(&h.media_playlist(SOURCE_RENDITION).unwrap());
    assert_eq!(p.media_sequence, 0);
    assert_eq!(p.discontinuity_sequence, 0);
    assert_eq!(p.segments.len(), 3);
}

fn part(index: u32, bytes: &'static [u8], independent: bool) -> SegmenterOutput {
    SegmenterOutput::Part(Part {
        index,
        duration: 0.25,
        data: Bytes::from_static(bytes),
        independent,
        discontinuity: false,
        program_date_time: Utc::now(),
    })
}

fn whole(bytes: &'static [u8]) -> SegmenterOutput {
    SegmenterOutput::Segment(Segment {
        duration: 0.5,
        data: Bytes::from_static(bytes),
        discontinuity: false,
        program_date_time: Utc::now(),
        independent: true,
        video_frames: 15,
        start_time: 0.0,
    })
}

/// Two rungs in LL-HLS: one complete segment of two parts, then one part of the next.
fn low_latency_window() -> (Arc<RwLock<LiveHls>>, u64) {
    let config = HlsConfig {
        segment_duration: 0.5,
        part_duration: 0.25,
        ..HlsConfig::default()
    };
    let reg = HlsRegistry::new(config);
    let (hls, generation) = reg.attach("ll");
    {
        let mut h = hls.write().unwrap();
        for rung in ["360p", "720p"] {
            h.apply_all(
                generation,
                rung,
                [
                    init(),
                    part(0, b"aa", true),
                    part(1, b"bbb", false),
                    whole(b"aabbb"),
                ],
            );
        }
        h.apply_all(generation, "360p", [part(0, b"cc", true)]);
    }
    (hls, generation)
}

#[test]
fn low_latency_playlists_list_parts_hint_the_next_and_report_the_other_rungs() {
    let (hls, _) = low_latency_window();
    let h = hls.read().unwrap();
    let text = h.media_playlist("360p").unwrap();
    let i = &h.instance;
    for line in [
        "#EXT-X-TARGETDURATION:1".to_string(),
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.750,HOLD-BACK=3.000".into(),
        "#EXT-X-PART-INF:PART-TARGET=0.250".into(),
        format!("#EXT-X-PART:DURATION=0.25000,URI=\"{i}-0.0.m4s\",INDEPENDENT=YES"),
        format!("#EXT-X-PART:DURATION=0.25000,URI=\"{i}-0.1.m4s\"\n#EXTINF:0.50000,\n{i}-0.m4s"),
        format!("#EXT-X-PART:DURATION=0.25000,URI=\"{i}-1.0.m4s\",INDEPENDENT=YES"),
        format!("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{i}-1.1.m4s\""),
        "#EXT-X-RENDITION-REPORT:URI=\"../720p/index.m3u8\",LAST-MSN=0,LAST-PART=1".into(),
    ] {
        assert!(text.contains(&line), "{line} missing in\n{text}");
    }
    let other = h.media_playlist("720p").unwrap();
    assert!(
        other.contains("#EXT-X-RENDITION-REPORT:URI=\"../360p/index.m3u8\",LAST-MSN=1,LAST-PART=0"),
        "{other}"
    );
    // Parts are served; a complete segment's parts are slices of its one copy.
    let body = |name: String| match h.file("360p", &name) {
        Some(HlsFile::Part(b)) => b,
        _ => panic!("{name} not served as a part"),
    };
    assert_eq!(&body(format!("{i}-0.1.m4s"))[..], b"bbb");
    assert_eq!(&body(format!("{i}-1.0.m4s"))[..], b"cc");
    assert!(h.file("360p", &format!("{i}-1.1.m4s")).is_none());
    assert_eq!(parse_part_name(&format!("{i}-12.3.m4s")), Some((12, 3)));
}

#[test]
fn each_update_is_published_once_for_every_waiting_request() {
    let (hls, generation) = low_latency_window();
    let mut watch = hls.read().unwrap().watch("360p").unwrap();
    let now = watch.borrow_and_update().clone();
    assert_eq!(
        (now.next_msn, now.parts_in_next, now.parts_in_last),
        (1, 1, 2)
    );
    assert!(now.playlist.as_deref().unwrap().contains("-1.0.m4s"));
    assert!(!watch.has_changed().unwrap());
    hls.write()
        .unwrap()
        .apply_all(generation, "360p", [part(1, b"dd", false)]);
    assert!(watch.has_changed().unwrap());
    assert_eq!(watch.borrow_and_update().parts_in_next, 2);
    // Another rung's update does not wake this one's waiters.
    hls.write()
        .unwrap()
        .apply_all(generation, "720p", [part(0, b"cc", true)]);
    assert!(!watch.has_changed().unwrap());
}

#[test]
fn the_target_duration_is_fixed_and_classic_playlists_have_no_parts() {
    let config = HlsConfig {
        low_latency: false,
        ..HlsConfig::default()
    };
    let reg = HlsRegistry::new(config);
    let (hls, generation) = reg.attach("classic");
    let mut h = hls.write().unwrap();
    h.apply_all(
        generation,
        SOURCE_RENDITION,
        [init(), seg(2.4, false), seg(1.0, false)],
    );
    let text = h.media_playlist(SOURCE_RENDITION).unwrap();
    assert!(text.contains("#EXT-X-TARGETDURATION:2\n"), "{text}");
    assert!(
        !text.contains("EXT-X-PART") && !text.contains("SERVER-CONTROL"),
        "{text}"
    );
}

proptest::proptest! {
    /// File names come from request paths: any name is a part or not, never a panic.
    #[test]
    fn any_file_name_is_looked_up_without_panicking(name in ".{0,80}") {
        let _ = parse_part_name(&name);
        let (hls, _) = low_latency_window();
        let h = hls.read().unwrap();
        let _ = h.file("360p", &name);
        let _ = h.file("360p", &format!("{}-{name}", h.instance));
    }
}
