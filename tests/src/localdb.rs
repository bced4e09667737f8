//! Plain local database servers for the client probes' self-tests and the
//! proxy's failure cases and benchmarks: no IAM, no password. [`TrustPg`] is
//! a PostgreSQL with `trust` authentication on a Unix socket directory and on
//! loopback TCP, there without TLS, or TLS-only with `trust` or asking for
//! SCRAM ([`TcpAuth`]); [`PlainMariadb`] is a Debian MariaDB with
//! password-less users on a socket and loopback TCP.
//!
//! Both run as their unprivileged system user (`postgres`, `mysql`) in a temp
//! dir under /tmp, so the test process must run as root. Dropping a server
//! stops it and removes its dir; a server kept in a `static` (never dropped)
//! is stopped by a watcher once the test process exits. A missing package is
//! an error naming `testenv/setup.sh`.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::pgrds::{free_port, require_cmd, require_file, SETUP_HINT};

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Run `argv` as the system user `user` and fail with its output if it fails.
fn run_as(user: &str, argv: &[&str]) -> Result<String> {
    let out = Command::new(require_cmd("runuser")?)
        .args(["-u", user, "--"])
        .args(argv)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", argv.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}\n{}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A temp dir under /tmp owned by the system user `owner`, mode 0755.
fn server_dir(prefix: &str, owner: &str) -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .context("creating a server dir under /tmp")?;
    let chown = Command::new("chown")
        .arg(format!("{owner}:"))
        .arg(dir.path())
        .status()
        .context("running chown")?;
    if !chown.success() {
        bail!(
            "chown {owner} {} failed; {SETUP_HINT}",
            dir.path().display()
        );
    }
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// Once this process is gone, run `stop` (a shell snippet) in a detached
/// watcher, for servers kept in a `static`.
fn stop_when_owner_exits(stop: &str) -> Result<()> {
    use std::os::unix::process::CommandExt;
    Command::new("sh")
        .args([
            "-c",
            r#"while kill -0 "$0" 2>/dev/null; do sleep 1; done; eval "$1""#,
        ])
        .arg(std::process::id().to_string())
        .arg(stop)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting the cleanup watcher")?;
    Ok(())
}

/// Quote a shell word.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The newest /usr/lib/postgresql/N/bin with initdb.
fn pg_bindir() -> Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| anyhow!("no /usr/lib/postgresql; {SETUP_HINT}"))?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        anyhow!("no PostgreSQL server binaries under /usr/lib/postgresql; {SETUP_HINT}")
    })
}

/// How a [`TrustPg`] takes connections on 127.0.0.1 (its Unix socket is
/// always `trust`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpAuth {
    /// `ssl = off`, `host ... trust`: answers an SSLRequest with `N`.
    Plain,
    /// TLS only (`hostssl ... trust`, `hostnossl ... reject`), with a
    /// certificate for `localhost` signed by [`TrustPg::ca_cert`]'s CA.
    TlsTrust,
    /// TLS only, `hostssl ... scram-sha-256`: the server asks for SCRAM.
    TlsScram,
}

/// A PostgreSQL with `trust` authentication for everyone, listening on a Unix
/// socket in its temp dir and on 127.0.0.1. Every user is created as a login
/// role; a database is named like the first user. `log_connections` is on.
pub struct TrustPg {
    dir: tempfile::TempDir,
    port: u16,
    database: String,
}

impl TrustPg {
    pub fn start(users: &[&str]) -> Result<TrustPg> {
        Self::start_with(users, TcpAuth::Plain, 100)
    }

