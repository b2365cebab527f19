//! Small helpers shared by several concerns, including [`JsonFile`]: the atomic, locked JSON
//! file that the key store and the relay-target store both keep their state in.

pub mod log_throttle;
pub mod process;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Shows only the first characters of a secret so logs can tell keys apart without leaking them.
pub fn redact(secret: &str) -> String {
    let visible: String = secret.chars().take(6).collect();
    if secret.chars().count() <= 6 {
        "…".to_string()
    } else {
        format!("{visible}…")
    }
}

/// User names appear in URLs and storage paths, so they are restricted to a safe alphabet.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && !name.starts_with('-')
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn unix_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[derive(Debug, thiserror::Error)]
pub enum JsonFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
}

/// A JSON document in one file, shared by processes (the server and the CLI). Writers serialize
/// on a sibling lock file and replace the file by rename after an fsync, so readers never see a
/// partial document without taking the lock. The file is mode 0600: both users of this helper
/// store secrets (key hashes, platforms' stream keys in relay URLs).
#[derive(Debug, Clone)]
pub struct JsonFile {
    path: PathBuf,
}

/// Held while a writer owns the file; dropping it releases the lock.
#[derive(Debug)]
pub struct JsonFileLock {
    _file: File,
}

impl JsonFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> JsonFileError {
        JsonFileError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, e: serde_json::Error) -> JsonFileError {
        JsonFileError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// The document, or None when the file does not exist.
    pub fn read<T: DeserializeOwned>(&self) -> Result<Option<T>, JsonFileError> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| self.corrupt(e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Takes the exclusive writer lock (`<name>.lock` next to the file), creating the directory.
    pub fn lock(&self) -> Result<JsonFileLock, JsonFileError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path.with_extension("lock"))
            .map_err(|e| self.io(e))?;
        file.lock().map_err(|e| self.io(e))?;
        Ok(JsonFileLock { _file: file })
    }

    /// Replaces the file with `value`: write a temporary file (0600), fsync, rename. The caller
    /// holds the lock (the proof is the `_lock` argument), so the temporary name is not shared.
    pub fn write<T: Serialize>(
        &self,
        _lock: &JsonFileLock,
        value: &T,
    ) -> Result<(), JsonFileError> {
        let tmp = self.path.with_extension("tmp");
        let text = serde_json::to_vec_pretty(value).map_err(|e| self.corrupt(e))?;
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
        fs::rename(&tmp, &self.path).map_err(|e| self.io(e))
    }

    /// A read-modify-write under the lock (a missing file reads as `T::default()`), then an atomic
    /// replace. Nothing is written when `f` fails.
    pub fn update<T, R, E>(&self, f: impl FnOnce(&mut T) -> Result<R, E>) -> Result<R, E>
    where
        T: DeserializeOwned + Serialize + Default,
        E: From<JsonFileError>,
    {
        let lock = self.lock()?;
        let mut value = self.read()?.unwrap_or_default();
        let result = f(&mut value)?;
        self.write(&lock, &value)?;
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_tail() {
        assert_eq!(redact("lg_0123456789abcdef"), "lg_012…");
        assert_eq!(redact("short"), "…");
        assert!(!redact("lg_0123456789abcdef").contains("789"));
    }

    #[test]
    fn user_names() {
        assert!(valid_user_name("alice"));
        assert!(valid_user_name("team-7_b"));
        assert!(!valid_user_name(""));
        assert!(!valid_user_name("Alice"));
        assert!(!valid_user_name("../etc"));
        assert!(!valid_user_name("-x"));
        assert!(!valid_user_name(&"a".repeat(65)));
    }

    #[derive(Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
    struct Doc {
        items: Vec<u32>,
    }

    #[test]
    fn json_file_updates_atomically_and_privately() {
        let dir = tempfile::tempdir().unwrap();
        let file = JsonFile::new(dir.path().join("sub/doc.json"));
        assert_eq!(file.read::<Doc>().unwrap(), None);
        let n: Result<usize, JsonFileError> = file.update(|d: &mut Doc| {
            d.items.push(7);
            Ok(d.items.len())
        });
        assert_eq!(n.unwrap(), 1);
        assert_eq!(file.read::<Doc>().unwrap(), Some(Doc { items: vec![7] }));
        // A failing update writes nothing.
        let failed: Result<(), JsonFileError> = file.update(|d: &mut Doc| {
            d.items.clear();
            Err(JsonFileError::Corrupt {
                path: PathBuf::new(),
                message: "no".into(),
            })
        });
        assert!(failed.is_err());
        assert_eq!(file.read::<Doc>().unwrap(), Some(Doc { items: vec![7] }));
        assert!(!dir.path().join("sub/doc.tmp").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn json_file_corruption_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = JsonFile::new(&path).read::<Doc>().unwrap_err();
        assert!(matches!(err, JsonFileError::Corrupt { .. }));
        assert!(err.to_string().contains("doc.json"), "{err}");
    }

    #[test]
    fn json_file_concurrent_updates_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc.json");
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let file = JsonFile::new(path.clone());
                std::thread::spawn(move || {
                    let r: Result<(), JsonFileError> = file.update(|d: &mut Doc| {
                        d.items.push(i);
                        Ok(())
                    });
                    r.unwrap()
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let mut items = JsonFile::new(path).read::<Doc>().unwrap().unwrap().items;
        items.sort();
        assert_eq!(items, (0..8).collect::<Vec<_>>());
    }
}
