//! Typed configuration. Every field has a default that makes a working single node, so an empty
//! file (or no file) serves. Any key can be overridden from the environment as
//! `LIVEGATE_<SECTION>_<KEY>` (top-level keys: `LIVEGATE_<KEY>`), e.g. `LIVEGATE_HLS_WINDOW=8`.

mod outputs;
mod sections;
mod validate;
pub use outputs::*;
pub use sections::*;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid setting {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where livegate keeps its state (stream-key store, recordings spool).
    pub data_dir: PathBuf,
    /// Base URL viewers use to reach this node's HTTP server (printed in logs). Empty: derived
    /// from `http.listen`.
    pub public_http_url: String,
    /// Host name publishers use to reach the RTMP listener (printed in logs). Empty: derived.
    pub public_rtmp_host: String,
    /// Seconds SIGTERM/Ctrl-C waits for live streams to end and recordings to be stored before
    /// the process exits anyway (what is still spooled is resumed at the next start).
    pub shutdown_grace_secs: u64,
    pub rtmp: RtmpConfig,
    pub http: HttpConfig,
    pub access: AccessConfig,
    pub hls: HlsConfig,
    pub transcode: TranscodeConfig,
    pub record: RecordConfig,
    pub relay: RelayConfig,
    pub whip: WhipConfig,
    pub cluster: ClusterConfig,
    pub hooks: HooksConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            public_http_url: String::new(),
            public_rtmp_host: String::new(),
            shutdown_grace_secs: 8,
            rtmp: RtmpConfig::default(),
            http: HttpConfig::default(),
            access: AccessConfig::default(),
            hls: HlsConfig::default(),
            transcode: TranscodeConfig::default(),
            record: RecordConfig::default(),
            relay: RelayConfig::default(),
            whip: WhipConfig::default(),
            cluster: ClusterConfig::default(),
            hooks: HooksConfig::default(),
        }
    }
}

/// An address or CIDR block (`10.0.0.5`, `10.0.0.0/8`, `::1`).
pub fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

impl Config {
    /// Loads the file (if any), applies `LIVEGATE_*` overrides from `env`, and validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut tree = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse {
                        path: path.to_owned(),
                        message: e.to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut tree, env)?;
        let config: Config =
            toml::Value::Table(tree)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: path.map(Path::to_owned).unwrap_or_else(|| "<env>".into()),
                    message: e.to_string(),
                })?;
        config.validate()?;
        Ok(config)
    }

    pub fn keys_path(&self) -> PathBuf {
        self.data_dir.join("keys.json")
    }

    /// The embedded channel-settings store.
    pub fn channels_path(&self) -> PathBuf {
        self.data_dir.join("channels.json")
    }

    /// Segments waiting for upload.
    pub fn spool_path(&self) -> PathBuf {
        self.data_dir.join("spool")
    }

    /// Root of the local recording backend.
    pub fn local_recordings_path(&self) -> PathBuf {
        if self.record.local_path.is_empty() {
            self.data_dir.join("recordings")
        } else {
            PathBuf::from(&self.record.local_path)
        }
    }

    /// Host part for printed URLs: the configured public host, else the bind address unless it
    /// is a wildcard.
    fn host_of(listen: &str, public: &str) -> String {
        if !public.is_empty() {
            return public.to_string();
        }
        match listen.parse::<std::net::SocketAddr>() {
            Ok(addr) if !addr.ip().is_unspecified() => addr.ip().to_string(),
            _ => "localhost".to_string(),
        }
    }

    pub fn rtmp_publish_url(&self) -> String {
        let host = Self::host_of(&self.rtmp.listen, &self.public_rtmp_host);
        let port = self
            .rtmp
            .listen
            .parse::<std::net::SocketAddr>()
            .map(|a| a.port())
            .unwrap_or(1935);
        if port == 1935 {
            format!("rtmp://{host}/live")
        } else {
            format!("rtmp://{host}:{port}/live")
        }
    }

    /// This node's name in the cluster: `cluster.node_id`, else the host name.
    pub fn cluster_node_id(&self) -> String {
        if !self.cluster.node_id.is_empty() {
            return self.cluster.node_id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "livegate".to_string())
    }

    pub fn http_base_url(&self) -> String {
        if !self.public_http_url.is_empty() {
            return self.public_http_url.trim_end_matches('/').to_string();
        }
        let host = Self::host_of(&self.http.listen, "");
        let port = self
            .http
            .listen
            .parse::<std::net::SocketAddr>()
            .map(|a| a.port())
            .unwrap_or(8080);
        format!("http://{host}:{port}")
    }
}

/// Every leaf key of the defaults as (variable name, path, default), sections nested to any depth
/// (`[record.s3] bucket` is `LIVEGATE_RECORD_S3_BUCKET`).
fn collect_known_keys(
    table: &toml::Table,
    path: &mut Vec<String>,
    known: &mut Vec<(String, Vec<String>, toml::Value)>,
) {
    for (key, value) in table {
        path.push(key.clone());
        match value {
            toml::Value::Table(section) => collect_known_keys(section, path, known),
            v => {
                let name = format!("{ENV_PREFIX}{}", path.join("_")).to_uppercase();
                known.push((name, path.clone(), v.clone()));
            }
        }
        path.pop();
    }
}

