//! Several livegate nodes sharing one Redis (`[cluster]`, off unless `redis_url` is set): stream
//! keys, relay targets and channel settings in Redis ([`keys::RedisKeys`], [`relays::RedisRelays`], behind the
//! same interfaces as the embedded files), stream ownership leases ([`leases`]: who holds which stream, takeover across nodes,
//! routing), and the event channel that carries key changes and takeovers to every node
//! ([`events`]). Nothing here blocks start-up on Redis: the connection is lazy and reconnects
//! by itself.

pub mod channels;
pub mod chat;
pub mod events;
pub mod keys;
pub mod leases;
pub mod relays;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::ClusterConfig;
use crate::metrics::Metrics;
use keys::RedisKeys;
use leases::Leases;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.redis_url: {0}")]
    Url(String),
}

/// A lazily connected Redis connection with the configured timeouts: it connects on first use
/// and reconnects after a failure, so a node starts and serves while Redis is down.
pub fn connect(config: &ClusterConfig) -> Result<(redis::Client, ConnectionManager), ClusterError> {
    let client = redis::Client::open(config.redis_url.as_str())
        .map_err(|e| ClusterError::Url(e.to_string()))?;
    let timeout = Duration::from_millis(config.redis_timeout_ms);
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(1));
    let manager = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
        .map_err(|e| ClusterError::Url(e.to_string()))?;
    Ok((client, manager))
}

/// What a cluster node runs: its key store, its leases, and the events (revocations,
/// takeovers) the server acts on. Starts the snapshot reloads and the event listener.
pub struct Node {
    pub keys: RedisKeys,
    pub relays: relays::RedisRelays,
    pub channels: channels::RedisChannels,
    pub leases: Leases,
    pub events: mpsc::Receiver<events::Event>,
    /// For [`chat::start`].
    pub redis: (redis::Client, ConnectionManager),
}

/// Starts this node's part of the cluster. `key_snapshot` is where the key snapshot is kept on
/// disk (a node restarted while Redis is down checks keys against it).
pub fn start(
    config: &ClusterConfig,
    key_snapshot: std::path::PathBuf,
    node_id: &str,
    advertise_http: &str,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> Result<Node, ClusterError> {
    let (client, manager) = connect(config)?;
    let redis = (client.clone(), manager.clone());
    let keys = RedisKeys::new(
        manager.clone(),
        &config.key_prefix,
        Duration::from_secs(config.key_snapshot_max_age_secs),
    )
    .with_snapshot_file(key_snapshot);
    let relays = relays::RedisRelays::new(manager.clone(), &config.key_prefix);
    let channels = channels::RedisChannels::new(manager.clone(), &config.key_prefix);
    let leases = Leases::new(
        manager,
        &config.key_prefix,
        node_id,
        advertise_http,
        Duration::from_secs(config.lease_ttl_secs),
    );
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(events::listen(
        client,
        format!("{}{}", config.key_prefix, events::EVENTS),
        keys.clone(),
        tx,
        metrics,
        stop.clone(),
    ));
    let refresher = keys.clone();
    let every = Duration::from_secs(config.key_refresh_secs);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = refresher.refresh().await {
                        tracing::debug!(error = %e, "key snapshot reload failed");
                    }
                }
            }
        }
    });
    Ok(Node {
        keys,
        relays,
        channels,
        leases,
        events: rx,
        redis,
    })
}
