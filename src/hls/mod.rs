//! Live HLS: a consumer of the hub that segments each stream into CMAF and keeps a bounded live
//! window in memory for the HTTP layer.

pub mod fmp4;
pub mod live;
pub mod segmenter;

use std::sync::Arc;

use chrono::Utc;
use tracing::Instrument;

use crate::config::HlsConfig;
use crate::metrics::Metrics;
use crate::record::RecordTap;
use crate::stream::LiveStream;
pub use live::{HlsFile, HlsRegistry, LiveHls, AUDIO_RUNG, SOURCE_RUNG};
use segmenter::{Segmenter, SegmenterConfig, SegmenterOutput};

/// Serves a stream as published: its packets are segmented as they come (one `source` rendition).
pub fn spawn_passthrough(
    stream: &Arc<LiveStream>,
    registry: Arc<HlsRegistry>,
    config: HlsConfig,
    metrics: Arc<Metrics>,
    mut record: Option<RecordTap>,
) {
    // Subscribe now, synchronously, so no event published after this call is missed.
    let mut subscription = stream.subscribe();
    let (hls, generation) = registry.attach(&stream.name);
    let span = tracing::info_span!(parent: None, "hls", stream = %stream.name, session = stream.session_id);
    tokio::spawn(
        async move {
            let mut segmenter = Segmenter::new(SegmenterConfig {
                target_duration: config.segment_duration,
                max_segment_bytes: (config.max_segment_mib as usize) << 20,
            });
            let mut ended = false;
            while let Some(event) = subscription.recv().await {
                let outputs = segmenter.push(event, Utc::now());
                for output in outputs {
                    match &output {
                        SegmenterOutput::Segment(s) => {
                            metrics.hls_segments.inc();
                            tracing::debug!(duration = s.duration, bytes = s.data.len(), "segment");
                        }
                        SegmenterOutput::End(reason) => {
                            ended = true;
                            tracing::info!(?reason, "stream ended; playlist finished");
                        }
                        SegmenterOutput::Init { .. } => {}
                    }
                    if let Some(tap) = record.as_mut() {
                        tap.output(SOURCE_RUNG, &output);
                    }
                    hls.write().unwrap_or_else(|e| e.into_inner()).apply(
                        generation,
                        SOURCE_RUNG,
                        output,
                    );
                }
            }
            if !ended {
                for output in segmenter.push(
                    crate::media::MediaEvent::End(crate::media::EndReason::Stopped),
                    Utc::now(),
                ) {
                    if let Some(tap) = record.as_mut() {
                        tap.output(SOURCE_RUNG, &output);
                    }
                    hls.write().unwrap_or_else(|e| e.into_inner()).apply(
                        generation,
                        SOURCE_RUNG,
                        output,
                    );
                }
            }
        }
        .instrument(span),
    );
}
