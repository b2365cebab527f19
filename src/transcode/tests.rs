//! The ladder thread's failure paths, with real libav and a sink that panics.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::config::{HlsConfig, TranscodeConfig};
use crate::media::{EndReason, MediaEvent, VideoConfig};
use crate::stream::Hub;

/// A consumer with a bug: it panics on the ladder's first output.
struct PanickingSink {
    finished: Arc<Mutex<Option<EndReason>>>,
    failed: Arc<Mutex<Option<String>>>,
}

impl LadderSink for PanickingSink {
    fn rung_event(&mut self, _rung: &str, _event: MediaEvent) {
        panic!("consumer bug at the first rung event");
    }

    fn finish(&mut self, reason: EndReason) {
        *self.finished.lock().unwrap() = Some(reason);
    }

    fn failed(&mut self, reason: &str) {
        // Told before the end, so a recording can say why it ended.
        assert!(self.finished.lock().unwrap().is_none());
        *self.failed.lock().unwrap() = Some(reason.to_string());
    }
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_ladder_ends_its_stream_and_releases_its_slot_and_gauge() {
    let hub = Hub::new();
    let publisher = hub.publish("alice");
    let stream = hub.get("alice").unwrap();
    let finished = Arc::new(Mutex::new(None));
    let failed = Arc::new(Mutex::new(None));
    let slots = LadderSlots::new(1);
    let metrics = Arc::new(Metrics::new());
    spawn_ladder(
        stream.subscribe(),
        PanickingSink {
            finished: finished.clone(),
            failed: failed.clone(),
        },
        slots.try_acquire(admission::LadderWeight::Full).unwrap(),
        // Encoding at once: the source-rung probe would hold the configuration.
        &TranscodeConfig {
            source_rung: crate::config::SourceRung::Never,
            ..TranscodeConfig::default()
        },
        &HlsConfig::default(),
        metrics.clone(),
    );
    let record = crate::media::avc::tests::AVCC_640X360_HIGH;
    publisher.push(
        MediaEvent::VideoConfig(Arc::new(VideoConfig::h264(record).unwrap())),
        0,
    );
    // The publisher is told, like for any source the ladder cannot serve.
    wait_for("the session to be aborted", || {
        stream.abort_reason().is_some()
    })
    .await;
    let reason = stream.abort_reason().unwrap();
    assert!(
        reason.contains("panicked: consumer bug at the first rung event"),
        "{reason}"
    );
    drop(publisher);
    wait_for("the ladder thread to end", || slots.in_use() == 0).await;
    assert_eq!(*finished.lock().unwrap(), Some(EndReason::Stopped));
    // The consumers (HLS, the recording) learn why, as the publisher does.
    assert_eq!(failed.lock().unwrap().as_deref(), Some(reason.as_str()));
    assert_eq!(metrics.transcoders.get(), 0, "the gauge is released");
    assert!(
        slots.try_acquire(admission::LadderWeight::Full).is_some(),
        "the slot is free again"
    );
}
