//! Prometheus metrics (`GET /metrics`), OpenMetrics text via `prometheus-client`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

pub struct Metrics {
    registry: Registry,
    pub rtmp_connections: Counter,
    pub rtmp_active: Gauge,
    pub publish_accepted: Counter,
    pub publish_refused: Family<ReasonLabel, Counter>,
    pub sessions_ended: Family<ReasonLabel, Counter>,
    pub ingest_bytes: Counter,
    pub hls_segments: Counter,
    pub live_streams: Gauge,
    pub transcoders: Gauge,
    pub transcode_dropped_frames: Counter,
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
            live_streams: Gauge::default(),
            transcoders: Gauge::default(),
            transcode_dropped_frames: Counter::default(),
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
        Metrics { registry, ..m }
    }

    pub fn refused(&self, reason: &str) {
        self.publish_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn session_ended(&self, reason: &str) {
        self.sessions_ended
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
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
