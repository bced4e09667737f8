//! The command line. Flag and env names come from the contract shared with
//! the webhook ([`rds_iam_common::agent_args`]). Values are taken as strings
//! and validated in [`RunArgs::into_config`], so every error names the flag,
//! its env twin and the problem, and nothing is done before all of them are
//! valid.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rds_iam_common::agent_args::{self as flags, Flag};
use rds_iam_common::endpoint::MAX_DATABASES;
use rds_iam_common::{self as common, describe, region, Access, DbName, Endpoint, Engine, Mode};

use crate::config::{AgentConfig, ConfigError, ProxySettings};
use rds_iam_common::process::LogFormat;

/// Keeps fresh AWS RDS IAM auth tokens in libpq and MySQL files, and can
/// serve a local proxy socket per database.
#[derive(Debug, Parser)]
#[command(
    name = "rds-iam-tokenagent",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Exit 0 only if every database's files exist with mode 0600 and hold a
    /// token with at least --min-life left, and every proxy socket accepts
    /// (for exec startup and liveness probes).
    Probe(ProbeArgs),
    /// Print a one-screen diagnosis: credentials, region, signing, each
    /// database endpoint's TLS, and the files.
    Doctor(RunArgs),
}

/// Which databases: `--db` specs, or the single-database flags, which
/// describe the default database.
#[derive(Debug, Clone, Default, Args)]
pub struct DbArgs {
    /// A database: NAME=ENGINE://USER@HOST:PORT[/DATABASE]?region=R&sslmode=S
    /// (repeatable; the env twin holds one per line).
    #[arg(long = flags::DATABASES.long, env = flags::DATABASES.env, value_name = "SPEC")]
    pub db: Vec<String>,
    /// The default database's endpoint (no port, no scheme).
    #[arg(long = flags::HOST.long, env = flags::HOST.env)]
    pub host: Option<String>,
    /// The default database's port (5432).
    // Hyphen values (`-1`) reach the validation, which names the flag.
    #[arg(long = flags::PORT.long, env = flags::PORT.env, allow_hyphen_values = true)]
    pub port: Option<String>,
    /// The default database's user, granted rds_iam.
    #[arg(long = flags::USER.long, env = flags::USER.env)]
    pub user: Option<String>,
    /// The default database's database name (for pg_service.conf).
    #[arg(long = flags::DATABASE.long, env = flags::DATABASE.env)]
    pub database: Option<String>,
    /// AWS region; default: derived from an RDS host name, else AWS_REGION / AWS_DEFAULT_REGION.
    #[arg(long = flags::REGION.long, env = flags::REGION.env)]
    pub region: Option<String>,
    /// The default database's sslmode: require, verify-ca or verify-full.
    #[arg(long = flags::SSLMODE.long, env = flags::SSLMODE.env)]
    pub sslmode: Option<String>,
}

