//! The RTMP(S) push connection of one relay: TCP or TLS (rustls, SNI), the RTMP handshake and
//! rml_rtmp's client session up to an accepted publish, then tags out. Every step is bounded by
//! the caller's timeouts; server input goes through the same panic guard as ingest. The pieces
//! shared with ingest (handshake, guard, TLS, timed writes, FLV) are in [`crate::rtmp`].

use std::sync::Arc;

use bytes::Bytes;
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
    PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::target::RtmpUrl;
use crate::rtmp::chunk_limit::ChunkLimit;
use crate::rtmp::flv::OutTag;
use crate::rtmp::guard::guard_parser;
use crate::rtmp::handshake::{self, HandshakeError};
use crate::rtmp::io::{read_some, write_flushed, IoError, WRITE_TIMEOUT};

/// Bytes of server input accepted before the publish is accepted (acks, control, results).
const MAX_SETUP_BYTES: usize = 1 << 20;
/// The largest message a server may send (results, status, control: well under a KiB in
/// practice). rml_rtmp would otherwise reserve up to 16 MiB per announced message.
const MAX_SERVER_MESSAGE: u32 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot resolve or connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS with {0}: {1}")]
    Tls(String, std::io::Error),
    #[error("RTMP handshake: {0}")]
    Handshake(String),
    #[error("RTMP: {0}")]
    Protocol(String),
    #[error("the server refused: {0}")]
    Refused(String),
    #[error("the server closed the connection")]
    Closed,
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("write timed out (the target is not reading)")]
    WriteTimeout,
}

impl From<IoError> for ClientError {
    fn from(e: IoError) -> Self {
        match e {
            IoError::Closed => ClientError::Closed,
            IoError::WriteTimeout => ClientError::WriteTimeout,
            IoError::Io(e) => ClientError::Io(e),
        }
    }
}

impl From<HandshakeError> for ClientError {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::TooManyBytes | HandshakeError::Rejected(_) => {
                ClientError::Handshake(e.to_string())
            }
            HandshakeError::Io(e) => e.into(),
        }
    }
}

