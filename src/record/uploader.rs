//! Copies one recording's spool to storage, in order, for as long as it takes.
//!
//! [`UploadPlan`] is the whole upload state of a recording (what is spooled, what is stored,
//! when the live playlist was last refreshed, whether the writer ended, the retry backoff) and
//! decides the next [`Action`] from it and the time it is given. It does no I/O and never reads
//! the clock. [`Uploader`] is the thin task that executes those actions against [`Storage`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::session::{
    JournalEntry, Manifest, Recording, RecordingState, MANIFEST_NAME, PLAYLIST_NAME,
};
use super::spool::{self, Spool};
use super::storage::{Storage, StorageError};
use super::SessionShared;
use crate::metrics::Metrics;

/// A live recording's playlist and manifest are refreshed at most this often (each upload
/// rewrites the whole playlist, kept incrementally; segments go up as soon as they close).
pub(super) const PLAYLIST_REFRESH: Duration = Duration::from_secs(6);
pub(super) const RETRY_MIN: Duration = Duration::from_millis(500);
/// Short enough that uploads resume within seconds of storage returning; one request per
/// recording per interval is no load on a store that is down.
pub(super) const RETRY_MAX: Duration = Duration::from_secs(5);

/// What the uploader should do next.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Action {
    /// Store this spooled init or segment: always the oldest not yet stored.
    Put(JournalEntry),
    /// Leave out this spooled segment: its init was lost, it cannot be played.
    Drop(JournalEntry),
    /// Store the live (EVENT) playlist and the manifest.
    RefreshPlaylist,
    /// All stored and the writer ended: the VOD playlist (ENDLIST) and final manifest.
    Finalize,
    /// Nothing is due for this long (`None`: until the writer spools more or ends).
    Sleep(Option<Duration>),
    /// Finalized; the task ends.
    Done,
}

/// A storage step that can fail and is then retried before anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Put,
    Refresh,
    Finalize,
}

/// A spooled file waiting for upload.
#[derive(Debug, Clone)]
struct Spooled {
    entry: JournalEntry,
    /// When its segment closed (None for inits and for files resumed after a restart).
    closed_at: Option<Instant>,
}

/// A failed step and when to try it again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Retry {
    /// Consecutive failures so far.
    pub failures: u32,
    pub retry_in: Duration,
}

/// A put the plan has accounted for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Stored {
    pub closed_at: Option<Instant>,
    /// Failures before this success (storage is back when non-zero).
    pub failures_before: u32,
}

/// Exponential backoff: the base delay doubles from [`RETRY_MIN`] up to [`RETRY_MAX`]; each
/// wait is the base times a jitter factor so recordings do not retry in lockstep.
#[derive(Debug, Clone)]
struct Backoff {
    failures: u32,
    delay: Duration,
    retry_at: Option<Instant>,
    step: Option<Step>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            failures: 0,
            delay: RETRY_MIN,
            retry_at: None,
            step: None,
        }
    }
}

/// Status of a recording in `/api/v1/streams` (under `record`).
#[derive(Debug, Serialize)]
pub(super) struct RecordStatus<'a> {
    id: &'a str,
    state: &'static str,
    rung: &'a str,
    segments: u64,
    uploaded: u64,
    pending: usize,
    missing_segments: u64,
    gaps: u64,
    last_error: Option<&'a str>,
    /// The last spool write that failed (ENOSPC, EMFILE…): segments are missing since.
    spool_error: Option<&'a str>,
}

/// The upload state of one recording, shared by its spool writer (which adds) and its uploader
/// (which asks what to do and reports how it went).
#[derive(Debug)]
pub(super) struct UploadPlan {
    recording: Recording,
    /// Files in the spool waiting for upload, oldest first.
    pending: VecDeque<Spooled>,
    /// The writer is done: once `pending` is empty the recording can be finalized.
    ended: bool,
    /// The server stopped mid-recording (or the spool could not be written): finalize as such.
    interrupted: bool,
    uploaded: u64,
    last_refresh: Option<Instant>,
    /// Something was stored since the playlist was last refreshed.
    playlist_stale: bool,
    /// The last put left files waiting: uploads are catching up (after an outage).
    behind: bool,
    backoff: Backoff,
    last_error: Option<String>,
    spool_error: Option<String>,
    finalized: bool,
}

