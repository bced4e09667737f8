//! The agent's validated configuration, kept apart from the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::logging::LogFormat;
use crate::region::RegionSource;
use crate::signer::TokenSpec;

/// Everything the refresh loop needs, already validated.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub spec: TokenSpec,
    pub region_source: RegionSource,
    pub dir: PathBuf,
    pub interval: Duration,
    pub once: bool,
    pub health_addr: Option<SocketAddr>,
    pub log_format: LogFormat,
}

/// A flag or env value is invalid. Every message names the flag and its env
/// twin and says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{flag} ({env}) is required: {hint}")]
    Missing {
        flag: &'static str,
        env: &'static str,
        hint: &'static str,
    },
    #[error("{flag} ({env}): {problem}")]
    Invalid {
        flag: &'static str,
        env: &'static str,
        problem: String,
    },
    #[error(transparent)]
    Region(#[from] crate::region::RegionError),
}

impl ConfigError {
    pub fn invalid(flag: &'static str, env: &'static str, problem: impl ToString) -> Self {
        ConfigError::Invalid {
            flag,
            env,
            problem: problem.to_string(),
        }
    }
}
