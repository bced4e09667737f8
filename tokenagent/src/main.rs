//! `rds-iam-tokenagent`: wiring only; see the library for the parts.

use std::process::ExitCode;

use clap::Parser;
use rds_iam_common::process;
use rds_iam_tokenagent::cli::{Cli, Command};
use rds_iam_tokenagent::{app, doctor, probe};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Probe(args)) => {
            let min_life = match args.min_life() {
                Ok(m) => m,
                Err(e) => return fail(2, e),
            };
            let dbs = if args.dbs.is_empty() {
                Vec::new()
            } else {
                match args.dbs.endpoints(|k| std::env::var(k).ok()) {
                    Ok(d) => d.into_iter().map(|(e, _)| e).collect(),
                    Err(e) => return fail(2, e),
                }
            };
            match probe::probe(&args.dir, &dbs, min_life, std::time::SystemTime::now()) {
                Ok(left) => {
                    println!("ok: token valid for {}s", left.as_secs());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(1, e),
            }
        }
        Some(Command::Doctor(args)) => {
            let lines = match runtime() {
                Ok(rt) => rt.block_on(doctor::run(args, |k| std::env::var(k).ok())),
                Err(e) => return fail(1, e),
            };
            print!("{}", doctor::render(&lines));
            if lines.iter().all(|l| l.ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        None => {
            let cfg = match cli.run.into_config(|k| std::env::var(k).ok()) {
                Ok(c) => c,
                Err(e) => return fail(2, e),
            };
            process::init_logging(cfg.log_format, process::Stream::Stderr);
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => return fail(1, e),
            };
            rt.block_on(async {
                // From here on no signal kills the process mid-write.
                let shutdown = match process::shutdown_signal() {
                    Ok(s) => s,
                    Err(e) => return fail(1, format!("cannot listen for signals: {e}")),
                };
                let built = match app::build(&cfg).await {
                    Ok(b) => b,
                    Err(e) => return fail(1, e),
                };
                if cfg.once {
                    return match app::once(&built.agent, shutdown).await {
                        Ok(r) if r.failures().is_empty() => {
                            tracing::info!(
                                dir = %cfg.dir.display(),
                                databases = r.dbs.len(),
                                expires = r.earliest_expiry().map(|e| tracing::field::display(humantime::format_rfc3339_seconds(e))),
                                "token written"
                            );
                            ExitCode::SUCCESS
                        }
                        Ok(r) => {
                            let failures = r.failures();
                            for f in &failures {
                                tracing::error!(error = %f, "token refresh failed");
                            }
                            fail(1, failures.join("; "))
                        }
                        Err(e) => fail(1, e),
                    };
                }
                match app::run(&cfg, built, shutdown).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(1, format!("--health-addr: {e}")),
                }
            })
        }
    }
}

/// One thread. It is plenty for refreshing files, and a proxy spends less
/// CPU per transaction on one thread than on several: with pgbench
/// select-only through the socket, 23 µs of agent CPU per transaction against
/// 32 µs on a two-worker runtime, whose workers park and wake between
/// messages (BENCHMARKS.md, "Proxy mode (PostgreSQL)"). A pod's agent
/// usually has well under one core anyway.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn fail(code: u8, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("rds-iam-tokenagent: {e}");
    ExitCode::from(code)
}
