//! The pages livegate serves on its own: the directory of live streams (`/`), the watch page
//! (`/watch/<user>`: player, quality choice, latency, chat) and the operator console (`/admin`). Plain HTML, CSS and JS compiled into
//! the binary, hls.js vendored (`vendor/`, Apache-2.0): no CDN, no build step. Everything they
//! show comes from the public API, so a site can build its own the same way.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// Same-origin everything; hls.js runs its transmuxer in a worker made from a blob URL and plays
/// through MediaSource (blob: media).
const CSP: &str = "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; \
                   worker-src 'self' blob:; connect-src 'self' ws: wss:; object-src 'none'; \
                   base-uri 'none'; frame-ancestors 'self'";

/// The vendored hls.js, versioned in its name so it can be cached for good.
pub const HLS_JS: &str = "hls-1.7.4.min.js";

fn page(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // Watch URLs may carry a playback token: never sent on to another site.
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    let (content_type, body, immutable): (&str, &'static [u8], bool) = match name.as_str() {
        "site.css" => ("text/css", include_bytes!("site.css"), false),
        "directory.js" => ("text/javascript", include_bytes!("directory.js"), false),
        "watch.js" => ("text/javascript", include_bytes!("watch.js"), false),
        "live-edge.js" => ("text/javascript", include_bytes!("live-edge.js"), false),
        "admin.js" => ("text/javascript", include_bytes!("admin.js"), false),
        HLS_JS => (
            "text/javascript",
            include_bytes!("vendor/hls-1.7.4.min.js"),
            true,
        ),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    let cache = if immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { page(include_str!("directory.html")) }))
        .route(
            "/watch/{user}",
            get(|| async { page(include_str!("watch.html")) }),
        )
        .route("/admin", get(|| async { page(include_str!("admin.html")) }))
        .route("/assets/{name}", get(asset))
}
