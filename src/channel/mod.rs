//! Channel settings: what a site shows about each user's stream (title, description) and who may
//! watch it (the access mode). One async interface, [`ChannelBackend`], in front of where they
//! live: a JSON file under `data_dir` by default, Redis when the cluster is on
//! (`crate::cluster::channels`). [`Channels`] caches them for the per-request access check.

mod embedded;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use embedded::ChannelStore;

/// Longest title and description, in characters.
pub const MAX_TITLE_CHARS: usize = 140;
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
/// How long a cached setting is trusted before it is read again (a change made on another node
/// or by the CLI takes effect within this).
const CACHE_TTL: Duration = Duration::from_secs(2);
/// Users whose settings are cached at most (a cache miss costs one store read).
const MAX_CACHED: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("user name {0:?} is not valid: use 1-64 of a-z, 0-9, '_' and '-'")]
    InvalidUser(String),
    #[error("{0}")]
    Invalid(String),
    #[error("channel store: {0}")]
    Store(String),
    /// A networked store (Redis) did not answer in time or refused the command.
    #[error("channel store unavailable: {0}")]
    Unavailable(String),
}

impl From<crate::util::JsonFileError> for ChannelError {
    fn from(e: crate::util::JsonFileError) -> Self {
        ChannelError::Store(e.to_string())
    }
}

/// Who may play a stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessMode {
    /// Anyone with the URL.
    #[default]
    Public,
    /// Every HLS request needs a valid playback token for the stream.
    Token,
}

impl std::str::FromStr for AccessMode {
    type Err = ChannelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "public" => Ok(AccessMode::Public),
            "token" => Ok(AccessMode::Token),
            _ => Err(ChannelError::Invalid(format!(
                "access mode {s:?}: use \"public\" or \"token\""
            ))),
        }
    }
}

/// One user's settings. A user never configured has the defaults (public, no title).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelInfo {
    pub user: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub access: AccessMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// A change to a user's settings: only the fields given change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelUpdate {
    pub title: Option<String>,
    pub description: Option<String>,
    pub access: Option<AccessMode>,
}

impl ChannelUpdate {
    /// Applies the change after checking it; `info` is untouched on error.
    pub fn apply(&self, info: &mut ChannelInfo) -> Result<(), ChannelError> {
        let clean = |text: &str, max: usize, what: &str| {
            let text = text.trim();
            if text.chars().count() > max {
                return Err(ChannelError::Invalid(format!(
                    "{what} is longer than {max} characters"
                )));
            }
            // Control characters other than newlines (descriptions) have no place in a page.
            if text.chars().any(|c| c.is_control() && c != '\n') {
                return Err(ChannelError::Invalid(format!(
                    "{what} contains control characters"
                )));
            }
            Ok(text.to_string())
        };
        let title = self
            .title
            .as_deref()
            .map(|t| clean(t, MAX_TITLE_CHARS, "title"))
            .transpose()?;
        if title.as_deref().is_some_and(|t| t.contains('\n')) {
            return Err(ChannelError::Invalid("title must be one line".into()));
        }
        let description = self
            .description
            .as_deref()
            .map(|d| clean(d, MAX_DESCRIPTION_CHARS, "description"))
            .transpose()?;
        if let Some(t) = title {
            info.title = t;
        }
        if let Some(d) = description {
            info.description = d;
        }
        if let Some(a) = self.access {
            info.access = a;
        }
        info.updated_at = Some(Utc::now());
        Ok(())
    }
}

pub fn check_user(user: &str) -> Result<(), ChannelError> {
    if crate::util::valid_user_name(user) {
        Ok(())
    } else {
        Err(ChannelError::InvalidUser(user.to_string()))
    }
}

/// A boxed future of a store answer (the trait is used as `dyn ChannelBackend`).
pub type ChannelFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ChannelError>> + Send + 'a>>;

