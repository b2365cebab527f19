//! Stream ownership: which node holds a user's live stream. When a publish is accepted, its node
//! takes a lease in Redis (`<prefix>stream:<user>`: node, HTTP address, fencing token, state)
//! with a short TTL and renews it by compare-and-set on the token — never an unconditional
//! delete, which in the design livegate replaces erased a new owner's mapping. The newest
//! publisher wins across nodes as on one: taking a lease held live by another node announces a
//! takeover, and that node ends its session on the event or at its next renewal (the token no
//! longer matches). Unpublish marks the lease ended (it expires after `ended_ttl`) so late
//! viewers are still routed to the node with the final playlist.
//!
//! Redis errors never end a session: a node keeps publishing and re-takes its lease when Redis
//! answers again. Only a lost lease (another token) does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::Script;
use serde::{Deserialize, Serialize};

use crate::hls::{HlsRegistry, Numbering};
use crate::stream::LiveStream;

/// Segments a predecessor may have made after its last numbering report (reports come with
/// every renewal, a third of the TTL; segments every couple of seconds): the successor skips
/// that many numbers so media sequence numbers only ever rise.
const NUMBERING_SKIP: u64 = 3;

/// Takes the lease. KEYS: stream, gen. ARGV: node, http, ttl ms, channel, user, session.
/// Returns the new token and, when another node held it live, that lease (else ''); it then
/// publishes a takeover.
const TAKE: &str = r#"
local token = redis.call('INCR', KEYS[2])
local prev = redis.call('GET', KEYS[1])
local lease = cjson.encode({node = ARGV[1], http = ARGV[2], token = token, state = 'live', session = tonumber(ARGV[6])})
redis.call('SET', KEYS[1], lease, 'PX', ARGV[3])
if prev then
  local p = cjson.decode(prev)
  if p.state == 'live' and p.node ~= ARGV[1] then
    redis.call('PUBLISH', ARGV[4], 'takeover ' .. ARGV[5] .. ' ' .. token)
    return {token, prev}
  end
end
return {token, ''}
"#;

/// Renews the lease if it is still ours. KEYS: stream. ARGV: token, ttl ms, lease JSON (to put
/// back if Redis lost it, e.g. restarted without persistence).
/// Returns 1 (renewed), 2 (re-established), 0 (lost to another token).
const RENEW: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
  return 2
end
local d = cjson.decode(v)
if tostring(d.token) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;

/// Marks the lease ended if it is still ours. KEYS: stream. ARGV: token, ttl ms.
const END: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local d = cjson.decode(v)
if tostring(d.token) ~= ARGV[1] then return 0 end
d.state = 'ended'
redis.call('SET', KEYS[1], cjson.encode(d), 'PX', ARGV[2])
return 1
"#;

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub node: String,
    pub http: String,
    pub token: i64,
    pub state: String,
    #[serde(default)]
    pub session: u64,
}

impl Lease {
    pub fn is_live(&self) -> bool {
        self.state == "live"
    }
}

/// A routing answer: the lease (None: no stream), and whether it is the last one known
/// because Redis does not answer now.
#[derive(Debug, Clone)]
pub struct Owner {
    pub lease: Option<Lease>,
    pub stale: bool,
}

/// This node's leases.
#[derive(Clone)]
pub struct Leases {
    redis: ConnectionManager,
    prefix: String,
    node: String,
    http: String,
    ttl: Duration,
    ended_ttl: Duration,
    /// user → the token of this node's live lease, for takeover events.
    held: Arc<Mutex<HashMap<String, i64>>>,
    /// Owner lookups for routing: user → (lease, when read).
    cache: Arc<Mutex<OwnerCache>>,
    on_takeover: Arc<std::sync::OnceLock<TakeoverListener>>,
}

/// Told when a session here took its stream over from a live session on another node (the
/// lease it replaced).
pub type TakeoverListener = Box<dyn Fn(&LiveStream, &Lease) + Send + Sync>;

/// user → (the lease read, when).
type OwnerCache = HashMap<String, (Option<Lease>, Instant)>;

const LOOKUP_CACHE: Duration = Duration::from_secs(1);
/// Routing keeps using the last known owner this long while Redis cannot answer.
const STALE_ROUTE: Duration = Duration::from_secs(30);

impl Leases {
    pub fn new(
        redis: ConnectionManager,
        prefix: &str,
        node: &str,
        http: &str,
        ttl: Duration,
    ) -> Self {
        Leases {
            redis,
            prefix: prefix.to_string(),
            node: node.to_string(),
            http: http.trim_end_matches('/').to_string(),
            ttl,
            ended_ttl: Duration::from_secs(60),
            held: Arc::default(),
            cache: Arc::default(),
            on_takeover: Arc::default(),
        }
    }

