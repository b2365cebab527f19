//! The transcode ladder, end to end: real sources through libav, checked with ffprobe and hls.js.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::flv_publish;

const RUNGS: [&str; 3] = ["360p", "480p", "720p"];

/// Publishes `clip` as `user` and waits for every listed rung to finish.
fn publish_and_finish(
    server: &Server,
    user: &str,
    clip: &Path,
    rungs: &[&str],
) -> Vec<m3u8_rs::MediaPlaylist> {
    let key = server.add_key(user);
    let (ok, err) = wait_child(
        publish_file(&server.rtmp_url(&key), clip),
        Duration::from_secs(60),
    );
    assert!(ok, "publisher: {err}");
    rungs
        .iter()
        .map(|r| server.wait_endlist(user, r, Duration::from_secs(20)))
        .collect()
}

fn variants(server: &Server, user: &str) -> Vec<(String, u64, u64, String, u64, u64)> {
    let master = parse_master(&server.get(&format!("/live/{user}/index.m3u8")).1);
    assert!(master.independent_segments);
    master
        .variants
        .iter()
        .map(|v| {
            let r = v.resolution.expect("RESOLUTION");
            (
                v.uri.clone(),
                r.width,
                r.height,
                v.codecs.clone().expect("CODECS"),
                v.bandwidth,
                v.average_bandwidth.expect("AVERAGE-BANDWIDTH"),
            )
        })
        .collect()
}

/// Every rung: same target duration and segment count, EXTINF within target, and segment k
/// starting at the same presentation time in every rung. Returns each rung's frame sizes.
fn check_aligned(
    server: &Server,
    user: &str,
    rungs: &[&str],
    playlists: &[m3u8_rs::MediaPlaylist],
) -> Vec<Vec<(i64, i64)>> {
    let target = playlists[0].target_duration;
    let count = playlists[0].segments.len();
    let mut starts: Vec<Vec<f64>> = Vec::new();
    let mut sizes = Vec::new();
    for (rung, p) in rungs.iter().zip(playlists) {
        assert_eq!(
            p.target_duration, target,
            "{rung}: same target duration in every rung"
        );
        assert_eq!(p.segments.len(), count, "{rung}: same segment count");
        assert_eq!(p.media_sequence, playlists[0].media_sequence);
        for s in &p.segments {
            // RFC 8216 §4.3.3.1: each EXTINF, rounded, is at most the target duration.
            assert!(
                (s.duration.round() as u64) <= target,
                "{rung}: EXTINF {} > {target}",
                s.duration
            );
            assert!(s.program_date_time.is_some());
        }
        let files = server.download_segments(user, rung, p);
        let probed: Vec<(f64, i64, i64)> = files.iter().map(|f| first_video_pts(f)).collect();
        starts.push(probed.iter().map(|p| p.0).collect());
        sizes.push(probed.iter().map(|p| (p.1, p.2)).collect());
    }
    for (i, rung_starts) in starts.iter().enumerate().skip(1) {
        for (k, (a, b)) in starts[0].iter().zip(rung_starts).enumerate() {
            assert!(
                (a - b).abs() < 1e-6,
                "segment {k} starts at {a} in {} but {b} in {}",
                rungs[0],
                rungs[i]
            );
        }
    }
    // One clock for the ladder: segment k has the same PROGRAM-DATE-TIME in every rung.
    for p in &playlists[1..] {
        for (a, b) in playlists[0].segments.iter().zip(&p.segments) {
            assert_eq!(
                a.program_date_time, b.program_date_time,
                "PDT differs between rungs"
            );
        }
    }
    // Segments of one rung start on the 2 s grid.
    for pair in starts[0].windows(2) {
        assert!(
            ((pair[1] - pair[0]) - 2.0).abs() < 0.05,
            "grid: {:?}",
            starts[0]
        );
    }
    sizes
}

