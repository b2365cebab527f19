use super::*;
use crate::config::RecordConfig;
use crate::record::spool::tests::{init, segment, spool_files};
use std::sync::Weak;

const SEC: Duration = Duration::from_secs(1);

fn plan() -> UploadPlan {
    UploadPlan::new(Manifest::new("alice", "s-1", Utc::now()))
}

/// Does what the plan asks at `now`, all succeeding, until it wants something else (sleep,
/// finalize). Returns the files and playlists stored.
fn steps(plan: &mut UploadPlan, now: Instant) -> Vec<String> {
    steps_until(plan, now, usize::MAX)
}

/// Like [`steps`], at most `count` of them.
fn steps_until(plan: &mut UploadPlan, now: Instant, count: usize) -> Vec<String> {
    let mut stored = Vec::new();
    while stored.len() < count {
        match plan.next_action(now) {
            Action::Put(entry) => {
                assert!(plan.put_stored(&entry).is_some());
                stored.push(entry.file_name());
            }
            Action::RefreshPlaylist => {
                plan.playlist_stored(now);
                stored.push("playlist".into());
            }
            _ => break,
        }
    }
    stored
}

/// Milliseconds, rounded (jitter is applied in floating point).
fn ms(d: Duration) -> u64 {
    (d.as_secs_f64() * 1000.0).round() as u64
}

#[test]
fn files_go_up_in_spool_order_and_the_first_playlist_right_away() {
    let t0 = Instant::now();
    let mut p = plan();
    assert_eq!(p.next_action(t0), Action::Sleep(None));
    for e in [init(0), segment(0, 0), segment(1, 0)] {
        p.spooled(e, Some(t0));
    }
    assert_eq!(p.next_action(t0), Action::Put(init(0)));
    let stored = p.put_stored(&init(0)).expect("front");
    assert_eq!(stored.closed_at, Some(t0));
    assert_eq!(stored.failures_before, 0);
    // Something is stored and no playlist yet: it goes up before the rest.
    assert_eq!(
        steps(&mut p, t0),
        ["playlist", "seg-000000.m4s", "seg-000001.m4s"]
    );
    // Caught up; the next refresh is due 6 s after the last.
    assert_eq!(p.next_action(t0 + SEC), Action::Sleep(Some(5 * SEC)));
    assert_eq!(p.next_action(t0 + 6 * SEC), Action::RefreshPlaylist);
    p.playlist_stored(t0 + 6 * SEC);
    // Nothing new: wait for the writer, no timer.
    assert_eq!(p.next_action(t0 + 60 * SEC), Action::Sleep(None));
}

#[test]
fn a_stored_file_must_be_the_oldest_pending() {
    let mut p = plan();
    p.spooled(init(0), None);
    p.spooled(segment(0, 0), None);
    assert_eq!(p.put_stored(&segment(0, 0)), None);
    assert_eq!(p.file_vanished(&segment(0, 0)), 0);
    assert_eq!(p.status().pending, 2);
    assert_eq!(p.put_stored(&init(0)).map(|s| s.closed_at), Some(None));
}

#[test]
fn a_live_playlist_is_refreshed_at_most_every_six_seconds() {
    let t0 = Instant::now();
    let mut p = plan();
    p.spooled(init(0), None);
    assert_eq!(steps(&mut p, t0), ["init-0.mp4", "playlist"]);
    // One 2 s segment at a time, each stored as it closes.
    let mut refreshes = 0;
    for i in 0..30u32 {
        let now = t0 + 2 * SEC * (i + 1);
        p.spooled(segment(u64::from(i), 0), Some(now));
        // The segment goes up before the playlist that lists it, even when that is due.
        let stored = steps(&mut p, now);
        assert_eq!(stored[0], segment(u64::from(i), 0).file_name());
        refreshes += stored.iter().filter(|s| *s == "playlist").count();
        match p.next_action(now) {
            Action::Sleep(Some(d)) => assert!(d <= PLAYLIST_REFRESH && !d.is_zero()),
            Action::Sleep(None) => {}
            other => panic!("{other:?}"),
        }
    }
    // 60 s of media: one refresh per 6 s.
    assert_eq!(refreshes, 10);
}

