//! Stream keys: who may publish. One async interface, [`KeyBackend`], in front of where keys
//! live: the embedded file store ([`KeyStore`], the default) today, a networked store (Redis)
//! next. Every check is by SHA-256 hash, compared in constant time.

mod embedded;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::util::JsonFileError;
pub(crate) use embedded::new_entry;
pub use embedded::{generate_key, KeyStore, RevokedEntry, KEY_PREFIX};

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
    /// A networked key store (Redis) did not answer in time or refused the command.
    #[error("key store unavailable: {0}")]
    Unavailable(String),
}

impl From<JsonFileError> for AuthError {
    fn from(e: JsonFileError) -> Self {
        match e {
            JsonFileError::Io { path, source } => AuthError::Io { path, source },
            JsonFileError::Corrupt { path, message } => AuthError::Corrupt { path, message },
        }
    }
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

/// A boxed future of a key-store answer (the trait is used as `dyn KeyBackend`).
pub type KeyFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, AuthError>> + Send + 'a>>;

/// Where stream keys live. Async, so a networked backend never blocks a runtime thread; the
/// embedded one does its file work on the blocking pool.
pub trait KeyBackend: Send + Sync {
    /// Checks a presented key.
    fn check<'a>(&'a self, key: &'a str) -> KeyFuture<'a, KeyCheck>;
    /// A new key for a user without one; returns it (shown once, stored hashed).
    fn add<'a>(&'a self, user: &'a str) -> KeyFuture<'a, String>;
    /// Replaces a user's key; the old one is refused from now on.
    fn rotate<'a>(&'a self, user: &'a str) -> KeyFuture<'a, String>;
    fn revoke<'a>(&'a self, user: &'a str) -> KeyFuture<'a, ()>;
    fn list(&self) -> KeyFuture<'_, Vec<KeyEntry>>;
    fn has_key<'a>(&'a self, user: &'a str) -> KeyFuture<'a, bool>;
}

/// Hashes of a presented key as every backend stores it (hex SHA-256).
pub fn hash_key(key: &str) -> String {
    embedded::hash_key(key)
}

/// The key backend the server uses.
pub type Keys = Arc<dyn KeyBackend>;

/// Runs one embedded-store call on the blocking pool.
fn blocking<T: Send + 'static>(
    store: &KeyStore,
    f: impl FnOnce(&KeyStore) -> Result<T, AuthError> + Send + 'static,
) -> KeyFuture<'static, T> {
    let store = store.clone();
    let path = store.path().to_path_buf();
    Box::pin(async move {
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| AuthError::Io {
                path,
                source: std::io::Error::other(format!("key store task: {e}")),
            })?
    })
}

impl KeyBackend for KeyStore {
    fn check<'a>(&'a self, key: &'a str) -> KeyFuture<'a, KeyCheck> {
        let key = key.to_string();
        blocking(self, move |s| s.check(&key))
    }

    fn add<'a>(&'a self, user: &'a str) -> KeyFuture<'a, String> {
        let user = user.to_string();
        blocking(self, move |s| s.add(&user))
    }

    fn rotate<'a>(&'a self, user: &'a str) -> KeyFuture<'a, String> {
        let user = user.to_string();
        blocking(self, move |s| s.rotate(&user))
    }

    fn revoke<'a>(&'a self, user: &'a str) -> KeyFuture<'a, ()> {
        let user = user.to_string();
        blocking(self, move |s| s.revoke(&user))
    }

    fn list(&self) -> KeyFuture<'_, Vec<KeyEntry>> {
        blocking(self, |s| s.list())
    }

    fn has_key<'a>(&'a self, user: &'a str) -> KeyFuture<'a, bool> {
        let user = user.to_string();
        blocking(self, move |s| s.has_key(&user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_embedded_store_behind_the_async_interface() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Keys = Arc::new(KeyStore::new(dir.path().join("keys.json")));
        let key = keys.add("alice").await.unwrap();
        assert!(keys.has_key("alice").await.unwrap());
        assert_eq!(
            keys.check(&key).await.unwrap(),
            KeyCheck::Valid {
                user: "alice".into()
            }
        );
        let rotated = keys.rotate("alice").await.unwrap();
        assert_eq!(
            keys.check(&key).await.unwrap(),
            KeyCheck::Revoked {
                user: "alice".into()
            }
        );
        keys.revoke("alice").await.unwrap();
        assert!(matches!(
            keys.check(&rotated).await.unwrap(),
            KeyCheck::Revoked { .. }
        ));
        assert!(keys.list().await.unwrap().is_empty());
        assert!(matches!(
            keys.add("not a name").await,
            Err(AuthError::InvalidUser(_))
        ));
    }
}
