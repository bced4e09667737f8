//! The token agent's MySQL side in tests: the real `rds-iam-tokenagent`
//! binary serving MySQL databases (files or proxy mode), the env the webhook
//! injects into app containers, clients configured by nothing but the
//! agent's `my.cnf`, and the option-file parsers' reading of that file.
//!
//! The agent gets its databases in `RDS_IAM_DATABASES` (one spec per line,
//! as the webhook injects them), its log goes to a file, and it is killed on
//! drop. Nothing from the test process leaks into it but `PATH`.

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::agentproc::{agent_bin, run, Ran};
use crate::rdslab::{free_port, repo_root, require_cmd, require_file, run_probe, venv_python};
use crate::stubs::IssuedCreds;

/// Where the webhook mounts the agent's directory in app containers; the
/// env below names the file in it.
pub const CNF_ENV: &str = "RDS_IAM_MYSQL_CNF";
/// The agent's region in the specs (the labs sign for it).
pub const REGION: &str = crate::rdslab::REGION;
/// How long the agent may take to bind its sockets and write its files.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A MySQL `--db` spec: `NAME=mysql://USER@HOST:PORT[/DATABASE]?region=..`
/// followed by `params` (e.g. `&sslmode=verify-full&mode=proxy`).
pub fn mysql_spec(
    name: &str,
    user: &str,
    host: &str,
    port: u16,
    database: Option<&str>,
    params: &str,
) -> String {
    let db = database.map(|d| format!("/{d}")).unwrap_or_default();
    format!("{name}=mysql://{user}@{host}:{port}{db}?region={REGION}{params}")
}

/// How to run the agent.
#[derive(Debug, Clone, Default)]
pub struct AgentBuilder {
    dbs: Vec<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    bin: Option<PathBuf>,
}

impl AgentBuilder {
    /// A database (see [`mysql_spec`]).
    pub fn db(mut self, spec: impl Into<String>) -> Self {
        self.dbs.push(spec.into());
        self
    }

    /// A flag and its value, e.g. `("--ca-file", path)`.
    pub fn arg(mut self, flag: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.args.push(flag.to_owned());
        self.args
            .push(value.as_ref().to_string_lossy().into_owned());
        self
    }

