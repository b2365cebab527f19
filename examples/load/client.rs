//! One keep-alive HTTP/1.1 connection, as a browser's player holds one: reconnects when the
//! server closes it.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Longest a request may take before it counts as an error.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes read from the socket at a time. With 64 KiB the 10,000-viewer run collapsed again
/// (p99 after the ramp 0.6–1.4 s); 16 KiB held it at 3.6–39 ms in every run.
const READ_BUFFER: usize = 16 * 1024;

pub struct Conn {
    addr: String,
    host: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

pub struct Response {
    pub status: u16,
    /// Empty when the body was only counted.
    pub body: Bytes,
    /// The body's length in bytes.
    pub len: usize,
}

/// What to do with a response body.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Read it whole into one buffer (playlists, API answers).
    Keep,
    /// Count each chunk and drop it at once: media needs no second copy into one buffer, and
    /// hyper can reuse its read buffer once the chunk is gone.
    Count,
}

impl Conn {
    /// `base` is `http://host:port`.
    pub fn new(base: &str) -> Self {
        let addr = base
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        Conn {
            host: addr.clone(),
            addr,
            sender: None,
        }
    }

    async fn connect(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let tcp = TcpStream::connect(&self.addr)
                .await
                .map_err(|e| format!("connect: {}", e.kind()))?;
            let _ = tcp.set_nodelay(true);
            // hyper's adaptive read buffer grows towards ~400 KiB when a read fills it, as
            // loopback reads of segments do: during the ramp of `bench.sh load 100 10000`,
            // first-touch page faults of 10,000 such buffers took ~40 % of the 2 cores, and the
            // starved generator left its sockets full (zero windows, multi-second stalls).
            let (sender, connection) = hyper::client::conn::http1::Builder::new()
                .read_buf_exact_size(Some(READ_BUFFER))
                .handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(connection);
            self.sender = Some(sender);
        }
        self.sender
            .as_mut()
            .ok_or_else(|| "no connection".to_string())
    }

    /// One request, its response body kept or counted. Errors are short words for the report.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        keep: Body,
    ) -> Result<Response, String> {
        let host = self.host.clone();
        let attempt = async {
            let sender = self.connect().await?;
            sender.ready().await.map_err(|e| format!("ready: {e}"))?;
            let mut request = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header("host", host);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let request = request
                .body(Full::new(body))
                .map_err(|e| format!("request: {e}"))?;
            let response = sender.send_request(request).await.map_err(|e| {
                format!("send: {}", if e.is_closed() { "closed" } else { "failed" })
            })?;
            let status = response.status().as_u16();
            let mut incoming = response.into_body();
            if keep == Body::Keep {
                let body = incoming
                    .collect()
                    .await
                    .map_err(|_| "body: cut".to_string())?
                    .to_bytes();
                return Ok(Response {
                    status,
                    len: body.len(),
                    body,
                });
            }
            let mut len = 0;
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(|_| "body: cut".to_string())?;
                len += frame.data_ref().map_or(0, Bytes::len);
            }
            Ok(Response {
                status,
                body: Bytes::new(),
                len,
            })
        };
        match tokio::time::timeout(TIMEOUT, attempt).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                Err("timeout".into())
            }
        }
    }

    pub async fn get(&mut self, path: &str, keep: Body) -> Result<Response, String> {
        self.request("GET", path, &[], Bytes::new(), keep).await
    }
}
