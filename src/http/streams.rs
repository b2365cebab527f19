//! `/api/v1/streams` (who is live, with each stream's ladder, recording and relay status) and
//! `/metrics`.
//!
//! The streams list is public, so by default it shows what a viewer may see: each consumer's
//! status without its errors (which carry paths, bucket keys and peer messages) and without
//! relay destinations. With the admin token (`Authorization: Bearer <http.admin_token>`) the
//! same route shows everything.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::{admin, ApiError, AppState};
use crate::stream::StreamSummary;

#[derive(Serialize)]
pub(super) struct StreamView {
    #[serde(flatten)]
    summary: StreamSummary,
    hls_url: String,
    /// The master playlist exists (false for the first seconds of a publish).
    playable: bool,
    title: String,
    description: String,
    access: crate::channel::AccessMode,
    /// Players active within `access.viewer_window_secs`.
    viewers: usize,
    /// Most at once, and distinct viewers, during this publish.
    peak_viewers: usize,
    total_viewers: u64,
    /// The node holding the stream (cluster only).
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
}

/// A stream another node of the cluster holds (from its lease).
#[derive(Serialize)]
pub(super) struct RemoteView {
    name: String,
    node: String,
    session_id: u64,
    state: String,
    hls_url: String,
    /// As the holder last reported it (every 5 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    viewers: Option<u64>,
}

#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum Listed {
    Local(Box<StreamView>),
    Remote(RemoteView),
}

#[derive(serde::Deserialize, Default)]
pub(super) struct ListQuery {
    /// `?local=1`: this node's streams only.
    #[serde(default)]
    local: Option<String>,
}

/// Whether a status field stays out of the public view: errors of any kind (their texts name
/// files, buckets and peers) and where relays go.
fn private_field(name: &str) -> bool {
    name.contains("error") || matches!(name, "target" | "url" | "origin" | "path" | "key")
}

/// `value` without its private fields, at any depth.
fn public_status(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|name, _| !private_field(name));
            map.values_mut().for_each(public_status);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(public_status),
        _ => {}
    }
}

pub(super) async fn list_streams(
    State(state): State<Arc<AppState>>,
    axum::extract::Query(query): axum::extract::Query<ListQuery>,
    headers: HeaderMap,
) -> Result<Json<Vec<Listed>>, ApiError> {
    // No Authorization header: the public view; one that is wrong: refused, so a mistyped token
    // is noticed rather than silently showing less.
    let admin =
        headers.contains_key(header::AUTHORIZATION) || headers.contains_key(admin::CSRF_HEADER);
    if admin {
        admin::authorize(&state, &headers)?;
    }
    let base = state.config.http_base_url();
    let node = state.leases.as_ref().map(|l| l.node().to_string());
    let mut out: Vec<Listed> = Vec::new();
    for s in state.hub.list() {
        let channel = state.channels.get(&s.name).await.unwrap_or_else(|e| {
            tracing::debug!(stream = %s.name, error = %e, "channel settings unavailable");
            crate::channel::ChannelInfo::default()
        });
        let audience = state.audience.stats(&s.name, std::time::Instant::now());
        out.push({
            let mut summary = s.summary();
            if !admin {
                summary
                    .consumer_status
                    .retain(|name, _| !private_field(name));
                summary.consumer_status.values_mut().for_each(public_status);
            }
            let playable = state.hls.get(&summary.name).is_some_and(|h| {
                h.read()
                    .unwrap_or_else(|e| e.into_inner())
                    .master_playlist()
                    .is_some()
            });
            Listed::Local(Box::new(StreamView {
                hls_url: format!("{base}/live/{}/index.m3u8", summary.name),
                playable,
                summary,
                title: channel.title,
                description: channel.description,
                access: channel.access,
                viewers: audience.viewers,
                peak_viewers: audience.peak,
                total_viewers: audience.total,
                node: node.clone(),
            }))
        });
    }
    let local_only = query.local.as_deref().is_some_and(|v| v != "0");
    if let (Some(leases), false) = (&state.leases, local_only) {
        // The rest of the cluster's live streams, from their leases (a Redis outage lists only
        // this node's).
        let here: std::collections::HashSet<String> =
            state.hub.list().iter().map(|s| s.name.clone()).collect();
        match leases.all().await {
            Ok(all) => {
                let remote: Vec<(String, crate::cluster::leases::Lease)> = all
                    .into_iter()
                    .filter(|(user, l)| {
                        l.is_live() && l.node != leases.node() && !here.contains(user)
                    })
                    .collect();
                let users: Vec<String> = remote.iter().map(|(u, _)| u.clone()).collect();
                let counts = leases.viewers(&users).await.unwrap_or_default();
                out.extend(remote.into_iter().enumerate().map(|(i, (user, l))| {
                    Listed::Remote(RemoteView {
                        hls_url: format!("{base}/live/{user}/index.m3u8"),
                        name: user,
                        node: l.node,
                        session_id: l.session,
                        state: l.state,
                        viewers: counts.get(i).copied().flatten(),
                    })
                }));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster streams unavailable (Redis); listing this node's")
            }
        }
    }
    Ok(Json(out))
}

pub(super) async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let token = state.config.http.metrics_token.as_bytes();
    if !token.is_empty() {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !bool::from(presented.as_bytes().ct_eq(token)) {
            return ApiError(
                StatusCode::UNAUTHORIZED,
                "/metrics needs http.metrics_token as a bearer token".into(),
            )
            .into_response();
        }
    }
    state
        .metrics
        .live_streams
        .set(state.hub.list().len() as i64);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_status_drops_errors_and_destinations_at_any_depth() {
        let mut status = serde_json::json!({
            "state": "recording",
            "last_error": "S3 put s3://bucket/recordings/alice/1/seg-4.m4s: denied",
            "relays": [{"id": "r1", "platform": "custom", "target": "rtmp://10.0.0.9:1935",
                        "state": "reconnecting", "last_error": "connection refused"}],
        });
        public_status(&mut status);
        let text = status.to_string();
        assert!(
            !text.contains("bucket") && !text.contains("10.0.0.9"),
            "{text}"
        );
        assert!(!text.contains("refused"), "{text}");
        assert_eq!(status["relays"][0]["state"], "reconnecting");
        assert_eq!(status["state"], "recording");
        assert!(private_field("error") && !private_field("state"));
    }
}
