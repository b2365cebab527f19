//! The server's periodic chores: dropping ended streams' live windows, viewer counts into the
//! metrics, the streams' audience status and the cluster, idle chat rooms, the node's load
//! sample, and the channel settings snapshot.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::audience::Audience;
use crate::channel::Channels;
use crate::chat::Chat;
use crate::cluster::leases::Leases;
use crate::hls::HlsRegistry;
use crate::http::NodeLoad;
use crate::metrics::{Metrics, StreamLabel};
use crate::stream::Hub;

const EVERY: Duration = Duration::from_secs(5);

/// A chat room nobody is in is forgotten (history and bans) after this long without activity.
const CHAT_ROOM_IDLE: Duration = Duration::from_secs(3600);

/// Sets `livegate_viewers{stream}` for every stream watched or live, and drops the series of
/// streams gone with nobody left watching.
fn update_viewer_gauges(
    audience: &Audience,
    registry: &HlsRegistry,
    hub: &Hub,
    leases: Option<&Leases>,
    metrics: &Metrics,
    shown: &mut HashSet<String>,
) {
    // The recorder keeps each publish's peak and total with the recording's manifest; the
    // other nodes of a cluster list this node's streams with their viewers.
    for stream in hub.list() {
        let stats = audience.stats(&stream.name, std::time::Instant::now());
        if let Ok(value) = serde_json::to_value(stats) {
            stream.set_status("audience", value);
        }
        if let Some(leases) = leases {
            let (leases, user) = (leases.clone(), stream.name.clone());
            tokio::spawn(async move {
                if let Err(e) = leases.report_viewers(&user, stats.viewers as u64).await {
                    tracing::debug!(%user, error = %e, "viewer count not reported to the cluster");
                }
            });
        }
    }
    let counts = audience.sweep(std::time::Instant::now(), &|name| {
        registry.get(name).is_some()
    });
    let now: HashSet<String> = counts.iter().map(|(n, _)| n.clone()).collect();
    for stream in shown.difference(&now) {
        metrics.viewers.remove(&StreamLabel {
            stream: stream.clone(),
        });
    }
    *shown = now;
    for (stream, count) in &counts {
        metrics
            .viewers
            .get_or_create(&StreamLabel {
                stream: stream.clone(),
            })
            .set(i64::try_from(*count).unwrap_or(i64::MAX));
    }
}

/// What the 5-second sweep looks after.
pub(super) struct Sweeps {
    pub registry: Arc<HlsRegistry>,
    pub audience: Arc<Audience>,
    pub metrics: Arc<Metrics>,
    pub chat: Arc<Chat>,
    pub hub: Arc<Hub>,
    pub leases: Option<Leases>,
    pub node_load: Arc<NodeLoad>,
    pub stop: CancellationToken,
}

pub(super) fn spawn_sweeps(s: Sweeps) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        let mut shown = HashSet::new();
        loop {
            tokio::select! {
                _ = s.stop.cancelled() => return,
                _ = tick.tick() => {
                    s.registry.sweep();
                    update_viewer_gauges(
                        &s.audience,
                        &s.registry,
                        &s.hub,
                        s.leases.as_ref(),
                        &s.metrics,
                        &mut shown,
                    );
                    s.chat.sweep(CHAT_ROOM_IDLE);
                    s.node_load.sample(&s.metrics, std::time::Instant::now());
                }
            }
        }
    });
}

/// Keeps the outage snapshot of every user's channel settings fresh.
pub(super) fn spawn_channel_refresh(channels: Channels, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = channels.refresh().await {
                        tracing::debug!(error = %e, "channel settings snapshot not refreshed");
                    }
                }
            }
        }
    });
}
