//! Hostile media and ladder overload: a crafted SPS declaring a huge picture, an in-band SPS
//! switching to an oversized one, a configuration record flapping every frame, and more
//! publishers than `transcode.max_ladders`. Each is refused or capped by name while a legitimate
//! stream on the same server keeps real time. Small pictures (320x240) keep CI cheap: the
//! admission logic is the same at 1080p, only the cost per ladder differs.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::common::*;
use crate::flv_publish::{self, Tag};

/// A baseline avcC whose SPS declares `mbs_w`×`mbs_h` macroblocks, level 6.2 (what H.264 allows
/// at most): a few dozen bytes claiming up to 35 megapixels.
fn crafted_avcc(mbs_w: u32, mbs_h: u32) -> Vec<u8> {
    let mut bits: Vec<bool> = Vec::new();
    let mut put = |v: u32, n: u32| (0..n).rev().for_each(|i| bits.push(v >> i & 1 == 1));
    let ue = |put: &mut dyn FnMut(u32, u32), v: u32| {
        let len = 32 - (v + 1).leading_zeros();
        put(0, len - 1);
        put(v + 1, len);
    };
    put(66, 8);
    put(0, 8);
    put(62, 8);
    for v in [0, 0, 2, 1] {
        ue(&mut put, v); // sps id, log2_max_frame_num-4, poc type 2, 1 reference
    }
    put(0, 1);
    ue(&mut put, mbs_w - 1);
    ue(&mut put, mbs_h - 1);
    put(0b11001, 5); // frame_mbs_only, direct_8x8, no cropping, no VUI, stop bit
    while !bits.len().is_multiple_of(8) {
        bits.push(false);
    }
    let mut sps = vec![0x67];
    let mut zeros = 0;
    for byte in bits
        .chunks(8)
        .map(|b| b.iter().fold(0u8, |a, &x| a << 1 | u8::from(x)))
    {
        if zeros >= 2 && byte <= 3 {
            sps.push(3);
            zeros = 0;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        sps.push(byte);
    }
    let pps = [0x68, 0xce, 0x38, 0x80];
    let mut record = vec![1, 66, 0, 62, 0xff, 0xe1];
    record.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    record.extend_from_slice(&sps);
    record.push(1);
    record.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    record.extend_from_slice(&pps);
    record
}

fn sequence_header(avcc: &[u8], ts: u32) -> Tag {
    let mut body = vec![0x17, 0, 0, 0, 0];
    body.extend_from_slice(avcc);
    Tag {
        kind: 9,
        ts,
        body: Bytes::from(body),
    }
}

fn is_sequence_header(t: &Tag) -> bool {
    t.kind == 9 && t.body.get(1) == Some(&0)
}

/// The legitimate stream: 320x240 testsrc2 published in real time by ffmpeg.
fn good_publisher(server: &Server, user: &str, seconds: u32) -> Child {
    let key = server.add_key(user);
    publish_file(&server.rtmp_url(&key), &source_clip(320, 240, 30, seconds))
}

fn stream_json(server: &Server, user: &str) -> Option<serde_json::Value> {
    let (_, body) = server.get("/api/v1/streams");
    let streams: serde_json::Value = serde_json::from_str(&body).ok()?;
    streams
        .as_array()?
        .iter()
        .find(|s| s["name"] == user)
        .cloned()
}

/// The legitimate stream's transcoder kept real time: nothing dropped, and it works faster than
/// the media arrives.
fn assert_keeps_real_time(server: &Server, user: &str) -> serde_json::Value {
    let t = stream_json(server, user)
        .map(|s| s["transcode"].clone())
        .unwrap_or_default();
    assert_eq!(t["state"], "running", "{t}\n{}", server.logs());
    assert_eq!(t["dropped_frames"], 0, "{t}");
    assert!(t["capacity"].as_f64().unwrap_or(0.0) > 1.0, "{t}");
    t
}

/// Sends `tags` in real time until the server closes the connection (or they run out).
fn hostile_publish(server: &Server, user: &str, tags: Vec<Tag>) -> std::thread::JoinHandle<bool> {
    let url = server.rtmp_url(&server.add_key(user));
    std::thread::spawn(move || {
        let mut p = flv_publish::Publisher::connect(&url).expect("publish");
        let refused = p.send(&tags, 0, true).is_err();
        drop(p);
        refused
    })
}

fn wait_refused(server: &Server, user: &str, message: &str) {
    server.wait_until(Duration::from_secs(15), message, || {
        server.logs().contains(message) && stream_json(server, user).is_none()
    });
}

#[test]
fn a_crafted_sps_with_a_huge_size_is_refused_while_another_stream_keeps_real_time() {
    let _cpu = heavy();
    let server = Server::start();
    let good = good_publisher(&server, "good", 8);
    server.wait_master("good", Duration::from_secs(20));
    // 16384x2176, then "frames" of junk, paced: a few KB of input.
    let mut tags = vec![sequence_header(&crafted_avcc(1024, 136), 0)];
    for i in 0..150u32 {
        let mut body = vec![
            if i % 30 == 0 { 0x17 } else { 0x27 },
            1,
            0,
            0,
            0,
            0,
            0,
            0,
            4,
        ];
        body.extend_from_slice(&[0x65, 0x88, 0x84, 0x00]);
        tags.push(Tag {
            kind: 9,
            ts: i * 33,
            body: Bytes::from(body),
        });
    }
    let hostile = hostile_publish(&server, "huge", tags);
    wait_refused(
        &server,
        "huge",
        "source picture 16384x2176 is larger than this server accepts \
         (transcode.max_source_pixels = 3686400, transcode.max_source_dimension = 4096)",
    );
    assert!(hostile.join().unwrap(), "the publisher's session was ended");
    assert_keeps_real_time(&server, "good");
    let (ok, err) = wait_child(good, Duration::from_secs(30));
    assert!(ok, "good publisher: {err}");
}

#[test]
fn a_crafted_sps_over_the_size_limit_is_refused_in_passthrough_too() {
    let server = Server::start_passthrough(&[]);
    let tags = vec![
        sequence_header(&crafted_avcc(256, 256), 0),
        Tag {
            kind: 9,
            ts: 0,
            body: Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]),
        },
    ];
    let hostile = hostile_publish(&server, "square", tags);
    wait_refused(&server, "square", "source picture 4096x4096 is larger");
    hostile.join().unwrap();
    let (status, _) = server.get("/live/square/source/index.m3u8");
    assert_ne!(status, 200);
}

