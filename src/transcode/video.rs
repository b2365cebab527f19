//! The video side of the ladder: per rung, an x264 encoder on its own thread, fed the shared,
//! reference-counted decoded pictures (scaled to the rung's size) through a small bounded
//! channel, so a slow rung slows the decoder rather than growing memory. Scalers are not `Send`:
//! each is created on the thread that uses it (the pipeline thread).

use std::sync::Arc;

use ff::codec::{self, Flags as CodecFlags};
use ff::format::Pixel;
use ff::software::scaling;
use ff::util::picture;
use ff::{frame, Dictionary, Packet as AvPacket, Rational};
use ffmpeg_next as ff;

use super::libav::{av, extradata, frame_ref, TranscodeError};
use super::plan::PlannedRung;
use super::source_rung::Placement;
use crate::media::{annexb, Packet, TrackKind, VideoConfig, VIDEO_TIMESCALE};

/// A scaler and the (format, width, height) of the pictures it takes.
pub type Scaler = (scaling::Context, (Pixel, u32, u32));

/// Work for a rung's thread.
pub enum RungJob {
    Frame {
        frame: frame::Video,
        pts: i64,
        key: bool,
    },
    Flush,
}

/// What rung threads report back to the pipeline thread.
pub enum RungOutput {
    Packet(String, Packet),
    Flushed,
    Failed(TranscodeError),
}

/// Frames in flight per rung: enough to overlap the rungs, small enough to bound memory.
pub const RUNG_QUEUE_FRAMES: usize = 4;

/// One rung: its encoder lives on its own thread.
pub struct RungWorker {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub jobs: Option<std::sync::mpsc::SyncSender<RungJob>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Next presentation time a frame may have under the rung's fps cap.
    pub next_allowed_pts: Option<i64>,
    pub min_frame_interval: i64,
}

impl Drop for RungWorker {
    fn drop(&mut self) {
        self.jobs = None; // closes the channel: the thread finishes its queue and exits
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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

pub struct VideoChain {
    pub source: Arc<VideoConfig>,
    pub decoder: codec::decoder::Video,
    /// Ascending by size.
    pub rungs: Vec<RungWorker>,
    /// Per rung: its scaler, made for the picture it scales from.
    pub scalers: Vec<Option<Scaler>>,
    pub last_pts: Option<i64>,
    /// The source served as a rung of its own: the encoded rungs' keyframes follow its keyframes.
    pub source_rung: Option<Placement>,
}

/// Opens a rung's x264 encoder on its own thread. Returns the worker and the rung's H.264
/// configuration (which the caller announces before any of its packets).
pub fn open_rung(
    plan: &PlannedRung,
    source_fps: f64,
    segment_duration: f64,
    x264_threads: u32,
    low_delay: bool,
    follow_source_keys: bool,
    out: std::sync::mpsc::Sender<RungOutput>,
) -> Result<(RungWorker, VideoConfig), TranscodeError> {
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
    if low_delay {
        // No B-frames, lookahead or frame-rate uncertainty frame: each frame comes out as it
        // goes in (`transcode.low_delay`; scripts/bench.sh ladder measures what it costs).
        options.set("tune", "zerolatency");
    }
    options.set("profile", &plan.config.profile);
    options.set("bufsize", &plan.config.bufsize.to_string());
    // Keyframes only where the shared grid forces them (as IDR), so all rungs cut at the
    // same frames: no scene-cut keyframes, and a keyint longer than any segment.
    options.set("forced-idr", "1");
    // The grid forces every keyframe; keyint is only a backstop, long enough that a source
    // faster than its declared rate (variable frame rate from WebRTC) never reaches it first.
    // Following a source rung's keyframes, there is none: an IDR of x264's own would be one the
    // source rung does not have.
    let keyint = if follow_source_keys {
        "infinite".to_string()
    } else {
        let frames = ((segment_duration * fps.max(30.0) * 4.0).ceil() as u32).max(16);
        format!("{frames}:min-keyint={frames}")
    };
    options.set(
        "x264-params",
        &format!("scenecut=0:open-gop=0:keyint={keyint}"),
    );
    if x264_threads > 0 {
        options.set("threads", &x264_threads.to_string());
    }
    let encoder = enc
        .open_with(options)
        .map_err(av("opening the x264 encoder"))?;
    let record = annexb::avcc_record(&extradata(&encoder))
        .ok_or_else(|| TranscodeError::Parameters("x264 gave no SPS/PPS".into()))?;
    let config =
        VideoConfig::h264(&record).map_err(|e| TranscodeError::Parameters(e.to_string()))?;
    let (jobs, jobs_rx) = std::sync::mpsc::sync_channel(RUNG_QUEUE_FRAMES);
    let name = plan.config.name.clone();
    let span = tracing::Span::current();
    let thread = std::thread::Builder::new()
        // "lg-ladder" prefix: every thread of a ladder is findable by name.
        .name("lg-ladder-rung".into())
        .spawn(move || {
            let _entered = span.enter();
            let report = out.clone();
            if let Err(panic) =
                super::admission::catch_panic(|| rung_worker(name, encoder, jobs_rx, out))
            {
                let _ = report.send(RungOutput::Failed(TranscodeError::Panicked(panic)));
            }
        })
        .map_err(|e| TranscodeError::Parameters(format!("starting a rung thread: {e}")))?;
    let worker = RungWorker {
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
    };
    Ok((worker, config))
}

/// The picture rung `i` encodes: a new reference to the decoded frame when it is already the
/// rung's size and format, otherwise a bicubic scale of it (each rung scales from the decoded
/// picture itself: cascading from the next larger rung measured 0.2-0.25 dB lower PSNR).
pub fn picture_for(
    scaler: &mut Option<Scaler>,
    decoded: &frame::Video,
    width: u32,
    height: u32,
) -> Result<frame::Video, TranscodeError> {
    let src = (decoded.format(), decoded.width(), decoded.height());
    if src == (Pixel::YUV420P, width, height) {
        return frame_ref(decoded);
    }
    if scaler.as_ref().map(|s| s.1) != Some(src) {
        let ctx = scaling::Context::get(
            src.0,
            src.1,
            src.2,
            Pixel::YUV420P,
            width,
            height,
            scaling::Flags::BICUBIC,
        )
        .map_err(av("creating a scaler"))?;
        *scaler = Some((ctx, src));
    }
    let mut out = frame::Video::new(Pixel::YUV420P, width, height);
    if let Some((ctx, _)) = scaler.as_mut() {
        ctx.run(decoded, &mut out).map_err(av("scaling"))?;
    }
    Ok(out)
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
