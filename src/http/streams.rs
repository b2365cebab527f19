//! `/api/v1/streams` (who is live, with each stream's ladder, recording and relay status) and
//! `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::AppState;
use crate::stream::StreamSummary;

#[derive(Serialize)]
pub(super) struct StreamView {
    #[serde(flatten)]
    summary: StreamSummary,
    hls_url: String,
}

pub(super) async fn list_streams(State(state): State<Arc<AppState>>) -> Json<Vec<StreamView>> {
    let base = state.config.http_base_url();
    Json(
        state
            .hub
            .list()
            .into_iter()
            .map(|s| {
                let summary = s.summary();
                StreamView {
                    hls_url: format!("{base}/live/{}/index.m3u8", summary.name),
                    summary,
                }
            })
            .collect(),
    )
}

pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state
        .metrics
        .live_streams
        .set(state.hub.list().len() as i64);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}
