//! Chat fan-out: N WebSocket connections in one room while the site posts events over the admin
//! API at a fixed rate; every connection timestamps what it receives.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Body, Conn};
use crate::process::Sampler;
use crate::stats::percentile;

#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    /// The server, `http://host:port`.
    #[arg(long)]
    base: String,
    #[arg(long, default_value = "bench")]
    room: String,
    #[arg(long, default_value_t = 500)]
    connections: usize,
    /// Events the site posts per second.
    #[arg(long, default_value_t = 20)]
    rate: u32,
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// The server's admin token.
    #[arg(long, env = "LIVEGATE_HTTP_ADMIN_TOKEN")]
    admin: String,
    /// The server's process id, for its CPU.
    #[arg(long)]
    pid: Option<u32>,
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

#[derive(Default)]
struct Tally {
    received: AtomicU64,
    ready: AtomicUsize,
    closed: Mutex<std::collections::BTreeMap<String, u64>>,
    latencies: Mutex<Vec<u32>>,
}

async fn viewer(url: String, tally: Arc<Tally>) {
    let mut ws = match tokio_tungstenite::connect_async(&url).await {
        Ok((ws, _)) => ws,
        Err(e) => {
            let mut closed = tally.closed.lock().unwrap_or_else(|e| e.into_inner());
            *closed.entry(format!("connect: {e}")).or_default() += 1;
            return;
        }
    };
    let mut latencies = Vec::new();
    let mut why = "server closed".to_string();
    while let Some(message) = ws.next().await {
        match message {
            Ok(Message::Text(text)) => {
                let Ok(entry) = serde_json::from_str::<serde_json::Value>(text.as_str()) else {
                    continue;
                };
                match entry["type"].as_str() {
                    Some("welcome") => {
                        tally.ready.fetch_add(1, Ordering::SeqCst);
                    }
                    Some("event") if entry["kind"] == "stop" => {
                        why = "stopped".into();
                        break;
                    }
                    Some("event") => {
                        tally.received.fetch_add(1, Ordering::Relaxed);
                        if let Some(sent) = entry["data"]["t"].as_f64() {
                            latencies.push(((now_ms() - sent).max(0.0) * 1000.0) as u32);
                        }
                    }
                    _ => {}
                }
            }
            Ok(Message::Close(frame)) => {
                why = frame.map_or("close".into(), |f| format!("close {}", u16::from(f.code)));
                break;
            }
            Ok(_) => {}
            Err(e) => {
                why = format!("error: {e}");
                break;
            }
        }
    }
    tally
        .latencies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .append(&mut latencies);
    *tally
        .closed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(why)
        .or_default() += 1;
}

async fn post(conn: &mut Conn, args: &ChatArgs, kind: &str) -> bool {
    let body = serde_json::json!({"kind": kind, "data": {"t": now_ms()}}).to_string();
    let auth = format!("Bearer {}", args.admin);
    let path = format!("/api/v1/streams/{}/chat/events", args.room);
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    matches!(conn.request("POST", &path, &headers, Bytes::from(body), Body::Keep).await, Ok(r) if r.status == 201)
}

pub async fn run(args: ChatArgs) -> serde_json::Value {
    let ws_base = args.base.replacen("http://", "ws://", 1);
    let url = format!("{ws_base}/live/{}/chat?name=load", args.room);
    let tally = Arc::new(Tally::default());
    let viewers: Vec<_> = (0..args.connections)
        .map(|_| tokio::spawn(viewer(url.clone(), tally.clone())))
        .collect();
    let opening = Instant::now();
    while tally.ready.load(Ordering::SeqCst) < args.connections
        && opening.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let opened = tally.ready.load(Ordering::SeqCst);
    let sampler = args.pid.map(Sampler::new);
    let cpu_before = sampler.as_ref().and_then(Sampler::cpu_secs);
    let start = Instant::now();
    let mut conn = Conn::new(&args.base);
    let mut posted = 0u64;
    let mut refused = 0u64;
    let mut tick =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while start.elapsed() < Duration::from_secs(args.secs) {
        tick.tick().await;
        if post(&mut conn, &args, "tip").await {
            posted += 1;
        } else {
            refused += 1;
        }
    }
    let post_secs = start.elapsed().as_secs_f64();
    // Let the last events arrive, then end every connection with a marker event.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = match (sampler.as_ref().and_then(Sampler::cpu_secs), cpu_before) {
        (Some(after), Some(before)) => Some((after - before) / elapsed),
        _ => None,
    };
    post(&mut conn, &args, "stop").await;
    for v in viewers {
        let _ = tokio::time::timeout(Duration::from_secs(10), v).await;
    }
    let received = tally.received.load(Ordering::SeqCst);
    let mut latencies =
        std::mem::take(&mut *tally.latencies.lock().unwrap_or_else(|e| e.into_inner()));
    latencies.sort_unstable();
    let expected = posted * opened as u64;
    serde_json::json!({
        "connections": opened,
        "events_posted": posted,
        "posts_refused": refused,
        "post_rate": posted as f64 / post_secs,
        "entries_delivered": received,
        "entries_expected": expected,
        "delivered_per_sec": received as f64 / post_secs,
        "latency_p50_ms": percentile(&latencies, 0.5),
        "latency_p99_ms": percentile(&latencies, 0.99),
        "latency_max_ms": percentile(&latencies, 1.0),
        "server_cpu": cpu,
        "server_cpu_us_per_entry": cpu.map(|c| c * elapsed * 1e6 / received.max(1) as f64),
        "ends": *tally.closed.lock().unwrap_or_else(|e| e.into_inner()),
    })
}
