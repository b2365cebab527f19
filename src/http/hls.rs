//! Live HLS routes: master and media playlists (never cached; LL-HLS blocking reloads held
//! until the part they ask for exists) and init/media segments and parts (immutable: their names
//! are unique per stream instance; a preload-hinted part is held until it exists).

use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, OriginalUri, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use axum::http::StatusCode;
use tokio::sync::watch;

use super::error::{not_found, ApiError};
use super::playback::{self, Credential};
use super::AppState;
use crate::hls::{Decision, Directives, HlsFile, Published, PLAYLIST_CONTENT_TYPE};
use crate::metrics::{Metrics, ReasonLabel};

pub(super) fn playlist_response(body: String) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(PLAYLIST_CONTENT_TYPE),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// Another node's answer when the cluster says it holds the stream.
async fn remote(
    state: &AppState,
    user: &str,
    uri: &OriginalUri,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Option<Response> {
    let path = uri.0.path_and_query().map_or("/", |p| p.as_str());
    super::owner::proxy_if_remote(state, user, path, headers, peer).await
}

/// What every live HLS request carries besides its path: the client and its credential.
pub(super) struct Request<'a> {
    pub uri: OriginalUri,
    pub headers: HeaderMap,
    pub peer: SocketAddr,
    pub credential: Credential<'a>,
}

impl Request<'_> {
    /// The stream's window after the access check (`count`: the request counts its viewer).
    async fn admit(
        &self,
        state: &AppState,
        user: &str,
        count: bool,
    ) -> Result<Arc<std::sync::RwLock<crate::hls::LiveHls>>, ApiError> {
        let hls = state.hls.get(user).ok_or_else(|| not_found("stream"))?;
        let instance = hls
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .instance
            .clone();
        let counted = count.then_some(instance.as_str());
        playback::admit(
            state,
            user,
            counted,
            self.credential,
            self.peer,
            &self.headers,
        )
        .await?;
        Ok(hls)
    }
}

#[derive(serde::Deserialize, Default)]
pub(super) struct TokenQuery {
    token: Option<String>,
}

/// `/live/<user>/index.m3u8[?token=T]`: the master, its variant URIs prefixed with the token or
/// a new session id so the player's later requests carry it.
pub(super) async fn master_playlist(
    State(state): State<Arc<AppState>>,
    Path(user): Path<String>,
    Query(query): Query<TokenQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (credential, prefix) = match query.token.as_deref() {
        Some(token) => (Credential::Token(token), format!("t/{token}/")),
        None => (Credential::None, format!("s/{}/", playback::new_session())),
    };
    let request = Request {
        uri,
        headers,
        peer,
        credential,
    };
    master(&state, &user, &request, &prefix).await
}

/// `/live/<user>/{t,s}/<credential>/index.m3u8`: the master as is (its relative URIs keep the
/// credential).
pub(super) async fn master(
    state: &AppState,
    user: &str,
    request: &Request<'_>,
    prefix: &str,
) -> Result<Response, ApiError> {
    if let Some(r) = remote(state, user, &request.uri, &request.headers, request.peer).await {
        return Ok(r);
    }
    let hls = request.admit(state, user, false).await?;
    let text = hls
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .master_playlist()
        .ok_or_else(|| not_found("playlist (stream starting)"))?;
    let text = if prefix.is_empty() {
        text
    } else {
        playback::prefix_uris(&text, prefix)
    };
    Ok(playlist_response(text))
}

/// `/live/<user>[/{t,s}/<credential>]/access`: 204 when the request may play (and its viewer is
/// counted), else 403. The nginx edge asks this (`auth_request`, cached briefly) before serving
/// a cached playlist or segment.
pub(super) async fn access(
    state: &AppState,
    user: &str,
    request: &Request<'_>,
) -> Result<Response, ApiError> {
    if let Some(r) = remote(state, user, &request.uri, &request.headers, request.peer).await {
        return Ok(r);
    }
    request.admit(state, user, true).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Holds a request until `decide` says it can be answered, counting it in the metrics.
/// Returns the publication that satisfied it.
async fn wait_until(
    metrics: &Metrics,
    published: &mut watch::Receiver<Arc<Published>>,
    timeout: std::time::Duration,
    decide: impl Fn(&Published) -> Decision,
) -> Result<Arc<Published>, Decision> {
    struct Waiting<'a>(&'a Metrics);
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.0.hls_blocked.dec();
        }
    }
    let count = |outcome: &str| {
        metrics
            .hls_blocking
            .get_or_create(&ReasonLabel {
                reason: outcome.into(),
            })
            .inc();
    };
    metrics.hls_blocked.inc();
    let _waiting = Waiting(metrics);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let now = published.borrow_and_update().clone();
        match decide(&now) {
            Decision::Ready => {
                count("ready");
                return Ok(now);
            }
            Decision::Refuse(why) => {
                count("refused");
                return Err(Decision::Refuse(why));
            }
            Decision::Wait => {}
        }
        match tokio::time::timeout_at(deadline, published.changed()).await {
            Ok(Ok(())) => {}
            // The stream's window was dropped: answer with what was last published.
            Ok(Err(_)) => return Ok(now),
            Err(_) => {
                count("timeout");
                return Err(Decision::Wait);
            }
        }
    }
}

