//! Real RTMP peers for the relay tests: nginx with Debian's libnginx-mod-rtmp as the sink
//! (recording what it receives to FLV files), stunnel4 in front of it for RTMPS, and a test CA
//! made with the openssl CLI. Each lives in its own temporary directory on loopback ports.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// nginx-rtmp accepting publishes on `rtmp://127.0.0.1:PORT/app/<name>` and recording each
/// publish to `<dir>/rec/<name>-<time>.flv`.
pub struct NginxSink {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl NginxSink {
    pub fn start() -> NginxSink {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let rec = dir.path().join("rec");
        std::fs::create_dir_all(&rec).unwrap();
        let conf = format!(
            "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\n\
             daemon off;\nmaster_process off;\npid {pid};\nerror_log {log} info;\n\
             events {{ worker_connections 64; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096;\n\
               application app {{ live on; record all; record_path {rec}; record_unique on; }}\n\
             }} }}\n",
            pid = dir.path().join("nginx.pid").display(),
            log = dir.path().join("error.log").display(),
            rec = rec.display(),
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let mut sink = NginxSink {
            child: None,
            dir,
            port,
        };
        sink.spawn();
        sink
    }

    pub fn spawn(&mut self) {
        let child = Command::new("nginx")
            .arg("-c")
            .arg(self.dir.path().join("nginx.conf"))
            .arg("-p")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx (is nginx with libnginx-mod-rtmp installed? run scripts/test.sh)");
        self.child = Some(child);
        wait_for_port(self.port, "nginx-rtmp");
    }

    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    pub fn url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/app/{name}", self.port)
    }

    /// The FLV files recorded for publishes named `name`, oldest first.
    pub fn recordings(&self, name: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("rec"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{name}-")) && n.ends_with(".flv"))
            })
            .collect();
        files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        files
    }
}

impl Drop for NginxSink {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An EC P-256 key, no passphrase (openssl req options).
const EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];

/// A test CA and a server certificate for `localhost` / 127.0.0.1 signed by it.
pub struct TestCa {
    pub dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> TestCa {
        let ca = TestCa {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        ca.openssl(
            &[
                &["req", "-x509"][..],
                &EC_KEY[..],
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=livegate test CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ][..],
            ]
            .concat(),
        );
        ca.issue("server");
        ca
    }

    /// Issues another certificate for `localhost` / 127.0.0.1 (its own key, its own serial) as
    /// `<name>.pem` and `<name>.key`.
    pub fn issue(&self, name: &str) {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        self.openssl(
            &[
                &["req"][..],
                &EC_KEY[..],
                &["-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"][..],
            ]
            .concat(),
        );
        std::fs::write(
            self.dir.path().join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
    }

    /// Runs the openssl CLI in the CA's directory; its output.
    pub fn openssl(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The serial number of certificate `<name>.pem`, as openssl prints it.
    pub fn serial(&self, name: &str) -> String {
        let out = self.openssl(&["x509", "-in", &format!("{name}.pem"), "-noout", "-serial"]);
        String::from_utf8_lossy(&out).trim().to_string()
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// stunnel4 terminating TLS on `port` in front of a plain TCP service.
pub struct Stunnel {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    pub port: u16,
}

impl Stunnel {
    pub fn start(ca: &TestCa, backend_port: u16) -> Stunnel {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let conf = format!(
            "foreground = yes\npid =\n[rtmps]\naccept = 127.0.0.1:{port}\n\
             connect = 127.0.0.1:{backend_port}\ncert = {cert}\nkey = {key}\n",
            cert = ca.path("server.pem"),
            key = ca.path("server.key"),
        );
        let path = dir.path().join("stunnel.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("stunnel4")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn stunnel4 (run scripts/test.sh)");
        wait_for_port(port, "stunnel4");
        Stunnel {
            child: Some(child),
            _dir: dir,
            port,
        }
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// (codec names, video packets read) of a media file.
pub fn probe_file(path: &Path) -> (Vec<String>, u64) {
    let v = crate::common::ffprobe_with(&["-count_packets"], path.to_str().unwrap());
    let streams = v["streams"].as_array().cloned().unwrap_or_default();
    let codecs = streams
        .iter()
        .filter_map(|s| s["codec_name"].as_str().map(str::to_string))
        .collect();
    let packets = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .and_then(|s| s["nb_read_packets"].as_str()?.parse().ok())
        .unwrap_or(0);
    (codecs, packets)
}
