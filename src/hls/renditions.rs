//! The renditions stage: one place that owns a segmenter per rendition of a publish session and
//! hands every output to the live window and to whoever else subscribed (the recorder). Producers
//! (the ladder thread, the passthrough task) only push (rendition, media event).
//!
//! `hls/` defines the [`SegmentSubscriber`] interface; subscribers implement it, so this module
//! imports none of them. It implements the ladder's [`LadderSink`] in turn.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};

use super::live::LiveHls;
use super::segmenter::{Segmenter, SegmenterConfig, SegmenterOutput};
use crate::config::HlsConfig;
use crate::media::{EndReason, MediaEvent};
use crate::metrics::Metrics;
use crate::stream::rate::RateWindow;
use crate::stream::RenditionInfo;
use crate::transcode::LadderSink;

/// Segments a second (over [`SEGMENT_RATE_WINDOW`], at least [`SEGMENT_RATE_MIN_SPAN`]) above
/// which a rendition is ended: defence in depth behind the wall-time bound on media time, the
/// minimum segment duration and the ingest message rate, which keep real sources far below it
/// (a 2 s target makes 0.5 a second; a transcoder catching up bursts a few).
const MAX_SEGMENTS_PER_SEC: f64 = 5.0;
const SEGMENT_RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);
const SEGMENT_RATE_MIN_SPAN: std::time::Duration = std::time::Duration::from_secs(5);

/// Receives every rendition's segmenter output, in order, on the producer's thread. It must not
/// block (queue and return).
pub trait SegmentSubscriber: Send {
    /// The renditions, once planned (before their first output).
    fn planned(&mut self, _renditions: &[RenditionInfo]) {}
    fn output(&mut self, rendition: &str, output: &SegmenterOutput);
    /// `rendition` is about to end because of a failure, not its publisher (its `End` follows).
    fn failed(&mut self, _rendition: &str, _reason: &str) {}
}

/// A publish session's renditions on their way to the live window and the subscribers.
pub struct Renditions {
    hls: Arc<RwLock<LiveHls>>,
    generation: u64,
    segmenter_config: SegmenterConfig,
    segmenters: HashMap<String, Segmenter>,
    /// Media time (µs) ↔ wall clock, shared by every rendition so their PDTs agree.
    clock_anchor: Option<(i64, DateTime<Utc>)>,
    subscribers: Vec<Box<dyn SegmentSubscriber>>,
    metrics: Arc<Metrics>,
    /// Renditions whose end went out already.
    ended: std::collections::HashSet<String>,
    /// Segments made per rendition, in wall time.
    segment_rates: HashMap<String, RateWindow>,
}

impl Renditions {
    /// `hls` and `generation` come from [`super::HlsRegistry::attach`].
    pub fn new(
        hls: Arc<RwLock<LiveHls>>,
        generation: u64,
        config: &HlsConfig,
        metrics: Arc<Metrics>,
        subscribers: Vec<Box<dyn SegmentSubscriber>>,
    ) -> Self {
        Renditions {
            hls,
            generation,
            segmenter_config: SegmenterConfig {
                target_duration: config.segment_duration,
                part_duration: config.low_latency.then_some(config.part_duration),
                max_segment_bytes: (config.max_segment_mib as usize) << 20,
                max_segment_samples: config.max_segment_samples,
            },
            segmenters: HashMap::new(),
            clock_anchor: None,
            subscribers,
            metrics,
            ended: std::collections::HashSet::new(),
            segment_rates: HashMap::new(),
        }
    }

    pub fn has_clock_anchor(&self) -> bool {
        self.clock_anchor.is_some()
    }

    /// Fixes the media-time ↔ wall-clock mapping for every rendition, including those whose
    /// segmenter exists already.
    pub fn set_clock_anchor(&mut self, media_us: i64, wall: DateTime<Utc>) {
        self.clock_anchor = Some((media_us, wall));
        for s in self.segmenters.values_mut() {
            s.set_clock_anchor(media_us, wall);
        }
    }

