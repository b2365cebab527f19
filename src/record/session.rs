//! One recording's durable state: the manifest, the journal of stored files, and the playlist
//! rendered from them. Pure data: the recorder does the I/O.
//!
//! The spool keeps `session.json` (the manifest, rewritten on state changes) and `journal.jsonl`
//! (one appended, checksummed line per init or segment, see [`super::journal`]). Appending keeps
//! the cost per segment constant for long streams; a record torn by a crash costs itself only.

use super::playlist::{PlaylistBody, PlaylistSnapshot};
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
    /// Ended early by a failure, or with segments missing: `error` says which failure ended the
    /// stream (its ladder failed or panicked, the source went over a limit, a codec it cannot
    /// serve, a flood), `missing_segments` how many segments were not recorded (writer behind,
    /// spool full or unwritable, a spooled file lost; the playlist marks each gap). What was
    /// recorded plays either way.
    Incomplete,
    /// The server stopped mid-recording (crash, kill); finalized at the next start.
    Interrupted,
}

impl RecordingState {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingState::Recording => "recording",
            RecordingState::Finished => "finished",
            RecordingState::Incomplete => "incomplete",
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
    /// Segments not recorded (writer behind, spool full or unwritable): each gap is a
    /// DISCONTINUITY in the playlist.
    pub missing_segments: u64,
    /// Runs of missing segments (each one DISCONTINUITY).
    #[serde(default)]
    pub gaps: u64,
    /// The id of the previous part, when a long stream rolled over into this recording
    /// (`record.max_duration_hours`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continues: Option<String>,
    /// Why the stream was ended by a failure rather than by its publisher (state `incomplete`).
    /// The reason names the limit or the failure, never a path or a key. Absent from manifests
    /// and spool headers written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Most viewers at once and distinct viewers while it was live (as last reported by the
    /// HTTP side through the stream's `audience` status, every 5 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_viewers: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_viewers: Option<u64>,
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
            gaps: 0,
            continues: None,
            error: None,
            peak_viewers: None,
            total_viewers: None,
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

/// Reads a journal, skipping torn and corrupt records (see [`super::journal`]).
pub fn parse_journal(text: &str) -> Vec<JournalEntry> {
    super::journal::parse(text.as_bytes())
}

/// [`parse_journal`] on raw bytes (a journal need not be UTF-8 after a crash).
pub fn parse_journal_bytes(bytes: &[u8]) -> Vec<JournalEntry> {
    super::journal::parse(bytes)
}

/// A recording's counters and its playlist. Segments are counted when spooled and listed in the
/// playlist once stored, so the playlist never names an object storage does not hold; no list
/// of segments is kept (24/7 streams).
#[derive(Debug, Clone)]
pub struct Recording {
    pub manifest: Manifest,
    playlist: PlaylistBody,
    /// Inits whose file was lost: their segments cannot be played and are left out.
    dead_inits: Vec<u64>,
    /// The last segment spooled (for the end time of an interrupted recording).
    last_segment_end: Option<DateTime<Utc>>,
}

impl Recording {
    pub fn new(manifest: Manifest) -> Recording {
        Recording {
            manifest,
            playlist: PlaylistBody::default(),
            dead_inits: Vec::new(),
            last_segment_end: None,
        }
    }

    /// Rebuilds a recording's counters from its spool header and journal; list the entries
    /// already stored with [`Self::stored`].
    pub fn from_journal(manifest: Manifest, entries: &[JournalEntry]) -> Recording {
        let mut recording = Recording::new(manifest);
        recording.manifest.segments = 0;
        recording.manifest.bytes = 0;
        recording.manifest.duration_secs = 0.0;
        for entry in entries {
            recording.add(entry.clone());
        }
        // A spool written before inits were versioned only once stored may name an init that
        // never was: its segments cannot be played and are left out.
        let journaled: Vec<u64> = entries
            .iter()
            .filter_map(|e| match e {
                JournalEntry::Init(i) => Some(i.version),
                JournalEntry::Segment(_) => None,
            })
            .collect();
        for entry in entries {
            if let JournalEntry::Segment(s) = entry {
                if !journaled.contains(&s.init) && !recording.dead_inits.contains(&s.init) {
                    recording.dead_inits.push(s.init);
                }
            }
        }
        recording
    }

    /// A file was spooled: counted.
    pub fn add(&mut self, entry: JournalEntry) {
        let m = &mut self.manifest;
        // Saturating: a damaged journal's byte counts must not overflow (they are read back).
        m.bytes = m.bytes.saturating_add(entry.bytes());
        match entry {
            JournalEntry::Init(init) => {
                m.codecs = init.codecs;
                m.width = init.width;
                m.height = init.height;
            }
            JournalEntry::Segment(segment) => {
                m.segments += 1;
                m.duration_secs += segment.duration;
                let ms = (segment.duration.clamp(0.0, 86_400.0) * 1000.0) as i64;
                // Checked: a damaged journal's date must not panic the start-up that reads it.
                self.last_segment_end = Some(
                    segment
                        .program_date_time
                        .checked_add_signed(chrono::Duration::milliseconds(ms))
                        .unwrap_or(segment.program_date_time),
                );
            }
        }
    }

