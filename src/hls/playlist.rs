//! The one media-playlist writer behind live HLS (and the reference for recordings' incremental
//! one), so what a playlist says about segments, parts, init sections (`EXT-X-MAP`),
//! discontinuities and wall-clock times is written in one place.
//!
//! Written by hand: m3u8-rs 6 (used to parse playlists back in tests) has no LL-HLS tags
//! (EXT-X-PART, -PART-INF, -SERVER-CONTROL, -PRELOAD-HINT, -RENDITION-REPORT) and drops a
//! playlist's unknown tags when writing.

use std::fmt::Write;

use chrono::{DateTime, SecondsFormat, Utc};

/// The content type of every playlist livegate serves (RFC 8216 §4).
pub const PLAYLIST_CONTENT_TYPE: &str = "application/vnd.apple.mpegurl";

/// One LL-HLS part as listed.
#[derive(Debug, Clone)]
pub struct PartEntry {
    pub uri: String,
    /// Seconds.
    pub duration: f64,
    pub independent: bool,
}

/// One segment as listed; `uri` is `None` for the segment being built (only its parts so far).
#[derive(Debug, Clone)]
pub struct Entry {
    pub uri: Option<String>,
    /// The init section the segment needs; `EXT-X-MAP` is written where it changes.
    pub init_uri: String,
    /// Seconds.
    pub duration: f64,
    pub discontinuity: bool,
    pub program_date_time: DateTime<Utc>,
    /// Listed for the segments near the live edge only.
    pub parts: Vec<PartEntry>,
}

/// What kind of playlist: a sliding live window, a growing recording, or a finished one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Live,
    Event,
    Vod,
}

/// Another rendition's position, for `EXT-X-RENDITION-REPORT`.
#[derive(Debug, Clone)]
pub struct RenditionReport {
    pub uri: String,
    pub last_msn: u64,
    pub last_part: Option<u32>,
}

/// The LL-HLS side of a playlist.
#[derive(Debug, Clone)]
pub struct LowLatency {
    /// Seconds; every part is at most this long.
    pub part_target: f64,
    /// `PART-HOLD-BACK` (seconds, at least 3 part targets).
    pub part_hold_back: f64,
    /// The next part's URI (`EXT-X-PRELOAD-HINT`), none once the playlist has ended.
    pub preload_hint: Option<String>,
    pub reports: Vec<RenditionReport>,
}