#[test]
fn ladder_from_1080p_and_720p_is_aligned_and_as_configured() {
    let _cpu = heavy();
    let server = Server::start();
    for (user, w, h) in [("full", 1920, 1080), ("hd", 1280, 720)] {
        let clip = source_clip(w, h, 30, 6);
        let key = server.add_key(user);
        let publisher = publish_file(&server.rtmp_url(&key), &clip);
        server.wait_master(user, Duration::from_secs(20));

        // The API shows the transcoder while it runs (its status is refreshed every second).
        let mut body = String::new();
        server.wait_until(Duration::from_secs(10), "the rungs in the API", || {
            body = server.get("/api/v1/streams").1;
            body.contains(r#""rungs":[{"#)
        });
        let streams: serde_json::Value = serde_json::from_str(&body).unwrap();
        let t = &streams[0]["transcode"];
        assert_eq!(t["rungs"].as_array().map(|r| r.len()), Some(3), "{body}");
        for field in [
            "speed",
            "capacity",
            "dropped_frames",
            "queue_depth",
            "media_seconds",
        ] {
            assert!(t.get(field).is_some(), "transcode.{field} missing: {body}");
        }
        assert_eq!(t["dropped_frames"], 0, "{body}");
        // transcode.source_rung = auto: a 720p source is the 720p rung; a 1080p one is encoded.
        let source = &t["source_rung"];
        assert_eq!(source["mode"], "auto", "{body}");
        if user == "hd" {
            assert_eq!(source["rung"], "720p", "{body}");
            assert_eq!(t["rungs"][2]["source"], true, "{body}");
            assert_eq!(t["rungs"][0]["source"], false, "{body}");
        } else {
            assert!(source["rung"].is_null(), "{body}");
            let reason = source["reason"].as_str().unwrap_or_default();
            assert!(reason.contains("not the size of a rung"), "{body}");
        }

        let (ok, err) = wait_child(publisher, Duration::from_secs(60));
        assert!(ok, "publisher: {err}");
        let playlists: Vec<_> = RUNGS
            .iter()
            .map(|r| server.wait_endlist(user, r, Duration::from_secs(20)))
            .collect();
        let total: f32 = playlists[2].segments.iter().map(|s| s.duration).sum();
        assert!((total - 6.0).abs() < 0.15, "{user}: {total} s of 6");
        let sizes = check_aligned(&server, user, &RUNGS, &playlists);
        assert!(sizes[0].iter().all(|s| *s == (640, 360)), "{sizes:?}");
        assert!(sizes[1].iter().all(|s| *s == (854, 480)), "{sizes:?}");
        assert!(sizes[2].iter().all(|s| *s == (1280, 720)), "{sizes:?}");

        let v = variants(&server, user);
        let expected = [
            ("360p/index.m3u8", 640, 360),
            ("480p/index.m3u8", 854, 480),
            ("720p/index.m3u8", 1280, 720),
        ];
        assert_eq!(v.len(), 3);
        for (got, want) in v.iter().zip(expected) {
            assert_eq!((got.0.as_str(), got.1, got.2), want);
            // The encoded rungs are Main profile; the source served as 720p keeps its High.
            let profile = if user == "hd" && want.2 == 720 {
                "avc1.64"
            } else {
                "avc1.4d"
            };
            assert!(
                got.3.starts_with(profile) && got.3.ends_with(",mp4a.40.2"),
                "{profile} + AAC-LC: {}",
                got.3
            );
            assert!(
                got.4 >= got.5 && got.5 > 100_000,
                "BANDWIDTH {} ≥ AVERAGE {}",
                got.4,
                got.5
            );
        }
        assert!(
            v[0].5 < v[1].5 && v[1].5 < v[2].5,
            "bitrates rise with the rungs: {v:?}"
        );
    }

    // The encoder really got the ladder's settings: x264 writes them into its SEI.
    let p = server.wait_endlist("hd", "360p", Duration::from_secs(5));
    let (_, first) = server.get_bytes(&format!("/live/hd/360p/{}", p.segments[0].uri));
    let sei = String::from_utf8_lossy(&first);
    for setting in [
        "scenecut=0",
        "bitrate=800",
        "vbv_maxrate=856",
        "vbv_bufsize=1200",
        // transcode.low_delay (default): tune=zerolatency, no B-frames, no lookahead.
        "bframes=0",
        "rc_lookahead=0",
    ] {
        assert!(sei.contains(setting), "x264 settings lack {setting}");
    }
    // One AAC track, 48 kHz, in every rung.
    let probe = ffprobe(&server.url("/live/hd/720p/index.m3u8"));
    let audio = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_name"] == "aac")
        .cloned()
        .unwrap();
    assert_eq!(audio["sample_rate"], "48000");
}

#[test]
fn ladder_never_upscales_and_handles_odd_and_portrait_sizes() {
    let _cpu = heavy();
    let server = Server::start();
    struct Case {
        user: &'static str,
        width: u32,
        height: u32,
        rungs: &'static [&'static str],
        sizes: &'static [(i64, i64)],
    }
    let cases = [
        Case {
            user: "sd",
            width: 854,
            height: 480,
            rungs: &["360p", "480p"],
            sizes: &[(640, 360), (854, 480)],
        },
        Case {
            user: "laptop",
            width: 1366,
            height: 768,
            rungs: &RUNGS,
            sizes: &[(640, 360), (854, 480), (1280, 720)],
        },
        Case {
            user: "phone",
            width: 720,
            height: 1280,
            rungs: &RUNGS,
            sizes: &[(360, 640), (480, 854), (720, 1280)],
        },
    ];
    for Case {
        user,
        width,
        height,
        rungs,
        sizes: expected,
    } in cases
    {
        let playlists =
            publish_and_finish(&server, user, &source_clip(width, height, 30, 4), rungs);
        let sizes = check_aligned(&server, user, rungs, &playlists);
        for (rung_sizes, want) in sizes.iter().zip(expected) {
            assert!(rung_sizes.iter().all(|s| s == want), "{user}: {sizes:?}");
        }
        let v = variants(&server, user);
        assert_eq!(
            v.len(),
            rungs.len(),
            "{user}: no rung above the source: {v:?}"
        );
        assert_eq!(
            server.get(&format!("/live/{user}/720p/index.m3u8")).0 == 200,
            rungs.len() == 3
        );
    }
}

