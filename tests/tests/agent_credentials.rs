//! The real agent binary against credential endpoints that misbehave:
//! credentials that expire soon or expired long ago, malformed answers (with
//! every log level on), credentials too long to sign, and answers of
//! hundreds of megabytes.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rds_iam_e2e::agentproc::{agent_command, run, wait_for_file, Ran};
use rds_iam_e2e::pgrds::{free_port, Client, PgRds, HOST, REGION};
use rds_iam_e2e::rt::rt;
use rds_iam_e2e::stubs::{self, Expiry, IssuedCreds, Mode, Stub};

const USER: &str = "app_user";
const POD_IDENTITY_JWT: &str = "eyJhbGciOiJSUzI1NiJ9.pod-identity-secret.sig";
const WEB_IDENTITY_JWT: &str = "eyJhbGciOiJSUzI1NiJ9.web-identity-secret.sig";

fn pg() -> &'static PgRds {
    static PG: OnceLock<PgRds> = OnceLock::new();
    PG.get_or_init(|| PgRds::start(&[USER]).expect("start the RDS-like PostgreSQL"))
}

/// The agent for a database at 127.0.0.1:`port`, writing into `dir`.
fn agent(home: &Path, dir: &Path, port: u16) -> Result<Command> {
    let mut cmd = agent_command(home)?;
    cmd.env("RDS_IAM_HOST", HOST)
        .env("RDS_IAM_PORT", port.to_string())
        .env("RDS_IAM_USER", USER)
        .env("RDS_IAM_REGION", REGION)
        .env("RDS_IAM_DIR", dir);
    Ok(cmd)
}

/// Points `cmd` at a Pod Identity endpoint.
fn pod_identity(cmd: &mut Command, home: &Path, ep: &str) -> Result<()> {
    let auth = home.join("eks-pod-identity-token");
    fs::write(&auth, POD_IDENTITY_JWT)?;
    cmd.env(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        format!("{ep}/v1/credentials"),
    )
    .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &auth);
    Ok(())
}

/// Points `cmd` at an STS endpoint (IRSA).
fn irsa(cmd: &mut Command, home: &Path, sts: &str) -> Result<()> {
    let jwt = home.join("web-identity-token");
    fs::write(&jwt, WEB_IDENTITY_JWT)?;
    cmd.env("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/demo-app")
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &jwt)
        .env("AWS_ENDPOINT_URL_STS", sts);
    Ok(())
}

fn param<'a>(token: &'a str, name: &str) -> &'a str {
    token
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or("")
}

/// Runs to completion, failing the test if that takes longer than `limit`.
fn run_within(cmd: &mut Command, limit: Duration) -> Result<(Ran, Duration)> {
    let t = Instant::now();
    let r = run(cmd)?;
    let took = t.elapsed();
    if took > limit {
        bail!("took {took:?} (limit {limit:?}):\n{}", r.stderr);
    }
    Ok((r, took))
}

