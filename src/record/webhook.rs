//! Announces each finished recording: a POST of its manifest (JSON) to the configured URL,
//! tried a few times. Only the URL's host is ever logged: its path or query may carry a token.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::session::Manifest;

const ATTEMPTS: u32 = 5;
/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The wait after the first failure; it doubles after each further one.
const FIRST_RETRY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub(super) struct Webhook {
    client: reqwest::Client,
    url: String,
    /// What may be logged of `url`.
    host: String,
    first_retry: Duration,
}

impl Webhook {
    /// The webhook at `url`, or None when it is off (empty).
    pub fn new(url: &str) -> Option<Webhook> {
        if url.is_empty() {
            return None;
        }
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .unwrap_or_default();
        Some(Webhook::with_client(client, url, FIRST_RETRY))
    }

    fn with_client(client: reqwest::Client, url: &str, first_retry: Duration) -> Webhook {
        Webhook {
            client,
            url: url.to_string(),
            host: host_of(url),
            first_retry,
        }
    }

    /// POSTs `manifest` until it is accepted (2xx), [`ATTEMPTS`] times at most, or shutdown.
    /// Returns whether it was delivered.
    pub async fn deliver(&self, manifest: &Manifest, shutdown: &CancellationToken) -> bool {
        let host = &self.host;
        let mut delay = self.first_retry;
        for attempt in 1..=ATTEMPTS {
            match self.client.post(&self.url).json(manifest).send().await {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(%host, "webhook delivered");
                    return true;
                }
                Ok(r) => {
                    tracing::warn!(%host, status = r.status().as_u16(), attempt, "webhook refused")
                }
                // Without the URL: reqwest's errors quote it whole.
                Err(e) => {
                    tracing::warn!(%host, error = %e.without_url(), attempt, "webhook failed")
                }
            }
            if attempt == ATTEMPTS {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return false,
            }
            delay *= 2;
        }
        tracing::error!(%host, "webhook gave up after {ATTEMPTS} attempts");
        false
    }
}

/// The host of `url`, or empty when it has none.
fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn only_the_host_is_kept_for_logs() {
        assert_eq!(
            host_of("https://user:pw@hooks.example.com:8443/t/hook-secret?token=abc"),
            "hooks.example.com"
        );
        assert_eq!(host_of("http://127.0.0.1:9/x"), "127.0.0.1");
        assert_eq!(host_of("not a url"), "");
        assert!(Webhook::new("").is_none());
        let hook = Webhook::new("https://h.example/secret").expect("on");
        assert_eq!(hook.host, "h.example");
    }

    /// A server answering each request with the next status of `statuses` (then 200), recording
    /// the request bodies.
    async fn server(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!(
            "http://{}/hook?token=hook-secret",
            listener.local_addr().expect("addr")
        );
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = bodies.clone();
        tokio::spawn(async move {
            let mut statuses = statuses.into_iter();
            while let Ok((mut conn, _)) = listener.accept().await {
                let body = read_request(&mut conn).await;
                seen.lock().expect("lock").push(body);
                let status = statuses.next().unwrap_or(200);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            }
        });
        (url, bodies)
    }

    /// Reads one request (headers, then a content-length body) and returns the body.
    async fn read_request(conn: &mut tokio::net::TcpStream) -> String {
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = conn.read(&mut buf).await {
            data.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&data).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    return body.to_string();
                }
            }
        }
        String::new()
    }

    fn hook(url: &str, first_retry: Duration) -> Webhook {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        Webhook::with_client(client, url, first_retry)
    }

    #[tokio::test]
    async fn a_refused_delivery_is_retried() {
        let (url, bodies) = server(vec![503]).await;
        let manifest = Manifest::new("alice", "s-1", Utc::now());
        let hook = hook(&url, Duration::from_millis(1));
        assert!(hook.deliver(&manifest, &CancellationToken::new()).await);
        let bodies = bodies.lock().expect("lock").clone();
        assert_eq!(bodies.len(), 2);
        let posted: Manifest = serde_json::from_str(&bodies[1]).expect("manifest json");
        assert_eq!(posted, manifest);
    }

    #[tokio::test]
    async fn gives_up_after_five_attempts() {
        let (url, bodies) = server(vec![500; 10]).await;
        let manifest = Manifest::new("alice", "s-1", Utc::now());
        let hook = hook(&url, Duration::from_millis(1));
        assert!(!hook.deliver(&manifest, &CancellationToken::new()).await);
        assert_eq!(bodies.lock().expect("lock").len(), 5);
    }

    #[tokio::test]
    async fn shutdown_stops_the_retries() {
        let (url, bodies) = server(vec![500; 10]).await;
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let manifest = Manifest::new("alice", "s-1", Utc::now());
        // The first retry is a minute away: only shutdown ends the wait.
        let hook = hook(&url, Duration::from_secs(60));
        assert!(!hook.deliver(&manifest, &shutdown).await);
        assert_eq!(bodies.lock().expect("lock").len(), 1);
    }
}
