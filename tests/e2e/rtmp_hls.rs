//! RTMP in (real ffmpeg), HLS out (ffprobe, hls.js in Chromium), keys, takeover, isolation.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;

fn segment_uris(p: &m3u8_rs::MediaPlaylist) -> Vec<String> {
    p.segments.iter().map(|s| s.uri.clone()).collect()
}

#[test]
fn publish_produces_standard_hls_that_ends_with_endlist() {
    let server = Server::start_passthrough(&[]);
    let key = server.add_key("alice");
    let src = Source {
        seconds: 7.0,
        ..Source::default()
    };
    let started = Instant::now();
    let publisher = ffmpeg_publish(&server.rtmp_url(&key), &src)
        .spawn()
        .expect("ffmpeg");
    let master_text = server.wait_master("alice", Duration::from_secs(15));
    eprintln!(
        "first master playlist after {:.2} s",
        started.elapsed().as_secs_f64()
    );

    // Master: every attribute players rely on.
    let master = parse_master(&master_text);
    assert_eq!(master.variants.len(), 1, "{master_text}");
    let v = &master.variants[0];
    assert!(v.bandwidth > 100_000, "{master_text}");
    assert!(v.average_bandwidth.is_some_and(|a| a <= v.bandwidth));
    let codecs = v.codecs.clone().unwrap_or_default();
    assert!(
        codecs.starts_with("avc1.64") && codecs.ends_with(",mp4a.40.2"),
        "CODECS from the real SPS (High) and ASC (LC): {codecs}"
    );
    let res = v.resolution.expect("RESOLUTION");
    assert_eq!((res.width, res.height), (640, 360));
    assert!(v.frame_rate.is_some_and(|f| (f - 30.0).abs() < 0.5));
    assert!(master.independent_segments);

    // The stream is listed by the API while live.
    let (status, body) = server.get("/api/v1/streams");
    assert_eq!(status, 200);
    let streams: serde_json::Value = serde_json::from_str(&body).unwrap();
    let s = &streams[0];
    assert_eq!(s["name"], "alice");
    assert_eq!(s["video_codec"].as_str().unwrap()[..6], *"avc1.6");
    assert_eq!(s["audio_codec"], "mp4a.40.2");
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(640), Some(360))
    );
    assert!(s["fps"].as_f64().is_some_and(|f| (f - 30.0).abs() < 0.5));
    assert!(s["ingest_bitrate"].as_u64().unwrap() > 50_000, "{s}");
    assert!(s.get("started_at").is_some());
    assert!(!body.contains(&key), "the API must not expose the key");

    // ffprobe reads the live master: H.264 with B-frames and AAC at the published size.
    let probe = ffprobe(&server.url("/live/alice/index.m3u8"));
    let streams = probe["streams"].as_array().unwrap();
    let video = streams
        .iter()
        .find(|s| s["codec_name"] == "h264")
        .expect("h264");
    assert_eq!(
        (video["width"].as_i64(), video["height"].as_i64()),
        (Some(640), Some(360))
    );
    assert!(
        video["has_b_frames"].as_i64().unwrap_or(0) > 0,
        "B-frames survive: {video}"
    );
    assert!(streams.iter().any(|s| s["codec_name"] == "aac"));

    // HLS responses carry CORS; playlists are not cached, segments are.
    let (_, headers, media_text) = server.get_with_headers("/live/alice/source/index.m3u8");
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(header("access-control-allow-origin"), "*");
    assert_eq!(header("cache-control"), "no-cache");
    assert_eq!(header("content-type"), "application/vnd.apple.mpegurl");
    let media = parse_media(&media_text);
    let first = &media.segments[0].uri;
    let (_, seg_headers, _) = server.get_with_headers(&format!("/live/alice/source/{first}"));
    assert!(seg_headers
        .iter()
        .any(|(k, v)| k == "cache-control" && v.contains("max-age")));
    assert!(seg_headers
        .iter()
        .any(|(k, v)| k == "access-control-allow-origin" && v == "*"));

    let (ok, err) = wait_child(publisher, Duration::from_secs(30));
    assert!(ok, "publisher failed: {err}");

    // ENDLIST once the publisher stops, with the last partial segment flushed.
    let mut ended = String::new();
    server.wait_until(Duration::from_secs(10), "ENDLIST", || {
        ended = server.media_playlist("alice").1;
        ended.contains("#EXT-X-ENDLIST")
    });
    let media = parse_media(&ended);
    assert!(media.end_list);
    let target = media.target_duration as f32;
    let mut total = 0.0;
    for s in &media.segments {
        assert!(
            s.duration <= target,
            "EXTINF {} > target {target}",
            s.duration
        );
        assert!(s.program_date_time.is_some(), "PDT on every segment");
        total += s.duration;
    }
    assert!(media.segments[0].map.is_some(), "EXT-X-MAP");
    assert!(
        (total - 7.0).abs() < 0.2,
        "segments add up to the published 7 s: {total}\n{ended}"
    );
    // Every listed segment and its init can be fetched and is fMP4.
    for uri in segment_uris(&media) {
        let (status, data) = server.get_bytes(&format!("/live/alice/source/{uri}"));
        assert_eq!(status, 200);
        assert_eq!(&data[4..8], b"moof", "{uri} starts with moof");
    }
    let init = &media.segments[0].map.as_ref().unwrap().uri;
    let (status, data) = server.get_bytes(&format!("/live/alice/source/{init}"));
    assert_eq!(status, 200);
    assert_eq!(&data[4..8], b"ftyp");
    let logs = server.logs();
    assert!(!logs.contains(&key), "the stream key appears in the log");
}

