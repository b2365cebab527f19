//! Codec-neutral media types shared by ingest, the hub and every consumer.
//!
//! A track is described by a [`VideoConfig`] or [`AudioConfig`] naming its [`VideoCodec`] or
//! [`AudioCodec`]; each codec has one payload format for [`Packet`]s (see [`codec`]), whatever
//! protocol brought it. Timestamps: video in a 90 kHz clock, audio in its sample rate, both on one
//! monotonic 64-bit timeline per stream that starts near zero (see [`timeline`]).

pub mod aac;
pub mod annexb;
pub mod av1;
pub mod avc;
mod bits;
pub mod codec;
pub mod hevc;
pub mod opus;
pub mod timeline;
pub mod vpx;

use std::sync::Arc;

use bytes::Bytes;

pub use codec::{AudioCodec, AudioConfig, VideoCodec, VideoConfig};

pub const VIDEO_TIMESCALE: u32 = 90_000;

/// The longest segment (seconds) that still rounds to a playlist's target duration (RFC 8216
/// §4.3.3.1): what the segmenter cuts at, and how far apart a source's keyframes may be for its
/// segments to start on one.
pub fn max_segment_secs(target_duration: f64) -> f64 {
    target_duration.ceil().max(1.0) + 0.49
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    Video,
    Audio,
}

/// One coded frame, in its codec's payload format (see [`VideoCodec`], [`AudioCodec`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub track: TrackKind,
    /// Decode time, in the track's timescale.
    pub dts: i64,
    /// Presentation time, in the track's timescale (≥ dts for B-frames).
    pub pts: i64,
    pub keyframe: bool,
    pub data: Bytes,
}

/// Why a stream ended, so consumers know whether to finish (ENDLIST) or expect a successor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The publisher stopped or disconnected.
    Stopped,
    /// A new session with the same key took over; viewers continue on the new one.
    Replaced,
}

/// What flows from ingest through the hub to consumers.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    VideoConfig(Arc<VideoConfig>),
    AudioConfig(Arc<AudioConfig>),
    Packet(Packet),
    End(EndReason),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("{0} configuration: {1}")]
    Invalid(VideoCodec, String),
    #[error("{0} configuration: {1}")]
    InvalidAudio(AudioCodec, String),
}