/// An FLV of testsrc2 at an odd size, x264 with its SPS/PPS repeated in every keyframe (in-band).
fn inband_clip(width: u32, height: u32) -> (tempfile::TempDir, Vec<Tag>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inband.flv");
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={width}x{height}:rate=30"))
        .args(["-t", "4", "-c:v", "libx264", "-preset", "ultrafast"])
        .args([
            "-pix_fmt",
            "yuv420p",
            "-x264-params",
            "repeat-headers=1:keyint=30",
        ])
        .arg(&path)
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tags = flv_publish::read_flv(&path);
    (dir, tags)
}

#[test]
fn an_in_band_sps_switching_to_an_oversized_picture_is_refused() {
    let _cpu = heavy();
    let server = Server::start();
    // The record says 320x240; the frames carry their own SPS for 4112x16: few pixels, but wider
    // than max_source_dimension. Only the frames show it (the SPS in them, and the picture).
    let small = flv_publish::read_flv(&source_clip(320, 240, 30, 2));
    let record = small.iter().find(|t| is_sequence_header(t)).unwrap();
    let (_dir, wide) = inband_clip(4112, 16);
    let mut tags = vec![Tag {
        kind: 9,
        ts: 0,
        body: record.body.clone(),
    }];
    tags.extend(
        wide.into_iter()
            .filter(|t| t.kind == 9 && !is_sequence_header(t)),
    );
    let hostile = hostile_publish(&server, "inband", tags);
    wait_refused(&server, "inband", "source picture 4112x16 is larger");
    assert!(hostile.join().unwrap());
}

/// An 8 s clip whose two valid records of the same stream (levels 3.0 / 4.0) alternate before
/// every video frame.
fn flapping_tags() -> Vec<Tag> {
    let clip = flv_publish::read_flv(&source_clip(320, 240, 30, 8));
    let a = clip
        .iter()
        .find(|t| is_sequence_header(t))
        .unwrap()
        .body
        .clone();
    let mut b = a.to_vec();
    b[5 + 3] = 0x28;
    b[5 + 11] = 0x28;
    let mut tags = Vec::new();
    let mut flip = false;
    for t in clip {
        if is_sequence_header(&t) {
            continue;
        }
        if t.kind == 9 {
            flip = !flip;
            tags.push(Tag {
                kind: 9,
                ts: t.ts,
                body: if flip {
                    a.clone()
                } else {
                    Bytes::from(b.clone())
                },
            });
        }
        tags.push(t);
    }
    tags
}