pub(super) async fn media_playlist(
    state: &AppState,
    user: &str,
    rendition: &str,
    request: &Request<'_>,
) -> Result<Response, ApiError> {
    if let Some(r) = remote(state, user, &request.uri, &request.headers, request.peer).await {
        return Ok(r);
    }
    let hls = request.admit(state, user, true).await?;
    let directives = Directives::parse(request.uri.0.query().unwrap_or(""))
        .map_err(|why| ApiError(StatusCode::BAD_REQUEST, why.into()))?;
    let (mut published, timeout, low_latency) = {
        let hls = hls.read().unwrap_or_else(|e| e.into_inner());
        let published = hls.watch(rendition).ok_or_else(|| not_found("playlist"))?;
        (published, hls.blocking_timeout(), hls.low_latency())
    };
    drop(hls);
    let now = if low_latency && directives.blocks() {
        wait_until(&state.metrics, &mut published, timeout, |p| {
            p.decide(directives)
        })
        .await
        .map_err(|outcome| match outcome {
            Decision::Refuse(why) => ApiError(StatusCode::BAD_REQUEST, why.into()),
            _ => ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the requested part did not come in time".into(),
            ),
        })?
    } else {
        published.borrow().clone()
    };
    let text = now.playlist.clone().ok_or_else(|| not_found("playlist"))?;
    Ok(playlist_response(text.to_string()))
}

