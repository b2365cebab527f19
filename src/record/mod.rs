//! DVR: records one rung of every publish session to storage (local directory or S3) while it is
//! live, for VOD playback and download.
//!
//! Data flows one way: the HLS producer (passthrough task or ladder thread) hands the recorded
//! rung's init and media segments to a [`RecordTap`] ([`tap`]); a writer task lands each in the
//! local spool (fsync'd file + journal line, [`spool`]) and an uploader task copies the spool to
//! storage in order, with retries and backoff for as long as it takes ([`uploader`]: a sans-IO
//! plan and the task that runs it). Storage trouble therefore never reaches ingest or live HLS,
//! and a crash loses at most the segment being built: the next start finds the spool, uploads
//! what is left and finalizes the recording as `interrupted`. Finished recordings are listed,
//! deleted and expired by [`catalog`], and announced to a [`FinishedListener`].
//!
//! This file wires those parts together; [`Recorder`] is the one entry point.

mod catalog;
mod journal;
mod playlist;
pub mod session;
mod spool;
pub mod storage;
mod tap;
mod uploader;
pub mod vod;

/// Repeated recording errors are logged at most this often (with the count left out).
const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{Config, RecordConfig};
use crate::metrics::{Metrics, ReasonLabel};
use crate::stream::LiveStream;
use catalog::Catalog;
use session::{JournalEntry, Manifest, SpoolHeader};
use spool::Spool;
pub use storage::{Storage, StorageError};
pub use tap::RecordTap;
use uploader::{UploadPlan, Uploader};

/// For the fuzz targets (`fuzz/`) only: what start-up does with a spooled session's folder.
#[doc(hidden)]
pub mod fuzzing {
    use std::path::Path;

    use super::session::Recording;

