//! `rds-iam-tokenagent doctor`: one screen that says what works and, for
//! each failing line, how to fix it.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use rds_iam_common::{DbName, Endpoint, Engine, PGPASS_FILE, TOKEN_LIFETIME_SECS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::agent::READY_MIN_LIFE;
use crate::cli::RunArgs;
use crate::creds::{self, CredentialSource, CredsError};
use crate::pgpass;
use crate::proxy::{mysql_wire, pg_wire};
use crate::signer::{self, SignError, TokenSpec};
use crate::token::{self, unix_secs};

/// One checked line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub ok: bool,
    pub what: &'static str,
    pub detail: String,
    pub fix: Option<String>,
}

impl Line {
    fn ok(what: &'static str, detail: impl Into<String>) -> Self {
        Self {
            ok: true,
            what,
            detail: detail.into(),
            fix: None,
        }
    }
    fn fail(what: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            ok: false,
            what,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Renders the report.
pub fn render(lines: &[Line]) -> String {
    let mut out = String::new();
    for l in lines {
        let _ = writeln!(
            out,
            "{} {:<12} {}",
            if l.ok { "OK  " } else { "FAIL" },
            l.what,
            l.detail
        );
        if let Some(fix) = &l.fix {
            let _ = writeln!(out, "     {:<12} fix: {fix}", "");
        }
    }
    out
}

/// Timeout for each network check.
const NET_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs every check. `env` reads the environment.
pub async fn run(args: RunArgs, env: impl Fn(&str) -> Option<String> + Copy) -> Vec<Line> {
    let mut lines = Vec::new();
    let dir = args.dir.clone();
    let sources = creds::detected_sources(env);
    lines.push(if sources.is_empty() {
        Line::fail(
            "credentials",
            "no credential source is configured in the environment (only a profile file or IMDS could still work)",
            "for IRSA annotate the ServiceAccount with eks.amazonaws.com/role-arn; for EKS Pod Identity create a pod identity association",
        )
    } else {
        let names: Vec<String> = sources.iter().map(|(n, d)| format!("{n} ({d})")).collect();
        Line::ok("credentials", format!("configured: {}", names.join(", ")))
    });
    let cfg = match args.into_config(env) {
        Ok(c) => c,
        Err(e) => {
            lines.push(Line::fail(
                "config",
                e.to_string(),
                "set the flag or env var named above",
            ));
            return lines;
        }
    };
    for (e, source) in cfg.databases.iter().zip(&cfg.region_sources) {
        lines.push(Line::ok(
            "region",
            format!("database {}: {} ({source})", e.name, e.region),
        ));
    }
    for (region, members) in crate::agent::credential_groups(&cfg.databases) {
        let source = CredentialSource::default_chain(&region)
            .await
            .with_fetch_timeout(Duration::from_secs(15));
        match source.credentials(READY_MIN_LIFE).await {
            Ok(c) => {
                lines.push(Line::ok(
                    "aws identity",
                    format!(
                        "got credentials from {} (key {}…, {}) for {region}",
                        creds::provider_name(&c),
                        c.access_key_id().chars().take(4).collect::<String>(),
                        c.expiry()
                            .map(|e| format!("expire {}", humantime::format_rfc3339_seconds(e)))
                            .unwrap_or_else(|| "no expiry".into())
                    ),
                ));
                for i in members {
                    let e = &cfg.databases[i];
                    lines.push(check_signing(
                        &e.name,
                        &TokenSpec::of(e),
                        &c,
                        SystemTime::now(),
                    ));
                }
            }
            Err(e) => {
                let fix = match e {
                    CredsError::ExpiresTooSoon { .. } => {
                        "the credential source hands out credentials that are expired or about to \
                         expire: check this node's clock (NTP) and the credential endpoint"
                    }
                    _ => "check the credential source above; for IRSA the role's trust policy must allow this ServiceAccount",
                };
                lines.push(Line::fail("aws identity", e.to_string(), fix))
            }
        }
    }
    for e in &cfg.databases {
        lines.push(check_endpoint(e).await);
        if e.engine == rds_iam_common::Engine::Postgres {
            lines.push(check_pgpass(&dir, e));
        }
    }
    lines
}

/// Signs a token with `c` and says how long it lives.
fn check_signing(db: &DbName, spec: &TokenSpec, c: &Credentials, now: SystemTime) -> Line {
    match signer::sign_token(spec, c, now) {
        Ok(t) => {
            // X-Amz-Expires: from the signing second to the expiry.
            let life = Duration::from_secs(unix_secs(t.expires_at).saturating_sub(unix_secs(now)));
            let limited = if life < Duration::from_secs(TOKEN_LIFETIME_SECS) {
                " (limited by the credentials' expiry)"
            } else {
                ""
            };
            Line::ok(
                "signing",
                format!(
                    "database {db}: signed a {}-byte token for {}@{}:{}, valid for {}s{limited}",
                    t.token.expose().len(),
                    spec.user,
                    spec.host,
                    spec.port,
                    life.as_secs()
                ),
            )
        }
        Err(e @ (SignError::TooLong { .. } | SignError::Expired { .. })) => Line::fail(
            "signing",
            e.to_string(),
            "fix the credential source: it hands out malformed credentials",
        ),
        Err(e) => Line::fail("signing", e.to_string(), "report a bug with this output"),
    }
}

/// DNS, TCP, and whether the server offers TLS: PostgreSQL must answer `S`
/// to an SSLRequest; a MySQL server's greeting must carry the SSL flag.
async fn check_endpoint(e: &Endpoint) -> Line {
    let (db, host, port) = (&e.name, e.host.as_str(), e.port);
    let fail =
        |detail: String, fix: &str| Line::fail("endpoint", format!("database {db}: {detail}"), fix);
    let addrs: Vec<_> =
        match tokio::time::timeout(NET_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(err)) => {
                return fail(
                    format!("{host} does not resolve: {err}"),
                    "check the host annotation and the pod's DNS",
                )
            }
            Err(_) => return fail(format!("resolving {host} timed out"), "check the pod's DNS"),
        };
    let Some(addr) = addrs.first().copied() else {
        return fail(
            format!("{host} has no addresses"),
            "check the host annotation",
        );
    };
    let mut stream =
        match tokio::time::timeout(NET_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(err)) => {
                return fail(
                    format!("cannot connect to {addr}: {err}"),
                    "check the port and the DB security group / network policy",
                )
            }
            Err(_) => {
                return fail(
                    format!("connecting to {addr} timed out"),
                    "allow the pod to reach the DB in its security group / network policy",
                )
            }
        };
    let offers_tls = async {
        match e.engine {
            Engine::Postgres => {
                stream.write_all(&pg_wire::ssl_request()).await?;
                let mut answer = [0u8; 1];
                stream.read_exact(&mut answer).await?;
                Ok::<_, std::io::Error>(answer[0] == b'S')
            }
            Engine::Mysql => {
                let mut head = [0u8; 4];
                stream.read_exact(&mut head).await?;
                let len =
                    usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
                let mut payload = vec![0u8; len.min(mysql_wire::MAX_HANDSHAKE_PACKET)];
                stream.read_exact(&mut payload).await?;
                Ok(mysql_wire::parse_greeting(&payload).is_ok_and(|g| mysql_wire::offers_tls(&g)))
            }
        }
    };
    let engine = e.engine.as_str();
    match tokio::time::timeout(NET_TIMEOUT, offers_tls).await {
        Ok(Ok(true)) => Line::ok(
            "endpoint",
            format!("database {db}: {host}:{port} ({addr}) accepts TLS"),
        ),
        Ok(Ok(false)) => fail(
            format!("{host}:{port} ({addr}) refuses TLS"),
            "IAM authentication needs TLS; enable it on the server",
        ),
        Ok(Err(err)) => fail(
            format!("{addr} closed the connection: {err}"),
            &format!("is this a {engine} port?"),
        ),
        Err(_) => fail(
            format!("{addr} did not answer"),
            &format!("is this a {engine} port?"),
        ),
    }
}

