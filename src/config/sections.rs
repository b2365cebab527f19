//! The configuration sections, field by field, with their working defaults.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Push users' relay targets (`livegate relays add`) while they are live.
    pub enabled: bool,
    /// Also take targets from the publish URL's query
    /// (`rtmp://HOST/live/KEY?youtube=…&twitch=…&facebook=…`). Anyone holding a stream key can
    /// then push that stream anywhere, so it is off unless you want it.
    pub allow_query_targets: bool,
    /// Seconds to connect, finish TLS and the RTMP handshake, and be accepted to publish.
    pub connect_timeout_secs: u64,
    /// Longest wait between reconnection attempts (backoff doubles from 1 s, with jitter).
    pub max_backoff_secs: u64,
    /// Frames queued per relay before whole GOPs are dropped (a slow target never slows ingest).
    pub queue_frames: usize,
    /// Payload MiB queued per relay (and held while it connects) before whole GOPs are dropped.
    pub queue_max_mib: u64,
    /// Extra CA certificates (PEM) trusted for RTMPS targets, besides the public web roots.
    pub ca_file: String,
    pub presets: RelayPresets,
}

/// Base URLs of the platform presets (the stream key is appended). Point them at a regional or
/// backup ingest server if you need to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayPresets {
    pub youtube: String,
    pub youtube_rtmps: String,
    pub twitch: String,
    pub facebook: String,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            enabled: true,
            allow_query_targets: false,
            connect_timeout_secs: 10,
            max_backoff_secs: 30,
            queue_frames: 600,
            queue_max_mib: 32,
            ca_file: String::new(),
            presets: RelayPresets::default(),
        }
    }
}

impl Default for RelayPresets {
    fn default() -> Self {
        RelayPresets {
            youtube: "rtmp://a.rtmp.youtube.com/live2".into(),
            youtube_rtmps: "rtmps://a.rtmps.youtube.com:443/live2".into(),
            twitch: "rtmp://live.twitch.tv/app".into(),
            facebook: "rtmps://live-api-s.facebook.com:443/rtmp".into(),
        }
    }
}

/// Where recordings are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordBackend {
    Local,
    S3,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordConfig {
    /// Record every publish session (DVR/VOD).
    pub enabled: bool,
    /// Users whose streams are never recorded, even when recording is on.
    pub exclude_users: Vec<String>,
    /// `local` (a directory) or `s3`.
    pub backend: RecordBackend,
    /// Rung recorded. Empty: the top rung (passthrough streams record the source).
    pub rung: String,
    /// Directory of the local backend. Empty: `<data_dir>/recordings`.
    pub local_path: String,
    /// Disk the spool (segments waiting for upload) may use, MiB. When full, new segments are
    /// not recorded (an error is logged and counted) until uploads free room.
    pub spool_max_mib: u64,
    /// Memory the segments waiting for one recording's spool writer may pin, MiB. When the
    /// writer is behind, new segments are not recorded: the recording counts them missing and
    /// marks the gap (DISCONTINUITY), and its final state is `incomplete`.
    pub queue_max_mib: u64,
    /// A recording longer than this many hours of media continues in a new part (its own
    /// recording, whose manifest names the previous one in `continues`), cut at a keyframe, so a
    /// 24/7 stream's playlist, memory and uploads stay bounded. 0: never.
    pub max_duration_hours: u64,
    /// Delete finished recordings older than this many days. 0: keep forever.
    pub retention_days: u64,
    /// URL that receives a POST with the manifest (JSON) when a recording is finished. Empty: off.
    pub webhook_url: String,
    pub s3: S3Config,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL. Empty: AWS itself (from the region).
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Key prefix: objects are `<prefix>/<user>/<session>/…`.
    pub prefix: String,
    /// Path-style URLs (`endpoint/bucket/key`), as most S3-compatible servers need.
    pub force_path_style: bool,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            enabled: true,
            exclude_users: Vec::new(),
            backend: RecordBackend::Local,
            rung: String::new(),
            local_path: String::new(),
            spool_max_mib: 4096,
            queue_max_mib: 128,
            max_duration_hours: 24,
            retention_days: 0,
            webhook_url: String::new(),
            s3: S3Config::default(),
        }
    }
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: String::new(),
            prefix: "recordings".into(),
            force_path_style: false,
        }
    }
}

