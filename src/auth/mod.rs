//! Stream keys: who may publish. The embedded store keeps one key hash per user in a JSON file
//! under `data_dir`, shared by the server and the `livegate keys` CLI (a lock file serializes
//! writers; readers see whole files because writes are atomic renames).
//!
//! Keys are 160 random bits, so a single SHA-256 is enough to store them: there is nothing to
//! brute-force that a slow password hash would protect. Comparison is constant-time anyway.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::relay::RelayTarget;
use crate::util::valid_user_name;

pub const KEY_PREFIX: &str = "lg_";
/// Revoked and rotated-away key hashes remembered to name the user in refusals.
const MAX_REVOKED: usize = 1000;
pub const MAX_RELAYS_PER_USER: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("user name {0:?} is not valid: use 1-64 of a-z, 0-9, '_' and '-'")]
    InvalidUser(String),
    #[error("user {0:?} already has a key (use `keys rotate` for a new one)")]
    Exists(String),
    #[error("user {0:?} has no key")]
    NotFound(String),
    #[error("key store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key store {path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("user {user:?} has no relay {id:?}")]
    RelayNotFound { user: String, id: String },
    #[error("user {0:?} already has {MAX_RELAYS_PER_USER} relay targets")]
    TooManyRelays(String),
    #[error("user {0:?} already relays to that URL")]
    DuplicateRelay(String),
}

