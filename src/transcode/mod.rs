//! The in-process ABR ladder: decode once, scale and encode per rung, audio encoded once.
//!
//! [`route`] decides, from a stream's codecs, whether it goes through the ladder. Per laddered
//! stream: a tokio task passes the stream's events to a dedicated transcoder thread through a
//! [`GopQueue`](crate::stream::queue::GopQueue): when the thread cannot keep real time the queue
//! drops whole GOPs (until a keyframe finds room again) instead of letting memory grow or slowing
//! ingest; the drops are counted and reported. The thread runs the libav [`pipeline`] and hands
//! each rung's output to the consumer's [`LadderSink`] (HLS) and to the rung's own hub stream,
//! where relays subscribe to it.

pub mod admission;
pub mod audio;
pub mod keyframes;
mod libav;
pub mod limits;
pub mod pipeline;
pub mod plan;
pub mod route;
pub mod source_rung;
pub mod thumbnail;
pub mod video;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::config::{HlsConfig, TranscodeConfig};
use crate::media::{EndReason, MediaEvent, TrackKind, VIDEO_TIMESCALE};
use crate::metrics::Metrics;
use crate::stream::queue::{gop_queue, Offer, QueueStats, Queued};
use crate::stream::{LiveStream, Publisher, RenditionInfo, Subscription};
use admission::{catch_panic, lower_thread_priority, GaugeGuard};
pub use admission::{LadderSlot, LadderSlots, LadderWeight};
pub use pipeline::{LadderSink, AUDIO_RENDITION};
use pipeline::{Pipeline, PipelineSettings, OUTPUT_OFFSET_SECS};

/// What a stream's transcoder reports in `/api/v1/streams` (under `transcode`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TranscodeStatus {
    pub state: &'static str,
    pub rungs: Vec<RungStatus>,
    /// Media seconds transcoded per wall-clock second since the stream started (1.0 = keeping
    /// real time with a live source).
    pub speed: f64,
    /// Media seconds per second the transcoder spent working: its headroom (≥ 1 keeps up).
    pub capacity: f64,
    pub media_seconds: f64,
    pub dropped_frames: u64,
    pub queue_depth: usize,
    pub queue_capacity: usize,
    pub last_error: Option<String>,
    /// Whether the source is served as the top rung, and why (`transcode.source_rung`).
    pub source_rung: source_rung::SourceRungStatus,
}

#[derive(Debug, Clone, Serialize)]
pub struct RungStatus {
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// The source as published, not encoded.
    pub source: bool,
}

/// Shared between the forwarding task and the transcoder thread.
struct Shared {
    status: Mutex<TranscodeStatus>,
    queue: Arc<QueueStats>,
}

/// The ladder's output: each rung is published as a hub stream of its own (relays subscribe to
/// it as to the source) and handed to the consumer's [`LadderSink`] (HLS).
struct RungOutput<S: LadderSink> {
    stream: Arc<LiveStream>,
    sink: S,
    publishers: HashMap<String, Publisher>,
}

impl<S: LadderSink> RungOutput<S> {
    fn publisher(&mut self, rendition: &str) -> &Publisher {
        let stream = &self.stream;
        self.publishers
            .entry(rendition.to_string())
            .or_insert_with(|| stream.publish_rendition(rendition))
    }
}

impl<S: LadderSink> LadderSink for RungOutput<S> {
    fn rung_event(&mut self, rung: &str, event: MediaEvent) {
        if rung == AUDIO_RENDITION && !self.publishers.contains_key(rung) {
            // Audio-only: the one rendition relays of any rung fall back to.
            self.publisher(rung);
            self.stream.plan_renditions(vec![RenditionInfo {
                name: rung.to_string(),
                width: 0,
                height: 0,
            }]);
        }
        self.publisher(rung).push(event.clone(), 0);
        self.sink.rung_event(rung, event);
    }

    fn ladder_planned(&mut self, rungs: &[RenditionInfo]) {
        for info in rungs {
            self.publisher(&info.name);
        }
        self.sink.ladder_planned(rungs);
        self.stream.plan_renditions(rungs.to_vec());
    }

    fn has_clock_anchor(&self) -> bool {
        self.sink.has_clock_anchor()
    }

    fn set_clock_anchor(&mut self, media_us: i64, wall: DateTime<Utc>) {
        self.sink.set_clock_anchor(media_us, wall);
    }

