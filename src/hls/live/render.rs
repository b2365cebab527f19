//! Rendering a live window: the media playlists (classic and LL-HLS), published once per update
//! for every reader and waiting request, and the master playlist.

use std::sync::Arc;
use std::time::Duration;

use super::{
    part_name, LiveHls, Rendition, StoredPart, StoredSegment, PART_HOLD_BACK_TARGETS,
    PART_WINDOW_TARGETS,
};
use crate::hls::blocking::{advance_part_limit, Published};
use crate::hls::playlist::{
    write_media, Entry, Header, Kind, LowLatency, PartEntry, RenditionReport,
};

impl LiveHls {
    fn init_uri(&self, version: u64) -> String {
        format!("{}-init{}.mp4", self.instance, version)
    }

    fn part_entries(&self, sequence: u64, parts: &[StoredPart]) -> Vec<PartEntry> {
        parts
            .iter()
            .enumerate()
            .map(|(i, p)| PartEntry {
                uri: part_name(&self.instance, sequence, i),
                duration: p.duration,
                independent: p.independent,
            })
            .collect()
    }

    /// The target duration, fixed for the stream's life (RFC 8216 §6.2.1): segments never
    /// outgrow it (the segmenter cuts long GOPs).
    fn target_duration(&self) -> u64 {
        self.config.segment_duration.ceil().max(1.0) as u64
    }

    /// The media playlist, or None before the first segment (or, with LL-HLS, the first part).
    pub fn media_playlist(&self, rendition: &str) -> Option<String> {
        let r = self.rendition(rendition)?;
        let low_latency = self.config.low_latency;
        let listed: Vec<&StoredSegment> = r.listed(self.config.window).collect();
        let open = r
            .open
            .as_ref()
            .filter(|o| low_latency && !o.parts.is_empty());
        if listed.is_empty() && open.is_none() {
            return None;
        }
        let unlisted = r.segments.len() - listed.len();
        let discontinuity_sequence = r.discontinuities_removed.saturating_add(
            r.segments
                .iter()
                .take(unlisted)
                .filter(|s| s.segment.discontinuity)
                .count() as u64,
        );
        let target_duration = self.target_duration();
        // Parts are listed for the segments that end within the part window of the live edge.
        let part_window = PART_WINDOW_TARGETS * target_duration as f64;
        let mut from_edge: f64 = open.map_or(0.0, |o| o.parts.iter().map(|p| p.duration).sum());
        let mut with_parts = vec![false; listed.len()];
        for (i, s) in listed.iter().enumerate().rev() {
            if !low_latency || from_edge >= part_window {
                break;
            }
            with_parts[i] = true;
            from_edge += s.segment.duration;
        }
        let mut entries: Vec<Entry> = listed
            .iter()
            .zip(with_parts)
            .map(|(s, with_parts)| Entry {
                uri: Some(format!("{}-{}.m4s", self.instance, s.sequence)),
                init_uri: self.init_uri(s.init_version),
                duration: s.segment.duration,
                // Kept on the first listed segment too: hiding it there without bumping
                // EXT-X-DISCONTINUITY-SEQUENCE would renumber it between reloads (RFC 8216 §6.2.2).
                discontinuity: s.segment.discontinuity,
                program_date_time: s.segment.program_date_time,
                parts: if with_parts {
                    self.part_entries(s.sequence, &s.parts)
                } else {
                    Vec::new()
                },
            })
            .collect();
        if let Some(o) = open {
            entries.push(Entry {
                uri: None,
                init_uri: self.init_uri(o.init_version),
                duration: 0.0,
                discontinuity: o.discontinuity,
                program_date_time: o.program_date_time,
                parts: self.part_entries(r.next_sequence, &o.parts),
            });
        }
        let low_latency = low_latency.then(|| LowLatency {
            part_target: self.config.part_duration,
            part_hold_back: PART_HOLD_BACK_TARGETS * self.config.part_duration,
            preload_hint: Some(part_name(
                &self.instance,
                r.next_sequence,
                open.map_or(0, |o| o.parts.len()),
            )),
            reports: self
                .renditions
                .iter()
                .filter(|other| other.name != r.name)
                .filter_map(|other| {
                    let (last_msn, last_part) = other.position()?;
                    Some(RenditionReport {
                        uri: format!("../{}/index.m3u8", other.name),
                        last_msn,
                        last_part,
                    })
                })
                .collect(),
        });
        let header = Header {
            kind: Kind::Live,
            target_duration,
            media_sequence: listed.first().map_or(r.next_sequence, |s| s.sequence),
            discontinuity_sequence,
            ended: r.ended,
            independent_segments: listed.iter().all(|s| s.segment.independent),
            low_latency,
        };
        Some(write_media(&header, &entries))
    }

    /// Renders `rendition`'s playlist for every reader and wakes the requests waiting on it.
    pub fn publish(&self, rendition: &str) {
        let Some(r) = self.rendition(rendition) else {
            return;
        };
        let published = Published {
            playlist: self.media_playlist(rendition).map(Arc::from),
            next_msn: r.next_sequence,
            parts_in_next: r.open.as_ref().map_or(0, |o| o.parts.len() as u64),
            parts_in_last: r.segments.back().map_or(0, |s| s.parts.len() as u64),
            ended: r.ended,
            advance_part_limit: advance_part_limit(self.config.part_duration),
        };
        r.published.send_replace(Arc::new(published));
    }

    /// What `rendition` last published, and its updates.
    pub fn watch(&self, rendition: &str) -> Option<tokio::sync::watch::Receiver<Arc<Published>>> {
        self.rendition(rendition).map(|r| r.published.subscribe())
    }

    /// Seconds a blocking request may wait (RFC 8216bis §6.2.5.2: 503 after 3 target durations).
    pub fn blocking_timeout(&self) -> Duration {
        Duration::from_secs(3 * self.target_duration())
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
