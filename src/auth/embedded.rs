//! The embedded key store: one key hash per user in a JSON file under `data_dir`, shared by the
//! server and the `livegate keys` CLI (a lock file serializes
//! writers; readers see whole files because writes are atomic renames: [`JsonFile`]).
//!
//! Keys are 160 random bits, so a single SHA-256 is enough to store them: there is nothing to
//! brute-force that a slow password hash would protect. Comparison is constant-time anyway.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::util::{valid_user_name, JsonFile};

use super::{AuthError, KeyCheck, KeyEntry};

pub const KEY_PREFIX: &str = "lg_";
/// Revoked and rotated-away key hashes remembered to name the user in refusals.
const MAX_REVOKED: usize = 1000;

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
    /// Relay targets as older versions stored them here. Never interpreted by this store, only
    /// carried over unchanged, so a key change made before the relay store has imported them
    /// (and removed this field) cannot lose them. Absent afterwards, and then never written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    relays: Option<serde_json::Value>,
}

/// The embedded key store.
#[derive(Debug, Clone)]
pub struct KeyStore {
    file: JsonFile,
}

/// A fresh key for `user` and the entry that stores it (hashed).
pub(crate) fn new_entry(user: &str) -> (KeyEntry, String) {
    let key = generate_key();
    let entry = KeyEntry {
        user: user.to_string(),
        hash: hash_key(&key),
        hint: format!("{}…", &key[..KEY_PREFIX.len() + 4]),
        created_at: Utc::now(),
    };
    (entry, key)
}

pub fn generate_key() -> String {
    let bytes: [u8; 20] = rand::random();
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

pub(super) fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl KeyStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        KeyStore {
            file: JsonFile::new(path),
        }
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    fn read(&self) -> Result<StoreFile, AuthError> {
        Ok(self.file.read()?.unwrap_or_default())
    }

    /// Runs a read-modify-write under an exclusive lock, then replaces the file atomically.
    fn update<T>(
        &self,
        f: impl FnOnce(&mut StoreFile) -> Result<T, AuthError>,
    ) -> Result<T, AuthError> {
        self.file.update(f)
    }

    fn check_user(user: &str) -> Result<(), AuthError> {
        if valid_user_name(user) {
            Ok(())
        } else {
            Err(AuthError::InvalidUser(user.to_string()))
        }
    }

    fn new_entry(user: &str) -> (KeyEntry, String) {
        new_entry(user)
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

    /// Where `user`'s key is in the store.
    fn index_of(store: &StoreFile, user: &str) -> Result<usize, AuthError> {
        store
            .keys
            .iter()
            .position(|k| k.user == user)
            .ok_or_else(|| AuthError::NotFound(user.to_string()))
    }

    /// Replaces a user's key; the old one stops working at once.
    pub fn rotate(&self, user: &str) -> Result<String, AuthError> {
        Self::check_user(user)?;
        self.update(|store| {
            let idx = Self::index_of(store, user)?;
            let (entry, key) = Self::new_entry(user);
            let old = std::mem::replace(&mut store.keys[idx], entry);
            Self::remember_revoked(store, old);
            Ok(key)
        })
    }

    pub fn revoke(&self, user: &str) -> Result<(), AuthError> {
        Self::check_user(user)?;
        self.update(|store| {
            let idx = Self::index_of(store, user)?;
            let old = store.keys.remove(idx);
            Self::remember_revoked(store, old);
            Ok(())
        })
    }

    /// Revoked and rotated-away key hashes (newest last), for `keys import`.
    pub fn revoked(&self) -> Result<Vec<RevokedEntry>, AuthError> {
        Ok(self.read()?.revoked)
    }

    pub fn list(&self) -> Result<Vec<KeyEntry>, AuthError> {
        let mut keys = self.read()?.keys;
        keys.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(keys)
    }

    /// Whether `user` has a stream key (relay targets are only for users who can publish).
    pub fn has_key(&self, user: &str) -> Result<bool, AuthError> {
        Self::check_user(user)?;
        Ok(self.read()?.keys.iter().any(|k| k.user == user))
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

    #[test]
    fn legacy_relays_are_kept_verbatim_until_removed_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let legacy = serde_json::json!([{"id": "abc123", "user": "alice"}]);
        std::fs::write(
            &path,
            serde_json::json!({"keys": [], "relays": legacy}).to_string(),
        )
        .unwrap();
        let store = KeyStore::new(path.clone());
        store.add("alice").unwrap();
        assert!(store.has_key("alice").unwrap());
        assert!(!store.has_key("bob").unwrap());
        let text: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(text["relays"], legacy);
        // Without the field (after the relay store's import), none is written.
        std::fs::write(&path, serde_json::json!({"keys": []}).to_string()).unwrap();
        store.add("bob").unwrap();
        assert!(!std::fs::read_to_string(&path).unwrap().contains("relays"));
    }
}
