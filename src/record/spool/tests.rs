use super::*;
use crate::record::session::{Manifest, RecordingState};
use crate::record::uploader::UploadPlan;
use chrono::DateTime;
use std::sync::Weak;

// Fixtures shared with the uploader's and the recorder's tests. Data sizes match `bytes`.

pub(crate) fn init(version: u64) -> JournalEntry {
    JournalEntry::Init(InitEntry {
        version,
        bytes: init_data(version).len() as u64,
        codecs: "avc1.64001f".into(),
        width: 1280,
        height: 720,
    })
}

pub(crate) fn segment(index: u64, init: u64) -> JournalEntry {
    JournalEntry::Segment(SegmentEntry {
        index,
        duration: 2.0,
        bytes: segment_data(index).len() as u64,
        init,
        discontinuity: false,
        program_date_time: start() + chrono::Duration::seconds(2 * index as i64),
    })
}

fn init_data(version: u64) -> Bytes {
    Bytes::from(format!("init-{version}"))
}

fn segment_data(index: u64) -> Bytes {
    Bytes::from(format!("seg-{index}"))
}

fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).expect("valid time")
}

/// A spooled session as a writer leaves it: header, one init and two segments, journaled.
pub(crate) fn spool_files(dir: &Path, manifest: Manifest, ended: bool) -> Vec<JournalEntry> {
    std::fs::create_dir_all(dir).expect("spool dir");
    write_header(dir, &SpoolHeader { manifest, ended }).expect("header");
    let files = [
        (init(0), init_data(0)),
        (segment(0, 0), segment_data(0)),
        (segment(1, 0), segment_data(1)),
    ];
    for (entry, data) in &files {
        write_entry(dir, entry, data).expect("spool file");
    }
    files.into_iter().map(|(entry, _)| entry).collect()
}

fn hls_segment(discontinuity: bool) -> Segment {
    Segment {
        duration: 2.0,
        data: Bytes::from_static(b"media"),
        discontinuity,
        program_date_time: start(),
        independent: true,
        video_frames: 60,
        start_time: 0.0,
    }
}

fn no_tracks() -> InitInfo {
    InitInfo {
        video: None,
        audio: None,
    }
}

fn discontinuity(entry: &JournalEntry) -> bool {
    matches!(entry, JournalEntry::Segment(s) if s.discontinuity)
}

#[test]
fn files_are_numbered_and_a_gap_marks_the_next_segment_only() {
    let mut seq = Sequencer::default();
    assert!(!seq.has_init());
    let first = seq.init(10, &no_tracks());
    assert!(matches!(&first, JournalEntry::Init(i) if i.version == 0 && i.width == 0));
    assert!(seq.has_init());
    let s0 = seq.segment(&hls_segment(false));
    assert!(matches!(&s0, JournalEntry::Segment(s) if s.index == 0 && s.init == 0 && s.bytes == 5));
    assert!(!discontinuity(&s0));
    seq.gap();
    assert!(discontinuity(&seq.segment(&hls_segment(false))));
    assert!(!discontinuity(&seq.segment(&hls_segment(false))));
    // The segmenter's own discontinuity passes through.
    assert!(discontinuity(&seq.segment(&hls_segment(true))));
    // A new init (new codec parameters) is a discontinuity for its first segment.
    assert!(matches!(seq.init(10, &no_tracks()), JournalEntry::Init(i) if i.version == 1));
    let s4 = seq.segment(&hls_segment(false));
    assert!(matches!(&s4, JournalEntry::Segment(s) if s.index == 4 && s.init == 1));
    assert!(discontinuity(&s4));
}

