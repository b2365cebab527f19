//! The embedded channel store: `<data_dir>/channels.json`, shared by the server and the CLI
//! (writes are locked read-modify-write cycles with atomic renames: [`JsonFile`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{check_user, ChannelBackend, ChannelError, ChannelFuture, ChannelInfo, ChannelUpdate};
use crate::util::JsonFile;

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoreFile {
    #[serde(default)]
    channels: Vec<ChannelInfo>,
}

#[derive(Debug, Clone)]
pub struct ChannelStore {
    file: JsonFile,
}

impl ChannelStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ChannelStore {
            file: JsonFile::new(path),
        }
    }

    pub fn get(&self, user: &str) -> Result<ChannelInfo, ChannelError> {
        let store: StoreFile = self.file.read()?.unwrap_or_default();
        Ok(store
            .channels
            .into_iter()
            .find(|c| c.user == user)
            .unwrap_or_else(|| ChannelInfo {
                user: user.to_string(),
                ..Default::default()
            }))
    }

    pub fn update(&self, user: &str, change: &ChannelUpdate) -> Result<ChannelInfo, ChannelError> {
        check_user(user)?;
        self.file.update(|store: &mut StoreFile| {
            let at = match store.channels.iter().position(|c| c.user == user) {
                Some(at) => at,
                None => {
                    store.channels.push(ChannelInfo {
                        user: user.to_string(),
                        ..Default::default()
                    });
                    store.channels.len() - 1
                }
            };
            let mut info = store.channels[at].clone();
            change.apply(&mut info)?;
            store.channels[at] = info.clone();
            Ok(info)
        })
    }

    pub fn list(&self) -> Result<Vec<ChannelInfo>, ChannelError> {
        let store: StoreFile = self.file.read()?.unwrap_or_default();
        Ok(store.channels)
    }
}

/// Runs one file-store call on the blocking pool.
fn blocking<T: Send + 'static>(
    store: &ChannelStore,
    f: impl FnOnce(&ChannelStore) -> Result<T, ChannelError> + Send + 'static,
) -> ChannelFuture<'static, T> {
    let store = store.clone();
    Box::pin(async move {
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| ChannelError::Store(format!("channel store task: {e}")))?
    })
}

impl ChannelBackend for ChannelStore {
    fn get<'a>(&'a self, user: &'a str) -> ChannelFuture<'a, ChannelInfo> {
        let user = user.to_string();
        blocking(self, move |s| s.get(&user))
    }

    fn update<'a>(
        &'a self,
        user: &'a str,
        change: &'a ChannelUpdate,
    ) -> ChannelFuture<'a, ChannelInfo> {
        let user = user.to_string();
        let change = change.clone();
        blocking(self, move |s| s.update(&user, &change))
    }

    fn list(&self) -> ChannelFuture<'_, Vec<ChannelInfo>> {
        blocking(self, |s| s.list())
    }
}
