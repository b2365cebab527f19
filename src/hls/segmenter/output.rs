//! What the segmenter emits: init segments, LL-HLS parts, segments, the end.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::media::{AudioConfig, EndReason, VideoConfig};

/// Codec details of an init segment, for the master playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct InitInfo {
    pub video: Option<Arc<VideoConfig>>,
    pub audio: Option<Arc<AudioConfig>>,
}

impl InitInfo {
    pub fn codecs(&self) -> String {
        let mut parts = Vec::new();
        if let Some(v) = &self.video {
            parts.push(v.codec_string());
        }
        if let Some(a) = &self.audio {
            parts.push(a.codec_string());
        }
        parts.join(",")
    }
}

#[derive(Debug, Clone)]
pub struct Segment {
    /// Seconds of media.
    pub duration: f64,
    pub data: Bytes,
    /// Set when the timeline or codec parameters changed before this segment.
    pub discontinuity: bool,
    /// Wall-clock time of the segment's first sample.
    pub program_date_time: DateTime<Utc>,
    /// Starts with a keyframe (false only for a forced cut of an oversized GOP).
    pub independent: bool,
    pub video_frames: usize,
    /// Presentation start (seconds on the stream timeline), for alignment checks.
    pub start_time: f64,
}

/// One LL-HLS part: a fragment of the segment being built.
#[derive(Debug, Clone)]
pub struct Part {
    /// Its index in its segment, from 0.
    pub index: u32,
    /// Seconds of media.
    pub duration: f64,
    pub data: Bytes,
    /// Starts with a keyframe.
    pub independent: bool,
    /// Of its segment, known from the first part on.
    pub discontinuity: bool,
    pub program_date_time: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub enum SegmenterOutput {
    /// A new init segment; the segments that follow use it.
    Init {
        data: Bytes,
        info: InitInfo,
    },
    /// A part of the segment being built (only with parts configured).
    Part(Part),
    /// A whole segment: the concatenation of the parts that preceded it.
    Segment(Segment),
    End(EndReason),
}
