//! Command line: clap definitions, their conversion into the library's
//! configuration types, and the subcommands' entry points.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use rds_iam_common::process::{self, LogFormat};

use crate::audit_cmd::{self, AuditArgs};
use crate::certs_cmd::{self, CertsOptions};
use crate::config::{AgentConfig, AgentResources, ConfigError, SidecarMode, DEFAULT_AGENT_IMAGE};
use crate::inject_cmd;
use crate::limits::{self, Limits};
use crate::server::{self, ServeOptions};
use crate::tls;

#[derive(Debug, Parser)]
#[command(
    name = "rds-iam-webhook",
    version,
    about = "Injects the RDS IAM token agent into annotated pods"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the admission webhook over HTTPS.
    Serve(ServeArgs),
    /// Inject the agent into the pod templates of YAML manifests and print them.
    Inject(InjectArgs),
    /// Generate a CA, a serving certificate and a kustomization that installs them.
    Certs(CertsArgs),
    /// List pods that opted in but run without a working agent, with the cause and the fix
    /// (reads `kubectl get pods -A -o json`; exit 1 when any is found).
    Audit(AuditArgs),
}

/// Settings of the injected agent (shared by `serve` and `inject`).
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Image of the token agent.
    #[arg(long, env = "RDS_IAM_WEBHOOK_AGENT_IMAGE", default_value = DEFAULT_AGENT_IMAGE)]
    pub agent_image: String,
    /// Where the agent goes (a pod can override it with rds-iam/sidecar).
    #[arg(long, env = "RDS_IAM_WEBHOOK_SIDECAR_MODE", value_enum, default_value_t = SidecarMode::Native)]
    pub sidecar_mode: SidecarMode,
    /// Region used when neither the annotation, the host name nor the containers' env tell it.
    #[arg(long, env = "RDS_IAM_WEBHOOK_DEFAULT_REGION")]
    pub default_region: Option<String>,
    /// UID of the agent when no target container has a runAsUser (the pod gets a warning).
    #[arg(long, env = "RDS_IAM_WEBHOOK_DEFAULT_AGENT_UID", default_value_t = crate::config::DEFAULT_AGENT_UID)]
    pub default_agent_uid: i64,
    /// CPU request of the agent ("" to leave it out).
    #[arg(long, env = "RDS_IAM_WEBHOOK_AGENT_CPU_REQUEST", default_value = "10m")]
    pub agent_cpu_request: String,
    /// Memory request of the agent ("" to leave it out).
    #[arg(
        long,
        env = "RDS_IAM_WEBHOOK_AGENT_MEMORY_REQUEST",
        default_value = "16Mi"
    )]
    pub agent_memory_request: String,
    /// CPU limit of the agent ("" to leave it out).
    #[arg(long, env = "RDS_IAM_WEBHOOK_AGENT_CPU_LIMIT", default_value = "100m")]
    pub agent_cpu_limit: String,
    /// Memory limit of the agent ("" to leave it out).
    #[arg(
        long,
        env = "RDS_IAM_WEBHOOK_AGENT_MEMORY_LIMIT",
        default_value = "64Mi"
    )]
    pub agent_memory_limit: String,
}

