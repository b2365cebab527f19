//! In-memory live HLS: per stream name, the init segments and a bounded window of media segments,
//! and the media and master playlists rendered from them.
//!
//! Names are unique per HLS instance (`<instance>-<seq>.m4s`), so segments can be cached as
//! immutable by any edge even when a user publishes again later and sequence numbers restart.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::blocking::Published;
use super::segmenter::{InitInfo, Part, Segment, SegmenterOutput};
use crate::config::HlsConfig;
use crate::media::EndReason;

/// The one rendition passthrough serves.
pub const SOURCE_RENDITION: &str = "source";
/// `PART-HOLD-BACK` in part targets: RFC 8216bis asks at least 2, advises 3; hls.js holds
/// playback this far behind the newest part.
const PART_HOLD_BACK_TARGETS: f64 = 3.0;
/// Segments kept beyond the playlist window for clients holding a slightly stale playlist.
const GRACE_SEGMENTS: usize = 3;

/// Parts stay listed for segments within this many target durations of the live edge
/// (RFC 8216bis §4.4.4.9: no longer than 3), and downloadable as long as their segment is.
const PART_WINDOW_TARGETS: f64 = 3.0;

#[derive(Debug, Clone)]
struct StoredPart {
    duration: f64,
    independent: bool,
    /// A slice of its segment's data once the segment is complete (stored once).
    data: Bytes,
}

#[derive(Debug)]
struct StoredSegment {
    sequence: u64,
    generation: u64,
    init_version: u64,
    segment: Segment,
    /// Empty without LL-HLS (or when the window missed some of them).
    parts: Vec<StoredPart>,
}

/// The segment being built, as the parts that exist so far.
#[derive(Debug)]
struct OpenSegment {
    generation: u64,
    init_version: u64,
    discontinuity: bool,
    program_date_time: DateTime<Utc>,
    parts: Vec<StoredPart>,
}

#[derive(Debug)]
struct StoredInit {
    version: u64,
    /// The publish session that made it.
    generation: u64,
    data: Bytes,
    info: InitInfo,
}

/// One rendition's playlist state.
#[derive(Debug)]
pub struct Rendition {
    pub name: String,
    inits: VecDeque<StoredInit>,
    segments: VecDeque<StoredSegment>,
    /// The sequence number of the segment being built.
    next_sequence: u64,
    open: Option<OpenSegment>,
    /// Discontinuity tags that left the playlist from its head.
    discontinuities_removed: u64,
    bytes: usize,
    pending_discontinuity: bool,
    ended: bool,
    /// The playlist as last rendered, for every request and every blocked one.
    published: tokio::sync::watch::Sender<Arc<Published>>,
}

/// A stream's live HLS output. Survives a publisher takeover (continuing with a discontinuity);
/// a publish after the stream ended starts a new instance.
#[derive(Debug)]
pub struct LiveHls {
    pub instance: String,
    pub stream: String,
    renditions: Vec<Rendition>,
    generation: u64,
    ended_at: Option<Instant>,
    started_at: DateTime<Utc>,
    config: HlsConfig,
    /// Numbering to continue from, per rendition, after a session on another node (see
    /// [`LiveHls::continue_after`]).
    carried: Vec<Numbering>,
}

/// The largest media or discontinuity sequence number carried from a predecessor (2^53: exact
/// in every player's JavaScript numbers).
const MAX_CARRIED: u64 = 1 << 53;

/// Where a rendition's numbering stands: its name, the next media sequence number, and how many
/// discontinuities it has had (what the discontinuity sequence counts).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Numbering {
    pub rendition: String,
    pub next_sequence: u64,
    pub discontinuities: u64,
}

/// What a request for a file under a rendition finds.
pub enum HlsFile {
    Init(Bytes),
    Segment(Bytes),
    Part(Bytes),
}

/// A part's file name: `<instance>-<sequence>.<index>.m4s`.
pub fn part_name(instance: &str, sequence: u64, index: usize) -> String {
    format!("{instance}-{sequence}.{index}.m4s")
}

/// (sequence, index) of a part's file name.
pub fn parse_part_name(name: &str) -> Option<(u64, u64)> {
    let (_, rest) = name.strip_suffix(".m4s")?.rsplit_once('-')?;
    let (sequence, index) = rest.split_once('.')?;
    Some((sequence.parse().ok()?, index.parse().ok()?))
}

