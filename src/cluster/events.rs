//! The cluster's event channel (Redis pub/sub, `<prefix>events`): every key change is published
//! by the script that makes it (`keys <user>`, `revoked <user>`). Each node listens on its own
//! connection, reloads its key snapshot on any change and reports revocations, so the server
//! ends a revoked user's live session on whichever node holds it. After a lost connection the
//! listener reconnects and reloads, since events sent meanwhile are gone.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use super::keys::RedisKeys;
use crate::metrics::Metrics;

/// The channel's name under the key prefix.
pub const EVENTS: &str = "events";

/// What a message on the channel says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A key was added (or keys imported): reload.
    Keys,
    /// This user's key was revoked or rotated away: their live session must end.
    Revoked(String),
    /// Another node took this user's stream lease with this token.
    Takeover(String, i64),
}

impl Event {
    pub fn parse(message: &str) -> Option<Event> {
        match message.split_once(' ')? {
            ("keys", _) => Some(Event::Keys),
            ("revoked", user) if crate::util::valid_user_name(user) => {
                Some(Event::Revoked(user.to_string()))
            }
            ("takeover", rest) => {
                let (user, token) = rest.split_once(' ')?;
                let token = token.parse().ok()?;
                crate::util::valid_user_name(user).then(|| Event::Takeover(user.to_string(), token))
            }
            _ => None,
        }
    }
}

/// Listens until `stop`; revocations and takeovers go to `events`.
pub async fn listen(
    client: redis::Client,
    channel: String,
    keys: RedisKeys,
    events: mpsc::Sender<Event>,
    metrics: std::sync::Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut delay = Duration::from_millis(200);
    let mut was_down = false;
    loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            c = tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub()) => c,
        };
        let mut pubsub = match connected {
            Ok(Ok(mut p)) => match p.subscribe(&channel).await {
                Ok(()) => p,
                Err(e) => {
                    tracing::debug!(error = %e, "cluster events: subscribe failed");
                    continue;
                }
            },
            Ok(Err(e)) => {
                if !was_down {
                    tracing::warn!(error = %e, "cluster events: Redis unreachable; retrying (keys are checked against the snapshot meanwhile)");
                    metrics.cluster_redis_up.set(0);
                }
                was_down = true;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(2));
                continue;
            }
            Err(_) => {
                was_down = true;
                metrics.cluster_redis_up.set(0);
                continue;
            }
        };
        if was_down {
            tracing::info!("cluster events: Redis reachable again");
        }
        delay = Duration::from_millis(200);
        metrics.cluster_redis_up.set(1);
        // Whatever changed while nobody listened.
        if let Err(e) = keys.refresh().await {
            tracing::debug!(error = %e, "key snapshot reload failed");
        }
        let mut messages = pubsub.on_message();
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => return,
                m = messages.next() => m,
            };
            let Some(message) = message else {
                tracing::warn!("cluster events: connection to Redis lost; reconnecting");
                metrics.cluster_redis_up.set(0);
                was_down = true;
                break;
            };
            let Ok(text) = message.get_payload::<String>() else {
                continue;
            };
            match Event::parse(&text) {
                Some(Event::Revoked(user)) => {
                    let _ = keys.refresh().await;
                    let _ = events.send(Event::Revoked(user)).await;
                }
                Some(takeover @ Event::Takeover(..)) => {
                    let _ = events.send(takeover).await;
                }
                Some(Event::Keys) => {
                    let _ = keys.refresh().await;
                }
                None => tracing::debug!("cluster events: unknown message ignored"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(Event::parse("keys alice"), Some(Event::Keys));
        assert_eq!(Event::parse("keys *"), Some(Event::Keys));
        assert_eq!(
            Event::parse("revoked alice"),
            Some(Event::Revoked("alice".into()))
        );
        assert_eq!(Event::parse("revoked ../x"), None);
        assert_eq!(
            Event::parse("takeover bob 42"),
            Some(Event::Takeover("bob".into(), 42))
        );
        assert_eq!(Event::parse("takeover bob x"), None);
        assert_eq!(Event::parse("hello"), None);
    }
}
