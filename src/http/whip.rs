//! WHIP signalling (RFC 9725) over the HTTP server: `POST /whip/{user}` (or `POST /whip`, the
//! user taken from the key) with `Authorization: Bearer <stream key>` and an SDP offer → 201
//! with the answer, an absolute `Location` and a strong `ETag`; `PATCH` (trickle ICE) and
//! `DELETE` on the session URL; `OPTIONS` for CORS preflights with `Accept-Post`. Every
//! response carries CORS headers so a page on another origin can publish and read `Location`.
//! The media side is [`crate::ingest::whip`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::{AppState, Https};
use crate::config::IceServer;
use crate::ingest::whip::offer::OfferError;
use crate::ingest::whip::{Fragment, Whip, WhipError};

const SDP: &str = "application/sdp";
const TRICKLE: &str = "application/trickle-ice-sdpfrag";

/// The publish page (`/publish`, `/go-live`): camera preview, camera, microphone and codec
/// choice, go live / stop, and the OBS settings for the same key (self-contained, no CDN).
pub async fn publish_page(State(state): State<Arc<AppState>>) -> Response {
    let rtmp = state
        .config
        .rtmp_publish_url()
        .replace('&', "&amp;")
        .replace('<', "&lt;");
    let page = include_str!("publish.html").replace("__RTMP_SERVER__", &rtmp);
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        page,
    )
        .into_response()
}

fn status(e: &WhipError) -> StatusCode {
    match e {
        WhipError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        WhipError::Forbidden | WhipError::Denied => StatusCode::FORBIDDEN,
        WhipError::Offer(OfferError::Malformed(_)) => StatusCode::BAD_REQUEST,
        WhipError::Offer(OfferError::NotAcceptable(_)) => StatusCode::NOT_ACCEPTABLE,
        WhipError::Offer(OfferError::Unprocessable(_)) => StatusCode::UNPROCESSABLE_ENTITY,
        WhipError::Full | WhipError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        WhipError::NotFound => StatusCode::NOT_FOUND,
        WhipError::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
        WhipError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
        WhipError::IceRestart => StatusCode::UNPROCESSABLE_ENTITY,
        WhipError::BadFragment(_) => StatusCode::BAD_REQUEST,
        WhipError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// CORS for every WHIP response: any origin may publish (the key is the credential, sent as
/// a header, never a cookie), and page scripts may read the headers WHIP clients need.
fn cors(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, Accept-Post"),
    );
}

/// A plain-text error with the status RFC 9725 names for it.
fn error(e: WhipError) -> Response {
    let code = status(&e);
    let mut response = (code, format!("{e}\n")).into_response();
    if code == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"livegate\""),
        );
    }
    if code == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    cors(response.headers_mut());
    response
}

fn plain(code: StatusCode, message: &str) -> Response {
    let mut response = (code, format!("{message}\n")).into_response();
    cors(response.headers_mut());
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

fn content_type_is(headers: &HeaderMap, wanted: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(wanted))
}

/// `Link` headers for the configured ICE servers (RFC 9725 §4.6); `with_credentials` is false
/// for unauthenticated requests (preflights), so TURN passwords go only to key holders.
fn ice_server_links(servers: &[IceServer], headers: &mut HeaderMap, with_credentials: bool) {
    for s in servers {
        let has_credentials = !s.username.is_empty() || !s.credential.is_empty();
        if has_credentials && !with_credentials {
            continue;
        }
        let mut link = format!("<{}>; rel=\"ice-server\"", s.url);
        if has_credentials {
            link.push_str(&format!(
                "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                s.username.replace('"', ""),
                s.credential.replace('"', "")
            ));
        }
        if let Ok(v) = HeaderValue::from_str(&link) {
            headers.append(header::LINK, v);
        }
    }
}

fn whip_or_404(state: &AppState) -> Result<Arc<Whip>, WhipOff> {
    state.whip.clone().ok_or(WhipOff)
}

