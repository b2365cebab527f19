//! Recording on a spool disk that runs out of space (a small tmpfs filled to the last byte):
//! the error is clear in the stream's state and in the log (throttled), live HLS never stalls,
//! and the recording keeps every segment stored before and after, plays and downloads, and ends
//! `incomplete` with its gaps counted instead of `finished`.
//!
//! Needs root and tmpfs (CI runs as root): the test fails loudly without them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::record::{start, stored_locally, video_seconds_read, wait_recording, ADMIN};

/// A tmpfs mounted on a folder for the test's lifetime.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "this test mounts a tmpfs and must run as root (CI does)"
        );
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_owned())
    }

    /// Writes a filler file until the tmpfs is full (ENOSPC).
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.0.join("filler")).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        // The last bytes a short write left.
        while file.write_all(&[0u8; 512]).is_ok() {}
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).expect("remove filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the server may still hold a file there if the test failed.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The stream's `record` status from `/api/v1/streams`.
fn record_status(server: &Server, user: &str) -> serde_json::Value {
    let (_, body) = server.request("GET", "/api/v1/streams", Some(ADMIN), None);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let list = v["streams"].as_array().or(v.as_array()).cloned();
    list.unwrap_or_default()
        .into_iter()
        .find(|s| s["name"] == user)
        .map(|s| s["record"].clone())
        .unwrap_or_default()
}

fn last_live_uri(server: &Server, user: &str) -> Option<String> {
    let (status, text) = server.media_playlist(user);
    (status == 200)
        .then(|| parse_media(&text).segments.last().map(|s| s.uri.clone()))
        .flatten()
}

#[test]
fn enospc_on_the_spool_keeps_live_hls_and_what_was_stored() {
    let server = start(&[], true);
    let key = server.add_key("frank");
    // The spool folder (created at start, empty) gets a tmpfs of its own; recordings are stored
    // outside it, so freeing the filler is the only way space comes back.
    let disk = Tmpfs::mount(&server.dir.path().join("data/spool"), "8m");
    disk.fill();
    let clip = source_clip(320, 180, 30, 30);
    let publisher = publish_file(&server.rtmp_url(&key), &clip);
    let publishing = Instant::now();
    server.wait_master("frank", Duration::from_secs(15));

    // Phase 1: the spool is full from the start (not even the header or the init fit).
    let mut status = serde_json::Value::Null;
    server.wait_until(
        Duration::from_secs(15),
        "a spool error in the stream's state",
        || {
            status = record_status(&server, "frank");
            status["spool_error"]
                .as_str()
                .is_some_and(|e| e.contains("No space left on device"))
        },
    );
    let error = status["spool_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        !error.contains(&*server.dir.path().to_string_lossy()),
        "the state shows a path: {error}"
    );
    let before = last_live_uri(&server, "frank");
    std::thread::sleep(Duration::from_secs(4));
    let during = last_live_uri(&server, "frank");
    assert!(
        during.is_some() && during != before,
        "live HLS stalled on a full spool"
    );

    // Phase 2: space is back; the header and the init are written now and segments follow.
    disk.free();
    server.wait_until(Duration::from_secs(15), "segments recorded again", || {
        record_status(&server, "frank")["segments"].as_u64() >= Some(2)
    });

    // Phase 3: full again mid-stream (the init is stored): segments are missing, not the rest.
    let missing_before = record_status(&server, "frank")["missing_segments"]
        .as_u64()
        .unwrap_or(0);
    disk.fill();
    server.wait_until(Duration::from_secs(15), "segments missing again", || {
        record_status(&server, "frank")["missing_segments"].as_u64() > Some(missing_before)
    });
    disk.free();

    let (ok, err) = wait_child(publisher, Duration::from_secs(60));
    assert!(ok, "publisher failed: {err}");
    let published = publishing.elapsed().as_secs_f64();
    let manifest = wait_recording(&server, "frank", "incomplete", Duration::from_secs(30));
    let missing = manifest["missing_segments"].as_u64().unwrap_or(0);
    let segments = manifest["segments"].as_u64().unwrap_or(0);
    assert!(missing >= 2 && segments >= 2, "{manifest}");
    assert!(manifest["gaps"].as_u64() >= Some(2), "{manifest}");

    // What was stored is listed, every listed file is stored, and each gap is marked.
    let stored = stored_locally(&server);
    let id = manifest["id"].as_str().expect("id");
    let folder = format!("{}/{}/", manifest["user"].as_str().unwrap_or_default(), {
        manifest["session"].as_str().unwrap_or_default()
    });
    let text = String::from_utf8(stored.read(&format!("{folder}index.m3u8"))).expect("utf-8");
    let playlist = parse_media(&text);
    assert!(playlist.end_list, "{text}");
    assert_eq!(playlist.segments.len() as u64, segments, "{text}");
    assert!(playlist.segments.iter().any(|s| s.discontinuity), "{text}");
    let mut total = 0.0;
    for s in &playlist.segments {
        for uri in s.map.iter().map(|m| &m.uri).chain([&s.uri]) {
            assert!(
                stored.objects.contains_key(&format!("{folder}{uri}")),
                "{uri} listed but not stored"
            );
        }
        total += f64::from(s.duration);
    }
    // Plays through livegate, and downloads as one MP4 holding what was stored.
    let auth = format!("Authorization: Bearer {ADMIN}\r\n");
    let vod = ffprobe_with(
        &["-headers", &auth, "-count_packets"],
        &server.url(&format!("/vod/{id}/index.m3u8")),
    );
    let vod_seconds = video_seconds_read(&vod);
    assert!(
        (vod_seconds - total).abs() < 0.5,
        "VOD {vod_seconds} s, playlist {total} s"
    );
    let (status, _, mp4) = server.get_authorized(
        &format!("/api/v1/recordings/{id}/download.mp4"),
        ADMIN,
        None,
    );
    assert_eq!(status, 200, "download: {}", String::from_utf8_lossy(&mp4));
    let file = server.dir.path().join("download.mp4");
    std::fs::write(&file, &mp4).expect("write");
    let mp4_seconds =
        video_seconds_read(&ffprobe_with(&["-count_packets"], &file.to_string_lossy()));
    assert!(
        (mp4_seconds - total).abs() < 0.5,
        "download {mp4_seconds} s, playlist {total} s"
    );

    // The log says why, a few times, not once per segment.
    let logs = server.logs();
    let lines = logs
        .lines()
        .filter(|l| l.contains("cannot write to the recording spool"))
        .count();
    assert!(lines >= 1, "no spool error logged");
    assert!(lines <= 12, "{lines} spool error lines in {published:.0} s");
    eprintln!(
        "ENOSPC on the spool: published {published:.1} s, recorded {total:.1} s in {segments} \
         segments, {missing} missing in {} gaps, {lines} error lines logged",
        manifest["gaps"]
    );
    drop(server);
    drop(disk);
}
