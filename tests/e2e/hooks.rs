//! The operator's site: the external publish-authorization hook (a site that allows, refuses,
//! or does not answer in time, with the hook failing closed and failing open; for RTMP and
//! WHIP), and the signed webhooks it receives.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{ffmpeg_publish, wait_child, Server, Source};

/// A request the site saw: its head (request line and headers) and body.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    head: String,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// A site's endpoint: 200 for user `ok*`, 403 for `no*`, a 3 s wait for `slow*`.
/// Returns its URL and the requests it saw.
pub(crate) fn site() -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/livegate/authorize?token=site-secret",
        listener.local_addr().unwrap()
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { return };
            let log = log.clone();
            std::thread::spawn(move || {
                socket.set_read_timeout(Some(Duration::from_secs(10))).ok();
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                let (head, body) = loop {
                    let text = String::from_utf8_lossy(&data).into_owned();
                    if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if rest.len() >= length {
                            break (head.to_string(), rest[..length].to_string());
                        }
                    }
                    match socket.read(&mut buf) {
                        Ok(n) if n > 0 => data.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                };
                log.lock().unwrap().push(Seen {
                    head,
                    body: body.clone(),
                });
                let reply: &[u8] = if body.contains("\"user\":\"no") {
                    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                } else {
                    if body.contains("\"user\":\"slow") {
                        std::thread::sleep(Duration::from_secs(3));
                    }
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                };
                let _ = socket.write_all(reply);
            });
        }
    });
    (url, seen)
}

fn publishes(server: &Server, key: &str) -> bool {
    let child = ffmpeg_publish(
        &server.rtmp_url(key),
        &Source {
            width: 320,
            height: 180,
            seconds: 2.0,
            ..Source::default()
        },
    )
    .spawn()
    .expect("ffmpeg");
    wait_child(child, Duration::from_secs(30)).0
}

#[test]
fn the_site_allows_refuses_and_times_out_closed_or_open() {
    let (url, seen) = site();
    let closed = Server::start_with(&[
        ("LIVEGATE_TRANSCODE_ENABLED", "false"),
        ("LIVEGATE_HOOKS_PUBLISH_AUTH_URL", url.as_str()),
        ("LIVEGATE_HOOKS_PUBLISH_AUTH_TIMEOUT_MS", "500"),
    ]);
    let ok = closed.add_key("okay");
    let no = closed.add_key("nope");
    let slow = closed.add_key("slowpoke");
    assert!(publishes(&closed, &ok), "the site allows");
    assert!(!publishes(&closed, &no), "the site refuses");
    assert!(
        !publishes(&closed, &slow),
        "the site times out: fail closed"
    );
    let bodies: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.body.clone())
        .collect();
    assert!(
        bodies.iter().any(|b| b.contains("\"protocol\":\"rtmp\"")),
        "{bodies:?}"
    );
    assert!(
        bodies.iter().all(|b| !b.contains(&ok) && !b.contains(&no)),
        "the key is never sent"
    );
    let logs = closed.logs();
    assert!(logs.contains("refused by the site's authorization hook") && logs.contains("nope"));
    assert!(
        !logs.contains("site-secret"),
        "the hook URL's token is not logged"
    );
    let metrics = closed.get("/metrics").1;
    assert!(metrics.contains("reason=\"auth_hook_denied\""), "{metrics}");

    // WHIP asks the same hook: a refused user gets 403 before any WebRTC starts.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let offer = include_str!("../../src/ingest/whip/testdata/obs-offer.sdp");
    let r = agent
        .post(&closed.url("/whip/nope"))
        .header("Content-Type", "application/sdp")
        .header("Authorization", &format!("Bearer {no}"))
        .send(offer)
        .expect("POST");
    assert_eq!(r.status(), 403);
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.body.contains("\"protocol\":\"whip\"")));

    let open = Server::start_with(&[
        ("LIVEGATE_TRANSCODE_ENABLED", "false"),
        ("LIVEGATE_HOOKS_PUBLISH_AUTH_URL", url.as_str()),
        ("LIVEGATE_HOOKS_PUBLISH_AUTH_TIMEOUT_MS", "500"),
        ("LIVEGATE_HOOKS_PUBLISH_AUTH_FAIL_OPEN", "true"),
    ]);
    let slow = open.add_key("slowpoke");
    assert!(publishes(&open, &slow), "the site times out: fail open");
    let no = open.add_key("nope");
    assert!(!publishes(&open, &no), "fail open still honours a refusal");
}

pub(crate) const SECRET: &str = "e2e-webhook-secret-0123456789";

