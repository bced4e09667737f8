//! Outputs render files from the databases' current tokens. The refresh loop
//! knows nothing about file formats: it asks every output for its files and
//! writes them all at once. Adding an output never touches the loop.
//!
//! - [`TokenFiles`]: `token` (default database) and `NAME.token`;
//! - [`Pgpass`]: one libpq passfile line per host, port and user;
//! - [`PgService`]: `pg_service.conf`, one section per PostgreSQL database;
//! - [`MyCnf`]: `my.cnf`, one group per MySQL database.

use std::sync::Arc;

use rds_iam_common::{
    Endpoint, Engine, Mode, SslMode, MYSQL_CNF_FILE, PGPASS_FILE, PG_SERVICE_FILE,
};

use crate::mycnf;
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
    /// The CA bundle (`--ca-file`, mounted at the same path in the app),
    /// `sslrootcert` of the verify modes in files mode.
    pub ca: Option<String>,
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
            if let (Mode::Files, SslMode::VerifyCa | SslMode::VerifyFull, Some(ca)) =
                (e.access.mode, e.sslmode, &self.ca)
            {
                text.push_str(&format!("sslrootcert={ca}\n"));
            }
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

/// `my.cnf`: a group per MySQL database ([`mycnf`]), `[client]` for the
/// default one and `[client_NAME]` for a named one, always for the direct
/// TLS connection (also in proxy mode). A database without a token yet gets
/// its group with an empty password, so that a suffixed read never falls
/// back to `[client]`'s host or password.
pub struct MyCnf {
    /// The CA bundle (`--ca-file`) as the app sees it, for the verify modes.
    pub ca: Option<String>,
}

impl Output for MyCnf {
    fn name(&self) -> &'static str {
        "my.cnf"
    }

    fn render(&self, dbs: &[DbState<'_>]) -> Result<Vec<File>, OutputError> {
        let mysql: Vec<&DbState> = dbs
            .iter()
            .filter(|d| d.endpoint.engine == Engine::Mysql)
            .collect();
        if mysql.iter().all(|d| d.current.is_none()) {
            return Ok(Vec::new());
        }
        // A suffixed read inherits [client]'s ssl-ca: write it everywhere.
        let ca_everywhere = mysql
            .iter()
            .any(|d| d.endpoint.name.is_default() && d.endpoint.sslmode != SslMode::Require);
        let mut text = String::from(
            "# Written by rds-iam-tokenagent: the direct TLS connection to each MySQL database,\n\
             # with its current IAM token. [client] is the default database, [client_NAME] a named one.\n\
             # mysql, mariadb: --defaults-extra-file=THIS_FILE [--defaults-group-suffix=_NAME]\n\
             # PyMySQL, mysqlclient: read_default_file=THIS_FILE [, read_default_group=\"client_NAME\"]\n",
        );
        for d in mysql {
            let e = d.endpoint;
            let ca = (ca_everywhere || e.sslmode != SslMode::Require)
                .then_some(self.ca.as_deref())
                .flatten();
            let group = mycnf::render_group(&mycnf::Group {
                name: &e.name,
                host: &e.host,
                port: e.port,
                user: &e.user,
                password: d.current.as_ref().map(|c| c.token.expose()),
                database: e.database.as_deref(),
                sslmode: e.sslmode,
                ca,
            })
            .map_err(|err| OutputError {
                output: "my.cnf",
                reason: format!("database {}: {err}", e.name),
            })?;
            text.push('\n');
            text.push_str(&group);
        }
        Ok(vec![File {
            name: MYSQL_CNF_FILE.to_owned(),
            contents: text.into_bytes(),
            owner: None,
        }])
    }
}

