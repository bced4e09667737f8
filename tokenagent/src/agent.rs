//! The refresh loop: get credentials, sign a token, write `token` and
//! `pgpass` atomically, sleep, repeat. Failures are retried with capped
//! exponential backoff; the files of the last good refresh stay in place.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rds_iam_common::{PGPASS_FILE, TOKEN_FILE};

use crate::creds::{CredentialSource, CredsError};
use crate::files;
use crate::pgpass;
use crate::signer::{self, TokenSpec};
use crate::token::{unix_secs, Token};

/// Files are private to the agent's UID (libpq refuses group/world bits).
pub const FILE_MODE: u32 = 0o600;
/// First retry delay after a failure.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Readiness needs more than this much token life left.
pub const READY_MIN_LIFE: Duration = Duration::from_secs(120);

/// Counters and timestamps shared with the health server.
#[derive(Debug, Default)]
pub struct Status {
    pub refresh_success: AtomicU64,
    pub refresh_error: AtomicU64,
    /// Unix seconds; 0 = never.
    pub token_expiry: AtomicU64,
    pub last_success: AtomicU64,
    pub last_error: AtomicU64,
}

impl Status {
    /// Time left on the current token, if there is one.
    pub fn token_life(&self, now: SystemTime) -> Option<Duration> {
        let exp = self.token_expiry.load(Ordering::Relaxed);
        (exp != 0).then(|| Duration::from_secs(exp.saturating_sub(unix_secs(now))))
    }

    /// Ready while the current token has more than two minutes left.
    pub fn ready(&self, now: SystemTime) -> bool {
        self.token_life(now).is_some_and(|l| l > READY_MIN_LIFE)
    }

    /// Prometheus text exposition.
    pub fn render_metrics(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "# HELP rds_iam_token_refresh_total Token refreshes by result.\n\
             # TYPE rds_iam_token_refresh_total counter\n\
             rds_iam_token_refresh_total{{result=\"success\"}} {}\n\
             rds_iam_token_refresh_total{{result=\"error\"}} {}\n\
             # HELP rds_iam_token_expiry_timestamp_seconds When the current token expires (0 = no token yet).\n\
             # TYPE rds_iam_token_expiry_timestamp_seconds gauge\n\
             rds_iam_token_expiry_timestamp_seconds {}\n\
             # HELP rds_iam_token_last_success_timestamp_seconds Time of the last successful refresh (0 = never).\n\
             # TYPE rds_iam_token_last_success_timestamp_seconds gauge\n\
             rds_iam_token_last_success_timestamp_seconds {}\n\
             # HELP rds_iam_token_last_error_timestamp_seconds Time of the last failed refresh (0 = never).\n\
             # TYPE rds_iam_token_last_error_timestamp_seconds gauge\n\
             rds_iam_token_last_error_timestamp_seconds {}\n",
            g(&self.refresh_success),
            g(&self.refresh_error),
            g(&self.token_expiry),
            g(&self.last_success),
            g(&self.last_error),
        )
    }
}

