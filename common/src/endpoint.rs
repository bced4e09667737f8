//! One database the agent signs tokens for, and its one-line text form.
//!
//! The webhook writes each database of a pod as a line of
//! `RDS_IAM_DATABASES` (the agent's `--db`), and the agent parses it back:
//!
//! ```text
//! NAME=ENGINE://USER@HOST:PORT[/DATABASE]?region=REGION&sslmode=SSLMODE
//! default=postgres://app_user@mydb.abc.eu-west-1.rds.amazonaws.com:5432/app?region=eu-west-1&sslmode=require
//! ```
//!
//! USER and DATABASE are percent-encoded ([`crate::pct`]), so a spec never
//! holds whitespace, `$` or a line break, and someone reading
//! `kubectl describe pod` sees which databases the agent serves.

use std::fmt;

use crate::field::{self, describe, FieldError};
use crate::pct;
use crate::region::{self, RegionSource};

/// The name of the database that the unnamed annotations and the
/// single-database flags describe.
pub const DEFAULT_NAME: &str = "default";
/// Named databases: 1..=20 characters.
pub const MAX_NAME_LEN: usize = 20;
/// At most this many databases per pod.
pub const MAX_DATABASES: usize = 8;
/// The port in the proxy's PostgreSQL socket name, and the `PGPORT` clients
/// get in proxy mode.
pub const PROXY_PG_PORT: u16 = 5432;
/// The proxy's MySQL socket file name.
pub const MYSQL_SOCKET: &str = "mysqld.sock";

/// The database engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Engine {
    Postgres,
    /// MySQL, MariaDB and Aurora MySQL.
    Mysql,
}

impl Engine {
    pub const ALL: [Engine; 2] = [Engine::Postgres, Engine::Mysql];

    /// The spelling in annotations and in a spec's scheme.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Self::Postgres => crate::DEFAULT_PORT,
            Self::Mysql => crate::DEFAULT_MYSQL_PORT,
        }
    }

    pub fn parse(value: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|e| e.as_str() == value)
            .ok_or(FieldError::NotOneOf("postgres, mysql"))
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `sslmode` values strong enough for IAM authentication, which needs TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SslMode {
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub const ALL: [SslMode; 3] = [Self::Require, Self::VerifyCa, Self::VerifyFull];
    const CHOICES: &'static str = "require, verify-ca, verify-full";

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// Parses the exact spelling; the weak modes get their own error.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        if let Some(m) = Self::ALL.into_iter().find(|m| m.as_str() == value) {
            return Ok(m);
        }
        match value {
            "disable" | "allow" | "prefer" => Err(FieldError::WeakSslMode),
            _ => Err(FieldError::NotOneOf(Self::CHOICES)),
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A database's name within a pod: `default`, or 1..=20 characters of
/// `a-z0-9-` starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DbName(String);

impl DbName {
    /// The default database.
    pub fn default_db() -> Self {
        Self(DEFAULT_NAME.to_owned())
    }

    /// A named database; `default` is refused (it is reserved).
    pub fn named(value: &str) -> Result<Self, FieldError> {
        if value == DEFAULT_NAME {
            return Err(FieldError::BadName("\"default\" is reserved"));
        }
        Self::parse(value)
    }

    /// `default` or a valid name.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        let b = value.as_bytes();
        if b.is_empty() {
            return Err(FieldError::Empty);
        }
        if b.len() > MAX_NAME_LEN {
            return Err(FieldError::BadName("longer than 20 characters"));
        }
        if !b[0].is_ascii_lowercase() {
            return Err(FieldError::BadName("it must start with a letter a-z"));
        }
        if !b
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        {
            return Err(FieldError::BadName("only a-z, 0-9 and '-' are allowed"));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT_NAME
    }

    /// The name in env variable names: upper case, `-` written as `_`
    /// (`orders-ro` gives `ORDERS_RO`).
    pub fn env_key(&self) -> String {
        self.0.to_ascii_uppercase().replace('-', "_")
    }

    /// The token file: `token` for the default database, else `NAME.token`.
    pub fn token_file(&self) -> String {
        if self.is_default() {
            crate::TOKEN_FILE.to_owned()
        } else {
            format!("{}.{}", self.0, crate::TOKEN_FILE)
        }
    }
}

impl fmt::Display for DbName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How the app reaches a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The app connects to the database itself, with the files the agent
    /// writes (pgpass, token, pg_service.conf, my.cnf).
    #[default]
    Files,
    /// The app connects to the agent's local socket; the agent connects
    /// upstream over TLS with the token. The files are written too.
    Proxy,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Self::Files, Self::Proxy];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Files => "files",
            Self::Proxy => "proxy",
        }
    }

    pub fn parse(value: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == value)
            .ok_or(FieldError::NotOneOf("files, proxy"))
    }
}

