//! A MariaDB that authenticates like Amazon RDS for MySQL/MariaDB with IAM,
//! for tests.
//!
//! [`MariaDbRds::start`] runs `testenv/mariadbrds/mariadb-rds`, which creates
//! a fresh Debian MariaDB 10.11 (run as `mysql`) on a free loopback port, with
//! TLS and PAM (`auth_pam` v2, `pam_use_cleartext_plugin=ON`) running
//! `testenv/pgrds/pam_rds_iam.py` through libpam-python, the same independent
//! SigV4 verifier as the RDS-like PostgreSQL. Users are created like RDS IAM
//! users, PAM standing in for `AWSAuthenticationPlugin`:
//! `CREATE USER 'u'@'%' IDENTIFIED VIA pam USING '<service>' REQUIRE SSL`, and
//! each gets a database named like it.
//!
//! Tokens are signed for [`MariaDbRds::endpoint`] (`localhost:PORT`), region
//! [`REGION`], with a key registered by [`MariaDbRds::add_key`]; users given
//! to [`MariaDbRds::start_with`] as another endpoint need tokens signed for
//! that host instead. Clients connect over TCP (`--protocol=TCP`: the `mariadb`
//! CLI would take `localhost` for the unix socket) and send the token as
//! the password in cleartext.
//!
//! Every missing dependency is an error that says to run `testenv/setup.sh`;
//! nothing is ever skipped. The test process must run as root.
//!
//! Cleanup: dropping a [`MariaDbRds`] stops the server and removes its pam.d
//! files and directory. A server kept in a `static` (never dropped) is cleaned
//! up by a watcher process once the test process exits.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

pub use crate::rdslab::{botocore_token, TokenRequest, HOST, REGION};
use crate::rdslab::{require_cmd, require_file, run_probe, venv_python, write_private, LabDir};

/// The lab script, relative to the repository root.
pub const SCRIPT: &str = "testenv/mariadbrds/mariadb-rds";

/// What every client probe runs: the account the server authenticated and
/// the session's TLS version (empty without TLS).
pub const PROBE_SQL: &str = "SELECT CURRENT_USER(), (SELECT VARIABLE_VALUE \
     FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_version')";

/// A running RDS-like MariaDB. Dropping it stops the server.
pub struct MariaDbRds {
    lab: LabDir,
    port: u16,
    users: Vec<String>,
    /// Users bound to another endpoint: (user, host).
    extra: Vec<(String, String)>,
}

impl MariaDbRds {
    /// Start a fresh server with these IAM users (at least one), each with a
    /// database named like it. Takes a few seconds (mariadb-install-db).
    pub fn start(users: &[&str]) -> Result<MariaDbRds> {
        Self::start_with(users, &[])
    }