impl UploadPlan {
    /// A recording starting now.
    pub fn new(manifest: Manifest) -> UploadPlan {
        UploadPlan::with_recording(Recording::new(manifest))
    }

    /// A recording a previous run left in the spool: its writer is gone, so it has ended.
    pub fn resumed(
        recording: Recording,
        pending: impl IntoIterator<Item = JournalEntry>,
        interrupted: bool,
    ) -> UploadPlan {
        let mut plan = UploadPlan::with_recording(recording);
        plan.pending = pending
            .into_iter()
            .map(|entry| Spooled {
                entry,
                closed_at: None,
            })
            .collect();
        plan.ended = true;
        plan.interrupted = interrupted;
        plan
    }

    fn with_recording(recording: Recording) -> UploadPlan {
        UploadPlan {
            recording,
            pending: VecDeque::new(),
            ended: false,
            interrupted: false,
            uploaded: 0,
            last_refresh: None,
            playlist_stale: false,
            behind: false,
            backoff: Backoff::default(),
            last_error: None,
            spool_error: None,
            finalized: false,
        }
    }

    /// The live stream's audience so far (peak and total only grow).
    pub fn audience(&mut self, peak: u64, total: u64) {
        let m = &mut self.recording.manifest;
        m.peak_viewers = Some(peak.max(m.peak_viewers.unwrap_or(0)));
        m.total_viewers = Some(total.max(m.total_viewers.unwrap_or(0)));
    }

    pub fn manifest(&self) -> &Manifest {
        &self.recording.manifest
    }

    pub fn recording(&self) -> &Recording {
        &self.recording
    }

    /// Whether the recording holds no playable segment (then nothing is kept).
    pub fn is_empty(&self) -> bool {
        self.recording.manifest.segments == 0
    }

    // --- The writer's side.

    pub fn set_rung(&mut self, rung: String) {
        self.recording.manifest.rung = rung;
    }

    /// A file landed in the spool (journaled): it is part of the recording and waits for upload.
    pub fn spooled(&mut self, entry: JournalEntry, closed_at: Option<Instant>) {
        self.recording.add(entry.clone());
        self.pending.push_back(Spooled { entry, closed_at });
    }

    /// Segments that never reached the spool (a gap in the recording).
    pub fn note_missing(&mut self, count: u64) {
        self.recording.missing(count);
    }

    /// A spool write failed: shown in the status (no paths) until the recording ends.
    pub fn spool_failed(&mut self, error: String) {
        self.spool_error = Some(error);
    }

    /// The stream was ended by a failure, not by its publisher: the recording says why and ends
    /// `incomplete`. The first failure is kept (later ones follow from it); the text is bounded.
    pub fn stream_failed(&mut self, reason: &str) {
        self.recording
            .manifest
            .error
            .get_or_insert_with(|| bounded(reason, MAX_ERROR_LEN));
    }

    /// Sets the end time unless known; the header is saved before [`Self::writer_ended`].
    pub fn stamp_end(&mut self, now: DateTime<Utc>) {
        self.recording.manifest.ended_at.get_or_insert(now);
    }

    /// The writer is done and the spool header says so: finalizing may start.
    pub fn writer_ended(&mut self) {
        self.ended = true;
    }

    /// The spool could not be created: nothing more comes, and the recording is cut short.
    pub fn abandon(&mut self) {
        self.ended = true;
        self.interrupted = true;
    }

    // --- The uploader's side.

