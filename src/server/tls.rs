//! The TLS listeners' certificates (HTTPS, RTMPS): loaded at start (a bad file stops the start
//! with its name), then checked every [`CHECK_EVERY`] and reloaded when they change.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::net::tls::{Reload, ReloadingCert};

/// How often the certificate files are looked at (two `stat`s): a renewal is in use within this.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// A TLS acceptor for `listener` (`http` or `rtmp`, for logs and metrics) presenting `cert` and
/// `key`, offering `alpn`; its certificate is reloaded until `stop`.
pub(super) fn acceptor(
    listener: &'static str,
    (cert, key): (&str, &str),
    alpn: &[&[u8]],
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> Result<tokio_rustls::TlsAcceptor, super::ServerError> {
    let failed = |e: crate::net::tls::TlsSetupError| super::ServerError::Tls {
        listener,
        message: e.to_string(),
    };
    let reloading = ReloadingCert::load(cert, key).map_err(failed)?;
    let config = reloading.server_config(alpn).map_err(failed)?;
    tokio::spawn(async move {
        let mut every = tokio::time::interval(CHECK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let checked = reloading.clone();
            let Ok(reload) = tokio::task::spawn_blocking(move || checked.check()).await else {
                continue;
            };
            let cert = reloading.cert_path().display();
            match reload {
                Reload::Unchanged => {}
                Reload::Reloaded => {
                    metrics.tls_cert_reloaded(listener, true);
                    tracing::info!(listener, %cert, "TLS certificate reloaded; new connections get it");
                }
                Reload::Failed(e) => {
                    metrics.tls_cert_reloaded(listener, false);
                    tracing::error!(listener, %cert, error = %e,
                        "TLS certificate changed but cannot be used; still presenting the previous one");
                }
            }
        }
    });
    Ok(tokio_rustls::TlsAcceptor::from(config))
}
