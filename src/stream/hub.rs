//! The hub: stream name (the publishing user) → its live session. A new publish under a live
//! name takes the stream over; shutdown closes the hub to new publishers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{lock, HubLimits, LiveStream, Publisher, StopCause};
use crate::media::EndReason;

type StreamListener = Box<dyn Fn(&Arc<LiveStream>) + Send + Sync>;

#[derive(Default)]
pub struct Hub {
    limits: HubLimits,
    streams: Mutex<HashMap<String, Arc<LiveStream>>>,
    listeners: Mutex<Vec<StreamListener>>,
    next_session: AtomicU64,
    /// Set by [`Hub::close`]: the server is shutting down and admits no new publish.
    closed: std::sync::atomic::AtomicBool,
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub::default())
    }

    /// A hub whose publish sessions are held to `limits`.
    pub fn with_limits(limits: HubLimits) -> Arc<Hub> {
        Arc::new(Hub {
            limits,
            ..Hub::default()
        })
    }

    /// Registers a consumer factory, called for every new stream before any media flows, so a
    /// subscription made inside it sees the stream from its first event.
    pub fn on_new_stream(&self, f: impl Fn(&Arc<LiveStream>) + Send + Sync + 'static) {
        lock(&self.listeners).push(Box::new(f));
    }

    /// Starts a publish session under `name`. A session already live under that name is ended
    /// (its consumers see `End(Replaced)`) and its connection told to close: the newest publisher
    /// wins, so an encoder reconnecting after a network drop is never locked out.
    pub fn publish(self: &Arc<Self>, name: &str) -> Publisher {
        self.publish_with_query(name, "")
    }

    /// Like [`Hub::publish`], keeping the publish URL's query for the relays.
    pub fn publish_with_query(self: &Arc<Self>, name: &str, query: &str) -> Publisher {
        let session_id = self.next_session.fetch_add(1, Ordering::Relaxed) + 1;
        let mut streams = lock(&self.streams);
        let replaced = streams
            .get(name)
            .filter(|s| !s.is_ended())
            .map(|s| s.session_id);
        let mut stream = LiveStream::new(name, query, session_id, self.limits);
        stream.replaced_session = replaced;
        let stream = Arc::new(stream);
        let previous = streams.insert(name.to_string(), stream.clone());
        drop(streams);
        if let Some(old) = previous {
            tracing::info!(
                stream = name,
                old_session = old.session_id,
                new_session = stream.session_id,
                "new publish session takes over the stream; ending the old one"
            );
            old.end(EndReason::Replaced);
            old.stop.cancel();
        }
        for listener in lock(&self.listeners).iter() {
            listener(&stream);
        }
        Publisher {
            hub: Some(self.clone()),
            stream,
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<LiveStream>> {
        lock(&self.streams).get(name).cloned()
    }

    pub fn list(&self) -> Vec<Arc<LiveStream>> {
        let mut v: Vec<_> = lock(&self.streams).values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Ends the live session under `name` (e.g. its key was revoked). Returns whether one existed.
    pub fn stop(&self, name: &str, cause: StopCause) -> bool {
        match lock(&self.streams).get(name) {
            Some(s) => {
                s.stop_session(cause);
                true
            }
            None => false,
        }
    }

    /// Shutdown: no new publish is admitted from now on and every live session is told to end,
    /// so each ends as if its publisher had stopped (last segments, ENDLIST, recording
    /// finalized). Returns how many sessions were live.
    pub fn close(&self) -> usize {
        self.closed.store(true, Ordering::SeqCst);
        let streams = lock(&self.streams);
        for stream in streams.values() {
            stream.stop_session(StopCause::Shutdown);
        }
        streams.len()
    }

    /// Whether [`Hub::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// How many publish sessions are live.
    pub fn len(&self) -> usize {
        lock(&self.streams).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn remove_if_current(&self, stream: &LiveStream) {
        let mut streams = lock(&self.streams);
        if streams
            .get(&stream.name)
            .is_some_and(|s| s.session_id == stream.session_id)
        {
            streams.remove(&stream.name);
        }
    }
}
