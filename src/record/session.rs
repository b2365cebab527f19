//! One recording's durable state: the manifest, the journal of stored files, and the playlist
//! rendered from them. Pure data: the recorder does the I/O.
//!
//! The spool keeps `session.json` (the manifest, rewritten on state changes) and `journal.jsonl`
//! (one appended line per init or segment). Appending keeps the cost per segment constant for
//! long streams; a line torn by a crash is ignored on recovery.

use crate::hls::playlist::{target_duration, write_media, Entry, Header, Kind};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The recorded files' names inside a session's folder.
pub fn init_name(version: u64) -> String {
    format!("init-{version}.mp4")
}

pub fn segment_name(index: u64) -> String {
    format!("seg-{index:06}.m4s")
}

pub const PLAYLIST_NAME: &str = "index.m3u8";
pub const MANIFEST_NAME: &str = "manifest.json";

/// Whether `name` is a file a recording can hold (guards URL input before it becomes a key).
pub fn is_recording_file(name: &str) -> bool {
    let numbered = |prefix: &str, suffix: &str| {
        name.strip_prefix(prefix)
            .and_then(|n| n.strip_suffix(suffix))
            .is_some_and(|n| {
                !n.is_empty() && n.len() <= 12 && n.bytes().all(|b| b.is_ascii_digit())
            })
    };
    name == PLAYLIST_NAME || numbered("init-", ".mp4") || numbered("seg-", ".m4s")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingState {
    /// Being recorded now (or its uploads are catching up).
    Recording,
    /// Ended normally; every segment stored.
    Finished,
    /// The server stopped mid-recording (crash, kill); finalized at the next start.
    Interrupted,
}

impl RecordingState {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingState::Recording => "recording",
            RecordingState::Finished => "finished",
            RecordingState::Interrupted => "interrupted",
        }
    }
}

/// What operators and the webhook see of a recording (`manifest.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// `<user>.<session>`: the id in `/api/v1/recordings/{id}` and `/vod/{id}/`.
    pub id: String,
    pub user: String,
    pub session: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Seconds of recorded media.
    pub duration_secs: f64,
    pub rung: String,
    /// RFC 6381 codecs of the latest init segment.
    pub codecs: String,
    pub width: u32,
    pub height: u32,
    pub segments: u64,
    /// Bytes of the init and media segments.
    pub bytes: u64,
    pub state: RecordingState,
    /// Segments not recorded (spool full): each is a DISCONTINUITY in the playlist.
    pub missing_segments: u64,
}

impl Manifest {
    pub fn new(user: &str, session: &str, started_at: DateTime<Utc>) -> Manifest {
        Manifest {
            id: recording_id(user, session),
            user: user.to_string(),
            session: session.to_string(),
            started_at,
            ended_at: None,
            duration_secs: 0.0,
            rung: String::new(),
            codecs: String::new(),
            width: 0,
            height: 0,
            segments: 0,
            bytes: 0,
            state: RecordingState::Recording,
            missing_segments: 0,
        }
    }

    /// The folder (key prefix) of this recording, with a trailing slash.
    pub fn folder(&self) -> String {
        format!("{}/{}/", self.user, self.session)
    }
}

/// A new session name: sortable by start time, unique across nodes in practice.
pub fn new_session_name(started_at: DateTime<Utc>) -> String {
    format!(
        "{}-{:06x}",
        started_at.format("%Y%m%dT%H%M%SZ"),
        rand::random::<u32>() & 0xff_ffff
    )
}

pub fn recording_id(user: &str, session: &str) -> String {
    format!("{user}.{session}")
}

/// Splits a recording id into (user, session), or None if it is not one of ours.
pub fn parse_recording_id(id: &str) -> Option<(&str, &str)> {
    let (user, session) = id.split_once('.')?;
    let session_ok = !session.is_empty()
        && session.len() <= 64
        && session
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    (crate::util::valid_user_name(user) && session_ok).then_some((user, session))
}

/// `session.json` in the spool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpoolHeader {
    pub manifest: Manifest,
    /// The publish ended cleanly; only uploads may remain.
    pub ended: bool,
}