    /// Like [`TrustPg::start`], with `tcp` on 127.0.0.1 and room for
    /// `max_connections` sessions.
    pub fn start_with(users: &[&str], tcp: TcpAuth, max_connections: u32) -> Result<TrustPg> {
        let Some(first) = users.first() else {
            bail!("TrustPg::start needs at least one user");
        };
        let bin = pg_bindir()?;
        let tool = |name: &str| bin.join(name).display().to_string();
        let dir = server_dir("trustpg-", "postgres")?;
        let d = dir.path().display().to_string();
        let data = format!("{d}/data");
        run_as(
            "postgres",
            &[
                &tool("initdb"),
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "--no-locale",
                "-E",
                "UTF8",
            ],
        )?;
        let (hba, tls_opts) = match tcp {
            TcpAuth::Plain => ("host all all 127.0.0.1/32 trust\n", String::new()),
            TcpAuth::TlsTrust | TcpAuth::TlsScram => {
                write_server_cert(dir.path())?;
                let hba = if tcp == TcpAuth::TlsTrust {
                    "hostssl all all 127.0.0.1/32 trust\nhostnossl all all all reject\n"
                } else {
                    "hostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all all reject\n"
                };
                let tls = format!(
                    " -c ssl=on -c ssl_cert_file={d}/server.crt -c ssl_key_file={d}/server.key"
                );
                (hba, tls)
            }
        };
        fs::write(
            format!("{data}/pg_hba.conf"),
            format!("local all all trust\n{hba}"),
        )?;
        let mut last_err = None;
        for _ in 0..3 {
            let port = free_port()?;
            let opts = format!(
                "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={d} \
                 -c fsync=off -c log_connections=on -c max_connections={max_connections}{tls_opts}"
            );
            let started = run_as(
                "postgres",
                &[
                    &tool("pg_ctl"),
                    "-D",
                    &data,
                    "-l",
                    &format!("{d}/postgres.log"),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    &opts,
                    "start",
                ],
            );
            match started {
                Ok(_) => {
                    let pg = TrustPg {
                        dir,
                        port,
                        database: first.to_string(),
                    };
                    stop_when_owner_exits(&pg.stop_script(&tool("pg_ctl")))?;
                    pg.create(&tool("psql"), users)?;
                    return Ok(pg);
                }
                Err(e) => last_err = Some(e),
            }
            // A port taken between free_port and the bind: try another.
            let log = fs::read_to_string(format!("{d}/postgres.log")).unwrap_or_default();
            if !log.contains("could not bind") {
                break;
            }
        }
        let log = fs::read_to_string(format!("{d}/postgres.log")).unwrap_or_default();
        Err(last_err
            .unwrap_or_else(|| anyhow!("pg_ctl start failed"))
            .context(format!("starting TrustPg; server log:\n{log}")))
    }

    fn stop_script(&self, pg_ctl: &str) -> String {
        let d = sh_quote(&self.dir().display().to_string());
        format!(
            "runuser -u postgres -- {} -D {d}/data -m immediate -w stop; rm -rf {d}",
            sh_quote(pg_ctl)
        )
    }

