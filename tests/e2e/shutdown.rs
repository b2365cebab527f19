//! Graceful shutdown, data_dir ownership and the health probe, with the real binary: SIGTERM
//! mid-stream ends every stream and stores its recording before exit 0; the grace period bounds
//! the drain; a second signal exits at once; a second instance on the same data_dir refuses to
//! start; `livegate health` (the container's HEALTHCHECK) answers for the local server.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::garage::Garage;
use crate::record::{check_recording, start, stored_in_garage, stored_locally, wait_recording};

/// Publishes `clip` as `user` until the live playlist exists; returns the publisher and when it
/// started.
fn go_live(server: &Server, user: &str, clip: &std::path::Path) -> (std::process::Child, Instant) {
    let key = server.add_key(user);
    let publisher = publish_file(&server.rtmp_url(&key), clip);
    let started = Instant::now();
    server.wait_master(user, Duration::from_secs(15));
    (publisher, started)
}

/// SIGTERM, then the clean exit (0, within 15 s) it must lead to; returns how long it took.
fn terminate(server: &mut Server) -> Duration {
    let signalled = Instant::now();
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("still running 15 s after SIGTERM\n{}", server.logs()));
    assert!(status.success(), "exit {status:?}\n{}", server.logs());
    signalled.elapsed()
}

#[test]
fn sigterm_mid_stream_ends_the_stream_stores_its_recording_and_exits_0() {
    // Through the ladder: its thread must flush its encoders into the last segment.
    let mut server = start(&[], false);
    let clip = source_clip(320, 240, 30, 30);
    let (publisher, publishing) = go_live(&server, "dora", &clip);
    std::thread::sleep(Duration::from_secs(5));
    let published = publishing.elapsed().as_secs_f64();
    let drain = terminate(&mut server);
    let logs = server.logs();
    assert!(logs.contains("shutdown drained"), "{logs}");
    // The publisher's connection was closed by the server, not left hanging.
    let _ = wait_child(publisher, Duration::from_secs(10));

    // The recording was finished before exit (not `interrupted` and resumed from the spool),
    // with ENDLIST and every second published up to the signal, the open segment included.
    server.spawn();
    let manifest = wait_recording(&server, "dora", "finished", Duration::from_secs(10));
    check_recording(
        &server,
        &stored_locally(&server),
        &manifest,
        (published - 1.5, published + 0.5),
    );
    assert!(
        !server
            .logs()
            .contains("resuming a recording left in the spool"),
        "the restart had to resume the recording"
    );
    eprintln!(
        "SIGTERM with 1 laddered stream recording to disk: exited 0 after {} ms",
        drain.as_millis()
    );
}

#[test]
fn sigterm_with_three_streams_recording_to_s3_stores_every_one() {
    let garage = Garage::start();
    let mut server = start(&garage.env(), true);
    let clip = source_clip(320, 240, 30, 30);
    let users = ["ann", "ben", "cat"];
    let mut live = Vec::new();
    for user in users {
        live.push(go_live(&server, user, &clip));
    }
    std::thread::sleep(Duration::from_secs(4));
    let published: Vec<f64> = live
        .iter()
        .map(|(_, started)| started.elapsed().as_secs_f64())
        .collect();
    let drain = terminate(&mut server);
    for (publisher, _) in live {
        let _ = wait_child(publisher, Duration::from_secs(10));
    }
    server.spawn();
    for (user, published) in users.iter().zip(published) {
        let manifest = wait_recording(&server, user, "finished", Duration::from_secs(10));
        check_recording(
            &server,
            &stored_in_garage(&garage),
            &manifest,
            (published - 1.5, published + 0.5),
        );
    }
    eprintln!(
        "SIGTERM with 3 streams recording to S3 (Garage): drained and exited 0 after {} ms",
        drain.as_millis()
    );
}

