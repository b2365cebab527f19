//! Where recordings live: a local directory or an S3 bucket, behind one interface.
//!
//! Keys are relative (`<user>/<session>/<file>`); the S3 backend prepends its prefix. A closed
//! enum rather than a trait object: two backends, and async methods stay plain `async fn`.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::primitives::ByteStream;
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

pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    #[cfg(test)]
    pub fn for_tests(root: &Path) -> LocalStore {
        LocalStore {
            root: root.to_owned(),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    async fn check(&self) -> Result<(), StorageError> {
        let root = self.root.clone();
        blocking(move || {
            std::fs::create_dir_all(&root).map_err(|source| StorageError::Local {
                path: root.clone(),
                source,
            })
        })
        .await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let path = self.path(key);
        blocking(move || write_atomically(&path, &data)).await
    }

    async fn get(&self, key: &str, range: Option<(u64, u64)>) -> Result<Bytes, StorageError> {
        let path = self.path(key);
        let key = key.to_string();
        blocking(move || {
            use std::io::{Read, Seek, SeekFrom};
            let local = |source| StorageError::Local {
                path: path.clone(),
                source,
            };
            let mut file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StorageError::NotFound(key))
                }
                Err(e) => return Err(local(e)),
            };
            let mut data = Vec::new();
            match range {
                None => {
                    file.read_to_end(&mut data).map_err(local)?;
                }
                Some((start, end)) => {
                    file.seek(SeekFrom::Start(start)).map_err(local)?;
                    file.take(end.saturating_sub(start) + 1)
                        .read_to_end(&mut data)
                        .map_err(local)?;
                }
            }
            Ok(Bytes::from(data))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(move || {
            // Walk only the deepest directory the prefix names.
            let dir_part = prefix.rsplit_once('/').map_or("", |(d, _)| d);
            let start = root.join(dir_part);
            let mut out = Vec::new();
            let mut stack = vec![start];
            while let Some(dir) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(source) => return Err(StorageError::Local { path: dir, source }),
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    let Ok(meta) = entry.metadata() else { continue };
                    if meta.is_dir() {
                        stack.push(path);
                        continue;
                    }
                    let Some(key) = relative_key(&root, &path) else {
                        continue;
                    };
                    // In-flight temporary files are not objects yet.
                    if key.starts_with(&prefix) && !key.ends_with(".tmp") {
                        out.push(ObjectInfo {
                            key,
                            size: meta.len(),
                        });
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let dir = self.root.join(prefix.trim_end_matches('/'));
        let prefix = prefix.to_string();
        blocking(move || {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(source) => return Err(StorageError::Local { path: dir, source }),
            };
            Ok(entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().to_str().map(|n| format!("{prefix}{n}/")))
                .collect())
        })
        .await
    }

    async fn delete(&self, prefix: &str, objects: &[ObjectInfo]) -> Result<(), StorageError> {
        let paths: Vec<PathBuf> = objects.iter().map(|o| self.path(&o.key)).collect();
        let dir = self.path(prefix.trim_end_matches('/'));
        blocking(move || {
            for path in paths {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => return Err(StorageError::Local { path, source }),
                }
            }
            // Empty directories left behind go too; a non-empty one (a write racing) stays.
            let _ = std::fs::remove_dir(&dir);
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
            Ok(())
        })
        .await
    }
}

fn relative_key(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    Some(parts?.join("/"))
}

/// Writes a file so that readers see either nothing or all of it, and it survives a crash.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<(), StorageError> {
    use std::io::Write;
    let local = |source| StorageError::Local {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(local)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp).map_err(local)?;
    file.write_all(data).map_err(local)?;
    file.sync_data().map_err(local)?;
    std::fs::rename(&tmp, path).map_err(local)?;
    // The rename itself must survive a power loss too, or a journal line could outlive its file.
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(local)?;
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StorageError::Local {
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Without slashes at either end; may be empty.
    prefix: String,
    endpoint: String,
}

