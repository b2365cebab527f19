//! HEVC and AV1 over Enhanced RTMP (`hvc1`/`av01` FourCC with the ex-header bit, as OBS 30+
//! sends them), decoded once and served as the usual H.264 ladder; refused by name where no
//! ladder can serve them. The bitstreams are real encodes by Debian's ffmpeg (libx265,
//! libsvtav1), sent by the repository's own publisher (ffmpeg 5.1 cannot publish Enhanced RTMP).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use crate::flv_publish;

/// An MP4 of testsrc2 + sine at 426x240, 30 fps, 1 s GOP, in `codec` (hevc | av1) with AAC.
fn encoded_clip(codec: &str, seconds: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("clip dir");
    let path = dir.path().join(format!("{codec}.mp4"));
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=426x240:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string(), "-pix_fmt", "yuv420p"]);
    match codec {
        "hevc" => cmd.args([
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "log-level=error:keyint=30:min-keyint=30:scenecut=0:bframes=3",
            "-tag:v",
            "hvc1",
        ]),
        _ => cmd.args([
            "-c:v",
            "libsvtav1",
            "-preset",
            "12",
            "-g",
            "30",
            "-svtav1-params",
            "scd=0",
        ]),
    };
    let out = cmd
        .args(["-c:a", "aac", "-b:a", "96k"])
        .arg(&path)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "encoding {codec}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, path)
}

fn into_the_ladder(codec: &str, fourcc_prefix: &str) {
    let _cpu = heavy();
    let (_dir, clip) = encoded_clip(codec, 8);
    let tags = flv_publish::read_mp4_enhanced(&clip);
    assert!(
        tags.iter().any(|t| t.kind == 9 && t.body[0] & 0x80 != 0),
        "the publisher sends Enhanced RTMP video"
    );
    let server = Server::start();
    let user = format!("{codec}cam");
    let key = server.add_key(&user);
    let url = server.rtmp_url(&key);
    let publisher = std::thread::spawn(move || {
        let mut p = flv_publish::Publisher::connect(&url).expect("publish");
        p.send(&tags, 0, true).expect("send");
        p.finish();
    });
    server.wait_master(&user, Duration::from_secs(20));
    // The source as published: its codec string comes from the hvcC / av1C.
    let (_, streams) = server.get("/api/v1/streams");
    let streams: serde_json::Value = serde_json::from_str(&streams).expect("streams JSON");
    let source = streams
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == user.as_str()))
        .cloned()
        .unwrap_or_default();
    assert!(
        source["video_codec"]
            .as_str()
            .is_some_and(|c| c.starts_with(fourcc_prefix)),
        "{source}\n{}",
        server.logs()
    );
    assert_eq!(
        (source["width"].as_u64(), source["height"].as_u64()),
        (Some(426), Some(240))
    );
    // The transcoder decodes it once into one rung, keeping real time (read while the 8 s
    // publish is surely live: a slow browser start must not outlast it).
    let (_, streams) = server.get("/api/v1/streams");
    let streams: serde_json::Value = serde_json::from_str(&streams).expect("streams JSON");
    let transcode = streams
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == user.as_str()))
        .map(|s| s["transcode"].clone())
        .unwrap_or_default();
    assert_eq!(transcode["state"], "running", "{transcode}");
    assert_eq!(transcode["rungs"][0]["name"], "240p", "{transcode}");
    assert_eq!(transcode["dropped_frames"], 0, "{transcode}");
    // Media seconds per second of transcoder work (decode + ladder): the headroom.
    eprintln!("{codec} → ladder while live: {transcode}");
    // hls.js plays the ladder while it is live. Classic mode: the publish is short, and in
    // LL-HLS mode hls.js joins so near its end that fewer than 2 s of media may remain.
    let (ok, report) = play_with(
        &server.url(&format!("/live/{user}/index.m3u8")),
        2,
        -1,
        false,
        "{}",
    );
    assert!(
        ok,
        "hls.js plays the {codec} source through the ladder: {report}"
    );
    publisher.join().expect("publisher thread");

    // Smaller than every default rung: one rung at the source size, never upscaled, in H.264.
    let master = parse_master(&server.get(&format!("/live/{user}/index.m3u8")).1);
    assert_eq!(master.variants.len(), 1, "{master:?}");
    let variant = &master.variants[0];
    assert_eq!(variant.uri, "240p/index.m3u8");
    assert!(
        variant
            .codecs
            .as_deref()
            .is_some_and(|c| c.starts_with("avc1.") && c.contains("mp4a.40.2")),
        "{variant:?}"
    );
    let playlist = server.wait_endlist(&user, "240p", Duration::from_secs(20));
    let seconds: f32 = playlist.segments.iter().map(|s| s.duration).sum();
    assert!(seconds > 6.0, "{seconds} s of the 8 s source were served");
    let probed = probe_streams(&server.url(&format!("/live/{user}/240p/index.m3u8")));
    assert!(
        probed.contains(&("h264".to_string(), 426, 240)),
        "{probed:?}"
    );
    assert!(probed.iter().any(|(c, _, _)| c == "aac"), "{probed:?}");
    let logs = server.logs();
    assert!(!logs.contains("transcoder failed"), "{logs}");
}

#[test]
fn hevc_over_enhanced_rtmp_is_served_as_the_h264_ladder() {
    into_the_ladder("hevc", "hvc1.");
}

#[test]
fn av1_over_enhanced_rtmp_is_served_as_the_h264_ladder() {
    into_the_ladder("av1", "av01.");
}

#[test]
fn hevc_without_a_ladder_ends_the_session_naming_the_codec() {
    let (_dir, clip) = encoded_clip("hevc", 4);
    let tags = flv_publish::read_mp4_enhanced(&clip);
    let server = Server::start_passthrough(&[]);
    let key = server.add_key("nohevc");
    let mut p = flv_publish::Publisher::connect(&server.rtmp_url(&key)).expect("publish");
    // The server closes the connection once the codec is known; the send then fails.
    let _ = p.send(&tags, 0, true);
    server.wait_until(Duration::from_secs(10), "the session to end", || {
        server.get("/api/v1/streams").1.trim() == "[]"
    });
    let logs = server.logs();
    assert!(
        logs.contains("HEVC cannot be served as published"),
        "the log names the codec: {logs}"
    );
    let (status, _) = server.get("/live/nohevc/source/index.m3u8");
    assert_ne!(
        status, 200,
        "nothing of the HEVC stream is served as published"
    );
    drop(p); // the server closed the connection already
}