    /// Like [`MariaDbRds::start`], plus users reached through another
    /// endpoint of the same server: each `(user, host)` creates `user` whose
    /// logins must carry tokens signed for `host:PORT` (e.g. `127.0.0.1`,
    /// where the default endpoint is `localhost`). MariaDB picks the PAM
    /// service per user, so the endpoint is bound to the user.
    pub fn start_with(users: &[&str], extra_endpoints: &[(&str, &str)]) -> Result<MariaDbRds> {
        if users.is_empty() {
            bail!("MariaDbRds::start needs at least one user");
        }
        if let Some(bad) = users.iter().find(|u| u.is_empty() || u.contains(',')) {
            bail!("MariaDbRds::start: invalid user name {bad:?} (empty or contains ',')");
        }
        let (lab, port) = LabDir::start(SCRIPT, "mariadbrds-", |port| {
            let mut args = vec![
                "--endpoint".to_owned(),
                format!("{HOST}:{port}"),
                "--region".to_owned(),
                REGION.to_owned(),
                "--users".to_owned(),
                users.join(","),
            ];
            for (user, host) in extra_endpoints {
                args.extend(["--extra-endpoint".to_owned(), format!("{user}={host}")]);
            }
            args
        })?;
        Ok(MariaDbRds {
            lab,
            port,
            users: users.iter().map(|u| u.to_string()).collect(),
            extra: extra_endpoints
                .iter()
                .map(|(u, h)| (u.to_string(), h.to_string()))
                .collect(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The default endpoint's host name: `localhost`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// `host:port` that tokens of the users given to `start` must be signed for.
    pub fn endpoint(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    /// The host name `user`'s tokens must be signed for (and that its
    /// clients dial): the other endpoint's host for a user given to
    /// [`MariaDbRds::start_with`] as one, else [`HOST`].
    pub fn endpoint_host(&self, user: &str) -> &str {
        self.extra
            .iter()
            .find(|(u, _)| u == user)
            .map_or(HOST, |(_, h)| h.as_str())
    }

    pub fn region(&self) -> &str {
        REGION
    }

    /// The users given to `start` (not the other endpoints' users).
    pub fn users(&self) -> &[String] {
        &self.users
    }

    /// The instance directory (owned by root; the server's files are in
    /// `data/` and `run/`, owned by `mysql`).
    pub fn dir(&self) -> &Path {
        self.lab.path()
    }

    /// The server's unix socket (root logs in there, by unix_socket auth).
    pub fn socket(&self) -> PathBuf {
        self.dir().join("run/mysqld.sock")
    }

    /// The JSON keystore the verifier reads at every login.
    pub fn keys_path(&self) -> PathBuf {
        self.lab.keys_path()
    }

    /// The lab's CA, which signed the server's certificate (SAN localhost,
    /// 127.0.0.1): what clients that verify the server trust, like the RDS
    /// CA bundle on AWS.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir().join("ca.crt")
    }

    /// The verifier's decision log: one line per password it was given, as
    /// `user=.. via=conversation akid=.. ACCEPT|REJECT: reason (password N
    /// bytes)`. Never contains tokens.
    pub fn auth_log(&self) -> Result<String> {
        self.lab.read("pam_rds_iam.log")
    }

    /// The server's error log (it also records refused logins).
    pub fn server_log(&self) -> Result<String> {
        self.lab.read("mariadbd.log")
    }

    /// The `/etc/pam.d` files of this instance, the default endpoint's first
    /// (removed on drop).
    pub fn pam_service_files(&self) -> Result<Vec<PathBuf>> {
        self.lab.pam_service_files()
    }

    /// Register (or replace) an access key the server accepts. With a session
    /// token, tokens must carry exactly it in X-Amz-Security-Token; without,
    /// they must carry none. Takes effect for the next login.
    pub fn add_key(&self, akid: &str, secret: &str, session_token: Option<&str>) -> Result<()> {
        self.lab.add_key(akid, secret, session_token)
    }

    /// What botocore signs for `user` on this server: its endpoint host
    /// ([`MariaDbRds::endpoint_host`]), this port, [`REGION`], now, no
    /// session token. Change fields for a token that must be refused.
    pub fn token_request<'a>(
        &'a self,
        user: &'a str,
        akid: &'a str,
        secret: &'a str,
    ) -> TokenRequest<'a> {
        TokenRequest {
            host: self.endpoint_host(user),
            port: self.port,
            user,
            region: REGION,
            akid,
            secret,
            session_token: None,
            time: None,
        }
    }

    /// botocore's token for `user` on this server ([`MariaDbRds::token_request`]
    /// with this session token).
    pub fn botocore_token(
        &self,
        user: &str,
        akid: &str,
        secret: &str,
        session_token: Option<&str>,
    ) -> Result<String> {
        botocore_token(&TokenRequest {
            session_token,
            ..self.token_request(user, akid, secret)
        })
    }

    /// Runs SQL as root over the unix socket; the result rows, tab-separated,
    /// without column names (`mariadb -N -B`).
    pub fn sql(&self, sql: &str) -> Result<String> {
        self.lab.sql(&[], sql)
    }

    /// How `user` logs in with `password` (a token): TCP to its endpoint host
    /// and this port, its database, TLS verified against [`MariaDbRds::ca_cert`].
    pub fn login(&self, user: &str, password: &str) -> Login {
        Login {
            host: self.endpoint_host(user).to_owned(),
            port: self.port,
            user: user.to_owned(),
            password: password.to_owned(),
            database: Some(user.to_owned()),
            tls: Tls::VerifyCa(self.ca_cert()),
        }
    }
}

/// How a client uses TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// No TLS: `--skip-ssl` (option file `skip-ssl`); PyMySQL
    /// `ssl_disabled=True`.
    Disabled,
    /// TLS without checking the certificate: `--ssl` (option file `ssl`);
    /// PyMySQL `ssl={"verify_mode": False}`.
    Unverified,
    /// TLS, the certificate checked against this CA and the host name:
    /// `--ssl-ca=CA --ssl-verify-server-cert`; PyMySQL `ssl={"ca": CA}`.
    VerifyCa(PathBuf),
}

/// Everything a client needs to log in. Rendered as `mariadb` flags
/// ([`Login::mariadb_args`]), PyMySQL probe arguments
/// ([`Login::pymysql_args`]) or an option file ([`Login::option_file`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: Option<String>,
    pub tls: Tls,
}