#[test]
fn catching_up_after_an_outage_refreshes_now_and_then_not_per_segment() {
    let t0 = Instant::now();
    let mut p = plan();
    p.spooled(init(0), None);
    for i in 0..100 {
        p.spooled(segment(i, 0), None);
    }
    let mut now = t0;
    let mut refreshes = Vec::new();
    loop {
        match p.next_action(now) {
            Action::Put(e) => {
                p.put_stored(&e);
                now += Duration::from_millis(200);
            }
            Action::RefreshPlaylist => {
                refreshes.push(now);
                p.playlist_stored(now);
            }
            Action::Sleep(_) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(p.status().uploaded, 100);
    // 101 puts of 0.2 s: the first refresh at once, then one per 6 s (30 puts).
    assert_eq!(refreshes.len(), 1 + 100 / 30);
    for pair in refreshes.windows(2) {
        assert!(pair[1] - pair[0] >= PLAYLIST_REFRESH);
    }
}

#[test]
fn backoff_doubles_from_half_a_second_to_five() {
    let t0 = Instant::now();
    let mut p = plan();
    p.spooled(init(0), None);
    let mut now = t0;
    let mut waits = Vec::new();
    for failures in 1..=7 {
        assert_eq!(p.next_action(now), Action::Put(init(0)));
        let retry = p.failed(Step::Put, now, 1.0, "down".into());
        assert_eq!(retry.failures, failures);
        assert_eq!(p.next_action(now), Action::Sleep(Some(retry.retry_in)));
        waits.push(ms(retry.retry_in));
        now += retry.retry_in;
    }
    assert_eq!(waits, [500, 1000, 2000, 4000, 5000, 5000, 5000]);
    // Success starts over, and says how many failures it ends.
    let stored = p.put_stored(&init(0)).expect("front");
    assert_eq!(stored.failures_before, 7);
    p.spooled(segment(0, 0), None);
    assert_eq!(
        p.failed(Step::Put, now, 1.0, "down".into()).retry_in,
        RETRY_MIN
    );
}

#[test]
fn jitter_scales_each_wait_and_nonsense_jitter_is_ignored() {
    let t0 = Instant::now();
    let mut p = plan();
    let mut fail = |jitter: f64| ms(p.failed(Step::Put, t0, jitter, "e".into()).retry_in);
    assert_eq!(fail(0.8), 400);
    assert_eq!(fail(1.2), 1200);
    for _ in 0..5 {
        fail(1.0);
    }
    // At the cap the jitter still applies, so retries of many recordings spread out.
    assert_eq!(fail(1.2), 6000);
    assert_eq!(fail(f64::NAN), 5000);
    assert_eq!(fail(-3.0), 5000);
}

#[test]
fn a_failed_step_is_retried_before_anything_else() {
    let t0 = Instant::now();
    let mut p = plan();
    for e in [init(0), segment(0, 0), segment(1, 0), segment(2, 0)] {
        p.spooled(e, None);
    }
    assert_eq!(steps_until(&mut p, t0, 2), ["init-0.mp4", "playlist"]);
    assert_eq!(p.next_action(t0 + SEC), Action::Put(segment(0, 0)));
    p.put_stored(&segment(0, 0));
    // Storage slows down: the put fails just before the playlist is due...
    assert_eq!(p.next_action(t0 + SEC), Action::Put(segment(1, 0)));
    let failed_at = t0 + Duration::from_millis(5800);
    let retry = p.failed(Step::Put, failed_at, 1.0, "down".into());
    // ...and is retried before the (now due) refresh: files go up in order.
    let later = failed_at + retry.retry_in;
    assert!(later >= t0 + PLAYLIST_REFRESH);
    assert_eq!(p.next_action(later), Action::Put(segment(1, 0)));
    p.put_stored(&segment(1, 0));
    // Then the refresh; when it fails, it is retried before the next put.
    assert_eq!(p.next_action(later), Action::RefreshPlaylist);
    let retry = p.failed(Step::Refresh, later, 1.0, "down".into());
    assert_eq!(retry.retry_in, RETRY_MIN);
    assert_eq!(p.next_action(later), Action::Sleep(Some(retry.retry_in)));
    assert_eq!(p.next_action(later + SEC), Action::RefreshPlaylist);
    assert_eq!(p.playlist_stored(later + SEC), 1);
    assert_eq!(p.next_action(later + SEC), Action::Put(segment(2, 0)));
}

#[test]
fn finalize_comes_only_after_every_file_and_the_writer_ended() {
    let t0 = Instant::now();
    let mut p = plan();
    p.spooled(init(0), None);
    p.spooled(segment(0, 0), None);
    p.writer_ended();
    assert_eq!(
        steps(&mut p, t0),
        ["init-0.mp4", "playlist", "seg-000000.m4s"]
    );
    assert_eq!(p.next_action(t0), Action::Finalize);
    let retry = p.failed(Step::Finalize, t0, 1.0, "down".into());
    assert_eq!(p.next_action(t0), Action::Sleep(Some(retry.retry_in)));
    assert_eq!(p.next_action(t0 + retry.retry_in), Action::Finalize);
    assert_eq!(p.finalized(), 1);
    assert_eq!(p.next_action(t0 + 100 * SEC), Action::Done);
}

#[test]
fn without_the_writer_ending_there_is_no_finalize() {
    let t0 = Instant::now();
    let mut p = plan();
    p.spooled(init(0), None);
    assert_eq!(steps(&mut p, t0), ["init-0.mp4", "playlist"]);
    assert_eq!(p.next_action(t0 + 3600 * SEC), Action::Sleep(None));
    p.stamp_end(Utc::now());
    assert_eq!(p.next_action(t0 + 3600 * SEC), Action::Sleep(None));
    p.writer_ended();
    assert_eq!(p.next_action(t0 + 3600 * SEC), Action::Finalize);
}

#[test]
fn the_final_state_is_finished_or_interrupted() {
    let end = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
    let mut p = plan();
    p.writer_ended();
    p.finalizing(end);
    assert_eq!(p.manifest().state, RecordingState::Finished);
    assert_eq!(p.manifest().ended_at, Some(end));
    // Idempotent: a retried finalize keeps the first end time.
    p.finalizing(end + chrono::Duration::seconds(5));
    assert_eq!(p.manifest().ended_at, Some(end));

    let mut p = plan();
    p.abandon();
    assert_eq!(p.next_action(Instant::now()), Action::Finalize);
    p.finalizing(end);
    assert_eq!(p.manifest().state, RecordingState::Interrupted);

    let m = Manifest::new("carol", "s-2", Utc::now());
    let mut r = UploadPlan::resumed(Recording::new(m), [init(0)], true);
    assert_eq!(r.next_action(Instant::now()), Action::Put(init(0)));
    r.put_stored(&init(0));
    r.finalizing(end);
    assert_eq!(r.manifest().state, RecordingState::Interrupted);
    assert!(r.recording().playlist().contains("#EXT-X-ENDLIST"));
}

#[test]
fn a_stream_ended_by_a_failure_finalizes_incomplete_with_its_reason() {
    let end = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
    let mut p = plan();
    p.spooled(init(0), None);
    p.spooled(segment(0, 0), None);
    p.stream_failed("the transcoder panicked: boom");
    // The first failure is the one that ended it.
    p.stream_failed("a later failure");
    p.writer_ended();
    steps(&mut p, Instant::now());
    assert_eq!(p.next_action(Instant::now()), Action::Finalize);
    p.finalizing(end);
    let m = p.manifest();
    assert_eq!(m.state, RecordingState::Incomplete);
    assert_eq!(m.error.as_deref(), Some("the transcoder panicked: boom"));
    assert_eq!(m.missing_segments, 0);
    // What was recorded still plays to its end.
    assert!(p.recording().playlist().contains("#EXT-X-ENDLIST"));

    // Resumed after a crash from a spool that kept the failure: the same state.
    let mut m = Manifest::new("carol", "s-2", Utc::now());
    m.error = Some("the publisher sends 5000 media messages a second".into());
    let mut r = UploadPlan::resumed(Recording::new(m.clone()), [], false);
    r.finalizing(end);
    assert_eq!(r.manifest().state, RecordingState::Incomplete);
    assert_eq!(r.manifest().error, m.error);
    // The server stopped before the writer ended: interrupted says more, the reason stays.
    let mut r = UploadPlan::resumed(Recording::new(m.clone()), [], true);
    r.finalizing(end);
    assert_eq!(r.manifest().state, RecordingState::Interrupted);
    assert_eq!(r.manifest().error, m.error);
}

#[test]
fn a_failure_reason_is_bounded_and_kept_on_one_line() {
    let mut p = plan();
    let long = format!("the transcoder panicked: {}\nnext line", "é".repeat(400));
    p.stream_failed(&long);
    let error = p.manifest().error.clone().unwrap_or_default();
    assert!(error.len() <= MAX_ERROR_LEN, "{}", error.len());
    assert!(error.starts_with("the transcoder panicked: éé"));
    assert!(!error.contains('\n'));
    assert_eq!(bounded("a\nb\tc", 10), "a b c");
}

#[test]
fn the_playlist_is_event_while_live_and_vod_once_finalizing() {
    let mut p = plan();
    for e in [init(0), segment(0, 0)] {
        p.spooled(e, None);
    }
    let live = p.recording().playlist();
    assert!(live.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !live.contains("#EXT-X-ENDLIST"));
    p.writer_ended();
    p.finalizing(Utc::now());
    let vod = p.recording().playlist();
    assert!(vod.contains("#EXT-X-PLAYLIST-TYPE:VOD") && vod.contains("#EXT-X-ENDLIST"));
}

#[test]
fn vanished_files_are_left_out_and_counted_missing() {
    let t0 = Instant::now();
    let mut p = plan();
    for e in [
        init(0),
        segment(0, 0),
        init(1),
        segment(1, 1),
        segment(2, 1),
    ] {
        p.spooled(e, None);
    }
    // Segments that never reached the spool, counted by the writer.
    p.note_missing(2);
    // An init gone: its segment cannot be played, so it is dropped, not uploaded...
    assert_eq!(p.file_vanished(&init(0)), 0);
    assert_eq!(p.next_action(t0), Action::Drop(segment(0, 0)));
    assert_eq!(p.dropped(&segment(0, 0)), 1);
    assert_eq!(p.next_action(t0), Action::Put(init(1)));
    p.put_stored(&init(1));
    assert_eq!(p.file_vanished(&segment(1, 1)), 1);
    assert_eq!(p.next_action(t0), Action::Put(segment(2, 1)));
    p.put_stored(&segment(2, 1));
    assert_eq!(p.manifest().missing_segments, 4);
    assert_eq!(p.manifest().segments, 1);
    // The segment after a gap is a discontinuity.
    let playlist = p.recording().playlist();
    let parsed = m3u8_rs::parse_media_playlist_res(playlist.as_bytes()).expect("m3u8");
    assert_eq!(parsed.segments.len(), 1);
    assert!(parsed.segments[0].discontinuity);
    assert!(!playlist.contains("seg-000001"));
    // Ended with segments missing: incomplete, never "finished".
    p.writer_ended();
    p.finalizing(Utc::now());
    assert_eq!(p.manifest().state, RecordingState::Incomplete);
}

#[test]
fn status_says_recording_until_everything_is_stored() {
    let t0 = Instant::now();
    let mut p = plan();
    p.set_rung("720p".into());
    p.spooled(init(0), None);
    p.spooled(segment(0, 0), None);
    p.failed(Step::Put, t0, 1.0, "S3 put: timed out".into());
    let status = serde_json::to_value(p.status()).expect("json");
    assert_eq!(status["state"], "recording");
    assert_eq!(status["rung"], "720p");
    assert_eq!(status["pending"], 2);
    assert_eq!(status["segments"], 1);
    assert_eq!(status["last_error"], "S3 put: timed out");
    p.writer_ended();
    steps(&mut p, t0 + SEC);
    p.finalizing(Utc::now());
    let status = serde_json::to_value(p.status()).expect("json");
    assert_eq!(status["state"], "finished");
    // Inits are not counted as uploaded segments; a success clears the error.
    assert_eq!(status["uploaded"], 1);
    assert_eq!(status["last_error"], serde_json::Value::Null);
}

// --- The task, against a local store.

struct Fixture {
    _dirs: tempfile::TempDir,
    spool_dir: std::path::PathBuf,
    storage: Arc<Storage>,
    uploader: Uploader,
}

async fn fixture() -> Fixture {
    let dirs = tempfile::tempdir().expect("tempdir");
    let storage =
        Arc::new(Storage::open(&RecordConfig::default(), dirs.path().join("recordings")).await);
    let metrics = Arc::new(Metrics::new());
    let spool = Arc::new(Spool::new(
        dirs.path().join("spool"),
        1 << 30,
        metrics.clone(),
    ));
    Fixture {
        spool_dir: dirs.path().join("spool/alice/s-1"),
        uploader: Uploader {
            storage: storage.clone(),
            metrics,
            spool,
            shutdown: CancellationToken::new(),
        },
        storage,
        _dirs: dirs,
    }
}

fn session(plan: UploadPlan, dir: &std::path::Path) -> SessionShared {
    SessionShared::new(plan, dir.to_owned(), tracing::Span::none(), Weak::new())
}

#[tokio::test]
async fn the_task_uploads_the_spool_and_finalizes() {
    let f = fixture().await;
    let manifest = Manifest::new("alice", "s-1", Utc::now());
    let entries = spool_files(&f.spool_dir, manifest.clone(), true);
    let recording = Recording::from_journal(manifest, &entries);
    let s = session(UploadPlan::resumed(recording, entries, false), &f.spool_dir);
    assert!(f.uploader.run(&s).await);
    assert!(!f.spool_dir.exists());
    let get = |name: &str| {
        let (storage, key) = (f.storage.clone(), format!("alice/s-1/{name}"));
        async move { storage.get(&key).await }
    };
    assert_eq!(&get("init-0.mp4").await.expect("init")[..], b"init-0");
    assert_eq!(&get("seg-000001.m4s").await.expect("seg")[..], b"seg-1");
    let playlist = get(PLAYLIST_NAME).await.expect("playlist");
    let playlist = m3u8_rs::parse_media_playlist_res(&playlist[..]).expect("m3u8");
    assert!(playlist.end_list);
    assert_eq!(playlist.segments.len(), 2);
    let stored: Manifest =
        serde_json::from_slice(&get(MANIFEST_NAME).await.expect("manifest")).expect("json");
    assert_eq!(stored.state, RecordingState::Finished);
    assert_eq!(stored.segments, 2);
    assert_eq!(stored.missing_segments, 0);
    assert!(stored.ended_at.is_some());
}

#[tokio::test]
async fn the_task_counts_a_vanished_file_missing() {
    let f = fixture().await;
    let manifest = Manifest::new("alice", "s-1", Utc::now());
    let entries = spool_files(&f.spool_dir, manifest.clone(), false);
    std::fs::remove_file(f.spool_dir.join("seg-000000.m4s")).expect("remove");
    let recording = Recording::from_journal(manifest, &entries);
    let s = session(UploadPlan::resumed(recording, entries, true), &f.spool_dir);
    assert!(f.uploader.run(&s).await);
    let stored = f.uploader.storage.get("alice/s-1/manifest.json").await;
    let stored: Manifest = serde_json::from_slice(&stored.expect("manifest")).expect("json");
    assert_eq!(stored.state, RecordingState::Interrupted);
    assert_eq!((stored.segments, stored.missing_segments), (1, 1));
}

#[tokio::test]
async fn an_empty_recording_keeps_nothing() {
    let f = fixture().await;
    let mut plan = plan();
    std::fs::create_dir_all(&f.spool_dir).expect("dir");
    std::fs::write(f.spool_dir.join("init-0.mp4"), b"init-0").expect("write");
    plan.spooled(init(0), None);
    plan.writer_ended();
    let s = session(plan, &f.spool_dir);
    assert!(f.uploader.run(&s).await);
    assert!(f.storage.list("alice/").await.expect("list").is_empty());
    assert!(!f.spool_dir.exists());
}

#[tokio::test]
async fn the_task_stops_at_shutdown_and_keeps_the_spool() {
    let f = fixture().await;
    let s = session(plan(), &f.spool_dir);
    f.uploader.shutdown.cancel();
    // Live and idle: it would wait for the writer, but the server stops.
    assert!(!f.uploader.run(&s).await);
}