impl AgentArgs {
    pub fn into_config(self) -> Result<AgentConfig, ConfigError> {
        let Self {
            agent_image,
            sidecar_mode,
            default_region,
            default_agent_uid,
            agent_cpu_request,
            agent_memory_request,
            agent_cpu_limit,
            agent_memory_limit,
        } = self;
        let opt = |s: String| {
            let s = s.trim().to_owned();
            (!s.is_empty()).then_some(s)
        };
        let config = AgentConfig {
            image: agent_image,
            sidecar_mode,
            default_region: default_region.and_then(opt),
            default_agent_uid,
            resources: AgentResources {
                cpu_request: opt(agent_cpu_request),
                memory_request: opt(agent_memory_request),
                cpu_limit: opt(agent_cpu_limit),
                memory_limit: opt(agent_memory_limit),
            },
        };
        config.validate()?;
        Ok(config)
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// HTTPS address for /mutate, /healthz and /readyz.
    #[arg(long, env = "RDS_IAM_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM certificate (chain). Its directory is watched; changes are reloaded.
    #[arg(
        long,
        env = "RDS_IAM_WEBHOOK_TLS_CERT",
        default_value = "/etc/rds-iam-webhook/tls/tls.crt"
    )]
    pub tls_cert: PathBuf,
    /// PEM private key matching --tls-cert.
    #[arg(
        long,
        env = "RDS_IAM_WEBHOOK_TLS_KEY",
        default_value = "/etc/rds-iam-webhook/tls/tls.key"
    )]
    pub tls_key: PathBuf,
    /// Plain-HTTP address for GET /metrics.
    #[arg(
        long,
        env = "RDS_IAM_WEBHOOK_METRICS_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub metrics_listen: SocketAddr,
    /// Log format on stdout.
    #[arg(long, env = "RDS_IAM_WEBHOOK_LOG_FORMAT", default_value = "json", value_parser = |s: &str| s.parse::<LogFormat>())]
    pub log_format: LogFormat,
    /// How long SIGTERM waits for in-flight reviews before closing connections.
    #[arg(long, env = "RDS_IAM_WEBHOOK_DRAIN_TIMEOUT", default_value = "20s", value_parser = humantime_duration)]
    pub drain_timeout: Duration,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// What one client may hold (both listeners).
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Time from a request's first byte (or the TLS handshake's) to its last header.
    #[arg(long, env = "RDS_IAM_WEBHOOK_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime_duration)]
    pub header_timeout: Duration,
    /// Time from a request's headers to the last byte of its body (408 after it).
    #[arg(long, env = "RDS_IAM_WEBHOOK_BODY_TIMEOUT", default_value = "30s", value_parser = humantime_duration)]
    pub body_timeout: Duration,
    /// How long a keep-alive connection may stay open with no request in progress.
    #[arg(long, env = "RDS_IAM_WEBHOOK_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime_duration)]
    pub idle_timeout: Duration,
    /// HTTPS connections served at once; more wait. Lowered to fit the open-file limit.
    #[arg(long, env = "RDS_IAM_WEBHOOK_MAX_CONNECTIONS", default_value_t = 1000)]
    pub max_connections: usize,
    /// Request body bytes held in memory across all connections (503 past it), e.g. 32Mi.
    #[arg(long, env = "RDS_IAM_WEBHOOK_MAX_BUFFERED_BYTES", default_value = "32Mi", value_parser = limits::parse_bytes)]
    pub max_buffered_bytes: usize,
    /// Streams one HTTP/2 connection may have open at once.
    #[arg(
        long,
        env = "RDS_IAM_WEBHOOK_H2_MAX_CONCURRENT_STREAMS",
        default_value_t = 16
    )]
    pub h2_max_concurrent_streams: u32,
}

impl LimitArgs {
    pub fn into_limits(self) -> Limits {
        let Self {
            header_timeout,
            body_timeout,
            idle_timeout,
            max_connections,
            max_buffered_bytes,
            h2_max_concurrent_streams,
        } = self;
        Limits {
            header_timeout,
            body_timeout,
            idle_timeout,
            max_connections,
            max_buffered_bytes,
            h2_max_concurrent_streams,
        }
    }
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    rds_iam_common::parse_duration(s).map_err(|e| e.to_string())
}

impl ServeArgs {
    /// Splits into the listen addresses, the log format and the server options.
    pub fn into_parts(
        self,
    ) -> Result<(SocketAddr, SocketAddr, LogFormat, ServeOptions), ConfigError> {
        let Self {
            listen,
            tls_cert,
            tls_key,
            metrics_listen,
            log_format,
            drain_timeout,
            limits,
            agent,
        } = self;
        let opts = ServeOptions {
            tls_cert,
            tls_key,
            agent: agent.into_config()?,
            drain_timeout,
            reload_debounce: tls::DEFAULT_DEBOUNCE,
            limits: limits.into_limits(),
        };
        Ok((listen, metrics_listen, log_format, opts))
    }
}

#[derive(Debug, Clone, Args)]
pub struct InjectArgs {
    /// YAML file to inject, or - for standard input.
    #[arg(short = 'f', long = "file", visible_alias = "filename")]
    pub file: String,
    #[command(flatten)]
    pub agent: AgentArgs,
}

