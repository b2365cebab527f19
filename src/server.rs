//! Wires the concerns together for `livegate serve`: ingest → hub → ladder or passthrough →
//! HLS renditions → live window, recorder; relays; HTTP.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::{KeyStore, Keys};
use crate::config::Config;
use crate::hls::{self, HlsRegistry, Renditions, SegmentSubscriber};
use crate::http::{self, AppState};
use crate::ingest::gate::PublishGate;
use crate::ingest::rtmp::{self, IngestContext};
use crate::media::EndReason;
use crate::metrics::Metrics;
use crate::record::{RecordError, Recorder};
use crate::relay::{RelayError, RelayManager, RelayStore};
use crate::stream::{Hub, Subscription};
use crate::transcode;
use crate::transcode::route::{self, Lookahead, Route};
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Relay(#[from] RelayError),
    #[error("RTMPS: {0}")]
    Tls(String),
    #[error("cannot create data_dir {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Runs the server until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ServerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new());
    let hub = Hub::with_limits(crate::stream::HubLimits {
        max_messages_per_sec: config.rtmp.max_messages_per_sec,
        ring_max_bytes: config.rtmp.ring_max_mib.saturating_mul(1 << 20),
    });
    let registry = HlsRegistry::new(config.hls.clone());
    let recorder = Recorder::start(&config, metrics.clone(), shutdown.clone()).await?;
    let keys: Keys = Arc::new(KeyStore::new(config.keys_path()));
    let relays = RelayManager::new(&config, RelayStore::for_config(&config), metrics.clone())?;
    {
        // Every new stream is routed to the ladder or passthrough once its codecs are known; its
        // renditions go to the live window and the recorder; relays subscribe on their own.
        let (registry, config, metrics) = (registry.clone(), config.clone(), metrics.clone());
        let recorder = recorder.clone();
        let relays = relays.clone();
        hub.on_new_stream(move |stream| {
            // Subscribe now, synchronously, so no event published after this call is missed.
            let subscription = stream.subscribe();
            let (hls, generation) = registry.attach(&stream.name);
            let mut subscribers: Vec<Box<dyn SegmentSubscriber>> = Vec::new();
            if let Some(tap) = recorder.tap(stream) {
                subscribers.push(Box::new(tap));
            }
            let renditions =
                Renditions::new(hls, generation, &config.hls, metrics.clone(), subscribers);
            relays.start(stream);
            route_stream(subscription, renditions, config.clone(), metrics.clone());
        });
    }

    let rtmp_listener = TcpListener::bind(&config.rtmp.listen)
        .await
        .map_err(|source| ServerError::Bind {
            what: "RTMP",
            addr: config.rtmp.listen.clone(),
            source,
        })?;
    let http_listener = TcpListener::bind(&config.http.listen)
        .await
        .map_err(|source| ServerError::Bind {
            what: "HTTP",
            addr: config.http.listen.clone(),
            source,
        })?;

    let ingest = Arc::new(IngestContext {
        config: config.rtmp.clone(),
        gate: PublishGate::new(keys.clone(), hub.clone(), metrics.clone()),
        metrics: metrics.clone(),
    });
    let rtmps_task = match config.rtmp.tls_listen.as_str() {
        "" => None,
        addr => {
            let acceptor = crate::rtmp::tls::acceptor(&config.rtmp.tls_cert, &config.rtmp.tls_key)
                .map_err(|e| ServerError::Tls(e.to_string()))?;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind {
                    what: "RTMPS",
                    addr: addr.to_string(),
                    source,
                })?;
            tracing::info!(rtmps = %addr, "RTMPS ingest listening");
            Some(tokio::spawn(rtmp::serve(
                listener,
                ingest.clone(),
                shutdown.clone(),
                Some(acceptor),
            )))
        }
    };
    let rtmp_task = tokio::spawn(rtmp::serve(rtmp_listener, ingest, shutdown.clone(), None));

    let sweep_registry = registry.clone();
    let sweep_shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = sweep_shutdown.cancelled() => return,
                _ = tick.tick() => { sweep_registry.sweep(); }
            }
        }
    });

    let state = Arc::new(AppState {
        config: config.clone(),
        hub: hub.clone(),
        hls: registry,
        keys,
        metrics,
        recorder,
        relays,
    });
    let app = http::router(state);

    tracing::info!(rtmp = %config.rtmp.listen, http = %config.http.listen,
        data_dir = %config.data_dir.display(), "livegate is serving");
    tracing::info!(
        "publish: {} with a stream key from `livegate keys add <user>`",
        config.rtmp_publish_url()
    );
    tracing::info!("watch:   {}/live/<user>/index.m3u8", config.http_base_url());
    if config.http.admin_token.is_empty() {
        tracing::info!("admin API off (set http.admin_token to manage keys over HTTP)");
    }

    serve_http(http_listener, app, &config.http, shutdown.clone()).await;
    shutdown.cancel();
    let _ = rtmp_task.await;
    if let Some(task) = rtmps_task {
        let _ = task.await;
    }
    Ok(())
}

/// Events held before the route is known, at most (~10 s of audio at 48 kHz): a source that never
/// completes its configuration is decided with what is known by then.
const LOOKAHEAD_EVENTS: usize = 512;
/// Serves a new stream through the ladder or as published, decided once its codecs are known:
/// at its first frame after a video configuration, or after 3 s of audio frames without one.
fn route_stream(
    mut subscription: Subscription,
    mut renditions: Renditions,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
) {
    let stream = subscription.stream().clone();
    let span = tracing::info_span!(parent: None, "route", stream = %stream.name, session = stream.session_id);
    tokio::spawn(
        async move {
            let mut seen = Vec::new();
            let mut lookahead = Lookahead::default();
            while let Some(event) = subscription.recv().await {
                let decide = lookahead.observe(&event);
                seen.push(event);
                if decide || seen.len() >= LOOKAHEAD_EVENTS {
                    break;
                }
            }
            subscription.unread(seen);
            match route::choose(
                &config.transcode,
                &stream.name,
                lookahead.video,
                lookahead.audio,
            ) {
                Route::Ladder => transcode::spawn_ladder(
                    subscription,
                    renditions,
                    &config.transcode,
                    &config.hls,
                    metrics,
                ),
                Route::Passthrough => {
                    stream.plan_renditions(Vec::new());
                    hls::spawn_passthrough(subscription, renditions);
                }
                Route::Refuse(reason) => {
                    stream.abort(&reason);
                    renditions.finish(EndReason::Stopped);
                }
            }
        }
        .instrument(span),
    );
}

/// The HTTP accept loop: hyper with a header-read timeout (which also ends idle keep-alive
/// connections) and a connection cap, so idle or slow clients cannot use up the process's file
/// descriptors (which RTMP ingest shares). axum's own `serve` offers neither.
async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    config: &crate::config::HttpConfig,
    shutdown: CancellationToken,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(config.header_read_timeout_secs))
        .keep_alive(true);
    let slots = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "HTTP connection limit reached; closing new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
                }
            }
            drop(permit);
        });
    }
}
