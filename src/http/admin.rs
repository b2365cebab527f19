//! The admin guard: the API's write side (and recordings) need the admin token, as a bearer
//! token or through a console session; off without a configured token.
//!
//! The console (`/admin`) logs in with the token once (`POST /admin/login`) and gets a session
//! cookie: HttpOnly, SameSite=Strict, 12 h. A request authenticated by the cookie must also carry
//! `X-Livegate-CSRF` with the session's CSRF token, which another site's page can neither read
//! nor send (a custom header needs a CORS preflight livegate never grants); only downloads and
//! VOD files (read-only GETs a link or a player fetches) go by the cookie alone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, StatusCode};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

pub const SESSION_COOKIE: &str = "lg_admin";
pub const CSRF_HEADER: &str = "x-livegate-csrf";
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Console sessions at most; the oldest goes first.
const MAX_SESSIONS: usize = 1000;

struct Session {
    csrf: String,
    expires: Instant,
}

/// Console sessions of this node (a restart logs everyone out).
#[derive(Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// A new session: (cookie value, CSRF token).
    pub fn create(&self) -> (String, String) {
        let id = hex::encode(rand::random::<[u8; 32]>());
        let csrf = hex::encode(rand::random::<[u8; 16]>());
        let mut all = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        all.retain(|_, s| s.expires > now);
        if all.len() >= MAX_SESSIONS {
            if let Some(oldest) = all
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                all.remove(&oldest);
            }
        }
        all.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                expires: now + SESSION_TTL,
            },
        );
        (id, csrf)
    }

    /// The CSRF token of a live session.
    pub fn csrf(&self, id: &str) -> Option<String> {
        let all = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        all.get(id)
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.csrf.clone())
    }

    pub fn remove(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// The console session id in the request's cookies.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

fn off() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "admin API is off: set http.admin_token (or LIVEGATE_HTTP_ADMIN_TOKEN)".into(),
    )
}

fn refused() -> ApiError {
    ApiError(
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token".into(),
    )
}

/// Whether `presented` is the admin token (constant time).
pub fn is_admin_token(state: &AppState, presented: &str) -> bool {
    let expected = state.config.http.admin_token.as_bytes();
    !expected.is_empty() && bool::from(presented.as_bytes().ct_eq(expected))
}

fn check(state: &AppState, headers: &HeaderMap, need_csrf: bool) -> Result<(), ApiError> {
    if state.config.http.admin_token.is_empty() {
        return Err(off());
    }
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return if is_admin_token(state, bearer) {
            Ok(())
        } else {
            Err(refused())
        };
    }
    let csrf = session_cookie(headers)
        .and_then(|id| state.admin_sessions.csrf(id))
        .ok_or_else(refused)?;
    if !need_csrf {
        return Ok(());
    }
    let presented = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if bool::from(presented.as_bytes().ct_eq(csrf.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("a console session needs its {CSRF_HEADER} header"),
        ))
    }
}

/// Admin API guard: the bearer token, or a console session with its CSRF header.
pub fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    check(state, headers, true)
}

/// For read-only downloads and VOD files: the bearer token, or a console session's cookie.
pub fn authorize_read(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    check(state, headers, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_are_bounded_and_cookies_parse() {
        let sessions = Sessions::default();
        let (id, csrf) = sessions.create();
        assert_eq!(sessions.csrf(&id), Some(csrf));
        sessions.remove(&id);
        assert_eq!(sessions.csrf(&id), None);
        for _ in 0..MAX_SESSIONS + 5 {
            sessions.create();
        }
        assert!(sessions.sessions.lock().unwrap().len() <= MAX_SESSIONS);
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "a=1; lg_admin=abc; b=2".parse().unwrap());
        assert_eq!(session_cookie(&headers), Some("abc"));
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }
}
