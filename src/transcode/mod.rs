//! The in-process ABR ladder: decode once, scale and encode per rung, audio encoded once.
//!
//! Per stream: a tokio task takes the stream's events from the hub and passes them to a
//! dedicated transcoder thread through a bounded queue. When the thread cannot keep real time and
//! the queue fills, the task drops whole GOPs (until a keyframe finds room again) instead of
//! letting memory grow or slowing ingest; the drops are counted and reported. The thread runs the
//! libav [`pipeline`] and segments each rung's output straight into the stream's live HLS.

pub mod annexb;
pub mod keyframes;
pub mod pipeline;
pub mod plan;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::config::{HlsConfig, TranscodeConfig};
use crate::hls::segmenter::{Segmenter, SegmenterConfig, SegmenterOutput};
use crate::hls::{HlsRegistry, LiveHls};
use crate::media::{EndReason, MediaEvent, TrackKind, VIDEO_TIMESCALE};
use crate::metrics::Metrics;
use crate::record::RecordTap;
use crate::relay::RungFeeds;
use crate::stream::LiveStream;
use pipeline::{LadderSink, Pipeline, PipelineSettings, OUTPUT_OFFSET_SECS};

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
}

#[derive(Debug, Clone, Serialize)]
pub struct RungStatus {
    pub name: String,
    pub width: u32,
    pub height: u32,
}

/// Shared between the forwarding task and the transcoder thread.
#[derive(Default)]
struct Shared {
    status: Mutex<TranscodeStatus>,
    dropped: AtomicU64,
    queued: AtomicUsize,
}

/// Segments each rung's events into the stream's live HLS (one segmenter per rung).
struct HlsSink {
    hls: Arc<RwLock<LiveHls>>,
    generation: u64,
    segmenters: HashMap<String, Segmenter>,
    segmenter_config: SegmenterConfig,
    anchor: Option<(i64, DateTime<Utc>)>,
    metrics: Arc<Metrics>,
    record: Option<RecordTap>,
    relays: Arc<RungFeeds>,
}

impl HlsSink {
    /// Fixes the media-time ↔ wall-clock mapping for every rung, including segmenters created
    /// before the first packet (each rung's VideoConfig comes first).
    fn set_anchor(&mut self, media_us: i64, wall: DateTime<Utc>) {
        self.anchor = Some((media_us, wall));
        for s in self.segmenters.values_mut() {
            s.set_clock_anchor(media_us, wall);
        }
    }
}

impl LadderSink for HlsSink {
    fn rung_event(&mut self, rung: &str, event: MediaEvent) {
        self.relays.offer(rung, &event);
        let now = Utc::now();
        let segmenter = self.segmenters.entry(rung.to_string()).or_insert_with(|| {
            let mut s = Segmenter::new(self.segmenter_config.clone());
            if let Some((media_us, wall)) = self.anchor {
                s.set_clock_anchor(media_us, wall);
            }
            s
        });
        let outputs = segmenter.push(event, now);
        if outputs.is_empty() {
            return;
        }
        let mut hls = self.hls.write().unwrap_or_else(|e| e.into_inner());
        for output in outputs {
            if matches!(output, SegmenterOutput::Segment(_)) {
                self.metrics.hls_segments.inc();
            }
            if let Some(tap) = self.record.as_mut() {
                tap.output(rung, &output);
            }
            hls.apply(self.generation, rung, output);
        }
    }

    fn ladder_planned(&mut self, rungs: &[(String, u32, u32)]) {
        if let Some(tap) = self.record.as_mut() {
            tap.ladder_planned(rungs);
        }
        self.relays.planned(rungs);
    }
}

