//! Webhooks: events for the operator's site (`publish`, `unpublish`, `takeover`,
//! `recording.finished`), each POSTed as JSON and signed with a shared secret ([`sign`]).
//!
//! Producers hand events to [`Webhooks::send`], which never blocks: each endpoint has a bounded
//! queue and one task that delivers its events in order, retrying each with exponential backoff
//! for `webhook_attempts` attempts. An event that still fails, or finds the queue full, is
//! dropped, logged and counted (`livegate_webhook_deliveries_total{result}`): a dead site never
//! holds up a stream or grows memory. Only an endpoint's host is ever logged (its path or query
//! may carry a token); the secret never is.

pub mod sign;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::HooksConfig;
use crate::metrics::{Metrics, WebhookLabel};

/// Events an endpoint's queue holds before new ones are dropped.
const QUEUE: usize = 1024;
/// The wait after a first failed attempt; it doubles after each further one.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// One event, as POSTed (the envelope; `data` depends on `type`, see the README).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// `evt_` and 32 hex digits; also in the `Livegate-Delivery` header. Retries keep it, so a
    /// site can drop duplicates.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub created_at: DateTime<Utc>,
    /// The node the event happened on (`cluster.node_id`, or the host name).
    pub node: String,
    pub data: serde_json::Value,
}

/// Where events go, and which.
#[derive(Clone)]
struct Endpoint {
    url: String,
    /// What may be logged of `url`.
    host: String,
    secret: Option<String>,
    /// Event types this endpoint takes; empty: all.
    events: Vec<String>,
    /// POST `data` alone instead of the envelope (the old `record.webhook_url`).
    bare: bool,
}

struct Queue {
    endpoint: Endpoint,
    tx: mpsc::Sender<Event>,
}

