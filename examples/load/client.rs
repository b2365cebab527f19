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

pub struct Conn {
    addr: String,
    host: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

pub struct Response {
    pub status: u16,
    pub body: Bytes,
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
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(connection);
            self.sender = Some(sender);
        }
        self.sender
            .as_mut()
            .ok_or_else(|| "no connection".to_string())
    }

    /// One request; the body is read whole. Errors are short words for the report.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
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
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|_| "body: cut".to_string())?
                .to_bytes();
            Ok(Response { status, body })
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

    pub async fn get(&mut self, path: &str) -> Result<Response, String> {
        self.request("GET", path, &[], Bytes::new()).await
    }
}
