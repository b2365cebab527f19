//! livegate: a live-video server.
//!
//! Data flows one way: [`ingest`] → [`stream`] (the hub) → [`transcode`] → [`hls`] →
//! [`record`] and [`http`].
//! [`auth`] decides who may publish, [`access`] and [`channel`] who may watch, [`audience`]
//! counts who does; [`config`] holds every setting with a working default.
//! [`rtmp`] holds the RTMP pieces [`ingest`] (server side) and [`relay`] (client side) share.
//! [`webhook`] tells the operator's site what happened (publish, unpublish, takeover, recordings).

pub mod access;
pub mod audience;
pub mod auth;
pub mod channel;
pub mod chat;
pub mod cluster;
pub mod config;
pub mod datadir;
pub mod hls;
pub mod http;
pub mod ingest;
pub mod media;
pub mod metrics;
pub mod net;
pub mod record;
pub mod relay;
pub mod rtmp;
pub mod server;
pub mod stream;
pub mod transcode;
pub mod util;
pub mod webhook;
