//! The real agent binary, each credential source of the real aws-config
//! chain pointed at a loopback endpoint, and the RDS-like PostgreSQL: the
//! agent's pgpass logs unmodified clients in.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rds_iam_e2e::agentproc::{agent_command, run, wait_for_file, Ran};
use rds_iam_e2e::pgrds::{free_port, repo_root, Client, PgRds, HOST, REGION};
use rds_iam_e2e::rt::rt;
use rds_iam_e2e::stubs::{IssuedCreds, Mode, Stub};

const USER: &str = "app_user";

fn pg() -> &'static PgRds {
    static PG: OnceLock<PgRds> = OnceLock::new();
    PG.get_or_init(|| PgRds::start(&[USER, "other_user"]).expect("start the RDS-like PostgreSQL"))
}

/// The agent command for `pg()`, writing into `dir`.
fn agent(home: &Path, dir: &Path) -> Result<Command> {
    let mut cmd = agent_command(home)?;
    cmd.env("RDS_IAM_HOST", HOST)
        .env("RDS_IAM_PORT", pg().port().to_string())
        .env("RDS_IAM_USER", USER)
        .env("RDS_IAM_REGION", REGION)
        .env("RDS_IAM_DIR", dir);
    Ok(cmd)
}

fn once(cmd: &mut Command) -> Result<Ran> {
    let r = run(cmd.arg("--once"))?;
    Ok(r)
}

fn expect_ok(r: &Ran) {
    assert_eq!(r.code, Some(0), "agent failed:\n{}", r.stderr);
}

/// Every client logs in as USER with the agent's pgpass.
fn all_clients_connect(dir: &Path) -> Result<()> {
    let env = pg().libpq_env(USER, &dir.join("pgpass"));
    for kind in Client::ALL {
        let who = pg()
            .run_client(kind, &env)
            .with_context(|| format!("{kind:?}"))?;
        assert_eq!(who, USER, "{kind:?}");
    }
    Ok(())
}

fn psql_connects(dir: &Path) -> Result<()> {
    let env = pg().libpq_env(USER, &dir.join("pgpass"));
    let who = pg().run_client(Client::Psql, &env)?;
    assert_eq!(who, USER);
    Ok(())
}

fn assert_no_secrets_in(log: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !s.is_empty() && !log.contains(s),
            "a secret appears in the log:\n{log}"
        );
    }
}

