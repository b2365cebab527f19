//! Relay targets: where a user's stream is pushed, the platform presets, and RTMP URL parsing.
//!
//! A target URL carries the platform's stream key, a secret: it is stored (the embedded store is
//! mode 0600) but shown and logged only redacted.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::RelayPresets;
use crate::util::redact;

const MAX_URL_LEN: usize = 2048;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("unknown platform {0:?}: use youtube, twitch, facebook or custom")]
    UnknownPlatform(String),
    #[error("invalid relay URL: {0}")]
    InvalidUrl(&'static str),
    #[error("invalid stream key: {0}")]
    InvalidKey(&'static str),
    #[error("invalid rung name {0:?}")]
    InvalidRung(String),
    #[error("no ladder rung named {0:?} (configured: {1})")]
    UnknownRung(String, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Youtube,
    Twitch,
    Facebook,
    Custom,
}

impl Platform {
    pub fn parse(name: &str) -> Result<Platform, TargetError> {
        match name.to_ascii_lowercase().as_str() {
            "youtube" => Ok(Platform::Youtube),
            "twitch" => Ok(Platform::Twitch),
            "facebook" => Ok(Platform::Facebook),
            "custom" => Ok(Platform::Custom),
            _ => Err(TargetError::UnknownPlatform(
                name.chars().take(32).collect(),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Youtube => "youtube",
            Platform::Twitch => "twitch",
            Platform::Facebook => "facebook",
            Platform::Custom => "custom",
        }
    }
}

/// A stored relay target of one user.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayTarget {
    /// Short id, unique per user (`relays remove <user> <id>`).
    pub id: String,
    pub user: String,
    pub platform: Platform,
    /// The full URL including the platform's stream key (secret).
    pub url: String,
    /// Push this ladder rung instead of the stream as published (platforms that cap resolution
    /// or bitrate). None: the source.
    #[serde(default)]
    pub rung: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// By hand, so a `{:?}` in a log line can never print the stream key.
impl std::fmt::Debug for RelayTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayTarget")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("platform", &self.platform)
            .field("url", &self.redacted_url())
            .field("rung", &self.rung)
            .finish()
    }
}

impl RelayTarget {
    /// A target for `platform`: for presets `key_or_url` is the platform's stream key; for
    /// `custom` it is a full `rtmp://` or `rtmps://` URL.
    pub fn new(
        user: &str,
        platform: Platform,
        key_or_url: &str,
        rtmps: bool,
        rung: Option<&str>,
        presets: &RelayPresets,
    ) -> Result<RelayTarget, TargetError> {
        let url = match platform {
            Platform::Custom => key_or_url.to_string(),
            preset => preset_url(preset, key_or_url, rtmps, presets)?,
        };
        RtmpUrl::parse(&url)?;
        if let Some(r) = rung {
            if !crate::util::valid_user_name(r) {
                return Err(TargetError::InvalidRung(r.chars().take(32).collect()));
            }
        }
        Ok(RelayTarget {
            id: format!("{:06x}", rand::random::<u32>() & 0xff_ffff),
            user: user.to_string(),
            platform,
            url,
            rung: rung.map(str::to_string),
            created_at: Utc::now(),
        })
    }

    /// The URL with its stream key hidden, for lists and logs.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// A relay's rung must be one of the configured ladder's.
pub fn check_rung(
    rung: Option<&str>,
    ladder: &[crate::config::RungConfig],
) -> Result<(), TargetError> {
    match rung {
        Some(r) if !ladder.iter().any(|c| c.name == r) => Err(TargetError::UnknownRung(
            r.chars().take(32).collect(),
            ladder
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )),
        _ => Ok(()),
    }
}

/// A preset's URL for a stream key. Facebook accepts RTMPS only.
pub fn preset_url(
    platform: Platform,
    key: &str,
    rtmps: bool,
    presets: &RelayPresets,
) -> Result<String, TargetError> {
    if key.is_empty() || key.len() > 512 {
        return Err(TargetError::InvalidKey("empty or too long"));
    }
    // Platform keys are URL-safe tokens (Facebook's carry a query: `FB-…?s_bl=1&…`).
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.?=&%~".contains(&b))
    {
        return Err(TargetError::InvalidKey(
            "unexpected characters (expected the key the platform shows)",
        ));
    }
    let base = match platform {
        Platform::Youtube if rtmps => &presets.youtube_rtmps,
        Platform::Youtube => &presets.youtube,
        Platform::Twitch => &presets.twitch,
        Platform::Facebook => &presets.facebook,
        Platform::Custom => return Err(TargetError::InvalidUrl("custom targets take a URL")),
    };
    Ok(format!("{}/{key}", base.trim_end_matches('/')))
}

/// `scheme://host[:port]/app/…` with the last path segment (the stream key) redacted.
pub fn redact_url(url: &str) -> String {
    match url.rsplit_once('/') {
        Some((base, key))
            if base.contains("://") && base.len() > url.find("://").unwrap_or(0) + 3 =>
        {
            format!("{base}/{}", redact(key))
        }
        _ => redact(url),
    }
}

/// A parsed `rtmp://` or `rtmps://` publish URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RtmpUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Everything between the host and the last '/' (e.g. `live2`, `app/instance`).
    pub app: String,
    /// The last path segment, with any query (e.g. Facebook's `FB-…?s_bl=1`).
    pub stream_key: String,
}

impl std::fmt::Debug for RtmpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.tc_url(), redact(&self.stream_key))
    }
}

