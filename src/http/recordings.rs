//! The operator's recordings API and VOD playback, behind the admin token.
//!
//! Playback is served by livegate from storage (`/vod/{id}/…`) rather than with presigned S3
//! URLs: it works the same for the local and S3 backends, the admin token guards it, and an
//! edge cache can keep the immutable segments. The cost is that VOD bytes pass through the node.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::admin::authorize;
use super::{ApiError, AppState};
use crate::hls::PLAYLIST_CONTENT_TYPE as PLAYLIST_TYPE;
use crate::record::session::{self, Manifest, PLAYLIST_NAME};
use crate::record::vod::{self, RangeRequest};
use crate::record::StorageError;

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound(_) => ApiError(StatusCode::NOT_FOUND, "not found".into()),
            StorageError::InvalidKey(_) => ApiError(StatusCode::BAD_REQUEST, e.to_string()),
            _ => {
                tracing::warn!(error = %e, "recording storage request failed");
                ApiError(StatusCode::BAD_GATEWAY, format!("recording storage: {e}"))
            }
        }
    }
}

fn parse_id(id: &str) -> Result<(&str, &str), ApiError> {
    session::parse_recording_id(id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "no such recording".into()))
}

#[derive(Serialize)]
struct RecordingView {
    #[serde(flatten)]
    manifest: Manifest,
    playlist_url: String,
    download_url: String,
    poster_url: String,
}

impl RecordingView {
    fn new(state: &AppState, manifest: Manifest) -> Self {
        let base = state.config.http_base_url();
        RecordingView {
            playlist_url: format!("{base}/vod/{}/{PLAYLIST_NAME}", manifest.id),
            download_url: format!("{base}/api/v1/recordings/{}/download.mp4", manifest.id),
            poster_url: format!("{base}/vod/{}/poster.jpg", manifest.id),
            manifest,
        }
    }
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    user: Option<String>,
    /// RFC 3339: recordings that started at or after.
    since: Option<String>,
    /// RFC 3339: recordings that started before.
    until: Option<String>,
    limit: Option<usize>,
}

fn parse_time(name: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ApiError(
                        StatusCode::BAD_REQUEST,
                        format!("{name}: expected RFC 3339 like 2026-11-21T08:00:00Z ({e})"),
                    )
                })
        })
        .transpose()
}

pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    if let Some(user) = &query.user {
        if !crate::util::valid_user_name(user) {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "invalid user name".into(),
            ));
        }
    }
    let since = parse_time("since", query.since.as_deref())?;
    let until = parse_time("until", query.until.as_deref())?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let recordings: Vec<RecordingView> = state
        .recorder
        .list(query.user.as_deref())
        .await?
        .into_iter()
        .filter(|m| since.is_none_or(|t| m.started_at >= t))
        .filter(|m| until.is_none_or(|t| m.started_at < t))
        .take(limit)
        .map(|m| RecordingView::new(&state, m))
        .collect();
    Ok(Json(serde_json::json!({ "recordings": recordings })).into_response())
}

pub(super) async fn get_one(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let (user, session) = parse_id(&id)?;
    let manifest = state.recorder.manifest(user, session).await?;
    Ok(Json(RecordingView::new(&state, manifest)).into_response())
}

pub(super) async fn delete(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let (user, session) = parse_id(&id)?;
    if state.recorder.is_active(&id) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "the recording is still being written; delete it once it has finished".into(),
        ));
    }
    let deleted = state.recorder.delete(user, session).await?;
    if deleted == 0 {
        return Err(ApiError(StatusCode::NOT_FOUND, "no such recording".into()));
    }
    tracing::info!(recording = %id, objects = deleted, "recording deleted over the admin API");
    Ok(Json(serde_json::json!({ "deleted": id, "objects": deleted })).into_response())
}

/// `/vod/{id}/index.m3u8`, `init-N.mp4`, `seg-N.m4s` with the admin token.
pub(super) async fn vod_file(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    super::admin::authorize_read(&state, &headers)?;
    serve_vod(&state, &id, &file).await
}

/// `/vod/{id}/t/{token}/…`: the same with a playback token for the recording's user, so a site
/// lets its viewers watch recordings as it lets them watch live (relative URIs keep the token).
pub(super) async fn vod_file_with_token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path((id, token, file)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let (user, _) = parse_id(&id)?;
    let client = super::playback::client_ip(&state.trusted_proxies, peer, &headers);
    state
        .token_key
        .verify(&token, user, chrono::Utc::now().timestamp())
        .and_then(|c| c.allows(client))
        .map_err(|e| ApiError(StatusCode::FORBIDDEN, e.to_string()))?;
    serve_vod(&state, &id, &file).await
}