const FLAPPING: &str =
    "the source changed its configuration 5 times within 10s (at most 4 allowed)";

#[test]
fn an_avcc_flapping_every_frame_is_refused_while_another_stream_keeps_real_time() {
    let _cpu = heavy();
    let server = Server::start();
    let good = good_publisher(&server, "steady", 10);
    server.wait_master("steady", Duration::from_secs(20));
    let tags = flapping_tags();
    let started = Instant::now();
    let hostile = hostile_publish(&server, "flapper", tags);
    wait_refused(&server, "flapper", FLAPPING);
    assert!(hostile.join().unwrap(), "the publisher's session was ended");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "refused at once"
    );
    assert_keeps_real_time(&server, "steady");
    let (ok, err) = wait_child(good, Duration::from_secs(30));
    assert!(ok, "good publisher: {err}");
}

#[test]
fn an_avcc_flapping_every_frame_is_refused_in_passthrough_too() {
    // Passthrough cuts a segment at every configuration change: unchecked, one per frame.
    let server = Server::start_passthrough(&[]);
    let hostile = hostile_publish(&server, "flapper", flapping_tags());
    wait_refused(&server, "flapper", FLAPPING);
    assert!(hostile.join().unwrap(), "the publisher's session was ended");
}

/// Nice values of the server's threads: (name, nice) from /proc.
fn thread_nices(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesized name: state is field 3, nice is field 19.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let name = head.split_once(" (").map(|h| h.1).unwrap_or_default();
        if let Some(nice) = rest.split(' ').nth(16).and_then(|n| n.parse().ok()) {
            out.push((name.to_string(), nice));
        }
    }
    out
}

#[test]
fn publishers_beyond_max_ladders_are_served_as_published_and_the_slot_is_freed() {
    let _cpu = heavy();
    let server = Server::start_with(&[
        ("LIVEGATE_TRANSCODE_MAX_LADDERS", "2"),
        ("LIVEGATE_TRANSCODE_LADDER_NICE", "10"),
    ]);
    // 320x240 sources with keyframes every second: each ladder serves its source as its one
    // rung (transcode.source_rung = auto) and weighs 3/5 of a full ladder, so max_ladders = 2
    // admits three of them.
    // Long enough to still be live after three more publishes on a loaded machine; the others
    // outlast it, so its end frees exactly its slot.
    let first = good_publisher(&server, "first", 20);
    server.wait_master("first", Duration::from_secs(20));
    let mut others = Vec::new();
    for user in ["second", "third"] {
        others.push(good_publisher(&server, user, 30));
        server.wait_master(user, Duration::from_secs(20));
        server.wait_until(
            Duration::from_secs(10),
            "a ladder serving its source",
            || {
                stream_json(&server, user).is_some_and(|s| {
                    s["transcode"]["state"] == "running"
                        && s["transcode"]["source_rung"]["rung"] == "240p"
                })
            },
        );
    }
    others.push(good_publisher(&server, "fourth", 30));
    server.wait_master("fourth", Duration::from_secs(20));
    let s = stream_json(&server, "fourth").unwrap_or_default();
    assert_eq!(s["transcode"]["state"], "not_admitted", "{s}");
    // Served as published: the source rendition plays.
    let (status, _) = server.get("/live/fourth/source/index.m3u8");
    assert_eq!(status, 200);
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("livegate_transcode_not_admitted_total{reason=\"served_as_published\"} 1"),
        "{metrics}"
    );
    // HTTP stays responsive.
    for _ in 0..5 {
        let t0 = Instant::now();
        assert_eq!(server.get("/healthz").0, 200);
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "{:?}",
            t0.elapsed()
        );
    }
    // The admitted ladder keeps real time, on niced threads; ingest and HTTP are not niced.
    let t = assert_keeps_real_time(&server, "first");
    eprintln!("admitted ladder: {t}");
    let nices = thread_nices(server.pid());
    let base = nices.iter().map(|(_, n)| *n).min().unwrap_or(0);
    let ladder: Vec<_> = nices
        .iter()
        .filter(|(n, _)| n.starts_with("lg-ladder"))
        .collect();
    assert!(
        ladder.len() >= 3,
        "ladder, rung and libav threads: {nices:?}"
    );
    assert!(
        ladder.iter().all(|(_, n)| *n == (base + 10).min(19)),
        "{nices:?}"
    );
    assert!(
        nices
            .iter()
            .filter(|(n, _)| !n.starts_with("lg-ladder"))
            .all(|(_, n)| *n == base),
        "{nices:?}"
    );
    // When the admitted stream ends, its slot is free for the next publish.
    let (ok, err) = wait_child(first, Duration::from_secs(30));
    assert!(ok, "first publisher: {err}");
    server.wait_until(Duration::from_secs(10), "the ladder to end", || {
        server.get("/metrics").1.contains("livegate_transcoders 2")
    });
    let next = good_publisher(&server, "fifth", 4);
    server.wait_master("fifth", Duration::from_secs(20));
    server.wait_until(Duration::from_secs(10), "a ladder for the next one", || {
        stream_json(&server, "fifth").is_some_and(|s| s["transcode"]["state"] == "running")
    });
    for child in others.into_iter().chain([next]) {
        let (ok, err) = wait_child(child, Duration::from_secs(30));
        assert!(ok, "publisher: {err}");
    }
}

