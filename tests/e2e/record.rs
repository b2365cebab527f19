//! DVR recording against real storage: Garage (S3) and the local directory. Each case publishes
//! with the real ffmpeg CLI and checks what landed in storage with the AWS SDK or the file
//! system, then plays it back through livegate with ffprobe.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::garage::{self, Garage};

pub(crate) const ADMIN: &str = "test-admin-token";

pub(crate) fn start(env: &[(String, String)], passthrough: bool) -> Server {
    let mut all: Vec<(&str, &str)> = vec![("LIVEGATE_HTTP_ADMIN_TOKEN", ADMIN)];
    if passthrough {
        all.push(("LIVEGATE_TRANSCODE_ENABLED", "false"));
    }
    all.extend(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    Server::start_with(&all)
}

/// What a storage backend holds, keyed `<user>/<session>/<file>`, read without livegate.
pub(crate) struct Stored<'a> {
    pub(crate) objects: HashMap<String, u64>,
    backend: Backend<'a>,
}

pub(crate) enum Backend<'a> {
    S3(&'a Garage),
    Local(std::path::PathBuf),
}

impl Stored<'_> {
    pub(crate) fn read(&self, key: &str) -> Vec<u8> {
        match &self.backend {
            Backend::S3(garage) => garage
                .get(&format!("{}/{key}", garage::PREFIX))
                .expect("get object"),
            Backend::Local(root) => std::fs::read(root.join(key)).expect("read recording file"),
        }
    }
}

pub(crate) fn stored_in_garage(garage: &Garage) -> Stored<'_> {
    let prefix = format!("{}/", garage::PREFIX);
    let objects = garage
        .list(&prefix)
        .expect("list bucket")
        .into_iter()
        .map(|(k, size)| (k[prefix.len()..].to_string(), size))
        .collect();
    Stored {
        objects,
        backend: Backend::S3(garage),
    }
}

pub(crate) fn stored_locally(server: &Server) -> Stored<'static> {
    let root = server.dir.path().join("data/recordings");
    let mut objects = HashMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(&root) {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                objects.insert(rel.to_string_lossy().into_owned(), size);
            }
        }
    }
    Stored {
        objects,
        backend: Backend::Local(root),
    }
}

/// Waits until `user` has exactly one recording in `state` and returns its manifest.
pub(crate) fn wait_recording(
    server: &Server,
    user: &str,
    state: &str,
    timeout: Duration,
) -> serde_json::Value {
    let mut found = serde_json::Value::Null;
    server.wait_until(timeout, &format!("a {state} recording of {user}"), || {
        let (status, body) = server.request(
            "GET",
            &format!("/api/v1/recordings?user={user}"),
            Some(ADMIN),
            None,
        );
        if status != 200 {
            return false;
        }
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        match v["recordings"].as_array() {
            Some(list) if list.len() == 1 && list[0]["state"] == state => {
                found = list[0].clone();
                true
            }
            _ => false,
        }
    });
    found
}

