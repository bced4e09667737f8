//! What both binaries do the same way as processes: log lines (JSON or
//! text), signals (the first stops, a second aborts) and the open-file
//! limit.

use std::future::Future;
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

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// The only targets whose events are logged: the project's own crates.
///
/// Dependencies' events can hold secrets at every level: aws-config's WARN
/// lines about failed credential providers end with the `Debug` form of the
/// SDK error, which carries the raw HTTP answer (secret key and session
/// token included); aws-smithy-runtime traces whole requests and answers
/// (the IRSA web identity token, the credentials); aws-sigv4 traces
/// canonical requests (the session token); aws-smithy-runtime-api logs the
/// `Debug` form of errors at ERROR. So no event of a dependency is logged,
/// whatever `RUST_LOG` says: the binaries report every failure themselves,
/// with the error's `Display` chain.
pub const OWN_TARGET_PREFIX: &str = "rds_iam_";

/// Whether events of `target` may be logged.
pub fn is_own_target(target: &str) -> bool {
    target.starts_with(OWN_TARGET_PREFIX)
}

/// Installs the global subscriber. `RUST_LOG` sets the levels (default
/// `info`) of the project's own targets; see [`OWN_TARGET_PREFIX`] for why
/// every other target is off. Colours only on a terminal.
pub fn init_logging(format: LogFormat, stream: Stream) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let own = tracing_subscriber::filter::filter_fn(|meta| is_own_target(meta.target()));
    let ansi = match stream {
        Stream::Stdout => std::io::stdout().is_terminal(),
        Stream::Stderr => std::io::stderr().is_terminal(),
    };
    let writer = move || -> Box<dyn std::io::Write> {
        match stream {
            Stream::Stdout => Box::new(std::io::stdout()),
            Stream::Stderr => Box::new(std::io::stderr()),
        }
    };
    let base = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer);
    let layer = match format {
        LogFormat::Json => base.json().flatten_event(true).boxed(),
        LogFormat::Text => base.boxed(),
    };
    // A second init (tests) is harmless.
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(own).with_filter(env))
        .try_init();
}

/// The exit status after a second signal: 128 + its number, as a shell
/// reports a process killed by it.
pub fn aborted_status(signal: &str) -> i32 {
    match signal {
        "SIGHUP" => 129,
        "SIGINT" => 130,
        _ => 143,
    }
}

/// Listens for SIGTERM, SIGINT and SIGHUP from now on (so none of them
/// kills the process in the middle of something any more) and completes on
/// the first, with a log line. A second one during the shutdown exits at
/// once with [`aborted_status`]. SIGHUP stops like SIGTERM, as its default
/// action would, but cleanly: there is nothing to reload. Must be called
/// inside a tokio runtime.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, Signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    async fn next(term: &mut Signal, int: &mut Signal, hup: &mut Signal) -> &'static str {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => "SIGHUP",
        }
    }
    Ok(async move {
        let first = next(&mut term, &mut int, &mut hup).await;
        tracing::info!(
            signal = first,
            "{first} received: shutting down (a second signal aborts)"
        );
        tokio::spawn(async move {
            let second = next(&mut term, &mut int, &mut hup).await;
            tracing::warn!(signal = second, "second signal received: exiting now");
            std::process::exit(aborted_status(second));
        });
    })
}

/// Raises the soft open-file limit to the hard one, as the Go runtime does
/// for every program. Returns the error if the kernel refused.
pub fn raise_fd_limit() -> std::io::Result<()> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    // `None` means unlimited.
    let below = match (lim.current, lim.maximum) {
        (Some(cur), Some(max)) => cur < max,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if below {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: lim.maximum,
                maximum: lim.maximum,
            },
        )?;
    }
    Ok(())
}

/// The open-file limit in force (`u64::MAX` when unlimited).
pub fn fd_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_projects_own_targets_pass() {
        for t in [
            "rds_iam_tokenagent",
            "rds_iam_tokenagent::creds",
            "rds_iam_webhook::server",
        ] {
            assert!(is_own_target(t), "{t}");
        }
        for t in [
            "aws_config",
            "aws_smithy_runtime",
            "aws_sigv4",
            "hyper",
            "rustls",
        ] {
            assert!(!is_own_target(t), "{t}");
        }
    }

    #[test]
    fn formats_and_statuses() {
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!(" text ".parse(), Ok(LogFormat::Text));
        assert_eq!(
            "xml".parse::<LogFormat>(),
            Err("\"xml\" is not a log format; write json or text".to_owned())
        );
        assert_eq!(aborted_status("SIGTERM"), 143);
        assert_eq!(aborted_status("SIGINT"), 130);
        assert_eq!(aborted_status("SIGHUP"), 129);
    }
}
