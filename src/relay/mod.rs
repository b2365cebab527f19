//! Relays: each live stream pushed to its user's targets (YouTube, Twitch, Facebook, any
//! RTMP/RTMPS URL), as published or as one ladder rung.
//!
//! Per target a supervised task connects, publishes and sends, and on any failure reconnects
//! with exponential backoff and jitter for as long as the source is live. It is fed through a
//! bounded queue by a [`Feeder`] that never blocks its producer: when the queue is full, whole
//! GOPs are dropped (and counted) until a keyframe finds room again. A rung relay subscribes to
//! that rung's hub rendition the way a source relay subscribes to the source. A slow or dead target
//! therefore never slows ingest, HLS, recording or the other relays.

pub mod client;
mod feed;
pub mod store;
pub mod target;
pub mod targets;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rml_rtmp::sessions::StreamMetadata;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{Config, RelayConfig};
use crate::media::{MediaEvent, TrackKind};
use crate::metrics::{Metrics, RelayLabel};
use crate::rtmp::flv::FlvMuxer;
use crate::stream::queue::{gop_queue, Queued};
use crate::stream::{LiveStream, Subscription};
use client::{ClientError, RtmpPush};
pub use feed::Feeder;
pub use store::{RelayStore, RelayStoreError, MAX_RELAYS_PER_USER};
pub use target::{Platform, RelayTarget, RtmpUrl, TargetError};
pub use targets::{RelayTargets, Targets};

/// A connection that stayed up this long resets the backoff to its minimum.
const STABLE_AFTER: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("relay.ca_file {path}: {message}")]
    CaFile { path: String, message: String },
}

/// Status of one relay, shared by its task, its feeder and the status report.
pub struct RelayState {
    pub target: RelayTarget,
    labels: RelayLabel,
    inner: Mutex<StateInner>,
    bytes_sent: AtomicU64,
    dropped_frames: AtomicU64,
    finished: AtomicBool,
}

struct StateInner {
    /// The rung actually pushed (None: the source).
    rung: Option<String>,
    state: &'static str,
    last_error: Option<String>,
    reconnects: u64,
    connected_since: Option<DateTime<Utc>>,
}

/// A relay in `/api/v1/streams` (under `relays`).
#[derive(Debug, Serialize)]
pub struct RelayStatus {
    pub id: String,
    pub platform: &'static str,
    /// Where it goes: scheme, host and port only (this status is public; the admin API's
    /// `/api/v1/relays` shows more).
    pub target: String,
    pub rung: String,
    /// `connecting`, `live`, `reconnecting` (waiting to retry) or `stopped`.
    pub state: &'static str,
    pub bytes_sent: u64,
    pub last_error: Option<String>,
    pub reconnects: u64,
    pub dropped_frames: u64,
    pub connected_since: Option<DateTime<Utc>>,
}

