//! Prometheus metrics (`GET /metrics`), OpenMetrics text via `prometheus-client`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// A webhook event type and what became of it (`delivered`, `failed`, `dropped`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabel {
    pub event: String,
    pub result: String,
}

/// One relay: its user, id and platform (never its URL).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RelayLabel {
    pub user: String,
    pub relay: String,
    pub platform: String,
}

/// An HTTP connection's protocol (`http1`, `http2`) and whether it came over TLS.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpConnLabel {
    pub protocol: String,
    pub tls: String,
}

/// A TLS listener (`http`, `rtmp`) and an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsLabel {
    pub listener: String,
    pub result: String,
}

/// A TLS listener (`http`, `rtmp`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: String,
}

/// One stream (user).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    pub stream: String,
}

pub struct Metrics {
    registry: Registry,
    pub viewers: Family<StreamLabel, Gauge>,
    pub chat_connections: Gauge,
    pub playback_denied: Family<ReasonLabel, Counter>,
    pub rtmp_connections: Counter,
    pub rtmp_active: Gauge,
    pub publish_accepted: Counter,
    pub publish_refused: Family<ReasonLabel, Counter>,
    pub sessions_ended: Family<ReasonLabel, Counter>,
    pub ingest_bytes: Counter,
    pub hls_segments: Counter,
    pub hls_parts: Counter,
    /// Blocking playlist reloads and hinted part requests waiting now.
    pub hls_blocked: Gauge,
    /// Blocking requests answered, by outcome (`ready`, `timeout`, `refused`).
    pub hls_blocking: Family<ReasonLabel, Counter>,
    pub live_streams: Gauge,
    pub transcoders: Gauge,
    pub transcode_dropped_frames: Counter,
    pub transcode_not_admitted: Family<ReasonLabel, Counter>,
    pub record_segments: Counter,
    pub record_uploads: Counter,
    pub record_upload_errors: Counter,
    pub record_upload_lag: Histogram,
    pub record_spool_bytes: Gauge,
    pub record_spool_full: Counter,
    pub record_active: Gauge,
    pub record_finished: Family<ReasonLabel, Counter>,
    pub relay_bytes: Family<RelayLabel, Counter>,
    pub relay_reconnects: Family<RelayLabel, Counter>,
    pub relay_dropped_frames: Family<RelayLabel, Counter>,
    pub relay_up: Family<RelayLabel, Gauge>,
    pub relays_live: Gauge,
    pub http_refused: Family<ReasonLabel, Counter>,
    pub http_closed: Family<ReasonLabel, Counter>,
    pub http_connections: Family<HttpConnLabel, Counter>,
    /// Response body bytes sent on every HTTP connection (egress to players and edges).
    pub http_response_bytes: Counter,
    pub tls_handshake_failures: Family<ListenerLabel, Counter>,
    pub tls_cert_reloads: Family<TlsLabel, Counter>,
    pub whip_sessions: Gauge,
    pub whip_ended: Family<ReasonLabel, Counter>,
    pub whip_failures: Family<ReasonLabel, Counter>,
    pub whip_keyframe_requests: Family<ReasonLabel, Counter>,
    pub cluster_redis_up: Gauge,
    pub cluster_route_fallback: Family<ReasonLabel, Counter>,
    pub webhook_deliveries: Family<WebhookLabel, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("livegate");
        let m = Metrics {
            rtmp_connections: Counter::default(),
            rtmp_active: Gauge::default(),
            publish_accepted: Counter::default(),
            publish_refused: Family::default(),
            sessions_ended: Family::default(),
            ingest_bytes: Counter::default(),
            hls_segments: Counter::default(),
            hls_parts: Counter::default(),
            hls_blocked: Gauge::default(),
            hls_blocking: Family::default(),
            viewers: Family::default(),
            chat_connections: Gauge::default(),
            playback_denied: Family::default(),
            live_streams: Gauge::default(),
            transcoders: Gauge::default(),
            transcode_dropped_frames: Counter::default(),
            transcode_not_admitted: Family::default(),
            record_segments: Counter::default(),
            record_uploads: Counter::default(),
            record_upload_errors: Counter::default(),
            // Segment closed → object stored: 10 ms … ~80 s.
            record_upload_lag: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            record_spool_bytes: Gauge::default(),
            record_spool_full: Counter::default(),
            record_active: Gauge::default(),
            record_finished: Family::default(),
            relay_bytes: Family::default(),
            relay_reconnects: Family::default(),
            relay_dropped_frames: Family::default(),
            relay_up: Family::default(),
            relays_live: Gauge::default(),
            http_refused: Family::default(),
            http_closed: Family::default(),
            http_connections: Family::default(),
            http_response_bytes: Counter::default(),
            tls_handshake_failures: Family::default(),
            tls_cert_reloads: Family::default(),
            whip_sessions: Gauge::default(),
            whip_ended: Family::default(),
            whip_failures: Family::default(),
            whip_keyframe_requests: Family::default(),
            cluster_redis_up: Gauge::default(),
            cluster_route_fallback: Family::default(),
            webhook_deliveries: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "rtmp_connections",
            "RTMP connections accepted",
            m.rtmp_connections.clone(),
        );
        registry.register(
            "rtmp_active_connections",
            "RTMP connections open now",
            m.rtmp_active.clone(),
        );
        registry.register(
            "publish_accepted",
            "Publish requests accepted",
            m.publish_accepted.clone(),
        );
        registry.register(
            "publish_refused",
            "Publish requests refused, by reason",
            m.publish_refused.clone(),
        );
        registry.register(
            "sessions_ended",
            "RTMP sessions ended, by reason",
            m.sessions_ended.clone(),
        );
        registry.register(
            "ingest_bytes",
            "Bytes received from publishers",
            m.ingest_bytes.clone(),
        );
        registry.register(
            "hls_segments",
            "HLS segments produced",
            m.hls_segments.clone(),
        );
        registry.register("hls_parts", "LL-HLS parts produced", m.hls_parts.clone());
        registry.register(
            "hls_blocked_requests",
            "LL-HLS blocking playlist reloads and preload-hinted part requests waiting now",
            m.hls_blocked.clone(),
        );
        registry.register(
            "hls_blocking_requests",
            "LL-HLS blocking requests answered, by outcome (ready, timeout, refused)",
            m.hls_blocking.clone(),
        );
        registry.register(
            "viewers",
            "Distinct players of each stream active within access.viewer_window_secs",
            m.viewers.clone(),
        );
        registry.register(
            "chat_connections",
            "Chat WebSocket connections open now",
            m.chat_connections.clone(),
        );
        registry.register(
            "playback_denied",
            "HLS requests refused for want of a valid playback token, by reason",
            m.playback_denied.clone(),
        );
        registry.register(
            "live_streams",
            "Streams being published now",
            m.live_streams.clone(),
        );
        registry.register(
            "transcoders",
            "Transcoder threads running",
            m.transcoders.clone(),
        );
        registry.register(
            "transcode_dropped_frames",
            "Frames dropped (whole GOPs) because a transcoder fell behind real time",
            m.transcode_dropped_frames.clone(),
        );
        registry.register(
            "transcode_not_admitted",
            "Publishes the ladder would serve, not admitted because transcode.max_ladders ladders \
             were running: served_as_published or refused",
            m.transcode_not_admitted.clone(),
        );
        registry.register(
            "record_segments",
            "Segments written to the recording spool",
            m.record_segments.clone(),
        );
        registry.register(
            "record_uploads",
            "Objects stored by the recorder (segments, inits, playlists, manifests)",
            m.record_uploads.clone(),
        );
        registry.register(
            "record_upload_errors",
            "Failed recording uploads (each is retried)",
            m.record_upload_errors.clone(),
        );
        registry.register(
            "record_upload_lag_seconds",
            "Seconds from a segment closing to its object being stored",
            m.record_upload_lag.clone(),
        );
        registry.register(
            "record_spool_bytes",
            "Bytes in the recording spool waiting for upload",
            m.record_spool_bytes.clone(),
        );
        registry.register(
            "record_spool_full",
            "Segments not recorded because the spool was full",
            m.record_spool_full.clone(),
        );
        registry.register(
            "record_active",
            "Recordings being written now",
            m.record_active.clone(),
        );
        registry.register(
            "record_finished",
            "Recordings finalized, by state (finished, interrupted)",
            m.record_finished.clone(),
        );
        registry.register(
            "relay_bytes",
            "Bytes sent to each relay target",
            m.relay_bytes.clone(),
        );
        registry.register(
            "relay_reconnects",
            "Relay connection failures followed by a reconnection attempt",
            m.relay_reconnects.clone(),
        );
        registry.register(
            "relay_dropped_frames",
            "Frames dropped (whole GOPs) because a relay target was too slow",
            m.relay_dropped_frames.clone(),
        );
        registry.register(
            "relay_up",
            "1 while a relay is connected and publishing, 0 otherwise",
            m.relay_up.clone(),
        );
        registry.register(
            "relays_live",
            "Relays connected and publishing now",
            m.relays_live.clone(),
        );
        registry.register(
            "http_connections_refused",
            "HTTP connections closed at accept, by reason (connection_limit, connection_limit_per_ip)",
            m.http_refused.clone(),
        );
        registry.register(
            "http_connections_timed_out",
            "HTTP connections closed by a timeout, by reason (first_byte, idle, stalled)",
            m.http_closed.clone(),
        );
        registry.register(
            "http_connections",
            "HTTP connections served, by protocol (http1, http2) and tls (yes, no)",
            m.http_connections.clone(),
        );
        registry.register(
            "http_response_bytes",
            "HTTP response body bytes sent (segments, playlists, pages, API)",
            m.http_response_bytes.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out, by listener (http, rtmp)",
            m.tls_handshake_failures.clone(),
        );
        registry.register(
            "tls_certificate_reloads",
            "Certificate files reloaded after a change, by listener and result (ok, failed)",
            m.tls_cert_reloads.clone(),
        );
        registry.register(
            "whip_sessions",
            "WHIP (WebRTC) sessions open now, connecting or publishing",
            m.whip_sessions.clone(),
        );
        registry.register(
            "whip_sessions_ended",
            "WHIP sessions ended, by reason (deleted, idle_timeout, taken_over, connect_timeout, ...)",
            m.whip_ended.clone(),
        );
        registry.register(
            "whip_failures",
            "WHIP publish attempts that failed, by reason (bad_key, unusable_offer, connect_timeout, ...)",
            m.whip_failures.clone(),
        );
        registry.register(
            "whip_keyframe_requests",
            "Keyframe requests sent to WebRTC publishers, by kind (pli, fir)",
            m.whip_keyframe_requests.clone(),
        );
        registry.register(
            "cluster_redis_up",
            "1 while this node's cluster event listener is connected to Redis, 0 while not",
            m.cluster_redis_up.clone(),
        );
        registry.register(
            "cluster_route_fallback",
            "Requests for a stream of another node routed without a fresh owner from Redis: \
             `stale_owner` (Redis down, the last known owner used) or `unavailable` (503)",
            m.cluster_route_fallback.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook events by type and result: delivered, failed (every attempt refused) or \
             dropped (queue full)",
            m.webhook_deliveries.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Label values are `'static` on purpose: no label may carry an error text, a path or a URL.
    pub fn refused(&self, reason: &'static str) {
        self.publish_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn session_ended(&self, reason: &'static str) {
        self.sessions_ended
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn http_refused(&self, reason: &'static str) {
        self.http_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn http_timed_out(&self, reason: &'static str) {
        self.http_closed
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn http_connection(&self, protocol: &'static str, tls: bool) {
        self.http_connections
            .get_or_create(&HttpConnLabel {
                protocol: protocol.to_string(),
                tls: if tls { "yes" } else { "no" }.to_string(),
            })
            .inc();
    }

    pub fn tls_handshake_failed(&self, listener: &'static str) {
        self.tls_handshake_failures
            .get_or_create(&ListenerLabel {
                listener: listener.to_string(),
            })
            .inc();
    }

    pub fn tls_cert_reloaded(&self, listener: &'static str, ok: bool) {
        self.tls_cert_reloads
            .get_or_create(&TlsLabel {
                listener: listener.to_string(),
                result: if ok { "ok" } else { "failed" }.to_string(),
            })
            .inc();
    }

    pub fn whip_ended(&self, reason: &'static str) {
        self.whip_ended
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn whip_failed(&self, reason: &'static str) {
        self.whip_failures
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn whip_keyframe_requests(&self, plis: u64, firs: u64) {
        for (kind, n) in [("pli", plis), ("fir", firs)] {
            if n > 0 {
                self.whip_keyframe_requests
                    .get_or_create(&ReasonLabel {
                        reason: kind.to_string(),
                    })
                    .inc_by(n);
            }
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters() {
        let m = Metrics::new();
        m.publish_accepted.inc();
        m.refused("bad_key");
        let text = m.render();
        assert!(text.contains("livegate_publish_accepted_total 1"), "{text}");
        assert!(
            text.contains("livegate_publish_refused_total{reason=\"bad_key\"} 1"),
            "{text}"
        );
    }
}
