//! Low-latency HLS end to end: hls.js in low-latency mode plays passthrough and the ladder from
//! parts, with rungs cut at the same part boundaries; players without LL-HLS (ffprobe, hls.js
//! with `lowLatencyMode: false`) play the same playlists; blocking reloads and preload-hinted
//! parts are held until the part exists (200 at once), refused or timed out by the spec's rules;
//! all of it through the shipped nginx edge too.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::edge::Nginx;

/// One segment of an LL-HLS media playlist: its parts (duration, independent) and its URI
/// (None for the segment being built).
#[derive(Debug, Clone, PartialEq)]
struct Listed {
    msn: u64,
    parts: Vec<(f64, bool)>,
    uri: Option<String>,
}

/// The LL-HLS view of a media playlist, read line by line (m3u8-rs has no LL-HLS tags).
#[derive(Debug)]
struct LowLatency {
    target_duration: u64,
    part_target: f64,
    segments: Vec<Listed>,
    preload_hint: Option<String>,
    reports: Vec<String>,
}

fn attribute<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    let rest = &line[at..];
    Some(match rest.strip_prefix('"') {
        Some(quoted) => &quoted[..quoted.find('"')?],
        None => rest.split(',').next()?,
    })
}

fn read_low_latency(text: &str) -> LowLatency {
    let number = |line: &str| line.split(':').nth(1).unwrap_or("").trim().to_string();
    let mut p = LowLatency {
        target_duration: 0,
        part_target: 0.0,
        segments: Vec::new(),
        preload_hint: None,
        reports: Vec::new(),
    };
    let mut msn = 0;
    let mut parts = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("#EXT-X-TARGETDURATION:") {
            p.target_duration = number(line).parse().unwrap();
        } else if line.starts_with("#EXT-X-MEDIA-SEQUENCE:") {
            msn = number(line).parse().unwrap();
        } else if line.starts_with("#EXT-X-PART-INF:") {
            p.part_target = attribute(line, "PART-TARGET").unwrap().parse().unwrap();
        } else if line.starts_with("#EXT-X-PART:") {
            let duration = attribute(line, "DURATION").unwrap().parse().unwrap();
            parts.push((duration, line.contains("INDEPENDENT=YES")));
        } else if line.starts_with("#EXTINF:") {
            p.segments.push(Listed {
                msn,
                parts: std::mem::take(&mut parts),
                uri: lines.next().map(str::to_string),
            });
            msn += 1;
        } else if line.starts_with("#EXT-X-PRELOAD-HINT:") {
            p.preload_hint = attribute(line, "URI").map(str::to_string);
        } else if line.starts_with("#EXT-X-RENDITION-REPORT:") {
            p.reports.push(line.to_string());
        }
    }
    if !parts.is_empty() {
        p.segments.push(Listed {
            msn,
            parts,
            uri: None,
        });
    }
    p
}

/// (msn, part) of a hinted part's name `<instance>-<msn>.<part>.m4s`.
fn hinted(uri: &str) -> (u64, u64) {
    let (_, rest) = uri.trim_end_matches(".m4s").rsplit_once('-').unwrap();
    let (msn, part) = rest.split_once('.').unwrap();
    (msn.parse().unwrap(), part.parse().unwrap())
}

