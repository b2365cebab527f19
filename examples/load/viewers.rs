//! Simulated players that request what hls.js requests, on one keep-alive connection each.
//!
//! Classic: the master, one media playlist, its init segment, the last 3 segments, then the
//! playlist again every target duration (half of it when nothing changed, as hls.js does) and
//! every new segment. LL-HLS (`--ll`): the playlist once, then a blocking reload
//! (`_HLS_msn`/`_HLS_part`) for the hinted part and that part, again and again. A share of the
//! viewers (`--switchers`) moves to another rung every few segments, refetching its init.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{Body, Conn};
use crate::process::Sampler;
use crate::stats::{Clock, Local, Stats};

#[derive(clap::Args, Debug, Clone)]
pub struct ViewerArgs {
    /// The server (or edge), `http://host:port`.
    #[arg(long)]
    base: String,
    /// Stream names, comma-separated; viewers are spread over them.
    #[arg(long, value_delimiter = ',')]
    streams: Vec<String>,
    #[arg(long, default_value_t = 100)]
    viewers: usize,
    /// Seconds of load after the ramp.
    #[arg(long, default_value_t = 30)]
    secs: u64,
    /// Seconds over which viewers join (all at once is a thundering herd no site sees).
    #[arg(long, default_value_t = 10)]
    ramp_secs: u64,
    /// LL-HLS: blocking playlist reloads and parts.
    #[arg(long)]
    ll: bool,
    /// Share of viewers that switch rungs every few segments.
    #[arg(long, default_value_t = 0.05)]
    switchers: f64,
    /// The server's process id, for CPU, RSS, threads and file descriptors over time.
    #[arg(long)]
    pid: Option<u32>,
    /// Seconds between progress samples.
    #[arg(long, default_value_t = 5)]
    every: u64,
}

/// What a media playlist says that a player acts on.
#[derive(Debug, Default)]
struct Media {
    target: f64,
    init: Option<String>,
    /// (media sequence number, URI)
    segments: Vec<(u64, String)>,
    /// The hinted next part: (msn, part index, URI).
    hint: Option<(u64, u64, String)>,
    ended: bool,
}

fn attribute<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

fn parse_media(text: &str) -> Media {
    let mut media = Media {
        target: 2.0,
        ..Media::default()
    };
    let mut seq = 0u64;
    let mut in_segment = false;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            media.target = v.trim().parse().unwrap_or(2.0);
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            seq = v.trim().parse().unwrap_or(0);
        } else if line.starts_with("#EXT-X-MAP:") {
            media.init = attribute(line, "URI").map(str::to_string);
        } else if line.starts_with("#EXTINF:") {
            in_segment = true;
        } else if line.starts_with("#EXT-X-PRELOAD-HINT:") && line.contains("TYPE=PART") {
            media.hint = attribute(line, "URI").and_then(|uri| {
                // `<instance>-<msn>.<part>.m4s`
                let name = uri.rsplit('/').next()?.strip_suffix(".m4s")?;
                let (msn, part) = name.rsplit('-').next()?.split_once('.')?;
                Some((msn.parse().ok()?, part.parse().ok()?, uri.to_string()))
            });
        } else if line.starts_with("#EXT-X-ENDLIST") {
            media.ended = true;
        } else if !line.starts_with('#') && !line.trim().is_empty() && in_segment {
            media.segments.push((seq, line.trim().to_string()));
            seq += 1;
            in_segment = false;
        }
    }
    media
}

/// The variant URIs of a master playlist.
fn parse_master(text: &str) -> Vec<String> {
    let mut variants = Vec::new();
    let mut next = false;
    for line in text.lines() {
        if line.starts_with("#EXT-X-STREAM-INF") {
            next = true;
        } else if next && !line.starts_with('#') && !line.trim().is_empty() {
            variants.push(line.trim().to_string());
            next = false;
        }
    }
    variants
}

/// `dir` + a URI relative to it.
fn join(dir: &str, uri: &str) -> String {
    if uri.starts_with('/') {
        uri.to_string()
    } else {
        format!("{dir}{uri}")
    }
}

