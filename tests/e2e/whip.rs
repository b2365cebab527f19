//! WHIP signalling (RFC 9725) against a real server: the status codes for canned offers
//! (Chromium's, OBS's), trickle, DELETE, CORS, rate limits, and an answered offer that never
//! connects. The helpers here are shared with `whip_browser.rs`.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{ffmpeg_publish, Server, Source};

const CHROMIUM_OFFER: &str = include_str!("../../src/ingest/whip/testdata/chromium-offer.sdp");
const OBS_OFFER: &str = include_str!("../../src/ingest/whip/testdata/obs-offer.sdp");

pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: String,
}

pub(crate) fn call(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
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

pub(crate) fn offer(server: &Server, path: &str, key: &str, sdp: &str) -> Reply {
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

pub(crate) fn stream(server: &Server, user: &str) -> Option<serde_json::Value> {
    let (_, body) = server.get("/api/v1/streams");
    let list: serde_json::Value = serde_json::from_str(&body).ok()?;
    list.as_array()?.iter().find(|s| s["name"] == user).cloned()
}

/// Headless Chromium publishing from its fake devices through `/publish` (tests/browser/publish.mjs).
pub(crate) fn publish_in_chromium(
    server: &Server,
    pages: &[(&str, &str)],
    extra: &[&str],
) -> Child {
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

pub(crate) fn finish_publisher(child: Child, timeout: Duration) -> serde_json::Value {
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
        server.metric("livegate_whip_failures_total{reason=\"connect_timeout\"}") >= 2.0
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
