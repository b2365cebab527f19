use super::*;
use crate::hls::segmenter::{InitInfo, Segment};
use crate::record::session::{InitEntry, SegmentEntry};
use crate::record::session::{Manifest, RecordingState};
use crate::record::tap::TapEvent;
use crate::record::uploader::UploadPlan;
use chrono::DateTime;
use std::io::Write;
use std::sync::Weak;
use tokio::sync::mpsc;

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
    seq.new_init(Bytes::from_static(b"init"), &no_tracks());
    let (_, first) = seq.pending_init().expect("waiting");
    assert!(matches!(&first, JournalEntry::Init(i) if i.version == 0 && i.width == 0));
    // Not stored yet: segments cannot use it.
    assert!(!seq.has_init());
    seq.init_stored();
    assert!(seq.has_init() && seq.pending_init().is_none());
    let s0 = seq.segment(&hls_segment(false));
    assert!(matches!(&s0, JournalEntry::Segment(s) if s.index == 0 && s.init == 0 && s.bytes == 5));
    assert!(!discontinuity(&s0));
    seq.gap();
    assert!(discontinuity(&seq.segment(&hls_segment(false))));
    assert!(!discontinuity(&seq.segment(&hls_segment(false))));
    // The segmenter's own discontinuity passes through.
    assert!(discontinuity(&seq.segment(&hls_segment(true))));
    // A new init (new codec parameters) is a discontinuity for its first segment.
    seq.new_init(Bytes::from_static(b"init"), &no_tracks());
    assert!(!seq.has_init());
    // A failed write keeps the version: the retry stores the same init-1.
    assert!(matches!(seq.pending_init(), Some((_, JournalEntry::Init(i))) if i.version == 1));
    assert!(matches!(seq.pending_init(), Some((_, JournalEntry::Init(i))) if i.version == 1));
    seq.init_stored();
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

