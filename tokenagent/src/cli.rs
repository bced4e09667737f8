//! The command line. Values are taken as strings and validated in
//! [`RunArgs::into_config`], so every error names the flag, its env twin and
//! the problem, and nothing is done before all of them are valid.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rds_iam_common as common;

use crate::config::{AgentConfig, ConfigError};
use crate::logging::LogFormat;
use crate::region;
use crate::signer::TokenSpec;

/// Keeps a fresh AWS RDS IAM auth token in a libpq pgpass file.
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
    /// Exit 0 only if the token files exist, have mode 0600 and hold a token
    /// with at least --min-life left (for exec startup and liveness probes).
    Probe(ProbeArgs),
    /// Print a one-screen diagnosis: credentials, region, signing, the DB
    /// endpoint's TLS, and the pgpass file.
    Doctor(RunArgs),
}

/// Flags of the agent (and of `doctor`).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// DB endpoint: instance, cluster, reader, custom or RDS Proxy host name.
    #[arg(long, env = "RDS_IAM_HOST")]
    pub host: Option<String>,
    /// DB port.
    // Hyphen values (`-1`) reach the validation, which names the flag.
    #[arg(
        long,
        env = "RDS_IAM_PORT",
        default_value = "5432",
        allow_hyphen_values = true
    )]
    pub port: String,
    /// DB user the token is for.
    #[arg(long, env = "RDS_IAM_USER")]
    pub user: Option<String>,
    /// AWS region; default: derived from an RDS host name, else AWS_REGION / AWS_DEFAULT_REGION.
    #[arg(long, env = "RDS_IAM_REGION")]
    pub region: Option<String>,
    /// Directory for the `token` and `pgpass` files.
    #[arg(long, env = "RDS_IAM_DIR", default_value = common::DEFAULT_DIR)]
    pub dir: PathBuf,
    /// Refresh interval, 1m..14m (e.g. 10m, 5m30s).
    #[arg(
        long,
        env = "RDS_IAM_REFRESH_INTERVAL",
        default_value = "10m",
        allow_hyphen_values = true
    )]
    pub interval: String,
    /// Write the files once, then exit 0 (or non-zero with the reason).
    #[arg(long)]
    pub once: bool,
    /// Address for /healthz, /readyz and /metrics, e.g. 0.0.0.0:9808, or `off`.
    #[arg(long, env = "RDS_IAM_HEALTH_ADDR", default_value = "off")]
    pub health_addr: String,
    /// Log format: json or text.
    #[arg(long, env = "RDS_IAM_LOG_FORMAT", default_value = "json")]
    pub log_format: String,
}

/// Flags of `probe`.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Directory holding the `token` and `pgpass` files.
    #[arg(long, env = "RDS_IAM_DIR", default_value = common::DEFAULT_DIR)]
    pub dir: PathBuf,
    /// The least token life left that passes, e.g. 2m.
    #[arg(long, default_value = "2m", allow_hyphen_values = true)]
    pub min_life: String,
}

impl ProbeArgs {
    /// Validates the flags.
    pub fn min_life(&self) -> Result<Duration, ConfigError> {
        common::parse_duration(&self.min_life)
            .map_err(|e| ConfigError::invalid("--min-life", "-", e))
    }
}