pub(super) async fn hls_file(
    state: &AppState,
    user: &str,
    rendition: &str,
    file: &str,
    request: &Request<'_>,
) -> Result<Response, ApiError> {
    if let Some(r) = remote(state, user, &request.uri, &request.headers, request.peer).await {
        return Ok(r);
    }
    let hls = request.admit(state, user, true).await?;
    let found = hls
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .file(rendition, file);
    let found = match found {
        Some(found) => found,
        None => {
            // A preload-hinted part (`<instance>-<msn>.<part>.m4s`) is held until it exists.
            let (msn, part) =
                crate::hls::live::parse_part_name(file).ok_or_else(|| not_found("segment"))?;
            let (mut published, timeout) = {
                let hls = hls.read().unwrap_or_else(|e| e.into_inner());
                if !hls.low_latency() || !file.starts_with(hls.instance.as_str()) {
                    return Err(not_found("segment"));
                }
                let published = hls.watch(rendition).ok_or_else(|| not_found("segment"))?;
                (published, hls.blocking_timeout())
            };
            wait_until(&state.metrics, &mut published, timeout, |p| {
                p.part(msn, part)
            })
            .await
            .map_err(|_| not_found("part"))?;
            hls.read()
                .unwrap_or_else(|e| e.into_inner())
                .file(rendition, file)
                .ok_or_else(|| not_found("part"))?
        }
    };
    let (content_type, body) = match found {
        HlsFile::Init(b) => ("video/mp4", b),
        HlsFile::Segment(b) | HlsFile::Part(b) => ("video/iso.segment", b),
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

type Peer = ConnectInfo<SocketAddr>;

/// The live HLS routes: bare (public streams), and under `t/<token>` and `s/<session>`.
pub(super) fn routes() -> axum::Router<Arc<AppState>> {
    use axum::routing::get;
    let mut router = axum::Router::new()
        .route("/live/{user}/index.m3u8", get(master_playlist))
        .route("/live/{user}/thumb.jpg", get(thumbnail))
        .route(
            "/live/{user}/access",
            get(
                |State(state): State<Arc<AppState>>,
                 Path(user): Path<String>,
                 ConnectInfo(peer): Peer,
                 uri: OriginalUri,
                 headers: HeaderMap| async move {
                    let request = Request {
                        uri,
                        headers,
                        peer,
                        credential: Credential::None,
                    };
                    access(&state, &user, &request).await
                },
            ),
        )
        .route(
            "/live/{user}/{rendition}/index.m3u8",
            get(
                |State(state): State<Arc<AppState>>,
                 Path((user, rendition)): Path<(String, String)>,
                 ConnectInfo(peer): Peer,
                 uri: OriginalUri,
                 headers: HeaderMap| async move {
                    let request = Request {
                        uri,
                        headers,
                        peer,
                        credential: Credential::None,
                    };
                    media_playlist(&state, &user, &rendition, &request).await
                },
            ),
        )
        .route(
            "/live/{user}/{rendition}/{file}",
            get(
                |State(state): State<Arc<AppState>>,
                 Path((user, rendition, file)): Path<(String, String, String)>,
                 ConnectInfo(peer): Peer,
                 uri: OriginalUri,
                 headers: HeaderMap| async move {
                    let request = Request {
                        uri,
                        headers,
                        peer,
                        credential: Credential::None,
                    };
                    hls_file(&state, &user, &rendition, &file, &request).await
                },
            ),
        );
    for kind in ["t", "s"] {
        router = router.merge(credential_routes(kind));
    }
    router
}

/// `/live/<user>/<kind>/<credential>/…` for `kind` `t` (token) or `s` (session).
fn credential_routes(kind: &'static str) -> axum::Router<Arc<AppState>> {
    use axum::routing::get;
    let base = format!("/live/{{user}}/{kind}/{{credential}}");
    axum::Router::new()
        .route(
            &format!("{base}/index.m3u8"),
            get(
                move |State(state): State<Arc<AppState>>,
                      Path((user, value)): Path<(String, String)>,
                      ConnectInfo(peer): Peer,
                      uri: OriginalUri,
                      headers: HeaderMap| async move {
                    let request = Request {
                        uri,
                        headers,
                        peer,
                        credential: Credential::from_path(kind, &value)?,
                    };
                    master(&state, &user, &request, "").await
                },
            ),
        )
        .route(
            &format!("{base}/access"),
            get(
                move |State(state): State<Arc<AppState>>,
                      Path((user, value)): Path<(String, String)>,
                      ConnectInfo(peer): Peer,
                      uri: OriginalUri,
                      headers: HeaderMap| async move {
                    let request = Request {
                        uri,
                        headers,
                        peer,
                        credential: Credential::from_path(kind, &value)?,
                    };
                    access(&state, &user, &request).await
                },
            ),
        )
        .route(
            &format!("{base}/{{rendition}}/index.m3u8"),
            get(
                move |State(state): State<Arc<AppState>>,
                      Path((user, value, rendition)): Path<(String, String, String)>,
                      ConnectInfo(peer): Peer,
                      uri: OriginalUri,
                      headers: HeaderMap| async move {
                    let request = Request {
                        uri,
                        headers,
                        peer,
                        credential: Credential::from_path(kind, &value)?,
                    };
                    media_playlist(&state, &user, &rendition, &request).await
                },
            ),
        )
        .route(
            &format!("{base}/{{rendition}}/{{file}}"),
            get(
                move |State(state): State<Arc<AppState>>,
                      Path((user, value, rendition, file)): Path<(
                    String,
                    String,
                    String,
                    String,
                )>,
                      ConnectInfo(peer): Peer,
                      uri: OriginalUri,
                      headers: HeaderMap| async move {
                    let request = Request {
                        uri,
                        headers,
                        peer,
                        credential: Credential::from_path(kind, &value)?,
                    };
                    hls_file(&state, &user, &rendition, &file, &request).await
                },
            ),
        )
}

/// `/live/<user>/thumb.jpg[?token=T]`: the latest thumbnail, under the stream's access mode,
/// cacheable for one thumbnail interval.
pub(super) async fn thumbnail(
    State(state): State<Arc<AppState>>,
    Path(user): Path<String>,
    Query(query): Query<TokenQuery>,
    ConnectInfo(peer): Peer,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let credential = match query.token.as_deref() {
        Some(token) => Credential::Token(token),
        None => Credential::None,
    };
    let request = Request {
        uri,
        headers,
        peer,
        credential,
    };
    if let Some(r) = remote(&state, &user, &request.uri, &request.headers, peer).await {
        return Ok(r);
    }
    request.admit(&state, &user, false).await?;
    let thumb = state
        .hub
        .get(&user)
        .and_then(|s| s.thumbnail())
        .ok_or_else(|| not_found("thumbnail (none yet)"))?;
    let max_age = state.config.transcode.thumbnail_interval_secs.max(1);
    let public = matches!(state.channels.get(&user).await,
        Ok(c) if c.access == crate::channel::AccessMode::Public);
    let cache = if public {
        format!("public, max-age={max_age}")
    } else {
        format!("private, max-age={max_age}")
    };
    let modified = thumb
        .taken_at
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let mut response = (
        [(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"))],
        thumb.jpeg.clone(),
    )
        .into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&cache) {
        h.insert(header::CACHE_CONTROL, v);
    }
    if let Ok(v) = HeaderValue::from_str(&modified) {
        h.insert(header::LAST_MODIFIED, v);
    }
    Ok(response)
}