    fn create(&self, psql: &str, users: &[&str]) -> Result<()> {
        let ident = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let mut argv: Vec<String> = vec![
            psql.into(),
            "-X".into(),
            "-q".into(),
            "-v".into(),
            "ON_ERROR_STOP=1".into(),
            "-h".into(),
            self.socket_dir().display().to_string(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            "postgres".into(),
        ];
        for u in users {
            argv.extend(["-c".into(), format!("create role {} login", ident(u))]);
        }
        argv.extend([
            "-c".into(),
            format!(
                "create database {} owner {}",
                ident(&self.database),
                ident(&self.database)
            ),
        ]);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        run_as("postgres", &argv).map(drop)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The PEM CA certificate that signed the server's certificate (TLS
    /// variants only): the "RDS CA bundle" for sslmode verify-ca and
    /// verify-full. The server's certificate names `localhost` only.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir().join("ca.crt")
    }

    /// The Unix socket directory (PGHOST for a socket connection).
    pub fn socket_dir(&self) -> &Path {
        self.dir()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The database named like the first user.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The libpq environment through the socket directory, no TLS.
    pub fn socket_env(&self, user: &str) -> Vec<(String, String)> {
        self.env(&self.socket_dir().display().to_string(), user)
    }

    /// The libpq environment over 127.0.0.1 without TLS.
    pub fn tcp_env(&self, user: &str) -> Vec<(String, String)> {
        self.env("127.0.0.1", user)
    }

    fn env(&self, host: &str, user: &str) -> Vec<(String, String)> {
        vec![
            ("PGHOST".into(), host.into()),
            ("PGPORT".into(), self.port.to_string()),
            ("PGUSER".into(), user.into()),
            ("PGDATABASE".into(), self.database.clone()),
            ("PGSSLMODE".into(), "disable".into()),
        ]
    }

    /// The server log (with a `connection received: host=...` line per
    /// connection).
    pub fn server_log(&self) -> Result<String> {
        let p = self.dir().join("postgres.log");
        fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }
}

impl Drop for TrustPg {
    fn drop(&mut self) {
        let Ok(bin) = pg_bindir() else { return };
        let data = self.dir().join("data").display().to_string();
        let pg_ctl = bin.join("pg_ctl").display().to_string();
        if let Err(e) = run_as(
            "postgres",
            &[&pg_ctl, "-D", &data, "-m", "immediate", "-w", "stop"],
        ) {
            eprintln!("TrustPg stop: {e:#}");
        }
    }
}

/// Writes `ca.crt` (a fresh CA), `server.crt` (for `localhost` only, signed
/// by it) and `server.key` (0600) into `dir`, owned by `postgres`.
fn write_server_cert(dir: &Path) -> Result<()> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    use std::os::unix::fs::PermissionsExt;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "test database CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::from_params(&ca, &ca_key);
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &issuer)?;
    for (name, pem, mode) in [
        ("ca.crt", ca_cert.pem(), 0o644),
        ("server.crt", cert.pem(), 0o644),
        ("server.key", key.serialize_pem(), 0o600),
    ] {
        let path = dir.join(name);
        fs::write(&path, pem)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        let chown = Command::new("chown")
            .arg("postgres:")
            .arg(&path)
            .status()
            .context("running chown")?;
        if !chown.success() {
            bail!("chown postgres {} failed; {SETUP_HINT}", path.display());
        }
    }
    Ok(())
}

/// A Debian MariaDB (mariadb-server) with password-less users
/// (`CREATE USER 'u'@'%'`, anonymous users dropped, `--skip-name-resolve`),
/// on a Unix socket in its temp dir and on 127.0.0.1. A database is named like
/// the first user; every user gets all privileges on it.
pub struct PlainMariadb {
    dir: tempfile::TempDir,
    port: u16,
    server: Child,
    database: String,
}

