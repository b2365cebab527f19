//! Thumbnails: `/live/<user>/thumb.jpg` is a JPEG of the live picture at the thumbnail size,
//! refreshed every interval, from the ladder's decoded pictures or (served as published) from one
//! decoded keyframe per interval; it follows the stream's access mode.

use std::time::Duration;

use crate::common::{header, heavy, http_get, probe_streams, publish_file, source_clip, Server};

const ADMIN: &str = "thumbnail-test-admin";

/// (status, headers, body) of the thumbnail.
fn fetch(server: &Server, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    http_get(&server.url(path))
}

/// Waits for a thumbnail and checks it with ffprobe: a JPEG of `size`.
fn wait_thumbnail(server: &Server, user: &str, size: (i64, i64)) -> Vec<u8> {
    let mut jpeg = Vec::new();
    server.wait_until(Duration::from_secs(30), "a thumbnail", || {
        let (status, headers, body) = fetch(server, &format!("/live/{user}/thumb.jpg"));
        jpeg = body;
        status == 200 && header(&headers, "content-type") == Some("image/jpeg")
    });
    let path = server.dir.path().join(format!("{user}-{}.jpg", jpeg.len()));
    std::fs::write(&path, &jpeg).expect("write jpeg");
    let streams = probe_streams(&path.display().to_string());
    assert_eq!(streams, vec![("mjpeg".to_string(), size.0, size.1)]);
    jpeg
}

/// A later thumbnail differs from `first` (testsrc2's clock and gradient move).
fn wait_change(server: &Server, user: &str, first: &[u8]) {
    server.wait_until(Duration::from_secs(20), "a newer thumbnail", || {
        let (status, _, body) = fetch(server, &format!("/live/{user}/thumb.jpg"));
        status == 200 && body != first
    });
}

#[test]
fn a_passthrough_stream_gets_a_fresh_thumbnail_every_interval() {
    let server = Server::start_passthrough(&[
        ("LIVEGATE_TRANSCODE_THUMBNAIL_INTERVAL_SECS", "2"),
        ("LIVEGATE_HTTP_ADMIN_TOKEN", ADMIN),
        ("LIVEGATE_WHIP_ENABLED", "false"),
    ]);
    let key = server.add_key("erin");
    let mut ff = publish_file(&server.rtmp_url(&key), &source_clip(320, 180, 30, 30));
    assert_eq!(fetch(&server, "/live/nobody/thumb.jpg").0, 404);
    let first = wait_thumbnail(&server, "erin", (320, 180));
    let (_, headers, _) = fetch(&server, "/live/erin/thumb.jpg");
    assert_eq!(header(&headers, "cache-control"), Some("public, max-age=2"));
    assert!(header(&headers, "last-modified").is_some());
    wait_change(&server, "erin", &first);

    // A token stream's thumbnail needs a token too.
    let (status, _) = server.request(
        "PUT",
        "/api/v1/access/erin",
        Some(ADMIN),
        Some(r#"{"mode":"token"}"#),
    );
    assert_eq!(status, 200);
    server.wait_until(Duration::from_secs(5), "the thumbnail refused", || {
        fetch(&server, "/live/erin/thumb.jpg").0 == 403
    });
    let (status, text) = server.request(
        "POST",
        "/api/v1/streams/erin/tokens",
        Some(ADMIN),
        Some("{}"),
    );
    assert_eq!(status, 201, "{text}");
    let token: serde_json::Value = serde_json::from_str(&text).expect("json");
    let token = token["token"].as_str().expect("token");
    let (status, headers, _) = fetch(&server, &format!("/live/erin/thumb.jpg?token={token}"));
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "cache-control"),
        Some("private, max-age=2")
    );
    let _ = ff.kill();
    let _ = ff.wait();
}

#[test]
fn a_ladder_stream_thumbnail_comes_from_its_decoded_pictures() {
    let _turn = heavy();
    let server = Server::start_with(&[
        ("LIVEGATE_TRANSCODE_THUMBNAIL_INTERVAL_SECS", "2"),
        ("LIVEGATE_WHIP_ENABLED", "false"),
    ]);
    let key = server.add_key("finn");
    let mut ff = publish_file(&server.rtmp_url(&key), &source_clip(854, 480, 30, 20));
    // 854x480 fits 640x360 at 640x360 (aspect kept, even).
    let first = wait_thumbnail(&server, "finn", (640, 360));
    wait_change(&server, "finn", &first);
    let _ = ff.kill();
    let _ = ff.wait();
}