    /// The next step at `now`. A failed step is retried (after its backoff) before anything
    /// else, so files are stored strictly in order.
    pub fn next_action(&self, now: Instant) -> Action {
        if self.finalized {
            return Action::Done;
        }
        if let Some(at) = self.backoff.retry_at.filter(|at| *at > now) {
            return Action::Sleep(Some(at - now));
        }
        match self.backoff.step {
            Some(Step::Refresh) => return Action::RefreshPlaylist,
            Some(Step::Finalize) => return Action::Finalize,
            Some(Step::Put) | None => {}
        }
        if let Some(next) = self.pending.front() {
            if !self.recording.is_playable(&next.entry) {
                return Action::Drop(next.entry.clone());
            }
            // Behind (after an outage): refresh now and then, not after every segment. A file
            // that arrived while caught up goes up first, then the playlist that lists it.
            let refresh = self.behind && self.playlist_stale && self.refresh_due(now);
            if refresh && self.backoff.step.is_none() {
                return Action::RefreshPlaylist;
            }
            return Action::Put(next.entry.clone());
        }
        if self.ended {
            return Action::Finalize;
        }
        if !self.playlist_stale {
            return Action::Sleep(None);
        }
        // Caught up: refresh when due, or when the wait for the next segment outlasts it.
        match self.last_refresh {
            Some(last) if last + PLAYLIST_REFRESH > now => {
                Action::Sleep(Some(last + PLAYLIST_REFRESH - now))
            }
            _ => Action::RefreshPlaylist,
        }
    }

    fn refresh_due(&self, now: Instant) -> bool {
        self.last_refresh
            .is_none_or(|last| now.saturating_duration_since(last) >= PLAYLIST_REFRESH)
    }

    /// `entry` is stored. None if it is not the oldest pending file (then nothing changes).
    pub fn put_stored(&mut self, entry: &JournalEntry) -> Option<Stored> {
        if self.pending.front().map(|s| &s.entry) != Some(entry) {
            return None;
        }
        let spooled = self.pending.pop_front()?;
        self.recording.stored(entry);
        self.uploaded += u64::from(matches!(entry, JournalEntry::Segment(_)));
        self.playlist_stale = true;
        self.behind = !self.pending.is_empty();
        Some(Stored {
            closed_at: spooled.closed_at,
            failures_before: self.succeeded(),
        })
    }

    /// `entry`'s spool file is gone: the recording leaves it out (a segment, or an init with
    /// the segments that use it) and counts the segments lost. Returns that count.
    pub fn file_vanished(&mut self, entry: &JournalEntry) -> u64 {
        if self.pending.front().map(|s| &s.entry) != Some(entry) {
            return 0;
        }
        self.pending.pop_front();
        // Straight on to the next file: nothing new is stored, so no refresh is due for it.
        self.behind = false;
        self.recording.forget(entry)
    }

    /// `entry` (a segment of a lost init) is left out, like a vanished file.
    pub fn dropped(&mut self, entry: &JournalEntry) -> u64 {
        self.file_vanished(entry)
    }

    /// The live playlist and manifest are stored. Returns the failures before this success.
    pub fn playlist_stored(&mut self, now: Instant) -> u32 {
        self.last_refresh = Some(now);
        self.playlist_stale = false;
        self.succeeded()
    }

    /// Fixes the final state; idempotent, as a failed finalize is tried again.
    pub fn finalizing(&mut self, now: DateTime<Utc>) {
        let m = &mut self.recording.manifest;
        m.state = if self.interrupted {
            RecordingState::Interrupted
        } else if m.missing_segments > 0 || m.error.is_some() {
            // Never "finished" as if complete while segments are missing or a failure ended it.
            RecordingState::Incomplete
        } else {
            RecordingState::Finished
        };
        m.ended_at.get_or_insert(now);
    }

    /// The final playlist is stored and the spool removed. Returns the failures before.
    pub fn finalized(&mut self) -> u32 {
        self.finalized = true;
        self.succeeded()
    }