impl Rendition {
    fn new(name: &str) -> Self {
        Rendition {
            name: name.to_string(),
            inits: VecDeque::new(),
            segments: VecDeque::new(),
            next_sequence: 0,
            open: None,
            discontinuities_removed: 0,
            bytes: 0,
            pending_discontinuity: false,
            ended: false,
            published: tokio::sync::watch::Sender::new(Arc::new(Published::default())),
        }
    }

    /// The init of the session `generation` (a replaced session's last output may arrive after
    /// its successor announced a different one).
    fn init_of(&self, generation: u64) -> Option<u64> {
        self.inits
            .iter()
            .rev()
            .find(|i| i.generation == generation)
            .map(|i| i.version)
    }

    /// Whether output of `generation` follows another session's in this rendition.
    fn follows_another_session(&self, generation: u64) -> bool {
        self.open
            .as_ref()
            .map(|o| o.generation)
            .or(self.segments.back().map(|s| s.generation))
            .is_some_and(|g| g != generation)
    }

    /// (sequence, last part index) of the newest media, for rendition reports.
    fn position(&self) -> Option<(u64, Option<u32>)> {
        let index = |parts: usize| parts.checked_sub(1).map(|i| i as u32);
        match &self.open {
            Some(o) if !o.parts.is_empty() => Some((self.next_sequence, index(o.parts.len()))),
            _ => self
                .segments
                .back()
                .map(|s| (s.sequence, index(s.parts.len()))),
        }
    }

    fn apply_part(&mut self, generation: u64, part: Part) {
        let Some(init_version) = self.init_of(generation) else {
            return;
        };
        if part.index == 0 {
            let discontinuity = part.discontinuity
                || self.follows_another_session(generation)
                || std::mem::take(&mut self.pending_discontinuity);
            self.open = Some(OpenSegment {
                generation,
                init_version,
                discontinuity,
                program_date_time: part.program_date_time,
                parts: Vec::new(),
            });
        }
        // A part out of order (its segment's first part was dropped) is not listed; its segment
        // still is, once complete.
        if let Some(open) = self
            .open
            .as_mut()
            .filter(|o| o.generation == generation && o.parts.len() == part.index as usize)
        {
            open.parts.push(StoredPart {
                duration: part.duration,
                independent: part.independent,
                data: part.data,
            });
        }
    }

    fn apply_segment(&mut self, generation: u64, mut segment: Segment, config: &HlsConfig) {
        let Some(init_version) = self.init_of(generation) else {
            return;
        };
        let open = self.open.take().filter(|o| o.generation == generation);
        let mut parts = Vec::new();
        match open {
            Some(open)
                if open.parts.iter().map(|p| p.data.len()).sum::<usize>() == segment.data.len() =>
            {
                segment.discontinuity = open.discontinuity;
                // The segment is its parts concatenated: keep one copy, parts as slices of it.
                let mut at = 0;
                for p in open.parts {
                    let len = p.data.len();
                    parts.push(StoredPart {
                        data: segment.data.slice(at..at + len),
                        ..p
                    });
                    at += len;
                }
            }
            Some(open) => segment.discontinuity = open.discontinuity,
            None => {
                segment.discontinuity |= self.follows_another_session(generation)
                    || std::mem::take(&mut self.pending_discontinuity);
            }
        }
        self.pending_discontinuity = false;
        self.bytes += segment.data.len();
        self.segments.push_back(StoredSegment {
            sequence: self.next_sequence,
            generation,
            init_version,
            segment,
            parts,
        });
        self.next_sequence = self.next_sequence.saturating_add(1);
        let keep = config.window + GRACE_SEGMENTS;
        let max_bytes = (config.max_stream_memory_mib as usize) << 20;
        while self.segments.len() > keep || (self.bytes > max_bytes && self.segments.len() > 1) {
            if let Some(old) = self.segments.pop_front() {
                self.bytes -= old.segment.data.len();
                self.discontinuities_removed = self
                    .discontinuities_removed
                    .saturating_add(u64::from(old.segment.discontinuity));
            }
        }
        // Drop init segments no retained segment uses.
        if let Some(oldest) = self.segments.front().map(|s| s.init_version) {
            while self.inits.len() > 1 && self.inits.front().is_some_and(|i| i.version < oldest) {
                self.inits.pop_front();
            }
        }
    }

