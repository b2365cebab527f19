//! The pieces of one HTTP connection that hyper does not time: the protocol preface (hyper-util's
//! auto builder waits without a timer to tell HTTP/1 from HTTP/2), a write that makes no progress
//! (a client that stops reading), and the connection's activity (requests in flight, last
//! progress) that the accept loop's watchdog reads to end idle and stalled connections.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{Request, Response, StatusCode};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
pub(super) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the bytes tell HTTP/1 (they leave the HTTP/2 preface) from HTTP/2 (the whole
/// preface): at most 24 bytes. The caller times it; the bytes are replayed to hyper.
pub(super) async fn read_preface<S: AsyncRead + Unpin>(io: &mut S) -> io::Result<Vec<u8>> {
    let mut got = Vec::with_capacity(H2_PREFACE.len());
    let mut buf = [0u8; 24];
    loop {
        let n = io.read(&mut buf[..H2_PREFACE.len() - got.len()]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
        if got.len() == H2_PREFACE.len() || !H2_PREFACE.starts_with(&got) {
            return Ok(got);
        }
    }
}

/// The socket as hyper sees it: the preface bytes replayed first, and writes that fail once they
/// have been pending (no byte accepted by the kernel) for `stall`.
pub(super) struct ServerIo<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
    stall: Duration,
    pending_since: Option<Pin<Box<Sleep>>>,
}

impl<S> ServerIo<S> {
    pub(super) fn new(inner: S, prefix: Vec<u8>, stall: Duration) -> Self {
        ServerIo {
            prefix,
            pos: 0,
            inner,
            stall,
            pending_since: None,
        }
    }

    /// Maps a write-side poll: progress resets the stall timer, `Pending` runs it.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                self.pending_since = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let stall = self.stall;
                let timer = self
                    .pending_since
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ServerIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let rest = &this.prefix[this.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ServerIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.timed(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.timed(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.timed(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.timed(cx, polled)
    }
}

/// Whether a request came over TLS (the HTTPS listener): absolute URLs given back to the client
/// (WHIP's `Location`) keep its scheme.
#[derive(Debug, Clone, Copy)]
pub struct Https(pub bool);

/// Requests in flight on one connection and when it last made progress (a request began or
/// ended, a response body yielded a chunk).
#[derive(Debug)]
pub(super) struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last.fetch_max(now, Ordering::Relaxed);
    }

    /// Time since the last progress.
    pub(super) fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// One request from its start to the end (or drop) of its response body.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A response body that reports its progress to the connection's [`Activity`].
pub(super) struct TrackedBody {
    inner: Body,
    in_flight: InFlight,
    /// Response body bytes of every connection (the node's egress).
    sent: Counter,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            this.in_flight.0.touch();
            if let Some(data) = frame.data_ref() {
                this.sent.inc_by(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The router as one connection's hyper service: each request is tracked in `activity`, and a
/// handler that has not started its response within `respond_within` gets a 408 (a request body
/// trickled in byte by byte ends there too).
pub(super) fn service(
    app: axum::Router,
    activity: Arc<Activity>,
    respond_within: Duration,
    (peer, tls): (std::net::SocketAddr, bool),
    sent: Counter,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<TrackedBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<TrackedBody>, Infallible>> + Send,
> + Clone {
    use hyper::service::Service as _;
    let app = TowerToHyperService::new(app);
    hyper::service::service_fn(move |mut request: Request<Incoming>| {
        // Handlers that limit per client (WHIP) read the address as axum's ConnectInfo.
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        request.extensions_mut().insert(Https(tls));
        let in_flight = InFlight::begin(activity.clone());
        let sent = sent.clone();
        let call = app.call(request);
        async move {
            let response = match tokio::time::timeout(respond_within, call).await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => Response::builder()
                    .status(StatusCode::REQUEST_TIMEOUT)
                    .header("connection", "close")
                    .body(Body::from("request timed out\n"))
                    .unwrap_or_default(),
            };
            Ok::<_, Infallible>(response.map(|inner| TrackedBody {
                inner,
                in_flight,
                sent,
            }))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn the_preface_read_stops_at_the_first_http1_byte_or_the_whole_h2_preface() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let got = read_preface(&mut server).await.unwrap();
        assert!(got.starts_with(b"GET"));

        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(&H2_PREFACE[..10]).await.unwrap();
        let pending = tokio::time::timeout(Duration::from_millis(100), read_preface(&mut server));
        assert!(pending.await.is_err(), "a partial preface must wait");
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(H2_PREFACE).await.unwrap();
        client.write_all(b"\0\0\0\x04").await.unwrap();
        assert_eq!(read_preface(&mut server).await.unwrap(), H2_PREFACE);
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"P").await.unwrap();
        drop(client);
        assert!(read_preface(&mut server).await.is_err(), "EOF mid-preface");
    }

    #[tokio::test]
    async fn the_prefix_is_replayed_before_the_socket() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = ServerIo::new(server, b"GE".to_vec(), Duration::from_secs(1));
        client.write_all(b"T /").await.unwrap();
        drop(client);
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"GET /");
    }

    #[tokio::test]
    async fn a_write_the_client_never_reads_times_out() {
        let (_client, server) = tokio::io::duplex(1024);
        let mut io = ServerIo::new(server, Vec::new(), Duration::from_millis(300));
        let started = tokio::time::Instant::now();
        let err = io.write_all(&vec![0u8; 64 * 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn a_slow_reader_that_keeps_reading_does_not_time_out() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut io = ServerIo::new(server, Vec::new(), Duration::from_millis(300));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let mut total = 0;
            while total < 8 * 1024 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                total += client.read(&mut buf).await.unwrap();
            }
        });
        io.write_all(&vec![0u8; 8 * 1024]).await.unwrap();
        reader.await.unwrap();
    }

    #[tokio::test]
    async fn activity_counts_requests_until_their_body_is_dropped_and_bytes_sent() {
        let activity = Activity::new();
        let sent = Counter::default();
        let mut body = TrackedBody {
            inner: Body::from("hello"),
            in_flight: InFlight::begin(activity.clone()),
            sent: sent.clone(),
        };
        assert_eq!(activity.in_flight(), 1);
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(frame.is_some_and(|f| f.is_ok()));
        assert_eq!(sent.get(), 5);
        drop(body);
        assert_eq!(activity.in_flight(), 0);
        assert!(activity.quiet_for() < Duration::from_secs(1));
    }
}
