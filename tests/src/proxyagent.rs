//! The real `rds-iam-tokenagent` binary in proxy mode, for the proxy tests
//! and benchmarks: started with its databases in `RDS_IAM_DATABASES` (one
//! spec per line, as the webhook injects them), static credentials the lab
//! trusts, a health port, and its log in a file; stopped with SIGTERM or
//! killed on drop.
//!
//! Clients get what the webhook injects in proxy mode ([`ProxyAgent::env`]):
//! the socket directory in PGHOST, PGPORT=5432, PGSSLMODE=disable, and the
//! files the agent still writes (PGPASSFILE, RDS_IAM_TOKEN_FILE). No
//! password anywhere.

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::agentproc::agent_bin;
use crate::pgrds::{free_port, require_cmd};
use crate::pgwire::Addr;
use crate::rdslab::run_probe;
use crate::stubs::IssuedCreds;

/// The database name of the unnamed annotations: its socket is `DIR/.s.PGSQL.5432`.
pub const DEFAULT_DB: &str = "default";
/// How long the agent may take to bind its sockets and write its tokens.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A `--db` spec for a PostgreSQL in proxy mode: `NAME=postgres://USER@HOST:PORT/DATABASE?region=us-east-1&mode=proxy` and `extra` (e.g. `&proxy-port=6432`).
pub fn proxy_spec(
    name: &str,
    user: &str,
    host: &str,
    port: u16,
    database: &str,
    extra: &str,
) -> String {
    format!("{name}=postgres://{user}@{host}:{port}/{database}?region=us-east-1&mode=proxy{extra}")
}

/// [`proxy_spec`] for the default database of a server on `localhost:port`,
/// whose user and database are both `user`.
pub fn local_proxy_spec(port: u16, user: &str) -> String {
    proxy_spec(DEFAULT_DB, user, "localhost", port, user, "")
}

/// How to start a [`ProxyAgent`].
#[derive(Debug, Clone, Default)]
pub struct ProxyAgentBuilder {
    dbs: Vec<String>,
    args: Vec<String>,
    creds: Option<IssuedCreds>,
    nofile: Option<(u64, u64)>,
    no_token: bool,
    bin: Option<PathBuf>,
    under: Vec<String>,
}

impl ProxyAgentBuilder {
    /// A database (a `--db` spec, see [`proxy_spec`]).
    pub fn db(mut self, spec: impl Into<String>) -> Self {
        self.dbs.push(spec.into());
        self
    }

    /// A flag and its value, e.g. `("--connect-timeout", "2s")`.
    pub fn arg(mut self, flag: &str, value: &str) -> Self {
        self.args.extend([flag.to_owned(), value.to_owned()]);
        self
    }

    /// Static credentials (AWS_ACCESS_KEY_ID ...). Without them the agent
    /// never gets a token.
    pub fn creds(mut self, c: &IssuedCreds) -> Self {
        self.creds = Some(c.clone());
        self
    }

    /// Start the agent under `prlimit --nofile=SOFT:HARD`.
    pub fn nofile(mut self, soft: u64, hard: u64) -> Self {
        self.nofile = Some((soft, hard));
        self
    }

