//! Serving certificate: loading, validation, expiry, and hot reload.
//!
//! The kubelet updates a mounted Secret by writing a new timestamped directory
//! and swapping the `..data` symlink to it, so the watcher follows the
//! *directory* (not the file), waits for the events to settle, re-reads both
//! PEM files and swaps the server configuration. A pair that does not load,
//! or whose key does not match the certificate, is refused and the last good
//! pair stays in use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum_server::tls_rustls::RustlsConfig;
use notify::{EventKind, RecursiveMode, Watcher};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// How long before expiry the webhook starts warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);
/// Quiet time after the last file event before reloading.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate (expected a file starting with -----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key: {reason}")]
    NoKey { path: PathBuf, reason: String },
    #[error("{path}: bad PEM certificate: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error(
        "{cert} and {key} cannot serve TLS (does the key belong to the certificate?): {source}"
    )]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot watch {path} for certificate changes: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
}

/// A certificate and key that passed every check.
#[derive(Clone)]
pub struct LoadedCert {
    pub config: Arc<ServerConfig>,
    /// notAfter of the leaf certificate, Unix seconds.
    pub not_after: i64,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl LoadedCert {
    /// True when the certificate expires within [`EXPIRY_WARNING`] of `now`.
    pub fn expires_soon(&self, now: SystemTime) -> bool {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.not_after - now < EXPIRY_WARNING.as_secs() as i64
    }
}

/// Makes ring the process-wide rustls provider. Several crates in the tree can
/// enable a provider; naming one avoids a panic at the first handshake.
pub fn install_crypto_provider() {
    // Err only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A rustls server configuration with TLS 1.3 and 1.2 only, HTTP/2 and HTTP/1.1.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, rustls::Error> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads and checks a PEM certificate chain and private key.
pub fn load_pair(cert_path: &Path, key_path: &Path) -> Result<LoadedCert, TlsError> {
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    from_pem(cert_path, key_path, cert_pem, key_pem)
}

fn from_pem(
    cert_path: &Path,
    key_path: &Path,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
) -> Result<LoadedCert, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        })?;
    let Some(leaf) = certs.first() else {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    };
    let not_after = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| TlsError::BadCertificate {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        })?
        .1
        .validity()
        .not_after
        .timestamp();
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
        path: key_path.to_owned(),
        reason: e.to_string(),
    })?;
    let config = server_config(certs, key).map_err(|source| TlsError::Unusable {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        source,
    })?;
    Ok(LoadedCert {
        config: Arc::new(config),
        not_after,
        cert_pem,
        key_pem,
    })
}

/// Logs and records the expiry of the certificate now in use.
pub fn report_expiry(loaded: &LoadedCert, metrics: &Metrics) {
    let soon = loaded.expires_soon(SystemTime::now());
    metrics.set_cert_expiry(loaded.not_after, soon);
    if soon {
        tracing::warn!(
            not_after = loaded.not_after,
            "serving certificate expires within 7 days; rotate it (re-run `rds-iam-webhook certs` or check cert-manager)"
        );
    }
}

/// Waits for a first event, then until no event came for `quiet`.
/// Returns false once the sender is gone.
pub async fn debounce(rx: &mut mpsc::UnboundedReceiver<()>, quiet: Duration) -> bool {
    if rx.recv().await.is_none() {
        return false;
    }
    loop {
        match tokio::time::timeout(quiet, rx.recv()).await {
            Ok(Some(())) => continue,
            Ok(None) | Err(_) => return true,
        }
    }
}

/// Watches the certificate directories and reloads on change. Dropping it
/// stops watching.
pub struct CertWatcher {
    _watcher: notify::RecommendedWatcher,
    task: JoinHandle<()>,
}

