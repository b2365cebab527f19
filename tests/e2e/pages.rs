//! livegate's own pages, driven in Chromium by tests/browser/pages.mjs: the directory shows the
//! live streams with thumbnails, the watch page plays (Auto and each rung), shows the latency,
//! jumps back to the live edge after a stall and chats, an offline stream and a ticket-only one
//! say so in words, the operator console logs in and manages keys, titles and recordings; no
//! console errors. Screenshots go to `<target>/tmp/pages/`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{heavy, publish_looped, source_clip, Server};
use crate::record::ADMIN;

#[test]
fn the_directory_and_watch_pages_work_for_a_viewer() {
    let _turn = heavy();
    let server = Server::start_with(&[
        ("LIVEGATE_HTTP_ADMIN_TOKEN", ADMIN),
        ("LIVEGATE_WHIP_ENABLED", "false"),
        ("LIVEGATE_TRANSCODE_PASSTHROUGH_USERS", "vip"),
        ("LIVEGATE_TRANSCODE_THUMBNAIL_INTERVAL_SECS", "2"),
    ]);
    let ivy = server.add_key("ivy");
    let vip = server.add_key("vip");
    let (status, _) = server.request(
        "PUT",
        "/api/v1/channels/ivy",
        Some(ADMIN),
        Some(r#"{"title":"Ivy's evening show","description":"Chat and music"}"#),
    );
    assert_eq!(status, 200);
    let (status, _) = server.request(
        "PUT",
        "/api/v1/access/vip",
        Some(ADMIN),
        Some(r#"{"mode":"token"}"#),
    );
    assert_eq!(status, 200);
    // 854x480: the ladder makes 360p and 480p (never upscaled).
    let mut ivy_ff = publish_looped(&server.rtmp_url(&ivy), &source_clip(854, 480, 30, 10));
    let mut vip_ff = publish_looped(&server.rtmp_url(&vip), &source_clip(320, 180, 30, 10));
    server.wait_master("ivy", Duration::from_secs(30));
    let (_, minted) = server.request(
        "POST",
        "/api/v1/streams/vip/tokens",
        Some(ADMIN),
        Some("{}"),
    );
    let minted: serde_json::Value = serde_json::from_str(&minted).expect("json");
    let token = minted["token"].as_str().expect("token");

    // The go-live page gives OBS's settings for this server.
    let (status, go_live) = server.get("/go-live");
    assert_eq!(status, 200);
    let rtmp = format!("rtmp://127.0.0.1:{}/live", server.rtmp_port);
    assert!(
        go_live.contains(&rtmp) && go_live.contains("id=\"camera\""),
        "{go_live}"
    );

    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pages");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/pages.mjs");
    let run = Command::new("node")
        .arg(script)
        .args(["--base", &server.url("")])
        .args(["--user", "ivy", "--ticket-user", "vip", "--token", token])
        .args(["--admin", ADMIN])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let report: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(
            || serde_json::json!({"raw": stdout, "stderr": String::from_utf8_lossy(&run.stderr)}),
        );
    eprintln!("pages: screenshots in {}", out.display());
    assert!(run.status.success(), "{report:#}");
    let checks = &report["checks"];
    let card = checks["directoryCard"].as_str().unwrap_or_default();
    assert!(
        card.contains("Ivy's evening show") && card.contains("LIVE") && card.contains("watching"),
        "{card}"
    );
    assert!(checks["ticketCard"]
        .as_str()
        .unwrap_or_default()
        .contains("Members only"));
    assert_eq!(
        checks["qualities"],
        serde_json::json!(["Auto", "360p", "480p"])
    );
    assert_eq!(checks["title"], "Ivy's evening show");
    // After each of two 6 s stalls the page jumped back within hls.js's catch-up range.
    let back = &checks["backToLive"];
    eprintln!("pages: back to the live edge {back}");
    for (n, after) in back.as_array().into_iter().flatten().enumerate() {
        // At least one per stall (a loaded machine may stall playback on its own too).
        assert!(after["jumps"].as_u64() >= Some(n as u64 + 1), "{back}");
        let (latency, range) = (after["latency"].as_f64(), after["range"].as_f64());
        assert!(latency.zip(range).is_some_and(|(l, r)| l <= r), "{back}");
    }
    assert_eq!(back.as_array().map(Vec::len), Some(2), "{back}");
    assert!(checks["offline"]
        .as_str()
        .unwrap_or_default()
        .contains("nobody is offline"));
    assert_eq!(checks["ticketPlays"], true);
    assert_eq!(report["consoleErrors"], serde_json::json!([]));
    // The console.
    assert!(checks["consoleLive"]
        .as_str()
        .unwrap_or_default()
        .contains("ivy"));
    assert!(checks["newKeyShown"]
        .as_str()
        .unwrap_or_default()
        .contains("lg_"));
    assert_eq!(checks["savedTitle"], "Members night");
    assert_eq!(checks["savedAccess"], "token");
    assert_eq!(checks["recordingPlays"], true);
    assert_eq!(
        checks["cookieOnlyWrite"], 403,
        "a console cookie without the CSRF header"
    );
    assert_eq!(checks["afterLogout"], serde_json::Value::Null);
    let keys = server.request("GET", "/api/v1/keys", Some(ADMIN), None).1;
    assert!(!keys.contains("newbie"), "{keys}");
    // Only the two errors the test provoked (a wrong login, a write without the CSRF header).
    assert_eq!(
        report["provokedErrors"].as_array().map(Vec::len),
        Some(2),
        "{report:#}"
    );
    assert_eq!(report["screenshots"].as_array().map(Vec::len), Some(12));
    let _ = ivy_ff.kill();
    let _ = vip_ff.kill();
    let _ = ivy_ff.wait();
    let _ = vip_ff.wait();
}

/// A creator goes live from `/go-live` with the fake camera (choosing the codec, typing the key,
/// pressing the button), and the result plays on `/watch/<user>`.
#[test]
fn go_live_in_the_browser_then_watch_it() {
    if crate::common::in_loopback_namespace("pages::go_live_in_the_browser_then_watch_it", true) {
        return;
    }
    let server = Server::start_with(&[("LIVEGATE_HTTP_ADMIN_TOKEN", ADMIN)]);
    let key = server.add_key("jo");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pages");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/golive.mjs");
    let run = Command::new("node")
        .arg(script)
        .args(["--base", &server.url(""), "--user", "jo", "--key", &key])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let report: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(
            || serde_json::json!({"raw": stdout, "stderr": String::from_utf8_lossy(&run.stderr)}),
        );
    assert!(run.status.success(), "{report:#}");
    let checks = &report["checks"];
    let obs = checks["obs"].as_str().unwrap_or_default();
    assert!(obs.contains("WHIP") && obs.contains("rtmp://"), "{obs}");
    assert!(
        checks["state"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Live"),
        "{report:#}"
    );
    assert!(checks["cameras"].as_array().is_some_and(|c| c.len() >= 2));
    assert_eq!(checks["watched"], true);
    assert_eq!(report["consoleErrors"], serde_json::json!([]));
    server.wait_endlist("jo", "360p", Duration::from_secs(15));
}