fn check_pgpass(dir: &Path, e: &Endpoint) -> Line {
    let (host, port, user) = (e.host.as_str(), e.port, e.user.as_str());
    let path = dir.join(PGPASS_FILE);
    let meta = match fs::metadata(&path) {
        Ok(m) => m,
        Err(e) => {
            return Line::fail(
                "pgpass",
                format!("{}: {e}", path.display()),
                "the agent has not written it yet; check the agent's logs",
            )
        }
    };
    let my_uid = fs::metadata("/proc/self").map(|m| m.uid()).ok();
    let mode = meta.permissions().mode() & 0o7777;
    if mode != 0o600 {
        return Line::fail(
            "pgpass",
            format!("{} has mode {mode:04o}", path.display()),
            "it must be 0600; the agent writes it so",
        );
    }
    if my_uid.is_some_and(|u| u != meta.uid()) {
        return Line::fail(
            "pgpass",
            format!(
                "{} belongs to UID {}, this process runs as UID {}",
                path.display(),
                meta.uid(),
                my_uid.unwrap_or_default()
            ),
            "run the agent with the app's UID (rds-iam/run-as-user, or runAsUser on the pod)",
        );
    }
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            return Line::fail(
                "pgpass",
                format!("cannot read {}: {e}", path.display()),
                "check the volume mount",
            )
        }
    };
    let lines: Vec<[String; 5]> = text.lines().filter_map(pgpass::parse_line).collect();
    if lines.is_empty() {
        return Line::fail(
            "pgpass",
            format!("{} is malformed", path.display()),
            "delete it; the agent rewrites it",
        );
    }
    let Some(f) = lines
        .iter()
        .find(|f| f[0] == host && f[1] == port.to_string() && f[3] == user)
    else {
        let have: Vec<String> = lines
            .iter()
            .map(|f| format!("{}@{}:{}", f[3], f[0], f[1]))
            .collect();
        return Line::fail(
            "pgpass",
            format!(
                "database {}: {} has no line for {user}@{host}:{port} (it has {})",
                e.name,
                path.display(),
                have.join(", ")
            ),
            "the client's host, port and user must equal the database's; check the agent's logs",
        );
    };
    match token::expires_at(&f[4]) {
        Ok(exp) => {
            let left = exp.duration_since(SystemTime::now()).unwrap_or_default();
            if left.is_zero() {
                Line::fail(
                    "pgpass",
                    format!(
                        "database {}: {} holds an expired token",
                        e.name,
                        path.display()
                    ),
                    "check the agent's logs for refresh errors",
                )
            } else {
                Line::ok(
                    "pgpass",
                    format!(
                        "database {}: {} is readable, mode 0600, token valid for {}s",
                        e.name,
                        path.display(),
                        left.as_secs()
                    ),
                )
            }
        }
        Err(e) => Line::fail(
            "pgpass",
            format!("{}: {e}", path.display()),
            "delete it; the agent rewrites it",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_shows_fix_under_failures() {
        let out = render(&[
            Line::ok("region", "us-east-1"),
            Line::fail("pgpass", "missing", "wait"),
        ]);
        assert_eq!(
            out,
            "OK   region       us-east-1\nFAIL pgpass       missing\n                  fix: wait\n"
        );
    }

    fn endpoint(host: &str, port: u16, engine: Engine) -> Endpoint {
        Endpoint {
            name: DbName::named("orders").unwrap(),
            engine,
            host: host.into(),
            port,
            user: "u".into(),
            database: None,
            region: "us-east-1".into(),
            sslmode: rds_iam_common::SslMode::Require,
            access: Default::default(),
        }
    }

    #[test]
    fn pgpass_checks() {
        let d = tempfile::tempdir().unwrap();
        let e = endpoint("h", 5432, Engine::Postgres);
        let l = check_pgpass(d.path(), &e);
        assert!(!l.ok && l.detail.contains("No such file"), "{l:?}");
        let line = pgpass::line("other", 5432, "u", "t").unwrap();
        crate::files::write_atomic(d.path(), "pgpass", line.as_bytes(), 0o600).unwrap();
        let l = check_pgpass(d.path(), &e);
        assert!(
            !l.ok
                && l.detail.contains("database orders:")
                && l.detail
                    .contains("has no line for u@h:5432 (it has u@other:5432)"),
            "{l:?}"
        );
        crate::files::write_atomic(d.path(), "pgpass", line.as_bytes(), 0o644).unwrap();
        let l = check_pgpass(d.path(), &e);
        assert!(!l.ok && l.detail.contains("mode 0644"), "{l:?}");
    }

    #[test]
    fn signing_line_names_a_shortened_life_and_oversized_credentials() {
        let spec = TokenSpec {
            host: "db.example.com".into(),
            port: 5432,
            user: "app".into(),
            region: "us-east-1".into(),
        };
        let now = SystemTime::now();
        let c = Credentials::new("AKID", "s", None, Some(now + Duration::from_secs(300)), "t");
        let l = check_signing(&DbName::default_db(), &spec, &c, now);
        assert!(l.ok, "{l:?}");
        assert!(
            l.detail
                .ends_with("valid for 300s (limited by the credentials' expiry)"),
            "{l:?}"
        );
        let c = Credentials::new("AKID", "s", None, None, "t");
        let l = check_signing(&DbName::default_db(), &spec, &c, now);
        assert!(l.ok && l.detail.ends_with("valid for 900s"), "{l:?}");
        let c = Credentials::new("AKID", "s", Some("x".repeat(70_000)), None, "t");
        let l = check_signing(&DbName::default_db(), &spec, &c, now);
        assert!(!l.ok && l.detail.contains("session token"), "{l:?}");
        assert!(l.fix.unwrap().contains("credential source"));
    }

    #[tokio::test]
    async fn endpoint_without_tls_is_reported() {
        // A server that answers 'N' to SSLRequest, like PostgreSQL with ssl=off.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut b = [0u8; 8];
            s.read_exact(&mut b).await.unwrap();
            assert_eq!(b, [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
            s.write_all(b"N").await.unwrap();
        });
        let line = check_endpoint(&endpoint("127.0.0.1", port, Engine::Postgres)).await;
        assert!(!line.ok && line.detail.contains("refuses TLS"), "{line:?}");
        assert!(line.detail.starts_with("database orders:"), "{line:?}");
    }
}
