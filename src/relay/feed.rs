//! Feeding relays without slowing their producer: each relay's queue is a
//! [`GopQueue`](crate::stream::queue::GopQueue) (whole GOPs dropped when the target is slow),
//! fed from the source's subscription or from a rendition's hub stream.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::Utc;

use super::RelayState;
use crate::media::MediaEvent;
use crate::metrics::Metrics;
use crate::stream::queue::{GopQueue, Offer};
use crate::stream::{LiveStream, RenditionInfo, Subscription};
use crate::util::log_throttle::RateLimit;

/// A source that alternates keyframes and bursts would log a drop and a resume per GOP.
const DROP_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// One relay's queue and its accounting.
pub struct Feeder {
    queue: GopQueue,
    state: Arc<RelayState>,
    metrics: Arc<Metrics>,
    drop_log: RateLimit,
    resume_log: RateLimit,
}

impl Feeder {
    pub(super) fn new(queue: GopQueue, state: Arc<RelayState>, metrics: Arc<Metrics>) -> Self {
        Feeder {
            queue,
            state,
            metrics,
            drop_log: RateLimit::new(DROP_LOG_INTERVAL),
            resume_log: RateLimit::new(DROP_LOG_INTERVAL),
        }
    }

    /// Offers one event. False once the relay has gone (its task ended). The end of the source
    /// reaches the relay as its queue closing.
    pub fn offer(&mut self, event: &MediaEvent) -> bool {
        if matches!(event, MediaEvent::End(_)) {
            return !self.queue.is_closed();
        }
        let was_dropping = self.queue.is_dropping();
        match self.queue.offer(event.clone(), Utc::now()) {
            Offer::Closed => return false,
            Offer::Dropped => {
                if matches!(event, MediaEvent::Packet(_)) {
                    self.state.dropped_frames.fetch_add(1, Ordering::Relaxed);
                    self.metrics
                        .relay_dropped_frames
                        .get_or_create(&self.state.labels)
                        .inc();
                }
                if !was_dropping {
                    if let Some(suppressed) = self.drop_log.check() {
                        tracing::warn!(relay = %self.state.target.id, suppressed,
                            "relay target too slow; dropping until the next keyframe");
                    }
                }
            }
            Offer::Resumed => {
                if let Some(suppressed) = self.resume_log.check() {
                    tracing::info!(relay = %self.state.target.id, suppressed,
                        "relay caught up; resuming at a keyframe")
                }
            }
            Offer::Queued => {}
        }
        true
    }
}

/// The rendition a relay pushes: the one it asked for if the ladder makes it, else the tallest
/// (never upscaled), said so in its status.
pub(super) fn choose_rendition(
    wanted: Option<&str>,
    plan: &[RenditionInfo],
    state: &RelayState,
) -> Option<String> {
    if let Some(w) = wanted.filter(|w| plan.iter().any(|r| r.name == *w)) {
        return Some(w.to_string());
    }
    let tallest = plan.iter().max_by_key(|r| r.height)?.name.clone();
    let mut inner = state.lock();
    inner.last_error = Some(match wanted {
        Some(w) => {
            format!("rung {w} is not produced for this source (never upscaled); relaying {tallest}")
        }
        None => format!(
            "the source's codec cannot be relayed over RTMP (H.264/AAC only); relaying {tallest}"
        ),
    });
    inner.rung = Some(tallest.clone());
    Some(tallest)
}

