//! The stream hub: stream name (the publishing user) → live stream, and fan-out of its media to
//! any number of consumers (the ladder or passthrough HLS, relays).
//!
//! A live stream also carries the renditions a consumer makes of it (the ladder's rungs): each
//! is fanned out exactly as the source is, so a relay subscribes to a rung the way it subscribes
//! to the source.
//!
//! Fan-out uses a bounded broadcast ring: the publisher never waits for a consumer, and a consumer
//! that falls more than the ring behind skips ahead to the next keyframe (counted) instead of
//! slowing anyone else. A consumer that joins late first gets the codec configuration and the
//! packets since the last video keyframe, so it can start decoding at once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::media::{AudioConfig, EndReason, MediaEvent, TrackKind, VideoConfig};

mod ends;
mod hub;
pub mod queue;
pub mod rate;

pub use ends::{Publisher, Subscription};
pub use hub::Hub;

use crate::util::log_throttle::LogThrottle;
use rate::RateWindow;

/// Events the ring holds. It keeps its slots filled, so this bounds memory per stream too.
const RING_CAPACITY: usize = 512;
/// Upper bounds on the late-joiner cache; a source whose GOP exceeds them is joined at the next
/// keyframe instead.
const GOP_CACHE_MAX_EVENTS: usize = 4096;
const GOP_CACHE_MAX_BYTES: usize = 32 << 20;
const BITRATE_WINDOW: Duration = Duration::from_secs(5);
/// The message rate is judged over at least this span, so a stream's first burst (its
/// configuration and a GOP sent at once) does not read as a flood.
const MIN_RATE_SPAN: Duration = Duration::from_secs(2);

/// Ring drops, at most one line per stream per 10 s.
static RING_DROP_LOG: LogThrottle = LogThrottle::new(Duration::from_secs(10));
/// Consumers skipping ahead, at most one line per stream per 10 s.
static LAG_LOG: LogThrottle = LogThrottle::new(Duration::from_secs(10));

/// Limits on what one publish session may put through the hub.
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    /// Media messages a second (averaged over a few seconds) above which the session is ended:
    /// a real encoder sends a few hundred at most (240 fps video and 96 kHz audio).
    pub max_messages_per_sec: u32,
    /// Bytes the fan-out ring may hold. Beyond it, whole GOPs are dropped at the source (every
    /// consumer skips them) until a keyframe fits again.
    pub ring_max_bytes: usize,
}

impl Default for HubLimits {
    fn default() -> Self {
        HubLimits {
            max_messages_per_sec: 1000,
            ring_max_bytes: 128 << 20,
        }
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every critical section
/// here leaves the data consistent, so continuing is safe and keeps other streams running.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Snapshot of a live stream for the API.
#[derive(Debug, Clone, Serialize)]
pub struct StreamSummary {
    pub name: String,
    pub session_id: u64,
    pub started_at: DateTime<Utc>,
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<f64>,
    pub audio_sample_rate: Option<u32>,
    pub audio_channels: Option<u8>,
    /// Ingest bitrate over the last few seconds, bits per second.
    pub ingest_bitrate: u64,
    pub bytes_received: u64,
    pub video_frames: u64,
    pub audio_frames: u64,
    /// Events consumers skipped because they fell behind.
    pub consumer_lag_drops: u64,
    pub consumers: usize,
    /// What each consumer reports about itself (e.g. `transcode`).
    #[serde(flatten)]
    pub consumer_status: std::collections::BTreeMap<String, serde_json::Value>,
}

struct Fanout {
    sender: Option<broadcast::Sender<MediaEvent>>,
    video: Option<Arc<VideoConfig>>,
    audio: Option<Arc<AudioConfig>>,
    gop: Vec<MediaEvent>,
    gop_bytes: usize,
    ended: Option<EndReason>,
    /// Payload sizes of the events the ring holds (it keeps its last RING_CAPACITY events).
    ring_sizes: VecDeque<usize>,
    ring_bytes: usize,
    /// Dropping packets until a keyframe fits in the ring's byte budget.
    ring_dropping: bool,
}

struct IngestStats {
    bytes_total: u64,
    video_frames: u64,
    audio_frames: u64,
    window: RateWindow,
    fps_hint: Option<f64>,
}

/// One rendition of a live stream: its name (in URLs) and picture size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenditionInfo {
    pub name: String,
    pub width: u32,
    pub height: u32,
}

/// What is known of a stream's renditions.
#[derive(Debug, Clone, PartialEq)]
pub enum RenditionPlan {
    /// Not decided yet (the codecs are not known yet).
    Pending,
    /// Served through the ladder with these renditions (ascending), or as published when empty.
    Planned(Arc<Vec<RenditionInfo>>),
    /// The stream ended before a plan was made.
    Ended,
}

/// Why the server told a session to end (the publisher's own stop has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// Its stream key was revoked or rotated.
    Revoked,
    /// A publish of the same stream on another node took it over.
    TakenOver,
    /// The server is shutting down.
    Shutdown,
    /// A consumer could not serve it, or it broke a limit ([`LiveStream::abort`]).
    Aborted,
}

