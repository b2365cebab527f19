//! Playback access and viewer counts: a `token`-mode stream plays only with a valid playback
//! token (hls.js, ffprobe, directly and through the nginx edge), every other token is refused
//! with 403 on playlists and segments alike, public streams are unaffected, and the players
//! watching are counted.

use std::time::{Duration, Instant};

use livegate::access::{Claims, TokenKey};

use crate::common::{
    ffprobe, header, http_get, parse_master_raw, parse_media, play_in_chromium, Server,
};

const ADMIN: &str = "access-test-admin-token";
const SECRET: &str = "the-site-and-livegate-share-this-secret";

fn server(extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("LIVEGATE_HTTP_ADMIN_TOKEN", ADMIN),
        ("LIVEGATE_ACCESS_TOKEN_SECRET", SECRET),
        ("LIVEGATE_WHIP_ENABLED", "false"),
    ];
    env.extend_from_slice(extra);
    Server::start_passthrough(&env)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A token as a site would mint it with the shared secret (or with another one).
fn site_token(secret: &str, sub: &str, exp: i64, ip: Option<&str>) -> String {
    let key = TokenKey::new(secret.as_bytes(), 0).expect("key");
    key.mint(&Claims {
        sub: sub.into(),
        exp,
        nbf: None,
        iat: Some(now()),
        vid: Some(format!("viewer-{exp}")),
        name: None,
        ip: ip.map(str::to_string),
    })
    .expect("mint")
}

