//! tracing set-up: JSON (the default, for log pipelines) or text.

use std::str::FromStr;

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            other => Err(format!("{other:?} is not a log format; write json or text")),
        }
    }
}

/// The only targets whose events are logged: the agent's own crates.
///
/// The AWS SDK's events can hold secrets at every level: aws-config's WARN
/// lines about failed credential providers end with the `Debug` form of the
/// SDK error, which carries the raw HTTP answer (secret key and session
/// token included); aws-smithy-runtime traces whole requests and answers
/// (the IRSA web identity token, the credentials); aws-sigv4 traces
/// canonical requests (the session token); aws-smithy-runtime-api logs the
/// `Debug` form of errors at ERROR. So no event of a dependency is logged,
/// whatever `RUST_LOG` says: the agent reports every failure itself, with
/// the error's `Display` chain, which never holds the raw answer.
pub const OWN_TARGET_PREFIX: &str = "rds_iam_";

/// Whether events of `target` may be logged.
pub fn is_own_target(target: &str) -> bool {
    target.starts_with(OWN_TARGET_PREFIX)
}

/// Installs the global subscriber, writing to stderr. `RUST_LOG` sets the
/// levels (default `info`) of the agent's own targets; see
/// [`OWN_TARGET_PREFIX`] for why every other target is off. Colours only
/// when stderr is a terminal.
pub fn init(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let own = tracing_subscriber::filter::filter_fn(|meta| is_own_target(meta.target()));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    let layer = match format {
        LogFormat::Json => layer.json().flatten_event(true).boxed(),
        LogFormat::Text => layer.boxed(),
    };
    // A second init (tests) is harmless.
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(own).with_filter(env))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_agents_own_targets_pass() {
        for t in [
            "rds_iam_tokenagent",
            "rds_iam_tokenagent::creds",
            "rds_iam_common",
        ] {
            assert!(is_own_target(t), "{t}");
        }
        for t in [
            "aws_config::web_identity_token",
            "aws_config::meta::credentials::chain",
            "aws_smithy_runtime::client::orchestrator",
            "aws_smithy_runtime_api::client::interceptors::context",
            "aws_smithy_http_client::client",
            "aws_sigv4::http_request::sign",
            "aws_runtime::env_config::normalize",
            "hyper::proto::h1::io",
            "hyper_util::client::legacy::pool",
            "h2::codec",
            "rustls::client::hs",
            "log",
            "rds_iam",
        ] {
            assert!(!is_own_target(t), "{t}");
        }
    }
}
