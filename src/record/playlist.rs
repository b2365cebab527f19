//! A recording's playlist, kept incrementally: each stored segment appends its few lines once,
//! so refreshing a 24-hour recording costs a snapshot (a handful of shared chunks) under the
//! session's lock and one concatenation outside it, never a re-render of every segment.
//!
//! Memory is the listed text only, about 80 bytes per segment (≈ 3.4 MiB per day of 2-s
//! segments), in sealed chunks shared with snapshots by reference; `record.max_duration_hours`
//! bounds it by rolling long streams over into parts.

use std::fmt::Write;
use std::sync::Arc;

use chrono::SecondsFormat;

use super::session::{init_name, segment_name, SegmentEntry};

/// Text is sealed into a shared chunk once this long.
const CHUNK: usize = 64 * 1024;

/// The listed segments of a recording, as playlist text.
#[derive(Debug, Clone, Default)]
pub struct PlaylistBody {
    sealed: Vec<Arc<str>>,
    open: String,
    /// RFC 8216 §4.3.3.1: at least every EXTINF rounded.
    target_duration: u64,
    /// The init of the last listed segment: `EXT-X-MAP` is written where it changes.
    last_init: Option<u64>,
    /// A segment was left out: the next one listed is a discontinuity.
    gap: bool,
    listed: u64,
}

/// What a refresh needs of the playlist, taken under the lock and rendered outside it.
#[derive(Debug, Clone)]
pub struct PlaylistSnapshot {
    sealed: Vec<Arc<str>>,
    open: String,
    target_duration: u64,
    ended: bool,
}

impl PlaylistBody {
    /// Lists a stored segment.
    pub fn push(&mut self, s: &SegmentEntry) {
        let out = &mut self.open;
        // Writing into a String cannot fail.
        if s.discontinuity || self.gap {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if self.last_init != Some(s.init) {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", init_name(s.init));
        }
        let _ = writeln!(
            out,
            "#EXT-X-PROGRAM-DATE-TIME:{}",
            s.program_date_time
                .to_rfc3339_opts(SecondsFormat::Millis, true)
        );
        let duration = if s.duration.is_finite() && s.duration > 0.0 {
            s.duration
        } else {
            0.0
        };
        let _ = writeln!(out, "#EXTINF:{duration:.5},\n{}", segment_name(s.index));
        self.target_duration = self
            .target_duration
            .max(crate::hls::playlist::target_duration([duration]));
        self.last_init = Some(s.init);
        self.gap = false;
        self.listed += 1;
        if self.open.len() >= CHUNK {
            self.sealed.push(Arc::from(std::mem::take(&mut self.open)));
        }
    }

    /// A segment will not be listed: the next one is marked discontinuous.
    pub fn gap(&mut self) {
        self.gap = true;
    }

    pub fn listed(&self) -> u64 {
        self.listed
    }

    /// A gap is waiting for the next listed segment.
    pub fn gap_pending(&self) -> bool {
        self.gap
    }

    /// Cheap: clones the sealed chunks' pointers and the open chunk (< 64 KiB).
    pub fn snapshot(&self, ended: bool) -> PlaylistSnapshot {
        PlaylistSnapshot {
            sealed: self.sealed.clone(),
            open: self.open.clone(),
            target_duration: self.target_duration.max(1),
            ended,
        }
    }
}

impl PlaylistSnapshot {
    /// EVENT while recording; VOD with ENDLIST once ended.
    pub fn render(&self) -> String {
        let body: usize = self.sealed.iter().map(|c| c.len()).sum::<usize>() + self.open.len();
        let mut out = String::with_capacity(body + 256);
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-PLAYLIST-TYPE:{}\n#EXT-X-INDEPENDENT-SEGMENTS\n",
            self.target_duration,
            if self.ended { "VOD" } else { "EVENT" }
        );
        for chunk in &self.sealed {
            out.push_str(chunk);
        }
        out.push_str(&self.open);
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn segment(index: u64, init: u64, discontinuity: bool) -> SegmentEntry {
        SegmentEntry {
            index,
            duration: 2.002,
            bytes: 1000,
            init,
            discontinuity,
            program_date_time: DateTime::from_timestamp(1_700_000_000 + 2 * index as i64, 0)
                .unwrap_or_default(),
        }
    }