/// Flags of the agent (and of `doctor`).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub dbs: DbArgs,
    /// Directory for the files (and the proxy's sockets).
    #[arg(long = flags::DIR.long, env = flags::DIR.env, default_value = common::DEFAULT_DIR)]
    pub dir: PathBuf,
    /// Refresh interval, 1m..14m (e.g. 10m, 5m30s).
    #[arg(long = flags::INTERVAL.long, env = flags::INTERVAL.env, default_value = "10m", allow_hyphen_values = true)]
    pub interval: String,
    /// Write the files once, then exit 0 (or non-zero with the reason).
    #[arg(long = flags::ONCE.long)]
    pub once: bool,
    /// Address for /healthz, /readyz and /metrics, e.g. 0.0.0.0:9808, or `off`.
    #[arg(long = flags::HEALTH_ADDR.long, env = flags::HEALTH_ADDR.env, default_value = "off")]
    pub health_addr: String,
    /// Log format: json or text.
    #[arg(long = flags::LOG_FORMAT.long, env = flags::LOG_FORMAT.env, default_value = "json")]
    pub log_format: String,
    /// Proxy mode: the most client connections served at once, across databases.
    #[arg(long = flags::MAX_CONNECTIONS.long, env = flags::MAX_CONNECTIONS.env, default_value = "1000", allow_hyphen_values = true)]
    pub max_connections: String,
    /// Proxy mode: after SIGTERM, how long open sessions may go on (0s: close at once).
    #[arg(long = flags::MAX_SIGTERM_DELAY.long, env = flags::MAX_SIGTERM_DELAY.env, default_value = "25s", allow_hyphen_values = true)]
    pub max_sigterm_delay: String,
    /// Proxy mode: how long connecting, TLS and the login upstream may take.
    #[arg(long = flags::CONNECT_TIMEOUT.long, env = flags::CONNECT_TIMEOUT.env, default_value = "10s", allow_hyphen_values = true)]
    pub connect_timeout: String,
    /// The PEM CA bundle (the RDS CA) for verify-ca and verify-full: the
    /// proxy checks servers against it, and my.cnf names it (so the app
    /// containers need it at the same path).
    #[arg(long = flags::CA_FILE.long, env = flags::CA_FILE.env)]
    pub ca_file: Option<PathBuf>,
}

/// Flags of `probe`.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub dbs: DbArgs,
    /// Directory holding the files (and the proxy's sockets).
    #[arg(long = flags::DIR.long, env = flags::DIR.env, default_value = common::DEFAULT_DIR)]
    pub dir: PathBuf,
    /// The least token life left that passes, e.g. 2m.
    #[arg(long = flags::MIN_LIFE.long, default_value = "2m", allow_hyphen_values = true)]
    pub min_life: String,
}

impl ProbeArgs {
    pub fn min_life(&self) -> Result<Duration, ConfigError> {
        common::parse_duration(&self.min_life).map_err(|e| {
            ConfigError::invalid(
                flags::MIN_LIFE,
                describe(&self.min_life, &e, "write e.g. 2m"),
            )
        })
    }
}

/// A database described by flags, before it is complete.
#[derive(Default)]
struct Single {
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    database: Option<String>,
    sslmode: Option<common::SslMode>,
}

/// A single-database flag: where its value is, its parser, and the advice
/// added to its errors.
struct SingleFlag {
    flag: Flag,
    get: fn(&DbArgs) -> Option<&str>,
    parse: fn(&str, &mut Single) -> Result<(), common::FieldError>,
    advice: &'static str,
}

const SINGLE: &[SingleFlag] = &[
    SingleFlag {
        flag: flags::HOST,
        get: |a| a.host.as_deref(),
        parse: |v, s| {
            common::validate_host(v)?;
            s.host = Some(v.to_owned());
            Ok(())
        },
        advice: "write the endpoint's DNS name, e.g. mydb.abc123.us-east-1.rds.amazonaws.com, and the port in --port",
    },
    SingleFlag {
        flag: flags::PORT,
        get: |a| a.port.as_deref(),
        parse: |v, s| {
            s.port = Some(common::parse_port(v)?);
            Ok(())
        },
        advice: "write a port from 1 to 65535, e.g. 5432",
    },
    SingleFlag {
        flag: flags::USER,
        get: |a| a.user.as_deref(),
        parse: |v, s| {
            common::validate_user(v)?;
            s.user = Some(v.to_owned());
            Ok(())
        },
        advice: "write the plain database user name, e.g. app_user",
    },
    SingleFlag {
        flag: flags::DATABASE,
        get: |a| a.database.as_deref(),
        parse: |v, s| {
            common::validate_database(v)?;
            s.database = Some(v.to_owned());
            Ok(())
        },
        advice: "write the database name, e.g. orders",
    },
    SingleFlag {
        flag: flags::SSLMODE,
        get: |a| a.sslmode.as_deref(),
        parse: |v, s| {
            s.sslmode = Some(common::SslMode::parse(v)?);
            Ok(())
        },
        advice: "write require, verify-ca or verify-full",
    },
];

