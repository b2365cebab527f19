//! A small blocking RTMP publisher over rml_rtmp's client session, for tests and the benchmark:
//! sends FLV files (one after another on one connection, like OBS after a resolution change) at
//! real-time pace or as fast as possible, and records when each video tag was written. It also
//! turns an MP4 with HEVC or AV1 video into Enhanced RTMP tags (`hvc1`/`av01` FourCC, ex-header
//! bit), as OBS 30+ sends them: Debian's ffmpeg 5.1 cannot publish those itself.
//! Shared by `tests/e2e` and `examples/pace_publish.rs`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;

/// One FLV tag: 8 audio, 9 video, 18 script data.
pub struct Tag {
    pub kind: u8,
    pub ts: u32,
    pub body: Bytes,
}

pub fn read_flv(path: &std::path::Path) -> Vec<Tag> {
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

/// Tags for an MP4 (HEVC or AV1 video, AAC audio): Enhanced RTMP video tags and legacy AAC audio
/// tags, in decode order. The packets and configuration records come from `ffprobe -show_data`.
pub fn read_mp4_enhanced(path: &std::path::Path) -> Vec<Tag> {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_packets",
            "-show_data",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(out.status.success(), "ffprobe {}", path.display());
    let probe: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe JSON");
    let streams = probe["streams"].as_array().expect("streams");
    let mut kinds = std::collections::HashMap::new();
    let mut tags = Vec::new();
    for s in streams {
        let index = s["index"].as_i64().unwrap_or(-1);
        let codec = s["codec_name"].as_str().unwrap_or("").to_string();
        let record = hexdump(s["extradata"].as_str().unwrap_or(""));
        let header = match codec.as_str() {
            "hevc" => enhanced_video(1, b"hvc1", 0, &record),
            "av1" => enhanced_video(1, b"av01", 0, &record),
            "aac" => [&[0xaf, 0x00][..], &record].concat(),
            other => panic!("no Enhanced RTMP mapping for {other}"),
        };
        tags.push(Tag {
            kind: if codec == "aac" { 8 } else { 9 },
            ts: 0,
            body: Bytes::from(header),
        });
        kinds.insert(index, codec);
    }
    let ms = |v: &serde_json::Value| -> i64 {
        (v.as_str()
            .and_then(|t| t.parse::<f64>().ok())
            .unwrap_or(0.0)
            * 1000.0)
            .round() as i64
    };
    let packets = probe["packets"].as_array().expect("packets");
    // B-frames start decode times below zero in MP4; FLV timestamps are unsigned.
    let first_dts = packets
        .iter()
        .map(|p| ms(&p["dts_time"]))
        .min()
        .unwrap_or(0)
        .min(0);
    for p in packets {
        let codec = &kinds[&p["stream_index"].as_i64().unwrap_or(-1)];
        let data = hexdump(p["data"].as_str().unwrap_or(""));
        let dts = ms(&p["dts_time"]) - first_dts;
        let pts = ms(&p["pts_time"]) - first_dts;
        let key = p["flags"].as_str().unwrap_or("").starts_with('K');
        let frame_type = if key { 1 } else { 2 };
        let body = match codec.as_str() {
            "hevc" => {
                let cts = (pts - dts) as i32;
                let mut b = enhanced_video(frame_type, b"hvc1", 1, &[]);
                b.extend_from_slice(&cts.to_be_bytes()[1..]);
                b.extend_from_slice(&data);
                b
            }
            // AV1 carries no composition time: coded frames are sent as CodedFramesX.
            "av1" => enhanced_video(frame_type, b"av01", 3, &data),
            _ => [&[0xaf, 0x01][..], &data].concat(),
        };
        tags.push(Tag {
            kind: if codec == "aac" { 8 } else { 9 },
            ts: dts as u32,
            body: Bytes::from(body),
        });
    }
    tags.sort_by_key(|t| t.ts);
    tags
}

/// `[1 ex-header | 3 frame type | 4 packet type] [FourCC] [payload]`.
fn enhanced_video(frame_type: u8, fourcc: &[u8; 4], packet_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0x80 | (frame_type << 4) | packet_type];
    b.extend_from_slice(fourcc);
    b.extend_from_slice(payload);
    b
}

/// Bytes from ffprobe's hex dump (`00000000: 0101 6000 ...  ascii`).
fn hexdump(text: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.get(10..) else { continue };
        let hex: String = rest
            .chars()
            .take(40)
            .filter(|c| !c.is_whitespace())
            .collect();
        for pair in hex.as_bytes().chunks(2) {
            if let Ok(b) = u8::from_str_radix(std::str::from_utf8(pair).unwrap_or(""), 16) {
                bytes.push(b);
            }
        }
    }
    bytes
}

pub struct Publisher {
    socket: TcpStream,
    session: ClientSession,
    start: Option<Instant>,
    /// The first timestamp sent: pacing counts from it.
    first_ts: Option<u32>,
    /// (timestamp ms, keyframe, when written) of every video tag sent.
    pub video_sent: Vec<(u32, bool, Instant)>,
}

