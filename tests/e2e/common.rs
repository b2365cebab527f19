//! Shared harness for end-to-end tests: a real livegate process on free loopback ports with a
//! temporary data dir, the real `ffmpeg` CLI as publisher, `ffprobe` as reader, and hls.js in
//! headless Chromium as player. Each test starts its own server so tests run in parallel.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_livegate");

/// A `livegate` command that inherits none of the caller's `LIVEGATE_*` variables: the server
/// refuses a variable it does not know (scripts/test.sh's own knobs share the prefix), and a
/// developer's `LIVEGATE_CONFIG` or overrides must not change what a test runs.
pub fn livegate() -> Command {
    without_inherited_settings(Command::new(BIN))
}

/// `cmd` (e.g. `prlimit … livegate`) without the caller's `LIVEGATE_*` variables.
pub fn without_inherited_settings(mut cmd: Command) -> Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LIVEGATE_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

pub struct Server {
    child: Option<Child>,
    env: Vec<(String, String)>,
    pub rtmp_port: u16,
    pub http_port: u16,
    /// WHIP's UDP port.
    pub whip_port: u16,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    agent: ureq::Agent,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("no free UDP port")
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Serves streams as published (no transcoding), with extra `LIVEGATE_*` overrides.
    pub fn start_passthrough(env: &[(&str, &str)]) -> Server {
        let mut all = vec![("LIVEGATE_TRANSCODE_ENABLED", "false")];
        all.extend_from_slice(env);
        Server::start_with(&all)
    }

    /// Starts livegate with `LIVEGATE_*` environment overrides on top of the generated config.
    pub fn start_with(env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let rtmp_port = free_port();
        let http_port = free_port();
        let whip_port = free_udp_port();
        let config_path = dir.path().join("livegate.toml");
        let data_dir = dir.path().join("data");
        let toml = format!(
            "data_dir = {data:?}\n[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\
             [http]\nlisten = \"127.0.0.1:{http_port}\"\n[hls]\nsegment_duration = 2.0\nwindow = 6\n\
             [whip]\nudp_listen = \"127.0.0.1:{whip_port}\"\n",
            data = data_dir.display().to_string(),
        );
        std::fs::write(&config_path, toml).expect("write config");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        // The test's own ffmpeg encoders and browsers stand in for other machines: the server's
        // ladders must not yield the CPU to them (`ladder_nice` ranks the ladder below this
        // server's ingest and HTTP). The test of that setting sets it again.
        let defaults = [("LIVEGATE_TRANSCODE_LADDER_NICE", "0")];
        let mut server = Server {
            child: None,
            env: defaults
                .iter()
                .chain(env)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            rtmp_port,
            http_port,
            whip_port,
            dir,
            config_path,
            agent,
        };
        server.spawn();
        server
    }