    /// Run the agent as a child of `argv` (e.g. `/usr/bin/time -v`); its
    /// output goes to the log too.
    pub fn under(mut self, argv: &[&str]) -> Self {
        self.under = argv.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Do not wait for the token files, only for the sockets.
    pub fn no_token(mut self) -> Self {
        self.no_token = true;
        self
    }

    /// Another agent binary (e.g. a release build for a benchmark).
    pub fn bin(mut self, path: &Path) -> Self {
        self.bin = Some(path.to_owned());
        self
    }

    /// Starts the agent and waits until every socket exists and, unless
    /// [`ProxyAgentBuilder::no_token`], every token file.
    pub fn start(self) -> Result<ProxyAgent> {
        let home = tempfile::tempdir()?;
        let dir = tempfile::Builder::new().prefix("rds-iam-").tempdir()?;
        let health = free_port()?;
        let bin = match &self.bin {
            Some(b) => b.clone(),
            None => agent_bin()?,
        };
        let mut argv: Vec<OsString> = self.under.iter().map(OsString::from).collect();
        if let Some((soft, hard)) = self.nofile {
            argv.push(require_cmd("prlimit")?.into());
            argv.push(format!("--nofile={soft}:{hard}").into());
            argv.push("--".into());
        }
        argv.push(bin.clone().into());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        let log_path = home.path().join("agent.log");
        let log = fs::File::create(&log_path)?;
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("RDS_IAM_LOG_FORMAT", "text")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RDS_IAM_DATABASES", self.dbs.join("\n"))
            .arg("--dir")
            .arg(dir.path())
            .args(["--health-addr", &format!("127.0.0.1:{health}")])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(c) = &self.creds {
            cmd.env("AWS_ACCESS_KEY_ID", &c.akid)
                .env("AWS_SECRET_ACCESS_KEY", &c.secret)
                .env("AWS_SESSION_TOKEN", &c.session_token);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let names = self
            .dbs
            .iter()
            .map(|s| s.split_once('=').map_or(s.as_str(), |(n, _)| n).to_owned())
            .collect();
        let mut agent = ProxyAgent {
            child,
            home,
            dir,
            health,
            names,
            log_path,
        };
        agent.wait_started(!self.no_token)?;
        Ok(agent)
    }
}

/// A running agent. Dropping it kills it.
pub struct ProxyAgent {
    child: Child,
    home: tempfile::TempDir,
    dir: tempfile::TempDir,
    health: u16,
    names: Vec<String>,
    log_path: PathBuf,
}

impl ProxyAgent {
    pub fn builder() -> ProxyAgentBuilder {
        ProxyAgentBuilder::default()
    }

    fn wait_started(&mut self, tokens: bool) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut wanted: Vec<PathBuf> = self.names.iter().map(|n| self.socket_path(n)).collect();
        if tokens {
            wanted.extend(self.names.iter().map(|n| self.token_path(n)));
        }
        wanted.push(PathBuf::from("health"));
        loop {
            wanted.retain(|p| {
                if p == Path::new("health") {
                    std::net::TcpStream::connect(("127.0.0.1", self.health)).is_err()
                } else {
                    !p.exists()
                }
            });
            if wanted.is_empty() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the agent exited ({status}) while starting:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "after {START_TIMEOUT:?} still missing {wanted:?}; agent log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The agent's `--dir`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the database `name`'s socket is: `DIR` for the default
    /// database, `DIR/NAME` for a named one.
    pub fn socket_dir(&self, name: &str) -> PathBuf {
        if name == DEFAULT_DB {
            self.dir().to_owned()
        } else {
            self.dir().join(name)
        }
    }

    pub fn socket_path(&self, name: &str) -> PathBuf {
        self.socket_dir(name).join(".s.PGSQL.5432")
    }

    pub fn socket(&self, name: &str) -> Addr {
        Addr::Unix(self.socket_path(name))
    }

    /// The token file of database `name`: `token` or `NAME.token`.
    pub fn token_path(&self, name: &str) -> PathBuf {
        if name == DEFAULT_DB {
            self.dir().join("token")
        } else {
            self.dir().join(format!("{name}.token"))
        }
    }

    /// The current token of database `name`.
    pub fn token(&self, name: &str) -> Result<String> {
        let p = self.token_path(name);
        fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }

    /// The environment the webhook injects for database `name` in proxy
    /// mode, for `user` and `database`.
    pub fn env(&self, name: &str, user: &str, database: &str) -> Vec<(String, String)> {
        vec![
            ("PGHOST".into(), self.socket_dir(name).display().to_string()),
            ("PGPORT".into(), "5432".into()),
            ("PGUSER".into(), user.into()),
            ("PGDATABASE".into(), database.into()),
            ("PGSSLMODE".into(), "disable".into()),
            (
                "PGPASSFILE".into(),
                self.dir().join("pgpass").display().to_string(),
            ),
            (
                "RDS_IAM_TOKEN_FILE".into(),
                self.token_path(name).display().to_string(),
            ),
        ]
    }

    /// The agent's process id: the child's, or under a wrapper that forks
    /// (see [`ProxyAgentBuilder::under`]) the wrapper's child's.
    pub fn pid(&self) -> u32 {
        let pid = self.child.id();
        let children =
            fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let is_agent = |p: &str| {
            fs::read_link(format!("/proc/{p}/exe"))
                .is_ok_and(|e| e.file_name().is_some_and(|n| n == "rds-iam-tokenagent"))
        };
        if is_agent(&pid.to_string()) {
            return pid;
        }
        children
            .split_whitespace()
            .find(|c| is_agent(c))
            .and_then(|c| c.parse().ok())
            .unwrap_or(pid)
    }

    /// Everything the agent logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `GET /metrics`.
    pub fn metrics(&self) -> Result<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.health))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        match out.split_once("\r\n\r\n") {
            Some((head, body))
                if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") =>
            {
                Ok(body.to_owned())
            }
            _ => bail!("GET /metrics: {out}"),
        }
    }