/// Seconds of video ffprobe actually read (packets ÷ frame rate): every segment had to be
/// fetched and demuxed, unlike a duration taken from the playlist or the container header.
pub(crate) fn video_seconds_read(probe: &serde_json::Value) -> f64 {
    let video = probe["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["codec_type"] == "video"))
        .unwrap_or_else(|| panic!("no video stream: {probe}"));
    let packets: f64 = video["nb_read_packets"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .expect("nb_read_packets");
    let rate = video["r_frame_rate"].as_str().unwrap_or("0/1");
    let (num, den) = rate.split_once('/').unwrap_or(("0", "1"));
    let fps = num.parse::<f64>().unwrap_or(0.0) / den.parse::<f64>().unwrap_or(1.0);
    assert!(fps > 0.0, "no frame rate: {video}");
    packets / fps
}

/// The checks every finished recording must pass, whatever the backend: the stored playlist is
/// VOD with ENDLIST, every file it lists is stored, its durations add up to `expected` seconds
/// (± one segment), and livegate plays it (`/vod/…`) and downloads it (one MP4, with Range).
pub(crate) fn check_recording(
    server: &Server,
    stored: &Stored,
    manifest: &serde_json::Value,
    expected: (f64, f64),
) {
    let id = manifest["id"].as_str().expect("id");
    let folder = format!(
        "{}/{}/",
        manifest["user"].as_str().unwrap(),
        manifest["session"].as_str().unwrap()
    );
    let playlist_text = String::from_utf8(stored.read(&format!("{folder}index.m3u8"))).unwrap();
    let playlist = parse_media(&playlist_text);
    assert!(playlist.end_list, "no ENDLIST:\n{playlist_text}");
    assert_eq!(
        playlist.playlist_type,
        Some(m3u8_rs::MediaPlaylistType::Vod)
    );
    let mut listed_bytes = 0u64;
    let mut total = 0f64;
    for segment in &playlist.segments {
        for uri in segment.map.iter().map(|m| &m.uri).chain([&segment.uri]) {
            let size = stored
                .objects
                .get(&format!("{folder}{uri}"))
                .unwrap_or_else(|| {
                    panic!(
                        "{uri} listed but not stored; stored: {:?}",
                        stored.objects.keys()
                    )
                });
            assert!(*size > 0, "{uri} is empty");
            listed_bytes += size;
        }
        total += f64::from(segment.duration);
    }
    assert!(
        total >= expected.0 && total <= expected.1,
        "segment durations add up to {total} s, expected {expected:?}"
    );
    assert_eq!(
        manifest["segments"].as_u64(),
        Some(playlist.segments.len() as u64)
    );
    assert_eq!(manifest["missing_segments"].as_u64(), Some(0));

    // Played through livegate from storage.
    let auth = format!("Authorization: Bearer {ADMIN}\r\n");
    let vod = ffprobe_with(
        &["-headers", &auth, "-count_packets"],
        &server.url(&format!("/vod/{id}/index.m3u8")),
    );
    let vod_duration = video_seconds_read(&vod);
    assert!(
        (vod_duration - total).abs() < 0.5,
        "ffprobe of /vod/ says {vod_duration} s, the playlist {total} s"
    );

    // One MP4 with Content-Length, playable, and byte ranges that match it.
    let path = format!("/api/v1/recordings/{id}/download.mp4");
    let (status, headers, mp4) = server.get_authorized(&path, ADMIN, None);
    assert_eq!(status, 200, "download: {}", String::from_utf8_lossy(&mp4));
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("content-length"), Some(mp4.len().to_string()));
    assert_eq!(mp4.len() as u64, listed_bytes);
    assert_eq!(header("accept-ranges").as_deref(), Some("bytes"));
    let file = server.dir.path().join(format!("{id}.mp4"));
    std::fs::write(&file, &mp4).unwrap();
    let probe = ffprobe_with(&["-count_packets"], file.to_str().unwrap());
    let codecs: Vec<&str> = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["codec_name"].as_str())
        .collect();
    assert!(
        codecs.contains(&"h264") && codecs.contains(&"aac"),
        "{codecs:?}"
    );
    let mp4_duration = video_seconds_read(&probe);
    assert!(
        (mp4_duration - total).abs() < 0.5,
        "download.mp4 lasts {mp4_duration} s, the playlist {total} s"
    );
    let (status, headers, part) = server.get_authorized(&path, ADMIN, Some("bytes=1000-1999"));
    assert_eq!(status, 206);
    assert_eq!(part, mp4[1000..2000]);
    assert!(headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("content-range")
            && *v == format!("bytes 1000-1999/{}", mp4.len())));
    let (status, _, tail) = server.get_authorized(&path, ADMIN, Some("bytes=-100"));
    assert_eq!((status, &tail[..]), (206, &mp4[mp4.len() - 100..]));
    let (status, _, _) =
        server.get_authorized(&path, ADMIN, Some(&format!("bytes={}-", mp4.len())));
    assert_eq!(status, 416);
}