    /// Sets the takeover listener (once; before streams start).
    pub fn on_takeover(&self, f: impl Fn(&LiveStream, &Lease) + Send + Sync + 'static) {
        if self.on_takeover.set(Box::new(f)).is_err() {
            tracing::warn!("a takeover listener was already set; the new one is ignored");
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn ms(d: Duration) -> u64 {
        d.as_millis() as u64
    }

    /// The new token, and the lease of another node this one took over.
    async fn take(&self, user: &str, session: u64) -> redis::RedisResult<(i64, Option<Lease>)> {
        let mut redis = self.redis.clone();
        let (token, previous): (i64, String) = Script::new(TAKE)
            .key(self.key(&format!("stream:{user}")))
            .key(self.key(&format!("gen:{user}")))
            .arg(&self.node)
            .arg(&self.http)
            .arg(Self::ms(self.ttl))
            .arg(self.key(super::events::EVENTS))
            .arg(user)
            .arg(session)
            .invoke_async(&mut redis)
            .await?;
        Ok((token, serde_json::from_str(&previous).ok()))
    }

    async fn renew(&self, user: &str, lease: &Lease) -> redis::RedisResult<i64> {
        let mut redis = self.redis.clone();
        let json = serde_json::to_string(lease).unwrap_or_default();
        Script::new(RENEW)
            .key(self.key(&format!("stream:{user}")))
            .arg(lease.token)
            .arg(Self::ms(self.ttl))
            .arg(json)
            .invoke_async(&mut redis)
            .await
    }

    async fn end(&self, user: &str, token: i64) -> redis::RedisResult<i64> {
        let mut redis = self.redis.clone();
        Script::new(END)
            .key(self.key(&format!("stream:{user}")))
            .arg(token)
            .arg(Self::ms(self.ended_ttl))
            .invoke_async(&mut redis)
            .await
    }

    /// The lease as stored now.
    async fn current(&self, user: &str) -> redis::RedisResult<Option<Lease>> {
        let mut redis = self.redis.clone();
        let v: Option<String> = redis::cmd("GET")
            .arg(self.key(&format!("stream:{user}")))
            .query_async(&mut redis)
            .await?;
        Ok(v.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// A predecessor on another node: its playlists' numbering, continued here so viewers
    /// moving between nodes see media sequence numbers rise, with a discontinuity.
    async fn resume_numbering(&self, user: &str, hls: &HlsRegistry) {
        let previous = match self.current(user).await {
            Ok(Some(lease)) if lease.node != self.node => lease,
            _ => return,
        };
        let mut redis = self.redis.clone();
        let stored: redis::RedisResult<Option<String>> = redis::cmd("GET")
            .arg(self.key(&format!("numbering:{user}")))
            .query_async(&mut redis)
            .await;
        let Some(numbering) = stored
            .ok()
            .flatten()
            .and_then(|j| serde_json::from_str::<Vec<Numbering>>(&j).ok())
        else {
            return;
        };
        if let Some(live) = hls.get(user) {
            live.write()
                .unwrap_or_else(|e| e.into_inner())
                .continue_after(&numbering, NUMBERING_SKIP);
            tracing::info!(%user, from = %previous.node, "continuing the playlists' numbering of the previous node");
        }
    }

    /// Reports this node's playlist numbering for a successor.
    async fn report_numbering(&self, user: &str, hls: &HlsRegistry) {
        let Some(live) = hls.get(user) else { return };
        let numbering = live.read().unwrap_or_else(|e| e.into_inner()).numbering();
        if numbering.is_empty() {
            return;
        }
        let Ok(json) = serde_json::to_string(&numbering) else {
            return;
        };
        let mut redis = self.redis.clone();
        let stored: redis::RedisResult<()> = redis::cmd("SET")
            .arg(self.key(&format!("numbering:{user}")))
            .arg(json)
            .arg("PX")
            .arg(Self::ms(self.ended_ttl))
            .query_async(&mut redis)
            .await;
        if let Err(e) = stored {
            tracing::debug!(%user, error = %e, "cannot store the playlists' numbering");
        }
    }

    /// Holds the lease for a publish session until it ends (spawned per new stream). A lease
    /// lost to another node's token ends the session here.
    pub async fn hold(self, stream: Arc<LiveStream>, hls: Arc<HlsRegistry>) {
        let user = stream.name.clone();
        self.resume_numbering(&user, &hls).await;
        let every = self.ttl / 3;
        let mut lease: Option<Lease> = None;
        let mut logged_down = false;
        loop {
            if stream.is_ended() {
                break;
            }
            match &lease {
                None => match self.take(&user, stream.session_id).await {
                    Ok((token, previous)) => {
                        tracing::info!(%user, token, node = %self.node, "stream lease taken");
                        if let (Some(previous), Some(report)) = (previous, self.on_takeover.get()) {
                            report(&stream, &previous);
                        }
                        self.held
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(user.clone(), token);
                        lease = Some(Lease {
                            node: self.node.clone(),
                            http: self.http.clone(),
                            token,
                            state: "live".into(),
                            session: stream.session_id,
                        });
                        logged_down = false;
                    }
                    Err(e) => {
                        if !logged_down {
                            tracing::warn!(%user, error = %e, "cannot take the stream lease (Redis); publishing goes on, retrying");
                            logged_down = true;
                        }
                    }
                },
                Some(l) => match self.renew(&user, l).await {
                    Ok(0) => {
                        tracing::warn!(%user, token = l.token,
                            "stream lease lost to a newer publish on another node; ending the session here");
                        stream.stop_session(crate::stream::StopCause::TakenOver);
                        break;
                    }
                    Ok(2) => {
                        tracing::info!(%user, token = l.token, "stream lease re-established (Redis had lost it)");
                        logged_down = false;
                    }
                    Ok(_) => {
                        logged_down = false;
                        self.report_numbering(&user, &hls).await;
                    }
                    Err(e) => {
                        if !logged_down {
                            tracing::warn!(%user, error = %e, "cannot renew the stream lease (Redis); publishing goes on");
                            logged_down = true;
                        }
                    }
                },
            }
            tokio::select! {
                _ = stream.stopped() => {}
                _ = tokio::time::sleep(every) => {}
            }
            // The session may still be draining after a stop: wait until it has ended.
            if stream.stop_requested() {
                while !stream.is_ended() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        if let Some(l) = lease {
            // The final numbering, unless a successor owns the stream already.
            if self
                .current(&user)
                .await
                .is_ok_and(|c| c.is_some_and(|c| c.token == l.token))
            {
                self.report_numbering(&user, &hls).await;
            }
            {
                let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                if held.get(&user) == Some(&l.token) {
                    held.remove(&user);
                }
            }
            match self.end(&user, l.token).await {
                Ok(1) => tracing::debug!(%user, "stream lease marked ended"),
                Ok(_) => {
                    tracing::debug!(%user, "stream lease already taken by another publish; left alone")
                }
                Err(e) => {
                    tracing::warn!(%user, error = %e, "cannot mark the stream lease ended; it expires by itself")
                }
            }
        }
    }

    /// A takeover event: whether this node must end its session of `user` (it holds a live
    /// lease with an older token).
    pub fn taken_over(&self, user: &str, token: i64) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user)
            .is_some_and(|mine| *mine < token)
    }

    /// The owner of `user`'s stream, for routing (cached for a second; the last known owner is
    /// used for a while when Redis cannot answer). None: no lease.
    pub async fn owner(&self, user: &str) -> Result<Owner, redis::RedisError> {
        if let Some((lease, at)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user)
            .cloned()
        {
            if at.elapsed() < LOOKUP_CACHE {
                return Ok(Owner {
                    lease,
                    stale: false,
                });
            }
        }
        let mut redis = self.redis.clone();
        let read: redis::RedisResult<Option<String>> = redis::cmd("GET")
            .arg(self.key(&format!("stream:{user}")))
            .query_async(&mut redis)
            .await;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match read {
            Ok(v) => {
                let lease = v.and_then(|j| serde_json::from_str::<Lease>(&j).ok());
                if cache.len() > 10_000 {
                    cache.retain(|_, (_, at)| at.elapsed() < STALE_ROUTE);
                }
                cache.insert(user.to_string(), (lease.clone(), Instant::now()));
                Ok(Owner {
                    lease,
                    stale: false,
                })
            }
            Err(e) => match cache.get(user) {
                Some((lease, at)) if at.elapsed() < STALE_ROUTE => Ok(Owner {
                    lease: lease.clone(),
                    stale: true,
                }),
                _ => Err(e),
            },
        }
    }

    /// Publishes how many watch `user`'s stream here (its holder counts every viewer: requests
    /// for it reach this node), for the other nodes' stream lists. Kept 15 s.
    pub async fn report_viewers(&self, user: &str, viewers: u64) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
        redis::cmd("SET")
            .arg(self.key(&format!("viewers:{user}")))
            .arg(viewers)
            .arg("PX")
            .arg(15_000)
            .query_async(&mut redis)
            .await
    }

    /// The viewer counts the holders of `users`' streams last reported.
    pub async fn viewers(&self, users: &[String]) -> redis::RedisResult<Vec<Option<u64>>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut redis = self.redis.clone();
        let mut cmd = redis::cmd("MGET");
        for user in users {
            cmd.arg(self.key(&format!("viewers:{user}")));
        }
        cmd.query_async(&mut redis).await
    }

    /// Every lease in Redis (the cluster's streams), for the API.
    pub async fn all(&self) -> Result<Vec<(String, Lease)>, redis::RedisError> {
        let mut redis = self.redis.clone();
        let pattern = self.key("stream:*");
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut redis)
                .await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 || keys.len() > 100_000 {
                break;
            }
        }
        let mut out = Vec::new();
        for key in keys {
            let v: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut redis).await?;
            if let Some(lease) = v.and_then(|j| serde_json::from_str::<Lease>(&j).ok()) {
                let user = key.trim_start_matches(&self.key("stream:")).to_string();
                out.push((user, lease));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}
