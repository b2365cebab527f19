//! The recording end of a publish session, held by its HLS producer (passthrough task or
//! ladder thread). It picks the recorded rung and hands that rung's init and media segments to
//! the spool writer through a queue bounded by count and by bytes (segments may be up to
//! 64 MiB), never blocking the producer: when the queue is full the segment is dropped and
//! counted, the count travels with the next event (the writer records the gap), and the log
//! says so at most once per [`LOG_EVERY`].
//!
//! The tap also learns how its rendition ended: a failure (the producer says so, or the stream
//! was aborted) is left for the writer, which marks the recording with it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::LOG_EVERY;
use crate::hls::segmenter::{InitInfo, Segment, SegmenterOutput};
use crate::stream::LiveStream;
use crate::util::log_throttle::RateLimit;

/// Events a tap may queue ahead of its writer (each is one whole segment or init).
const TAP_QUEUE: usize = 64;

/// What the tap hands to the spool writer.
pub(super) enum TapEvent {
    Init {
        data: Bytes,
        info: InitInfo,
        rung: String,
        missed_before: u64,
    },
    Segment {
        segment: Segment,
        /// When the segmenter closed it: the start of its upload lag.
        closed_at: Instant,
        missed_before: u64,
    },
    /// Segments the tap could not queue before the session ended.
    Missed { missed_before: u64 },
}

impl TapEvent {
    /// Segments lost before this event because the writer's queue was full.
    pub(super) fn missed_before(&self) -> u64 {
        match self {
            TapEvent::Init { missed_before, .. }
            | TapEvent::Segment { missed_before, .. }
            | TapEvent::Missed { missed_before } => *missed_before,
        }
    }

    /// Bytes the event pins while queued.
    fn bytes(&self) -> u64 {
        match self {
            TapEvent::Init { data, .. } => data.len() as u64,
            TapEvent::Segment { segment, .. } => segment.data.len() as u64,
            TapEvent::Missed { .. } => 0,
        }
    }
}

/// Why the recorded rendition was ended by a failure, set by the tap before its queue closes.
/// Beside the queue, not in it: a full queue must not lose it.
type Failure = Arc<Mutex<Option<String>>>;

/// The writer's end of a tap's queue: gives the queued bytes back as it takes events.
pub(super) struct TapReceiver {
    rx: mpsc::Receiver<TapEvent>,
    queued: Arc<AtomicU64>,
    failure: Failure,
}

impl TapReceiver {
    pub async fn recv(&mut self) -> Option<TapEvent> {
        let event = self.rx.recv().await?;
        self.queued.fetch_sub(event.bytes(), Ordering::Relaxed);
        Some(event)
    }

    /// Why a failure ended the recorded rendition, if one did. Final once [`Self::recv`]
    /// returned None.
    pub fn failure(&self) -> Option<String> {
        super::lock(&self.failure).clone()
    }
}

/// A queue filled by hand (tests): nothing was counted, so there is nothing to give back.
impl From<mpsc::Receiver<TapEvent>> for TapReceiver {
    fn from(rx: mpsc::Receiver<TapEvent>) -> Self {
        TapReceiver {
            rx,
            queued: Arc::new(AtomicU64::new(u64::MAX / 2)),
            failure: Failure::default(),
        }
    }
}

/// The recording end of one publish session, held by its HLS producer. Picks the recorded
/// rung, and hands that rung's output to the recorder without ever blocking the producer.
pub struct RecordTap {
    /// None once the recorded rendition ended: the writer then ends the recording.
    tx: Option<mpsc::Sender<TapEvent>>,
    /// The publish session, for why it ended (the reason of [`LiveStream::abort`]).
    stream: Weak<LiveStream>,
    failure: Failure,
    /// Bytes queued for the writer, and the most that may be.
    queued: Arc<AtomicU64>,
    max_bytes: u64,
    /// "Writer is behind" is logged with a count, not once per segment.
    behind_log: RateLimit,
    preferred: String,
    selected: Option<String>,
    /// An init was lost to a full queue: its segments cannot be played until it is queued
    /// again (it is re-sent before the next segment that fits).
    awaiting_init: bool,
    /// The recorded rung's current init, to re-send after it was lost.
    last_init: Option<(Bytes, InitInfo, String)>,
    /// Segments lost since the last event that got through; reported with the next one.
    missed: u64,
}

