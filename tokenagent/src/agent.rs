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
use crate::signer::{self, SignedToken, TokenSpec};
use crate::token::unix_secs;

/// Files are private to the agent's UID (libpq refuses group/world bits).
pub const FILE_MODE: u32 = 0o600;
/// First retry delay after a failure.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Readiness needs more than this much token life left. It is also the
/// default `--min-life` of `probe`, and credentials that expire sooner are
/// never used to sign (so `--once` fails rather than write a dying token).
pub const READY_MIN_LIFE: Duration = Duration::from_secs(120);
/// The next refresh comes at the latest when the token has this much life
/// left, so readiness holds across refreshes.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(150);
/// Successful refreshes are never closer together than this.
pub const MIN_REFRESH_GAP: Duration = Duration::from_secs(5);

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
    #[error(transparent)]
    Write(#[from] files::ReplaceError),
    #[error("shut down before the refresh finished")]
    Cancelled,
}

/// What a successful refresh produced (never the token itself).
#[derive(Debug, Clone, Copy)]
pub struct Refreshed {
    /// The token's effective expiry: never after the credentials'.
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
            r = self.creds.credentials(READY_MIN_LIFE) => r.map_err(RefreshError::from),
        };
        let result = match result {
            Ok(creds) => match signer::sign_token(&self.spec, &creds, SystemTime::now()) {
                Ok(signed) => self.write_files(&signed),
                Err(e) => {
                    // Credentials that cannot sign are fetched anew next time.
                    self.creds.forget().await;
                    Err(e.into())
                }
            },
            Err(e) => Err(e),
        };
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

    /// Writes both files, or neither.
    fn write_files(&self, signed: &SignedToken) -> Result<Refreshed, RefreshError> {
        let SignedToken { token, expires_at } = signed;
        let line = pgpass::line(
            &self.spec.host,
            self.spec.port,
            &self.spec.user,
            token.expose(),
        )?;
        files::replace_all(
            &self.dir,
            &[
                (TOKEN_FILE, token.expose().as_bytes()),
                (PGPASS_FILE, line.as_bytes()),
            ],
            FILE_MODE,
        )?;
        Ok(Refreshed {
            expires_at: *expires_at,
        })
    }

    /// Refreshes every `interval` (minus a small jitter), or sooner when the
    /// token would otherwise have less than [`REFRESH_MARGIN`] left, until
    /// `shutdown` completes. After a failure it retries after 1 s, 2 s, 4 s ... up to
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
                    let life = r
                        .expires_at
                        .duration_since(SystemTime::now())
                        .unwrap_or_default();
                    let next = jittered(next_refresh(interval, life));
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