/// Feeds a relay from a ladder rendition once the stream's renditions are planned (`wanted`:
/// the rung asked for; None: the tallest, for a source that cannot be relayed as is). A stream
/// served as published is relayed as is.
pub(super) async fn feed_rendition(
    stream: Arc<LiveStream>,
    wanted: Option<String>,
    mut feeder: Feeder,
) {
    let Some(plan) = stream.renditions().await else {
        return; // ended before anything was planned
    };
    let mut subscription: Subscription = if plan.is_empty() {
        tracing::warn!(relay = %feeder.state.target.id, rung = wanted.as_deref().unwrap_or("-"),
            "stream is not transcoded; relaying the source instead of the rung");
        feeder.state.lock().rung = None;
        stream.subscribe()
    } else {
        let Some(name) = choose_rendition(wanted.as_deref(), &plan, &feeder.state) else {
            return;
        };
        let Some(rendition) = stream.rendition(&name) else {
            return;
        };
        rendition.subscribe()
    };
    while let Some(event) = subscription.recv().await {
        if !feeder.offer(&event) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{Platform, RelayTarget};
    use crate::stream::queue::gop_queue;
    use crate::stream::Hub;

    fn state() -> Arc<RelayState> {
        let target = RelayTarget::new(
            "alice",
            Platform::Custom,
            "rtmp://127.0.0.1:1/live/k",
            false,
            Some("720p"),
            &crate::config::RelayPresets::default(),
        )
        .unwrap();
        RelayState::new(target, Some("720p".into()))
    }

    fn info(name: &str, height: u32) -> RenditionInfo {
        RenditionInfo {
            name: name.into(),
            width: height * 16 / 9,
            height,
        }
    }

    #[test]
    fn a_missing_rung_falls_back_to_the_tallest_and_says_so() {
        let s = state();
        let plan = [info("360p", 360), info("480p", 480)];
        assert_eq!(
            choose_rendition(Some("480p"), &plan, &s).as_deref(),
            Some("480p")
        );
        assert!(s.lock().last_error.is_none());
        assert_eq!(
            choose_rendition(Some("720p"), &plan, &s).as_deref(),
            Some("480p")
        );
        let inner = s.lock();
        assert_eq!(inner.rung.as_deref(), Some("480p"));
        assert!(inner
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("never upscaled"));
    }

    fn frame(keyframe: bool) -> MediaEvent {
        MediaEvent::Packet(crate::media::Packet {
            track: crate::media::TrackKind::Video,
            dts: 0,
            pts: 0,
            keyframe,
            data: bytes::Bytes::from_static(&[0; 8]),
        })
    }

    #[test]
    fn drops_are_counted_per_relay_and_a_gone_relay_is_reported() {
        let (queue, rx, _) = gop_queue(2, 0);
        let s = state();
        let metrics = Arc::new(Metrics::new());
        let mut feeder = Feeder::new(queue, s.clone(), metrics.clone());
        let config = MediaEvent::VideoConfig(Arc::new(
            crate::media::VideoConfig::h264(crate::media::avc::tests::AVCC_640X360_HIGH).unwrap(),
        ));
        assert!(feeder.offer(&config));
        assert!(feeder.offer(&frame(true)));
        // Full: the next frames are dropped and counted, not queued.
        assert!(feeder.offer(&frame(false)));
        assert!(feeder.offer(&frame(false)));
        assert_eq!(s.dropped_frames.load(Ordering::Relaxed), 2);
        let counted = metrics.relay_dropped_frames.get_or_create(&s.labels).get();
        assert_eq!(counted, 2);
        // The end is not queued (the queue closing tells the relay).
        assert!(feeder.offer(&MediaEvent::End(crate::media::EndReason::Stopped)));
        drop(rx);
        assert!(!feeder.offer(&frame(true)), "the relay has gone");
    }

    #[tokio::test]
    async fn a_rendition_feed_ends_with_the_rendition() {
        let hub = Hub::new();
        let publisher = hub.publish("alice");
        let stream = publisher.stream().clone();
        let (queue, mut rx, _) = gop_queue(8, 0);
        let feed = tokio::spawn(feed_rendition(
            stream.clone(),
            Some("720p".into()),
            Feeder::new(queue, state(), Arc::new(Metrics::new())),
        ));
        let rung = stream.publish_rendition("480p");
        stream.plan_renditions(vec![info("480p", 480)]);
        let frame = MediaEvent::Packet(crate::media::Packet {
            track: crate::media::TrackKind::Audio,
            dts: 0,
            pts: 0,
            keyframe: true,
            data: bytes::Bytes::from_static(&[1]),
        });
        // The feed subscribes once the plan is out; wait for the subscription to exist.
        for _ in 0..100 {
            if rung.stream().summary().consumers > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        rung.push(frame.clone(), 1);
        assert_eq!(rx.recv().await.map(|q| q.event), Some(frame));
        drop(rung);
        feed.await.unwrap();
        assert!(
            rx.recv().await.is_none(),
            "the queue closes with the rendition"
        );
    }
}
