//! The sections for what livegate makes of a published stream: the ladder, recordings and
//! relays, field by field, with their working defaults.

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
