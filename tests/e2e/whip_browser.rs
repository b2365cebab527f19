//! WHIP publishes from headless Chromium's fake camera and microphone through the server's own
//! /publish page (tests/browser/publish.mjs), each test in its own network namespace with only
//! `lo`: codecs through the ladder, takeover both ways, a killed browser, five publishers on one
//! UDP port, revocation, and A/V sync with the page's test pattern.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    ffmpeg_publish, ffprobe, in_loopback_namespace, parse_master, play_in_chromium, wait_child,
    Server, Source,
};
use crate::record::{wait_recording, ADMIN};
use crate::whip::{finish_publisher, publish_in_chromium, stream};

/// Chromium publishes VP8 (alice) and H.264 (bob) at once on the one UDP port: both go through
/// the ladder into H.264 + AAC renditions that ffprobe reads and hls.js plays; the page's Stop
/// (DELETE) ends them with ENDLIST and a finished recording.
#[test]
fn chromium_publishes_vp8_and_h264_through_the_ladder() {
    if in_loopback_namespace(
        "whip_browser::chromium_publishes_vp8_and_h264_through_the_ladder",
        true,
    ) {
        return;
    }
    let server = Server::start_with(&[("LIVEGATE_HTTP_ADMIN_TOKEN", ADMIN)]);
    let alice = server.add_key("alice");
    let bob = server.add_key("bob");
    let started = Instant::now();
    let publisher = publish_in_chromium(
        &server,
        &[(&alice, "VP8"), (&bob, "H264")],
        &["--seconds", "12"],
    );
    let masters: Vec<_> = ["alice", "bob"]
        .into_iter()
        .map(|user| {
            let master = server.wait_master(user, Duration::from_secs(30));
            eprintln!("{user}: master after {:?}", started.elapsed());
            master
        })
        .collect();
    // Counted while both are surely live (the checks below take a while on a loaded machine).
    assert!(server.metric("livegate_whip_sessions") >= 2.0);
    for (user, master) in ["alice", "bob"].into_iter().zip(masters) {
        let master = parse_master(&master);
        let names: Vec<_> = master.variants.iter().map(|v| v.uri.clone()).collect();
        assert_eq!(
            names,
            ["360p/index.m3u8"],
            "{user}: one rung for a 640x360 camera"
        );
        let probe = ffprobe(&server.url(&format!("/live/{user}/360p/index.m3u8")));
        let codecs: Vec<(String, i64)> = probe["streams"]
            .as_array()
            .expect("streams")
            .iter()
            .map(|s| {
                (
                    s["codec_name"].as_str().unwrap_or("").to_string(),
                    s["height"].as_i64().unwrap_or(0),
                )
            })
            .collect();
        assert!(codecs.contains(&("h264".into(), 360)), "{user}: {codecs:?}");
        assert!(codecs.iter().any(|(c, _)| c == "aac"), "{user}: {codecs:?}");
        let s = stream(&server, user).expect("listed");
        assert_eq!(s["ingest"]["protocol"], "whip", "{s}");
    }
    let s = stream(&server, "alice").unwrap();
    assert_eq!(s["ingest"]["video_codec"], "VP8", "{s}");
    assert_eq!(
        stream(&server, "bob").unwrap()["ingest"]["video_codec"],
        "H.264"
    );
    let (played, report) = play_in_chromium(&server.url("/live/alice/index.m3u8"), 3);
    assert!(played, "hls.js plays the WHIP stream: {report}");

    let report = finish_publisher(publisher, Duration::from_secs(60));
    eprintln!("publisher: {report}");
    for user in ["alice", "bob"] {
        server.wait_endlist(user, "360p", Duration::from_secs(15));
        let manifest = wait_recording(&server, user, "finished", Duration::from_secs(20));
        assert!(
            manifest["duration_secs"].as_f64().unwrap_or(0.0) >= 8.0,
            "{manifest}"
        );
    }
    assert!(server.metric("livegate_whip_sessions_ended_total{reason=\"deleted\"}") >= 2.0);
    assert!(server.metric("livegate_whip_keyframe_requests_total{reason=\"pli\"}") >= 1.0);
}