    /// A file is in storage: a segment is listed in the playlist.
    pub fn stored(&mut self, entry: &JournalEntry) {
        if let JournalEntry::Segment(s) = entry {
            self.playlist.push(s);
        }
    }

    /// Segments missing from the recording (never spooled): a gap.
    pub fn missing(&mut self, count: u64) {
        if count > 0 {
            self.manifest.missing_segments += count;
            self.manifest.gaps += u64::from(!self.playlist_gap_open());
            self.playlist.gap();
        }
    }

    fn playlist_gap_open(&self) -> bool {
        self.playlist.gap_pending()
    }

    /// Leaves out a spooled file that cannot be stored: a segment (counted missing; the next one
    /// listed is a discontinuity), or an init (its segments are left out as they come, see
    /// [`Self::is_playable`]). Returns the segments lost.
    pub fn forget(&mut self, entry: &JournalEntry) -> u64 {
        let m = &mut self.manifest;
        m.bytes = m.bytes.saturating_sub(entry.bytes());
        match entry {
            JournalEntry::Segment(gone) => {
                m.segments = m.segments.saturating_sub(1);
                m.duration_secs = (m.duration_secs - gone.duration).max(0.0);
                self.missing(1);
                1
            }
            JournalEntry::Init(gone) => {
                if !self.dead_inits.contains(&gone.version) {
                    self.dead_inits.push(gone.version);
                }
                0
            }
        }
    }

    /// Whether a spooled file can be part of the recording (a segment needs its init).
    pub fn is_playable(&self, entry: &JournalEntry) -> bool {
        match entry {
            JournalEntry::Segment(s) => !self.dead_inits.contains(&s.init),
            JournalEntry::Init(_) => true,
        }
    }

    /// Segments listed in the playlist (stored).
    pub fn listed(&self) -> u64 {
        self.playlist.listed()
    }

    pub fn last_segment_end(&self) -> Option<DateTime<Utc>> {
        self.last_segment_end
    }

    /// What a playlist refresh needs, cheap to take under a lock: render it outside.
    pub fn playlist_snapshot(&self) -> PlaylistSnapshot {
        self.playlist
            .snapshot(self.manifest.state != RecordingState::Recording)
    }

    /// The recording's playlist: EVENT while recording, VOD with ENDLIST once finalized.
    pub fn playlist(&self) -> String {
        self.playlist_snapshot().render()
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
        for e in [
            init(0),
            segment(0, 0, false),
            segment(1, 0, false),
            init(1),
            segment(2, 1, true),
        ] {
            r.add(e.clone());
            r.stored(&e);
        }
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
    fn a_lost_segment_becomes_a_discontinuity_and_only_stored_ones_are_listed() {
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
        r.stored(&init(0));
        r.stored(&segment(0, 0, false));
        assert_eq!(r.forget(&segment(1, 0, false)), 1);
        // Spooled but not stored yet: not listed.
        assert!(!r.playlist().contains("seg-000002"));
        r.stored(&segment(2, 0, false));
        assert_eq!(r.manifest.segments, 2);
        assert_eq!(r.manifest.duration_secs, 4.0);
        assert_eq!((r.manifest.missing_segments, r.manifest.gaps), (1, 1));
        let playlist = r.playlist();
        assert!(!playlist.contains("seg-000001"));
        let parsed = m3u8_rs::parse_media_playlist_res(playlist.as_bytes()).unwrap();
        assert!(parsed.segments[1].discontinuity);
        // An init lost: its segments cannot be played.
        assert_eq!(r.forget(&init(0)), 0);
        assert!(!r.is_playable(&segment(3, 0, false)));
        assert!(r.is_playable(&segment(3, 1, false)));
        assert_eq!(r.manifest.bytes, 2 * 1000);
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
    fn a_failure_survives_the_spool_header_and_old_headers_still_load() {
        let start = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut manifest = Manifest::new("alice", "s-1", start);
        let plain = serde_json::to_value(&manifest).unwrap();
        // No failure: the manifest reads as it did before the field existed.
        assert!(plain.get("error").is_none(), "{plain}");
        manifest.error = Some("the transcoder panicked: boom".into());
        let header = SpoolHeader {
            manifest: manifest.clone(),
            ended: true,
        };
        let json = serde_json::to_vec_pretty(&header).unwrap();
        let back: SpoolHeader = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.manifest, manifest);
        assert!(back.ended);
        // A header (or a stored manifest.json) written before: no error.
        let mut old = serde_json::to_value(&header).unwrap();
        old["manifest"].as_object_mut().unwrap().remove("error");
        let old: SpoolHeader = serde_json::from_value(old).unwrap();
        assert_eq!(old.manifest.error, None);
        assert_eq!(old.manifest.id, manifest.id);
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
            let _ = parse_journal_bytes(s.as_bytes());
        }
    }
}