    /// An env variable of the agent (credentials, `AWS_ENDPOINT_URL_STS` ...).
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.env.push((
            key.to_owned(),
            value.as_ref().to_string_lossy().into_owned(),
        ));
        self
    }

    /// Static credentials (AWS_ACCESS_KEY_ID ...).
    pub fn creds(self, c: &IssuedCreds) -> Self {
        self.env("AWS_ACCESS_KEY_ID", &c.akid)
            .env("AWS_SECRET_ACCESS_KEY", &c.secret)
            .env("AWS_SESSION_TOKEN", &c.session_token)
    }

    /// Another agent binary (a release build for the benchmark).
    pub fn bin(mut self, path: &Path) -> Self {
        self.bin = Some(path.to_owned());
        self
    }

    fn command(&self, home: &Path, dir: &Path) -> Result<Command> {
        let bin = match &self.bin {
            Some(b) => b.clone(),
            None => agent_bin()?,
        };
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("RDS_IAM_LOG_FORMAT", "text")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RDS_IAM_DATABASES", self.dbs.join("\n"))
            .arg("--dir")
            .arg(dir)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        Ok(cmd)
    }

    /// Runs the agent with `--once`; the files stay in the returned dir.
    pub fn once(self) -> Result<(Ran, tempfile::TempDir)> {
        let home = tempfile::tempdir()?;
        let dir = tempfile::Builder::new().prefix("rds-iam-").tempdir()?;
        let ran = run(self.command(home.path(), dir.path())?.arg("--once"))?;
        Ok((ran, dir))
    }

    /// Starts the long-running agent (with a health port) and waits until
    /// every database's token file and every proxy socket exist.
    pub fn start(self) -> Result<Agent> {
        let home = tempfile::tempdir()?;
        let dir = tempfile::Builder::new().prefix("rds-iam-").tempdir()?;
        let health = free_port()?;
        let log_path = home.path().join("agent.log");
        let log = fs::File::create(&log_path)?;
        let child = self
            .command(home.path(), dir.path())?
            .args(["--health-addr", &format!("127.0.0.1:{health}")])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the agent")?;
        let agent = Agent {
            child,
            home,
            dir,
            health,
            log_path,
        };
        let mut wanted = Vec::new();
        for spec in &self.dbs {
            let name = spec.split_once('=').map_or(spec.as_str(), |(n, _)| n);
            wanted.push(agent.dir.path().join(token_file(name)));
            if spec.contains("mode=proxy") {
                wanted.push(agent.socket(name));
            }
        }
        let start = Instant::now();
        while let Some(missing) = wanted.iter().find(|p| !p.exists()) {
            if start.elapsed() > START_TIMEOUT {
                bail!(
                    "{} did not appear within {START_TIMEOUT:?}; agent log:\n{}",
                    missing.display(),
                    agent.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(agent)
    }
}

fn token_file(name: &str) -> String {
    if name == "default" {
        "token".to_owned()
    } else {
        format!("{name}.token")
    }
}

/// A running agent; killed on drop.
pub struct Agent {
    child: Child,
    home: tempfile::TempDir,
    dir: tempfile::TempDir,
    health: u16,
    log_path: PathBuf,
}

impl Agent {
    pub fn builder() -> AgentBuilder {
        AgentBuilder::default()
    }

    /// The agent's directory (the app's mount).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A database's proxy socket: `DIR/mysqld.sock`, or `DIR/NAME/mysqld.sock`.
    pub fn socket(&self, name: &str) -> PathBuf {
        if name == "default" {
            self.dir().join("mysqld.sock")
        } else {
            self.dir().join(name).join("mysqld.sock")
        }
    }

    /// A database's current token (its token file).
    pub fn token(&self, name: &str) -> Result<String> {
        let p = self.dir().join(token_file(name));
        fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }

    /// Everything the agent logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `GET /metrics` from the health port.
    pub fn metrics(&self) -> Result<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.health))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// One counter of `/metrics`, by its name and labels as written, e.g.
    /// `rds_iam_proxy_connections_failed_total{db="x",cause="wrong_user"}`.
    pub fn metric(&self, series: &str) -> Result<u64> {
        let m = self.metrics()?;
        m.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .ok_or_else(|| anyhow!("no {series} in /metrics:\n{m}"))
    }

    /// The env the webhook injects into an app container for this agent's
    /// databases in files mode (the default database at `host:port`).
    pub fn files_env(&self, host: &str, port: u16) -> Vec<(String, String)> {
        files_env(self.dir(), host, port)
    }

    /// The home directory given to the agent (its log is there).
    pub fn home(&self) -> &Path {
        self.home.path()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the webhook injects into an app container in files mode: the
/// option file, the default database's host and port, the cleartext plugin
/// for MySQL's libmysqlclient, and the token file.
pub fn files_env(dir: &Path, host: &str, port: u16) -> Vec<(String, String)> {
    let file = |name: &str| dir.join(name).display().to_string();
    vec![
        (CNF_ENV.to_owned(), file(rds_iam_common::MYSQL_CNF_FILE)),
        ("MYSQL_HOST".to_owned(), host.to_owned()),
        ("MYSQL_TCP_PORT".to_owned(), port.to_string()),
        (
            "LIBMYSQL_ENABLE_CLEARTEXT_PLUGIN".to_owned(),
            "Y".to_owned(),
        ),
        (
            "RDS_IAM_TOKEN_FILE".to_owned(),
            file(rds_iam_common::TOKEN_FILE),
        ),
    ]
}

/// A client configured by the agent's option file alone, found through
/// `RDS_IAM_MYSQL_CNF` as an app's command would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CnfClient {
    /// `mariadb --defaults-extra-file="$RDS_IAM_MYSQL_CNF"
    /// [--defaults-group-suffix=_NAME] -N -B -e SQL`.
    Mariadb,
    /// `mariadb-admin --defaults-extra-file="$RDS_IAM_MYSQL_CNF"
    /// [--defaults-group-suffix=_NAME] ARGS` (the SQL is its arguments).
    MariadbAdmin,
    /// testenv/clients/mycnf_pymysql.py: `read_default_file`,
    /// `read_default_group`.
    PyMysql,
}

/// What a client printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The rows: lines of tab-separated fields.
    pub fn rows(&self) -> Vec<Vec<String>> {
        self.stdout
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect()
    }
}