    /// Announces the renditions to the subscribers.
    pub fn planned(&mut self, renditions: &[RenditionInfo]) {
        for s in &mut self.subscribers {
            s.planned(renditions);
        }
    }

    /// Creates a rendition's segmenter ahead of its first event, so that its end is announced
    /// even if no media ever comes.
    pub fn add(&mut self, rendition: &str) {
        if !self.segmenters.contains_key(rendition) {
            let mut s = Segmenter::new(self.segmenter_config.clone());
            if let Some((media_us, wall)) = self.clock_anchor {
                s.set_clock_anchor(media_us, wall);
            }
            self.segmenters.insert(rendition.to_string(), s);
        }
    }

    /// Segments one event of one rendition; its outputs go to the live window and subscribers.
    pub fn push(&mut self, rendition: &str, event: MediaEvent) {
        self.push_at(rendition, event, Utc::now());
    }

    /// As [`Renditions::push`], with the event's arrival time given.
    pub fn push_at(&mut self, rendition: &str, event: MediaEvent, now: DateTime<Utc>) {
        self.add(rendition);
        let Some(segmenter) = self.segmenters.get_mut(rendition) else {
            return;
        };
        let mut outputs = segmenter.push(event, now);
        if outputs.is_empty() {
            return;
        }
        // Why this rendition is ended here (a limit, not its publisher), for the subscribers.
        let mut failure = None;
        let made = outputs
            .iter()
            .filter(|o| matches!(o, SegmenterOutput::Segment(_)))
            .count();
        if made > 0 {
            let wall = std::time::Instant::now();
            let window = self
                .segment_rates
                .entry(rendition.to_string())
                .or_insert_with(|| RateWindow::new(wall, SEGMENT_RATE_WINDOW));
            for _ in 0..made {
                window.add(wall, 0);
            }
            let rate = window.rates(wall, SEGMENT_RATE_MIN_SPAN).messages_per_sec;
            if rate > MAX_SEGMENTS_PER_SEC {
                tracing::error!(
                    rendition,
                    rate,
                    "segments come faster than real time allows; ending this rendition"
                );
                failure = Some(format!(
                    "segments came faster than real time allows ({rate:.1} a second, at most \
                     {MAX_SEGMENTS_PER_SEC:.0}); the rendition was ended"
                ));
                outputs.extend(segmenter.push(MediaEvent::End(EndReason::Stopped), now));
            }
        }
        for output in &outputs {
            match output {
                SegmenterOutput::Segment(s) => {
                    self.metrics.hls_segments.inc();
                    tracing::debug!(
                        rendition,
                        duration = s.duration,
                        bytes = s.data.len(),
                        "segment"
                    );
                }
                SegmenterOutput::Part(_) => {
                    self.metrics.hls_parts.inc();
                }
                SegmenterOutput::End(reason) => {
                    self.ended.insert(rendition.to_string());
                    tracing::info!(rendition, ?reason, "rendition ended");
                    if let Some(failure) = &failure {
                        for s in &mut self.subscribers {
                            s.failed(rendition, failure);
                        }
                    }
                }
                SegmenterOutput::Init { .. } => {}
            }
            for s in &mut self.subscribers {
                s.output(rendition, output);
            }
        }
        self.hls
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply_all(self.generation, rendition, outputs);
    }

    /// The producer failed (not the publisher): every rendition not ended yet is about to end
    /// because of it. The subscribers learn why; [`Renditions::finish`] ends them.
    pub fn fail(&mut self, reason: &str) {
        let mut names: Vec<&String> = self
            .segmenters
            .keys()
            .filter(|n| !self.ended.contains(*n))
            .collect();
        names.sort();
        for name in names {
            for s in &mut self.subscribers {
                s.failed(name, reason);
            }
        }
    }