impl Login {
    /// `mariadb` flags reading no option file (`--no-defaults` first).
    pub fn mariadb_args(&self) -> Vec<String> {
        let mut args = vec!["--no-defaults".to_owned(), "--protocol=TCP".to_owned()];
        args.extend(self.connection_args());
        match &self.tls {
            Tls::Disabled => args.push("--skip-ssl".to_owned()),
            Tls::Unverified => args.push("--ssl".to_owned()),
            Tls::VerifyCa(ca) => args.extend([
                format!("--ssl-ca={}", ca.display()),
                "--ssl-verify-server-cert".to_owned(),
            ]),
        }
        args
    }

    /// Arguments of testenv/clients/login_pymysql.py (keyword arguments of
    /// `pymysql.connect`).
    pub fn pymysql_args(&self) -> Vec<String> {
        let mut args = self.connection_args();
        args.push(match &self.tls {
            Tls::Disabled => "--ssl-disabled".to_owned(),
            Tls::Unverified => "--ssl".to_owned(),
            Tls::VerifyCa(ca) => format!("--ssl-ca={}", ca.display()),
        });
        args
    }

    /// `--host --port --user --password [--database]`, spelled alike by the
    /// `mariadb` CLI and the PyMySQL probe.
    fn connection_args(&self) -> Vec<String> {
        let Self {
            host,
            port,
            user,
            password,
            database,
            tls: _,
        } = self;
        let mut args = vec![
            format!("--host={host}"),
            format!("--port={port}"),
            format!("--user={user}"),
            format!("--password={password}"),
        ];
        args.extend(database.iter().map(|d| format!("--database={d}")));
        args
    }

    /// A `[client]` option file (my.cnf syntax) with this login, read by
    /// `mariadb --defaults-file=F` and PyMySQL's `read_default_file=F`.
    /// PyMySQL reads host, port, user, password, database and ssl-ca from it
    /// and ignores `protocol`, `ssl`, `skip-ssl` and `ssl-verify-server-cert`
    /// (without ssl-ca it uses TLS if the server offers it, unverified).
    /// Values are written unquoted: one that would need quoting or escaping
    /// is an error.
    pub fn option_file(&self) -> Result<String> {
        let Self {
            host,
            port,
            user,
            password,
            database,
            tls,
        } = self;
        let mut lines = vec!["[client]".to_owned()];
        let mut set = |key: &str, value: &str| -> Result<()> {
            lines.push(format!("{key}={}", option_value(key, value)?));
            Ok(())
        };
        set("host", host)?;
        set("port", &port.to_string())?;
        set("protocol", "TCP")?;
        set("user", user)?;
        set("password", password)?;
        if let Some(d) = database {
            set("database", d)?;
        }
        match tls {
            Tls::Disabled => lines.push("skip-ssl".to_owned()),
            Tls::Unverified => lines.push("ssl".to_owned()),
            Tls::VerifyCa(ca) => {
                let ca = ca.to_str().context("ssl-ca path is not UTF-8")?;
                lines.push(format!("ssl-ca={}", option_value("ssl-ca", ca)?));
                lines.push("ssl-verify-server-cert".to_owned());
            }
        }
        Ok(lines.join("\n") + "\n")
    }
}

