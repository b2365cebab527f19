//! The stored recordings: listing them (from their manifests), reading one, deleting one, and
//! the retention sweep that deletes those older than the configured limit.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::session::{self, Manifest, RecordingState, MANIFEST_NAME};
use super::storage::{Storage, StorageError};

/// Manifest reads in flight at once: listing hundreds of recordings on S3 stays quick.
const LIST_CONCURRENCY: usize = 16;
const RETENTION_SWEEP: Duration = Duration::from_secs(3600);

#[derive(Clone)]
pub(super) struct Catalog {
    storage: Arc<Storage>,
}

impl Catalog {
    pub fn new(storage: Arc<Storage>) -> Catalog {
        Catalog { storage }
    }

    /// Stored recordings' manifests (newest first), optionally of one user. Walks the folders
    /// (`<user>/<session>/`) rather than every object; an unreadable manifest is skipped with a
    /// warning rather than failing the whole list.
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
        for chunk in keys.chunks(LIST_CONCURRENCY) {
            let mut set = tokio::task::JoinSet::new();
            for key in chunk {
                let storage = self.storage.clone();
                let key = key.clone();
                set.spawn(async move { (storage.get(&key).await, key) });
            }
            while let Some(result) = set.join_next().await {
                match result {
                    Ok((Ok(data), key)) => match serde_json::from_slice::<Manifest>(&data) {
                        // The id is what the API and VOD routes trust: it must name its folder.
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
        let key = format!("{user}/{session}/{MANIFEST_NAME}");
        let data = self.storage.get(&key).await?;
        serde_json::from_slice(&data).map_err(|e| StorageError::S3 {
            op: "read manifest",
            key,
            message: e.to_string(),
        })
    }

    /// Deletes every object of a recording. Returns how many.
    pub async fn delete(&self, user: &str, session: &str) -> Result<usize, StorageError> {
        self.storage
            .delete_prefix(&format!("{user}/{session}/"))
            .await
    }

    /// One retention pass: deletes the recordings [`expired`] at `cutoff` whose upload is not
    /// running. Returns how many were deleted.
    pub async fn sweep(
        &self,
        cutoff: DateTime<Utc>,
        is_active: &impl Fn(&str) -> bool,
    ) -> Result<usize, StorageError> {
        let mut deleted = 0;
        for m in self.list(None).await? {
            if !expired(&m, cutoff) || is_active(&m.id) {
                continue;
            }
            match self.delete(&m.user, &m.session).await {
                Ok(n) => {
                    deleted += 1;
                    tracing::info!(recording = %m.id, objects = n, "retention: recording deleted");
                }
                Err(e) => {
                    tracing::warn!(recording = %m.id, error = %e, "retention: delete failed")
                }
            }
        }
        Ok(deleted)
    }
}

/// Whether retention may delete `m`: it is no longer recording and ended before `cutoff`.
fn expired(m: &Manifest, cutoff: DateTime<Utc>) -> bool {
    m.state != RecordingState::Recording && m.ended_at.unwrap_or(m.started_at) < cutoff
}

/// Sweeps hourly (the first sweep right away) until shutdown, deleting recordings that ended
/// more than `days` ago.
pub(super) async fn retention_loop(
    catalog: Catalog,
    days: u64,
    is_active: impl Fn(&str) -> bool,
    shutdown: CancellationToken,
) {
    let keep = i64::try_from(days)
        .ok()
        .and_then(chrono::TimeDelta::try_days);
    let mut tick = tokio::time::interval(RETENTION_SWEEP);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        // A limit reaching back before time began: nothing is that old.
        let Some(cutoff) = keep.and_then(|keep| Utc::now().checked_sub_signed(keep)) else {
            continue;
        };
        match catalog.sweep(cutoff, &is_active).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, days, "retention: old recordings deleted"),
            Err(e) => tracing::warn!(error = %e, "retention: cannot list recordings"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RecordConfig;
    use bytes::Bytes;

    async fn catalog(root: &std::path::Path) -> Catalog {
        Catalog::new(Arc::new(
            Storage::open(&RecordConfig::default(), root.to_owned()).await,
        ))
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("valid time")
    }

    fn manifest(user: &str, session: &str, started: i64, state: RecordingState) -> Manifest {
        let mut m = Manifest::new(user, session, at(started));
        m.state = state;
        m.ended_at = (state != RecordingState::Recording).then(|| at(started + 60));
        m
    }

    async fn store(catalog: &Catalog, m: &Manifest) {
        let json = serde_json::to_vec(m).expect("json");
        let folder = m.folder();
        let storage = &catalog.storage;
        for (name, data) in [
            (MANIFEST_NAME, Bytes::from(json)),
            ("seg-000000.m4s", Bytes::from_static(b"seg")),
        ] {
            storage
                .put(&format!("{folder}{name}"), data, "application/octet-stream")
                .await
                .expect("put");
        }
    }

    #[tokio::test]
    async fn lists_newest_first_skipping_what_is_not_a_recording() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = catalog(dir.path()).await;
        let older = manifest("alice", "s-1", 0, RecordingState::Finished);
        let newer = manifest("alice", "s-2", 100, RecordingState::Interrupted);
        let other = manifest("bob", "s-3", 50, RecordingState::Recording);
        for m in [&older, &newer, &other] {
            store(&c, m).await;
        }
        // A manifest claiming another recording's id, one that does not parse, and a folder
        // without a manifest yet: none is listed, none fails the list.
        let mut foreign = manifest("alice", "s-4", 10, RecordingState::Finished);
        foreign.id = "bob.s-3".into();
        store(&c, &foreign).await;
        let put = |key: &'static str, data: &'static [u8]| {
            c.storage.put(key, Bytes::from_static(data), "text/plain")
        };
        put("alice/s-5/manifest.json", b"{not json")
            .await
            .expect("put");
        put("alice/s-6/seg-000000.m4s", b"seg").await.expect("put");

        let all = c.list(None).await.expect("list");
        let ids: Vec<&str> = all.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["alice.s-2", "bob.s-3", "alice.s-1"]);
        let alice = c.list(Some("alice")).await.expect("list");
        assert_eq!(alice, [newer.clone(), older]);
        assert_eq!(c.manifest("alice", "s-2").await.expect("manifest"), newer);
        assert!(matches!(
            c.manifest("alice", "s-9").await,
            Err(StorageError::NotFound(_))
        ));
        assert!(c.manifest("alice", "s-5").await.is_err());
    }

    #[tokio::test]
    async fn an_empty_store_lists_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = catalog(&dir.path().join("recordings")).await;
        assert!(c.list(Some("nobody")).await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn delete_removes_every_object_of_one_recording() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = catalog(dir.path()).await;
        let keep = manifest("alice", "s-1", 0, RecordingState::Finished);
        let gone = manifest("alice", "s-2", 10, RecordingState::Finished);
        store(&c, &keep).await;
        store(&c, &gone).await;
        assert_eq!(c.delete("alice", "s-2").await.expect("delete"), 2);
        assert_eq!(c.list(None).await.expect("list"), [keep]);
    }

    #[test]
    fn only_ended_recordings_past_the_cutoff_expire() {
        let cutoff = at(1000);
        assert!(expired(
            &manifest("a", "s", 0, RecordingState::Finished),
            cutoff
        ));
        assert!(expired(
            &manifest("a", "s", 0, RecordingState::Interrupted),
            cutoff
        ));
        // Still recording, however old.
        assert!(!expired(
            &manifest("a", "s", 0, RecordingState::Recording),
            cutoff
        ));
        // Ended after the cutoff although started before it.
        assert!(!expired(
            &manifest("a", "s", 950, RecordingState::Finished),
            cutoff
        ));
        // No end time: its start counts.
        let mut m = manifest("a", "s", 0, RecordingState::Finished);
        m.ended_at = None;
        assert!(expired(&m, cutoff));
    }

    #[tokio::test]
    async fn the_sweep_spares_recent_live_and_active_recordings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = catalog(dir.path()).await;
        let old = manifest("alice", "s-1", 0, RecordingState::Finished);
        let old_active = manifest("alice", "s-2", 10, RecordingState::Interrupted);
        let live = manifest("alice", "s-3", 20, RecordingState::Recording);
        let recent = manifest("bob", "s-4", 5000, RecordingState::Finished);
        for m in [&old, &old_active, &live, &recent] {
            store(&c, m).await;
        }
        let active = |id: &str| id == "alice.s-2";
        assert_eq!(c.sweep(at(1000), &active).await.expect("sweep"), 1);
        let left: Vec<String> = c
            .list(None)
            .await
            .expect("list")
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(left, ["bob.s-4", "alice.s-3", "alice.s-2"]);
    }
}
