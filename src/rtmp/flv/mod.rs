//! FLV tag bodies as RTMP carries them in audio/video messages, both ways. Sans-IO.
//!
//! [`demux`]: tag bodies in (ingest) → codec-neutral media events; [`mux`]: media events →
//! tag bodies out (relays).

pub mod demux;
pub mod mux;

pub use demux::{FlvDemuxer, FlvError};
pub use mux::{FlvMuxer, OutTag};
