//! Feeding relays without slowing their producer: a [`Feeder`] per relay queue (the source's
//! subscription or a ladder rung), and the [`RungFeeds`] a ladder offers its rungs' events to.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::RelayState;
use crate::media::{MediaEvent, TrackKind};
use crate::metrics::Metrics;

/// Feeds one relay's queue without ever blocking the producer (a tokio task or the ladder
/// thread): when the queue is full it drops until the next keyframe that finds room.
pub struct Feeder {
    tx: mpsc::Sender<MediaEvent>,
    capacity: usize,
    dropping: bool,
    has_video: bool,
    /// Configuration that arrived while dropping: sent before resuming.
    pending_config: Vec<MediaEvent>,
    state: Arc<RelayState>,
    metrics: Arc<Metrics>,
}

impl Feeder {
    pub(super) fn new(
        tx: mpsc::Sender<MediaEvent>,
        capacity: usize,
        state: Arc<RelayState>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Feeder {
            tx,
            capacity,
            dropping: false,
            has_video: false,
            pending_config: Vec::new(),
            state,
            metrics,
        }
    }

    /// Offers one event. False once the relay has gone (its task ended).
    pub fn offer(&mut self, event: &MediaEvent) -> bool {
        if self.tx.is_closed() {
            return false;
        }
        match event {
            MediaEvent::VideoConfig(_) | MediaEvent::AudioConfig(_) => {
                self.has_video |= matches!(event, MediaEvent::VideoConfig(_));
                if self.dropping || self.tx.try_send(event.clone()).is_err() {
                    self.dropping = true;
                    self.pending_config
                        .retain(|e| std::mem::discriminant(e) != std::mem::discriminant(event));
                    self.pending_config.push(event.clone());
                }
            }
            MediaEvent::Packet(p) => {
                let key = (p.track == TrackKind::Video && p.keyframe) || !self.has_video;
                if self.dropping {
                    let room = self.tx.capacity() > self.capacity / 2 + self.pending_config.len();
                    if !(key && room) {
                        self.drop_frame();
                        return true;
                    }
                    self.dropping = false;
                    for config in self.pending_config.drain(..) {
                        let _ = self.tx.try_send(config);
                    }
                    tracing::info!(relay = %self.state.target.id, "relay caught up; resuming at a keyframe");
                }
                if self.tx.try_send(event.clone()).is_err() {
                    self.dropping = true;
                    self.drop_frame();
                    tracing::warn!(relay = %self.state.target.id,
                        "relay target too slow; dropping until the next keyframe");
                }
            }
            // The end of the source reaches the relay as its queue closing.
            MediaEvent::End(_) => {}
        }
        true
    }

    fn drop_frame(&self) {
        self.state.dropped_frames.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .relay_dropped_frames
            .get_or_create(&self.state.labels)
            .inc();
    }
}

/// Rung feeds a ladder serves: the transcoder thread offers each rung's events to the relays
/// that asked for that rung. Filled in when the stream's relays are known.
#[derive(Default)]
pub struct RungFeeds {
    any: AtomicBool,
    inner: Mutex<RungFeedsInner>,
}

#[derive(Default)]
struct RungFeedsInner {
    feeds: Vec<(String, Feeder)>,
    /// The ladder's rungs (name, height) once planned.
    planned: Option<Vec<(String, u32)>>,
    /// Each rung's latest configuration events, for relays that join after they went by.
    configs: std::collections::HashMap<String, Vec<MediaEvent>>,
}

