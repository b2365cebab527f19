//! Chat: two Chromium pages exchange messages over `/live/<user>/chat`, an event the site posts
//! reaches both, the length and rate limits answer with errors, a banned viewer is refused; on
//! one node and across two nodes through Redis. A `token` stream's chat needs a token.

use std::path::Path;
use std::process::Command;

use crate::cluster::{node, Redis};
use crate::common::Server;
use crate::record::ADMIN;

/// Runs tests/browser/chat.mjs with page A on `a` and page B on `b`; returns its report.
fn two_pages(a: &str, b: &str, api: &str, user: &str) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/chat.mjs");
    let out = Command::new("node")
        .arg(script)
        .args([
            "--a", a, "--b", b, "--api", api, "--admin", ADMIN, "--user", user,
        ])
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(
            || serde_json::json!({"raw": stdout, "stderr": String::from_utf8_lossy(&out.stderr)}),
        );
    assert!(out.status.success(), "{report}");
    report
}

fn assert_chat_works(report: &serde_json::Value) {
    for what in [
        "exchanged",
        "tipSeen",
        "lengthRefused",
        "rateRefused",
        "banRefused",
    ] {
        assert_eq!(report[what], true, "{what}: {report}");
    }
    assert_eq!(report["eventStatus"], 201, "{report}");
    assert_eq!(report["banStatus"], 204, "{report}");
    assert_eq!(report["bannedMessageShown"], false, "{report}");
    assert_eq!(
        report["errors"],
        serde_json::json!([]),
        "console errors: {report}"
    );
}

fn ws(server: &Server, path: &str) -> String {
    server.url(path).replacen("http://", "ws://", 1)
}

#[test]
fn two_browser_pages_chat_and_see_the_sites_events() {
    let server = Server::start_passthrough(&[
        ("LIVEGATE_HTTP_ADMIN_TOKEN", ADMIN),
        ("LIVEGATE_WHIP_ENABLED", "false"),
    ]);
    let url = ws(&server, "/live/gail/chat?name=Ada");
    let report = two_pages(&url, &url, &server.url(""), "gail");
    assert_chat_works(&report);
    assert_eq!(report["nameA"], "Ada");
    assert!(server
        .get("/metrics")
        .1
        .contains("livegate_chat_connections"));

    // A token stream's chat needs a token; its name claim is the display name.
    let (status, _) = server.request(
        "PUT",
        "/api/v1/access/gail",
        Some(ADMIN),
        Some(r#"{"mode":"token"}"#),
    );
    assert_eq!(status, 200);
    let (status, body) = server.get("/live/gail/chat");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("playback token required"), "{body}");
}

#[test]
fn chat_spans_the_cluster_through_redis() {
    let redis = Redis::start();
    let a = node(&redis, "chat-a");
    let b = node(&redis, "chat-b");
    let report = two_pages(
        &ws(&a, "/live/hal/chat?name=OnA"),
        &ws(&b, "/live/hal/chat?name=OnB"),
        &a.url(""),
        "hal",
    );
    assert_chat_works(&report);
}