/// Runs the writer on a live queue: `between` is called after each batch of events has been
/// handled (`n` more journal records or missing segments).
async fn write_live(
    w: &Writer,
    batches: Vec<(Vec<TapEvent>, usize)>,
    mut between: impl FnMut(usize),
) {
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(w.spool.clone().record(rx, w.session.clone()));
    for (i, (batch, n)) in batches.into_iter().enumerate() {
        let before = journal_len(&w.session.dir) + missing(w);
        for event in batch {
            tx.send(event).await.expect("queue");
        }
        // Each event ends as a journal line or a missing segment (inits may be retried).
        for _ in 0..500 {
            if journal_len(&w.session.dir) + missing(w) >= before + n as u64 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        between(i);
    }
    drop(tx);
    task.await.expect("writer");
}

fn journal_len(dir: &Path) -> u64 {
    load_session(dir).map_or(0, |(_, j)| j.len() as u64)
}

fn missing(w: &Writer) -> u64 {
    w.session.plan().manifest().missing_segments
}

#[tokio::test]
async fn a_failed_init_write_never_leaves_segments_pointing_at_it() {
    let w = writer(1 << 20);
    let dir = w.session.dir.clone();
    // `init-1.mp4` cannot be written: a non-empty folder holds its name (as ENOSPC would).
    let blocker = dir.join("init-1.mp4");
    std::fs::create_dir_all(blocker.join("x")).expect("blocker");
    write_live(
        &w,
        vec![
            (vec![tap_init(0), tap_segment(0)], 2),
            // New codec parameters whose init cannot be stored: its segments are lost, not
            // recorded against an init that does not exist.
            (vec![tap_init(0), tap_segment(0)], 1),
            // Space is back: the init is retried before the next segment.
            (vec![tap_segment(0)], 2),
        ],
        |i| {
            if i == 1 {
                std::fs::remove_dir_all(&blocker).expect("unblock");
            }
        },
    )
    .await;
    let (header, journal) = load_session(&dir).expect("load");
    for entry in &journal {
        if let JournalEntry::Segment(s) = entry {
            assert!(
                dir.join(crate::record::session::init_name(s.init))
                    .is_file(),
                "{} refers to init-{}, never stored",
                entry.file_name(),
                s.init
            );
        }
    }
    let names: Vec<String> = journal.iter().map(JournalEntry::file_name).collect();
    assert_eq!(
        names,
        [
            "init-0.mp4",
            "seg-000000.m4s",
            "init-1.mp4",
            "seg-000001.m4s"
        ]
    );
    assert!(matches!(&journal[3], JournalEntry::Segment(s) if s.init == 1 && s.discontinuity));
    assert_eq!(header.manifest.missing_segments, 1);
    let status = serde_json::to_value(w.session.plan().status()).expect("json");
    let error = status["spool_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("init-1.mp4"), "{status}");
    assert!(
        !error.contains(&*dir.to_string_lossy()),
        "no paths: {error}"
    );
}

#[test]
fn a_torn_journal_append_never_swallows_the_next_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let entries = spool_files(dir.path(), Manifest::new("alice", "s-1", start()), false);
    let journal = dir.path().join(JOURNAL_FILE);
    let full = std::fs::read(&journal).expect("journal");
    let next = segment(2, 0);
    for cut in 0..=full.len() {
        std::fs::write(&journal, &full[..cut]).expect("truncate");
        // The next record is appended after the torn tail (a crash or a short write).
        write_entry(dir.path(), &next, &segment_data(2)).expect("append");
        let (_, loaded) = load_session(dir.path()).expect("load");
        let complete = full[..cut].iter().filter(|b| **b == b'\n').count();
        let mut expected = entries[..complete].to_vec();
        expected.push(next.clone());
        assert_eq!(loaded, expected, "journal cut at byte {cut}");
    }
}

#[tokio::test]
async fn a_spool_unwritable_at_the_start_records_once_it_can() {
    let w = writer(1 << 20);
    // A file where the user's folder must go: nothing can be written (as with ENOSPC).
    let user_dir = w.session.dir.parent().expect("user dir").to_owned();
    std::fs::create_dir_all(user_dir.parent().expect("root")).expect("root");
    std::fs::write(&user_dir, b"not a folder").expect("write");
    write_live(
        &w,
        vec![
            (vec![tap_init(0), tap_segment(0), tap_segment(0)], 2),
            (vec![tap_segment(0), tap_segment(0)], 3),
        ],
        |i| {
            if i == 0 {
                std::fs::remove_file(&user_dir).expect("unblock");
            }
        },
    )
    .await;
    let (header, journal) = load_session(&w.session.dir).expect("load");
    assert!(header.ended);
    assert_eq!(header.manifest.missing_segments, 2);
    let names: Vec<String> = journal.iter().map(JournalEntry::file_name).collect();
    assert_eq!(names, ["init-0.mp4", "seg-000000.m4s", "seg-000001.m4s"]);
    let gaps: Vec<bool> = journal.iter().map(discontinuity).collect();
    assert_eq!(gaps, [false, true, false]);
    let status = serde_json::to_value(w.session.plan().status()).expect("json");
    assert!(
        status["spool_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("cannot write session.json to the spool")),
        "{status}"
    );
}

#[tokio::test]
async fn a_long_recording_rolls_over_into_parts_at_a_keyframe() {
    let w = writer(1 << 20);
    let parts: Arc<std::sync::Mutex<Vec<Arc<SessionShared>>>> = Arc::default();
    let created = parts.clone();
    let spool = w.spool.clone();
    let next: NextPart = Box::new(move |ended: &Manifest| {
        let n = created.lock().map_or(0, |p| p.len());
        let mut manifest = Manifest::new("alice", &format!("s-part-{n}"), start());
        manifest.continues = Some(ended.id.clone());
        let part = Arc::new(SessionShared::new(
            UploadPlan::new(manifest),
            spool.session_dir("alice", &format!("s-part-{n}")),
            tracing::Span::none(),
            Weak::new(),
        ));
        if let Ok(mut p) = created.lock() {
            p.push(part.clone());
        }
        part
    });
    let not_key = || TapEvent::Segment {
        segment: Segment {
            independent: false,
            ..hls_segment(false)
        },
        closed_at: std::time::Instant::now(),
        missed_before: 0,
    };
    let events = vec![
        tap_init(0),
        tap_segment(0),
        tap_segment(0),
        // 4 s reached (max 3 s), but this segment does not start with a keyframe.
        not_key(),
        tap_segment(0),
        tap_segment(0),
    ];
    let (tx, rx) = mpsc::channel(events.len());
    for event in events {
        tx.try_send(event).expect("queue");
    }
    drop(tx);
    w.spool
        .clone()
        .record_parts(
            rx,
            w.session.clone(),
            Some((std::time::Duration::from_secs(3), next)),
        )
        .await;
    let (first, journal) = load_session(&w.session.dir).expect("first part");
    assert!(first.ended);
    assert_eq!(journal.len(), 4, "init and three segments: {journal:?}");
    let parts = parts.lock().expect("parts").clone();
    assert_eq!(parts.len(), 1);
    let (second, journal) = load_session(&parts[0].dir).expect("second part");
    assert!(second.ended);
    assert_eq!(second.manifest.continues.as_deref(), Some("alice.s-1"));
    assert_eq!(second.manifest.rung, "720p");
    let names: Vec<String> = journal.iter().map(JournalEntry::file_name).collect();
    // The part starts with the current init, then its own segments.
    assert_eq!(names, ["init-0.mp4", "seg-000000.m4s", "seg-000001.m4s"]);
    assert!(journal.iter().all(|e| !discontinuity(e)));
}

#[test]
fn a_legacy_spool_naming_a_missing_init_recovers_without_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut entries = spool_files(dir.path(), Manifest::new("alice", "s-1", start()), true);
    // What the old writer left after a failed init-1: segments naming it, uploaded or not.
    for (index, uploaded) in [(2, true), (3, false)] {
        let entry = segment(index, 1);
        write_entry(dir.path(), &entry, &segment_data(index)).expect("spool");
        if uploaded {
            std::fs::remove_file(dir.path().join(entry.file_name())).expect("uploaded");
        }
        entries.push(entry);
    }
    let (header, loaded) = load_session(dir.path()).expect("load");
    assert_eq!(loaded, entries);
    let recovered = recover(dir.path(), header, loaded);
    let mut plan =
        crate::record::uploader::UploadPlan::resumed(recovered.recording, recovered.pending, false);
    let t0 = std::time::Instant::now();
    use crate::record::uploader::Action;
    let mut steps = Vec::new();
    loop {
        match plan.next_action(t0) {
            Action::Put(e) => {
                steps.push(format!("put {}", e.file_name()));
                plan.put_stored(&e);
            }
            Action::Drop(e) => {
                steps.push(format!("drop {}", e.file_name()));
                plan.dropped(&e);
            }
            Action::RefreshPlaylist => {
                plan.playlist_stored(t0);
            }
            Action::Finalize => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        steps,
        [
            "put init-0.mp4",
            "put seg-000000.m4s",
            "put seg-000001.m4s",
            "drop seg-000003.m4s"
        ]
    );
    plan.finalizing(Utc::now());
    let playlist = plan.recording().playlist();
    assert!(!playlist.contains("init-1.mp4"), "{playlist}");
    assert_eq!(plan.manifest().segments, 2);
    assert_eq!(plan.manifest().missing_segments, 2);
    assert_eq!(plan.manifest().state, RecordingState::Incomplete);
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
    // A segment counts for a day at most in the end time.
    assert_eq!(
        recovered.recording.manifest.ended_at,
        Some("2026-12-03T05:07:10Z".parse().expect("time"))
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