/// `whip.enabled` is off: 404.
struct WhipOff;

impl IntoResponse for WhipOff {
    fn into_response(self) -> Response {
        plain(StatusCode::NOT_FOUND, "WHIP ingest is off (whip.enabled)")
    }
}

/// The WHIP service for a request from `peer`: 404 when WHIP is off, 429 past the address's
/// request rate.
#[allow(clippy::result_large_err)] // the error is the response itself, returned at once
fn open_to(state: &AppState, peer: SocketAddr) -> Result<Arc<Whip>, Response> {
    let whip = whip_or_404(state).map_err(IntoResponse::into_response)?;
    match rate_limited(state, peer) {
        Some(refused) => Err(refused),
        None => Ok(whip),
    }
}

fn missing_key() -> Response {
    error(WhipError::Unauthorized(
        "send the stream key as Authorization: Bearer <key>".into(),
    ))
}

fn rate_limited(state: &AppState, peer: SocketAddr) -> Option<Response> {
    if state.whip_rate.allow(peer.ip(), Instant::now()) {
        return None;
    }
    state.metrics.whip_failed("rate_limited");
    let mut r = plain(
        StatusCode::TOO_MANY_REQUESTS,
        "too many WHIP requests from this address; slow down",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    Some(r)
}

/// The base of absolute URLs: `public_http_url`, else what the client asked for (`Host`, or
/// HTTP/2's `:authority`, over the scheme it came by).
fn base_url(state: &AppState, (headers, uri): (&HeaderMap, &Uri), https: bool) -> String {
    if !state.config.public_http_url.is_empty() {
        return state
            .config
            .public_http_url
            .trim_end_matches('/')
            .to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    match host {
        Some(host) if !host.contains(['/', ' ', '"', '<', '>']) => {
            let scheme = if https { "https" } else { "http" };
            format!("{scheme}://{host}")
        }
        _ => state.config.http_base_url(),
    }
}

pub async fn post_user(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    https: Option<Extension<Https>>,
    Path(user): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let https = https.is_some_and(|Extension(Https(tls))| tls);
    offer(state, peer, Some(user), (headers, uri, https), body).await
}

pub async fn post(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    https: Option<Extension<Https>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let https = https.is_some_and(|Extension(Https(tls))| tls);
    offer(state, peer, None, (headers, uri, https), body).await
}

async fn offer(
    state: Arc<AppState>,
    peer: SocketAddr,
    path_user: Option<String>,
    (headers, uri, https): (HeaderMap, Uri, bool),
    body: Bytes,
) -> Response {
    let whip = match open_to(&state, peer) {
        Ok(w) => w,
        Err(refused) => return refused,
    };
    let span = match &path_user {
        Some(user) => tracing::info_span!("whip_offer", %user, %peer),
        None => tracing::info_span!("whip_offer", %peer),
    };
    let _entered = span.enter();
    if path_user
        .as_deref()
        .is_some_and(|u| !crate::util::valid_user_name(u))
    {
        return plain(StatusCode::NOT_FOUND, "no such user");
    }
    let Some(key) = bearer(&headers).map(str::to_string) else {
        tracing::warn!("WHIP publish refused: no Bearer stream key");
        state.metrics.whip_failed("bad_key");
        return missing_key();
    };
    if !content_type_is(&headers, SDP) {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be Content-Type: application/sdp",
        );
    }
    let Ok(sdp) = std::str::from_utf8(&body) else {
        return error(WhipError::Offer(OfferError::Malformed("not UTF-8".into())));
    };
    drop(_entered);
    let answered =
        tracing::Instrument::instrument(whip.offer(path_user.as_deref(), &key, sdp), span.clone())
            .await;
    let answer = match answered {
        Ok(a) => a,
        Err(e) => return error(e),
    };
    let location = format!(
        "{}/whip/{}/{}",
        base_url(&state, (&headers, &uri), https),
        answer.user,
        answer.id
    );
    let mut response = (StatusCode::CREATED, answer.sdp).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&answer.etag) {
        h.insert(header::ETAG, v);
    }
    ice_server_links(whip.ice_servers(), h, true);
    cors(h);
    response
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((user, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let whip = match open_to(&state, peer) {
        Ok(w) => w,
        Err(refused) => return refused,
    };
    let Some(key) = bearer(&headers) else {
        return missing_key();
    };
    match whip.delete(&user, &id, key).await {
        Ok(()) => plain(StatusCode::OK, "session ended"),
        Err(e) => error(e),
    }
}

pub async fn patch(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((user, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let whip = match open_to(&state, peer) {
        Ok(w) => w,
        Err(refused) => return refused,
    };
    let Some(key) = bearer(&headers).map(str::to_string) else {
        return missing_key();
    };
    if !content_type_is(&headers, TRICKLE) {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "PATCH takes Content-Type: application/trickle-ice-sdpfrag",
        );
    }
    let fragment = match std::str::from_utf8(&body)
        .map_err(|_| WhipError::BadFragment("not UTF-8".into()))
        .and_then(Fragment::parse)
    {
        Ok(f) => f,
        Err(e) => return error(e),
    };
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match whip.patch(&user, &id, &key, if_match, fragment).await {
        Ok(etag) => {
            let mut r = StatusCode::NO_CONTENT.into_response();
            if let Ok(v) = HeaderValue::from_str(&etag) {
                r.headers_mut().insert(header::ETAG, v);
            }
            cors(r.headers_mut());
            r
        }
        Err(e) => error(e),
    }
}

/// CORS preflight and WHIP discovery: the methods and headers a publishing page needs, and
/// `Accept-Post` on the endpoint.
pub async fn options(State(state): State<Arc<AppState>>, method: Method) -> Response {
    debug_assert_eq!(method, Method::OPTIONS);
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    cors(h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, PATCH, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    h.insert("accept-post", HeaderValue::from_static(SDP));
    if let Some(whip) = &state.whip {
        ice_server_links(whip.ice_servers(), h, false);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_servers_become_link_headers_and_turn_credentials_need_the_key() {
        let servers = [
            IceServer {
                url: "stun:stun.example.net:3478".into(),
                username: String::new(),
                credential: String::new(),
            },
            IceServer {
                url: "turn:turn.example.net:3478?transport=udp".into(),
                username: "u".into(),
                credential: "p\"w".into(),
            },
        ];
        let links = |with_credentials| {
            let mut h = HeaderMap::new();
            ice_server_links(&servers, &mut h, with_credentials);
            h.get_all(header::LINK)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            links(true),
            [
                "<stun:stun.example.net:3478>; rel=\"ice-server\"",
                "<turn:turn.example.net:3478?transport=udp>; rel=\"ice-server\"; username=\"u\"; \
                 credential=\"pw\"; credential-type=\"password\"",
            ]
        );
        assert_eq!(
            links(false),
            ["<stun:stun.example.net:3478>; rel=\"ice-server\""]
        );
    }

    #[test]
    fn statuses_follow_rfc_9725() {
        let cases = [
            (WhipError::Unauthorized("x".into()), 401),
            (WhipError::Forbidden, 403),
            (WhipError::Offer(OfferError::Malformed("x".into())), 400),
            (WhipError::Offer(OfferError::NotAcceptable("x".into())), 406),
            (WhipError::Offer(OfferError::Unprocessable("x".into())), 422),
            (WhipError::Full, 503),
            (WhipError::NotFound, 404),
            (WhipError::PreconditionRequired, 428),
            (WhipError::PreconditionFailed, 412),
            (WhipError::IceRestart, 422),
            (WhipError::BadFragment("x".into()), 400),
        ];
        for (e, code) in cases {
            let r = error(e);
            assert_eq!(r.status().as_u16(), code);
            assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
            if code == 401 {
                assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
            }
        }
    }
}