#[test]
fn static_env_credentials_all_clients_connect() -> Result<()> {
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let c = IssuedCreds::random(1500);
    pg().add_key(&c.akid, &c.secret, Some(&c.session_token))?;
    let r = once(
        agent(home.path(), dir.path())?
            .env("AWS_ACCESS_KEY_ID", &c.akid)
            .env("AWS_SECRET_ACCESS_KEY", &c.secret)
            .env("AWS_SESSION_TOKEN", &c.session_token),
    )?;
    expect_ok(&r);
    for f in ["token", "pgpass"] {
        let mode = fs::metadata(dir.path().join(f))?.permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let token = fs::read_to_string(dir.path().join("token"))?;
    assert!(
        token.len() > 1500,
        "a session token makes a long token: {}",
        token.len()
    );
    assert_no_secrets_in(&r.stderr, &[&token, &c.secret, &c.session_token]);
    all_clients_connect(dir.path())
}

#[test]
fn agent_tokens_are_rejected_when_wrong() -> Result<()> {
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let c = IssuedCreds::random(100);
    pg().add_key(&c.akid, &c.secret, Some(&c.session_token))?;
    let cmd = || -> Result<Command> {
        let mut cmd = agent(home.path(), dir.path())?;
        cmd.env("AWS_ACCESS_KEY_ID", &c.akid)
            .env("AWS_SECRET_ACCESS_KEY", &c.secret)
            .env("AWS_SESSION_TOKEN", &c.session_token);
        Ok(cmd)
    };
    expect_ok(&once(&mut cmd()?)?);
    let pgpass = dir.path().join("pgpass");
    // Another user finds no line in this pgpass and has no password.
    let env = pg().libpq_env("other_user", &pgpass);
    let e = pg().run_client(Client::Psql, &env).unwrap_err().to_string();
    assert!(e.contains("no password supplied"), "{e}");
    // A tampered signature is refused.
    let text = fs::read_to_string(&pgpass)?;
    let last = text.trim_end().chars().last().context("empty pgpass")?;
    let flipped = if last == '0' { '1' } else { '0' };
    let tampered = format!(
        "{}{flipped}\n",
        &text.trim_end()[..text.trim_end().len() - 1]
    );
    fs::write(&pgpass, tampered)?;
    let e = pg()
        .run_client(Client::Psql, &pg().libpq_env(USER, &pgpass))
        .unwrap_err()
        .to_string();
    assert!(e.contains("PAM authentication failed"), "{e}");
    // Without TLS the server refuses before checking anything.
    expect_ok(&once(&mut cmd()?)?);
    let mut env = pg().libpq_env(USER, &pgpass);
    env.retain(|(k, _)| k != "PGSSLMODE");
    env.push(("PGSSLMODE".into(), "disable".into()));
    let e = pg().run_client(Client::Psql, &env).unwrap_err().to_string();
    assert!(e.contains("no encryption"), "{e}");
    Ok(())
}

#[test]
fn irsa_web_identity_against_local_sts() -> Result<()> {
    let sts = rt().block_on(Stub::sts())?;
    let c = sts.creds();
    pg().add_key(&c.akid, &c.secret, Some(&c.session_token))?;
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let jwt = home.path().join("token");
    fs::write(&jwt, "eyJhbGciOiJSUzI1NiJ9.irsa-projected-token.sig")?;
    let r = once(
        agent(home.path(), dir.path())?
            .env("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/demo-app")
            .env("AWS_WEB_IDENTITY_TOKEN_FILE", &jwt)
            .env("AWS_ENDPOINT_URL_STS", sts.url()),
    )?;
    expect_ok(&r);
    let seen = sts.seen();
    assert_eq!(seen.len(), 1, "one STS call");
    let form = rds_iam_e2e::stubs::form(&seen[0].body);
    assert_eq!(form["Action"], "AssumeRoleWithWebIdentity");
    assert_eq!(form["RoleArn"], "arn:aws:iam::123456789012:role/demo-app");
    assert_eq!(
        form["WebIdentityToken"],
        "eyJhbGciOiJSUzI1NiJ9.irsa-projected-token.sig"
    );
    assert_no_secrets_in(&r.stderr, &[&c.secret, &c.session_token]);
    psql_connects(dir.path())
}

#[test]
fn irsa_sts_denied_is_reported() -> Result<()> {
    let sts = rt().block_on(Stub::sts())?;
    sts.set_mode(Mode::Deny);
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let jwt = home.path().join("token");
    fs::write(&jwt, "jwt")?;
    let r = once(
        agent(home.path(), dir.path())?
            .env("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/demo-app")
            .env("AWS_WEB_IDENTITY_TOKEN_FILE", &jwt)
            .env("AWS_ENDPOINT_URL_STS", sts.url()),
    )?;
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("AccessDenied"), "{}", r.stderr);
    assert!(!dir.path().join("pgpass").exists());
    Ok(())
}

#[test]
fn irsa_against_moto_sts() -> Result<()> {
    let port = free_port()?;
    let moto = repo_root().join(".venv/bin/moto_server");
    if !moto.exists() {
        bail!("{} is missing; run testenv/setup.sh", moto.display());
    }
    let mut server = KillOnDrop(
        Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_port(port, Duration::from_secs(30))?;
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let jwt = home.path().join("token");
    fs::write(&jwt, "eyJhbGciOiJSUzI1NiJ9.moto.sig")?;
    let r = once(
        agent(home.path(), dir.path())?
            .env("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/demo-app")
            .env("AWS_WEB_IDENTITY_TOKEN_FILE", &jwt)
            .env("AWS_ENDPOINT_URL_STS", format!("http://127.0.0.1:{port}")),
    )?;
    expect_ok(&r);
    let token = fs::read_to_string(dir.path().join("token"))?;
    // moto's temporary credentials: an ASIA key and a session token.
    assert!(
        token.contains("&X-Amz-Credential=ASIA"),
        "{}",
        &token[..120]
    );
    assert!(token.contains("&X-Amz-Security-Token="));
    let _ = server.0.kill();
    Ok(())
}

#[test]
fn eks_pod_identity_against_local_endpoint() -> Result<()> {
    let ep = rt().block_on(Stub::pod_identity())?;
    let c = ep.creds();
    pg().add_key(&c.akid, &c.secret, Some(&c.session_token))?;
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let auth = home.path().join("eks-pod-identity-token");
    fs::write(&auth, "eyJhbGciOiJSUzI1NiJ9.pod-identity.sig")?;
    let r = once(
        agent(home.path(), dir.path())?
            .env(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("{}/v1/credentials", ep.url()),
            )
            .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &auth),
    )?;
    expect_ok(&r);
    let seen = ep.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/credentials");
    assert_eq!(
        seen[0].headers.get("authorization").map(String::as_str),
        Some("eyJhbGciOiJSUzI1NiJ9.pod-identity.sig"),
        "the Authorization header is the token file's content"
    );
    psql_connects(dir.path())
}