/// How a publish session ended, as reported to operators (webhooks, logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The publisher stopped or disconnected.
    Publisher,
    /// A newer publish of the same stream (here or on another node) took over.
    Takeover,
    Revoked,
    Shutdown,
    Error,
}

impl SessionEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionEnd::Publisher => "publisher",
            SessionEnd::Takeover => "takeover",
            SessionEnd::Revoked => "revoked",
            SessionEnd::Shutdown => "shutdown",
            SessionEnd::Error => "error",
        }
    }
}

pub struct LiveStream {
    /// The user's name (or `user/rendition` for a rendition).
    pub name: String,
    /// The query of the publish URL (`KEY?…`), which may name relay targets. Holds secrets:
    /// never logged.
    pub publish_query: String,
    pub session_id: u64,
    pub started_at: DateTime<Utc>,
    /// The session of this node this one took over (it was live when this one started).
    pub replaced_session: Option<u64>,
    /// Cancelled when this session must end: taken over by a new one, or stopped by an operator.
    stop: CancellationToken,
    stop_cause: Mutex<Option<StopCause>>,
    /// Set once when the session ends, for whoever waits on it ([`LiveStream::ended`]).
    end_signal: tokio::sync::watch::Sender<Option<EndReason>>,
    fanout: Mutex<Fanout>,
    stats: Mutex<IngestStats>,
    lag_drops: AtomicU64,
    status: Mutex<std::collections::BTreeMap<String, serde_json::Value>>,
    plan: tokio::sync::watch::Sender<RenditionPlan>,
    renditions: Mutex<HashMap<String, Arc<LiveStream>>>,
    /// Why a consumer ended this session (e.g. a codec nothing here can serve).
    abort_reason: Mutex<Option<String>>,
    /// Why a consumer last asked the publisher for a keyframe, until the publisher takes it
    /// (a WebRTC publisher sends one only when asked; RTMP encoders ignore this).
    keyframe_wanted: Mutex<Option<&'static str>>,
    limits: HubLimits,
    /// The latest thumbnail of the picture (made by the ladder or the thumbnailer).
    thumbnail: Mutex<Option<Arc<Thumbnail>>>,
}

/// A JPEG of the live picture.
#[derive(Debug, Clone)]
pub struct Thumbnail {
    pub jpeg: bytes::Bytes,
    pub width: u32,
    pub height: u32,
    pub taken_at: DateTime<Utc>,
}

impl LiveStream {
    fn new(name: &str, query: &str, session_id: u64, limits: HubLimits) -> LiveStream {
        let (sender, _) = broadcast::channel(RING_CAPACITY);
        let started = Instant::now();
        LiveStream {
            name: name.to_string(),
            publish_query: query.to_string(),
            session_id,
            started_at: Utc::now(),
            replaced_session: None,
            stop: CancellationToken::new(),
            stop_cause: Mutex::new(None),
            end_signal: tokio::sync::watch::Sender::new(None),
            fanout: Mutex::new(Fanout {
                sender: Some(sender),
                video: None,
                audio: None,
                gop: Vec::new(),
                gop_bytes: 0,
                ended: None,
                ring_sizes: VecDeque::with_capacity(RING_CAPACITY),
                ring_bytes: 0,
                ring_dropping: false,
            }),
            stats: Mutex::new(IngestStats {
                bytes_total: 0,
                video_frames: 0,
                audio_frames: 0,
                window: RateWindow::new(started, BITRATE_WINDOW),
                fps_hint: None,
            }),
            lag_drops: AtomicU64::new(0),
            status: Mutex::new(std::collections::BTreeMap::new()),
            plan: tokio::sync::watch::Sender::new(RenditionPlan::Pending),
            renditions: Mutex::new(HashMap::new()),
            abort_reason: Mutex::new(None),
            keyframe_wanted: Mutex::new(None),
            thumbnail: Mutex::new(None),
            limits,
        }
    }

