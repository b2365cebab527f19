//! Where keys, relay targets, channel settings and stream ownership live: the embedded files on a single node, or
//! the cluster's Redis, whose events (revocations, takeovers) end sessions here.

use std::sync::Arc;

use super::{events, ServerError};
use crate::auth::{KeyStore, Keys};
use crate::channel::{ChannelBackend, ChannelStore};
use crate::cluster::events::Event;
use crate::cluster::leases::Leases;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::relay::{RelayStore, Targets};
use crate::stream::{Hub, StopCause};
use crate::webhook::Webhooks;
use tokio_util::sync::CancellationToken;

pub(super) struct Backends {
    pub keys: Keys,
    pub targets: Targets,
    pub channels: Arc<dyn ChannelBackend>,
    /// This node's stream leases (cluster only).
    pub leases: Option<Leases>,
}

pub(super) fn start(
    config: &Config,
    node_id: &str,
    hub: &Arc<Hub>,
    webhooks: Option<&Webhooks>,
    metrics: &Arc<Metrics>,
    chat: &Arc<crate::chat::Chat>,
    stop: &CancellationToken,
) -> Result<Backends, ServerError> {
    if !config.cluster.enabled() {
        let targets = RelayStore::for_config(config);
        // Now, before anything else writes the keys file (see relay::store).
        if let Err(e) = targets.migrate() {
            // Not fatal: every use of the store retries, and says so, until it can.
            tracing::error!(error = %e, "relay targets: import from the key store failed");
        }
        return Ok(Backends {
            keys: Arc::new(KeyStore::new(config.keys_path())),
            targets: Arc::new(targets),
            channels: Arc::new(ChannelStore::new(config.channels_path())),
            leases: None,
        });
    }
    let http = if config.cluster.advertise_http.is_empty() {
        config.http_base_url()
    } else {
        config.cluster.advertise_http.clone()
    };
    let node = crate::cluster::start(
        &config.cluster,
        config.data_dir.join("cluster-keys-snapshot.json"),
        node_id,
        &http,
        metrics.clone(),
        stop.clone(),
    )
    .map_err(|e| ServerError::Cluster(e.to_string()))?;
    tracing::info!(node = %node_id, http = %http,
        "cluster on: stream keys, relay targets and stream leases in Redis");
    let crate::cluster::Node {
        keys,
        relays,
        channels,
        leases,
        mut events,
        redis,
    } = node;
    crate::cluster::chat::start(
        redis.0,
        redis.1,
        &config.cluster.key_prefix,
        node_id,
        chat.clone(),
        stop.clone(),
    );
    // A key revoked on any node, or this user's stream taken by a publish on another node, ends
    // the live session here.
    let (hub, taken) = (hub.clone(), leases.clone());
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                Event::Revoked(user) => {
                    if hub.stop(&user, StopCause::Revoked) {
                        tracing::info!(%user, "stream key revoked in the cluster; ending the live session");
                    }
                }
                Event::Takeover(user, token) => {
                    if taken.taken_over(&user, token) && hub.stop(&user, StopCause::TakenOver) {
                        tracing::info!(%user, token, "stream taken over by a publish on another node; ending the session here");
                    }
                }
                Event::Keys => {}
            }
        }
    });
    if let Some(webhooks) = webhooks.cloned() {
        leases.on_takeover(move |stream, previous| {
            events::takeover_across_nodes(&webhooks, stream, previous)
        });
    }
    Ok(Backends {
        keys: Arc::new(keys),
        targets: Arc::new(relays),
        channels: Arc::new(channels),
        leases: Some(leases),
    })
}
