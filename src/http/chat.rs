//! Chat over WebSocket (`/live/<user>/chat`) and its moderation API.
//!
//! A viewer connects with `?name=` (their chosen display name) and, for a `token` stream, must,
//! otherwise may, add `?token=` (a playback token: its `name` claim then wins and its `vid` is the
//! viewer's stable sender id, which bans name). The server sends `welcome` (the viewer's sender id
//! and name, the recent history), then every entry of the room as JSON; the viewer sends
//! `{"type":"message","text":"…"}` and gets `{"type":"error","error":"…"}` for a refusal (too
//! long, too fast, banned). A connection that falls [`crate::chat::ROOM_BUFFER`] entries behind
//! or stops reading is closed; so is one silent for [`IDLE`] (browsers answer the pings).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::admin::authorize;
use super::playback::client_ip;
use super::{ApiError, AppState};
use crate::access::TokenError;
use crate::channel::AccessMode;
use crate::chat::{check_name, Chat, ChatError, Entry, RateLimiter};

/// Pings every so often; a connection that has sent nothing (not even a pong) for [`IDLE`] is
/// closed.
const PING_EVERY: Duration = Duration::from_secs(20);
const IDLE: Duration = Duration::from_secs(60);
/// A send that makes no progress this long means the client stopped reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest message a client may send (a 500-character message in JSON is well under it).
const MAX_CLIENT_MESSAGE: usize = 4096;

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        let status = match e {
            ChatError::NotFound => StatusCode::NOT_FOUND,
            ChatError::Full => StatusCode::SERVICE_UNAVAILABLE,
            ChatError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ChatError::Banned => StatusCode::FORBIDDEN,
            ChatError::Invalid(_) => StatusCode::BAD_REQUEST,
        };
        ApiError(status, e.to_string())
    }
}

#[derive(Deserialize, Default)]
pub(super) struct ChatQuery {
    token: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum FromViewer {
    Message { text: String },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ToViewer<'a> {
    Welcome {
        sender: &'a str,
        name: &'a str,
        history: Vec<&'a Entry>,
    },
    Error {
        error: String,
    },
}

pub(super) async fn connect(
    State(state): State<Arc<AppState>>,
    Path(user): Path<String>,
    Query(query): Query<ChatQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    crate::channel::check_user(&user)?;
    let mode = state
        .channels
        .get(&user)
        .await
        .map_err(|_| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "access settings unavailable".into(),
            )
        })?
        .access;
    let claims = match query.token.as_deref() {
        Some(token) => {
            let client = client_ip(&state.trusted_proxies, peer, &headers);
            let claims = state
                .token_key
                .verify(token, &user, chrono::Utc::now().timestamp())
                .and_then(|c| c.allows(client).map(|()| c))
                .map_err(|e| ApiError(StatusCode::FORBIDDEN, e.to_string()))?;
            Some(claims)
        }
        None if mode == AccessMode::Token => {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                TokenError::Missing.to_string(),
            ))
        }
        None => None,
    };
    let name = match (claims.as_ref().and_then(|c| c.name.clone()), query.name) {
        (Some(name), _) => name,
        (None, Some(chosen)) => check_name(&chosen)?,
        (None, None) => format!("viewer-{}", &hex::encode(rand::random::<[u8; 2]>())),
    };
    let sender = match claims.and_then(|c| c.vid) {
        Some(vid) => format!("v-{vid}"),
        None => format!("c-{}", hex::encode(rand::random::<[u8; 6]>())),
    };
    // Access first: a refused viewer learns why even without a WebSocket handshake.
    let upgrade = upgrade.map_err(|e| ApiError(e.status(), e.body_text()))?;
    let slot = state
        .chat
        .connect(state.config.http.max_connections)
        .ok_or_else(|| ApiError::from(ChatError::Full))?;
    let chat = state.chat.clone();
    let metrics = state.metrics.clone();
    Ok(upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            metrics.chat_connections.inc();
            session(socket, &chat, &user, &sender, &name).await;
            metrics.chat_connections.dec();
        }))
}

async fn send(socket: &mut WebSocket, text: impl Into<Utf8Bytes>) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await,
        Ok(Ok(()))
    )
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

async fn session(mut socket: WebSocket, chat: &Chat, room: &str, sender: &str, name: &str) {
    let Ok(mut membership) = chat.join(room) else {
        close(&mut socket, 1013, "too many chat rooms").await;
        return;
    };
    let welcome = ToViewer::Welcome {
        sender,
        name,
        history: membership.history.iter().map(Arc::as_ref).collect(),
    };
    let Ok(text) = serde_json::to_string(&welcome) else {
        return;
    };
    if !send(&mut socket, text).await {
        return;
    }
    let mut limit = RateLimiter::new(Instant::now());
    let mut heard = Instant::now();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            entry = membership.entries.recv() => match entry {
                Ok(out) => {
                    // serde_json wrote it: valid UTF-8, checked again without a copy.
                    let Ok(text) = Utf8Bytes::try_from(out.json.clone()) else { continue };
                    if !send(&mut socket, text).await {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    close(&mut socket, 1008, "too slow: the chat went on without you").await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => {
                heard = Instant::now();
                let reply = match incoming {
                    Some(Ok(Message::Text(text))) => {
                        match serde_json::from_str::<FromViewer>(&text) {
                            Ok(FromViewer::Message { text }) => limit
                                .take(Instant::now())
                                .and_then(|()| chat.say(room, sender, name, &text))
                                .err(),
                            Err(_) => Some(ChatError::Invalid(
                                "send {\"type\":\"message\",\"text\":\"…\"}".into(),
                            )),
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        Some(ChatError::Invalid("text messages only".into()))
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                };
                if let Some(e) = reply {
                    let error = ToViewer::Error { error: e.to_string() };
                    let Ok(text) = serde_json::to_string(&error) else { continue };
                    if !send(&mut socket, text).await {
                        return;
                    }
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() > IDLE {
                    close(&mut socket, 1001, "idle").await;
                    return;
                }
                let ping = Message::Ping(axum::body::Bytes::from_static(b"lg"));
                if tokio::time::timeout(SEND_TIMEOUT, socket.send(ping)).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PostEvent {
    kind: String,
    #[serde(default)]
    data: serde_json::Value,
}

/// `POST /api/v1/streams/<user>/chat/events` (admin): an event to every viewer of the room.
pub(super) async fn post_event(
    State(state): State<Arc<AppState>>,
    Path(user): Path<String>,
    headers: HeaderMap,
    Json(body): Json<PostEvent>,
) -> Result<(StatusCode, Json<Entry>), ApiError> {
    authorize(&state, &headers)?;
    crate::channel::check_user(&user)?;
    let entry = state.chat.event(&user, &body.kind, body.data)?;
    Ok((StatusCode::CREATED, Json(entry.as_ref().clone())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Ban {
    sender: String,
}

/// `POST /api/v1/streams/<user>/chat/bans` (admin) `{"sender": "…"}`: the sender id from their
/// messages.
pub(super) async fn ban(
    State(state): State<Arc<AppState>>,
    Path(user): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Ban>,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers)?;
    crate::channel::check_user(&user)?;
    state.chat.ban(&user, &body.sender)?;
    tracing::info!(%user, sender = %body.sender, "chat: sender banned");
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/streams/<user>/chat/messages/<id>` (admin).
pub(super) async fn delete_message(
    State(state): State<Arc<AppState>>,
    Path((user, id)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers)?;
    crate::channel::check_user(&user)?;
    state.chat.delete(&user, id)?;
    Ok(StatusCode::NO_CONTENT)
}
