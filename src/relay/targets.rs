//! Where relay targets live, behind one async interface: the embedded file ([`RelayStore`], the
//! default) or the cluster's Redis (implemented where the cluster is). The admin API, the CLI
//! and the relays read and change them only through [`RelayTargets`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::store::{RelayStore, RelayStoreError};
use super::target::RelayTarget;

pub type TargetsFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, RelayStoreError>> + Send + 'a>>;

pub trait RelayTargets: Send + Sync {
    /// Adds a target (at most [`super::MAX_RELAYS_PER_USER`] per user, one per URL); its id is
    /// made unique for the user. The caller has checked that the user has a stream key.
    fn add(&self, target: RelayTarget) -> TargetsFuture<'_, RelayTarget>;
    fn remove<'a>(&'a self, user: &'a str, id: &'a str) -> TargetsFuture<'a, RelayTarget>;
    /// A user's targets (all users' when `user` is None), by user then age.
    fn list<'a>(&'a self, user: Option<&'a str>) -> TargetsFuture<'a, Vec<RelayTarget>>;
}

pub type Targets = Arc<dyn RelayTargets>;

/// Runs a file-store operation off the async threads.
fn blocking<T: Send + 'static>(
    store: &RelayStore,
    f: impl FnOnce(&RelayStore) -> Result<T, RelayStoreError> + Send + 'static,
) -> TargetsFuture<'static, T> {
    let store = store.clone();
    let path = store.path().to_path_buf();
    Box::pin(async move {
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| RelayStoreError::Io {
                path,
                source: std::io::Error::other(format!("relay store task: {e}")),
            })?
    })
}

impl RelayTargets for RelayStore {
    fn add(&self, target: RelayTarget) -> TargetsFuture<'_, RelayTarget> {
        blocking(self, move |s| s.add(target))
    }

    fn remove<'a>(&'a self, user: &'a str, id: &'a str) -> TargetsFuture<'a, RelayTarget> {
        let (user, id) = (user.to_string(), id.to_string());
        blocking(self, move |s| s.remove(&user, &id))
    }

    fn list<'a>(&'a self, user: Option<&'a str>) -> TargetsFuture<'a, Vec<RelayTarget>> {
        let user = user.map(str::to_string);
        blocking(self, move |s| s.list(user.as_deref()))
    }
}
