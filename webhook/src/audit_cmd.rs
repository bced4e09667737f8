//! The `audit` subcommand's flags and entry point: read the input, run
//! [`crate::audit::audit`], print, and say through the exit code whether
//! anything was found.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::audit::{self, AuditOptions, DEFAULT_EXCLUDED};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// `kubectl get pods -A -o json` output (a PodList, or a List that may also hold
    /// ReplicaSets, Deployments and Namespaces), JSON or YAML; - for standard input.
    #[arg(
        short = 'f',
        long = "file",
        visible_alias = "filename",
        default_value = "-"
    )]
    pub file: String,
    /// table (default) or json.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = AuditFormat::Table)]
    pub output: AuditFormat,
    /// A namespace the webhook's namespaceSelector excludes; repeat for each. Default:
    /// kube-system, kube-node-lease, rds-iam-system.
    #[arg(long = "exclude-namespace", value_name = "NAMESPACE")]
    pub exclude_namespace: Vec<String>,
}

/// Exit 0: nothing found; 1: findings printed; errors (exit 2) go to the caller.
pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let AuditArgs {
        file,
        output,
        exclude_namespace,
    } = args;
    let input = if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read standard input")?;
        s
    } else {
        std::fs::read_to_string(&file).with_context(|| format!("-f {file}"))?
    };
    let inventory = audit::parse(&input)?;
    let opts = AuditOptions {
        excluded_namespaces: if exclude_namespace.is_empty() {
            DEFAULT_EXCLUDED.iter().map(|s| s.to_string()).collect()
        } else {
            exclude_namespace
        },
    };
    let findings = audit::audit(&inventory, &opts);
    let checked = inventory.pods.len();
    match output {
        AuditFormat::Json => print!("{}", audit::render_json(checked, &findings)),
        AuditFormat::Table if findings.is_empty() => {}
        AuditFormat::Table => print!("{}", audit::render_table(&findings)),
    }
    eprintln!(
        "rds-iam-webhook audit: {checked} pod(s) checked, {} without a working agent",
        findings.len()
    );
    Ok(if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
