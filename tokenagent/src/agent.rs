//! The refresh loop: get credentials (one fetch per AWS partition, shared by
//! every database in it), sign a token per database into its
//! [`TokenSource`], let the outputs render their files from the current
//! tokens, write them, sleep, repeat.
//!
//! The loop knows nothing about file formats: outputs ([`crate::outputs`])
//! render files, and a file may belong to one database. A failure on one
//! database (signing, or writing one of its files) never stops the others:
//! its previous token stays current, so every file keeps agreeing with the
//! others. Failures are retried with capped exponential backoff.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rds_iam_common::{DbName, Endpoint};

use crate::creds::CredentialSource;
use crate::files;
use crate::outputs::{self, DbState, Output};
use crate::signer::{self, SignedToken, TokenSpec};
use crate::source::{Current, TokenSource};
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

/// Counters and timestamps of one database.
#[derive(Debug)]
pub struct DbStatus {
    pub name: DbName,
    pub refresh_success: AtomicU64,
    pub refresh_error: AtomicU64,
    /// Unix seconds; 0 = never.
    pub token_expiry: AtomicU64,
    pub last_success: AtomicU64,
    pub last_error: AtomicU64,
}

impl DbStatus {
    fn new(name: DbName) -> Self {
        Self {
            name,
            refresh_success: AtomicU64::new(0),
            refresh_error: AtomicU64::new(0),
            token_expiry: AtomicU64::new(0),
            last_success: AtomicU64::new(0),
            last_error: AtomicU64::new(0),
        }
    }

    /// Time left on the current token, if there is one.
    pub fn token_life(&self, now: SystemTime) -> Option<Duration> {
        let exp = self.token_expiry.load(Ordering::Relaxed);
        (exp != 0).then(|| Duration::from_secs(exp.saturating_sub(unix_secs(now))))
    }
}

/// Every database's status, shared with the health server.
#[derive(Debug)]
pub struct Status {
    pub dbs: Vec<DbStatus>,
}

impl Status {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a DbName>) -> Self {
        Self {
            dbs: names.into_iter().cloned().map(DbStatus::new).collect(),
        }
    }

    /// The database whose token has the least life left, and that life
    /// (`None`: one has no token yet).
    pub fn least_life(&self, now: SystemTime) -> Option<(&DbName, Option<Duration>)> {
        self.dbs
            .iter()
            .map(|d| (&d.name, d.token_life(now)))
            .min_by_key(|(_, l)| l.map_or(0, |l| l.as_secs() + 1))
    }

    /// Ready while every database's token has more than two minutes left.
    pub fn ready(&self, now: SystemTime) -> bool {
        self.dbs
            .iter()
            .all(|d| d.token_life(now).is_some_and(|l| l > READY_MIN_LIFE))
    }

    /// Prometheus text exposition, with a `db` label.
    pub fn render_metrics(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut family =
            |name: &str, kind: &str, help: &str, f: &dyn Fn(&DbStatus) -> Vec<(String, u64)>| {
                out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
                for d in &self.dbs {
                    for (labels, v) in f(d) {
                        out.push_str(&format!("{name}{{db=\"{}\"{labels}}} {v}\n", d.name));
                    }
                }
            };
        family(
            "rds_iam_token_refresh_total",
            "counter",
            "Token refreshes by result.",
            &|d| {
                vec![
                    (",result=\"success\"".into(), g(&d.refresh_success)),
                    (",result=\"error\"".into(), g(&d.refresh_error)),
                ]
            },
        );
        family(
            "rds_iam_token_expiry_timestamp_seconds",
            "gauge",
            "When the current token expires (0 = no token yet).",
            &|d| vec![(String::new(), g(&d.token_expiry))],
        );
        family(
            "rds_iam_token_last_success_timestamp_seconds",
            "gauge",
            "Time of the last successful refresh (0 = never).",
            &|d| vec![(String::new(), g(&d.last_success))],
        );
        family(
            "rds_iam_token_last_error_timestamp_seconds",
            "gauge",
            "Time of the last failed refresh (0 = never).",
            &|d| vec![(String::new(), g(&d.last_error))],
        );
        out
    }
}

/// How one database's refresh went.
#[derive(Debug)]
pub struct DbOutcome {
    pub name: DbName,
    /// The new token's effective expiry, or why there is none.
    pub result: Result<SystemTime, String>,
}

/// What a refresh round did, per database (never a token).
#[derive(Debug)]
pub struct Refreshed {
    pub dbs: Vec<DbOutcome>,
}