#[test]
fn resolution_change_mid_stream_plays_through() {
    let _cpu = heavy();
    let server = Server::start();
    let key = server.add_key("obs");
    let first = flv_publish::read_flv(&source_clip(1280, 720, 30, 4));
    let second = flv_publish::read_flv(&source_clip(640, 360, 30, 4));
    let mut publisher = flv_publish::Publisher::connect(&server.rtmp_url(&key)).unwrap();
    let next = publisher.send(&first, 0, true).unwrap();
    publisher.send(&second, next, true).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    publisher.finish();

    for rung in RUNGS {
        let p = server.wait_endlist("obs", rung, Duration::from_secs(20));
        let total: f32 = p.segments.iter().map(|s| s.duration).sum();
        assert!((total - 8.0).abs() < 0.3, "{rung}: {total} s of 8");
        assert_eq!(
            p.segments.iter().filter(|s| s.discontinuity).count(),
            1,
            "{rung}: one discontinuity"
        );
        assert_eq!(
            p.segments.iter().filter(|s| s.map.is_some()).count(),
            2,
            "{rung}: a new init after the change"
        );
        let files = server.download_segments("obs", rung, &p);
        let (_, w0, h0) = first_video_pts(&files[0]);
        let (_, w1, h1) = first_video_pts(files.last().unwrap());
        assert_eq!(
            (w1, h1),
            (640, 360),
            "{rung} after the change: never above the source"
        );
        let before = match rung {
            "360p" => (640, 360),
            "480p" => (854, 480),
            _ => (1280, 720),
        };
        assert_eq!((w0, h0), before);
    }
    let (ok, report) = play_in_chromium(&server.url("/live/obs/index.m3u8"), 6);
    assert!(ok, "hls.js plays through the change: {report}");
}

