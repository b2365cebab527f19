//! The HTTP accept loops on hyper (axum's own `serve` has no connection limits or timeouts):
//! plain HTTP and HTTPS (TLS with ALPN h2 / http/1.1) share one set of limits and timeouts.
//!
//! Every connection holds a slot of `max_connections` (`max_connections_per_ip` per address) and
//! is timed from accept to close: `first_byte_timeout_secs` to finish the TLS handshake (HTTPS)
//! and tell HTTP/1 from HTTP/2 (silent sockets and a lone "P" end there), `header_read_timeout_secs` for HTTP/1 headers,
//! `idle_timeout_secs` without a request in flight (HTTP/1 keep-alive and HTTP/2 alike),
//! `write_timeout_secs` without progress while a response is being sent (a client that stops
//! reading, or an HTTP/2 client that never opens its window), HTTP/2 keep-alive pings and a cap on
//! concurrent streams.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::conn::{read_preface, service, Activity, ServerIo, H2_PREFACE};
use crate::config::HttpConfig;
use crate::metrics::Metrics;
use crate::net::ConnLimiter;
use crate::util::log_throttle::LogThrottle;

/// How long a connection ended for being idle may take to finish what it is writing.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long in-flight responses get on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The watchdog never sleeps less than this (a connection that just turned idle).
const MIN_CHECK: Duration = Duration::from_millis(50);
/// HTTP/2 header block limit (hyper's default is much larger).
const H2_MAX_HEADER_LIST: u32 = 64 * 1024;

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    first_byte: Duration,
    idle: Duration,
    write: Duration,
}

/// One address the HTTP server accepts on: plain, or TLS (HTTPS) with the acceptor's ALPN.
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Serves `app` on `listener` with at most `max_connections` connections (per address: at most
/// `max_connections_per_ip`). Stops accepting when `shutdown` is cancelled; open connections
/// keep being served (players get the final playlists of a draining server) until `stop`, then
/// finish their responses within a grace period, and this returns once they have.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    config: &HttpConfig,
    max_connections: usize,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    stop: CancellationToken,
) {
    let listener = Listener {
        tcp: listener,
        tls: None,
    };
    serve_all(
        vec![listener],
        app,
        config,
        max_connections,
        metrics,
        shutdown,
        stop,
    )
    .await
}

/// Like [`serve`] on several listeners (HTTP and HTTPS) that share one set of connection limits.
pub async fn serve_all(
    listeners: Vec<Listener>,
    app: axum::Router,
    config: &HttpConfig,
    max_connections: usize,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    stop: CancellationToken,
) {
    // Validated with the configuration.
    let exempt = config
        .per_ip_exempt
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    let limiter = ConnLimiter::with_exempt(max_connections, config.max_connections_per_ip, exempt);
    let secs = Duration::from_secs;
    let timeouts = Timeouts {
        first_byte: secs(config.first_byte_timeout_secs),
        idle: secs(config.idle_timeout_secs),
        write: secs(config.write_timeout_secs),
    };
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(secs(config.header_read_timeout_secs))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.h2_max_concurrent_streams)
        .keep_alive_interval(Some(secs(config.h2_keep_alive_secs)))
        .keep_alive_timeout(secs(config.h2_keep_alive_secs))
        .max_header_list_size(H2_MAX_HEADER_LIST);
    let shared = Arc::new(Shared {
        app,
        builder,
        timeouts,
        metrics,
        limiter,
        refused_log: LogThrottle::new(Duration::from_secs(10)),
        connections: tokio_util::task::TaskTracker::new(),
        stop,
    });
    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|listener| tokio::spawn(accept(listener, shared.clone(), shutdown.clone())))
        .collect();
    for task in accepting {
        let _ = task.await;
    }
    shared.connections.close();
    shared.connections.wait().await;
}

/// What every accept loop of one server shares.
struct Shared {
    app: axum::Router,
    builder: Builder<TokioExecutor>,
    timeouts: Timeouts,
    metrics: Arc<Metrics>,
    limiter: ConnLimiter,
    refused_log: LogThrottle,
    connections: tokio_util::task::TaskTracker,
    stop: CancellationToken,
}

