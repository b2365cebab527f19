//! RTMP ingest: the tokio edge around rml_rtmp's sans-IO handshake and server session (the
//! pieces shared with the relays' client side are in [`crate::rtmp`]).
//!
//! The stream key is checked before `NetStream.Publish.Start` is sent; a refused publish gets an
//! error status and the connection closes. Every read is bounded (buffer size, pre-auth byte
//! budget; a message is at most `rtmp.max_message_kib`, refused at its chunk header) and timed
//! (one pre-auth deadline from accept to an accepted publish, idle); any error ends this session
//! only.
//!
//! Slots (shared by RTMP and RTMPS): every connection holds one of `max_connections`
//! (`max_connections_per_ip` per address); until its publish is accepted it also holds one of
//! `max_unauthenticated` pre-auth slots (`max_unauthenticated_per_ip` per address), which it
//! gives back once publishing. Connections that never authenticate can thus hold at most
//! `max_unauthenticated` slots, each for at most `publish_timeout_secs`; the rest are kept for
//! publishers with a valid key.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::gate::{PublishGate, Refusal};
use crate::config::RtmpConfig;
use crate::metrics::Metrics;
use crate::net::{ConnLimiter, ConnPermit};
use crate::rtmp::chunk_limit::ChunkLimit;
use crate::rtmp::flv::FlvDemuxer;
use crate::rtmp::guard::guard_parser;
use crate::rtmp::handshake::{self, HandshakeError};
use crate::rtmp::io::{read_some, write_flushed, IoError, WRITE_TIMEOUT};
use crate::stream::{LiveStream, Publisher};
use crate::util::log_throttle::LogThrottle;
use crate::util::redact;

pub const APP_NAME: &str = "live";
const READ_BUFFER: usize = 64 * 1024;
/// The handshake reads in small steps: it is 1537 + 1536 bytes from the publisher.
const HANDSHAKE_BUFFER: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("no data for {0} s")]
    Idle(u64),
    #[error("connection closed by peer")]
    Closed,
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("sent {0} bytes without publishing")]
    TooMuchBeforePublish(usize),
    #[error("did not publish within {0} s of connecting")]
    NoPublish(u64),
    #[error("write timed out")]
    WriteTimeout,
}

impl From<IoError> for SessionError {
    fn from(e: IoError) -> Self {
        match e {
            IoError::Closed => SessionError::Closed,
            IoError::WriteTimeout => SessionError::WriteTimeout,
            IoError::Io(e) => SessionError::Io(e),
        }
    }
}

impl From<HandshakeError> for SessionError {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::TooManyBytes | HandshakeError::Rejected(_) => {
                SessionError::Handshake(e.to_string())
            }
            HandshakeError::Io(e) => e.into(),
        }
    }
}

/// What RTMP ingest needs from the rest of the server.
pub struct IngestContext {
    pub config: RtmpConfig,
    /// Admits publishers: key check, takeover, hub.
    pub gate: PublishGate,
    pub metrics: Arc<Metrics>,
    pub slots: Slots,
}

/// The connection slots of RTMP and RTMPS ingest (see the module documentation).
pub struct Slots {
    /// Every connection.
    all: ConnLimiter,
    /// Connections not yet accepted to publish.
    preauth: ConnLimiter,
    refused_log: LogThrottle,
}

impl Slots {
    pub fn new(config: &RtmpConfig) -> Self {
        Slots {
            all: ConnLimiter::new(config.max_connections, config.max_connections_per_ip),
            preauth: ConnLimiter::new(
                config.max_unauthenticated,
                config.max_unauthenticated_per_ip,
            ),
            refused_log: LogThrottle::new(Duration::from_secs(10)),
        }
    }

    /// A connection slot and a pre-auth slot for a new connection from `ip`, or the metric label
    /// of why not.
    fn admit(&self, ip: std::net::IpAddr) -> Result<(ConnPermit, ConnPermit), &'static str> {
        let all = self.all.try_acquire(ip).map_err(|r| r.label())?;
        let preauth = self.preauth.try_acquire(ip).map_err(|r| match r {
            crate::net::LimitRefusal::Total => "preauth_limit",
            crate::net::LimitRefusal::PerAddress => "preauth_limit_per_ip",
        })?;
        Ok((all, preauth))
    }
}