/// VP9 (profile 0) from Chromium through the ladder.
#[test]
fn chromium_publishes_vp9() {
    if in_loopback_namespace("whip_browser::chromium_publishes_vp9", true) {
        return;
    }
    let server = Server::start();
    let key = server.add_key("dora");
    let publisher = publish_in_chromium(&server, &[(&key, "VP9")], &["--seconds", "6"]);
    server.wait_master("dora", Duration::from_secs(30));
    let probe = ffprobe(&server.url("/live/dora/360p/index.m3u8"));
    assert!(probe.to_string().contains("\"h264\""), "{probe}");
    assert_eq!(
        stream(&server, "dora").unwrap()["ingest"]["video_codec"],
        "VP9"
    );
    finish_publisher(publisher, Duration::from_secs(40));
    server.wait_endlist("dora", "360p", Duration::from_secs(15));
}

/// WHIP takes over a live RTMP stream and RTMP takes it back, as RTMP reconnects do: viewers
/// stay on the same playlist URLs.
#[test]
fn whip_and_rtmp_take_over_from_each_other() {
    if in_loopback_namespace(
        "whip_browser::whip_and_rtmp_take_over_from_each_other",
        true,
    ) {
        return;
    }
    let server = Server::start();
    let key = server.add_key("erin");
    let rtmp = ffmpeg_publish(
        &server.rtmp_url(&key),
        &Source {
            seconds: 60.0,
            width: 640,
            height: 360,
            ..Source::default()
        },
    )
    .spawn()
    .expect("ffmpeg");
    server.wait_master("erin", Duration::from_secs(20));
    let first = stream(&server, "erin").unwrap()["session_id"].clone();

    let publisher = publish_in_chromium(
        &server,
        &[(&key, "VP8")],
        &["--seconds", "8", "--end", "leave"],
    );
    server.wait_until(Duration::from_secs(30), "WHIP takes over", || {
        stream(&server, "erin")
            .is_some_and(|s| s["session_id"] != first && s["ingest"]["protocol"] == "whip")
    });
    // The RTMP publisher was disconnected.
    let (_, err) = wait_child(rtmp, Duration::from_secs(10));
    assert_ne!(err, "timed out", "ffmpeg was disconnected by the takeover");
    let whip_session = stream(&server, "erin").unwrap()["session_id"].clone();

    // And back: RTMP takes over the WHIP session.
    let mut again = ffmpeg_publish(
        &server.rtmp_url(&key),
        &Source {
            seconds: 8.0,
            width: 640,
            height: 360,
            ..Source::default()
        },
    )
    .spawn()
    .expect("ffmpeg");
    server.wait_until(Duration::from_secs(20), "RTMP takes over", || {
        stream(&server, "erin")
            .is_some_and(|s| s["session_id"] != whip_session && s["session_id"] != first)
    });
    server.wait_until(
        Duration::from_secs(10),
        "the WHIP session ends as taken over",
        || server.metric("livegate_whip_sessions_ended_total{reason=\"taken_over\"}") >= 1.0,
    );
    let (_, body) = server.get("/live/erin/index.m3u8");
    assert!(
        body.contains("#EXT-X-STREAM-INF"),
        "viewers keep the same master: {body}"
    );
    let _ = again.wait();
    let _ = finish_publisher(publisher, Duration::from_secs(40));
}

/// A browser that vanishes without DELETE (killed: no DTLS close either) ends the stream within
/// the idle timeout, exactly as an RTMP disconnect does.
#[test]
fn a_killed_browser_ends_the_stream_within_the_idle_timeout() {
    if in_loopback_namespace(
        "whip_browser::a_killed_browser_ends_the_stream_within_the_idle_timeout",
        true,
    ) {
        return;
    }
    let server = Server::start_with(&[("LIVEGATE_WHIP_IDLE_TIMEOUT_SECS", "3")]);
    let key = server.add_key("finn");
    let publisher = publish_in_chromium(
        &server,
        &[(&key, "H264")],
        &["--seconds", "4", "--end", "kill"],
    );
    server.wait_master("finn", Duration::from_secs(30));
    finish_publisher(publisher, Duration::from_secs(30));
    let killed = Instant::now();
    server.wait_endlist("finn", "360p", Duration::from_secs(15));
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "ended {took:?} after the kill"
    );
    assert!(server.metric("livegate_whip_sessions_ended_total{reason=\"idle_timeout\"}") >= 1.0);
}