impl RunArgs {
    /// Validates every flag, using `env` for the region fallbacks.
    pub fn into_config(
        self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<AgentConfig, ConfigError> {
        let Self {
            host,
            port,
            user,
            region,
            dir,
            interval,
            once,
            health_addr,
            log_format,
        } = self;
        let host = host.ok_or(ConfigError::Missing {
            flag: "--host",
            env: "RDS_IAM_HOST",
            hint: "the DB endpoint, e.g. mydb.abc123.us-east-1.rds.amazonaws.com",
        })?;
        common::validate_host(&host)
            .map_err(|e| ConfigError::invalid("--host", "RDS_IAM_HOST", e))?;
        let port = common::parse_port(&port)
            .map_err(|e| ConfigError::invalid("--port", "RDS_IAM_PORT", e))?;
        let user = user.ok_or(ConfigError::Missing {
            flag: "--user",
            env: "RDS_IAM_USER",
            hint: "the DB user that was granted rds_iam",
        })?;
        common::validate_user(&user)
            .map_err(|e| ConfigError::invalid("--user", "RDS_IAM_USER", e))?;
        let interval = common::parse_interval(&interval)
            .map_err(|e| ConfigError::invalid("--interval", "RDS_IAM_REFRESH_INTERVAL", e))?;
        if dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("--dir", "RDS_IAM_DIR", "is empty"));
        }
        let health_addr = parse_health_addr(&health_addr)?;
        let log_format: LogFormat = log_format
            .parse()
            .map_err(|e: String| ConfigError::invalid("--log-format", "RDS_IAM_LOG_FORMAT", e))?;
        let (region, region_source) = region::resolve(region.as_deref(), &host, env)?;
        Ok(AgentConfig {
            spec: TokenSpec {
                host,
                port,
                user,
                region,
            },
            region_source,
            dir,
            interval,
            once,
            health_addr,
            log_format,
        })
    }
}

