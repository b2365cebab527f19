//! Channel settings in Redis when the cluster is on, behind the same [`ChannelBackend`] interface
//! as the embedded file: `<prefix>channels` is a hash of user → settings JSON. An update is a
//! read-modify-write under WATCH, so two nodes changing one user at once cannot lose a field.

use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use crate::channel::{
    check_user, ChannelBackend, ChannelError, ChannelFuture, ChannelInfo, ChannelUpdate,
};

/// Attempts of one update before it is refused as contended.
const UPDATE_ATTEMPTS: usize = 5;

#[derive(Clone)]
pub struct RedisChannels {
    redis: ConnectionManager,
    key: String,
}

fn unavailable(e: redis::RedisError) -> ChannelError {
    ChannelError::Unavailable(format!("Redis: {e}"))
}

fn decode(user: &str, json: Option<String>) -> Result<ChannelInfo, ChannelError> {
    match json {
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| ChannelError::Store(format!("settings of {user:?} in Redis: {e}"))),
        None => Ok(ChannelInfo {
            user: user.to_string(),
            ..Default::default()
        }),
    }
}

impl RedisChannels {
    pub fn new(redis: ConnectionManager, prefix: &str) -> Self {
        RedisChannels {
            redis,
            key: format!("{prefix}channels"),
        }
    }

    async fn read(&self, user: &str) -> Result<ChannelInfo, ChannelError> {
        let mut redis = self.redis.clone();
        let json: Option<String> = redis.hget(&self.key, user).await.map_err(unavailable)?;
        decode(user, json)
    }

    async fn write(&self, user: &str, change: &ChannelUpdate) -> Result<ChannelInfo, ChannelError> {
        check_user(user)?;
        // A ConnectionManager multiplexes commands from every task, so WATCH (per connection)
        // is not safe on it: a compare-and-set in Lua does the same job.
        let script = redis::Script::new(
            r"local v = redis.call('HGET', KEYS[1], ARGV[1])
              if (v or '') ~= ARGV[2] then return 0 end
              redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
              return 1",
        );
        for _ in 0..UPDATE_ATTEMPTS {
            let mut redis = self.redis.clone();
            let before: Option<String> = redis.hget(&self.key, user).await.map_err(unavailable)?;
            let mut info = decode(user, before.clone())?;
            change.apply(&mut info)?;
            let json =
                serde_json::to_string(&info).map_err(|e| ChannelError::Store(e.to_string()))?;
            let done: i64 = script
                .key(&self.key)
                .arg(user)
                .arg(before.unwrap_or_default())
                .arg(json)
                .invoke_async(&mut redis)
                .await
                .map_err(unavailable)?;
            if done == 1 {
                return Ok(info);
            }
        }
        Err(ChannelError::Unavailable(
            "settings changed concurrently too often; try again".into(),
        ))
    }

    async fn all(&self) -> Result<Vec<ChannelInfo>, ChannelError> {
        let mut redis = self.redis.clone();
        let all: std::collections::HashMap<String, String> =
            redis.hgetall(&self.key).await.map_err(unavailable)?;
        let mut out = all
            .into_iter()
            .map(|(user, json)| decode(&user, Some(json)))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(out)
    }
}

impl ChannelBackend for RedisChannels {
    fn get<'a>(&'a self, user: &'a str) -> ChannelFuture<'a, ChannelInfo> {
        Box::pin(self.read(user))
    }

    fn update<'a>(
        &'a self,
        user: &'a str,
        change: &'a ChannelUpdate,
    ) -> ChannelFuture<'a, ChannelInfo> {
        Box::pin(self.write(user, change))
    }

    fn list(&self) -> ChannelFuture<'_, Vec<ChannelInfo>> {
        Box::pin(self.all())
    }
}
