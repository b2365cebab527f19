//! HTTP: live HLS, the JSON API (one file per resource), recordings (VOD), health and metrics
//! (axum on hyper). Only the admin guard stands between the API's write side and the world.

pub mod admin;
mod channels;
mod chat;
mod conn;
mod console;
mod error;
mod hls;
mod keys;
mod node;
mod owner;
mod pages;
mod playback;
mod recordings;
mod relays;
mod serve;
mod streams;
mod whip;

use std::sync::Arc;

use axum::http::Method;
use axum::routing::{get, post};
use axum::Router;
use tower_http::cors::{Any, CorsLayer};

use crate::auth::Keys;
use crate::config::Config;
use crate::hls::HlsRegistry;
use crate::metrics::Metrics;
use crate::record::Recorder;
use crate::relay::RelayManager;
use crate::stream::Hub;
pub use conn::Https;
pub use error::ApiError;
pub use node::NodeLoad;
pub use serve::{serve, serve_all, Listener};

pub struct AppState {
    pub config: Arc<Config>,
    pub hub: Arc<Hub>,
    pub hls: Arc<HlsRegistry>,
    pub keys: Keys,
    pub metrics: Arc<Metrics>,
    pub recorder: Arc<Recorder>,
    pub relays: Arc<RelayManager>,
    /// None when `whip.enabled` is off.
    pub whip: Option<Arc<crate::ingest::whip::Whip>>,
    /// Stream leases when the cluster is on: routes `/live/` requests to the owning node.
    pub leases: Option<crate::cluster::leases::Leases>,
    /// WHIP requests per client address.
    pub whip_rate: crate::net::request_rate::RequestRate,
    /// Per-user title, description and access mode.
    pub channels: crate::channel::Channels,
    /// Signs and checks playback tokens.
    pub token_key: crate::access::TokenKey,
    /// Who is watching.
    pub audience: Arc<crate::audience::Audience>,
    /// `http.trusted_proxies`, parsed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Chat rooms.
    pub chat: Arc<crate::chat::Chat>,
    /// Operator console sessions.
    pub admin_sessions: admin::Sessions,
    /// CPU, memory and byte rates, sampled by the server every 5 s (`/api/v1/node`).
    pub node_load: Arc<NodeLoad>,
}

/// WHIP signalling and the publish page. The body limit is the SDP cap (413 beyond it).
fn whip_routes(state: &AppState) -> Router<Arc<AppState>> {
    use axum::routing::{options, MethodRouter};
    let limit = state.whip.as_ref().map_or(64 << 10, |w| w.max_sdp_bytes());
    let endpoint = |post: MethodRouter<Arc<AppState>>| post.options(whip::options);
    Router::new()
        .route("/publish", get(whip::publish_page))
        .route("/go-live", get(whip::publish_page))
        .route("/whip", endpoint(post(whip::post)))
        .route("/whip/{user}", endpoint(post(whip::post_user)))
        .route(
            "/whip/{user}/{id}",
            options(whip::options)
                .patch(whip::patch)
                .delete(whip::delete),
        )
        .layer(axum::extract::DefaultBodyLimit::max(limit))
}

/// `/metrics` alone, for `http.metrics_listen`.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(streams::metrics))
        .with_state(state)
}

/// The main listener's routes (with `/metrics` unless it has a listener of its own).
pub fn router(state: Arc<AppState>) -> Router {
    let metrics_here = state.config.http.metrics_listen.is_empty();
    // Players load HLS from pages on other origins; every HLS response carries CORS headers.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::HEAD, Method::OPTIONS])
        .allow_headers(Any)
        .expose_headers(Any);
    let hls = hls::routes().layer(cors);
    let mut router = Router::new();
    if metrics_here {
        router = router.route("/metrics", get(streams::metrics));
    }
    router
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/v1/streams", get(streams::list_streams))
        .route("/api/v1/node", get(node::get))
        .route("/api/v1/keys", get(keys::list_keys).post(keys::add_key))
        .route(
            "/api/v1/keys/{user}",
            axum::routing::delete(keys::revoke_key),
        )
        .route("/api/v1/keys/{user}/rotate", post(keys::rotate_key))
        .route("/api/v1/recordings", get(recordings::list))
        .route(
            "/api/v1/recordings/{id}",
            get(recordings::get_one).delete(recordings::delete),
        )
        .route(
            "/api/v1/recordings/{id}/download.mp4",
            get(recordings::download),
        )
        .route("/vod/{id}/poster.jpg", get(recordings::poster))
        .route("/vod/{id}/{file}", get(recordings::vod_file))
        .route(
            "/vod/{id}/t/{token}/{file}",
            get(recordings::vod_file_with_token),
        )
        .route("/admin/login", post(console::login))
        .route("/admin/session", get(console::session))
        .route("/admin/logout", post(console::logout))
        .route("/api/v1/channels", get(channels::list))
        .route(
            "/api/v1/channels/{user}",
            get(channels::get_one).put(channels::update),
        )
        .route(
            "/api/v1/access/{user}",
            axum::routing::put(channels::set_access),
        )
        .route("/api/v1/streams/{user}/tokens", post(channels::mint))
        .route("/live/{user}/chat", get(chat::connect))
        .route("/api/v1/streams/{user}/chat/events", post(chat::post_event))
        .route("/api/v1/streams/{user}/chat/bans", post(chat::ban))
        .route(
            "/api/v1/streams/{user}/chat/messages/{id}",
            axum::routing::delete(chat::delete_message),
        )
        .route("/api/v1/relays", get(relays::list).post(relays::add))
        .route(
            "/api/v1/relays/{user}/{id}",
            axum::routing::delete(relays::remove),
        )
        .merge(hls)
        .merge(pages::routes())
        .merge(whip_routes(&state))
        .with_state(state)
}