/// A token from the admin API: (token, url).
fn api_token(server: &Server, user: &str, body: &str) -> (String, String) {
    let (status, text) = server.request(
        "POST",
        &format!("/api/v1/streams/{user}/tokens"),
        Some(ADMIN),
        Some(body),
    );
    assert_eq!(status, 201, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert!(v["expires_at"].as_str().is_some(), "{text}");
    (
        v["token"].as_str().expect("token").to_string(),
        v["url"].as_str().expect("url").to_string(),
    )
}

fn set_token_mode(server: &Server, user: &str) {
    let (status, text) = server.request(
        "PUT",
        &format!("/api/v1/access/{user}"),
        Some(ADMIN),
        Some(r#"{"mode":"token"}"#),
    );
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#""access":"token""#), "{text}");
}

/// Publishes until killed, however long the machine takes to run the test.
fn publish(server: &Server, key: &str) -> std::process::Child {
    let clip = crate::common::source_clip(320, 180, 30, 10);
    crate::common::publish_looped(&server.rtmp_url(key), &clip)
}

/// The first segment and the init segment of a media playlist, as URIs relative to it.
fn first_files(playlist: &str) -> (String, String) {
    let media = parse_media(playlist);
    let first = media.segments.first().expect("a segment");
    let init = first.map.as_ref().expect("EXT-X-MAP").uri.clone();
    (init, first.uri.clone())
}

#[test]
fn a_token_stream_plays_only_with_a_valid_token() {
    let server = server(&[]);
    let alice = server.add_key("alice");
    let bob = server.add_key("bob");
    set_token_mode(&server, "alice");
    let (status, text) = server.request(
        "PUT",
        "/api/v1/channels/alice",
        Some(ADMIN),
        Some(r#"{"title":"Alice plays","description":"Members only"}"#),
    );
    assert_eq!(status, 200, "{text}");
    let mut alice_ff = publish(&server, &alice);
    let mut bob_ff = publish(&server, &bob);

    let (token, url) = api_token(&server, "alice", r#"{"ttl_secs":600,"viewer_id":"v-1"}"#);
    assert_eq!(
        url,
        server.url(&format!("/live/alice/index.m3u8?token={token}"))
    );
    // Unauthorized minting is refused.
    let (status, _) = server.request("POST", "/api/v1/streams/alice/tokens", None, Some("{}"));
    assert_eq!(status, 401);
    let (status, _) = server.request(
        "POST",
        "/api/v1/streams/alice/tokens",
        Some(ADMIN),
        Some(r#"{"ttl_secs":99999999}"#),
    );
    assert_eq!(status, 400);

    let mut master = String::new();
    server.wait_until(
        Duration::from_secs(20),
        "alice's master with the token",
        || {
            let (status, text) = server.get(&format!("/live/alice/index.m3u8?token={token}"));
            master = text;
            status == 200
        },
    );
    let variant = parse_master_raw(&master).variants[0].uri.clone();
    assert_eq!(variant, format!("t/{token}/source/index.m3u8"), "{master}");
    let base = format!("/live/alice/t/{token}/source");
    let mut playlist = String::new();
    server.wait_until(Duration::from_secs(20), "a segment", || {
        let (status, text) = server.get(&format!("{base}/index.m3u8"));
        playlist = text;
        status == 200 && playlist.contains("#EXTINF")
    });
    let (init, segment) = first_files(&playlist);
    for file in [&init, &segment] {
        let (status, body) = server.get_bytes(&format!("{base}/{file}"));
        assert_eq!((status, body.is_empty()), (200, false), "{file}");
    }

    // Without a token, or with anything but a current token for this stream: 403 with a
    // reason, on the master, the media playlist and the segments.
    let refused = [
        ("no token", String::new(), "playback token required"),
        (
            "expired",
            site_token(SECRET, "alice", now() - 120, None),
            "token expired",
        ),
        (
            "forged",
            site_token(
                "a-different-secret-of-32-characters!",
                "alice",
                now() + 600,
                None,
            ),
            "bad token signature",
        ),
        (
            "other stream",
            site_token(SECRET, "bob", now() + 600, None),
            "token is for another stream",
        ),
        (
            "other address",
            site_token(SECRET, "alice", now() + 600, Some("203.0.113.7")),
            "token is bound to another client address",
        ),
        ("garbage", "not.a.token".to_string(), "malformed token"),
    ];
    for (what, bad, reason) in &refused {
        let paths = if bad.is_empty() {
            vec![
                "/live/alice/index.m3u8".to_string(),
                "/live/alice/source/index.m3u8".to_string(),
                format!("/live/alice/source/{segment}"),
                format!("/live/alice/s/0123456789abcdef/source/{segment}"),
            ]
        } else {
            vec![
                format!("/live/alice/index.m3u8?token={bad}"),
                format!("/live/alice/t/{bad}/index.m3u8"),
                format!("/live/alice/t/{bad}/source/index.m3u8"),
                format!("/live/alice/t/{bad}/source/{init}"),
                format!("/live/alice/t/{bad}/source/{segment}"),
            ]
        };
        for path in paths {
            let (status, body) = server.get(&path);
            assert_eq!(status, 403, "{what}: {path}: {body}");
            assert!(body.contains(reason), "{what}: {path}: {body}");
        }
    }
    // A token the server minted works, and so does one the site minted with the shared secret.
    let site = site_token(SECRET, "alice", now() + 600, Some("127.0.0.1"));
    assert_eq!(
        server
            .get(&format!("/live/alice/t/{site}/source/{segment}"))
            .0,
        200
    );

    // ffprobe and hls.js play the token URL as given.
    let probe = ffprobe(&url);
    assert!(
        probe["streams"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["codec_type"] == "video")),
        "{probe}"
    );
    let (ok, report) = play_in_chromium(&url, 4);
    assert!(ok, "hls.js with a token: {report}");
    let (ok, report) = play_in_chromium(&format!("{}/live/alice/index.m3u8", server.url("")), 4);
    assert!(!ok, "hls.js without a token must fail: {report}");

    // The public stream beside it is unaffected: its master hands out a session id.
    let bob_master = server.wait_master("bob", Duration::from_secs(10));
    let bob_variant = parse_master_raw(&bob_master).variants[0].uri.clone();
    assert!(
        bob_variant.starts_with("s/") && bob_variant.ends_with("/source/index.m3u8"),
        "{bob_master}"
    );
    assert_eq!(server.get("/live/bob/source/index.m3u8").0, 200);
    let probe = ffprobe(&server.url("/live/bob/index.m3u8"));
    assert!(probe["streams"].as_array().is_some_and(|s| !s.is_empty()));

    // The streams list carries the settings; the metrics count refusals by reason.
    let (_, list) = server.get("/api/v1/streams");
    let list: serde_json::Value = serde_json::from_str(&list).expect("json");
    let alice_view = list
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == "alice"))
        .expect("alice listed");
    assert_eq!(alice_view["access"], "token");
    assert_eq!(alice_view["title"], "Alice plays");
    assert_eq!(alice_view["description"], "Members only");
    let (_, metrics) = server.get("/metrics");
    for reason in [
        "missing",
        "expired",
        "signature",
        "wrong_stream",
        "wrong_address",
    ] {
        assert!(
            metrics.contains(&format!(
                "livegate_playback_denied_total{{reason=\"{reason}\"}}"
            )),
            "{reason}: {metrics}"
        );
    }
    // Tokens never reach the log.
    let logs = server.logs();
    let signature = token.rsplit('.').next().expect("signature");
    assert!(!logs.contains(signature), "a token in the log");

    let _ = alice_ff.kill();
    let _ = bob_ff.kill();
    let _ = alice_ff.wait();
    let _ = bob_ff.wait();
}

fn viewers(server: &Server, user: &str) -> (u64, u64, u64) {
    let (_, list) = server.get("/api/v1/streams");
    let list: serde_json::Value = serde_json::from_str(&list).unwrap_or_default();
    list.as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == user))
        .map(|s| {
            (
                s["viewers"].as_u64().unwrap_or(0),
                s["peak_viewers"].as_u64().unwrap_or(0),
                s["total_viewers"].as_u64().unwrap_or(0),
            )
        })
        .unwrap_or_default()
}

