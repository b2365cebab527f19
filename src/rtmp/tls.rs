//! TLS for RTMPS relays (rustls): the public web roots plus an optional CA file; the URL's host
//! is sent with SNI and checked against the certificate. The ingest side (RTMPS listener) uses
//! [`crate::net::tls::ReloadingCert`].

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::net::tls::provider;
pub use crate::net::tls::TlsSetupError;

/// Client settings for RTMPS targets: the public web roots plus the CAs in `ca_file` (PEM; an
/// empty path adds none).
pub fn client_config_with_ca_file(
    ca_file: &str,
) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    if ca_file.is_empty() {
        return client_config(None);
    }
    let pem = std::fs::read(ca_file).map_err(|e| TlsSetupError(e.to_string()))?;
    client_config(Some(&pem))
}

/// Client settings for RTMPS targets: the public web roots plus any extra CAs (PEM).
pub fn client_config(
    extra_ca_pem: Option<&[u8]>,
) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca_pem {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| TlsSetupError(format!("CA file: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| TlsSetupError(format!("CA file: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(TlsSetupError("CA file: no certificate found".into()));
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Opens TLS on a connected socket to `host`, which is sent with SNI and must match the
/// certificate. A host that is no valid server name is an error too.
pub async fn connect(
    config: &Arc<rustls::ClientConfig>,
    host: &str,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, std::io::Error> {
    let name = ServerName::try_from(host.to_string()).map_err(std::io::Error::other)?;
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_config_takes_extra_roots_and_rejects_junk() {
        assert!(client_config(None).is_ok());
        assert!(client_config(Some(b"not a certificate")).is_err());
        assert!(client_config_with_ca_file("").is_ok());
        let err = client_config_with_ca_file("/nonexistent/ca.pem").unwrap_err();
        assert!(err.to_string().contains("No such file"), "{err}");
    }
}
