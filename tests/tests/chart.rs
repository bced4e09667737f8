//! The Helm chart, with the real helm: `testenv/validate-chart.sh` (lint, three renderings,
//! kubernetes-validate, parity with kustomize, schema, no CA rotation) passes, fails on a
//! broken chart, and the chart sets every `rds-iam-webhook serve` flag.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context, Result};
use clap::CommandFactory;
use rds_iam_e2e::agentproc::workspace_bin;
use rds_iam_e2e::helm::{chart_dir, find, helm_template, objects};
use rds_iam_e2e::pgrds::repo_root;

fn validate_chart(chart: Option<&Path>) -> Result<(Output, String)> {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("testenv/validate-chart.sh"))
        .env("RDS_IAM_WEBHOOK_BIN", workspace_bin("rds-iam-webhook")?)
        .current_dir(repo_root());
    if let Some(c) = chart {
        cmd.env("RDS_IAM_CHART", c);
    }
    let out = cmd.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok((out, stdout))
}

fn describe(out: &Output, stdout: &str) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn chart_passes_helm_lint_validation_parity_and_schema_checks() -> Result<()> {
    let (out, stdout) = validate_chart(None)?;
    assert!(out.status.success(), "{}", describe(&out, &stdout));
    let last = stdout.lines().last().unwrap_or_default();
    let passed: usize = last
        .split_once(" passed, 0 failed")
        .and_then(|(n, _)| n.parse().ok())
        .with_context(|| format!("last line {last:?}"))?;
    assert!(passed >= 60, "only {passed} checks ran:\n{stdout}");
    for must in [
        "ok   chart: helm lint --strict (default values)",
        "ok   parity MutatingWebhookConfiguration rds-iam-webhook: equal to kustomize's",
        "ok   parity Deployment rds-iam-system/rds-iam-webhook: equal to kustomize's",
        "ok   chart: schema: replicas as a string: rejected (/replicas)",
        "ok   chart: schema: misspelled key replicaCount: rejected (replicaCount)",
        "ok   chart: a second render (helm upgrade with the same values) is byte-identical",
    ] {
        assert!(stdout.contains(must), "missing {must:?} in:\n{stdout}");
    }
    for label in ["helm:default", "helm:certs-values", "helm:existing-secret"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("ok   {label} "))
                    && l.contains("Deployment")
                    && l.contains("kubernetes-validate --strict 1.30 1.33")),
            "{label}: no validated Deployment in:\n{stdout}"
        );
    }
    Ok(())
}

/// A chart whose Deployment drifts from the kustomize base (a writable root filesystem) and
/// whose schema stops checking a type must fail the script.
#[test]
fn broken_chart_fails_the_script() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let copy = tmp.path().join("rds-iam-injector");
    let status = Command::new("cp")
        .arg("-r")
        .arg(chart_dir())
        .arg(&copy)
        .status()?;
    assert!(status.success());
    let dep = copy.join("templates/deployment.yaml");
    let text = std::fs::read_to_string(&dep)?;
    let broken = text.replace(
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesystem: false",
    );
    assert_ne!(text, broken);
    std::fs::write(&dep, broken)?;
    let schema = copy.join("values.schema.json");
    let text = std::fs::read_to_string(&schema)?;
    let loose = text.replacen(
        "\"replicas\": {\n      \"type\": \"integer\",",
        "\"replicas\": {",
        1,
    );
    assert_ne!(text, loose, "schema layout changed; update this test");
    std::fs::write(&schema, loose)?;

    let (out, stdout) = validate_chart(Some(&copy))?;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out, &stdout));
    let fails: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        fails.iter().any(|l| l.contains("parity Deployment")
            && l.contains("readOnlyRootFilesystem: True != False")),
        "{fails:#?}"
    );
    assert!(
        fails.iter().any(|l| l.contains("helm:default")
            && l.contains("webhook: readOnlyRootFilesystem: must be true")),
        "{fails:#?}"
    );
    assert!(
        fails
            .iter()
            .any(|l| l.contains("schema: replicas as a string: helm template succeeded")),
        "{fails:#?}"
    );
    Ok(())
}

/// Every `serve` flag reaches the webhook through the chart: its env twin is in the rendered
/// Deployment. A flag added to the binary fails here until the chart has a value for it.
#[test]
fn the_chart_sets_every_serve_flag() -> Result<()> {
    let cli = rds_iam_webhook::cli::Cli::command();
    let serve = cli.find_subcommand("serve").context("serve")?;
    let wanted: BTreeSet<(String, String)> = serve
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_string_lossy().into_owned();
            Some((a.get_long()?.to_owned(), env))
        })
        .collect();
    assert!(wanted.len() >= 14, "serve has {} flags?", wanted.len());
    for (ns, args) in [
        ("rds-iam-system", vec![]),
        ("platform-webhooks", vec!["-f", "ci/certs-values.yaml"]),
    ] {
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                if a.ends_with(".yaml") {
                    chart_dir().join(a).display().to_string()
                } else {
                    a.to_string()
                }
            })
            .collect();
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        let certs = tempfile::tempdir()?;
        if ns != "rds-iam-system" {
            let ok = Command::new(workspace_bin("rds-iam-webhook")?)
                .args(["certs", "--namespace", ns, "--out"])
                .arg(certs.path())
                .output()?;
            assert!(ok.status.success());
        }
        let files: Vec<String> = [
            ("tls.crt", "tls.crt"),
            ("tls.key", "tls.key"),
            ("tls.caBundle", "ca.crt"),
        ]
        .iter()
        .map(|(k, f)| format!("{k}={}", certs.path().join(f).display()))
        .collect();
        if ns != "rds-iam-system" {
            for f in &files {
                all.extend(["--set-file", f.as_str()]);
            }
        }
        let rendered = objects(&helm_template(ns, &all)?)?;
        let dep = find(&rendered, "Deployment")?;
        let container = &dep["spec"]["template"]["spec"]["containers"][0];
        let env: BTreeSet<&str> = container["env"]
            .as_array()
            .context("env")?
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        for (flag, var) in &wanted {
            assert!(
                env.contains(var.as_str()),
                "--{flag}: the chart does not set {var} ({ns} rendering); add a value for it to \
                 charts/rds-iam-injector (values.yaml, values.schema.json, templates/deployment.yaml)"
            );
        }
        assert_eq!(container["args"], serde_json::json!(["serve"]));
    }
    Ok(())
}
