//! The publish gate every ingest protocol goes through (RTMP now, WHIP next): the presented key
//! is checked through the key backend **before** any media is accepted, and an accepted publish
//! becomes the user's live stream in the hub, taking over a stale session of the same user.
//! Log lines name the user where known and never the key (at most its first characters).

use std::sync::Arc;

use super::auth_hook::{AuthHook, Verdict};
use crate::auth::{KeyCheck, Keys};
use crate::metrics::Metrics;
use crate::stream::{Hub, Publisher};
use crate::util::redact;

/// Why a publish was refused; each protocol maps it to its own status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The key was revoked or rotated away: the user is known.
    Revoked {
        user: String,
    },
    Unknown,
    /// The site's publish-authorization hook refused this user.
    Denied {
        user: String,
    },
    /// The key store (or the authorization hook) could not answer.
    Unavailable(String),
}

impl Refusal {
    /// The metrics label (`livegate_publish_refused_total{reason=…}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Revoked { .. } => "revoked_key",
            Refusal::Unknown => "unknown_key",
            Refusal::Denied { .. } => "auth_hook_denied",
            Refusal::Unavailable(_) => "key_store_error",
        }
    }
}

#[derive(Clone)]
pub struct PublishGate {
    keys: Keys,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    hook: Option<AuthHook>,
}

impl PublishGate {
    pub fn new(keys: Keys, hub: Arc<Hub>, metrics: Arc<Metrics>) -> Self {
        PublishGate {
            keys,
            hub,
            metrics,
            hook: None,
        }
    }

    /// Asks the site's hook too, after every valid key ([`AuthHook`]).
    pub fn with_hook(mut self, hook: Option<AuthHook>) -> Self {
        self.hook = hook;
        self
    }

    /// Checks `key` and, if it is valid, starts the user's publish session. `query` is what
    /// followed the key in the publish URL (relay targets may be named there; never logged).
    /// The current span gets a `user` field once the user is known.
    pub async fn admit(&self, key: &str, query: &str) -> Result<Publisher, Refusal> {
        self.admit_as(key, query, "rtmp").await
    }

    /// [`PublishGate::admit`] naming the ingest protocol for the authorization hook.
    pub async fn admit_as(
        &self,
        key: &str,
        query: &str,
        protocol: &str,
    ) -> Result<Publisher, Refusal> {
        let user = self.check_as(key, protocol).await?;
        self.publish(&user, query)
    }

    /// [`PublishGate::check`], then the site's authorization hook if one is configured.
    pub async fn check_as(&self, key: &str, protocol: &str) -> Result<String, Refusal> {
        let user = self.check(key).await?;
        let Some(hook) = &self.hook else {
            return Ok(user);
        };
        let refusal = match hook.ask(&user, protocol).await {
            Verdict::Allow => return Ok(user),
            Verdict::Deny => {
                tracing::warn!("publish refused by the site's authorization hook");
                Refusal::Denied { user }
            }
            Verdict::Unavailable(why) => {
                tracing::warn!(%why, "publish refused: the authorization hook failed (fail closed)");
                Refusal::Unavailable(why)
            }
        };
        self.metrics.refused(refusal.reason());
        Err(refusal)
    }

    /// Checks `key` without publishing anything: the user it belongs to. A protocol that
    /// accepts media only after a setup that can fail (WebRTC's ICE and DTLS) checks first and
    /// publishes once media can flow, so a failed attempt never takes over a live stream.
    pub async fn check(&self, key: &str) -> Result<String, Refusal> {
        let refusal = match self.keys.check(key).await {
            Ok(KeyCheck::Valid { user }) => {
                tracing::Span::current().record("user", user.as_str());
                return Ok(user);
            }
            Ok(KeyCheck::Revoked { user }) => {
                tracing::Span::current().record("user", user.as_str());
                tracing::warn!("publish refused: this user's stream key was revoked or rotated");
                Refusal::Revoked { user }
            }
            Ok(KeyCheck::Unknown) => {
                tracing::warn!(key = %redact(key), "publish refused: unknown stream key");
                Refusal::Unknown
            }
            Err(e) => {
                tracing::error!(error = %e, "publish refused: key store unavailable");
                Refusal::Unavailable(e.to_string())
            }
        };
        self.metrics.refused(refusal.reason());
        Err(refusal)
    }

    /// Starts `user`'s publish session (its key was checked), taking over a live one.
    pub fn publish(&self, user: &str, query: &str) -> Result<Publisher, Refusal> {
        // Checked after the (possibly slow) key lookup, right before the stream is created.
        if self.hub.is_closed() {
            tracing::info!("publish refused: the server is shutting down");
            self.metrics.refused("shutting_down");
            return Err(Refusal::Unavailable("the server is shutting down".into()));
        }
        let publisher = self.hub.publish_with_query(user, query);
        tracing::info!(session = publisher.stream().session_id, "publish accepted");
        self.metrics.publish_accepted.inc();
        Ok(publisher)
    }

    /// Whether `user` is live (to tell a WebRTC publisher's takeover from a first publish).
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::KeyStore;

    #[tokio::test]
    async fn admits_valid_keys_takes_over_and_refuses_the_rest_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path().join("keys.json"));
        let key = store.add("alice").unwrap();
        let hub = Hub::new();
        let gate = PublishGate::new(
            Arc::new(store.clone()),
            hub.clone(),
            Arc::new(Metrics::new()),
        );
        let first = gate.admit(&key, "").await.unwrap();
        assert_eq!(
            hub.get("alice").unwrap().session_id,
            first.stream().session_id
        );
        // A second publish with the same key takes over the stream.
        let second = gate.admit(&key, "youtube=x").await.unwrap();
        assert!(first.stream().is_ended());
        assert_eq!(second.stream().publish_query, "youtube=x");
        assert_eq!(
            gate.admit("lg_nope", "").await.err(),
            Some(Refusal::Unknown)
        );
        store.rotate("alice").unwrap();
        assert_eq!(
            gate.admit(&key, "").await.err(),
            Some(Refusal::Revoked {
                user: "alice".into()
            })
        );
        std::fs::write(dir.path().join("keys.json"), b"{not json").unwrap();
        assert!(matches!(
            gate.admit(&key, "").await,
            Err(Refusal::Unavailable(_))
        ));
    }
}
