//! The local spool: every tapped init and segment lands here first, as an fsync'd file plus a
//! journal line, before the uploader copies it to storage. A crash therefore loses at most the
//! segment being built; the next start finds the spooled sessions and resumes them.
//!
//! Layout: `<spool>/<user>/<session>/` holds `session.json` (the header: the manifest so far and
//! whether the publish ended), `journal.jsonl` (one line per spooled file) and the files. A
//! journal line is appended only once its file is durable, so every line names a whole file.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use tokio::sync::mpsc;

use super::session::{self, InitEntry, JournalEntry, Recording, SegmentEntry, SpoolHeader};
use super::storage::{self, StorageError};
use super::tap::TapEvent;
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
        mut events: mpsc::Receiver<TapEvent>,
        session: Arc<SessionShared>,
    ) {
        if let Err(e) = save_header(&session, false).await {
            tracing::error!(error = %e, "cannot create the recording spool; not recording this session");
            // Drain so the tap never sees a closed channel as back-pressure; nothing is kept.
            while events.recv().await.is_some() {}
            session.plan().abandon();
            session.wake.notify_one();
            return;
        }
        let mut sequence = Sequencer::default();
        while let Some(event) = events.recv().await {
            let missed = event.missed_before();
            if missed > 0 {
                // The tap could not queue these (writer behind): a gap in the recording.
                session.plan().note_missing(missed);
                sequence.gap();
            }
            let (entry, data, closed_at) = match event {
                TapEvent::Init {
                    data, info, rung, ..
                } => {
                    session.plan().set_rung(rung);
                    (sequence.init(data.len() as u64, &info), data, None)
                }
                TapEvent::Segment {
                    segment, closed_at, ..
                } => {
                    // Before the first init nothing is playable; such a segment is skipped.
                    if !sequence.has_init() {
                        continue;
                    }
                    if !self.fits(segment.data.len() as u64) {
                        self.full();
                        session.plan().note_missing(1);
                        sequence.gap();
                        // The missing count survives a crash.
                        update_header(&session).await;
                        continue;
                    }
                    let entry = sequence.segment(&segment);
                    (entry, segment.data, Some(closed_at))
                }
                TapEvent::Missed { .. } => {
                    update_header(&session).await;
                    continue;
                }
            };
            let dir = session.dir.clone();
            let spooled = entry.clone();
            if let Err(e) = off_thread(move || write_entry(&dir, &spooled, &data)).await {
                tracing::error!(error = %e, "cannot write to the recording spool; segment not recorded");
                session.plan().note_missing(1);
                sequence.gap();
                continue;
            }
            self.add(entry.bytes());
            let is_init = matches!(entry, JournalEntry::Init(_));
            if !is_init {
                self.metrics.record_segments.inc();
            }
            session.plan().spooled(entry, closed_at);
            if is_init {
                // The rung and codecs, for a recovery after a crash.
                update_header(&session).await;
            }
            session.wake.notify_one();
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

/// Numbers spooled files and carries a gap forward as a discontinuity on the next segment.
#[derive(Debug, Default)]
struct Sequencer {
    next_init: u64,
    next_segment: u64,
    gap: bool,
}

impl Sequencer {
    fn gap(&mut self) {
        self.gap = true;
    }

    fn has_init(&self) -> bool {
        self.next_init > 0
    }

    fn init(&mut self, bytes: u64, info: &InitInfo) -> JournalEntry {
        let (width, height) = info.video.as_ref().map_or((0, 0), |v| (v.width, v.height));
        let entry = JournalEntry::Init(InitEntry {
            version: self.next_init,
            bytes,
            codecs: info.codecs(),
            width,
            height,
        });
        // New codec parameters: players must reset their decoder.
        self.gap |= self.next_init > 0;
        self.next_init += 1;
        entry
    }

    /// A segment of the latest init; call only once [`Self::has_init`].
    fn segment(&mut self, segment: &Segment) -> JournalEntry {
        let entry = JournalEntry::Segment(SegmentEntry {
            index: self.next_segment,
            duration: segment.duration,
            bytes: segment.data.len() as u64,
            init: self.next_init.saturating_sub(1),
            discontinuity: segment.discontinuity || self.gap,
            program_date_time: segment.program_date_time,
        });
        self.gap = false;
        self.next_segment += 1;
        entry
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

/// The file first (fsync'd, renamed into place, directory synced), then its journal line.
fn write_entry(dir: &Path, entry: &JournalEntry, data: &Bytes) -> Result<(), StorageError> {
    storage::write_atomically(&dir.join(entry.file_name()), data)?;
    let line = serde_json::to_string(entry).unwrap_or_default();
    append_journal(dir, &line)
}

fn append_journal(dir: &Path, line: &str) -> Result<(), StorageError> {
    let path = dir.join(JOURNAL_FILE);
    let local = |source| StorageError::Local {
        path: path.clone(),
        source,
    };
    let created = !path.exists();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(local)?;
    file.write_all(format!("{line}\n").as_bytes())
        .map_err(local)?;
    file.sync_data().map_err(local)?;
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
    let journal = match std::fs::read_to_string(&path) {
        Ok(text) => session::parse_journal(&text),
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
    let journaled: HashSet<String> = entries.iter().map(JournalEntry::file_name).collect();
    let pending: Vec<JournalEntry> = entries
        .into_iter()
        .filter(|entry| dir.join(entry.file_name()).exists())
        .collect();
    let spooled_bytes = pending
        .iter()
        .map(JournalEntry::bytes)
        .fold(0, u64::saturating_add);
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
        // Checked: a damaged journal's duration must not panic the start-up that reads it.
        let last = recording.segments.last().map(|s| {
            chrono::Duration::try_milliseconds((s.duration * 1000.0) as i64)
                .and_then(|d| s.program_date_time.checked_add_signed(d))
                .unwrap_or(s.program_date_time)
        });
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