/// When to refresh after a success: after `interval`, or when the token
/// (with `token_life` left now) reaches [`REFRESH_MARGIN`] (but not sooner
/// than [`MIN_REFRESH_GAP`]), whichever comes first.
pub fn next_refresh(interval: Duration, token_life: Duration) -> Duration {
    interval.min(
        token_life
            .saturating_sub(REFRESH_MARGIN)
            .max(MIN_REFRESH_GAP),
    )
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
        /// Seconds from now the credentials expire (negative: ago); None: never.
        expires_in: Arc<Mutex<Option<i64>>>,
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
                let exp = self.expires_in.lock().unwrap().map(|secs| {
                    let d = Duration::from_secs(secs.unsigned_abs());
                    if secs >= 0 {
                        SystemTime::now() + d
                    } else {
                        SystemTime::now() - d
                    }
                });
                future::ProvideCredentials::ready(Ok(Credentials::new(
                    "AKID", "secret", None, exp, "test",
                )))
            }
        }
    }

    fn agent(dir: &Path) -> (Agent, Arc<AtomicUsize>, Arc<Mutex<bool>>, Times) {
        agent_with_expiry(dir, None)
    }

    fn agent_with_expiry(
        dir: &Path,
        expires_in: Option<i64>,
    ) -> (Agent, Arc<AtomicUsize>, Arc<Mutex<bool>>, Times) {
        let calls = Arc::new(AtomicUsize::new(0));
        let fail = Arc::new(Mutex::new(false));
        let times = Times::default();
        let p = Scripted {
            calls: calls.clone(),
            fail: fail.clone(),
            times: times.clone(),
            expires_in: Arc::new(Mutex::new(expires_in)),
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

    fn token_life(dir: &Path) -> u64 {
        let t = std::fs::read_to_string(dir.join("token")).unwrap();
        let exp = crate::token::expires_at(&t).unwrap();
        exp.duration_since(SystemTime::now()).unwrap().as_secs()
    }

    #[tokio::test]
    async fn token_expires_with_its_credentials() {
        let d = tempfile::tempdir().unwrap();
        let (a, _, _, _) = agent_with_expiry(d.path(), Some(300));
        let r = a.refresh_once(std::future::pending()).await.unwrap();
        let life = r.expires_at.duration_since(SystemTime::now()).unwrap();
        assert!(
            life <= Duration::from_secs(300) && life > Duration::from_secs(295),
            "{life:?}"
        );
        // The files, readiness and the metric all say the same.
        assert!((295..=300).contains(&token_life(d.path())));
        let status = a.status();
        assert_eq!(
            status.token_expiry.load(Ordering::Relaxed),
            unix_secs(r.expires_at)
        );
        assert!(!status.ready(SystemTime::now() + Duration::from_secs(181)));
        assert!(crate::probe::probe(d.path(), Duration::from_secs(120), SystemTime::now()).is_ok());
        assert!(
            crate::probe::probe(d.path(), Duration::from_secs(301), SystemTime::now()).is_err()
        );
    }

    #[tokio::test]
    async fn dying_or_expired_credentials_never_sign() {
        for secs in [120, 60, -3600] {
            let d = tempfile::tempdir().unwrap();
            let (a, _, _, _) = agent_with_expiry(d.path(), Some(secs));
            let e = a.refresh_once(std::future::pending()).await.unwrap_err();
            assert!(
                matches!(
                    e,
                    RefreshError::Credentials(CredsError::ExpiresTooSoon { .. })
                ),
                "{secs}: {e}"
            );
            assert_eq!(
                std::fs::read_dir(d.path()).unwrap().count(),
                0,
                "nothing written"
            );
            assert!(a.status().token_life(SystemTime::now()).is_none());
            assert_eq!(a.status().refresh_error.load(Ordering::Relaxed), 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn short_lived_credentials_bring_the_next_refresh_forward() {
        let d = tempfile::tempdir().unwrap();
        // The credentials have 400 s left (and, with the wall clock standing
        // still, keep them): each token lives 400 s, so the refresh comes
        // 250 s later (less at most 5% jitter), not after the 10 minutes.
        let (a, _, _, _) = agent_with_expiry(d.path(), Some(400));
        let status = a.status();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            a.run(Duration::from_secs(600), async {
                let _ = stop_rx.await;
            })
            .await;
        });
        let refreshes = || status.refresh_success.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(237)).await;
        assert_eq!(refreshes(), 1);
        tokio::time::sleep(Duration::from_secs(14)).await;
        assert_eq!(refreshes(), 2);
        tokio::time::sleep(Duration::from_secs(500)).await;
        assert_eq!(refreshes(), 4);
        stop_tx.send(()).unwrap();
        task.await.unwrap();
    }

    #[test]
    fn next_refresh_comes_before_the_token_expires() {
        let s = Duration::from_secs;
        // A full-length token: the interval, up to 12m30s.
        assert_eq!(next_refresh(s(600), s(900)), s(600));
        assert_eq!(next_refresh(s(840), s(900)), s(750));
        // A token capped by its credentials: 150 s before it expires.
        assert_eq!(next_refresh(s(600), s(400)), s(250));
        // Never spinning.
        assert_eq!(next_refresh(s(600), s(150)), s(5));
        assert_eq!(next_refresh(s(600), s(0)), s(5));
        // A shorter interval still wins.
        assert_eq!(next_refresh(s(1), s(900)), s(1));
        assert_eq!(next_refresh(s(1), s(0)), s(1));
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
