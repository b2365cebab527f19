//! Stream keys in Redis, behind the same [`KeyBackend`] interface as the embedded file: the same
//! SHA-256 hashes, the same refusal of revoked keys by user. Every change is one Lua script
//! (atomic, and it publishes the change on the cluster's event channel), so a key added, rotated
//! or revoked on one node is honoured by every node at its next check.
//!
//! Layout under the configured prefix: `keys` (user → entry JSON), `userhash` (user → hash),
//! `keyhash` (hash → user), `revoked` (hash → user) with `revoked:order` (oldest last, capped).
//!
//! Redis being down is not an outage: checks fall back to an in-memory snapshot of `keyhash` and
//! `revoked`, reloaded every `key_refresh_secs` and on every change event, as long as it is at
//! most `key_snapshot_max_age_secs` old. The snapshot is also kept on disk (hashes only, mode
//! 0600), so a node restarted while Redis is down still checks keys against it, within the
//! same age limit.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use redis::aio::ConnectionManager;
use redis::Script;
use subtle::ConstantTimeEq;

use super::events::EVENTS;
use crate::auth::{hash_key, AuthError, KeyBackend, KeyCheck, KeyEntry, KeyFuture, RevokedEntry};
use crate::util::log_throttle::RateLimit;
use crate::util::{valid_user_name, JsonFile};

/// The snapshot on disk is rewritten when it changes, and at least this often (its age is
/// judged by when it was written).
const SNAPSHOT_REWRITE: Duration = Duration::from_secs(60);

/// Revoked hashes remembered to name the user in refusals (as the embedded store).
const MAX_REVOKED: i64 = 1000;

/// Adds a user's first key. KEYS: keys, userhash, keyhash. ARGV: user, hash, entry, channel.
const ADD: &str = r#"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
redis.call('PUBLISH', ARGV[4], 'keys ' .. ARGV[1])
return 1
"#;

/// Retires a user's key and, with a new hash, replaces it. KEYS: keys, userhash, keyhash,
/// revoked, revoked:order. ARGV: user, channel, max revoked, new hash or '', new entry or ''.
const RETIRE: &str = r#"
local old = redis.call('HGET', KEYS[2], ARGV[1])
if not old then return 0 end
redis.call('HDEL', KEYS[3], old)
redis.call('HSET', KEYS[4], old, ARGV[1])
redis.call('LPUSH', KEYS[5], old)
while redis.call('LLEN', KEYS[5]) > tonumber(ARGV[3]) do
  redis.call('HDEL', KEYS[4], redis.call('RPOP', KEYS[5]))
end
if ARGV[4] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[5])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
  redis.call('HSET', KEYS[3], ARGV[4], ARGV[1])
end
redis.call('PUBLISH', ARGV[2], 'revoked ' .. ARGV[1])
return 1
"#;

/// Imports one user's entry unless the user has a key already. KEYS: keys, userhash, keyhash.
/// ARGV: user, hash, entry.
const IMPORT: &str = r#"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
return 1
"#;

#[derive(Default)]
struct Snapshot {
    valid: HashMap<String, String>,
    revoked: HashMap<String, String>,
    loaded: Option<Instant>,
}

/// The snapshot as kept on disk.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    saved_at: DateTime<Utc>,
    valid: HashMap<String, String>,
    revoked: HashMap<String, String>,
}

/// The Redis key store. Cheap to clone.
#[derive(Clone)]
pub struct RedisKeys {
    redis: ConnectionManager,
    prefix: String,
    snapshot: Arc<RwLock<Snapshot>>,
    max_age: Duration,
    warn: Arc<std::sync::Mutex<RateLimit>>,
    /// Where the snapshot is kept on disk, and when it was last written there.
    file: Option<(JsonFile, Arc<Mutex<Option<Instant>>>)>,
}

fn unavailable(e: redis::RedisError) -> AuthError {
    AuthError::Unavailable(e.to_string())
}

impl RedisKeys {
    pub fn new(redis: ConnectionManager, prefix: &str, max_age: Duration) -> Self {
        RedisKeys {
            redis,
            prefix: prefix.to_string(),
            snapshot: Arc::default(),
            max_age,
            warn: Arc::new(std::sync::Mutex::new(RateLimit::new(Duration::from_secs(
                10,
            )))),
            file: None,
        }
    }