/// Upload lag figures from the server's log: (count, median ms, p95 ms).
fn upload_lags(server: &Server) -> (usize, u64, u64) {
    let mut lags: Vec<u64> = server
        .logs()
        .lines()
        .filter(|l| l.contains("segment stored"))
        .filter_map(|l| {
            l.split("lag_ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    lags.sort_unstable();
    if lags.is_empty() {
        return (0, 0, 0);
    }
    let at = |q: f64| lags[((lags.len() - 1) as f64 * q).round() as usize];
    (lags.len(), at(0.5), at(0.95))
}

/// A small HTTP server standing in for a webhook endpoint: it refuses the first delivery with
/// a 500 (so the retry path runs, and its logs can be checked for the URL's token) and captures
/// the body of the next one.
fn webhook_receiver() -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/hooks/recording?token=hook-secret",
        listener.local_addr().unwrap()
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut requests = 0;
        // Connections one after another; each may carry several requests (keep-alive).
        for socket in listener.incoming().take(8) {
            let Ok(mut socket) = socket else { return };
            socket.set_read_timeout(Some(Duration::from_secs(20))).ok();
            let mut data = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
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
                        requests += 1;
                        if requests == 1 {
                            let _ = socket.write_all(
                                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
                            );
                        } else {
                            let _ = socket
                                .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
                            let _ = tx.send(rest[..length].to_string());
                            return;
                        }
                        data.drain(..head.len() + 4 + length);
                        continue;
                    }
                }
                match socket.read(&mut buf) {
                    Ok(n) if n > 0 => data.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
        }
    });
    (url, rx)
}

#[test]
fn s3_records_the_top_rung_of_a_30s_publish() {
    let _heavy = heavy();
    let garage = Garage::start();
    let (hook_url, hook) = webhook_receiver();
    let mut env = garage.env();
    env.push(("LIVEGATE_RECORD_WEBHOOK_URL".into(), hook_url));
    let server = start(&env, false);
    let key = server.add_key("alice");
    let clip = source_clip(854, 480, 30, 30);
    let publisher = publish_file(&server.rtmp_url(&key), &clip);
    let (ok, err) = wait_child(publisher, Duration::from_secs(60));
    assert!(ok, "publisher failed: {err}");
    let manifest = wait_recording(&server, "alice", "finished", Duration::from_secs(30));
    // The ladder is 360p + 480p for this source: the top rung is recorded.
    assert_eq!(manifest["rung"], "480p");
    assert_eq!(manifest["height"], 480);
    check_recording(&server, &stored_in_garage(&garage), &manifest, (28.0, 32.1));

    let body = hook
        .recv_timeout(Duration::from_secs(20))
        .expect("webhook not received");
    let posted: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(posted["id"], manifest["id"]);
    assert_eq!(posted["state"], "finished");
    let logs = server.logs();
    assert!(
        logs.contains("webhook refused"),
        "the first delivery was not retried"
    );
    assert!(!logs.contains("hook-secret"), "webhook URL token logged");
    assert!(!logs.contains(&garage.secret), "S3 secret logged");
    let (count, median, p95) = upload_lags(&server);
    assert!(count >= 14, "{count} segment uploads logged");
    eprintln!(
        "S3 upload lag (segment closed → object stored): n={count} median={median} ms p95={p95} ms"
    );
}

#[test]
fn s3_outage_mid_stream_loses_nothing() {
    let mut garage = Garage::start();
    let server = start(&garage.env(), true);
    let key = server.add_key("bob");
    let clip = source_clip(640, 360, 30, 30);
    let publisher = publish_file(&server.rtmp_url(&key), &clip);
    server.wait_master("bob", Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(1));
    garage.stop();
    let outage = Instant::now();
    // Live HLS keeps going while storage is down, and the spool holds the segments.
    let (_, before) = server.media_playlist("bob");
    let mut spool_peak = 0f64;
    while outage.elapsed() < Duration::from_secs(20) {
        let metrics = server.get("/metrics").1;
        spool_peak = spool_peak.max(metric_value(&metrics, "livegate_record_spool_bytes"));
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, during) = server.media_playlist("bob");
    let last_uri = |t: &str| parse_media(t).segments.last().map(|s| s.uri.clone());
    assert_ne!(
        last_uri(&before),
        last_uri(&during),
        "live HLS stalled during the outage"
    );
    // Errors are in the admin view of the streams list only.
    let streams = server
        .request("GET", "/api/v1/streams", Some(ADMIN), None)
        .1;
    assert!(
        streams.contains("\"last_error\":\"S3 PutObject"),
        "no upload error in status: {streams}"
    );
    garage.spawn();
    let restarted = Instant::now();
    // Caught up: every segment spooled so far is stored, but for at most the one just closed.
    server.wait_until(Duration::from_secs(40), "uploads to catch up", || {
        let metrics = server.get("/metrics").1;
        let spooled = metric_value(&metrics, "livegate_record_segments_total");
        let stored = metric_value(&metrics, "livegate_record_upload_lag_seconds_count");
        spooled > 0.0 && stored + 1.0 >= spooled
    });
    let caught_up = restarted.elapsed();
    let (ok, err) = wait_child(publisher, Duration::from_secs(60));
    assert!(ok, "publisher was interrupted: {err}");
    let manifest = wait_recording(&server, "bob", "finished", Duration::from_secs(30));
    check_recording(&server, &stored_in_garage(&garage), &manifest, (28.0, 32.1));
    assert!(
        spool_peak > 0.0,
        "the spool never held anything during the outage"
    );
    eprintln!(
        "S3 outage 20 s: spool peak {:.2} MiB; backlog uploaded {:.1} s after S3 returned",
        spool_peak / 1048576.0,
        caught_up.as_secs_f64(),
    );
}

