//! What the operator's site hears of each publish session ([`Webhooks`]): `publish` when it
//! starts, `takeover` when it replaced a live session (on this node or another), `unpublish` when
//! it ends and why, and `recording.finished` for each stored recording.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cluster::leases::Lease;
use crate::record::session::Manifest;
use crate::stream::LiveStream;
use crate::webhook::Webhooks;

#[derive(Serialize)]
struct Publish<'a> {
    user: &'a str,
    session_id: u64,
    started_at: DateTime<Utc>,
}

#[derive(Serialize)]
struct Replaced<'a> {
    node: &'a str,
    session_id: u64,
}

#[derive(Serialize)]
struct Takeover<'a> {
    user: &'a str,
    session_id: u64,
    replaced: Replaced<'a>,
}

#[derive(Serialize)]
struct Unpublish<'a> {
    user: &'a str,
    session_id: u64,
    started_at: DateTime<Utc>,
    ended_at: DateTime<Utc>,
    duration_secs: f64,
    /// `publisher`, `takeover`, `revoked`, `shutdown` or `error`.
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    bytes_received: u64,
}

/// Announces a new session now and its end when it comes (call for every new stream).
pub fn watch_session(webhooks: &Webhooks, node: &str, stream: &Arc<LiveStream>) {
    webhooks.send(
        "publish",
        Publish {
            user: &stream.name,
            session_id: stream.session_id,
            started_at: stream.started_at,
        },
    );
    if let Some(replaced) = stream.replaced_session {
        webhooks.send(
            "takeover",
            Takeover {
                user: &stream.name,
                session_id: stream.session_id,
                replaced: Replaced {
                    node,
                    session_id: replaced,
                },
            },
        );
    }
    let (webhooks, stream) = (webhooks.clone(), stream.clone());
    tokio::spawn(async move {
        stream.ended().await;
        let ended_at = Utc::now();
        webhooks.send(
            "unpublish",
            Unpublish {
                user: &stream.name,
                session_id: stream.session_id,
                started_at: stream.started_at,
                ended_at,
                duration_secs: (ended_at - stream.started_at).num_milliseconds() as f64 / 1000.0,
                reason: stream.end_cause().as_str(),
                error: stream.abort_reason(),
                bytes_received: stream.summary().bytes_received,
            },
        );
    });
}

/// A session here took its stream over from `previous`, live on another node.
pub fn takeover_across_nodes(webhooks: &Webhooks, stream: &LiveStream, previous: &Lease) {
    webhooks.send(
        "takeover",
        Takeover {
            user: &stream.name,
            session_id: stream.session_id,
            replaced: Replaced {
                node: &previous.node,
                session_id: previous.session,
            },
        },
    );
}

pub fn recording_finished(webhooks: &Webhooks, manifest: &Manifest) {
    webhooks.send("recording.finished", manifest);
}