impl RecordTap {
    /// A tap recording the `preferred` rung (empty: the tallest) of `stream` that queues at most
    /// `max_bytes` for its writer, and the writer's end.
    pub(super) fn new(
        preferred: String,
        max_bytes: u64,
        stream: Weak<LiveStream>,
    ) -> (RecordTap, TapReceiver) {
        let (mut tap, rx) = Self::with_queue(preferred, TAP_QUEUE, max_bytes);
        tap.stream = stream;
        (tap, rx)
    }

    fn with_queue(preferred: String, queue: usize, max_bytes: u64) -> (RecordTap, TapReceiver) {
        let (tx, rx) = mpsc::channel(queue);
        let queued = Arc::new(AtomicU64::new(0));
        let failure = Failure::default();
        let rx = TapReceiver {
            rx,
            queued: queued.clone(),
            failure: failure.clone(),
        };
        let tap = RecordTap {
            tx: Some(tx),
            stream: Weak::new(),
            failure,
            queued,
            max_bytes,
            behind_log: RateLimit::new(LOG_EVERY),
            preferred,
            selected: None,
            awaiting_init: false,
            last_init: None,
            missed: 0,
        };
        (tap, rx)
    }

    /// The ladder's rungs (name, width, height): record the configured one, else the tallest.
    pub fn ladder_planned(&mut self, rungs: &[(String, u32, u32)]) {
        if self.selected.is_some() {
            return;
        }
        self.selected = rungs
            .iter()
            .find(|(name, _, _)| *name == self.preferred)
            .or_else(|| rungs.iter().max_by_key(|(_, _, h)| *h))
            .map(|(name, _, _)| name.clone());
    }

    /// One segmenter output of `rung`.
    pub fn output(&mut self, rung: &str, output: &SegmenterOutput) {
        if self.tx.is_none() {
            // The recorded rendition ended; the recording is over.
            return;
        }
        if self.selected.is_none() && matches!(output, SegmenterOutput::Init { .. }) {
            // No ladder plan (passthrough, audio-only): the first rendition is the recording.
            self.selected = Some(rung.to_string());
        }
        if self.selected.as_deref() != Some(rung) {
            return;
        }
        match output {
            SegmenterOutput::Init { data, info } => {
                self.last_init = Some((data.clone(), info.clone(), rung.to_string()));
                self.awaiting_init = !self.send_init();
            }
            SegmenterOutput::Segment(s) => {
                if self.awaiting_init {
                    // Its init first (again): a segment without it cannot be played.
                    self.awaiting_init = !self.send_init();
                }
                let segment = TapEvent::Segment {
                    segment: s.clone(),
                    closed_at: Instant::now(),
                    missed_before: self.missed,
                };
                if self.awaiting_init || !self.send(segment) {
                    self.missed += 1;
                    self.behind();
                }
            }
            // Recordings keep whole segments: the segment that follows repeats its parts.
            SegmenterOutput::Part(_) => {}
            // Nothing more comes for this rendition: the recording ends now (dropping the tap,
            // when the producer finishes without an end, does the same).
            SegmenterOutput::End(_) => self.end(),
        }
    }

    /// The producer ended `rung` because of a failure (not its publisher): the recording, if it
    /// is of that rung, says why.
    pub fn failed(&mut self, rung: &str, reason: &str) {
        if self.selected.as_deref().is_none_or(|s| s == rung) {
            super::lock(&self.failure).get_or_insert_with(|| reason.to_string());
        }
    }

    /// The recorded rendition ended: the failure that ended the session, if any (taken while
    /// the producer still holds the stream), and the segments lost at the end go to the writer,
    /// then its queue closes. Idempotent.
    fn end(&mut self) {
        let Some(tx) = self.tx.take() else {
            return;
        };
        if let Some(reason) = self.stream.upgrade().and_then(|s| s.abort_reason()) {
            super::lock(&self.failure).get_or_insert(reason);
        }
        if self.missed > 0 {
            // Best effort: a full queue loses only the count, and the writer ends either way.
            let _ = tx.try_send(TapEvent::Missed {
                missed_before: self.missed,
            });
        }
    }

