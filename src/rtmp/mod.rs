//! RTMP pieces shared by the server side (ingest) and the client side (relays): the handshake,
//! the guard around rml_rtmp's parser, TLS for RTMPS, timed socket IO, and FLV tags both ways.
//!
//! A leaf for the protocol edges: it imports only `media`, `config`, `util` and `metrics`, never
//! the concerns that use it (`ingest`, `relay`), so both can build on it without a cycle.

pub mod chunk_limit;
pub mod flv;
pub mod guard;
pub mod handshake;
pub mod io;
pub mod tls;