/// The access settings of a database besides its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Access {
    pub mode: Mode,
    /// Proxy mode: also listen on `127.0.0.1:PORT`.
    pub proxy_port: Option<u16>,
    /// Proxy mode, PostgreSQL: start TLS directly (ALPN `postgresql`,
    /// PostgreSQL 17+) instead of with an SSLRequest (libpq's
    /// `sslnegotiation=direct`).
    pub direct_tls: bool,
}

/// One database of a pod, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: DbName,
    pub engine: Engine,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: Option<String>,
    pub region: String,
    pub sslmode: SslMode,
    pub access: Access,
}

/// The optional query parameters of a spec besides `region`, each with its
/// parser; their defaults are left out when a spec is written.
type ParamParse = fn(&str, &mut Endpoint) -> Result<(), FieldError>;
const PARAMS: &[(&str, ParamParse)] = &[
    ("sslmode", |v, e| {
        e.sslmode = SslMode::parse(v)?;
        Ok(())
    }),
    ("mode", |v, e| {
        e.access.mode = Mode::parse(v)?;
        Ok(())
    }),
    ("proxy-port", |v, e| {
        e.access.proxy_port = Some(field::parse_port(v)?);
        Ok(())
    }),
    ("sslnegotiation", |v, e| {
        e.access.direct_tls = match v {
            "direct" => true,
            "postgres" => false,
            _ => return Err(FieldError::NotOneOf("postgres, direct")),
        };
        Ok(())
    }),
];

/// The form every spec error points to.
pub const SPEC_FORM: &str = "NAME=postgres://USER@HOST:PORT/DATABASE?region=REGION&sslmode=require";

