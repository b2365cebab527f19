//! A small blocking RTMP publisher over rml_rtmp's client session, for tests and the benchmark:
//! sends FLV files (one after another on one connection, like OBS after a resolution change) at
//! real-time pace or as fast as possible, and records when each video tag was written.
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

pub struct Publisher {
    socket: TcpStream,
    session: ClientSession,
    start: Option<Instant>,
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

    /// Sends tags with timestamps shifted by `offset_ms`; with `paced`, in real time (the first
    /// tag ever sent is time zero). Returns the timestamp after the last tag (for the next file).
    pub fn send(&mut self, tags: &[Tag], offset_ms: u32, paced: bool) -> Result<u32, String> {
        let start = *self.start.get_or_insert_with(Instant::now);
        let ts0 = tags.iter().map(|t| t.ts).min().unwrap_or(0);
        let mut last = offset_ms;
        for tag in tags {
            let ts = tag.ts - ts0 + offset_ms;
            if paced {
                let due = start + Duration::from_millis(u64::from(ts));
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
                let keyframe = tag.body.first().is_some_and(|b| b >> 4 == 1);
                self.video_sent.push((ts, keyframe, Instant::now()));
            }
            last = last.max(ts);
        }
        Ok(last + 33)
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