#[test]
fn three_players_count_as_three_viewers_until_they_leave() {
    let server = server(&[("LIVEGATE_ACCESS_VIEWER_WINDOW_SECS", "5")]);
    let key = server.add_key("carol");
    let mut ff = publish(&server, &key);
    server.wait_master("carol", Duration::from_secs(20));
    // The master alone does not count a viewer.
    assert_eq!(viewers(&server, "carol").0, 0);
    let url = server.url("/live/carol/index.m3u8");
    let players: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || play_in_chromium(&url, 15))
        })
        .collect();
    let start = Instant::now();
    let mut seen = (0, 0, 0);
    while start.elapsed() < Duration::from_secs(40) && seen.0 < 3 {
        seen = viewers(&server, "carol");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(seen.0, 3, "three players watching at once: {seen:?}");
    let mut gauge = String::new();
    server.wait_until(Duration::from_secs(10), "the viewers gauge", || {
        gauge = server.get("/metrics").1;
        gauge.contains("livegate_viewers{stream=\"carol\"} 3")
    });
    for p in players {
        let (ok, report) = p.join().expect("player");
        assert!(ok, "{report}");
    }
    server.wait_until(Duration::from_secs(15), "no viewer left", || {
        viewers(&server, "carol").0 == 0
    });
    let (_, peak, total) = viewers(&server, "carol");
    assert_eq!((peak, total), (3, 3));
    // The recording's manifest keeps them.
    let _ = ff.kill();
    let _ = ff.wait();
    let mut manifest = serde_json::Value::Null;
    server.wait_until(Duration::from_secs(30), "the finished recording", || {
        let (_, body) = server.request("GET", "/api/v1/recordings?user=carol", Some(ADMIN), None);
        let list: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        manifest = list["recordings"][0].clone();
        manifest["state"] != "recording" && !manifest.is_null()
    });
    assert_eq!(manifest["peak_viewers"], 3, "{manifest}");
    assert_eq!(manifest["total_viewers"], 3, "{manifest}");

    // The recording plays with a playback token for its user, as the live stream did.
    let id = manifest["id"].as_str().expect("id");
    let (token, _) = api_token(&server, "carol", r#"{"ttl_secs":600}"#);
    let vod = server.url(&format!("/vod/{id}/t/{token}/index.m3u8"));
    let probe = ffprobe(&vod);
    assert!(
        probe["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse::<f64>().ok())
            .is_some_and(|d| d > 10.0),
        "{probe}"
    );
    let other = site_token(SECRET, "dana", now() + 600, None);
    let (status, body) = server.get(&format!("/vod/{id}/t/{other}/index.m3u8"));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("another stream"), "{body}");
    assert_eq!(server.get(&format!("/vod/{id}/index.m3u8")).0, 401);

    // Its poster: the first picture, at the thumbnail size.
    let (status, _, jpeg) = http_get(&server.url(&format!("/vod/{id}/poster.jpg?token={token}")));
    assert_eq!(status, 200);
    let path = server.dir.path().join("poster.jpg");
    std::fs::write(&path, jpeg).expect("write");
    assert_eq!(
        crate::common::probe_streams(&path.display().to_string()),
        vec![("mjpeg".to_string(), 320, 180)]
    );
    assert_eq!(server.get(&format!("/vod/{id}/poster.jpg")).0, 401);
    assert!(manifest["poster_url"]
        .as_str()
        .is_some_and(|u| u.ends_with("/poster.jpg")));
}

#[test]
fn token_playback_through_the_nginx_edge_shares_one_cached_copy() {
    let server = server(&[]);
    let edge = crate::edge::Nginx::start(&[server.http_port]);
    let key = server.add_key("dana");
    set_token_mode(&server, "dana");
    let mut ff = publish(&server, &key);
    let (first, url) = api_token(&server, "dana", r#"{"ttl_secs":600,"viewer_id":"first"}"#);
    let (second, _) = api_token(&server, "dana", r#"{"ttl_secs":600,"viewer_id":"second"}"#);
    let edge_url = url.replace(&server.url(""), &edge.url(""));

    let mut playlist = String::new();
    server.wait_until(
        Duration::from_secs(20),
        "a segment through the edge",
        || {
            let (status, _, body) =
                http_get(&edge.url(&format!("/live/dana/t/{first}/source/index.m3u8")));
            playlist = String::from_utf8_lossy(&body).into_owned();
            status == 200 && playlist.contains("#EXTINF")
        },
    );
    let (_, segment) = first_files(&playlist);
    // Two viewers with their own tokens: one origin fetch, the second served from the cache.
    let (status, headers, _) =
        http_get(&edge.url(&format!("/live/dana/t/{first}/source/{segment}")));
    assert_eq!(status, 200);
    assert_ne!(header(&headers, "x-cache-status"), Some("HIT"));
    let (status, headers, _) =
        http_get(&edge.url(&format!("/live/dana/t/{second}/source/{segment}")));
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-cache-status"), Some("HIT"));
    // A cached segment is still refused without a valid token.
    let forged = site_token(
        "a-different-secret-of-32-characters!",
        "dana",
        now() + 600,
        None,
    );
    for path in [
        format!("/live/dana/t/{forged}/source/{segment}"),
        format!("/live/dana/t/{forged}/source/index.m3u8"),
        format!("/live/dana/source/{segment}"),
        "/live/dana/index.m3u8".to_string(),
    ] {
        let (status, _, _) = http_get(&edge.url(&path));
        assert_eq!(status, 403, "{path}");
    }
    // Both token holders count, through the edge's access checks.
    server.wait_until(Duration::from_secs(10), "two viewers", || {
        viewers(&server, "dana").0 == 2
    });
    let (ok, report) = play_in_chromium(&edge_url, 4);
    assert!(ok, "hls.js through nginx with a token: {report}");
    let _ = ff.kill();
    let _ = ff.wait();
}

#[test]
fn in_a_cluster_the_holder_counts_every_viewer_and_every_node_lists_them() {
    let redis = crate::cluster::Redis::start();
    let a = crate::cluster::node(&redis, "view-a");
    let b = crate::cluster::node(&redis, "view-b");
    let key = a.add_key("ines");
    let mut ff = publish(&a, &key);
    a.wait_master("ines", Duration::from_secs(20));
    // Two players, one through each node: both counted by A, which holds the stream.
    for node in [&a, &b] {
        let master = parse_master_raw(&node.get("/live/ines/index.m3u8").1);
        let (status, _) = node.get(&format!("/live/ines/{}", master.variants[0].uri));
        assert_eq!(status, 200);
    }
    assert_eq!(viewers(&a, "ines").0, 2);
    b.wait_until(Duration::from_secs(15), "B listing A's viewers", || {
        let (_, list) = b.get("/api/v1/streams");
        let list: serde_json::Value = serde_json::from_str(&list).unwrap_or_default();
        list.as_array()
            .and_then(|l| l.iter().find(|s| s["name"] == "ines"))
            .is_some_and(|s| s["node"] == "view-a" && s["viewers"] == 2)
    });
    let _ = ff.kill();
    let _ = ff.wait();
}
