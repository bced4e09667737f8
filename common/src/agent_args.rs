//! The agent's command line as the webhook writes it and the agent reads it:
//! flag and env names, defined once, and the conversion from a pod's
//! databases to the agent container's env.

use std::fmt;
use std::time::Duration;

use crate::endpoint::Endpoint;

/// A flag of the agent and its env twin (`""` when it has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag {
    /// Without the leading `--`.
    pub long: &'static str,
    pub env: &'static str,
}

impl fmt::Display for Flag {
    /// `--port (RDS_IAM_PORT)`, or `--min-life` for a flag without env.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.env.is_empty() {
            write!(f, "--{}", self.long)
        } else {
            write!(f, "--{} ({})", self.long, self.env)
        }
    }
}

const fn flag(long: &'static str, env: &'static str) -> Flag {
    Flag { long, env }
}

/// Every database, one spec per value (see [`crate::endpoint`]); the env
/// twin holds them separated by newlines, one per line in `kubectl describe`.
pub const DATABASES: Flag = flag("db", "RDS_IAM_DATABASES");
/// The single-database flags: they describe the default database.
pub const HOST: Flag = flag("host", "RDS_IAM_HOST");
pub const PORT: Flag = flag("port", "RDS_IAM_PORT");
pub const USER: Flag = flag("user", "RDS_IAM_USER");
pub const DATABASE: Flag = flag("database", "RDS_IAM_DATABASE");
pub const REGION: Flag = flag("region", "RDS_IAM_REGION");
pub const SSLMODE: Flag = flag("sslmode", "RDS_IAM_SSLMODE");
/// Settings of the agent as a whole.
pub const DIR: Flag = flag("dir", "RDS_IAM_DIR");
pub const INTERVAL: Flag = flag("interval", "RDS_IAM_REFRESH_INTERVAL");
pub const HEALTH_ADDR: Flag = flag("health-addr", "RDS_IAM_HEALTH_ADDR");
pub const LOG_FORMAT: Flag = flag("log-format", "RDS_IAM_LOG_FORMAT");
pub const ONCE: Flag = flag("once", "");
/// Proxy mode.
pub const MAX_CONNECTIONS: Flag = flag("max-connections", "RDS_IAM_MAX_CONNECTIONS");
pub const MAX_SIGTERM_DELAY: Flag = flag("max-sigterm-delay", "RDS_IAM_MAX_SIGTERM_DELAY");
pub const CONNECT_TIMEOUT: Flag = flag("connect-timeout", "RDS_IAM_CONNECT_TIMEOUT");
pub const CA_FILE: Flag = flag("ca-file", "RDS_IAM_CA_FILE");
/// `probe` only.
pub const MIN_LIFE: Flag = flag("min-life", "");

/// What the webhook tells the agent container.
#[derive(Debug, Clone, Copy)]
pub struct AgentEnv<'a> {
    pub databases: &'a [Endpoint],
    pub dir: &'a str,
    pub interval: Option<Duration>,
    /// The RDS CA bundle, as mounted in the agent.
    pub ca_file: Option<&'a str>,
    /// Proxy mode: how long open sessions may go on after SIGTERM.
    pub max_sigterm_delay: Option<Duration>,
}

impl AgentEnv<'_> {
    /// The env variables, in a stable order; settings left at the agent's
    /// default are left out.
    pub fn render(&self) -> Vec<(&'static str, String)> {
        let Self {
            databases,
            dir,
            interval,
            ca_file,
            max_sigterm_delay,
        } = *self;
        let specs: Vec<String> = databases.iter().map(Endpoint::to_spec).collect();
        let mut env = vec![(DATABASES.env, specs.join("\n")), (DIR.env, dir.to_owned())];
        if let Some(i) = interval {
            env.push((INTERVAL.env, format!("{}s", i.as_secs())));
        }
        if let Some(f) = ca_file {
            env.push((CA_FILE.env, f.to_owned()));
        }
        if let Some(d) = max_sigterm_delay {
            env.push((MAX_SIGTERM_DELAY.env, format!("{}s", d.as_secs())));
        }
        env
    }
}

/// Splits `--db` values into specs: a value may hold several, separated by
/// whitespace (specs never contain any).
pub fn split_specs(values: &[String]) -> impl Iterator<Item = &str> {
    values.iter().flat_map(|v| v.split_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::{DbName, Engine, SslMode};

    #[test]
    fn env_lists_one_database_per_line() {
        let db = |name: &str, host: &str| Endpoint {
            name: DbName::parse(name).unwrap(),
            engine: Engine::Postgres,
            host: host.into(),
            port: 5432,
            user: "app".into(),
            database: None,
            region: "us-east-1".into(),
            sslmode: SslMode::Require,
            access: Default::default(),
        };
        let env = AgentEnv {
            databases: &[db("default", "a.example"), db("orders", "b.example")],
            dir: "/var/run/rds-iam",
            interval: Some(Duration::from_secs(330)),
            ca_file: Some("/etc/rds-iam/ca/ca.crt"),
            max_sigterm_delay: Some(Duration::ZERO),
        }
        .render();
        assert_eq!(
            env,
            vec![
                (
                    "RDS_IAM_DATABASES",
                    "default=postgres://app@a.example:5432?region=us-east-1&sslmode=require\n\
                     orders=postgres://app@b.example:5432?region=us-east-1&sslmode=require"
                        .to_owned()
                ),
                ("RDS_IAM_DIR", "/var/run/rds-iam".to_owned()),
                ("RDS_IAM_REFRESH_INTERVAL", "330s".to_owned()),
                ("RDS_IAM_CA_FILE", "/etc/rds-iam/ca/ca.crt".to_owned()),
                ("RDS_IAM_MAX_SIGTERM_DELAY", "0s".to_owned()),
            ]
        );
        let values = vec![env[0].1.clone(), "c=x d=y".to_owned()];
        assert_eq!(
            split_specs(&values).count(),
            4,
            "newlines and spaces both separate"
        );
    }

    #[test]
    fn flag_labels() {
        assert_eq!(PORT.to_string(), "--port (RDS_IAM_PORT)");
        assert_eq!(MIN_LIFE.to_string(), "--min-life");
    }
}
