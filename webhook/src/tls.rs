//! Serving certificate: loading, validation, expiry, and hot reload.
//!
//! The kubelet updates a mounted Secret by writing a new timestamped directory
//! and swapping the `..data` symlink to it, so the watcher follows the
//! *directory* (not the file), waits for the events to settle, re-reads both
//! PEM files and swaps the server configuration. A pair that does not load,
//! whose key does not match the certificate, or whose certificate has expired
//! or is not valid yet, is refused and the last good pair stays in use. A
//! certificate refused as not valid yet is tried again when it becomes valid.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum_server::tls_rustls::RustlsConfig;
use notify::{EventKind, RecursiveMode, Watcher};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// How long before expiry the webhook starts warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);
/// Quiet time after the last file event before reloading.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(200);
/// How often the expiry of the certificate in use is checked again.
pub const EXPIRY_CHECK: Duration = Duration::from_secs(3600);

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
    #[error("{path}: the certificate expired at {} UTC; write a current one (re-run `rds-iam-webhook certs`, or check cert-manager's Certificate)", utc(*not_after))]
    Expired { path: PathBuf, not_after: i64 },
    #[error("{path}: the certificate is not valid before {} UTC; check the clocks of its issuer and of this node, or wait until then", utc(*not_before))]
    NotYetValid { path: PathBuf, not_before: i64 },
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
    /// notBefore of the leaf certificate, Unix seconds.
    pub not_before: i64,
    /// notAfter of the leaf certificate, Unix seconds.
    pub not_after: i64,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl LoadedCert {
    /// True when the certificate expires within [`EXPIRY_WARNING`] of `now`.
    pub fn expires_soon(&self, now: SystemTime) -> bool {
        expires_soon(self.not_after, now)
    }

    /// Refuses a certificate that is not valid at `now`: it would be served,
    /// and every client would reject it.
    pub fn check_time(&self, cert_path: &Path, now: SystemTime) -> Result<(), TlsError> {
        let now = unix(now);
        if now > self.not_after {
            return Err(TlsError::Expired {
                path: cert_path.to_owned(),
                not_after: self.not_after,
            });
        }
        if now < self.not_before {
            return Err(TlsError::NotYetValid {
                path: cert_path.to_owned(),
                not_before: self.not_before,
            });
        }
        Ok(())
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn expires_soon(not_after: i64, now: SystemTime) -> bool {
    not_after - unix(now) < EXPIRY_WARNING.as_secs() as i64
}

/// `2026-01-31 23:59` for a Unix time.
fn utc(t: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(t) {
        Ok(d) => format!("{} {:02}:{:02}", d.date(), d.hour(), d.minute()),
        Err(_) => format!("Unix time {t}"),
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

/// Reads and checks a PEM certificate chain and private key, valid now.
pub fn load_pair(cert_path: &Path, key_path: &Path) -> Result<LoadedCert, TlsError> {
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let loaded = from_pem(cert_path, key_path, cert_pem, key_pem)?;
    loaded.check_time(cert_path, SystemTime::now())?;
    Ok(loaded)
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
    let (_, parsed) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| TlsError::BadCertificate {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        })?;
    let not_before = parsed.validity().not_before.timestamp();
    let not_after = parsed.validity().not_after.timestamp();
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
        not_before,
        not_after,
        cert_pem,
        key_pem,
    })
}

/// Logs and records the expiry of the certificate now in use.
pub fn report_expiry(loaded: &LoadedCert, metrics: &Metrics) {
    report_expiry_of(loaded.not_after, metrics);
}

fn report_expiry_of(not_after: i64, metrics: &Metrics) {
    let soon = expires_soon(not_after, SystemTime::now());
    metrics.set_cert_expiry(not_after, soon);
    if soon {
        tracing::warn!(
            not_after,
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
    tasks: [JoinHandle<()>; 2],
}

impl Drop for CertWatcher {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
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

        let (expiry_tx, expiry_rx) = watch::channel(current.not_after);
        let expiry_task = tokio::spawn(recheck_expiry(expiry_rx, metrics.clone()));
        let task = tokio::spawn(async move {
            let mut current = current;
            let mut retry_at: Option<tokio::time::Instant> = None;
            loop {
                let retry = async {
                    match retry_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    go = debounce(&mut rx, quiet) => if !go { break },
                    () = retry => {}
                }
                retry_at = None;
                let now = SystemTime::now();
                match reload(&cert_path, &key_path, &current, now) {
                    Ok(None) => {}
                    Ok(Some(loaded)) => {
                        rustls.reload_from_config(loaded.config.clone());
                        metrics.cert_reloaded(true);
                        tracing::info!(
                            not_after = loaded.not_after,
                            "serving certificate reloaded"
                        );
                        report_expiry(&loaded, &metrics);
                        let _ = expiry_tx.send(loaded.not_after);
                        current = loaded;
                    }
                    Err(e) => {
                        metrics.cert_reloaded(false);
                        if let TlsError::NotYetValid { not_before, .. } = e {
                            let wait = retry_delay(not_before, now);
                            retry_at = Some(tokio::time::Instant::now() + wait);
                            tracing::error!(error = %e, retry_in_s = wait.as_secs(), "certificate reload failed; keeping the previous certificate");
                        } else {
                            tracing::error!(error = %e, "certificate reload failed; keeping the previous certificate");
                        }
                    }
                }
            }
        });
        Ok(Self {
            _watcher: watcher,
            tasks: [task, expiry_task],
        })
    }
}

/// Reads the pair again: `None` if it did not change, the new pair if it
/// loads and is valid at `now`.
fn reload(
    cert_path: &Path,
    key_path: &Path,
    current: &LoadedCert,
    now: SystemTime,
) -> Result<Option<LoadedCert>, TlsError> {
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    if cert_pem == current.cert_pem && key_pem == current.key_pem {
        return Ok(None);
    }
    let loaded = from_pem(cert_path, key_path, cert_pem, key_pem)?;
    loaded.check_time(cert_path, now)?;
    Ok(Some(loaded))
}

/// How long until a certificate valid from `not_before` can be loaded.
pub fn retry_delay(not_before: i64, now: SystemTime) -> Duration {
    let secs = not_before.saturating_sub(unix(now)).max(0) as u64;
    Duration::from_secs(secs + 1)
}

/// Sets the expiry metrics again every [`EXPIRY_CHECK`]: a certificate that
/// is not replaced comes closer to its end while the webhook runs.
async fn recheck_expiry(not_after: watch::Receiver<i64>, metrics: Arc<Metrics>) {
    loop {
        tokio::time::sleep(EXPIRY_CHECK).await;
        let t = *not_after.borrow();
        report_expiry_of(t, &metrics);
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

    fn pair_valid(
        dir: &Path,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn expired_and_not_yet_valid_certificates_are_refused() {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let now = time::OffsetDateTime::now_utc();
        let day = time::Duration::days(1);

        let (c, k) = pair_valid(dir.path(), now - day * 30, now - day);
        let err = load_pair(&c, &k).err().unwrap();
        assert!(matches!(err, TlsError::Expired { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("tls.crt") && msg.contains("expired at") && msg.contains("UTC"),
            "{msg}"
        );
        assert!(msg.contains("re-run `rds-iam-webhook certs`"), "{msg}");

        let (c, k) = pair_valid(dir.path(), now + day, now + day * 30);
        let err = load_pair(&c, &k).err().unwrap();
        assert!(matches!(err, TlsError::NotYetValid { .. }), "{err}");
        assert!(err.to_string().contains("not valid before"), "{err}");

        let (c, k) = pair_valid(dir.path(), now - day, now + day * 30);
        let ok = load_pair(&c, &k).unwrap();
        // The exact bounds are valid, one second past them is not.
        let at = |t: i64| UNIX_EPOCH + Duration::from_secs(t as u64);
        ok.check_time(&c, at(ok.not_before)).unwrap();
        ok.check_time(&c, at(ok.not_after)).unwrap();
        assert!(ok.check_time(&c, at(ok.not_before - 1)).is_err());
        assert!(ok.check_time(&c, at(ok.not_after + 1)).is_err());
    }

    #[test]
    fn retry_comes_a_second_after_not_before() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(retry_delay(1_010, now), Duration::from_secs(11));
        assert_eq!(retry_delay(900, now), Duration::from_secs(1));
    }

    #[test]
    fn dates_are_written_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(1_900_000_000), "2030-03-17 17:46");
    }
}
