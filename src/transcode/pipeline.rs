//! The libav side of the ladder. The stream's pipeline thread decodes video once and decides the
//! keyframe grid; each rung has a worker thread that scales (swscale) and encodes (libx264, one
//! x264 thread by default: measured cheapest) the shared, reference-counted decoded frames, fed by
//! a small bounded channel so a slow rung slows the decoder rather than growing memory. Audio is
//! decoded, resampled and encoded to AAC once, on the pipeline thread, and the same packets go to
//! every rung. Output goes to a [`LadderSink`] as codec-neutral media events, one stream per rung.
//!
//! Scalers are not `Send`: each is created on the thread that uses it.

use std::sync::Arc;

use bytes::Bytes;
use ff::codec::{self, Flags as CodecFlags};
use ff::format::{self, Pixel};
use ff::software::scaling;
use ff::util::picture;
use ff::{filter, frame, ChannelLayout, Dictionary, Packet as AvPacket, Rational};
use ffmpeg_next as ff;

use super::keyframes::KeyframeGrid;
use super::plan::{plan_ladder, PlannedRung};
use crate::config::{RungConfig, TranscodeConfig};
use crate::media::annexb;
use crate::media::{
    AudioCodec, AudioConfig, EndReason, MediaEvent, Packet, TrackKind, VideoCodec, VideoConfig,
    VIDEO_TIMESCALE,
};
use crate::stream::RenditionInfo;

/// Output timestamps are shifted by one second so that B-frame reordering never makes a decode
/// time negative (fMP4 decode times are unsigned).
pub const OUTPUT_OFFSET_SECS: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("{what}: {source}")]
    Av {
        what: &'static str,
        source: ff::Error,
    },
    #[error("{0} is not available in this FFmpeg build")]
    MissingCodec(&'static str),
    #[error("no {0} decoder in this FFmpeg build; the stream cannot be served")]
    MissingDecoder(String),
    #[error("encoder produced unusable parameters: {0}")]
    Parameters(String),
}

fn av(what: &'static str) -> impl FnOnce(ff::Error) -> TranscodeError {
    move |source| TranscodeError::Av { what, source }
}

/// The rendition of an audio-only stream under the ladder.
pub const AUDIO_RENDITION: &str = "audio";

/// Where the ladder's output goes: one stream of media events per rung. Defined here, where the
/// output is produced; the consumer (HLS) implements it.
pub trait LadderSink {
    fn rung_event(&mut self, rung: &str, event: MediaEvent);
    /// The ladder's rungs, when first planned.
    fn ladder_planned(&mut self, _rungs: &[RenditionInfo]) {}
    fn has_clock_anchor(&self) -> bool {
        false
    }
    /// Output media time (µs) ↔ wall clock, fixed at the first packet, shared by every rung.
    fn set_clock_anchor(&mut self, _media_us: i64, _wall: chrono::DateTime<chrono::Utc>) {}
}

/// Settings the pipeline needs, taken from the config.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub rungs: Vec<RungConfig>,
    pub audio_bitrate: u64,
    pub audio_sample_rate: u32,
    pub segment_duration: f64,
    pub x264_threads: u32,
}

impl PipelineSettings {
    pub fn from_config(t: &TranscodeConfig, segment_duration: f64) -> Self {
        PipelineSettings {
            rungs: t.rungs.clone(),
            audio_bitrate: t.audio_bitrate,
            audio_sample_rate: t.audio_sample_rate,
            segment_duration,
            x264_threads: t.x264_threads,
        }
    }
}

/// libav's decoder for a source codec. AV1 prefers libdav1d: FFmpeg 5.1's native AV1 decoder
/// only drives hardware.
fn video_decoder(codec: VideoCodec) -> Result<ff::Codec, TranscodeError> {
    let found = match codec {
        VideoCodec::H264 => ff::decoder::find(codec::Id::H264),
        VideoCodec::Hevc => ff::decoder::find(codec::Id::HEVC),
        VideoCodec::Av1 => ff::decoder::find_by_name("libdav1d"),
        VideoCodec::Vp8 => ff::decoder::find(codec::Id::VP8),
        VideoCodec::Vp9 => ff::decoder::find(codec::Id::VP9),
    };
    found.ok_or_else(|| TranscodeError::MissingDecoder(codec.name().to_string()))
}

fn audio_decoder(codec: AudioCodec) -> Result<ff::Codec, TranscodeError> {
    let found = match codec {
        AudioCodec::Aac => ff::decoder::find(codec::Id::AAC),
        AudioCodec::Opus => ff::decoder::find(codec::Id::OPUS),
    };
    found.ok_or_else(|| TranscodeError::MissingDecoder(codec.name().to_string()))
}

