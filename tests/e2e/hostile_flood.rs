//! Hostile publishers in passthrough with recording on: a flood of 1-byte AAC frames on a
//! frozen clock, and a clock that jumps +10 s per message. The server's memory, the segments it
//! makes and the lines it logs stay bounded, and a normal stream published alongside is served
//! complete.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::common::*;
use crate::flv_publish::{Publisher, Tag};

/// AAC-LC, 48 kHz, stereo.
const AAC_HEADER: [u8; 4] = [0xAF, 0x00, 0x11, 0x90];

fn proc_status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system) of the process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after ") ".
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn tag(ts: u32, body: &'static [u8]) -> Tag {
    Tag {
        kind: 8,
        ts,
        body: Bytes::from_static(body),
    }
}

struct Measured {
    rss_peak_kb: u64,
    rss_start_kb: u64,
    log_lines: usize,
    cpu_secs: f64,
    segments: u64,
}

/// Runs `flood` (which returns when done) beside a real-time 6 s publish, sampling the server.
fn beside_a_normal_stream(server: &Server, flood: impl FnOnce(&dyn Fn()) + Send) -> Measured {
    let calm_key = server.add_key("calm");
    let calm = publish_file(&server.rtmp_url(&calm_key), &source_clip(320, 240, 30, 6));
    let pid = server.pid();
    std::thread::sleep(Duration::from_millis(500));
    let rss_start_kb = proc_status_kb(pid, "VmRSS");
    let lines_before = server.logs().lines().count();
    let segments_before = server.metric("livegate_hls_segments_total") as u64;
    let cpu_before = cpu_ticks(pid);
    let peak = std::sync::atomic::AtomicU64::new(rss_start_kb);
    let sample = || {
        peak.fetch_max(
            proc_status_kb(pid, "VmRSS"),
            std::sync::atomic::Ordering::Relaxed,
        );
    };
    flood(&sample);
    for _ in 0..10 {
        sample();
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, err) = wait_child(calm, Duration::from_secs(30));
    assert!(ok, "the normal stream was refused or cut: {err}");
    let p = server.wait_endlist("calm", "source", Duration::from_secs(15));
    let total: f32 = p.segments.iter().map(|s| s.duration).sum();
    assert!(
        (total - 6.0).abs() < 0.5,
        "the normal stream is complete: {total} s"
    );
    let m = Measured {
        rss_peak_kb: peak.load(std::sync::atomic::Ordering::Relaxed),
        rss_start_kb,
        log_lines: server.logs().lines().count() - lines_before,
        cpu_secs: (cpu_ticks(pid) - cpu_before) as f64 / 100.0,
        segments: server.metric("livegate_hls_segments_total") as u64 - segments_before,
    };
    eprintln!(
        "RSS {} → peak {} MiB; {} log lines; {} segments; {:.1} s CPU",
        m.rss_start_kb / 1024,
        m.rss_peak_kb / 1024,
        m.log_lines,
        m.segments,
        m.cpu_secs
    );
    m
}

/// Sends 1-byte AAC frames, all at time 0, as fast as the socket takes them, for 3 s or until
/// the server ends the session.
fn tiny_frame_flood(url: &str, sample: &dyn Fn()) {
    let mut p = Publisher::connect(url).expect("publish");
    p.send(&[tag(0, &AAC_HEADER)], 0, false).expect("header");
    let batch: Vec<Tag> = (0..5000).map(|_| tag(0, &[0xAF, 0x01, 0x00])).collect();
    let start = Instant::now();
    let mut sent = 0usize;
    while start.elapsed() < Duration::from_secs(3) {
        if p.send(&batch, 0, false).is_err() {
            break; // the server ended the session
        }
        sent += batch.len();
        sample();
    }
    eprintln!("sent {sent} tiny frames in {:?}", start.elapsed());
}