/// Five WebRTC publishers at once share the one UDP port.
#[test]
fn five_publishers_share_one_udp_port() {
    if in_loopback_namespace("whip_browser::five_publishers_share_one_udp_port", true) {
        return;
    }
    let server = Server::start_with(&[
        ("LIVEGATE_TRANSCODE_MAX_LADDERS", "5"),
        ("LIVEGATE_HTTP_ADMIN_TOKEN", ADMIN),
    ]);
    let users = ["p1", "p2", "p3", "p4", "p5"];
    let keys: Vec<String> = users.iter().map(|u| server.add_key(u)).collect();
    let pages: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "VP8")).collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/publish.mjs");
    let urls = pages.iter().map(|(key, codec)| {
        server.url(&format!(
            "/publish?key={key}&codec={codec}&auto=1&width=320&height=180"
        ))
    });
    let publisher = Command::new("node")
        .arg(script)
        .args(["--seconds", "6"])
        .args(urls)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node");
    for user in users {
        server.wait_master(user, Duration::from_secs(40));
    }
    assert_eq!(server.metric("livegate_whip_sessions"), 5.0);
    // Revoking a key ends that user's WebRTC session and stream, and only that one.
    let (status, _) = server.request("DELETE", "/api/v1/keys/p5", Some(ADMIN), None);
    assert_eq!(status, 204);
    let first = parse_master(&server.get("/live/p5/index.m3u8").1).variants[0]
        .uri
        .clone();
    let rung = first.trim_end_matches("/index.m3u8");
    server.wait_endlist("p5", rung, Duration::from_secs(10));
    assert_eq!(server.metric("livegate_whip_sessions"), 4.0);
    assert!(server.metric("livegate_whip_sessions_ended_total{reason=\"stopped\"}") >= 1.0);
    let report = finish_publisher(publisher, Duration::from_secs(60));
    assert_eq!(report.as_array().map(|a| a.len()), Some(5), "{report}");
    for user in &users[..4] {
        assert!(
            stream(&server, user).is_none(),
            "{user} ended by its DELETE"
        );
    }
}

/// Times (seconds) where `file`'s picture turns white (mean luma above mid-grey).
fn flash_times(file: &Path) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-f", "lavfi", "-show_entries"])
        .args([
            "frame=pts_time:frame_tags=lavfi.signalstats.YAVG",
            "-of",
            "csv=p=0",
        ])
        .arg(format!("movie={},signalstats", file.display()))
        .output()
        .expect("ffprobe");
    let mut times = Vec::new();
    let mut bright = false;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut parts = line.split(',');
        let (Some(t), Some(y)) = (parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(t), Ok(y)) = (t.parse::<f64>(), y.parse::<f64>()) else {
            continue;
        };
        if y > 128.0 && !bright {
            times.push(t);
        }
        bright = y > 128.0;
    }
    times
}

/// What ffprobe says is wrong with `file`, and its streams, for a failure's message.
fn probe_errors(file: &Path) -> String {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height,nb_frames",
        ])
        .args(["-of", "compact"])
        .arg(file)
        .output()
        .expect("ffprobe");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Times (seconds) where `file`'s audio turns from silence to a tone.
