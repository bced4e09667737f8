//! The agent's validated configuration, kept apart from the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rds_iam_common::agent_args::Flag;
use rds_iam_common::{Endpoint, RegionSource};

use rds_iam_common::process::LogFormat;

/// Everything the agent needs, already validated.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The default database first (if any), then the named ones.
    pub databases: Vec<Endpoint>,
    /// Where each database's region came from (same order).
    pub region_sources: Vec<RegionSource>,
    pub dir: PathBuf,
    pub interval: Duration,
    pub once: bool,
    pub health_addr: Option<SocketAddr>,
    pub log_format: LogFormat,
    pub proxy: ProxySettings,
}

/// Settings of proxy mode, for the databases that use it.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub max_connections: usize,
    pub max_sigterm_delay: Duration,
    pub connect_timeout: Duration,
    pub ca_file: Option<PathBuf>,
}

/// A flag or env value is invalid. Every message names the flag and its env
/// twin, says what is wrong and what to write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{flag} is required: {hint}")]
    Missing { flag: Flag, hint: &'static str },
    #[error("{flag}: {problem}")]
    Invalid { flag: Flag, problem: String },
}

impl ConfigError {
    pub fn invalid(flag: Flag, problem: impl ToString) -> Self {
        ConfigError::Invalid {
            flag,
            problem: problem.to_string(),
        }
    }
}
