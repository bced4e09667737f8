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

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

use crate::probes;
pub use crate::rdslab::{
    botocore_token, free_port, repo_root, venv_python, TokenRequest, HOST, REGION,
};
pub(crate) use crate::rdslab::{require_cmd, require_file, SETUP_HINT};
use crate::rdslab::{run_probe, write_private, LabDir};

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
    lab: LabDir,
    port: u16,
    users: Vec<String>,
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
        let (lab, port) = LabDir::start("testenv/pgrds/pg-rds", "pgrds-", |port| {
            let mut args = vec![
                "--endpoint".to_owned(),
                format!("{HOST}:{port}"),
                "--region".to_owned(),
                REGION.to_owned(),
                "--users".to_owned(),
                users.join(","),
            ];
            for (db, host) in extra_dbs {
                args.extend(["--extra-db".to_owned(), format!("{db}={host}")]);
            }
            args
        })?;
        Ok(PgRds {
            lab,
            port,
            users: users.iter().map(|u| u.to_string()).collect(),
        })
    }

    /// Runs SQL as the superuser (over the unix socket) and returns psql's
    /// unaligned output, e.g. to create another database.
    pub fn sql(&self, sql: &str) -> Result<String> {
        self.lab
            .sql(&["--port".to_owned(), self.port.to_string()], sql)
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
        self.lab.path()
    }

    /// The JSON keystore the PAM module reads at every login.
    pub fn keys_path(&self) -> PathBuf {
        self.lab.keys_path()
    }

    /// The server's self-signed certificate (SAN localhost, 127.0.0.1). Give it
    /// to clients that verify the server (node-postgres: NODE_EXTRA_CA_CERTS).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir().join("server.crt")
    }

    /// The PAM module's decision log: one line per login with
    /// `user=.. via=.. akid=.. ACCEPT|REJECT: reason`. Never contains tokens.
    pub fn auth_log(&self) -> Result<String> {
        self.lab.read("pam_rds_iam.log")
    }

    /// The PostgreSQL server log.
    pub fn server_log(&self) -> Result<String> {
        self.lab.read("postgres.log")
    }

    /// The `/etc/pam.d` file of this instance's own endpoint (removed on drop).
    pub fn pam_service_file(&self) -> Result<PathBuf> {
        self.lab
            .pam_service_files()?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("{} lists no PAM service", self.dir().display()))
    }

    /// Register (or replace) an access key the server accepts. With a session
    /// token, tokens must carry exactly it in X-Amz-Security-Token; without,
    /// they must carry none. Takes effect for the next login.
    pub fn add_key(&self, akid: &str, secret: &str, session_token: Option<&str>) -> Result<()> {
        self.lab.add_key(akid, secret, session_token)
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
    /// asyncpg from `.venv`: testenv/clients/connect_asyncpg.py. With a URL
    /// target it takes the password from a token file; from the environment
    /// it reads PGPASSFILE its own way, which breaks on a spec-correct pgpass
    /// (asyncpg#1249) and works through the agent's proxy (no password).
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
                let mut c = Command::new(venv_python()?);
                c.arg(require_file(
                    &clients.join("connect_asyncpg.py"),
                    "connect_asyncpg.py",
                )?);
                match target {
                    Target::Env => {}
                    Target::Url { url_env, token_env } => {
                        c.args([url_env, token_env]);
                    }
                    Target::Service(_) => return Err(unsupported()),
                }
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
    run_probe_line(&format!("{kind:?}"), kind.command(target)?, env)
}

/// Run a probe with exactly `env` (plus PATH), with a timeout; returns the one
/// non-empty line it printed, or an error carrying its stderr.
pub(crate) fn run_probe_line<K, V>(name: &str, mut cmd: Command, env: &[(K, V)]) -> Result<String>
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let env: Vec<(OsString, OsString)> = env
        .iter()
        .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
        .collect();
    let (status, stdout, stderr) =
        run_probe(&mut cmd, &env).with_context(|| format!("running client {name}"))?;
    if !status.success() {
        bail!("client {name} failed ({status}): {}", stderr.trim());
    }
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines.as_slice() {
        [user] => Ok(user.trim().to_string()),
        _ => bail!("client {name} printed {stdout:?}, expected one line; stderr: {stderr}"),
    }
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
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    write_private(path, text.as_bytes())
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
}
