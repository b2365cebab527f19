//! HTTP: live HLS, the JSON API, recordings (VOD), health and metrics (axum on hyper).

mod recordings;
mod relays;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tower_http::cors::{Any, CorsLayer};

use crate::auth::{AuthError, KeyStore};
use crate::config::Config;
use crate::hls::{HlsFile, HlsRegistry};
use crate::metrics::Metrics;
use crate::record::Recorder;
use crate::relay::RelayManager;
use crate::stream::{Hub, StreamSummary};

pub const PLAYLIST_TYPE: &str = crate::hls::PLAYLIST_CONTENT_TYPE;

pub struct AppState {
    pub config: Arc<Config>,
    pub hub: Arc<Hub>,
    pub hls: Arc<HlsRegistry>,
    pub keys: KeyStore,
    pub metrics: Arc<Metrics>,
    pub recorder: Arc<Recorder>,
    pub relays: Arc<RelayManager>,
}

pub fn router(state: Arc<AppState>) -> Router {
    // Players load HLS from pages on other origins; every HLS response carries CORS headers.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::HEAD, Method::OPTIONS])
        .allow_headers(Any)
        .expose_headers(Any);
    let hls = Router::new()
        .route("/live/{user}/index.m3u8", get(master_playlist))
        .route("/live/{user}/{rung}/index.m3u8", get(media_playlist))
        .route("/live/{user}/{rung}/{file}", get(hls_file))
        .layer(cors);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/v1/streams", get(list_streams))
        .route("/api/v1/keys", get(list_keys).post(add_key))
        .route("/api/v1/keys/{user}", axum::routing::delete(revoke_key))
        .route("/api/v1/keys/{user}/rotate", post(rotate_key))
        .route("/api/v1/recordings", get(recordings::list))
        .route(
            "/api/v1/recordings/{id}",
            get(recordings::get_one).delete(recordings::delete),
        )
        .route(
            "/api/v1/recordings/{id}/download.mp4",
            get(recordings::download),
        )
        .route("/vod/{id}/{file}", get(recordings::vod_file))
        .route("/api/v1/relays", get(relays::list).post(relays::add))
        .route(
            "/api/v1/relays/{user}/{id}",
            axum::routing::delete(relays::remove),
        )
        .merge(hls)
        .with_state(state)
}

/// A JSON error body with a status code.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = match e {
            AuthError::InvalidUser(_) => StatusCode::BAD_REQUEST,
            AuthError::Exists(_) => StatusCode::CONFLICT,
            AuthError::NotFound(_) => StatusCode::NOT_FOUND,
            AuthError::Io { .. } | AuthError::Corrupt { .. } => {
                tracing::error!(error = %e, "key store failure");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError(status, e.to_string())
    }
}

fn not_found(what: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("{what} not found"))
}

fn playlist_response(body: String) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(PLAYLIST_TYPE),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn master_playlist(
    State(state): State<Arc<AppState>>,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    let hls = state.hls.get(&user).ok_or_else(|| not_found("stream"))?;
    let text = hls
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .master_playlist()
        .ok_or_else(|| not_found("playlist (stream starting)"))?;
    Ok(playlist_response(text))
}

async fn media_playlist(
    State(state): State<Arc<AppState>>,
    Path((user, rung)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let hls = state.hls.get(&user).ok_or_else(|| not_found("stream"))?;
    let text = hls
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .media_playlist(&rung)
        .ok_or_else(|| not_found("playlist"))?;
    Ok(playlist_response(text))
}

async fn hls_file(
    State(state): State<Arc<AppState>>,
    Path((user, rung, file)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let hls = state.hls.get(&user).ok_or_else(|| not_found("stream"))?;
    let found = hls
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .file(&rung, &file)
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

#[derive(Serialize)]
struct StreamView {
    #[serde(flatten)]
    summary: StreamSummary,
    hls_url: String,
}

async fn list_streams(State(state): State<Arc<AppState>>) -> Json<Vec<StreamView>> {
    let base = state.config.http_base_url();
    Json(
        state
            .hub
            .list()
            .into_iter()
            .map(|s| {
                let summary = s.summary();
                StreamView {
                    hls_url: format!("{base}/live/{}/index.m3u8", summary.name),
                    summary,
                }
            })
            .collect(),
    )
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
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

/// Admin API guard: off without a configured token; otherwise a bearer token, compared in
/// constant time.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let expected = state.config.http.admin_token.as_bytes();
    if expected.is_empty() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "admin API is off: set http.admin_token (or LIVEGATE_HTTP_ADMIN_TOKEN)".into(),
        ));
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(presented.as_bytes().ct_eq(expected)) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token".into(),
        ))
    }
}

/// Runs a store operation (file IO under a lock) off the async workers.
async fn blocking<T: Send + 'static, E: Into<ApiError> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(Into::into)
}

#[derive(Serialize)]
struct KeyView {
    user: String,
    hint: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

async fn list_keys(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<KeyView>>, ApiError> {
    authorize(&state, &headers)?;
    let keys = state.keys.clone();
    let list = blocking(move || keys.list()).await?;
    Ok(Json(
        list.into_iter()
            .map(|k| KeyView {
                user: k.user,
                hint: k.hint,
                created_at: k.created_at,
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
struct AddKey {
    user: String,
}

#[derive(Serialize)]
struct NewKey {
    user: String,
    /// Shown once; only its hash is stored.
    key: String,
    publish_url: String,
    watch_url: String,
}

fn new_key_view(state: &AppState, user: String, key: String) -> NewKey {
    NewKey {
        publish_url: state.config.rtmp_publish_url(),
        watch_url: format!("{}/live/{user}/index.m3u8", state.config.http_base_url()),
        user,
        key,
    }
}

async fn add_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Json(body): Json<AddKey>,
) -> Result<(StatusCode, Json<NewKey>), ApiError> {
    authorize(&state, &headers)?;
    let keys = state.keys.clone();
    let user = body.user.clone();
    let key = blocking(move || keys.add(&user)).await?;
    tracing::info!(user = %body.user, "stream key created over the admin API");
    Ok((
        StatusCode::CREATED,
        Json(new_key_view(&state, body.user, key)),
    ))
}

async fn rotate_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Result<Json<NewKey>, ApiError> {
    authorize(&state, &headers)?;
    let keys = state.keys.clone();
    let u = user.clone();
    let key = blocking(move || keys.rotate(&u)).await?;
    let stopped = state.hub.stop(&user);
    tracing::info!(%user, ended_live_session = stopped, "stream key rotated over the admin API");
    Ok(Json(new_key_view(&state, user, key)))
}

async fn revoke_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers)?;
    let keys = state.keys.clone();
    let u = user.clone();
    blocking(move || keys.revoke(&u)).await?;
    let stopped = state.hub.stop(&user);
    tracing::info!(%user, ended_live_session = stopped, "stream key revoked over the admin API");
    Ok(StatusCode::NO_CONTENT)
}
