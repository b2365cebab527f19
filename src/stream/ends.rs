//! The two ends of a live stream: the [`Publisher`] that feeds it and the [`Subscription`]s
//! that read it.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::{lock, Hub, LiveStream, LAG_LOG};
use crate::media::{EndReason, MediaEvent, TrackKind};

/// The publishing side of a live stream. Dropping it ends the stream (`End(Stopped)`), unless a
/// newer session has taken over already.
pub struct Publisher {
    /// None for a rendition, which the hub does not list.
    pub(super) hub: Option<Arc<Hub>>,
    pub(super) stream: Arc<LiveStream>,
}

impl Publisher {
    pub fn stream(&self) -> &Arc<LiveStream> {
        &self.stream
    }

    /// Forwards an event to every consumer. `wire_bytes` is what it cost on the wire (stats).
    /// A session over its message rate is ended ([`super::HubLimits`]) and its media no longer
    /// forwarded. An `End` always goes through.
    pub fn push(&self, event: MediaEvent, wire_bytes: usize) {
        if self.stream.record(Some(&event), wire_bytes) || matches!(event, MediaEvent::End(_)) {
            self.stream.push(event);
        }
    }

    /// Records a message that carried no media event (headers, metadata) in the ingest rates.
    pub fn count_bytes(&self, wire_bytes: usize) {
        self.stream.record(None, wire_bytes);
    }

    /// A consumer's keyframe request since the last call, with its reason (see
    /// [`LiveStream::request_keyframe`]).
    pub fn keyframe_wanted(&self) -> Option<&'static str> {
        lock(&self.stream.keyframe_wanted).take()
    }

    pub fn set_fps_hint(&self, fps: f64) {
        if fps.is_finite() && fps > 0.0 && fps <= 480.0 {
            lock(&self.stream.stats).fps_hint = Some(fps);
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stream.end(EndReason::Stopped);
        if let Some(hub) = &self.hub {
            hub.remove_if_current(&self.stream);
        }
    }
}

/// A consumer's view of one live stream.
pub struct Subscription {
    pub(super) stream: Arc<LiveStream>,
    pub(super) backlog: VecDeque<MediaEvent>,
    pub(super) rx: Option<broadcast::Receiver<MediaEvent>>,
    pub(super) skip_to_keyframe: bool,
}

impl Subscription {
    pub fn stream(&self) -> &Arc<LiveStream> {
        &self.stream
    }

    /// Puts events back in front of the next ones (a consumer that looked ahead to decide who
    /// takes the subscription over).
    pub fn unread(&mut self, events: Vec<MediaEvent>) {
        for e in events.into_iter().rev() {
            self.backlog.push_front(e);
        }
    }

    /// The next event, or None once the stream has ended and everything was delivered.
    pub async fn recv(&mut self) -> Option<MediaEvent> {
        loop {
            if let Some(e) = self.backlog.pop_front() {
                if matches!(e, MediaEvent::End(_)) {
                    // Nothing follows an end, even if the ring is still open.
                    self.backlog.clear();
                    self.rx = None;
                }
                return Some(e);
            }
            let rx = self.rx.as_mut()?;
            match rx.recv().await {
                Ok(event) => {
                    if self.skip_to_keyframe {
                        match &event {
                            MediaEvent::Packet(p) if p.track == TrackKind::Video && p.keyframe => {
                                self.skip_to_keyframe = false
                            }
                            MediaEvent::Packet(_) => continue,
                            _ => {}
                        }
                    }
                    if matches!(event, MediaEvent::End(_)) {
                        self.rx = None;
                    }
                    return Some(event);
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    self.stream.lag_drops.fetch_add(missed, Ordering::Relaxed);
                    if let Some(suppressed) = LAG_LOG.check(&self.stream.name) {
                        tracing::warn!(stream = %self.stream.name, missed, suppressed,
                            "consumer fell behind; skipping to the next keyframe");
                    }
                    // Re-announce the configuration in case a change was among the missed events.
                    let f = lock(&self.stream.fanout);
                    if let Some(v) = &f.video {
                        self.backlog.push_back(MediaEvent::VideoConfig(v.clone()));
                        self.skip_to_keyframe = true;
                        self.stream.request_keyframe("consumer lag");
                    }
                    if let Some(a) = &f.audio {
                        self.backlog.push_back(MediaEvent::AudioConfig(a.clone()));
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.rx = None;
                    return None;
                }
            }
        }
    }
}