    /// Loads and recovers the session in `dir` (`session.json`, `journal.jsonl`) as a restart
    /// does: the recording rebuilt from its journal, and whether it was interrupted.
    pub fn recover_spool(dir: &Path) -> Option<(Recording, bool)> {
        let (header, entries) = super::spool::load_session(dir).ok()?;
        let recovered = super::spool::recover(dir, header, entries);
        Some((recovered.recording, recovered.interrupted))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot prepare the recording spool {path}: {source}")]
    Spool {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Told of every recording finalized (stored with its manifest), e.g. to announce it.
pub type FinishedListener = Box<dyn Fn(&Manifest) + Send + Sync>;

/// Records every eligible publish session. One per server.
pub struct Recorder {
    config: RecordConfig,
    storage: Arc<Storage>,
    catalog: Catalog,
    spool: Arc<Spool>,
    uploader: Uploader,
    metrics: Arc<Metrics>,
    /// Recordings whose writer or uploader still runs, by id.
    active: Mutex<HashMap<String, Arc<SessionShared>>>,
    on_finished: Option<FinishedListener>,
    shutdown: CancellationToken,
    /// Notified whenever a recording is finalized (see [`Recorder::drain`]).
    finalized: Notify,
}

/// What [`Recorder::drain`] achieved by its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Recordings finalized (uploaded, ENDLIST, manifest) while draining.
    pub finalized: usize,
    /// Recordings still active at the deadline: their spool is durable and the next start
    /// resumes and finalizes them (`interrupted` if their writer had not ended).
    pub left_in_spool: usize,
}

/// What the writer and the uploader of one recording share.
struct SessionShared {
    plan: Mutex<UploadPlan>,
    /// The writer added a file or ended: the uploader plans again.
    wake: Notify,
    /// The session's spool folder.
    dir: PathBuf,
    span: tracing::Span,
    /// Where the recording's status is shown while the stream is live.
    stream: Weak<LiveStream>,
}

impl SessionShared {
    fn new(plan: UploadPlan, dir: PathBuf, span: tracing::Span, stream: Weak<LiveStream>) -> Self {
        SessionShared {
            plan: Mutex::new(plan),
            wake: Notify::new(),
            dir,
            span,
            stream,
        }
    }

    fn plan(&self) -> MutexGuard<'_, UploadPlan> {
        lock(&self.plan)
    }

    /// Shows the recording's progress in the stream's status (`/api/v1/streams`).
    fn report(&self) {
        let Some(stream) = self.stream.upgrade() else {
            return;
        };
        if let Some(audience) = stream.status_of("audience") {
            let count = |name: &str| audience.get(name).and_then(serde_json::Value::as_u64);
            if let (Some(peak), Some(total)) = (count("peak"), count("total")) {
                self.plan().audience(peak, total);
            }
        }
        let status = serde_json::to_value(self.plan().status());
        if let Ok(value) = status {
            stream.set_status("record", value);
        }
    }
}

impl Recorder {
    /// Opens storage, checks it (a failure is logged, not fatal: live HLS must keep working and
    /// the spool holds segments until storage works), resumes what a previous run left in the
    /// spool, and starts the retention sweeper.
    /// Starts recording (and resumes what a previous run left in the spool, which
    /// `on_finished` hears of too).
    pub async fn start(
        config: &Config,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        on_finished: Option<FinishedListener>,
    ) -> Result<Arc<Recorder>, RecordError> {
        let spool_root = config.spool_path();
        std::fs::create_dir_all(&spool_root).map_err(|source| RecordError::Spool {
            path: spool_root.clone(),
            source,
        })?;
        let storage = Arc::new(Storage::open(&config.record, config.local_recordings_path()).await);
        let spool_limit = config.record.spool_max_mib << 20;
        let spool = Arc::new(Spool::new(spool_root, spool_limit, metrics.clone()));
        let recorder = Arc::new(Recorder {
            config: config.record.clone(),
            catalog: Catalog::new(storage.clone()),
            uploader: Uploader {
                storage: storage.clone(),
                metrics: metrics.clone(),
                spool: spool.clone(),
                shutdown: shutdown.clone(),
            },
            storage,
            spool,
            metrics,
            active: Mutex::new(HashMap::new()),
            on_finished,
            shutdown,
            finalized: Notify::new(),
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
        let days = config.record.retention_days;
        if days > 0 {
            let active = recorder.clone();
            tokio::spawn(catalog::retention_loop(
                recorder.catalog.clone(),
                days,
                move |id| active.is_active(id),
                recorder.shutdown.clone(),
            ));
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

    fn lock_active(&self) -> MutexGuard<'_, HashMap<String, Arc<SessionShared>>> {
        lock(&self.active)
    }

    /// Graceful shutdown: waits until every active recording is finalized, or `deadline`.
    ///
    /// Call it once the live streams have ended (their producers flush the last segment and drop
    /// their taps, which ends each writer), and before cancelling the shutdown token given to
    /// [`Recorder::start`]: cancelling that token stops every uploader at once (the hard stop;
    /// what is left stays in the spool for the next start).
    pub async fn drain(&self, deadline: tokio::time::Instant) -> DrainReport {
        let before = self.lock_active().len();
        loop {
            // Registered before the check, so a finalize in between is not missed.
            let notified = self.finalized.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let left = self.lock_active().len();
            if left == 0 {
                break;
            }
            // Uploaders waiting for more media plan again (a retry keeps its backoff).
            for shared in self.lock_active().values() {
                shared.wake.notify_one();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        let left_in_spool = self.lock_active().len();
        let report = DrainReport {
            finalized: before.saturating_sub(left_in_spool),
            left_in_spool,
        };
        if left_in_spool > 0 {
            tracing::warn!(
                finalized = report.finalized,
                left_in_spool,
                "recordings not finalized by the shutdown deadline; the next start resumes them"
            );
        } else {
            tracing::info!(finalized = report.finalized, "recordings drained");
        }
        report
    }

    /// Stored recordings' manifests (newest first), optionally of one user.
    pub async fn list(&self, user: Option<&str>) -> Result<Vec<Manifest>, StorageError> {
        self.catalog.list(user).await
    }

    /// One recording's manifest.
    pub async fn manifest(&self, user: &str, session: &str) -> Result<Manifest, StorageError> {
        self.catalog.manifest(user, session).await
    }

    /// Deletes every object of a recording. Returns how many.
    pub async fn delete(&self, user: &str, session: &str) -> Result<usize, StorageError> {
        self.catalog.delete(user, session).await
    }

    /// Starts recording a new publish session, if `stream`'s user is recorded.
    pub fn tap(self: &Arc<Self>, stream: &Arc<LiveStream>) -> Option<RecordTap> {
        if !self.config.records(&stream.name) {
            return None;
        }
        let weak = Arc::downgrade(stream);
        let (tap, events) = RecordTap::new(
            self.config.rung.clone(),
            self.config.queue_max_mib << 20,
            weak.clone(),
        );
        let shared = self.new_session(&stream.name, weak.clone(), None);
        let span = shared.span.clone();
        let rollover = (self.config.max_duration_hours > 0).then(|| {
            let max = Duration::from_secs(self.config.max_duration_hours.saturating_mul(3600));
            let recorder = self.clone();
            let user = stream.name.clone();
            let next: spool::NextPart = Box::new(move |ended: &Manifest| {
                recorder.new_session(&user, weak.clone(), Some(ended.id.clone()))
            });
            (max, next)
        });
        tokio::spawn(
            self.spool
                .clone()
                .record_parts(events, shared, rollover)
                .instrument(span),
        );
        Some(tap)
    }

    /// A new recording (or the next part of one) with its uploader running.
    fn new_session(
        self: &Arc<Self>,
        user: &str,
        stream: Weak<LiveStream>,
        continues: Option<String>,
    ) -> Arc<SessionShared> {
        let started = Utc::now();
        let mut manifest = Manifest::new(user, &session::new_session_name(started), started);
        manifest.continues = continues;
        let span =
            tracing::info_span!(parent: None, "record", stream = %user, recording = %manifest.id);
        let dir = self.spool.session_dir(&manifest.user, &manifest.session);
        let id = manifest.id.clone();
        let shared = Arc::new(SessionShared::new(
            UploadPlan::new(manifest),
            dir,
            span.clone(),
            stream,
        ));
        tracing::info!(parent: &span, "recording");
        self.start_upload(id, shared.clone());
        shared
    }

    /// Resumes every recording a previous run left in the spool.
    fn recover(self: &Arc<Self>) {
        let sessions = match self.spool.find_sessions() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the recording spool");
                return;
            }
        };
        for dir in sessions {
            match spool::load_session(&dir) {
                Ok((header, entries)) => self.resume(dir, header, entries),
                Err(e) => {
                    tracing::error!(spool = %dir.display(), error = %e,
                        "unreadable recording spool left as is; inspect or remove it");
                }
            }
        }
    }

    fn resume(self: &Arc<Self>, dir: PathBuf, header: SpoolHeader, entries: Vec<JournalEntry>) {
        let m = &header.manifest;
        let span = tracing::info_span!(parent: None, "record", stream = %m.user, recording = %m.id);
        let recovered = span.in_scope(|| spool::recover(&dir, header, entries));
        tracing::info!(parent: &span, pending = recovered.pending.len(),
            spooled_bytes = recovered.spooled_bytes,
            state = if recovered.interrupted { "interrupted" } else { "ended" },
            failed = recovered.recording.manifest.error.is_some(),
            "resuming a recording left in the spool");
        self.spool.add(recovered.spooled_bytes);
        let id = recovered.recording.manifest.id.clone();
        let plan = UploadPlan::resumed(
            recovered.recording,
            recovered.pending,
            recovered.interrupted,
        );
        let shared = Arc::new(SessionShared::new(plan, dir, span, Weak::new()));
        self.start_upload(id, shared);
    }

    /// Registers the recording as active and starts its uploader.
    fn start_upload(self: &Arc<Self>, id: String, shared: Arc<SessionShared>) {
        self.lock_active().insert(id, shared.clone());
        self.metrics.record_active.inc();
        let recorder = self.clone();
        let span = shared.span.clone();
        tokio::spawn(
            async move {
                if recorder.uploader.run(&shared).await {
                    recorder.finished(&shared);
                }
            }
            .instrument(span),
        );
    }

    /// The recording is finalized: no longer active; counted, logged and announced.
    fn finished(&self, shared: &SessionShared) {
        let (manifest, empty) = {
            let plan = shared.plan();
            (plan.manifest().clone(), plan.is_empty())
        };
        self.lock_active().remove(&manifest.id);
        self.metrics.record_active.dec();
        self.finalized.notify_waiters();
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
        if let Some(listener) = &self.on_finished {
            listener(&manifest);
        }
    }
}

/// Locks, tolerating a poisoned mutex: the data stays consistent between statements.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (2 s at most) until the recording is no longer active.
    async fn wait_finalized(recorder: &Recorder, id: &str) {
        for _ in 0..200 {
            if !recorder.is_active(id) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{id} never finalized");
    }

    #[tokio::test]
    async fn a_recovered_spool_is_uploaded_and_finalized_as_interrupted() {
        let data = tempfile::tempdir().expect("tempdir");
        let config = Config {
            data_dir: data.path().to_owned(),
            ..Config::default()
        };
        // A session a killed server left: one init and one segment spooled, header not ended.
        let started = Utc::now();
        let manifest = Manifest::new("carol", "20260101T000000Z-00000a", started);
        let dir = config.spool_path().join("carol").join(&manifest.session);
        spool::tests::spool_files(&dir, manifest.clone(), false);

        let recorder = Recorder::start(
            &config,
            Arc::new(Metrics::new()),
            CancellationToken::new(),
            None,
        )
        .await
        .expect("start");
        assert!(recorder.is_active(&manifest.id));
        wait_finalized(&recorder, &manifest.id).await;
        let stored = recorder
            .manifest("carol", &manifest.session)
            .await
            .expect("manifest");
        assert_eq!(stored.state, session::RecordingState::Interrupted);
        assert_eq!(stored.segments, 2);
        let listed = recorder.list(None).await.expect("list");
        assert_eq!(listed.len(), 1);
        assert!(!dir.exists(), "spool folder left behind");
        assert_eq!(
            recorder
                .delete("carol", &manifest.session)
                .await
                .expect("delete"),
            5
        );
    }

    /// A stream aborted by a failure: the writer ends with the rendition (the producer still
    /// holds the tap), the spool header keeps the reason, and a recovery after a crash at that
    /// point finalizes the recording `incomplete` with it.
    #[tokio::test]
    async fn a_failure_that_ends_the_stream_is_spooled_and_survives_a_crash() {
        use crate::hls::segmenter::{InitInfo, Segment, SegmenterOutput};
        use crate::media::EndReason;
        const REASON: &str = "source picture 4096x4096 is larger than this server accepts";
        let data = tempfile::tempdir().expect("tempdir");
        let config = Config {
            data_dir: data.path().to_owned(),
            ..Config::default()
        };
        let hub = crate::stream::Hub::new();
        let publisher = hub.publish("erin");
        let metrics = Arc::new(Metrics::new());
        let spool = Arc::new(Spool::new(config.spool_path(), 1 << 30, metrics.clone()));
        let manifest = Manifest::new("erin", "20260101T000000Z-00000d", Utc::now());
        let dir = spool.session_dir("erin", &manifest.session);
        let shared = Arc::new(SessionShared::new(
            UploadPlan::new(manifest.clone()),
            dir.clone(),
            tracing::Span::none(),
            Weak::new(),
        ));
        let (mut tap, events) =
            RecordTap::new(String::new(), 1 << 20, Arc::downgrade(publisher.stream()));
        let info = InitInfo {
            video: None,
            audio: None,
        };
        tap.output(
            "source",
            &SegmenterOutput::Init {
                data: bytes::Bytes::from_static(b"init"),
                info,
            },
        );
        tap.output(
            "source",
            &SegmenterOutput::Segment(Segment {
                duration: 2.0,
                data: bytes::Bytes::from_static(b"media"),
                discontinuity: false,
                program_date_time: Utc::now(),
                independent: true,
                video_frames: 60,
                start_time: 0.0,
            }),
        );
        publisher.stream().abort(REASON);
        tap.output("source", &SegmenterOutput::End(EndReason::Stopped));
        // Returns although the tap is still alive: the recording ended with its rendition.
        spool.clone().record(events, shared).await;
        let (header, journal) = spool::load_session(&dir).expect("load");
        assert!(header.ended);
        assert_eq!(header.manifest.error.as_deref(), Some(REASON));
        assert_eq!(journal.len(), 2);
        drop(tap);

        // The server dies before uploading: the next start finalizes from the spool.
        let recorder = Recorder::start(&config, metrics, CancellationToken::new(), None)
            .await
            .expect("start");
        wait_finalized(&recorder, &manifest.id).await;
        let stored = recorder
            .manifest("erin", &manifest.session)
            .await
            .expect("manifest");
        assert_eq!(stored.state, session::RecordingState::Incomplete);
        assert_eq!(stored.error.as_deref(), Some(REASON));
        assert_eq!((stored.segments, stored.missing_segments), (1, 0));
    }

    #[tokio::test]
    async fn drain_waits_for_finalized_recordings_until_its_deadline() {
        let data = tempfile::tempdir().expect("tempdir");
        let config = Config {
            data_dir: data.path().to_owned(),
            ..Config::default()
        };
        let manifest = Manifest::new("carol", "20260101T000000Z-00000b", Utc::now());
        let dir = config.spool_path().join("carol").join(&manifest.session);
        spool::tests::spool_files(&dir, manifest.clone(), true);
        let recorder = Recorder::start(
            &config,
            Arc::new(Metrics::new()),
            CancellationToken::new(),
            None,
        )
        .await
        .expect("start");
        // A live recording whose stream never ends: its writer holds it open.
        let live = Manifest::new("dave", "20260101T000000Z-00000c", Utc::now());
        let live_dir = recorder.spool.session_dir("dave", &live.session);
        let shared = Arc::new(SessionShared::new(
            UploadPlan::new(live.clone()),
            live_dir,
            tracing::Span::none(),
            Weak::new(),
        ));
        recorder.start_upload(live.id.clone(), shared);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
        let report = recorder.drain(deadline).await;
        assert_eq!(
            report,
            DrainReport {
                finalized: 1,
                left_in_spool: 1
            }
        );
        assert!(!recorder.is_active(&manifest.id));
        assert!(recorder.is_active(&live.id));
        assert!(tokio::time::Instant::now() >= deadline);
    }
}
