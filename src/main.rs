//! The `livegate` command line: `serve`, `health`, `keys …`, `relays …`, `channels …`, `token`,
//! `check-config`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use livegate::access::Claims;
use livegate::auth::{AuthError, KeyStore, Keys};
use livegate::channel::{ChannelBackend, ChannelStore, ChannelUpdate};
use livegate::cluster::channels::RedisChannels;
use livegate::cluster::keys::RedisKeys;
use livegate::cluster::relays::RedisRelays;
use livegate::config::Config;
use livegate::relay::{Platform, RelayStore, RelayTarget, Targets};

#[derive(Parser)]
#[command(
    name = "livegate",
    version,
    about = "Live-video server: RTMP in, HLS out"
)]
struct Cli {
    /// Configuration file (TOML). Without one, the embedded defaults serve a single node.
    #[arg(long, global = true, env = "LIVEGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Manage per-user stream keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Manage per-user relay targets (YouTube, Twitch, Facebook, any RTMP/RTMPS URL).
    Relays {
        #[command(subcommand)]
        action: RelaysAction,
    },
    /// Per-user channel settings: title, description, access mode (public or token).
    Channels {
        #[command(subcommand)]
        action: ChannelsAction,
    },
    /// Mint a playback token for a `token`-mode stream (signed with access.token_secret).
    Token {
        user: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// The viewer's id (counts them once; names them in chat).
        #[arg(long)]
        viewer_id: Option<String>,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Bind the token to this client address.
        #[arg(long)]
        ip: Option<String>,
    },
    /// Validate the configuration and print it with every default filled in.
    CheckConfig,
    /// Ask the local server's `/healthz` (exit 0 if it answers 200): the container HEALTHCHECK.
    Health,
}

#[derive(Subcommand)]
enum RelaysAction {
    /// Add a target: `youtube|twitch|facebook <stream-key>` or `custom <rtmp(s)://host/app/key>`.
    Add {
        user: String,
        /// youtube, twitch, facebook or custom.
        platform: String,
        /// The platform's stream key, or the full URL for `custom`.
        key_or_url: String,
        /// YouTube over RTMPS (Facebook is always RTMPS).
        #[arg(long)]
        rtmps: bool,
        /// Push this ladder rung instead of the stream as published (e.g. 720p).
        #[arg(long)]
        rung: Option<String>,
    },
    /// List a user's targets (stream keys redacted).
    List { user: String },
    /// Remove a target by its id (from `relays list`).
    Remove { user: String, id: String },
}

#[derive(Subcommand)]
enum ChannelsAction {
    /// Change a user's settings (only the options given change).
    Set {
        user: String,
        #[arg(long)]
        title: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// public (anyone with the URL) or token (every HLS request needs a playback token).
        #[arg(long)]
        access: Option<String>,
    },
    /// Show one user's settings, or every user's.
    Show { user: Option<String> },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create a stream key for a new user; prints it once (alone on the last line).
    Add { user: String },
    /// List users with a key (hints only; keys are stored hashed).
    List,
    /// Remove a user's key; publishing with it is refused from now on.
    Revoke { user: String },
    /// Replace a user's key with a new one; prints it once (alone on the last line).
    Rotate { user: String },
    /// Copy the embedded key file (data_dir/keys.json) into the cluster's Redis: every user
    /// without a key there keeps their key (only hashes move). The file is left unchanged.
    Import,
}

/// The channel store the server uses with this configuration: Redis when the cluster is on.
fn channel_backend(config: &Config) -> anyhow::Result<Arc<dyn ChannelBackend>> {
    if config.cluster.enabled() {
        let (_, redis) = livegate::cluster::connect(&config.cluster)?;
        Ok(Arc::new(RedisChannels::new(
            redis,
            &config.cluster.key_prefix,
        )))
    } else {
        Ok(Arc::new(ChannelStore::new(config.channels_path())))
    }
}

async fn channels_command(config: &Config, action: ChannelsAction) -> anyhow::Result<()> {
    let channels = channel_backend(config)?;
    let show = |c: &livegate::channel::ChannelInfo| {
        println!(
            "{}\taccess={}\ttitle={:?}\tdescription={:?}",
            c.user,
            serde_json::to_value(c.access)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            c.title,
            c.description
        )
    };
    match action {
        ChannelsAction::Set {
            user,
            title,
            description,
            access,
        } => {
            let change = ChannelUpdate {
                title,
                description,
                access: access.as_deref().map(str::parse).transpose()?,
            };
            show(&channels.update(&user, &change).await?);
        }
        ChannelsAction::Show { user: Some(user) } => show(&channels.get(&user).await?),
        ChannelsAction::Show { user: None } => {
            for c in channels.list().await? {
                show(&c);
            }
        }
    }
    Ok(())
}

