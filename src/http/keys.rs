//! `/api/v1/keys`: stream keys over the admin API, through the key backend. A new key is shown
//! once; rotating or revoking one also ends the user's live session.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::admin::authorize;
use super::{ApiError, AppState};

#[derive(Serialize)]
pub(super) struct KeyView {
    user: String,
    hint: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

pub(super) async fn list_keys(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<KeyView>>, ApiError> {
    authorize(&state, &headers)?;
    let list = state.keys.list().await?;
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
pub(super) struct AddKey {
    user: String,
}

#[derive(Serialize)]
pub(super) struct NewKey {
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

pub(super) async fn add_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Json(body): Json<AddKey>,
) -> Result<(StatusCode, Json<NewKey>), ApiError> {
    authorize(&state, &headers)?;
    let key = state.keys.add(&body.user).await?;
    tracing::info!(user = %body.user, "stream key created over the admin API");
    Ok((
        StatusCode::CREATED,
        Json(new_key_view(&state, body.user, key)),
    ))
}

pub(super) async fn rotate_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Result<Json<NewKey>, ApiError> {
    authorize(&state, &headers)?;
    let key = state.keys.rotate(&user).await?;
    let stopped = state.hub.stop(&user, crate::stream::StopCause::Revoked);
    tracing::info!(%user, ended_live_session = stopped, "stream key rotated over the admin API");
    Ok(Json(new_key_view(&state, user, key)))
}

pub(super) async fn revoke_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers)?;
    state.keys.revoke(&user).await?;
    let stopped = state.hub.stop(&user, crate::stream::StopCause::Revoked);
    tracing::info!(%user, ended_live_session = stopped, "stream key revoked over the admin API");
    Ok(StatusCode::NO_CONTENT)
}
