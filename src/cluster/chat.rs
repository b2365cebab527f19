//! Chat across nodes: every entry a node posts (messages, site events, deletions, bans) is
//! published on `<prefix>chat`, and every node delivers the others' entries to its own
//! connections. Viewers of one stream may be connected to any node (behind a load balancer or the
//! edge). Pub/sub keeps nothing: a node that was cut off misses what was said meanwhile (the
//! history its newcomers see is its own).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::chat::{Chat, ChatBus, Entry};

/// The channel's name under the key prefix.
pub const CHAT: &str = "chat";
/// Entries waiting to be published; beyond it (Redis slow or down) they stay on this node.
const QUEUE: usize = 1024;
/// Longest message accepted from the channel.
const MAX_WIRE_BYTES: usize = 16 * 1024;

#[derive(Serialize, Deserialize)]
struct Wire {
    node: String,
    room: String,
    entry: Entry,
}

struct RedisChatBus {
    node: String,
    queue: mpsc::Sender<String>,
}

impl ChatBus for RedisChatBus {
    fn publish(&self, room: &str, entry: &Entry) {
        let wire = Wire {
            node: self.node.clone(),
            room: room.to_string(),
            entry: entry.clone(),
        };
        if let Ok(text) = serde_json::to_string(&wire) {
            if self.queue.try_send(text).is_err() {
                tracing::debug!("chat: publish queue full; entry stays on this node");
            }
        }
    }
}

/// Connects `chat` to the other nodes until `stop`.
pub fn start(
    client: redis::Client,
    redis: ConnectionManager,
    prefix: &str,
    node: &str,
    chat: Arc<Chat>,
    stop: CancellationToken,
) {
    let channel = format!("{prefix}{CHAT}");
    let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
    chat.set_bus(Arc::new(RedisChatBus {
        node: node.to_string(),
        queue: tx,
    }));
    let (publish_channel, publish_stop) = (channel.clone(), stop.clone());
    tokio::spawn(async move {
        let mut redis = redis;
        loop {
            let text = tokio::select! {
                _ = publish_stop.cancelled() => return,
                t = rx.recv() => match t { Some(t) => t, None => return },
            };
            let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(&publish_channel)
                .arg(text)
                .query_async(&mut redis)
                .await;
            if let Err(e) = sent {
                tracing::debug!(error = %e, "chat: publish failed; entry stays on this node");
            }
        }
    });
    tokio::spawn(listen(client, channel, node.to_string(), chat, stop));
}

async fn listen(
    client: redis::Client,
    channel: String,
    node: String,
    chat: Arc<Chat>,
    stop: CancellationToken,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            c = tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub()) => c,
        };
        let subscribed = match connected {
            Ok(Ok(mut p)) => p.subscribe(&channel).await.is_ok().then_some(p),
            _ => None,
        };
        let mut pubsub = match subscribed {
            Some(p) => p,
            None => {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        delay = Duration::from_millis(200);
        let mut messages = pubsub.on_message();
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => return,
                m = messages.next() => m,
            };
            let Some(message) = message else {
                tracing::debug!("chat: connection to Redis lost; reconnecting");
                break;
            };
            let Ok(text) = message.get_payload::<String>() else {
                continue;
            };
            if text.len() > MAX_WIRE_BYTES {
                continue;
            }
            match serde_json::from_str::<Wire>(&text) {
                Ok(wire) if wire.node != node && crate::util::valid_user_name(&wire.room) => {
                    chat.deliver(&wire.room, wire.entry);
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "chat: unreadable entry ignored"),
            }
        }
    }
}
