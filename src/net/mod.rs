//! Connection-level pieces shared by the listeners (HTTP, HTTPS, RTMP, RTMPS): per-address
//! connection caps, the start-up check of the connection caps against the process's
//! file-descriptor limit, the reloading TLS certificate, and listening sockets with a deep
//! accept queue. A leaf: it knows nothing of the
//! protocols.

pub mod limiter;
pub mod listen;
pub mod nofile;
pub mod request_rate;
pub mod tls;

pub use limiter::{ConnLimiter, ConnPermit, LimitRefusal};