#[test]
fn a_flood_of_tiny_frames_is_ended_and_bounded() {
    let server = Server::start_passthrough(&[]);
    let key = server.add_key("tiny");
    let url = server.rtmp_url(&key);
    let m = beside_a_normal_stream(&server, |sample| tiny_frame_flood(&url, sample));
    assert!(
        m.rss_peak_kb < m.rss_start_kb + 48 * 1024,
        "memory stays bounded: {} → {} kB",
        m.rss_start_kb,
        m.rss_peak_kb
    );
    assert!(m.log_lines < 200, "{} log lines", m.log_lines);
    assert!(m.segments < 30, "{} segments", m.segments);
    let logs = server.logs();
    assert!(
        logs.contains("max_messages_per_sec"),
        "the flood ends with a clear reason\n{logs}"
    );
}

#[test]
fn tiny_frames_under_a_raised_rate_limit_still_cost_bounded_memory() {
    // Defence in depth: with the message-rate limit out of the way, the constant-memory rate
    // window and the segment sample cap still bound what a flood costs.
    let server = Server::start_passthrough(&[("LIVEGATE_RTMP_MAX_MESSAGES_PER_SEC", "10000000")]);
    let key = server.add_key("tiny");
    let url = server.rtmp_url(&key);
    let m = beside_a_normal_stream(&server, |sample| tiny_frame_flood(&url, sample));
    assert!(
        m.rss_peak_kb < m.rss_start_kb + 64 * 1024,
        "memory stays bounded: {} → {} kB",
        m.rss_start_kb,
        m.rss_peak_kb
    );
    assert!(m.log_lines < 300, "{} log lines", m.log_lines);
}

#[test]
fn a_clock_jumping_ahead_makes_no_segment_per_message() {
    let server = Server::start_passthrough(&[]);
    let key = server.add_key("jumpy");
    let url = server.rtmp_url(&key);
    let m = beside_a_normal_stream(&server, |sample| {
        let mut p = Publisher::connect(&url).expect("publish");
        p.send(&[tag(0, &AAC_HEADER)], 0, false).expect("header");
        // +10 s per message, 400 messages a second (below the message-rate limit), for 4 s.
        let start = Instant::now();
        let mut ts: u32 = 0;
        while start.elapsed() < Duration::from_secs(4) {
            let batch: Vec<Tag> = (0..20)
                .map(|i| tag(i * 10_000, &[0xAF, 0x01, 0x21, 0x10, 0x04]))
                .collect();
            if p.send(&batch, ts, false).is_err() {
                break;
            }
            ts = ts.wrapping_add(20 * 10_000);
            sample();
            std::thread::sleep(Duration::from_millis(50));
        }
        p.finish();
    });
    assert!(
        m.rss_peak_kb < m.rss_start_kb + 48 * 1024,
        "memory stays bounded: {} → {} kB",
        m.rss_start_kb,
        m.rss_peak_kb
    );
    // 4 s of wall time: what real time allows (plus the 15 s lead), not one per message (1600).
    assert!(m.segments < 40, "{} segments", m.segments);
    assert!(m.log_lines < 200, "{} log lines", m.log_lines);
}

#[test]
fn a_message_over_the_cap_is_refused_before_it_is_buffered() {
    let server = Server::start_passthrough(&[]);
    let key = server.add_key("huge");
    let mut p = Publisher::connect(&server.rtmp_url(&key)).expect("publish");
    // One 5 MiB video message (RTMP allows 16 MiB; the cap is 4 MiB).
    let mut body = vec![0x17, 0x01, 0, 0, 0];
    body.resize(5 << 20, 0);
    let _ = p.send(
        &[Tag {
            kind: 9,
            ts: 0,
            body: Bytes::from(body),
        }],
        0,
        false,
    );
    server.wait_until(Duration::from_secs(10), "the session to end", || {
        server.logs().contains("RTMP session ended")
    });
    let logs = server.logs();
    assert!(
        logs.contains("an RTMP message of 5242880 bytes (at most 4194304)"),
        "{logs}"
    );
}