    #[test]
    fn renders_maps_gaps_and_the_end_and_parses_back() {
        let mut body = PlaylistBody::default();
        body.push(&segment(0, 0, false));
        body.push(&segment(1, 0, false));
        body.gap();
        body.push(&segment(3, 0, false));
        body.push(&segment(4, 1, true));
        let live = body.snapshot(false).render();
        assert!(live.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !live.contains("ENDLIST"));
        let vod = body.snapshot(true).render();
        let parsed = m3u8_rs::parse_media_playlist_res(vod.as_bytes()).expect("m3u8");
        assert!(parsed.end_list);
        assert_eq!(parsed.playlist_type, Some(m3u8_rs::MediaPlaylistType::Vod));
        assert_eq!(parsed.target_duration, 2);
        let uris: Vec<&str> = parsed.segments.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(
            uris,
            [
                "seg-000000.m4s",
                "seg-000001.m4s",
                "seg-000003.m4s",
                "seg-000004.m4s"
            ]
        );
        let maps: Vec<Option<&str>> = parsed
            .segments
            .iter()
            .map(|s| s.map.as_ref().map(|m| m.uri.as_str()))
            .collect();
        assert_eq!(maps, [Some("init-0.mp4"), None, None, Some("init-1.mp4")]);
        let gaps: Vec<bool> = parsed.segments.iter().map(|s| s.discontinuity).collect();
        assert_eq!(gaps, [false, false, true, true]);
        assert!(parsed.segments[0].program_date_time.is_some());
        assert!((parsed.segments[0].duration - 2.002).abs() < 1e-3);
    }

    /// Figures for the report (no timed assertion): a 24-hour recording of 2-s segments.
    #[test]
    fn a_day_of_segments_snapshots_in_microseconds() {
        let n = 24 * 3600 / 2;
        let mut body = PlaylistBody::default();
        let entries: Vec<SegmentEntry> = (0..n).map(|i| segment(i, 0, false)).collect();
        for s in &entries {
            body.push(s);
        }
        let t = std::time::Instant::now();
        let snapshot = body.snapshot(false);
        let held = t.elapsed();
        let t = std::time::Instant::now();
        let text = snapshot.render();
        let rendered = t.elapsed();
        // The live renderer (every segment re-rendered), as the recording's once was, inside the lock.
        let t = std::time::Instant::now();
        let old: Vec<crate::hls::playlist::Entry> = entries
            .iter()
            .map(|s| crate::hls::playlist::Entry {
                uri: Some(segment_name(s.index)),
                init_uri: init_name(s.init),
                duration: s.duration,
                discontinuity: s.discontinuity,
                program_date_time: s.program_date_time,
                parts: Vec::new(),
            })
            .collect();
        let header = crate::hls::playlist::Header {
            kind: crate::hls::playlist::Kind::Event,
            target_duration: 2,
            media_sequence: 0,
            discontinuity_sequence: 0,
            ended: false,
            independent_segments: true,
            low_latency: None,
        };
        let old_text = crate::hls::playlist::write_media(&header, &old);
        let before = t.elapsed();
        eprintln!(
            "24 h playlist ({n} segments, {} KiB; before {} KiB): lock held {held:?} for the \
             snapshot, rendered outside in {rendered:?}; the full re-render under the lock took \
             {before:?}",
            text.len() >> 10,
            old_text.len() >> 10
        );
        let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("m3u8");
        assert_eq!(parsed.segments.len() as u64, n);
        assert_eq!(body.listed(), n);
    }
}
