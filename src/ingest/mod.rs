//! Ingest: publishers' protocols in, codec-neutral media events out to the hub. The RTMP
//! pieces shared with the relays (handshake, parser guard, TLS, FLV) are in [`crate::rtmp`].

pub mod rtmp;