impl RungFeeds {
    pub fn offer(&self, rung: &str, event: &MediaEvent) {
        let is_config = matches!(
            event,
            MediaEvent::VideoConfig(_) | MediaEvent::AudioConfig(_)
        );
        if !is_config && !self.any.load(Ordering::Relaxed) {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if is_config {
            let configs = inner.configs.entry(rung.to_string()).or_default();
            configs.retain(|e| std::mem::discriminant(e) != std::mem::discriminant(event));
            configs.push(event.clone());
        }
        if matches!(event, MediaEvent::End(_)) {
            // The rung is finished: closing its queues ends those relays.
            inner.feeds.retain(|(name, _)| name != rung);
            return;
        }
        inner
            .feeds
            .retain_mut(|(name, feeder)| name != rung || feeder.offer(event));
    }

    /// The ladder planned its rungs: a relay asking for a rung this source does not get (never
    /// upscaled) is given the tallest one instead, and says so in its status.
    pub fn planned(&self, rungs: &[(String, u32, u32)]) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.planned = Some(rungs.iter().map(|(n, _, h)| (n.clone(), *h)).collect());
        let feeds = std::mem::take(&mut inner.feeds);
        for (rung, feeder) in feeds {
            let rung = inner.produced(&rung, &feeder.state);
            inner.feeds.push((rung, feeder));
        }
    }

    pub(super) fn add(&self, rung: String, mut feeder: Feeder) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let rung = inner.produced(&rung, &feeder.state);
        for config in inner.configs.get(&rung).into_iter().flatten() {
            feeder.offer(config);
        }
        inner.feeds.push((rung, feeder));
        self.any.store(true, Ordering::Relaxed);
    }
}

impl RungFeedsInner {
    /// `wanted` if the ladder makes it (or is not planned yet), else its tallest rung.
    fn produced(&self, wanted: &str, state: &RelayState) -> String {
        let Some(planned) = &self.planned else {
            return wanted.to_string();
        };
        if planned.iter().any(|(n, _)| n == wanted) {
            return wanted.to_string();
        }
        let Some((tallest, _)) = planned.iter().max_by_key(|(_, h)| *h) else {
            return wanted.to_string();
        };
        let mut inner = state.lock();
        inner.last_error = Some(format!(
            "rung {wanted} is not produced for this source (never upscaled); relaying {tallest}"
        ));
        inner.rung = Some(tallest.clone());
        tallest.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::avc::tests::AVCC_640X360_HIGH;
    use crate::media::{Packet, VideoConfig};
    use crate::relay::{Platform, RelayTarget};
    use bytes::Bytes;

    fn feeder(capacity: usize) -> (Feeder, mpsc::Receiver<MediaEvent>, Arc<RelayState>) {
        let target = RelayTarget::new(
            "u",
            Platform::Custom,
            "rtmp://127.0.0.1/app/k",
            false,
            None,
            &crate::config::RelayPresets::default(),
        )
        .unwrap();
        let state = RelayState::new(target, None);
        let (tx, rx) = mpsc::channel(capacity);
        let feeder = Feeder::new(tx, capacity, state.clone(), Arc::new(Metrics::new()));
        (feeder, rx, state)
    }

    fn frame(keyframe: bool) -> MediaEvent {
        MediaEvent::Packet(Packet {
            track: TrackKind::Video,
            dts: 0,
            pts: 0,
            keyframe,
            data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
        })
    }

    #[test]
    fn a_full_queue_drops_whole_gops_and_resumes_at_a_keyframe_with_room() {
        let (mut f, mut rx, state) = feeder(16);
        let config =
            MediaEvent::VideoConfig(Arc::new(VideoConfig::h264(AVCC_640X360_HIGH).unwrap()));
        assert!(f.offer(&config));
        assert!(f.offer(&frame(true)));
        for _ in 0..14 {
            f.offer(&frame(false));
        }
        // Full: this frame and the rest of its GOP are dropped, even once there is room.
        f.offer(&frame(false));
        assert_eq!(state.dropped_frames.load(Ordering::Relaxed), 1);
        for _ in 0..16 {
            rx.try_recv().unwrap();
        }
        f.offer(&frame(false));
        assert_eq!(state.dropped_frames.load(Ordering::Relaxed), 2);
        assert!(rx.try_recv().is_err());
        // A configuration change while dropping is kept and sent first when resuming.
        f.offer(&config);
        f.offer(&frame(true));
        assert!(matches!(rx.try_recv(), Ok(MediaEvent::VideoConfig(_))));
        assert!(matches!(rx.try_recv(), Ok(MediaEvent::Packet(p)) if p.keyframe));
        // A relay that has gone makes the feeder say so.
        drop(rx);
        assert!(!f.offer(&frame(false)));
    }
}