/// `/vod/{id}/poster.jpg`: the recording's first picture (admin, console, or `?token=` for the
/// recording's user). Made on request from the first segment; cacheable for a day.
pub(super) async fn poster(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path(id): Path<String>,
    Query(query): Query<PosterQuery>,
) -> Result<Response, ApiError> {
    let (user, session) = parse_id(&id)?;
    match query.token.as_deref() {
        Some(token) => {
            let client = super::playback::client_ip(&state.trusted_proxies, peer, &headers);
            state
                .token_key
                .verify(token, user, chrono::Utc::now().timestamp())
                .and_then(|c| c.allows(client))
                .map_err(|e| ApiError(StatusCode::FORBIDDEN, e.to_string()))?;
        }
        None => super::admin::authorize_read(&state, &headers)?,
    }
    let storage = state.recorder.storage();
    let folder = format!("{user}/{session}/");
    let playlist = storage.get(&format!("{folder}{PLAYLIST_NAME}")).await?;
    let (init, segment) = match m3u8_rs::parse_media_playlist_res(&playlist) {
        Ok(p) => p
            .segments
            .first()
            .and_then(|s| Some((s.map.as_ref()?.uri.clone(), s.uri.clone())))
            .ok_or_else(|| {
                ApiError(StatusCode::NOT_FOUND, "the recording has no segment".into())
            })?,
        Err(_) => {
            return Err(ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the recording's playlist is unreadable".into(),
            ))
        }
    };
    if !session::is_recording_file(&init) || !session::is_recording_file(&segment) {
        return Err(ApiError(StatusCode::NOT_FOUND, "no such file".into()));
    }
    let init = storage.get(&format!("{folder}{init}")).await?;
    let segment = storage.get(&format!("{folder}{segment}")).await?;
    let made =
        tokio::task::spawn_blocking(move || crate::transcode::thumbnail::poster(&init, &segment))
            .await
            .map_err(|e| {
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("poster task: {e}"),
                )
            })?
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("no poster: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "private, max-age=86400"),
        ],
        made.jpeg,
    )
        .into_response())
}

#[derive(Deserialize, Default)]
pub(super) struct PosterQuery {
    token: Option<String>,
}

async fn serve_vod(state: &AppState, id: &str, file: &str) -> Result<Response, ApiError> {
    let (user, session) = parse_id(id)?;
    if !session::is_recording_file(file) {
        return Err(ApiError(StatusCode::NOT_FOUND, "not found".into()));
    }
    let data = state
        .recorder
        .storage()
        .get(&format!("{user}/{session}/{file}"))
        .await?;
    let (content_type, cache) = if file == PLAYLIST_NAME {
        // An EVENT playlist grows while the recording runs.
        (PLAYLIST_TYPE, "no-cache")
    } else if file.ends_with(".mp4") {
        ("video/mp4", "private, max-age=31536000, immutable")
    } else {
        ("video/iso.segment", "private, max-age=31536000, immutable")
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
        ],
        data,
    )
        .into_response())
}

#[derive(Deserialize)]
pub(super) struct DownloadQuery {
    /// Which part, when the recording changed codec parameters mid-stream (0 = the first).
    part: Option<usize>,
}

/// One MP4 (fragmented: init + segments) with Content-Length and single-range requests.
pub(super) async fn download(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<DownloadQuery>,
) -> Result<Response, ApiError> {
    super::admin::authorize_read(&state, &headers)?;
    let (user, session) = parse_id(&id)?;
    let storage = state.recorder.storage().clone();
    let folder = format!("{user}/{session}/");
    let playlist = storage.get(&format!("{folder}{PLAYLIST_NAME}")).await?;
    let sizes: HashMap<String, u64> = storage
        .list(&folder)
        .await?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let mut parts = vod::download_parts(&folder, &playlist, &sizes).map_err(|e| {
        tracing::warn!(recording = %id, error = %e, "recording cannot be downloaded");
        ApiError(StatusCode::CONFLICT, e.to_string())
    })?;
    let count = parts.len();
    let index = match (query.part, count) {
        (_, 0) => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                "the recording has no segments yet".into(),
            ))
        }
        (Some(p), n) if p < n => p,
        (None, 1) => 0,
        (None, n) => {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "the stream changed codec parameters, so the recording downloads in {n} parts: \
                     add ?part=0 … ?part={}",
                    n - 1
                ),
            ))
        }
        (Some(p), n) => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("part {p} does not exist (the recording has {n})"),
            ))
        }
    };
    let objects = parts.swap_remove(index);
    // Sizes come from the store's listing: a sum past u64 is a broken store, not a file.
    let total = objects
        .iter()
        .try_fold(0u64, |sum, o| sum.checked_add(o.size))
        .ok_or_else(|| {
            ApiError(
                StatusCode::BAD_GATEWAY,
                "the recording store listed impossible object sizes".into(),
            )
        })?;
    let file_name = if count == 1 {
        format!("{id}.mp4")
    } else {
        format!("{id}-part{index}.mp4")
    };
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match vod::parse_range(range_header, total) {
        RangeRequest::Full => (StatusCode::OK, 0, total.saturating_sub(1)),
        RangeRequest::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
        RangeRequest::Unsatisfiable => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{total}"))],
            )
                .into_response());
        }
    };
    let length = if total == 0 { 0 } else { end - start + 1 };
    let body = Body::from_stream(vod::stream_objects(storage, objects, start, end));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{total}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
}