/// Copies codec configuration into a codec context. ffmpeg-next has no extradata setter; the
/// buffer is allocated with libav's allocator (and padding) so the context frees it itself.
fn set_extradata(ctx: &mut codec::context::Context, data: &[u8]) -> Result<(), TranscodeError> {
    // SAFETY: `ctx` is a valid, not yet opened AVCodecContext that owns its extradata; the new
    // buffer comes from av_mallocz with the required zeroed padding and replaces a null pointer
    // (fresh context), so nothing leaks or is freed twice.
    unsafe {
        let raw = ctx.as_mut_ptr();
        let padding = ff::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
        let buf = ff::ffi::av_mallocz(data.len() + padding) as *mut u8;
        if buf.is_null() {
            return Err(TranscodeError::Av {
                what: "allocating extradata",
                source: ff::Error::Other {
                    errno: ff::util::error::ENOMEM,
                },
            });
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len());
        (*raw).extradata = buf;
        (*raw).extradata_size = data.len() as i32;
    }
    Ok(())
}

fn extradata(ctx: &codec::context::Context) -> Vec<u8> {
    // SAFETY: reads the opened context's extradata (pointer + size owned by the context).
    unsafe {
        let raw = ctx.as_ptr();
        if (*raw).extradata.is_null() || (*raw).extradata_size <= 0 {
            return Vec::new();
        }
        std::slice::from_raw_parts((*raw).extradata, (*raw).extradata_size as usize).to_vec()
    }
}

/// A scaler and the (format, width, height) of the pictures it takes.
type Scaler = (scaling::Context, (Pixel, u32, u32));

/// Work for a rung's thread.
enum RungJob {
    Frame {
        frame: frame::Video,
        pts: i64,
        key: bool,
    },
    Flush,
}

/// What rung threads report back to the pipeline thread.
enum RungOutput {
    Packet(String, Packet),
    Flushed,
    Failed(TranscodeError),
}

/// Frames in flight per rung: enough to overlap the rungs, small enough to bound memory.
const RUNG_QUEUE_FRAMES: usize = 4;

/// One rung: its encoder lives on its own thread.
struct RungWorker {
    name: String,
    width: u32,
    height: u32,
    jobs: Option<std::sync::mpsc::SyncSender<RungJob>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Next presentation time a frame may have under the rung's fps cap.
    next_allowed_pts: Option<i64>,
    min_frame_interval: i64,
}