#[test]
fn kill_9_mid_stream_then_restart_finalizes_from_the_spool() {
    let mut garage = Garage::start();
    let mut server = start(&garage.env(), true);
    let key = server.add_key("carol");
    let clip = source_clip(640, 360, 30, 30);
    let publisher = publish_file(&server.rtmp_url(&key), &clip);
    let publishing = Instant::now();
    server.wait_master("carol", Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(4));
    // Storage goes away first, so segments are waiting in the spool when the server dies.
    garage.stop();
    std::thread::sleep(Duration::from_secs(5));
    let spool = server.dir.path().join("data/spool/carol");
    let spooled = count_files(&spool, ".m4s");
    assert!(
        spooled >= 2,
        "expected segments waiting in the spool, found {spooled}"
    );
    server.kill9();
    let published = publishing.elapsed().as_secs_f64();
    let _ = wait_child(publisher, Duration::from_secs(10));
    garage.spawn();
    server.spawn();
    let manifest = wait_recording(&server, "carol", "interrupted", Duration::from_secs(60));
    // Everything but the segment being built when it died (≤ 2 s, plus ffmpeg's start-up).
    check_recording(
        &server,
        &stored_in_garage(&garage),
        &manifest,
        (published - 4.5, published + 0.5),
    );
    assert!(server
        .logs()
        .contains("resuming a recording left in the spool"));
    let spool = server.dir.path().join("data/spool");
    server.wait_until(Duration::from_secs(10), "the spool to be emptied", || {
        count_files(&spool, "") == 0
    });
}

