//! Settings of the injected agent, separate from the command line so that the
//! mutation code and the tests never depend on clap.

use std::fmt;

/// Default image of the token agent (override with `--agent-image`).
pub const DEFAULT_AGENT_IMAGE: &str = "rds-iam-injector/tokenagent:0.1.0";
/// UID the agent runs as when no target container says which UID it runs as.
pub const DEFAULT_AGENT_UID: i64 = 65532;

/// How the agent is placed in the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum SidecarMode {
    /// First init container with `restartPolicy: Always` (Kubernetes 1.29+).
    Native,
    /// A `--once` init container plus a regular sidecar container.
    Classic,
    /// Only the `--once` init container: the token is written once at start.
    InitOnly,
}

impl SidecarMode {
    pub const ALL: [SidecarMode; 3] = [Self::Native, Self::Classic, Self::InitOnly];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Classic => "classic",
            Self::InitOnly => "init-only",
        }
    }

    /// Parses the exact spelling used by the flag and the annotation.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == value)
    }
}

impl fmt::Display for SidecarMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Requests and limits of the injected agent, as Kubernetes quantities.
/// `None` leaves the field out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentResources {
    pub cpu_request: Option<String>,
    pub memory_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
}

impl Default for AgentResources {
    fn default() -> Self {
        Self {
            cpu_request: Some("10m".into()),
            memory_request: Some("16Mi".into()),
            cpu_limit: Some("100m".into()),
            memory_limit: Some("64Mi".into()),
        }
    }
}

/// Everything the mutation needs besides the pod itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub image: String,
    pub sidecar_mode: SidecarMode,
    pub default_region: Option<String>,
    pub default_agent_uid: i64,
    pub resources: AgentResources,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            image: DEFAULT_AGENT_IMAGE.into(),
            sidecar_mode: SidecarMode::Native,
            default_region: None,
            default_agent_uid: DEFAULT_AGENT_UID,
            resources: AgentResources::default(),
        }
    }
}

/// A setting that cannot work. The message names the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag}: {message}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub message: String,
}

impl ConfigError {
    fn new(flag: &'static str, message: impl Into<String>) -> Self {
        Self {
            flag,
            message: message.into(),
        }
    }
}

impl AgentConfig {
    /// Checks the settings once at start-up, so that a bad flag stops the
    /// webhook instead of producing pods the API server rejects.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let Self {
            image,
            sidecar_mode: _,
            default_region,
            default_agent_uid,
            resources,
        } = self;
        if image.trim().is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::new(
                "--agent-image",
                format!("{image:?} is not an image reference; write e.g. {DEFAULT_AGENT_IMAGE}"),
            ));
        }
        if let Some(region) = default_region {
            if !rds_iam_common::is_region_name(region) {
                return Err(ConfigError::new(
                    "--default-region",
                    format!("{region:?} is not an AWS region name; write e.g. eu-west-1"),
                ));
            }
        }
        if !(1..=i64::from(i32::MAX)).contains(default_agent_uid) {
            return Err(ConfigError::new(
                "--default-agent-uid",
                format!(
                    "{default_agent_uid} is not a non-root UID; write a number from 1 to {}",
                    i32::MAX
                ),
            ));
        }
        resources.validate()
    }
}

impl AgentResources {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let Self {
            cpu_request,
            memory_request,
            cpu_limit,
            memory_limit,
        } = self;
        let cpu_req = check_quantity("--agent-cpu-request", cpu_request)?;
        let mem_req = check_quantity("--agent-memory-request", memory_request)?;
        let cpu_lim = check_quantity("--agent-cpu-limit", cpu_limit)?;
        let mem_lim = check_quantity("--agent-memory-limit", memory_limit)?;
        if let (Some(r), Some(l)) = (cpu_req, cpu_lim) {
            if r > l {
                return Err(ConfigError::new(
                    "--agent-cpu-request",
                    "is larger than --agent-cpu-limit; Kubernetes rejects such a pod",
                ));
            }
        }
        if let (Some(r), Some(l)) = (mem_req, mem_lim) {
            if r > l {
                return Err(ConfigError::new(
                    "--agent-memory-request",
                    "is larger than --agent-memory-limit; Kubernetes rejects such a pod",
                ));
            }
        }
        Ok(())
    }
}

fn check_quantity(flag: &'static str, value: &Option<String>) -> Result<Option<f64>, ConfigError> {
    match value {
        None => Ok(None),
        Some(v) => parse_quantity(v).map(Some).ok_or_else(|| {
            ConfigError::new(
                flag,
                format!("{v:?} is not a Kubernetes quantity; write e.g. 10m, 0.1, 16Mi or 64M"),
            )
        }),
    }
}

/// Parses a Kubernetes resource quantity (`100m`, `1.5`, `64Mi`, `1e3`) into
/// its value in base units. Negative values are refused.
pub fn parse_quantity(s: &str) -> Option<f64> {
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.is_empty() {
        return None;
    }
    let (number, factor) = match SUFFIXES.iter().find(|(suf, _)| s.ends_with(suf)) {
        Some((suf, f)) => (&s[..s.len() - suf.len()], *f),
        None => match s.find(['e', 'E']) {
            Some(pos) => {
                let exp: i32 = s[pos + 1..].parse().ok()?;
                (&s[..pos], 10f64.powi(exp))
            }
            None => (s, 1.0),
        },
    };
    let digits_ok = !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && number.bytes().filter(|&b| b == b'.').count() <= 1
        && number != ".";
    if !digits_ok {
        return None;
    }
    number.parse::<f64>().ok().map(|n| n * factor)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("100m"), Some(0.1));
        assert_eq!(parse_quantity("1"), Some(1.0));
        assert_eq!(parse_quantity("0.5"), Some(0.5));
        assert_eq!(parse_quantity("16Mi"), Some(16.0 * 1048576.0));
        assert_eq!(parse_quantity("64M"), Some(64e6));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("+2"), Some(2.0));
        for bad in [
            "", "-1", "abc", "1.2.3", "Mi", "10 m", ".", "1mi", "1e", "m",
        ] {
            assert_eq!(parse_quantity(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(AgentConfig::default().validate(), Ok(()));
    }

    #[test]
    fn bad_settings_name_the_flag() {
        let mut c = AgentConfig {
            default_region: Some("Europe".into()),
            ..AgentConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().flag, "--default-region");
        c.default_region = None;
        c.default_agent_uid = 0;
        assert_eq!(c.validate().unwrap_err().flag, "--default-agent-uid");
        c.default_agent_uid = 1000;
        c.resources.memory_limit = Some("lots".into());
        assert_eq!(c.validate().unwrap_err().flag, "--agent-memory-limit");
        c.resources.memory_limit = Some("8Mi".into());
        assert_eq!(c.validate().unwrap_err().flag, "--agent-memory-request");
        c.resources.memory_limit = None;
        c.image = "has space".into();
        assert_eq!(c.validate().unwrap_err().flag, "--agent-image");
    }

    #[test]
    fn sidecar_modes_round_trip() {
        for m in SidecarMode::ALL {
            assert_eq!(SidecarMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(SidecarMode::parse("Native"), None);
        assert_eq!(SidecarMode::parse("sidecar"), None);
    }
}