    /// Queues the current init; false if the queue is full.
    fn send_init(&mut self) -> bool {
        let Some((data, info, rung)) = self.last_init.clone() else {
            return false;
        };
        let sent = self.send(TapEvent::Init {
            data,
            info,
            rung,
            missed_before: self.missed,
        });
        if !sent {
            self.behind();
        }
        sent
    }

    /// Queues `event` within the count and byte budgets; the missed count travelled with it.
    fn send(&mut self, event: TapEvent) -> bool {
        let bytes = event.bytes();
        let fits = self.queued.load(Ordering::Relaxed).saturating_add(bytes) <= self.max_bytes;
        let Some(tx) = &self.tx else {
            return false;
        };
        if !(fits && tx.try_send(event).is_ok()) {
            return false;
        }
        self.queued.fetch_add(bytes, Ordering::Relaxed);
        self.missed = 0;
        true
    }

    fn behind(&mut self) {
        if let Some(suppressed) = self.behind_log.check() {
            tracing::error!(
                missed = self.missed,
                suppressed,
                queued_bytes = self.queued.load(Ordering::Relaxed),
                "recording writer is behind (spool disk too slow?); segments not recorded, the \
                 recording marks the gap"
            );
        }
    }

    pub fn recorded_rung(&self) -> Option<&str> {
        self.selected.as_deref()
    }
}

/// The recorder takes the recorded rendition's segments from the HLS renditions stage.
impl crate::hls::SegmentSubscriber for RecordTap {
    fn planned(&mut self, renditions: &[crate::stream::RenditionInfo]) {
        let sizes: Vec<(String, u32, u32)> = renditions
            .iter()
            .map(|r| (r.name.clone(), r.width, r.height))
            .collect();
        self.ladder_planned(&sizes);
    }

    fn output(&mut self, rendition: &str, output: &SegmenterOutput) {
        RecordTap::output(self, rendition, output);
    }

    fn failed(&mut self, rendition: &str, reason: &str) {
        RecordTap::failed(self, rendition, reason);
    }
}

impl Drop for RecordTap {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::EndReason;
    use chrono::Utc;

    fn tap(preferred: &str) -> (RecordTap, TapReceiver) {
        RecordTap::with_queue(preferred.to_string(), 4, 1 << 20)
    }

    fn rungs() -> Vec<(String, u32, u32)> {
        vec![
            ("360p".into(), 640, 360),
            ("720p".into(), 1280, 720),
            ("480p".into(), 854, 480),
        ]
    }

    fn init() -> SegmenterOutput {
        SegmenterOutput::Init {
            data: Bytes::from_static(b"init"),
            info: InitInfo {
                video: None,
                audio: None,
            },
        }
    }

    fn segment() -> SegmenterOutput {
        SegmenterOutput::Segment(Segment {
            duration: 2.0,
            data: Bytes::from_static(b"seg"),
            discontinuity: false,
            program_date_time: Utc::now(),
            independent: true,
            video_frames: 60,
            start_time: 0.0,
        })
    }

    #[test]
    fn records_the_configured_rung_else_the_tallest() {
        let (mut t, _rx) = tap("");
        t.ladder_planned(&rungs());
        assert_eq!(t.recorded_rung(), Some("720p"));
        let (mut t, _rx) = tap("480p");
        t.ladder_planned(&rungs());
        assert_eq!(t.recorded_rung(), Some("480p"));
        // A configured rung this source does not get (never upscaled): the tallest it has.
        let (mut t, _rx) = tap("1080p");
        t.ladder_planned(&rungs());
        assert_eq!(t.recorded_rung(), Some("720p"));
    }

    #[test]
    fn the_first_plan_sticks() {
        let (mut t, _rx) = tap("");
        t.ladder_planned(&rungs());
        t.ladder_planned(&[("1080p".into(), 1920, 1080)]);
        assert_eq!(t.recorded_rung(), Some("720p"));
    }