#[test]
fn the_grace_period_bounds_the_drain_and_a_second_signal_exits_at_once() {
    // An S3 endpoint nobody listens on: recordings can never be stored, so a drain lasts as
    // long as it is allowed to.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let endpoint = format!("http://127.0.0.1:{dead_port}");
    let s3 = |grace: &'static str| -> Vec<(String, String)> {
        [
            ("LIVEGATE_RECORD_BACKEND", "s3"),
            ("LIVEGATE_RECORD_S3_ENDPOINT", endpoint.as_str()),
            ("LIVEGATE_RECORD_S3_REGION", "garage"),
            ("LIVEGATE_RECORD_S3_BUCKET", "nowhere"),
            ("LIVEGATE_RECORD_S3_FORCE_PATH_STYLE", "true"),
            ("AWS_ACCESS_KEY_ID", "GKunused"),
            ("AWS_SECRET_ACCESS_KEY", "unused"),
            ("LIVEGATE_SHUTDOWN_GRACE_SECS", grace),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let clip = source_clip(320, 240, 30, 30);

    let mut bounded = start(&s3("2"), true);
    let (publisher, _) = go_live(&bounded, "eve", &clip);
    std::thread::sleep(Duration::from_secs(2));
    let signalled = Instant::now();
    bounded.signal("TERM");
    let status = bounded.wait_exit(Duration::from_secs(10)).expect("exit");
    let waited = signalled.elapsed();
    assert!(status.success(), "exit {status:?}");
    assert!(
        waited >= Duration::from_secs(2),
        "exited after {waited:?}, before the grace was over"
    );
    assert!(
        bounded
            .logs()
            .contains("shutdown grace is over with work left"),
        "{}",
        bounded.logs()
    );
    let _ = wait_child(publisher, Duration::from_secs(10));

    let mut patient = start(&s3("120"), true);
    let (publisher, _) = go_live(&patient, "fay", &clip);
    std::thread::sleep(Duration::from_secs(2));
    patient.signal("TERM");
    assert!(
        patient.wait_exit(Duration::from_secs(2)).is_none(),
        "exited although the recording was not stored:\n{}",
        patient.logs()
    );
    let second = Instant::now();
    patient.signal("TERM");
    let status = patient
        .wait_exit(Duration::from_secs(5))
        .expect("still running after a second SIGTERM");
    assert!(!status.success(), "a cut-short shutdown exited {status:?}");
    assert!(patient.logs().contains("second signal: exiting now"));
    let _ = wait_child(publisher, Duration::from_secs(10));
    eprintln!(
        "grace 2 s: exited after {} ms; second SIGTERM: exited after {} ms",
        waited.as_millis(),
        second.elapsed().as_millis()
    );
}

#[test]
fn a_second_instance_on_the_same_data_dir_refuses_to_start() {
    let server = Server::start_passthrough(&[]);
    // Other ports, same data_dir: only the data_dir is shared.
    let config = server.dir.path().join("second.toml");
    let text = std::fs::read_to_string(&server.config_path).expect("config");
    let text = text
        .replace(&format!(":{}\"", server.rtmp_port), ":0\"")
        .replace(&format!(":{}\"", server.http_port), ":0\"");
    std::fs::write(&config, text).expect("write config");
    let second = crate::common::livegate()
        .args(["serve", "--config"])
        .arg(&config)
        .env("LIVEGATE_TRANSCODE_ENABLED", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (ok, stderr) = wait_child(second, Duration::from_secs(10));
    assert!(!ok, "the second instance ran: {stderr}");
    let expected = format!("in use by another livegate process (pid {})", server.pid());
    assert!(stderr.contains(&expected), "{stderr}");
    assert_eq!(server.get("/healthz").0, 200);
}

#[test]
fn health_command_answers_for_the_local_server_and_the_image_uses_it() {
    let mut server = Server::start_passthrough(&[]);
    let config_path = server.config_path.clone();
    let health = |listen: String| {
        crate::common::livegate()
            .args(["health", "--config"])
            .arg(&config_path)
            .env("LIVEGATE_HTTP_LISTEN", listen)
            .output()
            .expect("run livegate health")
    };
    let up = health(format!("127.0.0.1:{}", server.http_port));
    assert!(up.status.success(), "{up:?}");
    assert_eq!(String::from_utf8_lossy(&up.stdout).trim(), "ok");
    // A server listening on every address is probed on loopback.
    let any = health(format!("0.0.0.0:{}", server.http_port));
    assert!(any.status.success(), "{any:?}");

    server.kill9();
    let down = health(format!("127.0.0.1:{}", server.http_port));
    assert!(!down.status.success());
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(
        stderr.contains(&format!("connecting to 127.0.0.1:{}", server.http_port)),
        "{stderr}"
    );

    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile"))
        .expect("Dockerfile");
    let check = dockerfile
        .lines()
        .find(|l| l.starts_with("HEALTHCHECK"))
        .expect("a HEALTHCHECK");
    assert!(
        check.contains(r#"["livegate", "health"]"#),
        "the image's HEALTHCHECK does not use `livegate health`: {check}"
    );
}