/// Where channel settings live.
pub trait ChannelBackend: Send + Sync {
    /// A user's settings (the defaults when never set).
    fn get<'a>(&'a self, user: &'a str) -> ChannelFuture<'a, ChannelInfo>;
    /// Applies a change; returns the new settings.
    fn update<'a>(
        &'a self,
        user: &'a str,
        change: &'a ChannelUpdate,
    ) -> ChannelFuture<'a, ChannelInfo>;
    /// Every user with settings.
    fn list(&self) -> ChannelFuture<'_, Vec<ChannelInfo>>;
}

/// The store behind a short cache: the access check runs on every HLS request.
#[derive(Clone)]
pub struct Channels {
    backend: Arc<dyn ChannelBackend>,
    cache: Arc<Mutex<HashMap<String, (ChannelInfo, Instant)>>>,
}

impl Channels {
    pub fn new(backend: Arc<dyn ChannelBackend>) -> Self {
        Channels {
            backend,
            cache: Arc::default(),
        }
    }

    /// A user's settings, at most [`CACHE_TTL`] old. When the store does not answer, the last
    /// settings read are used; with none, the error (callers fail closed).
    pub async fn get(&self, user: &str) -> Result<ChannelInfo, ChannelError> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user)
            .cloned();
        if let Some((info, at)) = &cached {
            if at.elapsed() < CACHE_TTL {
                return Ok(info.clone());
            }
        }
        match self.backend.get(user).await {
            Ok(info) => {
                self.remember(&info);
                Ok(info)
            }
            Err(e) => match cached {
                Some((info, _)) => {
                    tracing::warn!(%user, error = %e, "channel store unavailable: using the settings last read");
                    Ok(info)
                }
                None => Err(e),
            },
        }
    }

    pub async fn update(
        &self,
        user: &str,
        change: &ChannelUpdate,
    ) -> Result<ChannelInfo, ChannelError> {
        check_user(user)?;
        let info = self.backend.update(user, change).await?;
        self.remember(&info);
        Ok(info)
    }

    pub async fn list(&self) -> Result<Vec<ChannelInfo>, ChannelError> {
        self.backend.list().await
    }

    fn remember(&self, info: &ChannelInfo) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(info.user.clone(), (info.clone(), Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_changes_only_what_it_names_and_checks_it() {
        let mut info = ChannelInfo {
            user: "alice".into(),
            title: "Old".into(),
            ..Default::default()
        };
        ChannelUpdate {
            access: Some(AccessMode::Token),
            ..Default::default()
        }
        .apply(&mut info)
        .unwrap();
        assert_eq!(info.title, "Old");
        assert_eq!(info.access, AccessMode::Token);
        let long = ChannelUpdate {
            title: Some("x".repeat(MAX_TITLE_CHARS + 1)),
            ..Default::default()
        };
        assert!(long.apply(&mut info).is_err());
        let two_lines = ChannelUpdate {
            title: Some("a\nb".into()),
            ..Default::default()
        };
        assert!(two_lines.apply(&mut info).is_err());
        let control = ChannelUpdate {
            description: Some("a\u{7}b".into()),
            ..Default::default()
        };
        assert!(control.apply(&mut info).is_err());
        assert_eq!(info.title, "Old");
        assert_eq!("token".parse::<AccessMode>().unwrap(), AccessMode::Token);
        assert!("paid".parse::<AccessMode>().is_err());
    }

    #[tokio::test]
    async fn the_cache_serves_the_last_read_settings_and_sees_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChannelStore::new(dir.path().join("channels.json"));
        let channels = Channels::new(Arc::new(store.clone()));
        assert_eq!(
            channels.get("alice").await.unwrap().access,
            AccessMode::Public
        );
        let change = ChannelUpdate {
            access: Some(AccessMode::Token),
            title: Some("Live now".into()),
            ..Default::default()
        };
        channels.update("alice", &change).await.unwrap();
        let got = channels.get("alice").await.unwrap();
        assert_eq!(
            (got.access, got.title.as_str()),
            (AccessMode::Token, "Live now")
        );
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(channels.update("Not A Name", &change).await.is_err());
    }
}