    #[test]
    fn without_a_plan_the_first_rendition_is_recorded_and_others_ignored() {
        let (mut t, mut rx) = tap("");
        t.output("source", &init());
        t.output("other", &init());
        t.output("other", &segment());
        assert_eq!(t.recorded_rung(), Some("source"));
        assert!(matches!(rx.rx.try_recv(), Ok(TapEvent::Init { rung, .. }) if rung == "source"));
        assert!(rx.rx.try_recv().is_err());
    }

    #[test]
    fn a_segment_before_any_init_does_not_pick_the_rung() {
        let (mut t, mut rx) = tap("");
        t.output("source", &segment());
        assert_eq!(t.recorded_rung(), None);
        assert!(rx.rx.try_recv().is_err());
    }

    #[test]
    fn the_end_of_a_rendition_is_not_forwarded() {
        let (mut t, mut rx) = tap("");
        t.output("source", &init());
        t.output("source", &SegmenterOutput::End(EndReason::Stopped));
        assert!(matches!(rx.rx.try_recv(), Ok(TapEvent::Init { .. })));
        assert!(rx.rx.try_recv().is_err());
    }

    #[test]
    fn a_full_queue_never_blocks_and_a_lost_init_is_sent_again_before_its_segments() {
        let (mut t, mut rx) = tap("");
        for _ in 0..4 {
            t.output("source", &init());
        }
        // The queue (4) is full: this init is lost, so its segments cannot be recorded either.
        t.output("source", &init());
        assert!(t.awaiting_init);
        t.output("source", &segment());
        assert_eq!(t.missed, 1);
        while rx.rx.try_recv().is_ok() {}
        // Room again: the init goes first (with the count lost before it), then the segment.
        t.output("source", &segment());
        assert!(!t.awaiting_init);
        assert!(matches!(
            rx.rx.try_recv(),
            Ok(TapEvent::Init {
                missed_before: 1,
                ..
            })
        ));
        assert!(matches!(
            rx.rx.try_recv(),
            Ok(TapEvent::Segment {
                missed_before: 0,
                ..
            })
        ));
        assert!(rx.rx.try_recv().is_err());
    }