impl Refreshed {
    /// The failures, as `name: reason` lines.
    pub fn failures(&self) -> Vec<String> {
        self.dbs
            .iter()
            .filter_map(|d| {
                d.result
                    .as_ref()
                    .err()
                    .map(|e| format!("database {}: {e}", d.name))
            })
            .collect()
    }

    /// The earliest expiry among the refreshed tokens.
    pub fn earliest_expiry(&self) -> Option<SystemTime> {
        self.dbs
            .iter()
            .filter_map(|d| d.result.as_ref().ok())
            .min()
            .copied()
    }
}

/// The refresh was cancelled by shutdown while it waited for credentials.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("shut down before the refresh finished")]
pub struct Cancelled;

/// Databases that share one credential fetch: one per AWS partition.
pub struct CredGroup {
    pub source: CredentialSource,
    /// Indexes into the agent's databases.
    pub members: Vec<usize>,
}

/// The AWS partition of a region: credentials never cross partitions.
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else {
        "aws"
    }
}

/// Groups databases by partition, each with the region its credential
/// chain uses (the first database's).
pub fn credential_groups(dbs: &[Endpoint]) -> Vec<(String, Vec<usize>)> {
    let mut groups: Vec<(&'static str, String, Vec<usize>)> = Vec::new();
    for (i, d) in dbs.iter().enumerate() {
        let p = partition(&d.region);
        match groups.iter_mut().find(|(gp, _, _)| *gp == p) {
            Some((_, _, m)) => m.push(i),
            None => groups.push((p, d.region.clone(), vec![i])),
        }
    }
    groups.into_iter().map(|(_, r, m)| (r, m)).collect()
}

/// The agent.
pub struct Agent {
    sources: Vec<Arc<TokenSource>>,
    groups: Vec<CredGroup>,
    dir: PathBuf,
    outputs: Vec<Box<dyn Output>>,
    status: Arc<Status>,
}

impl Agent {
    pub fn new(
        databases: Vec<Endpoint>,
        dir: PathBuf,
        groups: Vec<CredGroup>,
        outputs: Vec<Box<dyn Output>>,
    ) -> Self {
        let status = Arc::new(Status::new(databases.iter().map(|d| &d.name)));
        Self {
            sources: databases
                .into_iter()
                .map(|d| Arc::new(TokenSource::new(d)))
                .collect(),
            groups,
            dir,
            outputs,
            status,
        }
    }

    /// The status shared with the health server.
    pub fn status(&self) -> Arc<Status> {
        self.status.clone()
    }

    /// The token sources, for the proxy.
    pub fn sources(&self) -> &[Arc<TokenSource>] {
        &self.sources
    }

    /// Takes the tokens a previous agent left in the directory as current,
    /// when they are for the same database and still valid, so a database
    /// whose first refresh fails keeps its line in the shared files.
    pub fn seed_from_disk(&self, now: SystemTime) {
        for s in &self.sources {
            let path = self.dir.join(s.endpoint.name.token_file());
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let e = &s.endpoint;
            let prefix = format!(
                "{}:{}/?Action=connect&DBUser={}&",
                e.host,
                e.port,
                rds_iam_common::pct::encode(&e.user)
            );
            if !text.starts_with(&prefix) {
                continue;
            }
            if let Ok((signed, expires_at)) = crate::token::validity(&text) {
                if signed <= now + crate::probe::MAX_CLOCK_SKEW && expires_at > now {
                    s.set(Current {
                        token: crate::token::Token::new(text),
                        expires_at,
                    });
                }
            }
        }
    }

    /// One round: credentials, a token per database, every file. Cancelled
    /// only while waiting for credentials, never during the writes (they
    /// are synchronous, so no `.await` can interrupt them).
    pub async fn refresh_once(
        &self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<Refreshed, Cancelled> {
        tokio::pin!(shutdown);
        let mut creds = Vec::with_capacity(self.groups.len());
        for g in &self.groups {
            let fetched = tokio::select! {
                biased;
                () = &mut shutdown => return Err(Cancelled),
                r = g.source.credentials(READY_MIN_LIFE) => r,
            };
            creds.push(fetched);
        }
        let now = SystemTime::now();
        let previous: Vec<Option<Arc<Current>>> =
            self.sources.iter().map(|s| s.current()).collect();
        let mut results: Vec<Result<SystemTime, String>> =
            vec![Err("not refreshed".to_owned()); self.sources.len()];
        for (g, fetched) in self.groups.iter().zip(&creds) {
            for &i in &g.members {
                let s = &self.sources[i];
                results[i] = match fetched {
                    Ok(c) => match signer::sign_token(&TokenSpec::of(&s.endpoint), c, now) {
                        Ok(SignedToken { token, expires_at }) => {
                            s.set(Current { token, expires_at });
                            Ok(expires_at)
                        }
                        Err(e) => Err(e.to_string()),
                    },
                    Err(e) => Err(e.to_string()),
                };
            }
            // Credentials that cannot sign are fetched anew next time.
            if g.members.iter().any(|&i| results[i].is_err()) && fetched.is_ok() {
                g.source.forget().await;
            }
        }
        self.write(&previous, &mut results);
        let now_s = unix_secs(SystemTime::now());
        let mut dbs = Vec::with_capacity(self.sources.len());
        for ((s, st), result) in self.sources.iter().zip(&self.status.dbs).zip(results) {
            match &result {
                Ok(exp) => {
                    st.refresh_success.fetch_add(1, Ordering::Relaxed);
                    st.last_success.store(now_s, Ordering::Relaxed);
                    st.token_expiry.store(unix_secs(*exp), Ordering::Relaxed);
                }
                Err(_) => {
                    st.refresh_error.fetch_add(1, Ordering::Relaxed);
                    st.last_error.store(now_s, Ordering::Relaxed);
                    // The token still in use is the previous one, if any.
                    let kept = s.current().map_or(0, |c| unix_secs(c.expires_at));
                    st.token_expiry.store(kept, Ordering::Relaxed);
                }
            }
            dbs.push(DbOutcome {
                name: s.endpoint.name.clone(),
                result,
            });
        }
        Ok(Refreshed { dbs })
    }

    /// Writes every output's files at once. When a database's own file
    /// cannot be written, that database goes back to its previous token, its
    /// own files are left as they are, and the shared files are rendered and
    /// written again with its previous token, so the files always agree; when
    /// a shared file cannot be written, every database goes back and nothing
    /// changes.
    fn write(&self, previous: &[Option<Arc<Current>>], results: &mut [Result<SystemTime, String>]) {
        let revert = |i: usize| match &previous[i] {
            Some(p) => self.sources[i].set((**p).clone()),
            None => self.sources[i].clear(),
        };
        for (i, r) in results.iter().enumerate() {
            if r.is_err() {
                revert(i);
            }
        }
        loop {
            let states: Vec<DbState> = self
                .sources
                .iter()
                .map(|s| DbState {
                    endpoint: &s.endpoint,
                    current: s.current(),
                })
                .collect();
            let rendered = match outputs::render_all(&self.outputs, &states) {
                Ok(f) => f,
                Err(e) => {
                    self.fail_all(results, &revert, e.to_string());
                    return;
                }
            };
            // A database that failed keeps its own files as they are.
            let failed = |f: &outputs::File| {
                f.owner.as_ref().is_some_and(|name| {
                    self.sources
                        .iter()
                        .zip(results.iter())
                        .any(|(s, r)| &s.endpoint.name == name && r.is_err())
                })
            };
            let set: Vec<(&str, &[u8])> = rendered
                .iter()
                .filter(|f| !failed(f))
                .map(|f| (f.name.as_str(), f.contents.as_slice()))
                .collect();
            let Err(e) = files::replace_all(&self.dir, &set, FILE_MODE) else {
                return;
            };
            let owner = rendered
                .iter()
                .find(|f| self.dir.join(&f.name) == e.path)
                .and_then(|f| f.owner.as_ref())
                .and_then(|name| self.sources.iter().position(|s| &s.endpoint.name == name))
                .filter(|&i| results[i].is_ok());
            match owner {
                Some(i) => {
                    results[i] = Err(e.to_string());
                    revert(i);
                }
                None => {
                    self.fail_all(results, &revert, e.to_string());
                    return;
                }
            }
        }
    }

    fn fail_all(
        &self,
        results: &mut [Result<SystemTime, String>],
        revert: &impl Fn(usize),
        error: String,
    ) {
        for (i, r) in results.iter_mut().enumerate() {
            if r.is_ok() {
                *r = Err(error.clone());
                revert(i);
            }
        }
    }

    /// Refreshes every `interval` (minus a small jitter), or sooner when a
    /// token would otherwise have less than [`REFRESH_MARGIN`] left, until
    /// `shutdown` completes. After a failure on any database it retries
    /// after 1 s, 2 s, 4 s ... up to 30 s; the others stay fresh meanwhile.
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
            let Ok(r) = self.refresh_once(&mut shutdown).await else {
                break;
            };
            let now = SystemTime::now();
            let mut least = interval;
            for (d, s) in r.dbs.iter().zip(&self.sources) {
                let e = &s.endpoint;
                match &d.result {
                    Ok(exp) => {
                        let life = exp.duration_since(now).unwrap_or_default();
                        least = least.min(next_refresh(interval, life));
                        tracing::info!(
                            db = %d.name,
                            host = %e.host,
                            port = e.port,
                            user = %e.user,
                            region = %e.region,
                            expires = %humantime::format_rfc3339_seconds(*exp),
                            "token refreshed"
                        );
                    }
                    Err(err) => {
                        let life = s.current().map(|c| c.life(now).as_secs());
                        tracing::error!(
                            db = %d.name,
                            error = %err,
                            retry_in = %humantime::format_duration(backoff),
                            current_token_life_secs = life,
                            "token refresh failed; keeping the previous token"
                        );
                    }
                }
            }
            let next = if r.failures().is_empty() {
                backoff = BACKOFF_START;
                let next = jittered(least);
                tracing::info!(next_refresh_in = %humantime::format_duration(next), "next refresh");
                next
            } else {
                let this = backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                this
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pgpass;
    use aws_credential_types::provider::{
        error::CredentialsError, future, ProvideCredentials, SharedCredentialsProvider,
    };
    use aws_credential_types::Credentials;
    use rds_iam_common::{Access, Engine, SslMode};
    use std::path::Path;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    /// Succeeds or fails by a script of outcomes.
    #[derive(Debug)]
    struct Scripted {
        calls: Arc<AtomicUsize>,
        fail: Arc<Mutex<bool>>,
        times: Times,
        /// Seconds from now the credentials expire (negative: ago); None: never.
        expires_in: Option<i64>,
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
                return future::ProvideCredentials::ready(Err(CredentialsError::provider_error(
                    "endpoint returned 500",
                )));
            }
            let exp = self.expires_in.map(|secs| {
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

    struct Harness {
        agent: Agent,
        calls: Arc<AtomicUsize>,
        fail: Arc<Mutex<bool>>,
        times: Times,
    }

    fn db(name: &str, host: &str, user: &str) -> Endpoint {
        Endpoint {
            name: DbName::parse(name).unwrap(),
            engine: Engine::Postgres,
            host: host.into(),
            port: 5432,
            user: user.into(),
            database: None,
            region: "us-east-1".into(),
            sslmode: SslMode::Require,
            access: Access::default(),
        }
    }

    fn harness(dir: &Path, dbs: Vec<Endpoint>, expires_in: Option<i64>) -> Harness {
        let calls = Arc::new(AtomicUsize::new(0));
        let fail = Arc::new(Mutex::new(false));
        let times = Times::default();
        let members = (0..dbs.len()).collect();
        let source = CredentialSource::new(SharedCredentialsProvider::new(Scripted {
            calls: calls.clone(),
            fail: fail.clone(),
            times: times.clone(),
            expires_in,
        }));
        let agent = Agent::new(
            dbs,
            dir.to_owned(),
            vec![CredGroup { source, members }],
            outputs::all(&dir.display().to_string(), None),
        );
        Harness {
            agent,
            calls,
            fail,
            times,
        }
    }

    fn one(dir: &Path) -> Harness {
        harness(
            dir,
            vec![db("default", "db.abc.us-east-1.rds.amazonaws.com", "app")],
            None,
        )
    }

    fn read(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).unwrap()
    }

    #[tokio::test]
    async fn writes_every_file_for_every_database() {
        let d = tempfile::tempdir().unwrap();
        let h = harness(
            d.path(),
            vec![
                db("default", "a.example.com", "app"),
                db("orders", "b.example.com", "app"),
                db("audit", "a.example.com", "app"),
            ],
            None,
        );
        let r = h.agent.refresh_once(std::future::pending()).await.unwrap();
        assert!(r.failures().is_empty(), "{:?}", r.failures());
        assert_eq!(
            h.calls.load(Ordering::SeqCst),
            1,
            "one credential fetch for all"
        );
        let token = read(d.path(), "token");
        assert!(token.starts_with("a.example.com:5432/?Action=connect&DBUser=app&"));
        assert!(read(d.path(), "orders.token").starts_with("b.example.com:5432/"));
        assert!(read(d.path(), "audit.token").starts_with("a.example.com:5432/"));
        let lines: Vec<[String; 5]> = read(d.path(), "pgpass")
            .lines()
            .map(|l| pgpass::parse_line(l).unwrap())
            .collect();
        assert_eq!(
            lines.len(),
            2,
            "default and audit share host, port and user"
        );
        assert_eq!(lines[0][0], "a.example.com");
        assert_eq!(lines[0][4], token);
        assert_eq!(lines[1][0], "b.example.com");
        assert!(read(d.path(), "pg_service.conf").contains("[orders]\nhost=b.example.com\n"));
        let exp = r.earliest_expiry().unwrap();
        let life = exp.duration_since(SystemTime::now()).unwrap();
        assert!(
            life > Duration::from_secs(890) && life <= Duration::from_secs(900),
            "{life:?}"
        );
        let status = h.agent.status();
        assert!(status.ready(SystemTime::now()));
        assert!(!status.ready(SystemTime::now() + Duration::from_secs(781)));
        let m = status.render_metrics();
        assert!(
            m.contains("rds_iam_token_refresh_total{db=\"orders\",result=\"success\"} 1\n"),
            "{m}"
        );
        assert!(
            m.contains("rds_iam_token_last_error_timestamp_seconds{db=\"audit\"} 0\n"),
            "{m}"
        );
    }

    /// A file of one database that cannot be written leaves that database on
    /// its previous token, everywhere, and the others fresh.
    #[tokio::test]
    async fn a_failure_on_one_database_never_stops_the_others() {
        let d = tempfile::tempdir().unwrap();
        let dbs = vec![
            db("default", "a.example.com", "app"),
            db("orders", "b.example.com", "ro"),
        ];
        let h = harness(d.path(), dbs.clone(), None);
        h.agent.refresh_once(std::future::pending()).await.unwrap();
        let old_orders = read(d.path(), "orders.token");
        let old_default = read(d.path(), "token");
        // Something puts a directory where orders.token goes.
        std::fs::remove_file(d.path().join("orders.token")).unwrap();
        std::fs::create_dir(d.path().join("orders.token")).unwrap();
        std::fs::write(d.path().join("orders.token").join("x"), b"").unwrap();
        // A second later the signatures differ.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let r = h.agent.refresh_once(std::future::pending()).await.unwrap();
        let failures = r.failures();
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            failures[0].starts_with("database orders: cannot write"),
            "{failures:?}"
        );
        assert!(failures[0].contains("orders.token"), "{failures:?}");
        let new_default = read(d.path(), "token");
        assert_ne!(new_default, old_default, "the default database is fresh");
        let pg = read(d.path(), "pgpass");
        assert!(pg.contains(&pgpass::escape_field(&new_default)));
        assert!(
            pg.contains(&pgpass::escape_field(&old_orders)),
            "orders keeps its previous token in the pgpass too"
        );
        let st = &h.agent.status().dbs;
        assert_eq!(st[1].refresh_error.load(Ordering::Relaxed), 1);
        assert_eq!(st[0].refresh_success.load(Ordering::Relaxed), 2);
        assert_eq!(
            h.agent.sources()[1].current().unwrap().token.expose(),
            old_orders
        );
        // The probe names exactly the database that is not well.
        let e = crate::probe::probe(d.path(), &dbs, Duration::from_secs(120), SystemTime::now())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("database orders: "), "{e}");
        assert!(e.contains("orders.token is not a regular file"), "{e}");
    }

    #[tokio::test]
    async fn tokens_on_disk_seed_a_new_agent() {
        let d = tempfile::tempdir().unwrap();
        let first = one(d.path());
        first
            .agent
            .refresh_once(std::future::pending())
            .await
            .unwrap();
        let written = read(d.path(), "token");
        let second = one(d.path());
        assert!(second.agent.sources()[0].current().is_none());
        second.agent.seed_from_disk(SystemTime::now());
        assert_eq!(
            second.agent.sources()[0].current().unwrap().token.expose(),
            written
        );
        // A token of another database is not taken.
        let other = harness(
            d.path(),
            vec![db("default", "elsewhere.example", "app")],
            None,
        );
        other.agent.seed_from_disk(SystemTime::now());
        assert!(other.agent.sources()[0].current().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn retries_with_capped_backoff_and_keeps_files() {
        let d = tempfile::tempdir().unwrap();
        let h = one(d.path());
        let (calls, fail, times) = (h.calls.clone(), h.fail.clone(), h.times.clone());
        let status = h.agent.status();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            h.agent
                .run(Duration::from_secs(60), async {
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
        assert_eq!(status.dbs[0].refresh_error.load(Ordering::Relaxed), 8);
        // Recovery replaces the files and resets the backoff.
        *fail.lock().unwrap() = false;
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(status.dbs[0].refresh_success.load(Ordering::Relaxed), 2);
        stop_tx.send(()).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_is_prompt_while_sleeping() {
        let d = tempfile::tempdir().unwrap();
        let h = one(d.path());
        let calls = h.calls.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            h.agent
                .run(Duration::from_secs(600), async {
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
        let t = read(dir, "token");
        let exp = crate::token::expires_at(&t).unwrap();
        exp.duration_since(SystemTime::now()).unwrap().as_secs()
    }

    #[tokio::test]
    async fn token_expires_with_its_credentials() {
        let d = tempfile::tempdir().unwrap();
        let dbs = vec![db("default", "db.abc.us-east-1.rds.amazonaws.com", "app")];
        let h = harness(d.path(), dbs.clone(), Some(300));
        let r = h.agent.refresh_once(std::future::pending()).await.unwrap();
        let exp = r.earliest_expiry().unwrap();
        let life = exp.duration_since(SystemTime::now()).unwrap();
        assert!(
            life <= Duration::from_secs(300) && life > Duration::from_secs(295),
            "{life:?}"
        );
        // The files, readiness, the metric and the probe all say the same.
        assert!((295..=300).contains(&token_life(d.path())));
        let status = h.agent.status();
        assert_eq!(
            status.dbs[0].token_expiry.load(Ordering::Relaxed),
            unix_secs(exp)
        );
        assert!(!status.ready(SystemTime::now() + Duration::from_secs(181)));
        let now = SystemTime::now();
        assert!(crate::probe::probe(d.path(), &dbs, Duration::from_secs(120), now).is_ok());
        assert!(crate::probe::probe(d.path(), &dbs, Duration::from_secs(301), now).is_err());
    }

    #[tokio::test]
    async fn dying_or_expired_credentials_never_sign() {
        for secs in [120, 60, -3600] {
            let d = tempfile::tempdir().unwrap();
            let h = harness(d.path(), vec![db("default", "h.example", "u")], Some(secs));
            let r = h.agent.refresh_once(std::future::pending()).await.unwrap();
            let f = r.failures();
            assert_eq!(f.len(), 1, "{secs}");
            assert!(
                f[0].contains("expire") && f[0].contains("at least 120s"),
                "{secs}: {f:?}"
            );
            assert_eq!(
                std::fs::read_dir(d.path()).unwrap().count(),
                0,
                "nothing written"
            );
            let st = &h.agent.status().dbs[0];
            assert!(st.token_life(SystemTime::now()).is_none());
            assert_eq!(st.refresh_error.load(Ordering::Relaxed), 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn short_lived_credentials_bring_the_next_refresh_forward() {
        let d = tempfile::tempdir().unwrap();
        // The credentials have 400 s left (and, with the wall clock standing
        // still, keep them): each token lives 400 s, so the refresh comes
        // 250 s later (less at most 5% jitter), not after the 10 minutes.
        let h = harness(d.path(), vec![db("default", "h.example", "u")], Some(400));
        let status = h.agent.status();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            h.agent
                .run(Duration::from_secs(600), async {
                    let _ = stop_rx.await;
                })
                .await;
        });
        let refreshes = || status.dbs[0].refresh_success.load(Ordering::Relaxed);
        // 230 s: the earliest refresh is at 237.5 s, less the seconds the
        // real clock moves while a loaded machine runs the test (the
        // credentials' life is measured on it).
        tokio::time::sleep(Duration::from_secs(230)).await;
        assert_eq!(refreshes(), 1);
        tokio::time::sleep(Duration::from_secs(21)).await;
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
    fn partitions_share_one_credential_fetch() {
        let mut dbs = vec![
            db("default", "a", "u"),
            db("b", "b", "u"),
            db("c", "c", "u"),
            db("d", "d", "u"),
        ];
        dbs[1].region = "eu-west-1".into();
        dbs[2].region = "cn-north-1".into();
        dbs[3].region = "cn-northwest-1".into();
        assert_eq!(
            credential_groups(&dbs),
            vec![
                ("us-east-1".to_owned(), vec![0, 1]),
                ("cn-north-1".to_owned(), vec![2, 3]),
            ]
        );
        assert_eq!(partition("us-gov-west-1"), "aws-us-gov");
        assert_eq!(partition("ap-southeast-5"), "aws");
    }
}