#[test]
fn hls_js_plays_every_ladder_level_and_switches_to_and_from_the_source_without_a_stall() {
    let _cpu = heavy();
    let server = Server::start();
    let key = server.add_key("viewer");
    // Looped until the players are done, however long a busy machine makes them take.
    let mut publisher = publish_looped(&server.rtmp_url(&key), &source_clip(1280, 720, 30, 10));
    server.wait_master("viewer", Duration::from_secs(20));
    let (_, body) = server.get("/api/v1/streams");
    let streams: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        streams[0]["transcode"]["source_rung"]["rung"], "720p",
        "the 720p level is the source: {body}"
    );
    let url = server.url("/live/viewer/index.m3u8");
    for (level, height) in [(0, 360), (1, 480), (2, 720)] {
        let (ok, report) = play_level(&url, 2, level);
        assert!(ok, "level {level}: {report}");
        assert_eq!(
            report["videoHeight"], height,
            "pinned to level {level}: {report}"
        );
        assert_eq!(
            report["levels"].as_array().map(|l| l.len()),
            Some(3),
            "{report}"
        );
    }
    let (ok, report) = play_in_chromium(&url, 2);
    assert!(ok, "automatic level selection: {report}");
    // Source (2) ↔ encoded (0, 1) mid-playback: seamless switches, no stall, no error.
    let (ok, report) = play_switching(&url, &[2, 0, 2, 1], 3);
    assert!(ok, "switching: {report}");
    assert_eq!(report["stalls"], 0, "{report}");
    // hls.js aborts the loads in flight of the level it leaves: not a failure. It jumps a hole
    // in the buffer only where one is: frames a ladder behind real time dropped (a loaded
    // machine), which the metrics count.
    let errors: Vec<&str> = report["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e.as_str()).collect())
        .unwrap_or_default();
    let dropped = server.metric("livegate_transcode_dropped_frames_total");
    assert!(
        errors.iter().all(|e| *e == "networkError/aborted"
            || (*e == "mediaError/bufferSeekOverHole" && dropped > 0.0)),
        "{dropped} frames dropped: {report}"
    );
    // The pictures shown, in order: from the source (asked for first, or chosen by hls.js
    // already) down to 360p, up to the source again, down to 480p.
    let heights: Vec<u64> = report["heights"]
        .as_array()
        .map(|a| a.iter().filter_map(|h| h.as_u64()).collect())
        .unwrap_or_default();
    assert!(
        heights.ends_with(&[720, 360, 720, 480]),
        "heights shown {heights:?}: {report}"
    );
    let _ = publisher.kill();
    let _ = publisher.wait();
}

#[test]
fn passthrough_per_user_beside_the_ladder() {
    // Every rung encoded: by default the 640x360 source would be bob's 360p rung as published.
    let server = Server::start_with(&[
        ("LIVEGATE_TRANSCODE_PASSTHROUGH_USERS", "alice"),
        ("LIVEGATE_TRANSCODE_SOURCE_RUNG", "never"),
    ]);
    let clip = source_clip(640, 360, 30, 4);
    publish_and_finish(&server, "alice", &clip, &["source"]);
    publish_and_finish(&server, "bob", &clip, &["360p"]);
    let alice = variants(&server, "alice");
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].0, "source/index.m3u8");
    assert!(
        alice[0].3.starts_with("avc1.64"),
        "as published (High): {}",
        alice[0].3
    );
    let bob = variants(&server, "bob");
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0].0, "360p/index.m3u8");
    assert!(
        bob[0].3.starts_with("avc1.4d"),
        "transcoded (Main): {}",
        bob[0].3
    );
}

