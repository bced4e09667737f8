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

/// Caps the SDK's signing traces below the level that would print secrets.
pub const NO_SECRET_TRACES: &str = "aws_sigv4=info";

/// Installs the global subscriber, writing to stderr. `RUST_LOG` overrides
/// the default level (`info`).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // aws-sigv4 traces canonical requests, which hold the session token:
        // never let RUST_LOG=trace put it in the logs.
        .add_directive(NO_SECRET_TRACES.parse().expect("static directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    // A second init (tests) is harmless.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
