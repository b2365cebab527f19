//! The `livegate` CLI and the admin HTTP API, against a real server process.

use std::time::Duration;

use crate::common::*;

#[test]
fn keys_cli_prints_the_key_once_and_stores_only_a_hash() {
    let server = Server::start_passthrough(&[]);
    let out = server.cli(&["keys", "add", "alice"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let key = stdout.lines().last().unwrap();
    assert!(key.starts_with("lg_") && key.len() == 43, "{stdout}");
    assert!(stdout.contains("/live/alice/index.m3u8"), "{stdout}");
    assert!(stdout.contains(&format!("rtmp://127.0.0.1:{}/live", server.rtmp_port)));

    let stored = std::fs::read_to_string(server.dir.path().join("data/keys.json")).unwrap();
    assert!(!stored.contains(key), "key stored in clear");

    let list = server.cli(&["keys", "list"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.starts_with("alice\tlg_"), "{listed}");
    assert!(!listed.contains(key));

    let dup = server.cli(&["keys", "add", "alice"]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already has a key"));

    let rotated = server.cli(&["keys", "rotate", "alice"]);
    let new_key = String::from_utf8_lossy(&rotated.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    assert_ne!(new_key, key);

    let bad = server.cli(&["keys", "add", "../evil"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not valid"));
    assert!(server.cli(&["keys", "revoke", "alice"]).status.success());
    assert!(!server.cli(&["keys", "revoke", "alice"]).status.success());
}

#[test]
fn check_config_reports_errors_by_name() {
    let server = Server::start_passthrough(&[]);
    let ok = server.cli(&["check-config"]);
    assert!(ok.status.success());
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(text.contains("segment_duration = 2.0"), "{text}");

    let bad = crate::common::livegate()
        .args(["check-config"])
        .env("LIVEGATE_HLS_WINDOW", "1")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("hls.window"));

    // Secrets are not printed: the admin token, the webhook secret, Redis's password.
    let masked = crate::common::livegate()
        .args(["check-config"])
        .env("LIVEGATE_HTTP_ADMIN_TOKEN", "supersecret-admin-token")
        .env("LIVEGATE_HOOKS_WEBHOOK_URL", "https://site.example/hooks")
        .env("LIVEGATE_HOOKS_WEBHOOK_SECRET", "webhook-secret-0123456789")
        .env(
            "LIVEGATE_CLUSTER_REDIS_URL",
            "redis://:redis-password@10.0.0.2:6379",
        )
        .output()
        .unwrap();
    assert!(masked.status.success(), "{masked:?}");
    let text = String::from_utf8_lossy(&masked.stdout);
    assert!(text.contains("admin_token = \"supers…\""), "{text}");
    for secret in [
        "supersecret-admin-token",
        "webhook-secret-0123456789",
        "redis-password",
    ] {
        assert!(!text.contains(secret), "{secret} printed: {text}");
    }
    assert!(text.contains("redis://:REDACTED@10.0.0.2:6379"), "{text}");

    // A webhook URL without a secret is refused by name.
    let unsigned = crate::common::livegate()
        .args(["check-config"])
        .env("LIVEGATE_HOOKS_WEBHOOK_URL", "https://site.example/hooks")
        .output()
        .unwrap();
    assert!(!unsigned.status.success());
    assert!(String::from_utf8_lossy(&unsigned.stderr).contains("hooks.webhook_secret"));

    let typo = crate::common::livegate()
        .args(["check-config"])
        .env("LIVEGATE_HLS_WINDOWS", "5")
        .output()
        .unwrap();
    assert!(!typo.status.success());
    assert!(String::from_utf8_lossy(&typo.stderr).contains("LIVEGATE_HLS_WINDOWS"));
}

#[test]
fn admin_api_manages_keys_behind_a_bearer_token() {
    let token = "test-admin-token-0123456789";
    let server = Server::start_passthrough(&[("LIVEGATE_HTTP_ADMIN_TOKEN", token)]);

    assert_eq!(server.request("GET", "/api/v1/keys", None, None).0, 401);
    assert_eq!(
        server.request("GET", "/api/v1/keys", Some("wrong"), None).0,
        401
    );

    let (status, body) = server.request(
        "POST",
        "/api/v1/keys",
        Some(token),
        Some(r#"{"user":"gina"}"#),
    );
    assert_eq!(status, 201, "{body}");
    let created: serde_json::Value = serde_json::from_str(&body).unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("lg_"));
    assert!(created["watch_url"]
        .as_str()
        .unwrap()
        .ends_with("/live/gina/index.m3u8"));

    let (status, _) = server.request(
        "POST",
        "/api/v1/keys",
        Some(token),
        Some(r#"{"user":"gina"}"#),
    );
    assert_eq!(status, 409);
    let (status, _) = server.request(
        "POST",
        "/api/v1/keys",
        Some(token),
        Some(r#"{"user":"Bad Name"}"#),
    );
    assert_eq!(status, 400);

    let (status, body) = server.request("GET", "/api/v1/keys", Some(token), None);
    assert_eq!(status, 200);
    assert!(body.contains("\"gina\"") && !body.contains(&key), "{body}");

    // The key works over RTMP; rotating it ends that live session and refuses the old key.
    let publisher = ffmpeg_publish(
        &server.rtmp_url(&key),
        &Source {
            seconds: 30.0,
            ..Source::default()
        },
    )
    .spawn()
    .unwrap();
    server.wait_master("gina", Duration::from_secs(15));
    let (status, body) = server.request("POST", "/api/v1/keys/gina/rotate", Some(token), None);
    assert_eq!(status, 200, "{body}");
    let (ok, _) = wait_child(publisher, Duration::from_secs(10));
    assert!(!ok, "the session of a rotated key is ended");
    let (ok, _) = wait_child(
        ffmpeg_publish(&server.rtmp_url(&key), &Source::default())
            .spawn()
            .unwrap(),
        Duration::from_secs(20),
    );
    assert!(!ok, "the old key is refused after rotation");

    assert_eq!(
        server
            .request("DELETE", "/api/v1/keys/gina", Some(token), None)
            .0,
        204
    );
    assert_eq!(
        server
            .request("DELETE", "/api/v1/keys/gina", Some(token), None)
            .0,
        404
    );
    assert!(!server.logs().contains(&key));
}

#[test]
fn admin_api_is_off_without_a_token() {
    let server = Server::start_passthrough(&[]);
    let (status, body) = server.request("GET", "/api/v1/keys", Some(""), None);
    assert_eq!(status, 404);
    assert!(body.contains("admin_token"), "{body}");
    assert_eq!(server.get("/healthz").0, 200);
    let (status, body) = server.get("/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("livegate_rtmp_connections_total"), "{body}");
}

/// `/api/v1/node` tells an operator how loaded this node is: its streams, ladders and viewers
/// now, and CPU, memory and egress from the 5-second sample.
#[test]
fn the_node_api_reports_streams_viewers_cpu_and_egress() {
    let token = "test-admin-token-0123456789";
    let server = Server::start_passthrough(&[("LIVEGATE_HTTP_ADMIN_TOKEN", token)]);
    assert_eq!(server.request("GET", "/api/v1/node", None, None).0, 401);
    let key = server.add_key("nina");
    let clip = source_clip(320, 180, 30, 4);
    let mut publisher = publish_looped(&server.rtmp_url(&key), &clip);
    server.wait_until(Duration::from_secs(30), "two segments", || {
        server.media_playlist("nina").1.matches("#EXTINF").count() >= 2
    });
    let node = || -> serde_json::Value {
        let (status, body) = server.request("GET", "/api/v1/node", Some(token), None);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    // One viewer: the master once (it names the viewer's session), then its media playlist
    // and newest segment until the sample has seen them.
    let master = server.get("/live/nina/index.m3u8").1;
    let media_uri = master
        .lines()
        .find(|l| l.ends_with(".m3u8"))
        .expect("a variant")
        .to_string();
    let mut last = serde_json::Value::Null;
    // A 5 s sample that saw the stream come in and a segment go out (the API's own answers are
    // egress too, so the first non-zero figure may be just those).
    server.wait_until(
        Duration::from_secs(30),
        "a sample with ingest and egress",
        || {
            let media = server.get(&format!("/live/nina/{media_uri}")).1;
            let dir = media_uri
                .rsplit_once('/')
                .map_or("", |(d, _)| d)
                .to_string();
            if let Some(segment) = media.lines().rfind(|l| l.ends_with(".m4s")) {
                server.get_bytes(&format!("/live/nina/{dir}/{segment}"));
            }
            last = node();
            last["egress_bits_per_sec"].as_f64().unwrap_or(0.0) > 20_000.0
                && last["ingest_bits_per_sec"].as_f64().unwrap_or(0.0) > 100_000.0
        },
    );
    assert_eq!(last["streams"], 1, "{last}");
    assert_eq!(last["ladders"], 0, "passthrough: {last}");
    // This viewer, and the readiness poll above (a playlist read without a session).
    assert_eq!(last["viewers"], 2, "{last}");
    assert!(last["cpu_cores_used"].as_f64().unwrap() > 0.0, "{last}");
    assert!(
        last["ingest_bits_per_sec"].as_f64().unwrap() > 100_000.0,
        "{last}"
    );
    let rss = last["rss_bytes"].as_u64().unwrap();
    assert!(rss > 1 << 20, "{last}");
    let heap = last["heap_in_use_bytes"].as_u64().unwrap();
    assert!(heap > 1 << 20 && heap < 4 * rss, "{last}");
    assert!(last["threads"].as_u64().unwrap() >= 2, "{last}");
    assert!(last["open_fds"].as_u64().unwrap() >= 3, "{last}");
    assert!(last["cores"].as_u64().unwrap() >= 1, "{last}");
    let _ = publisher.kill();
    let _ = publisher.wait();
}