    /// Keeps the snapshot in `path` too, and starts from the one there if it is recent enough.
    pub fn with_snapshot_file(mut self, path: PathBuf) -> Self {
        let file = JsonFile::new(path);
        match file.read::<SnapshotFile>() {
            Ok(Some(saved)) => {
                let age = (Utc::now() - saved.saved_at).to_std().unwrap_or_default();
                if age <= self.max_age {
                    let loaded = Instant::now().checked_sub(age);
                    tracing::info!(
                        keys = saved.valid.len(),
                        age_secs = age.as_secs(),
                        "stream key snapshot loaded from disk (used while Redis does not answer)"
                    );
                    *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Snapshot {
                        valid: saved.valid,
                        revoked: saved.revoked,
                        loaded,
                    };
                } else {
                    tracing::info!(
                        age_secs = age.as_secs(),
                        "stream key snapshot on disk is too old to use"
                    );
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the stream key snapshot on disk"),
        }
        self.file = Some((file, Arc::new(Mutex::new(None))));
        self
    }

    /// Writes the snapshot to disk when it changed or the copy there is getting old.
    async fn save_snapshot(&self, changed: bool) {
        let Some((file, written)) = &self.file else {
            return;
        };
        {
            let mut written = written.lock().unwrap_or_else(|e| e.into_inner());
            if !changed && written.is_some_and(|t| t.elapsed() < SNAPSHOT_REWRITE) {
                return;
            }
            *written = Some(Instant::now());
        }
        let saved = {
            let s = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
            SnapshotFile {
                saved_at: Utc::now(),
                valid: s.valid.clone(),
                revoked: s.revoked.clone(),
            }
        };
        let file = file.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let lock = file.lock()?;
            file.write(&lock, &saved)
        })
        .await;
        if let Ok(Err(e)) = stored {
            tracing::warn!(error = %e, "cannot keep the stream key snapshot on disk");
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn channel(&self) -> String {
        self.key(EVENTS)
    }

    /// Reloads the snapshot the checks fall back to while Redis is down.
    pub async fn refresh(&self) -> Result<(), AuthError> {
        let mut redis = self.redis.clone();
        let (valid, revoked): (HashMap<String, String>, HashMap<String, String>) = redis::pipe()
            .hgetall(self.key("keyhash"))
            .hgetall(self.key("revoked"))
            .query_async(&mut redis)
            .await
            .map_err(unavailable)?;
        let changed = {
            let mut s = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
            let changed = s.valid != valid || s.revoked != revoked;
            *s = Snapshot {
                valid,
                revoked,
                loaded: Some(Instant::now()),
            };
            changed
        };
        self.save_snapshot(changed).await;
        Ok(())
    }

    /// Age of the snapshot, if one was ever loaded.
    pub fn snapshot_age(&self) -> Option<Duration> {
        let s = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        s.loaded.map(|t| t.elapsed())
    }

    async fn check_in_redis(&self, hash: &str) -> Result<KeyCheck, AuthError> {
        let mut redis = self.redis.clone();
        let (valid, revoked): (Option<String>, Option<String>) = redis::pipe()
            .hget(self.key("keyhash"), hash)
            .hget(self.key("revoked"), hash)
            .query_async(&mut redis)
            .await
            .map_err(unavailable)?;
        Ok(match (valid, revoked) {
            (Some(user), _) => KeyCheck::Valid { user },
            (None, Some(user)) => KeyCheck::Revoked { user },
            (None, None) => KeyCheck::Unknown,
        })
    }

    fn check_in_snapshot(&self, hash: &str) -> Option<KeyCheck> {
        let s = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        if s.loaded.is_none_or(|t| t.elapsed() > self.max_age) {
            return None;
        }
        // A hash-map lookup by the hash itself: the hash is not secret-derived in a way a timing
        // difference could reveal (it is SHA-256 of a 160-bit random key); still compared in
        // constant time once found, as the embedded store does.
        let found = |map: &HashMap<String, String>| {
            map.get_key_value(hash)
                .filter(|(k, _)| bool::from(k.as_bytes().ct_eq(hash.as_bytes())))
                .map(|(_, user)| user.clone())
        };
        Some(match (found(&s.valid), found(&s.revoked)) {
            (Some(user), _) => KeyCheck::Valid { user },
            (None, Some(user)) => KeyCheck::Revoked { user },
            (None, None) => KeyCheck::Unknown,
        })
    }

    fn check_user(user: &str) -> Result<(), AuthError> {
        if valid_user_name(user) {
            Ok(())
        } else {
            Err(AuthError::InvalidUser(user.to_string()))
        }
    }

    async fn retire(&self, user: &str, replacement: Option<&KeyEntry>) -> Result<(), AuthError> {
        Self::check_user(user)?;
        let mut redis = self.redis.clone();
        let (hash, entry) = match replacement {
            Some(e) => (
                e.hash.clone(),
                serde_json::to_string(e).map_err(|e| AuthError::Unavailable(e.to_string()))?,
            ),
            None => (String::new(), String::new()),
        };
        let done: i64 = Script::new(RETIRE)
            .key(self.key("keys"))
            .key(self.key("userhash"))
            .key(self.key("keyhash"))
            .key(self.key("revoked"))
            .key(self.key("revoked:order"))
            .arg(user)
            .arg(self.channel())
            .arg(MAX_REVOKED)
            .arg(hash)
            .arg(entry)
            .invoke_async(&mut redis)
            .await
            .map_err(unavailable)?;
        if done == 0 {
            return Err(AuthError::NotFound(user.to_string()));
        }
        Ok(())
    }

    /// Copies the embedded store's keys and revoked hashes into Redis; users who already have a
    /// key in Redis are left alone. Returns (imported, skipped).
    pub async fn import(
        &self,
        keys: &[KeyEntry],
        revoked: &[RevokedEntry],
    ) -> Result<(usize, usize), AuthError> {
        let mut redis = self.redis.clone();
        let (mut imported, mut skipped) = (0, 0);
        for entry in keys {
            Self::check_user(&entry.user)?;
            let json =
                serde_json::to_string(entry).map_err(|e| AuthError::Unavailable(e.to_string()))?;
            let done: i64 = Script::new(IMPORT)
                .key(self.key("keys"))
                .key(self.key("userhash"))
                .key(self.key("keyhash"))
                .arg(&entry.user)
                .arg(&entry.hash)
                .arg(json)
                .invoke_async(&mut redis)
                .await
                .map_err(unavailable)?;
            if done == 1 {
                imported += 1;
            } else {
                skipped += 1;
            }
        }
        for r in revoked {
            let _: () = redis::pipe()
                .hset(self.key("revoked"), &r.hash, &r.user)
                .lpush(self.key("revoked:order"), &r.hash)
                .query_async(&mut redis)
                .await
                .map_err(unavailable)?;
        }
        let _: () = redis::cmd("PUBLISH")
            .arg(self.channel())
            .arg("keys *")
            .query_async(&mut redis)
            .await
            .map_err(unavailable)?;
        Ok((imported, skipped))
    }
}

impl KeyBackend for RedisKeys {
    fn check<'a>(&'a self, key: &'a str) -> KeyFuture<'a, KeyCheck> {
        Box::pin(async move {
            let hash = hash_key(key);
            match self.check_in_redis(&hash).await {
                Ok(answer) => Ok(answer),
                Err(e) => match self.check_in_snapshot(&hash) {
                    Some(answer) => {
                        let held = self.warn.lock().unwrap_or_else(|e| e.into_inner()).check();
                        if let Some(suppressed) = held {
                            tracing::warn!(error = %e, snapshot_age_secs = self.snapshot_age().map(|a| a.as_secs()),
                                suppressed, "Redis unavailable: key checked against the in-memory snapshot");
                        }
                        Ok(answer)
                    }
                    None => Err(e),
                },
            }
        })
    }

    fn add<'a>(&'a self, user: &'a str) -> KeyFuture<'a, String> {
        Box::pin(async move {
            Self::check_user(user)?;
            let (entry, key) = crate::auth::new_entry(user);
            let json =
                serde_json::to_string(&entry).map_err(|e| AuthError::Unavailable(e.to_string()))?;
            let mut redis = self.redis.clone();
            let done: i64 = Script::new(ADD)
                .key(self.key("keys"))
                .key(self.key("userhash"))
                .key(self.key("keyhash"))
                .arg(user)
                .arg(&entry.hash)
                .arg(json)
                .arg(self.channel())
                .invoke_async(&mut redis)
                .await
                .map_err(unavailable)?;
            if done == 0 {
                return Err(AuthError::Exists(user.to_string()));
            }
            Ok(key)
        })
    }

    fn rotate<'a>(&'a self, user: &'a str) -> KeyFuture<'a, String> {
        Box::pin(async move {
            let (entry, key) = crate::auth::new_entry(user);
            self.retire(user, Some(&entry)).await?;
            Ok(key)
        })
    }

    fn revoke<'a>(&'a self, user: &'a str) -> KeyFuture<'a, ()> {
        Box::pin(async move { self.retire(user, None).await })
    }

    fn list(&self) -> KeyFuture<'_, Vec<KeyEntry>> {
        Box::pin(async move {
            let mut redis = self.redis.clone();
            let all: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(self.key("keys"))
                .query_async(&mut redis)
                .await
                .map_err(unavailable)?;
            let mut entries: Vec<KeyEntry> = all
                .values()
                .filter_map(|json| serde_json::from_str(json).ok())
                .collect();
            entries.sort_by(|a, b| a.user.cmp(&b.user));
            Ok(entries)
        })
    }

    fn has_key<'a>(&'a self, user: &'a str) -> KeyFuture<'a, bool> {
        Box::pin(async move {
            let mut redis = self.redis.clone();
            redis::cmd("HEXISTS")
                .arg(self.key("userhash"))
                .arg(user)
                .query_async(&mut redis)
                .await
                .map_err(unavailable)
        })
    }
}