    /// Ends this session from a consumer that cannot serve it (e.g. its codec): the publisher's
    /// connection is told to close, as on an operator stop.
    pub fn abort(&self, reason: &str) {
        tracing::error!(stream = %self.name, session = self.session_id, reason, "ending the publish session");
        self.set_status("error", serde_json::Value::String(reason.to_string()));
        *lock(&self.abort_reason) = Some(reason.to_string());
        lock(&self.stop_cause).get_or_insert(StopCause::Aborted);
        self.stop.cancel();
    }

    /// Asks the publisher for a keyframe (`reason` names the consumer's cause, for stats): a
    /// consumer that starts, or skips ahead, waits for the next one. Publishers that can ask
    /// their encoder (WebRTC's PLI) take it with [`Publisher::keyframe_wanted`].
    pub fn request_keyframe(&self, reason: &'static str) {
        *lock(&self.keyframe_wanted) = Some(reason);
    }

    /// Why the session was ended by [`LiveStream::abort`], if it was.
    pub fn abort_reason(&self) -> Option<String> {
        lock(&self.abort_reason).clone()
    }

    /// The source's current configuration.
    pub fn configs(&self) -> (Option<Arc<VideoConfig>>, Option<Arc<AudioConfig>>) {
        let f = lock(&self.fanout);
        (f.video.clone(), f.audio.clone())
    }

    /// Announces how the stream is served: its renditions, or none (served as published).
    pub fn plan_renditions(&self, renditions: Vec<RenditionInfo>) {
        self.plan
            .send_replace(RenditionPlan::Planned(Arc::new(renditions)));
    }

    /// Waits until the renditions are planned; None if the stream ended first.
    pub async fn renditions(&self) -> Option<Arc<Vec<RenditionInfo>>> {
        let mut rx = self.plan.subscribe();
        let plan = rx
            .wait_for(|p| !matches!(p, RenditionPlan::Pending))
            .await
            .ok()?
            .clone();
        match plan {
            RenditionPlan::Planned(list) => Some(list),
            _ => None,
        }
    }

    /// Starts publishing one rendition of this session (called by the ladder).
    pub fn publish_rendition(&self, rendition: &str) -> Publisher {
        let stream = Arc::new(LiveStream::new(
            &format!("{}/{rendition}", self.name),
            "",
            self.session_id,
            self.limits,
        ));
        lock(&self.renditions).insert(rendition.to_string(), stream.clone());
        Publisher { hub: None, stream }
    }

    /// A rendition being published, to subscribe to.
    pub fn rendition(&self, rendition: &str) -> Option<Arc<LiveStream>> {
        lock(&self.renditions).get(rendition).cloned()
    }

    /// A future that completes when this session must end (takeover or operator stop).
    pub fn stopped(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.stop.cancelled()
    }

    /// Tells this session's publisher to end; the first cause given is the one reported.
    pub fn stop_session(&self, cause: StopCause) {
        lock(&self.stop_cause).get_or_insert(cause);
        self.stop.cancel();
    }

    /// Waits until this session has ended (at once if it has).
    pub async fn ended(&self) -> EndReason {
        let mut ended = self.end_signal.subscribe();
        let reason = match ended.wait_for(Option::is_some).await {
            Ok(reason) => *reason,
            // The sender lives as long as `self`: unreachable, but not worth a panic.
            Err(_) => None,
        };
        reason.unwrap_or(EndReason::Stopped)
    }

    /// How this session ended (or would, if it ended now).
    pub fn end_cause(&self) -> SessionEnd {
        if lock(&self.fanout).ended == Some(EndReason::Replaced) {
            return SessionEnd::Takeover;
        }
        match *lock(&self.stop_cause) {
            None => SessionEnd::Publisher,
            Some(StopCause::Revoked) => SessionEnd::Revoked,
            Some(StopCause::TakenOver) => SessionEnd::Takeover,
            Some(StopCause::Shutdown) => SessionEnd::Shutdown,
            Some(StopCause::Aborted) => SessionEnd::Error,
        }
    }