/// Starts the ladder for a new stream.
pub fn spawn_ladder(
    stream: &Arc<LiveStream>,
    registry: Arc<HlsRegistry>,
    transcode: &TranscodeConfig,
    hls_config: &HlsConfig,
    metrics: Arc<Metrics>,
    record: Option<RecordTap>,
    relays: Arc<RungFeeds>,
) {
    let mut subscription = stream.subscribe();
    let (hls, generation) = registry.attach(&stream.name);
    let queue = transcode.queue_frames;
    let (tx, rx) = mpsc::channel::<(MediaEvent, DateTime<Utc>)>(queue);
    let shared = Arc::new(Shared::default());
    let settings = PipelineSettings::from_config(transcode, hls_config.segment_duration);
    let segmenter_config = SegmenterConfig {
        target_duration: hls_config.segment_duration,
        max_segment_bytes: (hls_config.max_segment_mib as usize) << 20,
    };
    let span = tracing::info_span!(parent: None, "ladder", stream = %stream.name, session = stream.session_id);

    let thread_shared = shared.clone();
    let thread_span = span.clone();
    let thread_metrics = metrics.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("lg-ladder-{}", stream.session_id))
        .spawn(move || {
            let _entered = thread_span.enter();
            let sink = HlsSink {
                hls,
                generation,
                segmenters: HashMap::new(),
                segmenter_config,
                anchor: None,
                metrics: thread_metrics.clone(),
                record,
                relays,
            };
            thread_metrics.transcoders.inc();
            run_pipeline(rx, settings, sink, &thread_shared);
            thread_metrics.transcoders.dec();
        });
    if let Err(e) = spawned {
        tracing::error!(parent: &span, error = %e, "cannot start the transcoder thread; stream not served");
        return;
    }

    let stream = stream.clone();
    tokio::spawn(
        async move {
            let mut dropping = false;
            let mut has_video = false;
            let mut last_report = Instant::now();
            while let Some(event) = subscription.recv().await {
                let now = Utc::now();
                has_video |= matches!(event, MediaEvent::VideoConfig(_));
                let sent = match event {
                    MediaEvent::Packet(p) => {
                        // Without video every audio frame is a place to resume.
                        let key = (p.track == TrackKind::Video && p.keyframe) || !has_video;
                        if dropping {
                            // Resume only at a keyframe, and only with room to spare.
                            if key && tx.capacity() > queue / 2 {
                                dropping = false;
                                tracing::info!("transcoder caught up; resuming at a keyframe");
                            } else {
                                shared.dropped.fetch_add(1, Ordering::Relaxed);
                                metrics.transcode_dropped_frames.inc();
                                continue;
                            }
                        }
                        match tx.try_send((MediaEvent::Packet(p), now)) {
                            Ok(()) => true,
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                dropping = true;
                                shared.dropped.fetch_add(1, Ordering::Relaxed);
                                metrics.transcode_dropped_frames.inc();
                                tracing::warn!(
                                    queue,
                                    "transcoder behind real time; dropping until the next keyframe"
                                );
                                true
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => false,
                        }
                    }
                    // Configuration and the end are never dropped.
                    other => tx.send((other, now)).await.is_ok(),
                };
                if !sent {
                    break;
                }
                shared
                    .queued
                    .store(queue - tx.capacity(), Ordering::Relaxed);
                if last_report.elapsed() >= Duration::from_secs(1) {
                    last_report = Instant::now();
                    report(&stream, &shared, queue);
                }
            }
            drop(tx);
            report(&stream, &shared, queue);
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
    status.dropped_frames = shared.dropped.load(Ordering::Relaxed);
    status.queue_depth = shared.queued.load(Ordering::Relaxed);
    status.queue_capacity = queue;
    if let Ok(value) = serde_json::to_value(&status) {
        stream.set_status("transcode", value);
    }
}

fn run_pipeline(
    mut rx: mpsc::Receiver<(MediaEvent, DateTime<Utc>)>,
    settings: PipelineSettings,
    sink: HlsSink,
    shared: &Shared,
) {
    pipeline::init_libav();
    let started = Instant::now();
    let mut busy = Duration::ZERO;
    let mut pipeline = Pipeline::new(settings, sink);
    let mut ended = false;
    let mut failed = false;
    let set_state = |state: &'static str,
                     pipeline: &Pipeline<HlsSink>,
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
            .map(|(name, width, height)| RungStatus {
                name,
                width,
                height,
            })
            .collect();
        if error.is_some() {
            status.last_error = error;
        }
    };
    set_state("starting", &pipeline, busy, None);
    while let Some((event, arrived)) = rx.blocking_recv() {
        shared.queued.store(rx.len(), Ordering::Relaxed);
        if failed {
            // Keep draining so the forwarder never blocks; the stream's HLS is already finished.
            continue;
        }
        if let MediaEvent::Packet(p) = &event {
            let sink = pipeline.sink();
            if sink.anchor.is_none() {
                // Output media time ↔ wall clock, shared by every rung (PROGRAM-DATE-TIME).
                let media_us = match p.track {
                    TrackKind::Video => p.dts * 1_000_000 / i64::from(VIDEO_TIMESCALE),
                    TrackKind::Audio => 0,
                };
                sink.set_anchor(media_us + OUTPUT_OFFSET_SECS * 1_000_000, arrived);
            }
        }
        ended |= matches!(event, MediaEvent::End(_));
        let t0 = Instant::now();
        let result = pipeline.handle(event);
        busy += t0.elapsed();
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
                let _ = pipeline.finish(EndReason::Stopped);
                failed = true;
            }
        }
    }
    if !ended && !failed {
        let _ = pipeline.finish(EndReason::Stopped);
        set_state("ended", &pipeline, busy, None);
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