/// onStatus codes that mean the server will not take (or no longer takes) our stream.
fn ends_publish(code: &str) -> bool {
    [
        "BadName",
        "Failed",
        "Rejected",
        "Error",
        "Unauthorized",
        "Unpublish",
        "Closed",
    ]
    .iter()
    .any(|w| code.contains(w))
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An RTMP session being set up (one reader and writer, strictly in turn).
struct Setup {
    io: Box<dyn Io>,
    session: ClientSession,
    limit: ChunkLimit,
    buf: Vec<u8>,
    bytes_sent: u64,
}

/// An RTMP session that has been accepted to publish. Reading runs in its own task, so the
/// caller can wait for either media to send or server input without cancelling a write halfway
/// (which would corrupt the chunk stream).
pub struct RtmpPush {
    writer: tokio::io::WriteHalf<Box<dyn Io>>,
    session: ClientSession,
    limit: ChunkLimit,
    input: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    reader: tokio::task::JoinHandle<()>,
    pub bytes_sent: u64,
}

impl Drop for RtmpPush {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn protocol<E: std::fmt::Display>(e: E) -> ClientError {
    ClientError::Protocol(e.to_string())
}

/// rml_rtmp can panic on malformed AMF0 ([`guard_parser`]) and buffers any message length the
/// header announces ([`ChunkLimit`]); a bad server must only fail this relay.
fn guarded_input(
    session: &mut ClientSession,
    limit: &mut ChunkLimit,
    bytes: &[u8],
) -> Result<Vec<ClientSessionResult>, ClientError> {
    limit.feed(bytes).map_err(protocol)?;
    guard_parser(|| session.handle_input(bytes))
        .map_err(|_| ClientError::Protocol("malformed message from the server".into()))?
        .map_err(protocol)
}

impl RtmpPush {
    /// Connects, handshakes and publishes. The caller bounds the whole with a timeout.
    pub async fn connect(
        url: &RtmpUrl,
        tls: &Arc<rustls::ClientConfig>,
        metadata: Option<StreamMetadata>,
    ) -> Result<RtmpPush, ClientError> {
        let address = format!("{}:{}", url.host, url.port);
        let tcp = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| ClientError::Connect(address.clone(), e))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if url.tls {
            Box::new(
                crate::rtmp::tls::connect(tls, &url.host, tcp)
                    .await
                    .map_err(|e| ClientError::Tls(address.clone(), e))?,
            )
        } else {
            Box::new(tcp)
        };
        let mut config = ClientSessionConfig::new();
        // Platforms route on tcUrl; some refuse a connect without it.
        config.tc_url = Some(url.tc_url());
        let (session, initial) = ClientSession::new(config).map_err(protocol)?;
        let mut push = Setup {
            io,
            session,
            limit: ChunkLimit::new(MAX_SERVER_MESSAGE),
            buf: vec![0u8; 64 * 1024],
            bytes_sent: 0,
        };
        let leftover = push.handshake().await?;
        push.send_results(initial).await?;
        let results = guarded_input(&mut push.session, &mut push.limit, &leftover)?;
        push.send_results(results).await?;

        let r = push
            .session
            .request_connection(url.app.clone())
            .map_err(protocol)?;
        push.send_results(vec![r]).await?;
        push.wait_for(|e| match e {
            ClientSessionEvent::ConnectionRequestAccepted => Some(Ok(())),
            ClientSessionEvent::ConnectionRequestRejected { description } => {
                Some(Err(ClientError::Refused(format!("connect: {description}"))))
            }
            _ => None,
        })
        .await?;
        let r = push
            .session
            .request_publishing(url.stream_key.clone(), PublishRequestType::Live)
            .map_err(protocol)?;
        push.send_results(vec![r]).await?;
        push.wait_for(|e| match e {
            ClientSessionEvent::PublishRequestAccepted => Some(Ok(())),
            ClientSessionEvent::UnhandleableOnStatusCode { code } if ends_publish(code) => {
                Some(Err(ClientError::Refused(format!(
                    "publish: {}",
                    code.chars().take(80).collect::<String>()
                ))))
            }
            _ => None,
        })
        .await?;
        if let Some(metadata) = metadata {
            let r = push.session.publish_metadata(&metadata).map_err(protocol)?;
            push.send_results(vec![r]).await?;
        }
        let (mut read_half, writer) = tokio::io::split(push.io);
        let (tx, input) = tokio::sync::mpsc::channel(8);
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let chunk = match read_half.read(&mut buf).await {
                    Ok(0) => Err(std::io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => Ok(Bytes::copy_from_slice(&buf[..n])),
                    Err(e) => Err(e),
                };
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(RtmpPush {
            writer,
            session: push.session,
            limit: push.limit,
            input,
            reader,
            bytes_sent: push.bytes_sent,
        })
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        write_flushed(&mut self.writer, bytes, Some(WRITE_TIMEOUT)).await?;
        self.bytes_sent += bytes.len() as u64;
        Ok(())
    }

    /// Writes outbound packets; a status from the server that ends the publish is an error.
    async fn send_results(&mut self, results: Vec<ClientSessionResult>) -> Result<(), ClientError> {
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(p) => self.write(&p.bytes).await?,
                ClientSessionResult::RaisedEvent(
                    ClientSessionEvent::UnhandleableOnStatusCode { code },
                ) if ends_publish(&code) => {
                    return Err(ClientError::Refused(
                        code.chars().take(80).collect::<String>(),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Sends one tag.
    pub async fn send(&mut self, tag: &OutTag) -> Result<(), ClientError> {
        let result = match tag {
            OutTag::Video { ts, body, keyframe } => {
                self.session
                    .publish_video_data(body.clone(), RtmpTimestamp::new(*ts), !keyframe)
            }
            OutTag::Audio { ts, body } => {
                self.session
                    .publish_audio_data(body.clone(), RtmpTimestamp::new(*ts), false)
            }
        }
        .map_err(protocol)?;
        self.send_results(vec![result]).await
    }

    /// The next bytes from the server (cancel-safe). Err when it closed or failed.
    pub async fn next_input(&mut self) -> Result<Bytes, ClientError> {
        match self.input.recv().await {
            Some(Ok(bytes)) => Ok(bytes),
            Some(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(ClientError::Closed)
            }
            Some(Err(e)) => Err(ClientError::Io(e)),
            None => Err(ClientError::Closed),
        }
    }

    /// Answers what the server sent while publishing (acknowledgements, pings).
    pub async fn handle_input(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let results = guarded_input(&mut self.session, &mut self.limit, bytes)?;
        self.send_results(results).await
    }

    /// Ends the publish politely (then the connection closes).
    pub async fn finish(mut self) {
        if let Ok(results) = self.session.stop_publishing() {
            let _ = self.send_results(results).await;
        }
        let _ = self.writer.shutdown().await;
    }
}

impl Setup {
    async fn handshake(&mut self) -> Result<Vec<u8>, ClientError> {
        let done = handshake::client(&mut self.io, &mut self.buf, Some(WRITE_TIMEOUT)).await?;
        self.bytes_sent += done.bytes_sent;
        Ok(done.leftover)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        write_flushed(&mut self.io, bytes, Some(WRITE_TIMEOUT)).await?;
        self.bytes_sent += bytes.len() as u64;
        Ok(())
    }

    /// Writes outbound packets; returns the events raised.
    async fn send_results(
        &mut self,
        results: Vec<ClientSessionResult>,
    ) -> Result<Vec<ClientSessionEvent>, ClientError> {
        let mut events = Vec::new();
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(p) => self.write(&p.bytes).await?,
                ClientSessionResult::RaisedEvent(e) => events.push(e),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(events)
    }

    async fn wait_for(
        &mut self,
        mut want: impl FnMut(&ClientSessionEvent) -> Option<Result<(), ClientError>>,
    ) -> Result<(), ClientError> {
        let mut received = 0usize;
        loop {
            let n = read_some(&mut self.io, &mut self.buf).await?;
            received += n;
            if received > MAX_SETUP_BYTES {
                return Err(ClientError::Protocol(
                    "too much data before the publish was accepted".into(),
                ));
            }
            let input = self.buf[..n].to_vec();
            let results = guarded_input(&mut self.session, &mut self.limit, &input)?;
            for event in self.send_results(results).await? {
                if let Some(done) = want(&event) {
                    return done;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    #[test]
    fn a_server_announcing_a_huge_message_fails_the_relay_before_it_is_buffered() {
        let (mut session, _) = ClientSession::new(ClientSessionConfig::new()).unwrap();
        let mut limit = ChunkLimit::new(MAX_SERVER_MESSAGE);
        // Chunk stream 3, format 0: timestamp 0, length 10 MiB, AMF0 command, stream 0.
        let header = [3, 0, 0, 0, 0xa0, 0, 0, 0x14, 0, 0, 0, 0];
        let err = guarded_input(&mut session, &mut limit, &header).unwrap_err();
        assert!(err.to_string().contains("10485760"), "{err}");
    }

    proptest! {
        /// Whatever a server sends, the client session returns an error or results: no panic.
        #[test]
        fn client_session_survives_arbitrary_server_input(chunks in vec(vec(any::<u8>(), 0..600), 0..8)) {
            let (mut session, _) = ClientSession::new(ClientSessionConfig::new()).unwrap();
            let mut limit = ChunkLimit::new(MAX_SERVER_MESSAGE);
            let _ = session.request_connection("app".into());
            for chunk in chunks {
                if guarded_input(&mut session, &mut limit, &chunk).is_err() {
                    break;
                }
            }
        }
    }
}