    /// Whether this session was told to end (takeover, operator stop, shutdown, abort).
    pub fn stop_requested(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// A consumer publishes its state (shown in the streams API under `key`).
    pub fn set_thumbnail(&self, thumbnail: Thumbnail) {
        *lock(&self.thumbnail) = Some(Arc::new(thumbnail));
    }

    pub fn thumbnail(&self) -> Option<Arc<Thumbnail>> {
        lock(&self.thumbnail).clone()
    }

    /// One consumer's status, as set with [`LiveStream::set_status`].
    pub fn status_of(&self, key: &str) -> Option<serde_json::Value> {
        lock(&self.status).get(key).cloned()
    }

    pub fn set_status(&self, key: &str, value: serde_json::Value) {
        lock(&self.status).insert(key.to_string(), value);
    }

    pub fn is_ended(&self) -> bool {
        lock(&self.fanout).ended.is_some()
    }

    /// Subscribes a consumer: it first receives the current codec configuration and the packets
    /// since the last keyframe, then live events.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        let fanout = lock(&self.fanout);
        let mut backlog = VecDeque::new();
        if let Some(v) = &fanout.video {
            backlog.push_back(MediaEvent::VideoConfig(v.clone()));
        }
        if let Some(a) = &fanout.audio {
            backlog.push_back(MediaEvent::AudioConfig(a.clone()));
        }
        backlog.extend(fanout.gop.iter().cloned());
        if let Some(reason) = fanout.ended {
            backlog.push_back(MediaEvent::End(reason));
        }
        let rx = fanout.sender.as_ref().map(|s| s.subscribe());
        Subscription {
            stream: self.clone(),
            backlog,
            rx,
            skip_to_keyframe: false,
        }
    }

    fn push(&self, event: MediaEvent) {
        if let MediaEvent::End(reason) = event {
            // An end pushed by the publisher (the ladder's rungs) ends the fan-out exactly as
            // dropping the publisher does, so late subscribers see the end and nothing after.
            self.end(reason);
            return;
        }
        let mut fanout = lock(&self.fanout);
        if fanout.ended.is_some() {
            return;
        }
        match &event {
            MediaEvent::VideoConfig(v) => {
                fanout.video = Some(v.clone());
                fanout.gop.clear();
                fanout.gop_bytes = 0;
            }
            MediaEvent::AudioConfig(a) => fanout.audio = Some(a.clone()),
            MediaEvent::Packet(p) => {
                let has_video = fanout.video.is_some();
                if p.track == TrackKind::Video && p.keyframe {
                    fanout.gop.clear();
                    fanout.gop_bytes = 0;
                }
                // Cache only from a keyframe on (or any audio when there is no video at all).
                let starts_ok = !fanout.gop.is_empty() || p.keyframe;
                let audio_only = !has_video && p.track == TrackKind::Audio;
                if (starts_ok || audio_only)
                    && fanout.gop.len() < GOP_CACHE_MAX_EVENTS
                    && fanout.gop_bytes + p.data.len() <= GOP_CACHE_MAX_BYTES
                {
                    fanout.gop_bytes += p.data.len();
                    fanout.gop.push(event.clone());
                } else if audio_only {
                    // Audio-only: keep a rolling window rather than refusing new frames.
                    fanout.gop.clear();
                    fanout.gop_bytes = 0;
                } else if starts_ok {
                    // The GOP outgrew the late-joiner cache: a new one starts sooner if asked.
                    self.request_keyframe("GOP cache full");
                }
            }
            MediaEvent::End(_) => {}
        }
        if !self.ring_admits(&mut fanout, &event) {
            return;
        }
        if let Some(sender) = &fanout.sender {
            // An error only means nobody is subscribed right now.
            let _ = sender.send(event);
        }
    }

