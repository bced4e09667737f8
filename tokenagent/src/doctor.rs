//! `rds-iam-tokenagent doctor`: one screen that says what works and, for
//! each failing line, how to fix it.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use rds_iam_common::{PGPASS_FILE, TOKEN_LIFETIME_SECS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::agent::READY_MIN_LIFE;
use crate::cli::RunArgs;
use crate::creds::{self, CredentialSource, CredsError};
use crate::pgpass;
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
    lines.push(Line::ok(
        "region",
        format!("{} ({})", cfg.spec.region, cfg.region_source),
    ));
    let source = CredentialSource::default_chain(&cfg.spec.region)
        .await
        .with_fetch_timeout(Duration::from_secs(15));
    match source.credentials(READY_MIN_LIFE).await {
        Ok(c) => {
            lines.push(Line::ok(
                "aws identity",
                format!(
                    "got credentials from {} (key {}…, {})",
                    creds::provider_name(&c),
                    c.access_key_id().chars().take(4).collect::<String>(),
                    c.expiry()
                        .map(|e| format!("expire {}", humantime::format_rfc3339_seconds(e)))
                        .unwrap_or_else(|| "no expiry".into())
                ),
            ));
            lines.push(check_signing(&cfg.spec, &c, SystemTime::now()));
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
    lines.push(check_endpoint(&cfg.spec.host, cfg.spec.port).await);
    lines.push(check_pgpass(
        &dir,
        &cfg.spec.host,
        cfg.spec.port,
        &cfg.spec.user,
    ));
    lines
}

/// Signs a token with `c` and says how long it lives.
fn check_signing(spec: &TokenSpec, c: &Credentials, now: SystemTime) -> Line {
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
                    "signed a {}-byte token for {}@{}:{}, valid for {}s{limited}",
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

/// DNS, TCP and PostgreSQL's SSLRequest: the server must answer `S`.
async fn check_endpoint(host: &str, port: u16) -> Line {
    let addrs: Vec<_> =
        match tokio::time::timeout(NET_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => {
                return Line::fail(
                    "endpoint",
                    format!("{host} does not resolve: {e}"),
                    "check --host / rds-iam/host and the pod's DNS",
                )
            }
            Err(_) => {
                return Line::fail(
                    "endpoint",
                    format!("resolving {host} timed out"),
                    "check the pod's DNS",
                )
            }
        };
    let Some(addr) = addrs.first().copied() else {
        return Line::fail(
            "endpoint",
            format!("{host} has no addresses"),
            "check --host / rds-iam/host",
        );
    };
    let mut stream =
        match tokio::time::timeout(NET_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Line::fail(
                    "endpoint",
                    format!("cannot connect to {addr}: {e}"),
                    "check the port and the DB security group / network policy",
                )
            }
            Err(_) => {
                return Line::fail(
                    "endpoint",
                    format!("connecting to {addr} timed out"),
                    "allow the pod to reach the DB in its security group / network policy",
                )
            }
        };
    // SSLRequest: length 8, code 80877103.
    let req = [0u8, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let mut answer = [0u8; 1];
    let talk = async {
        stream.write_all(&req).await?;
        stream.read_exact(&mut answer).await
    };
    match tokio::time::timeout(NET_TIMEOUT, talk).await {
        Ok(Ok(_)) if answer[0] == b'S' => {
            Line::ok("endpoint", format!("{host}:{port} ({addr}) accepts TLS"))
        }
        Ok(Ok(_)) => Line::fail(
            "endpoint",
            format!("{host}:{port} ({addr}) refuses TLS"),
            "IAM authentication needs TLS; enable ssl on the server",
        ),
        Ok(Err(e)) => Line::fail(
            "endpoint",
            format!("{addr} closed the connection: {e}"),
            "is this a PostgreSQL port?",
        ),
        Err(_) => Line::fail(
            "endpoint",
            format!("{addr} did not answer the TLS request"),
            "is this a PostgreSQL port?",
        ),
    }
}

fn check_pgpass(dir: &Path, host: &str, port: u16, user: &str) -> Line {
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
    let Some(f) = text.lines().next().and_then(pgpass::parse_line) else {
        return Line::fail(
            "pgpass",
            format!("{} is malformed", path.display()),
            "delete it; the agent rewrites it",
        );
    };
    if f[0] != host || f[1] != port.to_string() || f[3] != user {
        return Line::fail(
            "pgpass",
            format!(
                "{} is for {}@{}:{}, not {user}@{host}:{port}",
                path.display(),
                f[3],
                f[0],
                f[1]
            ),
            "PGHOST/PGPORT/PGUSER must equal the agent's --host/--port/--user",
        );
    }
    match token::expires_at(&f[4]) {
        Ok(exp) => {
            let left = exp.duration_since(SystemTime::now()).unwrap_or_default();
            if left.is_zero() {
                Line::fail(
                    "pgpass",
                    format!("{} holds an expired token", path.display()),
                    "check the agent's logs for refresh errors",
                )
            } else {
                Line::ok(
                    "pgpass",
                    format!(
                        "{} is readable, mode 0600, token valid for {}s",
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

    #[test]
    fn pgpass_checks() {
        let d = tempfile::tempdir().unwrap();
        let l = check_pgpass(d.path(), "h", 5432, "u");
        assert!(!l.ok && l.detail.contains("No such file"), "{l:?}");
        let line = pgpass::line("other", 5432, "u", "t").unwrap();
        crate::files::write_atomic(d.path(), "pgpass", line.as_bytes(), 0o600).unwrap();
        let l = check_pgpass(d.path(), "h", 5432, "u");
        assert!(!l.ok && l.detail.contains("not u@h:5432"), "{l:?}");
        crate::files::write_atomic(d.path(), "pgpass", line.as_bytes(), 0o644).unwrap();
        let l = check_pgpass(d.path(), "h", 5432, "u");
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
        let l = check_signing(&spec, &c, now);
        assert!(l.ok, "{l:?}");
        assert!(
            l.detail
                .ends_with("valid for 300s (limited by the credentials' expiry)"),
            "{l:?}"
        );
        let c = Credentials::new("AKID", "s", None, None, "t");
        let l = check_signing(&spec, &c, now);
        assert!(l.ok && l.detail.ends_with("valid for 900s"), "{l:?}");
        let c = Credentials::new("AKID", "s", Some("x".repeat(70_000)), None, "t");
        let l = check_signing(&spec, &c, now);
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
        let line = check_endpoint("127.0.0.1", port).await;
        assert!(!line.ok && line.detail.contains("refuses TLS"), "{line:?}");
    }
}
