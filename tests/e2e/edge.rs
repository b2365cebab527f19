//! The shipped nginx edge (`nginx/livegate-edge.conf`, with test ports and paths substituted) run
//! by Debian's nginx in front of two cluster nodes: viewers reach a stream on either node, the
//! edge caches segments (a crowd asking for one segment reaches the origin once) and playlists
//! for at most a second, and hls.js plays through it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::{node, publish, Redis};
use crate::common::{header as common_header, http_get, play_in_chromium, Server};

pub(crate) struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    pub(crate) fn start(upstreams: &[u16]) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("nginx/livegate-edge.conf"),
        )
        .expect("nginx/livegate-edge.conf");
        let servers: String = upstreams
            .iter()
            .map(|p| format!("server 127.0.0.1:{p};\n"))
            .collect();
        let d = dir.path().display();
        let edge = shipped
            .replace("/var/cache/nginx/livegate", &format!("{d}/cache"))
            .replace(
                "server 127.0.0.1:8080;          # every livegate node, e.g. server 10.0.0.5:8080;",
                &servers,
            )
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
        assert!(
            edge.contains(&servers) && edge.contains(&port.to_string()),
            "{edge}"
        );
        std::fs::write(dir.path().join("edge.conf"), edge).unwrap();
        let main = format!(
            "user root;\ndaemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n  log_format edge '$request_uri $upstream_cache_status $upstream_addr';\n  \
             access_log {d}/access.log edge;\n  client_body_temp_path {d}/body;\n  \
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  \
             scgi_temp_path {d}/scgi;\n  include {d}/edge.conf;\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
        let child = Command::new("nginx")
            .args(["-e", &format!("{d}/error.log"), "-p"])
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nginx (scripts/setup.sh installs it)");
        let nginx = Nginx { child, port, dir };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nginx did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Requests for `uri` that went to the origin (the access log's upstream address is set).
    pub(crate) fn origin_fetches(&self, uri: &str) -> usize {
        let log = std::fs::read_to_string(self.access_log()).unwrap_or_default();
        log.lines()
            .filter(|l| l.split(' ').next() == Some(uri) && !l.ends_with(" -"))
            .count()
    }

    fn access_log(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }
}

impl Drop for Nginx {
    /// SIGTERM to the master, which stops its workers (a SIGKILL would leave them running).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(url: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    http_get(url)
}

fn header(headers: &[(String, String)], name: &str) -> String {
    common_header(headers, name).unwrap_or_default().to_string()
}

#[test]
fn nginx_edge_caches_in_front_of_two_nodes() {
    let redis = Redis::start();
    let a = node(&redis, "node-a");
    let b = node(&redis, "node-b");
    let edge = Nginx::start(&[a.http_port, b.http_port]);
    let key = a.add_key("hana");
    let mut ffmpeg = publish(&a, &key, 60.0);
    a.wait_master("hana", Duration::from_secs(20));

    // Through the edge, whichever node nginx picks: the playlists, with livegate's CORS header.
    for _ in 0..4 {
        let (status, headers, _) = get(&edge.url("/live/hana/index.m3u8"));
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "access-control-allow-origin"), "*");
    }
    // A crowd asking for one segment at once reaches the origin once.
    a.wait_until(Duration::from_secs(20), "three segments", || {
        a.get("/live/hana/source/index.m3u8")
            .1
            .matches(".m4s")
            .count()
            >= 3
    });
    let playlist = a.get("/live/hana/source/index.m3u8").1;
    let segment = playlist
        .lines()
        .rfind(|l| l.ends_with(".m4s"))
        .expect("a segment")
        .to_string();
    let uri = format!("/live/hana/source/{segment}");
    let crowd: Vec<_> = (0..20)
        .map(|_| {
            let url = edge.url(&uri);
            std::thread::spawn(move || get(&url))
        })
        .collect();
    let bodies: Vec<_> = crowd
        .into_iter()
        .map(|t| t.join().expect("request"))
        .collect();
    let origin = a.get_bytes(&uri).1;
    assert!(
        bodies.iter().all(|(s, _, b)| *s == 200 && *b == origin),
        "every viewer got the segment"
    );
    assert_eq!(
        edge.origin_fetches(&uri),
        1,
        "20 concurrent requests, one origin fetch"
    );
    let (_, headers, _) = get(&edge.url(&uri));
    assert_eq!(header(&headers, "x-cache-status"), "HIT");

    // Playlists: 40 requests over 2 s cost the origin about one a second.
    let media = "/live/hana/source/index.m3u8";
    let before = edge.origin_fetches(media);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        assert_eq!(get(&edge.url(media)).0, 200);
        std::thread::sleep(Duration::from_millis(50));
    }
    let fetched = edge.origin_fetches(media) - before;
    eprintln!("media playlist: {fetched} origin fetches for ~40 requests over 2 s");
    assert!((1..=4).contains(&fetched), "{fetched} origin fetches");

    // Figures for the record (not asserted): request latency on the owner, through the other
    // node, and through the edge (cache warm), for the media playlist and a segment.
    for (what, path) in [("playlist", media.to_string()), ("segment", uri.clone())] {
        for (via, base) in [
            ("owner", a.url("")),
            ("other node", b.url("")),
            ("nginx", edge.url("")),
        ] {
            let mut ms: Vec<f64> = (0..40)
                .map(|_| {
                    let t = Instant::now();
                    assert_eq!(get(&format!("{base}{path}")).0, 200);
                    t.elapsed().as_secs_f64() * 1000.0
                })
                .collect();
            ms.sort_by(f64::total_cmp);
            eprintln!(
                "latency {what} via {via}: p50 {:.2} ms, p95 {:.2} ms",
                ms[ms.len() / 2],
                ms[ms.len() * 95 / 100]
            );
        }
    }

    // A player through the edge, and one through the node that does not hold the stream.
    let (played, report) = play_in_chromium(&edge.url("/live/hana/index.m3u8"), 3);
    assert!(played, "hls.js plays through nginx: {report}");
    let (played, report) = play_in_chromium(&b.url("/live/hana/index.m3u8"), 3);
    assert!(played, "hls.js plays through node B: {report}");
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    drop::<Server>(b);
}