/// The outcome of checking a presented key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    Valid { user: String },
    Revoked { user: String },
    Unknown,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyEntry {
    pub user: String,
    /// SHA-256 of the key, hex.
    pub hash: String,
    /// First characters of the key, so an operator can tell which one a user has.
    pub hint: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RevokedEntry {
    pub user: String,
    pub hash: String,
    pub revoked_at: DateTime<Utc>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoreFile {
    #[serde(default)]
    keys: Vec<KeyEntry>,
    #[serde(default)]
    revoked: Vec<RevokedEntry>,
    /// Users' relay targets (their URLs hold the platforms' stream keys; the file is 0600).
    #[serde(default)]
    relays: Vec<RelayTarget>,
}

/// The embedded key store.
#[derive(Debug, Clone)]
pub struct KeyStore {
    path: PathBuf,
}

pub fn generate_key() -> String {
    let bytes: [u8; 20] = rand::random();
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl KeyStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        KeyStore { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> AuthError {
        AuthError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn read(&self) -> Result<StoreFile, AuthError> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| AuthError::Corrupt {
                path: self.path.clone(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StoreFile::default()),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Runs a read-modify-write under an exclusive lock, then replaces the file atomically.
    fn update<T>(
        &self,
        f: impl FnOnce(&mut StoreFile) -> Result<T, AuthError>,
    ) -> Result<T, AuthError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        let lock_path = self.path.with_extension("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.io(e))?;
        lock.lock().map_err(|e| self.io(e))?;
        let mut store = self.read()?;
        let result = f(&mut store)?;
        let tmp = self.path.with_extension("tmp");
        let text = serde_json::to_vec_pretty(&store).map_err(|e| AuthError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        {
            let mut file = File::create(&tmp).map_err(|e| self.io(e))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = file.set_permissions(fs::Permissions::from_mode(0o600));
            }
            file.write_all(&text).map_err(|e| self.io(e))?;
            file.sync_all().map_err(|e| self.io(e))?;
        }
        fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        drop(lock);
        Ok(result)
    }

    fn check_user(user: &str) -> Result<(), AuthError> {
        if valid_user_name(user) {
            Ok(())
        } else {
            Err(AuthError::InvalidUser(user.to_string()))
        }
    }

    fn new_entry(user: &str) -> (KeyEntry, String) {
        let key = generate_key();
        let entry = KeyEntry {
            user: user.to_string(),
            hash: hash_key(&key),
            hint: format!("{}…", &key[..KEY_PREFIX.len() + 4]),
            created_at: Utc::now(),
        };
        (entry, key)
    }

    fn remember_revoked(store: &mut StoreFile, entry: KeyEntry) {
        store.revoked.push(RevokedEntry {
            user: entry.user,
            hash: entry.hash,
            revoked_at: Utc::now(),
        });
        let excess = store.revoked.len().saturating_sub(MAX_REVOKED);
        store.revoked.drain(..excess);
    }

    /// Creates a key for a new user; returns the key (the only time it exists in clear).
    pub fn add(&self, user: &str) -> Result<String, AuthError> {
        Self::check_user(user)?;
        self.update(|store| {
            if store.keys.iter().any(|k| k.user == user) {
                return Err(AuthError::Exists(user.to_string()));
            }
            let (entry, key) = Self::new_entry(user);
            store.keys.push(entry);
            Ok(key)
        })
    }

    /// Replaces a user's key; the old one stops working at once.
    pub fn rotate(&self, user: &str) -> Result<String, AuthError> {
        Self::check_user(user)?;
        self.update(|store| {
            let idx = store
                .keys
                .iter()
                .position(|k| k.user == user)
                .ok_or_else(|| AuthError::NotFound(user.to_string()))?;
            let (entry, key) = Self::new_entry(user);
            let old = std::mem::replace(&mut store.keys[idx], entry);
            Self::remember_revoked(store, old);
            Ok(key)
        })
    }

    pub fn revoke(&self, user: &str) -> Result<(), AuthError> {
        Self::check_user(user)?;
        self.update(|store| {
            let idx = store
                .keys
                .iter()
                .position(|k| k.user == user)
                .ok_or_else(|| AuthError::NotFound(user.to_string()))?;
            let old = store.keys.remove(idx);
            Self::remember_revoked(store, old);
            Ok(())
        })
    }

    pub fn list(&self) -> Result<Vec<KeyEntry>, AuthError> {
        let mut keys = self.read()?.keys;
        keys.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(keys)
    }

    /// Adds a relay target for a user who has a stream key.
    pub fn add_relay(&self, target: RelayTarget) -> Result<RelayTarget, AuthError> {
        Self::check_user(&target.user)?;
        self.update(|store| {
            if !store.keys.iter().any(|k| k.user == target.user) {
                return Err(AuthError::NotFound(target.user.clone()));
            }
            let mine = store.relays.iter().filter(|r| r.user == target.user);
            if mine.clone().count() >= MAX_RELAYS_PER_USER {
                return Err(AuthError::TooManyRelays(target.user.clone()));
            }
            if mine.clone().any(|r| r.url == target.url) {
                return Err(AuthError::DuplicateRelay(target.user.clone()));
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

    pub fn remove_relay(&self, user: &str, id: &str) -> Result<RelayTarget, AuthError> {
        Self::check_user(user)?;
        self.update(|store| {
            let idx = store
                .relays
                .iter()
                .position(|r| r.user == user && r.id == id)
                .ok_or_else(|| AuthError::RelayNotFound {
                    user: user.to_string(),
                    id: id.chars().take(32).collect(),
                })?;
            Ok(store.relays.remove(idx))
        })
    }

    /// A user's relay targets (all users' when `user` is None).
    pub fn relays(&self, user: Option<&str>) -> Result<Vec<RelayTarget>, AuthError> {
        let mut relays: Vec<RelayTarget> = self
            .read()?
            .relays
            .into_iter()
            .filter(|r| user.is_none_or(|u| r.user == u))
            .collect();
        relays.sort_by(|a, b| (&a.user, a.created_at).cmp(&(&b.user, b.created_at)));
        Ok(relays)
    }

    pub fn relays_for(&self, user: &str) -> Result<Vec<RelayTarget>, AuthError> {
        self.relays(Some(user))
    }

    /// Checks a presented key against every stored hash in constant time per entry.
    pub fn check(&self, key: &str) -> Result<KeyCheck, AuthError> {
        let store = self.read()?;
        let presented = hash_key(key);
        let mut found = KeyCheck::Unknown;
        for entry in &store.keys {
            if bool::from(entry.hash.as_bytes().ct_eq(presented.as_bytes())) {
                found = KeyCheck::Valid {
                    user: entry.user.clone(),
                };
            }
        }
        if found == KeyCheck::Unknown {
            for entry in &store.revoked {
                if bool::from(entry.hash.as_bytes().ct_eq(presented.as_bytes())) {
                    found = KeyCheck::Revoked {
                        user: entry.user.clone(),
                    };
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_check_rotate_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path().join("keys.json"));
        let key = store.add("alice").unwrap();
        assert!(key.starts_with(KEY_PREFIX) && key.len() == KEY_PREFIX.len() + 40);
        assert_eq!(
            store.check(&key).unwrap(),
            KeyCheck::Valid {
                user: "alice".into()
            }
        );
        assert_eq!(store.check("lg_nope").unwrap(), KeyCheck::Unknown);
        assert!(matches!(store.add("alice"), Err(AuthError::Exists(_))));

        // The file holds no key in clear.
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(!text.contains(&key));

        let new_key = store.rotate("alice").unwrap();
        assert_ne!(new_key, key);
        assert_eq!(
            store.check(&key).unwrap(),
            KeyCheck::Revoked {
                user: "alice".into()
            }
        );
        assert_eq!(
            store.check(&new_key).unwrap(),
            KeyCheck::Valid {
                user: "alice".into()
            }
        );
        store.revoke("alice").unwrap();
        assert_eq!(
            store.check(&new_key).unwrap(),
            KeyCheck::Revoked {
                user: "alice".into()
            }
        );
        assert!(store.list().unwrap().is_empty());
        assert!(matches!(store.revoke("alice"), Err(AuthError::NotFound(_))));
        assert!(matches!(
            store.add("Bad/Name"),
            Err(AuthError::InvalidUser(_))
        ));
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let store = KeyStore::new(path.clone());
                std::thread::spawn(move || store.add(&format!("user{i}")).unwrap())
            })
            .collect();
        let keys: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let store = KeyStore::new(path);
        assert_eq!(store.list().unwrap().len(), 8);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(
                store.check(k).unwrap(),
                KeyCheck::Valid {
                    user: format!("user{i}")
                }
            );
        }
    }

    #[test]
    fn corrupt_store_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = KeyStore::new(path).check("x").unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
