//! Wires the concerns together for `livegate serve`: ingest → hub → ladder or passthrough →
//! HLS renditions → live window, recorder; relays; HTTP.

use std::sync::Arc;
use std::time::Duration;

use crate::net::listen;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::datadir::DataDirLock;
use crate::hls::{self, HlsRegistry, Renditions, SegmentSubscriber};
use crate::http::{self, AppState};
use crate::ingest::gate::PublishGate;
use crate::ingest::rtmp::{self, IngestContext};
use crate::media::EndReason;
use crate::metrics::Metrics;
use crate::metrics::ReasonLabel;
use crate::record::{RecordError, Recorder};
use crate::relay::{RelayError, RelayManager};
use crate::stream::{Hub, Subscription};
use crate::transcode;
use crate::transcode::limits::SourceLimits;
use crate::transcode::route::{self, Lookahead, Route};
use crate::webhook::Webhooks;
use tracing::Instrument;

mod backends;
mod events;
mod housekeeping;
mod tls;

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
    #[error("TLS for {listener}: {message}")]
    Tls {
        listener: &'static str,
        message: String,
    },
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("playback tokens: {0}")]
    Access(String),
    #[error(transparent)]
    Lock(#[from] crate::datadir::LockError),
    #[error(transparent)]
    Nofile(#[from] crate::net::nofile::NofileError),
    #[error("cannot create data_dir {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A listener for `what` on `addr`, its failure naming both.
async fn bind(what: &'static str, addr: &str) -> Result<TcpListener, ServerError> {
    listen::bind(addr)
        .await
        .map_err(|source| ServerError::Bind {
            what,
            addr: addr.to_string(),
            source,
        })
}

/// Connections `http.metrics_listen` takes at once (scrapers; one address may take them all).
const METRICS_MAX_CONNECTIONS: usize = 16;

/// Raises the open-file limit and checks that the connection caps fit in it.
fn check_nofile(config: &Config) -> Result<(), ServerError> {
    let (soft, hard) = crate::net::nofile::raise_soft_limit()?;
    let mut caps = vec![
        ("rtmp.max_connections", config.rtmp.max_connections as u64),
        ("http.max_connections", config.http.max_connections as u64),
    ];
    if !config.http.metrics_listen.is_empty() {
        caps.push(("metrics listener", METRICS_MAX_CONNECTIONS as u64));
    }
    let needed = crate::net::nofile::check(soft, hard, &caps)?;
    tracing::info!(
        nofile = soft,
        needed,
        "open-file limit checked against the connection caps"
    );
    Ok(())
}

/// Runs the server until `shutdown` is cancelled, then shuts down gracefully: no new connection
/// or publish is accepted, every live stream ends as if its publisher had stopped, and the
/// recordings are stored, for at most `shutdown_grace_secs`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ServerError> {
    check_nofile(&config)?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    // Before anything reads the spool: another instance's live recordings are not ours.
    let lock = DataDirLock::acquire(&config.data_dir)?;
    tracing::debug!(lock = %lock.path().display(), "data_dir locked");
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new());
    let hub = Hub::with_limits(crate::stream::HubLimits {
        max_messages_per_sec: config.rtmp.max_messages_per_sec,
        ring_max_bytes: config.rtmp.ring_max_mib.saturating_mul(1 << 20),
    });
    let registry = HlsRegistry::new(config.hls.clone());
    // `shutdown` starts the drain; `stop` ends whatever is left once the drain is over.
    let stop = CancellationToken::new();
    let node_id = config.cluster_node_id();
    let webhooks = Webhooks::start(
        &config.hooks,
        &config.record.webhook_url,
        &node_id,
        metrics.clone(),
        stop.clone(),
    );
    let on_recording = webhooks.clone().map(|webhooks| {
        Box::new(move |manifest: &crate::record::session::Manifest| {
            events::recording_finished(&webhooks, manifest)
        }) as crate::record::FinishedListener
    });
    let recorder = Recorder::start(&config, metrics.clone(), stop.clone(), on_recording).await?;
    let chat = crate::chat::Chat::new();
    let backends::Backends {
        keys,
        targets,
        channels,
        leases,
    } = backends::start(
        &config,
        &node_id,
        &hub,
        webhooks.as_ref(),
        &metrics,
        &chat,
        &stop,
    )?;
    let relays = RelayManager::new(&config, targets, metrics.clone())?;
    {
        // Every new stream is routed to the ladder or passthrough once its codecs are known; its
        // renditions go to the live window and the recorder; relays subscribe on their own.
        let (registry, config, metrics) = (registry.clone(), config.clone(), metrics.clone());
        let recorder = recorder.clone();
        let relays = relays.clone();
        let ladders = transcode::LadderSlots::new(config.transcode.max_ladders);
        let lease_holder = leases.clone();
        let (webhooks, node_id) = (webhooks.clone(), node_id.clone());
        hub.on_new_stream(move |stream| {
            if let Some(webhooks) = &webhooks {
                events::watch_session(webhooks, &node_id, stream);
            }
            // Subscribe now, synchronously, so no event published after this call is missed.
            let subscription = stream.subscribe();
            let (hls, generation) = registry.attach(&stream.name);
            if let Some(leases) = &lease_holder {
                tokio::spawn(leases.clone().hold(stream.clone(), registry.clone()));
            }
            let mut subscribers: Vec<Box<dyn SegmentSubscriber>> = Vec::new();
            if let Some(tap) = recorder.tap(stream) {
                subscribers.push(Box::new(tap));
            }
            let renditions =
                Renditions::new(hls, generation, &config.hls, metrics.clone(), subscribers);
            relays.start(stream);
            route_stream(
                subscription,
                renditions,
                config.clone(),
                metrics.clone(),
                ladders.clone(),
            );
        });
    }

    let rtmp_listener = bind("RTMP", &config.rtmp.listen).await?;
    let http_listener = bind("HTTP", &config.http.listen).await?;
    let https_listener = match config.http.tls_listen.as_str() {
        "" => None,
        addr => {
            let acceptor = tls::acceptor(
                "http",
                (&config.http.tls_cert, &config.http.tls_key),
                &[b"h2", b"http/1.1"],
                metrics.clone(),
                stop.clone(),
            )?;
            let tcp = bind("HTTPS", addr).await?;
            tracing::info!(https = %addr, "HTTPS (HTTP/2, HTTP/1.1) listening");
            Some(http::Listener {
                tcp,
                tls: Some(acceptor),
            })
        }
    };

    let ingest = Arc::new(IngestContext {
        config: config.rtmp.clone(),
        gate: PublishGate::new(keys.clone(), hub.clone(), metrics.clone())
            .with_hook(crate::ingest::auth_hook::AuthHook::new(&config.hooks)),
        metrics: metrics.clone(),
        slots: rtmp::Slots::new(&config.rtmp),
    });
    let rtmps_task = match config.rtmp.tls_listen.as_str() {
        "" => None,
        addr => {
            let acceptor = tls::acceptor(
                "rtmp",
                (&config.rtmp.tls_cert, &config.rtmp.tls_key),
                &[],
                metrics.clone(),
                stop.clone(),
            )?;
            let listener = bind("RTMPS", addr).await?;
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

    let audience = Arc::new(crate::audience::Audience::new(Duration::from_secs(
        config.access.viewer_window_secs,
    )));
    let node_load = Arc::new(http::NodeLoad::default());
    housekeeping::spawn_sweeps(housekeeping::Sweeps {
        registry: registry.clone(),
        audience: audience.clone(),
        metrics: metrics.clone(),
        chat: chat.clone(),
        hub: hub.clone(),
        leases: leases.clone(),
        node_load: node_load.clone(),
        stop: stop.clone(),
    });

    let whip = if config.whip.enabled {
        let gate = PublishGate::new(keys.clone(), hub.clone(), metrics.clone())
            .with_hook(crate::ingest::auth_hook::AuthHook::new(&config.hooks));
        let whip =
            crate::ingest::whip::Whip::start(&config.whip, gate, metrics.clone(), stop.clone())
                .await
                .map_err(|source| ServerError::Bind {
                    what: "WHIP UDP",
                    addr: config.whip.udp_listen.clone(),
                    source,
                })?;
        Some(whip)
    } else {
        None
    };
    let mut channels = crate::channel::Channels::new(channels);
    if config.cluster.enabled() {
        channels =
            channels.with_snapshot_file(config.data_dir.join("cluster-channels-snapshot.json"));
    }
    housekeeping::spawn_channel_refresh(channels.clone(), stop.clone());
    let state = Arc::new(AppState {
        config: config.clone(),
        hub: hub.clone(),
        hls: registry.clone(),
        keys,
        metrics: metrics.clone(),
        recorder: recorder.clone(),
        relays: relays.clone(),
        whip,
        leases: leases.clone(),
        whip_rate: crate::net::request_rate::RequestRate::new(config.whip.requests_per_minute),
        channels,
        token_key: crate::access::load_key(&config)
            .map_err(|e| ServerError::Access(e.to_string()))?,
        audience: audience.clone(),
        chat: chat.clone(),
        admin_sessions: crate::http::admin::Sessions::default(),
        node_load,
        trusted_proxies: config
            .http
            .trusted_proxies
            .iter()
            .filter_map(|a| crate::config::parse_net(a))
            .collect(),
    });
    let metrics_task = match config.http.metrics_listen.as_str() {
        "" => None,
        addr => {
            let listener = bind("metrics", addr).await?;
            tracing::info!(metrics = %addr, "/metrics listening");
            let app = http::metrics_router(state.clone());
            let (http_config, metrics, shutdown, stop) = (
                config.http.clone(),
                metrics.clone(),
                shutdown.clone(),
                stop.clone(),
            );
            Some(tokio::spawn(async move {
                http::serve(
                    listener,
                    app,
                    &http_config,
                    METRICS_MAX_CONNECTIONS,
                    metrics,
                    shutdown,
                    stop,
                )
                .await
            }))
        }
    };
    let app = http::router(state);

    tracing::info!(rtmp = %config.rtmp.listen, http = %config.http.listen,
        data_dir = %config.data_dir.display(), "livegate is serving");
    tracing::info!(
        "publish: {} with a stream key from `livegate keys add <user>`",
        config.rtmp_publish_url()
    );
    if config.whip.enabled {
        tracing::info!(
            "publish from a browser: {}/publish (WHIP endpoint {}/whip/<user>, Bearer = stream key)",
            config.http_base_url(),
            config.http_base_url()
        );
    }
    tracing::info!("watch:   {}/live/<user>/index.m3u8", config.http_base_url());
    if config.http.admin_token.is_empty() {
        tracing::info!("admin API off (set http.admin_token to manage keys over HTTP)");
    }

    let mut listeners = vec![http::Listener {
        tcp: http_listener,
        tls: None,
    }];
    if let Some(listener) = https_listener {
        listeners.push(listener);
    }
    let http_task = {
        let (http_config, metrics, shutdown, stop) = (
            config.http.clone(),
            metrics.clone(),
            shutdown.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let max = http_config.max_connections;
            http::serve_all(listeners, app, &http_config, max, metrics, shutdown, stop).await
        })
    };
    shutdown.cancelled().await;
    let _ = rtmp_task.await;
    if let Some(task) = rtmps_task {
        let _ = task.await;
    }
    let drain = Drain {
        hub,
        registry,
        recorder,
        relays,
        webhooks,
    };
    drain
        .run(Duration::from_secs(config.shutdown_grace_secs))
        .await;
    stop.cancel();
    let _ = http_task.await;
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    drop(lock);
    Ok(())
}

/// What a graceful shutdown waits for.
struct Drain {
    hub: Arc<Hub>,
    registry: Arc<HlsRegistry>,
    recorder: Arc<Recorder>,
    relays: Arc<RelayManager>,
    webhooks: Option<Webhooks>,
}

impl Drain {
    /// Ends every live stream and waits, for at most `grace`, until their HLS has ended, their
    /// relays have closed and their recordings are stored.
    async fn run(&self, grace: Duration) {
        let started = std::time::Instant::now();
        let deadline = tokio::time::Instant::now() + grace;
        let live = self.hub.close();
        tracing::info!(
            live_streams = live,
            grace_secs = grace.as_secs(),
            "shutting down: ending live streams, storing recordings"
        );
        // Streams end first: their last segments are what the recorder still has to store.
        while self.pending(0) != Pending::default() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let recordings = self.recorder.drain(deadline).await;
        if let Some(webhooks) = &self.webhooks {
            let undelivered = webhooks.drain(deadline).await;
            if undelivered > 0 {
                tracing::warn!(
                    undelivered,
                    "shutdown grace is over with webhook events undelivered"
                );
            }
        }
        let pending = self.pending(recordings.left_in_spool);
        if pending == Pending::default() {
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                recordings_stored = recordings.finalized,
                "shutdown drained: every stream ended and every recording stored"
            );
        } else {
            tracing::warn!(
                streams = pending.streams,
                playlists = pending.playlists,
                relays = pending.relays,
                recordings = pending.recordings,
                "shutdown grace is over with work left; unstored recording segments stay in \
                 the spool and are stored at the next start"
            );
        }
    }

    fn pending(&self, recordings: usize) -> Pending {
        Pending {
            streams: self.hub.len(),
            playlists: self.registry.live_count(),
            relays: self.relays.running_count(),
            recordings,
        }
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Pending {
    streams: usize,
    playlists: usize,
    relays: usize,
    recordings: usize,
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
    ladders: transcode::LadderSlots,
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
            let limits = SourceLimits::from_config(&config.transcode);
            let mut route = route::choose(
                &config.transcode,
                &stream.name,
                lookahead.video,
                lookahead.audio,
            );
            // The size limit applies whatever the route (passthrough checks later records).
            if let Some(Err(e)) = lookahead
                .video_config
                .as_ref()
                .map(|v| limits.check_size(v.width, v.height))
            {
                route = Route::Refuse(e.to_string());
            }
            let mut slot = None;
            if route == Route::Ladder {
                // What the ladder will likely cost: less when its source can be the top rung
                // (corrected once the ladder has decided; see LadderSlot::set_weight).
                let weight = lookahead
                    .video_config
                    .as_ref()
                    .filter(|v| {
                        let planned = transcode::plan::plan_ladder(
                            &config.transcode.rungs,
                            v.width,
                            v.height,
                        );
                        transcode::source_rung::place(config.transcode.source_rung, v, &planned)
                            .is_ok()
                    })
                    .map_or(transcode::LadderWeight::Full, |_| {
                        transcode::LadderWeight::SourceRung
                    });
                slot = ladders.try_acquire(weight);
                if slot.is_none() {
                    route = route::without_ladder(ladders.max(), lookahead.video, lookahead.audio);
                    let outcome = match &route {
                        Route::Passthrough => "served_as_published",
                        _ => "refused",
                    };
                    metrics
                        .transcode_not_admitted
                        .get_or_create(&ReasonLabel {
                            reason: outcome.into(),
                        })
                        .inc();
                    if route == Route::Passthrough {
                        tracing::warn!(
                            max_ladders = ladders.max(),
                            "every ladder slot is in use (transcode.max_ladders); serving this \
                             stream as published"
                        );
                        stream.set_status(
                            "transcode",
                            serde_json::json!({
                                "state": "not_admitted",
                                "reason": "transcode.max_ladders reached: served as published",
                            }),
                        );
                    }
                }
            }
            match route {
                Route::Ladder => {
                    if let Some(slot) = slot {
                        transcode::spawn_ladder(
                            subscription,
                            renditions,
                            slot,
                            &config.transcode,
                            &config.hls,
                            metrics,
                        )
                    }
                }
                Route::Passthrough => {
                    stream.plan_renditions(Vec::new());
                    transcode::thumbnail::spawn(
                        stream.subscribe(),
                        config.transcode.thumbnail_interval_secs,
                    );
                    hls::spawn_passthrough(subscription, renditions, limits);
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
