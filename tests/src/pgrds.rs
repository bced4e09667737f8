//! A PostgreSQL that authenticates like Amazon RDS with IAM, for tests.
//!
//! [`PgRds::start`] runs `testenv/pgrds/pg-rds`, which creates a fresh cluster
//! on a free loopback port: TLS only (`hostssl`), PAM authentication through
//! libpam-python and `testenv/pgrds/pam_rds_iam.py`, an independent SigV4
//! verifier of `rds-db:connect` tokens. Users are created like on RDS
//! (`CREATE ROLE u LOGIN; GRANT rds_iam TO u`), and a database named like the
//! first user.
//!
//! Tokens are signed for [`PgRds::endpoint`] (`localhost:PORT`), region
//! [`REGION`], with a key registered by [`PgRds::add_key`]; the keystore is
//! re-read at every login. Clients connect with `PGHOST=localhost`.
//!
//! Every missing dependency is an error that says to run `testenv/setup.sh`;
//! nothing is ever skipped. The test process must run as root (the server runs
//! as `postgres` and a `/etc/pam.d` file is written).
//!
//! Cleanup: dropping a [`PgRds`] stops the server and removes its pam.d file
//! and directory. A server kept in a `static` (never dropped) is cleaned up by
//! a watcher process once the test process exits.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::probes;

/// Host name clients use (`PGHOST`) and tokens are signed for.
pub const HOST: &str = "localhost";
/// Region the server expects in the token's credential scope.
pub const REGION: &str = "us-east-1";
/// How long a client probe may run before it is killed.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const SETUP_HINT: &str =
    "run testenv/setup.sh (as root) to install the test dependencies";

/// The repository root (parent of the `tests` crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

pub(crate) fn require_file(path: &Path, what: &str) -> Result<PathBuf> {
    if path.exists() {
        Ok(path.to_path_buf())
    } else {
        bail!("{what} not found at {}; {SETUP_HINT}", path.display())
    }
}

pub(crate) fn require_cmd(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("`{name}` not found on PATH; {SETUP_HINT}"))
}

/// The project's Python venv interpreter (`.venv/bin/python`).
pub fn venv_python() -> Result<PathBuf> {
    require_file(
        &repo_root().join(".venv/bin/python"),
        "Python venv (.venv with botocore, psycopg)",
    )
}

/// The pgJDBC jar from Debian's libpostgresql-jdbc-java.
pub fn jdbc_jar() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PGRDS_JDBC_JAR") {
        return require_file(Path::new(&p), "pgJDBC jar ($PGRDS_JDBC_JAR)");
    }
    require_file(
        Path::new("/usr/share/java/postgresql.jar"),
        "pgJDBC jar (Debian libpostgresql-jdbc-java)",
    )
}

/// A running RDS-like PostgreSQL. Dropping it stops the server.
pub struct PgRds {
    dir: tempfile::TempDir,
    port: u16,
    users: Vec<String>,
    keys_lock: Mutex<()>,
}

impl PgRds {
    /// Start a fresh server with these login users (at least one; the first
    /// also names the database). Takes about a second.
    pub fn start(users: &[&str]) -> Result<PgRds> {
        Self::start_with(users, &[])
    }

    /// Like [`PgRds::start`], plus databases reached as other endpoints of
    /// the same server: each `(name, host)` creates database `name` that
    /// accepts only tokens signed for `host:PORT` (e.g. `127.0.0.1`, where
    /// the default endpoint is `localhost`).
    pub fn start_with(users: &[&str], extra_dbs: &[(&str, &str)]) -> Result<PgRds> {
        if users.is_empty() {
            bail!("PgRds::start needs at least one user");
        }
        if let Some(bad) = users.iter().find(|u| u.is_empty() || u.contains(',')) {
            bail!("PgRds::start: invalid user name {bad:?} (empty or contains ',')");
        }
        let script = require_file(
            &repo_root().join("testenv/pgrds/pg-rds"),
            "testenv/pgrds/pg-rds",
        )?;
        let mut last_err = None;
        // A port picked from 127.0.0.1:0 can be taken by someone else before
        // postgres binds it; retry with a new one in that case only.
        for _ in 0..3 {
            match Self::try_start(&script, users, extra_dbs) {
                Ok(pg) => return Ok(pg),
                Err(e) if format!("{e:#}").contains("could not bind") => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("PgRds::start failed")))
    }