/// The webhook sender of a node.
#[derive(Clone)]
pub struct Webhooks {
    node: String,
    queues: Arc<Vec<Queue>>,
    /// Events queued or being delivered, for the shutdown drain.
    pending: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

struct Delivery {
    client: reqwest::Client,
    attempts: u32,
    first_retry: Duration,
    pending: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
}

impl Webhooks {
    /// Starts delivery to `hooks.webhook_url` and to the older `record.webhook_url` (which gets
    /// `recording.finished` only, as the bare manifest). None when neither is set.
    pub fn start(
        hooks: &HooksConfig,
        record_webhook_url: &str,
        node: &str,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Option<Webhooks> {
        let secret = (!hooks.webhook_secret.is_empty()).then(|| hooks.webhook_secret.clone());
        let mut endpoints = Vec::new();
        if !hooks.webhook_url.is_empty() {
            endpoints.push(Endpoint {
                url: hooks.webhook_url.clone(),
                host: host_of(&hooks.webhook_url),
                secret: secret.clone(),
                events: hooks.webhook_events.clone(),
                bare: false,
            });
        }
        if !record_webhook_url.is_empty() {
            endpoints.push(Endpoint {
                url: record_webhook_url.to_string(),
                host: host_of(record_webhook_url),
                secret,
                events: vec!["recording.finished".into()],
                bare: true,
            });
        }
        if endpoints.is_empty() {
            return None;
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(hooks.webhook_timeout_ms))
            .build()
            .unwrap_or_default();
        Some(Webhooks::with(
            endpoints,
            node,
            client,
            hooks.webhook_attempts.max(1),
            FIRST_RETRY,
            metrics,
            stop,
        ))
    }

    fn with(
        endpoints: Vec<Endpoint>,
        node: &str,
        client: reqwest::Client,
        attempts: u32,
        first_retry: Duration,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Webhooks {
        let pending = Arc::new(AtomicUsize::new(0));
        let queues = endpoints
            .into_iter()
            .map(|endpoint| {
                let (tx, rx) = mpsc::channel(QUEUE);
                let delivery = Delivery {
                    client: client.clone(),
                    attempts,
                    first_retry,
                    pending: pending.clone(),
                    metrics: metrics.clone(),
                    stop: stop.clone(),
                };
                tokio::spawn(delivery.run(endpoint.clone(), rx));
                Queue { endpoint, tx }
            })
            .collect();
        Webhooks {
            node: node.to_string(),
            queues: Arc::new(queues),
            pending,
            metrics,
        }
    }

    /// Queues an event of type `kind` for every endpoint that takes it. Never blocks.
    pub fn send(&self, kind: &'static str, data: impl Serialize) {
        let data = match serde_json::to_value(data) {
            Ok(data) => data,
            Err(e) => {
                tracing::error!(event = kind, error = %e, "webhook event not serializable");
                return;
            }
        };
        let event = Event {
            id: format!("evt_{:032x}", rand::random::<u128>()),
            kind,
            created_at: Utc::now(),
            node: self.node.clone(),
            data,
        };
        for queue in self.queues.iter() {
            let endpoint = &queue.endpoint;
            if !endpoint.events.is_empty() && !endpoint.events.iter().any(|e| e == kind) {
                continue;
            }
            self.pending.fetch_add(1, Ordering::SeqCst);
            if queue.tx.try_send(event.clone()).is_err() {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                count(&self.metrics, kind, "dropped");
                tracing::error!(host = %endpoint.host, event = kind, id = %event.id,
                    "webhook queue full ({QUEUE} events): event dropped");
            }
        }
    }

    /// Waits until every queued event is delivered or given up, or until `deadline`.
    pub async fn drain(&self, deadline: tokio::time::Instant) -> usize {
        while self.pending.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.pending.load(Ordering::SeqCst)
    }
}

fn count(metrics: &Metrics, event: &'static str, result: &'static str) {
    metrics
        .webhook_deliveries
        .get_or_create(&WebhookLabel {
            event: event.to_string(),
            result: result.to_string(),
        })
        .inc();
}

impl Delivery {
    async fn run(self, endpoint: Endpoint, mut rx: mpsc::Receiver<Event>) {
        loop {
            let event = tokio::select! {
                event = rx.recv() => event,
                _ = self.stop.cancelled() => None,
            };
            let Some(event) = event else { return };
            let delivered = self.deliver(&endpoint, &event).await;
            count(
                &self.metrics,
                event.kind,
                if delivered { "delivered" } else { "failed" },
            );
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// POSTs `event` until a 2xx answers, `attempts` times at most, or until shutdown.
    async fn deliver(&self, endpoint: &Endpoint, event: &Event) -> bool {
        let body = if endpoint.bare {
            serde_json::to_vec(&event.data)
        } else {
            serde_json::to_vec(event)
        };
        let Ok(body) = body else { return false };
        let host = &endpoint.host;
        let mut delay = self.first_retry;
        for attempt in 1..=self.attempts {
            let mut request = self
                .client
                .post(&endpoint.url)
                .header("content-type", "application/json")
                .header("livegate-event", event.kind)
                .header("livegate-delivery", &event.id);
            if let Some(secret) = &endpoint.secret {
                let signature = sign::sign(secret.as_bytes(), Utc::now().timestamp(), &body);
                request = request.header(sign::HEADER, signature);
            }
            match request.body(body.clone()).send().await {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(%host, event = event.kind, id = %event.id, attempt, "webhook delivered");
                    return true;
                }
                Ok(r) => {
                    tracing::warn!(%host, event = event.kind, status = r.status().as_u16(), attempt, "webhook refused")
                }
                // Without the URL: reqwest's errors quote it whole.
                Err(e) => {
                    tracing::warn!(%host, event = event.kind, error = %e.without_url(), attempt, "webhook failed")
                }
            }
            if attempt == self.attempts {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.cancelled() => return false,
            }
            delay *= 2;
        }
        tracing::error!(%host, event = event.kind, id = %event.id, attempts = self.attempts,
            "webhook given up: event dropped");
        false
    }
}

/// The host of `url`, or empty when it has none.
fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
