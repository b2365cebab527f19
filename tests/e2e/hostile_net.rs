//! Hostile clients at the connection level: sockets that send nothing, a lone "P", an idle h2c
//! connection and RTMP connections that never authenticate must neither lock out other clients
//! nor stay open; keys and errors must not leak through logs or the public API; caps that do not
//! fit the open-file limit stop the start-up. The attacker's sockets come from 127.0.0.2 (Linux
//! routes all of 127/8 to lo), the legitimate clients from 127.0.0.1.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

const ADMIN: &str = "hostile-admin-token";

/// A TCP connection to `port` on 127.0.0.1 from 127.0.0.2.
fn connect_from_attacker(port: u16) -> std::io::Result<TcpStream> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let target: SocketAddr = ([127, 0, 0, 1], port).into();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(([127, 0, 0, 2], 0).into())?;
        socket.connect(target).await
    })?;
    let std = stream.into_std()?;
    std.set_nonblocking(false)?;
    Ok(std)
}

/// Whether the server has closed `socket` (EOF or reset) without waiting.
fn closed_by_server(socket: &mut TcpStream) -> bool {
    let _ = socket.set_nonblocking(true);
    let mut buf = [0u8; 4096];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // e.g. the server's HTTP/2 SETTINGS or GOAWAY
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Waits until the server closes every socket in `sockets`, up to `timeout`; returns how long
/// each one stayed open (None: still open at the end).
fn wait_closed(sockets: &mut [(&str, TcpStream)], timeout: Duration) -> Vec<Option<Duration>> {
    let start = Instant::now();
    let mut closed: Vec<Option<Duration>> = vec![None; sockets.len()];
    while start.elapsed() < timeout && closed.iter().any(Option::is_none) {
        for (i, (_, socket)) in sockets.iter_mut().enumerate() {
            if closed[i].is_none() && closed_by_server(socket) {
                closed[i] = Some(start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    closed
}

#[test]
fn silent_partial_and_idle_h2c_connections_neither_lock_out_nor_stay_open() {
    let server = Server::start_with(&[
        ("LIVEGATE_HTTP_MAX_CONNECTIONS", "8"),
        ("LIVEGATE_HTTP_MAX_CONNECTIONS_PER_IP", "5"),
        ("LIVEGATE_HTTP_FIRST_BYTE_TIMEOUT_SECS", "2"),
        ("LIVEGATE_HTTP_IDLE_TIMEOUT_SECS", "2"),
        ("LIVEGATE_HTTP_H2_KEEP_ALIVE_SECS", "30"),
    ]);
    // As many sockets as the server has slots: before per-address caps they took all of them.
    let mut hostile: Vec<(&str, TcpStream)> = Vec::new();
    for _ in 0..8 {
        match connect_from_attacker(server.http_port) {
            Ok(s) => hostile.push(("silent", s)),
            Err(e) => panic!("connect: {e}"),
        }
    }
    hostile[0].0 = "lone P";
    hostile[0].1.write_all(b"P").unwrap();
    hostile[1].0 = "idle h2c";
    hostile[1]
        .1
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .unwrap();
    // An empty SETTINGS frame, then nothing.
    hostile[1]
        .1
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .unwrap();
    let opened = Instant::now();

    // Other clients are still served while the attacker holds its sockets.
    std::thread::sleep(Duration::from_millis(300));
    let health_at = opened.elapsed();
    let (status, body) = server.get("/healthz");
    assert_eq!(
        (status, body.as_str()),
        (200, "ok\n"),
        "/healthz while one address holds idle sockets"
    );
    let health_took = opened.elapsed() - health_at;

    // Every hostile socket is closed within its timeout: 2 s to the first bytes (silent, "P"),
    // 2 s idle + up to 5 s for the HTTP/2 goodbye (the client never answers its ping).
    let closed = wait_closed(&mut hostile, Duration::from_secs(12));
    let report: Vec<String> = hostile
        .iter()
        .zip(&closed)
        .map(|((what, _), c)| format!("{what}: {c:?}"))
        .collect();
    eprintln!("healthz took {health_took:?}; hostile sockets closed after {report:?}");
    for ((what, _), closed) in hostile.iter().zip(&closed) {
        let limit = if *what == "idle h2c" { 8.5 } else { 3.5 };
        let Some(after) = closed else {
            panic!("{what} socket still open: {report:?}");
        };
        assert!(
            after.as_secs_f64() <= limit,
            "{what} closed after {after:?} (limit {limit} s): {report:?}"
        );
    }
    let metrics = server.get("/metrics").1;
    assert!(
        metrics.contains(
            "livegate_http_connections_refused_total{reason=\"connection_limit_per_ip\"} 3"
        ),
        "{metrics}"
    );
}

/// One attacker connection: open, then silent or trickling a byte at a time.
struct Attacker {
    socket: TcpStream,
    trickle: bool,
    opened: Instant,
    closed_after: Option<Duration>,
}

#[test]
fn one_address_opening_40_silent_connections_a_second_does_not_keep_publishers_out() {
    let server = Server::start_passthrough(&[
        ("LIVEGATE_RECORD_ENABLED", "false"),
        ("LIVEGATE_RTMP_MAX_CONNECTIONS", "12"),
        ("LIVEGATE_RTMP_MAX_CONNECTIONS_PER_IP", "6"),
        ("LIVEGATE_RTMP_MAX_UNAUTHENTICATED", "6"),
        ("LIVEGATE_RTMP_MAX_UNAUTHENTICATED_PER_IP", "3"),
        ("LIVEGATE_RTMP_HANDSHAKE_TIMEOUT_SECS", "2"),
        ("LIVEGATE_RTMP_PUBLISH_TIMEOUT_SECS", "3"),
    ]);
    let key = server.add_key("olga");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let port = server.rtmp_port;
    let attack = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut held: Vec<Attacker> = Vec::new();
            let mut done: Vec<Attacker> = Vec::new();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // ~40 new connections a second, every other one trickling bytes of a C0+C1
                // handshake (resetting any idle timer) instead of staying silent.
                if let Ok(socket) = connect_from_attacker(port) {
                    held.push(Attacker {
                        socket,
                        trickle: n % 2 == 1,
                        opened: Instant::now(),
                        closed_after: None,
                    });
                }
                n += 1;
                for a in held.iter_mut() {
                    if a.trickle {
                        let _ = a.socket.set_nonblocking(true);
                        let _ = a.socket.write(&[3]);
                    }
                    if closed_by_server(&mut a.socket) {
                        a.closed_after = Some(a.opened.elapsed());
                    }
                }
                let (closed, open): (Vec<_>, Vec<_>) =
                    held.drain(..).partition(|a| a.closed_after.is_some());
                held = open;
                done.extend(closed);
                std::thread::sleep(Duration::from_millis(25));
            }
            (n, held, done)
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let src = Source {
        width: 320,
        height: 180,
        fps: 15,
        seconds: 4.0,
        gop: 15,
    };
    let publish_started = Instant::now();
    let publisher = ffmpeg_publish(&server.rtmp_url(&key), &src)
        .spawn()
        .expect("ffmpeg");
    server.wait_master("olga", Duration::from_secs(10));
    let admitted_after = publish_started.elapsed();
    let (ok, err) = wait_child(publisher, Duration::from_secs(20));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (attempts, still_open, done) = attack.join().expect("attacker thread");
    assert!(ok, "the publisher was refused or cut off: {err}");
    let playlist = server.wait_endlist("olga", "source", Duration::from_secs(10));
    assert!(!playlist.segments.is_empty(), "nothing to play");

    // Each attacker connection was closed by the pre-auth deadline (3 s from accept) or at once.
    let longest = done
        .iter()
        .filter_map(|a| a.closed_after)
        .max()
        .unwrap_or_default();
    let oldest_open = still_open
        .iter()
        .map(|a| a.opened.elapsed())
        .max()
        .unwrap_or_default();
    let trickled = done.iter().filter(|a| a.trickle).count();
    eprintln!(
        "attacker: {attempts} connections, {} closed (longest open {longest:?}, {trickled} trickling), \
         {} still open (oldest {oldest_open:?}); publisher admitted after {admitted_after:?}",
        done.len(),
        still_open.len()
    );
    assert!(attempts >= 100, "the attack was too slow: {attempts}");
    assert!(
        longest <= Duration::from_millis(4500),
        "an attacker held a slot for {longest:?}"
    );
    assert!(
        oldest_open <= Duration::from_millis(4500),
        "still open: {oldest_open:?}"
    );
    let metrics = server.get("/metrics").1;
    assert!(
        metrics.contains("livegate_publish_refused_total{reason=\"preauth_limit_per_ip\"}"),
        "{metrics}"
    );
}

#[test]
fn a_slow_handshake_then_a_trickle_is_closed_at_the_pre_auth_deadline_from_accept() {
    let server = Server::start_passthrough(&[
        ("LIVEGATE_RECORD_ENABLED", "false"),
        ("LIVEGATE_RTMP_HANDSHAKE_TIMEOUT_SECS", "2"),
        ("LIVEGATE_RTMP_PUBLISH_TIMEOUT_SECS", "3"),
    ]);
    let mut socket = connect_from_attacker(server.rtmp_port).expect("connect");
    let accepted = Instant::now();
    // C0+C1 in two parts, the second just inside the handshake timeout.
    let mut handshake = rml_rtmp::handshake::Handshake::new(rml_rtmp::handshake::PeerType::Client);
    let c0c1 = handshake.generate_outbound_p0_and_p1().unwrap();
    socket.write_all(&c0c1[..1000]).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    socket.write_all(&c0c1[1000..]).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).expect("server handshake");
        assert!(n > 0, "closed during the handshake");
        match handshake.process_bytes(&buf[..n]).unwrap() {
            rml_rtmp::handshake::HandshakeProcessResult::InProgress { response_bytes } => {
                socket.write_all(&response_bytes).unwrap();
            }
            rml_rtmp::handshake::HandshakeProcessResult::Completed { response_bytes, .. } => {
                socket.write_all(&response_bytes).unwrap();
                break;
            }
        }
    }
    let handshaken = accepted.elapsed();
    // Then the header of a 128-byte command message, and its body a byte every 200 ms: enough
    // to keep any idle timer from firing, never a complete message.
    let header = [0x03, 0, 0, 0, 0, 0, 0x80, 0x14, 0, 0, 0, 0];
    let mut closed_after = None;
    for byte in header.iter().copied().chain(std::iter::repeat(0)).take(60) {
        if socket.write_all(&[byte]).is_err() || closed_by_server(&mut socket) {
            closed_after = Some(accepted.elapsed());
            break;
        }
        let _ = socket.set_nonblocking(false);
        std::thread::sleep(Duration::from_millis(200));
    }
    let closed_after = closed_after.expect("the trickling connection was never closed");
    eprintln!("handshake done after {handshaken:?}; closed {closed_after:?} after accept");
    assert!(
        closed_after <= Duration::from_millis(3600),
        "closed {closed_after:?} after accept (deadline 3 s from accept)"
    );
}

#[test]
fn a_key_typed_into_the_server_url_or_query_is_never_logged() {
    let server = Server::start_passthrough(&[("LIVEGATE_RECORD_ENABLED", "false")]);
    let key = server.add_key("pia");
    let base = format!("rtmp://127.0.0.1:{}", server.rtmp_port);
    let query_secret = "qsecret0123456789abcdef";
    // OBS with Server = rtmp://HOST/<KEY> (no /live), and variants with the key in the app.
    for url in [
        format!("{base}/{key}"),
        format!("{base}/{key}/stream"),
        format!("{base}/live{key}/x"),
        format!("{base}/live/{key}/{key}"),
        format!("{base}/live/lg_wrong{key}?token={query_secret}"),
    ] {
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin"])
            .args([
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=160x90:rate=10",
                "-t",
                "1",
            ])
            .args(["-c:v", "libx264", "-f", "flv"])
            .arg(&url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let (ok, _) = wait_child(cmd.spawn().expect("ffmpeg"), Duration::from_secs(15));
        assert!(!ok, "{url} was accepted");
    }
    server.wait_until(Duration::from_secs(5), "the refusals in the log", || {
        server.logs().matches("unknown application").count() >= 3
            && server.logs().contains("goes on after /live")
            && server.logs().contains("unknown stream key")
    });
    let logs = server.logs();
    // The key minus the few characters a redacted form shows.
    let hidden = &key[6..];
    assert!(
        !logs.contains(hidden) && !logs.contains(query_secret),
        "a key reached the log:\n{logs}"
    );
}

#[test]
fn the_public_streams_view_hides_errors_and_relay_targets_the_admin_view_shows() {
    let server = Server::start_passthrough(&[
        ("LIVEGATE_RECORD_ENABLED", "false"),
        ("LIVEGATE_HTTP_ADMIN_TOKEN", ADMIN),
    ]);
    let key = server.add_key("quinn");
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let target = format!("rtmp://127.0.0.1:{closed_port}/app/relay-secret-0123456789");
    let (status, text) = server.request(
        "POST",
        "/api/v1/relays",
        Some(ADMIN),
        Some(
            &serde_json::json!({"user": "quinn", "platform": "custom", "url": target}).to_string(),
        ),
    );
    assert_eq!(status, 201, "{text}");
    let clip = source_clip(320, 180, 15, 6);
    let publisher = publish_file(&server.rtmp_url(&key), &clip);
    let mut admin_view = String::new();
    server.wait_until(
        Duration::from_secs(15),
        "the relay error (admin view)",
        || {
            admin_view = server
                .request("GET", "/api/v1/streams", Some(ADMIN), None)
                .1;
            admin_view.contains("refused")
        },
    );
    let (_, public) = server.get("/api/v1/streams");
    let _ = wait_child(publisher, Duration::from_secs(20));
    let origin = format!("127.0.0.1:{closed_port}");
    assert!(admin_view.contains(&origin), "{admin_view}");
    assert!(public.contains("\"name\":\"quinn\""), "{public}");
    assert!(
        !public.contains("refused") && !public.contains("last_error") && !public.contains(&origin),
        "the public view leaks: {public}"
    );
    let (status, _) = server.request("GET", "/api/v1/streams", Some("wrong-token"), None);
    assert_eq!(status, 401);
}

#[test]
fn metrics_can_have_their_own_listener_and_token() {
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let server = Server::start_with(&[
        ("LIVEGATE_HTTP_METRICS_LISTEN", listen.as_str()),
        ("LIVEGATE_HTTP_METRICS_TOKEN", "scrape-token"),
    ]);
    assert_eq!(
        server.get("/metrics").0,
        404,
        "/metrics on the main listener"
    );
    let scrape = |token: Option<&str>| {
        let mut s = TcpStream::connect(&listen).unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    assert!(scrape(None).starts_with("HTTP/1.1 401"));
    let ok = scrape(Some("scrape-token"));
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.contains("livegate_rtmp_connections_total"),
        "{ok}"
    );
}

#[test]
fn caps_above_the_open_file_limit_stop_the_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::common::without_inherited_settings(Command::new("prlimit"))
        .arg("--nofile=256:256")
        .arg(BIN)
        .arg("serve")
        .env("LIVEGATE_DATA_DIR", dir.path())
        .env("LIVEGATE_RTMP_LISTEN", "127.0.0.1:0")
        .env("LIVEGATE_HTTP_LISTEN", "127.0.0.1:0")
        .output()
        .expect("prlimit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("RLIMIT_NOFILE) is 256")
            && stderr.contains("rtmp.max_connections")
            && stderr.contains("http.max_connections"),
        "{stderr}"
    );
    // A low soft limit under a high hard one is raised, and caps that fit then start.
    let log = dir.path().join("serve.log");
    let mut child = crate::common::without_inherited_settings(Command::new("prlimit"))
        .arg("--nofile=256:4096")
        .arg(BIN)
        .arg("serve")
        .env("LIVEGATE_DATA_DIR", dir.path())
        .env("LIVEGATE_RTMP_LISTEN", "127.0.0.1:0")
        .env("LIVEGATE_HTTP_LISTEN", "127.0.0.1:0")
        .env("LIVEGATE_HTTP_MAX_CONNECTIONS", "2000")
        .env("NO_COLOR", "1")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("prlimit");
    let start = Instant::now();
    let mut text = String::new();
    while start.elapsed() < Duration::from_secs(15) && !text.contains("livegate is serving") {
        std::thread::sleep(Duration::from_millis(100));
        text = std::fs::read_to_string(&log).unwrap_or_default();
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        text.contains("nofile=4096") && text.contains("livegate is serving"),
        "{text}"
    );
}
