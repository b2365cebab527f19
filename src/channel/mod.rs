//! Channel settings: what a site shows about each user's stream (title, description) and who may
//! watch it (the access mode). One async interface, [`ChannelBackend`], in front of where they
//! live: a JSON file under `data_dir` by default, Redis when the cluster is on (the cluster
//! implements this interface; this module does not know it). [`Channels`] caches them for the
//! per-request access check.

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
    /// Every user's settings as last listed in full ([`Channels::refresh`]): what a store outage
    /// falls back to, a user absent from it having the defaults.
    snapshot: Arc<Mutex<Option<HashMap<String, ChannelInfo>>>>,
    /// Where the snapshot is kept on disk (cluster nodes: a node restarted during a Redis outage
    /// still knows who may watch what).
    snapshot_file: Option<crate::util::JsonFile>,
}

impl Channels {
    pub fn new(backend: Arc<dyn ChannelBackend>) -> Self {
        Channels {
            backend,
            cache: Arc::default(),
            snapshot: Arc::default(),
            snapshot_file: None,
        }
    }

    /// Keeps the outage snapshot in `path` too, starting from what it holds.
    pub fn with_snapshot_file(mut self, path: std::path::PathBuf) -> Self {
        let file = crate::util::JsonFile::new(path);
        match file.read::<Vec<ChannelInfo>>() {
            Ok(Some(all)) => {
                let map = all.into_iter().map(|c| (c.user.clone(), c)).collect();
                *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Some(map);
                tracing::info!(path = %file.path().display(), "channel settings snapshot loaded from disk");
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "channel settings snapshot unreadable; ignored"),
        }
        self.snapshot_file = Some(file);
        self
    }

    /// Reads every user's settings into the outage snapshot (and its file, when it changed).
    pub async fn refresh(&self) -> Result<(), ChannelError> {
        let mut all = self.backend.list().await?;
        all.sort_by(|a, b| a.user.cmp(&b.user));
        let map: HashMap<String, ChannelInfo> =
            all.iter().map(|c| (c.user.clone(), c.clone())).collect();
        let changed = {
            let mut snapshot = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
            let changed = snapshot.as_ref() != Some(&map);
            *snapshot = Some(map);
            changed
        };
        if let (true, Some(file)) = (changed, self.snapshot_file.clone()) {
            let saved = tokio::task::spawn_blocking(move || {
                let lock = file.lock()?;
                file.write(&lock, &all)
            })
            .await;
            match saved {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "channel settings snapshot not saved"),
                Err(e) => tracing::warn!(error = %e, "channel settings snapshot task"),
            }
        }
        Ok(())
    }

    /// A user's settings, at most [`CACHE_TTL`] old. When the store does not answer, the last
    /// settings read are used (from the cache, else the last full listing); with neither, the
    /// error (callers fail closed).
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
            Err(e) => {
                let known = cached.map(|(info, _)| info).or_else(|| {
                    let snapshot = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
                    snapshot.as_ref().map(|all| {
                        all.get(user).cloned().unwrap_or_else(|| ChannelInfo {
                            user: user.to_string(),
                            ..Default::default()
                        })
                    })
                });
                match known {
                    Some(info) => {
                        static LOG: crate::util::log_throttle::LogThrottle =
                            crate::util::log_throttle::LogThrottle::new(Duration::from_secs(10));
                        if let Some(suppressed) = LOG.check(user) {
                            tracing::warn!(%user, error = %e, suppressed, "channel store unavailable: using the settings last read");
                        }
                        Ok(info)
                    }
                    None => Err(e),
                }
            }
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

    /// A store that can be switched off, as Redis in an outage.
    struct Flaky {
        inner: ChannelStore,
        down: std::sync::atomic::AtomicBool,
    }

    impl Flaky {
        fn check(&self) -> Result<(), ChannelError> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                Err(ChannelError::Unavailable("down".into()))
            } else {
                Ok(())
            }
        }
    }

    impl ChannelBackend for Flaky {
        fn get<'a>(&'a self, user: &'a str) -> ChannelFuture<'a, ChannelInfo> {
            Box::pin(async move {
                self.check()?;
                self.inner.get(user)
            })
        }
        fn update<'a>(
            &'a self,
            user: &'a str,
            change: &'a ChannelUpdate,
        ) -> ChannelFuture<'a, ChannelInfo> {
            Box::pin(async move {
                self.check()?;
                self.inner.update(user, change)
            })
        }
        fn list(&self) -> ChannelFuture<'_, Vec<ChannelInfo>> {
            Box::pin(async move {
                self.check()?;
                self.inner.list()
            })
        }
    }

    #[tokio::test]
    async fn an_outage_falls_back_to_the_last_listing_and_fails_closed_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let flaky = Arc::new(Flaky {
            inner: ChannelStore::new(dir.path().join("channels.json")),
            down: std::sync::atomic::AtomicBool::new(false),
        });
        let channels = Channels::new(flaky.clone());
        let token = ChannelUpdate {
            access: Some(AccessMode::Token),
            ..Default::default()
        };
        flaky.inner.update("paid", &token).unwrap();
        flaky.down.store(true, std::sync::atomic::Ordering::SeqCst);
        // Never listed, never read: nothing to go by.
        assert!(channels.get("paid").await.is_err());
        flaky.down.store(false, std::sync::atomic::Ordering::SeqCst);
        channels.refresh().await.unwrap();
        flaky.down.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            channels.get("paid").await.unwrap().access,
            AccessMode::Token
        );
        assert_eq!(
            channels.get("free").await.unwrap().access,
            AccessMode::Public
        );
    }
}