impl RtmpUrl {
    pub fn parse(url: &str) -> Result<RtmpUrl, TargetError> {
        if url.len() > MAX_URL_LEN {
            return Err(TargetError::InvalidUrl("longer than 2048 bytes"));
        }
        if url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(TargetError::InvalidUrl(
                "contains spaces or control characters",
            ));
        }
        let (tls, rest) = if let Some(r) = url.strip_prefix("rtmps://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("rtmp://") {
            (false, r)
        } else {
            return Err(TargetError::InvalidUrl(
                "must start with rtmp:// or rtmps://",
            ));
        };
        let (authority, path) = rest
            .split_once('/')
            .ok_or(TargetError::InvalidUrl("no application path"))?;
        if authority.contains('@') {
            return Err(TargetError::InvalidUrl("user info is not supported"));
        }
        let (host, port) = split_host_port(authority)?;
        let port = port.unwrap_or(if tls { 443 } else { 1935 });
        let (app, stream_key) = path
            .rsplit_once('/')
            .ok_or(TargetError::InvalidUrl("expected /APP/STREAM_KEY"))?;
        if app.is_empty() || stream_key.is_empty() {
            return Err(TargetError::InvalidUrl("expected /APP/STREAM_KEY"));
        }
        Ok(RtmpUrl {
            tls,
            host,
            port,
            app: app.to_string(),
            stream_key: stream_key.to_string(),
        })
    }

    /// `scheme://host:port`, for public status.
    pub fn origin(&self) -> String {
        let scheme = if self.tls { "rtmps" } else { "rtmp" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }

    /// The `tcUrl` sent in `connect`: the URL without the stream key.
    pub fn tc_url(&self) -> String {
        let scheme = if self.tls { "rtmps" } else { "rtmp" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{host}:{}/{}", self.port, self.app)
    }
}

fn split_host_port(authority: &str) -> Result<(String, Option<u16>), TargetError> {
    let bad_port = TargetError::InvalidUrl("bad port");
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        // [IPv6]:port
        let (host, after) = rest
            .split_once(']')
            .ok_or(TargetError::InvalidUrl("unclosed '[' in host"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse::<u16>().map_err(|_| bad_port)?),
            None if after.is_empty() => None,
            None => return Err(TargetError::InvalidUrl("junk after the host")),
        };
        (host.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.parse::<u16>().map_err(|_| bad_port)?)),
            None => (authority.to_string(), None),
        }
    };
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b));
    if !valid || port == Some(0) {
        return Err(TargetError::InvalidUrl("bad host"));
    }
    Ok((host, port))
}