/// A refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    Credentials(#[from] CredsError),
    #[error(transparent)]
    Sign(#[from] signer::SignError),
    #[error(transparent)]
    Pgpass(#[from] pgpass::PgpassError),
    #[error("cannot write {path}: {source} (the previous files are kept)")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("shut down before the refresh finished")]
    Cancelled,
}

/// What a successful refresh produced (never the token itself).
#[derive(Debug, Clone, Copy)]
pub struct Refreshed {
    pub expires_at: SystemTime,
}

/// The agent.
pub struct Agent {
    spec: TokenSpec,
    dir: PathBuf,
    creds: CredentialSource,
    status: Arc<Status>,
}

impl Agent {
    pub fn new(spec: TokenSpec, dir: PathBuf, creds: CredentialSource) -> Self {
        Self {
            spec,
            dir,
            creds,
            status: Arc::new(Status::default()),
        }
    }

    /// The status shared with the health server.
    pub fn status(&self) -> Arc<Status> {
        self.status.clone()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Fetches credentials, signs and writes both files once. Cancelled only
    /// while waiting for credentials, never during the write: the writes are
    /// synchronous, so no `.await` can interrupt them.
    pub async fn refresh_once(
        &self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<Refreshed, RefreshError> {
        let result = tokio::select! {
            biased;
            () = shutdown => Err(RefreshError::Cancelled),
            r = self.creds.credentials() => r.map_err(RefreshError::from),
        };
        let result = result.and_then(|creds| {
            let token = signer::sign_token(&self.spec, &creds, SystemTime::now())?;
            self.write_files(&token)
        });
        let now = unix_secs(SystemTime::now());
        match &result {
            Ok(r) => {
                self.status.refresh_success.fetch_add(1, Ordering::Relaxed);
                self.status.last_success.store(now, Ordering::Relaxed);
                self.status
                    .token_expiry
                    .store(unix_secs(r.expires_at), Ordering::Relaxed);
            }
            Err(RefreshError::Cancelled) => {}
            Err(_) => {
                self.status.refresh_error.fetch_add(1, Ordering::Relaxed);
                self.status.last_error.store(now, Ordering::Relaxed);
            }
        }
        result
    }

    fn write_files(&self, token: &Token) -> Result<Refreshed, RefreshError> {
        let expires_at = token
            .expires_at()
            .map_err(|e| signer::SignError::from_msg(e.to_string()))?;
        let line = pgpass::line(
            &self.spec.host,
            self.spec.port,
            &self.spec.user,
            token.expose(),
        )?;
        let write = |name: &str, data: &[u8]| {
            files::write_atomic(&self.dir, name, data, FILE_MODE).map_err(|source| {
                RefreshError::Write {
                    path: self.dir.join(name),
                    source,
                }
            })
        };
        write(TOKEN_FILE, token.expose().as_bytes())?;
        write(PGPASS_FILE, line.as_bytes())?;
        Ok(Refreshed { expires_at })
    }

    /// Refreshes every `interval` (minus a small jitter) until `shutdown`
    /// completes. After a failure it retries after 1 s, 2 s, 4 s ... up to
    /// 30 s, keeping the last good files in place.
    pub async fn run(&self, interval: Duration, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        if let Ok(n) = files::remove_stale_temps(&self.dir) {
            if n > 0 {
                tracing::info!(
                    removed = n,
                    "removed temporary files left by a killed agent"
                );
            }
        }
        let mut backoff = BACKOFF_START;
        loop {
            let next = match self.refresh_once(&mut shutdown).await {
                Ok(r) => {
                    backoff = BACKOFF_START;
                    let next = jittered(interval);
                    tracing::info!(
                        host = %self.spec.host,
                        port = self.spec.port,
                        user = %self.spec.user,
                        region = %self.spec.region,
                        expires = %humantime::format_rfc3339_seconds(r.expires_at),
                        next_refresh_in = %humantime::format_duration(next),
                        "token refreshed"
                    );
                    next
                }
                Err(RefreshError::Cancelled) => break,
                Err(e) => {
                    let life = self.status.token_life(SystemTime::now());
                    tracing::error!(
                        error = %e,
                        retry_in = %humantime::format_duration(backoff),
                        current_token_life_secs = life.map(|l| l.as_secs()),
                        "token refresh failed; keeping the previous files"
                    );
                    let this = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    this
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = tokio::time::sleep(next) => {}
            }
        }
        tracing::info!("shutting down");
    }
}

/// Subtracts up to 5% (at most 30 s) so that many pods do not refresh in
/// lockstep, and a refresh never comes later than the interval.
pub fn jittered(interval: Duration) -> Duration {
    let max = (interval / 20).min(Duration::from_secs(30));
    let j = rand::random_range(0..=max.as_millis() as u64);
    interval - Duration::from_millis(j)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::provider::{
        error::CredentialsError, future, ProvideCredentials, SharedCredentialsProvider,
    };
    use aws_credential_types::Credentials;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    /// Succeeds or fails by a script of outcomes.
    #[derive(Debug)]
    struct Scripted {
        calls: Arc<AtomicUsize>,
        fail: Arc<Mutex<bool>>,
        times: Times,
    }

    type Times = Arc<Mutex<Vec<tokio::time::Instant>>>;

    impl ProvideCredentials for Scripted {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.times.lock().unwrap().push(tokio::time::Instant::now());
            if *self.fail.lock().unwrap() {
                future::ProvideCredentials::ready(Err(CredentialsError::provider_error(
                    "endpoint returned 500",
                )))
            } else {
                future::ProvideCredentials::ready(Ok(Credentials::new(
                    "AKID", "secret", None, None, "test",
                )))
            }
        }
    }

    fn agent(dir: &Path) -> (Agent, Arc<AtomicUsize>, Arc<Mutex<bool>>, Times) {
        let calls = Arc::new(AtomicUsize::new(0));
        let fail = Arc::new(Mutex::new(false));
        let times = Times::default();
        let p = Scripted {
            calls: calls.clone(),
            fail: fail.clone(),
            times: times.clone(),
        };
        let spec = TokenSpec {
            host: "db.abc.us-east-1.rds.amazonaws.com".into(),
            port: 5432,
            user: "app".into(),
            region: "us-east-1".into(),
        };
        let a = Agent::new(
            spec,
            dir.to_owned(),
            CredentialSource::new(SharedCredentialsProvider::new(p)),
        );
        (a, calls, fail, times)
    }

    #[tokio::test]
    async fn writes_both_files() {
        let d = tempfile::tempdir().unwrap();
        let (a, _, _, _) = agent(d.path());
        let r = a.refresh_once(std::future::pending()).await.unwrap();
        let token = std::fs::read_to_string(d.path().join("token")).unwrap();
        let pgpass = std::fs::read_to_string(d.path().join("pgpass")).unwrap();
        assert!(token
            .starts_with("db.abc.us-east-1.rds.amazonaws.com:5432/?Action=connect&DBUser=app&"));
        let fields = pgpass::parse_line(&pgpass).unwrap();
        assert_eq!(fields[0], "db.abc.us-east-1.rds.amazonaws.com");
        assert_eq!(fields[1], "5432");
        assert_eq!(fields[2], "*");
        assert_eq!(fields[3], "app");
        assert_eq!(fields[4], token);
        let life = r.expires_at.duration_since(SystemTime::now()).unwrap();
        assert!(
            life > Duration::from_secs(890) && life <= Duration::from_secs(900),
            "{life:?}"
        );
        assert!(a.status().ready(SystemTime::now()));
        assert!(!a
            .status()
            .ready(SystemTime::now() + Duration::from_secs(781)));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_with_capped_backoff_and_keeps_files() {
        let d = tempfile::tempdir().unwrap();
        let (a, calls, fail, times) = agent(d.path());
        let interval = Duration::from_secs(60);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let status = a.status();
        let task = tokio::spawn(async move {
            a.run(interval, async {
                let _ = stop_rx.await;
            })
            .await;
        });
        // The first refresh happens at once.
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let first = std::fs::read(d.path().join("token")).unwrap();
        // Fail from now on: the next attempt comes after the interval (less
        // jitter), then after 1, 2, 4, 8, 16, 30, 30 s.
        *fail.lock().unwrap() = true;
        tokio::time::sleep(Duration::from_secs(60 + 91 + 1)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 9);
        let t = times.lock().unwrap().clone();
        let gaps: Vec<u64> = t.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
        assert!((57..=60).contains(&gaps[0]), "{gaps:?}");
        assert_eq!(&gaps[1..], &[1, 2, 4, 8, 16, 30, 30], "backoff gaps");
        assert_eq!(
            std::fs::read(d.path().join("token")).unwrap(),
            first,
            "old token kept"
        );
        assert_eq!(status.refresh_error.load(Ordering::Relaxed), 8);
        // Recovery replaces the files and resets the backoff.
        *fail.lock().unwrap() = false;
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(status.refresh_success.load(Ordering::Relaxed), 2);
        stop_tx.send(()).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_is_prompt_while_sleeping() {
        let d = tempfile::tempdir().unwrap();
        let (a, calls, _, _) = agent(d.path());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            a.run(Duration::from_secs(600), async {
                let _ = stop_rx.await;
            })
            .await;
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before = tokio::time::Instant::now();
        stop_tx.send(()).unwrap();
        task.await.unwrap();
        assert!(before.elapsed() < Duration::from_millis(1));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        for _ in 0..1000 {
            let j = jittered(Duration::from_secs(600));
            assert!(
                j <= Duration::from_secs(600) && j >= Duration::from_secs(570),
                "{j:?}"
            );
        }
        let j = jittered(Duration::from_secs(60));
        assert!(j >= Duration::from_secs(57));
    }

    #[test]
    fn metrics_text() {
        let s = Status::default();
        s.refresh_success.store(3, Ordering::Relaxed);
        s.token_expiry.store(1_700_000_000, Ordering::Relaxed);
        let m = s.render_metrics();
        assert!(
            m.contains("rds_iam_token_refresh_total{result=\"success\"} 3\n"),
            "{m}"
        );
        assert!(
            m.contains("rds_iam_token_refresh_total{result=\"error\"} 0\n"),
            "{m}"
        );
        assert!(
            m.contains("rds_iam_token_expiry_timestamp_seconds 1700000000\n"),
            "{m}"
        );
        assert!(
            m.contains("rds_iam_token_last_error_timestamp_seconds 0\n"),
            "{m}"
        );
    }
}
