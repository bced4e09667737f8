//! Outputs render files from the databases' current tokens. The refresh loop
//! knows nothing about file formats: it asks every output for its files and
//! writes them all at once. Adding an output never touches the loop.
//!
//! - [`TokenFiles`]: `token` (default database) and `NAME.token`;
//! - [`Pgpass`]: one libpq passfile line per host, port and user;
//! - [`PgService`]: `pg_service.conf`, one section per PostgreSQL database.

use std::sync::Arc;

use rds_iam_common::{Endpoint, Engine, Mode, PGPASS_FILE, PG_SERVICE_FILE};

use crate::pgpass;
use crate::source::Current;

/// A database and its current token (if it has had one).
#[derive(Debug, Clone)]
pub struct DbState<'a> {
    pub endpoint: &'a Endpoint,
    pub current: Option<Arc<Current>>,
}

/// A file to write into the agent's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub name: String,
    pub contents: Vec<u8>,
    /// The database the file belongs to alone (`None`: shared by all).
    pub owner: Option<rds_iam_common::DbName>,
}

/// An output cannot render (a value would break the format).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{output}: {reason}")]
pub struct OutputError {
    pub output: &'static str,
    pub reason: String,
}

/// Renders files from the databases' state.
pub trait Output: Send + Sync {
    fn name(&self) -> &'static str;
    fn render(&self, dbs: &[DbState<'_>]) -> Result<Vec<File>, OutputError>;
}

/// `token` and `NAME.token`: the raw token, no newline.
pub struct TokenFiles;

impl Output for TokenFiles {
    fn name(&self) -> &'static str {
        "token"
    }

    fn render(&self, dbs: &[DbState<'_>]) -> Result<Vec<File>, OutputError> {
        Ok(dbs
            .iter()
            .filter_map(|d| {
                d.current.as_ref().map(|c| File {
                    name: d.endpoint.name.token_file(),
                    contents: c.token.expose().as_bytes().to_vec(),
                    owner: Some(d.endpoint.name.clone()),
                })
            })
            .collect())
    }
}

/// The libpq passfile: one `host:port:*:user:token` line per PostgreSQL
/// host, port and user that has a token. A token depends on those and the
/// region, never on the database name, so two databases that share them
/// share one line (the webhook refuses them in two regions).
pub struct Pgpass;

impl Output for Pgpass {
    fn name(&self) -> &'static str {
        "pgpass"
    }

    fn render(&self, dbs: &[DbState<'_>]) -> Result<Vec<File>, OutputError> {
        let mut seen = Vec::new();
        let mut text = String::new();
        for d in dbs.iter().filter(|d| d.endpoint.engine == Engine::Postgres) {
            let Some(c) = &d.current else { continue };
            let key = d.endpoint.token_key();
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let e = d.endpoint;
            let line = pgpass::line(&e.host, e.port, &e.user, c.token.expose()).map_err(|err| {
                OutputError {
                    output: "pgpass",
                    reason: format!("database {}: {err}", e.name),
                }
            })?;
            text.push_str(&line);
        }
        if seen.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![File {
            name: PGPASS_FILE.to_owned(),
            contents: text.into_bytes(),
            owner: None,
        }])
    }
}

/// `pg_service.conf`: a `[NAME]` section per PostgreSQL database that has a
/// token, including `[default]`, so `psql service=orders` needs nothing else.
/// In proxy mode a section points at the agent's socket in `dir`.
pub struct PgService {
    /// The agent's directory, as the app sees it (the same mount path).
    pub dir: String,
}

impl Output for PgService {
    fn name(&self) -> &'static str {
        "pg_service.conf"
    }