fn beep_times(file: &Path) -> Vec<f64> {
    let out = Command::new("ffmpeg")
        // -copyts: times on the file's own timeline, as the movie source reads the video.
        .args(["-hide_banner", "-nostats", "-copyts", "-i"])
        .arg(file)
        .args([
            "-vn",
            "-af",
            "silencedetect=n=-40dB:d=0.2",
            "-f",
            "null",
            "-",
        ])
        .output()
        .expect("ffmpeg");
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.split("silence_end: ").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The publish page's test pattern (a white flash with a beep every 2 s, both timed by one
/// clock in the page) through WebRTC and the ladder: in the HLS, each beep starts within 100 ms
/// of its flash. (Chromium's file-backed fake camera and microphone loop independently, so
/// their A/V phase is not a reference.)
#[test]
fn audio_and_video_stay_in_sync_through_whip() {
    if in_loopback_namespace(
        "whip_browser::audio_and_video_stay_in_sync_through_whip",
        true,
    ) {
        return;
    }
    check_sync(10, None);
}

/// The server frozen for 7 s mid-stream (SIGSTOP: a starved machine, a long GC-like pause):
/// the packets queued meanwhile arrive in one burst, the ladder falls behind and drops until a
/// keyframe. Afterwards audio and video are still in sync, and no segment outgrows the target.
#[test]
fn audio_and_video_stay_in_sync_after_the_server_stalls() {
    if in_loopback_namespace(
        "whip_browser::audio_and_video_stay_in_sync_after_the_server_stalls",
        true,
    ) {
        return;
    }
    check_sync(26, Some(Duration::from_secs(7)));
}

fn check_sync(seconds: u32, stall: Option<Duration>) {
    // Every segment stays listed until the end: the whole stream is checked.
    let server = Server::start_with(&[("LIVEGATE_HLS_WINDOW", "30")]);
    let dir = server.dir.path();
    let key = server.add_key("sync");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/publish.mjs");
    let publisher = Command::new("node")
        .arg(script)
        .args(["--seconds", &seconds.to_string()])
        .arg(server.url(&format!(
            "/publish?key={key}&codec=VP8&auto=1&width=320&height=240&source=pattern"
        )))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node");
    if let Some(stall) = stall {
        server.wait_master("sync", Duration::from_secs(30));
        std::thread::sleep(Duration::from_secs(5));
        let pid = server.pid().to_string();
        let signal = |s: &str| {
            let ok = Command::new("kill").args([s, &pid]).status().expect("kill");
            assert!(ok.success(), "kill {s}");
        };
        signal("-STOP");
        std::thread::sleep(stall);
        signal("-CONT");
    }
    let report = finish_publisher(publisher, Duration::from_secs(90));
    eprintln!("publisher: {report}");
    // The page drew its flashes (else the failure is the browser's, not livegate's).
    assert!(
        report[0]["pattern"]["flashes"].as_u64().unwrap_or(0) >= 3,
        "the page's pattern: {report}"
    );
    let master = parse_master(&server.wait_master("sync", Duration::from_secs(5)));
    let rung = master.variants[0]
        .uri
        .trim_end_matches("/index.m3u8")
        .to_string();
    let playlist = server.wait_endlist("sync", &rung, Duration::from_secs(15));
    let durations: Vec<f32> = playlist.segments.iter().map(|s| s.duration).collect();
    assert!(
        durations
            .iter()
            .all(|&d| (d.round() as u64) <= playlist.target_duration),
        "EXTINF {durations:?} over the target {}",
        playlist.target_duration
    );
    // The audio joins the first segment, even when it starts a few ms after the video: one
    // init segment, no discontinuity.
    let mut maps: Vec<&str> = playlist
        .segments
        .iter()
        .filter_map(|s| s.map.as_ref().map(|m| m.uri.as_str()))
        .collect();
    maps.dedup();
    assert!(
        maps.len() == 1 && playlist.segments.iter().all(|s| !s.discontinuity),
        "one init, no discontinuity: {maps:?}, {durations:?}"
    );
    // One file: the init segment, then every media segment.
    let files = server.download_segments("sync", &rung, &playlist);
    let init_len = {
        let (_, init) = server.get_bytes(&format!(
            "/live/sync/{rung}/{}",
            playlist.segments[0].map.as_ref().expect("init").uri
        ));
        init.len()
    };
    let mut whole = std::fs::read(&files[0]).unwrap();
    for f in &files[1..] {
        whole.extend_from_slice(&std::fs::read(f).unwrap()[init_len..]);
    }
    let joined = dir.join("sync.mp4");
    std::fs::write(&joined, whole).unwrap();
    let flashes = flash_times(&joined);
    let beeps = beep_times(&joined);
    assert!(
        flashes.len() >= 3,
        "flashes {flashes:?}, beeps {beeps:?} in {} segments {durations:?}: {}",
        files.len(),
        probe_errors(&joined)
    );
    let offsets: Vec<f64> = flashes
        .iter()
        .filter_map(|f| {
            beeps
                .iter()
                .map(|b| b - f)
                .min_by(|x, y| x.abs().total_cmp(&y.abs()))
        })
        .collect();
    eprintln!("A/V offsets (audio − video, s): {offsets:?}");
    let mut sorted = offsets.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    assert!(
        median.abs() < 0.1,
        "A/V offset {median:.3} s: flashes {flashes:?}, beeps {beeps:?}"
    );
    if stall.is_some() {
        // The last flashes, well after the stall, are in sync too.
        let tail = &offsets[offsets.len().saturating_sub(3)..];
        assert!(
            tail.iter().all(|o| o.abs() < 0.1),
            "A/V offsets after the stall {tail:?}"
        );
    }
}