    fn current_init(&self) -> Option<&StoredInit> {
        self.inits.back()
    }

    fn listed<'a>(&'a self, window: usize) -> impl Iterator<Item = &'a StoredSegment> + 'a {
        let skip = self.segments.len().saturating_sub(window);
        self.segments.iter().skip(skip)
    }

    /// Peak and average bits per second over the retained segments.
    fn bandwidth(&self) -> Option<(u64, u64)> {
        let mut peak = 0f64;
        let mut total_bytes = 0usize;
        let mut total_secs = 0f64;
        for s in &self.segments {
            if s.segment.duration > 0.1 {
                peak = peak.max(s.segment.data.len() as f64 * 8.0 / s.segment.duration);
            }
            total_bytes += s.segment.data.len();
            total_secs += s.segment.duration;
        }
        if total_secs <= 0.0 {
            return None;
        }
        let average = total_bytes as f64 * 8.0 / total_secs;
        Some((peak.max(average).ceil() as u64, average.ceil() as u64))
    }

    fn frame_rate(&self) -> Option<f64> {
        let (frames, secs) = self.segments.iter().fold((0usize, 0f64), |(f, d), s| {
            (f + s.segment.video_frames, d + s.segment.duration)
        });
        if frames == 0 || secs <= 0.0 {
            return None;
        }
        Some(frames as f64 / secs)
    }
}

impl LiveHls {
    pub(super) fn new(stream: &str, config: HlsConfig) -> Self {
        LiveHls {
            instance: format!("{:08x}", rand::random::<u32>()),
            stream: stream.to_string(),
            renditions: Vec::new(),
            generation: 0,
            ended_at: None,
            started_at: Utc::now(),
            config,
            carried: Vec::new(),
        }
    }

    /// Each rendition's numbering, for a successor on another node.
    pub fn numbering(&self) -> Vec<Numbering> {
        self.renditions
            .iter()
            .map(|r| Numbering {
                rendition: r.name.clone(),
                next_sequence: r.next_sequence,
                discontinuities: r.discontinuities_removed
                    + r.segments
                        .iter()
                        .filter(|s| s.segment.discontinuity)
                        .count() as u64,
            })
            .collect()
    }

    /// Continues a predecessor's numbering (a publish taken over from another node): each
    /// rendition's media sequence goes on from `next_sequence + skip` (`skip` covers segments the
    /// predecessor made after it last reported), its discontinuity sequence from the
    /// predecessor's count, and its first segment is marked a discontinuity. Renditions that
    /// already listed a segment of this session keep their numbers.
    pub fn continue_after(&mut self, numbering: &[Numbering], skip: u64) {
        self.carried = numbering
            .iter()
            // Read from the cluster's store: numbers no stream reaches (players hold them as
            // JavaScript numbers) are corrupt, not a predecessor's.
            .filter(|n| n.next_sequence <= MAX_CARRIED && n.discontinuities <= MAX_CARRIED)
            .map(|n| Numbering {
                next_sequence: n.next_sequence.saturating_add(skip),
                ..n.clone()
            })
            .collect();
        let carried = self.carried.clone();
        for r in &mut self.renditions {
            Self::carry(r, &carried);
        }
    }

    fn carry(r: &mut Rendition, carried: &[Numbering]) {
        if !r.segments.is_empty() {
            return;
        }
        if let Some(n) = carried.iter().find(|n| n.rendition == r.name) {
            r.next_sequence = r.next_sequence.max(n.next_sequence);
            r.discontinuities_removed = r.discontinuities_removed.max(n.discontinuities);
            r.pending_discontinuity = true;
        }
    }

    /// Names of the renditions, in creation order.
    pub fn rendition_names(&self) -> Vec<String> {
        self.renditions.iter().map(|r| r.name.clone()).collect()
    }

    pub fn low_latency(&self) -> bool {
        self.config.low_latency
    }

    pub fn is_ended(&self) -> bool {
        self.ended_at.is_some()
    }

    /// How long ago the stream ended.
    pub fn ended_for(&self) -> Option<std::time::Duration> {
        self.ended_at.map(|t| t.elapsed())
    }