    fn try_start(script: &Path, users: &[&str], extra_dbs: &[(&str, &str)]) -> Result<PgRds> {
        let dir = tempfile::Builder::new()
            .prefix("pgrds-")
            .tempdir_in("/tmp")
            .context("creating the PgRds temp dir under /tmp")?;
        let port = free_port()?;
        let endpoint = format!("{HOST}:{port}");
        let keys = dir.path().join("keys.json");
        let extra: Vec<String> = extra_dbs
            .iter()
            .flat_map(|(db, host)| ["--extra-db".to_owned(), format!("{db}={host}")])
            .collect();
        let out = Command::new(script)
            .arg("start")
            .args(&extra)
            .arg("--dir")
            .arg(dir.path())
            .args(["--port", &port.to_string()])
            .args(["--endpoint", &endpoint])
            .args(["--region", REGION])
            .arg("--keys")
            .arg(&keys)
            .args(["--users", &users.join(",")])
            .args(["--owner-pid", &std::process::id().to_string()])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !out.status.success() {
            bail!(
                "pg-rds start failed ({}): {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Ok(PgRds {
            dir,
            port,
            users: users.iter().map(|u| u.to_string()).collect(),
            keys_lock: Mutex::new(()),
        })
    }

    /// Runs SQL as the superuser (over the unix socket) and returns psql's
    /// unaligned output, e.g. to create another database.
    pub fn sql(&self, sql: &str) -> Result<String> {
        let script = repo_root().join("testenv/pgrds/pg-rds");
        let mut child = Command::new(&script)
            .args(["sql", "--port", &self.port.to_string(), "--dir"])
            .arg(self.dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", script.display()))?;
        child
            .stdin
            .take()
            .context("pg-rds stdin")?
            .write_all(sql.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "pg-rds sql failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `PGHOST` for clients: `localhost`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// `host:port` that tokens must be signed for.
    pub fn endpoint(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    pub fn region(&self) -> &str {
        REGION
    }

    /// The database created for the first user (named like it).
    pub fn database(&self) -> &str {
        &self.users[0]
    }

    pub fn users(&self) -> &[String] {
        &self.users
    }

    /// The instance directory (owned by `postgres`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The JSON keystore the PAM module reads at every login.
    pub fn keys_path(&self) -> PathBuf {
        self.dir().join("keys.json")
    }

    /// The server's self-signed certificate (SAN localhost, 127.0.0.1). Give it
    /// to clients that verify the server (node-postgres: NODE_EXTRA_CA_CERTS).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir().join("server.crt")
    }

    /// The PAM module's decision log: one line per login with
    /// `user=.. akid=.. ACCEPT|REJECT: reason`. Never contains tokens.
    pub fn auth_log(&self) -> Result<String> {
        let p = self.dir().join("pam_rds_iam.log");
        fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }

    /// The PostgreSQL server log.
    pub fn server_log(&self) -> Result<String> {
        let p = self.dir().join("postgres.log");
        fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }

    /// The `/etc/pam.d` file of this instance (removed on drop).
    pub fn pam_service_file(&self) -> Result<PathBuf> {
        let p = self.dir().join("pam-service");
        let name = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        Ok(Path::new("/etc/pam.d").join(name.trim()))
    }

    /// Register (or replace) an access key the server accepts. With a session
    /// token, tokens must carry exactly it in X-Amz-Security-Token; without,
    /// they must carry none. Takes effect for the next login.
    pub fn add_key(&self, akid: &str, secret: &str, session_token: Option<&str>) -> Result<()> {
        let _guard = self.keys_lock.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.keys_path();
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut keys: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        keys.insert(
            akid.to_string(),
            serde_json::json!({ "secret_access_key": secret, "session_token": session_token }),
        );
        let tmp = self.dir().join(".keys.json.tmp");
        {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            f.write_all(serde_json::to_string_pretty(&keys)?.as_bytes())?;
        }
        // The server runs as the owner of the dir (postgres) and must read it.
        let meta = fs::metadata(self.dir())?;
        std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()))
            .with_context(|| format!("chown {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
        Ok(())
    }

    /// The standard libpq environment for `user` with this pgpass file:
    /// PGHOST, PGPORT, PGUSER, PGDATABASE, PGSSLMODE=require, PGPASSFILE.
    pub fn libpq_env(&self, user: &str, pgpass: &Path) -> Vec<(String, String)> {
        vec![
            ("PGHOST".into(), HOST.into()),
            ("PGPORT".into(), self.port.to_string()),
            ("PGUSER".into(), user.into()),
            ("PGDATABASE".into(), self.database().into()),
            ("PGSSLMODE".into(), "require".into()),
            ("PGPASSFILE".into(), pgpass.display().to_string()),
        ]
    }

    /// [`run_client`], plus NODE_EXTRA_CA_CERTS=[`PgRds::ca_cert`] for
    /// [`Client::Node`] (node-postgres verifies the server certificate even
    /// with PGSSLMODE=require, as it would need the RDS CA bundle on AWS).
    pub fn run_client<K, V>(&self, kind: Client, env: &[(K, V)]) -> Result<String>
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut all: Vec<(std::ffi::OsString, std::ffi::OsString)> = env
            .iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .collect();
        if kind == Client::Node && !all.iter().any(|(k, _)| k == "NODE_EXTRA_CA_CERTS") {
            all.push((
                "NODE_EXTRA_CA_CERTS".into(),
                self.ca_cert().into_os_string(),
            ));
        }
        run_client(kind, &all)
    }

    /// Make a botocore token for `user` on this server, signed with `akid`.
    pub fn botocore_token(
        &self,
        user: &str,
        akid: &str,
        secret: &str,
        session_token: Option<&str>,
    ) -> Result<String> {
        botocore_token(&TokenRequest {
            host: HOST,
            port: self.port,
            user,
            region: REGION,
            akid,
            secret,
            session_token,
            time: None,
        })
    }
}

impl Drop for PgRds {
    fn drop(&mut self) {
        let script = repo_root().join("testenv/pgrds/pg-rds");
        match Command::new(&script)
            .arg("stop")
            .arg("--dir")
            .arg(self.dir())
            .stdin(Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "pg-rds stop failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("pg-rds stop: cannot run {}: {e}", script.display()),
        }
        // The TempDir field removes the directory after this.
    }
}

/// A free port on 127.0.0.1 (for any loopback server of the tests).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// How a client picks its database. Whatever it is, no password is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// The libpq environment alone (PGHOST, PGPORT, PGUSER, ...).
    Env,
    /// A `pg_service.conf` section through PGSERVICEFILE: `service=NAME`
    /// (psql, psycopg) or `jdbc:postgresql://?service=NAME` (pgJDBC).
    Service(&'a str),
    /// A URL from the env variable `url_env` (node-postgres: password from
    /// PGPASSFILE; asyncpg: password from the file `token_env` names).
    Url {
        url_env: &'a str,
        token_env: &'a str,
    },
}

/// The client probes. Each connects using only the environment given to
/// [`run_client`] (no password), runs `select current_user` and prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// Stock `psql` (libpq), with `-w` so it never prompts.
    Psql,
    /// psycopg 3 (libpq) from `.venv`: testenv/clients/connect_psycopg.py.
    Psycopg,
    /// node-postgres from testenv/node: testenv/clients/connect_node.js.
    Node,
    /// pgJDBC (Debian jar) in java source-launch mode: testenv/clients/ConnectJdbc.java.
    Jdbc,
    /// asyncpg from `.venv` (URL targets only): testenv/clients/connect_asyncpg.py.
    Asyncpg,
    /// pgx v4 (Go): target/clients/bin/connect_pgx, built from testenv/clients/go.
    Pgx,
    /// lib/pq (Go, database/sql): target/clients/bin/connect_pq. Defaults to
    /// sslmode=require and rejects `prefer`: give it PGSSLMODE=disable for a
    /// plain-TCP listener (a Unix socket never uses TLS).
    GoPq,
    /// tokio-postgres (Rust): target/clients/rust/release/connect_tokio_postgres.
    /// Reads no pgpass: the probe takes a password from PGPASSWORD only.
    TokioPostgres,
    /// sqlx (Rust, PostgreSQL): target/clients/rust/release/connect_sqlx.
    Sqlx,
    /// pgbench (libpq), one transaction: testenv/clients/connect_pgbench.sh.
    Pgbench,
}

impl Client {
    pub const ALL: [Client; 4] = [Client::Psql, Client::Psycopg, Client::Node, Client::Jdbc];

