//! Several livegate nodes sharing one real Redis (Debian's redis-server, one per test on a
//! loopback port): keys made on one node publish on another, a revocation on one node ends the
//! live session on another, Redis down is not an outage for key checks, and `keys import`
//! moves an embedded key file into Redis.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{ffmpeg_publish, header, http_get, parse_master, wait_child, Server, Source};
use crate::record::ADMIN;

/// A redis-server of its own, without persistence; stopped on drop.
pub(crate) struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    pub(crate) fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut redis = Redis { child: None, port };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/setup.sh installs it)");
        self.child = Some(child);
        let start = Instant::now();
        while !self.ping() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ping(&self) -> bool {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "ping"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn node(redis: &Redis, id: &str) -> Server {
    node_with(redis, id, &[])
}

fn node_with(redis: &Redis, id: &str, extra: &[(&str, &str)]) -> Server {
    let url = redis.url();
    let mut env = vec![
        ("LIVEGATE_CLUSTER_REDIS_URL", url.as_str()),
        ("LIVEGATE_CLUSTER_NODE_ID", id),
        ("LIVEGATE_CLUSTER_KEY_REFRESH_SECS", "1"),
        ("LIVEGATE_TRANSCODE_ENABLED", "false"),
        ("LIVEGATE_HTTP_ADMIN_TOKEN", ADMIN),
        ("LIVEGATE_WHIP_ENABLED", "false"),
    ];
    env.extend_from_slice(extra);
    Server::start_with(&env)
}

pub(crate) fn publish(server: &Server, key: &str, seconds: f64) -> Child {
    ffmpeg_publish(
        &server.rtmp_url(key),
        &Source {
            width: 320,
            height: 180,
            seconds,
            ..Source::default()
        },
    )
    .spawn()
    .expect("ffmpeg")
}

/// A publish with `key` on `server` that must be refused: ffmpeg exits with an error at once.
fn refused(server: &Server, key: &str) -> bool {
    let (ok, _) = wait_child(publish(server, key, 5.0), Duration::from_secs(15));
    !ok
}

#[test]
fn keys_made_on_one_node_publish_on_another_and_revocation_reaches_the_live_node() {
    let redis = Redis::start();
    let a = node(&redis, "node-a");
    let b = node(&redis, "node-b");
    let key = a.add_key("alice");
    // Stored hashed in Redis, never in clear.
    assert!(
        redis
            .cli(&["HGET", "livegate:userhash", "alice"])
            .trim()
            .len()
            == 64
    );
    assert!(!redis.cli(&["HGETALL", "livegate:keys"]).contains(&key));
    let listed = String::from_utf8_lossy(&b.cli(&["keys", "list"]).stdout).into_owned();
    assert!(
        listed.contains("alice"),
        "node B lists node A's key: {listed}"
    );

    // Made on A, publishes on B.
    let mut ffmpeg = publish(&b, &key, 60.0);
    b.wait_master("alice", Duration::from_secs(20));

    // Revoked on A (admin API): B ends the live session at once.
    let revoked_at = Instant::now();
    let (status, _) = a.request("DELETE", "/api/v1/keys/alice", Some(ADMIN), None);
    assert_eq!(status, 204);
    b.wait_until(Duration::from_secs(5), "the session on B ends", || {
        b.get("/live/alice/source/index.m3u8")
            .1
            .contains("#EXT-X-ENDLIST")
    });
    let took = revoked_at.elapsed();
    eprintln!("revocation on A → session ended on B after {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    assert!(refused(&b, &key), "the revoked key is refused on B");
    let logs = b.logs();
    assert!(
        logs.contains("revoked or rotated") && logs.contains("alice"),
        "the refusal names the user"
    );

    // A new key on B, rotated on B: the old one is refused on A, the new one publishes there.
    let second = b.add_key("alice");
    let out = b.cli(&["keys", "rotate", "alice"]);
    assert!(out.status.success());
    let rotated = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    assert!(refused(&a, &second));
    let (ok, err) = wait_child(publish(&a, &rotated, 3.0), Duration::from_secs(30));
    assert!(ok, "the rotated key publishes on A: {err}");
}

/// The `#EXT-X-MEDIA-SEQUENCE` of a media playlist (0 when absent).
fn media_sequence(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_twenty_second_redis_outage_is_not_an_outage() {
    let mut redis = Redis::start();
    let a = node(&redis, "node-a");
    let b = node(&redis, "node-b");
    let mut c = node(&redis, "node-c");
    let bob = a.add_key("bob");
    let dave = a.add_key("dave");
    let carol = a.add_key("carol");
    // Every node's snapshot reloads every second (and C keeps its copy on disk).
    std::thread::sleep(Duration::from_millis(1500));
    let mut on_a = publish(&a, &bob, 90.0);
    a.wait_master("bob", Duration::from_secs(20));
    assert_eq!(b.get("/live/bob/index.m3u8").0, 200, "B routes to A");
    // The number after the playlist's last segment.
    let segments_made = |text: &str| media_sequence(text) + text.matches("#EXTINF").count() as u64;
    let made_before = segments_made(&a.get("/live/bob/source/index.m3u8").1);

    redis.stop();
    let outage = Instant::now();

    // A publish on B passes the key check against B's snapshot; a wrong key is still refused.
    let mut on_b = publish(&b, &dave, 90.0);
    b.wait_master("dave", Duration::from_secs(20));
    assert!(b.logs().contains("checked against the in-memory snapshot"));
    assert!(refused(&a, "lg_0000000000000000000000000000000000000000"));
    // B keeps routing viewers to A with the owner it last knew.
    assert_eq!(b.get("/live/bob/index.m3u8").0, 200, "B still routes to A");
    assert!(b
        .get("/metrics")
        .1
        .contains(r#"livegate_cluster_route_fallback_total{reason="stale_owner"}"#));
    assert!(a.get("/metrics").1.contains("livegate_cluster_redis_up 0"));

    // C restarts during the outage: it checks keys against the snapshot it kept on disk and
    // serves its own streams.
    c.kill9();
    c.spawn();
    let mut on_c = publish(&c, &carol, 90.0);
    c.wait_master("carol", Duration::from_secs(20));
    assert!(c.logs().contains("stream key snapshot loaded from disk"));

    // A node that never saw Redis has no snapshot: it refuses as unavailable rather than guess,
    // and cannot know where a stream is (503, not 404).
    let d = node(&redis, "node-d");
    assert_eq!(d.get("/healthz").0, 200);
    assert!(refused(&d, &bob));
    assert_eq!(d.get("/live/bob/index.m3u8").0, 503);

    // 20 s of outage: A's publisher is never interrupted and its HLS keeps advancing.
    while outage.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            on_a.try_wait().expect("ffmpeg").is_none(),
            "A's publisher was interrupted"
        );
    }
    let during = a.get("/live/bob/source/index.m3u8").1;
    assert!(!during.contains("#EXT-X-ENDLIST"), "{during}");
    let made_after = segments_made(&during);
    assert!(
        made_after >= made_before + 8,
        "HLS advanced: {made_before} → {made_after} segments"
    );
    assert!(
        on_b.try_wait().expect("ffmpeg").is_none() && on_c.try_wait().expect("ffmpeg").is_none()
    );

    // Redis back (empty: no persistence here): every node re-registers the streams it holds,
    // C's included, and routing works again in both directions.
    redis.spawn();
    let back = Instant::now();
    for (user, owner) in [("bob", "node-a"), ("dave", "node-b"), ("carol", "node-c")] {
        a.wait_until(Duration::from_secs(10), "the leases re-established", || {
            redis
                .cli(&["GET", &format!("livegate:stream:{user}")])
                .contains(owner)
        });
    }
    eprintln!(
        "20 s Redis outage: every lease re-established {:?} after Redis came back",
        back.elapsed()
    );
    a.wait_until(Duration::from_secs(10), "A routes to C", || {
        let (status, headers, _) = get_with_headers(&a, "/live/carol/index.m3u8");
        status == 200 && header(&headers, "x-livegate-node") == Some("node-c")
    });
    d.wait_until(Duration::from_secs(10), "D routes to B", || {
        let (status, headers, _) = get_with_headers(&d, "/live/dave/index.m3u8");
        status == 200 && header(&headers, "x-livegate-node") == Some("node-b")
    });
    d.wait_until(Duration::from_secs(10), "D reconnected", || {
        d.get("/metrics").1.contains("livegate_cluster_redis_up 1")
    });
    for child in [&mut on_a, &mut on_b, &mut on_c] {
        assert!(
            child.try_wait().expect("ffmpeg").is_none(),
            "a publisher was interrupted"
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn keys_import_moves_an_embedded_store_into_redis_and_relay_targets_live_there() {
    let redis = Redis::start();
    // A single node with its key and relay files first.
    let single = Server::start_with(&[("LIVEGATE_TRANSCODE_ENABLED", "false")]);
    let key = single.add_key("dave");
    single.add_key("erin");
    assert!(single.cli(&["keys", "rotate", "erin"]).status.success());
    let added = single.cli(&[
        "relays",
        "add",
        "dave",
        "custom",
        "rtmp://127.0.0.1:9/app/sink-secret-1",
    ]);
    assert!(added.status.success(), "{added:?}");
    // The same data_dir's files, imported into the cluster's Redis by the CLI.
    let url = redis.url();
    let import = || {
        crate::common::livegate()
            .args(["keys", "import", "--config"])
            .arg(&single.config_path)
            .env("LIVEGATE_CLUSTER_REDIS_URL", &url)
            .output()
            .expect("livegate keys import")
    };
    let out = import();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("Imported 2 user(s)"), "{stdout}");
    assert!(stdout.contains("Imported 1 relay target(s)"), "{stdout}");
    // A second import leaves them alone.
    let again = String::from_utf8_lossy(&import().stdout).into_owned();
    assert!(
        again.contains("Imported 0 user(s)") && again.contains("Imported 0 relay target(s)"),
        "{again}"
    );
    assert!(redis
        .cli(&["HVALS", "livegate:relays:dave"])
        .contains("sink-secret-1"));

    let a = node(&redis, "node-a");
    let b = node(&redis, "node-b");
    let listed = String::from_utf8_lossy(&a.cli(&["keys", "list"]).stdout).into_owned();
    assert!(
        listed.contains("dave") && listed.contains("erin"),
        "{listed}"
    );

    // Relay targets are shared: one added over A's admin API is listed by B's CLI, and the
    // limits hold across nodes.
    let body =
        r#"{"user": "dave", "platform": "custom", "url": "rtmp://127.0.0.1:9/app/sink-secret-2"}"#;
    let (status, _) = a.request("POST", "/api/v1/relays", Some(ADMIN), Some(body));
    assert_eq!(status, 201);
    let (status, _) = b.request("POST", "/api/v1/relays", Some(ADMIN), Some(body));
    assert_eq!(status, 409, "the same URL again, on the other node");
    let listed = String::from_utf8_lossy(&b.cli(&["relays", "list", "dave"]).stdout).into_owned();
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(!listed.contains("sink-secret"), "listed redacted: {listed}");

    // dave's imported key publishes on B, which starts the relays it read from Redis.
    let mut ffmpeg = publish(&b, &key, 30.0);
    b.wait_master("dave", Duration::from_secs(20));
    b.wait_until(Duration::from_secs(10), "B starts both relays", || {
        let streams: serde_json::Value = serde_json::from_str(
            &b.request("GET", "/api/v1/streams?local=1", Some(ADMIN), None)
                .1,
        )
        .unwrap_or_default();
        streams[0]["relays"]
            .as_array()
            .is_some_and(|r| r.len() == 2)
    });
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    let logs = a.logs() + &b.logs();
    assert!(!logs.contains("sink-secret"), "relay keys are not logged");
}

fn get_with_headers(server: &Server, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    http_get(&server.url(path))
}

#[test]
fn any_node_serves_any_stream_and_a_publish_on_another_node_takes_over() {
    let redis = Redis::start();
    // Both nodes tell one site what happens (signed webhooks).
    let (site, seen) = crate::hooks::site();
    let hook = format!(
        "{}/events",
        site.split("/livegate").next().unwrap_or_default()
    );
    let hooks = [
        ("LIVEGATE_HOOKS_WEBHOOK_URL", hook.as_str()),
        ("LIVEGATE_HOOKS_WEBHOOK_SECRET", crate::hooks::SECRET),
    ];
    let a = node_with(&redis, "node-a", &hooks);
    let b = node_with(&redis, "node-b", &hooks);
    let key = a.add_key("fred");
    let on_a = publish(&a, &key, 60.0);
    a.wait_master("fred", Duration::from_secs(20));
    let lease = redis.cli(&["GET", "livegate:stream:fred"]);
    assert!(
        lease.contains("node-a") && lease.contains("live"),
        "{lease}"
    );

    // Node B serves A's stream: the master, the media playlist and a segment, byte for byte.
    let (status, headers, master) = get_with_headers(&b, "/live/fred/index.m3u8");
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-livegate-node"), Some("node-a"));
    // The same master but for each answer's player session id.
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    assert_eq!(
        parse_master(&text(&master)),
        parse_master(&text(&a.get_bytes("/live/fred/index.m3u8").1))
    );
    let playlist =
        String::from_utf8(get_with_headers(&b, "/live/fred/source/index.m3u8").2).unwrap();
    let segment = playlist
        .lines()
        .find(|l| l.ends_with(".m4s"))
        .expect("a segment")
        .to_string();
    let via_b = get_with_headers(&b, &format!("/live/fred/source/{segment}"));
    assert_eq!(via_b.0, 200);
    assert_eq!(
        via_b.2,
        a.get_bytes(&format!("/live/fred/source/{segment}")).1
    );
    assert_eq!(get_with_headers(&b, "/live/nobody/index.m3u8").0, 404);
    let listed = b.get("/api/v1/streams").1;
    assert!(
        listed.contains("\"node\":\"node-a\"") && listed.contains("fred"),
        "{listed}"
    );
    assert!(!b.get("/api/v1/streams?local=1").1.contains("fred"));

    // The same key on node B (OBS reconnecting through a load balancer): A ends its session.
    // Wait for a renewal to have reported A's numbering (every third of the TTL).
    std::thread::sleep(Duration::from_millis(2500));
    let before = a.get("/live/fred/source/index.m3u8").1;
    let started = Instant::now();
    let mut on_b = publish(&b, &key, 60.0);
    a.wait_until(Duration::from_secs(20), "A's session ends", || {
        a.get("/api/v1/streams?local=1").1 == "[]"
    });
    let took = started.elapsed();
    eprintln!("takeover across nodes: A's session ended {took:?} after B's publish started");
    let (_, err) = wait_child(on_a, Duration::from_secs(10));
    assert_ne!(err, "timed out", "A's publisher was disconnected");
    b.wait_until(Duration::from_secs(10), "the lease moves to B", || {
        redis
            .cli(&["GET", "livegate:stream:fred"])
            .contains("node-b")
    });
    // A now proxies to B.
    a.wait_until(Duration::from_secs(10), "A routes to B", || {
        let (status, headers, _) = get_with_headers(&a, "/live/fred/index.m3u8");
        status == 200 && header(&headers, "x-livegate-node") == Some("node-b")
    });
    // Viewers on either node see B's playlist continue A's numbering, with a discontinuity.
    let mut after = String::new();
    a.wait_until(Duration::from_secs(20), "B's first segment", || {
        after = String::from_utf8(get_with_headers(&a, "/live/fred/source/index.m3u8").2)
            .unwrap_or_default();
        after.contains(".m4s")
    });
    assert!(
        media_sequence(&after) > media_sequence(&before),
        "media sequence rises across nodes:\n{before}\n---\n{after}"
    );
    assert!(after.contains("#EXT-X-DISCONTINUITY"), "{after}");
    // A's late end did not erase B's lease.
    std::thread::sleep(Duration::from_millis(2500));
    let lease = redis.cli(&["GET", "livegate:stream:fred"]);
    assert!(
        lease.contains("node-b") && lease.contains("live"),
        "{lease}"
    );
    let _ = on_b.kill();
    let _ = on_b.wait();
    b.wait_until(Duration::from_secs(10), "the lease is marked ended", || {
        redis
            .cli(&["GET", "livegate:stream:fred"])
            .contains("ended")
    });

    // The site heard it all: B's takeover names A's session, A's session ended as taken over.
    use crate::hooks::{events, of_type};
    b.wait_until(Duration::from_secs(10), "both unpublish events", || {
        of_type(&events(&seen), "unpublish").len() == 2
    });
    let events = events(&seen);
    let takeover = of_type(&events, "takeover");
    assert_eq!(takeover.len(), 1, "{events:#?}");
    assert_eq!(takeover[0]["node"], "node-b");
    assert_eq!(takeover[0]["data"]["replaced"]["node"], "node-a");
    let published_on_a = of_type(&events, "publish")
        .into_iter()
        .find(|e| e["node"] == "node-a")
        .expect("A's publish event");
    assert_eq!(
        takeover[0]["data"]["replaced"]["session_id"],
        published_on_a["data"]["session_id"]
    );
    let reasons: Vec<(String, String)> = of_type(&events, "unpublish")
        .iter()
        .map(|e| (e["node"].to_string(), e["data"]["reason"].to_string()))
        .collect();
    assert!(
        reasons.contains(&("\"node-a\"".into(), "\"takeover\"".into())),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("\"node-b\"".into(), "\"publisher\"".into())),
        "{reasons:?}"
    );
}

#[test]
fn a_dead_node_loses_its_lease_within_the_ttl() {
    let redis = Redis::start();
    let url = redis.url();
    let env = [
        ("LIVEGATE_CLUSTER_REDIS_URL", url.as_str()),
        ("LIVEGATE_CLUSTER_NODE_ID", "node-a"),
        ("LIVEGATE_CLUSTER_LEASE_TTL_SECS", "3"),
        ("LIVEGATE_TRANSCODE_ENABLED", "false"),
        ("LIVEGATE_WHIP_ENABLED", "false"),
    ];
    let mut a = Server::start_with(&env);
    let b = node(&redis, "node-b");
    let key = a.add_key("gina");
    let mut ffmpeg = publish(&a, &key, 60.0);
    a.wait_master("gina", Duration::from_secs(20));
    // Renewed: the lease outlives its 3 s TTL, its expiry pushed back each time.
    std::thread::sleep(Duration::from_secs(4));
    let ttl_ms: u64 = redis
        .cli(&["PTTL", "livegate:stream:gina"])
        .trim()
        .parse()
        .unwrap_or(0);
    assert!((1..=3000).contains(&ttl_ms), "lease renewed: PTTL {ttl_ms}");
    b.wait_until(Duration::from_secs(5), "B routes to A", || {
        get_with_headers(&b, "/live/gina/index.m3u8").0 == 200
    });
    a.kill9();
    let killed = Instant::now();
    b.wait_until(Duration::from_secs(10), "the lease expires", || {
        redis.cli(&["EXISTS", "livegate:stream:gina"]).trim() == "0"
    });
    let expired = killed.elapsed();
    eprintln!("kill -9 → lease gone after {expired:?}");
    assert!(expired <= Duration::from_secs(4), "{expired:?}");
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    let mut again = publish(&b, &key, 60.0);
    b.wait_master("gina", Duration::from_secs(20));
    eprintln!(
        "kill -9 → republished and served on B after {:?}",
        killed.elapsed()
    );
    assert!(redis
        .cli(&["GET", "livegate:stream:gina"])
        .contains("node-b"));
    let _ = again.kill();
    let _ = again.wait();
}
