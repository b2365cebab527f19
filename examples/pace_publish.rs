//! Benchmark publisher: sends an FLV file over RTMP in real time (like `ffmpeg -re -c copy`) while
//! recording when each tag was written to the socket, and polls the stream's media playlist to see
//! when each segment gets listed. Prints JSON: time to the first master playlist and, per segment,
//! the delay from its last frame being sent to it being listed.
//!
//! Usage: pace_publish FILE.flv rtmp://HOST:PORT/live/KEY http://HOST:PORT/live/USER [POLL_MS]
//! POLL_MS (default 2) is the playlist polling interval.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;

struct Tag {
    kind: u8,
    ts: u32,
    body: Bytes,
}

fn read_flv(path: &str) -> Vec<Tag> {
    let data = std::fs::read(path).expect("read FLV");
    assert_eq!(&data[..3], b"FLV", "not an FLV file");
    let mut pos = u32::from_be_bytes(data[5..9].try_into().unwrap()) as usize + 4;
    let mut tags = Vec::new();
    while pos + 11 <= data.len() {
        let kind = data[pos];
        let size = u32::from_be_bytes([0, data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let ts = u32::from_be_bytes([data[pos + 7], data[pos + 4], data[pos + 5], data[pos + 6]]);
        let end = pos + 11 + size;
        if end > data.len() {
            break;
        }
        tags.push(Tag {
            kind,
            ts,
            body: Bytes::copy_from_slice(&data[pos + 11..end]),
        });
        pos = end + 4;
    }
    tags
}

fn send(socket: &mut TcpStream, results: Vec<ClientSessionResult>) -> Vec<ClientSessionEvent> {
    let mut events = Vec::new();
    for r in results {
        match r {
            ClientSessionResult::OutboundResponse(p) => socket.write_all(&p.bytes).expect("write"),
            ClientSessionResult::RaisedEvent(e) => events.push(e),
            ClientSessionResult::UnhandleableMessageReceived(_) => {}
        }
    }
    events
}

fn wait_for(
    socket: &mut TcpStream,
    session: &mut ClientSession,
    want: fn(&ClientSessionEvent) -> bool,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = socket.read(&mut buf).expect("read");
        assert!(n > 0, "server closed the connection");
        let results = session.handle_input(&buf[..n]).expect("session input");
        for event in send(socket, results) {
            if want(&event) {
                return;
            }
            if let ClientSessionEvent::ConnectionRequestRejected { description } = event {
                panic!("rejected: {description}");
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (file, rtmp_url, hls_base) = (&args[1], &args[2], args[3].clone());
    let rest = rtmp_url.strip_prefix("rtmp://").expect("rtmp:// URL");
    let (host, path) = rest.split_once('/').expect("rtmp://HOST:PORT/app/key");
    let (app, key) = path.split_once('/').expect("app/key");
    let poll = Duration::from_millis(args.get(4).and_then(|a| a.parse().ok()).unwrap_or(2));
    let tags = read_flv(file);

    let mut socket = TcpStream::connect(host).expect("connect");
    socket.set_nodelay(true).ok();
    let mut handshake = Handshake::new(PeerType::Client);
    socket
        .write_all(&handshake.generate_outbound_p0_and_p1().unwrap())
        .unwrap();
    let mut buf = vec![0u8; 8192];
    let leftover = loop {
        let n = socket.read(&mut buf).unwrap();
        match handshake.process_bytes(&buf[..n]).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => {
                socket.write_all(&response_bytes).unwrap()
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                socket.write_all(&response_bytes).unwrap();
                break remaining_bytes;
            }
        }
    };
    let (mut session, initial) = ClientSession::new(ClientSessionConfig::new()).unwrap();
    send(&mut socket, initial);
    let results = session.handle_input(&leftover).unwrap();
    send(&mut socket, results);
    let r = session.request_connection(app.to_string()).unwrap();
    send(&mut socket, vec![r]);
    wait_for(&mut socket, &mut session, |e| {
        matches!(e, ClientSessionEvent::ConnectionRequestAccepted)
    });
    let r = session
        .request_publishing(key.to_string(), PublishRequestType::Live)
        .unwrap();
    send(&mut socket, vec![r]);
    wait_for(&mut socket, &mut session, |e| {
        matches!(e, ClientSessionEvent::PublishRequestAccepted)
    });
    // Drain server messages in the background so its window never fills.
    let mut reader = socket.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut sink = vec![0u8; 65536];
        while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
    });

    // Poller: when each segment URI first appears, with its EXTINF.
    let seen: Arc<Mutex<Vec<(String, f64, Instant)>>> = Arc::default();
    let first_master: Arc<Mutex<Option<Instant>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (seen, first_master, done) = (seen.clone(), first_master.clone(), done.clone());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let now = Instant::now();
                if first_master.lock().unwrap().is_none() {
                    if let Ok(r) = agent.get(&format!("{hls_base}/index.m3u8")).call() {
                        if r.status() == 200 {
                            *first_master.lock().unwrap() = Some(now);
                        }
                    }
                }
                if let Ok(mut r) = agent.get(&format!("{hls_base}/source/index.m3u8")).call() {
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

    // Pace tags by their timestamps; remember when each video tag went out.
    let start = Instant::now();
    let ts0 = tags.iter().map(|t| t.ts).min().unwrap_or(0);
    let mut video_sent: Vec<(u32, bool, Instant)> = Vec::new();
    for tag in &tags {
        let due = start + Duration::from_millis(u64::from(tag.ts - ts0));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let ts = RtmpTimestamp::new(tag.ts - ts0);
        let r = match tag.kind {
            8 => session.publish_audio_data(tag.body.clone(), ts, false),
            9 => session.publish_video_data(tag.body.clone(), ts, false),
            _ => continue,
        }
        .unwrap();
        send(&mut socket, vec![r]);
        if tag.kind == 9 {
            let keyframe = tag.body.first().is_some_and(|b| b >> 4 == 1);
            video_sent.push((tag.ts - ts0, keyframe, Instant::now()));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    poller.join().unwrap();

    // Segment k ends where keyframe-started segment k+1 begins; match boundaries by cumulative
    // EXTINF on the stream timeline (which starts at the first video keyframe, time 0 here).
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