/// Publishes a 2 s-GOP 30 fps source (as OBS with a 2 s keyframe interval) for `seconds`.
fn publish(
    server: &Server,
    user: &str,
    width: u32,
    height: u32,
    seconds: f64,
) -> std::process::Child {
    let key = server.add_key(user);
    let src = Source {
        width,
        height,
        seconds,
        gop: 60,
        ..Source::default()
    };
    ffmpeg_publish(&server.rtmp_url(&key), &src)
        .spawn()
        .expect("ffmpeg")
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// What README advises sites: hls.js's default (1) never catches up to its target latency after
/// joining at an independent part up to a GOP behind it. (README's other advice, jumping back to
/// the live edge after a stall, is [`play_near_live`]'s.)
const CATCH_UP: &str = r#"{"maxLiveSyncPlaybackRate":1.5}"#;

/// (lowest, median) of the hls.latency samples of a play.mjs report.
fn latency(report: &serde_json::Value) -> (f64, f64) {
    let samples: Vec<f64> = report["latencies"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
        .unwrap_or_default();
    (
        samples.iter().copied().fold(f64::NAN, f64::min),
        median(&samples),
    )
}

/// hls.js in low-latency mode, as README advises sites to play it, played `seconds` from parts
/// without a fatal error. Returns the report. How close it got to the live edge depends on the
/// machine's load (a loaded 2-core CI machine stalls it, and a stall adds latency until the
/// page's jump back to the live edge): the passthrough case compares it with classic HLS in the
/// same run; `scripts/bench.sh latency` measures the figures on an idle machine.
fn assert_plays_low_latency(url: &str, seconds: u32) -> serde_json::Value {
    let (ok, report) = play_near_live(url, seconds, CATCH_UP);
    assert!(ok, "hls.js played {url}: {report}");
    assert!(
        report["partsLoaded"].as_u64().unwrap_or(0) > 0,
        "parts: {report}"
    );
    let (closest, median) = latency(&report);
    eprintln!(
        "hls.js LL {url}: latency median {median:.2} s, best {closest:.2} s (target {}), {} \
         parts, {} segments, {} stalls, {} jumps back to the live edge",
        report["targetLatency"],
        report["partsLoaded"],
        report["segmentsLoaded"],
        report["stalls"],
        report["jumps"]
    );
    report
}

#[test]
fn passthrough_plays_from_parts_and_players_without_ll_hls_play_the_same_stream() {
    let server = Server::start_passthrough(&[]);
    let mut publisher = publish(&server, "alice", 640, 360, 45.0);
    server.wait_master("alice", Duration::from_secs(15));
    let (status, text) = server.media_playlist("alice");
    assert_eq!(status, 200);
    let p = read_low_latency(&text);
    assert_eq!((p.target_duration, p.part_target), (2, 0.3), "{text}");
    assert!(text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.900"));
    assert!(p.preload_hint.is_some(), "{text}");

    let url = server.url("/live/alice/index.m3u8");
    let classic = {
        let url = url.clone();
        std::thread::spawn(move || play_with(&url, 8, -1, false, "{}"))
    };
    let probe = ffprobe(&url);
    assert!(
        probe["streams"].as_array().is_some_and(|s| s.len() == 2),
        "ffprobe reads the LL-HLS master as classic HLS: {probe}"
    );
    let low = assert_plays_low_latency(&url, 30);
    let (ok, classic) = classic.join().unwrap();
    assert!(ok, "hls.js with lowLatencyMode: false: {classic}");
    assert_eq!(classic["partsLoaded"].as_u64(), Some(0), "{classic}");
    let (low, classic) = (latency(&low).0, latency(&classic).0);
    assert!(
        low < classic,
        "at best LL-HLS {low} s behind, classic {classic} s"
    );

    // Parts were cut on the grid all along: every listed part within the part target, and at
    // least 85 % of it except a segment's last and independent ones (RFC 8216bis §4.4.4.9).
    let (_, text) = server.media_playlist("alice");
    let p = read_low_latency(&text);
    assert_eq!(p.target_duration, 2, "fixed for the playlist's life");
    for s in &p.segments {
        for (i, &(d, independent)) in s.parts.iter().enumerate() {
            assert!(d <= p.part_target + 1e-6, "{text}");
            let last = i + 1 == s.parts.len() && s.uri.is_some();
            assert!(last || independent || d >= 0.85 * p.part_target, "{text}");
        }
    }
    let _ = publisher.kill();
    let _ = publisher.wait();
}

#[test]
fn ladder_rungs_cut_the_same_parts_and_hls_js_plays_them() {
    let _cpu = heavy();
    let server = Server::start();
    // 480p: two rungs (360p, 480p), never upscaled.
    let mut publisher = publish(&server, "bob", 854, 480, 45.0);
    server.wait_master("bob", Duration::from_secs(20));
    let url = server.url("/live/bob/index.m3u8");
    let player = {
        let url = url.clone();
        std::thread::spawn(move || assert_plays_low_latency(&url, 30))
    };
    // Every rung lists the same parts for the same segments; each reports the other.
    let mut compared = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let rung =
            |name: &str| read_low_latency(&server.get(&format!("/live/bob/{name}/index.m3u8")).1);
        let (low, high) = (rung("360p"), rung("480p"));
        assert_eq!(low.target_duration, high.target_duration);
        assert!(
            low.reports.iter().any(|r| r.contains("../480p/index.m3u8")),
            "{low:?}"
        );
        assert!(
            high.reports
                .iter()
                .any(|r| r.contains("../360p/index.m3u8")),
            "{high:?}"
        );
        for a in low.segments.iter().filter(|s| s.uri.is_some()) {
            if let Some(b) = high
                .segments
                .iter()
                .find(|b| b.msn == a.msn && b.uri.is_some())
            {
                if !a.parts.is_empty() && !b.parts.is_empty() {
                    // The same frames: as many parts, independent at the same place, and the
                    // same lengths but for the millisecond rounding of the 480p rung, which is
                    // the source as published (RTMP's millisecond clock, B-frames).
                    let same = a.parts.len() == b.parts.len()
                        && a.parts
                            .iter()
                            .zip(&b.parts)
                            .all(|(x, y)| x.1 == y.1 && (x.0 - y.0).abs() <= 0.0015);
                    assert!(same, "segment {}: 360p {low:?}\n480p {high:?}", a.msn);
                    compared += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(700));
    }
    assert!(compared >= 10, "only {compared} segments compared");
    player.join().unwrap();
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// Stops (or resumes) the publisher with the real `kill`: no new part while stopped.
fn freeze(publisher: &std::process::Child, stop: bool) {
    let signal = if stop { "-STOP" } else { "-CONT" };
    let status = Command::new("kill")
        .args([signal, &publisher.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[test]
fn blocking_reloads_and_hinted_parts_are_held_until_the_part_exists() {
    // 201 viewers on one address (production spreads them over many, or an exempt edge).
    let server = Server::start_passthrough(&[("LIVEGATE_HTTP_MAX_CONNECTIONS_PER_IP", "300")]);
    let publisher = publish(&server, "carol", 320, 180, 30.0);
    server.wait_master("carol", Duration::from_secs(15));
    let playlist = "/live/carol/source/index.m3u8";

    // The spec's refusals, at once.
    let (status, _) = server.get(&format!("{playlist}?_HLS_part=1"));
    assert_eq!(status, 400, "_HLS_part without _HLS_msn");
    let (status, _) = server.get(&format!("{playlist}?_HLS_msn=99999"));
    assert_eq!(status, 400, "more than two segments ahead");
    let (status, _) = server.get(&format!("{playlist}?_HLS_msn=x"));
    assert_eq!(status, 400);

    // The publisher stops: 200 requests for the next part and one for the hinted part wait.
    freeze(&publisher, true);
    std::thread::sleep(Duration::from_millis(500));
    let p = read_low_latency(&server.media_playlist("carol").1);
    let hint = p.preload_hint.expect("a preload hint");
    let (msn, part) = hinted(&hint);
    let base = server.url("");
    let blocked: Vec<_> = (0..200)
        .map(|_| {
            let url = format!("{base}{playlist}?_HLS_msn={msn}&_HLS_part={part}");
            std::thread::spawn(move || {
                let (status, _, body) = http_get(&url);
                (
                    status,
                    String::from_utf8_lossy(&body).into_owned(),
                    Instant::now(),
                )
            })
        })
        .collect();
    let hint_url = format!("{base}/live/carol/source/{hint}");
    let hinted_part = {
        let url = hint_url.clone();
        std::thread::spawn(move || http_get(&url))
    };
    server.wait_until(Duration::from_secs(4), "201 requests held", || {
        server.metric("livegate_hls_blocked_requests") >= 201.0
    });
    assert!(
        blocked.iter().all(|t| !t.is_finished()),
        "released before the part existed"
    );
    let resumed = Instant::now();
    freeze(&publisher, false);
    let mut released = Vec::new();
    for t in blocked {
        let (status, body, at) = t.join().unwrap();
        assert_eq!(status, 200);
        assert!(
            body.contains(&hint),
            "the answer lists the part it waited for:\n{body}"
        );
        released.push(at.duration_since(resumed).as_secs_f64());
    }
    let (status, _, body) = hinted_part.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(&body[4..8], b"moof", "a CMAF fragment");
    let (_, _, again) = http_get(&hint_url);
    assert_eq!(body, again, "the hinted part is the part");
    eprintln!(
        "200 blocking reloads released {:.3}-{:.3} s after the publisher resumed",
        released.iter().copied().fold(f64::MAX, f64::min),
        released.iter().copied().fold(0.0, f64::max)
    );
    assert_eq!(server.metric("livegate_hls_blocked_requests"), 0.0);

    // A part that does not come within 3 target durations: 503.
    freeze(&publisher, true);
    std::thread::sleep(Duration::from_millis(500));
    let p = read_low_latency(&server.media_playlist("carol").1);
    let (msn, part) = hinted(&p.preload_hint.unwrap());
    let asked = Instant::now();
    let (status, _) = server.get(&format!("{playlist}?_HLS_msn={msn}&_HLS_part={part}"));
    let waited = asked.elapsed();
    freeze(&publisher, false);
    assert_eq!(status, 503);
    assert!(
        waited >= Duration::from_secs(5),
        "held {waited:?} before 503"
    );

    // After ENDLIST the directives are ignored.
    let (ok, log) = wait_child(publisher, Duration::from_secs(60));
    assert!(ok, "{log}");
    server.wait_until(Duration::from_secs(10), "ENDLIST", || {
        server.media_playlist("carol").1.contains("#EXT-X-ENDLIST")
    });
    let p = read_low_latency(&server.media_playlist("carol").1);
    let last = p.segments.last().unwrap().msn;
    let (status, text) = server.get(&format!("{playlist}?_HLS_msn={}&_HLS_part=0", last + 1));
    assert_eq!(status, 200);
    assert!(text.contains("#EXT-X-ENDLIST") && !text.contains("PRELOAD-HINT"));
}

#[test]
fn blocking_reloads_and_parts_through_the_nginx_edge() {
    let server = Server::start_passthrough(&[]);
    let mut publisher = publish(&server, "dave", 320, 180, 40.0);
    server.wait_master("dave", Duration::from_secs(15));
    let edge = Nginx::start(&[server.http_port]);
    let playlist = edge.url("/live/dave/source/index.m3u8");

    // Each (msn, part) is its own cache entry, answered when that part exists.
    let (status, _, body) = http_get(&playlist);
    assert_eq!(status, 200);
    let p = read_low_latency(&String::from_utf8_lossy(&body));
    let (msn, part) = hinted(p.preload_hint.as_deref().unwrap());
    let next = format!("{playlist}?_HLS_msn={msn}&_HLS_part={part}");
    let (status, headers, first) = http_get(&next);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-cache-status"), Some("MISS"));
    let first = String::from_utf8_lossy(&first).into_owned();
    let hint = p.preload_hint.unwrap();
    assert!(first.contains(&hint), "{first}");
    let (_, headers, cached) = http_get(&next);
    assert_eq!(header(&headers, "x-cache-status"), Some("HIT"));
    assert_eq!(String::from_utf8_lossy(&cached), first);
    let later = read_low_latency(&first).preload_hint.unwrap();
    let (lmsn, lpart) = hinted(&later);
    let (status, _, body) = http_get(&format!("{playlist}?_HLS_msn={lmsn}&_HLS_part={lpart}"));
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&body).contains(&later),
        "not served from another entry"
    );

    // A hinted part through the edge is held at the origin until it exists.
    let (status, _, part_body) = http_get(&edge.url(&format!("/live/dave/source/{later}")));
    assert_eq!(status, 200);
    assert_eq!(&part_body[4..8], b"moof");

    assert_plays_low_latency(&edge.url("/live/dave/index.m3u8"), 20);
    let _ = publisher.kill();
    let _ = publisher.wait();
}
