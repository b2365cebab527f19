//! Any node serves any stream: a `/live/<user>/…` request on a node that does not hold the
//! stream is reverse-proxied to the node whose lease says it does (the body streamed through,
//! status and caching headers kept). A hop header marks proxied requests, so a node never
//! proxies one again (no loops, even while two nodes disagree for a moment). No redirects: hls.js
//! resolves segment URLs against a redirected URL and would keep using a dead owner after a
//! failover.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::metrics::ReasonLabel;
use crate::util::log_throttle::LogThrottle;

/// Set on requests one node proxies to another.
pub const HOP: &str = "x-livegate-hop";
/// Above a blocking playlist reload's hold time (LL-HLS holds up to 3 target durations).
const PROXY_TIMEOUT: Duration = Duration::from_secs(20);

fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(PROXY_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default()
    })
}

/// The owner's response when another node holds `user`'s stream; None to serve locally.
pub(super) async fn proxy_if_remote(
    state: &AppState,
    user: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    peer: std::net::SocketAddr,
) -> Option<Response> {
    let leases = state.leases.as_ref()?;
    if headers.contains_key(HOP) {
        return None;
    }
    let fallback = |reason: &'static str| {
        state
            .metrics
            .cluster_route_fallback
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    };
    let lease = match leases.owner(user).await {
        Ok(owner) => {
            if owner.stale {
                fallback("stale_owner");
                static STALE_LOG: LogThrottle = LogThrottle::new(Duration::from_secs(10));
                if let Some(suppressed) = STALE_LOG.check(user) {
                    tracing::warn!(%user, suppressed, "Redis does not answer: routing to the stream's last known node");
                }
            }
            match owner.lease {
                Some(lease) => lease,
                None => return None,
            }
        }
        Err(e) => {
            // No lease readable and no recent one known: a stream this node has is served;
            // another is unknowable now, which is not a 404.
            if state.hls.get(user).is_some() {
                return None;
            }
            fallback("unavailable");
            static LOG: LogThrottle = LogThrottle::new(Duration::from_secs(10));
            if let Some(suppressed) = LOG.check(user) {
                tracing::warn!(%user, error = %e, suppressed, "cannot route: Redis does not answer and no recent owner is known; answering 503");
            }
            let mut r = (
                StatusCode::SERVICE_UNAVAILABLE,
                "the cluster registry (Redis) is unavailable; try again shortly\n",
            )
                .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            return Some(r);
        }
    };
    if lease.node == leases.node() {
        return None;
    }
    let url = format!("{}{path_and_query}", lease.http);
    // The owner checks playback tokens bound to an address and counts viewers: it needs the
    // client's address (this node is among its `http.trusted_proxies`) and user agent.
    let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    let mut request = client()
        .get(&url)
        .header(HOP, leases.node())
        .header("x-forwarded-for", forwarded);
    if let Some(agent) = headers.get(header::USER_AGENT) {
        request = request.header(header::USER_AGENT, agent.clone());
    }
    let upstream = request.send().await;
    let upstream = match upstream {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%user, owner = %lease.node, error = %e, "the stream's node does not answer");
            let mut r = (
                StatusCode::BAD_GATEWAY,
                format!(
                    "the node holding this stream ({}) does not answer\n",
                    lease.node
                ),
            )
                .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            return Some(r);
        }
    };
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = Response::builder().status(status);
    for name in [
        header::CONTENT_TYPE,
        header::CACHE_CONTROL,
        header::CONTENT_LENGTH,
    ] {
        if let Some(v) = upstream
            .headers()
            .get(name.as_str())
            .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
        {
            response = response.header(name, v);
        }
    }
    response = response.header("x-livegate-node", lease.node.as_str());
    Some(
        response
            .body(Body::from_stream(upstream.bytes_stream()))
            .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response()),
    )
}