    fn render(&self, dbs: &[DbState<'_>]) -> Result<Vec<File>, OutputError> {
        let mut text =
            String::from("# Written by rds-iam-tokenagent; passwords are in the pgpass file.\n");
        let mut any = false;
        for e in dbs
            .iter()
            .filter(|d| d.current.is_some())
            .map(|d| d.endpoint)
            .filter(|e| e.engine == Engine::Postgres)
        {
            any = true;
            text.push_str(&format!("\n[{}]\n", e.name));
            match e.access.mode {
                Mode::Files => {
                    text.push_str(&format!("host={}\nport={}\n", e.host, e.port));
                }
                Mode::Proxy => {
                    text.push_str(&format!(
                        "host={}\nport={}\n",
                        e.socket_dir(&self.dir),
                        rds_iam_common::endpoint::PROXY_PG_PORT
                    ));
                }
            }
            text.push_str(&format!("user={}\n", e.user));
            if let Some(db) = &e.database {
                text.push_str(&format!("dbname={db}\n"));
            }
            let sslmode = match e.access.mode {
                Mode::Files => e.sslmode.as_str(),
                Mode::Proxy => "disable",
            };
            text.push_str(&format!("sslmode={sslmode}\n"));
        }
        if !any {
            return Ok(Vec::new());
        }
        Ok(vec![File {
            name: PG_SERVICE_FILE.to_owned(),
            contents: text.into_bytes(),
            owner: None,
        }])
    }
}

/// Every output of the agent, in the order their files are replaced.
pub fn all(dir: &str) -> Vec<Box<dyn Output>> {
    vec![
        Box::new(TokenFiles),
        Box::new(Pgpass),
        Box::new(PgService {
            dir: dir.to_owned(),
        }),
    ]
}

/// Renders every output.
pub fn render_all(
    outputs: &[Box<dyn Output>],
    dbs: &[DbState<'_>],
) -> Result<Vec<File>, OutputError> {
    let mut files = Vec::new();
    for o in outputs {
        files.extend(o.render(dbs)?);
    }
    Ok(files)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::token::Token;
    use rds_iam_common::{Access, DbName, SslMode};
    use std::time::{Duration, SystemTime};

    fn db(name: &str, host: &str, user: &str, database: Option<&str>) -> Endpoint {
        Endpoint {
            name: DbName::parse(name).unwrap(),
            engine: Engine::Postgres,
            host: host.into(),
            port: 5432,
            user: user.into(),
            database: database.map(str::to_owned),
            region: "eu-west-1".into(),
            sslmode: SslMode::Require,
            access: Access::default(),
        }
    }

    fn current(t: &str) -> Option<Arc<Current>> {
        Some(Arc::new(Current {
            token: Token::new(t.into()),
            expires_at: SystemTime::now() + Duration::from_secs(600),
        }))
    }

    #[test]
    fn three_databases_two_pgpass_lines() {
        let main = db("default", "main.example", "app", Some("orders"));
        let audit = db("audit", "main.example", "app", Some("audit"));
        let mut reader = db("reader", "ro.example", "ro", None);
        reader.access.mode = Mode::Proxy;
        let dbs = [
            DbState {
                endpoint: &main,
                current: current("main.example:5432/?t=1"),
            },
            DbState {
                endpoint: &audit,
                current: current("main.example:5432/?t=1"),
            },
            DbState {
                endpoint: &reader,
                current: current("ro.example:5432/?t=2"),
            },
        ];
        let files = render_all(&all("/var/run/rds-iam"), &dbs).unwrap();
        let get = |n: &str| {
            String::from_utf8(files.iter().find(|f| f.name == n).unwrap().contents.clone()).unwrap()
        };
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "token",
                "audit.token",
                "reader.token",
                "pgpass",
                "pg_service.conf"
            ]
        );
        assert_eq!(get("token"), "main.example:5432/?t=1");
        assert_eq!(
            get("pgpass"),
            "main.example:5432:*:app:main.example\\:5432/?t=1\nro.example:5432:*:ro:ro.example\\:5432/?t=2\n"
        );
        assert_eq!(
            get("pg_service.conf"),
            "# Written by rds-iam-tokenagent; passwords are in the pgpass file.\n\
             \n[default]\nhost=main.example\nport=5432\nuser=app\ndbname=orders\nsslmode=require\n\
             \n[audit]\nhost=main.example\nport=5432\nuser=app\ndbname=audit\nsslmode=require\n\
             \n[reader]\nhost=/var/run/rds-iam/reader\nport=5432\nuser=ro\nsslmode=disable\n"
        );
    }

    #[test]
    fn a_database_without_a_token_yet_has_no_token_line() {
        let a = db("default", "a.example", "u", None);
        let b = db("b", "b.example", "u", None);
        let dbs = [
            DbState {
                endpoint: &a,
                current: None,
            },
            DbState {
                endpoint: &b,
                current: current("b.example:5432/?x"),
            },
        ];
        let files = render_all(&all("/d"), &dbs).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["b.token", "pgpass", "pg_service.conf"]);
    }
}