/// Prints a playback token and the URL that plays with it.
fn token_command(config: &Config, claims: Claims) -> anyhow::Result<()> {
    let key = livegate::access::load_key(config)?;
    let token = key.mint(&claims)?;
    println!(
        "# plays until {} (UTC)",
        chrono::DateTime::from_timestamp(claims.exp, 0).unwrap_or_default()
    );
    println!(
        "{}/live/{}/index.m3u8?token={token}",
        config.http_base_url(),
        claims.sub
    );
    println!("{token}");
    Ok(())
}

/// The key backend the server uses with this configuration: Redis when the cluster is on.
fn key_backend(config: &Config) -> anyhow::Result<Keys> {
    if config.cluster.enabled() {
        let (_, redis) = livegate::cluster::connect(&config.cluster)?;
        Ok(Arc::new(RedisKeys::new(
            redis,
            &config.cluster.key_prefix,
            std::time::Duration::from_secs(config.cluster.key_snapshot_max_age_secs),
        )))
    } else {
        Ok(Arc::new(KeyStore::new(config.keys_path())))
    }
}

async fn keys_command(config: &Config, action: KeysAction) -> anyhow::Result<()> {
    let keys = key_backend(config)?;
    match action {
        KeysAction::Add { user } => {
            let key = keys.add(&user).await?;
            print_new_key(config, &user, &key, "Created");
        }
        KeysAction::Rotate { user } => {
            let key = keys.rotate(&user).await?;
            print_new_key(config, &user, &key, "Rotated");
        }
        KeysAction::Revoke { user } => {
            keys.revoke(&user).await?;
            println!("Revoked the stream key of '{user}'.");
        }
        KeysAction::List => {
            let list = keys.list().await?;
            if list.is_empty() {
                println!("No stream keys yet: livegate keys add <user>");
            }
            for k in list {
                println!("{}\t{}\t{}", k.user, k.hint, k.created_at.to_rfc3339());
            }
        }
        KeysAction::Import => {
            anyhow::ensure!(
                config.cluster.enabled(),
                "keys import copies the key file into the cluster's Redis: set cluster.redis_url"
            );
            let (_, redis) = livegate::cluster::connect(&config.cluster)?;
            let redis =
                RedisKeys::new(redis, &config.cluster.key_prefix, std::time::Duration::ZERO);
            let file = KeyStore::new(config.keys_path());
            let (imported, skipped) = redis.import(&file.list()?, &file.revoked()?).await?;
            println!(
                "Imported {imported} user(s) from {} into Redis; {skipped} already had a key there \
                 and were left alone. The file is unchanged.",
                config.keys_path().display()
            );
            let (_, redis) = livegate::cluster::connect(&config.cluster)?;
            let relays = RedisRelays::new(redis, &config.cluster.key_prefix);
            let store = RelayStore::for_config(config);
            let (imported, skipped) = relays.import(&store.list(None)?).await?;
            println!(
                "Imported {imported} relay target(s) from {} into Redis; {skipped} were there \
                 already. The file is unchanged.",
                store.path().display()
            );
        }
    }
    Ok(())
}

/// Where relay targets live: the cluster's Redis when it is on, else the embedded file.
fn relay_targets(config: &Config) -> anyhow::Result<Targets> {
    if config.cluster.enabled() {
        let (_, redis) = livegate::cluster::connect(&config.cluster)?;
        Ok(Arc::new(RedisRelays::new(
            redis,
            &config.cluster.key_prefix,
        )))
    } else {
        Ok(Arc::new(RelayStore::for_config(config)))
    }
}

async fn relays_command(config: &Config, action: RelaysAction) -> anyhow::Result<()> {
    let targets = relay_targets(config)?;
    match action {
        RelaysAction::Add {
            user,
            platform,
            key_or_url,
            rtmps,
            rung,
        } => {
            let platform = Platform::parse(&platform)?;
            livegate::relay::target::check_rung(rung.as_deref(), &config.transcode.rungs)?;
            let target = RelayTarget::new(
                &user,
                platform,
                &key_or_url,
                rtmps,
                rung.as_deref(),
                &config.relay.presets,
            )?;
            // Relay targets are for users who can publish.
            if !key_backend(config)?.has_key(&user).await? {
                return Err(AuthError::NotFound(user.clone()).into());
            }
            let target = targets.add(target).await?;
            println!(
                "Added relay {} for '{user}': {} {}{}",
                target.id,
                target.platform.as_str(),
                target.redacted_url(),
                target
                    .rung
                    .as_ref()
                    .map(|r| format!(" (rung {r})"))
                    .unwrap_or_default()
            );
            println!("It starts with the user's next publish.");
        }
        RelaysAction::List { user } => {
            let relays = targets.list(Some(&user)).await?;
            if relays.is_empty() {
                println!(
                    "No relay targets for '{user}': livegate relays add {user} youtube <stream-key>"
                );
            }
            for r in relays {
                println!(
                    "{}\t{}\t{}\t{}",
                    r.id,
                    r.platform.as_str(),
                    r.redacted_url(),
                    r.rung.as_deref().unwrap_or("source")
                );
            }
        }
        RelaysAction::Remove { user, id } => {
            let removed = targets.remove(&user, &id).await?;
            println!(
                "Removed relay {} ({}) of '{user}'; a running push stops with the stream.",
                removed.id,
                removed.redacted_url()
            );
        }
    }
    Ok(())
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    Config::load(path.map(|p| p.as_path()), std::env::vars()).context("configuration")
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIVEGATE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Panics go to the log, not raw stderr. An expected one (rml_rtmp rejecting malformed peer input,
/// caught and turned into a session error) is logged at debug level only.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        if livegate::rtmp::guard::in_guarded_parse() {
            tracing::debug!(%info, "RTMP parser panicked on malformed input (session ended)");
        } else {
            tracing::error!(%info, "panic");
        }
    }));
}

