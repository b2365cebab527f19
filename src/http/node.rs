//! `GET /api/v1/node` (admin): this node's load — streams, ladders, viewers, CPU, memory,
//! egress — so an operator or a placement script can tell how full the node is. Rates come from
//! the server's 5-second sweep ([`NodeLoad::sample`]); counts are read at request time.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;

use super::{admin, ApiError, AppState};
use crate::metrics::Metrics;
use crate::util::process::{heap_in_use, usage, Usage};

/// Rates over the last sweep interval, and the process's usage at its end.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Rates {
    /// CPU-seconds per second (1.0 = one core busy).
    pub cpu_cores_used: f64,
    pub egress_bits_per_sec: f64,
    pub ingest_bits_per_sec: f64,
    /// Seconds the rates were measured over (0 before the second sample).
    pub window_secs: f64,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    cpu_secs: f64,
    egress_bytes: u64,
    ingest_bytes: u64,
}

/// The node's load as last sampled.
#[derive(Debug)]
pub struct NodeLoad {
    started: Instant,
    last: Mutex<(Option<Reading>, Rates, Usage)>,
}

impl Default for NodeLoad {
    fn default() -> Self {
        NodeLoad {
            started: Instant::now(),
            last: Mutex::new((None, Rates::default(), Usage::default())),
        }
    }
}

impl NodeLoad {
    /// Reads the process's CPU and the byte counters; the rates are the change since the last
    /// call.
    pub fn sample(&self, metrics: &Metrics, now: Instant) {
        let Some(process) = usage(None) else {
            return;
        };
        let reading = Reading {
            at: now,
            cpu_secs: process.cpu_secs,
            egress_bytes: metrics.http_response_bytes.get(),
            ingest_bytes: metrics.ingest_bytes.get(),
        };
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(before) = last.0 {
            last.1 = rates(before, reading);
        }
        last.0 = Some(reading);
        last.2 = process;
    }

    fn current(&self) -> (Rates, Usage) {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        (last.1, last.2)
    }
}

fn rates(before: Reading, now: Reading) -> Rates {
    let secs = now.at.saturating_duration_since(before.at).as_secs_f64();
    if secs <= 0.0 {
        return Rates::default();
    }
    let bits = |a: u64, b: u64| b.saturating_sub(a) as f64 * 8.0 / secs;
    Rates {
        cpu_cores_used: (now.cpu_secs - before.cpu_secs).max(0.0) / secs,
        egress_bits_per_sec: bits(before.egress_bytes, now.egress_bytes),
        ingest_bits_per_sec: bits(before.ingest_bytes, now.ingest_bytes),
        window_secs: secs,
    }
}

#[derive(Serialize)]
pub(super) struct NodeView {
    /// `cluster.node_id`, else empty.
    node: String,
    version: &'static str,
    uptime_secs: u64,
    /// CPUs this process may run on.
    cores: usize,
    /// Streams published to this node, and how many of them run a ladder.
    streams: usize,
    ladders: i64,
    max_ladders: usize,
    whip_sessions: i64,
    relays_live: i64,
    /// Players of this node's streams within `access.viewer_window_secs`.
    viewers: usize,
    http_connections_limit: usize,
    #[serde(flatten)]
    rates: Rates,
    /// `cpu_cores_used / cores`.
    cpu_share: f64,
    #[serde(flatten)]
    usage: Usage,
    /// Bytes in live allocations now (RSS less what the allocator keeps freed); None where the
    /// allocator cannot tell.
    heap_in_use_bytes: Option<u64>,
}

pub(super) async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<NodeView>, ApiError> {
    admin::authorize(&state, &headers)?;
    let (rates, usage) = state.node_load.current();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let now = Instant::now();
    let streams = state.hub.list();
    let viewers = streams
        .iter()
        .map(|s| state.audience.stats(&s.name, now).viewers)
        .sum();
    let m = &state.metrics;
    Ok(Json(NodeView {
        node: state.config.cluster.node_id.clone(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: state.node_load.started.elapsed().as_secs(),
        cores,
        streams: streams.len(),
        ladders: m.transcoders.get(),
        max_ladders: state.config.transcode.max_ladders,
        whip_sessions: m.whip_sessions.get(),
        relays_live: m.relays_live.get(),
        viewers,
        http_connections_limit: state.config.http.max_connections,
        rates,
        cpu_share: rates.cpu_cores_used / cores as f64,
        usage,
        heap_in_use_bytes: heap_in_use(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rates_are_the_change_over_the_window() {
        let at = Instant::now();
        let before = Reading {
            at,
            cpu_secs: 10.0,
            egress_bytes: 1_000,
            ingest_bytes: 0,
        };
        let now = Reading {
            at: at + Duration::from_secs(5),
            cpu_secs: 13.0,
            egress_bytes: 1_000 + 5 * 125_000_000,
            ingest_bytes: 5 * 250_000,
        };
        let r = rates(before, now);
        assert!((r.cpu_cores_used - 0.6).abs() < 1e-9, "{r:?}");
        assert!((r.egress_bits_per_sec - 1e9).abs() < 1e-3, "{r:?}");
        assert!((r.ingest_bits_per_sec - 2e6).abs() < 1e-6, "{r:?}");
        assert_eq!(r.window_secs, 5.0);
        // A counter that went backwards (never: they only grow) or no time passed: no rate.
        assert_eq!(rates(now, now).window_secs, 0.0);
        assert_eq!(rates(now, before).egress_bits_per_sec, 0.0);
    }

    #[test]
    fn a_sample_reads_this_process() {
        let load = NodeLoad::default();
        let metrics = Metrics::new();
        load.sample(&metrics, Instant::now());
        metrics.http_response_bytes.inc_by(1_000_000);
        load.sample(&metrics, Instant::now() + Duration::from_secs(1));
        let (rates, usage) = load.current();
        assert!(usage.threads >= 1 && usage.rss_bytes > 0, "{usage:?}");
        assert!(rates.egress_bits_per_sec > 0.0, "{rates:?}");
    }
}
