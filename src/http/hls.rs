//! Live HLS routes: master and media playlists (never cached) and init/media segments
//! (immutable: their names are unique per stream instance).

use std::sync::Arc;

use axum::extract::{OriginalUri, Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::error::{not_found, ApiError};
use super::AppState;
use crate::hls::{HlsFile, PLAYLIST_CONTENT_TYPE};

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

pub(super) async fn media_playlist(
    State(state): State<Arc<AppState>>,
    Path((user, rendition)): Path<(String, String)>,
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
        .media_playlist(&rendition)
        .ok_or_else(|| not_found("playlist"))?;
    Ok(playlist_response(text))
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
        .file(&rendition, &file)
        .ok_or_else(|| not_found("segment"))?;
    let (content_type, body) = match found {
        HlsFile::Init(b) => ("video/mp4", b),
        HlsFile::Segment(b) => ("video/iso.segment", b),
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