    /// Keeps the ring within its byte budget: packets that would exceed it are dropped, and the
    /// rest of their GOP with them, until a keyframe fits (configuration always goes through).
    /// When the ring is full of large frames a keyframe may overshoot the budget by a quarter,
    /// so a stream whose every GOP is too large still shows keyframes instead of freezing.
    fn ring_admits(&self, fanout: &mut Fanout, event: &MediaEvent) -> bool {
        let (size, resume_point) = match event {
            MediaEvent::Packet(p) => (
                p.data.len(),
                (p.track == TrackKind::Video && p.keyframe) || fanout.video.is_none(),
            ),
            _ => (0, true),
        };
        let budget = self.limits.ring_max_bytes;
        let evicted = if fanout.ring_sizes.len() >= RING_CAPACITY {
            fanout.ring_sizes.front().copied().unwrap_or(0)
        } else {
            0
        };
        let after = fanout.ring_bytes - evicted + size;
        if matches!(event, MediaEvent::Packet(_)) {
            let fits = if fanout.ring_dropping {
                resume_point && after <= budget.saturating_add(budget / 4)
            } else {
                after <= budget
            };
            if !fits {
                if !fanout.ring_dropping {
                    self.request_keyframe("ring full");
                }
                fanout.ring_dropping = true;
                self.lag_drops.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = RING_DROP_LOG.check(&self.name) {
                    tracing::warn!(stream = %self.name, ring_bytes = fanout.ring_bytes, budget,
                        suppressed, "stream exceeds the hub's byte budget; dropping until a keyframe fits");
                }
                return false;
            }
            fanout.ring_dropping = false;
        }
        if fanout.ring_sizes.len() >= RING_CAPACITY {
            fanout.ring_sizes.pop_front();
        }
        fanout.ring_sizes.push_back(size);
        fanout.ring_bytes = after;
        true
    }

    fn end(&self, reason: EndReason) {
        self.plan.send_if_modified(|p| {
            let pending = *p == RenditionPlan::Pending;
            if pending {
                *p = RenditionPlan::Ended;
            }
            pending
        });
        let mut fanout = lock(&self.fanout);
        if fanout.ended.is_some() {
            return;
        }
        fanout.ended = Some(reason);
        if let Some(sender) = fanout.sender.take() {
            let _ = sender.send(MediaEvent::End(reason));
        }
        fanout.gop.clear();
        drop(fanout);
        self.end_signal.send_replace(Some(reason));
    }

    /// Counts one message from the publisher; false once the session went over its message
    /// rate (it is then ended, and its media no longer forwarded).
    fn record(&self, event: Option<&MediaEvent>, wire_bytes: usize) -> bool {
        let mut stats = lock(&self.stats);
        let now = Instant::now();
        stats.bytes_total += wire_bytes as u64;
        stats.window.add(now, wire_bytes);
        if let Some(MediaEvent::Packet(p)) = event {
            match p.track {
                TrackKind::Video => stats.video_frames += 1,
                TrackKind::Audio => stats.audio_frames += 1,
            }
        }
        let rate = stats.window.rates(now, MIN_RATE_SPAN).messages_per_sec;
        drop(stats);
        let max = f64::from(self.limits.max_messages_per_sec);
        if rate <= max {
            return !self.stop.is_cancelled();
        }
        if !self.stop.is_cancelled() {
            self.abort(&format!(
                "the publisher sends {rate:.0} media messages a second, above the limit of {max:.0} (ingest.max_messages_per_sec)"
            ));
        }
        false
    }

    pub fn summary(&self) -> StreamSummary {
        let (video, audio, consumers) = {
            let f = lock(&self.fanout);
            let consumers = f.sender.as_ref().map_or(0, |s| s.receiver_count());
            (f.video.clone(), f.audio.clone(), consumers)
        };
        let stats = lock(&self.stats);
        let rates = stats
            .window
            .rates(Instant::now(), Duration::from_millis(500));
        StreamSummary {
            name: self.name.clone(),
            session_id: self.session_id,
            started_at: self.started_at,
            video_codec: video.as_ref().map(|v| v.codec_string()),
            audio_codec: audio.as_ref().map(|a| a.codec_string()),
            width: video.as_ref().map(|v| v.width),
            height: video.as_ref().map(|v| v.height),
            fps: video.as_ref().and_then(|v| v.fps).or(stats.fps_hint),
            audio_sample_rate: audio.as_ref().map(|a| a.sample_rate),
            audio_channels: audio.as_ref().map(|a| a.channels),
            ingest_bitrate: rates.bits_per_sec,
            bytes_received: stats.bytes_total,
            video_frames: stats.video_frames,
            audio_frames: stats.audio_frames,
            consumer_lag_drops: self.lag_drops.load(Ordering::Relaxed),
            consumers,
            consumer_status: lock(&self.status).clone(),
        }
    }
}

#[cfg(test)]
mod tests;
