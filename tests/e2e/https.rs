//! HTTPS with HTTP/2: hls.js in Chromium and ffprobe over TLS (a test CA), and certificates
//! renewed under a live stream: new handshakes get the new one on HTTPS and RTMPS while the open
//! player and publisher carry on; a renewal that cannot be used keeps the previous certificate.

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use crate::sinks::TestCa;

/// The serial of the certificate a TLS listener on `port` presents (openssl's `serial=…`).
fn presented_serial(port: u16) -> String {
    let script = format!(
        "openssl s_client -connect 127.0.0.1:{port} -servername localhost </dev/null 2>/dev/null \
         | openssl x509 -noout -serial"
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("run openssl s_client");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn hls_over_https_h2_and_certificates_renewed_under_a_live_stream() {
    let ca = TestCa::new();
    ca.issue("renewed");
    ca.issue("stray");
    let live = |ext: &str| ca.path(&format!("live.{ext}"));
    std::fs::copy(ca.path("server.pem"), live("pem")).unwrap();
    std::fs::copy(ca.path("server.key"), live("key")).unwrap();
    let (https, rtmps) = (free_port(), free_port());
    let (https_listen, rtmps_listen) = (format!("127.0.0.1:{https}"), format!("127.0.0.1:{rtmps}"));
    let server = Server::start_passthrough(&[
        ("LIVEGATE_HTTP_TLS_LISTEN", &https_listen),
        ("LIVEGATE_HTTP_TLS_CERT", &live("pem")),
        ("LIVEGATE_HTTP_TLS_KEY", &live("key")),
        ("LIVEGATE_RTMP_TLS_LISTEN", &rtmps_listen),
        ("LIVEGATE_RTMP_TLS_CERT", &live("pem")),
        ("LIVEGATE_RTMP_TLS_KEY", &live("key")),
    ]);
    let key = server.add_key("tia");
    let clip = source_clip(320, 180, 30, 4);
    let mut publisher = publish_looped(&format!("rtmps://localhost:{rtmps}/live/{key}"), &clip);
    server.wait_until(Duration::from_secs(30), "two segments", || {
        server.media_playlist("tia").1.matches("#EXTINF").count() >= 2
    });

    // ffprobe (HTTP/1.1 over TLS) checks the certificate against the test CA, and refuses it
    // without the CA.
    let url = format!("https://localhost:{https}/live/tia/index.m3u8");
    let probed = ffprobe_with(&["-ca_file", &ca.path("ca.pem"), "-tls_verify", "1"], &url);
    let codecs: Vec<_> = probed["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["codec_name"].as_str())
        .collect();
    assert!(
        codecs.contains(&"h264") && codecs.contains(&"aac"),
        "{probed}"
    );
    let untrusted = Command::new("ffprobe")
        .args(["-v", "error", "-tls_verify", "1", &url])
        .output()
        .unwrap();
    assert!(!untrusted.status.success(), "ffprobe trusted an unknown CA");
    assert_eq!(presented_serial(https), ca.serial("server"));
    assert_eq!(presented_serial(rtmps), ca.serial("server"));
    // The pages and the API over HTTP/2.
    for path in ["/", "/watch/tia", "/api/v1/streams"] {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--http2",
                "--cacert",
                &ca.path("ca.pem"),
                "-o",
                "/dev/null",
            ])
            .args(["-w", "%{http_version} %{http_code}"])
            .arg(format!("https://localhost:{https}{path}"))
            .output()
            .expect("run curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200", "{path}");
    }

    // hls.js plays over HTTP/2 while the certificate files are replaced (a renewal).
    let trusted = [ca.path("server.pem"), ca.path("renewed.pem")]
        .iter()
        .map(|c| spki_hash(c))
        .collect::<Vec<_>>()
        .join(",");
    let player = {
        let url = url.clone();
        std::thread::spawn(move || play_trusting(&url, 12, &trusted))
    };
    server.wait_until(
        Duration::from_secs(30),
        "an HTTP/2 connection over TLS",
        || server.metric("livegate_http_connections_total{protocol=\"http2\",tls=\"yes\"}") >= 1.0,
    );
    std::thread::sleep(Duration::from_secs(3));
    std::fs::rename(ca.path("renewed.key"), live("key")).unwrap();
    std::fs::rename(ca.path("renewed.pem"), live("pem")).unwrap();
    let renewed = ca.serial("live");
    server.wait_until(
        Duration::from_secs(20),
        "the renewed certificate on HTTPS",
        || presented_serial(https) == renewed,
    );
    server.wait_until(
        Duration::from_secs(20),
        "the renewed certificate on RTMPS",
        || presented_serial(rtmps) == renewed,
    );
    let (ok, report) = player.join().unwrap();
    assert!(ok, "hls.js over HTTPS/2: {report}");
    assert_eq!(report["fatal"], serde_json::Value::Null, "{report}");
    assert!(
        publisher.try_wait().unwrap().is_none(),
        "the RTMPS publisher was cut off by the renewal"
    );
    let metrics = server.get("/metrics").1;
    assert_eq!(
        metric_value(&metrics, "livegate_publish_accepted_total"),
        1.0,
        "{metrics}"
    );
    for listener in ["http", "rtmp"] {
        let series = format!(
            "livegate_tls_certificate_reloads_total{{listener=\"{listener}\",result=\"ok\"}}"
        );
        assert!(
            metric_value(&metrics, &series) >= 1.0,
            "{series}\n{metrics}"
        );
    }
    assert!(
        metric_value(
            &metrics,
            "livegate_http_connections_total{protocol=\"http1\",tls=\"yes\"}"
        ) >= 1.0,
        "ffprobe's HTTP/1.1 over TLS was not counted\n{metrics}"
    );

    // A certificate whose key is not beside it: reported, and the renewed one stays in use.
    std::fs::rename(ca.path("stray.pem"), live("pem")).unwrap();
    server.wait_until(Duration::from_secs(20), "the failed reload", || {
        server.metric("livegate_tls_certificate_reloads_total{listener=\"http\",result=\"failed\"}")
            >= 1.0
    });
    assert_eq!(presented_serial(https), renewed);
    assert!(
        server
            .logs()
            .contains("cannot be used; still presenting the previous one"),
        "{}",
        server.logs()
    );
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// The /publish page served over HTTPS publishes with WHIP (browsers allow the camera only in a
/// secure context outside localhost); the session's `Location` keeps the https scheme, so the
/// page's DELETE reaches the server.
#[test]
fn a_browser_publishes_with_whip_from_the_https_page() {
    if in_loopback_namespace(
        "https::a_browser_publishes_with_whip_from_the_https_page",
        true,
    ) {
        return;
    }
    let ca = TestCa::new();
    let https = free_port();
    let listen = format!("127.0.0.1:{https}");
    let server = Server::start_with(&[
        ("LIVEGATE_HTTP_TLS_LISTEN", &listen),
        ("LIVEGATE_HTTP_TLS_CERT", &ca.path("server.pem")),
        ("LIVEGATE_HTTP_TLS_KEY", &ca.path("server.key")),
    ]);
    let key = server.add_key("wren");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/publish.mjs");
    let publisher = Command::new("node")
        .arg(script)
        .args(["--seconds", "3"])
        .arg(format!(
            "https://localhost:{https}/publish?key={key}&codec=H264&auto=1&width=320&height=180"
        ))
        .env("TRUST_SPKI", spki_hash(&ca.path("server.pem")))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run node");
    server.wait_master("wren", Duration::from_secs(40));
    let report = crate::whip::finish_publisher(publisher, Duration::from_secs(60));
    let location = report[0]["location"].as_str().unwrap_or_default();
    assert!(
        location.starts_with(&format!("https://localhost:{https}/whip/wren/")),
        "{report}"
    );
    server.wait_until(Duration::from_secs(10), "the DELETE over HTTPS", || {
        server.metric("livegate_whip_sessions_ended_total{reason=\"deleted\"}") >= 1.0
    });
}
