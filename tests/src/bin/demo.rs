//! `make demo`: the whole chain on one machine, narrated step by step.
//! Exits non-zero if any step fails; everything it starts is stopped.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use rds_iam_e2e::flow::{
    admission_review, apply_response, example_pod, point_at_lab, Chain, DATABASE, REPORTS,
    REPORTS_HOST, USER,
};
use rds_iam_e2e::pgrds::Client;

fn say(s: &str) {
    println!("{s}");
}

fn main() -> ExitCode {
    match demo() {
        Ok(()) => {
            say("\ndemo: OK. Every process it started has been stopped.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\ndemo: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo() -> Result<()> {
    say("== 1. binaries: built by scripts/demo.sh (cargo build --workspace --bins)");
    say("== 2-4. starting the local stand-ins and the webhook");
    let chain = Chain::start(&say)?;
    say("== 5. the AdmissionReview of manifests/examples' Deployment pod");
    let port = chain.pg.port();
    // The example points at real RDS hosts; here both databases are local.
    let pod = example_pod(|p| point_at_lab(p, port))?;
    say(&format!(
        "  pod {}* in namespace {}, annotations rds-iam/host=localhost, rds-iam/port={port}, rds-iam/user={USER}, rds-iam/database={DATABASE}, and a second database rds-iam/{REPORTS}.host={REPORTS_HOST}; IRSA env added as the EKS pod identity webhook would",
        pod["metadata"]["generateName"].as_str().unwrap_or(""),
        pod["metadata"]["namespace"].as_str().unwrap_or("")
    ));
    let response = chain.review(&admission_review(&pod))?;
    anyhow::ensure!(
        response["response"]["patch"].is_string(),
        "the webhook returned no patch: {response}"
    );
    let (_, typed) = apply_response(&pod, &response)?;
    let spec = typed.spec.as_ref().context("spec")?;
    let inits: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    say(&format!(
        "  the webhook patched the pod: init containers {inits:?}, volumes {:?}",
        spec.volumes
            .iter()
            .flatten()
            .map(|v| v.name.clone())
            .collect::<Vec<_>>()
    ));
    for w in response["response"]["warnings"]
        .as_array()
        .into_iter()
        .flatten()
    {
        say(&format!("  admission warning: {w}"));
    }
    say("== 6. running the patched pod with the test kubelet");
    let kubelet = chain.kubelet()?;
    let run = kubelet.run_pod(&typed, &|s| say(&format!("  kubelet: {s}")))?;
    say("== 7. the app container runs stock psql with no password anywhere");
    let log = run.wait_log("app", Duration::from_secs(60), |l| {
        l.lines().any(|x| x.trim() == USER) && l.lines().any(|x| x.trim() == REPORTS)
    })?;
    for line in log.lines() {
        say(&format!("  app | {line}"));
    }
    say(&format!(
        "  psql logged in as {USER} to {DATABASE} (from PGHOST and the pgpass), and to {REPORTS} (psql service={REPORTS}: pg_service.conf and its own pgpass line, a token signed for {REPORTS_HOST}), with IAM tokens only"
    ));
    let statuses = run.stop()?;
    for (name, st) in statuses {
        say(&format!("  stopped {name}: {st}"));
    }

    say("== 8. proxy mode: the same pod with rds-iam/mode: proxy, and asyncpg as the client");
    say("  asyncpg reads a pgpass its own way and keeps the backslash escapes (asyncpg#1249),");
    say("  so with the files alone it cannot log in; through the agent's socket it needs no password");
    let mut proxy_pod = example_pod(|p| point_at_lab(p, port))?;
    proxy_pod["metadata"]["annotations"]["rds-iam/mode"] = serde_json::json!("proxy");
    let response = chain.review(&admission_review(&proxy_pod))?;
    let (_, typed) = apply_response(&proxy_pod, &response)?;
    let run = kubelet.run_pod(&typed, &|s| say(&format!("  kubelet: {s}")))?;
    let asyncpg = Client::Asyncpg.argv()?;
    let asyncpg: Vec<&str> = asyncpg.iter().map(String::as_str).collect();
    let out = run.exec_as_root("app", &asyncpg, &[])?;
    anyhow::ensure!(
        out.status.success(),
        "asyncpg through the proxy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    say(&format!(
        "  asyncpg (PGHOST=/var/run/rds-iam, PGSSLMODE=disable, no password) logged in as {}",
        String::from_utf8_lossy(&out.stdout).trim()
    ));
    say("  the agent answered the database's password request with the token, over TLS");
    for (name, st) in run.stop()? {
        say(&format!("  stopped {name}: {st}"));
    }
    drop(chain);
    Ok(())
}
