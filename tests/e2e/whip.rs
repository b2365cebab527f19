//! WHIP ingest (RFC 9725) end to end: the signalling's status codes against a real server with
//! canned offers (Chromium's, OBS's), and real WebRTC publishes from headless Chromium's fake
//! camera through the server's own /publish page — inside a network namespace with only `lo`.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    ffmpeg_publish, ffprobe, in_loopback_namespace, parse_master, play_in_chromium, wait_child,
    Server, Source,
};
use crate::record::{wait_recording, ADMIN};

const CHROMIUM_OFFER: &str = include_str!("../../src/ingest/whip/testdata/chromium-offer.sdp");
const OBS_OFFER: &str = include_str!("../../src/ingest/whip/testdata/obs-offer.sdp");

struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

fn call(server: &Server, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let url = if path.starts_with("http") {
        path.to_string()
    } else {
        server.url(path)
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .allow_non_standard_methods(true)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut request = ureq::http::Request::builder().method(method).uri(&url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(body.as_bytes().to_vec()).expect("request");
    match agent.run(request) {
        Ok(mut r) => Reply {
            status: r.status().as_u16(),
            headers: r
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: r.body_mut().read_to_string().unwrap_or_default(),
        },
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

fn offer(server: &Server, path: &str, key: &str, sdp: &str) -> Reply {
    let auth = format!("Bearer {key}");
    call(
        server,
        "POST",
        path,
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", &auth),
        ],
        sdp,
    )
}

fn metric(server: &Server, name_and_labels: &str) -> f64 {
    let text = server.get("/metrics").1;
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn stream(server: &Server, user: &str) -> Option<serde_json::Value> {
    let (_, body) = server.get("/api/v1/streams");
    let list: serde_json::Value = serde_json::from_str(&body).ok()?;
    list.as_array()?.iter().find(|s| s["name"] == user).cloned()
}

/// Headless Chromium publishing from its fake devices through `/publish` (tests/browser/publish.mjs).
fn publish_in_chromium(server: &Server, pages: &[(&str, &str)], extra: &[&str]) -> Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/publish.mjs");
    let urls = pages.iter().map(|(key, codec)| {
        server.url(&format!(
            "/publish?key={key}&codec={codec}&auto=1&width=640&height=360"
        ))
    });
    Command::new("node")
        .arg(script)
        .args(extra)
        .args(urls)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node")
}

fn finish_publisher(child: Child, timeout: Duration) -> serde_json::Value {
    let out = {
        let start = Instant::now();
        let mut child = child;
        while child.try_wait().ok().flatten().is_none() && start.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        child.wait_with_output().expect("publisher output")
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(serde_json::Value::Null);
    assert!(
        out.status.success(),
        "publisher failed: {report}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    report
}

#[test]
fn signalling_answers_with_the_status_codes_rfc_9725_names() {
    let server = Server::start_with(&[
        ("LIVEGATE_TRANSCODE_ENABLED", "false"),
        ("LIVEGATE_WHIP_CONNECT_TIMEOUT_SECS", "2"),
    ]);
    let key = server.add_key("alice");
    let bob = server.add_key("bob");

    // Discovery and CORS preflight.
    let r = call(
        &server,
        "OPTIONS",
        "/whip/alice",
        &[("Origin", "https://site.example")],
        "",
    );
    assert_eq!(r.status, 204);
    assert_eq!(r.headers["accept-post"], "application/sdp");
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    assert!(r.headers["access-control-allow-headers"].contains("Authorization"));
    assert!(r.headers["access-control-allow-methods"].contains("PATCH"));

    // Credentials: none, wrong, another user's.
    let r = call(
        &server,
        "POST",
        "/whip/alice",
        &[("Content-Type", "application/sdp")],
        CHROMIUM_OFFER,
    );
    assert_eq!(r.status, 401);
    assert!(
        r.headers["www-authenticate"].starts_with("Bearer"),
        "{:?}",
        r.headers
    );
    let wrong = "lg_0123456789abcdef0123456789abcdef01234567";
    assert_eq!(
        offer(&server, "/whip/alice", wrong, CHROMIUM_OFFER).status,
        401
    );
    let logs = server.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("unknown stream key"))
        .expect("a log line for the wrong key");
    assert!(line.contains("alice"), "names the user: {line}");
    assert!(!logs.contains(wrong), "the key is never logged in full");
    assert_eq!(
        offer(&server, "/whip/alice", &bob, CHROMIUM_OFFER).status,
        403
    );

    // Bodies: wrong type, not SDP, nothing usable, too much, too large.
    let auth = format!("Bearer {key}");
    let r = call(
        &server,
        "POST",
        "/whip/alice",
        &[("Content-Type", "text/plain"), ("Authorization", &auth)],
        CHROMIUM_OFFER,
    );
    assert_eq!(r.status, 415);
    assert_eq!(offer(&server, "/whip/alice", &key, "hello").status, 400);
    let av1_only = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 45\r\na=sendonly\r\na=rtpmap:45 AV1/90000\r\n";
    let r = offer(&server, "/whip/alice", &key, av1_only);
    assert_eq!(r.status, 406, "{}", r.body);
    assert!(r.body.contains("av1"), "names the codec: {}", r.body);
    let video = CHROMIUM_OFFER.find("m=video").expect("video section");
    let two_videos = format!("{}{}", CHROMIUM_OFFER, &CHROMIUM_OFFER[video..]);
    assert_eq!(offer(&server, "/whip/alice", &key, &two_videos).status, 422);
    let huge = format!(
        "{CHROMIUM_OFFER}{}",
        "a=x-padding:0123456789\r\n".repeat(4000)
    );
    assert_eq!(offer(&server, "/whip/alice", &key, &huge).status, 413);
    assert_eq!(call(&server, "GET", "/whip/alice", &[], "").status, 405);

    // A live RTMP stream of alice, then a WHIP offer that is answered but never connects.
    let mut rtmp = ffmpeg_publish(
        &server.rtmp_url(&key),
        &Source {
            seconds: 30.0,
            width: 320,
            height: 180,
            ..Source::default()
        },
    )
    .spawn()
    .expect("ffmpeg");
    server.wait_master("alice", Duration::from_secs(20));
    let live_session = stream(&server, "alice").expect("alice live")["session_id"].clone();

    let r = offer(&server, "/whip/alice", &key, CHROMIUM_OFFER);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/sdp");
    let location = r.headers["location"].clone();
    let prefix = format!("http://127.0.0.1:{}/whip/alice/", server.http_port);
    assert!(
        location.starts_with(&prefix),
        "absolute Location: {location}"
    );
    assert!(
        location[prefix.len()..].len() >= 32,
        "unguessable id: {location}"
    );
    let etag = r.headers["etag"].clone();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong ETag: {etag}"
    );
    assert!(r.headers["access-control-expose-headers"].contains("Location"));
    assert!(r.body.contains("a=ice-lite"), "{}", r.body);
    let candidate = format!("127.0.0.1 {} typ host", server.whip_port);
    assert!(
        r.body.contains(&candidate),
        "every server candidate: {}",
        r.body
    );

    // Trickle: preconditions, ICE restart, a candidate.
    let frag = "a=ice-ufrag:yxqr\r\na=ice-pwd:nBFsTKU/kTvaA+FeXVtU45vF\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 2122194687 127.0.0.1 40000 typ host\r\n";
    let trickle = |if_match: Option<&str>, body: &str, ctype: &str| {
        let mut h = vec![("Content-Type", ctype), ("Authorization", auth.as_str())];
        if let Some(m) = if_match {
            h.push(("If-Match", m));
        }
        call(&server, "PATCH", &location, &h, body).status
    };
    let sdpfrag = "application/trickle-ice-sdpfrag";
    assert_eq!(trickle(None, frag, sdpfrag), 428);
    assert_eq!(trickle(Some("\"other\""), frag, sdpfrag), 412);
    assert_eq!(trickle(Some(&etag), frag, "application/sdp"), 415);
    assert_eq!(
        trickle(Some(&etag), &frag.replace("yxqr", "new1"), sdpfrag),
        422
    );
    assert_eq!(trickle(Some(&etag), frag, sdpfrag), 204);
    let wrong_auth = format!("Bearer {bob}");
    assert_eq!(
        call(
            &server,
            "DELETE",
            &location,
            &[("Authorization", &wrong_auth)],
            ""
        )
        .status,
        401
    );

    // POST /whip takes the user from the key (OBS's offer: no candidates).
    let r = offer(&server, "/whip", &key, OBS_OFFER);
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(
        r.headers["location"].contains("/whip/alice/"),
        "{:?}",
        r.headers
    );

    // Neither connects: both are dropped after connect_timeout_secs, and the live RTMP stream
    // is untouched.
    server.wait_until(Duration::from_secs(10), "connect timeouts", || {
        metric(
            &server,
            "livegate_whip_failures_total{reason=\"connect_timeout\"}",
        ) >= 2.0
    });
    let now = stream(&server, "alice").expect("alice still live");
    assert_eq!(
        now["session_id"], live_session,
        "the RTMP session was not taken over"
    );
    assert_eq!(
        call(
            &server,
            "DELETE",
            &location,
            &[("Authorization", &auth)],
            ""
        )
        .status,
        404,
        "the dropped session is gone"
    );
    let _ = rtmp.kill();
    let _ = rtmp.wait();
}

#[test]
fn requests_are_rate_limited_per_address() {
    let server = Server::start_with(&[("LIVEGATE_WHIP_REQUESTS_PER_MINUTE", "3")]);
    let key = server.add_key("carol");
    for _ in 0..3 {
        assert_eq!(offer(&server, "/whip/carol", &key, "bad").status, 400);
    }
    let r = offer(&server, "/whip/carol", &key, "bad");
    assert_eq!(r.status, 429);
    assert!(r.headers.contains_key("retry-after"));
}

/// Chromium publishes VP8 (alice) and H.264 (bob) at once on the one UDP port: both go through
/// the ladder into H.264 + AAC renditions that ffprobe reads and hls.js plays; the page's Stop
/// (DELETE) ends them with ENDLIST and a finished recording.
#[test]
fn chromium_publishes_vp8_and_h264_through_the_ladder() {
    if in_loopback_namespace(
        "whip::chromium_publishes_vp8_and_h264_through_the_ladder",
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
    for user in ["alice", "bob"] {
        let master = parse_master(&server.wait_master(user, Duration::from_secs(30)));
        eprintln!("{user}: master after {:?}", started.elapsed());
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
    assert!(metric(&server, "livegate_whip_sessions ") >= 2.0);

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
    assert!(
        metric(
            &server,
            "livegate_whip_sessions_ended_total{reason=\"deleted\"}"
        ) >= 2.0
    );
    assert!(
        metric(
            &server,
            "livegate_whip_keyframe_requests_total{reason=\"pli\"}"
        ) >= 1.0
    );
}

/// VP9 (profile 0) from Chromium through the ladder.
#[test]
fn chromium_publishes_vp9() {
    if in_loopback_namespace("whip::chromium_publishes_vp9", true) {
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
    if in_loopback_namespace("whip::whip_and_rtmp_take_over_from_each_other", true) {
        return;
    }
    let server = Server::start();
    let key = server.add_key("erin");
    let mut rtmp = ffmpeg_publish(
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
    let (_, _) = wait_child(rtmp_take(&mut rtmp), Duration::from_secs(10));
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
        || {
            metric(
                &server,
                "livegate_whip_sessions_ended_total{reason=\"taken_over\"}",
            ) >= 1.0
        },
    );
    let (_, body) = server.get("/live/erin/index.m3u8");
    assert!(
        body.contains("#EXT-X-STREAM-INF"),
        "viewers keep the same master: {body}"
    );
    let _ = again.wait();
    let _ = finish_publisher(publisher, Duration::from_secs(40));
}

fn rtmp_take(child: &mut Child) -> Child {
    std::mem::replace(
        child,
        Command::new("true").spawn().expect("a placeholder child"),
    )
}

/// A browser that vanishes without DELETE (killed: no DTLS close either) ends the stream within
/// the idle timeout, exactly as an RTMP disconnect does.
#[test]
fn a_killed_browser_ends_the_stream_within_the_idle_timeout() {
    if in_loopback_namespace(
        "whip::a_killed_browser_ends_the_stream_within_the_idle_timeout",
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
    assert!(
        metric(
            &server,
            "livegate_whip_sessions_ended_total{reason=\"idle_timeout\"}"
        ) >= 1.0
    );
}

/// Five WebRTC publishers at once share the one UDP port.
#[test]
fn five_publishers_share_one_udp_port() {
    if in_loopback_namespace("whip::five_publishers_share_one_udp_port", true) {
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
    assert_eq!(metric(&server, "livegate_whip_sessions "), 5.0);
    // Revoking a key ends that user's WebRTC session and stream, and only that one.
    let (status, _) = server.request("DELETE", "/api/v1/keys/p5", Some(ADMIN), None);
    assert_eq!(status, 204);
    let first = parse_master(&server.get("/live/p5/index.m3u8").1).variants[0]
        .uri
        .clone();
    let rung = first.trim_end_matches("/index.m3u8");
    server.wait_endlist("p5", rung, Duration::from_secs(10));
    assert_eq!(metric(&server, "livegate_whip_sessions "), 4.0);
    assert!(
        metric(
            &server,
            "livegate_whip_sessions_ended_total{reason=\"stopped\"}"
        ) >= 1.0
    );
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
    if in_loopback_namespace("whip::audio_and_video_stay_in_sync_through_whip", true) {
        return;
    }
    let server = Server::start();
    let dir = server.dir.path();
    let key = server.add_key("sync");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/publish.mjs");
    let publisher = Command::new("node")
        .arg(script)
        .args(["--seconds", "10"])
        .arg(server.url(&format!(
            "/publish?key={key}&codec=VP8&auto=1&width=320&height=240&source=pattern"
        )))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node");
    let report = finish_publisher(publisher, Duration::from_secs(60));
    eprintln!("publisher: {report}");
    let master = parse_master(&server.wait_master("sync", Duration::from_secs(5)));
    let rung = master.variants[0]
        .uri
        .trim_end_matches("/index.m3u8")
        .to_string();
    let playlist = server.wait_endlist("sync", &rung, Duration::from_secs(15));
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
    assert!(flashes.len() >= 3, "flashes {flashes:?}");
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
}