    fn finish(&mut self, reason: EndReason) {
        self.sink.finish(reason);
    }

    fn failed(&mut self, reason: &str) {
        self.sink.failed(reason);
    }

    fn thumbnail(&mut self, thumbnail: crate::stream::Thumbnail) {
        self.stream.set_thumbnail(thumbnail);
    }
}

/// Starts the ladder for a stream whose route is decided, in the admission `slot` it was given
/// (held by the ladder thread, freed when it ends however it ends).
pub fn spawn_ladder<S: LadderSink + Send + 'static>(
    mut subscription: Subscription,
    sink: S,
    slot: LadderSlot,
    transcode: &TranscodeConfig,
    hls_config: &HlsConfig,
    metrics: Arc<Metrics>,
) {
    let stream = subscription.stream().clone();
    // The ladder forces its own keyframes but starts decoding at the source's next one.
    stream.request_keyframe("ladder start");
    let (mut queue, rx, queue_stats) = gop_queue(
        transcode.queue_frames,
        (transcode.queue_max_mib as usize).saturating_mul(1 << 20),
    );
    let capacity = queue.capacity();
    let shared = Arc::new(Shared {
        status: Mutex::new(TranscodeStatus::default()),
        queue: queue_stats,
    });
    let settings = PipelineSettings::from_config(transcode, hls_config.segment_duration);
    let span = tracing::info_span!(parent: None, "ladder", stream = %stream.name, session = stream.session_id);

    let thread_shared = shared.clone();
    let thread_span = span.clone();
    let thread_metrics = metrics.clone();
    let thread_stream = stream.clone();
    let nice = transcode.ladder_nice;
    let spawned = std::thread::Builder::new()
        .name(format!("lg-ladder-{}", stream.session_id))
        .spawn(move || {
            let _entered = thread_span.enter();
            // Guards: released when this thread ends, a panic's unwinding included.
            let mut slot = slot;
            let _running = GaugeGuard::new(&thread_metrics.transcoders);
            // Before any libav or rung thread exists: they inherit it.
            lower_thread_priority(nice);
            let output = RungOutput {
                stream: thread_stream,
                sink,
                publishers: HashMap::new(),
            };
            run_pipeline(rx, settings, output, &thread_shared, &mut slot);
        });
    if let Err(e) = spawned {
        tracing::error!(parent: &span, error = %e, "cannot start the transcoder thread; stream not served");
        return;
    }

    tokio::spawn(
        async move {
            let mut last_report = Instant::now();
            // A source that keeps the ladder behind starts an episode per GOP: one line per 10 s.
            let mut drop_log = crate::util::log_throttle::RateLimit::new(Duration::from_secs(10));
            while let Some(event) = subscription.recv().await {
                let was_dropping = queue.is_dropping();
                let frame = matches!(event, MediaEvent::Packet(_));
                match queue.offer(event, Utc::now()) {
                    Offer::Closed => break,
                    Offer::Dropped => {
                        // Configuration and the end are held, not dropped.
                        if frame {
                            metrics.transcode_dropped_frames.inc();
                        }
                        if !was_dropping {
                            stream.request_keyframe("transcoder behind");
                        }
                        if let Some(suppressed) =
                            (!was_dropping).then(|| drop_log.check()).flatten()
                        {
                            tracing::warn!(
                                queue = capacity,
                                episodes_since_last_line = suppressed,
                                "transcoder behind real time; dropping until the next keyframe"
                            );
                        }
                    }
                    Offer::Resumed => {
                        tracing::debug!("transcoder caught up; resuming at a keyframe")
                    }
                    Offer::Queued => {}
                }
                if last_report.elapsed() >= Duration::from_secs(1) {
                    last_report = Instant::now();
                    report(&stream, &shared, capacity);
                }
            }
            queue.flush(Utc::now()).await;
            drop(queue);
            report(&stream, &shared, capacity);
        }
        .instrument(span),
    );
}

fn report(stream: &LiveStream, shared: &Shared, queue: usize) {
    let mut status = shared
        .status
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    status.dropped_frames = shared.queue.dropped.load(Ordering::Relaxed);
    status.queue_depth = shared.queue.depth.load(Ordering::Relaxed);
    status.queue_capacity = queue;
    if let Ok(value) = serde_json::to_value(&status) {
        stream.set_status("transcode", value);
    }
}

