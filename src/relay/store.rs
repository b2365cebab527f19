//! Relay targets at rest: one JSON file (`<data_dir>/relays.json`) shared by the server, the
//! admin API and the `livegate relays` CLI. Target URLs hold the platforms' stream keys, so the
//! file is mode 0600 and written atomically under a lock ([`JsonFile`]).
//!
//! Older versions kept the targets inside the key store's file (its `relays` array). The first
//! time this store is used and its file does not exist yet, it imports them from there, writes
//! its own file, and only then removes the array from the keys file: a crash in between leaves
//! the targets in both places, never in neither. Whether the user of a target has a stream key is
//! the caller's check (the key store is another concern; this module does not import it).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::target::RelayTarget;
use crate::config::Config;
use crate::util::{valid_user_name, JsonFile, JsonFileError, JsonFileLock};

pub const MAX_RELAYS_PER_USER: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum RelayStoreError {
    #[error("user name {0:?} is not valid: use 1-64 of a-z, 0-9, '_' and '-'")]
    InvalidUser(String),
    #[error("user {user:?} has no relay {id:?}")]
    RelayNotFound { user: String, id: String },
    #[error("user {0:?} already has {MAX_RELAYS_PER_USER} relay targets")]
    TooManyRelays(String),
    #[error("user {0:?} already relays to that URL")]
    DuplicateRelay(String),
    #[error("relay store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("relay store {path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot import the relay targets of {path}: {message}")]
    Import { path: PathBuf, message: String },
    #[error("relay targets unavailable: {0}")]
    Unavailable(String),
}

