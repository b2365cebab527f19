//! The bounded queue between a live stream and a consumer that may fall behind real time (the
//! transcoder, a relay): the producer never waits, memory never grows, and when the consumer
//! cannot keep up whole GOPs are dropped until a keyframe finds room again. Configuration and the
//! end are never dropped: held back while dropping, they are delivered before the next keyframe.
//!
//! The queue is bounded by bytes as well as by count: every queued event carries a ticket for
//! its payload size that is released when the consumer drops it, so a few huge frames cannot
//! pin more than the budget however few they are.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::media::{MediaEvent, TrackKind};

/// One event and when it reached the queue (the transcoder's clock anchor).
#[derive(Debug)]
pub struct Queued {
    pub event: MediaEvent,
    pub arrived: DateTime<Utc>,
    /// Counts the event's bytes against the queue's budget until the consumer drops it.
    _ticket: ByteTicket,
}

/// Holds `bytes` of a queue's byte budget; released on drop.
#[derive(Debug)]
struct ByteTicket {
    bytes: usize,
    stats: Arc<QueueStats>,
}

impl Drop for ByteTicket {
    fn drop(&mut self) {
        self.stats.bytes.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Counters a queue's owner reports (status, metrics).
#[derive(Debug, Default)]
pub struct QueueStats {
    pub dropped: AtomicU64,
    pub depth: AtomicUsize,
    /// Payload bytes queued and not yet dropped by the consumer.
    pub bytes: AtomicUsize,
}

fn payload_bytes(event: &MediaEvent) -> usize {
    match event {
        MediaEvent::Packet(p) => p.data.len(),
        _ => 0,
    }
}

/// What happened to an offered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// Held back or dropped: the consumer is behind.
    Dropped,
    /// Resumed at this keyframe after dropping.
    Resumed,
    /// The consumer has gone.
    Closed,
}

pub struct GopQueue {
    tx: mpsc::Sender<Queued>,
    capacity: usize,
    max_bytes: usize,
    dropping: bool,
    has_video: bool,
    /// Configuration (and the end) that arrived while dropping, sent before resuming.
    held: Vec<MediaEvent>,
    stats: Arc<QueueStats>,
}

/// A queue of `capacity` events and at most `max_bytes` of payload (at least one 1 MiB frame);
/// the receiver is the consumer's end.
pub fn gop_queue(
    capacity: usize,
    max_bytes: usize,
) -> (GopQueue, mpsc::Receiver<Queued>, Arc<QueueStats>) {
    let capacity = capacity.max(2);
    let max_bytes = max_bytes.max(1 << 20);
    let (tx, rx) = mpsc::channel(capacity);
    let stats = Arc::new(QueueStats::default());
    let queue = GopQueue {
        tx,
        capacity,
        max_bytes,
        dropping: false,
        has_video: false,
        held: Vec::new(),
        stats: stats.clone(),
    };
    (queue, rx, stats)
}

impl GopQueue {
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Dropping until a keyframe finds room.
    pub fn is_dropping(&self) -> bool {
        self.dropping
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Offers one event without waiting.
    pub fn offer(&mut self, event: MediaEvent, arrived: DateTime<Utc>) -> Offer {
        if self.tx.is_closed() {
            return Offer::Closed;
        }
        let result = match &event {
            MediaEvent::VideoConfig(_) | MediaEvent::AudioConfig(_) | MediaEvent::End(_) => {
                self.has_video |= matches!(event, MediaEvent::VideoConfig(_));
                if self.dropping || !self.held.is_empty() || !self.send(&event, arrived) {
                    self.dropping = true;
                    self.hold(event);
                    Offer::Dropped
                } else {
                    Offer::Queued
                }
            }
            MediaEvent::Packet(p) => {
                // Without video every audio frame is a place to resume.
                let key = (p.track == TrackKind::Video && p.keyframe) || !self.has_video;
                let mut resumed = false;
                if self.dropping {
                    // Resume with half the queue free, by count and by bytes.
                    let queued = self.stats.bytes.load(Ordering::Relaxed);
                    let room = self.tx.capacity() > self.capacity / 2 + self.held.len()
                        && queued <= self.max_bytes / 2
                        && queued + p.data.len() <= self.max_bytes;
                    if !(key && room) {
                        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        return Offer::Dropped;
                    }
                    for held in std::mem::take(&mut self.held) {
                        self.send(&held, arrived);
                    }
                    self.dropping = false;
                    resumed = true;
                }
                if self.send(&event, arrived) {
                    if resumed {
                        Offer::Resumed
                    } else {
                        Offer::Queued
                    }
                } else {
                    self.dropping = true;
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    Offer::Dropped
                }
            }
        };
        self.stats
            .depth
            .store(self.capacity - self.tx.capacity(), Ordering::Relaxed);
        result
    }

    /// Delivers what is held back, waiting for room: for the end of a feed, so the consumer
    /// learns why the stream ended.
    pub async fn flush(&mut self, arrived: DateTime<Utc>) {
        for event in std::mem::take(&mut self.held) {
            let queued = Queued {
                _ticket: self.ticket(&event),
                event,
                arrived,
            };
            if self.tx.send(queued).await.is_err() {
                return;
            }
        }
        self.dropping = false;
    }

    fn ticket(&self, event: &MediaEvent) -> ByteTicket {
        let bytes = payload_bytes(event);
        self.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
        ByteTicket {
            bytes,
            stats: self.stats.clone(),
        }
    }

    /// Queues without waiting; false when full by count or by bytes.
    fn send(&self, event: &MediaEvent, arrived: DateTime<Utc>) -> bool {
        let bytes = payload_bytes(event);
        if bytes > 0 && self.stats.bytes.load(Ordering::Relaxed) + bytes > self.max_bytes {
            return false;
        }
        self.tx
            .try_send(Queued {
                event: event.clone(),
                arrived,
                _ticket: self.ticket(event),
            })
            .is_ok()
    }

    /// Keeps only the newest configuration of each kind.
    fn hold(&mut self, event: MediaEvent) {
        self.held
            .retain(|e| std::mem::discriminant(e) != std::mem::discriminant(&event));
        self.held.push(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{EndReason, Packet};
    use bytes::Bytes;

    fn frame(keyframe: bool) -> MediaEvent {
        MediaEvent::Packet(Packet {
            track: TrackKind::Video,
            dts: 0,
            pts: 0,
            keyframe,
            data: Bytes::from_static(&[0; 8]),
        })
    }

    fn config() -> MediaEvent {
        MediaEvent::VideoConfig(Arc::new(
            crate::media::VideoConfig::h264(crate::media::avc::tests::AVCC_640X360_HIGH).unwrap(),
        ))
    }

    fn drain(rx: &mut mpsc::Receiver<Queued>) -> Vec<MediaEvent> {
        let mut v = Vec::new();
        while let Ok(q) = rx.try_recv() {
            v.push(q.event);
        }
        v
    }

    #[test]
    fn a_full_queue_drops_whole_gops_and_resumes_at_a_keyframe_with_room() {
        let now = Utc::now();
        let (mut q, mut rx, stats) = gop_queue(4, 0);
        assert_eq!(q.offer(config(), now), Offer::Queued);
        assert_eq!(q.offer(frame(true), now), Offer::Queued);
        assert_eq!(q.offer(frame(false), now), Offer::Queued);
        assert_eq!(q.offer(frame(false), now), Offer::Queued);
        // Full: this frame and the rest of the GOP are dropped.
        assert_eq!(q.offer(frame(false), now), Offer::Dropped);
        assert_eq!(q.offer(frame(false), now), Offer::Dropped);
        // A keyframe without room is dropped too.
        assert_eq!(q.offer(frame(true), now), Offer::Dropped);
        assert_eq!(drain(&mut rx).len(), 4);
        // Non-key frames never resume, even with room.
        assert_eq!(q.offer(frame(false), now), Offer::Dropped);
        assert_eq!(q.offer(frame(true), now), Offer::Resumed);
        assert_eq!(drain(&mut rx), vec![frame(true)]);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn configuration_and_end_are_held_and_delivered_before_resuming() {
        let now = Utc::now();
        let (mut q, mut rx, _) = gop_queue(4, 0);
        q.offer(frame(true), now);
        for _ in 0..3 {
            q.offer(frame(false), now);
        }
        assert_eq!(q.offer(config(), now), Offer::Dropped);
        assert_eq!(q.offer(config(), now), Offer::Dropped); // replaces the held one
        drain(&mut rx);
        assert_eq!(q.offer(frame(true), now), Offer::Resumed);
        assert_eq!(drain(&mut rx), vec![config(), frame(true)]);
    }

    #[tokio::test]
    async fn flush_delivers_a_held_end() {
        let now = Utc::now();
        let (mut q, mut rx, _) = gop_queue(2, 0);
        q.offer(frame(true), now);
        q.offer(frame(false), now);
        let end = MediaEvent::End(EndReason::Replaced);
        assert_eq!(q.offer(end.clone(), now), Offer::Dropped);
        let reader = tokio::spawn(async move {
            let mut v = Vec::new();
            while let Some(q) = rx.recv().await {
                v.push(q.event);
            }
            v
        });
        q.flush(now).await;
        drop(q);
        let got = reader.await.unwrap();
        assert_eq!(got.last(), Some(&end));
    }

    #[test]
    fn audio_only_resumes_on_any_frame() {
        let now = Utc::now();
        let (mut q, mut rx, _) = gop_queue(2, 0);
        let audio = MediaEvent::Packet(Packet {
            track: TrackKind::Audio,
            dts: 0,
            pts: 0,
            keyframe: false,
            data: Bytes::from_static(&[1]),
        });
        q.offer(audio.clone(), now);
        q.offer(audio.clone(), now);
        assert_eq!(q.offer(audio.clone(), now), Offer::Dropped);
        drain(&mut rx);
        assert_eq!(q.offer(audio, now), Offer::Resumed);
    }

    fn big_frame(keyframe: bool) -> MediaEvent {
        MediaEvent::Packet(Packet {
            track: TrackKind::Video,
            dts: 0,
            pts: 0,
            keyframe,
            data: Bytes::from(vec![0u8; 1 << 20]),
        })
    }

    #[test]
    fn the_byte_budget_bounds_a_queue_of_few_huge_frames() {
        // The regression: 300 frames of up to 16 MiB each were allowed (gigabytes pinned).
        let now = Utc::now();
        let (mut q, mut rx, stats) = gop_queue(300, 4 << 20);
        assert_eq!(q.offer(config(), now), Offer::Queued);
        assert_eq!(q.offer(big_frame(true), now), Offer::Queued);
        for _ in 0..3 {
            assert_eq!(q.offer(big_frame(false), now), Offer::Queued);
        }
        // 4 MiB queued: the count has room, the bytes do not; the rest of the GOP goes.
        assert_eq!(q.offer(big_frame(false), now), Offer::Dropped);
        assert_eq!(q.offer(big_frame(true), now), Offer::Dropped);
        assert_eq!(stats.bytes.load(Ordering::Relaxed), 4 << 20);
        // The consumer takes them (and drops them): the budget is free again.
        assert_eq!(drain(&mut rx).len(), 5);
        assert_eq!(stats.bytes.load(Ordering::Relaxed), 0);
        assert_eq!(q.offer(big_frame(false), now), Offer::Dropped);
        assert_eq!(q.offer(big_frame(true), now), Offer::Resumed);
    }

    #[test]
    fn a_gone_consumer_is_reported() {
        let (mut q, rx, _) = gop_queue(2, 0);
        drop(rx);
        assert_eq!(q.offer(frame(true), Utc::now()), Offer::Closed);
    }
}