fn run_pipeline<S: LadderSink>(
    mut rx: mpsc::Receiver<Queued>,
    settings: PipelineSettings,
    sink: RungOutput<S>,
    shared: &Shared,
    slot: &mut LadderSlot,
) {
    pipeline::init_libav();
    let started = Instant::now();
    let mut busy = Duration::ZERO;
    let mut pipeline = Pipeline::new(settings, sink);
    let mut ended = false;
    let mut end_reason = EndReason::Stopped;
    let mut failed = false;
    let set_state = |state: &'static str,
                     pipeline: &Pipeline<RungOutput<S>>,
                     busy: Duration,
                     error: Option<String>| {
        let mut status = shared.status.lock().unwrap_or_else(|e| e.into_inner());
        status.state = state;
        status.media_seconds = pipeline.media_seconds;
        status.speed = pipeline.media_seconds / started.elapsed().as_secs_f64().max(1e-3);
        status.capacity = pipeline.media_seconds / busy.as_secs_f64().max(1e-3);
        status.rungs = pipeline
            .rungs()
            .into_iter()
            .map(|(name, width, height, source)| RungStatus {
                name,
                width,
                height,
                source,
            })
            .collect();
        status.source_rung = pipeline.source_rung_status().clone();
        if error.is_some() {
            status.last_error = error;
        }
    };
    set_state("starting", &pipeline, busy, None);
    while let Some(Queued { event, arrived, .. }) = rx.blocking_recv() {
        shared.queue.depth.store(rx.len(), Ordering::Relaxed);
        if failed {
            // Keep draining so the forwarder never blocks; the stream's HLS is already finished.
            continue;
        }
        if let MediaEvent::Packet(p) = &event {
            let sink = pipeline.sink();
            if !sink.has_clock_anchor() {
                // Output media time ↔ wall clock, shared by every rung (PROGRAM-DATE-TIME).
                let media_us = match p.track {
                    TrackKind::Video => p.dts * 1_000_000 / i64::from(VIDEO_TIMESCALE),
                    TrackKind::Audio => 0,
                };
                sink.set_clock_anchor(media_us + OUTPUT_OFFSET_SECS * 1_000_000, arrived);
            }
        }
        if let MediaEvent::End(reason) = &event {
            ended = true;
            end_reason = *reason;
        }
        let t0 = Instant::now();
        // A panic (libav, or a bug) ends this stream like any other failure, below.
        let result = catch_panic(|| pipeline.handle(event))
            .unwrap_or_else(|panic| Err(pipeline::TranscodeError::Panicked(panic)));
        busy += t0.elapsed();
        if let Some(source) = pipeline.serves_source() {
            slot.set_weight(if source {
                LadderWeight::SourceRung
            } else {
                LadderWeight::Full
            });
        }
        match result {
            Ok(()) => set_state(
                if ended { "ended" } else { "running" },
                &pipeline,
                busy,
                None,
            ),
            Err(e) => {
                tracing::error!(error = %e, "transcoder failed; ending this stream's HLS");
                set_state("failed", &pipeline, busy, Some(e.to_string()));
                if e.ends_session() {
                    // Nothing else can serve this source: tell the publisher now.
                    pipeline.sink().stream.abort(&e.to_string());
                }
                // The stream's HLS (and recording) end here, whether or not the session does.
                if let Err(panic) = catch_panic(|| pipeline.sink().failed(&e.to_string())) {
                    tracing::error!(panic, "reporting the failure panicked");
                }
                // After a panic the pipeline may be half-updated: finishing it may panic too.
                let _ = catch_panic(|| pipeline.finish(EndReason::Stopped));
                failed = true;
            }
        }
    }
    if !ended && !failed {
        let _ = catch_panic(|| pipeline.finish(EndReason::Stopped));
        set_state("ended", &pipeline, busy, None);
    }
    // Every rendition ends (ENDLIST) whatever happened above.
    if let Err(panic) = catch_panic(|| pipeline.sink().finish(end_reason)) {
        tracing::error!(panic, "ending the stream's renditions panicked");
    }
    tracing::info!(
        media_seconds = pipeline.media_seconds,
        busy_seconds = busy.as_secs_f64(),
        "transcoder finished"
    );
    drop(pipeline);
    release_freed_memory();
}

/// A ladder frees tens of MB of encoder buffers at once when it ends; glibc keeps freed heap
/// memory in its arenas, so without a trim the process's RSS only ever grows to its peak.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the OS; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests;