    /// Ends every rendition that has not ended yet (the producer stopped without an `End`).
    /// With no rendition at all (no media came), the live window is ended directly.
    /// Idempotent.
    pub fn finish(&mut self, reason: EndReason) {
        if self.segmenters.is_empty() {
            // Nothing of this session reached the window; if it stopped (not replaced), the
            // stream is over, including what a session it took over left open.
            if reason == EndReason::Stopped {
                self.hls
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .end_all(self.generation);
            }
            return;
        }
        let mut names: Vec<String> = self
            .segmenters
            .keys()
            .filter(|n| !self.ended.contains(*n))
            .cloned()
            .collect();
        names.sort();
        for name in names {
            self.push(&name, MediaEvent::End(reason));
        }
    }
}

/// The ladder pushes each rung's events here.
impl LadderSink for Renditions {
    fn rung_event(&mut self, rung: &str, event: MediaEvent) {
        self.push(rung, event);
    }

    fn ladder_planned(&mut self, rungs: &[RenditionInfo]) {
        self.planned(rungs);
    }

    fn has_clock_anchor(&self) -> bool {
        Renditions::has_clock_anchor(self)
    }

    fn set_clock_anchor(&mut self, media_us: i64, wall: DateTime<Utc>) {
        Renditions::set_clock_anchor(self, media_us, wall);
    }

    fn failed(&mut self, reason: &str) {
        Renditions::fail(self, reason);
    }