#[test]
fn a_spooled_session_loads_back_and_a_torn_line_is_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = Manifest::new("alice", "s-1", start());
    let entries = spool_files(dir.path(), manifest.clone(), true);
    assert_eq!(
        std::fs::read(dir.path().join("seg-000001.m4s")).expect("file"),
        b"seg-1"
    );
    // A crash mid-append.
    let mut journal = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join(JOURNAL_FILE))
        .expect("journal");
    journal
        .write_all(br#"{"kind":"segment","ind"#)
        .expect("append");
    let (header, loaded) = load_session(dir.path()).expect("load");
    assert!(header.ended);
    assert_eq!(header.manifest, manifest);
    assert_eq!(loaded, entries);
}

#[test]
fn loading_reports_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        load_session(dir.path()),
        Err(LoadError::Read { .. })
    ));
    std::fs::write(dir.path().join(HEADER_FILE), b"{").expect("write");
    assert!(matches!(
        load_session(dir.path()),
        Err(LoadError::Header { .. })
    ));
    // A header without a journal yet: a session that spooled nothing.
    let header = SpoolHeader {
        manifest: Manifest::new("alice", "s-1", start()),
        ended: false,
    };
    write_header(dir.path(), &header).expect("header");
    assert!(load_session(dir.path()).expect("load").1.is_empty());
}

#[test]
fn recovery_resumes_what_is_left_and_drops_unjournaled_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let entries = spool_files(dir.path(), Manifest::new("alice", "s-1", start()), false);
    // The init was uploaded before the crash; a segment was written without its journal line.
    std::fs::remove_file(dir.path().join("init-0.mp4")).expect("remove");
    std::fs::write(dir.path().join("seg-000002.m4s"), b"torn").expect("write");
    let (header, loaded) = load_session(dir.path()).expect("load");
    let recovered = recover(dir.path(), header, loaded);
    assert!(recovered.interrupted);
    assert_eq!(recovered.pending, entries[1..]);
    assert_eq!(recovered.spooled_bytes, 10);
    assert!(!dir.path().join("seg-000002.m4s").exists());
    // The whole recording, uploaded part included.
    let m = &recovered.recording.manifest;
    assert_eq!((m.segments, m.bytes), (2, 16));
    // It ended when its last segment did.
    assert_eq!(m.ended_at, Some(start() + chrono::Duration::seconds(4)));
    assert_eq!(m.state, RecordingState::Recording);
}

#[test]
fn a_cleanly_ended_session_keeps_its_end_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut manifest = Manifest::new("alice", "s-1", start());
    let end = start() + chrono::Duration::seconds(30);
    manifest.ended_at = Some(end);
    spool_files(dir.path(), manifest, true);
    let (header, loaded) = load_session(dir.path()).expect("load");
    let recovered = recover(dir.path(), header, loaded);
    assert!(!recovered.interrupted);
    assert_eq!(recovered.pending.len(), 3);
    assert_eq!(recovered.recording.manifest.ended_at, Some(end));
    // Nothing spooled at all: it ended when it started.
    let empty = tempfile::tempdir().expect("tempdir");
    let header = SpoolHeader {
        manifest: Manifest::new("bob", "s-2", start()),
        ended: false,
    };
    let recovered = recover(empty.path(), header, Vec::new());
    assert_eq!(recovered.recording.manifest.ended_at, Some(start()));
}

#[tokio::test]
async fn sessions_are_found_by_their_header_and_removed_with_an_empty_user_folder() {
    let root = tempfile::tempdir().expect("tempdir");
    let spool = Spool::new(root.path().to_owned(), 1 << 20, Arc::new(Metrics::new()));
    let a = spool.session_dir("alice", "s-1");
    let b = spool.session_dir("alice", "s-2");
    spool_files(&a, Manifest::new("alice", "s-1", start()), true);
    spool_files(&b, Manifest::new("alice", "s-2", start()), true);
    std::fs::create_dir_all(spool.session_dir("bob", "no-header")).expect("dir");
    std::fs::write(root.path().join("stray-file"), b"x").expect("write");
    assert_eq!(spool.find_sessions().expect("find"), [a.clone(), b.clone()]);
    remove_session_dir(&a).await;
    assert!(!a.exists() && b.exists());
    remove_session_dir(&b).await;
    assert!(!root.path().join("alice").exists());
}

