//! The per-stream transcoder thread's logic: decode video once (any codec libav decodes), plan
//! the ladder from the source size, decide the shared keyframe grid, hand each decoded picture to
//! every rung's encoder thread ([`super::video`]), and send the audio, encoded once
//! ([`super::audio`]), to every rung. Output goes to a [`LadderSink`] as codec-neutral media
//! events, one stream per rung.

use std::sync::Arc;

use ff::codec;
use ff::{frame, Packet as AvPacket};
use ffmpeg_next as ff;

use super::audio::AudioTranscoder;
use super::keyframes::KeyframeGrid;
pub use super::libav::{init_libav, TranscodeError};
use super::limits::{ConfigChangeLimiter, FrameRateMeter, SourceLimits};
use super::plan::plan_ladder;
use super::source_rung::{self, KeyframeProbe, Probe, SourceKeys, SourceRungStatus};
use super::thumbnail;
use super::video::{self, RungJob, RungOutput, VideoChain};
use crate::config::{RungConfig, SourceRung, TranscodeConfig};
use crate::media::{
    AudioConfig, EndReason, MediaEvent, Packet, TrackKind, VideoConfig, VIDEO_TIMESCALE,
};
use crate::stream::RenditionInfo;

/// Output timestamps are shifted by one second so that B-frame reordering never makes a decode
/// time negative (fMP4 decode times are unsigned).
pub const OUTPUT_OFFSET_SECS: i64 = 1;

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
    /// The ladder has stopped for good (after every rung's `End`): end whatever has not ended,
    /// e.g. a stream that stopped before any rung existed.
    fn finish(&mut self, _reason: EndReason) {}
    /// The ladder failed (it stops; `finish` follows): why, for the consumers that keep a record
    /// of how the stream ended.
    fn failed(&mut self, _reason: &str) {}
    /// A new thumbnail of the source picture.
    fn thumbnail(&mut self, _thumbnail: crate::stream::Thumbnail) {}
}

/// Settings the pipeline needs, taken from the config.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub rungs: Vec<RungConfig>,
    pub audio_bitrate: u64,
    pub audio_sample_rate: u32,
    pub segment_duration: f64,
    pub x264_threads: u32,
    pub low_delay: bool,
    pub limits: SourceLimits,
    pub thumbnail_interval_secs: u64,
    pub source_rung: SourceRung,
}

impl PipelineSettings {
    pub fn from_config(t: &TranscodeConfig, segment_duration: f64) -> Self {
        PipelineSettings {
            rungs: t.rungs.clone(),
            audio_bitrate: t.audio_bitrate,
            audio_sample_rate: t.audio_sample_rate,
            segment_duration,
            x264_threads: t.x264_threads,
            low_delay: t.low_delay,
            limits: SourceLimits::from_config(t),
            thumbnail_interval_secs: t.thumbnail_interval_secs,
            source_rung: t.source_rung,
        }
    }
}

/// The per-stream transcoder.
pub struct Pipeline<S: LadderSink> {
    settings: PipelineSettings,
    sink: S,
    video: Option<VideoChain>,
    audio: AudioTranscoder,
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
    /// Configuration changes cost a decoder and every encoder: rate-limited.
    config_changes: ConfigChangeLimiter,
    last_video_config: Option<Arc<VideoConfig>>,
    last_audio_config: Option<Arc<AudioConfig>>,
    frame_rate: FrameRateMeter,
    thumbnails: thumbnail::Schedule,
    jpeg: thumbnail::JpegMaker,
    /// Holds the stream's first events until its keyframe interval is known (`auto`).
    probe: Option<KeyframeProbe>,
    /// What the last probe found: `Err` says why the source is not served.
    keyframe_verdict: Option<Result<(), String>>,
    source_keys: SourceKeys,
    source_status: SourceRungStatus,
}

