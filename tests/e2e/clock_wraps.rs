//! Publisher clocks near their limits: RTMP timestamps crossing 2^24 ms (where the chunk header's
//! 24-bit field gives way to the extended timestamp, after 4 h 40 min) and 2^32 ms (where RTMP's
//! clock wraps to 0, after 49.7 days). The stream must play on without a gap, a jump or a
//! discontinuity: segments of the usual length whose presentation times follow each other.

use std::time::Duration;

use crate::common::*;
use crate::flv_publish::{read_flv, Publisher};

/// Publishes a 6 s clip whose clock starts `before_ms` before `boundary` and checks the
/// playlist and the segments' times.
fn publish_across(user: &str, boundary: u64, before_ms: u32) {
    let server = Server::start_passthrough(&[]);
    let key = server.add_key(user);
    let tags = read_flv(&source_clip(320, 180, 30, 6));
    let start = (boundary - u64::from(before_ms)) as u32;
    let mut publisher = Publisher::connect(&server.rtmp_url(&key)).expect("publish");
    publisher.send(&tags, start, true).expect("send");
    publisher.finish();
    let playlist = server.wait_endlist(user, "source", Duration::from_secs(20));
    let text = server.media_playlist(user).1;
    assert!(!text.contains("DISCONTINUITY"), "{text}");
    let durations: Vec<f64> = playlist
        .segments
        .iter()
        .map(|s| f64::from(s.duration))
        .collect();
    let total: f64 = durations.iter().sum();
    assert!(durations.len() >= 3, "{text}");
    assert!((5.0..=7.0).contains(&total), "{total} s in all:\n{text}");
    assert!(durations.iter().all(|d| *d > 0.5 && *d <= 2.5), "{text}");
    // Each segment starts where the previous one ended.
    let files = server.download_segments(user, "source", &playlist);
    let starts: Vec<f64> = files.iter().map(|f| first_video_pts(f).0).collect();
    for (i, pair) in starts.windows(2).enumerate() {
        let step = pair[1] - pair[0];
        assert!(
            (step - durations[i]).abs() < 0.1,
            "segment {} starts {step:.3} s after segment {i}, which lasts {:.3} s: {starts:?}",
            i + 1,
            durations[i]
        );
    }
    assert!(!server.logs().contains("panic"), "{}", server.logs());
}

#[test]
fn rtmp_timestamps_crossing_into_the_extended_field_play_on() {
    publish_across("ext24", 1 << 24, 2500);
}

#[test]
fn rtmp_timestamps_wrapping_at_2_32_ms_play_on() {
    publish_across("wrap32", 1 << 32, 2500);
}
