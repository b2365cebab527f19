//! The external publish-authorization hook: a site that allows, refuses, or does not answer in
//! time, with the hook failing closed and failing open; for RTMP and WHIP.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{ffmpeg_publish, wait_child, Server, Source};

/// A site's authorization endpoint: 200 for user `ok*`, 403 for `no*`, a 3 s wait for `slow*`.
/// Returns its URL and the request bodies it saw.
fn site() -> (String, Arc<Mutex<Vec<String>>>) {
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
                let body = loop {
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
                            break rest[..length].to_string();
                        }
                    }
                    match socket.read(&mut buf) {
                        Ok(n) if n > 0 => data.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                };
                log.lock().unwrap().push(body.clone());
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
    let bodies = seen.lock().unwrap().clone();
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
        .any(|b| b.contains("\"protocol\":\"whip\"")));

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
