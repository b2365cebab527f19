//! RTMP relay, client side: the bytes a relay target (YouTube, Twitch, any URL an operator
//! enters) sends back, read as `relay::client` reads them — rml_rtmp's client handshake, then
//! its client session behind the parser guard while connecting, publishing and streaming.
//!
//! Contract: no panic escapes the guard; a hostile server only ends this relay.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use livegate::rtmp::guard::guard_parser;
use livegate::rtmp::handshake::MAX_HANDSHAKE_BYTES;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;

fn events(results: Vec<ClientSessionResult>) -> Vec<ClientSessionEvent> {
    results
        .into_iter()
        .filter_map(|r| match r {
            ClientSessionResult::RaisedEvent(e) => Some(e),
            _ => None,
        })
        .collect()
}

fuzz_target!(init: livegate_fuzz::allow_guarded_panics(), |data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let mut reads = livegate_fuzz::reads(selector, stream);

    // Selector bit 3 starts right after a completed handshake, so most executions go into
    // the session (the handshake itself is small and is covered with the bit clear).
    let leftover = if selector & 0x08 != 0 {
        Vec::new()
    } else {
        let mut handshake = Handshake::new(PeerType::Client);
        if handshake.generate_outbound_p0_and_p1().is_err() {
            return;
        }
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

    let mut config = ClientSessionConfig::new();
    config.tc_url = Some("rtmp://relay.example/live2".into());
    let Ok((mut session, _)) = ClientSession::new(config) else {
        return;
    };
    // Connecting, then publishing, then streaming: each stage as the relay drives it.
    let mut stage = 0;
    if session.request_connection("live2".into()).is_err() {
        return;
    }
    // (`&r[..]`: a reborrow, so the reads and the local leftover share one lifetime.)
    for read in std::iter::once(&leftover[..]).chain(reads.map(|r| &r[..])) {
        let results = match guard_parser(|| session.handle_input(read)) {
            Ok(Ok(results)) => results,
            _ => return,
        };
        for event in events(results) {
            match (stage, event) {
                (0, ClientSessionEvent::ConnectionRequestAccepted) => {
                    stage = 1;
                    if session
                        .request_publishing("key".into(), PublishRequestType::Live)
                        .is_err()
                    {
                        return;
                    }
                }
                (0, ClientSessionEvent::ConnectionRequestRejected { .. }) => return,
                (1, ClientSessionEvent::PublishRequestAccepted) => stage = 2,
                _ => {}
            }
        }
        if stage == 2 {
            let body = Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]);
            if session
                .publish_video_data(body, RtmpTimestamp::new(0), false)
                .is_err()
            {
                return;
            }
        }
    }
});