/// Runs `client` with exactly `env` (plus PATH) on the group of database
/// `name` (`default` for `[client]`). `what` is SQL, or for
/// [`CnfClient::MariadbAdmin`] its command (e.g. `status`). Fails with the
/// client's stderr unless it exits 0.
pub fn run_with_cnf(
    client: CnfClient,
    env: &[(String, String)],
    name: &str,
    what: &str,
) -> Result<Output> {
    let suffix = (name != "default").then(|| format!("--defaults-group-suffix=_{name}"));
    let mut cmd = match client {
        CnfClient::Mariadb | CnfClient::MariadbAdmin => {
            let prog = match client {
                CnfClient::Mariadb => require_cmd("mariadb")?,
                _ => require_cmd("mariadb-admin")?,
            };
            let mut c = Command::new(require_cmd("sh")?);
            c.arg("-c")
                .arg(r#"p="$1"; shift; exec "$p" --defaults-extra-file="$RDS_IAM_MYSQL_CNF" "$@""#)
                .arg("sh")
                .arg(prog);
            c.args(suffix);
            if client == CnfClient::Mariadb {
                c.args(["--batch", "--skip-column-names", "-e", what]);
            } else {
                c.args(what.split_whitespace());
            }
            c
        }
        CnfClient::PyMysql => {
            let mut c = mycnf_pymysql(name)?;
            c.args(["--sql", what]);
            c
        }
    };
    let env: Vec<(OsString, OsString)> = env.iter().map(|(k, v)| (k.into(), v.into())).collect();
    let (status, stdout, stderr) =
        run_probe(&mut cmd, &env).with_context(|| format!("running {client:?}"))?;
    if !status.success() {
        bail!("{client:?} failed ({status}): {}", stderr.trim());
    }
    Ok(Output { stdout, stderr })
}

/// testenv/clients/mycnf_pymysql.py on the group of database `name`.
fn mycnf_pymysql(name: &str) -> Result<Command> {
    let mut c = Command::new(venv_python()?);
    c.arg(require_file(
        &repo_root().join("testenv/clients/mycnf_pymysql.py"),
        "mycnf_pymysql.py",
    )?);
    if name != "default" {
        c.arg(format!("--group=client_{name}"));
    }
    Ok(c)
}

/// An option-file reader, to read the agent's file back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parser {
    /// `my_print_defaults --defaults-file=F [--defaults-group-suffix=_N] client`.
    MyPrintDefaults,
    /// `mariadb --defaults-file=F [--defaults-group-suffix=_N] --print-defaults`.
    Mariadb,
    /// `mariadb-admin ... --print-defaults`.
    MariadbAdmin,
    /// PyMySQL's own parser (`pymysql.optionfile.Parser`), one group.
    PyMysql,
}

impl Parser {
    pub const ALL: [Parser; 4] = [
        Parser::MyPrintDefaults,
        Parser::Mariadb,
        Parser::MariadbAdmin,
        Parser::PyMysql,
    ];
}

