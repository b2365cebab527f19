//! The admin API for relay targets. Target URLs hold the platforms' stream keys: responses show
//! them redacted, and nothing here logs them. Targets live in the relay store; whether their user
//! has a stream key is checked here, against the key store.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::admin::authorize;
use super::{ApiError, AppState};
use crate::auth::AuthError;
use crate::relay::{Platform, RelayStoreError, RelayTarget, TargetError};

impl From<TargetError> for ApiError {
    fn from(e: TargetError) -> Self {
        ApiError(StatusCode::BAD_REQUEST, e.to_string())
    }
}

impl From<RelayStoreError> for ApiError {
    fn from(e: RelayStoreError) -> Self {
        let status = match e {
            RelayStoreError::InvalidUser(_) => StatusCode::BAD_REQUEST,
            RelayStoreError::RelayNotFound { .. } => StatusCode::NOT_FOUND,
            RelayStoreError::TooManyRelays(_) | RelayStoreError::DuplicateRelay(_) => {
                StatusCode::CONFLICT
            }
            RelayStoreError::Io { .. }
            | RelayStoreError::Corrupt { .. }
            | RelayStoreError::Import { .. } => {
                tracing::error!(error = %e, "relay store failure");
                StatusCode::INTERNAL_SERVER_ERROR
            }
            RelayStoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

#[derive(Serialize)]
struct RelayView {
    id: String,
    user: String,
    platform: &'static str,
    /// The URL with its stream key redacted.
    target: String,
    rung: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

impl From<RelayTarget> for RelayView {
    fn from(t: RelayTarget) -> Self {
        RelayView {
            target: t.redacted_url(),
            platform: t.platform.as_str(),
            rung: t.rung.unwrap_or_else(|| "source".into()),
            id: t.id,
            user: t.user,
            created_at: t.created_at,
        }
    }
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    user: Option<String>,
}

pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let relays = state.relays.targets().list(query.user.as_deref()).await?;
    let views: Vec<RelayView> = relays.into_iter().map(RelayView::from).collect();
    Ok(Json(serde_json::json!({ "relays": views })).into_response())
}

#[derive(Deserialize)]
pub(super) struct AddRelay {
    user: String,
    /// youtube, twitch, facebook or custom.
    platform: String,
    /// The platform's stream key (presets).
    key: Option<String>,
    /// The full rtmp:// or rtmps:// URL (custom).
    url: Option<String>,
    #[serde(default)]
    rtmps: bool,
    rung: Option<String>,
}

pub(super) async fn add(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Json(body): Json<AddRelay>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let platform = Platform::parse(&body.platform)?;
    crate::relay::target::check_rung(body.rung.as_deref(), &state.config.transcode.rungs)?;
    let key_or_url = match (platform, &body.key, &body.url) {
        (Platform::Custom, _, Some(url)) => url.clone(),
        (Platform::Custom, _, None) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "custom targets need \"url\"".into(),
            ))
        }
        (_, Some(key), _) => key.clone(),
        (_, None, _) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "preset targets need \"key\" (the platform's stream key)".into(),
            ))
        }
    };
    let target = RelayTarget::new(
        &body.user,
        platform,
        &key_or_url,
        body.rtmps,
        body.rung.as_deref(),
        &state.config.relay.presets,
    )?;
    // Relay targets are for users who can publish.
    if !state.keys.has_key(&target.user).await? {
        return Err(AuthError::NotFound(target.user).into());
    }
    let target = state.relays.targets().add(target).await?;
    tracing::info!(user = %target.user, relay = %target.id, platform = target.platform.as_str(),
        "relay target added over the admin API");
    Ok((StatusCode::CREATED, Json(RelayView::from(target))).into_response())
}

pub(super) async fn remove(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((user, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let removed = state.relays.targets().remove(&user, &id).await?;
    let stopped = state.relays.stop(&user, &id);
    tracing::info!(%user, relay = %id, stopped_live = stopped, "relay target removed over the admin API");
    Ok(Json(serde_json::json!({
        "removed": RelayView::from(removed),
        "stopped_live_relay": stopped,
    }))
    .into_response())
}
