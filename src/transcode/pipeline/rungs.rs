//! A video configuration becomes the ladder's rungs: the plan for the source's size, the source
//! placed as a rung when it can be served as published, the rung names fixed at the first
//! configuration, one encoder opened per encoded rung.

use std::sync::Arc;

use ff::codec;
use ff::Rational;
use ffmpeg_next as ff;

use super::{LadderSink, Pipeline, TranscodeError};
use crate::config::{RungConfig, SourceRung};
use crate::media::{MediaEvent, VideoConfig, VIDEO_TIMESCALE};
use crate::stream::RenditionInfo;
use crate::transcode::libav::{av, set_extradata, set_max_pixels, video_decoder};
use crate::transcode::plan::{plan_ladder, PlannedRung};
use crate::transcode::source_rung::{self, Placement, SourceRungStatus};
use crate::transcode::video::{self, VideoChain};

impl<S: LadderSink> Pipeline<S> {
    pub(super) fn on_video_config(
        &mut self,
        config: Arc<VideoConfig>,
    ) -> Result<(), TranscodeError> {
        if self.audio_only {
            tracing::warn!("video appeared after the stream started audio-only; it is ignored");
            return Ok(());
        }
        if self.video.as_ref().is_some_and(|v| v.source == config) {
            return Ok(());
        }
        // A WebRTC source changes its picture size with the bandwidth; the decoder follows
        // in-band and the scalers follow the decoded size, so the rungs keep running (reopening
        // them would cost a flush and a discontinuity per change).
        if let Some(chain) = self.video.as_mut() {
            if chain.source.codec == config.codec && config.inband_parameters {
                self.settings.limits.check_config(&config)?;
                tracing::info!(
                    from = %format!("{}x{}", chain.source.width, chain.source.height),
                    to = %format!("{}x{}", config.width, config.height),
                    "source picture size changed; the rungs keep their sizes"
                );
                chain.source = config.clone();
                self.last_video_config = Some(config);
                return Ok(());
            }
        }
        if self
            .last_video_config
            .replace(config.clone())
            .is_some_and(|last| last != config)
        {
            self.config_changes.change(std::time::Instant::now())?;
        }
        self.settings.limits.check_config(&config)?;
        self.flush_video()?;
        // The decoder first: a stream nothing can decode must not announce a ladder.
        let mut ctx = codec::context::Context::new_with_codec(video_decoder(config.codec)?);
        if !config.record.is_empty() {
            set_extradata(&mut ctx, &config.record)?;
        }
        set_max_pixels(&mut ctx, self.settings.limits.max_pixels);
        let mut decoder = ctx.decoder();
        decoder.set_packet_time_base(Rational::new(1, VIDEO_TIMESCALE as i32));
        let decoder = decoder.video().map_err(av("opening the video decoder"))?;
        let first_plan = self.rung_names.is_empty();
        let mut planned = self.plan(&config);
        let mut source_rung = self.place_source(&config, &planned);
        if !first_plan
            && source_rung
                .as_ref()
                .is_some_and(|p| !self.rung_names.contains(&p.name))
        {
            source_rung = None;
            self.source_status.rung = None;
            self.source_status.reason =
                "the renditions were fixed by the stream's first picture size".into();
        }
        if let Some(placed) = &source_rung {
            // Its slot in the ladder is served by the source, not encoded.
            if placed.replaces_top {
                planned.pop();
            } else {
                planned.retain(|p| p.config.name != placed.name);
            }
        }
        if first_plan {
            self.announce_ladder(&planned, source_rung.as_ref());
        }
        let fps = config.fps.unwrap_or(30.0);
        let mut rungs = Vec::with_capacity(planned.len());
        for plan in &planned {
            let (rung, config) = video::open_rung(
                plan,
                fps,
                self.settings.segment_duration,
                self.settings.x264_threads,
                self.settings.low_delay,
                source_rung.is_some(),
                self.rung_output_tx.clone(),
            )?;
            self.sink
                .rung_event(&plan.config.name, MediaEvent::VideoConfig(Arc::new(config)));
            rungs.push(rung);
        }
        if let Some(placed) = &source_rung {
            self.sink
                .rung_event(&placed.name, MediaEvent::VideoConfig(config.clone()));
        }
        tracing::info!(
            source = %format!("{}x{}", config.width, config.height),
            rungs = %planned.iter().map(|p| format!("{}={}x{}", p.config.name, p.width, p.height)).collect::<Vec<_>>().join(" "),
            source_rung = source_rung.as_ref().map(|p| p.name.as_str()).unwrap_or("none"),
            source_rung_reason = %self.source_status.reason,
            "ladder ready"
        );
        self.grid.reset();
        self.source_keys.clear();
        self.video = Some(VideoChain {
            source: config,
            decoder,
            scalers: rungs.iter().map(|_| None).collect(),
            rungs,
            last_pts: None,
            source_rung,
        });
        // Audio that arrived before the video configuration now has rungs to go to.
        if let Some(audio) = self.audio.output_config() {
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

    /// Whether the source is served as a rung of `planned` (and which), recording why or why not.
    pub(super) fn place_source(
        &mut self,
        config: &VideoConfig,
        planned: &[PlannedRung],
    ) -> Option<Placement> {
        let mode = self.settings.source_rung;
        let placed = source_rung::place(mode, config, planned).and_then(|placed| {
            if mode != SourceRung::Auto {
                return Ok(placed);
            }
            match &self.keyframe_verdict {
                Some(Ok(())) => Ok(placed),
                Some(Err(why)) => Err(why.clone()),
                None => Err("its keyframe interval is not known".into()),
            }
        });
        let (rung, reason) = match &placed {
            Ok(p) => (
                Some(p.name.clone()),
                match mode {
                    SourceRung::Always => "transcode.source_rung is always".to_string(),
                    _ => "H.264 of a rung's size with keyframes within a segment".to_string(),
                },
            ),
            Err(why) => (None, why.clone()),
        };
        self.source_status = SourceRungStatus {
            mode: mode.name(),
            rung,
            reason,
        };
        placed.ok()
    }

    /// Fixes the rung names at the first plan and tells the sink the ladder's renditions.
    pub(super) fn announce_ladder(&mut self, encoded: &[PlannedRung], source: Option<&Placement>) {
        let mut sizes: Vec<RenditionInfo> = encoded
            .iter()
            .map(|p| RenditionInfo {
                name: p.config.name.clone(),
                width: p.width,
                height: p.height,
            })
            .chain(source.map(|s| RenditionInfo {
                name: s.name.clone(),
                width: s.width,
                height: s.height,
            }))
            .collect();
        sizes.sort_by_key(|r| r.width * r.height);
        self.rung_names = sizes.iter().map(|r| r.name.clone()).collect();
        self.sink.ladder_planned(&sizes);
    }

    /// The rungs for a source: the ladder's plan at the first configuration (the names are fixed
    /// by [`Self::announce_ladder`]); for a later one, the same names.
    pub(super) fn plan(&mut self, config: &VideoConfig) -> Vec<PlannedRung> {
        let fresh = plan_ladder(&self.settings.rungs, config.width, config.height);
        if self.rung_names.is_empty() {
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
}