impl DbArgs {
    /// Whether any database is named at all.
    pub fn is_empty(&self) -> bool {
        self.db.is_empty() && self.host.is_none() && self.user.is_none()
    }

    /// Every database, validated, with where its region came from. `env`
    /// reads AWS_REGION / AWS_DEFAULT_REGION for the region fallbacks.
    pub fn endpoints(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<(Endpoint, region::RegionSource)>, ConfigError> {
        let mut out: Vec<(Endpoint, region::RegionSource)> = Vec::new();
        if let Some(single) = self.single(&env)? {
            out.push(single);
        }
        for spec in flags::split_specs(&self.db) {
            let (e, source) = Endpoint::parse_spec(spec, &env)
                .map_err(|e| ConfigError::invalid(flags::DATABASES, format!("{spec:?}: {e}")))?;
            if let Some((first, _)) = out.iter().find(|(o, _)| o.name == e.name) {
                let why = if first.name.is_default() && self.host.is_some() {
                    "is also described by --host; use one or the other".to_owned()
                } else {
                    "appears twice".to_owned()
                };
                return Err(ConfigError::invalid(
                    flags::DATABASES,
                    format!("database \"{}\" {why}", e.name),
                ));
            }
            out.push((e, source));
        }
        if out.is_empty() {
            return Err(ConfigError::Missing {
                flag: flags::DATABASES,
                hint: "name a database, e.g. --db default=postgres://app_user@mydb.abc123.us-east-1.rds.amazonaws.com:5432/app, or give --host and --user",
            });
        }
        check_set(&out)?;
        Ok(out)
    }

    /// The default database from the single-database flags, if any is set.
    fn single(
        &self,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Option<(Endpoint, region::RegionSource)>, ConfigError> {
        if self.host.is_none() && self.user.is_none() && self.database.is_none() {
            return Ok(None);
        }
        let mut s = Single::default();
        for f in SINGLE {
            if let Some(v) = (f.get)(self) {
                (f.parse)(v, &mut s)
                    .map_err(|e| ConfigError::invalid(f.flag, describe(v, &e, f.advice)))?;
            }
        }
        let host = s.host.ok_or(ConfigError::Missing {
            flag: flags::HOST,
            hint: "the DB endpoint, e.g. mydb.abc123.us-east-1.rds.amazonaws.com",
        })?;
        let user = s.user.ok_or(ConfigError::Missing {
            flag: flags::USER,
            hint: "the DB user that was granted rds_iam",
        })?;
        let resolved = region::resolve(self.region.as_deref(), &host, env, None)
            .map_err(|e| match e {
                region::RegionError::BadExplicit(_) => {
                    ConfigError::invalid(flags::REGION, format!("{e}; write e.g. us-east-1"))
                }
                _ => ConfigError::invalid(
                    flags::REGION,
                    format!("the AWS region cannot be determined: {e}; set --region to the database's region"),
                ),
            })?;
        Ok(Some((
            Endpoint {
                name: DbName::default_db(),
                engine: Engine::Postgres,
                host,
                port: s.port.unwrap_or(common::DEFAULT_PORT),
                user,
                database: s.database,
                region: resolved.region,
                sslmode: s.sslmode.unwrap_or(common::SslMode::Require),
                access: Access::default(),
            },
            resolved.source,
        )))
    }
}

/// Rules across databases: at most 8; one region per host, port and user
/// (they share a token); distinct proxy ports.
fn check_set(dbs: &[(Endpoint, region::RegionSource)]) -> Result<(), ConfigError> {
    if dbs.len() > MAX_DATABASES {
        return Err(ConfigError::invalid(
            flags::DATABASES,
            format!(
                "{} databases; at most {MAX_DATABASES} are allowed",
                dbs.len()
            ),
        ));
    }
    for (i, (a, _)) in dbs.iter().enumerate() {
        for (b, _) in &dbs[..i] {
            if a.token_key() == b.token_key() && a.region != b.region {
                return Err(ConfigError::invalid(
                    flags::DATABASES,
                    format!(
                        "databases \"{}\" and \"{}\" have the same host, port and user but regions {} and {}; they share one token and pgpass line, so give them one region",
                        b.name, a.name, b.region, a.region
                    ),
                ));
            }
            if a.access.proxy_port.is_some() && a.access.proxy_port == b.access.proxy_port {
                return Err(ConfigError::invalid(
                    flags::DATABASES,
                    format!(
                        "databases \"{}\" and \"{}\" both ask for proxy port {}; give each its own",
                        b.name,
                        a.name,
                        a.access.proxy_port.unwrap_or_default()
                    ),
                ));
            }
        }
    }
    Ok(())
}

impl RunArgs {
    /// Validates every flag, using `env` for the region fallbacks.
    pub fn into_config(
        self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<AgentConfig, ConfigError> {
        let Self {
            dbs,
            dir,
            interval,
            once,
            health_addr,
            log_format,
            max_connections,
            max_sigterm_delay,
            connect_timeout,
            ca_file,
        } = self;
        let databases = dbs.endpoints(env)?;
        let interval = common::parse_interval(&interval).map_err(|e| {
            ConfigError::invalid(
                flags::INTERVAL,
                describe(&interval, &e, "write a duration from 1m to 14m, e.g. 10m"),
            )
        })?;
        if dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                flags::DIR,
                "is empty; write a directory, e.g. /var/run/rds-iam",
            ));
        }
        let health_addr = parse_health_addr(&health_addr)?;
        let log_format: LogFormat = log_format
            .parse()
            .map_err(|e: String| ConfigError::invalid(flags::LOG_FORMAT, e))?;
        let proxy = ProxySettings {
            max_connections: parse_count(flags::MAX_CONNECTIONS, &max_connections)?,
            max_sigterm_delay: parse_duration(flags::MAX_SIGTERM_DELAY, &max_sigterm_delay, "25s")?,
            connect_timeout: parse_duration(flags::CONNECT_TIMEOUT, &connect_timeout, "10s")?,
            ca_file,
        };
        if proxy.connect_timeout.is_zero() {
            return Err(ConfigError::invalid(
                flags::CONNECT_TIMEOUT,
                "is 0; write a timeout of at least 1s, e.g. 10s",
            ));
        }
        if proxy.ca_file.is_none() {
            // The proxy checks the certificate itself; my.cnf names the CA
            // for MySQL's clients in either mode.
            if let Some((e, _)) = databases.iter().find(|(e, _)| {
                (e.access.mode == Mode::Proxy || e.engine == Engine::Mysql)
                    && e.sslmode != common::SslMode::Require
            }) {
                return Err(ConfigError::Missing {
                    flag: flags::CA_FILE,
                    hint: match (e.engine, e.access.mode, e.sslmode) {
                        (Engine::Mysql, Mode::Files, common::SslMode::VerifyCa) => "sslmode verify-ca of a MySQL database makes my.cnf check the server certificate against the RDS CA bundle; give its PEM file, at the same path in the app containers",
                        (Engine::Mysql, Mode::Files, _) => "sslmode verify-full of a MySQL database makes my.cnf check the server certificate against the RDS CA bundle; give its PEM file, at the same path in the app containers",
                        (_, _, common::SslMode::VerifyCa) => "sslmode verify-ca in proxy mode checks the server certificate against the RDS CA bundle; give its PEM file",
                        _ => "sslmode verify-full in proxy mode checks the server certificate against the RDS CA bundle; give its PEM file",
                    },
                });
            }
        }
        let (databases, region_sources) = databases.into_iter().unzip();
        Ok(AgentConfig {
            databases,
            region_sources,
            dir,
            interval,
            once,
            health_addr,
            log_format,
            proxy,
        })
    }
}

