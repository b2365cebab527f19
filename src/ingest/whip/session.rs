//! One WHIP session: its str0m [`Rtc`], and what it feeds the hub once connected (the stream
//! clock, the frame converter, keyframe requests, stats). Driven by the [`driver`](super::driver)
//! task; nothing here touches a socket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaData, MediaKind, Mid};
use str0m::{Event, IceConnectionState, Rtc};

use super::clock::{SenderReport, StreamClock};
use super::keyframe::{KeyframeRequests, Request};
use super::track::{Frame, FrameCodec, Tracks};
use crate::media::{MediaEvent, TrackKind};
use crate::stream::Publisher;

/// Why a session ended (`livegate_whip_sessions_ended_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    Deleted,
    ConnectTimeout,
    IceFailed,
    Idle,
    Refused,
    TakenOver,
    Stopped,
    BadMedia,
    Shutdown,
}

impl EndCause {
    pub fn reason(self) -> &'static str {
        match self {
            EndCause::Deleted => "deleted",
            EndCause::ConnectTimeout => "connect_timeout",
            EndCause::IceFailed => "ice_failed",
            EndCause::Idle => "idle_timeout",
            EndCause::Refused => "refused",
            EndCause::TakenOver => "taken_over",
            EndCause::Stopped => "stopped",
            EndCause::BadMedia => "bad_media",
            EndCause::Shutdown => "shutdown",
        }
    }

    /// Whether it counts as a failed publish attempt (it never carried media).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            EndCause::ConnectTimeout | EndCause::IceFailed | EndCause::Refused | EndCause::BadMedia
        )
    }
}

/// Stats shown in `/api/v1/streams` under `ingest`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct WebRtcStats {
    pub protocol: &'static str,
    pub video_codec: Option<&'static str>,
    pub audio_codec: Option<&'static str>,
    pub packets: u64,
    pub packets_lost: Option<f32>,
    pub nacks_sent: u64,
    pub plis_sent: u64,
    pub firs_sent: u64,
    pub rtt_ms: Option<u64>,
    pub frames_dropped_until_keyframe: u64,
    pub clock_reanchors: u64,
    pub connect_ms: Option<u64>,
}

