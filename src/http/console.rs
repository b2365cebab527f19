//! The operator console's session: `POST /admin/login {"token"}` (the admin token, once) sets
//! the HttpOnly session cookie and returns the CSRF token the console sends on every API call;
//! `GET /admin/session` returns it again for a reloaded page (null when logged out); `POST /admin/logout` ends it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::admin::{authorize, is_admin_token, session_cookie, SESSION_COOKIE, SESSION_TTL};
use super::{ApiError, AppState};

/// A wrong token waits this long (a brute force gets nowhere fast; the token is long anyway).
const REFUSAL_DELAY: Duration = Duration::from_millis(500);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Login {
    token: String,
}

fn cookie(value: &str, max_age: u64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}"
    ))
    .ok()
}

pub(super) async fn login(
    State(state): State<Arc<AppState>>,
    Json(body): Json<Login>,
) -> Result<Response, ApiError> {
    if state.config.http.admin_token.is_empty() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "the console is off: set http.admin_token".into(),
        ));
    }
    if !is_admin_token(&state, &body.token) {
        tokio::time::sleep(REFUSAL_DELAY).await;
        tracing::warn!("console login refused: wrong admin token");
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "wrong admin token".into(),
        ));
    }
    let (id, csrf) = state.admin_sessions.create();
    tracing::info!("console login");
    let mut response = Json(serde_json::json!({ "csrf": csrf })).into_response();
    if let Some(c) = cookie(&id, SESSION_TTL.as_secs()) {
        response.headers_mut().insert(header::SET_COOKIE, c);
    }
    Ok(response)
}

/// `{"csrf": "…"}` while logged in, `{"csrf": null}` otherwise (not an error: the console asks
/// on every load).
pub(super) async fn session(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let csrf = session_cookie(&headers).and_then(|id| state.admin_sessions.csrf(id));
    Json(serde_json::json!({ "csrf": csrf })).into_response()
}

pub(super) async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    if let Some(id) = session_cookie(&headers) {
        state.admin_sessions.remove(id);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(c) = cookie("", 0) {
        response.headers_mut().insert(header::SET_COOKIE, c);
    }
    Ok(response)
}