/// The options `parser` reads from `file` for database `name`, in order, as
/// `(key, value)`; a key without a value has an empty one. MySQL's tools
/// print what a suffixed read collects: `[client]`, then `[client_NAME]`.
pub fn read_back(parser: Parser, file: &Path, name: &str) -> Result<Vec<(String, String)>> {
    let suffix = (name != "default").then(|| format!("--defaults-group-suffix=_{name}"));
    let defaults = format!("--defaults-file={}", file.display());
    let mut cmd = match parser {
        Parser::MyPrintDefaults => {
            let mut c = Command::new(require_cmd("my_print_defaults")?);
            c.arg(&defaults).args(&suffix).arg("client");
            c
        }
        Parser::Mariadb | Parser::MariadbAdmin => {
            let mut c = Command::new(require_cmd(if parser == Parser::Mariadb {
                "mariadb"
            } else {
                "mariadb-admin"
            })?);
            c.arg(&defaults).args(&suffix).arg("--print-defaults");
            c
        }
        Parser::PyMysql => {
            let mut c = mycnf_pymysql(name)?;
            c.arg(format!("--file={}", file.display())).arg("--print");
            c
        }
    };
    let (status, stdout, stderr) =
        run_probe(&mut cmd, &[]).with_context(|| format!("running {parser:?}"))?;
    if !status.success() {
        bail!("{parser:?} failed ({status}): {}", stderr.trim());
    }
    let text = match parser {
        // "mariadb would have been started with the following arguments:\n--a --b ..."
        Parser::Mariadb | Parser::MariadbAdmin => stdout
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split(" --")
            .map(|a| format!("--{}", a.trim_start_matches("--").trim_end()))
            .filter(|a| a != "--")
            .collect::<Vec<_>>()
            .join("\n"),
        _ => stdout,
    };
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let l = l
                .strip_prefix("--")
                .ok_or_else(|| anyhow!("{parser:?} printed {l:?}"))?;
            Ok(match l.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (l.to_owned(), String::new()),
            })
        })
        .collect()
}

/// A token-shaped string of exactly `len` bytes holding every character a
/// token can hold: the query's `A-Z a-z 0-9 - _ . ~`, the separators
/// `: / ? & =`, and `%` with both hex cases of the percent-encoding (the
/// session token's `+`, `/` and `=` arrive as `%2B`, `%2F`, `%3D`).
pub fn token_alphabet_string(len: usize) -> String {
    let head = "db.example.com:3306/?Action=connect&DBUser=app&X-Amz-Security-Token=";
    let alphabet: String = ('A'..='Z')
        .chain('a'..='z')
        .chain('0'..='9')
        .chain("-_.~%2B%2F%3D:/?&=".chars())
        .collect();
    let mut s = head.to_owned();
    while s.len() < len {
        s.push_str(&alphabet);
    }
    s.truncate(len);
    s
}

/// Waits until `path` holds something other than `old`; returns it.
pub fn wait_for_change(path: &Path, old: &str, timeout: Duration) -> Result<String> {
    let start = Instant::now();
    loop {
        if let Ok(now) = fs::read_to_string(path) {
            if now != old && !now.is_empty() {
                return Ok(now);
            }
        }
        if start.elapsed() > timeout {
            bail!("{} did not change within {timeout:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The PyMySQL probe that keeps one session open: `hold_pymysql.py`, from
/// the probes' MySQL environment. Started in the background; [`Held::wait`]
/// returns its `queries=N connection_id=I` line.
pub struct Held {
    child: Child,
}

impl Held {
    /// Keeps a session for `secs` seconds, one query a second.
    pub fn start(env: &[(String, String)], secs: u64) -> Result<Held> {
        let mut c = Command::new(venv_python()?);
        c.arg(require_file(
            &repo_root().join("testenv/clients/hold_pymysql.py"),
            "hold_pymysql.py",
        )?)
        .arg(format!("--seconds={secs}"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        Ok(Held { child: c.spawn()? })
    }

    /// Waits for the probe; its line, or its error.
    pub fn wait(mut self) -> Result<String> {
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            o.read_to_string(&mut out)?;
        }
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut err)?;
        }
        let status = self.child.wait()?;
        if !status.success() {
            bail!("hold_pymysql.py failed ({status}): {}", err.trim());
        }
        Ok(out.trim().to_owned())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