    /// Every client that connects from the libpq environment alone
    /// ([`Target::Env`]): [`Client::ALL`] and the compiled probes and pgbench.
    pub const FROM_ENV: [Client; 9] = [
        Client::Psql,
        Client::Psycopg,
        Client::Node,
        Client::Jdbc,
        Client::Pgx,
        Client::GoPq,
        Client::TokioPostgres,
        Client::Sqlx,
        Client::Pgbench,
    ];

    /// Whether the client finds its password in PGPASSFILE. The others need
    /// one in PGPASSWORD (tokio-postgres) or a token file (asyncpg) to log in
    /// directly; through the proxy none of them needs a password.
    pub fn reads_pgpass(self) -> bool {
        !matches!(self, Client::TokioPostgres | Client::Asyncpg)
    }

    /// Whether the client connects to a Unix socket directory in PGHOST.
    /// pgJDBC has no Unix socket support without an extra socket factory.
    pub fn supports_unix_socket(self) -> bool {
        !matches!(self, Client::Jdbc)
    }

    /// The client's program and arguments, to run it elsewhere (e.g. in a
    /// test pod's container environment).
    pub fn argv(self) -> Result<Vec<String>> {
        self.argv_to(Target::Env)
    }

    /// Like [`Client::argv`], connecting to `target`.
    pub fn argv_to(self, target: Target<'_>) -> Result<Vec<String>> {
        Ok(probes::argv_of(&self.command(target)?))
    }

