//! MySQL/MariaDB client probes, independent of the server they talk to.
//!
//! Every probe takes its connection from one environment contract (see
//! testenv/clients/README.md), built by [`mysql_env`]:
//!
//! - `MYSQL_UNIX_PORT`: a Unix socket; or TCP to `MYSQL_HOST` (default
//!   127.0.0.1) and `MYSQL_TCP_PORT` (default 3306). Setting both a socket
//!   and a host is an error.
//! - `MYSQL_USER` (required), `MYSQL_DATABASE` (optional).
//! - `MYSQL_PWD`: a password, if any (the mariadb CLI reads it itself, the
//!   other probes pass it on). Through the proxy none is needed.
//!
//! Each probe runs `select current_user()` and prints it (`user@host` as the
//! server's account, e.g. `app@%`); it exits 1 with the error on stderr.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::pgrds::{repo_root, require_cmd, require_file, run_probe_line, venv_python};
use crate::probes::{argv_of, compiled, Cancelled};

/// MariaDB Connector/J 2.7 from Debian's libmariadb-java.
const CONNECTOR_J_JAR: &str = "/usr/share/java/mariadb-java-client.jar";

/// The MySQL client probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MysqlClient {
    /// The `mariadb` CLI (Debian mariadb-client), with --no-defaults:
    /// testenv/clients/connect_mariadb.sh.
    Cli,
    /// PyMySQL from `.venv`: testenv/clients/connect_pymysql.py.
    PyMysql,
    /// PyMySQL configured by an option file only: `read_default_file` from
    /// `MYSQL_OPTION_FILE`, `read_default_group` from `MYSQL_OPTION_GROUP`
    /// (default `client`); see [`mysql_option_file`]. PyMySQL reads the file
    /// at every connect.
    PyMysqlOptionFile,
    /// mysql2 from testenv/node: testenv/clients/connect_mysql2.js.
    Mysql2,
    /// go-sql-driver/mysql: target/clients/bin/connect_gomysql.
    GoMysql,
    /// MariaDB Connector/J 2.7 in java source-launch mode, TCP only:
    /// testenv/clients/ConnectMariadbJ.java.
    ConnectorJ,
}

impl MysqlClient {
    pub const ALL: [MysqlClient; 6] = [
        MysqlClient::Cli,
        MysqlClient::PyMysql,
        MysqlClient::PyMysqlOptionFile,
        MysqlClient::Mysql2,
        MysqlClient::GoMysql,
        MysqlClient::ConnectorJ,
    ];

    /// Whether the probe connects through `MYSQL_UNIX_PORT` (Connector/J 2.7
    /// would need JNA for that).
    pub fn supports_unix_socket(self) -> bool {
        self != MysqlClient::ConnectorJ
    }

    /// The probe's program and arguments, to run it elsewhere.
    pub fn argv(self) -> Result<Vec<String>> {
        Ok(argv_of(&self.command()?))
    }

    fn command(self) -> Result<Command> {
        let clients = repo_root().join("testenv/clients");
        let script = |name: &str| require_file(&clients.join(name), name);
        Ok(match self {
            MysqlClient::Cli => {
                require_cmd("mariadb")?;
                Command::new(script("connect_mariadb.sh")?)
            }
            MysqlClient::PyMysql | MysqlClient::PyMysqlOptionFile => {
                let mut c = Command::new(venv_python()?);
                c.arg(script("connect_pymysql.py")?);
                if self == MysqlClient::PyMysqlOptionFile {
                    c.arg("--option-file");
                }
                c
            }
            MysqlClient::Mysql2 => {
                require_file(
                    &repo_root().join("testenv/node/node_modules/mysql2/package.json"),
                    "npm package mysql2 (testenv/node/node_modules/mysql2)",
                )?;
                let mut c = Command::new(require_cmd("node")?);
                c.arg(script("connect_mysql2.js")?);
                c
            }
            MysqlClient::GoMysql => Command::new(compiled("bin/connect_gomysql")?),
            MysqlClient::ConnectorJ => {
                let mut c = Command::new(require_cmd("java")?);
                c.arg("-cp").arg(require_file(
                    Path::new(CONNECTOR_J_JAR),
                    "MariaDB Connector/J jar (Debian libmariadb-java)",
                )?);
                c.arg(script("ConnectMariadbJ.java")?);
                c
            }
        })
    }
}