#[test]
fn viewers_through_the_edge_resume_when_the_owner_dies() {
    let redis = Redis::start();
    let mut a = node(&redis, "node-a");
    let b = node(&redis, "node-b");
    let edge = Nginx::start(&[a.http_port, b.http_port]);
    let key = a.add_key("ivan");
    let mut first = publish(&a, &key, 60.0);
    a.wait_master("ivan", Duration::from_secs(20));
    let media = "/live/ivan/source/index.m3u8";
    a.wait_until(Duration::from_secs(20), "a segment", || {
        a.get(media).1.contains(".m4s")
    });
    let (status, _, before) = get(&edge.url(media));
    assert_eq!(status, 200);
    let before = String::from_utf8_lossy(&before).into_owned();

    a.kill9();
    let killed = Instant::now();
    let _ = first.kill();
    let _ = first.wait();
    // The encoder reconnects at once, through the load balancer, to node B: B takes the lease
    // without waiting for A's to expire, and the edge (which skips the dead node) serves B's
    // playlist on the same URL.
    let mut second = publish(&b, &key, 60.0);
    b.wait_until(
        Duration::from_secs(30),
        "viewers through nginx see B's stream",
        || {
            let (status, _, body) = get(&edge.url(media));
            let text = String::from_utf8_lossy(&body);
            status == 200 && text.contains(".m4s") && text != before
        },
    );
    eprintln!(
        "kill -9 of the owner → viewers through nginx served by node B after {:?}",
        killed.elapsed()
    );
    let lease = redis_lease(&redis, "ivan");
    assert!(
        lease.contains("node-b") && lease.contains("live"),
        "{lease}"
    );
    let (played, report) = play_in_chromium(&edge.url("/live/ivan/index.m3u8"), 3);
    assert!(
        played,
        "hls.js plays through nginx after the failover: {report}"
    );
    let _ = second.kill();
    let _ = second.wait();
}

fn redis_lease(redis: &Redis, user: &str) -> String {
    redis.cli(&["GET", &format!("livegate:stream:{user}")])
}