impl RelayState {
    fn new(target: RelayTarget, rung: Option<String>) -> Arc<Self> {
        Arc::new(RelayState {
            labels: RelayLabel {
                user: target.user.clone(),
                relay: target.id.clone(),
                platform: target.platform.as_str().to_string(),
            },
            target,
            inner: Mutex::new(StateInner {
                rung,
                state: "connecting",
                last_error: None,
                reconnects: 0,
                connected_since: None,
            }),
            bytes_sent: AtomicU64::new(0),
            dropped_frames: AtomicU64::new(0),
            finished: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StateInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn status(&self) -> RelayStatus {
        let inner = self.lock();
        RelayStatus {
            id: self.target.id.clone(),
            platform: self.target.platform.as_str(),
            target: RtmpUrl::parse(&self.target.url)
                .map(|u| u.origin())
                .unwrap_or_default(),
            rung: inner.rung.clone().unwrap_or_else(|| "source".into()),
            state: inner.state,
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            last_error: inner.last_error.clone(),
            reconnects: inner.reconnects,
            dropped_frames: self.dropped_frames.load(Ordering::Relaxed),
            connected_since: inner.connected_since,
        }
    }
}

/// Starts and supervises every stream's relays.
pub struct RelayManager {
    config: RelayConfig,
    targets: Targets,
    tls: Arc<rustls::ClientConfig>,
    metrics: Arc<Metrics>,
    /// Running relays by (user, relay id), to stop one removed while live.
    running: Mutex<Vec<RunningRelay>>,
    next_serial: AtomicU64,
}

struct RunningRelay {
    serial: u64,
    user: String,
    id: String,
    stop: CancellationToken,
}

impl RelayManager {
    /// A manager of the targets in `targets`.
    pub fn new(
        config: &Config,
        targets: Targets,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<RelayManager>, RelayError> {
        let tls =
            crate::rtmp::tls::client_config_with_ca_file(&config.relay.ca_file).map_err(|e| {
                RelayError::CaFile {
                    path: config.relay.ca_file.clone(),
                    message: e.to_string(),
                }
            })?;
        Ok(Arc::new(RelayManager {
            config: config.relay.clone(),
            targets,
            tls,
            metrics,
            running: Mutex::new(Vec::new()),
            next_serial: AtomicU64::new(0),
        }))
    }

    /// The stored relay targets (for the admin API).
    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// Relay pushes still running (shutdown waits for them to end their RTMP sessions).
    pub fn running_count(&self) -> usize {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Stops a running relay (its target was removed). Returns whether one was running.
    pub fn stop(&self, user: &str, id: &str) -> bool {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut found = false;
        for r in running.iter().filter(|r| r.user == user && r.id == id) {
            r.stop.cancel();
            found = true;
        }
        found
    }

    /// Starts `stream`'s relays: each pushes the source, or the ladder rung it names (a hub
    /// rendition of the stream), or the tallest rung when the source's codec cannot go over RTMP.
    pub fn start(self: &Arc<Self>, stream: &Arc<LiveStream>) {
        if !self.config.enabled {
            return;
        }
        // Subscribe now, synchronously, so the relays start from this stream's first keyframe.
        let subscription = stream.subscribe();
        let manager = self.clone();
        let stream = stream.clone();
        let span = tracing::info_span!(parent: None, "relays", stream = %stream.name, session = stream.session_id);
        tokio::spawn(
            async move {
                let targets = manager.targets_for(&stream).await;
                if targets.is_empty() {
                    return;
                }
                manager.run_relays(stream, subscription, targets).await;
            }
            .instrument(span),
        );
    }

    async fn targets_for(&self, stream: &LiveStream) -> Vec<RelayTarget> {
        let mut targets = match self.targets.list(Some(&stream.name)).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the relay targets; not relaying");
                Vec::new()
            }
        };
        let query = stream.publish_query.as_str();
        if !query.is_empty() {
            let (from_query, ignored) =
                target::query_targets(&stream.name, query, &self.config.presets);
            if !self.config.allow_query_targets {
                if !from_query.is_empty() {
                    tracing::info!(count = from_query.len(),
                        "relay targets in the publish URL ignored (relay.allow_query_targets is off)");
                }
            } else {
                if !ignored.is_empty() {
                    // Counted, not named: a pasted key could be a parameter's name.
                    tracing::warn!(
                        count = ignored.len(),
                        "publish URL parameters not understood as relay targets (expected youtube=, twitch=, facebook=)"
                    );
                }
                targets.extend(from_query);
            }
        }
        targets
    }

    async fn run_relays(
        self: Arc<Self>,
        stream: Arc<LiveStream>,
        mut subscription: Subscription,
        targets: Vec<RelayTarget>,
    ) {
        let mut states = Vec::new();
        let mut source_feeds = Vec::new();
        for target in targets {
            let url = match RtmpUrl::parse(&target.url) {
                Ok(u) => u,
                Err(e) => {
                    tracing::error!(relay = %target.id, error = %e, "relay target unusable; skipped");
                    continue;
                }
            };
            let rung = target.rung.clone();
            let state = RelayState::new(target, rung.clone());
            let (queue, rx, _) = gop_queue(
                self.config.queue_frames,
                (self.config.queue_max_mib as usize).saturating_mul(1 << 20),
            );
            let feeder = Feeder::new(queue, state.clone(), self.metrics.clone());
            let span = tracing::info_span!("relay", id = %state.target.id,
                platform = state.target.platform.as_str(), target = %state.target.redacted_url());
            match &rung {
                Some(r) => {
                    let feed = feed::feed_rendition(stream.clone(), Some(r.clone()), feeder);
                    tokio::spawn(feed.instrument(span.clone()));
                }
                None => source_feeds.push((feeder, span.clone())),
            }
            tracing::info!(parent: &span, rung = rung.as_deref().unwrap_or("source"), "relay starting");
            let stop = CancellationToken::new();
            let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
            self.running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(RunningRelay {
                    serial,
                    user: state.target.user.clone(),
                    id: state.target.id.clone(),
                    stop: stop.clone(),
                });
            let manager = self.clone();
            let task_state = state.clone();
            tokio::spawn(
                async move {
                    manager.clone().supervise(url, rx, task_state, stop).await;
                    manager
                        .running
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .retain(|r| r.serial != serial);
                }
                .instrument(span),
            );
            states.push(state);
        }
        if states.is_empty() {
            return;
        }
        // Status every second until every relay has stopped.
        let report_states = states.clone();
        let report_stream = stream.clone();
        let reporter = tokio::spawn(async move {
            loop {
                report(&report_stream, &report_states);
                if report_states
                    .iter()
                    .all(|s| s.finished.load(Ordering::Relaxed))
                {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        // The source relays share one subscription. A source codec RTMP relays cannot carry
        // (HEVC, AV1 through the ladder) moves them to the tallest rung instead.
        while let Some(event) = subscription.recv().await {
            if source_feeds.is_empty() {
                break;
            }
            let unrelayable = match &event {
                MediaEvent::VideoConfig(v) => !v.codec.passes_through(),
                MediaEvent::AudioConfig(a) => !a.codec.passes_through(),
                _ => false,
            };
            if unrelayable {
                for (feeder, span) in source_feeds.drain(..) {
                    tracing::warn!(parent: &span,
                        "the source's codec cannot be relayed over RTMP; relaying the tallest rung");
                    let feed = feed::feed_rendition(stream.clone(), None, feeder);
                    tokio::spawn(feed.instrument(span));
                }
                break;
            }
            source_feeds.retain_mut(|(f, _)| f.offer(&event));
        }
        drop(source_feeds);
        drop(subscription);
        let _ = reporter.await;
    }

    /// One relay: connect, push, and reconnect with backoff until the source ends.
    async fn supervise(
        self: Arc<Self>,
        url: RtmpUrl,
        mut rx: mpsc::Receiver<Queued>,
        state: Arc<RelayState>,
        stop: CancellationToken,
    ) {
        let mut muxer = FlvMuxer::new();
        let mut waiting = Waiting::new(
            self.config.queue_frames,
            (self.config.queue_max_mib as usize).saturating_mul(1 << 20),
        );
        let mut backoff = BACKOFF_MIN;
        let max_backoff = Duration::from_secs(self.config.max_backoff_secs);
        let connect_timeout = Duration::from_secs(self.config.connect_timeout_secs);
        loop {
            state.lock().state = "connecting";
            // Connect while the queue keeps draining (configuration is tracked, media waits for
            // the first keyframe after the publish is accepted).
            let attempt = {
                let connect = RtmpPush::connect(&url, &self.tls, metadata(&muxer));
                tokio::pin!(connect);
                let deadline = tokio::time::sleep(connect_timeout);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        r = &mut connect => break r,
                        _ = &mut deadline => break Err(ClientError::Protocol(format!(
                            "no accepted publish within {} s", connect_timeout.as_secs()))),
                        event = rx.recv() => match event {
                            Some(q) => waiting.push(&mut muxer, q.event),
                            None => return self.stopped(&state),
                        },
                        _ = stop.cancelled() => return self.stopped(&state),
                    }
                }
            };
            let failure = match attempt {
                Ok(push) => {
                    let connected = Instant::now();
                    {
                        let mut inner = state.lock();
                        inner.state = "live";
                        inner.connected_since = Some(Utc::now());
                    }
                    self.metrics.relays_live.inc();
                    self.metrics.relay_up.get_or_create(&state.labels).set(1);
                    tracing::info!("relay live");
                    let backlog = waiting.take();
                    let result = self
                        .pump(push, backlog, &mut rx, &mut muxer, &state, &stop)
                        .await;
                    self.metrics.relays_live.dec();
                    self.metrics.relay_up.get_or_create(&state.labels).set(0);
                    state.lock().connected_since = None;
                    match result {
                        Ok(()) => return self.stopped(&state),
                        Err(e) => {
                            if connected.elapsed() >= STABLE_AFTER {
                                backoff = BACKOFF_MIN;
                            }
                            e
                        }
                    }
                }
                Err(e) => e,
            };
            let wait = backoff.mul_f64(rand::random_range(0.8..1.2));
            {
                let mut inner = state.lock();
                inner.state = "reconnecting";
                inner.last_error = Some(failure.to_string());
                inner.reconnects += 1;
            }
            self.metrics
                .relay_reconnects
                .get_or_create(&state.labels)
                .inc();
            tracing::warn!(error = %failure, retry_in_ms = wait.as_millis() as u64, "relay failed; reconnecting");
            backoff = (backoff * 2).min(max_backoff);
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    event = rx.recv() => match event {
                        Some(q) => waiting.push(&mut muxer, q.event),
                        None => return self.stopped(&state),
                    },
                    _ = stop.cancelled() => return self.stopped(&state),
                }
            }
        }
    }

    /// Sends until the source ends (Ok) or the connection fails (Err).
    async fn pump(
        &self,
        mut push: RtmpPush,
        backlog: Vec<MediaEvent>,
        rx: &mut mpsc::Receiver<Queued>,
        muxer: &mut FlvMuxer,
        state: &RelayState,
        stop: &CancellationToken,
    ) -> Result<(), ClientError> {
        muxer.restart();
        let mut counted = push.bytes_sent;
        state.bytes_sent.fetch_add(counted, Ordering::Relaxed);
        let bytes = self
            .metrics
            .relay_bytes
            .get_or_create(&state.labels)
            .clone();
        bytes.inc_by(counted);
        // What came while connecting: the current GOP, so the push starts at once.
        for event in &backlog {
            for tag in muxer.push(event) {
                push.send(&tag).await?;
            }
        }
        loop {
            tokio::select! {
                event = rx.recv() => {
                    let Some(Queued { event, .. }) = event else {
                        push.finish().await;
                        return Ok(());
                    };
                    for tag in muxer.push(&event) {
                        push.send(&tag).await?;
                    }
                }
                input = push.next_input() => push.handle_input(&input?).await?,
                _ = stop.cancelled() => {
                    push.finish().await;
                    return Ok(());
                }
            }
            let sent = push.bytes_sent - counted;
            counted = push.bytes_sent;
            state.bytes_sent.fetch_add(sent, Ordering::Relaxed);
            bytes.inc_by(sent);
        }
    }

    fn stopped(&self, state: &RelayState) {
        state.lock().state = "stopped";
        state.finished.store(true, Ordering::Relaxed);
        tracing::info!(
            bytes_sent = state.bytes_sent.load(Ordering::Relaxed),
            "relay stopped (the source ended or the target was removed)"
        );
    }
}

/// What arrives while a relay is not connected: configuration goes to the muxer, media since the
/// last keyframe is kept (bounded) to start the next connection with.
struct Waiting {
    gop: Vec<MediaEvent>,
    limit: usize,
    /// Payload bytes in `gop`, held to `max_bytes` (a GOP beyond either bound is dropped).
    bytes: usize,
    max_bytes: usize,
}

impl Waiting {
    fn new(limit: usize, max_bytes: usize) -> Self {
        Waiting {
            gop: Vec::new(),
            limit,
            bytes: 0,
            max_bytes,
        }
    }

    fn push(&mut self, muxer: &mut FlvMuxer, event: MediaEvent) {
        match &event {
            MediaEvent::VideoConfig(_) | MediaEvent::AudioConfig(_) => muxer.observe(&event),
            MediaEvent::Packet(p) => {
                let video = muxer.video_config().is_some();
                if (p.track == TrackKind::Video && p.keyframe)
                    || self.gop.len() >= self.limit
                    || self.bytes + p.data.len() > self.max_bytes
                {
                    self.gop.clear();
                    self.bytes = 0;
                }
                // Without video, a short audio tail is enough to start from.
                if !video && self.gop.len() >= 50 {
                    if let MediaEvent::Packet(first) = self.gop.remove(0) {
                        self.bytes -= first.data.len();
                    }
                }
                if p.data.len() <= self.max_bytes {
                    self.bytes += p.data.len();
                    self.gop.push(event);
                }
            }
            MediaEvent::End(_) => {}
        }
    }

    fn take(&mut self) -> Vec<MediaEvent> {
        self.bytes = 0;
        std::mem::take(&mut self.gop)
    }
}

fn report(stream: &LiveStream, states: &[Arc<RelayState>]) {
    let statuses: Vec<RelayStatus> = states.iter().map(|s| s.status()).collect();
    if let Ok(value) = serde_json::to_value(&statuses) {
        stream.set_status("relays", value);
    }
}

/// `onMetaData` for the target, from what the stream has announced so far.
fn metadata(muxer: &FlvMuxer) -> Option<StreamMetadata> {
    let mut m = StreamMetadata::new();
    if let Some(v) = muxer.video_config() {
        m.video_width = Some(v.width);
        m.video_height = Some(v.height);
        m.video_codec_id = Some(7);
        m.video_frame_rate = v.fps.map(|f| f as f32);
    }
    if let Some(a) = muxer.audio_config() {
        m.audio_codec_id = Some(10);
        m.audio_sample_rate = Some(a.sample_rate);
        m.audio_channels = Some(u32::from(a.channels));
        m.audio_is_stereo = Some(a.channels >= 2);
    }
    m.encoder = Some(format!("livegate {}", env!("CARGO_PKG_VERSION")));
    Some(m)
}