    fn command(self, target: Target<'_>) -> Result<Command> {
        let clients = repo_root().join("testenv/clients");
        let unsupported = || anyhow!("client {self:?} cannot connect to {target:?}");
        Ok(match self {
            Client::Psql => {
                let mut c = Command::new(require_cmd("psql")?);
                c.args(["-X", "-w", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
                c.args(["-c", "select current_user"]);
                match target {
                    Target::Env => {}
                    Target::Service(name) => {
                        c.arg(format!("service={name}"));
                    }
                    Target::Url { .. } => return Err(unsupported()),
                }
                c
            }
            Client::Psycopg => {
                let mut c = Command::new(venv_python()?);
                c.arg(require_file(
                    &clients.join("connect_psycopg.py"),
                    "connect_psycopg.py",
                )?);
                match target {
                    Target::Env => {}
                    Target::Service(name) => {
                        c.arg(format!("service={name}"));
                    }
                    Target::Url { .. } => return Err(unsupported()),
                }
                c
            }
            Client::Node => {
                require_file(
                    &repo_root().join("testenv/node/node_modules/pg/package.json"),
                    "npm package pg (testenv/node/node_modules/pg)",
                )?;
                let mut c = Command::new(require_cmd("node")?);
                c.arg(require_file(
                    &clients.join("connect_node.js"),
                    "connect_node.js",
                )?);
                match target {
                    Target::Env => {}
                    Target::Url { url_env, .. } => {
                        c.arg(url_env);
                    }
                    Target::Service(_) => return Err(unsupported()),
                }
                c
            }
            Client::Jdbc => {
                let mut c = Command::new(require_cmd("java")?);
                c.arg("-cp").arg(jdbc_jar()?);
                c.arg(require_file(
                    &clients.join("ConnectJdbc.java"),
                    "ConnectJdbc.java",
                )?);
                match target {
                    Target::Env => {}
                    Target::Service(name) => {
                        c.arg(format!("jdbc:postgresql://?service={name}"));
                    }
                    Target::Url { .. } => return Err(unsupported()),
                }
                c
            }
            Client::Asyncpg => {
                let Target::Url { url_env, token_env } = target else {
                    return Err(unsupported());
                };
                let mut c = Command::new(venv_python()?);
                c.arg(require_file(
                    &clients.join("connect_asyncpg.py"),
                    "connect_asyncpg.py",
                )?);
                c.args([url_env, token_env]);
                c
            }
            Client::Pgx => {
                with_conninfo(Command::new(probes::compiled("bin/connect_pgx")?), target)
                    .ok_or_else(unsupported)?
            }
            Client::Pgbench => {
                require_cmd("pgbench")?;
                let script =
                    require_file(&clients.join("connect_pgbench.sh"), "connect_pgbench.sh")?;
                with_conninfo(Command::new(script), target).ok_or_else(unsupported)?
            }
            Client::GoPq | Client::TokioPostgres | Client::Sqlx => {
                if target != Target::Env {
                    return Err(unsupported());
                }
                Command::new(probes::compiled(match self {
                    Client::GoPq => "bin/connect_pq",
                    Client::TokioPostgres => "rust/release/connect_tokio_postgres",
                    _ => "rust/release/connect_sqlx",
                })?)
            }
        })
    }
}

/// `c` with the conninfo argument for `target` (`service=NAME`), or `None`
/// for a target it cannot take.
fn with_conninfo(mut c: Command, target: Target<'_>) -> Option<Command> {
    match target {
        Target::Env => {}
        Target::Service(name) => {
            c.arg(format!("service={name}"));
        }
        Target::Url { .. } => return None,
    }
    Some(c)
}

/// Run a client probe with exactly `env` (plus PATH; everything else, e.g. a
/// stray PGPASSWORD, is cleared). Returns the `current_user` it printed, or an
/// error carrying its stderr.
pub fn run_client<K, V>(kind: Client, env: &[(K, V)]) -> Result<String>
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    run_client_to(kind, Target::Env, env)
}

/// Like [`run_client`], connecting to `target`.
pub fn run_client_to<K, V>(kind: Client, target: Target<'_>, env: &[(K, V)]) -> Result<String>
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    run_probe(&format!("{kind:?}"), kind.command(target)?, env)
}

/// Run a probe with exactly `env` (plus PATH), with a timeout; returns the one
/// non-empty line it printed, or an error carrying its stderr.
pub(crate) fn run_probe<K, V>(name: &str, mut cmd: Command, env: &[(K, V)]) -> Result<String>
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    cmd.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (status, stdout, stderr) = run_with_timeout(&mut cmd, CLIENT_TIMEOUT)
        .with_context(|| format!("running client {name}"))?;
    if !status.success() {
        bail!("client {name} failed ({status}): {}", stderr.trim());
    }
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines.as_slice() {
        [user] => Ok(user.trim().to_string()),
        _ => bail!("client {name} printed {stdout:?}, expected one line; stderr: {stderr}"),
    }
}

fn run_with_timeout(
    cmd: &mut Command,
    timeout: Duration,
) -> Result<(std::process::ExitStatus, String, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut out = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout pipe"))?;
    let mut err = child
        .stderr
        .take()
        .ok_or_else(|| anyhow!("no stderr pipe"))?;
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_t
        .join()
        .map_err(|_| anyhow!("stdout reader panicked"))?;
    let stderr = err_t
        .join()
        .map_err(|_| anyhow!("stderr reader panicked"))?;
    Ok((status, stdout, stderr))
}

/// Inputs for [`botocore_token`].
#[derive(Debug, Clone, Copy)]
pub struct TokenRequest<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub region: &'a str,
    pub akid: &'a str,
    pub secret: &'a str,
    pub session_token: Option<&'a str>,
    /// Signing time in unix seconds; `None` for now.
    pub time: Option<u64>,
}