fn count_files(dir: &Path, suffix: &str) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else if e.file_name().to_string_lossy().ends_with(suffix) {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn local_backend_records_lists_plays_downloads_and_deletes() {
    let server = start(
        &[(
            "LIVEGATE_RECORD_EXCLUDE_USERS".to_string(),
            "eve".to_string(),
        )],
        true,
    );
    let key = server.add_key("dave");
    let other = server.add_key("eve");
    let clip = source_clip(640, 360, 30, 30);
    let publisher = publish_file(&server.rtmp_url(&key), &clip);
    let short = source_clip(640, 360, 30, 6);
    let excluded = publish_file(&server.rtmp_url(&other), &short);
    // While live: an EVENT playlist grows in storage and the manifest says "recording".
    let live = wait_recording(&server, "dave", "recording", Duration::from_secs(30));
    let id = live["id"].as_str().unwrap().to_string();
    let (status, body) = server.request(
        "DELETE",
        &format!("/api/v1/recordings/{id}"),
        Some(ADMIN),
        None,
    );
    assert_eq!(status, 409, "a live recording must not be deleted: {body}");
    let (ok, err) = wait_child(publisher, Duration::from_secs(60));
    assert!(ok, "publisher failed: {err}");
    assert!(wait_child(excluded, Duration::from_secs(30)).0);
    let manifest = wait_recording(&server, "dave", "finished", Duration::from_secs(30));
    assert_eq!(manifest["rung"], "source");
    check_recording(&server, &stored_locally(&server), &manifest, (28.0, 32.1));

    // The excluded user has live HLS but no recording.
    let (_, eve) = server.request("GET", "/api/v1/recordings?user=eve", Some(ADMIN), None);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&eve).unwrap()["recordings"],
        serde_json::json!([])
    );
    // Time filters, one recording by id, and the admin token.
    let since = |t: &str| {
        server.request(
            "GET",
            &format!("/api/v1/recordings?since={t}"),
            Some(ADMIN),
            None,
        )
    };
    assert!(since("2000-01-01T00:00:00Z").1.contains(&id));
    assert!(!since("2999-01-01T00:00:00Z").1.contains(&id));
    assert_eq!(since("yesterday").0, 400);
    let (status, one) = server.request(
        "GET",
        &format!("/api/v1/recordings/{id}"),
        Some(ADMIN),
        None,
    );
    assert_eq!(status, 200);
    assert!(one.contains("\"download_url\""), "{one}");
    assert_eq!(
        server
            .request("GET", "/api/v1/recordings", Some("wrong"), None)
            .0,
        401
    );
    assert_eq!(server.get(&format!("/vod/{id}/index.m3u8")).0, 401);
    assert_eq!(
        server
            .request(
                "GET",
                &format!("/vod/{id}/..%2Fkeys.json"),
                Some(ADMIN),
                None
            )
            .0,
        404
    );
    assert_eq!(
        server
            .request("GET", "/api/v1/recordings/nope", Some(ADMIN), None)
            .0,
        404
    );

    let (status, _) = server.request(
        "DELETE",
        &format!("/api/v1/recordings/{id}"),
        Some(ADMIN),
        None,
    );
    assert_eq!(status, 200);
    assert!(stored_locally(&server).objects.is_empty());
    assert_eq!(
        server
            .request(
                "GET",
                &format!("/api/v1/recordings/{id}"),
                Some(ADMIN),
                None
            )
            .0,
        404
    );
}

#[test]
fn local_backend_kill_9_mid_stream_then_restart_finalizes() {
    let mut server = start(&[], true);
    let key = server.add_key("frank");
    let clip = source_clip(640, 360, 30, 30);
    let publisher = publish_file(&server.rtmp_url(&key), &clip);
    let publishing = Instant::now();
    server.wait_master("frank", Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(7));
    server.kill9();
    let published = publishing.elapsed().as_secs_f64();
    let _ = wait_child(publisher, Duration::from_secs(10));
    server.spawn();
    let manifest = wait_recording(&server, "frank", "interrupted", Duration::from_secs(30));
    check_recording(
        &server,
        &stored_locally(&server),
        &manifest,
        (published - 4.5, published + 0.5),
    );
}

#[test]
fn wrong_s3_secret_is_a_clear_error_and_live_hls_keeps_working() {
    let garage = Garage::start();
    let wrong = "f".repeat(64);
    let server = start(&garage.env_with_secret(&wrong), true);
    server.wait_until(Duration::from_secs(20), "the storage check error", || {
        server.logs().contains("recording storage check failed")
    });
    let logs = server.logs();
    assert!(
        logs.contains("SignatureDoesNotMatch")
            || logs.contains("InvalidSignature")
            || logs.contains("AccessDenied")
            || logs.contains("Forbidden"),
        "the error does not say why: {logs}"
    );
    assert!(!logs.contains(&wrong), "secret logged");
    let key = server.add_key("gina");
    let clip = source_clip(640, 360, 30, 6);
    let publisher = publish_file(&server.rtmp_url(&key), &clip);
    server.wait_master("gina", Duration::from_secs(15));
    server.wait_until(
        Duration::from_secs(20),
        "the upload error in the stream status",
        || {
            server
                .request("GET", "/api/v1/streams", Some(ADMIN), None)
                .1
                .contains("\"last_error\":\"S3 PutObject")
        },
    );
    let (ok, err) = wait_child(publisher, Duration::from_secs(30));
    assert!(ok, "publisher failed: {err}");
    let playlist = server.wait_endlist("gina", "source", Duration::from_secs(15));
    assert!(playlist.segments.len() >= 3);
}