impl Drop for RungWorker {
    fn drop(&mut self) {
        self.jobs = None; // closes the channel: the thread finishes its queue and exits
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A new reference to the same decoded picture (no pixel copy; ffmpeg-next's `clone` copies).
fn frame_ref(frame: &frame::Video) -> Result<frame::Video, TranscodeError> {
    // SAFETY: av_frame_clone makes a new AVFrame that references the same refcounted buffers;
    // the returned pointer is owned by the new `Video`, which frees it on drop. The decoder's
    // frames are refcounted, and every user only reads the pixels.
    unsafe {
        let ptr = ff::ffi::av_frame_clone(frame.as_ptr());
        if ptr.is_null() {
            return Err(TranscodeError::Av {
                what: "referencing a frame",
                source: ff::Error::Other {
                    errno: ff::util::error::ENOMEM,
                },
            });
        }
        Ok(frame::Video::wrap(ptr))
    }
}

/// A rung's thread: encode the pictures it gets (already at its size), send packets back.
fn rung_worker(
    name: String,
    mut encoder: codec::encoder::Video,
    jobs: std::sync::mpsc::Receiver<RungJob>,
    out: std::sync::mpsc::Sender<RungOutput>,
) {
    let mut produced = Vec::new();
    while let Ok(job) = jobs.recv() {
        let result = match job {
            RungJob::Frame {
                mut frame,
                pts,
                key,
            } => {
                frame.set_pts(Some(pts));
                // Only the grid decides keyframes; a decoded frame's own type must not leak.
                frame.set_kind(if key {
                    picture::Type::I
                } else {
                    picture::Type::None
                });
                let sent = encoder.send_frame(&frame).map_err(av("encoding video"));
                drain_encoder(&mut encoder, &name, &mut produced);
                sent.map(|_| false)
            }
            RungJob::Flush => {
                let _ = encoder.send_eof();
                drain_encoder(&mut encoder, &name, &mut produced);
                Ok(true)
            }
        };
        for (rung, p) in produced.drain(..) {
            let _ = out.send(RungOutput::Packet(rung, p));
        }
        match result {
            Ok(true) => {
                let _ = out.send(RungOutput::Flushed);
                return;
            }
            Ok(false) => {}
            Err(e) => {
                let _ = out.send(RungOutput::Failed(e));
                return;
            }
        }
    }
}

struct VideoChain {
    source: Arc<VideoConfig>,
    decoder: codec::decoder::Video,
    /// Ascending by size.
    rungs: Vec<RungWorker>,
    /// Per rung: its scaler, made for the picture it scales from.
    scalers: Vec<Option<Scaler>>,
    last_pts: Option<i64>,
}

struct AudioChain {
    source: Arc<AudioConfig>,
    decoder: codec::decoder::Audio,
    graph: Option<filter::Graph>,
}

struct AudioEncoder {
    encoder: codec::encoder::Audio,
    rate: i32,
}

/// The per-stream transcoder.
pub struct Pipeline<S: LadderSink> {
    settings: PipelineSettings,
    sink: S,
    video: Option<VideoChain>,
    audio: Option<AudioChain>,
    audio_encoder: Option<AudioEncoder>,
    audio_config_out: Option<Arc<AudioConfig>>,
    /// Rung names, fixed by the first video configuration (a later, smaller source keeps them,
    /// capped at the source size: never upscaled).
    rung_names: Vec<String>,
    grid: KeyframeGrid,
    /// Encoded audio held until the rungs exist (audio can arrive before the video config).
    early_audio: Vec<Packet>,
    audio_only: bool,
    rung_output_tx: std::sync::mpsc::Sender<RungOutput>,
    rung_output: std::sync::mpsc::Receiver<RungOutput>,
    /// Media time processed (seconds of video, or audio when there is none).
    pub media_seconds: f64,
    first_pts: Option<i64>,
    first_audio_pts: Option<i64>,
}

impl<S: LadderSink> Pipeline<S> {
    pub fn new(settings: PipelineSettings, sink: S) -> Self {
        let interval = (settings.segment_duration * f64::from(VIDEO_TIMESCALE)).round() as i64;
        let (rung_output_tx, rung_output) = std::sync::mpsc::channel();
        Pipeline {
            rung_output_tx,
            rung_output,
            settings,
            sink,
            video: None,
            audio: None,
            audio_encoder: None,
            audio_config_out: None,
            rung_names: Vec::new(),
            grid: KeyframeGrid::new(interval),
            early_audio: Vec::new(),
            audio_only: false,
            media_seconds: 0.0,
            first_pts: None,
            first_audio_pts: None,
        }
    }

    pub fn sink(&mut self) -> &mut S {
        &mut self.sink
    }

    /// The rungs and their sizes, for status reports.
    pub fn rungs(&self) -> Vec<(String, u32, u32)> {
        self.video
            .as_ref()
            .map(|v| {
                v.rungs
                    .iter()
                    .map(|r| (r.name.clone(), r.width, r.height))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn handle(&mut self, event: MediaEvent) -> Result<(), TranscodeError> {
        match event {
            MediaEvent::VideoConfig(config) => self.on_video_config(config),
            MediaEvent::AudioConfig(config) => self.on_audio_config(config),
            MediaEvent::Packet(p) => match p.track {
                TrackKind::Video => self.on_video_packet(p),
                TrackKind::Audio => self.on_audio_packet(p),
            },
            MediaEvent::End(reason) => self.finish(reason),
        }
    }

    /// Flushes everything and ends every rung's stream.
    pub fn finish(&mut self, reason: EndReason) -> Result<(), TranscodeError> {
        let flushed = self.flush_video().and(self.flush_audio());
        for name in self.all_rung_names() {
            self.sink.rung_event(&name, MediaEvent::End(reason));
        }
        self.video = None;
        self.audio = None;
        self.audio_encoder = None;
        flushed
    }

    fn all_rung_names(&self) -> Vec<String> {
        if self.audio_only {
            vec![AUDIO_RENDITION.to_string()]
        } else {
            self.rung_names.clone()
        }
    }

    // ---- video ----

    fn on_video_config(&mut self, config: Arc<VideoConfig>) -> Result<(), TranscodeError> {
        if self.audio_only {
            tracing::warn!("video appeared after the stream started audio-only; it is ignored");
            return Ok(());
        }
        if self.video.as_ref().is_some_and(|v| v.source == config) {
            return Ok(());
        }
        self.flush_video()?;
        let planned = self.plan(&config);
        let mut ctx = codec::context::Context::new_with_codec(video_decoder(config.codec)?);
        if !config.record.is_empty() {
            set_extradata(&mut ctx, &config.record)?;
        }
        let mut decoder = ctx.decoder();
        decoder.set_packet_time_base(Rational::new(1, VIDEO_TIMESCALE as i32));
        let decoder = decoder.video().map_err(av("opening the video decoder"))?;
        let fps = config.fps.unwrap_or(30.0);
        let mut rungs = Vec::with_capacity(planned.len());
        for plan in &planned {
            rungs.push(self.open_rung(plan, fps)?);
        }
        tracing::info!(
            source = %format!("{}x{}", config.width, config.height),
            rungs = %planned.iter().map(|p| format!("{}={}x{}", p.config.name, p.width, p.height)).collect::<Vec<_>>().join(" "),
            "ladder ready"
        );
        self.grid.reset();
        self.video = Some(VideoChain {
            source: config,
            decoder,
            scalers: rungs.iter().map(|_| None).collect(),
            rungs,
            last_pts: None,
        });
        // Audio that arrived before the video configuration now has rungs to go to.
        if let Some(audio) = self.audio_config_out.clone() {
            for name in self.rung_names.clone() {
                self.sink
                    .rung_event(&name, MediaEvent::AudioConfig(audio.clone()));
            }
        }
        for p in std::mem::take(&mut self.early_audio) {
            self.emit_audio(p);
        }
        Ok(())
    }

    fn plan(&mut self, config: &VideoConfig) -> Vec<PlannedRung> {
        let fresh = plan_ladder(&self.settings.rungs, config.width, config.height);
        if self.rung_names.is_empty() {
            self.rung_names = fresh.iter().map(|p| p.config.name.clone()).collect();
            let sizes: Vec<RenditionInfo> = fresh
                .iter()
                .map(|p| RenditionInfo {
                    name: p.config.name.clone(),
                    width: p.width,
                    height: p.height,
                })
                .collect();
            self.sink.ladder_planned(&sizes);
            return fresh;
        }
        // Same rungs as before; one that no longer fits the source is encoded at the source size.
        let source_sized = |name: &str, cfg: &RungConfig| PlannedRung {
            config: RungConfig {
                name: name.to_string(),
                ..cfg.clone()
            },
            width: (config.width & !1).max(2),
            height: (config.height & !1).max(2),
        };
        let fallback = fresh
            .first()
            .map(|p| p.config.clone())
            .or_else(|| self.settings.rungs.first().cloned());
        self.rung_names
            .iter()
            .filter_map(|name| {
                fresh
                    .iter()
                    .find(|p| &p.config.name == name)
                    .cloned()
                    .or_else(|| {
                        let cfg = self
                            .settings
                            .rungs
                            .iter()
                            .find(|r| &r.name == name)
                            .cloned()
                            .or_else(|| fallback.clone())?;
                        Some(source_sized(name, &cfg))
                    })
            })
            .collect()
    }

    fn open_rung(
        &mut self,
        plan: &PlannedRung,
        source_fps: f64,
    ) -> Result<RungWorker, TranscodeError> {
        let codec =
            ff::encoder::find_by_name("libx264").ok_or(TranscodeError::MissingCodec("libx264"))?;
        let mut ctx = codec::context::Context::new_with_codec(codec);
        ctx.set_flags(CodecFlags::GLOBAL_HEADER);
        let mut enc = ctx
            .encoder()
            .video()
            .map_err(av("creating the x264 encoder"))?;
        let fps = if plan.config.max_fps > 0.0 {
            source_fps.min(plan.config.max_fps)
        } else {
            source_fps
        };
        enc.set_width(plan.width);
        enc.set_height(plan.height);
        enc.set_format(Pixel::YUV420P);
        enc.set_time_base(Rational::new(1, VIDEO_TIMESCALE as i32));
        enc.set_frame_rate(Some(Rational::new((fps * 1000.0).round() as i32, 1000)));
        enc.set_bit_rate(plan.config.video_bitrate as usize);
        enc.set_max_bit_rate(plan.config.maxrate as usize);
        let mut options = Dictionary::new();
        options.set("preset", &plan.config.preset);
        options.set("profile", &plan.config.profile);
        options.set("bufsize", &plan.config.bufsize.to_string());
        // Keyframes only where the shared grid forces them (as IDR), so all rungs cut at the
        // same frames: no scene-cut keyframes, and a keyint longer than any segment.
        options.set("forced-idr", "1");
        let keyint = ((self.settings.segment_duration * fps).ceil() as u32).max(16);
        options.set(
            "x264-params",
            &format!("scenecut=0:open-gop=0:keyint={keyint}:min-keyint={keyint}"),
        );
        if self.settings.x264_threads > 0 {
            options.set("threads", &self.settings.x264_threads.to_string());
        }
        let encoder = enc
            .open_with(options)
            .map_err(av("opening the x264 encoder"))?;
        let record = annexb::avcc_record(&extradata(&encoder))
            .ok_or_else(|| TranscodeError::Parameters("x264 gave no SPS/PPS".into()))?;
        let config =
            VideoConfig::h264(&record).map_err(|e| TranscodeError::Parameters(e.to_string()))?;
        self.sink
            .rung_event(&plan.config.name, MediaEvent::VideoConfig(Arc::new(config)));
        let (jobs, jobs_rx) = std::sync::mpsc::sync_channel(RUNG_QUEUE_FRAMES);
        let out = self.rung_output_tx.clone();
        let name = plan.config.name.clone();
        let span = tracing::Span::current();
        let thread = std::thread::Builder::new()
            // "lg-ladder" prefix: every thread of a ladder is findable by name.
            .name("lg-ladder-rung".into())
            .spawn(move || {
                let _entered = span.enter();
                rung_worker(name, encoder, jobs_rx, out)
            })
            .map_err(|e| TranscodeError::Parameters(format!("starting a rung thread: {e}")))?;
        Ok(RungWorker {
            name: plan.config.name.clone(),
            width: plan.width,
            height: plan.height,
            jobs: Some(jobs),
            thread: Some(thread),
            next_allowed_pts: None,
            min_frame_interval: if plan.config.max_fps > 0.0 {
                (f64::from(VIDEO_TIMESCALE) / plan.config.max_fps * 0.9) as i64
            } else {
                0
            },
        })
    }

    fn on_video_packet(&mut self, p: Packet) -> Result<(), TranscodeError> {
        let Some(chain) = self.video.as_mut() else {
            return Ok(());
        };
        let mut packet = AvPacket::copy(&p.data);
        packet.set_pts(Some(p.pts));
        packet.set_dts(Some(p.dts));
        if p.keyframe {
            packet.set_flags(codec::packet::Flags::KEY);
        }
        if let Err(e) = chain.decoder.send_packet(&packet) {
            // A corrupt frame costs that frame, not the stream.
            tracing::debug!(error = %e, "decoder rejected a packet");
        }
        self.drain_decoder()
    }

    fn drain_decoder(&mut self) -> Result<(), TranscodeError> {
        let mut decoded = frame::Video::empty();
        loop {
            let Some(chain) = self.video.as_mut() else {
                return Ok(());
            };
            if chain.decoder.receive_frame(&mut decoded).is_err() {
                return Ok(());
            }
            self.encode_frame(&mut decoded)?;
        }
    }

    fn encode_frame(&mut self, decoded: &mut frame::Video) -> Result<(), TranscodeError> {
        let Some(chain) = self.video.as_mut() else {
            return Ok(());
        };
        let frame_ticks = chain
            .source
            .fps
            .map_or(3000, |f| (f64::from(VIDEO_TIMESCALE) / f) as i64);
        let pts = match decoded.timestamp().or(decoded.pts()) {
            Some(t) => t,
            None => chain.last_pts.map_or(0, |l| l + frame_ticks),
        };
        let pts = match chain.last_pts {
            Some(last) if pts <= last => last + 1,
            _ => pts,
        };
        chain.last_pts = Some(pts);
        let first = *self.first_pts.get_or_insert(pts);
        self.media_seconds = (pts - first) as f64 / f64::from(VIDEO_TIMESCALE);
        let key = self.grid.is_keyframe(pts);
        let out_pts = pts + OUTPUT_OFFSET_SECS * i64::from(VIDEO_TIMESCALE);
        let Some(chain) = self.video.as_mut() else {
            return Ok(());
        };
        let mut worker_stopped = false;
        // Every rung is scaled from the decoded picture itself. Scaling from the nearest larger
        // rung's picture instead is cheaper, but filtering twice measured 0.2-0.25 dB lower PSNR
        // on the 360p rung (even with a Lanczos second stage), and quality at least equal to the
        // ffmpeg CLI ladder's is the goal.
        for i in (0..chain.rungs.len()).rev() {
            let rung = &mut chain.rungs[i];
            let skip = rung.min_frame_interval > 0
                && !key
                && rung.next_allowed_pts.is_some_and(|next| pts < next);
            if skip {
                continue;
            }
            let (w, h) = (rung.width, rung.height);
            let from: &frame::Video = decoded;
            let src = (from.format(), from.width(), from.height());
            let picture = if src == (Pixel::YUV420P, w, h) {
                frame_ref(from)?
            } else {
                let scaler = &mut chain.scalers[i];
                if scaler.as_ref().map(|s| s.1) != Some(src) {
                    let ctx = scaling::Context::get(
                        src.0,
                        src.1,
                        src.2,
                        Pixel::YUV420P,
                        w,
                        h,
                        scaling::Flags::BICUBIC,
                    )
                    .map_err(av("creating a scaler"))?;
                    *scaler = Some((ctx, src));
                }
                let mut out = frame::Video::new(Pixel::YUV420P, w, h);
                if let Some((ctx, _)) = scaler.as_mut() {
                    ctx.run(from, &mut out).map_err(av("scaling"))?;
                }
                out
            };
            rung.next_allowed_pts = Some(pts + rung.min_frame_interval);
            let job = RungJob::Frame {
                frame: picture,
                pts: out_pts,
                key,
            };
            // Blocks while the rung is RUNG_QUEUE_FRAMES behind: back-pressure to decoding.
            if rung.jobs.as_ref().is_none_or(|j| j.send(job).is_err()) {
                worker_stopped = true;
                break;
            }
        }
        if worker_stopped {
            // The thread said why before it stopped.
            return self.collect_rung_output(None).map(|_| ());
        }
        self.collect_rung_output(Some(0)).map(|_| ())
    }

    /// Forwards what the rung threads produced to the sink. With `Some(0)`, only what is ready;
    /// with `Some(n)`, waits until `n` rungs report that they flushed; with `None`, waits for a
    /// failure report (a rung thread stopped). Returns how many rungs flushed.
    fn collect_rung_output(
        &mut self,
        wait_flushed: Option<usize>,
    ) -> Result<usize, TranscodeError> {
        let mut flushed = 0;
        loop {
            let next = match wait_flushed {
                Some(n) if flushed >= n => match self.rung_output.try_recv() {
                    Ok(o) => o,
                    Err(_) => return Ok(flushed),
                },
                _ => match self
                    .rung_output
                    .recv_timeout(std::time::Duration::from_secs(30))
                {
                    Ok(o) => o,
                    Err(_) => {
                        return Err(TranscodeError::Parameters(
                            "a rung encoder stopped answering".into(),
                        ))
                    }
                },
            };
            match next {
                RungOutput::Packet(name, p) => self.sink.rung_event(&name, MediaEvent::Packet(p)),
                RungOutput::Flushed => flushed += 1,
                RungOutput::Failed(e) => return Err(e),
            }
        }
    }

    fn flush_video(&mut self) -> Result<(), TranscodeError> {
        if let Some(chain) = self.video.as_mut() {
            let _ = chain.decoder.send_eof();
        }
        self.drain_decoder()?;
        let Some(chain) = self.video.take() else {
            return Ok(());
        };
        let mut flushing = 0;
        for rung in &chain.rungs {
            if rung
                .jobs
                .as_ref()
                .is_some_and(|j| j.send(RungJob::Flush).is_ok())
            {
                flushing += 1;
            }
        }
        let result = self.collect_rung_output(Some(flushing));
        drop(chain); // joins the rung threads
        result.map(|_| ())
    }

    // ---- audio ----

    fn on_audio_config(&mut self, config: Arc<AudioConfig>) -> Result<(), TranscodeError> {
        if self.audio.as_ref().is_some_and(|a| a.source == config) {
            return Ok(());
        }
        // The decoder and resampler follow the source; the encoder (and so the output audio
        // configuration) stays, keeping the rungs' audio continuous across a source change.
        self.drain_audio_decoder(true)?;
        let mut ctx = codec::context::Context::new_with_codec(audio_decoder(config.codec)?);
        if !config.record.is_empty() {
            set_extradata(&mut ctx, &config.record)?;
        }
        let mut decoder = ctx.decoder();
        decoder.set_packet_time_base(Rational::new(1, config.sample_rate as i32));
        let decoder = decoder.audio().map_err(av("opening the audio decoder"))?;
        if self.audio_encoder.is_none() {
            self.open_audio_encoder(config.channels)?;
        }
        self.audio = Some(AudioChain {
            source: config,
            decoder,
            graph: None,
        });
        Ok(())
    }

    fn open_audio_encoder(&mut self, source_channels: u8) -> Result<(), TranscodeError> {
        let codec =
            ff::encoder::find(codec::Id::AAC).ok_or(TranscodeError::MissingCodec("AAC encoder"))?;
        let mut ctx = codec::context::Context::new_with_codec(codec);
        ctx.set_flags(CodecFlags::GLOBAL_HEADER);
        let mut enc = ctx
            .encoder()
            .audio()
            .map_err(av("creating the AAC encoder"))?;
        let layout = if source_channels >= 2 {
            ChannelLayout::STEREO
        } else {
            ChannelLayout::MONO
        };
        let rate = self.settings.audio_sample_rate as i32;
        enc.set_rate(rate);
        enc.set_channel_layout(layout);
        enc.set_channels(layout.channels());
        enc.set_format(format::Sample::F32(format::sample::Type::Planar));
        enc.set_bit_rate(self.settings.audio_bitrate as usize);
        enc.set_time_base(Rational::new(1, rate));
        let encoder = enc.open().map_err(av("opening the AAC encoder"))?;
        let asc = extradata(&encoder);
        let config =
            AudioConfig::aac(&asc).map_err(|e| TranscodeError::Parameters(e.to_string()))?;
        let config = Arc::new(config);
        self.audio_config_out = Some(config.clone());
        for name in self.all_rung_names() {
            self.sink
                .rung_event(&name, MediaEvent::AudioConfig(config.clone()));
        }
        self.audio_encoder = Some(AudioEncoder { encoder, rate });
        Ok(())
    }

    fn on_audio_packet(&mut self, p: Packet) -> Result<(), TranscodeError> {
        let Some(chain) = self.audio.as_mut() else {
            return Ok(());
        };
        let mut packet = AvPacket::copy(&p.data);
        packet.set_pts(Some(p.pts));
        packet.set_dts(Some(p.dts));
        if let Err(e) = chain.decoder.send_packet(&packet) {
            tracing::debug!(error = %e, "AAC decoder rejected a packet");
        }
        if self.video.is_none() && self.first_pts.is_none() {
            // No video (yet): count audio time so an audio-only stream is recognized. From
            // timestamps, as codecs like Opus vary their frame size.
            let first = *self.first_audio_pts.get_or_insert(p.pts);
            let rate = f64::from(chain.source.sample_rate);
            self.media_seconds = (p.pts - first).max(0) as f64 / rate;
        }
        self.drain_audio_decoder(false)
    }

    fn build_graph(&self, decoded: &frame::Audio) -> Result<filter::Graph, TranscodeError> {
        let Some(enc) = &self.audio_encoder else {
            return Err(TranscodeError::Parameters("no audio encoder".into()));
        };
        let mut graph = filter::Graph::new();
        let layout = if decoded.channel_layout().bits() == 0 {
            ChannelLayout::default(i32::from(decoded.channels()))
        } else {
            decoded.channel_layout()
        };
        let in_rate = decoded.rate();
        let args = format!(
            "time_base=1/{in_rate}:sample_rate={in_rate}:sample_fmt={}:channel_layout=0x{:x}",
            decoded.format().name(),
            layout.bits()
        );
        let abuffer =
            filter::find("abuffer").ok_or(TranscodeError::MissingCodec("abuffer filter"))?;
        let abuffersink = filter::find("abuffersink")
            .ok_or(TranscodeError::MissingCodec("abuffersink filter"))?;
        graph
            .add(&abuffer, "in", &args)
            .map_err(av("audio filter input"))?;
        graph
            .add(&abuffersink, "out", "")
            .map_err(av("audio filter output"))?;
        if let Some(mut out) = graph.get("out") {
            out.set_sample_format(enc.encoder.format());
            out.set_channel_layout(enc.encoder.channel_layout());
            out.set_sample_rate(enc.rate as u32);
        }
        graph
            .output("in", 0)
            .and_then(|p| p.input("out", 0))
            .and_then(|p| p.parse(&format!("aresample={}", enc.rate)))
            .map_err(av("audio filter graph"))?;
        graph.validate().map_err(av("audio filter graph"))?;
        if let Some(mut out) = graph.get("out") {
            out.sink().set_frame_size(enc.encoder.frame_size());
        }
        Ok(graph)
    }

    fn drain_audio_decoder(&mut self, eof: bool) -> Result<(), TranscodeError> {
        if eof {
            if let Some(chain) = self.audio.as_mut() {
                let _ = chain.decoder.send_eof();
            }
        }
        let mut decoded = frame::Audio::empty();
        loop {
            let Some(chain) = self.audio.as_mut() else {
                return Ok(());
            };
            if chain.decoder.receive_frame(&mut decoded).is_err() {
                break;
            }
            let ts = decoded.timestamp().or(decoded.pts());
            decoded.set_pts(ts);
            if self.audio.as_ref().is_some_and(|c| c.graph.is_none()) {
                let graph = self.build_graph(&decoded)?;
                if let Some(chain) = self.audio.as_mut() {
                    chain.graph = Some(graph);
                }
            }
            if let Some(graph) = self.audio.as_mut().and_then(|c| c.graph.as_mut()) {
                if let Some(mut input) = graph.get("in") {
                    input
                        .source()
                        .add(&decoded)
                        .map_err(av("audio filter input"))?;
                }
            }
            self.drain_graph()?;
        }
        if eof {
            if let Some(graph) = self.audio.as_mut().and_then(|c| c.graph.as_mut()) {
                if let Some(mut input) = graph.get("in") {
                    let _ = input.source().flush();
                }
            }
            self.drain_graph()?;
        }
        Ok(())
    }

    fn drain_graph(&mut self) -> Result<(), TranscodeError> {
        let mut filtered = frame::Audio::empty();
        let mut produced = Vec::new();
        while let Some(mut out) = self
            .audio
            .as_mut()
            .and_then(|c| c.graph.as_mut())
            .and_then(|g| g.get("out"))
        {
            if out.sink().frame(&mut filtered).is_err() {
                break;
            }
            let sink_tb = out.sink().time_base();
            if let Some(enc) = self.audio_encoder.as_mut() {
                // The encoder counts in samples (1/rate); rescale if the graph chose otherwise.
                let encoder_tb = Rational::new(1, enc.rate);
                if sink_tb != encoder_tb && sink_tb.denominator() != 0 {
                    let pts = filtered
                        .pts()
                        .map(|t| ff::Rescale::rescale(&t, sink_tb, encoder_tb));
                    filtered.set_pts(pts);
                }
                enc.encoder
                    .send_frame(&filtered)
                    .map_err(av("encoding audio"))?;
                drain_audio_encoder(enc, &mut produced);
            }
        }
        for p in produced {
            self.emit_audio(p);
        }
        Ok(())
    }

    fn flush_audio(&mut self) -> Result<(), TranscodeError> {
        self.drain_audio_decoder(true)?;
        let mut produced = Vec::new();
        if let Some(enc) = self.audio_encoder.as_mut() {
            let _ = enc.encoder.send_eof();
            drain_audio_encoder(enc, &mut produced);
        }
        for p in produced {
            self.emit_audio(p);
        }
        Ok(())
    }

    /// Sends one encoded audio packet to every rung (encoded once, shared).
    fn emit_audio(&mut self, p: Packet) {
        if self.video.is_none() && !self.audio_only {
            // Wait for the video configuration; after ~3 s of audio alone, serve audio-only.
            self.early_audio.push(p);
            let (rate, frame) = self.audio_encoder.as_ref().map_or((48_000, 1024), |e| {
                (e.rate as usize, (e.encoder.frame_size() as usize).max(1))
            });
            if self.early_audio.len() * frame < 3 * rate {
                return;
            }
            tracing::info!("no video in the stream; serving it audio-only");
            self.audio_only = true;
            if let Some(config) = self.audio_config_out.clone() {
                self.sink
                    .rung_event(AUDIO_RENDITION, MediaEvent::AudioConfig(config));
            }
            for p in std::mem::take(&mut self.early_audio) {
                self.sink.rung_event(AUDIO_RENDITION, MediaEvent::Packet(p));
            }
            return;
        }
        for name in self.all_rung_names() {
            self.sink.rung_event(&name, MediaEvent::Packet(p.clone()));
        }
    }
}

fn drain_encoder(encoder: &mut codec::encoder::Video, name: &str, out: &mut Vec<(String, Packet)>) {
    let mut packet = AvPacket::empty();
    while encoder.receive_packet(&mut packet).is_ok() {
        let (Some(pts), Some(data)) = (packet.pts(), packet.data()) else {
            continue;
        };
        let dts = packet.dts().unwrap_or(pts);
        out.push((
            name.to_string(),
            Packet {
                track: TrackKind::Video,
                dts,
                pts,
                keyframe: packet.is_key(),
                data: annexb::to_avcc(data),
            },
        ));
    }
}

fn drain_audio_encoder(enc: &mut AudioEncoder, out: &mut Vec<Packet>) {
    let mut packet = AvPacket::empty();
    while enc.encoder.receive_packet(&mut packet).is_ok() {
        let (Some(pts), Some(data)) = (packet.pts(), packet.data()) else {
            continue;
        };
        let ts = pts + OUTPUT_OFFSET_SECS * i64::from(enc.rate);
        out.push(Packet {
            track: TrackKind::Audio,
            dts: ts,
            pts: ts,
            keyframe: true,
            data: Bytes::copy_from_slice(data),
        });
    }
}

/// Initializes libav once per process (codec registration, log level).
pub fn init_libav() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Err(e) = ff::init() {
            tracing::error!(error = %e, "libav initialization failed");
        }
        ff::util::log::set_level(ff::util::log::Level::Error);
    });
}