/// A publish ended by a failure, not by its publisher (here a mid-stream sequence header over
/// the size limit, refused by passthrough or by the ladder), with recording on: the recording
/// keeps and plays what came before, and ends `incomplete` with the reason instead of
/// `finished` as if all were well.
#[test]
fn a_stream_ended_by_a_failure_leaves_an_incomplete_recording_that_says_why() {
    failure_ends_the_recording(true);
}

#[test]
fn a_ladder_ended_by_a_failure_leaves_an_incomplete_recording_that_says_why() {
    let _cpu = heavy();
    failure_ends_the_recording(false);
}

fn failure_ends_the_recording(passthrough: bool) {
    use crate::record::{start, video_seconds_read, wait_recording, ADMIN};
    let server = start(&[], passthrough);
    // 6 s of a real clip, then a record declaring 4096x4096 and junk frames for 4 s more.
    let mut tags = flv_publish::read_flv(&source_clip(320, 240, 30, 6));
    let end = tags.iter().map(|t| t.ts).max().unwrap_or(0) + 33;
    tags.push(sequence_header(&crafted_avcc(256, 256), end));
    for i in 0..120u32 {
        tags.push(Tag {
            kind: 9,
            ts: end + i * 33,
            body: Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]),
        });
    }
    let hostile = hostile_publish(&server, "cut", tags);
    let refused = "source picture 4096x4096 is larger than this server accepts";
    wait_refused(&server, "cut", refused);
    assert!(hostile.join().unwrap(), "the publisher's session was ended");

    let manifest = wait_recording(&server, "cut", "incomplete", Duration::from_secs(30));
    eprintln!("recording of a stream ended by a failure: {manifest}");
    let error = manifest["error"].as_str().unwrap_or_default();
    assert!(error.starts_with(refused), "{manifest}");
    // The reason names the limit, never a path or the stream key.
    let data_dir = server.dir.path().to_string_lossy().into_owned();
    assert!(
        !error.contains(&data_dir) && !error.contains('/'),
        "{error}"
    );
    assert_eq!(manifest["missing_segments"], 0, "{manifest}");
    let duration = manifest["duration_secs"].as_f64().unwrap_or(0.0);
    assert!((4.0..=7.0).contains(&duration), "{manifest}");

    // What was recorded plays, with ENDLIST.
    let id = manifest["id"].as_str().expect("id");
    let (status, _, playlist) =
        server.get_authorized(&format!("/vod/{id}/index.m3u8"), ADMIN, None);
    assert_eq!(status, 200);
    let playlist = parse_media(&String::from_utf8_lossy(&playlist));
    assert!(playlist.end_list);
    let auth = format!("Authorization: Bearer {ADMIN}\r\n");
    let vod = ffprobe_with(
        &["-headers", &auth, "-count_packets"],
        &server.url(&format!("/vod/{id}/index.m3u8")),
    );
    let played = video_seconds_read(&vod);
    assert!((played - duration).abs() < 0.5, "{played} s of {duration}");

    // The recordings API (and so the error) stays behind the admin token.
    let list = "/api/v1/recordings?user=cut";
    assert_eq!(server.request("GET", list, None, None).0, 401);
    assert_eq!(server.request("GET", list, Some("wrong"), None).0, 401);
}