#[test]
fn retention_deletes_finished_recordings_older_than_the_limit() {
    let mut server = start(
        &[(
            "LIVEGATE_RECORD_RETENTION_DAYS".to_string(),
            "7".to_string(),
        )],
        true,
    );
    let root = server.dir.path().join("data/recordings/henry");
    let seed = |session: &str, started: &str, ended: &str, state: &str| {
        let dir = root.join(session);
        std::fs::create_dir_all(&dir).unwrap();
        let manifest = serde_json::json!({
            "id": format!("henry.{session}"), "user": "henry", "session": session,
            "started_at": started, "ended_at": ended, "duration_secs": 2.0, "rung": "source",
            "codecs": "avc1.64001e", "width": 640, "height": 360, "segments": 1, "bytes": 10,
            "state": state, "missing_segments": 0,
        });
        std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
        std::fs::write(dir.join("seg-000000.m4s"), b"0123456789").unwrap();
    };
    let now = chrono::Utc::now();
    let old = (now - chrono::Duration::days(30)).to_rfc3339();
    let recent = (now - chrono::Duration::days(1)).to_rfc3339();
    seed("20200101T000000Z-000001", &old, &old, "finished");
    seed("20200101T000000Z-000002", &recent, &recent, "interrupted");
    // The sweep runs at start-up and then hourly.
    server.kill9();
    server.spawn();
    server.wait_until(Duration::from_secs(20), "the old recording to go", || {
        !root.join("20200101T000000Z-000001").exists()
    });
    assert!(root.join("20200101T000000Z-000002/manifest.json").exists());
    assert!(server.logs().contains("retention: recording deleted"));
}

#[test]
fn a_full_spool_skips_segments_with_a_clear_error_and_a_gap() {
    let mut garage = Garage::start();
    garage.stop();
    let mut env = garage.env();
    env.push(("LIVEGATE_RECORD_SPOOL_MAX_MIB".into(), "1".into()));
    let server = start(&env, true);
    let key = server.add_key("ivan");
    let clip = source_clip(640, 360, 30, 12);
    let publisher = publish_file(&server.rtmp_url(&key), &clip);
    server.wait_until(Duration::from_secs(30), "the spool-full error", || {
        server.logs().contains("recording spool full")
    });
    assert!(server.metric("livegate_record_spool_full_total") >= 1.0);
    // Storage comes back: what the spool held is stored, the rest is a counted gap.
    garage.spawn();
    let (ok, err) = wait_child(publisher, Duration::from_secs(30));
    assert!(ok, "publisher failed: {err}");
    // Segments are missing: "incomplete", never "finished" as if whole.
    let manifest = wait_recording(&server, "ivan", "incomplete", Duration::from_secs(30));
    let missing = manifest["missing_segments"].as_u64().unwrap_or(0);
    assert!(missing >= 1, "{manifest}");
    assert!(manifest["gaps"].as_u64() >= Some(1), "{manifest}");
    let stored = stored_in_garage(&garage);
    let folder = format!(
        "{}/{}/",
        manifest["user"].as_str().unwrap(),
        manifest["session"].as_str().unwrap()
    );
    let playlist =
        parse_media(&String::from_utf8(stored.read(&format!("{folder}index.m3u8"))).unwrap());
    assert!(playlist.end_list);
    assert!(
        playlist.segments.iter().skip(1).any(|s| s.discontinuity),
        "the gap is not marked"
    );
    for s in &playlist.segments {
        assert!(
            stored.objects.contains_key(&format!("{folder}{}", s.uri)),
            "{}",
            s.uri
        );
    }
}

#[test]
fn a_publish_without_media_leaves_no_recording() {
    let server = start(&[], true);
    let key = server.add_key("jade");
    // Accepted to publish, then gone without sending a frame.
    let publisher =
        crate::flv_publish::Publisher::connect(&server.rtmp_url(&key)).expect("publish");
    std::thread::sleep(Duration::from_millis(500));
    publisher.finish();
    server.wait_until(
        Duration::from_secs(20),
        "the empty recording to be dropped",
        || server.metric("livegate_record_finished_total{reason=\"empty\"}") >= 1.0,
    );
    let (_, body) = server.request("GET", "/api/v1/recordings?user=jade", Some(ADMIN), None);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["recordings"],
        serde_json::json!([]),
        "{body}"
    );
    assert!(stored_locally(&server).objects.is_empty());
    assert!(server.logs().contains("nothing kept"));
}