impl S3Store {
    async fn new(config: &RecordConfig) -> S3Store {
        let s3 = &config.s3;
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(s3.region.clone()))
            .load()
            .await;
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(60))
            .build();
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(s3.force_path_style)
            .timeout_config(timeouts);
        if !s3.endpoint.is_empty() {
            builder = builder.endpoint_url(&s3.endpoint);
        }
        S3Store {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: s3.bucket.clone(),
            prefix: s3.prefix.trim_matches('/').to_string(),
            endpoint: s3.endpoint.clone(),
        }
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{}", self.prefix, key)
        }
    }

    fn error<E>(op: &'static str, key: &str, e: E) -> StorageError
    where
        E: std::error::Error + ProvideErrorMetadata,
    {
        // The code and message of an S3 error ("InvalidAccessKeyId", "SignatureDoesNotMatch",
        // "NoSuchBucket") say what to fix; for a transport failure the context chain does.
        let message = match (e.code(), e.message()) {
            (Some(code), Some(msg)) => format!("{code}: {msg}"),
            (Some(code), None) => code.to_string(),
            _ => DisplayErrorContext(&e).to_string(),
        };
        StorageError::S3 {
            op,
            key: key.to_string(),
            message,
        }
    }

    async fn check(&self) -> Result<(), StorageError> {
        // A write, not just HeadBucket: read-only credentials would only fail at the first upload.
        let key = ".livegate-write-check";
        self.put(key, Bytes::from_static(b"ok"), "text/plain")
            .await?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| Self::error("DeleteObject", key, e))?;
        Ok(())
    }

    async fn put(&self, key: &str, data: Bytes, content_type: &str) -> Result<(), StorageError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .content_type(content_type)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| Self::error("PutObject", key, e))?;
        Ok(())
    }

    async fn get(&self, key: &str, range: Option<(u64, u64)>) -> Result<Bytes, StorageError> {
        let mut request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key));
        if let Some((start, end)) = range {
            request = request.range(format!("bytes={start}-{end}"));
        }
        let output = request.send().await.map_err(|e| {
            if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                StorageError::NotFound(key.to_string())
            } else {
                Self::error("GetObject", key, e)
            }
        })?;
        let data = output.body.collect().await.map_err(|e| StorageError::S3 {
            op: "GetObject",
            key: key.to_string(),
            message: e.to_string(),
        })?;
        Ok(data.into_bytes())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full_key(prefix))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Self::error("ListObjectsV2", prefix, e))?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| k.get(strip..)) else {
                    continue;
                };
                out.push(ObjectInfo {
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                });
            }
        }
        Ok(out)
    }

    async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let full = if self.prefix.is_empty() {
            prefix.to_string()
        } else {
            format!("{}/{prefix}", self.prefix)
        };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(full)
            .delimiter("/")
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Self::error("ListObjectsV2", prefix, e))?;
            for common in page.common_prefixes() {
                if let Some(p) = common.prefix().and_then(|p| p.get(strip..)) {
                    out.push(p.to_string());
                }
            }
        }
        Ok(out)
    }

    async fn delete(&self, objects: &[ObjectInfo]) -> Result<(), StorageError> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        // DeleteObjects takes at most 1000 keys per request.
        for chunk in objects.chunks(1000) {
            let ids = chunk
                .iter()
                .map(|o| {
                    ObjectIdentifier::builder()
                        .key(self.full_key(&o.key))
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StorageError::S3 {
                    op: "DeleteObjects",
                    key: String::new(),
                    message: e.to_string(),
                })?;
            let delete = Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(|e| StorageError::S3 {
                    op: "DeleteObjects",
                    key: String::new(),
                    message: e.to_string(),
                })?;
            let output = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| Self::error("DeleteObjects", "", e))?;
            if let Some(failed) = output.errors().first() {
                return Err(StorageError::S3 {
                    op: "DeleteObjects",
                    key: failed.key().unwrap_or_default().to_string(),
                    message: failed.message().unwrap_or_default().to_string(),
                });
            }
        }
        Ok(())
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
