//! Benchmark publisher: sends an FLV file over RTMP in real time (like `ffmpeg -re -c copy`) while
//! recording when each tag was written to the socket, and polls the stream's media playlist to see
//! when each segment gets listed. Prints JSON: time to the first master playlist and, per segment,
//! the delay from its last frame being sent to it being listed.
//!
//! Usage: pace_publish FILE rtmp://HOST:PORT/live/KEY http://HOST:PORT/live/USER [POLL_MS] [RUNG]
//! FILE is an FLV, or an MP4 with HEVC or AV1 video, sent as Enhanced RTMP (as OBS 30+ does).
//! POLL_MS (default 2) is the playlist polling interval; RUNG (default `source`) the rendition.

#[path = "../tests/e2e/flv_publish.rs"]
mod flv_publish;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: pace_publish FILE.flv|FILE.mp4 RTMP_URL HLS_BASE [POLL_MS] [RUNG]");
        std::process::exit(2);
    }
    let (file, rtmp_url, hls_base) = (&args[1], &args[2], args[3].clone());
    let poll = Duration::from_millis(args.get(4).and_then(|a| a.parse().ok()).unwrap_or(2));
    let rung = args.get(5).cloned().unwrap_or_else(|| "source".into());
    let path = std::path::Path::new(file);
    let tags = if path.extension().is_some_and(|e| e == "mp4") {
        flv_publish::read_mp4_enhanced(path)
    } else {
        flv_publish::read_flv(path)
    };
    let mut publisher = flv_publish::Publisher::connect(rtmp_url).expect("publish");

    // Poller: when each segment URI first appears, with its EXTINF.
    let seen: Arc<Mutex<Vec<(String, f64, Instant)>>> = Arc::default();
    let first_master: Arc<Mutex<Option<Instant>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let poller = {
        let (seen, first_master, done) = (seen.clone(), first_master.clone(), done.clone());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let now = Instant::now();
                if first_master.lock().unwrap().is_none() {
                    if let Ok(r) = agent.get(&format!("{hls_base}/index.m3u8")).call() {
                        if r.status() == 200 {
                            *first_master.lock().unwrap() = Some(now);
                        }
                    }
                }
                if let Ok(mut r) = agent.get(&format!("{hls_base}/{rung}/index.m3u8")).call() {
                    let text = r.body_mut().read_to_string().unwrap_or_default();
                    let mut duration = 0.0;
                    let mut seen = seen.lock().unwrap();
                    for line in text.lines() {
                        if let Some(d) = line.strip_prefix("#EXTINF:") {
                            duration = d.split(',').next().unwrap_or("0").parse().unwrap_or(0.0);
                        } else if !line.starts_with('#')
                            && !line.is_empty()
                            && !seen.iter().any(|(u, _, _)| u == line)
                        {
                            seen.push((line.to_string(), duration, now));
                        }
                    }
                }
                std::thread::sleep(poll);
            }
        })
    };

    publisher.send(&tags, 0, true).expect("send");
    let start = publisher.started().expect("started");
    let video_sent = std::mem::take(&mut publisher.video_sent);
    std::thread::sleep(Duration::from_millis(1500));
    done.store(true, Ordering::Relaxed);
    poller.join().unwrap();
    publisher.finish();

    // Segment k ends where segment k+1 begins; boundaries come from the cumulative EXTINF on the
    // stream timeline, which starts at the first video keyframe (time 0 here). The ladder's
    // output timeline is offset, but its segments start on the same source frames.
    let seen = seen.lock().unwrap();
    let mut boundary_ms = 0.0;
    let mut delays = Vec::new();
    for (_, duration, appeared) in seen.iter().take(seen.len().saturating_sub(1)) {
        boundary_ms += duration * 1000.0;
        // The last video frame (in decode order) before the boundary.
        if let Some((_, _, sent)) = video_sent
            .iter()
            .rev()
            .find(|(ts, _, _)| f64::from(*ts) < boundary_ms - 1.0)
        {
            delays.push(appeared.saturating_duration_since(*sent).as_secs_f64() * 1000.0);
        }
    }
    let first = first_master
        .lock()
        .unwrap()
        .map(|t| t.duration_since(start).as_secs_f64());
    println!(
        "{}",
        serde_json::json!({ "first_master_s": first, "segment_delays_ms": delays })
    );
}