    /// Numbers a new publish session (see [`super::HlsRegistry::attach`]).
    pub(super) fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    pub fn started_at(&self) -> DateTime<Utc> {
        self.started_at
    }

    /// Applies one segmenter output from the publish session `generation`.
    pub fn apply(&mut self, generation: u64, rendition: &str, output: SegmenterOutput) {
        if generation != self.generation {
            // A replaced session's last words arrive after its successor attached: drop them
            // unless nothing of the new session is listed yet.
            let newer_present = self.renditions.iter().any(|r| {
                r.segments
                    .back()
                    .is_some_and(|s| s.generation == self.generation)
            });
            if newer_present || !matches!(output, SegmenterOutput::Segment(_)) {
                return;
            }
        }
        if let SegmenterOutput::End(EndReason::Stopped) = output {
            if let Some(r) = self.renditions.iter_mut().find(|r| r.name == rendition) {
                r.ended = true;
            }
            // All renditions finished (or none was ever made: the publisher sent no media).
            if self.renditions.iter().all(|r| r.ended) {
                self.ended_at = Some(Instant::now());
            }
            return;
        }
        if matches!(output, SegmenterOutput::Init { .. })
            && !self.renditions.iter().any(|r| r.name == rendition)
        {
            let mut r = Rendition::new(rendition);
            Self::carry(&mut r, &self.carried);
            self.renditions.push(r);
        }
        let config = &self.config;
        let Some(r) = self.renditions.iter_mut().find(|r| r.name == rendition) else {
            return;
        };
        match output {
            SegmenterOutput::Init { data, info } => {
                let version = r.inits.back().map_or(0, |i| i.version + 1);
                r.inits.push_back(StoredInit {
                    version,
                    generation,
                    data,
                    info,
                });
            }
            SegmenterOutput::Part(part) => r.apply_part(generation, part),
            SegmenterOutput::Segment(segment) => r.apply_segment(generation, segment, config),
            SegmenterOutput::End(EndReason::Stopped) => {}
            SegmenterOutput::End(EndReason::Replaced) => {
                r.pending_discontinuity = true;
            }
        }
    }

    /// Applies a batch of one rendition's outputs, then renders its playlist once for every
    /// reader and waiting request.
    pub fn apply_all(
        &mut self,
        generation: u64,
        rendition: &str,
        outputs: impl IntoIterator<Item = SegmenterOutput>,
    ) {
        for output in outputs {
            self.apply(generation, rendition, output);
        }
        self.publish(rendition);
    }

    /// Ends every rendition (ENDLIST) when the current publish session `generation` ends
    /// without having produced any: the stream is over.
    pub fn end_all(&mut self, generation: u64) {
        if generation != self.generation {
            return;
        }
        for r in &mut self.renditions {
            r.ended = true;
        }
        self.ended_at = Some(Instant::now());
        for name in self.rendition_names() {
            self.publish(&name);
        }
    }

    fn rendition(&self, rendition: &str) -> Option<&Rendition> {
        self.renditions.iter().find(|r| r.name == rendition)
    }

    pub fn file(&self, rendition: &str, name: &str) -> Option<HlsFile> {
        let r = self.rendition(rendition)?;
        let rest = name.strip_prefix(&self.instance)?.strip_prefix('-')?;
        if let Some(v) = rest
            .strip_prefix("init")
            .and_then(|v| v.strip_suffix(".mp4"))
        {
            let version: u64 = v.parse().ok()?;
            return r
                .inits
                .iter()
                .find(|i| i.version == version)
                .map(|i| HlsFile::Init(i.data.clone()));
        }
        let rest = rest.strip_suffix(".m4s")?;
        if let Some((seq, index)) = rest.split_once('.') {
            let (seq, index): (u64, usize) = (seq.parse().ok()?, index.parse().ok()?);
            let parts = match &r.open {
                Some(o) if seq == r.next_sequence => &o.parts,
                _ => &r.segments.iter().find(|s| s.sequence == seq)?.parts,
            };
            return parts.get(index).map(|p| HlsFile::Part(p.data.clone()));
        }
        let seq: u64 = rest.parse().ok()?;
        r.segments
            .iter()
            .find(|s| s.sequence == seq)
            .map(|s| HlsFile::Segment(s.segment.data.clone()))
    }
}

mod render;
#[cfg(test)]
mod tests;