    /// The value of the sample `series` (name and labels exactly as
    /// exposed, e.g. `rds_iam_proxy_connections_active{db="default"}`).
    pub fn metric(&self, series: &str) -> Result<u64> {
        let text = self.metrics()?;
        let prefix = format!("{series} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .with_context(|| format!("no sample {series} in\n{text}"))?
            .trim()
            .parse()
            .with_context(|| format!("sample {series}"))
    }

    /// `rds_iam_proxy_connections_failed_total{db="DB",cause="CAUSE"}`.
    pub fn failures(&self, db: &str, cause: &str) -> Result<u64> {
        self.metric(&format!(
            "rds_iam_proxy_connections_failed_total{{db=\"{db}\",cause=\"{cause}\"}}"
        ))
    }

    /// A `/proc/PID/status` figure of the agent in KiB: `VmRSS` (resident
    /// now) or `VmHWM` (the peak, what `time -v` reports).
    pub fn status_kib(&self, field: &str) -> Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {field} in /proc/PID/status"))
    }

    /// The CPU time (user + system, all threads) the agent used so far, from
    /// `/proc/PID/stat` in clock ticks (`getconf CLK_TCK`).
    pub fn cpu_time(&self) -> Result<Duration> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // The fields after the command name, which is in parentheses:
        // state is field 3, utime 14 and stime 15.
        let rest = stat.rsplit_once(')').context("no ')' in /proc/PID/stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> Result<u64> {
            fields
                .get(i - 3)
                .and_then(|f| f.parse().ok())
                .with_context(|| format!("no field {i} in /proc/PID/stat"))
        };
        let out = Command::new("getconf").arg("CLK_TCK").output()?;
        let hz: u64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .context("getconf CLK_TCK")?;
        Ok(Duration::from_millis((ticks(14)? + ticks(15)?) * 1000 / hz))
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) -> Result<()> {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?
            .success();
        if !ok {
            bail!("kill -TERM {} failed", self.pid());
        }
        Ok(())
    }

    /// Whether the agent still runs.
    pub fn running(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_none())
    }

    /// Waits up to `timeout` for the agent to exit.
    pub fn wait(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The agent's HOME (an empty directory), e.g. for another command.
    pub fn home(&self) -> &Path {
        self.home.path()
    }
}

impl Drop for ProxyAgent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How a client process ended, and what it wrote.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The signal that killed it, if any.
    pub fn signal(&self) -> Option<i32> {
        self.status.signal()
    }
}

/// Runs `psql -X -w -A -t -v ON_ERROR_STOP=1 -c SQL` with exactly `env`
/// (plus PATH), with the harness's timeout.
pub fn psql<K, V>(env: &[(K, V)], sql: &str) -> Result<Output>
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(require_cmd("psql")?);
    cmd.args([
        "-X",
        "-w",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        sql,
    ]);
    run(&mut cmd, env)
}

/// Runs `cmd` with exactly `env` (plus PATH), with the harness's timeout.
pub fn run<K, V>(cmd: &mut Command, env: &[(K, V)]) -> Result<Output>
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    let env: Vec<(OsString, OsString)> = env
        .iter()
        .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
        .collect();
    let (status, stdout, stderr) = run_probe(cmd, &env)?;
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// The first 12 hex digits of the SHA-256 of `token`: the fingerprint the
/// RDS-like server's verifier logs as `fp=` (computed with `sha256sum`).
pub fn token_fingerprint(token: &str) -> Result<String> {
    let mut child = Command::new(require_cmd("sha256sum")?)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(token.as_bytes())?;
    let out = child.wait_with_output()?;
    let hex = String::from_utf8_lossy(&out.stdout);
    Ok(hex
        .get(..12)
        .context("sha256sum printed nothing")?
        .to_owned())
}

/// Raises this process's soft open-file limit to its hard limit (a test
/// that holds a thousand connections needs it) and returns it.
pub fn raise_own_fd_limit() -> Result<u64> {
    rds_iam_common::process::raise_fd_limit().context("raising the open-file limit")?;
    Ok(rds_iam_common::process::fd_limit())
}
