//! The admin guard: the API's write side (and recordings) need the bearer admin token; off
//! without one.

use axum::http::{header, HeaderMap, StatusCode};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

/// Admin API guard: off without a configured token; otherwise a bearer token, compared in
/// constant time.
pub fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
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
