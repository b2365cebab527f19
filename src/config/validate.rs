//! Start-up validation of every setting: a bad value is an error naming the key, not a
//! surprise at run time.

use super::{Config, ConfigError, RecordBackend};

/// The longest duration any setting may hold: 10 years.
const MAX_DURATION_SECS: u64 = 10 * 365 * 86_400;

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| ConfigError::Invalid {
            key,
            message: message.into(),
        };
        // Durations become deadlines (`Instant + Duration`, which panics past the clock's
        // range): a value meant as "forever" is refused here, not in every connection's task.
        let a = &self.access;
        let (h, r, c) = (&self.http, &self.rtmp, &self.cluster);
        for (key, secs) in [
            ("shutdown_grace_secs", self.shutdown_grace_secs),
            (
                "relay.connect_timeout_secs",
                self.relay.connect_timeout_secs,
            ),
            ("relay.max_backoff_secs", self.relay.max_backoff_secs),
            (
                "transcode.thumbnail_interval_secs",
                self.transcode.thumbnail_interval_secs,
            ),
            ("rtmp.handshake_timeout_secs", r.handshake_timeout_secs),
            ("rtmp.idle_timeout_secs", r.idle_timeout_secs),
            ("rtmp.publish_timeout_secs", r.publish_timeout_secs),
            ("http.header_read_timeout_secs", h.header_read_timeout_secs),
            ("http.first_byte_timeout_secs", h.first_byte_timeout_secs),
            ("http.idle_timeout_secs", h.idle_timeout_secs),
            ("http.write_timeout_secs", h.write_timeout_secs),
            ("http.h2_keep_alive_secs", h.h2_keep_alive_secs),
            ("access.token_leeway_secs", a.token_leeway_secs),
            ("access.max_token_ttl_secs", a.max_token_ttl_secs),
            ("access.viewer_window_secs", a.viewer_window_secs),
            ("hls.keep_ended_secs", self.hls.keep_ended_secs),
            ("cluster.key_refresh_secs", c.key_refresh_secs),
            (
                "cluster.key_snapshot_max_age_secs",
                c.key_snapshot_max_age_secs,
            ),
            ("cluster.lease_ttl_secs", c.lease_ttl_secs),
            (
                "record.max_duration_hours",
                self.record.max_duration_hours.saturating_mul(3600),
            ),
            (
                "record.retention_days",
                self.record.retention_days.saturating_mul(86_400),
            ),
        ] {
            if secs > MAX_DURATION_SECS {
                return Err(invalid(key, "at most 10 years (0 where it means off)"));
            }
        }
        if !(0.5..=30.0).contains(&self.hls.segment_duration) {
            return Err(invalid(
                "hls.segment_duration",
                "must be between 0.5 and 30 seconds",
            ));
        }
        if self.hls.low_latency
            && !(0.1..=self.hls.segment_duration / 2.0).contains(&self.hls.part_duration)
        {
            return Err(invalid(
                "hls.part_duration",
                "must be at least 0.1 s and at most half of hls.segment_duration",
            ));
        }
        let h = &self.hooks;
        if !h.publish_auth_url.is_empty() {
            if !(h.publish_auth_url.starts_with("http://")
                || h.publish_auth_url.starts_with("https://"))
            {
                return Err(invalid(
                    "hooks.publish_auth_url",
                    "must be an http:// or https:// URL",
                ));
            }
            if !(10..=30_000).contains(&h.publish_auth_timeout_ms) {
                return Err(invalid(
                    "hooks.publish_auth_timeout_ms",
                    "must be between 10 and 30000",
                ));
            }
        }
        if !h.webhook_url.is_empty() {
            if !(h.webhook_url.starts_with("http://") || h.webhook_url.starts_with("https://")) {
                return Err(invalid(
                    "hooks.webhook_url",
                    "must be an http:// or https:// URL",
                ));
            }
            if h.webhook_secret.len() < 16 {
                return Err(invalid(
                    "hooks.webhook_secret",
                    "must be set (16 characters or more) when hooks.webhook_url is: the site \
                     checks each event's signature with it (e.g. `openssl rand -hex 32`)",
                ));
            }
            if let Some(unknown) = h
                .webhook_events
                .iter()
                .find(|e| !super::sections::WEBHOOK_EVENTS.contains(&e.as_str()))
            {
                return Err(ConfigError::Invalid {
                    key: "hooks.webhook_events",
                    message: format!(
                        "{unknown:?} is not an event; use any of {:?} (empty: all)",
                        super::sections::WEBHOOK_EVENTS
                    ),
                });
            }
            if !(100..=60_000).contains(&h.webhook_timeout_ms) {
                return Err(invalid(
                    "hooks.webhook_timeout_ms",
                    "must be between 100 and 60000",
                ));
            }
            if !(1..=20).contains(&h.webhook_attempts) {
                return Err(invalid(
                    "hooks.webhook_attempts",
                    "must be between 1 and 20",
                ));
            }
        }
        let c = &self.cluster;
        if c.enabled() {
            if !(c.redis_url.starts_with("redis://")
                || c.redis_url.starts_with("rediss://")
                || c.redis_url.starts_with("unix://"))
            {
                return Err(invalid(
                    "cluster.redis_url",
                    "must be a redis://, rediss:// or unix:// URL",
                ));
            }
            if !(10..=10_000).contains(&c.redis_timeout_ms) {
                return Err(invalid(
                    "cluster.redis_timeout_ms",
                    "must be between 10 and 10000",
                ));
            }
            if !(3..=300).contains(&c.lease_ttl_secs) {
                return Err(invalid(
                    "cluster.lease_ttl_secs",
                    "must be between 3 and 300",
                ));
            }
            if c.key_refresh_secs == 0 || c.key_snapshot_max_age_secs == 0 {
                return Err(invalid(
                    "cluster.key_refresh_secs/key_snapshot_max_age_secs",
                    "must be at least 1",
                ));
            }
        }
        let w = &self.whip;
        if w.enabled {
            if w.udp_listen.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid("whip.udp_listen", "must be IP:PORT"));
            }
            if w.advertise.iter().any(|a| {
                a.parse::<std::net::IpAddr>().is_err() && a.parse::<std::net::SocketAddr>().is_err()
            }) {
                return Err(invalid(
                    "whip.advertise",
                    "each entry must be an IP or IP:PORT",
                ));
            }
            if !(w.h264 || w.vp8 || w.vp9) {
                return Err(invalid(
                    "whip.h264/vp8/vp9",
                    "enable at least one video codec",
                ));
            }
            if w.max_sessions == 0 || w.max_sdp_kib == 0 || w.requests_per_minute == 0 {
                return Err(invalid(
                    "whip.max_sessions/max_sdp_kib/requests_per_minute",
                    "must be at least 1",
                ));
            }
            if !(1..=120).contains(&w.connect_timeout_secs)
                || !(2..=120).contains(&w.idle_timeout_secs)
            {
                return Err(invalid(
                    "whip.connect_timeout_secs/idle_timeout_secs",
                    "must be between 1 (2 for idle) and 120 seconds",
                ));
            }
            if w.ice_servers.iter().any(|s| {
                !(s.url.starts_with("stun:")
                    || s.url.starts_with("turn:")
                    || s.url.starts_with("turns:"))
                    || s.url.contains(['<', '>', '"', ',', ' '])
            }) {
                return Err(invalid(
                    "whip.ice_servers.url",
                    "must be a stun:, turn: or turns: URI",
                ));
            }
        }
        if self.shutdown_grace_secs > 3600 {
            return Err(invalid("shutdown_grace_secs", "must be at most 3600"));
        }
        if !(3..=100).contains(&self.hls.window) {
            return Err(invalid("hls.window", "must be between 3 and 100 segments"));
        }
        if self.hls.max_segment_mib == 0 || self.hls.max_stream_memory_mib == 0 {
            return Err(invalid("hls.max_*_mib", "must be at least 1"));
        }
        let t = &self.transcode;
        if t.enabled && t.rungs.is_empty() {
            return Err(invalid(
                "transcode.rungs",
                "at least one rung when transcoding is on",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for r in &t.rungs {
            if !crate::util::valid_user_name(&r.name) || r.name == "source" || r.name == "audio" {
                return Err(invalid(
                    "transcode.rungs.name",
                    "use a-z, 0-9, '_' and '-' (not \"source\" or \"audio\")",
                ));
            }
            if !names.insert(r.name.as_str()) {
                return Err(invalid("transcode.rungs.name", "rung names must be unique"));
            }
            if !(64..=4320).contains(&r.height) {
                return Err(invalid(
                    "transcode.rungs.height",
                    "must be between 64 and 4320",
                ));
            }
            if r.video_bitrate == 0 || r.maxrate < r.video_bitrate || r.bufsize == 0 {
                return Err(invalid(
                    "transcode.rungs",
                    "need video_bitrate > 0, maxrate >= video_bitrate, bufsize > 0",
                ));
            }
            if !(0.0..=240.0).contains(&r.max_fps) {
                return Err(invalid(
                    "transcode.rungs.max_fps",
                    "0 (source rate) up to 240",
                ));
            }
        }
        if !(8_000..=512_000).contains(&t.audio_bitrate) {
            return Err(invalid(
                "transcode.audio_bitrate",
                "between 8000 and 512000",
            ));
        }
        if ![32_000, 44_100, 48_000].contains(&t.audio_sample_rate) {
            return Err(invalid(
                "transcode.audio_sample_rate",
                "32000, 44100 or 48000",
            ));
        }
        if !(0..=19).contains(&t.ladder_nice) {
            return Err(invalid("transcode.ladder_nice", "between 0 and 19"));
        }
        if t.max_source_pixels < 64 * 64 || !(64..=16384).contains(&t.max_source_dimension) {
            return Err(invalid(
                "transcode.max_source_*",
                "max_source_pixels at least 4096, max_source_dimension 64 to 16384",
            ));
        }
        if !(1.0..=480.0).contains(&t.max_source_fps) {
            return Err(invalid("transcode.max_source_fps", "between 1 and 480"));
        }
        if t.queue_frames < 16 {
            return Err(invalid("transcode.queue_frames", "at least 16"));
        }
        if self.rtmp.publish_timeout_secs == 0 || self.rtmp.handshake_timeout_secs == 0 {
            return Err(invalid("rtmp.*_timeout_secs", "must be at least 1"));
        }
        let r = &self.rtmp;
        if r.max_connections == 0
            || r.max_connections_per_ip == 0
            || r.max_unauthenticated_per_ip == 0
        {
            return Err(invalid("rtmp.max_connections*", "must be at least 1"));
        }
        if r.max_unauthenticated == 0 || r.max_unauthenticated >= r.max_connections {
            return Err(invalid(
                "rtmp.max_unauthenticated",
                "at least 1 and below rtmp.max_connections (the rest is kept for publishers)",
            ));
        }
        let h = &self.http;
        if h.max_connections == 0 || h.max_connections_per_ip == 0 {
            return Err(invalid("http.max_connections*", "must be at least 1"));
        }
        if [
            h.header_read_timeout_secs,
            h.first_byte_timeout_secs,
            h.idle_timeout_secs,
            h.write_timeout_secs,
            h.h2_keep_alive_secs,
        ]
        .contains(&0)
            || h.h2_max_concurrent_streams == 0
        {
            return Err(invalid(
                "http.*_timeout_secs",
                "timeouts and h2 limits must be at least 1",
            ));
        }
        if h.per_ip_exempt
            .iter()
            .any(|a| a.parse::<std::net::IpAddr>().is_err())
        {
            return Err(invalid(
                "http.per_ip_exempt",
                "IP addresses only, e.g. [\"10.0.0.5\"]",
            ));
        }
        if h.trusted_proxies
            .iter()
            .any(|a| super::parse_net(a).is_none())
        {
            return Err(invalid(
                "http.trusted_proxies",
                "addresses or CIDR blocks only, e.g. [\"127.0.0.1\", \"10.0.0.0/8\"]",
            ));
        }
        let a = &self.access;
        if !a.token_secret.is_empty() && a.token_secret.len() < 32 {
            return Err(invalid(
                "access.token_secret",
                "must be at least 32 characters (e.g. `openssl rand -hex 32`), or empty",
            ));
        }
        if a.token_leeway_secs > 600 {
            return Err(invalid("access.token_leeway_secs", "must be at most 600"));
        }
        if a.max_token_ttl_secs < 60 {
            return Err(invalid("access.max_token_ttl_secs", "must be at least 60"));
        }
        if !(5..=3600).contains(&a.viewer_window_secs) {
            return Err(invalid(
                "access.viewer_window_secs",
                "must be between 5 and 3600",
            ));
        }
        if !h.metrics_listen.is_empty() && h.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "http.metrics_listen",
                "must be an address like 127.0.0.1:9100",
            ));
        }
        check_tls(
            ("rtmp.tls_listen", "rtmp.tls_cert"),
            "0.0.0.0:1936",
            &self.rtmp.tls_listen,
            &self.rtmp.tls_cert,
            &self.rtmp.tls_key,
        )?;
        check_tls(
            ("http.tls_listen", "http.tls_cert"),
            "0.0.0.0:443",
            &h.tls_listen,
            &h.tls_cert,
            &h.tls_key,
        )?;
        let relay = &self.relay;
        if relay.connect_timeout_secs == 0 || relay.max_backoff_secs == 0 {
            return Err(invalid("relay.*_secs", "must be at least 1"));
        }
        if relay.queue_frames < 16 {
            return Err(invalid("relay.queue_frames", "at least 16"));
        }
        // Budgets too small to carry a real stream would refuse every publisher.
        if !(64..=16_384).contains(&self.rtmp.max_message_kib) {
            return Err(invalid("rtmp.max_message_kib", "between 64 and 16384"));
        }
        if self.rtmp.max_messages_per_sec < 100 {
            return Err(invalid("rtmp.max_messages_per_sec", "at least 100"));
        }
        if self.rtmp.ring_max_mib < 8 || t.queue_max_mib < 4 || relay.queue_max_mib < 4 {
            return Err(invalid(
                "rtmp.ring_max_mib / *.queue_max_mib",
                "at least 8 / 4 MiB",
            ));
        }
        if self.hls.max_segment_samples < 256 {
            return Err(invalid("hls.max_segment_samples", "at least 256"));
        }
        for (key, url) in [
            ("relay.presets.youtube", &relay.presets.youtube),
            ("relay.presets.youtube_rtmps", &relay.presets.youtube_rtmps),
            ("relay.presets.twitch", &relay.presets.twitch),
            ("relay.presets.facebook", &relay.presets.facebook),
        ] {
            if !(url.starts_with("rtmp://") || url.starts_with("rtmps://")) {
                return Err(invalid(key, "must be an rtmp:// or rtmps:// URL"));
            }
        }
        let r = &self.record;
        if r.spool_max_mib == 0 {
            return Err(invalid("record.spool_max_mib", "must be at least 1"));
        }
        if r.backend == RecordBackend::S3 && r.enabled && r.s3.bucket.is_empty() {
            return Err(invalid(
                "record.s3.bucket",
                "required with record.backend = \"s3\"",
            ));
        }
        if !r.s3.endpoint.is_empty() && !r.s3.endpoint.starts_with("http") {
            return Err(invalid(
                "record.s3.endpoint",
                "must be an http:// or https:// URL",
            ));
        }
        if r.s3.endpoint.contains('@') {
            // The endpoint is logged; credentials belong in the AWS chain.
            return Err(invalid(
                "record.s3.endpoint",
                "no credentials in the URL: use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile",
            ));
        }
        let webhook_ok = r.webhook_url.is_empty()
            || r.webhook_url.starts_with("http://")
            || r.webhook_url.starts_with("https://");
        if !webhook_ok {
            return Err(invalid(
                "record.webhook_url",
                "must be an http:// or https:// URL",
            ));
        }
        if !r.rung.is_empty() && !crate::util::valid_user_name(&r.rung) {
            return Err(invalid("record.rung", "a rung name (a-z, 0-9, '_', '-')"));
        }
        for (key, addr) in [
            ("rtmp.listen", &self.rtmp.listen),
            ("http.listen", &self.http.listen),
        ] {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid(key, "must be an address like 0.0.0.0:1935"));
            }
        }
        Ok(())
    }
}

/// A TLS listener needs an address and both PEM files (whether they load is checked at start).
fn check_tls(
    (listen_key, cert_key): (&'static str, &'static str),
    example: &str,
    listen: &str,
    cert: &str,
    key: &str,
) -> Result<(), ConfigError> {
    if listen.is_empty() {
        return Ok(());
    }
    if listen.parse::<std::net::SocketAddr>().is_err() {
        return Err(ConfigError::Invalid {
            key: listen_key,
            message: format!("must be an address like {example}"),
        });
    }
    if cert.is_empty() || key.is_empty() {
        return Err(ConfigError::Invalid {
            key: cert_key,
            message: format!("{listen_key} needs tls_cert and tls_key (PEM files)"),
        });
    }
    Ok(())
}
