//! DVR: records one rung of every publish session to storage (local directory or S3) while it is
//! live, for VOD playback and download.
//!
//! Data flows one way: the HLS producer (passthrough task or ladder thread) hands the recorded
//! rung's init and media segments to a [`RecordTap`]; a writer task lands each in the local spool
//! (fsync'd file + journal line) and an uploader task copies the spool to storage in order, with
//! retries and backoff for as long as it takes. Storage trouble therefore never reaches ingest
//! or live HLS, and a crash loses at most the segment being built: the next start finds the
//! spool, uploads what is left and finalizes the recording as `interrupted`.

pub mod session;
pub mod storage;
pub mod vod;

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use serde::Serialize;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{Config, RecordConfig};
use crate::hls::segmenter::{InitInfo, Segment, SegmenterOutput};
use crate::metrics::{Metrics, ReasonLabel};
use crate::stream::LiveStream;
use session::{
    InitEntry, JournalEntry, Manifest, Recording, RecordingState, SegmentEntry, SpoolHeader,
    MANIFEST_NAME, PLAYLIST_NAME,
};
pub use storage::{Storage, StorageError};

const HEADER_FILE: &str = "session.json";
const JOURNAL_FILE: &str = "journal.jsonl";
/// Events a tap may queue ahead of its writer (each is one whole segment or init).
const TAP_QUEUE: usize = 64;
/// A live recording's playlist and manifest are refreshed at most this often (each upload
/// rewrites the whole playlist; segments themselves go up as soon as they close).
const PLAYLIST_REFRESH: Duration = Duration::from_secs(6);
const RETRY_MIN: Duration = Duration::from_millis(500);
/// Short enough that uploads resume within seconds of storage returning; one request per
/// recording per interval is no load on a store that is down.
const RETRY_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot prepare the recording spool {path}: {source}")]
    Spool {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Records every eligible publish session. One per server.
pub struct Recorder {
    config: RecordConfig,
    spool_root: PathBuf,
    storage: Arc<Storage>,
    metrics: Arc<Metrics>,
    spool_bytes: AtomicU64,
    spool_limit: u64,
    /// Recordings whose writer or uploader still runs, by id.
    active: Mutex<HashMap<String, Arc<SessionShared>>>,
    webhook: Option<reqwest::Client>,
    shutdown: CancellationToken,
    /// Wall-clock second of the last "spool full" error, to keep the log readable.
    last_full_log: AtomicU64,
}

/// What the writer and the uploader of one recording share.
struct SessionShared {
    recording: Mutex<SessionData>,
    wake: Notify,
    dir: PathBuf,
    span: tracing::Span,
}

struct SessionData {
    recording: Recording,
    /// Files in the spool waiting for upload, in order, with when their segment closed.
    pending: VecDeque<(JournalEntry, Option<Instant>)>,
    ended: bool,
    /// The server stopped mid-recording; finalize as interrupted.
    interrupted: bool,
    last_error: Option<String>,
    uploaded: u64,
    stream: Weak<LiveStream>,
}

/// Status of a recording in `/api/v1/streams` (under `record`).
#[derive(Debug, Serialize)]
struct RecordStatus<'a> {
    id: &'a str,
    state: &'static str,
    rung: &'a str,
    segments: u64,
    uploaded: u64,
    pending: usize,
    missing_segments: u64,
    last_error: Option<&'a str>,
}

impl Recorder {
    /// Opens storage, checks it (a failure is logged, not fatal: live HLS must keep working and
    /// the spool holds segments until storage works), resumes what a previous run left in the
    /// spool, and starts the retention sweeper.
    pub async fn start(
        config: &Config,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Recorder>, RecordError> {
        let spool_root = config.spool_path();
        std::fs::create_dir_all(&spool_root).map_err(|source| RecordError::Spool {
            path: spool_root.clone(),
            source,
        })?;
        let storage = Arc::new(Storage::open(&config.record, config.local_recordings_path()).await);
        let webhook = (!config.record.webhook_url.is_empty()).then(|| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default()
        });
        let recorder = Arc::new(Recorder {
            config: config.record.clone(),
            spool_root,
            storage,
            metrics,
            spool_bytes: AtomicU64::new(0),
            spool_limit: config.record.spool_max_mib << 20,
            active: Mutex::new(HashMap::new()),
            webhook,
            shutdown,
            last_full_log: AtomicU64::new(0),
        });
        if config.record.enabled {
            tracing::info!(storage = %recorder.storage.describe(), "recording publish sessions");
            // In the background: an unreachable store must not delay serving.
            let storage = recorder.storage.clone();
            tokio::spawn(async move {
                match storage.check().await {
                    Ok(()) => tracing::info!("recording storage is writable"),
                    Err(e) => tracing::error!(error = %e,
                        "recording storage check failed; segments stay in the spool and uploads retry until it works"),
                }
            });
        }
        recorder.recover();
        if config.record.retention_days > 0 {
            tokio::spawn(recorder.clone().retention_loop());
        }
        Ok(recorder)
    }

    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// Whether the recording's writer or uploader still runs (it cannot be deleted then).
    pub fn is_active(&self, id: &str) -> bool {
        self.lock_active().contains_key(id)
    }

