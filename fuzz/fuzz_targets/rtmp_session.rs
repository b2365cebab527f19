//! RTMP ingest, server side: the bytes a publisher sends, read as `ingest::rtmp` reads them —
//! rml_rtmp's handshake (bounded by `MAX_HANDSHAKE_BYTES`), then its server session behind the
//! parser guard, the connect/publish decisions ingest makes (the key check accepts), the
//! pre-publish byte budget, and the FLV demuxer for media. Sans-IO: the socket is replaced by
//! the input, split into reads of a size picked by the first byte.
//!
//! Contract: no panic escapes the guard; the session ends in an error or keeps going; every
//! media event is sane (packets no larger than the input, configurations within the size limit).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use livegate::config::RtmpConfig;
use livegate::media::codec::MAX_DIMENSION;
use livegate::media::MediaEvent;
use livegate::rtmp::flv::FlvDemuxer;
use livegate::rtmp::guard::guard_parser;
use livegate::rtmp::handshake::MAX_HANDSHAKE_BYTES;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};

struct Ingest {
    session: ServerSession,
    demuxer: FlvDemuxer,
    publishing: bool,
    input_len: usize,
}

impl Ingest {
    /// Mirrors `Connection::process`/`on_event`: false when the session closes.
    fn process(&mut self, results: Vec<ServerSessionResult>) -> bool {
        let mut queue: std::collections::VecDeque<_> = results.into();
        while let Some(result) = queue.pop_front() {
            let ServerSessionResult::RaisedEvent(event) = result else {
                continue;
            };
            let (open, more) = match event {
                ServerSessionEvent::ConnectionRequested {
                    request_id,
                    app_name,
                } => {
                    if app_name.trim_end_matches('/') == livegate::ingest::rtmp::APP_NAME {
                        (true, self.session.accept_request(request_id))
                    } else {
                        (false, self.session.reject_request(request_id, "x", "y"))
                    }
                }
                ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                    if self.publishing {
                        (false, self.session.reject_request(request_id, "x", "y"))
                    } else {
                        self.publishing = true;
                        (true, self.session.accept_request(request_id))
                    }
                }
                ServerSessionEvent::PublishStreamFinished { .. } => {
                    self.publishing = false;
                    (true, Ok(Vec::new()))
                }
                ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                    (false, self.session.reject_request(request_id, "x", "y"))
                }
                ServerSessionEvent::VideoDataReceived {
                    data, timestamp, ..
                } => (self.media(true, &data, timestamp.value), Ok(Vec::new())),
                ServerSessionEvent::AudioDataReceived {
                    data, timestamp, ..
                } => (self.media(false, &data, timestamp.value), Ok(Vec::new())),
                _ => (true, Ok(Vec::new())),
            };
            match more {
                Ok(more) => queue.extend(more),
                Err(_) => return false,
            }
            if !open {
                return false;
            }
        }
        true
    }

    fn media(&mut self, video: bool, data: &Bytes, raw_ms: u32) -> bool {
        if !self.publishing {
            return true;
        }
        let parsed = if video {
            self.demuxer.video(data, raw_ms)
        } else {
            self.demuxer.audio(data, raw_ms)
        };
        match parsed {
            Ok(Some(MediaEvent::Packet(p))) => {
                assert!(p.data.len() <= self.input_len);
                true
            }
            Ok(Some(MediaEvent::VideoConfig(v))) => {
                assert!(v.width <= MAX_DIMENSION && v.height <= MAX_DIMENSION);
                true
            }
            Ok(_) => true,
            Err(_) => false,
        }
    }
}

fuzz_target!(init: livegate_fuzz::allow_guarded_panics(), |data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let mut reads = livegate_fuzz::reads(selector, stream);

    // The handshake, bounded as `rtmp::handshake::server` bounds it. Selector bit 3 starts right after a completed handshake, so most executions go into
    // the session (the handshake itself is small and is covered with the bit clear).
    let leftover = if selector & 0x08 != 0 {
        Vec::new()
    } else {
        let mut handshake = Handshake::new(PeerType::Server);
        let mut total = 0;
        loop {
            let Some(read) = reads.next() else { return };
            total += read.len();
            if total > MAX_HANDSHAKE_BYTES {
                return;
            }
            match handshake.process_bytes(read) {
                Ok(HandshakeProcessResult::InProgress { .. }) => {}
                Ok(HandshakeProcessResult::Completed {
                    remaining_bytes, ..
                }) => break remaining_bytes,
                Err(_) => return,
            }
        }
    };

    let (session, initial) = ServerSession::new(ServerSessionConfig::new()).expect("new session");
    let mut ingest = Ingest {
        session,
        demuxer: FlvDemuxer::new(),
        publishing: false,
        input_len: data.len(),
    };
    if !ingest.process(initial) {
        return;
    }
    let budget = RtmpConfig::default().max_unauthenticated_bytes;
    let mut before_publish = 0;
    // (`&r[..]`: a reborrow, so the reads and the local leftover share one lifetime.)
    for read in std::iter::once(&leftover[..]).chain(reads.map(|r| &r[..])) {
        if !ingest.publishing {
            before_publish += read.len();
            if before_publish > budget {
                return;
            }
        }
        let session = &mut ingest.session;
        let results = match guard_parser(|| session.handle_input(read)) {
            Ok(Ok(results)) => results,
            _ => return, // a protocol error or a caught parser panic: the session ends
        };
        if !ingest.process(results) {
            return;
        }
    }
});
