//! A real S3-compatible server for the recording tests: a single-node Garage 2.5.0 on loopback,
//! one per test (it starts in about a second), with its layout, key and bucket made by its own
//! CLI. `scripts/test.sh` installs the binary.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

pub const BUCKET: &str = "recordings";
pub const PREFIX: &str = "vod";

pub struct Garage {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub s3_port: u16,
    rpc_port: u16,
    pub key_id: String,
    pub secret: String,
    runtime: tokio::runtime::Runtime,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

fn garage_binary() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    let candidates = [
        std::env::var("LIVEGATE_TEST_GARAGE").unwrap_or_default(),
        format!("{home}/.cargo/bin/garage"),
        "/usr/local/bin/garage".into(),
    ];
    candidates
        .iter()
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("Garage is not installed: run scripts/test.sh (it installs garage 2.5.0)")
}

fn hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

impl Garage {
    pub fn start() -> Garage {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s3_port, rpc_port) = (free_port(), free_port());
        let config = format!(
            "metadata_dir = {meta:?}\ndata_dir = {data:?}\ndb_engine = \"sqlite\"\n\
             replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{secret}\"\n\
             [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
             root_domain = \".s3.garage.localhost\"\n",
            meta = dir.path().join("meta").display().to_string(),
            data = dir.path().join("data").display().to_string(),
            secret = hex(32),
        );
        std::fs::write(dir.path().join("garage.toml"), config).expect("garage config");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut garage = Garage {
            child: None,
            dir,
            s3_port,
            rpc_port,
            // Garage's key format: "GK" + 24 hex digits, and a 64-hex-digit secret.
            key_id: format!("GK{}", hex(12)),
            secret: hex(32),
            runtime,
        };
        garage.spawn();
        let node = garage.cli(&["node", "id", "-q"]);
        let node = node
            .trim()
            .split('@')
            .next()
            .unwrap_or_default()
            .to_string();
        garage.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        garage.cli(&["layout", "apply", "--version", "1"]);
        garage.cli(&[
            "key",
            "import",
            "--yes",
            "-n",
            "livegate",
            &garage.key_id.clone(),
            &garage.secret.clone(),
        ]);
        garage.cli(&["bucket", "create", BUCKET]);
        garage.cli(&[
            "bucket", "allow", "--read", "--write", BUCKET, "--key", "livegate",
        ]);
        // The layout takes a moment to be usable for writes.
        let deadline = Instant::now() + Duration::from_secs(20);
        while garage.list("").is_err() {
            assert!(
                Instant::now() < deadline,
                "garage bucket never became usable"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        garage
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("garage.toml")
    }

    /// Starts (or restarts) the server on the same ports and data.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("garage.log"))
            .expect("garage log");
        let child = Command::new(garage_binary())
            .arg("-c")
            .arg(self.config_path())
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn garage");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.s3_port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", self.rpc_port)).is_err()
        {
            assert!(Instant::now() < deadline, "garage did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (SIGKILL); its data stays for [`Garage::spawn`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(garage_binary())
            .arg("-c")
            .arg(self.config_path())
            .args(args)
            .output()
            .expect("run garage CLI");
        assert!(
            out.status.success(),
            "garage {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// livegate's settings for this store, with `secret` as the secret key.
    pub fn env_with_secret(&self, secret: &str) -> Vec<(String, String)> {
        [
            ("LIVEGATE_RECORD_BACKEND", "s3".to_string()),
            ("LIVEGATE_RECORD_S3_ENDPOINT", self.endpoint()),
            ("LIVEGATE_RECORD_S3_REGION", "garage".into()),
            ("LIVEGATE_RECORD_S3_BUCKET", BUCKET.into()),
            ("LIVEGATE_RECORD_S3_PREFIX", PREFIX.into()),
            ("LIVEGATE_RECORD_S3_FORCE_PATH_STYLE", "true".into()),
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", secret.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub fn env(&self) -> Vec<(String, String)> {
        self.env_with_secret(&self.secret)
    }

    fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("garage"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                &self.key_id,
                &self.secret,
                None,
                None,
                "test",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// (key, size) of every object under `prefix`, read with the AWS SDK directly.
    pub fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, String> {
        let client = self.client();
        self.runtime.block_on(async {
            let mut out = Vec::new();
            let mut pages = client
                .list_objects_v2()
                .bucket(BUCKET)
                .prefix(prefix)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| format!("{e:?}"))?;
                for o in page.contents() {
                    out.push((
                        o.key().unwrap_or_default().to_string(),
                        o.size().unwrap_or(0) as u64,
                    ));
                }
            }
            Ok(out)
        })
    }

    pub fn get(&self, key: &str) -> Result<Vec<u8>, String> {
        let client = self.client();
        self.runtime.block_on(async {
            let out = client
                .get_object()
                .bucket(BUCKET)
                .key(key)
                .send()
                .await
                .map_err(|e| format!("{e:?}"))?;
            let body = out.body.collect().await.map_err(|e| e.to_string())?;
            Ok(body.into_bytes().to_vec())
        })
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