/// A `--db` value that cannot be read. Names the part and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("{0:?} is not of the form {SPEC_FORM}")]
    Shape(String),
    #[error("{part} {problem}")]
    Part { part: &'static str, problem: String },
    #[error("region: {0}")]
    Region(#[from] region::RegionError),
}

impl Endpoint {
    /// The one-line form the agent reads (see the module docs).
    pub fn to_spec(&self) -> String {
        let Self {
            name,
            engine,
            host,
            port,
            user,
            database,
            region,
            sslmode,
            access,
        } = self;
        let db = database
            .as_deref()
            .map(|d| format!("/{}", pct::encode(d)))
            .unwrap_or_default();
        let mut spec = format!(
            "{name}={}://{}@{host}:{port}{db}?region={region}&sslmode={sslmode}",
            engine.as_str(),
            pct::encode(user),
        );
        let Access {
            mode,
            proxy_port,
            direct_tls,
        } = access;
        if *mode != Mode::Files {
            spec.push_str(&format!("&mode={}", mode.as_str()));
        }
        if let Some(p) = proxy_port {
            spec.push_str(&format!("&proxy-port={p}"));
        }
        if *direct_tls {
            spec.push_str("&sslnegotiation=direct");
        }
        spec
    }

    /// A libpq-style URI with no password, for clients that take a URL:
    /// `postgresql://user@host:port/db?sslmode=require`, or in proxy mode
    /// the agent's socket in `dir`:
    /// `postgresql:///db?host=DIR/NAME&port=5432&user=user&sslmode=disable`.
    /// `ca`, the CA bundle's path, becomes `sslrootcert` of the verify modes.
    pub fn client_url(&self, dir: &str, ca: Option<&str>) -> String {
        let db = self
            .database
            .as_deref()
            .map(pct::encode)
            .unwrap_or_default();
        let user = pct::encode(&self.user);
        match self.access.mode {
            Mode::Files => {
                let mut url = format!(
                    "postgresql://{user}@{}:{}/{db}?sslmode={}",
                    self.host, self.port, self.sslmode
                );
                if let (Some(ca), SslMode::VerifyCa | SslMode::VerifyFull) = (ca, self.sslmode) {
                    url.push_str("&sslrootcert=");
                    url.push_str(&pct::encode(ca));
                }
                url
            }
            Mode::Proxy => format!(
                "postgresql:///{db}?host={}&port={PROXY_PG_PORT}&user={user}&sslmode=disable",
                self.socket_dir(dir)
            ),
        }
    }

    /// The directory of the proxy's Unix socket: `dir` itself for the
    /// default database, `dir/NAME` for a named one.
    pub fn socket_dir(&self, dir: &str) -> String {
        let dir = dir.trim_end_matches('/');
        if self.name.is_default() {
            dir.to_owned()
        } else {
            format!("{dir}/{}", self.name)
        }
    }

    /// The proxy's Unix socket: `.s.PGSQL.5432` (what libpq looks for with
    /// `host=DIR port=5432`) or `mysqld.sock`, in [`Endpoint::socket_dir`].
    pub fn socket_path(&self, dir: &str) -> String {
        let file = match self.engine {
            Engine::Postgres => format!(".s.PGSQL.{PROXY_PG_PORT}"),
            Engine::Mysql => MYSQL_SOCKET.to_owned(),
        };
        format!("{}/{file}", self.socket_dir(dir))
    }

    /// The token depends on these and nothing else (not the database name).
    pub fn token_key(&self) -> (&str, u16, &str) {
        (&self.host, self.port, &self.user)
    }

    /// Parses a spec. A missing `region` is resolved like the agent's
    /// `--region`: from an RDS host name, else `AWS_REGION` /
    /// `AWS_DEFAULT_REGION` read through `env`. A missing `sslmode` is
    /// `require`, a missing port the engine's default.
    pub fn parse_spec(
        spec: &str,
        env: impl Fn(&'static str) -> Option<String>,
    ) -> Result<(Self, RegionSource), SpecError> {
        let shape = || SpecError::Shape(spec.to_owned());
        let (name, rest) = spec.split_once('=').ok_or_else(shape)?;
        let name = DbName::parse(name).map_err(|e| part("NAME", name, &e))?;
        let (scheme, rest) = rest.split_once("://").ok_or_else(shape)?;
        let engine = Engine::parse(scheme).map_err(|e| part("ENGINE", scheme, &e))?;
        let (authority_path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (user, host_path) = authority_path.split_once('@').ok_or_else(shape)?;
        let user = pct::decode(user).map_err(|e| SpecError::Part {
            part: "USER",
            problem: e.to_string(),
        })?;
        field::validate_user(&user).map_err(|e| part("USER", &user, &e))?;
        let (host_port, database) = match host_path.split_once('/') {
            Some((hp, "")) => (hp, None),
            Some((hp, db)) => {
                let db = pct::decode(db).map_err(|e| SpecError::Part {
                    part: "DATABASE",
                    problem: e.to_string(),
                })?;
                field::validate_database(&db).map_err(|e| part("DATABASE", &db, &e))?;
                (hp, Some(db))
            }
            None => (host_path, None),
        };
        let (host, port) = match host_port.rsplit_once(':') {
            Some((h, p)) => (h, field::parse_port(p).map_err(|e| part("PORT", p, &e))?),
            None => (host_port, engine.default_port()),
        };
        field::validate_host(host).map_err(|e| part("HOST", host, &e))?;
        let mut endpoint = Self {
            name,
            engine,
            host: host.to_owned(),
            port,
            user,
            database,
            region: String::new(),
            sslmode: SslMode::Require,
            access: Access::default(),
        };
        let mut region = None;
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            if k == "region" {
                region = Some(v);
                continue;
            }
            let Some((key, parse)) = PARAMS.iter().find(|(p, _)| *p == k) else {
                let known: Vec<&str> = PARAMS.iter().map(|(p, _)| *p).collect();
                return Err(SpecError::Part {
                    part: "query parameter",
                    problem: format!("{k:?} is unknown; use region, {}", known.join(", ")),
                });
            };
            parse(v, &mut endpoint).map_err(|e| part(key, v, &e))?;
        }
        let resolved = region::resolve(region, host, env, None)?;
        endpoint.region = resolved.region;
        Ok((endpoint, resolved.source))
    }
}

fn part(part: &'static str, value: &str, e: &FieldError) -> SpecError {
    SpecError::Part {
        part,
        problem: describe(value, e, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orders() -> Endpoint {
        Endpoint {
            name: DbName::named("orders-ro").unwrap(),
            engine: Engine::Postgres,
            host: "orders.cluster-ro-abc.eu-west-1.rds.amazonaws.com".into(),
            port: 5433,
            user: "report$(X) user".replace(' ', "_"),
            database: Some("my db".into()),
            region: "eu-west-1".into(),
            sslmode: SslMode::VerifyFull,
            access: Access::default(),
        }
    }

    #[test]
    fn spec_is_written_exactly() {
        assert_eq!(
            orders().to_spec(),
            "orders-ro=postgres://report%24%28X%29_user@orders.cluster-ro-abc.eu-west-1.rds.amazonaws.com:5433/my%20db?region=eu-west-1&sslmode=verify-full"
        );
        assert_eq!(
            orders().client_url("/var/run/rds-iam", None),
            "postgresql://report%24%28X%29_user@orders.cluster-ro-abc.eu-west-1.rds.amazonaws.com:5433/my%20db?sslmode=verify-full"
        );
        assert_eq!(
            orders().client_url("/var/run/rds-iam", Some("/etc/rds-iam/ca/ca.crt")),
            "postgresql://report%24%28X%29_user@orders.cluster-ro-abc.eu-west-1.rds.amazonaws.com:5433/my%20db?sslmode=verify-full&sslrootcert=%2Fetc%2Frds-iam%2Fca%2Fca.crt"
        );
        let mut proxied = orders();
        proxied.access.mode = Mode::Proxy;
        assert_eq!(
            proxied.client_url("/var/run/rds-iam/", Some("/ca.crt")),
            "postgresql:///my%20db?host=/var/run/rds-iam/orders-ro&port=5432&user=report%24%28X%29_user&sslmode=disable"
        );
        assert_eq!(
            proxied.socket_path("/var/run/rds-iam"),
            "/var/run/rds-iam/orders-ro/.s.PGSQL.5432"
        );
        proxied.name = DbName::default_db();
        proxied.engine = Engine::Mysql;
        assert_eq!(
            proxied.socket_path("/var/run/rds-iam"),
            "/var/run/rds-iam/mysqld.sock"
        );
    }

    #[test]
    fn spec_round_trips() {
        let e = orders();
        let (back, src) = Endpoint::parse_spec(&e.to_spec(), |_| None).unwrap();
        assert_eq!(back, e);
        assert_eq!(src, RegionSource::Explicit);
        let mut no_db = e.clone();
        no_db.database = None;
        assert_eq!(
            Endpoint::parse_spec(&no_db.to_spec(), |_| None).unwrap().0,
            no_db
        );
        let mut proxied = e.clone();
        proxied.access = Access {
            mode: Mode::Proxy,
            proxy_port: Some(6432),
            direct_tls: true,
        };
        let spec = proxied.to_spec();
        assert!(
            spec.ends_with("&sslmode=verify-full&mode=proxy&proxy-port=6432&sslnegotiation=direct"),
            "{spec}"
        );
        assert_eq!(Endpoint::parse_spec(&spec, |_| None).unwrap().0, proxied);
    }

    #[test]
    fn hand_written_specs_get_defaults() {
        let (e, src) = Endpoint::parse_spec(
            "default=postgres://app@db.x.us-east-2.rds.amazonaws.com",
            |_| None,
        )
        .unwrap();
        assert_eq!(e.port, 5432);
        assert_eq!(e.sslmode, SslMode::Require);
        assert_eq!(e.region, "us-east-2");
        assert_eq!(src, RegionSource::Hostname);
        assert!(e.name.is_default());
        let (e, src) = Endpoint::parse_spec("a=postgres://app@localhost:6432/", |k| {
            (k == "AWS_REGION").then(|| "eu-north-1".to_owned())
        })
        .unwrap();
        assert_eq!(
            (e.port, e.database, e.region.as_str()),
            (6432, None, "eu-north-1")
        );
        assert_eq!(src, RegionSource::Env("AWS_REGION"));
    }

    #[test]
    fn bad_specs_name_the_part() {
        let cases: &[(&str, &str)] = &[
            ("postgres://u@h:1", "is not of the form"),
            (
                "Orders=postgres://u@h:1?region=us-east-1",
                "NAME \"Orders\"",
            ),
            (
                "a=mongo://u@h:1?region=us-east-1",
                "ENGINE \"mongo\" is not one of postgres, mysql",
            ),
            ("a=postgres://h:1?region=us-east-1", "is not of the form"),
            (
                "a=postgres://u@h:0?region=us-east-1",
                "PORT \"0\" is outside 1..65535",
            ),
            (
                "a=postgres://u@h:x?region=us-east-1",
                "PORT \"x\" is not a number",
            ),
            ("a=postgres://u@h$x:1?region=us-east-1", "HOST \"h$x\""),
            (
                "a=postgres://u%3Ab@h:1?region=us-east-1",
                "USER \"u:b\" contains ':'",
            ),
            (
                "a=postgres://u b@h:1?region=us-east-1",
                "USER byte 1 must be percent-encoded",
            ),
            (
                "a=postgres://u@h:1/%0A?region=us-east-1",
                "DATABASE \"\\n\" contains a control",
            ),
            (
                "a=postgres://u@h:1?region=mars",
                "region: \"mars\" is not an AWS region name",
            ),
            (
                "a=postgres://u@h:1",
                "region: host \"h\" is not an RDS endpoint",
            ),
            (
                "a=postgres://u@h:1?region=us-east-1&sslmode=prefer",
                "sslmode \"prefer\" is too weak",
            ),
            (
                "a=postgres://u@h:1?region=us-east-1&x=1",
                "\"x\" is unknown; use region, sslmode, mode, proxy-port, sslnegotiation",
            ),
            (
                "a=postgres://u@h:1?region=us-east-1&mode=sidecar",
                "mode \"sidecar\" is not one of files, proxy",
            ),
        ];
        for (spec, want) in cases {
            let e = Endpoint::parse_spec(spec, |_| None)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{spec}: got {e:?}, want {want:?}");
        }
    }

    #[test]
    fn names() {
        for ok in ["a", "orders", "orders-ro", "r2d2", "a-------------------"] {
            assert!(DbName::named(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "default",
            "Orders",
            "2db",
            "-a",
            "a_b",
            "a.b",
            "abcdefghijklmnopqrstu",
        ] {
            assert!(DbName::named(bad).is_err(), "{bad}");
        }
        assert!(DbName::parse("default").unwrap().is_default());
        let n = DbName::named("orders-ro").unwrap();
        assert_eq!(n.env_key(), "ORDERS_RO");
        assert_eq!(n.token_file(), "orders-ro.token");
        assert_eq!(DbName::default_db().token_file(), "token");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::fuzz_cases(1000)))]
        /// Whatever user and database names the webhook accepts, the spec
        /// carries them through unchanged and holds no whitespace or '$'.
        #[test]
        fn any_valid_endpoint_round_trips(
            user in "[^:\\s\\p{Cc}]{1,40}",
            db in proptest::option::of("[^\\s\\p{Cc}]([^\\p{Cc}]{0,30}[^\\s\\p{Cc}])?"),
            port in 1u16..,
        ) {
            let e = Endpoint {
                name: DbName::default_db(),
                engine: Engine::Postgres,
                host: "db.example.com".into(),
                port,
                user,
                database: db,
                region: "us-east-1".into(),
                sslmode: SslMode::Require,
                access: Access::default(),
            };
            proptest::prop_assume!(field::validate_user(&e.user).is_ok());
            proptest::prop_assume!(e.database.as_deref().is_none_or(|d| field::validate_database(d).is_ok()));
            let spec = e.to_spec();
            proptest::prop_assert!(!spec.contains(char::is_whitespace) && !spec.contains('$'));
            proptest::prop_assert_eq!(Endpoint::parse_spec(&spec, |_| None).unwrap().0, e);
        }
    }
}
