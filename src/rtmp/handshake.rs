//! Driving rml_rtmp's sans-IO [`Handshake`] over a socket, for either side: the client sends
//! C0+C1 first, the server answers what it reads. Each side bounds the total it reads; the
//! caller bounds the time.

use std::time::Duration;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use tokio::io::{AsyncRead, AsyncWrite};

use super::io::{read_some, write_flushed, IoError};

/// A peer needs 1537 + 1536 bytes; anything far beyond that is not an RTMP handshake.
pub const MAX_HANDSHAKE_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("too many handshake bytes")]
    TooManyBytes,
    /// rml_rtmp refused the peer's bytes.
    #[error("{0}")]
    Rejected(String),
    #[error(transparent)]
    Io(#[from] IoError),
}

/// A completed handshake.
#[derive(Debug)]
pub struct Completed {
    /// Bytes that arrived after the handshake: the start of the RTMP chunk stream.
    pub leftover: Vec<u8>,
    /// Bytes this side wrote.
    pub bytes_sent: u64,
}

/// The server side. `buf` is the read buffer; `write_timeout` bounds each write.
pub async fn server<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut S,
    buf: &mut [u8],
    write_timeout: Option<Duration>,
) -> Result<Completed, HandshakeError> {
    drive(
        socket,
        Handshake::new(PeerType::Server),
        0,
        buf,
        write_timeout,
    )
    .await
}

/// The client side: sends C0+C1, then answers the server.
pub async fn client<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut S,
    buf: &mut [u8],
    write_timeout: Option<Duration>,
) -> Result<Completed, HandshakeError> {
    let mut handshake = Handshake::new(PeerType::Client);
    let c0c1 = handshake
        .generate_outbound_p0_and_p1()
        .map_err(|e| HandshakeError::Rejected(e.to_string()))?;
    write_flushed(socket, &c0c1, write_timeout).await?;
    drive(socket, handshake, c0c1.len() as u64, buf, write_timeout).await
}

async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut S,
    mut handshake: Handshake,
    mut bytes_sent: u64,
    buf: &mut [u8],
    write_timeout: Option<Duration>,
) -> Result<Completed, HandshakeError> {
    let mut total = 0usize;
    loop {
        let n = read_some(socket, buf).await?;
        total += n;
        if total > MAX_HANDSHAKE_BYTES {
            return Err(HandshakeError::TooManyBytes);
        }
        let step = handshake
            .process_bytes(&buf[..n])
            .map_err(|e| HandshakeError::Rejected(e.to_string()))?;
        let (response, leftover) = match step {
            HandshakeProcessResult::InProgress { response_bytes } => (response_bytes, None),
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => (response_bytes, Some(remaining_bytes)),
        };
        write_flushed(socket, &response, write_timeout).await?;
        bytes_sent += response.len() as u64;
        if let Some(leftover) = leftover {
            return Ok(Completed {
                leftover,
                bytes_sent,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::io::WRITE_TIMEOUT;
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::any;

    #[tokio::test]
    async fn client_and_server_complete_against_each_other() {
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        let server_side = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            server(&mut b, &mut buf, None).await
        });
        let mut buf = vec![0u8; 64 * 1024];
        let done = client(&mut a, &mut buf, Some(WRITE_TIMEOUT)).await.unwrap();
        // C0+C1 and C2.
        assert_eq!(done.bytes_sent, 1537 + 1536);
        let served = server_side.await.unwrap().unwrap();
        assert_eq!(served.bytes_sent, 1537 + 1536);
    }

    #[tokio::test]
    async fn a_wrong_version_is_rejected() {
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        tokio::io::AsyncWriteExt::write_all(&mut a, &[6u8; 1537])
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let err = server(&mut b, &mut buf, None).await.unwrap_err();
        assert!(matches!(err, HandshakeError::Rejected(_)), "{err}");
    }

    #[tokio::test]
    async fn a_peer_that_closes_is_reported() {
        let (a, mut b) = tokio::io::duplex(1024);
        drop(a);
        let mut buf = vec![0u8; 4096];
        let err = server(&mut b, &mut buf, None).await.unwrap_err();
        assert!(matches!(err, HandshakeError::Io(IoError::Closed)), "{err}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// The handshake rejects or waits on arbitrary bytes; it never panics.
        #[test]
        fn handshake_survives_arbitrary_bytes(data in vec(any::<u8>(), 0..4000)) {
            let mut handshake = Handshake::new(PeerType::Server);
            let _ = handshake.process_bytes(&data);
        }
    }
}