fn ladder_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .is_ok_and(|c| c.starts_with("lg-ladder"))
                })
                .count()
        })
        .unwrap_or(0)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn threads_and_memory_come_back_after_100_publish_cycles() {
    let _cpu = heavy();
    let admin = "cycle-admin-token";
    let server = Server::start_with(&[("LIVEGATE_HTTP_ADMIN_TOKEN", admin)]);
    let clip = flv_publish::read_flv(&source_clip(320, 240, 30, 1));
    let users: Vec<(String, String)> = (0..4)
        .map(|i| {
            let user = format!("cycle{i}");
            let key = server.add_key(&user);
            (user, key)
        })
        .collect();
    let idle = || {
        server.wait_until(Duration::from_secs(30), "all transcoders to finish", || {
            ladder_threads(server.pid()) == 0 && server.get("/api/v1/streams").1 == "[]"
        })
    };
    // Bytes in live allocations: RSS also holds what glibc keeps freed per arena, which varies
    // with how many ladders happened to overlap, so a leak is judged on the heap. The least of a
    // few samples: the recordings' writer still finishes the last sessions for a moment.
    let heap_kb = || {
        (0..6)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(300));
                let (status, body) = server.request("GET", "/api/v1/node", Some(admin), None);
                assert_eq!(status, 200, "{body}");
                let node: serde_json::Value = serde_json::from_str(&body).unwrap();
                node["heap_in_use_bytes"]
                    .as_u64()
                    .expect("heap_in_use_bytes")
                    / 1024
            })
            .min()
            .unwrap_or(0)
    };
    let run_cycles = |n: usize| {
        std::thread::scope(|scope| {
            for (_, key) in &users {
                let url = server.rtmp_url(key);
                let clip = &clip;
                scope.spawn(move || {
                    for _ in 0..n {
                        let mut p = flv_publish::Publisher::connect(&url).expect("publish");
                        p.send(clip, 0, false).expect("send");
                        p.finish();
                        // Wait for this cycle's stream to end before the next takes over.
                        std::thread::sleep(Duration::from_millis(150));
                    }
                });
            }
        });
    };
    let started = Instant::now();
    run_cycles(3);
    idle();
    let (rss_warm, heap_warm) = (rss_kb(server.pid()), heap_kb());
    run_cycles(12);
    idle();
    let (rss_mid, heap_mid) = (rss_kb(server.pid()), heap_kb());
    run_cycles(10); // 4 publishers × (3 + 12 + 10) = 100 cycles
    idle();
    let (rss_after, heap_after) = (rss_kb(server.pid()), heap_kb());

    eprintln!(
        "100 cycles in {:.1} s; RSS {} → {} → {} MB, heap {} → {} → {} MB (after 12, 60, 100)",
        started.elapsed().as_secs_f64(),
        rss_warm / 1024,
        rss_mid / 1024,
        rss_after / 1024,
        heap_warm / 1024,
        heap_mid / 1024,
        heap_after / 1024
    );
    assert_eq!(
        ladder_threads(server.pid()),
        0,
        "every transcoder thread (and x264's) is gone"
    );
    // A leak of 100 kB per cycle adds 4 MB over the last 40 cycles.
    assert!(
        heap_after < heap_mid + 4 * 1024 && heap_after < heap_warm + 8 * 1024,
        "live allocations came back: {heap_warm} kB after warm-up, {heap_mid} kB after 60 \
         cycles, {heap_after} kB after 100"
    );
    // What glibc keeps freed levels off rather than growing with every cycle.
    assert!(
        rss_after < rss_warm + 40 * 1024,
        "memory came back: {rss_warm} kB after warm-up, {rss_mid} kB after 60 cycles, \
         {rss_after} kB after 100"
    );
    let metrics = server.get("/metrics").1;
    assert!(metrics.contains("livegate_transcoders 0"), "{metrics}");
    assert!(
        metrics.contains("livegate_publish_accepted_total 100"),
        "{metrics}"
    );
}

#[test]
fn a_transcoder_behind_real_time_drops_gops_without_stalling_anyone() {
    let _cpu = heavy();
    let server = Server::start_with(&[
        ("LIVEGATE_TRANSCODE_QUEUE_FRAMES", "16"),
        ("LIVEGATE_TRANSCODE_PASSTHROUGH_USERS", "calm"),
    ]);
    let calm_key = server.add_key("calm");
    let burst_key = server.add_key("burst");
    let calm = publish_file(&server.rtmp_url(&calm_key), &source_clip(640, 360, 30, 6));
    // 12 s of 1080p sent as fast as the socket takes it: far faster than real time.
    let burst = flv_publish::read_flv(&source_clip(1920, 1080, 30, 12));
    let t = Instant::now();
    let mut p = flv_publish::Publisher::connect(&server.rtmp_url(&burst_key)).unwrap();
    p.send(&burst, 0, false).unwrap();
    p.finish();
    let ingest = t.elapsed();
    assert!(
        ingest < Duration::from_secs(5),
        "ingest never waits for the transcoder: {ingest:?}"
    );

    let playlists: Vec<_> = RUNGS
        .iter()
        .map(|r| server.wait_endlist("burst", r, Duration::from_secs(60)))
        .collect();
    let kept: f32 = playlists[0].segments.iter().map(|s| s.duration).sum();
    assert!(kept < 11.0, "GOPs were dropped: kept {kept} s of 12");
    let metrics = server.get("/metrics").1;
    let dropped: u64 = metrics
        .lines()
        .find(|l| l.starts_with("livegate_transcode_dropped_frames_total"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    assert!(dropped > 0, "{metrics}");
    assert!(rss_kb(server.pid()) < 600 * 1024, "memory stays bounded");

    // The other stream did not notice.
    let (ok, err) = wait_child(calm, Duration::from_secs(30));
    assert!(ok, "{err}");
    let p = server.wait_endlist("calm", "source", Duration::from_secs(10));
    let total: f32 = p.segments.iter().map(|s| s.duration).sum();
    assert!((total - 6.0).abs() < 0.2, "calm stream complete: {total}");
}
