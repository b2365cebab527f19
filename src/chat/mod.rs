//! Chat and events per stream: viewers' messages and the site's events (tips, "private show
//! started", moderation notices), fanned out to every connection of the stream's room, and across
//! nodes through a [`ChatBus`] when clustered.
//!
//! Memory is bounded everywhere: a room keeps its last [`HISTORY`] entries for newcomers, and
//! each connection reads from a broadcast channel of [`ROOM_BUFFER`] entries; a connection that
//! falls further behind is dropped (it lagged), never buffered. Rooms with no connection and no
//! recent entry are swept.

mod limits;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use limits::{
    check_name, check_text, RateLimiter, MAX_MESSAGE_CHARS, MAX_NAME_CHARS, RATE_BURST,
    RATE_PER_SEC,
};

/// Entries a room remembers for those who join.
pub const HISTORY: usize = 50;
/// Entries a connection may be behind before it is dropped as too slow.
pub const ROOM_BUFFER: usize = 256;
/// Longest event kind and event payload (JSON bytes) from the admin API.
pub const MAX_KIND_CHARS: usize = 64;
pub const MAX_EVENT_BYTES: usize = 4096;
/// Banned senders remembered per room.
const MAX_BANS: usize = 10_000;
/// Rooms at most (one per stream that has or had a chat connection).
const MAX_ROOMS: usize = 10_000;

/// What goes to every connection of a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Entry {
    /// A viewer's message. `sender` is the viewer's stable id in this room (from their token's
    /// viewer id, else their connection), which moderation names.
    Message {
        id: u64,
        sender: String,
        name: String,
        text: String,
        at: DateTime<Utc>,
    },
    /// An event posted by the site (`kind`: "tip", "notice", …; `data`: any JSON).
    Event {
        id: u64,
        kind: String,
        data: serde_json::Value,
        at: DateTime<Utc>,
    },
    /// A message removed by a moderator.
    Deleted { id: u64 },
    /// A sender banned: their messages are refused from now on.
    Banned { sender: String },
}

