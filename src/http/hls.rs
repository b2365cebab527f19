//! Live HLS routes: master and media playlists (never cached; LL-HLS blocking reloads held
//! until the part they ask for exists) and init/media segments and parts (immutable: their names
//! are unique per stream instance; a preload-hinted part is held until it exists).

use std::sync::Arc;

use axum::extract::{OriginalUri, Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use axum::http::StatusCode;
use tokio::sync::watch;

use super::error::{not_found, ApiError};
use super::AppState;
use crate::hls::{Decision, Directives, HlsFile, Published, PLAYLIST_CONTENT_TYPE};
use crate::metrics::{Metrics, ReasonLabel};

pub(super) fn playlist_response(body: String) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(PLAYLIST_CONTENT_TYPE),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// Another node's answer when the cluster says it holds the stream.
async fn remote(
    state: &AppState,
    user: &str,
    uri: &OriginalUri,
    headers: &HeaderMap,
) -> Option<Response> {
    let path = uri.0.path_and_query().map_or("/", |p| p.as_str());
    super::owner::proxy_if_remote(state, user, path, headers).await
}

pub(super) async fn master_playlist(
    State(state): State<Arc<AppState>>,
    Path(user): Path<String>,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(r) = remote(&state, &user, &uri, &headers).await {
        return Ok(r);
    }
    let hls = state.hls.get(&user).ok_or_else(|| not_found("stream"))?;
    let text = hls
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .master_playlist()
        .ok_or_else(|| not_found("playlist (stream starting)"))?;
    Ok(playlist_response(text))
}

/// Holds a request until `decide` says it can be answered, counting it in the metrics.
/// Returns the publication that satisfied it.
async fn wait_until(
    metrics: &Metrics,
    published: &mut watch::Receiver<Arc<Published>>,
    timeout: std::time::Duration,
    decide: impl Fn(&Published) -> Decision,
) -> Result<Arc<Published>, Decision> {
    struct Waiting<'a>(&'a Metrics);
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.0.hls_blocked.dec();
        }
    }
    let count = |outcome: &str| {
        metrics
            .hls_blocking
            .get_or_create(&ReasonLabel {
                reason: outcome.into(),
            })
            .inc();
    };
    metrics.hls_blocked.inc();
    let _waiting = Waiting(metrics);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let now = published.borrow_and_update().clone();
        match decide(&now) {
            Decision::Ready => {
                count("ready");
                return Ok(now);
            }
            Decision::Refuse(why) => {
                count("refused");
                return Err(Decision::Refuse(why));
            }
            Decision::Wait => {}
        }
        match tokio::time::timeout_at(deadline, published.changed()).await {
            Ok(Ok(())) => {}
            // The stream's window was dropped: answer with what was last published.
            Ok(Err(_)) => return Ok(now),
            Err(_) => {
                count("timeout");
                return Err(Decision::Wait);
            }
        }
    }
}

pub(super) async fn media_playlist(
    State(state): State<Arc<AppState>>,
    Path((user, rendition)): Path<(String, String)>,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(r) = remote(&state, &user, &uri, &headers).await {
        return Ok(r);
    }
    let directives = Directives::parse(uri.0.query().unwrap_or(""))
        .map_err(|why| ApiError(StatusCode::BAD_REQUEST, why.into()))?;
    let hls = state.hls.get(&user).ok_or_else(|| not_found("stream"))?;
    let (mut published, timeout, low_latency) = {
        let hls = hls.read().unwrap_or_else(|e| e.into_inner());
        let published = hls.watch(&rendition).ok_or_else(|| not_found("playlist"))?;
        (published, hls.blocking_timeout(), hls.low_latency())
    };
    drop(hls);
    let now = if low_latency && directives.blocks() {
        wait_until(&state.metrics, &mut published, timeout, |p| {
            p.decide(directives)
        })
        .await
        .map_err(|outcome| match outcome {
            Decision::Refuse(why) => ApiError(StatusCode::BAD_REQUEST, why.into()),
            _ => ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the requested part did not come in time".into(),
            ),
        })?
    } else {
        published.borrow().clone()
    };
    let text = now.playlist.clone().ok_or_else(|| not_found("playlist"))?;
    Ok(playlist_response(text.to_string()))
}

pub(super) async fn hls_file(
    State(state): State<Arc<AppState>>,
    Path((user, rendition, file)): Path<(String, String, String)>,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(r) = remote(&state, &user, &uri, &headers).await {
        return Ok(r);
    }
    let hls = state.hls.get(&user).ok_or_else(|| not_found("stream"))?;
    let found = hls
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .file(&rendition, &file);
    let found = match found {
        Some(found) => found,
        None => {
            // A preload-hinted part (`<instance>-<msn>.<part>.m4s`) is held until it exists.
            let (msn, part) =
                crate::hls::live::parse_part_name(&file).ok_or_else(|| not_found("segment"))?;
            let (mut published, timeout) = {
                let hls = hls.read().unwrap_or_else(|e| e.into_inner());
                if !hls.low_latency() || !file.starts_with(&hls.instance) {
                    return Err(not_found("segment"));
                }
                let published = hls.watch(&rendition).ok_or_else(|| not_found("segment"))?;
                (published, hls.blocking_timeout())
            };
            wait_until(&state.metrics, &mut published, timeout, |p| {
                p.part(msn, part)
            })
            .await
            .map_err(|_| not_found("part"))?;
            hls.read()
                .unwrap_or_else(|e| e.into_inner())
                .file(&rendition, &file)
                .ok_or_else(|| not_found("part"))?
        }
    };
    let (content_type, body) = match found {
        HlsFile::Init(b) => ("video/mp4", b),
        HlsFile::Segment(b) | HlsFile::Part(b) => ("video/iso.segment", b),
    };
    // Names are unique per stream instance, so a segment never changes once served.
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400, immutable"),
            ),
        ],
        body,
    )
        .into_response())
}
