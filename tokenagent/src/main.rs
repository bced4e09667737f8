//! `rds-iam-tokenagent`: wiring only; see the library for the parts.

use std::process::ExitCode;

use clap::Parser;
use rds_iam_tokenagent::cli::{Cli, Command};
use rds_iam_tokenagent::{app, doctor, logging, probe};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Probe(args)) => {
            let min_life = match args.min_life() {
                Ok(m) => m,
                Err(e) => return fail(2, e),
            };
            match probe::probe(&args.dir, min_life, std::time::SystemTime::now()) {
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
            logging::init(cfg.log_format);
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => return fail(1, e),
            };
            rt.block_on(async {
                // From here on no signal kills the process mid-write.
                let shutdown = app::shutdown_signal();
                let agent = match app::build_agent(&cfg).await {
                    Ok(a) => a,
                    Err(e) => return fail(1, format!("--dir {}: {e}", cfg.dir.display())),
                };
                if cfg.once {
                    return match app::once(&agent, shutdown).await {
                        Ok(exp) => {
                            tracing::info!(
                                dir = %cfg.dir.display(),
                                expires = %humantime::format_rfc3339_seconds(exp),
                                "token written"
                            );
                            ExitCode::SUCCESS
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "token refresh failed");
                            fail(1, e)
                        }
                    };
                }
                match app::run(&cfg, agent, shutdown).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(1, format!("--health-addr: {e}")),
                }
            })
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn fail(code: u8, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("rds-iam-tokenagent: {e}");
    ExitCode::from(code)
}
