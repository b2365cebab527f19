use super::*;
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A request as the stand-in site saw it: its headers (lower-cased names) and body.
#[derive(Debug, Clone)]
struct Seen {
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A site answering each request with the next status of `statuses` (then 200).
async fn site(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "http://{}/hook?token=hook-secret",
        listener.local_addr().expect("addr")
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut statuses = statuses.into_iter();
        while let Ok((mut conn, _)) = listener.accept().await {
            let request = read_request(&mut conn).await;
            log.lock().expect("lock").push(request);
            let status = statuses.next().unwrap_or(200);
            let reply =
                format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = conn.write_all(reply.as_bytes()).await;
        }
    });
    (url, seen)
}

async fn read_request(conn: &mut tokio::net::TcpStream) -> Seen {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = conn.read(&mut buf).await {
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let headers: Vec<(String, String)> = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let length = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .and_then(|(_, v)| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return Seen {
                    headers,
                    body: body.to_string(),
                };
            }
        }
    }
    Seen {
        headers: Vec::new(),
        body: String::new(),
    }
}

fn endpoint(url: &str, events: &[&str], bare: bool) -> Endpoint {
    Endpoint {
        url: url.to_string(),
        host: host_of(url),
        secret: Some("0123456789abcdef-secret".into()),
        events: events.iter().map(|e| e.to_string()).collect(),
        bare,
    }
}

fn webhooks(endpoints: Vec<Endpoint>, attempts: u32, first_retry: Duration) -> Webhooks {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    Webhooks::with(
        endpoints,
        "node-a",
        client,
        attempts,
        first_retry,
        Arc::new(Metrics::new()),
        CancellationToken::new(),
    )
}

async fn drained(hooks: &Webhooks) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    assert_eq!(hooks.drain(deadline).await, 0, "events left undelivered");
}

#[test]
fn only_the_host_is_kept_for_logs() {
    assert_eq!(
        host_of("https://user:pw@hooks.example.com:8443/t/hook-secret?token=abc"),
        "hooks.example.com"
    );
    assert_eq!(host_of("http://127.0.0.1:9/x"), "127.0.0.1");
    assert_eq!(host_of("not a url"), "");
}

#[tokio::test]
async fn off_without_a_url() {
    let hooks = HooksConfig::default();
    let none = Webhooks::start(
        &hooks,
        "",
        "n",
        Arc::new(Metrics::new()),
        CancellationToken::new(),
    );
    assert!(none.is_none());
}

#[tokio::test]
async fn events_are_signed_in_order_and_a_refusal_is_retried() {
    let (url, seen) = site(vec![503]).await;
    let hooks = webhooks(
        vec![endpoint(&url, &[], false)],
        3,
        Duration::from_millis(1),
    );
    hooks.send(
        "publish",
        serde_json::json!({"user": "alice", "session_id": 1}),
    );
    hooks.send(
        "unpublish",
        serde_json::json!({"user": "alice", "reason": "publisher"}),
    );
    drained(&hooks).await;
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    // The refused first attempt and its retry carry the same event id.
    assert_eq!(seen[0].body, seen[1].body);
    let kinds: Vec<String> = seen[1..]
        .iter()
        .map(|s| {
            let event: serde_json::Value = serde_json::from_str(&s.body).expect("json");
            assert_eq!(event["node"], "node-a");
            assert_eq!(event["data"]["user"], "alice");
            assert_eq!(s.header("livegate-delivery"), event["id"].as_str());
            assert_eq!(s.header("livegate-event"), event["type"].as_str());
            let signature = s.header("livegate-signature").expect("signed");
            sign::verify(
                b"0123456789abcdef-secret",
                signature,
                s.body.as_bytes(),
                Utc::now().timestamp(),
                300,
            )
            .expect("valid signature");
            event["type"].as_str().expect("type").to_string()
        })
        .collect();
    assert_eq!(kinds, ["publish", "unpublish"]);
}

#[tokio::test]
async fn gives_up_after_the_attempts_and_goes_on() {
    let (url, seen) = site(vec![500; 4]).await;
    let hooks = webhooks(
        vec![endpoint(&url, &[], false)],
        4,
        Duration::from_millis(1),
    );
    hooks.send("publish", serde_json::json!({"user": "a"}));
    hooks.send("publish", serde_json::json!({"user": "b"}));
    drained(&hooks).await;
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 5, "4 failed attempts, then the next event");
    assert!(seen[4].body.contains("\"b\""));
    let text = hooks.metrics.render();
    assert!(
        text.contains(r#"livegate_webhook_deliveries_total{event="publish",result="failed"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"livegate_webhook_deliveries_total{event="publish",result="delivered"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn endpoints_take_only_their_events_and_the_old_one_gets_the_bare_manifest() {
    let (all_url, all) = site(vec![]).await;
    let (old_url, old) = site(vec![]).await;
    let hooks = webhooks(
        vec![
            endpoint(&all_url, &["unpublish", "recording.finished"], false),
            endpoint(&old_url, &["recording.finished"], true),
        ],
        1,
        Duration::from_millis(1),
    );
    hooks.send("publish", serde_json::json!({"user": "a"}));
    hooks.send("recording.finished", serde_json::json!({"id": "a.s1"}));
    drained(&hooks).await;
    let all = all.lock().expect("lock").clone();
    assert_eq!(all.len(), 1);
    assert!(all[0].body.contains(r#""type":"recording.finished""#));
    let old = old.lock().expect("lock").clone();
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].body, r#"{"id":"a.s1"}"#);
    assert!(old[0].header("livegate-signature").is_some());
}

#[tokio::test]
async fn shutdown_stops_the_retries() {
    let (url, seen) = site(vec![500; 10]).await;
    let stop = CancellationToken::new();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    // The first retry is a minute away: only the stop ends the wait.
    let hooks = Webhooks::with(
        vec![endpoint(&url, &[], false)],
        "n",
        client,
        5,
        Duration::from_secs(60),
        Arc::new(Metrics::new()),
        stop.clone(),
    );
    hooks.send("publish", serde_json::json!({}));
    for _ in 0..500 {
        if !seen.lock().expect("lock").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    drained(&hooks).await;
    assert_eq!(seen.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_instead_of_blocking() {
    // A site that never answers: the first event sits in delivery, the queue fills behind it.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    let hooks = webhooks(
        vec![endpoint(&url, &[], false)],
        1,
        Duration::from_millis(1),
    );
    for _ in 0..QUEUE + 10 {
        hooks.send("publish", serde_json::json!({}));
    }
    let text = hooks.metrics.render();
    let dropped = text
        .lines()
        .find(|l| {
            l.starts_with(r#"livegate_webhook_deliveries_total{event="publish",result="dropped"}"#)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<usize>().ok())
        .expect("dropped counted");
    assert!((9..=10).contains(&dropped), "{dropped}");
    drop(listener);
}