/// Maps `LIVEGATE_SECTION_KEY=value` onto the config tree. Names are matched against the known
/// keys (from the defaults), so a key with underscores (`segment_duration`) is found unambiguously
/// and a misspelled variable is an error rather than silently ignored.
fn apply_env(
    tree: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let defaults = match toml::Value::try_from(Config::default()) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    };
    let mut known: Vec<(String, Vec<String>, toml::Value)> = Vec::new();
    collect_known_keys(&defaults, &mut Vec::new(), &mut known);
    for (var, raw) in env {
        if !var.starts_with(ENV_PREFIX) || var == "LIVEGATE_CONFIG" || var == "LIVEGATE_LOG" {
            continue;
        }
        let Some((_, path, default)) = known.iter().find(|(name, _, _)| *name == var) else {
            return Err(ConfigError::Env {
                var,
                message: "not a known setting (see config/livegate.toml)".into(),
            });
        };
        let value = match default {
            toml::Value::Integer(_) => raw.parse::<i64>().map(toml::Value::Integer).ok(),
            toml::Value::Float(_) => raw.parse::<f64>().map(toml::Value::Float).ok(),
            toml::Value::Boolean(_) => raw.parse::<bool>().map(toml::Value::Boolean).ok(),
            toml::Value::Array(items) if items.iter().all(|i| i.is_str()) => {
                Some(toml::Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.into()))
                        .collect(),
                ))
            }
            toml::Value::Array(_) | toml::Value::Table(_) => {
                return Err(ConfigError::Env {
                    var,
                    message: "a list of tables; set it in the config file".into(),
                })
            }
            _ => Some(toml::Value::String(raw.clone())),
        }
        .ok_or_else(|| ConfigError::Env {
            var: var.clone(),
            message: format!("cannot parse {raw:?} as {}", default.type_str()),
        })?;
        let mut table = &mut *tree;
        for part in &path[..path.len() - 1] {
            let entry = table
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match entry {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(ConfigError::Env {
                        var,
                        message: format!("[{part}] in the file is not a table"),
                    })
                }
            };
        }
        table.insert(path[path.len() - 1].clone(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.rtmp.listen, "0.0.0.0:1935");
        assert_eq!(c.http.listen, "0.0.0.0:8080");
        assert_eq!(c.hls.segment_duration, 2.0);
        assert_eq!(c.hls.window, 6);
        assert_eq!(c.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn file_and_env_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "data_dir = \"/tmp/x\"\n[hls]\nsegment_duration = 4.0\nwindow = 5\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&path),
            env(&[
                ("LIVEGATE_HLS_WINDOW", "8"),
                ("LIVEGATE_HTTP_LISTEN", "127.0.0.1:9000"),
                ("LIVEGATE_DATA_DIR", "/tmp/y"),
                ("OTHER", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(c.hls.segment_duration, 4.0);
        assert_eq!(c.hls.window, 8);
        assert_eq!(c.http.listen, "127.0.0.1:9000");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/y"));
    }

    #[test]
    fn bad_settings_are_named() {
        let err = Config::load(None, env(&[("LIVEGATE_HLS_WINDOW", "two")])).unwrap_err();
        assert!(err.to_string().contains("LIVEGATE_HLS_WINDOW"), "{err}");
        let err = Config::load(None, env(&[("LIVEGATE_HLS_WINDWO", "2")])).unwrap_err();
        assert!(err.to_string().contains("not a known setting"), "{err}");
        let err = Config::load(None, env(&[("LIVEGATE_HLS_WINDOW", "1")])).unwrap_err();
        assert!(err.to_string().contains("hls.window"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[hls]\nsegment_durration = 4.0\n").unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err();
        assert!(err.to_string().contains("segment_durration"), "{err}");
    }

    #[test]
    fn a_duration_past_the_clock_range_is_refused_at_start() {
        // Deadlines are `Instant + Duration`: "forever" would panic in every connection task.
        for (var, key) in [
            (
                "LIVEGATE_RTMP_PUBLISH_TIMEOUT_SECS",
                "rtmp.publish_timeout_secs",
            ),
            (
                "LIVEGATE_HTTP_FIRST_BYTE_TIMEOUT_SECS",
                "http.first_byte_timeout_secs",
            ),
            ("LIVEGATE_RECORD_RETENTION_DAYS", "record.retention_days"),
        ] {
            let err = Config::load(None, env(&[(var, &i64::MAX.to_string())])).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
        let year = Config::load(
            None,
            env(&[("LIVEGATE_RTMP_IDLE_TIMEOUT_SECS", "31536000")]),
        )
        .unwrap();
        assert_eq!(year.rtmp.idle_timeout_secs, 31_536_000);
    }

    #[test]
    fn webhook_settings() {
        let hook = ("LIVEGATE_HOOKS_WEBHOOK_URL", "https://site.example/hooks");
        let secret = ("LIVEGATE_HOOKS_WEBHOOK_SECRET", "0123456789abcdef");
        let err = Config::load(None, env(&[hook])).unwrap_err();
        assert!(err.to_string().contains("hooks.webhook_secret"), "{err}");
        let c = Config::load(None, env(&[hook, secret])).unwrap();
        assert!(c.hooks.webhook_events.is_empty());
        let events = ("LIVEGATE_HOOKS_WEBHOOK_EVENTS", "publish, unpublish");
        let c = Config::load(None, env(&[hook, secret, events])).unwrap();
        assert_eq!(c.hooks.webhook_events, ["publish", "unpublish"]);
        let typo = ("LIVEGATE_HOOKS_WEBHOOK_EVENTS", "published");
        let err = Config::load(None, env(&[hook, secret, typo])).unwrap_err();
        assert!(
            err.to_string().contains("\"published\" is not an event"),
            "{err}"
        );
        let ftp = ("LIVEGATE_HOOKS_WEBHOOK_URL", "ftp://site.example/hooks");
        let err = Config::load(None, env(&[ftp, secret])).unwrap_err();
        assert!(err.to_string().contains("hooks.webhook_url"), "{err}");
    }

    #[test]
    fn transcode_settings() {
        let c = Config::load(
            None,
            env(&[
                ("LIVEGATE_TRANSCODE_PASSTHROUGH_USERS", "alice, bob"),
                ("LIVEGATE_TRANSCODE_ENABLED", "true"),
            ]),
        )
        .unwrap();
        assert!(!c.transcode.transcodes("alice"));
        assert!(c.transcode.transcodes("carol"));
        assert_eq!(c.transcode.rungs.len(), 3);
        assert_eq!(c.transcode.rungs[2].maxrate, 2_996_000);
        let off = Config::load(None, env(&[("LIVEGATE_TRANSCODE_ENABLED", "false")])).unwrap();
        assert!(!off.transcode.transcodes("carol"));
        let err = Config::load(None, env(&[("LIVEGATE_TRANSCODE_RUNGS", "x")])).unwrap_err();
        assert!(err.to_string().contains("config file"), "{err}");
    }

    #[test]
    fn printed_urls() {
        let mut c = Config::default();
        assert_eq!(c.rtmp_publish_url(), "rtmp://localhost/live");
        assert_eq!(c.http_base_url(), "http://localhost:8080");
        c.rtmp.listen = "127.0.0.1:1936".into();
        assert_eq!(c.rtmp_publish_url(), "rtmp://127.0.0.1:1936/live");
        c.public_http_url = "https://cdn.example/".into();
        assert_eq!(c.http_base_url(), "https://cdn.example");
    }

    #[test]
    fn documented_example_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/livegate.toml");
        let documented = Config::load(Some(&path), env(&[])).unwrap();
        let as_toml = |c: &Config| toml::to_string(c).unwrap();
        assert_eq!(as_toml(&documented), as_toml(&Config::default()));
        // Every key is documented (the file lists every default key).
        let text = std::fs::read_to_string(&path).unwrap();
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        fn check(text: &str, section: &str, table: &toml::Table) {
            for (key, value) in table {
                let full = if section.is_empty() {
                    key.clone()
                } else {
                    format!("{section}.{key}")
                };
                match value {
                    toml::Value::Table(inner) => {
                        assert!(text.contains(&format!("[{full}]")), "[{full}] undocumented");
                        check(text, &full, inner);
                    }
                    toml::Value::Array(a) if !a.is_empty() && a.iter().all(|i| i.is_table()) => {
                        assert!(text.contains(&format!("[[{full}]]")), "{full} undocumented");
                    }
                    _ => assert!(text.contains(&format!("\n{key} = ")), "{full} undocumented"),
                }
            }
        }
        check(&text, "", defaults.as_table().unwrap());
    }

    #[test]
    fn record_settings() {
        let c = Config::load(
            None,
            env(&[
                ("LIVEGATE_RECORD_BACKEND", "s3"),
                ("LIVEGATE_RECORD_S3_BUCKET", "vod"),
                ("LIVEGATE_RECORD_S3_FORCE_PATH_STYLE", "true"),
                ("LIVEGATE_RECORD_EXCLUDE_USERS", "bob"),
            ]),
        )
        .unwrap();
        assert_eq!(c.record.backend, RecordBackend::S3);
        assert_eq!(c.record.s3.bucket, "vod");
        assert!(c.record.s3.force_path_style);
        assert!(c.record.records("alice"));
        assert!(!c.record.records("bob"));
        let err = Config::load(None, env(&[("LIVEGATE_RECORD_BACKEND", "s3")])).unwrap_err();
        assert!(err.to_string().contains("record.s3.bucket"), "{err}");
        let err = Config::load(None, env(&[("LIVEGATE_RECORD_BACKEND", "ftp")])).unwrap_err();
        assert!(err.to_string().contains("ftp"), "{err}");
    }
}
