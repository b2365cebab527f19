//! The one media-playlist writer (RFC 8216, through m3u8-rs) behind live HLS and recordings, so
//! what a playlist says about segments, init sections (`EXT-X-MAP`), discontinuities and
//! wall-clock times is written in one place.

use chrono::{DateTime, Utc};

/// The content type of every playlist livegate serves (RFC 8216 §4).
pub const PLAYLIST_CONTENT_TYPE: &str = "application/vnd.apple.mpegurl";

/// One segment as listed.
#[derive(Debug, Clone)]
pub struct Entry {
    pub uri: String,
    /// The init section the segment needs; `EXT-X-MAP` is written where it changes.
    pub init_uri: String,
    /// Seconds.
    pub duration: f64,
    pub discontinuity: bool,
    pub program_date_time: DateTime<Utc>,
}

/// What kind of playlist: a sliding live window, a growing recording, or a finished one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Live,
    Event,
    Vod,
}

#[derive(Debug, Clone)]
pub struct Header {
    pub kind: Kind,
    pub target_duration: u64,
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    pub ended: bool,
    pub independent_segments: bool,
}

/// The target duration for these segment durations: RFC 8216 §4.3.3.1 compares it with each
/// EXTINF rounded to the nearest integer; at least 1.
pub fn target_duration(durations: impl IntoIterator<Item = f64>) -> u64 {
    durations
        .into_iter()
        .map(|d| d.round().max(1.0) as u64)
        .max()
        .unwrap_or(1)
}

/// Renders a media playlist.
pub fn write_media(header: &Header, entries: &[Entry]) -> String {
    let mut previous_init: Option<&str> = None;
    let segments = entries
        .iter()
        .map(|e| {
            let map = (previous_init != Some(e.init_uri.as_str())).then(|| m3u8_rs::Map {
                uri: e.init_uri.clone(),
                ..Default::default()
            });
            previous_init = Some(&e.init_uri);
            m3u8_rs::MediaSegment {
                uri: e.uri.clone(),
                duration: e.duration as f32,
                title: Some(String::new()),
                discontinuity: e.discontinuity,
                map,
                program_date_time: Some(e.program_date_time.fixed_offset()),
                ..Default::default()
            }
        })
        .collect();
    let playlist = m3u8_rs::MediaPlaylist {
        version: Some(7),
        target_duration: header.target_duration,
        media_sequence: header.media_sequence,
        discontinuity_sequence: header.discontinuity_sequence,
        segments,
        end_list: header.ended,
        playlist_type: match header.kind {
            Kind::Live => None,
            Kind::Event => Some(m3u8_rs::MediaPlaylistType::Event),
            Kind::Vod => Some(m3u8_rs::MediaPlaylistType::Vod),
        },
        independent_segments: header.independent_segments,
        ..Default::default()
    };
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = playlist.write_to(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64, init: u64, discontinuity: bool) -> Entry {
        Entry {
            uri: format!("s{i}.m4s"),
            init_uri: format!("init{init}.mp4"),
            duration: 2.002,
            discontinuity,
            program_date_time: DateTime::from_timestamp(1_700_000_000 + 2 * i as i64, 0)
                .unwrap_or_default(),
        }
    }

    #[test]
    fn maps_where_the_init_changes_and_parses_back() {
        let header = Header {
            kind: Kind::Live,
            target_duration: target_duration([2.002, 1.4]),
            media_sequence: 7,
            discontinuity_sequence: 1,
            ended: false,
            independent_segments: true,
        };
        let text = write_media(
            &header,
            &[entry(7, 0, false), entry(8, 0, false), entry(9, 1, true)],
        );
        assert_eq!(text.matches("#EXT-X-MAP").count(), 2, "{text}");
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
        assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME"));
        assert!(!text.contains("#EXT-X-PLAYLIST-TYPE"));
        let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).unwrap();
        assert_eq!(parsed.media_sequence, 7);
        assert_eq!(parsed.discontinuity_sequence, 1);
        assert_eq!(parsed.target_duration, 2);
        assert!(!parsed.end_list);
    }

    #[test]
    fn event_and_vod_kinds() {
        let mut header = Header {
            kind: Kind::Event,
            target_duration: 2,
            media_sequence: 0,
            discontinuity_sequence: 0,
            ended: false,
            independent_segments: true,
        };
        assert!(write_media(&header, &[entry(0, 0, false)]).contains("#EXT-X-PLAYLIST-TYPE:EVENT"));
        header.kind = Kind::Vod;
        header.ended = true;
        let text = write_media(&header, &[entry(0, 0, false)]);
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD") && text.contains("#EXT-X-ENDLIST"));
    }

    #[test]
    fn target_duration_rounds_each_duration() {
        assert_eq!(target_duration([]), 1);
        assert_eq!(target_duration([0.2]), 1);
        assert_eq!(target_duration([2.49, 1.0]), 2);
        assert_eq!(target_duration([2.5]), 3);
    }
}