#[derive(Debug, Clone, Args)]
pub struct CertsArgs {
    /// Directory to write into (created if missing).
    #[arg(long, default_value = "certs/out")]
    pub out: PathBuf,
    /// Name of the webhook's Service (sets the certificate's DNS names).
    #[arg(long, default_value = "rds-iam-webhook")]
    pub service: String,
    /// Namespace of the webhook's Service.
    #[arg(long, default_value = "rds-iam-system")]
    pub namespace: String,
    /// Validity in days; re-run before it ends to rotate.
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// The kustomize base to install with the Secret, relative to --out.
    #[arg(long, default_value = "../../manifests")]
    pub base: String,
}

impl CertsArgs {
    pub fn into_options(self) -> CertsOptions {
        let Self {
            out,
            service,
            namespace,
            days,
            base,
        } = self;
        CertsOptions {
            out,
            service,
            namespace,
            days,
            base,
        }
    }
}

/// Runs the parsed command line; the exit code says how it went.
pub fn main(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Inject(args) => inject(args),
        Command::Certs(args) => certs(args),
        Command::Audit(args) => audit_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rds-iam-webhook: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let (listen, metrics_listen, log_format, opts) = args.into_parts()?;
    opts.limits.validate()?;
    process::init_logging(log_format, process::Stream::Stdout);
    if let Err(e) = limits::raise_fd_limit() {
        tracing::info!(error = %e, "cannot raise the open-file limit to its hard limit");
    }
    let https =
        std::net::TcpListener::bind(listen).with_context(|| format!("--listen {listen}"))?;
    let metrics = std::net::TcpListener::bind(metrics_listen)
        .with_context(|| format!("--metrics-listen {metrics_listen}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = process::shutdown_signal().context("cannot listen for signals")?;
        server::run(https, metrics, opts, shutdown).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn inject(args: InjectArgs) -> anyhow::Result<ExitCode> {
    let InjectArgs { file, agent } = args;
    let config = agent.into_config()?;
    let input = if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read standard input")?;
        s
    } else {
        std::fs::read_to_string(&file).with_context(|| format!("-f {file}"))?
    };
    let report = inject_cmd::inject_yaml(&input, &config)?;
    for note in &report.notes {
        eprintln!("rds-iam-webhook inject: {note}");
    }
    if !report.denials.is_empty() {
        for d in &report.denials {
            eprintln!("rds-iam-webhook inject: denied: {d}");
        }
        eprintln!(
            "rds-iam-webhook inject: {} workload(s) denied; nothing printed",
            report.denials.len()
        );
        return Ok(ExitCode::from(1));
    }
    print!("{}", report.output);
    Ok(ExitCode::SUCCESS)
}

fn certs(args: CertsArgs) -> anyhow::Result<ExitCode> {
    let opts = args.into_options();
    let generated = certs_cmd::generate(&opts, time::OffsetDateTime::now_utc())?;
    for f in &generated.files {
        println!("wrote {}", f.display());
    }
    let end = generated.not_after;
    println!(
        "certificate for {} valid until {} {:02}:{:02} UTC; re-run this command before then to rotate",
        generated.dns_names.join(", "),
        end.date(),
        end.hour(),
        end.minute()
    );
    println!(
        "install or rotate with: kubectl apply -k {}",
        opts.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_serve_flag_has_an_env_twin() {
        let cmd = Cli::command();
        let serve = cmd.find_subcommand("serve").unwrap();
        for arg in serve.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            let want = format!("RDS_IAM_WEBHOOK_{}", id.to_uppercase());
            assert_eq!(env.as_deref(), Some(want.as_str()), "flag --{id}");
        }
    }

    #[test]
    fn empty_resource_flag_leaves_it_out() {
        let cli = Cli::try_parse_from([
            "rds-iam-webhook",
            "inject",
            "-f",
            "-",
            "--agent-cpu-limit",
            "",
            "--sidecar-mode",
            "classic",
        ])
        .unwrap();
        let Command::Inject(args) = cli.command else {
            panic!("not inject")
        };
        let cfg = args.agent.into_config().unwrap();
        assert_eq!(cfg.resources.cpu_limit, None);
        assert_eq!(cfg.resources.cpu_request.as_deref(), Some("10m"));
        assert_eq!(cfg.sidecar_mode, SidecarMode::Classic);
    }
}