fn dir_of(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    match path.rfind('/') {
        Some(i) => path[..=i].to_string(),
        None => "/".into(),
    }
}

struct Player {
    conn: Conn,
    stats: Arc<Stats>,
    local: Local,
    clock: Clock,
}

impl Player {
    /// GETs `path`, timing it as `kind`; the body (empty unless kept) when the status is 200.
    async fn get(&mut self, kind: &'static str, path: &str, keep: Body) -> Option<bytes::Bytes> {
        let asked = Instant::now();
        match self.conn.get(path, keep).await {
            Ok(r) if r.status == 200 => {
                self.local.request(kind, asked, &self.clock);
                self.stats.count(r.len);
                Some(r.body)
            }
            Ok(r) => {
                self.stats.count_error();
                self.local.error(format!("{kind}: HTTP {}", r.status));
                None
            }
            Err(e) => {
                self.stats.count_error();
                self.local.error(format!("{kind}: {e}"));
                None
            }
        }
    }
}

async fn play(
    n: usize,
    args: Arc<ViewerArgs>,
    stats: Arc<Stats>,
    (clock, deadline): (Clock, Instant),
) {
    let stream = &args.streams[n % args.streams.len()];
    let mut p = Player {
        conn: Conn::new(&args.base),
        stats: stats.clone(),
        local: Local::default(),
        clock,
    };
    // Every 1/switchers-th viewer switches.
    let switches =
        args.switchers > 0.0 && n.is_multiple_of((1.0 / args.switchers).round().max(1.0) as usize);
    let master_path = format!("/live/{stream}/index.m3u8");
    let mut merged = Instant::now();
    'session: while Instant::now() < deadline {
        let Some(master) = p.get("master", &master_path, Body::Keep).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let variants = parse_master(&String::from_utf8_lossy(&master));
        if variants.is_empty() {
            p.local.error("master: no variant".into());
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let mut rung = n % variants.len();
        let mut playlist = format!("/live/{stream}/{}", variants[rung]);
        let mut next_seq: Option<u64> = None;
        let mut init_of: Option<String> = None;
        let mut since_switch = 0u32;
        let mut hint: Option<(u64, u64, String)> = None;
        while Instant::now() < deadline {
            let dir = dir_of(&playlist);
            let path = match (&hint, args.ll) {
                (Some((msn, part, _)), true) => {
                    format!("{playlist}?_HLS_msn={msn}&_HLS_part={part}")
                }
                _ => playlist.clone(),
            };
            let kind = if hint.is_some() && args.ll {
                "blocking"
            } else {
                "playlist"
            };
            let Some(text) = p.get(kind, &path, Body::Keep).await else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue 'session;
            };
            let media = parse_media(&String::from_utf8_lossy(&text));
            if media.ended {
                break 'session;
            }
            if init_of.as_deref() != media.init.as_deref() {
                if let Some(init) = &media.init {
                    p.get("init", &join(&dir, init), Body::Count).await;
                }
                init_of = media.init.clone();
            }
            let mut got_new = false;
            if args.ll {
                // The part the reload waited for, then block for the next one.
                if let Some((_, _, uri)) = hint.take() {
                    p.get("part", &join(&dir, &uri), Body::Count).await;
                    got_new = true;
                }
                hint = media.hint.clone();
            } else {
                let last = media.segments.last().map_or(0, |s| s.0);
                let from = *next_seq.get_or_insert(last.saturating_sub(2));
                for (seq, uri) in media.segments.iter().filter(|s| s.0 >= from) {
                    p.get("segment", &join(&dir, uri), Body::Count).await;
                    next_seq = Some(seq + 1);
                    got_new = true;
                }
            }
            if got_new {
                since_switch += 1;
            }
            let switch_after = if args.ll { 30 } else { 3 };
            if switches && since_switch >= switch_after && variants.len() > 1 {
                rung = (rung + 1) % variants.len();
                playlist = format!("/live/{stream}/{}", variants[rung]);
                since_switch = 0;
                hint = None;
                continue;
            }
            if !args.ll || hint.is_none() {
                let wait = if got_new {
                    media.target
                } else {
                    media.target / 2.0
                };
                tokio::time::sleep(Duration::from_secs_f64(wait.clamp(0.1, 10.0))).await;
            }
            if merged.elapsed() > Duration::from_secs(5) {
                stats.merge(&mut p.local);
                merged = Instant::now();
            }
        }
    }
    stats.merge(&mut p.local);
}