impl Entry {
    fn id(&self) -> Option<u64> {
        match self {
            Entry::Message { id, .. } | Entry::Event { id, .. } => Some(*id),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChatError {
    #[error("{0}")]
    Invalid(String),
    #[error("slow down: at most {RATE_BURST} messages at once, then one every 2 seconds")]
    RateLimited,
    #[error("you are banned from this chat")]
    Banned,
    #[error("no such message")]
    NotFound,
    #[error("too many chat rooms")]
    Full,
}

/// Carries entries between nodes (Redis pub/sub in a cluster). Entries that arrive from it are
/// handed to [`Chat::deliver`].
pub trait ChatBus: Send + Sync {
    fn publish(&self, room: &str, entry: &Entry);
}

/// An entry as it goes out to connections: serialized once, not once per connection (a room of
/// thousands would otherwise spend most of its CPU re-encoding the same JSON).
#[derive(Debug)]
pub struct Outgoing {
    pub entry: Arc<Entry>,
    pub json: bytes::Bytes,
}

struct Room {
    tx: broadcast::Sender<Arc<Outgoing>>,
    history: VecDeque<Arc<Entry>>,
    banned: HashSet<String>,
    last_activity: Instant,
}

impl Room {
    fn new() -> Self {
        Room {
            tx: broadcast::channel(ROOM_BUFFER).0,
            history: VecDeque::with_capacity(HISTORY),
            banned: HashSet::new(),
            last_activity: Instant::now(),
        }
    }

    /// Applies an entry to this room's state and sends it to its connections.
    fn apply(&mut self, entry: Arc<Entry>) {
        match entry.as_ref() {
            Entry::Deleted { id } => self.history.retain(|e| e.id() != Some(*id)),
            Entry::Banned { sender } => {
                if self.banned.len() < MAX_BANS {
                    self.banned.insert(sender.clone());
                }
                self.history.retain(
                    |e| !matches!(e.as_ref(), Entry::Message { sender: s, .. } if s == sender),
                );
            }
            _ => {
                if self.history.len() == HISTORY {
                    self.history.pop_front();
                }
                self.history.push_back(entry.clone());
            }
        }
        self.last_activity = Instant::now();
        if self.tx.receiver_count() == 0 {
            return;
        }
        let Ok(json) = serde_json::to_vec(entry.as_ref()) else {
            return;
        };
        // A send error means the last receiver just left: nobody to tell.
        let _ = self.tx.send(Arc::new(Outgoing {
            entry,
            json: json.into(),
        }));
    }
}

/// A connection's place in a room.
pub struct Membership {
    pub history: Vec<Arc<Entry>>,
    pub entries: broadcast::Receiver<Arc<Outgoing>>,
}

/// Every room of this node.
pub struct Chat {
    rooms: Mutex<HashMap<String, Room>>,
    bus: Mutex<Option<Arc<dyn ChatBus>>>,
    /// Ids unique across nodes: a random 32-bit node part and a counter.
    node_part: u64,
    counter: std::sync::atomic::AtomicU64,
    connected: Arc<std::sync::atomic::AtomicUsize>,
}

/// One open chat connection, counted until dropped.
pub struct Connected(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Default for Chat {
    fn default() -> Self {
        Chat {
            rooms: Mutex::default(),
            bus: Mutex::default(),
            node_part: u64::from(rand::random::<u32>()) << 32,
            counter: std::sync::atomic::AtomicU64::new(1),
            connected: Arc::default(),
        }
    }
}

impl Chat {
    pub fn new() -> Arc<Chat> {
        Arc::new(Chat::default())
    }

    /// Entries from now on also go to other nodes.
    pub fn set_bus(&self, bus: Arc<dyn ChatBus>) {
        *self.bus.lock().unwrap_or_else(|e| e.into_inner()) = Some(bus);
    }

    fn next_id(&self) -> u64 {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Below 2^53: ids stay exact as JavaScript numbers.
        (self.node_part | (n & 0xFFFF_FFFF)) & ((1 << 53) - 1)
    }

    fn with_room<T>(&self, room: &str, f: impl FnOnce(&mut Room) -> T) -> Result<T, ChatError> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if !rooms.contains_key(room) && rooms.len() >= MAX_ROOMS {
            return Err(ChatError::Full);
        }
        Ok(f(rooms.entry(room.to_string()).or_insert_with(Room::new)))
    }

    /// Joins `room`: its recent history, and the entries from now on.
    pub fn join(&self, room: &str) -> Result<Membership, ChatError> {
        self.with_room(room, |r| Membership {
            history: r.history.iter().cloned().collect(),
            entries: r.tx.subscribe(),
        })
    }

    /// Applies an entry here and sends it to the other nodes.
    fn post(&self, room: &str, entry: Entry) -> Result<Arc<Entry>, ChatError> {
        let entry = Arc::new(entry);
        self.with_room(room, |r| r.apply(entry.clone()))?;
        let bus = self.bus.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(bus) = bus {
            bus.publish(room, &entry);
        }
        Ok(entry)
    }

    /// An entry another node posted.
    pub fn deliver(&self, room: &str, entry: Entry) {
        let _ = self.with_room(room, |r| r.apply(Arc::new(entry)));
    }

    /// A viewer's message (text already checked by the connection's limits).
    pub fn say(
        &self,
        room: &str,
        sender: &str,
        name: &str,
        text: &str,
    ) -> Result<Arc<Entry>, ChatError> {
        let text = check_text(text)?;
        let banned = self.with_room(room, |r| r.banned.contains(sender))?;
        if banned {
            return Err(ChatError::Banned);
        }
        self.post(
            room,
            Entry::Message {
                id: self.next_id(),
                sender: sender.to_string(),
                name: name.to_string(),
                text,
                at: Utc::now(),
            },
        )
    }

    /// An event from the site.
    pub fn event(
        &self,
        room: &str,
        kind: &str,
        data: serde_json::Value,
    ) -> Result<Arc<Entry>, ChatError> {
        let valid_kind = !kind.is_empty()
            && kind.chars().count() <= MAX_KIND_CHARS
            && kind
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid_kind {
            return Err(ChatError::Invalid(format!(
                "kind must be 1-{MAX_KIND_CHARS} of a-z, 0-9, '_', '-', '.'"
            )));
        }
        if data.to_string().len() > MAX_EVENT_BYTES {
            return Err(ChatError::Invalid(format!(
                "data must be at most {MAX_EVENT_BYTES} bytes of JSON"
            )));
        }
        self.post(
            room,
            Entry::Event {
                id: self.next_id(),
                kind: kind.to_string(),
                data,
                at: Utc::now(),
            },
        )
    }

    /// Removes a message (from the history and from every viewer's screen).
    pub fn delete(&self, room: &str, id: u64) -> Result<(), ChatError> {
        let known = self.with_room(room, |r| r.history.iter().any(|e| e.id() == Some(id)))?;
        if !known {
            return Err(ChatError::NotFound);
        }
        self.post(room, Entry::Deleted { id }).map(|_| ())
    }

    /// Bans a sender from a room: their later messages are refused, past ones removed.
    pub fn ban(&self, room: &str, sender: &str) -> Result<(), ChatError> {
        if sender.is_empty() || sender.len() > 200 {
            return Err(ChatError::Invalid("sender must be 1-200 characters".into()));
        }
        self.post(
            room,
            Entry::Banned {
                sender: sender.to_string(),
            },
        )
        .map(|_| ())
    }

    /// Drops rooms nobody is in that have been quiet for `idle`.
    pub fn sweep(&self, idle: Duration) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms.retain(|_, r| r.tx.receiver_count() > 0 || r.last_activity.elapsed() < idle);
    }

    /// A connection slot, if fewer than `max` are open (upgraded WebSockets leave the HTTP
    /// server's connection count, so chat keeps its own).
    pub fn connect(&self, max: usize) -> Option<Connected> {
        let counter = &self.connected;
        counter
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| (n < max).then_some(n + 1),
            )
            .ok()
            .map(|_| Connected(counter.clone()))
    }

    /// Connections per room, for the metrics.
    pub fn connections(&self) -> usize {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms.values().map(|r| r.tx.receiver_count()).sum()
    }
}

#[cfg(test)]
mod tests;