async fn accept(listener: Listener, shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match shared.limiter.try_acquire(peer.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                shared.metrics.http_refused(refusal.label());
                if let Some(held) = shared.refused_log.check(refusal.label()) {
                    tracing::warn!(%peer, reason = refusal.label(), similar_since_last_line = held,
                        "HTTP connection refused; closing it");
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (shared_conn, tls) = (shared.clone(), listener.tls.clone());
        shared.connections.spawn(async move {
            let deadline = tokio::time::Instant::now() + shared_conn.timeouts.first_byte;
            match tls {
                None => serve_connection(stream, peer, false, deadline, &shared_conn).await,
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        _ = shared_conn.stop.cancelled() => None,
                        done = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => Some(done),
                    };
                    match handshake {
                        None => {}
                        Some(Ok(Ok(tls))) => {
                            serve_connection(tls, peer, true, deadline, &shared_conn).await
                        }
                        Some(Ok(Err(e))) => {
                            shared_conn.metrics.tls_handshake_failed("http");
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Some(Err(_)) => shared_conn.metrics.http_timed_out("first_byte"),
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Serves one connection: its first bytes (by `first_byte`) tell HTTP/1 from HTTP/2, then hyper
/// serves it until it ends, idles out, stalls or the server stops.
async fn serve_connection<S>(
    mut stream: S,
    peer: std::net::SocketAddr,
    tls: bool,
    first_byte: tokio::time::Instant,
    shared: &Shared,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeouts = shared.timeouts;
    let prefix = tokio::select! {
        _ = shared.stop.cancelled() => return,
        read = tokio::time::timeout_at(first_byte, read_preface(&mut stream)) => match read {
            Ok(Ok(prefix)) => prefix,
            Ok(Err(_)) => return,
            Err(_) => {
                shared.metrics.http_timed_out("first_byte");
                return;
            }
        },
    };
    let protocol = if prefix == H2_PREFACE {
        "http2"
    } else {
        "http1"
    };
    shared.metrics.http_connection(protocol, tls);
    let activity = Activity::new();
    let io = TokioIo::new(ServerIo::new(stream, prefix, timeouts.write));
    let service = service(
        shared.app.clone(),
        activity.clone(),
        timeouts.write,
        (peer, tls),
        shared.metrics.http_response_bytes.clone(),
    );
    let connection = shared.builder.serve_connection_with_upgrades(io, service);
    let mut connection = std::pin::pin!(connection);
    loop {
        // Sleep until the connection could have become idle or stalled, then look again.
        let limit = if activity.in_flight() == 0 {
            timeouts.idle
        } else {
            timeouts.write
        };
        let check_in = limit.saturating_sub(activity.quiet_for()).max(MIN_CHECK);
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = shared.stop.cancelled() => {
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
                return;
            }
            _ = tokio::time::sleep(check_in) => {
                let quiet = activity.quiet_for();
                if activity.in_flight() == 0 && quiet >= timeouts.idle {
                    shared.metrics.http_timed_out("idle");
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(IDLE_CLOSE_GRACE, connection).await;
                    return;
                }
                if activity.in_flight() > 0 && quiet >= timeouts.write {
                    // Requests in flight but no progress: a handler or a response that stalls
                    // (e.g. an HTTP/2 client that never opens its flow-control window).
                    shared.metrics.http_timed_out("stalled");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A client that requests 64 MiB and never reads is cut off once the server's writes have
    /// made no progress for `write_timeout_secs`, instead of pinning the connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_stops_reading_is_disconnected() {
        let chunk = axum::body::Bytes::from(vec![7u8; 64 * 1024]);
        let app = axum::Router::new().route(
            "/big",
            axum::routing::get(move || {
                let chunks = std::iter::repeat_n(chunk.clone(), 1024).map(Ok::<_, std::io::Error>);
                async move { axum::body::Body::from_stream(tokio_stream::iter(chunks)) }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = HttpConfig {
            write_timeout_secs: 1,
            ..HttpConfig::default()
        };
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(Metrics::new());
        let token = shutdown.clone();
        let server = tokio::spawn(async move {
            serve(listener, app, &config, 16, metrics, token.clone(), token).await;
        });
        let total = tokio::task::spawn_blocking(move || {
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            std::io::Write::write_all(&mut client, b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            // Stop reading long enough for the server to give up, then drain what was sent.
            std::thread::sleep(Duration::from_secs(3));
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut total = 0usize;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match client.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
            total
        })
        .await
        .unwrap();
        shutdown.cancel();
        let _ = server.await;
        assert!(
            total < 32 * 1024 * 1024,
            "the server kept sending to a client that did not read: {total} bytes"
        );
    }
}