fn print_new_key(config: &Config, user: &str, key: &str, verb: &str) {
    println!("{verb} stream key for '{user}'. It is shown only this once; keep it secret.");
    println!(
        "OBS → Settings → Stream: Service 'Custom…', Server {}, Stream Key: the line below.",
        config.rtmp_publish_url()
    );
    println!(
        "ffmpeg: ffmpeg -re -i INPUT -c:v libx264 -c:a aac -f flv {}/<key>",
        config.rtmp_publish_url()
    );
    println!("Watch:  {}/live/{user}/index.m3u8", config.http_base_url());
    println!("{key}");
}

/// The first SIGTERM or Ctrl-C starts a graceful shutdown (`token`); a second one exits at once.
async fn shutdown_signal(token: CancellationToken) {
    #[cfg(unix)]
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => Some(term),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C shuts down gracefully");
            None
        }
    };
    for first in [true, false] {
        #[cfg(unix)]
        {
            let terminated = async {
                match term.as_mut() {
                    Some(term) => {
                        term.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminated => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        if first {
            tracing::info!("shutting down gracefully (a second signal exits at once)");
            token.cancel();
        }
    }
    tracing::warn!("second signal: exiting now, without finishing the shutdown");
    std::process::exit(1);
}

/// GETs `/healthz` from the server configured in `config`, on loopback when it listens on all
/// addresses. Plain std I/O: the container image has no curl, and its `/bin/sh` (dash) has no
/// `/dev/tcp`.
fn health_check(config: &Config) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
    use std::time::Duration;

    let listen = &config.http.listen;
    let mut addr: SocketAddr = listen
        .to_socket_addrs()
        .with_context(|| format!("http.listen {listen:?}"))?
        .next()
        .with_context(|| format!("http.listen {listen:?} names no address"))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut head = Vec::new();
    stream
        .take(1024)
        .read_to_end(&mut head)
        .with_context(|| format!("reading the answer of {addr}"))?;
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("200") {
        anyhow::bail!("{addr}/healthz answered {status_line:?}");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve => {
            init_tracing();
            install_panic_hook();
            let config = load_config(cli.config.as_ref())?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(async {
                let token = CancellationToken::new();
                tokio::spawn(shutdown_signal(token.clone()));
                livegate::server::run(config, token).await
            })?;
            // The drain is over: what is still running (closing HTTP connections) may be cut.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        }
        Command::Keys { action } => {
            let config = load_config(cli.config.as_ref())?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(keys_command(&config, action))?;
        }
        Command::Relays { action } => {
            let config = load_config(cli.config.as_ref())?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(relays_command(&config, action))?;
        }
        Command::Channels { action } => {
            let config = load_config(cli.config.as_ref())?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(channels_command(&config, action))?;
        }
        Command::Token {
            user,
            ttl,
            viewer_id,
            name,
            ip,
        } => {
            let config = load_config(cli.config.as_ref())?;
            livegate::channel::check_user(&user)?;
            let now = chrono::Utc::now().timestamp();
            let claims = Claims {
                sub: user,
                exp: now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
                nbf: None,
                iat: Some(now),
                vid: viewer_id,
                name,
                ip,
            };
            token_command(&config, claims)?;
        }
        Command::Health => {
            let config = load_config(cli.config.as_ref())?;
            health_check(&config)?;
            println!("ok");
        }
        Command::CheckConfig => {
            let mut config = load_config(cli.config.as_ref())?;
            if !config.http.admin_token.is_empty() {
                // Printed configurations end up in CI and container logs.
                config.http.admin_token = livegate::util::redact(&config.http.admin_token);
            }
            if !config.access.token_secret.is_empty() {
                config.access.token_secret = livegate::util::redact(&config.access.token_secret);
            }
            if !config.hooks.webhook_secret.is_empty() {
                config.hooks.webhook_secret = livegate::util::redact(&config.hooks.webhook_secret);
            }
            // A Redis password sits in the URL's user part.
            if let Ok(mut url) = reqwest::Url::parse(&config.cluster.redis_url) {
                if url.password().is_some() {
                    let _ = url.set_password(Some("REDACTED"));
                    config.cluster.redis_url = url.to_string();
                }
            }
            let text = toml::to_string_pretty(&config).context("printing the configuration")?;
            println!("# configuration is valid; effective values:\n{text}");
        }
    }
    Ok(())
}