/// A value that my.cnf parsers (MariaDB's and Python's configparser) read
/// back unchanged without quotes: printable ASCII, no space, quote,
/// backslash or comment character.
fn option_value<'v>(key: &str, value: &'v str) -> Result<&'v str> {
    if value.is_empty() {
        bail!("option file: {key} is empty");
    }
    if let Some(c) = value
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '\'' | '"' | '\\' | '#' | ';'))
    {
        bail!(
            "option file: {key} contains {c:?}, which would need quoting; use a value without it"
        );
    }
    Ok(value)
}

/// Write `text` (an option file) to `path`, mode 0600.
pub fn write_option_file(path: &Path, text: &str) -> Result<()> {
    write_private(path, text.as_bytes())
}

/// Where a client takes its connection settings from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connect<'a> {
    /// Flags only: `mariadb --no-defaults ...` ([`Login::mariadb_args`]),
    /// PyMySQL keyword arguments ([`Login::pymysql_args`]).
    Flags(&'a Login),
    /// The `[client]` group of this option file and nothing else:
    /// `mariadb --defaults-file=PATH`, PyMySQL `read_default_file=PATH`.
    OptionFile(&'a Path),
}

/// The client probes. Each runs [`PROBE_SQL`] and prints its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// Debian's `mariadb` CLI (Connector/C), `-N -B -e PROBE_SQL`.
    Mariadb,
    /// PyMySQL from `.venv`: testenv/clients/login_pymysql.py.
    PyMysql,
}

impl Client {
    pub const ALL: [Client; 2] = [Client::Mariadb, Client::PyMysql];

    /// The client's program and arguments, to run it elsewhere (e.g. in a
    /// test pod's container environment).
    pub fn argv(self, connect: Connect<'_>) -> Result<Vec<String>> {
        let c = self.command(connect)?;
        Ok(std::iter::once(c.get_program())
            .chain(c.get_args())
            .map(|s| s.to_string_lossy().into_owned())
            .collect())
    }

    fn command(self, connect: Connect<'_>) -> Result<Command> {
        Ok(match self {
            Client::Mariadb => {
                let mut c = Command::new(require_cmd("mariadb")?);
                match connect {
                    Connect::Flags(login) => c.args(login.mariadb_args()),
                    Connect::OptionFile(path) => {
                        c.arg(format!("--defaults-file={}", path.display()))
                    }
                };
                c.args(["--batch", "--skip-column-names", "-e", PROBE_SQL]);
                c
            }
            Client::PyMysql => {
                let mut c = Command::new(venv_python()?);
                c.arg(require_file(
                    &crate::rdslab::repo_root().join("testenv/clients/login_pymysql.py"),
                    "login_pymysql.py",
                )?);
                match connect {
                    Connect::Flags(login) => c.args(login.pymysql_args()),
                    Connect::OptionFile(path) => {
                        c.arg(format!("--defaults-file={}", path.display()))
                    }
                };
                c
            }
        })
    }
}

/// What a probe printed: the account it was authenticated as and the
/// session's TLS version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `CURRENT_USER()`, e.g. `app_user@%`.
    pub current_user: String,
    /// E.g. `TLSv1.3`; `None` without TLS.
    pub tls_version: Option<String>,
    /// Whatever else the client printed on stdout (the `mariadb` CLI prints
    /// its option warnings there).
    pub other_output: Vec<String>,
}

/// Run a client probe (no environment but PATH). Returns the session it
/// printed, or an error carrying its stderr (e.g. `ERROR 1045 (28000):
/// Access denied ...`).
pub fn run_client(kind: Client, connect: Connect<'_>) -> Result<Session> {
    run_command(&format!("{kind:?}"), &mut kind.command(connect)?)
}

/// Run the `mariadb` CLI with exactly these connection arguments (e.g.
/// [`Login::mariadb_args`] plus `--enable-cleartext-plugin`), then the probe.
pub fn run_mariadb_args(args: &[String]) -> Result<Session> {
    let mut c = Command::new(require_cmd("mariadb")?);
    c.args(args)
        .args(["--batch", "--skip-column-names", "-e", PROBE_SQL]);
    run_command("mariadb", &mut c)
}

fn run_command(what: &str, cmd: &mut Command) -> Result<Session> {
    let env: [(OsString, OsString); 0] = [];
    let (status, stdout, stderr) =
        run_probe(cmd, &env).with_context(|| format!("running client {what}"))?;
    if !status.success() {
        bail!("client {what} failed ({status}): {}", stderr.trim());
    }
    parse_probe(&stdout)
        .with_context(|| format!("client {what} printed {stdout:?}; stderr: {stderr}"))
}