#[test]
fn wrong_and_revoked_keys_are_refused_without_leaking_them() {
    let server = Server::start_passthrough(&[]);
    let short = Source {
        seconds: 3.0,
        ..Source::default()
    };
    // A key that never existed.
    let bogus = "lg_00000000000000000000000000000000deadbeef";
    let (ok, err) = wait_child(
        ffmpeg_publish(&server.rtmp_url(bogus), &short)
            .spawn()
            .unwrap(),
        Duration::from_secs(20),
    );
    assert!(!ok, "publishing with a wrong key must fail");
    assert!(
        err.contains("invalid stream key"),
        "ffmpeg shows why: {err}"
    );

    // A revoked key: the refusal names the user.
    let key = server.add_key("bob");
    let out = server.cli(&["keys", "revoke", "bob"]);
    assert!(out.status.success());
    let (ok, err) = wait_child(
        ffmpeg_publish(&server.rtmp_url(&key), &short)
            .spawn()
            .unwrap(),
        Duration::from_secs(20),
    );
    assert!(!ok, "publishing with a revoked key must fail: {err}");
    assert_eq!(server.get("/live/bob/index.m3u8").0, 404);
    assert_eq!(server.get("/api/v1/streams").1, "[]");
    let logs = server.logs();
    assert!(logs.contains("unknown stream key"), "{logs}");
    assert!(
        logs.lines()
            .any(|l| l.contains("user=\"bob\"") && l.contains("revoked")),
        "the refusal names the user: {logs}"
    );
    assert!(
        !logs.contains(bogus) && !logs.contains(&key),
        "keys in the log"
    );
    let metrics = server.get("/metrics").1;
    assert!(
        metrics.contains("livegate_publish_refused_total{reason=\"unknown_key\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("livegate_publish_refused_total{reason=\"revoked_key\"} 1"),
        "{metrics}"
    );
}

#[test]
fn reconnect_with_the_same_key_takes_over() {
    let server = Server::start_passthrough(&[]);
    let key = server.add_key("carol");
    let long = Source {
        seconds: 30.0,
        ..Source::default()
    };
    let first = ffmpeg_publish(&server.rtmp_url(&key), &long)
        .spawn()
        .unwrap();
    server.wait_master("carol", Duration::from_secs(15));
    let before = parse_media(&server.media_playlist("carol").1);

    // The encoder "reconnects" while its old session is still open.
    let second = ffmpeg_publish(
        &server.rtmp_url(&key),
        &Source {
            seconds: 6.0,
            ..Source::default()
        },
    )
    .spawn()
    .unwrap();
    // The stale session is ended: its ffmpeg stops long before its 30 s.
    let (first_ok, _) = wait_child(first, Duration::from_secs(10));
    assert!(!first_ok, "the replaced publisher is disconnected");
    let (ok, err) = wait_child(second, Duration::from_secs(30));
    assert!(ok, "the new publisher runs to the end: {err}");

    let mut text = String::new();
    server.wait_until(Duration::from_secs(10), "ENDLIST after takeover", || {
        text = server.media_playlist("carol").1;
        text.contains("#EXT-X-ENDLIST")
    });
    let after = parse_media(&text);
    // One continuous playlist: sequence numbers kept going, a discontinuity marks the switch.
    assert!(after.segments.iter().any(|s| s.discontinuity), "{text}");
    assert!(after.media_sequence + after.segments.len() as u64 > before.segments.len() as u64);
    let logs = server.logs();
    assert!(logs.contains("takes over"), "{logs}");
}

#[test]
fn bad_input_ends_only_that_session() {
    let server = Server::start_passthrough(&[
        ("LIVEGATE_RTMP_HANDSHAKE_TIMEOUT_SECS", "1"),
        ("LIVEGATE_RTMP_PUBLISH_TIMEOUT_SECS", "2"),
    ]);
    let good_key = server.add_key("dave");
    let bad_key = server.add_key("erin");
    let good = ffmpeg_publish(
        &server.rtmp_url(&good_key),
        &Source {
            seconds: 8.0,
            ..Source::default()
        },
    )
    .spawn()
    .unwrap();
    server.wait_master("dave", Duration::from_secs(15));

    // 1. A publisher with a codec livegate does not take (Sorenson H.263 in FLV).
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=15",
            "-t",
            "3",
        ])
        .args(["-c:v", "flv1", "-f", "flv"])
        .arg(server.rtmp_url(&bad_key))
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unsupported codec is refused");

    // 2. Garbage instead of a handshake.
    let mut garbage = TcpStream::connect(("127.0.0.1", server.rtmp_port)).unwrap();
    garbage.write_all(&[0x42; 4096]).expect("write garbage");
    garbage
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sink = [0u8; 8192];
    let mut closed = false;
    for _ in 0..10 {
        match garbage.read(&mut sink) {
            Ok(0) | Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => continue,
        }
    }
    assert!(closed, "a garbage connection is closed");

    // 3. A client that connects and says nothing is dropped after the handshake timeout.
    let mut silent = TcpStream::connect(("127.0.0.1", server.rtmp_port)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let t = Instant::now();
    let n = silent.read(&mut sink).unwrap_or(0);
    assert_eq!(n, 0, "silent client closed");
    assert!(t.elapsed() < Duration::from_secs(4));

    // 4. A valid handshake followed by an AMF0 command too short to be one (this made rml_rtmp
    //    panic): the session ends with an error, nothing else is touched.
    let mut short_cmd = TcpStream::connect(("127.0.0.1", server.rtmp_port)).unwrap();
    short_cmd
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    rtmp_client_handshake(&mut short_cmd);
    let body = [0x02, 0x00, 0x07, b'c', b'o', b'n', b'n', b'e', b'c', b't'];
    let mut msg = vec![0x03, 0, 0, 0, 0, 0, body.len() as u8, 0x14, 0, 0, 0, 0];
    msg.extend_from_slice(&body);
    short_cmd.write_all(&msg).unwrap();
    let mut closed = false;
    for _ in 0..20 {
        match short_cmd.read(&mut sink) {
            Ok(0) | Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => continue,
        }
    }
    assert!(closed, "malformed command closes the session");

    // 5. A client that completes the handshake and trickles bytes (resetting the idle timer)
    //    but never publishes loses its connection slot at the publish deadline.
    let mut trickle = TcpStream::connect(("127.0.0.1", server.rtmp_port)).unwrap();
    trickle
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    rtmp_client_handshake(&mut trickle);
    let t = Instant::now();
    let mut dropped = false;
    while t.elapsed() < Duration::from_secs(6) {
        // One byte of a chunk header at a time: never a whole message.
        if trickle.write_all(&[0x03]).is_err() {
            dropped = true;
            break;
        }
        if let Ok(0) = trickle.read(&mut sink) {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "a connection that never publishes is closed");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // The good stream never noticed.
    let (ok, err) = wait_child(good, Duration::from_secs(30));
    assert!(ok, "good publisher: {err}");
    let mut text = String::new();
    server.wait_until(Duration::from_secs(10), "ENDLIST", || {
        text = server.media_playlist("dave").1;
        text.contains("#EXT-X-ENDLIST")
    });
    let media = parse_media(&text);
    let total: f32 = media.segments.iter().map(|s| s.duration).sum();
    assert!((total - 8.0).abs() < 0.2, "good stream complete: {total}");
    assert!(!media.segments.iter().any(|s| s.discontinuity));
    assert_eq!(server.get("/live/erin/index.m3u8").0, 404);
    let logs = server.logs();
    assert!(
        logs.contains("unsupported video codec Sorenson H.263"),
        "{logs}"
    );
    assert!(logs.contains("malformed RTMP message"), "{logs}");
    assert!(
        !logs
            .lines()
            .any(|l| l.contains(" ERROR ") && l.contains("panic")),
        "the parser's panic is contained, not an error: {logs}"
    );
    assert_eq!(server.get("/healthz").0, 200);
}

/// The client side of the RTMP handshake, with rml_rtmp.
fn rtmp_client_handshake(socket: &mut TcpStream) {
    use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
    let mut handshake = Handshake::new(PeerType::Client);
    socket
        .write_all(&handshake.generate_outbound_p0_and_p1().unwrap())
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).expect("handshake read");
        assert!(n > 0, "closed during handshake");
        match handshake.process_bytes(&buf[..n]).expect("handshake") {
            HandshakeProcessResult::InProgress { response_bytes } => {
                socket.write_all(&response_bytes).unwrap()
            }
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                socket.write_all(&response_bytes).unwrap();
                return;
            }
        }
    }
}

#[test]
fn hls_js_plays_the_stream_in_chromium() {
    let server = Server::start_passthrough(&[]);
    let key = server.add_key("frank");
    // Longer than a loaded machine takes to start Chromium and play; stopped once played.
    let mut publisher = ffmpeg_publish(
        &server.rtmp_url(&key),
        &Source {
            seconds: 60.0,
            ..Source::default()
        },
    )
    .spawn()
    .unwrap();
    server.wait_master("frank", Duration::from_secs(15));
    let (ok, report) = play_in_chromium(&server.url("/live/frank/index.m3u8"), 3);
    assert!(ok, "hls.js playback failed: {report}");
    assert_eq!(report["videoWidth"], 640, "{report}");
    assert_eq!(report["levels"][0]["height"], 360, "{report}");
    assert!(
        report["decodedFrames"].as_u64().unwrap_or(0) > 30,
        "{report}"
    );
    assert!(
        report["programDateTime"].as_f64().is_some(),
        "PDT reaches hls.js: {report}"
    );
    let _ = publisher.kill();
    let _ = publisher.wait();
}
