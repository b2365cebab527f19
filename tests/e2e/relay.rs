//! Relays against real RTMP peers: nginx-rtmp as the sink (plain and behind stunnel4 for RTMPS),
//! publishing with the real ffmpeg CLI and checking what arrived with ffprobe.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::sinks::{probe_file, NginxSink, Stunnel, TestCa};

const ADMIN: &str = "relay-admin-token";

fn start(env: &[(&str, &str)]) -> Server {
    let mut all = vec![
        ("LIVEGATE_HTTP_ADMIN_TOKEN", ADMIN),
        ("LIVEGATE_RECORD_ENABLED", "false"),
    ];
    all.extend_from_slice(env);
    Server::start_with(&all)
}

fn add_relay(server: &Server, body: serde_json::Value) -> serde_json::Value {
    let (status, text) = server.request(
        "POST",
        "/api/v1/relays",
        Some(ADMIN),
        Some(&body.to_string()),
    );
    assert_eq!(status, 201, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// The relays' status of `user`'s live stream (empty when not live or without relays), from the
/// admin view (errors and targets are not public).
fn relays_of(server: &Server, user: &str) -> Vec<serde_json::Value> {
    let streams: serde_json::Value = serde_json::from_str(
        &server
            .request("GET", "/api/v1/streams", Some(ADMIN), None)
            .1,
    )
    .unwrap_or_default();
    streams
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == user)
        .and_then(|s| s["relays"].as_array().cloned())
        .unwrap_or_default()
}

fn relay_status(server: &Server, user: &str, id: &str) -> serde_json::Value {
    relays_of(server, user)
        .into_iter()
        .find(|r| r["id"] == id)
        .unwrap_or_default()
}

/// Waits until the sink has a complete recording of `name` and returns (codecs, video packets).
fn wait_sink_recording(sink: &NginxSink, name: &str, index: usize) -> (Vec<String>, u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let files = sink.recordings(name);
        if let Some(file) = files.get(index) {
            let (codecs, packets) = probe_file(file);
            if packets > 0 {
                return (codecs, packets);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no recording #{index} of {name} at the sink: {files:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn relays_the_source_to_an_rtmp_sink_while_a_dead_target_only_reports_its_error() {
    let sink = NginxSink::start();
    let server = start(&[("LIVEGATE_TRANSCODE_ENABLED", "false")]);
    let key = server.add_key("alice");
    let secret = "relay-secret-0123456789";
    let live = add_relay(
        &server,
        serde_json::json!({"user": "alice", "platform": "custom", "url": sink.url(secret)}),
    );
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead = add_relay(
        &server,
        serde_json::json!({"user": "alice", "platform": "custom",
            "url": format!("rtmp://127.0.0.1:{closed_port}/app/dead-secret-0123456789")}),
    );
    // Listed redacted.
    let (_, listed) = server.request("GET", "/api/v1/relays?user=alice", Some(ADMIN), None);
    assert!(listed.contains(live["id"].as_str().unwrap()), "{listed}");
    assert!(
        !listed.contains(secret) && !listed.contains("dead-secret-0123456789"),
        "{listed}"
    );

    let clip = source_clip(640, 360, 30, 8);
    let publisher = publish_file(&server.rtmp_url(&key), &clip);
    let (live_id, dead_id) = (live["id"].as_str().unwrap(), dead["id"].as_str().unwrap());
    server.wait_until(Duration::from_secs(15), "the relay to go live", || {
        relay_status(&server, "alice", live_id)["state"] == "live"
    });
    server.wait_until(Duration::from_secs(15), "the dead target's error", || {
        let s = relay_status(&server, "alice", dead_id);
        s["reconnects"].as_u64().unwrap_or(0) >= 1
            && s["last_error"].as_str().unwrap_or("").contains("refused")
    });
    let (ok, err) = wait_child(publisher, Duration::from_secs(30));
    assert!(ok, "the publisher was disturbed: {err}");
    let playlist = server.wait_endlist("alice", "source", Duration::from_secs(10));
    let total: f32 = playlist.segments.iter().map(|s| s.duration).sum();
    assert!(total > 7.0, "live HLS {total} s");

    let (codecs, packets) = wait_sink_recording(&sink, secret, 0);
    assert!(
        codecs.contains(&"h264".to_string()) && codecs.contains(&"aac".to_string()),
        "{codecs:?}"
    );
    // 8 s at 30 fps, from the first keyframe on.
    assert!(
        (200..=245).contains(&packets),
        "{packets} video frames arrived"
    );
    let logs = server.logs();
    assert!(
        !logs.contains(secret) && !logs.contains("dead-secret-0123456789"),
        "a target key was logged"
    );
    let metrics = server.get("/metrics").1;
    let sample = |name: &str, id: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(&format!("relay=\"{id}\"")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    // Per-relay metrics: the dead target's reconnects and the live one's bytes.
    assert!(
        sample("livegate_relay_reconnects_total", dead_id) >= 1.0,
        "{metrics}"
    );
    assert!(
        sample("livegate_relay_bytes_total", live_id) > 500_000.0,
        "{metrics}"
    );
}

#[test]
fn rtmps_relay_through_stunnel_with_the_configured_ca() {
    let sink = NginxSink::start();
    let ca = TestCa::new();
    let tunnel = Stunnel::start(&ca, sink.port);
    let ca_file = ca.path("ca.pem");
    let server = start(&[
        ("LIVEGATE_TRANSCODE_ENABLED", "false"),
        ("LIVEGATE_RELAY_CA_FILE", &ca_file),
    ]);
    let key = server.add_key("bob");
    // `localhost`: the certificate is checked against the name sent with SNI.
    let url = format!("rtmps://localhost:{}/app/tls-key-0123456789", tunnel.port);
    let relay = add_relay(
        &server,
        serde_json::json!({"user": "bob", "platform": "custom", "url": url}),
    );
    let clip = source_clip(640, 360, 30, 6);
    let publisher = publish_file(&server.rtmp_url(&key), &clip);
    server.wait_until(
        Duration::from_secs(15),
        "the RTMPS relay to go live",
        || relay_status(&server, "bob", relay["id"].as_str().unwrap())["state"] == "live",
    );
    assert!(wait_child(publisher, Duration::from_secs(30)).0);
    let (codecs, packets) = wait_sink_recording(&sink, "tls-key-0123456789", 0);
    assert!(codecs.contains(&"h264".to_string()) && codecs.contains(&"aac".to_string()));
    assert!(packets >= 150, "{packets}");
}

#[test]
fn an_untrusted_rtmps_certificate_is_an_error_not_a_push() {
    let sink = NginxSink::start();
    let ca = TestCa::new();
    let tunnel = Stunnel::start(&ca, sink.port);
    // No relay.ca_file: the test CA is not trusted.
    let server = start(&[("LIVEGATE_TRANSCODE_ENABLED", "false")]);
    let key = server.add_key("carl");
    let url = format!("rtmps://localhost:{}/app/untrusted", tunnel.port);
    let relay = add_relay(
        &server,
        serde_json::json!({"user": "carl", "platform": "custom", "url": url}),
    );
    let clip = source_clip(640, 360, 30, 6);
    let publisher = publish_file(&server.rtmp_url(&key), &clip);
    server.wait_until(Duration::from_secs(15), "the certificate error", || {
        relay_status(&server, "carl", relay["id"].as_str().unwrap())["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("certificate")
    });
    assert!(wait_child(publisher, Duration::from_secs(30)).0);
    assert!(sink.recordings("untrusted").is_empty());
}

#[test]
fn a_sink_down_for_10s_gets_the_relay_back_while_the_publisher_goes_on() {
    let mut sink = NginxSink::start();
    let server = start(&[
        ("LIVEGATE_TRANSCODE_ENABLED", "false"),
        ("LIVEGATE_RELAY_MAX_BACKOFF_SECS", "2"),
    ]);
    let key = server.add_key("dana");
    let relay = add_relay(
        &server,
        serde_json::json!({"user": "dana", "platform": "custom", "url": sink.url("comeback")}),
    );
    let id = relay["id"].as_str().unwrap();
    let clip = source_clip(640, 360, 30, 30);
    let publisher = publish_file(&server.rtmp_url(&key), &clip);
    server.wait_until(Duration::from_secs(15), "the relay to go live", || {
        relay_status(&server, "dana", id)["state"] == "live"
    });
    std::thread::sleep(Duration::from_secs(2));
    sink.kill();
    server.wait_until(Duration::from_secs(15), "the relay to notice", || {
        let s = relay_status(&server, "dana", id);
        matches!(s["state"].as_str(), Some("reconnecting" | "connecting"))
            && s["last_error"].is_string()
    });
    std::thread::sleep(Duration::from_secs(10));
    sink.spawn();
    let restarted = Instant::now();
    server.wait_until(Duration::from_secs(15), "the relay to reconnect", || {
        let s = relay_status(&server, "dana", id);
        s["state"] == "live" && s["reconnects"].as_u64().unwrap_or(0) >= 1
    });
    eprintln!(
        "relay live again {:.1} s after the sink came back",
        restarted.elapsed().as_secs_f64()
    );
    let (ok, err) = wait_child(publisher, Duration::from_secs(40));
    assert!(ok, "the publisher was interrupted: {err}");
    let playlist = server.wait_endlist("dana", "source", Duration::from_secs(10));
    // The live window slides: count every segment the stream had (2 s each).
    let segments = playlist.media_sequence as usize + playlist.segments.len();
    assert!(segments >= 14, "live HLS had {segments} segments");
    // One recording before the outage and one after it, both playable.
    let (codecs, _) = wait_sink_recording(&sink, "comeback", 0);
    assert!(codecs.contains(&"h264".to_string()));
    let (codecs, packets) = wait_sink_recording(&sink, "comeback", 1);
    assert!(codecs.contains(&"h264".to_string()) && codecs.contains(&"aac".to_string()));
    assert!(
        packets >= 60,
        "after the reconnection only {packets} frames arrived"
    );
}

#[test]
fn query_targets_are_ignored_unless_enabled() {
    let sink = NginxSink::start();
    let preset = format!("rtmp://127.0.0.1:{}/app", sink.port);
    let clip = source_clip(640, 360, 30, 4);
    for allowed in [false, true] {
        let server = start(&[
            ("LIVEGATE_TRANSCODE_ENABLED", "false"),
            ("LIVEGATE_RELAY_PRESETS_TWITCH", &preset),
            (
                "LIVEGATE_RELAY_ALLOW_QUERY_TARGETS",
                if allowed { "true" } else { "false" },
            ),
        ]);
        let key = server.add_key("erin");
        let name = format!("query-{allowed}");
        let url = format!("{}?twitch={name}", server.rtmp_url(&key));
        let publisher = publish_file(&url, &clip);
        server.wait_master("erin", Duration::from_secs(15));
        std::thread::sleep(Duration::from_secs(1));
        let relays = relays_of(&server, "erin");
        assert!(wait_child(publisher, Duration::from_secs(20)).0);
        if allowed {
            assert_eq!(relays.len(), 1, "{relays:?}");
            assert_eq!(relays[0]["platform"], "twitch");
            let (codecs, _) = wait_sink_recording(&sink, &name, 0);
            assert!(codecs.contains(&"h264".to_string()));
        } else {
            assert!(relays.is_empty(), "{relays:?}");
            assert!(server
                .logs()
                .contains("relay targets in the publish URL ignored"));
            std::thread::sleep(Duration::from_secs(1));
            assert!(sink.recordings(&name).is_empty());
        }
        assert!(
            !server.logs().contains(&name),
            "the query's stream key was logged"
        );
    }
}

#[test]
fn a_rung_relay_pushes_that_rendition_and_removal_stops_it() {
    let _heavy = heavy();
    let sink = NginxSink::start();
    let server = start(&[]);
    let key = server.add_key("finn");
    let relay = add_relay(
        &server,
        serde_json::json!({"user": "finn", "platform": "custom", "url": sink.url("rung360"), "rung": "360p"}),
    );
    let id = relay["id"].as_str().unwrap();
    assert_eq!(relay["rung"], "360p");
    // A rung this 480p source does not get (never upscaled): the tallest it has, said so.
    let fallback = add_relay(
        &server,
        serde_json::json!({"user": "finn", "platform": "custom", "url": sink.url("rungend"), "rung": "720p"}),
    );
    let fallback_id = fallback["id"].as_str().unwrap();
    // A rung that is not in the ladder at all is refused when added.
    let (status, body) = server.request(
        "POST",
        "/api/v1/relays",
        Some(ADMIN),
        Some(&serde_json::json!({"user": "finn", "platform": "custom", "url": sink.url("x"), "rung": "4k"}).to_string()),
    );
    assert_eq!(status, 400, "{body}");
    let clip = source_clip(854, 480, 30, 10);
    let publisher = publish_file(&server.rtmp_url(&key), &clip);
    server.wait_until(Duration::from_secs(20), "the rung relay to go live", || {
        relay_status(&server, "finn", id)["state"] == "live"
    });
    let fallback_status = relay_status(&server, "finn", fallback_id);
    assert_eq!(fallback_status["rung"], "480p", "{fallback_status}");
    assert!(
        fallback_status["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("not produced"),
        "{fallback_status}"
    );
    std::thread::sleep(Duration::from_secs(3));
    let (status, body) = server.request(
        "DELETE",
        &format!("/api/v1/relays/finn/{id}"),
        Some(ADMIN),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"stopped_live_relay\":true"), "{body}");
    server.wait_until(Duration::from_secs(10), "the relay to stop", || {
        relay_status(&server, "finn", id)["state"] == "stopped"
    });
    assert!(wait_child(publisher, Duration::from_secs(30)).0);
    // The other relay stops by itself when the source ends.
    server.wait_until(
        Duration::from_secs(15),
        "the rung relay to stop with the source",
        || {
            server
                .logs()
                .lines()
                .any(|l| l.contains(&format!("id={fallback_id}")) && l.contains("relay stopped"))
        },
    );
    let file = &sink.recordings("rungend")[0];
    let streams = probe_streams(file.to_str().unwrap());
    assert!(
        streams.contains(&("h264".to_string(), 854, 480)),
        "{streams:?}"
    );
    assert!(server.get("/metrics").1.contains("livegate_relays_live 0"));
    let file = &sink.recordings("rung360")[0];
    let streams = probe_streams(file.to_str().unwrap());
    assert!(
        streams.contains(&("h264".to_string(), 640, 360)),
        "{streams:?}"
    );
    assert!(streams.iter().any(|(c, _, _)| c == "aac"), "{streams:?}");
}

#[test]
fn rtmps_ingest_accepts_a_tls_publisher() {
    let ca = TestCa::new();
    let tls_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{tls_port}");
    let (cert, key_file) = (ca.path("server.pem"), ca.path("server.key"));
    let server = start(&[
        ("LIVEGATE_TRANSCODE_ENABLED", "false"),
        ("LIVEGATE_RTMP_TLS_LISTEN", &listen),
        ("LIVEGATE_RTMP_TLS_CERT", &cert),
        ("LIVEGATE_RTMP_TLS_KEY", &key_file),
    ]);
    let key = server.add_key("gwen");
    let clip = source_clip(640, 360, 30, 4);
    let publisher = publish_file(&format!("rtmps://localhost:{tls_port}/live/{key}"), &clip);
    let (ok, err) = wait_child(publisher, Duration::from_secs(30));
    assert!(ok, "RTMPS publish failed: {err}");
    let playlist = server.wait_endlist("gwen", "source", Duration::from_secs(10));
    assert!(playlist.segments.len() >= 2);
    // Plain RTMP bytes on the TLS port are a failed TLS handshake, not a crash.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
    std::io::Write::write_all(&mut raw, &[3u8; 1537]).unwrap();
    drop(raw);
    server.wait_until(Duration::from_secs(5), "the TLS error in the log", || {
        server.logs().contains("TLS handshake failed")
    });
    assert_eq!(server.get("/healthz").0, 200);
    assert!(!server.logs().contains("panic"), "{}", server.logs());
}