#[test]
fn spool_bytes_are_counted_and_never_wrap() {
    let metrics = Arc::new(Metrics::new());
    let spool = Spool::new(PathBuf::new(), 100, metrics.clone());
    assert!(spool.fits(100));
    spool.add(60);
    assert!(!spool.fits(41));
    assert_eq!(metrics.record_spool_bytes.get(), 60);
    spool.release(80);
    assert_eq!(metrics.record_spool_bytes.get(), 0);
    assert!(spool.fits(100));
}

struct Writer {
    _root: tempfile::TempDir,
    spool: Arc<Spool>,
    session: Arc<SessionShared>,
    metrics: Arc<Metrics>,
}

fn writer(limit: u64) -> Writer {
    let root = tempfile::tempdir().expect("tempdir");
    let metrics = Arc::new(Metrics::new());
    let spool = Arc::new(Spool::new(root.path().to_owned(), limit, metrics.clone()));
    let manifest = Manifest::new("alice", "s-1", start());
    let dir = spool.session_dir("alice", "s-1");
    let plan = UploadPlan::new(manifest);
    let session = Arc::new(SessionShared::new(
        plan,
        dir,
        tracing::Span::none(),
        Weak::new(),
    ));
    Writer {
        _root: root,
        spool,
        session,
        metrics,
    }
}

/// Runs the writer over `events` to its end.
async fn write(w: &Writer, events: Vec<TapEvent>) {
    let (tx, rx) = mpsc::channel(events.len().max(1));
    for event in events {
        tx.try_send(event).expect("queue");
    }
    drop(tx);
    w.spool.clone().record(rx, w.session.clone()).await;
}

fn tap_init(missed_before: u64) -> TapEvent {
    TapEvent::Init {
        data: Bytes::from_static(b"init"),
        info: no_tracks(),
        rung: "720p".into(),
        missed_before,
    }
}

fn tap_segment(missed_before: u64) -> TapEvent {
    TapEvent::Segment {
        segment: hls_segment(false),
        closed_at: std::time::Instant::now(),
        missed_before,
    }
}

#[tokio::test]
async fn the_writer_spools_journals_and_marks_the_end() {
    let w = writer(1 << 20);
    write(
        &w,
        vec![
            // Before any init: nothing playable, not recorded.
            tap_segment(0),
            tap_init(0),
            tap_segment(0),
            // Two segments the tap could not queue: a gap.
            tap_segment(2),
            tap_segment(0),
            TapEvent::Missed { missed_before: 1 },
        ],
    )
    .await;
    let dir = &w.session.dir;
    let (header, journal) = load_session(dir).expect("load");
    assert!(header.ended, "the header must say the publish ended");
    assert_eq!(header.manifest.rung, "720p");
    assert_eq!(header.manifest.missing_segments, 3);
    assert!(header.manifest.ended_at.is_some());
    let names: Vec<String> = journal.iter().map(JournalEntry::file_name).collect();
    assert_eq!(
        names,
        [
            "init-0.mp4",
            "seg-000000.m4s",
            "seg-000001.m4s",
            "seg-000002.m4s"
        ]
    );
    let gaps: Vec<bool> = journal.iter().map(discontinuity).collect();
    assert_eq!(gaps, [false, false, true, false]);
    assert_eq!(
        std::fs::read(dir.join("seg-000002.m4s")).expect("file"),
        b"media"
    );
    assert_eq!(w.metrics.record_spool_bytes.get(), 4 + 3 * 5);
    assert_eq!(w.metrics.record_segments.get(), 3);
    let plan = w.session.plan();
    assert_eq!(
        serde_json::to_value(plan.status()).expect("json")["pending"],
        4
    );
    assert_eq!(plan.manifest().missing_segments, 3);
    assert!(matches!(
        plan.next_action(std::time::Instant::now()),
        crate::record::uploader::Action::Put(_)
    ));
}