impl Drop for CertWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CertWatcher {
    pub fn start(
        cert_path: PathBuf,
        key_path: PathBuf,
        rustls: RustlsConfig,
        current: LoadedCert,
        metrics: Arc<Metrics>,
        quiet: Duration,
    ) -> Result<Self, TlsError> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            match res {
                // Reads (our own included) are Access events: ignore them.
                Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => {}
                Ok(_) => {
                    let _ = tx.send(());
                }
                Err(e) => tracing::warn!(error = %e, "certificate watch error"),
            }
        })
        .map_err(|source| TlsError::Watch {
            path: cert_path.clone(),
            source,
        })?;
        let mut dirs: Vec<PathBuf> = [&cert_path, &key_path]
            .iter()
            .map(|p| match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
                _ => PathBuf::from("."),
            })
            .collect();
        dirs.dedup();
        for dir in &dirs {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|source| TlsError::Watch {
                    path: dir.clone(),
                    source,
                })?;
        }
        tracing::info!(dirs = ?dirs, "watching the serving certificate for changes");

        let task = tokio::spawn(async move {
            let mut current = current;
            while debounce(&mut rx, quiet).await {
                let (cert_pem, key_pem) = match (read(&cert_path), read(&key_path)) {
                    (Ok(c), Ok(k)) => (c, k),
                    (Err(e), _) | (_, Err(e)) => {
                        metrics.cert_reloaded(false);
                        tracing::error!(error = %e, "certificate reload failed; keeping the previous certificate");
                        continue;
                    }
                };
                if cert_pem == current.cert_pem && key_pem == current.key_pem {
                    continue;
                }
                match from_pem(&cert_path, &key_path, cert_pem, key_pem) {
                    Ok(loaded) => {
                        rustls.reload_from_config(loaded.config.clone());
                        metrics.cert_reloaded(true);
                        tracing::info!(
                            not_after = loaded.not_after,
                            "serving certificate reloaded"
                        );
                        report_expiry(&loaded, &metrics);
                        current = loaded;
                    }
                    Err(e) => {
                        metrics.cert_reloaded(false);
                        tracing::error!(error = %e, "certificate reload failed; keeping the previous certificate");
                    }
                }
            }
        });
        Ok(Self {
            _watcher: watcher,
            task,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn debounce_waits_for_quiet() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let start = tokio::time::Instant::now();
        let sender = tokio::spawn(async move {
            for delay in [0u64, 100, 150] {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                tx.send(()).unwrap();
            }
            // Keep the channel open well past the quiet time.
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(tx);
        });
        assert!(debounce(&mut rx, Duration::from_millis(200)).await);
        // Last event at 250 ms, then 200 ms of quiet.
        assert_eq!(start.elapsed(), Duration::from_millis(450));
        // The sender goes away: no more reloads.
        assert!(!debounce(&mut rx, Duration::from_millis(200)).await);
        sender.await.unwrap();
    }

    #[test]
    fn garbage_is_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let err = load_pair(&cert, &key).err().unwrap().to_string();
        assert!(
            err.contains("tls.crt") && err.contains("no PEM certificate"),
            "{err}"
        );
        let missing = load_pair(&dir.path().join("nope.crt"), &key)
            .err()
            .unwrap()
            .to_string();
        assert!(missing.contains("nope.crt"), "{missing}");
    }

    #[test]
    fn mismatched_key_is_refused() {
        install_crypto_provider();
        let a = rcgen::generate_simple_self_signed(vec!["a.test".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.test".into()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::write(&cert, a.cert.pem()).unwrap();
        std::fs::write(&key, b.signing_key.serialize_pem()).unwrap();
        let err = load_pair(&cert, &key).err().unwrap();
        assert!(matches!(err, TlsError::Unusable { .. }), "{err}");
        std::fs::write(&key, a.signing_key.serialize_pem()).unwrap();
        let ok = load_pair(&cert, &key).unwrap();
        assert!(!ok.expires_soon(SystemTime::now()));
        // rcgen's default notAfter is 4096-01-01.
        assert!(ok.not_after > 4_000_000_000);
        assert!(ok.expires_soon(UNIX_EPOCH + Duration::from_secs(ok.not_after as u64 - 3600)));
    }
}