/// botocore's `generate_db_auth_token` for these inputs (via
/// testenv/botocore_token.py in `.venv`): the reference token.
pub fn botocore_token(req: &TokenRequest<'_>) -> Result<String> {
    let script = require_file(
        &repo_root().join("testenv/botocore_token.py"),
        "testenv/botocore_token.py",
    )?;
    let mut cmd = Command::new(venv_python()?);
    cmd.arg(script)
        .args(["--host", req.host])
        .args(["--port", &req.port.to_string()])
        .args(["--user", req.user])
        .args(["--region", req.region])
        .args(["--akid", req.akid])
        .args(["--secret", req.secret]);
    if let Some(t) = req.session_token {
        cmd.args(["--session-token", t]);
    }
    if let Some(t) = req.time {
        cmd.args(["--time", &t.to_string()]);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .context("running botocore_token.py")?;
    if !out.status.success() {
        bail!(
            "botocore_token.py failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let token = String::from_utf8(out.stdout)
        .context("botocore token is not UTF-8")?
        .trim()
        .to_string();
    if token.is_empty() || token.contains(char::is_whitespace) {
        bail!("botocore_token.py printed an unexpected token: {token:?}");
    }
    Ok(token)
}

/// Escape one pgpass field the libpq way: `\` -> `\\`, then `:` -> `\:`.
pub fn pgpass_escape(field: &str) -> String {
    field.replace('\\', "\\\\").replace(':', "\\:")
}

/// One pgpass line (`host:port:db:user:password`, every field escaped, no
/// newline). Use `*` as `db` for any database.
pub fn pgpass_line(host: &str, port: u16, db: &str, user: &str, password: &str) -> String {
    format!(
        "{}:{}:{}:{}:{}",
        pgpass_escape(host),
        port,
        pgpass_escape(db),
        pgpass_escape(user),
        pgpass_escape(password)
    )
}

/// Write a pgpass file with these lines, mode 0600 (libpq ignores anything
/// group- or world-readable).
pub fn write_pgpass(path: &Path, lines: &[String]) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    for l in lines {
        writeln!(f, "{l}")?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_escaping_is_backslash_first() {
        assert_eq!(pgpass_escape(r"a\:b"), r"a\\\:b");
        assert_eq!(
            pgpass_line("h", 5432, "*", "u:1", "x:y/?q"),
            r"h:5432:*:u\:1:x\:y/?q"
        );
        assert_eq!(pgpass_line("h", 1, "d:b", "u", "p"), r"h:1:d\:b:u:p");
    }

    #[test]
    fn a_missing_dependency_says_to_run_setup() {
        let err = require_file(Path::new("/nonexistent/pg.jar"), "pgJDBC jar")
            .expect_err("missing file must be an error");
        let msg = format!("{err:#}");
        assert!(msg.contains("/nonexistent/pg.jar"), "{msg}");
        assert!(msg.contains("testenv/setup.sh"), "{msg}");
        let err = require_cmd("no-such-client-binary").expect_err("missing command");
        assert!(format!("{err:#}").contains("testenv/setup.sh"));
    }
}