#[tokio::test]
async fn a_full_spool_skips_segments_counts_them_and_marks_the_gap() {
    // Room for the init (never refused) and two small segments.
    let w = writer(4 + 5 + 5);
    let big = TapEvent::Segment {
        segment: Segment {
            data: Bytes::from(vec![0u8; 100]),
            ..hls_segment(false)
        },
        closed_at: std::time::Instant::now(),
        missed_before: 0,
    };
    write(
        &w,
        vec![
            tap_init(0),
            tap_segment(0),
            big,
            tap_segment(0),
            tap_segment(0),
        ],
    )
    .await;
    assert_eq!(w.metrics.record_spool_full.get(), 2);
    let (header, journal) = load_session(&w.session.dir).expect("load");
    assert_eq!(header.manifest.missing_segments, 2);
    let gaps: Vec<bool> = journal.iter().map(discontinuity).collect();
    assert_eq!(gaps, [false, false, true]);
}

#[tokio::test]
async fn a_spool_that_cannot_be_created_abandons_the_recording() {
    let w = writer(1 << 20);
    // A file where the session's folder must go.
    let user_dir = w.session.dir.parent().expect("user dir").to_owned();
    std::fs::create_dir_all(user_dir.parent().expect("root")).expect("root");
    std::fs::write(&user_dir, b"not a folder").expect("write");
    write(&w, vec![tap_init(0), tap_segment(0)]).await;
    let plan = w.session.plan();
    assert_eq!(
        serde_json::to_value(plan.status()).expect("json")["pending"],
        0
    );
    assert_eq!(
        plan.next_action(std::time::Instant::now()),
        crate::record::uploader::Action::Finalize
    );
}

/// Fuzz finding (record_spool): a journal line whose duration puts the end time past what a
/// date can hold made recovery — run at every start-up — panic in chrono's `DateTime + TimeDelta`.
#[test]
fn recovery_survives_a_journal_with_an_absurd_duration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let header = SpoolHeader {
        manifest: Manifest::new("alice", "s-1", start()),
        ended: false,
    };
    write_header(dir.path(), &header).expect("header");
    let line = r#"{"kind":"segment","index":0,"duration":1e300,"bytes":1,"init":0,"discontinuity":false,"program_date_time":"2026-12-02T05:07:10Z"}"#;
    std::fs::write(dir.path().join(JOURNAL_FILE), format!("{line}\n")).expect("journal");
    let (header, loaded) = load_session(dir.path()).expect("load");
    let recovered = recover(dir.path(), header, loaded);
    // The end time falls back to the last segment's start.
    assert_eq!(
        recovered.recording.manifest.ended_at,
        Some("2026-12-02T05:07:10Z".parse().expect("time"))
    );
}

/// Found reviewing the record_spool target: byte counts in a damaged journal that add up past
/// u64 overflowed the recording's and the spool's totals (a panic in debug builds).
#[test]
fn recovery_survives_byte_counts_that_overflow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let header = SpoolHeader {
        manifest: Manifest::new("alice", "s-1", start()),
        ended: false,
    };
    write_header(dir.path(), &header).expect("header");
    let line = |i: u64| {
        format!(
            r#"{{"kind":"segment","index":{i},"duration":1.0,"bytes":18446744073709551615,"init":0,"discontinuity":false,"program_date_time":"2026-12-02T05:07:10Z"}}"#
        )
    };
    std::fs::write(
        dir.path().join(JOURNAL_FILE),
        format!("{}\n{}\n", line(0), line(1)),
    )
    .expect("journal");
    std::fs::write(dir.path().join("seg-000000.m4s"), b"x").expect("file");
    std::fs::write(dir.path().join("seg-000001.m4s"), b"x").expect("file");
    let (header, loaded) = load_session(dir.path()).expect("load");
    let recovered = recover(dir.path(), header, loaded);
    assert_eq!(recovered.recording.manifest.bytes, u64::MAX);
    assert_eq!(recovered.spooled_bytes, u64::MAX);
}
