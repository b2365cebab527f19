//! Where recordings live: a local directory or an S3 bucket, behind one interface.
//!
//! Keys are relative (`<user>/<session>/<file>`); the S3 backend prepends its prefix. A closed
//! enum rather than a trait object: two backends, and async methods stay plain `async fn`.

mod local;
mod s3;
pub use local::{write_atomically, LocalStore};
pub use s3::S3Store;

use std::path::PathBuf;

use bytes::Bytes;

use crate::config::{RecordBackend, RecordConfig};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("invalid storage key {0:?}")]
    InvalidKey(String),
    #[error("local storage {path}: {source}")]
    Local {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("S3 {op} {key}: {message}")]
    S3 {
        op: &'static str,
        key: String,
        message: String,
    },
}

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Relative key (without the S3 prefix).
    pub key: String,
    pub size: u64,
}

pub enum Storage {
    Local(LocalStore),
    S3(S3Store),
}

impl Storage {
    /// Opens the configured backend. S3 credentials come from the standard AWS chain.
    pub async fn open(config: &RecordConfig, local_root: PathBuf) -> Storage {
        match config.backend {
            RecordBackend::Local => Storage::Local(LocalStore { root: local_root }),
            RecordBackend::S3 => Storage::S3(S3Store::new(config).await),
        }
    }

    /// Where recordings go, for logs (no credentials).
    pub fn describe(&self) -> String {
        match self {
            Storage::Local(l) => format!("local directory {}", l.root.display()),
            Storage::S3(s) => format!(
                "s3://{}/{} at {}",
                s.bucket,
                s.prefix,
                if s.endpoint.is_empty() {
                    "AWS"
                } else {
                    &s.endpoint
                }
            ),
        }
    }

    /// Checks the backend is reachable and writable with the configured credentials.
    pub async fn check(&self) -> Result<(), StorageError> {
        match self {
            Storage::Local(l) => l.check().await,
            Storage::S3(s) => s.check().await,
        }
    }

    pub async fn put(
        &self,
        key: &str,
        data: Bytes,
        content_type: &str,
    ) -> Result<(), StorageError> {
        validate_key(key)?;
        match self {
            Storage::Local(l) => l.put(key, data).await,
            Storage::S3(s) => s.put(key, data, content_type).await,
        }
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        validate_key(key)?;
        match self {
            Storage::Local(l) => l.get(key, None).await,
            Storage::S3(s) => s.get(key, None).await,
        }
    }

    /// Bytes `start..=end` of an object.
    pub async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, StorageError> {
        validate_key(key)?;
        match self {
            Storage::Local(l) => l.get(key, Some((start, end))).await,
            Storage::S3(s) => s.get(key, Some((start, end))).await,
        }
    }

    /// Objects whose key starts with `prefix`, sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let mut objects = match self {
            Storage::Local(l) => l.list(prefix).await?,
            Storage::S3(s) => s.list(prefix).await?,
        };
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// The "folders" directly under `prefix` (which is empty or ends with '/'): the distinct next
    /// path segments of the keys below it, each with its trailing '/', sorted.
    pub async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        if !(prefix.is_empty() || prefix.ends_with('/')) {
            return Err(StorageError::InvalidKey(prefix.to_string()));
        }
        let mut folders = match self {
            Storage::Local(l) => l.list_folders(prefix).await?,
            Storage::S3(s) => s.list_folders(prefix).await?,
        };
        folders.sort();
        Ok(folders)
    }

    /// Deletes every object under `prefix` (which must end with '/'). Returns how many.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, StorageError> {
        if !prefix.ends_with('/') || prefix.len() < 2 {
            return Err(StorageError::InvalidKey(prefix.to_string()));
        }
        let objects = self.list(prefix).await?;
        match self {
            Storage::Local(l) => l.delete(prefix, &objects).await?,
            Storage::S3(s) => s.delete(&objects).await?,
        }
        Ok(objects.len())
    }
}

/// Keys come from our own layout, but also from URLs: only plain relative paths pass.
fn validate_key(key: &str) -> Result<(), StorageError> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidKey(key.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_plain_relative_paths() {
        assert!(validate_key("alice/20261121T083000Z-0a1b2c/seg-000001.m4s").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "a//b",
            "a/./b",
            "a b",
            "a/b\\c",
            "ä",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn local_store_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Storage::Local(LocalStore {
            root: dir.path().join("rec"),
        });
        store.check().await.unwrap();
        store
            .put(
                "alice/s1/seg-1.m4s",
                Bytes::from_static(b"0123456789"),
                "video/mp4",
            )
            .await
            .unwrap();
        store
            .put("alice/s1/index.m3u8", Bytes::from_static(b"#EXTM3U\n"), "x")
            .await
            .unwrap();
        store
            .put("bob/s2/seg-1.m4s", Bytes::from_static(b"x"), "video/mp4")
            .await
            .unwrap();
        assert_eq!(
            store.get("alice/s1/seg-1.m4s").await.unwrap(),
            Bytes::from_static(b"0123456789")
        );
        assert_eq!(
            store.get_range("alice/s1/seg-1.m4s", 2, 4).await.unwrap(),
            Bytes::from_static(b"234")
        );
        assert!(matches!(
            store.get("alice/s1/missing").await,
            Err(StorageError::NotFound(_))
        ));
        let listed = store.list("alice/").await.unwrap();
        assert_eq!(
            listed,
            vec![
                ObjectInfo {
                    key: "alice/s1/index.m3u8".into(),
                    size: 8
                },
                ObjectInfo {
                    key: "alice/s1/seg-1.m4s".into(),
                    size: 10
                },
            ]
        );
        assert_eq!(store.list("").await.unwrap().len(), 3);
        assert_eq!(
            store.list_folders("").await.unwrap(),
            vec!["alice/".to_string(), "bob/".to_string()]
        );
        assert_eq!(
            store.list_folders("alice/").await.unwrap(),
            vec!["alice/s1/".to_string()]
        );
        assert!(store.list_folders("alice").await.is_err());
        assert_eq!(store.delete_prefix("alice/s1/").await.unwrap(), 2);
        assert!(store.list("alice/").await.unwrap().is_empty());
        assert!(!dir.path().join("rec/alice").exists());
        assert!(store.delete_prefix("").await.is_err());
        assert!(store.get("../secret").await.is_err());
    }
}