    fn lock_active(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<SessionShared>>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts recording a new publish session, if `stream`'s user is recorded.
    pub fn tap(self: &Arc<Self>, stream: &Arc<LiveStream>) -> Option<RecordTap> {
        if !self.config.records(&stream.name) {
            return None;
        }
        let started = Utc::now();
        let manifest = Manifest::new(&stream.name, &session::new_session_name(started), started);
        let span = tracing::info_span!(parent: None, "record", stream = %stream.name, recording = %manifest.id);
        let dir = self.spool_root.join(&manifest.user).join(&manifest.session);
        let shared = Arc::new(SessionShared {
            recording: Mutex::new(SessionData {
                recording: Recording::new(manifest.clone()),
                pending: VecDeque::new(),
                ended: false,
                interrupted: false,
                last_error: None,
                uploaded: 0,
                stream: Arc::downgrade(stream),
            }),
            wake: Notify::new(),
            dir,
            span: span.clone(),
        });
        self.lock_active()
            .insert(manifest.id.clone(), shared.clone());
        self.metrics.record_active.inc();
        tracing::info!(parent: &span, "recording");
        let (tx, rx) = mpsc::channel(TAP_QUEUE);
        tokio::spawn(
            self.clone()
                .writer(rx, shared.clone())
                .instrument(span.clone()),
        );
        tokio::spawn(self.clone().uploader(shared).instrument(span));
        Some(RecordTap {
            tx,
            preferred: self.config.rung.clone(),
            selected: None,
            awaiting_init: false,
            missed: 0,
        })
    }

    /// Rewrites the spool header (the manifest so far), off the async threads.
    async fn save_header(shared: &SessionShared, ended: bool) -> Result<(), StorageError> {
        let header = SpoolHeader {
            manifest: lock(&shared.recording).recording.manifest.clone(),
            ended,
        };
        let dir = shared.dir.clone();
        tokio::task::spawn_blocking(move || write_header(&dir, &header))
            .await
            .unwrap_or_else(|e| {
                Err(StorageError::Local {
                    path: PathBuf::new(),
                    source: std::io::Error::other(e.to_string()),
                })
            })
    }

    /// Lands each tapped init and segment in the spool and queues it for upload.
    async fn writer(self: Arc<Self>, mut rx: mpsc::Receiver<TapEvent>, shared: Arc<SessionShared>) {
        if let Err(e) = Self::save_header(&shared, false).await {
            tracing::error!(error = %e, "cannot create the recording spool; not recording this session");
            // Drain so the tap never sees a closed channel as back-pressure; nothing is kept.
            while rx.recv().await.is_some() {}
            let mut data = lock(&shared.recording);
            data.ended = true;
            data.interrupted = true;
            drop(data);
            shared.wake.notify_one();
            return;
        }
        let mut next_init = 0u64;
        let mut next_segment = 0u64;
        let mut pending_discontinuity = false;
        while let Some(event) = rx.recv().await {
            let missed = event.missed_before();
            if missed > 0 {
                // The tap could not queue these (writer behind): a gap in the recording.
                self.note_missing(&shared, missed);
                pending_discontinuity = true;
            }
            let (entry, data, closed_at) = match event {
                TapEvent::Init {
                    data, info, rung, ..
                } => {
                    lock(&shared.recording).recording.manifest.rung = rung;
                    let (width, height) =
                        info.video.as_ref().map_or((0, 0), |v| (v.width, v.height));
                    let entry = JournalEntry::Init(InitEntry {
                        version: next_init,
                        bytes: data.len() as u64,
                        codecs: info.codecs(),
                        width,
                        height,
                    });
                    pending_discontinuity |= next_init > 0;
                    next_init += 1;
                    (entry, data, None)
                }
                TapEvent::Segment {
                    segment, closed_at, ..
                } => {
                    let size = segment.data.len() as u64;
                    if next_init == 0 {
                        continue;
                    }
                    if self.spool_bytes.load(Ordering::Relaxed) + size > self.spool_limit {
                        self.spool_full(&shared);
                        pending_discontinuity = true;
                        let _ = Self::save_header(&shared, false).await;
                        continue;
                    }
                    let entry = JournalEntry::Segment(SegmentEntry {
                        index: next_segment,
                        duration: segment.duration,
                        bytes: size,
                        init: next_init - 1,
                        discontinuity: segment.discontinuity || pending_discontinuity,
                        program_date_time: segment.program_date_time,
                    });
                    pending_discontinuity = false;
                    next_segment += 1;
                    (entry, segment.data, Some(closed_at))
                }
                TapEvent::Missed { .. } => {
                    let _ = Self::save_header(&shared, false).await;
                    continue;
                }
            };
            let dir = shared.dir.clone();
            let line = serde_json::to_string(&entry).unwrap_or_default();
            let name = entry.file_name();
            let written = tokio::task::spawn_blocking(move || {
                storage::write_atomically(&dir.join(&name), &data)?;
                append_journal(&dir, &line)
            })
            .await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot write to the recording spool; segment not recorded");
                    self.note_missing(&shared, 1);
                    pending_discontinuity = true;
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "spool writer failed");
                    continue;
                }
            }
            let is_init = matches!(entry, JournalEntry::Init(_));
            self.spool_bytes.fetch_add(entry.bytes(), Ordering::Relaxed);
            self.metrics
                .record_spool_bytes
                .set(self.spool_bytes.load(Ordering::Relaxed) as i64);
            if !is_init {
                self.metrics.record_segments.inc();
            }
            {
                let mut data = lock(&shared.recording);
                data.recording.add(entry.clone());
                data.pending.push_back((entry, closed_at));
            }
            if is_init {
                // The rung and codecs, for a recovery after a crash.
                let _ = Self::save_header(&shared, false).await;
            }
            shared.wake.notify_one();
        }
        // The stream ended (or its producer went away). The header is marked first: only then
        // may the uploader finalize (and remove the spool folder).
        lock(&shared.recording)
            .recording
            .manifest
            .ended_at
            .get_or_insert_with(Utc::now);
        if let Err(e) = Self::save_header(&shared, true).await {
            tracing::warn!(error = %e, "cannot mark the spool as ended");
        }
        lock(&shared.recording).ended = true;
        shared.wake.notify_one();
    }

    fn spool_full(&self, shared: &SessionShared) {
        self.metrics.record_spool_full.inc();
        self.note_missing(shared, 1);
        let now = Utc::now().timestamp() as u64;
        let last = self.last_full_log.load(Ordering::Relaxed);
        if now >= last + 30 {
            self.last_full_log.store(now, Ordering::Relaxed);
            tracing::error!(
                spool_bytes = self.spool_bytes.load(Ordering::Relaxed),
                limit_mib = self.config.spool_max_mib,
                "recording spool full (storage not keeping up or down); segments are NOT being recorded"
            );
        }
    }

    fn note_missing(&self, shared: &SessionShared, count: u64) {
        lock(&shared.recording).recording.manifest.missing_segments += count;
    }

    /// Copies the spool to storage in order; finalizes once the writer ended and all is stored.
    async fn uploader(self: Arc<Self>, shared: Arc<SessionShared>) {
        let mut last_playlist: Option<Instant> = None;
        let mut playlist_stale = false;
        loop {
            let (next, ended) = {
                let data = lock(&shared.recording);
                (data.pending.front().cloned(), data.ended)
            };
            let Some((entry, closed_at)) = next else {
                if ended {
                    self.finalize(&shared).await;
                    return;
                }
                // Caught up. The live playlist is refreshed at most every PLAYLIST_REFRESH: when
                // it is due now, or when the wait for the next segment outlasts the interval.
                let refresh_in = match (playlist_stale, last_playlist) {
                    (false, _) => None,
                    (true, None) => Some(Duration::ZERO),
                    (true, Some(t)) => Some(PLAYLIST_REFRESH.saturating_sub(t.elapsed())),
                };
                if refresh_in == Some(Duration::ZERO) {
                    if self.store_playlist(&shared).await.is_err() {
                        return;
                    }
                    last_playlist = Some(Instant::now());
                    playlist_stale = false;
                    continue;
                }
                let refresh = async {
                    match refresh_in {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = shared.wake.notified() => {}
                    _ = refresh => {
                        if self.store_playlist(&shared).await.is_err() {
                            return;
                        }
                        last_playlist = Some(Instant::now());
                        playlist_stale = false;
                    }
                    _ = self.shutdown.cancelled() => return,
                }
                continue;
            };
            let name = entry.file_name();
            let path = shared.dir.join(&name);
            let key = format!(
                "{}{}",
                lock(&shared.recording).recording.manifest.folder(),
                name
            );
            let content_type = match entry {
                JournalEntry::Init(_) => "video/mp4",
                JournalEntry::Segment(_) => "video/iso.segment",
            };
            let data = match tokio::fs::read(&path).await {
                Ok(d) => Bytes::from(d),
                Err(e) => {
                    // Nothing to upload: the recording leaves it out (a gap, counted).
                    tracing::error!(file = %name, error = %e, "spooled file vanished; recording it as missing");
                    let remaining = self
                        .spool_bytes
                        .fetch_sub(entry.bytes(), Ordering::Relaxed)
                        .saturating_sub(entry.bytes());
                    self.metrics.record_spool_bytes.set(remaining as i64);
                    let mut data = lock(&shared.recording);
                    data.pending.pop_front();
                    let lost = data.recording.forget(&entry);
                    data.recording.manifest.missing_segments += lost;
                    continue;
                }
            };
            if self
                .store_with_retry(&shared, &key, data, content_type)
                .await
                .is_err()
            {
                return;
            }
            if let Some(closed_at) = closed_at {
                let lag = closed_at.elapsed();
                self.metrics.record_upload_lag.observe(lag.as_secs_f64());
                tracing::debug!(file = %name, lag_ms = lag.as_millis() as u64, "segment stored");
            }
            if let Err(e) = tokio::fs::remove_file(&path).await {
                tracing::warn!(file = %name, error = %e, "cannot remove an uploaded spool file");
            }
            let remaining = self
                .spool_bytes
                .fetch_sub(entry.bytes(), Ordering::Relaxed)
                .saturating_sub(entry.bytes());
            self.metrics.record_spool_bytes.set(remaining as i64);
            let caught_up = {
                let mut data = lock(&shared.recording);
                data.pending.pop_front();
                data.uploaded += u64::from(matches!(entry, JournalEntry::Segment(_)));
                data.pending.is_empty()
            };
            playlist_stale = true;
            let due = last_playlist.is_none_or(|t| t.elapsed() >= PLAYLIST_REFRESH);
            if due && !caught_up {
                // Behind (after an outage): refresh now and then, not after every segment.
                if self.store_playlist(&shared).await.is_err() {
                    return;
                }
                last_playlist = Some(Instant::now());
                playlist_stale = false;
            }
            self.report(&shared);
        }
    }

    /// Uploads the current playlist and manifest. Err only on shutdown.
    async fn store_playlist(&self, shared: &SessionShared) -> Result<(), ()> {
        let (folder, playlist, manifest) = {
            let data = lock(&shared.recording);
            (
                data.recording.manifest.folder(),
                data.recording.playlist(),
                serde_json::to_vec_pretty(&data.recording.manifest).unwrap_or_default(),
            )
        };
        self.store_with_retry(
            shared,
            &format!("{folder}{PLAYLIST_NAME}"),
            Bytes::from(playlist),
            crate::hls::PLAYLIST_CONTENT_TYPE,
        )
        .await?;
        self.store_with_retry(
            shared,
            &format!("{folder}{MANIFEST_NAME}"),
            Bytes::from(manifest),
            "application/json",
        )
        .await
    }

    /// Stores one object, retrying with exponential backoff and jitter until it succeeds.
    /// Err only when the server shuts down (the spool keeps the file for the next start).
    async fn store_with_retry(
        &self,
        shared: &SessionShared,
        key: &str,
        data: Bytes,
        content_type: &str,
    ) -> Result<(), ()> {
        let mut delay = RETRY_MIN;
        let mut failures = 0u32;
        loop {
            match self.storage.put(key, data.clone(), content_type).await {
                Ok(()) => {
                    self.metrics.record_uploads.inc();
                    if failures > 0 {
                        tracing::info!(failures, "recording storage reachable again; catching up");
                        lock(&shared.recording).last_error = None;
                        self.report(shared);
                    }
                    return Ok(());
                }
                Err(e) => {
                    self.metrics.record_upload_errors.inc();
                    failures += 1;
                    // The first failure and then one in ten, so an outage does not flood the log.
                    if failures == 1 || failures.is_multiple_of(10) {
                        tracing::warn!(error = %e, failures, retry_in_ms = delay.as_millis() as u64,
                            "recording upload failed; will retry");
                    }
                    lock(&shared.recording).last_error = Some(e.to_string());
                    self.report(shared);
                }
            }
            let jitter = rand::random_range(0.8..1.2);
            tokio::select! {
                _ = tokio::time::sleep(delay.mul_f64(jitter)) => {}
                _ = self.shutdown.cancelled() => return Err(()),
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    /// Final playlist (ENDLIST) and manifest, spool removed, webhook sent.
    async fn finalize(&self, shared: &SessionShared) {
        {
            let mut data = lock(&shared.recording);
            let state = if data.interrupted {
                RecordingState::Interrupted
            } else {
                RecordingState::Finished
            };
            let m = &mut data.recording.manifest;
            m.state = state;
            m.ended_at.get_or_insert_with(Utc::now);
        }
        let empty = lock(&shared.recording).recording.segments.is_empty();
        if empty {
            // Nothing playable (no media, or the publish ended within its first segment): no
            // recording is kept, and an init segment already stored goes too.
            let folder = lock(&shared.recording).recording.manifest.folder();
            if let Err(e) = self.storage.delete_prefix(&folder).await {
                tracing::warn!(error = %e, "cannot remove the empty recording's objects");
            }
        } else if self.store_playlist(shared).await.is_err() {
            return;
        }
        let manifest = lock(&shared.recording).recording.manifest.clone();
        let dir = shared.dir.clone();
        let removed = tokio::task::spawn_blocking(move || {
            let result = std::fs::remove_dir_all(&dir);
            if let Some(parent) = dir.parent() {
                // Only removes the user's folder when it is empty.
                let _ = std::fs::remove_dir(parent);
            }
            result
        })
        .await;
        if let Ok(Err(e)) = removed {
            tracing::warn!(error = %e, "cannot remove the recording's spool folder");
        }
        self.report(shared);
        self.lock_active().remove(&manifest.id);
        self.metrics.record_active.dec();
        let outcome = if empty {
            "empty"
        } else {
            manifest.state.as_str()
        };
        self.metrics
            .record_finished
            .get_or_create(&ReasonLabel {
                reason: outcome.to_string(),
            })
            .inc();
        if empty {
            tracing::info!("the publish ended before a segment was recorded; nothing kept");
            return;
        }
        tracing::info!(
            state = manifest.state.as_str(),
            segments = manifest.segments,
            duration_secs = manifest.duration_secs,
            bytes = manifest.bytes,
            missing = manifest.missing_segments,
            "recording stored"
        );
        if let Some(client) = &self.webhook {
            let client = client.clone();
            let url = self.config.webhook_url.clone();
            let shutdown = self.shutdown.clone();
            tokio::spawn(
                send_webhook(client, url, manifest, shutdown).instrument(shared.span.clone()),
            );
        }
    }

    fn report(&self, shared: &SessionShared) {
        let data = lock(&shared.recording);
        let Some(stream) = data.stream.upgrade() else {
            return;
        };
        let m = &data.recording.manifest;
        let status = RecordStatus {
            id: &m.id,
            state: if data.ended && data.pending.is_empty() {
                m.state.as_str()
            } else {
                "recording"
            },
            rung: &m.rung,
            segments: m.segments,
            uploaded: data.uploaded,
            pending: data.pending.len(),
            missing_segments: m.missing_segments,
            last_error: data.last_error.as_deref(),
        };
        if let Ok(value) = serde_json::to_value(&status) {
            stream.set_status("record", value);
        }
    }

    /// Resumes every recording a previous run left in the spool.
    fn recover(self: &Arc<Self>) {
        let sessions = match find_spooled_sessions(&self.spool_root) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the recording spool");
                return;
            }
        };
        for dir in sessions {
            match load_spooled_session(&dir) {
                Ok((header, entries)) => self.resume(dir, header, entries),
                Err(e) => {
                    tracing::error!(spool = %dir.display(), error = %e,
                        "unreadable recording spool left as is; inspect or remove it");
                }
            }
        }
    }

    fn resume(self: &Arc<Self>, dir: PathBuf, header: SpoolHeader, entries: Vec<JournalEntry>) {
        let mut recording = Recording::from_journal(header.manifest, &entries);
        let span = tracing::info_span!(parent: None, "record", stream = %recording.manifest.user, recording = %recording.manifest.id);
        let mut pending = VecDeque::new();
        let mut spooled = 0u64;
        for entry in entries {
            if dir.join(entry.file_name()).exists() {
                spooled += entry.bytes();
                pending.push_back((entry, None));
            }
        }
        // Files written just before a crash, without their journal line, cannot be listed.
        if let Ok(files) = std::fs::read_dir(&dir) {
            let journaled: std::collections::HashSet<String> = recording
                .inits
                .iter()
                .map(|i| session::init_name(i.version))
                .chain(
                    recording
                        .segments
                        .iter()
                        .map(|s| session::segment_name(s.index)),
                )
                .collect();
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if session::is_recording_file(&name) && !journaled.contains(&name) {
                    tracing::warn!(parent: &span, file = %name, "spooled file without a journal entry dropped");
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
        let interrupted = !header.ended;
        if recording.manifest.ended_at.is_none() {
            // The last moment we know it was recording.
            let last = recording.segments.last().map(|s| {
                s.program_date_time + chrono::Duration::milliseconds((s.duration * 1000.0) as i64)
            });
            recording.manifest.ended_at = Some(last.unwrap_or(recording.manifest.started_at));
        }
        tracing::info!(parent: &span, pending = pending.len(), spooled_bytes = spooled,
            state = if interrupted { "interrupted" } else { "finished" },
            "resuming a recording left in the spool");
        self.spool_bytes.fetch_add(spooled, Ordering::Relaxed);
        self.metrics
            .record_spool_bytes
            .set(self.spool_bytes.load(Ordering::Relaxed) as i64);
        let id = recording.manifest.id.clone();
        let shared = Arc::new(SessionShared {
            recording: Mutex::new(SessionData {
                recording,
                pending,
                ended: true,
                interrupted,
                last_error: None,
                uploaded: 0,
                stream: Weak::new(),
            }),
            wake: Notify::new(),
            dir,
            span: span.clone(),
        });
        self.lock_active().insert(id, shared.clone());
        self.metrics.record_active.inc();
        tokio::spawn(self.clone().uploader(shared).instrument(span));
    }

    /// Lists stored recordings' manifests (newest first), optionally of one user. Walks the
    /// folders (`<user>/<session>/`) rather than every object; an unreadable manifest is skipped
    /// with a warning rather than failing the whole list.
    pub async fn list(&self, user: Option<&str>) -> Result<Vec<Manifest>, StorageError> {
        let users = match user {
            Some(u) => vec![format!("{u}/")],
            None => self.storage.list_folders("").await?,
        };
        let mut keys = Vec::new();
        for user in users {
            for session in self.storage.list_folders(&user).await? {
                keys.push(format!("{session}{MANIFEST_NAME}"));
            }
        }
        let mut manifests = Vec::with_capacity(keys.len());
        // A few requests in flight at once: listing hundreds of recordings on S3 stays quick.
        for chunk in keys.chunks(16) {
            let mut set = tokio::task::JoinSet::new();
            for key in chunk {
                let storage = self.storage.clone();
                let key = key.clone();
                set.spawn(async move { (storage.get(&key).await, key) });
            }
            while let Some(result) = set.join_next().await {
                match result {
                    Ok((Ok(data), key)) => match serde_json::from_slice::<Manifest>(&data) {
                        Ok(m)
                            if session::parse_recording_id(&m.id)
                                == Some((&m.user, &m.session)) =>
                        {
                            manifests.push(m)
                        }
                        Ok(_) => tracing::warn!(%key, "manifest with a foreign id skipped"),
                        Err(e) => {
                            tracing::warn!(%key, error = %e, "unreadable recording manifest skipped")
                        }
                    },
                    // A folder without a manifest yet (a recording's first seconds).
                    Ok((Err(StorageError::NotFound(_)), _)) => {}
                    Ok((Err(e), key)) => {
                        tracing::warn!(%key, error = %e, "recording manifest unreadable; skipped")
                    }
                    Err(e) => tracing::warn!(error = %e, "manifest read task failed"),
                }
            }
        }
        manifests.sort_by_key(|m| std::cmp::Reverse(m.started_at));
        Ok(manifests)
    }

    /// One recording's manifest.
    pub async fn manifest(&self, user: &str, session: &str) -> Result<Manifest, StorageError> {
        let data = self
            .storage
            .get(&format!("{user}/{session}/{MANIFEST_NAME}"))
            .await?;
        serde_json::from_slice(&data).map_err(|e| StorageError::S3 {
            op: "read manifest",
            key: format!("{user}/{session}/{MANIFEST_NAME}"),
            message: e.to_string(),
        })
    }

    /// Deletes every object of a recording. Returns how many.
    pub async fn delete(&self, user: &str, session: &str) -> Result<usize, StorageError> {
        self.storage
            .delete_prefix(&format!("{user}/{session}/"))
            .await
    }

    async fn retention_loop(self: Arc<Self>) {
        let keep = chrono::Duration::days(self.config.retention_days as i64);
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.shutdown.cancelled() => return,
            }
            let cutoff = Utc::now() - keep;
            let manifests = match self.list(None).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "retention: cannot list recordings");
                    continue;
                }
            };
            for m in manifests {
                let old = m.state != RecordingState::Recording
                    && m.ended_at.unwrap_or(m.started_at) < cutoff;
                if old && !self.is_active(&m.id) {
                    match self.delete(&m.user, &m.session).await {
                        Ok(n) => {
                            tracing::info!(recording = %m.id, objects = n, days = self.config.retention_days,
                            "retention: recording deleted")
                        }
                        Err(e) => {
                            tracing::warn!(recording = %m.id, error = %e, "retention: delete failed")
                        }
                    }
                }
            }
        }
    }
}