/// One line of `journal.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum JournalEntry {
    Init(InitEntry),
    Segment(SegmentEntry),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitEntry {
    pub version: u64,
    pub bytes: u64,
    pub codecs: String,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentEntry {
    pub index: u64,
    pub duration: f64,
    pub bytes: u64,
    pub init: u64,
    pub discontinuity: bool,
    pub program_date_time: DateTime<Utc>,
}

impl JournalEntry {
    pub fn file_name(&self) -> String {
        match self {
            JournalEntry::Init(i) => init_name(i.version),
            JournalEntry::Segment(s) => segment_name(s.index),
        }
    }

    pub fn bytes(&self) -> u64 {
        match self {
            JournalEntry::Init(i) => i.bytes,
            JournalEntry::Segment(s) => s.bytes,
        }
    }
}

/// Reads a journal, skipping a torn last line (a crash mid-append) and anything unparsable.
pub fn parse_journal(text: &str) -> Vec<JournalEntry> {
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// A recording's segments and the manifest derived from them.
#[derive(Debug, Clone)]
pub struct Recording {
    pub manifest: Manifest,
    pub inits: Vec<InitEntry>,
    pub segments: Vec<SegmentEntry>,
}

impl Recording {
    pub fn new(manifest: Manifest) -> Recording {
        Recording {
            manifest,
            inits: Vec::new(),
            segments: Vec::new(),
        }
    }

    /// Rebuilds a recording from its spool header and journal.
    pub fn from_journal(manifest: Manifest, entries: &[JournalEntry]) -> Recording {
        let mut recording = Recording::new(manifest);
        recording.manifest.segments = 0;
        recording.manifest.bytes = 0;
        recording.manifest.duration_secs = 0.0;
        for entry in entries {
            recording.add(entry.clone());
        }
        recording
    }

    pub fn add(&mut self, entry: JournalEntry) {
        let m = &mut self.manifest;
        // Saturating: a damaged journal's byte counts must not overflow (they are read back).
        m.bytes = m.bytes.saturating_add(entry.bytes());
        match entry {
            JournalEntry::Init(init) => {
                m.codecs = init.codecs.clone();
                m.width = init.width;
                m.height = init.height;
                self.inits.push(init);
            }
            JournalEntry::Segment(segment) => {
                m.segments += 1;
                m.duration_secs += segment.duration;
                self.segments.push(segment);
            }
        }
    }

    /// Leaves out a file that could not be stored: a segment, or an init with every segment
    /// that uses it. The segment after the gap is marked discontinuous. Returns segments lost.
    pub fn forget(&mut self, entry: &JournalEntry) -> u64 {
        let before = self.segments.len();
        let gap_at = match entry {
            JournalEntry::Segment(gone) => {
                let at = self.segments.iter().position(|s| s.index == gone.index);
                self.segments.retain(|s| s.index != gone.index);
                at
            }
            JournalEntry::Init(gone) => {
                self.inits.retain(|i| i.version != gone.version);
                let at = self.segments.iter().position(|s| s.init == gone.version);
                self.segments.retain(|s| s.init != gone.version);
                at
            }
        };
        if let Some(next) = gap_at.and_then(|i| self.segments.get_mut(i)) {
            next.discontinuity = true;
        }
        let lost = (before - self.segments.len()) as u64;
        let m = &mut self.manifest;
        m.segments = self.segments.len() as u64;
        m.duration_secs = self.segments.iter().map(|s| s.duration).sum();
        m.bytes = self
            .segments
            .iter()
            .map(|s| s.bytes)
            .chain(self.inits.iter().map(|i| i.bytes))
            .fold(0, u64::saturating_add);
        lost
    }

    /// The recording's playlist: EVENT while recording, VOD with ENDLIST once finalized.
    pub fn playlist(&self) -> String {
        let ended = self.manifest.state != RecordingState::Recording;
        let entries: Vec<Entry> = self
            .segments
            .iter()
            .map(|s| Entry {
                uri: segment_name(s.index),
                init_uri: init_name(s.init),
                duration: s.duration,
                discontinuity: s.discontinuity,
                program_date_time: s.program_date_time,
            })
            .collect();
        let header = Header {
            kind: if ended { Kind::Vod } else { Kind::Event },
            target_duration: target_duration(self.segments.iter().map(|s| s.duration)),
            media_sequence: 0,
            discontinuity_sequence: 0,
            ended,
            independent_segments: true,
        };
        write_media(&header, &entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(index: u64, init: u64, discontinuity: bool) -> JournalEntry {
        JournalEntry::Segment(SegmentEntry {
            index,
            duration: 2.0,
            bytes: 1000,
            init,
            discontinuity,
            program_date_time: DateTime::from_timestamp(1_700_000_000 + index as i64 * 2, 0)
                .unwrap(),
        })
    }

    fn init(version: u64) -> JournalEntry {
        JournalEntry::Init(InitEntry {
            version,
            bytes: 700,
            codecs: "avc1.64001f,mp4a.40.2".into(),
            width: 1280,
            height: 720,
        })
    }

    #[test]
    fn playlist_event_then_vod() {
        let start = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut r = Recording::new(Manifest::new("alice", &new_session_name(start), start));
        for e in [init(0), segment(0, 0, false), segment(1, 0, false)] {
            r.add(e);
        }
        r.add(init(1));
        r.add(segment(2, 1, true));
        let live = r.playlist();
        assert!(live.contains("#EXT-X-PLAYLIST-TYPE:EVENT"), "{live}");
        assert!(!live.contains("#EXT-X-ENDLIST"));
        r.manifest.state = RecordingState::Finished;
        let vod = r.playlist();
        let parsed = m3u8_rs::parse_media_playlist_res(vod.as_bytes()).unwrap();
        assert!(parsed.end_list);
        assert_eq!(parsed.playlist_type, Some(m3u8_rs::MediaPlaylistType::Vod));
        assert_eq!(parsed.segments.len(), 3);
        assert_eq!(parsed.segments[0].map.as_ref().unwrap().uri, "init-0.mp4");
        assert!(parsed.segments[1].map.is_none());
        assert!(parsed.segments[2].discontinuity);
        assert_eq!(parsed.segments[2].map.as_ref().unwrap().uri, "init-1.mp4");
        assert_eq!(parsed.segments[2].uri, "seg-000002.m4s");
        assert_eq!(r.manifest.segments, 3);
        assert_eq!(r.manifest.duration_secs, 6.0);
        assert_eq!(r.manifest.bytes, 2 * 700 + 3 * 1000);
        assert_eq!(r.manifest.height, 720);
    }

    #[test]
    fn a_lost_segment_becomes_a_discontinuity() {
        let start = Utc::now();
        let mut r = Recording::new(Manifest::new("a", "s", start));
        for e in [
            init(0),
            segment(0, 0, false),
            segment(1, 0, false),
            segment(2, 0, false),
        ] {
            r.add(e);
        }
        assert_eq!(r.forget(&segment(1, 0, false)), 1);
        assert_eq!(r.manifest.segments, 2);
        assert_eq!(r.manifest.duration_secs, 4.0);
        assert!(r.segments[1].discontinuity);
        assert!(!r.playlist().contains("seg-000001"));
        assert_eq!(r.forget(&init(0)), 2);
        assert_eq!(r.manifest.bytes, 0);
    }

    #[test]
    fn journal_survives_a_torn_line() {
        let mut text = String::new();
        for e in [init(0), segment(0, 0, false), segment(1, 0, false)] {
            text.push_str(&serde_json::to_string(&e).unwrap());
            text.push('\n');
        }
        text.push_str(r#"{"kind":"segment","index":2,"dur"#);
        let entries = parse_journal(&text);
        assert_eq!(entries.len(), 3);
        let start = Utc::now();
        let r = Recording::from_journal(Manifest::new("a", "s", start), &entries);
        assert_eq!(r.manifest.segments, 2);
    }

    #[test]
    fn ids_and_file_names() {
        let session = new_session_name(DateTime::from_timestamp(1_700_000_000, 0).unwrap());
        assert!(session.starts_with("20231114T221320Z-"), "{session}");
        let id = recording_id("team-7_b", &session);
        assert_eq!(
            parse_recording_id(&id),
            Some(("team-7_b", session.as_str()))
        );
        for bad in [
            "", "alice", "alice.", ".s", "Alice.s", "a.b/c", "a.b.c", "../x.y",
        ] {
            assert_eq!(parse_recording_id(bad), None, "{bad:?}");
        }
        assert!(is_recording_file("index.m3u8"));
        assert!(is_recording_file("init-0.mp4"));
        assert!(is_recording_file("seg-000012.m4s"));
        for bad in [
            "manifest.json",
            "seg-.m4s",
            "seg-1a.m4s",
            "init-0.mp4/..",
            "../init-0.mp4",
        ] {
            assert!(!is_recording_file(bad), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn id_parser_never_panics(s in "\\PC{0,80}") {
            if let Some((user, session)) = parse_recording_id(&s) {
                proptest::prop_assert_eq!(recording_id(user, session), s.clone());
            }
            let _ = is_recording_file(&s);
        }

        #[test]
        fn journal_parser_never_panics(s in "\\PC{0,400}") {
            let _ = parse_journal(&s);
        }
    }
}