/// A running agent whose stderr is collected as it comes.
struct Running {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Running {
    fn spawn(cmd: &mut Command) -> Result<Self> {
        let mut child = cmd.stderr(Stdio::piped()).spawn()?;
        let mut err = child.stderr.take().context("stderr")?;
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut b = [0u8; 4096];
            while let Ok(n) = err.read(&mut b) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&String::from_utf8_lossy(&b[..n]));
            }
        });
        Ok(Self { child, log })
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until the log holds `n` lines containing `needle`.
    fn wait_log(&self, needle: &str, n: usize, limit: Duration) -> Result<String> {
        let t = Instant::now();
        loop {
            let log = self.log();
            if log.matches(needle).count() >= n {
                return Ok(log);
            }
            if t.elapsed() > limit {
                bail!("{n} x {needle:?} not logged within {limit:?}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- The credential providers' own HTTP client, over TLS -----------------

/// The agent replaces aws-config's HTTP client (to cap answers): it must
/// still speak HTTPS and verify the endpoint against the system's roots
/// (`SSL_CERT_FILE` here).
#[test]
fn credentials_over_https_are_verified() -> Result<()> {
    let ep = rt().block_on(Stub::pod_identity())?;
    let (front, ca) = rt().block_on(stubs::tls_front(ep.addr))?;
    let home = tempfile::tempdir()?;
    let ca_file = home.path().join("ca.pem");
    fs::write(&ca_file, ca)?;
    let url = format!("https://localhost:{}", front.port());
    let dir = tempfile::tempdir()?;
    let mut cmd = agent(home.path(), dir.path(), 5432)?;
    pod_identity(&mut cmd, home.path(), &url)?;
    let (r, _) = run_within(
        cmd.env("SSL_CERT_FILE", &ca_file).arg("--once"),
        Duration::from_secs(20),
    )?;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let token = fs::read_to_string(dir.path().join("token"))?;
    assert!(
        param(&token, "X-Amz-Credential").starts_with(&ep.creds().akid),
        "signed with the credentials from the HTTPS endpoint"
    );
    // With another CA the endpoint is not trusted.
    let (_, other_ca) = rt().block_on(stubs::tls_front(ep.addr))?;
    let other = home.path().join("other-ca.pem");
    fs::write(&other, other_ca)?;
    let seen = ep.seen().len();
    let dir = tempfile::tempdir()?;
    let mut cmd = agent(home.path(), dir.path(), 5432)?;
    pod_identity(&mut cmd, home.path(), &url)?;
    let (r, _) = run_within(
        cmd.env("SSL_CERT_FILE", &other).arg("--once"),
        Duration::from_secs(20),
    )?;
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("token refresh failed"), "{}", r.stderr);
    assert_eq!(ep.seen().len(), seen, "no request got through");
    Ok(())
}

// ---- 5: a token never outlives the credentials that signed it ----------

#[test]
fn once_refuses_credentials_that_expire_soon_or_have_expired() -> Result<()> {
    let ep = rt().block_on(Stub::pod_identity())?;
    let sts = rt().block_on(Stub::sts())?;
    let cases: [(&Stub, Expiry, &str); 4] = [
        (&ep, Expiry::In(Duration::from_secs(120)), "expire in 11"),
        (&ep, Expiry::Ago(Duration::from_secs(3600)), "expired 360"),
        (&sts, Expiry::In(Duration::from_secs(120)), "expire in 11"),
        (&sts, Expiry::Ago(Duration::from_secs(3600)), "expired 360"),
    ];
    for (stub, expiry, when) in cases {
        stub.set_expiry(expiry.clone());
        let home = tempfile::tempdir()?;
        let dir = tempfile::tempdir()?;
        let mut cmd = agent(home.path(), dir.path(), 5432)?;
        if std::ptr::eq(stub, &ep) {
            pod_identity(&mut cmd, home.path(), &ep.url())?;
        } else {
            irsa(&mut cmd, home.path(), &sts.url())?;
        }
        let (r, _) = run_within(cmd.arg("--once"), Duration::from_secs(20))?;
        assert_eq!(r.code, Some(1), "{expiry:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(when)
                && r.stderr.contains("(expiry 20")
                && r.stderr
                    .contains("a token must stay valid for at least 120s"),
            "{expiry:?}: the error names the credentials' expiry:\n{}",
            r.stderr
        );
        assert_eq!(fs::read_dir(dir.path())?.count(), 0, "nothing written");
    }
    Ok(())
}

#[test]
fn a_token_lives_no_longer_than_its_credentials_and_still_logs_in() -> Result<()> {
    let ep = rt().block_on(Stub::pod_identity())?;
    ep.set_lifetime(Duration::from_secs(600));
    let c = ep.creds();
    pg().add_key(&c.akid, &c.secret, Some(&c.session_token))?;
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let mut cmd = agent(home.path(), dir.path(), pg().port())?;
    pod_identity(&mut cmd, home.path(), &ep.url())?;
    let (r, _) = run_within(cmd.arg("--once"), Duration::from_secs(20))?;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let token = fs::read_to_string(dir.path().join("token"))?;
    let expires: u64 = param(&token, "X-Amz-Expires").parse()?;
    // The whole seconds left when it was signed, moments after the stub
    // handed the credentials out.
    assert!((580..=600).contains(&expires), "X-Amz-Expires={expires}");
    // The RDS-like server checks the signed X-Amz-Expires and accepts it.
    let env = pg().libpq_env(USER, &dir.path().join("pgpass"));
    assert_eq!(pg().run_client(Client::Psql, &env)?, USER);
    // probe reads the same expiry.
    let probe = run(agent_command(home.path())?
        .args(["probe", "--dir"])
        .arg(dir.path()))?;
    assert_eq!(probe.code, Some(0), "{}", probe.stderr);
    let left: u64 = probe
        .stdout
        .trim()
        .strip_prefix("ok: token valid for ")
        .and_then(|s| s.strip_suffix('s'))
        .context("probe output")?
        .parse()?;
    assert!(left <= expires && left + 60 > expires, "{}", probe.stdout);
    let probe = run(agent_command(home.path())?
        .args(["probe", "--min-life", "10m1s", "--dir"])
        .arg(dir.path()))?;
    assert_eq!(probe.code, Some(1), "{}", probe.stdout);
    Ok(())
}

fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    use std::io::Write;
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

fn wait_port(port: u16, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > timeout {
            bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Credentials with a little over 2 minutes left, then the endpoint fails:
/// readiness and the probe follow the credentials' expiry, not 15 minutes.
#[test]
fn readiness_follows_credentials_that_run_out_during_an_outage() -> Result<()> {
    let ep = rt().block_on(Stub::pod_identity())?;
    ep.set_lifetime(Duration::from_secs(135));
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let mut cmd = agent(home.path(), dir.path(), 5432)?;
    pod_identity(&mut cmd, home.path(), &ep.url())?;
    let running = Running::spawn(cmd.args(["--health-addr", &format!("127.0.0.1:{port}")]))?;
    wait_port(port, Duration::from_secs(10))?;
    wait_for_file(&dir.path().join("pgpass"), Duration::from_secs(10))?;
    ep.set_mode(Mode::Fail);
    let (code, body) = http_get(port, "/readyz")?;
    assert_eq!(code, 200, "{body}");
    let left: u64 = body
        .lines()
        .next()
        .unwrap_or_default()
        .strip_prefix("ready: token valid for ")
        .and_then(|s| s.strip_suffix('s'))
        .context("readyz body")?
        .parse()?;
    assert!(left <= 135, "readiness announces {left}s");
    // The credentials reach 2 minutes left within about 15 s.
    let t = Instant::now();
    let body = loop {
        let (code, body) = http_get(port, "/readyz")?;
        if code == 503 {
            break body;
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("still ready after 30 s: {body}");
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        body.starts_with("not ready: token valid for only 1"),
        "{body}"
    );
    let probe = run(agent_command(home.path())?
        .args(["probe", "--dir"])
        .arg(dir.path()))?;
    assert_eq!(probe.code, Some(1), "{}", probe.stdout);
    assert!(
        probe.stderr.contains("less than the required 120s"),
        "{}",
        probe.stderr
    );
    // Still running, retrying, and saying why.
    running.wait_log("token refresh failed", 1, Duration::from_secs(30))?;
    Ok(())
}

#[test]
fn doctor_flags_expired_credentials() -> Result<()> {
    let ep = rt().block_on(Stub::pod_identity())?;
    ep.set_expiry(Expiry::Ago(Duration::from_secs(3600)));
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let mut cmd = agent(home.path(), dir.path(), free_port()?)?;
    pod_identity(&mut cmd, home.path(), &ep.url())?;
    let (r, _) = run_within(cmd.arg("doctor"), Duration::from_secs(30))?;
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    let line = r
        .stdout
        .lines()
        .find(|l| l.contains("aws identity"))
        .context("no aws identity line")?;
    assert!(
        line.starts_with("FAIL aws identity the credentials from EcsContainer expired 360"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("check this node's clock"), "{}", r.stdout);
    Ok(())
}

// ---- 6: no secret in any log line -------------------------------------

/// Every secret a credential path handles.
struct Secrets(Vec<String>);

impl Secrets {
    fn of(c: &IssuedCreds) -> Self {
        Self(vec![
            c.secret.clone(),
            c.session_token.clone(),
            WEB_IDENTITY_JWT.into(),
            POD_IDENTITY_JWT.into(),
            stubs::IMDS_SESSION_TOKEN.into(),
        ])
    }

    fn assert_absent(&self, case: &str, out: &str) {
        for s in &self.0 {
            assert!(
                !out.contains(s.as_str()),
                "{case}: a secret ({}...) is in the output:\n{out}",
                &s[..8]
            );
        }
    }
}

/// A credential_process that prints `json`.
fn credential_process(home: &Path, json: &str) -> Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let out = home.join("creds.json");
    fs::write(&out, json)?;
    let script = home.join("credential-process");
    fs::write(
        &script,
        format!("#!/bin/sh\nexec cat '{}'\n", out.display()),
    )?;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
    let config = home.join("config");
    fs::write(
        &config,
        format!("[default]\ncredential_process = {}\n", script.display()),
    )?;
    Ok(config)
}

#[test]
fn no_secret_reaches_the_logs_at_trace_level() -> Result<()> {
    let sts = rt().block_on(Stub::sts())?;
    let ep = rt().block_on(Stub::pod_identity())?;
    let imds = rt().block_on(Stub::imds())?;
    // The same credentials from every stub.
    let c = sts.creds();
    ep.set_creds(c.clone());
    imds.set_creds(c.clone());
    let secrets = Secrets::of(&c);
    let malformed: [(&str, Mode, Expiry); 4] = [
        (
            "Expiration not-a-date",
            Mode::Ok,
            Expiry::Text("not-a-date".into()),
        ),
        (
            "expired an hour ago",
            Mode::Ok,
            Expiry::Ago(Duration::from_secs(3600)),
        ),
        (
            "truncated",
            Mode::Truncated,
            Expiry::In(Duration::from_secs(3600)),
        ),
        (
            "status 500 with the credentials",
            Mode::FailWithCredentials,
            Expiry::In(Duration::from_secs(3600)),
        ),
    ];
    let mut runs = 0;
    for format in ["text", "json"] {
        for (what, mode, expiry) in &malformed {
            for (path, stub) in [("IRSA", &sts), ("Pod Identity", &ep), ("IMDS", &imds)] {
                stub.set_mode(*mode);
                stub.set_expiry(expiry.clone());
                let home = tempfile::tempdir()?;
                let dir = tempfile::tempdir()?;
                let mut cmd = agent(home.path(), dir.path(), 5432)?;
                cmd.env("RUST_LOG", "trace")
                    .env("RDS_IAM_LOG_FORMAT", format);
                match path {
                    "IRSA" => irsa(&mut cmd, home.path(), &sts.url())?,
                    "Pod Identity" => pod_identity(&mut cmd, home.path(), &ep.url())?,
                    _ => {
                        cmd.env_remove("AWS_EC2_METADATA_DISABLED")
                            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url());
                    }
                }
                let (r, _) = run_within(cmd.arg("--once"), Duration::from_secs(30))?;
                let case = format!("{path}, {what}, {format} logs");
                // aws-config's IMDS provider extends expired instance
                // credentials by about 15 minutes ("static stability"), so
                // that case signs; every other one fails.
                if path == "IMDS" && what.starts_with("expired") {
                    assert_eq!(r.code, Some(0), "{case}: {}", r.stderr);
                } else {
                    assert_eq!(r.code, Some(1), "{case}: {}", r.stderr);
                    assert!(
                        r.stderr.contains("token refresh failed"),
                        "{case}: {}",
                        r.stderr
                    );
                }
                secrets.assert_absent(&case, &r.stdout);
                secrets.assert_absent(&case, &r.stderr);
                runs += 1;
            }
        }
        // credential_process, with an unparsable expiry and cut short.
        let body = format!(
            "{{\"Version\": 1, \"AccessKeyId\": \"{}\", \"SecretAccessKey\": \"{}\", \
             \"SessionToken\": \"{}\", \"Expiration\": \"not-a-date\"}}",
            c.akid, c.secret, c.session_token
        );
        for (what, json) in [
            ("Expiration not-a-date", body.clone()),
            ("truncated", body[..body.len() - 2].to_owned()),
        ] {
            let home = tempfile::tempdir()?;
            let dir = tempfile::tempdir()?;
            let config = credential_process(home.path(), &json)?;
            let (r, _) = run_within(
                agent(home.path(), dir.path(), 5432)?
                    .env("RUST_LOG", "trace")
                    .env("RDS_IAM_LOG_FORMAT", format)
                    .env("AWS_CONFIG_FILE", &config)
                    .arg("--once"),
                Duration::from_secs(30),
            )?;
            let case = format!("credential_process, {what}, {format} logs");
            assert_eq!(r.code, Some(1), "{case}: {}", r.stderr);
            secrets.assert_absent(&case, &r.stdout);
            secrets.assert_absent(&case, &r.stderr);
            runs += 1;
        }
        // Environment credentials too long to sign.
        let home = tempfile::tempdir()?;
        let dir = tempfile::tempdir()?;
        let long = IssuedCreds::random(70_000);
        let (r, _) = run_within(
            agent(home.path(), dir.path(), 5432)?
                .env("RUST_LOG", "trace")
                .env("RDS_IAM_LOG_FORMAT", format)
                .env("AWS_ACCESS_KEY_ID", &long.akid)
                .env("AWS_SECRET_ACCESS_KEY", &long.secret)
                .env("AWS_SESSION_TOKEN", &long.session_token)
                .arg("--once"),
            Duration::from_secs(30),
        )?;
        assert_eq!(r.code, Some(1), "{}", r.stderr);
        Secrets::of(&long).assert_absent("environment, too long", &r.stderr);
        runs += 1;
    }
    assert_eq!(runs, 2 * (4 * 3 + 2 + 1));
    // A good answer at trace level: the agent's own lines are there, and
    // still no secret.
    sts.set_mode(Mode::Ok);
    sts.set_expiry(Expiry::In(Duration::from_secs(3600)));
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let mut cmd = agent(home.path(), dir.path(), 5432)?;
    irsa(&mut cmd, home.path(), &sts.url())?;
    let (r, _) = run_within(
        cmd.env("RUST_LOG", "trace").arg("--once"),
        Duration::from_secs(30),
    )?;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr.contains("fetched AWS credentials") && r.stderr.contains("token written"),
        "{}",
        r.stderr
    );
    let token = fs::read_to_string(dir.path().join("token"))?;
    let mut with_token = Secrets::of(&c);
    with_token.0.push(token);
    with_token.assert_absent("IRSA, good answer", &r.stderr);
    Ok(())
}

// ---- 7: credentials too long to sign ------------------------------------

#[test]
fn oversized_credentials_fail_once_promptly_and_never_crash_the_loop() -> Result<()> {
    let long = "A".repeat(70_000);
    for (var, what) in [
        ("AWS_SESSION_TOKEN", "session token"),
        ("AWS_ACCESS_KEY_ID", "access key ID"),
    ] {
        let home = tempfile::tempdir()?;
        let dir = tempfile::tempdir()?;
        let mut cmd = agent(home.path(), dir.path(), 5432)?;
        cmd.env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
            .env("AWS_SECRET_ACCESS_KEY", "secret")
            .env(var, &long);
        let (r, took) = run_within(cmd.arg("--once"), Duration::from_secs(10))?;
        assert_eq!(r.code, Some(1), "{var}: {}", r.stderr);
        assert!(
            r.stderr.contains(&format!(
                "the {what} from EnvironmentVariable is 70000 bytes long"
            )),
            "{var}: {}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        eprintln!("--once with a 70,000-byte {what}: exit 1 after {took:?}");
        // doctor says so too, instead of aborting.
        let mut cmd = agent(home.path(), dir.path(), free_port()?)?;
        cmd.env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
            .env("AWS_SECRET_ACCESS_KEY", "secret")
            .env(var, &long);
        let (r, _) = run_within(cmd.arg("doctor"), Duration::from_secs(30))?;
        assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
        assert!(
            r.stdout.contains(&format!("FAIL signing      the {what}")),
            "{}",
            r.stdout
        );
    }
    // The long-running agent keeps retrying, with its backoff, without crashing.
    let ep = rt().block_on(Stub::pod_identity())?;
    let mut c = IssuedCreds::random(100);
    c.session_token = "B".repeat(70_000);
    ep.set_creds(c);
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let mut cmd = agent(home.path(), dir.path(), 5432)?;
    pod_identity(&mut cmd, home.path(), &ep.url())?;
    let mut running = Running::spawn(&mut cmd)?;
    // Retries after 1 s, 2 s ...
    let log = running.wait_log("token refresh failed", 3, Duration::from_secs(10))?;
    assert!(
        running.child.try_wait()?.is_none(),
        "the agent exited: {log}"
    );
    assert!(
        log.contains("the session token from EcsContainer is 70000 bytes long"),
        "{log}"
    );
    assert!(ep.seen().len() >= 3, "the endpoint was asked again");
    Ok(())
}

// ---- 8: the size of a credential answer is capped ------------------------

fn vm_hwm_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmHWM value")?
        .parse()?)
}

#[test]
fn a_huge_credential_answer_is_not_read() -> Result<()> {
    const PADDING: u64 = 200 * 1024 * 1024;
    let c = IssuedCreds::random(900);
    let json = stubs::container_json(
        &c,
        &humantime::format_rfc3339_seconds(
            std::time::SystemTime::now() + Duration::from_secs(3600),
        )
        .to_string(),
    );
    // Chunked: the long-running agent gives up after the cap, every time.
    let padded = rt().block_on(stubs::padded_endpoint(json.clone(), PADDING, false))?;
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let mut cmd = agent(home.path(), dir.path(), 5432)?;
    pod_identity(&mut cmd, home.path(), &format!("http://{}", padded.addr))?;
    let running = Running::spawn(&mut cmd)?;
    // Three attempts: the first and the retries after 1 s and 2 s.
    let log = running.wait_log("token refresh failed", 3, Duration::from_secs(30))?;
    let hwm = vm_hwm_kib(running.child.id())?;
    // Read the request count first: `sent` only grows after it.
    let requests = padded.requests.load(std::sync::atomic::Ordering::Relaxed);
    let sent = padded.sent.load(std::sync::atomic::Ordering::Relaxed);
    let per_request = sent / requests.max(1);
    eprintln!(
        "200 MB chunked answers: agent VmHWM {hwm} KiB; {requests} requests, {} KiB sent \
         per request before the agent hung up",
        per_request / 1024
    );
    assert!(
        log.contains("token refresh failed")
            && log.contains("the credential endpoint's answer is larger than 1048576 bytes"),
        "{log}"
    );
    assert!(!dir.path().join("token").exists());
    assert!(hwm < 50 * 1024, "VmHWM {hwm} KiB");
    // The cap plus what the kernel's socket buffers take in.
    assert!(
        requests >= 3 && per_request < 16 * 1024 * 1024,
        "{sent} bytes sent in {requests} requests"
    );
    // Declared length: refused before the body is read; --once fails fast.
    let padded = rt().block_on(stubs::padded_endpoint(json, PADDING, true))?;
    let mut cmd = agent(home.path(), dir.path(), 5432)?;
    pod_identity(&mut cmd, home.path(), &format!("http://{}", padded.addr))?;
    let (r, _) = run_within(cmd.arg("--once"), Duration::from_secs(20))?;
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("the credential endpoint's answer is larger than 1048576 bytes"),
        "{}",
        r.stderr
    );
    Ok(())
}