    fn finish(&mut self, reason: EndReason) {
        Renditions::finish(self, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::HlsRegistry;
    use crate::media::{AudioConfig, Packet, TrackKind, VideoConfig};
    use bytes::Bytes;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl SegmentSubscriber for Seen {
        fn planned(&mut self, renditions: &[RenditionInfo]) {
            let names: Vec<_> = renditions.iter().map(|r| r.name.as_str()).collect();
            self.0
                .lock()
                .unwrap()
                .push(format!("planned {}", names.join(",")));
        }
        fn output(&mut self, rendition: &str, output: &SegmenterOutput) {
            let kind = match output {
                SegmenterOutput::Init { .. } => "init",
                SegmenterOutput::Part(_) => "part",
                SegmenterOutput::Segment(_) => "segment",
                SegmenterOutput::End(_) => "end",
            };
            self.0.lock().unwrap().push(format!("{rendition} {kind}"));
        }
        fn failed(&mut self, rendition: &str, reason: &str) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{rendition} failed: {reason}"));
        }
    }

    fn frame(dts: i64, keyframe: bool) -> MediaEvent {
        MediaEvent::Packet(Packet {
            track: TrackKind::Video,
            dts,
            pts: dts,
            keyframe,
            data: Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]),
        })
    }

    /// A session's renditions stage on a fresh registry, observed by one subscriber.
    fn observed(stream: &str, config: &HlsConfig) -> (Renditions, Arc<RwLock<LiveHls>>, Seen) {
        let registry = HlsRegistry::new(config.clone());
        let (hls, generation) = registry.attach(stream);
        let seen = Seen::default();
        let renditions = Renditions::new(
            hls.clone(),
            generation,
            config,
            Arc::new(Metrics::new()),
            vec![Box::new(seen.clone())],
        );
        (renditions, hls, seen)
    }

    #[test]
    fn outputs_reach_the_live_window_and_every_subscriber_in_order() {
        let config = HlsConfig::default();
        let (mut renditions, hls, seen) = observed("alice", &config);
        renditions.planned(&[RenditionInfo {
            name: "360p".into(),
            width: 640,
            height: 360,
        }]);
        let video = VideoConfig::h264(crate::media::avc::tests::AVCC_640X360_HIGH).unwrap();
        let audio = AudioConfig::aac(&[0x11, 0x90]).unwrap();
        renditions.push("360p", MediaEvent::VideoConfig(Arc::new(video)));
        renditions.push("360p", MediaEvent::AudioConfig(Arc::new(audio)));
        let step = 3000; // 30 fps at 90 kHz
        let frames = (config.segment_duration * 30.0) as i64 * 2 + 1;
        for i in 0..frames {
            renditions.push("360p", frame(i * step, i % 60 == 0));
        }
        renditions.finish(EndReason::Stopped);
        renditions.finish(EndReason::Stopped); // once only
        let seen = seen.0.lock().unwrap().clone();
        assert_eq!(seen.first().map(String::as_str), Some("planned 360p"));
        assert_eq!(seen.get(1).map(String::as_str), Some("360p init"));
        assert!(
            seen.iter().filter(|s| *s == "360p segment").count() >= 2,
            "{seen:?}"
        );
        assert_eq!(seen.last().map(String::as_str), Some("360p end"));
        assert_eq!(seen.iter().filter(|s| *s == "360p end").count(), 1);
        let hls = hls.read().unwrap();
        assert!(hls.is_ended());
        assert!(hls
            .media_playlist("360p")
            .unwrap()
            .contains("#EXT-X-ENDLIST"));
    }

    #[test]
    fn a_segment_per_message_ends_the_rendition() {
        let config = HlsConfig::default();
        let (mut renditions, hls, seen) = observed("flood", &config);
        let video = VideoConfig::h264(crate::media::avc::tests::AVCC_640X360_HIGH).unwrap();
        renditions.push("source", MediaEvent::VideoConfig(Arc::new(video)));
        // A keyframe every 10 s of media, as fast as they come: a segment per message.
        for i in 0..1000 {
            renditions.push("source", frame(i * 900_000, true));
        }
        let seen = seen.0.lock().unwrap().clone();
        let segments = seen.iter().filter(|s| *s == "source segment").count();
        assert!(segments <= 30, "{segments} segments");
        assert_eq!(seen.last().map(String::as_str), Some("source end"));
        // Ended by a limit, not by the publisher: the subscribers (the recording) learn why.
        let failed = &seen[seen.len() - 2];
        assert!(
            failed.starts_with("source failed: segments came faster than real time allows"),
            "{seen:?}"
        );
        assert!(hls.read().unwrap().is_ended());
    }

    #[test]
    fn a_failed_producer_tells_why_for_each_rendition_still_open() {
        let config = HlsConfig::default();
        let (mut renditions, _, seen) = observed("carol", &config);
        renditions.add("720p");
        renditions.add("360p");
        renditions.push("360p", MediaEvent::End(EndReason::Stopped));
        LadderSink::failed(&mut renditions, "the transcoder panicked: boom");
        LadderSink::finish(&mut renditions, EndReason::Stopped);
        let seen = seen.0.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                "360p end",
                "720p failed: the transcoder panicked: boom",
                "720p end"
            ]
        );
    }

    #[test]
    fn a_session_that_ends_without_media_ends_the_window_it_took_over() {
        let config = HlsConfig::default();
        let registry = HlsRegistry::new(config.clone());
        let metrics = Arc::new(Metrics::new());
        let (hls, first) = registry.attach("bob");
        let mut old = Renditions::new(hls.clone(), first, &config, metrics.clone(), Vec::new());
        let video = VideoConfig::h264(crate::media::avc::tests::AVCC_640X360_HIGH).unwrap();
        old.push("source", MediaEvent::VideoConfig(Arc::new(video)));
        for i in 0..(config.segment_duration * 30.0) as i64 * 2 + 1 {
            old.push("source", frame(i * 3000, i % 60 == 0));
        }
        // Taken over: the old session ends as replaced, the new one is refused with no media.
        old.push("source", MediaEvent::End(EndReason::Replaced));
        let (same, second) = registry.attach("bob");
        assert!(Arc::ptr_eq(&same, &hls));
        let mut refused = Renditions::new(hls.clone(), second, &config, metrics, Vec::new());
        assert!(!hls.read().unwrap().is_ended());
        refused.finish(EndReason::Stopped);
        let hls = hls.read().unwrap();
        assert!(hls.is_ended());
        assert!(hls
            .media_playlist("source")
            .unwrap()
            .contains("#EXT-X-ENDLIST"));
    }
}
