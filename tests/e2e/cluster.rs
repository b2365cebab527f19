//! Several livegate nodes sharing one real Redis (Debian's redis-server, one per test on a
//! loopback port): keys made on one node publish on another, a revocation on one node ends the
//! live session on another, Redis down is not an outage for key checks, and `keys import`
//! moves an embedded key file into Redis.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{ffmpeg_publish, header, http_get, wait_child, Server, Source};
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

    fn cli(&self, args: &[&str]) -> String {
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
    let url = redis.url();
    Server::start_with(&[
        ("LIVEGATE_CLUSTER_REDIS_URL", url.as_str()),
        ("LIVEGATE_CLUSTER_NODE_ID", id),
        ("LIVEGATE_CLUSTER_KEY_REFRESH_SECS", "1"),
        ("LIVEGATE_TRANSCODE_ENABLED", "false"),
        ("LIVEGATE_HTTP_ADMIN_TOKEN", ADMIN),
        ("LIVEGATE_WHIP_ENABLED", "false"),
    ])
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

#[test]
fn redis_down_is_not_an_outage_for_key_checks() {
    let mut redis = Redis::start();
    let a = node(&redis, "node-a");
    let key = a.add_key("bob");
    // The snapshot reloads every second.
    std::thread::sleep(Duration::from_millis(1500));
    redis.stop();

    // A publish during the outage passes the key check against the snapshot; a wrong key is
    // still refused.
    let mut ffmpeg = publish(&a, &key, 60.0);
    a.wait_master("bob", Duration::from_secs(20));
    assert!(refused(&a, "lg_0000000000000000000000000000000000000000"));
    assert!(a.logs().contains("checked against the in-memory snapshot"));
    let (_, metrics) = a.get("/metrics");
    assert!(metrics.contains("livegate_cluster_redis_up 0"), "{metrics}");

    // A node started while Redis is down serves (health, its own streams) and has no snapshot
    // yet: it refuses as unavailable rather than guessing.
    let b = node(&redis, "node-b");
    assert_eq!(b.get("/healthz").0, 200);
    assert!(refused(&b, &key));
    // Nor can it know where bob's stream is: 503, not 404. A still serves it.
    assert_eq!(b.get("/live/bob/index.m3u8").0, 503);
    assert_eq!(a.get("/live/bob/index.m3u8").0, 200);

    // Redis back: B loads the keys and the same key publishes there; A's stream never stopped.
    redis.spawn();
    // A fresh Redis is empty (no persistence here): the key is added again, as an operator
    // restoring Redis would; B picks it up from the event channel or its next reload.
    let key = {
        let out = a.cli(&["keys", "add", "carol"]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    b.wait_until(Duration::from_secs(10), "node B reconnected", || {
        b.get("/metrics").1.contains("livegate_cluster_redis_up 1")
    });
    // A re-establishes the lease of the stream it kept publishing (the new Redis was empty).
    let back = Instant::now();
    a.wait_until(Duration::from_secs(10), "A's lease re-established", || {
        redis
            .cli(&["GET", "livegate:stream:bob"])
            .contains("node-a")
    });
    eprintln!(
        "Redis back → A's lease re-established after {:?}",
        back.elapsed()
    );
    assert_eq!(b.get("/live/bob/index.m3u8").0, 200, "B routes to A again");
    let (ok, err) = wait_child(publish(&b, &key, 3.0), Duration::from_secs(30));
    assert!(ok, "publishes on B once Redis is back: {err}");
    assert!(
        !a.get("/live/bob/source/index.m3u8")
            .1
            .contains("#EXT-X-ENDLIST"),
        "the stream on A went on through the outage"
    );
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
}

#[test]
fn keys_import_moves_an_embedded_key_file_into_redis() {
    let redis = Redis::start();
    // A single node with its key file first.
    let single = Server::start_with(&[("LIVEGATE_TRANSCODE_ENABLED", "false")]);
    let key = single.add_key("dave");
    single.add_key("erin");
    assert!(single.cli(&["keys", "rotate", "erin"]).status.success());
    // The same data_dir's file, imported into the cluster's Redis by the CLI.
    let url = redis.url();
    let out = Command::new(crate::common::BIN)
        .args(["keys", "import", "--config"])
        .arg(&single.config_path)
        .env("LIVEGATE_CLUSTER_REDIS_URL", &url)
        .output()
        .expect("livegate keys import");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("Imported 2 user(s)"), "{stdout}");
    // A second import leaves them alone.
    let again = Command::new(crate::common::BIN)
        .args(["keys", "import", "--config"])
        .arg(&single.config_path)
        .env("LIVEGATE_CLUSTER_REDIS_URL", &url)
        .output()
        .expect("livegate keys import");
    assert!(String::from_utf8_lossy(&again.stdout).contains("Imported 0 user(s)"));

    let a = node(&redis, "node-a");
    let (ok, err) = wait_child(publish(&a, &key, 3.0), Duration::from_secs(30));
    assert!(
        ok,
        "dave's key from the file publishes on a cluster node: {err}"
    );
    let listed = String::from_utf8_lossy(&a.cli(&["keys", "list"]).stdout).into_owned();
    assert!(
        listed.contains("dave") && listed.contains("erin"),
        "{listed}"
    );
}

fn get_with_headers(server: &Server, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    http_get(&server.url(path))
}

#[test]
fn any_node_serves_any_stream_and_a_publish_on_another_node_takes_over() {
    let redis = Redis::start();
    let a = node(&redis, "node-a");
    let b = node(&redis, "node-b");
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
    assert_eq!(master, a.get_bytes("/live/fred/index.m3u8").1);
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
    let sequence = |text: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
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
        sequence(&after) > sequence(&before),
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