    /// Starts the process (again, after [`Server::kill9`]) on the same ports, config and data.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("log file");
        let child = livegate()
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("LIVEGATE_LOG", "info,livegate=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn livegate");
        self.child = Some(child);
        self.wait_until(Duration::from_secs(20), "healthz", || {
            self.get("/healthz").0 == 200
        });
    }

    /// SIGKILL, as a crash would end it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Polls `check` until true; on timeout panics with the server log.
    pub fn wait_until(&self, timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if check() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {what}\n--- server log ---\n{}",
            self.logs()
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.rtmp_port)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, None, None)
    }

    /// One series' value from this server's `/metrics` (see [`metric_value`]).
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.get("/metrics").1, series)
    }

    pub fn get_with_headers(&self, path: &str) -> (u16, Vec<(String, String)>, String) {
        match self.agent.get(&self.url(path)).call() {
            Ok(mut r) => {
                let headers = r
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                let body = r.body_mut().read_to_string().unwrap_or_default();
                (r.status().as_u16(), headers, body)
            }
            Err(_) => (0, Vec::new(), String::new()),
        }
    }

    pub fn get_bytes(&self, path: &str) -> (u16, Vec<u8>) {
        match self.agent.get(&self.url(path)).call() {
            Ok(mut r) => {
                let mut buf = Vec::new();
                let _ = r.body_mut().as_reader().read_to_end(&mut buf);
                (r.status().as_u16(), buf)
            }
            Err(_) => (0, Vec::new()),
        }
    }

    /// GET with a bearer token and an optional Range header: (status, headers, body bytes).
    pub fn get_authorized(
        &self,
        path: &str,
        token: &str,
        range: Option<&str>,
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut request = self
            .agent
            .get(&self.url(path))
            .header("Authorization", &format!("Bearer {token}"));
        if let Some(range) = range {
            request = request.header("Range", range);
        }
        match request.call() {
            Ok(mut r) => {
                let headers = r
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                let mut body = Vec::new();
                let _ = r
                    .body_mut()
                    .with_config()
                    .limit(1 << 30)
                    .reader()
                    .read_to_end(&mut body);
                (r.status().as_u16(), headers, body)
            }
            Err(_) => (0, Vec::new(), Vec::new()),
        }
    }

    /// An HTTP request (GET, DELETE, PUT, else POST) with an optional bearer token and JSON
    /// body; (0, "") if unreachable.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        json: Option<&str>,
    ) -> (u16, String) {
        let url = self.url(path);
        let auth = token.map(|t| format!("Bearer {t}"));
        let result = match method {
            "GET" => {
                let mut r = self.agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            "DELETE" => {
                let mut r = self.agent.delete(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            _ => {
                let r = if method == "PUT" {
                    self.agent.put(&url)
                } else {
                    self.agent.post(&url)
                };
                let mut r = r.header("Content-Type", "application/json");
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send(json.unwrap_or("{}"))
            }
        };
        match result {
            Ok(mut r) => {
                let status = r.status().as_u16();
                (status, r.body_mut().read_to_string().unwrap_or_default())
            }
            Err(_) => (0, String::new()),
        }
    }

    /// Runs `livegate <args> --config <this server's config>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        livegate()
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            // The server's overrides: the CLI must see the same configuration (cluster, …).
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run livegate CLI")
    }

    /// `livegate keys add <user>`: the key is the last line of stdout.
    pub fn add_key(&self, user: &str) -> String {
        let out = self.cli(&["keys", "add", user]);
        assert!(out.status.success(), "keys add failed: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout.lines().last().expect("key line").trim().to_string()
    }

    /// Waits for the master playlist of `user` and returns it.
    pub fn wait_master(&self, user: &str, timeout: Duration) -> String {
        let mut body = String::new();
        self.wait_until(timeout, &format!("master playlist of {user}"), || {
            let (status, b) = self.get(&format!("/live/{user}/index.m3u8"));
            body = b;
            status == 200
        });
        body
    }

    pub fn media_playlist(&self, user: &str) -> (u16, String) {
        self.get(&format!("/live/{user}/source/index.m3u8"))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Sends a signal (`TERM`, `INT`, …) to the server process with the real `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit by itself; None (and the process is left running) if it
    /// has not within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the test publisher sends.
#[derive(Clone)]
pub struct Source {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub seconds: f64,
    /// Keyframe interval in frames.
    pub gop: u32,
}

impl Default for Source {
    fn default() -> Self {
        Source {
            width: 640,
            height: 360,
            fps: 30,
            seconds: 6.0,
            gop: 30,
        }
    }
}

/// The real ffmpeg CLI publishing testsrc2 + a sine tone, x264 with B-frames (pyramid), AAC.
pub fn ffmpeg_publish(url: &str, src: &Source) -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"]);
    test_source_args(
        &mut cmd,
        src.width,
        src.height,
        src.fps,
        src.seconds,
        src.gop,
    );
    cmd.args(["-b:a", "96k", "-f", "flv"])
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// testsrc2 + a sine tone, encoded as x264 with B-frames (pyramid, as OBS's defaults use) and a
/// fixed GOP of `gop` frames, and AAC.
fn test_source_args(cmd: &mut Command, width: u32, height: u32, fps: u32, seconds: f64, gop: u32) {
    cmd.args(["-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={width}x{height}:rate={fps}"))
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "superfast",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg("-x264-params")
        .arg(format!(
            "bframes=3:b-pyramid=normal:keyint={gop}:min-keyint={gop}:scenecut=0"
        ))
        .args(["-c:a", "aac"]);
}

/// Waits for a child with a deadline; kills it on timeout. Returns (success, stderr).
pub fn wait_child(mut child: Child, timeout: Duration) -> (bool, String) {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return (status.success(), err);
            }
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return (false, "timed out".into());
            }
        }
    }
}

/// ffprobe's JSON for a URL or file.
pub fn ffprobe(target: &str) -> serde_json::Value {
    ffprobe_with(&[], target)
}

/// ffprobe's JSON, with extra input options (e.g. `-headers`).
pub fn ffprobe_with(options: &[&str], target: &str) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args(options)
        .args([
            "-v",
            "error",
            "-of",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(target)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {target} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe json")
}

/// (codec_name, width, height) of each stream ffprobe finds.
pub fn probe_streams(target: &str) -> Vec<(String, i64, i64)> {
    let v = ffprobe(target);
    v["streams"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| {
            (
                s["codec_name"].as_str().unwrap_or("").to_string(),
                s["width"].as_i64().unwrap_or(0),
                s["height"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

/// Parsed media playlist.
pub fn parse_media(text: &str) -> m3u8_rs::MediaPlaylist {
    match m3u8_rs::parse_playlist_res(text.as_bytes()) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(p)) => p,
        other => panic!("not a media playlist: {other:?}\n{text}"),
    }
}

/// Parsed master playlist, its variant URIs without the player's session or token prefix
/// (`s/<id>/`, `t/<token>/`: every variant of one answer carries the same one), so they read
/// as rendition paths (`360p/index.m3u8`).
pub fn parse_master(text: &str) -> m3u8_rs::MasterPlaylist {
    let mut master = parse_master_raw(text);
    let prefix = |uri: &str| {
        let mut parts = uri.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(kind @ ("s" | "t")), Some(cred), Some(_)) => format!("{kind}/{cred}/"),
            _ => String::new(),
        }
    };
    let first = master
        .variants
        .first()
        .map(|v| prefix(&v.uri))
        .unwrap_or_default();
    for v in &mut master.variants {
        assert_eq!(prefix(&v.uri), first, "one prefix per master:\n{text}");
        v.uri = v.uri[first.len()..].to_string();
    }
    master
}

/// Parsed master playlist as served.
pub fn parse_master_raw(text: &str) -> m3u8_rs::MasterPlaylist {
    match m3u8_rs::parse_playlist_res(text.as_bytes()) {
        Ok(m3u8_rs::Playlist::MasterPlaylist(p)) => p,
        other => panic!("not a master playlist: {other:?}\n{text}"),
    }
}

/// Runs the hls.js player; returns (exit ok, JSON report).
pub fn play_in_chromium(url: &str, seconds: u32) -> (bool, serde_json::Value) {
    play_level(url, seconds, -1)
}

/// Like [`play_in_chromium`], pinned to one ladder level (-1: automatic).
pub fn play_level(url: &str, seconds: u32, level: i32) -> (bool, serde_json::Value) {
    play_with(url, seconds, level, true, "{}")
}

/// Like [`play_level`], with hls.js's `lowLatencyMode` set and `hls_config` (JSON) merged into
/// the player's config.
pub fn play_with(
    url: &str,
    seconds: u32,
    level: i32,
    low_latency: bool,
    hls_config: &str,
) -> (bool, serde_json::Value) {
    play_env(url, seconds, level, low_latency, hls_config, &[])
}

/// Like [`play_with`] (automatic level, low-latency mode) as README advises sites to play: with
/// `hls_config` and the watch page's back-to-the-live-edge after a stall
/// (`src/http/pages/live-edge.js`). The report counts its `jumps` and the seconds `skipped`,
/// which do not count as played.
pub fn play_near_live(url: &str, seconds: u32, hls_config: &str) -> (bool, serde_json::Value) {
    play_env(url, seconds, -1, true, hls_config, &[("BACK_TO_LIVE", "1")])
}

/// Like [`play_in_chromium`] over HTTPS, with Chromium trusting the certificates whose public
/// keys hash to `spki` (base64 SHA-256, comma-separated; see [`spki_hash`]).
pub fn play_trusting(url: &str, seconds: u32, spki: &str) -> (bool, serde_json::Value) {
    play_env(url, seconds, -1, true, "{}", &[("TRUST_SPKI", spki)])
}

/// Plays `url` with hls.js in Chromium, asking for each of `levels` in turn (a seamless switch
/// at the next fragment), one every `every` seconds of playback.
pub fn play_switching(url: &str, levels: &[u32], every: u32) -> (bool, serde_json::Value) {
    let list: Vec<String> = levels.iter().map(u32::to_string).collect();
    let every_text = every.to_string();
    // One interval more after the last switch, for it to show.
    let seconds = every * (levels.len() as u32 + 2);
    play_env(
        url,
        seconds,
        -1,
        true,
        "{}",
        &[
            ("SWITCH_LEVELS", &list.join(",")),
            ("SWITCH_EVERY", &every_text),
        ],
    )
}

/// The base64 SHA-256 of a PEM certificate's public key, as Chromium's
/// `--ignore-certificate-errors-spki-list` takes it.
pub fn spki_hash(cert_pem: &str) -> String {
    let script = format!(
        "openssl x509 -in '{cert_pem}' -pubkey -noout | openssl pkey -pubin -outform der \
         | openssl dgst -sha256 -binary | base64"
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn play_env(
    url: &str,
    seconds: u32,
    level: i32,
    low_latency: bool,
    hls_config: &str,
    env: &[(&str, &str)],
) -> (bool, serde_json::Value) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/play.mjs");
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules");
    assert!(
        modules.exists(),
        "tests/browser/node_modules is missing: run scripts/test.sh (it runs npm ci there)"
    );
    let out = Command::new("node")
        .arg(script)
        .arg(url)
        // A loaded machine stalls playback: room for it beyond the media played.
        .args(["--seconds", &seconds.to_string()])
        .args(["--timeout", &(seconds * 2).max(40).to_string()])
        .args(["--level", &level.to_string()])
        .args(["--low-latency", if low_latency { "1" } else { "0" }])
        .args(["--hls-config", hls_config])
        .envs(env.iter().copied())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(
            || serde_json::json!({"raw": stdout, "stderr": String::from_utf8_lossy(&out.stderr)}),
        );
    (out.status.success(), report)
}

/// GET any URL: (status, headers, body bytes); panics if the server cannot be reached.
pub fn http_get(url: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut r = agent.get(url).call().expect("GET");
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let mut body = Vec::new();
    let _ = r.body_mut().as_reader().read_to_end(&mut body);
    (r.status().as_u16(), headers, body)
}

/// A response header by name, case-insensitively.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// WebRTC tests keep every packet on loopback (REFERENCES.md, "Testing here"): the test runs
/// again, alone, in a new network namespace whose only interface is `lo` (Chromium would gather
/// candidates on every interface otherwise). Returns true in the calling process once that run
/// passed, so the caller returns; false inside the namespace, where the caller runs its body.
/// `test` is the test's path in this binary (`whip::name`). `heavy` takes [`heavy`]'s turn for
/// the namespaced run.
pub fn in_loopback_namespace(test: &str, heavy_turn: bool) -> bool {
    if std::env::var_os("E2E_IN_LOOPBACK_NETNS").is_some() {
        return false;
    }
    let _turn = heavy_turn.then(heavy);
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env("E2E_IN_LOOPBACK_NETNS", "1")
        .output()
        .expect("run unshare (util-linux) and ip (iproute2): scripts/setup.sh installs them");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Shown with --nocapture (the figures some tests print).
    eprintln!("{text}");
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{test} failed in its network namespace:\n{text}"
    );
    true
}

/// Ladder tests transcode for real; on a 2-core machine they take turns so none of them falls
/// behind real time because of the others.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A test source encoded once per run (testsrc2 + sine, x264 with B-frames and a 1 s GOP, AAC)
/// as an FLV file, so publishing it is a cheap `-c copy`.
pub fn source_clip(width: u32, height: u32, fps: u32, seconds: u32) -> PathBuf {
    static CLIPS: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let name = format!("src_{width}x{height}_{fps}_{seconds}.flv");
    let mut clips = CLIPS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = clips.iter().find(|(n, _)| *n == name) {
        return p.clone();
    }
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("clip dir"));
    let path = dir.path().join(&name);
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"]);
    test_source_args(&mut cmd, width, height, fps, f64::from(seconds), fps);
    let out = cmd
        .args(["-b:v", "3000k", "-b:a", "128k", "-f", "flv"])
        .arg(&path)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "encoding {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    clips.push((name, path.clone()));
    path
}

/// Publishes a file in real time with the ffmpeg CLI (`-re -c copy`).
pub fn publish_file(url: &str, path: &Path) -> Child {
    Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-re",
            "-i",
        ])
        .arg(path)
        .args(["-c", "copy", "-f", "flv"])
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg")
}

/// Publishes `path` in a loop until the returned child is killed: for tests whose
/// length depends on how busy the machine is.
pub fn publish_looped(url: &str, path: &Path) -> Child {
    Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
        ])
        .arg(path)
        .args(["-c", "copy", "-f", "flv"])
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg")
}

impl Server {
    /// Waits until `rung`'s playlist has ENDLIST, and returns it.
    pub fn wait_endlist(
        &self,
        user: &str,
        rung: &str,
        timeout: Duration,
    ) -> m3u8_rs::MediaPlaylist {
        let mut text = String::new();
        self.wait_until(timeout, &format!("ENDLIST on {user}/{rung}"), || {
            text = self.get(&format!("/live/{user}/{rung}/index.m3u8")).1;
            text.contains("#EXT-X-ENDLIST")
        });
        parse_media(&text)
    }

    /// Downloads a rung's segments (each with the init segment in force before it) into files
    /// that ffprobe can read one by one.
    pub fn download_segments(
        &self,
        user: &str,
        rung: &str,
        playlist: &m3u8_rs::MediaPlaylist,
    ) -> Vec<PathBuf> {
        let mut files = Vec::new();
        let mut init = Vec::new();
        for (i, seg) in playlist.segments.iter().enumerate() {
            if let Some(map) = &seg.map {
                let (status, data) = self.get_bytes(&format!("/live/{user}/{rung}/{}", map.uri));
                assert_eq!(status, 200, "init {}", map.uri);
                init = data;
            }
            let (status, data) = self.get_bytes(&format!("/live/{user}/{rung}/{}", seg.uri));
            assert_eq!(status, 200, "segment {}", seg.uri);
            let path = self.dir.path().join(format!("{user}-{rung}-{i}.mp4"));
            let mut bytes = init.clone();
            bytes.extend_from_slice(&data);
            std::fs::write(&path, bytes).unwrap();
            files.push(path);
        }
        files
    }
}

/// The smallest video presentation time in a file (seconds), and the frame size.
pub fn first_video_pts(path: &Path) -> (f64, i64, i64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["packet=pts_time:stream=width,height", "-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    let pts = v["packets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["pts_time"].as_str()?.parse::<f64>().ok())
        .fold(f64::MAX, f64::min);
    let s = &v["streams"][0];
    (
        pts,
        s["width"].as_i64().unwrap_or(0),
        s["height"].as_i64().unwrap_or(0),
    )
}

/// The value of `series` (a name, with its labels if it has any, exactly as exposed) in an
/// OpenMetrics text; 0 when absent, as a counter is before its first increment.
pub fn metric_value(text: &str, series: &str) -> f64 {
    let series = series.trim_end();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}
