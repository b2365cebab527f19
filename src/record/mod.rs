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
//! deleted and expired by [`catalog`], and announced by [`webhook`].
//!
//! This file wires those parts together; [`Recorder`] is the one entry point.

mod catalog;
pub mod session;
mod spool;
pub mod storage;
mod tap;
mod uploader;
pub mod vod;
mod webhook;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

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
use webhook::Webhook;

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
    webhook: Option<Webhook>,
    shutdown: CancellationToken,
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
            webhook: Webhook::new(&config.record.webhook_url),
            shutdown,
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
        let started = Utc::now();
        let manifest = Manifest::new(&stream.name, &session::new_session_name(started), started);
        let span = tracing::info_span!(parent: None, "record", stream = %stream.name, recording = %manifest.id);
        let dir = self.spool.session_dir(&manifest.user, &manifest.session);
        let id = manifest.id.clone();
        let shared = Arc::new(SessionShared::new(
            UploadPlan::new(manifest),
            dir,
            span.clone(),
            Arc::downgrade(stream),
        ));
        tracing::info!(parent: &span, "recording");
        let (tap, events) = RecordTap::new(self.config.rung.clone());
        tokio::spawn(
            self.spool
                .clone()
                .record(events, shared.clone())
                .instrument(span),
        );
        self.start_upload(id, shared);
        Some(tap)
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
            state = if recovered.interrupted { "interrupted" } else { "finished" },
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
        if let Some(webhook) = self.webhook.clone() {
            let shutdown = self.shutdown.clone();
            tokio::spawn(
                async move { webhook.deliver(&manifest, &shutdown).await }
                    .instrument(shared.span.clone()),
            );
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
    use std::time::Duration;

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

        let recorder = Recorder::start(&config, Arc::new(Metrics::new()), CancellationToken::new())
            .await
            .expect("start");
        assert!(recorder.is_active(&manifest.id));
        for _ in 0..200 {
            if !recorder.is_active(&manifest.id) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!recorder.is_active(&manifest.id), "never finalized");
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
}
