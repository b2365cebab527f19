//! Socket IO both RTMP sides share: a flushed, timed write and a read that reports a closed peer.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long one write may take before the peer counts as not reading.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("connection closed by peer")]
    Closed,
    #[error("write timed out")]
    WriteTimeout,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Writes all of `bytes` and flushes: TLS may keep encrypted bytes buffered after `write_all`.
/// With `timeout`, the whole write is bounded by it.
pub async fn write_flushed<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
    timeout: Option<Duration>,
) -> Result<(), IoError> {
    let write = async {
        w.write_all(bytes).await?;
        w.flush().await
    };
    match timeout {
        Some(limit) => tokio::time::timeout(limit, write)
            .await
            .map_err(|_| IoError::WriteTimeout)??,
        None => write.await?,
    }
    Ok(())
}

/// Reads what is there (at least one byte) into `buf`; a peer that closed is [`IoError::Closed`].
pub async fn read_some<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<usize, IoError> {
    match r.read(buf).await? {
        0 => Err(IoError::Closed),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_reach_the_peer_and_a_close_is_reported() {
        let (mut a, mut b) = tokio::io::duplex(64);
        write_flushed(&mut a, b"hello", Some(WRITE_TIMEOUT))
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let n = read_some(&mut b, &mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello");
        drop(a);
        assert!(matches!(
            read_some(&mut b, &mut buf).await,
            Err(IoError::Closed)
        ));
    }

    #[tokio::test]
    async fn a_peer_that_does_not_read_times_the_write_out() {
        let (mut a, _b) = tokio::io::duplex(8);
        let err = write_flushed(&mut a, &[0u8; 64], Some(Duration::from_millis(50)))
            .await
            .unwrap_err();
        assert!(matches!(err, IoError::WriteTimeout));
        assert_eq!(err.to_string(), "write timed out");
    }
}
