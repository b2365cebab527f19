//! The API's error type: a status code and a JSON body `{"error": "..."}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::auth::AuthError;

/// A JSON error body with a status code.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

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
            AuthError::Unavailable(_) => {
                tracing::warn!(error = %e, "key store unavailable");
                StatusCode::SERVICE_UNAVAILABLE
            }
            AuthError::Io { .. } | AuthError::Corrupt { .. } => {
                tracing::error!(error = %e, "key store failure");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError(status, e.to_string())
    }
}

pub fn not_found(what: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("{what} not found"))
}
