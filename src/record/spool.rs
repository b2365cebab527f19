//! The local spool: every tapped init and segment lands here first, as an fsync'd file plus a
//! journal line, before the uploader copies it to storage. A crash therefore loses at most the
//! segment being built; the next start finds the spooled sessions and resumes them.
//!
//! Layout: `<spool>/<user>/<session>/` holds `session.json` (the header: the manifest so far and
//! whether the publish ended), `journal.jsonl` (one line per spooled file) and the files. A
//! journal line is appended only once its file is durable, so every line names a whole file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;

use super::journal;
use super::session::{self, InitEntry, JournalEntry, Recording, SegmentEntry, SpoolHeader};
use super::storage::{self, StorageError};
use super::tap::{TapEvent, TapReceiver};
use super::throttle::{Throttle, LOG_EVERY};
use super::SessionShared;
use crate::hls::segmenter::{InitInfo, Segment};
use crate::metrics::Metrics;

const HEADER_FILE: &str = "session.json";
const JOURNAL_FILE: &str = "journal.jsonl";

#[derive(Debug, thiserror::Error)]
pub(super) enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unreadable spool header {path}: {source}")]
    Header {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The spool's root and its disk budget, shared by every recording.
pub(super) struct Spool {
    root: PathBuf,
    /// Bytes of spooled files not yet uploaded.
    bytes: AtomicU64,
    limit: u64,
    metrics: Arc<Metrics>,
    /// Wall-clock second of the last "spool full" error, to keep the log readable.
    last_full_log: AtomicU64,
}

impl Spool {
    pub fn new(root: PathBuf, limit: u64, metrics: Arc<Metrics>) -> Spool {
        Spool {
            root,
            bytes: AtomicU64::new(0),
            limit,
            metrics,
            last_full_log: AtomicU64::new(0),
        }
    }

    pub fn session_dir(&self, user: &str, session: &str) -> PathBuf {
        self.root.join(user).join(session)
    }

    /// Counts spooled bytes (written now, or left by a previous run).
    pub fn add(&self, bytes: u64) {
        let total = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.metrics.record_spool_bytes.set(total as i64);
    }

    /// Uncounts bytes whose file was uploaded or vanished.
    pub fn release(&self, bytes: u64) {
        let sub = |total: u64| Some(total.saturating_sub(bytes));
        // The closure never returns None, so the update always succeeds.
        let before = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, sub)
            .unwrap_or_else(|total| total);
        self.metrics
            .record_spool_bytes
            .set(before.saturating_sub(bytes) as i64);
    }

    fn fits(&self, bytes: u64) -> bool {
        self.bytes.load(Ordering::Relaxed).saturating_add(bytes) <= self.limit
    }

    fn full(&self) {
        self.metrics.record_spool_full.inc();
        let now = Utc::now().timestamp().max(0) as u64;
        let last = self.last_full_log.load(Ordering::Relaxed);
        if now >= last + 30 {
            self.last_full_log.store(now, Ordering::Relaxed);
            tracing::error!(
                spool_bytes = self.bytes.load(Ordering::Relaxed),
                limit_mib = self.limit >> 20,
                "recording spool full (storage not keeping up or down); segments are NOT being recorded"
            );
        }
    }

    /// The writer task of one recording: lands each tapped init and segment in the spool and
    /// hands it to the uploader's plan. Ends when the tap is dropped.
    pub async fn record(
        self: Arc<Self>,
        events: impl Into<TapReceiver>,
        session: Arc<SessionShared>,
    ) {
        let mut events = events.into();
        let mut w = WriterState {
            sequence: Sequencer::default(),
            errors: Throttle::new(LOG_EVERY),
            header_saved: false,
        };
        // A spool that cannot be written yet (ENOSPC, EMFILE) is retried with every event: the
        // recording starts (with a gap) once it can.
        self.ensure_header(&session, &mut w).await;
        while let Some(event) = events.recv().await {
            let missed = event.missed_before();
            if missed > 0 {
                // The tap could not queue these (writer behind): a gap in the recording.
                session.plan().note_missing(missed);
                w.sequence.gap();
                session.report();
            }
            match event {
                TapEvent::Init {
                    data, info, rung, ..
                } => {
                    session.plan().set_rung(rung);
                    w.sequence.new_init(data, &info);
                    self.store_init(&session, &mut w).await;
                }
                TapEvent::Segment {
                    segment, closed_at, ..
                } => {
                    self.store_segment(&session, &mut w, segment, closed_at)
                        .await;
                }
                TapEvent::Missed { .. } => update_header(&session).await,
            }
        }
        if !w.header_saved && save_header(&session, true).await.is_err() {
            tracing::error!(
                "nothing could be written to the recording spool; not recording this session"
            );
            session.plan().abandon();
            session.wake.notify_one();
            return;
        }
        // The stream ended (or its producer went away). The header is marked first: only then
        // may the uploader finalize (and remove the spool folder).
        session.plan().stamp_end(Utc::now());
        if let Err(e) = save_header(&session, true).await {
            tracing::warn!(error = %e, "cannot mark the spool as ended");
        }
        session.plan().writer_ended();
        session.wake.notify_one();
    }

    /// Stores the init waiting in `sequence`, if any. False if it is still not stored: then no
    /// segment may be written (it would name an init that does not exist).
    async fn store_init(&self, session: &SessionShared, w: &mut WriterState) -> bool {
        if !self.ensure_header(session, w).await {
            return false;
        }
        let Some((data, entry)) = w.sequence.pending_init() else {
            return true;
        };
        let dir = session.dir.clone();
        let spooled = entry.clone();
        if let Err(e) = off_thread(move || write_entry(&dir, &spooled, &data)).await {
            spool_failed(session, &entry.file_name(), &e, &mut w.errors);
            return false;
        }
        w.sequence.init_stored();
        self.add(entry.bytes());
        session.plan().spooled(entry, None);
        // The rung and codecs, for a recovery after a crash.
        update_header(session).await;
        session.wake.notify_one();
        true
    }

    async fn store_segment(
        &self,
        session: &SessionShared,
        w: &mut WriterState,
        segment: Segment,
        closed_at: std::time::Instant,
    ) {
        let init_ready = self.store_init(session, w).await;
        let sequence = &mut w.sequence;
        // Before the first init nothing is playable; such a segment is skipped.
        if init_ready && !sequence.has_init() {
            return;
        }
        if !init_ready {
            // Its init is not stored (retried before every segment): it cannot be played.
            session.plan().note_missing(1);
            sequence.gap();
            update_header(session).await;
            return;
        }
        if !self.fits(segment.data.len() as u64) {
            self.full();
            session.plan().note_missing(1);
            sequence.gap();
            // The missing count survives a crash.
            update_header(session).await;
            return;
        }
        let entry = sequence.segment(&segment);
        let dir = session.dir.clone();
        let spooled = entry.clone();
        let data = segment.data;
        if let Err(e) = off_thread(move || write_entry(&dir, &spooled, &data)).await {
            spool_failed(session, &entry.file_name(), &e, &mut w.errors);
            session.plan().note_missing(1);
            sequence.gap();
            update_header(session).await;
            return;
        }
        self.add(entry.bytes());
        self.metrics.record_segments.inc();
        session.plan().spooled(entry, Some(closed_at));
        session.wake.notify_one();
    }

    /// Writes the spool header unless it is there. False while it cannot be written: nothing
    /// can be spooled then (a recovery would not find the files).
    async fn ensure_header(&self, session: &SessionShared, w: &mut WriterState) -> bool {
        if w.header_saved {
            return true;
        }
        match save_header(session, false).await {
            Ok(()) => w.header_saved = true,
            Err(e) => spool_failed(session, HEADER_FILE, &e, &mut w.errors),
        }
        w.header_saved
    }

    /// Spool folders (`<spool>/<user>/<session>/`) holding a session header, sorted.
    pub fn find_sessions(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for user in std::fs::read_dir(&self.root)?.flatten() {
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
}

/// Numbers spooled files and carries a gap forward as a discontinuity on the next segment. An
/// init gets its version for good only once stored: until then it waits here, is retried
/// before each segment, and segments are not written (they would name a missing init).
#[derive(Debug, Default)]
struct Sequencer {
    next_init: u64,
    /// The latest stored init: the one new segments use. None while a newer one waits.
    current_init: Option<u64>,
    pending_init: Option<(Bytes, JournalEntry)>,
    next_segment: u64,
    gap: bool,
}

impl Sequencer {
    fn gap(&mut self) {
        self.gap = true;
    }

    fn has_init(&self) -> bool {
        self.current_init.is_some()
    }

    /// New codec parameters: segments wait for this init to be stored.
    fn new_init(&mut self, data: Bytes, info: &InitInfo) {
        let (width, height) = info.video.as_ref().map_or((0, 0), |v| (v.width, v.height));
        let entry = JournalEntry::Init(InitEntry {
            version: self.next_init,
            bytes: data.len() as u64,
            codecs: info.codecs(),
            width,
            height,
        });
        self.current_init = None;
        self.pending_init = Some((data, entry));
    }

    fn pending_init(&self) -> Option<(Bytes, JournalEntry)> {
        self.pending_init.clone()
    }

    /// The waiting init is stored: its version is taken and new segments use it.
    fn init_stored(&mut self) {
        if let Some((_, JournalEntry::Init(init))) = self.pending_init.take() {
            // New codec parameters: players must reset their decoder.
            self.gap |= init.version > 0;
            self.current_init = Some(init.version);
            self.next_init = init.version + 1;
        }
    }

    /// A segment of the latest stored init; call only once [`Self::has_init`].
    fn segment(&mut self, segment: &Segment) -> JournalEntry {
        let entry = JournalEntry::Segment(SegmentEntry {
            index: self.next_segment,
            duration: segment.duration,
            bytes: segment.data.len() as u64,
            init: self.current_init.unwrap_or(0),
            discontinuity: segment.discontinuity || self.gap,
            program_date_time: segment.program_date_time,
        });
        self.gap = false;
        self.next_segment += 1;
        entry
    }
}

/// One recording's spool writer: numbering, its log throttle, whether its header exists.
struct WriterState {
    sequence: Sequencer,
    errors: Throttle,
    header_saved: bool,
}

/// A spool write failed: the recording's state says so (without paths), the log too (throttled).
fn spool_failed(session: &SessionShared, file: &str, error: &StorageError, errors: &mut Throttle) {
    let cause = match error {
        StorageError::Local { source, .. } => source.to_string(),
        other => other.to_string(),
    };
    let what = if file.starts_with("seg-") {
        "segment not recorded"
    } else {
        "no segment is recorded until it is"
    };
    session
        .plan()
        .spool_failed(format!("cannot write {file} to the spool: {cause}"));
    session.report();
    if let Some(suppressed) = errors.allow(std::time::Instant::now()) {
        tracing::error!(file = %file, error = %error, suppressed,
            "cannot write to the recording spool; {what}");
    }
}

/// Rewrites the spool header (the manifest so far), off the async threads.
async fn save_header(session: &SessionShared, ended: bool) -> Result<(), StorageError> {
    let header = SpoolHeader {
        manifest: session.plan().manifest().clone(),
        ended,
    };
    let dir = session.dir.clone();
    off_thread(move || write_header(&dir, &header)).await
}

/// Best effort: a stale header only loses manifest details if the server also crashes.
async fn update_header(session: &SessionShared) {
    if let Err(e) = save_header(session, false).await {
        tracing::debug!(error = %e, "cannot update the spool header");
    }
}

async fn off_thread(
    f: impl FnOnce() -> Result<(), StorageError> + Send + 'static,
) -> Result<(), StorageError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StorageError::Local {
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

fn write_header(dir: &Path, header: &SpoolHeader) -> Result<(), StorageError> {
    let json = serde_json::to_vec_pretty(header).unwrap_or_default();
    storage::write_atomically(&dir.join(HEADER_FILE), &json)
}

/// The file first (fsync'd, renamed into place, directory synced), then its journal record.
fn write_entry(dir: &Path, entry: &JournalEntry, data: &Bytes) -> Result<(), StorageError> {
    let path = dir.join(entry.file_name());
    storage::write_atomically(&path, data)?;
    append_journal(dir, entry).inspect_err(|_| {
        // Unjournaled, the file would only hold space a full disk needs (a retry rewrites it).
        let _ = std::fs::remove_file(&path);
    })
}

fn append_journal(dir: &Path, entry: &JournalEntry) -> Result<(), StorageError> {
    let path = dir.join(JOURNAL_FILE);
    let local = |source| StorageError::Local {
        path: path.clone(),
        source,
    };
    let created = !path.exists();
    journal::append(&path, entry).map_err(local)?;
    if created {
        // A new journal's directory entry must survive a power loss too.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(local)?;
    }
    Ok(())
}

/// Reads a spooled session's header and journal (a torn last line is skipped).
pub(super) fn load_session(dir: &Path) -> Result<(SpoolHeader, Vec<JournalEntry>), LoadError> {
    let path = dir.join(HEADER_FILE);
    let header = std::fs::read(&path).map_err(|source| LoadError::Read {
        path: path.clone(),
        source,
    })?;
    let header: SpoolHeader =
        serde_json::from_slice(&header).map_err(|source| LoadError::Header { path, source })?;
    let path = dir.join(JOURNAL_FILE);
    let journal = match std::fs::read(&path) {
        Ok(bytes) => journal::parse(&bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(LoadError::Read { path, source }),
    };
    Ok((header, journal))
}

/// A spooled session ready to resume.
#[derive(Debug)]
pub(super) struct Recovered {
    /// Every journaled file: uploaded ones are no longer in the spool but stay in the recording.
    pub recording: Recording,
    /// Journaled files still in the spool, in order: these remain to be uploaded.
    pub pending: Vec<JournalEntry>,
    pub spooled_bytes: u64,
    /// The publish did not end cleanly (the server stopped mid-recording).
    pub interrupted: bool,
}

/// Rebuilds a session from its spool: uploaded files are gone from the folder, files written
/// just before a crash without their journal line are removed (they cannot be listed).
pub(super) fn recover(dir: &Path, header: SpoolHeader, entries: Vec<JournalEntry>) -> Recovered {
    let mut recording = Recording::from_journal(header.manifest, &entries);
    // Files already uploaded are in storage: listed in the playlist now, the rest as they go.
    let journaled: HashSet<String> = entries.iter().map(JournalEntry::file_name).collect();
    let mut pending = Vec::new();
    for entry in entries {
        if dir.join(entry.file_name()).exists() {
            pending.push(entry);
        } else {
            recording.stored(&entry);
        }
    }
    let spooled_bytes = pending.iter().map(JournalEntry::bytes).sum();
    if let Ok(files) = std::fs::read_dir(dir) {
        for file in files.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if session::is_recording_file(&name) && !journaled.contains(&name) {
                tracing::warn!(file = %name, "spooled file without a journal entry dropped");
                if let Err(e) = std::fs::remove_file(file.path()) {
                    tracing::warn!(file = %name, error = %e, "cannot remove it");
                }
            }
        }
    }
    if recording.manifest.ended_at.is_none() {
        // The last moment we know it was recording.
        let last = recording.last_segment_end();
        recording.manifest.ended_at = Some(last.unwrap_or(recording.manifest.started_at));
    }
    Recovered {
        recording,
        pending,
        spooled_bytes,
        interrupted: !header.ended,
    }
}

/// Removes a finalized session's spool folder, and its user's folder once empty.
pub(super) async fn remove_session_dir(dir: &Path) {
    let dir = dir.to_owned();
    let removed = tokio::task::spawn_blocking(move || {
        let result = std::fs::remove_dir_all(&dir);
        if let Some(parent) = dir.parent() {
            // Fails, harmlessly, while other sessions of the user remain.
            let _ = std::fs::remove_dir(parent);
        }
        result
    })
    .await;
    if let Ok(Err(e)) = removed {
        tracing::warn!(error = %e, "cannot remove the recording's spool folder");
    }
}

// Shared fixtures live there too (the uploader's tests use them).
#[cfg(test)]
pub(super) mod tests;
