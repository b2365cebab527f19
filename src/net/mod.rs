//! Connection-level defences shared by the listeners (HTTP, RTMP, RTMPS): per-address connection
//! caps and the start-up check of the
//! connection caps against the process's file-descriptor limit. A leaf: it knows nothing of the
//! protocols.

pub mod limiter;
pub mod nofile;
pub mod request_rate;

pub use limiter::{ConnLimiter, ConnPermit, LimitRefusal};
