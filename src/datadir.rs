//! Exclusive ownership of `data_dir` by one serving process.
//!
//! Two servers on one `data_dir` would each recover (and delete) the other's live recording
//! spool and race on the key store, so `serve` holds an `flock` on `data_dir/livegate.lock` for
//! its whole life. The kernel drops the lock when the process ends, however it ends, so a crash
//! never leaves a stale lock behind (unlike a pid file). The file holds the owner's pid so the
//! error can name it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const LOCK_FILE: &str = "livegate.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("data_dir {dir} is in use by another livegate process{owner}; stop it or give this one another data_dir")]
    InUse { dir: PathBuf, owner: String },
    #[error("cannot lock data_dir ({path}): {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held while the server runs; dropping it (or the process ending) releases `data_dir`.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock without waiting; fails at once if another process holds it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a file descriptor this function owns; no memory is shared with it.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let owner = match text.trim().parse::<u32>() {
                    Ok(pid) => format!(" (pid {pid})"),
                    Err(_) => String::new(),
                };
                return Err(LockError::InUse {
                    dir: dir.to_path_buf(),
                    owner,
                });
            }
            return Err(io(error));
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DataDirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataDirLock::acquire(dir.path()).expect("first lock");
        // flock locks belong to the open file description, so a second open in the same
        // process conflicts exactly as another process would.
        match DataDirLock::acquire(dir.path()) {
            Err(LockError::InUse { owner, .. }) => {
                assert_eq!(owner, format!(" (pid {})", std::process::id()));
            }
            other => panic!("second lock: {other:?}"),
        }
        drop(first);
        DataDirLock::acquire(dir.path()).expect("lock after release");
    }
}
