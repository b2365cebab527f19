//! Playback access: the tokens a `token`-mode stream needs ([`token`]) and the secret they are
//! signed with. Which streams need one is a channel setting (`crate::channel`); the HTTP layer
//! checks each request.

mod token;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use token::{Claims, TokenError, TokenKey, MAX_CLAIM_LEN, MAX_TOKEN_LEN};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("token secret {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token secret {path} is empty or shorter than 32 characters")]
    TooShort { path: PathBuf },
    #[error("token secret refused: {0}")]
    Refused(String),
}

/// The playback-token key: `access.token_secret` when set (every node of a cluster and the site
/// share it), else a secret generated once into `<data_dir>/access-secret` (mode 0600) so tokens
/// survive restarts.
pub fn load_key(config: &Config) -> Result<TokenKey, SecretError> {
    let leeway = config.access.token_leeway_secs;
    if !config.access.token_secret.is_empty() {
        return TokenKey::new(config.access.token_secret.as_bytes(), leeway)
            .map_err(SecretError::Refused);
    }
    let secret = generated_secret(&config.data_dir.join("access-secret"))?;
    TokenKey::new(secret.as_bytes(), leeway).map_err(SecretError::Refused)
}

fn generated_secret(path: &Path) -> Result<String, SecretError> {
    let io = |source| SecretError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let secret = text.trim().to_string();
            if secret.len() < 32 {
                return Err(SecretError::TooShort {
                    path: path.to_path_buf(),
                });
            }
            return Ok(secret);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(secret.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok(secret)
        }
        // Another process (the CLI, a second start) created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => generated_secret(path),
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_secret_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/access-secret");
        let first = generated_secret(&path).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(generated_secret(&path).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "short").unwrap();
        assert!(matches!(
            generated_secret(&path),
            Err(SecretError::TooShort { .. })
        ));
    }
}
