//! TLS server settings shared by HTTPS and RTMPS (rustls): a certificate chain and key from PEM
//! files, reloaded when the files change (a renewal by certbot or any ACME client) without a
//! restart. Connections already open keep the certificate they were opened with; new handshakes
//! get the new one. A renewal that cannot be used (unreadable, a key that does not match) keeps
//! the certificate in use and is reported, so a half-written file never takes the listener down.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS setting that cannot be used; the message names the file or the reason.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsSetupError(pub(crate) String);

/// An explicit provider: the dependency tree enables more than one, so none is implied.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// One version of the pair: the files' contents. Compared by content, not by modification time
/// and length: a renewal written within one timestamp tick has the same stamp (same-size PEMs are
/// the rule), and the files are a few KB read every few seconds.
type Contents = (Option<Vec<u8>>, Option<Vec<u8>>);

fn read_pair(cert: &Path, key: &Path) -> Contents {
    (std::fs::read(cert).ok(), std::fs::read(key).ok())
}

/// The certificate a listener presents, reloaded from its files by [`ReloadingCert::check`].
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' contents at the last load attempt, good or bad: a bad renewal is tried again
    /// only once the files change again.
    seen: Mutex<Contents>,
}

/// What a [`ReloadingCert::check`] found.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    Reloaded,
    /// The files changed but cannot be used; the previous certificate stays in use.
    Failed(TlsSetupError),
}

impl ReloadingCert {
    /// Loads the chain and key; an error names the file and what is wrong with it.
    pub fn load(cert: &str, key: &str) -> Result<Arc<ReloadingCert>, TlsSetupError> {
        let (cert, key) = (PathBuf::from(cert), PathBuf::from(key));
        let seen = read_pair(&cert, &key);
        let loaded = certified_key(&cert, &key, &seen)?;
        Ok(Arc::new(ReloadingCert {
            cert,
            key,
            current: RwLock::new(Arc::new(loaded)),
            seen: Mutex::new(seen),
        }))
    }

    /// Reloads the files if they changed since the last attempt.
    pub fn check(&self) -> Reload {
        let now = read_pair(&self.cert, &self.key);
        let loaded = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == now {
                return Reload::Unchanged;
            }
            let loaded = certified_key(&self.cert, &self.key, &now);
            *seen = now;
            loaded
        };
        match loaded {
            Ok(loaded) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
                Reload::Reloaded
            }
            Err(e) => Reload::Failed(e),
        }
    }

    /// The certificate file, for log lines.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// Server settings presenting this certificate, offering `alpn` (most preferred first).
    pub fn server_config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
    ) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// Parses a PEM chain and key read from `cert` and `key` and checks that they belong together.
fn certified_key(
    cert: &Path,
    key: &Path,
    contents: &Contents,
) -> Result<CertifiedKey, TlsSetupError> {
    let (cert_name, key_name) = (cert.display(), key.display());
    let unreadable = |name: &dyn std::fmt::Display, path: &Path| {
        let why = std::fs::metadata(path)
            .err()
            .map_or("cannot be read".to_string(), |e| e.to_string());
        TlsSetupError(format!("{name}: {why}"))
    };
    let (Some(cert_pem), Some(key_pem)) = contents else {
        return Err(match contents.0 {
            None => unreadable(&cert_name, cert),
            Some(_) => unreadable(&key_name, key),
        });
    };
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError(format!("{cert_name}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsSetupError(format!("{cert_name}: no certificate")));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsSetupError(format!("{key_name}: {e}")))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsSetupError(format!("{key_name}: {e}")))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| {
        TlsSetupError(format!(
            "{cert_name} and {key_name} do not belong together: {e}"
        ))
    })?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate and its key, as PEM files in `dir` named `name`.pem/.key.
    fn write_pair(dir: &Path, name: &str) -> (String, String) {
        let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, issued.cert.pem()).unwrap();
        std::fs::write(&key, issued.signing_key.serialize_pem()).unwrap();
        (cert.display().to_string(), key.display().to_string())
    }

    fn presented(reloading: &ReloadingCert) -> Vec<u8> {
        reloading.current.read().unwrap().cert[0].to_vec()
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = ReloadingCert::load("/nonexistent/cert.pem", "/nonexistent/key.pem").unwrap_err();
        assert!(
            err.to_string().starts_with("/nonexistent/cert.pem"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_certificate_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, key) = write_pair(dir.path(), "a");
        let cert = dir.path().join("empty.pem");
        std::fs::write(&cert, "").unwrap();
        let err = ReloadingCert::load(&cert.display().to_string(), &key).unwrap_err();
        assert!(err.to_string().ends_with("no certificate"), "{err}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = write_pair(dir.path(), "a");
        let (_, other_key) = write_pair(dir.path(), "b");
        let err = ReloadingCert::load(&cert, &other_key).unwrap_err();
        assert!(err.to_string().contains("do not belong together"), "{err}");
    }

    #[test]
    fn a_renewal_is_picked_up_and_a_broken_one_keeps_the_old_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "live");
        let reloading = ReloadingCert::load(&cert, &key).unwrap();
        let first = presented(&reloading);
        assert!(matches!(reloading.check(), Reload::Unchanged));

        // A renewal: both files replaced.
        let (new_cert, new_key) = write_pair(dir.path(), "renewed");
        std::fs::rename(&new_cert, &cert).unwrap();
        std::fs::rename(&new_key, &key).unwrap();
        assert!(matches!(reloading.check(), Reload::Reloaded));
        let second = presented(&reloading);
        assert_ne!(first, second);

        // Half a renewal (a certificate without its key) is reported and changes nothing.
        let (half_cert, _) = write_pair(dir.path(), "half");
        std::fs::rename(&half_cert, &cert).unwrap();
        let Reload::Failed(err) = reloading.check() else {
            panic!("a certificate with the wrong key was loaded");
        };
        assert!(err.to_string().contains("do not belong together"), "{err}");
        assert_eq!(presented(&reloading), second);
        // Not retried until the files change again.
        assert!(matches!(reloading.check(), Reload::Unchanged));
    }

    #[test]
    fn the_config_offers_the_given_protocols() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "a");
        let reloading = ReloadingCert::load(&cert, &key).unwrap();
        let config = reloading.server_config(&[b"h2", b"http/1.1"]).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