/// Accepts connections until `shutdown` is cancelled; with `tls`, RTMPS (TLS first, within the
/// handshake deadline).
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<IngestContext>,
    shutdown: CancellationToken,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (socket, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "RTMP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let accepted_at = Instant::now();
        let (permit, preauth) = match ctx.slots.admit(peer.ip()) {
            Ok(permits) => permits,
            Err(reason) => {
                ctx.metrics.refused(reason);
                // A flood of refusals is one line per 10 s, not one per connection.
                if let Some(held) = ctx.slots.refused_log.check(reason) {
                    tracing::warn!(%peer, reason, similar_since_last_line = held,
                        "RTMP connection refused: slots full; closing it");
                }
                continue;
            }
        };
        ctx.metrics.rtmp_connections.inc();
        let ctx = ctx.clone();
        let tls = tls.clone();
        let span =
            tracing::info_span!("rtmp", %peer, tls = tls.is_some(), user = tracing::field::Empty);
        tokio::spawn(
            async move {
                ctx.metrics.rtmp_active.inc();
                let _ = socket.set_nodelay(true);
                let mut conn = Connection::new(ctx.clone(), preauth, accepted_at);
                conn.protocol = if tls.is_some() { "rtmps" } else { "rtmp" };
                let result = match tls {
                    None => conn.run(socket).await,
                    Some(acceptor) => {
                        let by = conn.handshake_by;
                        match tokio::time::timeout_at(by, acceptor.accept(socket)).await {
                            Ok(Ok(stream)) => conn.run(stream).await,
                            Ok(Err(e)) => {
                                ctx.metrics.tls_handshake_failed("rtmp");
                                Err(SessionError::Tls(e.to_string()))
                            }
                            Err(_) => Err(SessionError::HandshakeTimeout),
                        }
                    }
                };
                let publishing = conn.publisher.is_some();
                drop(conn); // ends the stream (if any) before the log line below
                match result {
                    Ok(()) => {
                        ctx.metrics.session_ended("normal");
                        tracing::info!("RTMP session closed")
                    }
                    Err(SessionError::Closed) => {
                        ctx.metrics.session_ended("peer_closed");
                        tracing::info!(publishing, "RTMP connection closed by peer")
                    }
                    Err(e) => {
                        ctx.metrics.session_ended(match e {
                            SessionError::Protocol(_) => "protocol_error",
                            SessionError::Idle(_)
                            | SessionError::HandshakeTimeout
                            | SessionError::NoPublish(_) => "timeout",
                            _ => "error",
                        });
                        tracing::warn!(error = %e, "RTMP session ended")
                    }
                }
                ctx.metrics.rtmp_active.dec();
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// Feeds peer bytes to the session; a parser panic ends this session only ([`guard_parser`]).
fn guarded_input(
    session: &mut ServerSession,
    bytes: &[u8],
) -> Result<Vec<ServerSessionResult>, SessionError> {
    match guard_parser(|| session.handle_input(bytes)) {
        Ok(results) => results.map_err(|e| SessionError::Protocol(e.to_string())),
        Err(_) => Err(SessionError::Protocol(
            "malformed RTMP message (the RTMP parser rejected it)".into(),
        )),
    }
}

/// Whether the session continues after an event.
enum Flow {
    Continue,
    Close,
}

struct Connection {
    ctx: Arc<IngestContext>,
    /// The pre-auth slot, held until a publish is accepted.
    preauth: Option<ConnPermit>,
    /// TLS and RTMP handshakes end by then.
    handshake_by: Instant,
    /// The pre-auth deadline: a publish is accepted by then, or the connection ends.
    publish_by: Instant,
    publisher: Option<Publisher>,
    demuxer: FlvDemuxer,
    /// Refuses an oversized message before rml_rtmp buffers it.
    chunk_limit: ChunkLimit,
    bytes_before_publish: usize,
    outbound: Vec<u8>,
    /// `rtmp` or `rtmps`, shown in the streams API.
    protocol: &'static str,
}

impl Connection {
    fn new(ctx: Arc<IngestContext>, preauth: ConnPermit, accepted_at: Instant) -> Self {
        let publish_by = accepted_at + Duration::from_secs(ctx.config.publish_timeout_secs);
        let handshake_by =
            publish_by.min(accepted_at + Duration::from_secs(ctx.config.handshake_timeout_secs));
        Connection {
            ctx: ctx.clone(),
            preauth: Some(preauth),
            handshake_by,
            publish_by,
            publisher: None,
            demuxer: FlvDemuxer::new(),
            chunk_limit: ChunkLimit::new(
                u32::try_from(ctx.config.max_message_kib.saturating_mul(1024)).unwrap_or(u32::MAX),
            ),
            bytes_before_publish: 0,
            protocol: "rtmp",
            outbound: Vec::new(),
        }
    }

    async fn write_out<S: AsyncWrite + Unpin>(
        &mut self,
        socket: &mut S,
    ) -> Result<(), SessionError> {
        if self.outbound.is_empty() {
            return Ok(());
        }
        write_flushed(socket, &self.outbound, Some(WRITE_TIMEOUT)).await?;
        self.outbound.clear();
        Ok(())
    }

    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut socket: S,
    ) -> Result<(), SessionError> {
        let mut handshake_buf = vec![0u8; HANDSHAKE_BUFFER];
        // Handshake writes are bounded by the handshake deadline alone.
        let shake = handshake::server(&mut socket, &mut handshake_buf, None);
        let leftover = tokio::time::timeout_at(self.handshake_by, shake)
            .await
            .map_err(|_| SessionError::HandshakeTimeout)??
            .leftover;

        let (mut session, initial) = ServerSession::new(ServerSessionConfig::new())
            .map_err(|e| SessionError::Protocol(e.to_string()))?;
        // The bytes after the handshake go in together with the session's initial results.
        let mut flow = self.process(&mut session, initial).await?;
        if matches!(flow, Flow::Continue) && !leftover.is_empty() {
            flow = self.feed(&mut session, &leftover).await?;
        }
        self.write_out(&mut socket).await?;
        if matches!(flow, Flow::Close) {
            return Ok(());
        }

        let idle = self.ctx.config.idle_timeout_secs;
        // A connection must publish by this deadline (from accept): a trickle of bytes that
        // resets the idle timer must not hold a slot longer.
        let publish_by = self.publish_by;
        let mut buf = vec![0u8; READ_BUFFER];
        loop {
            let watch: Option<Arc<LiveStream>> =
                self.publisher.as_ref().map(|p| p.stream().clone());
            let stopped = async {
                match &watch {
                    Some(s) => s.stopped().await,
                    None => std::future::pending().await,
                }
            };
            let n = tokio::select! {
                _ = stopped => {
                    match watch.as_ref().and_then(|s| s.abort_reason()) {
                        Some(reason) => tracing::warn!(%reason, "stream cannot be served; closing the session"),
                        None => tracing::info!("session replaced by a newer publish with the same key (or stopped by an operator); closing"),
                    }
                    return Ok(());
                }
                read = tokio::time::timeout(Duration::from_secs(idle), read_some(&mut socket, &mut buf)) => {
                    read.map_err(|_| SessionError::Idle(idle))??
                }
                _ = tokio::time::sleep_until(publish_by), if watch.is_none() => {
                    return Err(SessionError::NoPublish(self.ctx.config.publish_timeout_secs));
                }
            };
            self.ctx.metrics.ingest_bytes.inc_by(n as u64);
            if self.publisher.is_none() {
                self.bytes_before_publish += n;
                if self.bytes_before_publish > self.ctx.config.max_unauthenticated_bytes {
                    return Err(SessionError::TooMuchBeforePublish(
                        self.bytes_before_publish,
                    ));
                }
            }
            let flow = self.feed(&mut session, &buf[..n]).await?;
            self.write_out(&mut socket).await?;
            if matches!(flow, Flow::Close) {
                return Ok(());
            }
        }
    }

    async fn feed(
        &mut self,
        session: &mut ServerSession,
        bytes: &[u8],
    ) -> Result<Flow, SessionError> {
        self.chunk_limit.feed(bytes).map_err(Self::protocol)?;
        let results = guarded_input(session, bytes)?;
        self.process(session, results).await
    }

    async fn process(
        &mut self,
        session: &mut ServerSession,
        results: Vec<ServerSessionResult>,
    ) -> Result<Flow, SessionError> {
        let mut queue: std::collections::VecDeque<ServerSessionResult> = results.into();
        while let Some(result) = queue.pop_front() {
            match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    self.outbound.extend_from_slice(&packet.bytes)
                }
                ServerSessionResult::RaisedEvent(event) => {
                    let (flow, more) = self.on_event(session, event).await?;
                    queue.extend(more);
                    if matches!(flow, Flow::Close) {
                        // Send what is queued (e.g. the error status) before closing.
                        for r in queue.drain(..) {
                            if let ServerSessionResult::OutboundResponse(p) = r {
                                self.outbound.extend_from_slice(&p.bytes);
                            }
                        }
                        return Ok(Flow::Close);
                    }
                }
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(Flow::Continue)
    }

    fn protocol<E: std::fmt::Display>(e: E) -> SessionError {
        SessionError::Protocol(e.to_string())
    }

    async fn on_event(
        &mut self,
        session: &mut ServerSession,
        event: ServerSessionEvent,
    ) -> Result<(Flow, Vec<ServerSessionResult>), SessionError> {
        match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                if app_name.trim_end_matches('/') != APP_NAME {
                    // Redacted: a server URL typed as rtmp://HOST/KEY or rtmp://HOST/live/KEY/…
                    // puts the stream key into the app name (the tcUrl is never logged either).
                    let first = app_name.split('/').next().unwrap_or_default();
                    if first == APP_NAME {
                        tracing::warn!("connect refused: the server URL goes on after /live (use rtmp://HOST/live and put the key in the stream key field)");
                    } else {
                        tracing::warn!(app = %redact(first), "connect refused: unknown application (use rtmp://HOST/live)");
                    }
                    self.ctx.metrics.refused("unknown_app");
                    let r = session
                        .reject_request(
                            request_id,
                            "NetConnection.Connect.Rejected",
                            "unknown application; publish to /live",
                        )
                        .map_err(Self::protocol)?;
                    return Ok((Flow::Close, r));
                }
                let r = session.accept_request(request_id).map_err(Self::protocol)?;
                Ok((Flow::Continue, r))
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                stream_key,
                ..
            } => self.on_publish(session, request_id, &stream_key).await,
            ServerSessionEvent::PublishStreamFinished { .. } => {
                if self.publisher.take().is_some() {
                    tracing::info!("publisher stopped");
                }
                Ok((Flow::Continue, Vec::new()))
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                if let (Some(p), Some(fps)) = (&self.publisher, metadata.video_frame_rate) {
                    p.set_fps_hint(f64::from(fps));
                }
                Ok((Flow::Continue, Vec::new()))
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => self.on_media(true, data, timestamp.value),
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => self.on_media(false, data, timestamp.value),
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                tracing::info!("RTMP playback refused: livegate serves viewers over HLS");
                let r = session
                    .reject_request(
                        request_id,
                        "NetStream.Play.Failed",
                        "RTMP playback is not offered; watch over HLS",
                    )
                    .map_err(Self::protocol)?;
                Ok((Flow::Close, r))
            }
            _ => Ok((Flow::Continue, Vec::new())),
        }
    }

    async fn on_publish(
        &mut self,
        session: &mut ServerSession,
        request_id: u32,
        stream_key: &str,
    ) -> Result<(Flow, Vec<ServerSessionResult>), SessionError> {
        // OBS and the design livegate replaces may append a query (`KEY?param=…`).
        let key = stream_key.split('?').next().unwrap_or_default().to_string();
        if self.publisher.is_some() {
            let r = session
                .reject_request(
                    request_id,
                    "NetStream.Publish.BadName",
                    "already publishing on this connection",
                )
                .map_err(Self::protocol)?;
            return Ok((Flow::Close, r));
        }
        let query = stream_key.split_once('?').map_or("", |(_, q)| q);
        let (code, description) = match self.ctx.gate.admit_as(&key, query, self.protocol).await {
            Ok(publisher) => {
                publisher
                    .stream()
                    .set_status("ingest", serde_json::json!({ "protocol": self.protocol }));
                self.publisher = Some(publisher);
                // Authenticated: this connection now holds a publishing slot only.
                self.preauth = None;
                let r = session.accept_request(request_id).map_err(Self::protocol)?;
                return Ok((Flow::Continue, r));
            }
            Err(Refusal::Revoked { .. }) => ("NetStream.Publish.BadName", "stream key revoked"),
            Err(Refusal::Unknown) => ("NetStream.Publish.BadName", "invalid stream key"),
            Err(Refusal::Denied { .. }) => {
                ("NetStream.Publish.BadName", "publish refused by the site")
            }
            Err(Refusal::Unavailable(_)) => {
                ("NetStream.Publish.Failed", "server error checking the key")
            }
        };
        let r = session
            .reject_request(request_id, code, description)
            .map_err(Self::protocol)?;
        Ok((Flow::Close, r))
    }

    fn on_media(
        &mut self,
        video: bool,
        data: Bytes,
        raw_ms: u32,
    ) -> Result<(Flow, Vec<ServerSessionResult>), SessionError> {
        let Some(publisher) = &self.publisher else {
            return Ok((Flow::Continue, Vec::new()));
        };
        let parsed = if video {
            self.demuxer.video(&data, raw_ms)
        } else {
            self.demuxer.audio(&data, raw_ms)
        };
        match parsed {
            Ok(Some(event)) => publisher.push(event, data.len()),
            Ok(None) => publisher.count_bytes(data.len()),
            Err(e) => {
                tracing::error!(error = %e, "refusing the stream's media; ending the session");
                self.ctx.metrics.refused("bad_media");
                return Err(SessionError::Protocol(e.to_string()));
            }
        }
        Ok((Flow::Continue, Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::any;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// After the handshake, arbitrary chunk streams end in an error or nothing.
        #[test]
        fn session_survives_arbitrary_chunks(chunks in vec(vec(any::<u8>(), 0..600), 0..8)) {
            let (mut session, _) = ServerSession::new(ServerSessionConfig::new()).unwrap();
            for chunk in chunks {
                if guarded_input(&mut session, &chunk).is_err() {
                    break;
                }
            }
        }

        /// Valid-looking chunk headers (chunk stream 3, AMF0 command) with arbitrary bodies.
        #[test]
        fn session_survives_arbitrary_command_bodies(body in vec(any::<u8>(), 0..120)) {
            let (mut session, _) = ServerSession::new(ServerSessionConfig::new()).unwrap();
            let _ = guarded_input(&mut session, &command_message(&body));
        }
    }

    /// One type-0 chunk on chunk stream 3 carrying an AMF0 command message.
    fn command_message(body: &[u8]) -> Vec<u8> {
        let len = body.len() as u32;
        let mut msg = vec![
            0x03,
            0,
            0,
            0,
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            0x14,
            0,
            0,
            0,
            0,
        ];
        msg.extend_from_slice(body);
        msg
    }

    #[test]
    fn short_amf0_command_is_an_error_not_a_panic() {
        // A string "connect" alone: rml_rtmp 0.8 panics on it unguarded.
        let body = [0x02, 0x00, 0x07, b'c', b'o', b'n', b'n', b'e', b'c', b't'];
        let (mut session, _) = ServerSession::new(ServerSessionConfig::new()).unwrap();
        let err = guarded_input(&mut session, &command_message(&body)).unwrap_err();
        assert!(err.to_string().contains("malformed RTMP message"), "{err}");
        assert!(!crate::rtmp::guard::in_guarded_parse());
    }
}