fn parse_duration(flag: Flag, value: &str, example: &str) -> Result<Duration, ConfigError> {
    common::parse_duration(value).map_err(|e| {
        ConfigError::invalid(
            flag,
            describe(value, &e, &format!("write a duration, e.g. {example}")),
        )
    })
}

fn parse_count(flag: Flag, value: &str) -> Result<usize, ConfigError> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err(ConfigError::invalid(
            flag,
            format!("{value:?} is not a number from 1 to 1000000; write e.g. 1000"),
        )),
    }
}

fn parse_health_addr(value: &str) -> Result<Option<SocketAddr>, ConfigError> {
    let v = value.trim();
    if v.is_empty() || v == "off" {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| {
        ConfigError::invalid(
            flags::HEALTH_ADDR,
            format!("{value:?} is not an IP:port address; write e.g. 0.0.0.0:9808, or off"),
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<AgentConfig, String> {
        let mut full = vec!["rds-iam-tokenagent"];
        full.extend_from_slice(args);
        let cli = Cli::try_parse_from(full).map_err(|e| e.to_string())?;
        cli.run.into_config(|_| None).map_err(|e| e.to_string())
    }

    const OK: &[&str] = &[
        "--host",
        "db.abc.us-east-1.rds.amazonaws.com",
        "--user",
        "app",
    ];

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every deploy-time flag's env twin is the one in the shared contract.
    #[test]
    fn env_twins_are_the_contract() {
        let contract = [
            flags::DATABASES,
            flags::HOST,
            flags::PORT,
            flags::USER,
            flags::DATABASE,
            flags::REGION,
            flags::SSLMODE,
            flags::DIR,
            flags::INTERVAL,
            flags::HEALTH_ADDR,
            flags::LOG_FORMAT,
            flags::MAX_CONNECTIONS,
            flags::MAX_SIGTERM_DELAY,
            flags::CONNECT_TIMEOUT,
            flags::CA_FILE,
        ];
        let cmd = Cli::command();
        let args: Vec<_> = cmd.get_arguments().collect();
        for f in contract {
            let arg = args
                .iter()
                .find(|a| a.get_long() == Some(f.long))
                .unwrap_or_else(|| panic!("no --{}", f.long));
            assert_eq!(
                arg.get_env()
                    .map(|e| e.to_string_lossy().into_owned())
                    .as_deref(),
                Some(f.env),
                "--{}",
                f.long
            );
        }
        assert_eq!(
            args.iter().filter(|a| a.get_env().is_some()).count(),
            contract.len(),
            "a flag with env is missing from the contract list"
        );
    }

    #[test]
    fn defaults() {
        let c = parse(OK).unwrap();
        assert_eq!(c.databases.len(), 1);
        let db = &c.databases[0];
        assert!(db.name.is_default());
        assert_eq!(db.port, 5432);
        assert_eq!(db.region, "us-east-1");
        assert_eq!(c.interval, Duration::from_secs(600));
        assert_eq!(c.dir, PathBuf::from("/var/run/rds-iam"));
        assert_eq!(c.health_addr, None);
        assert_eq!(c.proxy.max_connections, 1000);
        assert_eq!(c.proxy.max_sigterm_delay, Duration::from_secs(25));
        assert!(!c.once);
    }

    #[test]
    fn databases_from_specs_and_flags() {
        let c = parse(&[
            "--host",
            "db.abc.us-east-1.rds.amazonaws.com",
            "--user",
            "app",
            "--db",
            "orders=postgres://o@orders.x.eu-west-1.rds.amazonaws.com:5433/orders\nreports=mysql://r@r.example:3306?region=us-east-2&mode=proxy",
        ])
        .unwrap();
        let names: Vec<&str> = c.databases.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["default", "orders", "reports"]);
        assert_eq!(c.databases[1].region, "eu-west-1");
        assert_eq!(c.databases[2].engine, Engine::Mysql);
        assert_eq!(c.databases[2].access.mode, Mode::Proxy);
    }

    #[test]
    fn bad_values_name_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--user", "app"], "--host (RDS_IAM_HOST) is required"),
            (
                &["--host", "db.x.us-east-1.rds.amazonaws.com"],
                "--user (RDS_IAM_USER) is required",
            ),
            (&[], "--db (RDS_IAM_DATABASES) is required"),
            (&["--host", "", "--user", "app"], "--host (RDS_IAM_HOST): \"\" is empty"),
            (
                &["--host", "db:5432", "--user", "app"],
                "--host (RDS_IAM_HOST): \"db:5432\" contains ':' at byte 2; write",
            ),
            (
                &["--host", "db host", "--user", "app"],
                "--host (RDS_IAM_HOST): \"db host\" contains whitespace",
            ),
            (
                &["--host", "db", "--user", "a\nb", "--region", "us-east-1"],
                "--user (RDS_IAM_USER): \"a\\nb\" contains a control character",
            ),
            (
                &["--host", "db", "--user", "u", "--port", "0", "--region", "us-east-1"],
                "--port (RDS_IAM_PORT): \"0\" is outside 1..65535; write a port from 1 to 65535, e.g. 5432",
            ),
            (
                &["--host", "db", "--user", "u", "--port", "-1", "--region", "us-east-1"],
                "--port (RDS_IAM_PORT): \"-1\" is not a number; write a port from 1 to 65535, e.g. 5432",
            ),
            (
                &["--host", "db", "--user", "u", "--interval", "15m", "--region", "us-east-1"],
                "--interval (RDS_IAM_REFRESH_INTERVAL): \"15m\" is outside 1m..14m; write a duration from 1m to 14m",
            ),
            (
                &["--host", "db", "--user", "u", "--health-addr", "9808", "--region", "us-east-1"],
                "--health-addr (RDS_IAM_HEALTH_ADDR)",
            ),
            (
                &["--host", "db", "--user", "u", "--log-format", "xml", "--region", "us-east-1"],
                "--log-format (RDS_IAM_LOG_FORMAT)",
            ),
            (
                &["--host", "db", "--user", "u", "--region", "mars"],
                "--region (RDS_IAM_REGION): \"mars\" is not an AWS region name",
            ),
            (
                &["--host", "db.internal", "--user", "u"],
                "the AWS region cannot be determined",
            ),
            (
                &["--db", "a=postgres://u@h:1?region=us-east-1", "--db", "a=postgres://v@h:1?region=us-east-1"],
                "--db (RDS_IAM_DATABASES): database \"a\" appears twice",
            ),
            (
                &["--host", "db", "--user", "u", "--region", "us-east-1", "--db", "default=postgres://v@h:1?region=us-east-1"],
                "database \"default\" is also described by --host",
            ),
            (
                &["--db", "a=postgres://u@h:1?region=us-east-1", "--db", "b=postgres://u@h:1?region=us-east-2"],
                "same host, port and user but regions us-east-1 and us-east-2",
            ),
            (
                &["--db", "a=postgres://u@h:1?region=us-east-1&sslmode=verify-full&mode=proxy"],
                "--ca-file (RDS_IAM_CA_FILE) is required",
            ),
            (
                &["--db", "a=mysql://u@h?region=us-east-1&sslmode=verify-ca"],
                "--ca-file (RDS_IAM_CA_FILE) is required: sslmode verify-ca of a MySQL database makes my.cnf check",
            ),
            (
                &["--db", "a=postgres://u@h:1?region=us-east-1&mode=proxy&proxy-port=6432", "--db", "b=postgres://v@h:1?region=us-east-1&mode=proxy&proxy-port=6432"],
                "both ask for proxy port 6432",
            ),
            (
                &["--db", "x"],
                "--db (RDS_IAM_DATABASES): \"x\": \"x\" is not of the form NAME=",
            ),
            (
                &["--host", "db", "--user", "u", "--region", "us-east-1", "--max-connections", "0"],
                "--max-connections (RDS_IAM_MAX_CONNECTIONS): \"0\" is not a number from 1 to 1000000",
            ),
        ];
        for (args, want) in cases {
            let e = parse(args).unwrap_err();
            assert!(e.contains(want), "{args:?}: got {e:?}, want {want:?}");
        }
    }

    #[test]
    fn probe_flags() {
        let cli = Cli::try_parse_from(["x", "probe", "--dir", "/d", "--min-life", "3m"]).unwrap();
        let Some(Command::Probe(p)) = cli.command else {
            panic!("not probe")
        };
        assert_eq!(p.dir, PathBuf::from("/d"));
        assert_eq!(p.min_life().unwrap(), Duration::from_secs(180));
        assert!(p.dbs.is_empty());
        let cli = Cli::try_parse_from(["x", "probe", "--min-life", "-1m"]).unwrap();
        let Some(Command::Probe(p)) = cli.command else {
            panic!("not probe")
        };
        let e = p.min_life().unwrap_err().to_string();
        assert!(e.starts_with("--min-life: \"-1m\""), "{e}");
        let cli = Cli::try_parse_from(["x", "probe"]).unwrap();
        let Some(Command::Probe(p)) = cli.command else {
            panic!("not probe")
        };
        assert_eq!(p.min_life().unwrap(), crate::agent::READY_MIN_LIFE);
    }

    #[test]
    fn health_addr_values() {
        assert_eq!(parse_health_addr("off").unwrap(), None);
        assert_eq!(
            parse_health_addr("127.0.0.1:9808").unwrap(),
            Some("127.0.0.1:9808".parse().unwrap())
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(rds_iam_common::fuzz_cases(3000)))]
        /// The flag parser never panics, and whatever it accepts can never
        /// put a line break or a ':' into the pgpass host or user fields.
        #[test]
        fn flag_parser_fuzz(
            host in "\\PC{0,30}|[a-z0-9.:\n -]{0,30}",
            user in "\\PC{0,30}|[a-z0-9:\n\\ ]{0,20}",
            port in "\\PC{0,8}|[0-9]{0,6}",
            interval in "\\PC{0,8}|[0-9]{1,3}[smh]",
            region in proptest::option::of("\\PC{0,12}|[a-z]{2}-[a-z]{4,7}-[0-9]"),
            spec in "\\PC{0,60}|[a-z]{1,4}=postgres://[a-z%0-9]{1,5}@[a-z.]{1,9}:[0-9]{1,5}/[a-z%]{0,4}\\?region=us-east-1",
        ) {
            let args = RunArgs {
                dbs: DbArgs {
                    db: vec![spec],
                    host: Some(host),
                    port: Some(port),
                    user: Some(user),
                    database: None,
                    region,
                    sslmode: None,
                },
                dir: "/tmp/x".into(),
                interval,
                once: false,
                health_addr: "off".into(),
                log_format: "json".into(),
                max_connections: "1000".into(),
                max_sigterm_delay: "25s".into(),
                connect_timeout: "10s".into(),
                ca_file: None,
            };
            if let Ok(c) = args.into_config(|_| None) {
                for d in &c.databases {
                    proptest::prop_assert!(!d.host.contains(['\n', '\r', ':']));
                    proptest::prop_assert!(!d.user.contains(['\n', '\r', ':']));
                    proptest::prop_assert!(d.port >= 1);
                    let line = crate::pgpass::line(&d.host, d.port, &d.user, "t").expect("valid");
                    proptest::prop_assert_eq!(line.lines().count(), 1);
                }
                proptest::prop_assert!(c.interval >= Duration::from_secs(60) && c.interval <= Duration::from_secs(840));
            }
        }
    }
}