impl PlainMariadb {
    pub fn start(users: &[&str]) -> Result<PlainMariadb> {
        let Some(first) = users.first() else {
            bail!("PlainMariadb::start needs at least one user");
        };
        if let Some(bad) = users.iter().find(|u| !is_plain_name(u)) {
            bail!("PlainMariadb::start: user {bad:?} must be [A-Za-z0-9_]+");
        }
        let mariadbd = require_file(
            Path::new("/usr/sbin/mariadbd"),
            "mariadbd (Debian mariadb-server)",
        )?;
        let install = require_cmd("mariadb-install-db")?;
        let dir = server_dir("plainmariadb-", "mysql")?;
        let d = dir.path().display().to_string();
        run_as(
            "mysql",
            &[
                &install.display().to_string(),
                "--no-defaults",
                &format!("--datadir={d}/data"),
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
        )?;
        let mut init = vec!["DROP USER IF EXISTS ''@'localhost';".to_owned()];
        init.push(format!("CREATE DATABASE `{first}`;"));
        for u in users {
            init.push(format!("CREATE USER '{u}'@'%';"));
            init.push(format!("GRANT ALL ON `{first}`.* TO '{u}'@'%';"));
        }
        fs::write(format!("{d}/init.sql"), init.join("\n") + "\n")?;

        let mut last_err = None;
        for _ in 0..3 {
            let port = free_port()?;
            let log = dir.path().join("error.log");
            let _ = fs::remove_file(&log);
            let mut server = Command::new(require_cmd("runuser")?)
                .args(["-u", "mysql", "--"])
                .arg(&mariadbd)
                .arg("--no-defaults")
                .arg(format!("--datadir={d}/data"))
                .arg(format!("--socket={d}/mysqld.sock"))
                .arg(format!("--port={port}"))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--pid-file={d}/mariadbd.pid"))
                .arg(format!("--log-error={d}/error.log"))
                .arg(format!("--init-file={d}/init.sql"))
                .arg("--skip-name-resolve")
                .arg("--innodb-buffer-pool-size=32M")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting mariadbd")?;
            match wait_ready(&mut server, &log) {
                Ok(()) => {
                    let db = PlainMariadb {
                        dir,
                        port,
                        server,
                        database: first.to_string(),
                    };
                    stop_when_owner_exits(&db.stop_script())?;
                    return Ok(db);
                }
                Err(e) => {
                    stop_mariadbd(&mut server, dir.path());
                    let text = fs::read_to_string(&log).unwrap_or_default();
                    let port_taken = text.contains("Address already in use");
                    last_err = Some(e.context(format!("MariaDB error log:\n{text}")));
                    if !port_taken {
                        break;
                    }
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("mariadbd did not start")))
    }

    fn stop_script(&self) -> String {
        let d = sh_quote(&self.dir().display().to_string());
        format!(
            "pid=$(cat {d}/mariadbd.pid 2>/dev/null) && kill \"$pid\" && \
             while kill -0 \"$pid\" 2>/dev/null; do sleep 0.2; done; rm -rf {d}"
        )
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The Unix socket (`MYSQL_UNIX_PORT`).
    pub fn socket(&self) -> PathBuf {
        self.dir().join("mysqld.sock")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The database named like the first user.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Run SQL as root over the socket with the mariadb CLI; returns its
    /// tab-separated output without column names.
    pub fn sql(&self, sql: &str) -> Result<String> {
        let out = Command::new(require_cmd("mariadb")?)
            .arg("--no-defaults")
            .arg("--protocol=socket")
            .arg(format!("--socket={}", self.socket().display()))
            .args([
                "--user=root",
                "--batch",
                "--skip-column-names",
                "--execute",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .context("running the mariadb CLI")?;
        if !out.status.success() {
            bail!(
                "mariadb as root failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The server's error log.
    pub fn error_log(&self) -> Result<String> {
        let p = self.dir().join("error.log");
        fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }
}

impl Drop for PlainMariadb {
    fn drop(&mut self) {
        stop_mariadbd(&mut self.server, self.dir.path());
    }
}

/// Wait for "ready for connections" in the error log (the init file has run
/// by then), or fail if the server exits or takes too long.
fn wait_ready(server: &mut Child, log: &Path) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(log) {
            f.read_to_string(&mut text)?;
        }
        if text.contains("ready for connections") {
            return Ok(());
        }
        if let Some(status) = server.try_wait()? {
            bail!("mariadbd exited ({status}) while starting");
        }
        if Instant::now() >= deadline {
            bail!("mariadbd not ready after {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stop mariadbd (SIGTERM via its pid file) and reap runuser, which exits
/// when the server has shut down; kill it if that takes too long.
fn stop_mariadbd(server: &mut Child, dir: &Path) {
    if let Ok(pid) = fs::read_to_string(dir.join("mariadbd.pid")) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
    let deadline = Instant::now() + START_TIMEOUT;
    while matches!(server.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if matches!(server.try_wait(), Ok(None)) {
        let _ = server.kill();
        let _ = server.wait();
    }
}

fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