/// POSTs the finished recording's manifest, retrying a few times. Only the URL's host is logged
/// (its path or query may carry a token).
async fn send_webhook(
    client: reqwest::Client,
    url: String,
    manifest: Manifest,
    shutdown: CancellationToken,
) {
    let host = reqwest::Url::parse(&url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let mut delay = Duration::from_secs(1);
    for attempt in 1..=5 {
        match client.post(&url).json(&manifest).send().await {
            Ok(r) if r.status().is_success() => {
                tracing::info!(%host, "webhook delivered");
                return;
            }
            Ok(r) => {
                tracing::warn!(%host, status = r.status().as_u16(), attempt, "webhook refused")
            }
            Err(e) => tracing::warn!(%host, error = %e.without_url(), attempt, "webhook failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
        delay *= 2;
    }
    tracing::error!(%host, "webhook gave up after 5 attempts");
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn write_header(dir: &Path, header: &SpoolHeader) -> Result<(), StorageError> {
    let json = serde_json::to_vec_pretty(header).unwrap_or_default();
    storage::write_atomically(&dir.join(HEADER_FILE), &json)
}

fn append_journal(dir: &Path, line: &str) -> Result<(), StorageError> {
    let path = dir.join(JOURNAL_FILE);
    let local = |source| StorageError::Local {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(local)?;
    file.write_all(format!("{line}\n").as_bytes())
        .map_err(local)?;
    file.sync_data().map_err(local)
}

/// Spool folders (`<spool>/<user>/<session>/`) holding a session header.
fn find_spooled_sessions(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for user in std::fs::read_dir(root)?.flatten() {
        let Ok(sessions) = std::fs::read_dir(user.path()) else {
            continue;
        };
        for session in sessions.flatten() {
            if session.path().join(HEADER_FILE).is_file() {
                out.push(session.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

fn load_spooled_session(dir: &Path) -> Result<(SpoolHeader, Vec<JournalEntry>), String> {
    let header = std::fs::read(dir.join(HEADER_FILE)).map_err(|e| e.to_string())?;
    let header: SpoolHeader = serde_json::from_slice(&header).map_err(|e| e.to_string())?;
    let journal = match std::fs::read_to_string(dir.join(JOURNAL_FILE)) {
        Ok(text) => session::parse_journal(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.to_string()),
    };
    Ok((header, journal))
}

enum TapEvent {
    Init {
        data: Bytes,
        info: InitInfo,
        rung: String,
        missed_before: u64,
    },
    Segment {
        segment: Segment,
        closed_at: Instant,
        missed_before: u64,
    },
    /// Segments the tap could not queue before the session ended.
    Missed { missed_before: u64 },
}

impl TapEvent {
    /// Segments lost before this event because the writer's queue was full.
    fn missed_before(&self) -> u64 {
        match self {
            TapEvent::Init { missed_before, .. }
            | TapEvent::Segment { missed_before, .. }
            | TapEvent::Missed { missed_before } => *missed_before,
        }
    }
}

/// The recording end of one publish session, held by its HLS producer. Picks the recorded
/// rung, and hands that rung's output to the recorder without ever blocking the producer.
pub struct RecordTap {
    tx: mpsc::Sender<TapEvent>,
    preferred: String,
    selected: Option<String>,
    /// An init was lost to a full queue: its segments cannot be played, so skip to the next.
    awaiting_init: bool,
    /// Segments lost since the last event that got through; reported with the next one.
    missed: u64,
}

impl RecordTap {
    /// The ladder's rungs (name, width, height): record the configured one, else the tallest.
    pub fn ladder_planned(&mut self, rungs: &[(String, u32, u32)]) {
        if self.selected.is_some() {
            return;
        }
        self.selected = rungs
            .iter()
            .find(|(name, _, _)| *name == self.preferred)
            .or_else(|| rungs.iter().max_by_key(|(_, _, h)| *h))
            .map(|(name, _, _)| name.clone());
    }

    /// One segmenter output of `rung`.
    pub fn output(&mut self, rung: &str, output: &SegmenterOutput) {
        if self.selected.is_none() && matches!(output, SegmenterOutput::Init { .. }) {
            // No ladder plan (passthrough, audio-only): the first rendition is the recording.
            self.selected = Some(rung.to_string());
        }
        if self.selected.as_deref() != Some(rung) {
            return;
        }
        let missed_before = self.missed;
        let event = match output {
            SegmenterOutput::Init { data, info } => TapEvent::Init {
                data: data.clone(),
                info: info.clone(),
                rung: rung.to_string(),
                missed_before,
            },
            SegmenterOutput::Segment(s) => {
                if self.awaiting_init {
                    self.missed += 1;
                    return;
                }
                TapEvent::Segment {
                    segment: s.clone(),
                    closed_at: Instant::now(),
                    missed_before,
                }
            }
            // Dropping the tap (the producer finishing) ends the recording.
            SegmenterOutput::End(_) => return,
        };
        let is_init = matches!(event, TapEvent::Init { .. });
        match self.tx.try_send(event) {
            Ok(()) => {
                self.missed = 0;
                self.awaiting_init &= !is_init;
            }
            Err(_) => {
                tracing::error!(
                    "recording writer is behind (spool disk too slow?); segment not recorded"
                );
                self.awaiting_init |= is_init;
                self.missed += u64::from(!is_init);
            }
        }
    }

    pub fn recorded_rung(&self) -> Option<&str> {
        self.selected.as_deref()
    }
}

/// The recorder takes the recorded rendition's segments from the HLS renditions stage.
impl crate::hls::SegmentSubscriber for RecordTap {
    fn planned(&mut self, renditions: &[crate::stream::RenditionInfo]) {
        let sizes: Vec<(String, u32, u32)> = renditions
            .iter()
            .map(|r| (r.name.clone(), r.width, r.height))
            .collect();
        self.ladder_planned(&sizes);
    }

    fn output(&mut self, rendition: &str, output: &SegmenterOutput) {
        RecordTap::output(self, rendition, output);
    }
}

impl Drop for RecordTap {
    fn drop(&mut self) {
        if self.missed > 0 {
            let _ = self.tx.try_send(TapEvent::Missed {
                missed_before: self.missed,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap(preferred: &str) -> (RecordTap, mpsc::Receiver<TapEvent>) {
        let (tx, rx) = mpsc::channel(4);
        let tap = RecordTap {
            tx,
            preferred: preferred.to_string(),
            selected: None,
            awaiting_init: false,
            missed: 0,
        };
        (tap, rx)
    }

    fn rungs() -> Vec<(String, u32, u32)> {
        vec![
            ("360p".into(), 640, 360),
            ("720p".into(), 1280, 720),
            ("480p".into(), 854, 480),
        ]
    }

    fn init() -> SegmenterOutput {
        SegmenterOutput::Init {
            data: Bytes::from_static(b"init"),
            info: InitInfo {
                video: None,
                audio: None,
            },
        }
    }

    #[test]
    fn records_the_configured_rung_else_the_tallest() {
        let (mut t, _rx) = tap("");
        t.ladder_planned(&rungs());
        assert_eq!(t.recorded_rung(), Some("720p"));
        let (mut t, _rx) = tap("480p");
        t.ladder_planned(&rungs());
        assert_eq!(t.recorded_rung(), Some("480p"));
        // A configured rung this source does not get (never upscaled): the tallest it has.
        let (mut t, _rx) = tap("1080p");
        t.ladder_planned(&rungs());
        assert_eq!(t.recorded_rung(), Some("720p"));
    }

    #[test]
    fn without_a_plan_the_first_rendition_is_recorded_and_others_ignored() {
        let (mut t, mut rx) = tap("");
        t.output("source", &init());
        t.output("other", &init());
        assert_eq!(t.recorded_rung(), Some("source"));
        assert!(matches!(rx.try_recv(), Ok(TapEvent::Init { rung, .. }) if rung == "source"));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_full_queue_never_blocks_and_skips_to_the_next_init() {
        let (mut t, mut rx) = tap("");
        let segment = || {
            SegmenterOutput::Segment(Segment {
                duration: 2.0,
                data: Bytes::from_static(b"seg"),
                discontinuity: false,
                program_date_time: Utc::now(),
                independent: true,
                video_frames: 60,
                start_time: 0.0,
            })
        };
        for _ in 0..4 {
            t.output("source", &init());
        }
        // The queue (4) is full: this init is lost, so its segments cannot be recorded either.
        t.output("source", &init());
        assert!(t.awaiting_init);
        while rx.try_recv().is_ok() {}
        t.output("source", &segment());
        t.output("source", &segment());
        assert!(rx.try_recv().is_err());
        // The next init gets through and carries the count of the segments lost before it.
        t.output("source", &init());
        t.output("source", &segment());
        assert!(matches!(
            rx.try_recv(),
            Ok(TapEvent::Init {
                missed_before: 2,
                ..
            })
        ));
        assert!(matches!(
            rx.try_recv(),
            Ok(TapEvent::Segment {
                missed_before: 0,
                ..
            })
        ));
    }
}