/// The one row `CURRENT_USER() \t Ssl_version` (the only line with a tab),
/// and the other lines.
fn parse_probe(stdout: &str) -> Result<Session> {
    let (rows, other): (Vec<&str>, Vec<&str>) = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .partition(|l| l.contains('\t'));
    let [row] = rows.as_slice() else {
        bail!("expected one row of two tab-separated columns");
    };
    let Some((user, tls)) = row.split_once('\t') else {
        bail!("expected two tab-separated columns");
    };
    let tls = tls.trim();
    Ok(Session {
        current_user: user.trim().to_owned(),
        tls_version: (!tls.is_empty() && tls != "NULL").then(|| tls.to_owned()),
        other_output: other.into_iter().map(str::to_owned).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(tls: Tls) -> Login {
        Login {
            host: "localhost".into(),
            port: 3306,
            user: "app_user".into(),
            password: "localhost:3306/?Action=connect&DBUser=app_user&X-Amz-Signature=ab".into(),
            database: Some("app_user".into()),
            tls,
        }
    }

    #[test]
    fn option_file_has_every_setting_in_the_client_group() {
        let text = login(Tls::VerifyCa("/ca/server.crt".into()))
            .option_file()
            .expect("renders");
        assert_eq!(
            text,
            "[client]\nhost=localhost\nport=3306\nprotocol=TCP\nuser=app_user\n\
             password=localhost:3306/?Action=connect&DBUser=app_user&X-Amz-Signature=ab\n\
             database=app_user\nssl-ca=/ca/server.crt\nssl-verify-server-cert\n"
        );
        assert!(login(Tls::Disabled)
            .option_file()
            .expect("renders")
            .ends_with("\nskip-ssl\n"));
        assert!(login(Tls::Unverified)
            .option_file()
            .expect("renders")
            .ends_with("database=app_user\nssl\n"));
    }

    #[test]
    fn option_file_refuses_values_that_need_quoting() {
        for bad in ["a b", "a#b", "a\"b", "a'b", r"a\b", "a;b", ""] {
            let mut l = login(Tls::Unverified);
            l.password = bad.into();
            let err = l.option_file().expect_err(bad);
            assert!(format!("{err:#}").contains("password"), "{bad:?}: {err:#}");
        }
    }

    #[test]
    fn flags_name_the_tls_mode() {
        let args = login(Tls::Disabled).mariadb_args();
        assert_eq!(args[..2], ["--no-defaults", "--protocol=TCP"]);
        assert!(args.contains(&"--host=localhost".to_owned()));
        assert!(args.contains(&"--port=3306".to_owned()));
        assert_eq!(args.last().map(String::as_str), Some("--skip-ssl"));
        let args = login(Tls::VerifyCa("/ca.pem".into())).mariadb_args();
        assert!(args.ends_with(&[
            "--ssl-ca=/ca.pem".to_owned(),
            "--ssl-verify-server-cert".to_owned()
        ]));
        let args = login(Tls::Unverified).pymysql_args();
        assert_eq!(args.last().map(String::as_str), Some("--ssl"));
        assert!(args.contains(&"--database=app_user".to_owned()));
    }

    #[test]
    fn probe_output_is_user_and_tls_version() {
        assert_eq!(
            parse_probe("app_user@%\tTLSv1.3\n").expect("parses"),
            Session {
                current_user: "app_user@%".into(),
                tls_version: Some("TLSv1.3".into()),
                other_output: vec![],
            }
        );
        let s = parse_probe("WARNING: obsolete\nu@%\tTLSv1.2\n").expect("parses");
        assert_eq!(s.other_output, ["WARNING: obsolete"]);
        assert_eq!(s.current_user, "u@%");
        assert_eq!(
            parse_probe("app_user@%\t\n").expect("parses").tls_version,
            None
        );
        assert!(parse_probe("a\tb\nc\td\n").is_err());
        assert!(parse_probe("no tab\n").is_err());
        assert!(parse_probe("").is_err());
    }
}
