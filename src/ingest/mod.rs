//! Ingest: publishers' protocols in, codec-neutral media events out to the hub. Every protocol
//! admits a publisher through the one [`gate`] (key check, takeover, hub): [`rtmp`] and [`whip`]
//! (WebRTC). The RTMP pieces
//! shared with the relays (handshake, parser guard, TLS, FLV) are in [`crate::rtmp`].

pub mod auth_hook;
pub mod gate;
pub mod rtmp;
pub mod whip;
