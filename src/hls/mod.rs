//! Live HLS: the renditions stage segments each rendition of a publish session into CMAF and
//! keeps a bounded live window in memory for the HTTP layer; subscribers (the recorder) get every
//! segment through an interface defined here.

pub mod blocking;
pub mod fmp4;
pub mod live;
pub mod playlist;
pub mod registry;
pub mod renditions;
pub mod segmenter;

use tracing::Instrument;

use crate::media::{EndReason, MediaEvent};
use crate::stream::Subscription;
pub use blocking::{Decision, Directives, Published};
pub use live::{HlsFile, LiveHls, Numbering, SOURCE_RENDITION};
pub use registry::HlsRegistry;
pub use renditions::{Renditions, SegmentSubscriber};

pub use playlist::PLAYLIST_CONTENT_TYPE;

/// Serves a stream as published: its packets are segmented as they come, as the one `source`
/// rendition.
/// `limits`: the configured source size applies here too (no decoding cost, but the same rule
/// whatever the route).
pub fn spawn_passthrough(
    mut subscription: Subscription,
    mut renditions: Renditions,
    limits: crate::transcode::limits::SourceLimits,
) {
    let stream = subscription.stream().clone();
    renditions.add(SOURCE_RENDITION);
    let span = tracing::info_span!(parent: None, "hls", stream = %stream.name, session = stream.session_id);
    tokio::spawn(
        async move {
            // Every configuration change cuts a segment: a source alternating its records would
            // make one per frame, so changes are limited as in the ladder.
            let mut changes = crate::transcode::limits::ConfigChangeLimiter::default();
            let (mut video, mut audio) = (None, None);
            while let Some(event) = subscription.recv().await {
                // fMP4 passthrough writes what it gets as H.264/AAC: anything else (a codec
                // switch mid-stream) ends the session with the reason instead of bad output.
                let unservable = match &event {
                    MediaEvent::VideoConfig(v) => {
                        (!v.codec.passes_through()).then(|| v.codec.name())
                    }
                    MediaEvent::AudioConfig(a) => {
                        (!a.codec.passes_through()).then(|| a.codec.name())
                    }
                    _ => None,
                };
                if let Some(codec) = unservable {
                    stream.abort(&crate::transcode::route::refusal(codec));
                    break;
                }
                if let MediaEvent::VideoConfig(v) = &event {
                    if let Err(e) = limits.check_size(v.width, v.height) {
                        stream.abort(&e.to_string());
                        break;
                    }
                }
                let changed = match &event {
                    MediaEvent::VideoConfig(v) => video.replace(v.clone()).is_some_and(|o| o != *v),
                    MediaEvent::AudioConfig(a) => audio.replace(a.clone()).is_some_and(|o| o != *a),
                    _ => false,
                };
                if changed {
                    if let Err(e) = changes.change(std::time::Instant::now()) {
                        stream.abort(&e.to_string());
                        break;
                    }
                }
                renditions.push(SOURCE_RENDITION, event);
            }
            renditions.finish(EndReason::Stopped);
        }
        .instrument(span),
    );
}