    /// `step` failed at `now`. `jitter` scales the wait (expected in 0.8..1.2; anything outside
    /// 0.5..=2 counts as 1) so that tests are deterministic and production spreads retries.
    pub fn failed(&mut self, step: Step, now: Instant, jitter: f64, error: String) -> Retry {
        let b = &mut self.backoff;
        let factor = if (0.5..=2.0).contains(&jitter) {
            jitter
        } else {
            1.0
        };
        let retry_in = b.delay.mul_f64(factor);
        b.failures += 1;
        b.retry_at = Some(now + retry_in);
        b.step = Some(step);
        b.delay = (b.delay * 2).min(RETRY_MAX);
        self.last_error = Some(error);
        Retry {
            failures: b.failures,
            retry_in,
        }
    }

    /// Storage works: the backoff starts over. Returns the failures before.
    fn succeeded(&mut self) -> u32 {
        let failures = self.backoff.failures;
        self.backoff = Backoff::default();
        self.last_error = None;
        failures
    }

    pub fn status(&self) -> RecordStatus<'_> {
        let m = &self.recording.manifest;
        RecordStatus {
            id: &m.id,
            state: if self.ended && self.pending.is_empty() {
                m.state.as_str()
            } else {
                "recording"
            },
            rung: &m.rung,
            segments: m.segments,
            uploaded: self.uploaded,
            pending: self.pending.len(),
            missing_segments: m.missing_segments,
            gaps: m.gaps,
            last_error: self.last_error.as_deref(),
            spool_error: self.spool_error.as_deref(),
        }
    }
}

/// Executes [`UploadPlan`]s against storage: the I/O half of uploading.
pub(super) struct Uploader {
    pub storage: Arc<Storage>,
    pub metrics: Arc<Metrics>,
    pub spool: Arc<Spool>,
    pub shutdown: CancellationToken,
}

impl Uploader {
    /// Runs one recording's plan. True once it is finalized; false when the server shuts down
    /// first (the spool keeps what is left for the next start).
    pub async fn run(&self, session: &SessionShared) -> bool {
        loop {
            let action = session.plan().next_action(Instant::now());
            match action {
                Action::Put(entry) => self.put(session, entry).await,
                Action::Drop(entry) => {
                    let name = entry.file_name();
                    // The lost init was logged when it vanished; its segments quietly follow.
                    tracing::debug!(file = %name, "segment of a lost init left out of the recording");
                    if let Err(e) = tokio::fs::remove_file(session.dir.join(&name)).await {
                        tracing::debug!(file = %name, error = %e, "cannot remove it");
                    }
                    self.spool.release(entry.bytes());
                    session.plan().dropped(&entry);
                }
                Action::RefreshPlaylist => match self.store_playlist(session).await {
                    Ok(()) => {
                        let failures = session.plan().playlist_stored(Instant::now());
                        log_recovery(failures);
                    }
                    Err(e) => self.failed(session, Step::Refresh, &e),
                },
                Action::Finalize => self.finalize(session).await,
                Action::Sleep(duration) => {
                    let timer = async {
                        match duration {
                            Some(d) => tokio::time::sleep(d).await,
                            None => std::future::pending().await,
                        }
                    };
                    // Woken early by the writer (more to upload, or the end): plan again.
                    tokio::select! {
                        _ = session.wake.notified() => {}
                        _ = timer => {}
                        _ = self.shutdown.cancelled() => return false,
                    }
                    continue;
                }
                Action::Done => return true,
            }
            session.report();
        }
    }