/// The webhook events the site received (each signature checked), in arrival order.
pub(crate) fn events(seen: &Mutex<Vec<Seen>>) -> Vec<serde_json::Value> {
    let now = chrono::Utc::now().timestamp();
    seen.lock()
        .unwrap()
        .iter()
        .filter(|s| s.head.starts_with("POST /events"))
        .map(|s| {
            let signature = s.header("livegate-signature").expect("signed");
            livegate::webhook::sign::verify(
                SECRET.as_bytes(),
                &signature,
                s.body.as_bytes(),
                now,
                300,
            )
            .unwrap_or_else(|e| panic!("bad signature on {}: {e}", s.body));
            let event: serde_json::Value = serde_json::from_str(&s.body).expect("JSON");
            assert_eq!(
                s.header("livegate-event").as_deref(),
                event["type"].as_str()
            );
            assert_eq!(
                s.header("livegate-delivery").as_deref(),
                event["id"].as_str()
            );
            event
        })
        .collect()
}

pub(crate) fn of_type<'a>(
    events: &'a [serde_json::Value],
    kind: &str,
) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

#[test]
fn signed_webhooks_tell_each_sessions_story() {
    let (site_url, seen) = site();
    let base = site_url.split("/livegate").next().unwrap().to_string();
    let hook = format!("{base}/events?token=site-secret");
    let server = Server::start_with(&[
        ("LIVEGATE_TRANSCODE_ENABLED", "false"),
        ("LIVEGATE_HOOKS_WEBHOOK_URL", hook.as_str()),
        ("LIVEGATE_HOOKS_WEBHOOK_SECRET", SECRET),
    ]);
    let key = server.add_key("okay");
    let long = ffmpeg_publish(
        &server.rtmp_url(&key),
        &Source {
            width: 320,
            height: 180,
            seconds: 30.0,
            ..Source::default()
        },
    )
    .spawn()
    .expect("ffmpeg");
    server.wait_until(
        Duration::from_secs(20),
        "the first session's first segment",
        || {
            let (status, text) = server.media_playlist("okay");
            status == 200 && text.contains("#EXTINF")
        },
    );
    // The same key again: it takes over the live session.
    assert!(publishes(&server, &key), "the second publish");
    let _ = wait_child(long, Duration::from_secs(30));
    server.wait_until(
        Duration::from_secs(20),
        "both sessions' end and recordings",
        || {
            let events = events(&seen);
            of_type(&events, "unpublish").len() == 2
                && of_type(&events, "recording.finished").len() == 2
        },
    );
    let events = events(&seen);
    let publish = of_type(&events, "publish");
    assert_eq!(publish.len(), 2, "{events:#?}");
    let (first, second) = (&publish[0]["data"], &publish[1]["data"]);
    assert_eq!(first["user"], "okay");
    let takeover = of_type(&events, "takeover");
    assert_eq!(takeover.len(), 1, "{events:#?}");
    assert_eq!(takeover[0]["data"]["session_id"], second["session_id"]);
    assert_eq!(
        takeover[0]["data"]["replaced"]["session_id"],
        first["session_id"]
    );
    assert_eq!(takeover[0]["data"]["replaced"]["node"], takeover[0]["node"]);
    let unpublish = of_type(&events, "unpublish");
    let reason = |session: &serde_json::Value| {
        unpublish
            .iter()
            .find(|e| e["data"]["session_id"] == *session)
            .map(|e| e["data"]["reason"].clone())
    };
    assert_eq!(reason(&first["session_id"]), Some("takeover".into()));
    assert_eq!(reason(&second["session_id"]), Some("publisher".into()));
    assert!(unpublish
        .iter()
        .all(|e| e["data"]["duration_secs"].as_f64().unwrap() > 0.5));
    let recordings = of_type(&events, "recording.finished");
    assert!(
        recordings
            .iter()
            .all(|e| e["data"]["user"] == "okay" && e["data"]["segments"].as_u64() > Some(0)),
        "{recordings:#?}"
    );
    // Each session's publish comes before its unpublish: a node sends its events in order.
    let position = |kind: &str, session: &serde_json::Value| {
        events
            .iter()
            .position(|e| e["type"] == kind && e["data"]["session_id"] == *session)
            .unwrap()
    };
    for s in [&first["session_id"], &second["session_id"]] {
        assert!(position("publish", s) < position("unpublish", s));
    }
    let logs = server.logs();
    assert!(logs.contains("webhook delivered"), "deliveries are logged");
    assert!(
        !logs.contains("site-secret") && !logs.contains(SECRET),
        "no secret in the logs"
    );
    let metrics = server.get("/metrics").1;
    assert!(
        metrics.contains(
            r#"livegate_webhook_deliveries_total{event="unpublish",result="delivered"} 2"#
        ),
        "{metrics}"
    );
}