pub async fn run(args: ViewerArgs) -> serde_json::Value {
    assert!(
        !args.streams.is_empty(),
        "--streams names at least one stream"
    );
    let args = Arc::new(args);
    let stats = Arc::new(Stats::default());
    let start = Instant::now();
    let steady_from = start + Duration::from_secs(args.ramp_secs);
    let deadline = steady_from + Duration::from_secs(args.secs);
    let clock = Clock {
        start,
        steady_from,
        window: Duration::from_secs(args.every.max(1)),
    };
    let mut players = Vec::with_capacity(args.viewers);
    for n in 0..args.viewers {
        let join_at =
            start + Duration::from_secs_f64(args.ramp_secs as f64 * n as f64 / args.viewers as f64);
        let (args, stats) = (args.clone(), stats.clone());
        players.push(tokio::spawn(async move {
            tokio::time::sleep_until(join_at.into()).await;
            play(n, args, stats, (clock, deadline)).await;
        }));
    }
    let mut sampler = args.pid.map(Sampler::new);
    let mut samples = Vec::new();
    let (mut requests, mut bytes, mut errors) = (0u64, 0u64, 0u64);
    let mut last = Instant::now();
    if let Some(s) = sampler.as_mut() {
        s.sample();
    }
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(args.every).min(deadline - Instant::now())).await;
        let secs = last.elapsed().as_secs_f64();
        last = Instant::now();
        let r = stats.requests.load(Ordering::Relaxed);
        let b = stats.bytes.load(Ordering::Relaxed);
        let e = stats.errors.load(Ordering::Relaxed);
        let server = sampler.as_mut().and_then(Sampler::sample);
        let line = serde_json::json!({
            "at_secs": start.elapsed().as_secs_f64().round(),
            "requests_per_sec": ((r - requests) as f64 / secs).round(),
            "mbit_per_sec": ((b - bytes) as f64 * 8.0 / 1e6 / secs).round(),
            "errors": e - errors,
            "server": server,
        });
        eprintln!("{line}");
        samples.push(line);
        (requests, bytes, errors) = (r, b, e);
    }
    for p in players {
        let _ = tokio::time::timeout(Duration::from_secs(15), p).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    serde_json::json!({
        "viewers": args.viewers,
        "streams": args.streams.len(),
        "ll": args.ll,
        "secs": elapsed,
        "requests": stats.requests.load(Ordering::Relaxed),
        "errors": stats.errors.load(Ordering::Relaxed),
        "bytes": stats.bytes.load(Ordering::Relaxed),
        "summary": stats.summary(),
        "samples": samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_a_player_acts_on() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n\
            #EXT-X-MAP:URI=\"init-3.mp4\"\n#EXTINF:2.0,\na-7.m4s\n#EXTINF:2.0,\na-8.m4s\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"a-9.2.m4s\"\n";
        let m = parse_media(text);
        assert_eq!(m.target, 2.0);
        assert_eq!(m.init.as_deref(), Some("init-3.mp4"));
        assert_eq!(
            m.segments,
            vec![(7, "a-7.m4s".into()), (8, "a-8.m4s".into())]
        );
        assert_eq!(m.hint, Some((9, 2, "a-9.2.m4s".into())));
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\ns/ab/360p/index.m3u8\n";
        assert_eq!(
            parse_master(master),
            vec!["s/ab/360p/index.m3u8".to_string()]
        );
        assert_eq!(
            dir_of("/live/a/s/ab/360p/index.m3u8?x=1"),
            "/live/a/s/ab/360p/"
        );
    }
}