    #[test]
    fn segments_lost_at_the_end_are_reported_when_the_tap_drops() {
        let (mut t, mut rx) = tap("");
        t.output("source", &init());
        for _ in 0..3 {
            t.output("source", &segment());
        }
        // Queue full: two segments lost.
        t.output("source", &segment());
        t.output("source", &segment());
        let received: Vec<TapEvent> = std::iter::from_fn(|| rx.rx.try_recv().ok()).collect();
        assert_eq!(received.len(), 4);
        assert!(received.iter().all(|e| e.missed_before() == 0));
        drop(t);
        assert!(matches!(
            rx.rx.try_recv(),
            Ok(TapEvent::Missed { missed_before: 2 })
        ));
        // The tap is gone: the writer sees the end.
        assert!(matches!(
            rx.rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }

    const REFUSED: &str = "source picture 4096x4096 is larger than this server accepts";

    #[test]
    fn the_end_of_the_recorded_rung_takes_the_reason_its_session_was_aborted() {
        let hub = crate::stream::Hub::new();
        let publisher = hub.publish("alice");
        let (mut t, mut rx) = tap("");
        t.stream = Arc::downgrade(publisher.stream());
        t.output("source", &init());
        t.output("source", &segment());
        publisher.stream().abort(REFUSED);
        t.output("source", &SegmenterOutput::End(EndReason::Stopped));
        // The recording ends with the rendition, though the producer still holds the tap.
        assert!(matches!(rx.rx.try_recv(), Ok(TapEvent::Init { .. })));
        assert!(matches!(rx.rx.try_recv(), Ok(TapEvent::Segment { .. })));
        assert!(matches!(
            rx.rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        assert_eq!(rx.failure().as_deref(), Some(REFUSED));
        // Nothing after the end is queued, counted or logged as lost.
        t.output("source", &segment());
        assert_eq!(t.missed, 0);
    }

    #[test]
    fn a_publisher_that_stops_or_is_replaced_leaves_no_failure() {
        let hub = crate::stream::Hub::new();
        let publisher = hub.publish("alice");
        let (mut t, rx) = tap("");
        t.stream = Arc::downgrade(publisher.stream());
        t.output("source", &init());
        t.output("source", &SegmenterOutput::End(EndReason::Replaced));
        drop(t);
        assert_eq!(rx.failure(), None);
        // A tap dropped without an end (producer gone) reads the reason then.
        let (mut t, rx) = tap("");
        t.stream = Arc::downgrade(publisher.stream());
        t.output("source", &init());
        publisher.stream().abort(REFUSED);
        drop(t);
        assert_eq!(rx.failure().as_deref(), Some(REFUSED));
    }

    #[test]
    fn only_a_failure_of_the_recorded_rung_counts_and_the_first_one_wins() {
        let hub = crate::stream::Hub::new();
        let publisher = hub.publish("alice");
        let (mut t, rx) = tap("");
        t.stream = Arc::downgrade(publisher.stream());
        t.ladder_planned(&rungs());
        // The segment-rate limit ended another rung: this recording goes on.
        t.failed("360p", "segments came faster than real time allows");
        assert_eq!(rx.failure(), None);
        t.failed("720p", "the transcoder panicked: boom");
        t.failed("720p", "a later failure");
        publisher
            .stream()
            .abort("the transcoder panicked: boom (abort)");
        t.output("720p", &SegmenterOutput::End(EndReason::Stopped));
        assert_eq!(
            rx.failure().as_deref(),
            Some("the transcoder panicked: boom")
        );
    }

    fn segment_of(len: usize) -> SegmenterOutput {
        let SegmenterOutput::Segment(s) = segment() else {
            unreachable!("segment() is a segment")
        };
        SegmenterOutput::Segment(Segment {
            data: Bytes::from(vec![0u8; len]),
            ..s
        })
    }

    #[tokio::test]
    async fn the_queue_is_bounded_by_bytes_and_the_writer_gives_them_back() {
        // Room for 64 events but only 1000 bytes.
        let (mut t, mut rx) = RecordTap::with_queue(String::new(), 64, 1000);
        t.output("source", &init());
        t.output("source", &segment_of(600));
        // 4 + 600 + 600 > 1000: refused although the queue has room for 61 more events.
        t.output("source", &segment_of(600));
        t.output("source", &segment_of(600));
        assert_eq!(t.missed, 2);
        assert_eq!(t.queued.load(Ordering::Relaxed), 604);
        assert!(matches!(rx.recv().await, Some(TapEvent::Init { .. })));
        assert!(matches!(rx.recv().await, Some(TapEvent::Segment { .. })));
        assert_eq!(t.queued.load(Ordering::Relaxed), 0);
        // The writer took them: room again, and the gap travels with the next segment.
        t.output("source", &segment_of(600));
        assert!(matches!(
            rx.recv().await,
            Some(TapEvent::Segment {
                missed_before: 2,
                ..
            })
        ));
        // A segment larger than the whole budget is never queued.
        t.output("source", &segment_of(2000));
        assert_eq!(t.missed, 1);
    }

    /// Counts ERROR events.
    struct Errors(Arc<AtomicU64>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Errors {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if *event.metadata().level() == tracing::Level::ERROR {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    #[test]
    fn a_segment_flood_on_a_stuck_writer_logs_once_with_a_count() {
        use tracing_subscriber::layer::SubscriberExt;
        let errors = Arc::new(AtomicU64::new(0));
        let subscriber = tracing_subscriber::registry().with(Errors(errors.clone()));
        let (mut t, _rx) = tap("");
        tracing::subscriber::with_default(subscriber, || {
            t.output("source", &init());
            // Issue 10's timestamp flood: 28,175 segments the writer could not take.
            for _ in 0..28_175 {
                t.output("source", &segment());
            }
        });
        assert_eq!(t.missed, 28_175 - 3);
        assert_eq!(errors.load(Ordering::Relaxed), 1);
    }
}
