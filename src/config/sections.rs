//! The sections for how livegate is reached and run: listeners, access, HLS, WHIP, the cluster
//! and webhooks, field by field, with their working defaults.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtmpConfig {
    /// Address the RTMP listener binds. The application name is always `live`.
    pub listen: String,
    /// Seconds from accepting the TCP connection to the end of the TLS (RTMPS) and RTMP
    /// handshakes; never more than `publish_timeout_secs`, which runs from the same instant.
    pub handshake_timeout_secs: u64,
    /// Seconds without any byte from the client before the session is closed.
    pub idle_timeout_secs: u64,
    /// The pre-auth deadline: seconds from accepting the TCP connection to an accepted publish
    /// (TLS, handshake, connect, createStream, publish with a valid key).
    pub publish_timeout_secs: u64,
    /// Bytes a client may send before its publish is accepted (connect, createStream, publish).
    pub max_unauthenticated_bytes: usize,
    /// Simultaneous RTMP and RTMPS connections together; further ones are closed at once.
    pub max_connections: usize,
    /// Simultaneous connections from one address (IPv6: one /64), publishing or not.
    pub max_connections_per_ip: usize,
    /// Connections not yet accepted to publish, in total. The other `max_connections -
    /// max_unauthenticated` slots can only be held by publishers with a valid key.
    pub max_unauthenticated: usize,
    /// Connections not yet accepted to publish from one address (IPv6: one /64).
    pub max_unauthenticated_per_ip: usize,
    /// Largest RTMP message (KiB), refused at its chunk header before it is buffered. A 1080p
    /// keyframe at a high bitrate is 1-2 MiB.
    pub max_message_kib: usize,
    /// Media messages a second a publish session may send (averaged over a few seconds); above
    /// it the session is ended. Real encoders send a few hundred at most.
    pub max_messages_per_sec: u32,
    /// Payload MiB a stream's fan-out ring may hold; beyond it whole GOPs are dropped.
    pub ring_max_mib: usize,
    /// Address of the RTMPS (RTMP over TLS) listener. Empty: off.
    pub tls_listen: String,
    /// PEM certificate chain for RTMPS; reloaded when the file changes.
    pub tls_cert: String,
    /// PEM private key for RTMPS; reloaded when the file changes.
    pub tls_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the HTTP server (HLS, API, health, metrics) binds.
    pub listen: String,
    /// Bearer token for the admin API (`/api/v1/keys`). Empty: the admin API is off.
    pub admin_token: String,
    /// Simultaneous HTTP connections; further ones are closed at once.
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers (also ends idle keep-alive connections).
    pub header_read_timeout_secs: u64,
    /// Simultaneous connections from one address (IPv6: one /64).
    pub max_connections_per_ip: usize,
    /// Addresses held to `max_connections` only, not `max_connections_per_ip` (e.g. edge caches
    /// or a reverse proxy in front, whose connections all come from one address).
    pub per_ip_exempt: Vec<String>,
    /// Seconds a new connection has to send enough bytes to tell HTTP/1 from HTTP/2.
    pub first_byte_timeout_secs: u64,
    /// Seconds a connection may stay open with no request in flight (HTTP/2 included).
    pub idle_timeout_secs: u64,
    /// Seconds a response may make no progress (a client that stops reading), and a handler may
    /// take to start its response; the connection is closed after that.
    pub write_timeout_secs: u64,
    /// HTTP/2: streams one connection may have open at once.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2: seconds between keep-alive pings; a ping not answered within as long closes the
    /// connection.
    pub h2_keep_alive_secs: u64,
    /// Separate listener for `/metrics` (e.g. `127.0.0.1:9100`). Empty: served on `listen`.
    pub metrics_listen: String,
    /// Bearer token `/metrics` requires. Empty: none (bind `metrics_listen` to a private address
    /// instead, or leave both empty on a trusted network).
    pub metrics_token: String,
    /// Reverse proxies and edge caches (addresses or CIDR blocks) whose `X-Forwarded-For` names
    /// the client: a playback token bound to an address, and viewer counting, use that address
    /// instead of the proxy's. Cluster nodes proxy to each other, so list them too.
    pub trusted_proxies: Vec<String>,
    /// Address of the HTTPS listener (HTTP/2 and HTTP/1.1 over TLS, the same routes and limits
    /// as `listen`), e.g. `0.0.0.0:443`. Empty: off.
    pub tls_listen: String,
    /// PEM certificate chain for HTTPS (e.g. Let's Encrypt's `fullchain.pem`); reloaded when the
    /// file changes, without a restart.
    pub tls_cert: String,
    /// PEM private key for HTTPS (e.g. `privkey.pem`); reloaded when the file changes.
    pub tls_key: String,
}