fn parse_health_addr(value: &str) -> Result<Option<SocketAddr>, ConfigError> {
    let v = value.trim();
    if v.is_empty() || v == "off" {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| {
        ConfigError::invalid(
            "--health-addr",
            "RDS_IAM_HEALTH_ADDR",
            format!("{value:?} is not an IP:port address; write e.g. 0.0.0.0:9808, or off"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

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
    fn defaults() {
        let c = parse(OK).unwrap();
        assert_eq!(c.spec.port, 5432);
        assert_eq!(c.spec.region, "us-east-1");
        assert_eq!(c.interval, Duration::from_secs(600));
        assert_eq!(c.dir, PathBuf::from("/var/run/rds-iam"));
        assert_eq!(c.health_addr, None);
        assert!(!c.once);
    }

    #[test]
    fn bad_values_name_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--user", "app"], "--host (RDS_IAM_HOST) is required"),
            (
                &["--host", "db.x.us-east-1.rds.amazonaws.com"],
                "--user (RDS_IAM_USER) is required",
            ),
            (
                &["--host", "", "--user", "app"],
                "--host (RDS_IAM_HOST): is empty",
            ),
            (
                &["--host", "db:5432", "--user", "app"],
                "--host (RDS_IAM_HOST): contains ':'",
            ),
            (
                &["--host", "db host", "--user", "app"],
                "--host (RDS_IAM_HOST): contains whitespace",
            ),
            (
                &["--host", "db\nhost", "--user", "app"],
                "--host (RDS_IAM_HOST): contains a control character",
            ),
            (
                &["--host", "db", "--user", "a:b", "--region", "us-east-1"],
                "--user (RDS_IAM_USER): contains ':'",
            ),
            (
                &["--host", "db", "--user", "a\nb", "--region", "us-east-1"],
                "--user (RDS_IAM_USER): contains a control character",
            ),
            (
                &[
                    "--host",
                    "db",
                    "--user",
                    "u",
                    "--port",
                    "0",
                    "--region",
                    "us-east-1",
                ],
                "--port (RDS_IAM_PORT): 0 is outside 1..65535",
            ),
            (
                &[
                    "--host",
                    "db",
                    "--user",
                    "u",
                    "--port",
                    "65536",
                    "--region",
                    "us-east-1",
                ],
                "--port (RDS_IAM_PORT): 65536 is outside 1..65535",
            ),
            (
                &[
                    "--host",
                    "db",
                    "--user",
                    "u",
                    "--interval",
                    "30s",
                    "--region",
                    "us-east-1",
                ],
                "--interval (RDS_IAM_REFRESH_INTERVAL): \"30s\" is outside 1m..14m",
            ),
            (
                &[
                    "--host",
                    "db",
                    "--user",
                    "u",
                    "--interval",
                    "15m",
                    "--region",
                    "us-east-1",
                ],
                "--interval (RDS_IAM_REFRESH_INTERVAL): \"15m\" is outside 1m..14m",
            ),
            (
                &[
                    "--host",
                    "db",
                    "--user",
                    "u",
                    "--health-addr",
                    "9808",
                    "--region",
                    "us-east-1",
                ],
                "--health-addr (RDS_IAM_HEALTH_ADDR)",
            ),
            (
                &[
                    "--host",
                    "db",
                    "--user",
                    "u",
                    "--log-format",
                    "xml",
                    "--region",
                    "us-east-1",
                ],
                "--log-format (RDS_IAM_LOG_FORMAT)",
            ),
            (
                &["--host", "db", "--user", "u", "--region", "mars"],
                "--region (RDS_IAM_REGION)",
            ),
            (
                &["--host", "db.internal", "--user", "u"],
                "the AWS region cannot be determined",
            ),
        ];
        for (args, want) in cases {
            let e = parse(args).unwrap_err();
            assert!(e.contains(want), "{args:?}: got {e:?}, want {want:?}");
        }
    }

    #[test]
    fn negative_numbers_get_the_flags_own_message() {
        let e = parse(&[
            "--host",
            "db",
            "--user",
            "u",
            "--region",
            "us-east-1",
            "--port",
            "-1",
        ])
        .unwrap_err();
        assert_eq!(
            e,
            "--port (RDS_IAM_PORT): \"-1\" is not a port number; write a number from 1 to 65535"
        );
        let e = parse(&[
            "--host",
            "db",
            "--user",
            "u",
            "--region",
            "us-east-1",
            "--interval",
            "-5m",
        ])
        .unwrap_err();
        assert!(
            e.starts_with("--interval (RDS_IAM_REFRESH_INTERVAL): \"-5m\""),
            "{e}"
        );
        let cli = Cli::try_parse_from(["x", "probe", "--min-life", "-1m"]).unwrap();
        match cli.command {
            Some(Command::Probe(p)) => {
                let e = p.min_life().unwrap_err().to_string();
                assert!(e.starts_with("--min-life"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn probe_min_life_default_is_the_readiness_minimum() {
        let cli = Cli::try_parse_from(["x", "probe"]).unwrap();
        match cli.command {
            Some(Command::Probe(p)) => {
                assert_eq!(p.min_life().unwrap(), crate::agent::READY_MIN_LIFE)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn health_addr_values() {
        assert_eq!(parse_health_addr("off").unwrap(), None);
        assert_eq!(
            parse_health_addr("127.0.0.1:9808").unwrap(),
            Some("127.0.0.1:9808".parse().unwrap())
        );
    }

    #[test]
    fn subcommands_parse() {
        let cli = Cli::try_parse_from(["x", "probe", "--dir", "/d", "--min-life", "3m"]).unwrap();
        match cli.command {
            Some(Command::Probe(p)) => {
                assert_eq!(p.dir, PathBuf::from("/d"));
                assert_eq!(p.min_life().unwrap(), Duration::from_secs(180));
            }
            other => panic!("{other:?}"),
        }
        let bad = ProbeArgs {
            dir: "/d".into(),
            min_life: "soon".into(),
        };
        assert!(bad
            .min_life()
            .unwrap_err()
            .to_string()
            .contains("--min-life"));
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
        ) {
            let args = RunArgs {
                host: Some(host),
                port,
                user: Some(user),
                region,
                dir: "/tmp/x".into(),
                interval,
                once: false,
                health_addr: "off".into(),
                log_format: "json".into(),
            };
            if let Ok(c) = args.into_config(|_| None) {
                proptest::prop_assert!(!c.spec.host.contains(['\n', '\r', ':']));
                proptest::prop_assert!(!c.spec.user.contains(['\n', '\r', ':']));
                proptest::prop_assert!(c.spec.port >= 1);
                proptest::prop_assert!(c.interval >= Duration::from_secs(60) && c.interval <= Duration::from_secs(840));
                let line = crate::pgpass::line(&c.spec.host, c.spec.port, &c.spec.user, "t").expect("valid");
                proptest::prop_assert_eq!(line.lines().count(), 1);
            }
        }
    }
}