impl From<JsonFileError> for RelayStoreError {
    fn from(e: JsonFileError) -> Self {
        match e {
            JsonFileError::Io { path, source } => RelayStoreError::Io { path, source },
            JsonFileError::Corrupt { path, message } => RelayStoreError::Corrupt { path, message },
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoreFile {
    #[serde(default)]
    relays: Vec<RelayTarget>,
}

/// The part of an old keys file this store reads: nothing else of it is interpreted here.
#[derive(Deserialize)]
struct LegacyKeysFile {
    #[serde(default)]
    relays: Vec<RelayTarget>,
}

/// The embedded relay-target store.
#[derive(Debug, Clone)]
pub struct RelayStore {
    file: JsonFile,
    /// The keys file to import targets from while this store's file does not exist.
    legacy: Option<JsonFile>,
}

impl RelayStore {
    pub fn new(path: impl Into<PathBuf>, legacy_keys_file: Option<PathBuf>) -> Self {
        RelayStore {
            file: JsonFile::new(path),
            legacy: legacy_keys_file.map(JsonFile::new),
        }
    }

    /// The store of a configuration: `<data_dir>/relays.json`, importing from its keys file.
    pub fn for_config(config: &Config) -> Self {
        RelayStore::new(
            config.data_dir.join("relays.json"),
            Some(config.keys_path()),
        )
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Imports the targets of an old keys file if this store has no file yet (else nothing).
    /// Every operation does this on its own; calling it at startup only makes it happen early.
    pub fn migrate(&self) -> Result<(), RelayStoreError> {
        if self.path().exists() {
            return Ok(());
        }
        let lock = self.file.lock()?;
        let (store, imported) = self.load(&lock)?;
        if imported {
            self.save(&lock, &store, imported)?;
        }
        Ok(())
    }

    /// This store's contents, or the import when its file does not exist (`true`).
    fn load(&self, _lock: &JsonFileLock) -> Result<(StoreFile, bool), RelayStoreError> {
        if let Some(store) = self.file.read()? {
            return Ok((store, false));
        }
        let Some(legacy) = &self.legacy else {
            return Ok((StoreFile::default(), true));
        };
        let import_error = |message: String| RelayStoreError::Import {
            path: legacy.path().to_path_buf(),
            message,
        };
        let relays = match legacy.read::<LegacyKeysFile>() {
            Ok(found) => found.map(|f| f.relays).unwrap_or_default(),
            Err(e) => return Err(import_error(e.to_string())),
        };
        if !relays.is_empty() {
            tracing::info!(count = relays.len(), from = %legacy.path().display(),
                to = %self.path().display(), "relay targets imported from the key store");
        }
        Ok((StoreFile { relays }, true))
    }

    fn save(
        &self,
        lock: &JsonFileLock,
        store: &StoreFile,
        imported: bool,
    ) -> Result<(), RelayStoreError> {
        self.file.write(lock, store)?;
        if imported {
            if let Err(e) = self.drop_legacy() {
                // The import stands (this file exists now); the old copy only stays behind.
                tracing::warn!(error = %e, "relay targets imported, but the old copy in the keys file could not be removed");
            }
        }
        Ok(())
    }

    /// Removes the `relays` array from the old keys file (under the key store's own lock).
    fn drop_legacy(&self) -> Result<(), JsonFileError> {
        let Some(legacy) = &self.legacy else {
            return Ok(());
        };
        let lock = legacy.lock()?;
        let Some(mut doc) = legacy.read::<serde_json::Map<String, serde_json::Value>>()? else {
            return Ok(());
        };
        if doc.remove("relays").is_some() {
            legacy.write(&lock, &doc)?;
        }
        Ok(())
    }

    fn read(&self) -> Result<StoreFile, RelayStoreError> {
        if let Some(store) = self.file.read()? {
            return Ok(store);
        }
        self.migrate()?;
        Ok(self.file.read()?.unwrap_or_default())
    }

    /// A read-modify-write under the lock. An import is kept even when `f` refuses.
    fn update<T>(
        &self,
        f: impl FnOnce(&mut StoreFile) -> Result<T, RelayStoreError>,
    ) -> Result<T, RelayStoreError> {
        let lock = self.file.lock()?;
        let (mut store, imported) = self.load(&lock)?;
        let import = imported.then(|| StoreFile {
            relays: store.relays.clone(),
        });
        match f(&mut store) {
            Ok(result) => {
                self.save(&lock, &store, imported)?;
                Ok(result)
            }
            Err(e) => {
                if let Some(import) = import {
                    self.save(&lock, &import, true)?;
                }
                Err(e)
            }
        }
    }

    fn check_user(user: &str) -> Result<(), RelayStoreError> {
        if valid_user_name(user) {
            Ok(())
        } else {
            Err(RelayStoreError::InvalidUser(user.to_string()))
        }
    }

    /// Adds a target (at most [`MAX_RELAYS_PER_USER`] per user, one per URL); its id is made
    /// unique for the user. The caller has checked that the user has a stream key.
    pub fn add(&self, target: RelayTarget) -> Result<RelayTarget, RelayStoreError> {
        Self::check_user(&target.user)?;
        self.update(|store| {
            let mine = store.relays.iter().filter(|r| r.user == target.user);
            if mine.clone().count() >= MAX_RELAYS_PER_USER {
                return Err(RelayStoreError::TooManyRelays(target.user.clone()));
            }
            if mine.clone().any(|r| r.url == target.url) {
                return Err(RelayStoreError::DuplicateRelay(target.user.clone()));
            }
            let mut target = target;
            // Ids are short: make sure this one is unique for the user.
            while store
                .relays
                .iter()
                .any(|r| r.user == target.user && r.id == target.id)
            {
                target.id = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
            }
            store.relays.push(target.clone());
            Ok(target)
        })
    }

    pub fn remove(&self, user: &str, id: &str) -> Result<RelayTarget, RelayStoreError> {
        Self::check_user(user)?;
        self.update(|store| {
            let idx = store
                .relays
                .iter()
                .position(|r| r.user == user && r.id == id)
                .ok_or_else(|| RelayStoreError::RelayNotFound {
                    user: user.to_string(),
                    id: id.chars().take(32).collect(),
                })?;
            Ok(store.relays.remove(idx))
        })
    }

    /// A user's targets (all users' when `user` is None), by user then age.
    pub fn list(&self, user: Option<&str>) -> Result<Vec<RelayTarget>, RelayStoreError> {
        let mut relays: Vec<RelayTarget> = self
            .read()?
            .relays
            .into_iter()
            .filter(|r| user.is_none_or(|u| r.user == u))
            .collect();
        relays.sort_by(|a, b| (&a.user, a.created_at).cmp(&(&b.user, b.created_at)));
        Ok(relays)
    }

    pub fn for_user(&self, user: &str) -> Result<Vec<RelayTarget>, RelayStoreError> {
        self.list(Some(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RelayPresets;
    use crate::relay::Platform;

    fn target(user: &str, url: &str) -> RelayTarget {
        RelayTarget::new(
            user,
            Platform::Custom,
            url,
            false,
            None,
            &RelayPresets::default(),
        )
        .unwrap()
    }

    #[test]
    fn add_list_remove_with_limits() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelayStore::new(dir.path().join("relays.json"), None);
        assert!(store.list(None).unwrap().is_empty());
        let a = store.add(target("alice", "rtmp://h/app/k1")).unwrap();
        assert!(matches!(
            store.add(target("alice", "rtmp://h/app/k1")),
            Err(RelayStoreError::DuplicateRelay(_))
        ));
        for i in 2..=MAX_RELAYS_PER_USER {
            store
                .add(target("alice", &format!("rtmp://h/app/k{i}")))
                .unwrap();
        }
        assert!(matches!(
            store.add(target("alice", "rtmp://h/app/more")),
            Err(RelayStoreError::TooManyRelays(_))
        ));
        store.add(target("bob", "rtmp://h/app/k1")).unwrap();
        assert_eq!(store.for_user("alice").unwrap().len(), MAX_RELAYS_PER_USER);
        assert_eq!(store.list(None).unwrap().len(), MAX_RELAYS_PER_USER + 1);
        assert_eq!(store.remove("alice", &a.id).unwrap().id, a.id);
        let err = store.remove("alice", &a.id).unwrap_err();
        assert!(matches!(err, RelayStoreError::RelayNotFound { .. }));
        assert!(matches!(
            store.add(target("Bad/Name", "rtmp://h/app/x")),
            Err(RelayStoreError::InvalidUser(_))
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(store.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn imports_the_key_stores_targets_once_and_removes_them_there() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys.json");
        let old = target("alice", "rtmp://h/app/legacy-secret");
        let legacy = serde_json::json!({
            "keys": [{"user": "alice", "hash": "00", "hint": "lg_0…",
                      "created_at": "2024-01-01T00:00:00Z"}],
            "revoked": [],
            "relays": [old],
        });
        std::fs::write(&keys, legacy.to_string()).unwrap();
        let store = RelayStore::new(dir.path().join("relays.json"), Some(keys.clone()));
        // Reading imports.
        assert_eq!(store.for_user("alice").unwrap(), vec![old.clone()]);
        let keys_now: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&keys).unwrap()).unwrap();
        assert!(keys_now.get("relays").is_none(), "{keys_now}");
        assert_eq!(keys_now["keys"], legacy["keys"]);
        // Once: a removed target does not come back from anywhere.
        store.remove("alice", &old.id).unwrap();
        std::fs::write(&keys, legacy.to_string()).unwrap();
        assert!(store.list(None).unwrap().is_empty());
    }

    #[test]
    fn a_refused_first_write_still_keeps_the_import() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys.json");
        let old = target("alice", "rtmp://h/app/k");
        std::fs::write(&keys, serde_json::json!({"relays": [old]}).to_string()).unwrap();
        let store = RelayStore::new(dir.path().join("relays.json"), Some(keys));
        assert!(matches!(
            store.add(target("alice", "rtmp://h/app/k")),
            Err(RelayStoreError::DuplicateRelay(_))
        ));
        assert_eq!(store.list(None).unwrap(), vec![old]);
    }

    #[test]
    fn without_old_targets_or_keys_file_the_store_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys.json");
        let store = RelayStore::new(dir.path().join("relays.json"), Some(keys.clone()));
        store.migrate().unwrap();
        assert!(store.path().exists());
        assert!(!keys.exists(), "no keys file is created");
        std::fs::write(&keys, r#"{"keys": [], "revoked": []}"#).unwrap();
        let other = RelayStore::new(dir.path().join("other.json"), Some(keys.clone()));
        assert!(other.list(None).unwrap().is_empty());
        assert_eq!(
            std::fs::read_to_string(&keys).unwrap(),
            r#"{"keys": [], "revoked": []}"#
        );
    }

    #[test]
    fn a_corrupt_keys_file_is_an_import_error_not_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys.json");
        std::fs::write(&keys, "{not json").unwrap();
        let store = RelayStore::new(dir.path().join("relays.json"), Some(keys));
        let err = store.list(None).unwrap_err();
        assert!(matches!(err, RelayStoreError::Import { .. }), "{err}");
        assert!(!store.path().exists());
    }
}