impl<S: LadderSink> Pipeline<S> {
    pub fn new(settings: PipelineSettings, sink: S) -> Self {
        let interval = (settings.segment_duration * f64::from(VIDEO_TIMESCALE)).round() as i64;
        let (rung_output_tx, rung_output) = std::sync::mpsc::channel();
        let audio = AudioTranscoder::new(settings.audio_bitrate, settings.audio_sample_rate);
        let thumbnails = thumbnail::Schedule::new(settings.thumbnail_interval_secs);
        let settings_mode = settings.source_rung.name();
        Pipeline {
            rung_output_tx,
            rung_output,
            settings,
            sink,
            video: None,
            audio,
            rung_names: Vec::new(),
            grid: KeyframeGrid::new(interval),
            early_audio: Vec::new(),
            audio_only: false,
            media_seconds: 0.0,
            first_pts: None,
            first_audio_pts: None,
            config_changes: ConfigChangeLimiter::default(),
            last_video_config: None,
            last_audio_config: None,
            frame_rate: FrameRateMeter::default(),
            thumbnails,
            jpeg: thumbnail::JpegMaker::default(),
            probe: None,
            keyframe_verdict: None,
            source_keys: SourceKeys::default(),
            source_status: SourceRungStatus {
                mode: settings_mode,
                rung: None,
                reason: "no video yet".into(),
            },
        }
    }

    pub fn sink(&mut self) -> &mut S {
        &mut self.sink
    }

    /// The rungs, their sizes and whether each is the source, for status reports.
    pub fn rungs(&self) -> Vec<(String, u32, u32, bool)> {
        let Some(chain) = self.video.as_ref() else {
            return Vec::new();
        };
        let mut rungs: Vec<_> = chain
            .rungs
            .iter()
            .map(|r| (r.name.clone(), r.width, r.height, false))
            .chain(
                chain
                    .source_rung
                    .iter()
                    .map(|s| (s.name.clone(), s.width, s.height, true)),
            )
            .collect();
        rungs.sort_by_key(|r| r.1 * r.2);
        rungs
    }

    /// Whether the source is served as the top rung; `None` until the ladder has opened.
    pub fn serves_source(&self) -> Option<bool> {
        self.video.as_ref().map(|v| v.source_rung.is_some())
    }

    pub fn source_rung_status(&self) -> &SourceRungStatus {
        &self.source_status
    }

    pub fn handle(&mut self, event: MediaEvent) -> Result<(), TranscodeError> {
        if let Some(probe) = self.probe.as_mut() {
            let Probe::Decided(verdict) = probe.push(event) else {
                return Ok(());
            };
            let held = self.probe.take().map(KeyframeProbe::into_held);
            self.keyframe_verdict = Some(verdict);
            for event in held.unwrap_or_default() {
                self.handle_now(event)?;
            }
            return Ok(());
        }
        if let MediaEvent::VideoConfig(config) = &event {
            if self.probes(config) {
                let max_gap = crate::media::max_segment_secs(self.settings.segment_duration);
                self.keyframe_verdict = None;
                self.probe = Some(KeyframeProbe::new(event, max_gap));
                return Ok(());
            }
        }
        self.handle_now(event)
    }

    /// Whether a new video configuration waits for its keyframe interval before the ladder
    /// opens: in `auto`, when everything else about it allows serving it as the top rung.
    fn probes(&self, config: &VideoConfig) -> bool {
        self.settings.source_rung == SourceRung::Auto
            && !self.audio_only
            && self
                .video
                .as_ref()
                .is_none_or(|v| v.source.as_ref() != config)
            && source_rung::place(
                SourceRung::Auto,
                config,
                &plan_ladder(&self.settings.rungs, config.width, config.height),
            )
            .is_ok()
    }