#[test]
fn profile_credentials() -> Result<()> {
    let c = IssuedCreds::random(0);
    pg().add_key(&c.akid, &c.secret, None)?;
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let creds_file = home.path().join("credentials");
    fs::write(
        &creds_file,
        format!("[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[db]\naws_access_key_id = {}\naws_secret_access_key = {}\n", c.akid, c.secret),
    )?;
    let r = once(
        agent(home.path(), dir.path())?
            .env("AWS_SHARED_CREDENTIALS_FILE", &creds_file)
            .env("AWS_CONFIG_FILE", home.path().join("config"))
            .env("AWS_PROFILE", "db"),
    )?;
    expect_ok(&r);
    psql_connects(dir.path())
}

#[test]
fn imds_credentials() -> Result<()> {
    let imds = rt().block_on(Stub::imds())?;
    let c = imds.creds();
    pg().add_key(&c.akid, &c.secret, Some(&c.session_token))?;
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let r = once(
        agent(home.path(), dir.path())?
            .env_remove("AWS_EC2_METADATA_DISABLED")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url()),
    )?;
    expect_ok(&r);
    assert!(
        imds.seen().iter().any(|s| s.path == "/latest/api/token"),
        "IMDSv2 session token requested"
    );
    psql_connects(dir.path())
}

#[test]
fn no_credentials_is_actionable() -> Result<()> {
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let r = once(&mut agent(home.path(), dir.path())?)?;
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    for hint in [
        "no AWS credentials found",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        assert!(
            r.stderr.contains(hint),
            "missing {hint:?} in:\n{}",
            r.stderr
        );
    }
    assert!(!dir.path().join("token").exists());
    Ok(())
}

#[test]
fn invalid_flags_exit_before_any_work() -> Result<()> {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("RDS_IAM_HOST", "")], "--host (RDS_IAM_HOST)"),
        (
            &[("RDS_IAM_HOST", "db:5432")],
            "--host (RDS_IAM_HOST): \"db:5432\" contains ':' at byte 2; write",
        ),
        (
            &[("RDS_IAM_HOST", "db host")],
            "--host (RDS_IAM_HOST): \"db host\" contains whitespace",
        ),
        (
            &[("RDS_IAM_HOST", "db\nhost")],
            "--host (RDS_IAM_HOST): \"db\\nhost\" contains a control character",
        ),
        (
            &[("RDS_IAM_USER", "a:b")],
            "--user (RDS_IAM_USER): \"a:b\" contains ':'",
        ),
        (
            &[("RDS_IAM_USER", "a\nb")],
            "--user (RDS_IAM_USER): \"a\\nb\" contains a control character",
        ),
        (
            &[("RDS_IAM_PORT", "0")],
            "--port (RDS_IAM_PORT): \"0\" is outside 1..65535; write a port from 1 to 65535",
        ),
        (
            &[("RDS_IAM_PORT", "70000")],
            "--port (RDS_IAM_PORT): \"70000\" is outside 1..65535; write a port from 1 to 65535",
        ),
        (
            &[("RDS_IAM_REFRESH_INTERVAL", "20s")],
            "--interval (RDS_IAM_REFRESH_INTERVAL)",
        ),
        (
            &[("RDS_IAM_REFRESH_INTERVAL", "1h")],
            "--interval (RDS_IAM_REFRESH_INTERVAL)",
        ),
        (
            &[("RDS_IAM_REGION", ""), ("RDS_IAM_HOST", "db.internal")],
            "the AWS region cannot be determined",
        ),
    ];
    for (env, want) in cases {
        let home = tempfile::tempdir()?;
        let dir = tempfile::tempdir()?;
        let sts = dir.path().join("never-used");
        let mut cmd = agent(home.path(), dir.path())?;
        // Credentials that would work: nothing must be attempted anyway.
        cmd.env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
            .env("AWS_SECRET_ACCESS_KEY", "x");
        for (k, v) in *env {
            cmd.env(k, v);
        }
        let r = once(&mut cmd)?;
        assert_eq!(r.code, Some(2), "{env:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(want),
            "{env:?}: want {want:?} in {:?}",
            r.stderr
        );
        assert_eq!(
            fs::read_dir(dir.path())?.count(),
            0,
            "{env:?}: files were written"
        );
        assert!(!sts.exists());
    }
    Ok(())
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}")
}

fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status: u16 = out.get(9..12).context("short response")?.parse()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

#[test]
fn long_running_agent_serves_health_and_stops_on_sigterm() -> Result<()> {
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let c = IssuedCreds::random(600);
    pg().add_key(&c.akid, &c.secret, Some(&c.session_token))?;
    let port = free_port()?;
    let mut child = KillOnDrop(
        agent(home.path(), dir.path())?
            .env("AWS_ACCESS_KEY_ID", &c.akid)
            .env("AWS_SECRET_ACCESS_KEY", &c.secret)
            .env("AWS_SESSION_TOKEN", &c.session_token)
            .args(["--health-addr", &format!("127.0.0.1:{port}")])
            .stderr(Stdio::piped())
            .spawn()?,
    );
    wait_port(port, Duration::from_secs(10))?;
    wait_for_file(&dir.path().join("pgpass"), Duration::from_secs(10))?;
    assert_eq!(http_get(port, "/healthz")?.0, 200);
    let (code, body) = http_get(port, "/readyz")?;
    assert_eq!(code, 200, "{body}");
    let (code, metrics) = http_get(port, "/metrics")?;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("rds_iam_token_refresh_total{db=\"default\",result=\"success\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rds_iam_token_expiry_timestamp_seconds{db=\"default\"} 1"),
        "{metrics}"
    );
    psql_connects(dir.path())?;
    // The exec probe passes on these files.
    let probe = run(agent_command(home.path())?
        .args(["probe", "--dir"])
        .arg(dir.path()))?;
    assert_eq!(probe.code, Some(0), "{}", probe.stderr);
    let probe = run(agent_command(home.path())?
        .args(["probe", "--min-life", "15m1s", "--dir"])
        .arg(dir.path()))?;
    assert_eq!(probe.code, Some(1), "a token never has more than 15m left");
    assert!(
        probe.stderr.contains("less than the required 901s"),
        "{}",
        probe.stderr
    );

    let pid = child.0.id().to_string();
    let sent = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()?
        .success());
    let status = loop {
        if let Some(s) = child.0.try_wait()? {
            break s;
        }
        if sent.elapsed() > Duration::from_secs(5) {
            bail!("the agent did not exit within 5 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = sent.elapsed();
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(1), "SIGTERM took {took:?}");
    let mut log = String::new();
    child
        .0
        .stderr
        .take()
        .context("stderr")?
        .read_to_string(&mut log)?;
    let token = fs::read_to_string(dir.path().join("token"))?;
    assert!(
        log.contains("token refreshed") && log.contains("SIGTERM received"),
        "{log}"
    );
    assert_no_secrets_in(&log, &[&token, &c.secret, &c.session_token]);
    Ok(())
}

#[test]
fn doctor_reports_each_check_and_its_fix() -> Result<()> {
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let c = IssuedCreds::random(200);
    pg().add_key(&c.akid, &c.secret, Some(&c.session_token))?;
    let with_creds = |cmd: &mut Command| {
        cmd.env("AWS_ACCESS_KEY_ID", &c.akid)
            .env("AWS_SECRET_ACCESS_KEY", &c.secret)
            .env("AWS_SESSION_TOKEN", &c.session_token);
    };
    let mut cmd = agent(home.path(), dir.path())?;
    with_creds(&mut cmd);
    expect_ok(&once(&mut cmd)?);

    let mut cmd = agent(home.path(), dir.path())?;
    with_creds(&mut cmd);
    let r = run(cmd.arg("doctor"))?;
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    for want in [
        "OK   credentials  configured: AWS_ACCESS_KEY_ID",
        "OK   region       database default: us-east-1 (set explicitly)",
        "OK   aws identity got credentials from Environment",
        "OK   signing",
        "accepts TLS",
        "mode 0600, token valid for",
    ] {
        assert!(
            r.stdout.contains(want),
            "missing {want:?} in:\n{}",
            r.stdout
        );
    }
    assert_no_secrets_in(&r.stdout, &[&c.secret, &c.session_token]);

    // Nothing listens on the port, and no credentials: each line says the fix.
    let closed = free_port()?;
    let r = run(agent(home.path(), dir.path())?
        .env("RDS_IAM_PORT", closed.to_string())
        .arg("doctor"))?;
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert!(r.stdout.contains("FAIL credentials"), "{}", r.stdout);
    assert!(
        r.stdout.contains("FAIL endpoint") && r.stdout.contains("fix:"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("FAIL pgpass")
            && r.stdout.contains("has no line for app_user@localhost:"),
        "{}",
        r.stdout
    );
    Ok(())
}
