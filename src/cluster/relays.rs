//! Relay targets in Redis when the cluster is on, behind the same [`RelayTargets`] interface as
//! the embedded file: `<prefix>relays:<user>` is a hash of target id → target JSON, and
//! `<prefix>relay-users` the set of users that have any. The limits (per user, one per URL) are
//! checked inside one Lua script, so two nodes adding at once cannot pass them.
//!
//! Target URLs hold the platforms' stream keys: Redis must be private (password or ACL, a
//! private network). A publish reads its user's targets when it starts; while Redis does not
//! answer, the targets last read for that user on this node are used.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redis::aio::ConnectionManager;
use redis::Script;

use crate::relay::targets::TargetsFuture;
use crate::relay::{RelayStoreError, RelayTarget, RelayTargets, MAX_RELAYS_PER_USER};
use crate::util::valid_user_name;

/// KEYS: the user's hash, the users set. ARGV: user, id, url, max, target JSON.
const ADD: &str = r#"
local all = redis.call('HVALS', KEYS[1])
if #all >= tonumber(ARGV[4]) then return 'too_many' end
for _, v in ipairs(all) do
  if cjson.decode(v).url == ARGV[3] then return 'duplicate' end
end
if redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[5]) == 0 then return 'id_taken' end
redis.call('SADD', KEYS[2], ARGV[1])
return 'ok'
"#;

/// KEYS: the user's hash, the users set. ARGV: user, id. Returns the removed JSON, or ''.
const REMOVE: &str = r#"
local v = redis.call('HGET', KEYS[1], ARGV[2])
if not v then return '' end
redis.call('HDEL', KEYS[1], ARGV[2])
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[1]) end
return v
"#;

#[derive(Clone)]
pub struct RedisRelays {
    redis: ConnectionManager,
    prefix: String,
    /// user → the targets last read, for publishes while Redis does not answer.
    last_read: Arc<Mutex<HashMap<String, Vec<RelayTarget>>>>,
}

fn unavailable(e: redis::RedisError) -> RelayStoreError {
    RelayStoreError::Unavailable(format!("Redis: {e}"))
}

fn check_user(user: &str) -> Result<(), RelayStoreError> {
    if valid_user_name(user) {
        Ok(())
    } else {
        Err(RelayStoreError::InvalidUser(user.to_string()))
    }
}

impl RedisRelays {
    pub fn new(redis: ConnectionManager, prefix: &str) -> Self {
        RedisRelays {
            redis,
            prefix: prefix.to_string(),
            last_read: Arc::default(),
        }
    }

    fn user_key(&self, user: &str) -> String {
        format!("{}relays:{user}", self.prefix)
    }

    fn users_key(&self) -> String {
        format!("{}relay-users", self.prefix)
    }

    async fn add_target(&self, mut target: RelayTarget) -> Result<RelayTarget, RelayStoreError> {
        check_user(&target.user)?;
        let mut redis = self.redis.clone();
        // Ids are short: a taken one is replaced and tried again.
        for _ in 0..8 {
            let json = serde_json::to_string(&target)
                .map_err(|e| RelayStoreError::Unavailable(e.to_string()))?;
            let outcome: String = Script::new(ADD)
                .key(self.user_key(&target.user))
                .key(self.users_key())
                .arg(&target.user)
                .arg(&target.id)
                .arg(&target.url)
                .arg(MAX_RELAYS_PER_USER)
                .arg(json)
                .invoke_async(&mut redis)
                .await
                .map_err(unavailable)?;
            match outcome.as_str() {
                "ok" => return Ok(target),
                "too_many" => return Err(RelayStoreError::TooManyRelays(target.user)),
                "duplicate" => return Err(RelayStoreError::DuplicateRelay(target.user)),
                _ => target.id = format!("{:06x}", rand::random::<u32>() & 0xff_ffff),
            }
        }
        Err(RelayStoreError::Unavailable(
            "no free relay id after 8 tries".into(),
        ))
    }

    async fn remove_target(&self, user: &str, id: &str) -> Result<RelayTarget, RelayStoreError> {
        check_user(user)?;
        let mut redis = self.redis.clone();
        let removed: String = Script::new(REMOVE)
            .key(self.user_key(user))
            .key(self.users_key())
            .arg(user)
            .arg(id)
            .invoke_async(&mut redis)
            .await
            .map_err(unavailable)?;
        serde_json::from_str(&removed).map_err(|_| RelayStoreError::RelayNotFound {
            user: user.to_string(),
            id: id.chars().take(32).collect(),
        })
    }

    async fn user_targets(&self, user: &str) -> Result<Vec<RelayTarget>, RelayStoreError> {
        let mut redis = self.redis.clone();
        let read: redis::RedisResult<Vec<String>> = redis::cmd("HVALS")
            .arg(self.user_key(user))
            .query_async(&mut redis)
            .await;
        let mut last_read = self.last_read.lock().unwrap_or_else(|e| e.into_inner());
        match read {
            Ok(values) => {
                let targets: Vec<RelayTarget> = values
                    .iter()
                    .filter_map(|v| serde_json::from_str(v).ok())
                    .collect();
                last_read.insert(user.to_string(), targets.clone());
                Ok(targets)
            }
            Err(e) => match last_read.get(user) {
                Some(targets) => {
                    tracing::warn!(%user, error = %e, "Redis does not answer: using the relay targets last read");
                    Ok(targets.clone())
                }
                None => Err(unavailable(e)),
            },
        }
    }

    async fn list_targets(&self, user: Option<&str>) -> Result<Vec<RelayTarget>, RelayStoreError> {
        let users = match user {
            Some(user) => {
                check_user(user)?;
                vec![user.to_string()]
            }
            None => {
                let mut redis = self.redis.clone();
                redis::cmd("SMEMBERS")
                    .arg(self.users_key())
                    .query_async(&mut redis)
                    .await
                    .map_err(unavailable)?
            }
        };
        let mut all = Vec::new();
        for user in users {
            all.extend(self.user_targets(&user).await?);
        }
        all.sort_by(|a, b| (&a.user, a.created_at).cmp(&(&b.user, b.created_at)));
        Ok(all)
    }

    /// Copies targets (an embedded store's) into Redis; ones already there (same user and URL)
    /// are skipped. Returns (imported, skipped).
    pub async fn import(&self, targets: &[RelayTarget]) -> Result<(usize, usize), RelayStoreError> {
        let (mut imported, mut skipped) = (0, 0);
        for target in targets {
            match self.add_target(target.clone()).await {
                Ok(_) => imported += 1,
                Err(RelayStoreError::DuplicateRelay(_)) => skipped += 1,
                Err(e) => return Err(e),
            }
        }
        Ok((imported, skipped))
    }
}

impl RelayTargets for RedisRelays {
    fn add(&self, target: RelayTarget) -> TargetsFuture<'_, RelayTarget> {
        Box::pin(self.add_target(target))
    }

    fn remove<'a>(&'a self, user: &'a str, id: &'a str) -> TargetsFuture<'a, RelayTarget> {
        Box::pin(self.remove_target(user, id))
    }

    fn list<'a>(&'a self, user: Option<&'a str>) -> TargetsFuture<'a, Vec<RelayTarget>> {
        Box::pin(self.list_targets(user))
    }
}