#[derive(Debug, Clone)]
pub struct Header {
    pub kind: Kind,
    pub target_duration: u64,
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    pub ended: bool,
    pub independent_segments: bool,
    pub low_latency: Option<LowLatency>,
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

fn finite(seconds: f64) -> f64 {
    if seconds.is_finite() && seconds > 0.0 {
        seconds
    } else {
        0.0
    }
}

/// Renders a media playlist. (Writing into a String cannot fail: results are ignored.)
pub fn write_media(header: &Header, entries: &[Entry]) -> String {
    let mut out = String::with_capacity(256 + entries.len() * 160);
    let o = &mut out;
    let _ = writeln!(o, "#EXTM3U\n#EXT-X-VERSION:7");
    if header.independent_segments {
        o.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    }
    let _ = writeln!(o, "#EXT-X-TARGETDURATION:{}", header.target_duration);
    if let Some(ll) = &header.low_latency {
        // HOLD-BACK for clients that play segments only: RFC 8216bis asks at least 3 targets.
        let _ = writeln!(
            o,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3},HOLD-BACK={:.3}",
            ll.part_hold_back,
            3.0 * header.target_duration as f64
        );
        let _ = writeln!(o, "#EXT-X-PART-INF:PART-TARGET={:.3}", ll.part_target);
    }
    let _ = writeln!(o, "#EXT-X-MEDIA-SEQUENCE:{}", header.media_sequence);
    if header.discontinuity_sequence != 0 {
        let _ = writeln!(
            o,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            header.discontinuity_sequence
        );
    }
    match header.kind {
        Kind::Live => {}
        Kind::Event => o.push_str("#EXT-X-PLAYLIST-TYPE:EVENT\n"),
        Kind::Vod => o.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n"),
    }
    let mut previous_init: Option<&str> = None;
    for e in entries {
        if e.discontinuity {
            o.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if previous_init != Some(e.init_uri.as_str()) {
            let _ = writeln!(o, "#EXT-X-MAP:URI=\"{}\"", e.init_uri);
        }
        previous_init = Some(&e.init_uri);
        let _ = writeln!(
            o,
            "#EXT-X-PROGRAM-DATE-TIME:{}",
            e.program_date_time
                .to_rfc3339_opts(SecondsFormat::Millis, true)
        );
        for p in &e.parts {
            let _ = write!(
                o,
                "#EXT-X-PART:DURATION={:.5},URI=\"{}\"",
                finite(p.duration),
                p.uri
            );
            o.push_str(if p.independent {
                ",INDEPENDENT=YES\n"
            } else {
                "\n"
            });
        }
        if let Some(uri) = &e.uri {
            let _ = writeln!(o, "#EXTINF:{:.5},\n{uri}", finite(e.duration));
        }
    }
    if let Some(ll) = &header.low_latency {
        if let Some(hint) = ll.preload_hint.as_ref().filter(|_| !header.ended) {
            let _ = writeln!(o, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{hint}\"");
        }
        for r in &ll.reports {
            let _ = write!(
                o,
                "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={}",
                r.uri, r.last_msn
            );
            if let Some(part) = r.last_part {
                let _ = write!(o, ",LAST-PART={part}");
            }
            o.push('\n');
        }
    }
    if header.ended {
        o.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64, init: u64, discontinuity: bool) -> Entry {
        Entry {
            uri: Some(format!("s{i}.m4s")),
            init_uri: format!("init{init}.mp4"),
            duration: 2.002,
            discontinuity,
            program_date_time: DateTime::from_timestamp(1_700_000_000 + 2 * i as i64, 0)
                .unwrap_or_default(),
            parts: Vec::new(),
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
            low_latency: None,
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
            low_latency: None,
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

    fn part(uri: &str, duration: f64, independent: bool) -> PartEntry {
        PartEntry {
            uri: uri.into(),
            duration,
            independent,
        }
    }

    /// The shape of the LL-HLS example in draft-pantos-hls-rfc8216bis §9 (parts of the last
    /// complete segments, the segment being built as parts only, a preload hint, a rendition
    /// report), with livegate's names.
    #[test]
    fn low_latency_tags_follow_the_spec_example() {
        let mut complete = entry(266, 0, false);
        complete.duration = 4.00008;
        complete.parts = vec![
            part("s266.0.m4s", 0.333, true),
            part("s266.1.m4s", 0.333, false),
        ];
        let building = Entry {
            uri: None,
            parts: vec![part("s267.0.m4s", 0.333, true)],
            ..entry(267, 0, false)
        };
        let header = Header {
            kind: Kind::Live,
            target_duration: 4,
            media_sequence: 266,
            discontinuity_sequence: 0,
            ended: false,
            independent_segments: true,
            low_latency: Some(LowLatency {
                part_target: 0.33334,
                part_hold_back: 1.0,
                preload_hint: Some("s267.1.m4s".into()),
                reports: vec![RenditionReport {
                    uri: "../720p/index.m3u8".into(),
                    last_msn: 267,
                    last_part: Some(0),
                }],
            }),
        };
        let text = write_media(&header, &[complete, building]);
        let expected = "#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-TARGETDURATION:4
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.000,HOLD-BACK=12.000
#EXT-X-PART-INF:PART-TARGET=0.333
#EXT-X-MEDIA-SEQUENCE:266
#EXT-X-MAP:URI=\"init0.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:22:12.000Z
#EXT-X-PART:DURATION=0.33300,URI=\"s266.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.33300,URI=\"s266.1.m4s\"
#EXTINF:4.00008,
s266.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:22:14.000Z
#EXT-X-PART:DURATION=0.33300,URI=\"s267.0.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s267.1.m4s\"
#EXT-X-RENDITION-REPORT:URI=\"../720p/index.m3u8\",LAST-MSN=267,LAST-PART=0
";
        assert_eq!(text, expected);
        // Players that know no LL-HLS read it as classic HLS: the complete segment only.
        let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).unwrap();
        assert_eq!(parsed.segments.len(), 1);
        assert_eq!(parsed.segments[0].uri, "s266.m4s");

        // Ended: no hint.
        let mut ended = header.clone();
        ended.ended = true;
        let text = write_media(&ended, &[entry(266, 0, false)]);
        assert!(!text.contains("PRELOAD-HINT") && text.ends_with("#EXT-X-ENDLIST\n"));
    }
}