impl RecordConfig {
    /// Whether `user`'s streams are recorded.
    pub fn records(&self, user: &str) -> bool {
        self.enabled && !self.exclude_users.iter().any(|u| u == user)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranscodeConfig {
    /// Transcode every stream into the ladder. `false`: serve streams as published (passthrough).
    pub enabled: bool,
    /// Users whose streams are always served as published, even when transcoding is on.
    pub passthrough_users: Vec<String>,
    /// AAC bitrate (bit/s) of the one audio encode every rung shares.
    pub audio_bitrate: u64,
    /// Output audio sample rate (Hz).
    pub audio_sample_rate: u32,
    /// Frames queued for a stream's transcoder before it drops whole GOPs to catch up.
    pub queue_frames: usize,
    /// Payload MiB queued for a stream's transcoder before it drops whole GOPs.
    pub queue_max_mib: u64,
    /// x264 threads per rung (each rung encodes on its own thread already); 0 lets x264 decide.
    pub x264_threads: u32,
    /// x264 `tune=zerolatency` (no B-frames, no lookahead): the ladder adds no encoder delay
    /// (measured: 433 ms less per rung at 30 fps, 40 % less CPU, 0.5 dB PSNR less at the same
    /// bitrate). false: B-frames and lookahead, for operators who prefer quality to latency.
    pub low_delay: bool,
    /// Seconds between thumbnails of each live stream (`/live/<user>/thumb.jpg`), taken at a
    /// keyframe: a ladder scales a picture it decoded anyway; a stream served as published has
    /// one keyframe decoded. 0: no thumbnails.
    pub thumbnail_interval_secs: u64,
    /// Ladders running at once; a publish beyond it is served as published when its codecs
    /// allow (H.264/AAC), otherwise refused. 0: no limit. About one 720p ladder per core. A
    /// ladder serving its source as the top rung weighs 3/5 of one.
    pub max_ladders: usize,
    /// Nice increment (0-19) of every ladder thread (decoder, scalers, encoders) over the
    /// process, so ingest and HTTP keep their share of the CPU when ladders saturate it.
    pub ladder_nice: i32,
    /// Largest source picture (width × height) accepted, checked on every configuration record
    /// and every decoded frame, in the ladder and in passthrough.
    pub max_source_pixels: u64,
    /// Largest source width or height accepted (either orientation).
    pub max_source_dimension: u32,
    /// Highest source frame rate accepted (declared in the SPS, or measured on decoded frames).
    pub max_source_fps: f64,
    /// Serve the source itself as the top rung instead of encoding it (the platforms' "Source"
    /// quality): `auto` when it fits (H.264 a player decodes, a rung's size, level ≤ 4.2, its
    /// keyframes within a segment apart), `always` whenever it is H.264 a player decodes,
    /// `never` to encode every rung.
    pub source_rung: SourceRung,
    /// The renditions, from the lowest. Rungs taller than the source are skipped (never
    /// upscaled); for a portrait source `height` applies to the shorter side.
    pub rungs: Vec<RungConfig>,
}

/// Whether the source is served as the ladder's top rung (`transcode.source_rung`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SourceRung {
    #[default]
    Auto,
    Always,
    Never,
}

impl SourceRung {
    pub fn name(self) -> &'static str {
        match self {
            SourceRung::Auto => "auto",
            SourceRung::Always => "always",
            SourceRung::Never => "never",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RungConfig {
    /// Name in URLs (`/live/<user>/<name>/index.m3u8`).
    pub name: String,
    /// Output height (the width follows the source's aspect ratio, rounded to even).
    pub height: u32,
    /// Average video bitrate, bit/s.
    pub video_bitrate: u64,
    /// Peak (VBV max rate), bit/s.
    pub maxrate: u64,
    /// VBV buffer size, bits.
    pub bufsize: u64,
    /// Frame-rate cap; 0: the source's rate.
    #[serde(default)]
    pub max_fps: f64,
    #[serde(default = "default_preset")]
    pub preset: String,
    #[serde(default = "default_profile")]
    pub profile: String,
}

fn default_preset() -> String {
    "veryfast".into()
}

fn default_profile() -> String {
    "main".into()
}

impl RungConfig {
    fn new(name: &str, height: u32, bitrate: u64, maxrate: u64, bufsize: u64) -> Self {
        RungConfig {
            name: name.into(),
            height,
            video_bitrate: bitrate,
            maxrate,
            bufsize,
            max_fps: 0.0,
            preset: default_preset(),
            profile: default_profile(),
        }
    }
}

impl Default for TranscodeConfig {
    fn default() -> Self {
        TranscodeConfig {
            enabled: true,
            passthrough_users: Vec::new(),
            audio_bitrate: 128_000,
            audio_sample_rate: 48_000,
            queue_frames: 300,
            queue_max_mib: 64,
            x264_threads: 1,
            low_delay: true,
            thumbnail_interval_secs: 5,
            max_ladders: 2,
            ladder_nice: 10,
            max_source_pixels: 2560 * 1440,
            max_source_dimension: 4096,
            max_source_fps: 60.0,
            source_rung: SourceRung::Auto,
            rungs: vec![
                RungConfig::new("360p", 360, 800_000, 856_000, 1_200_000),
                RungConfig::new("480p", 480, 1_400_000, 1_498_000, 2_100_000),
                RungConfig::new("720p", 720, 2_800_000, 2_996_000, 4_200_000),
            ],
        }
    }
}

impl TranscodeConfig {
    /// Whether `user`'s streams go through the ladder.
    pub fn transcodes(&self, user: &str) -> bool {
        self.enabled && !self.passthrough_users.iter().any(|u| u == user)
    }
}

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