pub struct Session {
    pub id: String,
    pub user: String,
    /// SHA-256 of the key the session was opened with: PATCH and DELETE must present it.
    pub key_hash: [u8; 32],
    pub etag: String,
    pub remote_ufrag: Option<String>,
    pub local_ufrag: String,
    pub rtc: Rtc,
    pub span: tracing::Span,
    pub created: Instant,
    pub connected: Option<Instant>,
    pub last_input: Instant,
    pub next_timeout: Instant,
    /// Set once the publish gate admitted the stream; media before that is dropped.
    pub publisher: Option<Publisher>,
    pub admitting: bool,
    /// The stream key, held only until the gate checks it again at connect time.
    pub admit_key: Option<String>,
    pub ended: Option<EndCause>,
    tracks: Tracks,
    clock: StreamClock,
    keyframes: KeyframeRequests,
    video_mid: Option<Mid>,
    stats: WebRtcStats,
    events: Vec<MediaEvent>,
    last_status: Option<Instant>,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        user: String,
        key_hash: [u8; 32],
        etag: String,
        remote_ufrag: Option<String>,
        local_ufrag: String,
        rtc: Rtc,
        now: Instant,
    ) -> Self {
        let span = tracing::info_span!(parent: None, "whip", user = %user, session = %&id[..8]);
        Session {
            id,
            user,
            key_hash,
            etag,
            remote_ufrag,
            local_ufrag,
            rtc,
            span,
            created: now,
            connected: None,
            last_input: now,
            next_timeout: now,
            publisher: None,
            admitting: false,
            admit_key: None,
            ended: None,
            tracks: Tracks::default(),
            clock: StreamClock::new(),
            keyframes: KeyframeRequests::default(),
            video_mid: None,
            stats: WebRtcStats {
                protocol: "whip",
                ..WebRtcStats::default()
            },
            events: Vec::new(),
            last_status: None,
        }
    }

    pub fn end(&mut self, cause: EndCause) {
        if self.ended.is_none() {
            self.ended = Some(cause);
        }
    }

    /// Handles one str0m event. Returns true when the session just connected (ICE and DTLS
    /// done): the driver then asks the publish gate.
    pub fn on_event(&mut self, event: Event, now: Instant) -> bool {
        match event {
            Event::Connected => {
                self.connected = Some(now);
                self.stats.connect_ms = Some(now.duration_since(self.created).as_millis() as u64);
                tracing::info!(parent: &self.span, ms = self.stats.connect_ms, "WebRTC connected");
                return true;
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                tracing::info!(parent: &self.span, "ICE disconnected");
                self.end(EndCause::IceFailed);
            }
            Event::MediaAdded(m) if m.kind == MediaKind::Video => self.video_mid = Some(m.mid),
            Event::MediaData(data) => self.on_media(data, now),
            Event::MediaIngressStats(s) => {
                self.stats.packets = self.stats.packets.max(s.packets);
                if s.rtt.is_some() {
                    self.stats.rtt_ms = s.rtt.map(|d| d.as_millis() as u64);
                }
                if s.loss.is_some() {
                    self.stats.packets_lost = s.loss;
                }
                self.stats.nacks_sent = self.stats.nacks_sent.max(s.nacks);
            }
            Event::PeerStats(s) => {
                if let Some(rtt) = s.rtt {
                    self.stats.rtt_ms = Some(rtt.as_millis() as u64);
                }
            }
            _ => {}
        }
        false
    }

    fn on_media(&mut self, data: MediaData, now: Instant) {
        let Some(publisher) = &self.publisher else {
            return; // not admitted yet
        };
        let codec = match data.params.spec().codec {
            Codec::H264 => FrameCodec::H264,
            Codec::Vp8 => FrameCodec::Vp8,
            Codec::Vp9 => FrameCodec::Vp9,
            Codec::Opus => FrameCodec::Opus,
            other => {
                tracing::warn!(parent: &self.span, codec = ?other, "media in a codec livegate does not take; ending");
                self.end(EndCause::BadMedia);
                return;
            }
        };
        let kind = if codec == FrameCodec::Opus {
            self.stats.audio_codec = Some("Opus");
            TrackKind::Audio
        } else {
            self.stats.video_codec = Some(match codec {
                FrameCodec::H264 => "H.264",
                FrameCodec::Vp8 => "VP8",
                _ => "VP9",
            });
            self.video_mid.get_or_insert(data.mid);
            TrackKind::Video
        };
        let report = data.last_sender_info.map(|s| SenderReport {
            ntp_secs: s
                .ntp_time
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(f64::NAN),
            rtp: s.rtp_time.numer() as u32,
            packets: s.sender_packet_count,
        });
        let arrival = data.network_time.saturating_duration_since(self.created);
        let time = self
            .clock
            .map(kind, data.time.numer() as u32, arrival, report);
        if (kind == TrackKind::Video && self.tracks.video_frames < 3)
            || (kind == TrackKind::Audio && self.tracks.audio_frames < 3)
        {
            tracing::debug!(parent: &self.span, ?kind, time, arrival_ms = arrival.as_millis() as u64,
                rtp = data.time.numer(), sr = ?data.last_sender_info, "first frames");
        }
        let frame = Frame {
            codec,
            data: &data.data,
            time,
            keyframe: data.is_keyframe(),
            contiguous: data.contiguous,
        };
        let wire = data.data.len();
        match self.tracks.frame(&frame, &mut self.events) {
            Ok(wants) => {
                if frame.keyframe && kind == TrackKind::Video {
                    self.keyframes.keyframe();
                }
                if wants.keyframe {
                    self.keyframes.want(now.duration_since(self.created));
                }
            }
            Err(e) => {
                tracing::warn!(parent: &self.span, error = %e, "unusable media; ending the session");
                publisher.stream().abort(&e.to_string());
                if self.ended.is_none() {
                    self.ended = Some(EndCause::BadMedia);
                }
            }
        }
        for event in self.events.drain(..) {
            publisher.push(event, wire);
        }
    }

    /// Periodic work: keyframe requests and stats.
    pub fn tick(&mut self, now: Instant) {
        let Some(publisher) = &self.publisher else {
            return;
        };
        let since = now.duration_since(self.created);
        if let Some(reason) = publisher.keyframe_wanted() {
            tracing::debug!(parent: &self.span, reason, "keyframe wanted by a consumer");
            self.keyframes.want(since);
        }
        if self.tracks.video_config().is_none() && self.video_mid.is_some() {
            self.keyframes.want(since);
        }
        if let (Some(request), Some(mid)) = (self.keyframes.poll(since), self.video_mid) {
            let kind = match request {
                Request::Pli => KeyframeRequestKind::Pli,
                Request::Fir => KeyframeRequestKind::Fir,
            };
            // Fails until the first video packet arrives; the next tick asks again.
            let sent = self
                .rtc
                .writer(mid)
                .map(|mut w| w.request_keyframe(None, kind).is_ok())
                .unwrap_or(false);
            if !sent {
                self.keyframes.want(since);
            }
        }
        self.stats.plis_sent = self.keyframes.plis;
        self.stats.firs_sent = self.keyframes.firs;
        self.stats.frames_dropped_until_keyframe = self.tracks.dropped_frames;
        self.stats.clock_reanchors = self.clock.reanchors();
        if self
            .last_status
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.last_status = Some(now);
            if let Ok(v) = serde_json::to_value(&self.stats) {
                publisher.stream().set_status("ingest", v);
            }
        }
    }

    pub fn keyframe_requests(&self) -> (u64, u64) {
        (self.keyframes.plis, self.keyframes.firs)
    }

    pub fn stream(&self) -> Option<&Arc<crate::stream::LiveStream>> {
        self.publisher.as_ref().map(|p| p.stream())
    }
}
