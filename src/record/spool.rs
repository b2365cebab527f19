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
use super::session::{self, JournalEntry, Recording, SpoolHeader};
use super::storage::{self, StorageError};
use super::SessionShared;
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

/// Rewrites the spool header (the manifest so far), off the async threads.
pub(super) async fn save_header(session: &SessionShared, ended: bool) -> Result<(), StorageError> {
    let header = SpoolHeader {
        manifest: session.plan().manifest().clone(),
        ended,
    };
    let dir = session.dir.clone();
    off_thread(move || write_header(&dir, &header)).await
}

/// Best effort: a stale header only loses manifest details if the server also crashes.
pub(super) async fn update_header(session: &SessionShared) {
    if let Err(e) = save_header(session, false).await {
        tracing::debug!(error = %e, "cannot update the spool header");
    }
}

pub(super) async fn off_thread(
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
pub(super) fn write_entry(
    dir: &Path,
    entry: &JournalEntry,
    data: &Bytes,
) -> Result<(), StorageError> {
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
        } else if recording.is_playable(&entry) {
            recording.stored(&entry);
        } else {
            recording.forget(&entry);
        }
    }
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

mod writer;
pub(super) use writer::NextPart;
#[cfg(test)]
use writer::Sequencer;

// Shared fixtures live there too (the uploader's tests use them).
#[cfg(test)]
pub(super) mod tests;
