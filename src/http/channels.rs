//! Channel settings and playback tokens over the API: `/api/v1/channels` (title, description,
//! access mode; readable by anyone, changed with the admin token), `PUT /api/v1/access/<user>`,
//! and `POST /api/v1/streams/<user>/tokens` (admin), which mints a playback token and the URL
//! that plays with it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::admin::authorize;
use super::{ApiError, AppState};
use crate::access::Claims;
use crate::channel::{AccessMode, ChannelError, ChannelInfo, ChannelUpdate};

/// Default lifetime of an API-minted token.
const DEFAULT_TTL_SECS: u64 = 3600;

impl From<ChannelError> for ApiError {
    fn from(e: ChannelError) -> Self {
        let status = match e {
            ChannelError::InvalidUser(_) | ChannelError::Invalid(_) => StatusCode::BAD_REQUEST,
            ChannelError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ChannelError::Store(_) => {
                tracing::error!(error = %e, "channel store failure");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError(status, e.to_string())
    }
}

pub(super) async fn list(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Vec<ChannelInfo>>, ApiError> {
    Ok(Json(state.channels.list().await?))
}

pub(super) async fn get_one(
    State(state): State<Arc<AppState>>,
    Path(user): Path<String>,
) -> Result<Json<ChannelInfo>, ApiError> {
    crate::channel::check_user(&user)?;
    Ok(Json(state.channels.get(&user).await?))
}

pub(super) async fn update(
    State(state): State<Arc<AppState>>,
    Path(user): Path<String>,
    headers: HeaderMap,
    Json(change): Json<ChannelUpdate>,
) -> Result<Json<ChannelInfo>, ApiError> {
    authorize(&state, &headers)?;
    let info = state.channels.update(&user, &change).await?;
    tracing::info!(%user, access = ?info.access, "channel settings changed");
    Ok(Json(info))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetAccess {
    mode: AccessMode,
}

pub(super) async fn set_access(
    State(state): State<Arc<AppState>>,
    Path(user): Path<String>,
    headers: HeaderMap,
    Json(body): Json<SetAccess>,
) -> Result<Json<ChannelInfo>, ApiError> {
    authorize(&state, &headers)?;
    let change = ChannelUpdate {
        access: Some(body.mode),
        ..Default::default()
    };
    let info = state.channels.update(&user, &change).await?;
    tracing::info!(%user, access = ?info.access, "access mode changed");
    Ok(Json(info))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct MintToken {
    ttl_secs: Option<u64>,
    /// The viewer's id (counted once however many players they open; names them in chat).
    viewer_id: Option<String>,
    /// Display name (chat).
    name: Option<String>,
    /// Binds the token to this client address.
    ip: Option<String>,
}

#[derive(Serialize)]
pub(super) struct Minted {
    token: String,
    expires_at: chrono::DateTime<chrono::Utc>,
    /// The master playlist URL that plays with this token.
    url: String,
}

pub(super) async fn mint(
    State(state): State<Arc<AppState>>,
    Path(user): Path<String>,
    headers: HeaderMap,
    body: Option<Json<MintToken>>,
) -> Result<(StatusCode, Json<Minted>), ApiError> {
    authorize(&state, &headers)?;
    crate::channel::check_user(&user)?;
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let max = state.config.access.max_token_ttl_secs;
    let ttl = body.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    if ttl == 0 || ttl > max {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("ttl_secs must be between 1 and {max} (access.max_token_ttl_secs)"),
        ));
    }
    if body
        .ip
        .as_deref()
        .is_some_and(|ip| ip.parse::<std::net::IpAddr>().is_err())
    {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "ip must be an IP address".into(),
        ));
    }
    let now = chrono::Utc::now();
    let exp = now
        .timestamp()
        .saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
    let claims = Claims {
        sub: user.clone(),
        exp,
        nbf: None,
        iat: Some(now.timestamp()),
        vid: body.viewer_id,
        name: body.name,
        ip: body.ip,
    };
    let token = state
        .token_key
        .mint(&claims)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let url = format!(
        "{}/live/{user}/index.m3u8?token={token}",
        state.config.http_base_url()
    );
    Ok((
        StatusCode::CREATED,
        Json(Minted {
            token,
            expires_at: chrono::DateTime::from_timestamp(exp, 0).unwrap_or(now),
            url,
        }),
    ))
}