/// Where a MySQL probe connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MysqlAddr<'a> {
    Socket(&'a Path),
    Tcp { host: &'a str, port: u16 },
}

/// The probes' environment for `user` at `addr`, with a default database if
/// given. Add `MYSQL_PWD` for a server that wants a password.
pub fn mysql_env(addr: MysqlAddr<'_>, user: &str, database: Option<&str>) -> Vec<(String, String)> {
    let mut env = match addr {
        MysqlAddr::Socket(path) => vec![("MYSQL_UNIX_PORT".into(), path.display().to_string())],
        MysqlAddr::Tcp { host, port } => vec![
            ("MYSQL_HOST".into(), host.into()),
            ("MYSQL_TCP_PORT".into(), port.to_string()),
        ],
    };
    env.push(("MYSQL_USER".into(), user.into()));
    if let Some(db) = database {
        env.push(("MYSQL_DATABASE".into(), db.into()));
    }
    env
}

/// The text of an option file for [`MysqlClient::PyMysqlOptionFile`]: one
/// `[group]` with the socket or host and port, the user, and the database and
/// password if given. Values are written as they are (no quoting): they must
/// not contain a newline.
pub fn mysql_option_file(
    group: &str,
    addr: MysqlAddr<'_>,
    user: &str,
    database: Option<&str>,
    password: Option<&str>,
) -> String {
    let mut lines = vec![format!("[{group}]")];
    match addr {
        MysqlAddr::Socket(path) => lines.push(format!("socket={}", path.display())),
        MysqlAddr::Tcp { host, port } => {
            lines.push(format!("host={host}"));
            lines.push(format!("port={port}"));
        }
    }
    lines.push(format!("user={user}"));
    lines.extend(database.map(|db| format!("database={db}")));
    lines.extend(password.map(|p| format!("password={p}")));
    lines.push(String::new());
    lines.join("\n")
}

/// Run a MySQL probe with exactly `env` (plus PATH). Returns the
/// `current_user()` it printed, or an error carrying its stderr.
pub fn run_mysql_client<K, V>(kind: MysqlClient, env: &[(K, V)]) -> Result<String>
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    run_probe_line(&format!("{kind:?}"), kind.command()?, env)
}

/// The KILL QUERY probe (PyMySQL): runs `select sleep(30)` and, after
/// `after`, `KILL QUERY <its connection id>` from a second connection made
/// with the same `env`. A killed query reports code 1317.
pub fn run_kill_query<K, V>(after: Duration, env: &[(K, V)]) -> Result<Cancelled>
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    Cancelled::parse(&run_probe_line(
        "PyMysql KILL QUERY",
        kill_query_command(after)?,
        env,
    )?)
}

/// The KILL QUERY probe's program and arguments.
pub fn kill_query_argv(after: Duration) -> Result<Vec<String>> {
    Ok(argv_of(&kill_query_command(after)?))
}

fn kill_query_command(after: Duration) -> Result<Command> {
    let mut c = MysqlClient::PyMysql.command()?;
    c.args(["--kill-after-ms", &after.as_millis().max(1).to_string()]);
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_a_socket_or_a_host_never_both() {
        let sock = mysql_env(MysqlAddr::Socket(Path::new("/run/p.sock")), "app", None);
        assert_eq!(
            sock,
            vec![
                ("MYSQL_UNIX_PORT".to_string(), "/run/p.sock".to_string()),
                ("MYSQL_USER".into(), "app".into()),
            ]
        );
        let tcp = mysql_env(
            MysqlAddr::Tcp {
                host: "127.0.0.1",
                port: 3307,
            },
            "app",
            Some("shop"),
        );
        assert_eq!(
            tcp,
            vec![
                ("MYSQL_HOST".to_string(), "127.0.0.1".to_string()),
                ("MYSQL_TCP_PORT".into(), "3307".into()),
                ("MYSQL_USER".into(), "app".into()),
                ("MYSQL_DATABASE".into(), "shop".into()),
            ]
        );
    }

    #[test]
    fn option_file_has_one_group() {
        let text = mysql_option_file(
            "app",
            MysqlAddr::Tcp {
                host: "db",
                port: 3306,
            },
            "u",
            None,
            Some("tok"),
        );
        assert_eq!(text, "[app]\nhost=db\nport=3306\nuser=u\npassword=tok\n");
    }
}
