//! Stream name → its live HLS window: attach a publish session, look a stream up, sweep ended
//! streams.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::live::LiveHls;
use crate::config::HlsConfig;

/// Stream name → its live HLS.
pub struct HlsRegistry {
    streams: RwLock<HashMap<String, Arc<RwLock<LiveHls>>>>,
    config: HlsConfig,
}

impl HlsRegistry {
    pub fn new(config: HlsConfig) -> Arc<Self> {
        Arc::new(HlsRegistry {
            streams: RwLock::new(HashMap::new()),
            config,
        })
    }

    /// Attaches a new publish session: continues the stream's HLS if it is still live (a
    /// takeover), otherwise starts a fresh one. Returns the HLS and the session's generation.
    pub fn attach(&self, stream: &str) -> (Arc<RwLock<LiveHls>>, u64) {
        let mut streams = self.streams.write().unwrap_or_else(|e| e.into_inner());
        let entry = streams
            .entry(stream.to_string())
            .or_insert_with(|| Arc::new(RwLock::new(LiveHls::new(stream, self.config.clone()))));
        let reuse = !entry.read().unwrap_or_else(|e| e.into_inner()).is_ended();
        if !reuse {
            *entry = Arc::new(RwLock::new(LiveHls::new(stream, self.config.clone())));
        }
        let hls = entry.clone();
        let generation = hls
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .next_generation();
        (hls, generation)
    }

    pub fn get(&self, stream: &str) -> Option<Arc<RwLock<LiveHls>>> {
        self.streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(stream)
            .cloned()
    }

    /// Forgets streams that ended more than `keep_ended_secs` ago. Returns how many.
    pub fn sweep(&self) -> usize {
        let keep = Duration::from_secs(self.config.keep_ended_secs);
        let mut streams = self.streams.write().unwrap_or_else(|e| e.into_inner());
        let before = streams.len();
        streams.retain(|_, hls| {
            hls.read()
                .unwrap_or_else(|e| e.into_inner())
                .ended_for()
                .is_none_or(|t| t < keep)
        });
        before - streams.len()
    }

    pub fn len(&self) -> usize {
        self.streams.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Streams whose HLS has not ended yet (shutdown waits for these to write their ENDLIST).
    pub fn live_count(&self) -> usize {
        self.streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|hls| !hls.read().unwrap_or_else(|e| e.into_inner()).is_ended())
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
