//! Who is watching: per stream, the distinct players that made a playlist or segment request in
//! the last `access.viewer_window_secs`, with the peak and the total of distinct viewers of the
//! current publish (the HLS instance). Sans-IO: the caller passes the time.
//!
//! A viewer is named by the playback token's viewer id, else the token, else the session id
//! livegate puts in the playlist URIs it hands out (`/live/<user>/s/<id>/…`); only a client that
//! fetches media playlists directly falls back to its address and user agent. Identities are
//! kept as 64-bit keyed hashes, never as the token.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Viewers tracked per stream at most: beyond it new viewers are not counted (memory stays
/// bounded whatever clients invent as session ids).
pub const MAX_VIEWERS_PER_STREAM: usize = 200_000;
/// Distinct viewers remembered per publish for the total; past it, the total counts every viewer
/// not currently watching as new (an overestimate, documented).
const MAX_SEEN: usize = 200_000;

/// How a request names its viewer.
#[derive(Debug, Clone, Copy)]
pub enum Viewer<'a> {
    /// The token's `vid` claim.
    Id(&'a str),
    /// A token without a viewer id.
    Token(&'a str),
    /// The session id in the URL.
    Session(&'a str),
    /// Neither: the client's address and user agent.
    Client(std::net::IpAddr, &'a str),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AudienceStats {
    /// Watching now.
    pub viewers: usize,
    /// Most watching at once during this publish.
    pub peak: usize,
    /// Distinct viewers during this publish.
    pub total: u64,
}

#[derive(Default)]
struct StreamAudience {
    instance: String,
    last_seen: HashMap<u64, Instant>,
    seen: HashSet<u64>,
    peak: usize,
    total: u64,
    pruned_at: Option<Instant>,
}

/// Expired viewers are dropped at most this often on the request path (a scan of the stream's
/// viewers); the peak may then include viewers gone quiet within the last second.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

impl StreamAudience {
    fn prune(&mut self, now: Instant, window: Duration) {
        self.last_seen
            .retain(|_, at| now.saturating_duration_since(*at) < window);
        self.pruned_at = Some(now);
    }

    fn prune_now_and_then(&mut self, now: Instant, window: Duration) {
        if self
            .pruned_at
            .is_none_or(|at| now.saturating_duration_since(at) >= PRUNE_EVERY)
        {
            self.prune(now, window);
        }
    }
}

pub struct Audience {
    window: Duration,
    hasher: std::collections::hash_map::RandomState,
    streams: Mutex<HashMap<String, StreamAudience>>,
}

impl Audience {
    pub fn new(window: Duration) -> Self {
        Audience {
            window,
            hasher: std::collections::hash_map::RandomState::new(),
            streams: Mutex::default(),
        }
    }

    fn key(&self, viewer: Viewer<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        match viewer {
            Viewer::Id(id) => (0u8, id).hash(&mut h),
            Viewer::Token(t) => (1u8, t).hash(&mut h),
            Viewer::Session(s) => (2u8, s).hash(&mut h),
            Viewer::Client(ip, agent) => (3u8, ip, agent).hash(&mut h),
        }
        h.finish()
    }

    /// Records a request by `viewer` of `stream`'s publish `instance` at `now`.
    pub fn touch(&self, stream: &str, instance: &str, viewer: Viewer<'_>, now: Instant) {
        let key = self.key(viewer);
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let audience = streams.entry(stream.to_string()).or_default();
        if audience.instance != instance {
            // A new publish: its count, peak and total start over (its viewers are counted
            // again at their next request).
            audience.instance = instance.to_string();
            audience.last_seen.clear();
            audience.seen.clear();
            audience.peak = 0;
            audience.total = 0;
        }
        let known = audience.last_seen.contains_key(&key);
        if !known && audience.last_seen.len() >= MAX_VIEWERS_PER_STREAM {
            audience.prune(now, self.window);
            if audience.last_seen.len() >= MAX_VIEWERS_PER_STREAM {
                return;
            }
        }
        audience.last_seen.insert(key, now);
        if !known {
            let new = if audience.seen.len() < MAX_SEEN {
                audience.seen.insert(key)
            } else {
                !audience.seen.contains(&key)
            };
            if new {
                audience.total += 1;
            }
            // Expired viewers must not inflate the peak.
            audience.prune_now_and_then(now, self.window);
            audience.peak = audience.peak.max(audience.last_seen.len());
        }
    }

    /// `stream`'s audience at `now` (zeros when nobody watched).
    pub fn stats(&self, stream: &str, now: Instant) -> AudienceStats {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        match streams.get_mut(stream) {
            Some(a) => {
                a.prune(now, self.window);
                AudienceStats {
                    viewers: a.last_seen.len(),
                    peak: a.peak,
                    total: a.total,
                }
            }
            None => AudienceStats::default(),
        }
    }

    /// Drops expired viewers, and streams in `live` no longer has with nobody left watching;
    /// returns every stream's current viewer count (for the metrics).
    pub fn sweep(&self, now: Instant, live: &dyn Fn(&str) -> bool) -> Vec<(String, usize)> {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.retain(|name, a| {
            a.prune(now, self.window);
            !a.last_seen.is_empty() || live(name)
        });
        streams
            .iter()
            .map(|(name, a)| (name.clone(), a.last_seen.len()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(30);

    #[test]
    fn distinct_viewers_count_until_they_go_quiet() {
        let a = Audience::new(WINDOW);
        let t0 = Instant::now();
        a.touch("alice", "i1", Viewer::Session("s1"), t0);
        a.touch("alice", "i1", Viewer::Session("s1"), t0);
        a.touch("alice", "i1", Viewer::Session("s2"), t0);
        a.touch("alice", "i1", Viewer::Id("v9"), t0);
        // Same string, other kind: another viewer.
        a.touch("alice", "i1", Viewer::Token("s1"), t0);
        assert_eq!(a.stats("alice", t0).viewers, 4);
        let later = t0 + Duration::from_secs(20);
        a.touch("alice", "i1", Viewer::Session("s1"), later);
        let t31 = t0 + Duration::from_secs(31);
        let s = a.stats("alice", t31);
        assert_eq!((s.viewers, s.peak, s.total), (1, 4, 4));
        assert_eq!(a.stats("bob", t31), AudienceStats::default());
    }

    #[test]
    fn a_new_publish_starts_its_peak_and_total_over() {
        let a = Audience::new(WINDOW);
        let t0 = Instant::now();
        for s in ["a", "b", "c"] {
            a.touch("alice", "i1", Viewer::Session(s), t0);
        }
        let t1 = t0 + Duration::from_secs(40);
        a.touch("alice", "i2", Viewer::Session("a"), t1);
        let s = a.stats("alice", t1);
        assert_eq!((s.viewers, s.peak, s.total), (1, 1, 1));
    }

    #[test]
    fn sweep_forgets_ended_streams_once_nobody_watches() {
        let a = Audience::new(WINDOW);
        let t0 = Instant::now();
        a.touch("alice", "i1", Viewer::Session("a"), t0);
        a.touch(
            "bob",
            "i1",
            Viewer::Client("192.0.2.1".parse().unwrap(), "ua"),
            t0,
        );
        let counts = a.sweep(t0, &|_| false);
        assert_eq!(counts.len(), 2);
        let counts = a.sweep(t0 + Duration::from_secs(31), &|name| name == "bob");
        assert_eq!(counts, vec![("bob".to_string(), 0)]);
    }

    #[test]
    fn the_tracked_viewers_are_bounded() {
        let a = Audience::new(WINDOW);
        let t0 = Instant::now();
        for i in 0..MAX_VIEWERS_PER_STREAM + 10 {
            a.touch("alice", "i1", Viewer::Session(&i.to_string()), t0);
        }
        assert_eq!(a.stats("alice", t0).viewers, MAX_VIEWERS_PER_STREAM);
    }
}
