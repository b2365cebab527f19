//! Request latencies per kind, errors and bytes, shared by every simulated client.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What one client did, merged into [`Stats`] in batches (a lock per request would be the
/// bottleneck at 10,000 clients).
#[derive(Default)]
pub struct Local {
    latencies: BTreeMap<&'static str, Vec<u32>>,
    /// The requests asked once every viewer had joined: the ramp's connection storm aside.
    steady: BTreeMap<&'static str, Vec<u32>>,
    /// Every kind, by the progress interval it was asked in: when in the run the tail grew.
    windows: BTreeMap<u32, Vec<u32>>,
    errors: BTreeMap<String, u64>,
}

impl Local {
    /// A request asked at `asked`, answered now; steady when asked at or after
    /// `clock.steady_from`.
    pub fn request(&mut self, kind: &'static str, asked: Instant, clock: &Clock) {
        let micros = u32::try_from(asked.elapsed().as_micros()).unwrap_or(u32::MAX);
        self.latencies.entry(kind).or_default().push(micros);
        if asked >= clock.steady_from {
            self.steady.entry(kind).or_default().push(micros);
        }
        let window = asked.saturating_duration_since(clock.start).as_secs_f64()
            / clock.window.as_secs_f64().max(0.001);
        self.windows.entry(window as u32).or_default().push(micros);
    }

    pub fn error(&mut self, what: String) {
        *self.errors.entry(what).or_default() += 1;
    }
}

/// The run's timeline, for sorting requests into the ramp, the steady part and intervals.
#[derive(Clone, Copy)]
pub struct Clock {
    pub start: Instant,
    /// When the last viewer joins.
    pub steady_from: Instant,
    /// The progress interval.
    pub window: Duration,
}

#[derive(Default)]
pub struct Stats {
    merged: Mutex<Local>,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub bytes: AtomicU64,
}

impl Stats {
    /// Counted at once, for the per-interval lines.
    pub fn count(&self, bytes: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn merge(&self, local: &mut Local) {
        let mut merged = self.merged.lock().unwrap_or_else(|e| e.into_inner());
        for (kind, mut v) in std::mem::take(&mut local.latencies) {
            merged.latencies.entry(kind).or_default().append(&mut v);
        }
        for (kind, mut v) in std::mem::take(&mut local.steady) {
            merged.steady.entry(kind).or_default().append(&mut v);
        }
        for (window, mut v) in std::mem::take(&mut local.windows) {
            merged.windows.entry(window).or_default().append(&mut v);
        }
        for (what, n) in std::mem::take(&mut local.errors) {
            *merged.errors.entry(what).or_default() += n;
        }
    }

    /// Per kind: count, p50, p99, max (ms), over the whole run and once every viewer had
    /// joined; every kind by progress interval (`windows[i]` holds the requests asked in the
    /// i-th interval); and the errors by kind.
    pub fn summary(&self) -> serde_json::Value {
        let mut merged = self.merged.lock().unwrap_or_else(|e| e.into_inner());
        let merged = &mut *merged;
        serde_json::json!({
            "kinds": by_kind(&mut merged.latencies),
            "steady_kinds": by_kind(&mut merged.steady),
            "windows": by_window(&mut merged.windows),
            "errors": merged.errors,
        })
    }
}

/// Count, p50, p99 and max (ms) of some latencies, sorting them.
fn quantiles(v: &mut [u32]) -> serde_json::Map<String, serde_json::Value> {
    v.sort_unstable();
    let mut q = serde_json::Map::new();
    q.insert("count".into(), v.len().into());
    q.insert("p50_ms".into(), percentile(v, 0.50).into());
    q.insert("p99_ms".into(), percentile(v, 0.99).into());
    q.insert("max_ms".into(), percentile(v, 1.0).into());
    q
}

fn by_kind(latencies: &mut BTreeMap<&'static str, Vec<u32>>) -> serde_json::Value {
    latencies
        .iter_mut()
        .map(|(kind, v)| ((*kind).to_string(), quantiles(v).into()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn by_window(windows: &mut BTreeMap<u32, Vec<u32>>) -> serde_json::Value {
    windows
        .iter_mut()
        .map(|(window, v)| {
            let mut q = quantiles(v);
            q.insert("window".into(), (*window).into());
            serde_json::Value::Object(q)
        })
        .collect()
}

/// The `q` quantile of sorted microseconds, in milliseconds.
pub fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0
}
