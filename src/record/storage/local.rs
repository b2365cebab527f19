//! The local-directory backend: objects are files under a root, written atomically.

use super::{ObjectInfo, StorageError};
use bytes::Bytes;
use std::path::{Component, Path, PathBuf};

pub struct LocalStore {
    pub(super) root: PathBuf,
}

impl LocalStore {
    #[cfg(test)]
    pub fn for_tests(root: &Path) -> LocalStore {
        LocalStore {
            root: root.to_owned(),
        }
    }

    pub(super) fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    pub(super) async fn check(&self) -> Result<(), StorageError> {
        let root = self.root.clone();
        blocking(move || {
            std::fs::create_dir_all(&root).map_err(|source| StorageError::Local {
                path: root.clone(),
                source,
            })
        })
        .await
    }

    pub(super) async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let path = self.path(key);
        blocking(move || write_atomically(&path, &data)).await
    }

    pub(super) async fn get(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Bytes, StorageError> {
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

    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
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

    pub(super) async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
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

    pub(super) async fn delete(
        &self,
        prefix: &str,
        objects: &[ObjectInfo],
    ) -> Result<(), StorageError> {
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
