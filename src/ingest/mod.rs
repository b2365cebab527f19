//! Ingest: publishers' protocols in, codec-neutral media events out to the hub.

pub mod flv;
pub mod rtmp;