/// Every output of the agent, in the order their files are replaced. `ca`
/// is the CA bundle (`--ca-file`), which `my.cnf` names for the verify modes.
pub fn all(dir: &str, ca: Option<&str>) -> Vec<Box<dyn Output>> {
    vec![
        Box::new(TokenFiles),
        Box::new(Pgpass),
        Box::new(PgService {
            dir: dir.to_owned(),
            ca: ca.map(str::to_owned),
        }),
        Box::new(MyCnf {
            ca: ca.map(str::to_owned),
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
        let files = render_all(&all("/var/run/rds-iam", None), &dbs).unwrap();
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

    /// A verify mode in files mode names the CA bundle, which the app sees at
    /// the agent's path; `require` and the proxy's sockets do not.
    #[test]
    fn pg_service_names_the_ca_bundle_for_the_verify_modes() {
        let full = Endpoint {
            sslmode: SslMode::VerifyFull,
            ..db("default", "main.example", "app", None)
        };
        let ca = Endpoint {
            sslmode: SslMode::VerifyCa,
            ..db("ca", "ca.example", "app", None)
        };
        let plain = db("plain", "plain.example", "app", None);
        let mut proxied = Endpoint {
            sslmode: SslMode::VerifyFull,
            ..db("proxied", "p.example", "app", None)
        };
        proxied.access.mode = Mode::Proxy;
        let dbs: Vec<DbState> = [&full, &ca, &plain, &proxied]
            .into_iter()
            .map(|endpoint| DbState {
                endpoint,
                current: current("x:5432/?t=1"),
            })
            .collect();
        let files = render_all(&all("/d", Some("/etc/rds-iam/ca/ca.crt")), &dbs).unwrap();
        let conf = files.iter().find(|f| f.name == "pg_service.conf").unwrap();
        assert_eq!(
            String::from_utf8(conf.contents.clone()).unwrap(),
            "# Written by rds-iam-tokenagent; passwords are in the pgpass file.\n\
             \n[default]\nhost=main.example\nport=5432\nuser=app\nsslmode=verify-full\nsslrootcert=/etc/rds-iam/ca/ca.crt\n\
             \n[ca]\nhost=ca.example\nport=5432\nuser=app\nsslmode=verify-ca\nsslrootcert=/etc/rds-iam/ca/ca.crt\n\
             \n[plain]\nhost=plain.example\nport=5432\nuser=app\nsslmode=require\n\
             \n[proxied]\nhost=/d/proxied\nport=5432\nuser=app\nsslmode=disable\n"
        );
    }

    fn mysql(name: &str, host: &str, sslmode: SslMode, database: Option<&str>) -> Endpoint {
        Endpoint {
            engine: Engine::Mysql,
            port: 3306,
            sslmode,
            ..db(name, host, "app", database)
        }
    }

    #[test]
    fn my_cnf_has_a_group_per_mysql_database() {
        let main = mysql("default", "main.example", SslMode::VerifyFull, Some("shop"));
        let mut reports = mysql("reports", "ro.example", SslMode::Require, None);
        reports.access.mode = Mode::Proxy;
        let later = mysql("later", "later.example", SslMode::Require, Some("x"));
        let pg = db("pg", "pg.example", "app", None);
        let dbs = [
            DbState {
                endpoint: &main,
                current: current("main.example:3306/?t=1"),
            },
            DbState {
                endpoint: &pg,
                current: current("pg.example:5432/?t=2"),
            },
            DbState {
                endpoint: &reports,
                current: current("ro.example:3306/?t=3"),
            },
            DbState {
                endpoint: &later,
                current: None,
            },
        ];
        let files = MyCnf {
            ca: Some("/etc/rds/global-bundle.pem".into()),
        }
        .render(&dbs)
        .unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].name, "my.cnf");
        assert_eq!(files[0].owner, None);
        let text = String::from_utf8(files[0].contents.clone()).unwrap();
        let tail = |mode: &str, verify: &str| {
            format!(
                "ssl-cipher={}\nssl-ca=\"/etc/rds/global-bundle.pem\"\nloose-ssl-mode={mode}\n\
                 loose-ssl-verify-server-cert={verify}\n",
                mycnf::TLS12_CIPHERS
            )
        };
        let want = format!(
            "# Written by rds-iam-tokenagent: the direct TLS connection to each MySQL database,\n\
             # with its current IAM token. [client] is the default database, [client_NAME] a named one.\n\
             # mysql, mariadb: --defaults-extra-file=THIS_FILE [--defaults-group-suffix=_NAME]\n\
             # PyMySQL, mysqlclient: read_default_file=THIS_FILE [, read_default_group=\"client_NAME\"]\n\
             \n[client]\nhost=main.example\nport=3306\nprotocol=TCP\nuser=\"app\"\n\
             password=\"main.example:3306/?t=1\"\nloose-database=\"shop\"\n{}\
             \n[client_reports]\nhost=ro.example\nport=3306\nprotocol=TCP\nuser=\"app\"\n\
             password=\"ro.example:3306/?t=3\"\nloose-database=\"\"\n{}\
             \n[client_later]\nhost=later.example\nport=3306\nprotocol=TCP\nuser=\"app\"\n\
             # No password: the agent has no token for this database yet; its log says why.\n\
             password=\"\"\nloose-database=\"x\"\n{}",
            tail("VERIFY_IDENTITY", "ON"),
            tail("REQUIRED", "OFF"),
            tail("REQUIRED", "OFF"),
        );
        assert_eq!(text, want);

        // Without a verifying default database, a require group names no CA.
        let dbs = [DbState {
            endpoint: &reports,
            current: current("ro.example:3306/?t=3"),
        }];
        let files = MyCnf {
            ca: Some("/ca.pem".into()),
        }
        .render(&dbs)
        .unwrap();
        let text = String::from_utf8(files[0].contents.clone()).unwrap();
        assert!(!text.contains("ssl-ca"), "{text}");
        // No MySQL database with a token: no file.
        let dbs = [
            DbState {
                endpoint: &pg,
                current: current("pg.example:5432/?t=2"),
            },
            DbState {
                endpoint: &later,
                current: None,
            },
        ];
        assert!(MyCnf { ca: None }.render(&dbs).unwrap().is_empty());
        // A verify mode without the CA cannot be written.
        let dbs = [DbState {
            endpoint: &main,
            current: current("main.example:3306/?t=1"),
        }];
        let err = MyCnf { ca: None }.render(&dbs).unwrap_err().to_string();
        assert_eq!(
            err,
            "my.cnf: database default: sslmode verify-full needs the CA bundle in my.cnf; set --ca-file (RDS_IAM_CA_FILE)"
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
        let files = render_all(&all("/d", None), &dbs).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["b.token", "pgpass", "pg_service.conf"]);
    }
}
