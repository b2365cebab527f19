//! TLS for RTMPS (rustls): the acceptor of RTMPS ingest and the connector of RTMPS relays
//! (the public web roots plus an optional CA file; the URL's host is sent with SNI and checked
//! against the certificate).

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

/// A TLS setting that cannot be used; the message names the file or the reason.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsSetupError(String);

/// An explicit provider: the dependency tree enables more than one, so none is implied.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The RTMPS ingest acceptor from a PEM certificate chain and key.
pub fn acceptor(cert: &str, key: &str) -> Result<tokio_rustls::TlsAcceptor, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsSetupError(format!("{cert}: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError(format!("{cert}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsSetupError(format!("{cert}: no certificate")));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| TlsSetupError(format!("{key}: {e}")))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsSetupError(format!("certificate and key: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

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

    #[test]
    fn acceptor_names_the_missing_file() {
        let Err(err) = acceptor("/nonexistent/cert.pem", "/nonexistent/key.pem") else {
            panic!("a missing file was accepted");
        };
        assert!(
            err.to_string().starts_with("/nonexistent/cert.pem"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_certificate_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "").unwrap();
        let cert = cert.to_string_lossy().into_owned();
        let Err(err) = acceptor(&cert, "/nonexistent/key.pem") else {
            panic!("an empty certificate file was accepted");
        };
        assert!(err.to_string().ends_with("no certificate"), "{err}");
    }
}
