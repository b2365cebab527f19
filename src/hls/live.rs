//! In-memory live HLS: per stream name, the init segments and a bounded window of media segments,
//! and the media and master playlists rendered from them.
//!
//! Names are unique per HLS instance (`<instance>-<seq>.m4s`), so segments can be cached as
//! immutable by any edge even when a user publishes again later and sequence numbers restart.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::playlist::{write_media, Entry, Header, Kind};
use super::segmenter::{InitInfo, Segment, SegmenterOutput};
use crate::config::HlsConfig;
use crate::media::EndReason;

/// The one rendition passthrough serves.
pub const SOURCE_RENDITION: &str = "source";
/// Segments kept beyond the playlist window for clients holding a slightly stale playlist.
const GRACE_SEGMENTS: usize = 3;

#[derive(Debug)]
struct StoredSegment {
    sequence: u64,
    generation: u64,
    init_version: u64,
    segment: Segment,
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
    next_sequence: u64,
    /// Discontinuity tags that left the playlist from its head.
    discontinuities_removed: u64,
    target_duration: u64,
    bytes: usize,
    pending_discontinuity: bool,
    ended: bool,
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
}

impl Rendition {
    fn new(name: &str, target: f64) -> Self {
        Rendition {
            name: name.to_string(),
            inits: VecDeque::new(),
            segments: VecDeque::new(),
            next_sequence: 0,
            discontinuities_removed: 0,
            target_duration: target.ceil().max(1.0) as u64,
            bytes: 0,
            pending_discontinuity: false,
            ended: false,
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
    fn new(stream: &str, config: HlsConfig) -> Self {
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

    pub fn is_ended(&self) -> bool {
        self.ended_at.is_some()
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
        let config = self.config.clone();
        if matches!(output, SegmenterOutput::Init { .. })
            && !self.renditions.iter().any(|r| r.name == rendition)
        {
            let mut r = Rendition::new(rendition, config.segment_duration);
            Self::carry(&mut r, &self.carried);
            self.renditions.push(r);
        }
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
            SegmenterOutput::Segment(segment) => {
                // The init of the session that made the segment: a replaced session's last
                // segment may arrive after its successor announced a different one.
                let Some(init_version) = r
                    .inits
                    .iter()
                    .rev()
                    .find(|i| i.generation == generation)
                    .map(|i| i.version)
                else {
                    return;
                };
                let new_generation = r
                    .segments
                    .back()
                    .is_some_and(|s| s.generation != generation);
                let mut segment = segment;
                segment.discontinuity |= new_generation || r.pending_discontinuity;
                r.pending_discontinuity = false;
                // Target duration may only grow, and only to cover a longer source GOP: it is
                // fixed by the first segments in practice. RFC 8216 §4.3.3.1 compares it with
                // each EXTINF rounded to the nearest integer.
                let needed = segment.duration.round().max(1.0) as u64;
                r.target_duration = r.target_duration.max(needed);
                r.bytes += segment.data.len();
                r.segments.push_back(StoredSegment {
                    sequence: r.next_sequence,
                    generation,
                    init_version,
                    segment,
                });
                r.next_sequence += 1;
                let keep = config.window + GRACE_SEGMENTS;
                let max_bytes = (config.max_stream_memory_mib as usize) << 20;
                while r.segments.len() > keep || (r.bytes > max_bytes && r.segments.len() > 1) {
                    if let Some(old) = r.segments.pop_front() {
                        r.bytes -= old.segment.data.len();
                        r.discontinuities_removed += u64::from(old.segment.discontinuity);
                    }
                }
                // Drop init segments no retained segment uses.
                if let Some(oldest) = r.segments.front().map(|s| s.init_version) {
                    while r.inits.len() > 1 && r.inits.front().is_some_and(|i| i.version < oldest) {
                        r.inits.pop_front();
                    }
                }
            }
            SegmenterOutput::End(EndReason::Stopped) => {}
            SegmenterOutput::End(EndReason::Replaced) => {
                r.pending_discontinuity = true;
            }
        }
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
        let seq: u64 = rest.strip_suffix(".m4s")?.parse().ok()?;
        r.segments
            .iter()
            .find(|s| s.sequence == seq)
            .map(|s| HlsFile::Segment(s.segment.data.clone()))
    }

    fn init_uri(&self, version: u64) -> String {
        format!("{}-init{}.mp4", self.instance, version)
    }

    /// The media playlist, or None before the first segment.
    pub fn media_playlist(&self, rendition: &str) -> Option<String> {
        let r = self.rendition(rendition)?;
        let window = self.config.window;
        let listed: Vec<&StoredSegment> = r.listed(window).collect();
        let first = listed.first()?;
        let unlisted = r.segments.len() - listed.len();
        let discontinuity_sequence = r.discontinuities_removed
            + r.segments
                .iter()
                .take(unlisted)
                .filter(|s| s.segment.discontinuity)
                .count() as u64;
        let entries: Vec<Entry> = listed
            .iter()
            .map(|s| Entry {
                uri: format!("{}-{}.m4s", self.instance, s.sequence),
                init_uri: self.init_uri(s.init_version),
                duration: s.segment.duration,
                // Kept on the first listed segment too: hiding it there without bumping
                // EXT-X-DISCONTINUITY-SEQUENCE would renumber it between reloads (RFC 8216 §6.2.2).
                discontinuity: s.segment.discontinuity,
                program_date_time: s.segment.program_date_time,
            })
            .collect();
        // One target duration for the whole ladder (RFC 8216: all media playlists agree).
        let target_duration = self
            .renditions
            .iter()
            .map(|r| r.target_duration)
            .max()
            .unwrap_or(r.target_duration);
        let header = Header {
            kind: Kind::Live,
            target_duration,
            media_sequence: first.sequence,
            discontinuity_sequence,
            ended: r.ended,
            independent_segments: listed.iter().all(|s| s.segment.independent),
        };
        Some(write_media(&header, &entries))
    }

    /// The master playlist, or None until every rendition has a segment to measure.
    pub fn master_playlist(&self) -> Option<String> {
        if self.renditions.is_empty() {
            return None;
        }
        let mut variants = Vec::new();
        let mut order: Vec<&Rendition> = self.renditions.iter().collect();
        order.sort_by_key(|r| {
            r.current_init()
                .and_then(|i| i.info.video.as_ref().map(|v| v.width * v.height))
                .unwrap_or(0)
        });
        for r in order {
            let init = r.current_init()?;
            let (peak, average) = r.bandwidth()?;
            let video = init.info.video.as_ref();
            variants.push(m3u8_rs::VariantStream {
                uri: format!("{}/index.m3u8", r.name),
                bandwidth: peak,
                average_bandwidth: Some(average),
                codecs: Some(init.info.codecs()),
                resolution: video.map(|v| m3u8_rs::Resolution {
                    width: u64::from(v.width),
                    height: u64::from(v.height),
                }),
                frame_rate: video
                    .and_then(|v| v.fps)
                    .or_else(|| r.frame_rate())
                    .map(|f| (f * 1000.0).round() / 1000.0),
                ..Default::default()
            });
        }
        let playlist = m3u8_rs::MasterPlaylist {
            version: Some(7),
            variants,
            independent_segments: true,
            ..Default::default()
        };
        let mut out = Vec::new();
        playlist.write_to(&mut out).ok()?;
        String::from_utf8(out).ok()
    }
}

/// Stream name → its live HLS.
pub struct HlsRegistry {
    streams: RwLock<HashMap<String, Arc<RwLock<LiveHls>>>>,
    config: HlsConfig,
}

impl HlsRegistry {
    pub fn new(config: HlsConfig) -> Arc<Self> {
        Arc::new(HlsRegistry {
            streams: RwLock::new(HashMap::new()),
            config,
        })
    }

    /// Attaches a new publish session: continues the stream's HLS if it is still live (a
    /// takeover), otherwise starts a fresh one. Returns the HLS and the session's generation.
    pub fn attach(&self, stream: &str) -> (Arc<RwLock<LiveHls>>, u64) {
        let mut streams = self.streams.write().unwrap_or_else(|e| e.into_inner());
        let entry = streams
            .entry(stream.to_string())
            .or_insert_with(|| Arc::new(RwLock::new(LiveHls::new(stream, self.config.clone()))));
        let reuse = !entry.read().unwrap_or_else(|e| e.into_inner()).is_ended();
        if !reuse {
            *entry = Arc::new(RwLock::new(LiveHls::new(stream, self.config.clone())));
        }
        let hls = entry.clone();
        let generation = {
            let mut h = hls.write().unwrap_or_else(|e| e.into_inner());
            h.generation += 1;
            h.generation
        };
        (hls, generation)
    }

    pub fn get(&self, stream: &str) -> Option<Arc<RwLock<LiveHls>>> {
        self.streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(stream)
            .cloned()
    }

    /// Forgets streams that ended more than `keep_ended_secs` ago. Returns how many.
    pub fn sweep(&self) -> usize {
        let keep = Duration::from_secs(self.config.keep_ended_secs);
        let mut streams = self.streams.write().unwrap_or_else(|e| e.into_inner());
        let before = streams.len();
        streams.retain(|_, hls| {
            hls.read()
                .unwrap_or_else(|e| e.into_inner())
                .ended_at
                .is_none_or(|t| t.elapsed() < keep)
        });
        before - streams.len()
    }

    pub fn len(&self) -> usize {
        self.streams.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Streams whose HLS has not ended yet (shutdown waits for these to write their ENDLIST).
    pub fn live_count(&self) -> usize {
        self.streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|hls| !hls.read().unwrap_or_else(|e| e.into_inner()).is_ended())
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