/// Playback access: the tokens `token`-mode streams need (`PUT /api/v1/access/<user>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// HS256 secret playback tokens are signed with, shared with the site that mints them (and
    /// every node of a cluster). At least 32 characters. Empty: one is generated into
    /// `<data_dir>/access-secret` (then only this node's admin API can mint tokens).
    pub token_secret: String,
    /// Seconds of clock skew allowed on a token's `exp` and `nbf`.
    pub token_leeway_secs: u64,
    /// Longest lifetime `POST /api/v1/streams/<user>/tokens` grants, seconds.
    pub max_token_ttl_secs: u64,
    /// A viewer counts as watching this many seconds after their last playlist or segment
    /// request.
    pub viewer_window_secs: u64,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            token_secret: String::new(),
            token_leeway_secs: 30,
            max_token_ttl_secs: 7 * 24 * 3600,
            viewer_window_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HlsConfig {
    /// Target segment duration in seconds; segments are cut at the first keyframe after it.
    pub segment_duration: f64,
    /// Segments listed in the live playlist.
    pub window: usize,
    /// Memory cap for one stream's segments (MiB); the oldest beyond the window go first.
    pub max_stream_memory_mib: u64,
    /// Largest single segment (MiB): a source whose keyframes are further apart is cut anyway.
    pub max_segment_mib: u64,
    /// Most samples (video and audio frames) in one segment: a source sending tiny frames is
    /// cut at this count (mid-GOP if need be) whatever their size.
    pub max_segment_samples: usize,
    /// Seconds an ended stream's playlist (with ENDLIST) stays available.
    pub keep_ended_secs: u64,
    /// LL-HLS: every rendition is cut into parts published as they close, with blocking
    /// playlist reloads, preload hints and rendition reports. Players that ignore LL-HLS read
    /// the same playlists as classic HLS.
    pub low_latency: bool,
    /// LL-HLS part target, seconds: parts are at most this long, and players hold 3 of them
    /// behind the live edge.
    pub part_duration: f64,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        RtmpConfig {
            listen: "0.0.0.0:1935".into(),
            handshake_timeout_secs: 5,
            idle_timeout_secs: 30,
            publish_timeout_secs: 10,
            max_unauthenticated_bytes: 64 * 1024,
            max_connections: 1000,
            max_connections_per_ip: 20,
            max_unauthenticated: 100,
            max_unauthenticated_per_ip: 4,
            max_message_kib: 4096,
            max_messages_per_sec: 1000,
            ring_max_mib: 128,
            tls_listen: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "0.0.0.0:8080".into(),
            admin_token: String::new(),
            max_connections: 10_000,
            header_read_timeout_secs: 30,
            max_connections_per_ip: 100,
            per_ip_exempt: Vec::new(),
            first_byte_timeout_secs: 10,
            idle_timeout_secs: 30,
            write_timeout_secs: 30,
            h2_max_concurrent_streams: 100,
            h2_keep_alive_secs: 20,
            metrics_listen: String::new(),
            metrics_token: String::new(),
            trusted_proxies: vec!["127.0.0.1".into(), "::1".into()],
            tls_listen: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            segment_duration: 2.0,
            window: 6,
            max_stream_memory_mib: 256,
            max_segment_mib: 64,
            max_segment_samples: 16_384,
            keep_ended_secs: 60,
            low_latency: true,
            // 0.3 s keeps every part of the common frame rates (24, 25, 29.97, 30, 50, 59.94,
            // 60) within 85-100 % of the target, as RFC 8216bis asks; 0.2 s cannot at 24 or 30.
            part_duration: 0.3,
        }
    }
}

pub const ENV_PREFIX: &str = "LIVEGATE_";

/// WHIP (WebRTC-HTTP ingestion, RFC 9725): browsers and OBS publish over WebRTC with the same
/// stream key as RTMP. Signalling is on the HTTP server (`POST /whip/<user>`); media arrives on
/// one UDP port shared by every session.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WhipConfig {
    pub enabled: bool,
    /// The UDP socket all WebRTC sessions share (ICE, DTLS, SRTP).
    pub udp_listen: String,
    /// Addresses put in the SDP answer as ICE candidates: `IP` or `IP:PORT` (the port defaults
    /// to `udp_listen`'s). Behind a 1:1 NAT, the public address. Empty: the address `udp_listen`
    /// binds, or every interface's address when it binds all of them.
    pub advertise: Vec<String>,
    /// STUN/TURN servers offered to clients in `Link` headers (RFC 9725 §4.6).
    pub ice_servers: Vec<IceServer>,
    /// WebRTC sessions at once (connecting or publishing); more are answered 503.
    pub max_sessions: usize,
    /// Seconds from the answer to a connected session (ICE and DTLS done); then it is dropped.
    pub connect_timeout_secs: u64,
    /// Seconds without a packet from the client (media, RTCP or ICE consent) before a
    /// connected session ends, e.g. a browser tab closed without DELETE.
    pub idle_timeout_secs: u64,
    /// Largest SDP offer or trickle body accepted (KiB).
    pub max_sdp_kib: usize,
    /// WHIP requests (POST, PATCH, DELETE) one address may make a minute; more are answered 429.
    pub requests_per_minute: u32,
    /// Offer H.264 (packetization-mode 1).
    pub h264: bool,
    /// Offer VP8.
    pub vp8: bool,
    /// Offer VP9 profile 0.
    pub vp9: bool,
}