    fn handle_now(&mut self, event: MediaEvent) -> Result<(), TranscodeError> {
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

    fn on_video_packet(&mut self, p: Packet) -> Result<(), TranscodeError> {
        let Some(chain) = self.video.as_mut() else {
            return Ok(());
        };
        // The decoder follows an in-band SPS: check its size before the decoder allocates for it
        // (max_pixels would only make it fail silently, frame after frame).
        if let Some((width, height)) = crate::media::codec::inband_sps_size(&chain.source, &p.data)
        {
            self.settings.limits.check_size(width, height)?;
        }
        if let Some(placed) = &chain.source_rung {
            if p.keyframe {
                self.source_keys.keyframe_at(p.pts);
            }
            let offset = OUTPUT_OFFSET_SECS * i64::from(VIDEO_TIMESCALE);
            let served = Packet {
                dts: p.dts.saturating_add(offset),
                pts: p.pts.saturating_add(offset),
                ..p.clone()
            };
            self.sink
                .rung_event(&placed.name, MediaEvent::Packet(served));
        }
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
        let following = chain.source_rung.is_some();
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
        // The decoder follows in-band parameter sets: every picture is checked, not only the
        // configuration record.
        let limits = &self.settings.limits;
        limits.check_size(decoded.width(), decoded.height())?;
        self.frame_rate.observe(limits, pts)?;
        let first = *self.first_pts.get_or_insert(pts);
        self.media_seconds = (pts - first) as f64 / f64::from(VIDEO_TIMESCALE);
        // Following a source rung, its keyframes are the grid.
        let key = if following {
            self.source_keys.is_key(pts)
        } else {
            self.grid.is_keyframe(pts)
        };
        if key && self.thumbnails.due(pts) {
            // From the picture just decoded for the rungs: no decode of its own.
            match self.jpeg.encode(decoded) {
                Ok(thumbnail) => self.sink.thumbnail(thumbnail),
                Err(e) => tracing::debug!(error = %e, "no thumbnail from this picture"),
            }
        }
        let out_pts = pts + OUTPUT_OFFSET_SECS * i64::from(VIDEO_TIMESCALE);
        let Some(chain) = self.video.as_mut() else {
            return Ok(());
        };
        let mut worker_stopped = false;
        for i in (0..chain.rungs.len()).rev() {
            let rung = &mut chain.rungs[i];
            let skip = rung.min_frame_interval > 0
                && !key
                && rung.next_allowed_pts.is_some_and(|next| pts < next);
            if skip {
                continue;
            }
            let picture =
                video::picture_for(&mut chain.scalers[i], decoded, rung.width, rung.height)?;
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
        if self
            .last_audio_config
            .replace(config.clone())
            .is_some_and(|last| last != config)
        {
            self.config_changes.change(std::time::Instant::now())?;
        }
        let mut produced = Vec::new();
        let opened = self.audio.configure(config, &mut produced)?;
        if let Some(config) = opened {
            for name in self.all_rung_names() {
                self.sink
                    .rung_event(&name, MediaEvent::AudioConfig(config.clone()));
            }
        }
        for p in produced {
            self.emit_audio(p);
        }
        Ok(())
    }

    fn on_audio_packet(&mut self, p: Packet) -> Result<(), TranscodeError> {
        let Some(rate) = self.audio.source_rate() else {
            return Ok(());
        };
        if self.video.is_none() && self.first_pts.is_none() {
            // No video (yet): count audio time so an audio-only stream is recognized. From
            // timestamps, as codecs like Opus vary their frame size.
            let first = *self.first_audio_pts.get_or_insert(p.pts);
            self.media_seconds = (p.pts - first).max(0) as f64 / f64::from(rate);
        }
        let mut produced = Vec::new();
        let decoded = self.audio.decode(&p, &mut produced);
        for p in produced {
            self.emit_audio(p);
        }
        decoded
    }

    fn flush_audio(&mut self) -> Result<(), TranscodeError> {
        let mut produced = Vec::new();
        let flushed = self.audio.flush(&mut produced);
        for p in produced {
            self.emit_audio(p);
        }
        flushed
    }

    /// Sends one encoded audio packet to every rung (encoded once, shared).
    fn emit_audio(&mut self, p: Packet) {
        if self.video.is_none() && !self.audio_only {
            // Wait for the video configuration; after ~3 s of audio alone, serve audio-only.
            self.early_audio.push(p);
            let (rate, frame) = self.audio.output_timing();
            if self.early_audio.len() * (frame as usize) < 3 * (rate as usize) {
                return;
            }
            tracing::info!("no video in the stream; serving it audio-only");
            self.audio_only = true;
            if let Some(config) = self.audio.output_config() {
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

mod rungs;