/// Relay targets named in a publish URL's query (`youtube=KEY&twitch=KEY&facebook=KEY`).
/// Returns the targets and the names of parameters that were not understood.
pub fn query_targets(
    user: &str,
    query: &str,
    presets: &RelayPresets,
) -> (Vec<RelayTarget>, Vec<String>) {
    let mut targets = Vec::new();
    let mut ignored = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()).take(16) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let platform = match name {
            "youtube" => Platform::Youtube,
            "twitch" => Platform::Twitch,
            "facebook" => Platform::Facebook,
            _ => {
                ignored.push(name.chars().take(32).collect());
                continue;
            }
        };
        match RelayTarget::new(user, platform, value, false, None, presets) {
            Ok(mut t) => {
                t.id = format!("query-{}", platform.as_str());
                targets.push(t);
            }
            Err(_) => ignored.push(name.to_string()),
        }
    }
    (targets, ignored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets() {
        let p = RelayPresets::default();
        let url = |platform, rtmps| preset_url(platform, "abcd-1234", rtmps, &p).unwrap();
        assert_eq!(
            url(Platform::Youtube, false),
            "rtmp://a.rtmp.youtube.com/live2/abcd-1234"
        );
        assert_eq!(
            url(Platform::Youtube, true),
            "rtmps://a.rtmps.youtube.com:443/live2/abcd-1234"
        );
        assert_eq!(
            url(Platform::Twitch, false),
            "rtmp://live.twitch.tv/app/abcd-1234"
        );
        assert_eq!(
            url(Platform::Facebook, false),
            "rtmps://live-api-s.facebook.com:443/rtmp/abcd-1234"
        );
        assert!(preset_url(Platform::Twitch, "a/b", false, &p).is_err());
        assert!(preset_url(Platform::Twitch, "", false, &p).is_err());
    }

    #[test]
    fn parses_urls() {
        let u = RtmpUrl::parse("rtmps://live-api-s.facebook.com:443/rtmp/FB-1-0-Ab?s_bl=1&a=b")
            .unwrap();
        assert!(u.tls);
        assert_eq!(u.host, "live-api-s.facebook.com");
        assert_eq!(u.port, 443);
        assert_eq!(u.app, "rtmp");
        assert_eq!(u.stream_key, "FB-1-0-Ab?s_bl=1&a=b");
        assert_eq!(u.tc_url(), "rtmps://live-api-s.facebook.com:443/rtmp");
        let u = RtmpUrl::parse("rtmp://127.0.0.1/app/inst/key").unwrap();
        assert_eq!(
            (u.port, u.app.as_str(), u.stream_key.as_str()),
            (1935, "app/inst", "key")
        );
        let u = RtmpUrl::parse("rtmp://[::1]:1936/live/k").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1936));
        assert_eq!(u.tc_url(), "rtmp://[::1]:1936/live");
        for bad in [
            "http://x/app/k",
            "rtmp://x/k",
            "rtmp://x/app/",
            "rtmp:///app/k",
            "rtmp://x:0/app/k",
            "rtmp://x:99999/app/k",
            "rtmp://u:p@x/app/k",
            "rtmp://x y/app/k",
            "rtmp://[::1/app/k",
        ] {
            assert!(RtmpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redaction_keeps_the_key_out() {
        let t = RelayTarget::new(
            "alice",
            Platform::Twitch,
            "live_123456789_SECRETSECRET",
            false,
            None,
            &RelayPresets::default(),
        )
        .unwrap();
        let shown = t.redacted_url();
        assert!(
            shown.starts_with("rtmp://live.twitch.tv/app/live_1"),
            "{shown}"
        );
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(!redact_url("garbage-with-SECRET").contains("SECRET"));
    }

    #[test]
    fn query_targets_use_the_presets() {
        let (targets, ignored) = query_targets(
            "alice",
            "youtube=yt-key&twitch=tw_key&foo=1",
            &RelayPresets::default(),
        );
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0].url, "rtmp://a.rtmp.youtube.com/live2/yt-key");
        assert_eq!(targets[1].platform, Platform::Twitch);
        assert_eq!(ignored, vec!["foo".to_string()]);
    }

    proptest::proptest! {
        #[test]
        fn url_parser_never_panics(s in "\\PC{0,120}") {
            let _ = RtmpUrl::parse(&s);
            let _ = redact_url(&s);
            let _ = query_targets("u", &s, &RelayPresets::default());
        }

        #[test]
        fn parsed_urls_rebuild(host in "[a-z][a-z0-9-]{0,20}(\\.[a-z]{2,5})?", port in 1u16.., app in "[a-z0-9]{1,10}", key in "[A-Za-z0-9_-]{1,40}") {
            let url = format!("rtmp://{host}:{port}/{app}/{key}");
            let parsed = RtmpUrl::parse(&url).unwrap();
            proptest::prop_assert_eq!(format!("{}/{}", parsed.tc_url(), parsed.stream_key), url);
        }
    }
}