    async fn put(&self, session: &SessionShared, entry: JournalEntry) {
        let name = entry.file_name();
        let path = session.dir.join(&name);
        let data = match tokio::fs::read(&path).await {
            Ok(d) => Bytes::from(d),
            Err(e) => {
                // Nothing to upload: the recording leaves it out (a gap, counted).
                tracing::error!(file = %name, error = %e, "spooled file vanished; recording it as missing");
                self.spool.release(entry.bytes());
                session.plan().file_vanished(&entry);
                return;
            }
        };
        let key = format!("{}{}", session.plan().manifest().folder(), name);
        let content_type = match entry {
            JournalEntry::Init(_) => "video/mp4",
            JournalEntry::Segment(_) => "video/iso.segment",
        };
        if let Err(e) = self.storage.put(&key, data, content_type).await {
            self.failed(session, Step::Put, &e);
            return;
        }
        self.metrics.record_uploads.inc();
        let Some(stored) = session.plan().put_stored(&entry) else {
            return;
        };
        log_recovery(stored.failures_before);
        if let Some(closed_at) = stored.closed_at {
            let lag = closed_at.elapsed();
            self.metrics.record_upload_lag.observe(lag.as_secs_f64());
            tracing::debug!(file = %name, lag_ms = lag.as_millis() as u64, "segment stored");
        }
        if let Err(e) = tokio::fs::remove_file(&path).await {
            tracing::warn!(file = %name, error = %e, "cannot remove an uploaded spool file");
        }
        self.spool.release(entry.bytes());
    }

    /// Final playlist (ENDLIST) and manifest, then the spool folder goes.
    async fn finalize(&self, session: &SessionShared) {
        let (empty, folder) = {
            let mut plan = session.plan();
            plan.finalizing(Utc::now());
            (plan.is_empty(), plan.manifest().folder())
        };
        if empty {
            // Nothing playable (no media, or the publish ended within its first segment): no
            // recording is kept, and an init segment already stored goes too.
            if let Err(e) = self.storage.delete_prefix(&folder).await {
                tracing::warn!(error = %e, "cannot remove the empty recording's objects");
            }
        } else if let Err(e) = self.store_playlist(session).await {
            self.failed(session, Step::Finalize, &e);
            return;
        }
        spool::remove_session_dir(&session.dir).await;
        let failures = session.plan().finalized();
        log_recovery(failures);
    }

    /// Stores the playlist as it is now (EVENT while live, VOD once finalizing) and the manifest.
    async fn store_playlist(&self, session: &SessionShared) -> Result<(), StorageError> {
        // A snapshot under the lock (a pointer per 64 KiB of text and the open chunk: ~16 µs for
        // 24 h of segments); the text is put together outside it.
        let (folder, playlist, manifest) = {
            let plan = session.plan();
            (
                plan.manifest().folder(),
                plan.recording().playlist_snapshot(),
                plan.manifest().clone(),
            )
        };
        let playlist = playlist.render();
        let manifest = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
        self.storage
            .put(
                &format!("{folder}{PLAYLIST_NAME}"),
                Bytes::from(playlist),
                crate::hls::PLAYLIST_CONTENT_TYPE,
            )
            .await?;
        self.metrics.record_uploads.inc();
        self.storage
            .put(
                &format!("{folder}{MANIFEST_NAME}"),
                Bytes::from(manifest),
                "application/json",
            )
            .await?;
        self.metrics.record_uploads.inc();
        Ok(())
    }

    fn failed(&self, session: &SessionShared, step: Step, error: &StorageError) {
        self.metrics.record_upload_errors.inc();
        let jitter = rand::random_range(0.8..1.2);
        let retry = session
            .plan()
            .failed(step, Instant::now(), jitter, error.to_string());
        // The first failure and then one in ten, so an outage does not flood the log.
        if retry.failures == 1 || retry.failures.is_multiple_of(10) {
            tracing::warn!(error = %error, failures = retry.failures,
                retry_in_ms = retry.retry_in.as_millis() as u64,
                "recording upload failed; will retry");
        }
    }
}

/// A failure's text in a manifest is kept to this many bytes (a panic message can be long).
const MAX_ERROR_LEN: usize = 300;

/// `text` cut to at most `max` bytes, at a character boundary, without control characters.
fn bounded(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

fn log_recovery(failures: u32) {
    if failures > 0 {
        tracing::info!(failures, "recording storage reachable again; catching up");
    }
}

// The plan's tests outnumber its lines; they live in `uploader/tests.rs`.
#[cfg(test)]
mod tests;