/// One ICE server for WHIP clients.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// `stun:host:port` or `turn:host:port?transport=udp`.
    pub url: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub credential: String,
}

impl Default for WhipConfig {
    fn default() -> Self {
        WhipConfig {
            enabled: true,
            udp_listen: "0.0.0.0:8189".into(),
            advertise: Vec::new(),
            ice_servers: Vec::new(),
            max_sessions: 100,
            connect_timeout_secs: 15,
            idle_timeout_secs: 10,
            max_sdp_kib: 64,
            requests_per_minute: 60,
            h264: true,
            vp8: true,
            vp9: true,
        }
    }
}

/// Several nodes sharing one Redis (off by default: the embedded single node). On when
/// `redis_url` is set: stream keys live in Redis, so any node checks any key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://` for TLS). Empty: off.
    pub redis_url: String,
    /// Prefix of every Redis key livegate writes (several deployments can share one Redis).
    pub key_prefix: String,
    /// This node's name in the cluster. Empty: the host name.
    pub node_id: String,
    /// This node's HTTP address as the other nodes reach it, e.g. `http://10.0.0.5:8080`.
    /// Empty: `http.listen`.
    pub advertise_http: String,
    /// Milliseconds a Redis command may take (connect included) before it counts as failed.
    pub redis_timeout_ms: u64,
    /// Seconds between full reloads of the in-memory key snapshot (changes also arrive at once
    /// over pub/sub).
    pub key_refresh_secs: u64,
    /// While Redis cannot answer, publishes are checked against the in-memory key snapshot if it
    /// is at most this old (seconds); older, they are refused as unavailable. A key revoked
    /// during an outage may publish on a node until then.
    pub key_snapshot_max_age_secs: u64,
    /// Seconds a stream lease lives without renewal (renewed every third of it): how long a
    /// dead node's streams stay routed to it.
    pub lease_ttl_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: String::new(),
            key_prefix: "livegate:".into(),
            node_id: String::new(),
            advertise_http: String::new(),
            redis_timeout_ms: 300,
            key_refresh_secs: 5,
            key_snapshot_max_age_secs: 600,
            lease_ttl_secs: 6,
        }
    }
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        !self.redis_url.is_empty()
    }
}

/// Hooks into the operator's site.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// External publish authorization: after a key checks out, livegate POSTs
    /// `{"user": …, "protocol": "rtmp"|"rtmps"|"whip"}` here; 2xx allows the publish, 401/403
    /// refuses it (the site decides: a ban, an unpaid plan, a schedule). Empty: off.
    pub publish_auth_url: String,
    /// Milliseconds the hook may take; then it counts as failed.
    pub publish_auth_timeout_ms: u64,
    /// When the hook fails (timeout, connection error, any other status): allow the publish
    /// (true) or refuse it as unavailable (false).
    pub publish_auth_fail_open: bool,
    /// Events for the site (`publish`, `unpublish`, `takeover`, `recording.finished`): each is
    /// POSTed here as JSON, signed with `webhook_secret` (`Livegate-Signature`). Empty: off.
    pub webhook_url: String,
    /// The HMAC-SHA256 key of the signatures (at least 16 characters; required with a URL).
    /// Never logged.
    pub webhook_secret: String,
    /// The event types to send; empty: all of them.
    pub webhook_events: Vec<String>,
    /// Milliseconds one delivery attempt may take.
    pub webhook_timeout_ms: u64,
    /// Attempts per event (backoff 1, 2, 4, … s between them) before it is dropped and logged.
    pub webhook_attempts: u32,
}

/// The event types webhooks carry.
pub const WEBHOOK_EVENTS: &[&str] = &["publish", "unpublish", "takeover", "recording.finished"];

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            publish_auth_url: String::new(),
            publish_auth_timeout_ms: 1000,
            publish_auth_fail_open: false,
            webhook_url: String::new(),
            webhook_secret: String::new(),
            webhook_events: Vec::new(),
            webhook_timeout_ms: 5000,
            webhook_attempts: 6,
        }
    }
}