fn write_results(
    socket: &mut TcpStream,
    results: Vec<ClientSessionResult>,
) -> Vec<ClientSessionEvent> {
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

impl Publisher {
    /// Connects to `rtmp://HOST:PORT/APP/KEY` and starts publishing.
    pub fn connect(url: &str) -> Result<Publisher, String> {
        let rest = url.strip_prefix("rtmp://").ok_or("not an rtmp:// URL")?;
        let (host, path) = rest.split_once('/').ok_or("no app")?;
        let (app, key) = path.split_once('/').ok_or("no key")?;
        let mut socket = TcpStream::connect(host).map_err(|e| e.to_string())?;
        socket.set_nodelay(true).ok();
        socket.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut handshake = Handshake::new(PeerType::Client);
        let p0p1 = handshake
            .generate_outbound_p0_and_p1()
            .map_err(|e| e.to_string())?;
        socket.write_all(&p0p1).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 8192];
        let leftover = loop {
            let n = socket.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed during handshake".into());
            }
            match handshake
                .process_bytes(&buf[..n])
                .map_err(|e| e.to_string())?
            {
                HandshakeProcessResult::InProgress { response_bytes } => socket
                    .write_all(&response_bytes)
                    .map_err(|e| e.to_string())?,
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    socket
                        .write_all(&response_bytes)
                        .map_err(|e| e.to_string())?;
                    break remaining_bytes;
                }
            }
        };
        let (mut session, initial) =
            ClientSession::new(ClientSessionConfig::new()).map_err(|e| e.to_string())?;
        write_results(&mut socket, initial);
        let results = session.handle_input(&leftover).map_err(|e| e.to_string())?;
        write_results(&mut socket, results);
        let mut publisher = Publisher {
            socket,
            session,
            start: None,
            first_ts: None,
            video_sent: Vec::new(),
        };
        let r = publisher
            .session
            .request_connection(app.to_string())
            .map_err(|e| e.to_string())?;
        write_results(&mut publisher.socket, vec![r]);
        publisher.wait_for(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted))?;
        let r = publisher
            .session
            .request_publishing(key.to_string(), PublishRequestType::Live)
            .map_err(|e| e.to_string())?;
        write_results(&mut publisher.socket, vec![r]);
        publisher.wait_for(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted))?;
        // Drain what the server sends from now on, so its window never fills.
        let mut reader = publisher.socket.try_clone().map_err(|e| e.to_string())?;
        std::thread::spawn(move || {
            let mut sink = vec![0u8; 65536];
            while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
        });
        Ok(publisher)
    }

    fn wait_for(&mut self, want: fn(&ClientSessionEvent) -> bool) -> Result<(), String> {
        let mut buf = vec![0u8; 65536];
        loop {
            let n = self.socket.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("server closed the connection".into());
            }
            let results = self
                .session
                .handle_input(&buf[..n])
                .map_err(|e| e.to_string())?;
            for event in write_results(&mut self.socket, results) {
                if want(&event) {
                    return Ok(());
                }
                if let ClientSessionEvent::ConnectionRequestRejected { description } = event {
                    return Err(format!("rejected: {description}"));
                }
            }
        }
    }

    /// Sends tags with timestamps shifted by `offset_ms` (wrapping at 2^32 ms as RTMP's clock
    /// does); with `paced`, in real time (the first tag ever sent is time zero). Returns the
    /// timestamp after the last tag (for the next file).
    pub fn send(&mut self, tags: &[Tag], offset_ms: u32, paced: bool) -> Result<u32, String> {
        let start = *self.start.get_or_insert_with(Instant::now);
        let first = *self.first_ts.get_or_insert(offset_ms);
        let ts0 = tags.iter().map(|t| t.ts).min().unwrap_or(0);
        let mut last = offset_ms;
        for tag in tags {
            let ts = (tag.ts - ts0).wrapping_add(offset_ms);
            if paced {
                let since_first = ts.wrapping_sub(first);
                let due = start + Duration::from_millis(u64::from(since_first));
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            let r = match tag.kind {
                8 => {
                    self.session
                        .publish_audio_data(tag.body.clone(), RtmpTimestamp::new(ts), false)
                }
                9 => {
                    self.session
                        .publish_video_data(tag.body.clone(), RtmpTimestamp::new(ts), false)
                }
                _ => continue,
            }
            .map_err(|e| e.to_string())?;
            let bytes = match r {
                ClientSessionResult::OutboundResponse(p) => p.bytes,
                _ => continue,
            };
            self.socket.write_all(&bytes).map_err(|e| e.to_string())?;
            if tag.kind == 9 {
                // Legacy and Enhanced RTMP (ex-header bit set) keep the frame type in bits 4-6.
                let keyframe = tag.body.first().is_some_and(|b| (b >> 4) & 0x07 == 1);
                self.video_sent.push((ts, keyframe, Instant::now()));
            }
            // Later in RTMP's wrapping clock (audio and video interleave slightly out of order).
            if ts.wrapping_sub(last) < 1 << 31 {
                last = ts;
            }
        }
        Ok(last.wrapping_add(33))
    }

    pub fn started(&self) -> Option<Instant> {
        self.start
    }

    /// Ends the publish cleanly (FCUnpublish/deleteStream are what OBS sends; closing is enough).
    pub fn finish(mut self) {
        if let Ok(r) = self.session.stop_publishing() {
            write_results(&mut self.socket, r);
        }
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}
