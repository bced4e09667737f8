//! The `matchConditions` of the MutatingWebhookConfiguration, as both the kustomize install
//! (`kubectl kustomize manifests`) and the Helm chart (`helm template`, default values) render
//! them, evaluated with a CEL implementation (the `cel` crate) over every AdmissionReview
//! fixture, the way the API server does before it calls the webhook: `object` is the pod.
//!
//! Only opted-in pods may match, and no fixture may make an expression fail: an error makes the
//! API server apply `failurePolicy` (with `Fail`, the pod is rejected) to every such pod.
//!
//! Fixtures: webhook/tests/fixtures/*.json (the webhook's own) and tests/fixtures/admission/*.json
//! (copies of the shared fixtures and variants of deployment-pod.json, one opt-in mistake each).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use cel::{Context as CelContext, Program, Value as CelValue};
use rds_iam_e2e::helm::{find, helm_template, kustomize, objects};
use rds_iam_e2e::pgrds::repo_root;
use serde_json::Value;

/// Every fixture and whether the webhook must be called for it (the annotation contract:
/// only `rds-iam/enabled: "true"`, as an annotation, opts in).
const EXPECTED: &[(&str, bool)] = &[
    ("webhook/tests/fixtures/deployment-pod.json", true),
    ("webhook/tests/fixtures/irsa-pod.json", true),
    ("webhook/tests/fixtures/plain-pod.json", false),
    ("webhook/tests/fixtures/multi-db-pod.json", true),
    ("webhook/tests/fixtures/two-db-pod.json", true),
    ("webhook/tests/fixtures/named-only-pod.json", true),
    ("webhook/tests/fixtures/shared-line-pod.json", true),
    ("webhook/tests/fixtures/region-conflict-pod.json", true),
    ("webhook/tests/fixtures/dollar-pod.json", true),
    ("webhook/tests/fixtures/proxy-pod.json", true),
    ("webhook/tests/fixtures/pg-mysql-pod.json", true),
    ("webhook/tests/fixtures/mysql-pod.json", true),
    ("tests/fixtures/admission/no-annotations-pod.json", false),
    ("tests/fixtures/admission/empty-annotations-pod.json", false),
    ("tests/fixtures/admission/enabled-false-pod.json", false),
    (
        "tests/fixtures/admission/enabled-capital-true-pod.json",
        false,
    ),
    ("tests/fixtures/admission/label-opt-in-pod.json", false),
];

const FIXTURE_DIRS: [&str; 2] = ["webhook/tests/fixtures", "tests/fixtures/admission"];

/// (rendering, condition name, expression) for every matchCondition of the webhook.
fn conditions() -> Result<Vec<(String, String, String)>> {
    let renderings = [
        ("kubectl kustomize manifests", kustomize("manifests")?),
        (
            "helm template (default values)",
            helm_template("rds-iam-system", &[])?,
        ),
    ];
    let mut out = Vec::new();
    for (label, yaml) in renderings {
        let objs = objects(&yaml)?;
        let mwc = find(&objs, "MutatingWebhookConfiguration")?;
        let conds = mwc["webhooks"][0]["matchConditions"]
            .as_array()
            .with_context(|| format!("{label}: no matchConditions"))?;
        if conds.is_empty() {
            bail!("{label}: matchConditions is empty: every pod would reach the webhook");
        }
        for c in conds {
            out.push((
                label.to_owned(),
                c["name"].as_str().context("name")?.to_owned(),
                c["expression"].as_str().context("expression")?.to_owned(),
            ));
        }
    }
    Ok(out)
}

fn fixtures() -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for dir in FIXTURE_DIRS {
        for entry in std::fs::read_dir(repo_root().join(dir))? {
            let path: PathBuf = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let rel = format!(
                    "{dir}/{}",
                    path.file_name().context("name")?.to_string_lossy()
                );
                let review: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
                    .with_context(|| rel.clone())?;
                if review["kind"] != "AdmissionReview" {
                    bail!("{rel} is not an AdmissionReview");
                }
                out.insert(rel, review);
            }
        }
    }
    Ok(out)
}

/// Evaluates one expression as the API server does: variables `object`, `oldObject`, `request`.
fn eval(expr: &str, review: &Value) -> Result<bool, String> {
    let program = Program::compile(expr).map_err(|e| format!("does not compile: {e}"))?;
    let mut ctx = CelContext::default();
    let req = &review["request"];
    for (name, v) in [
        ("object", &req["object"]),
        ("oldObject", &req["oldObject"]),
        ("request", req),
    ] {
        ctx.add_variable(name, v.clone())
            .map_err(|e| format!("variable {name}: {e}"))?;
    }
    match program.execute(&ctx) {
        Ok(CelValue::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("returned {other:?}, not a bool")),
        Err(e) => Err(format!("evaluation error: {e}")),
    }
}

#[test]
fn every_fixture_has_an_expectation() -> Result<()> {
    let found = fixtures()?;
    let listed: Vec<&str> = EXPECTED.iter().map(|(f, _)| *f).collect();
    for f in found.keys() {
        assert!(
            listed.contains(&f.as_str()),
            "{f}: add it to EXPECTED with whether it opts in"
        );
    }
    for f in &listed {
        assert!(found.contains_key(*f), "{f} is listed but missing");
    }
    Ok(())
}

#[test]
fn match_conditions_send_exactly_the_opted_in_pods() -> Result<()> {
    let conds = conditions()?;
    let fixtures = fixtures()?;
    assert!(conds.len() >= 2, "one condition per rendering at least");
    let mut failures = Vec::new();
    for (file, want) in EXPECTED {
        let review = fixtures.get(*file).with_context(|| file.to_string())?;
        for label in [
            "kubectl kustomize manifests",
            "helm template (default values)",
        ] {
            // The webhook is called only if every condition of its rendering is true.
            let mut all = true;
            for (_, name, expr) in conds.iter().filter(|(l, _, _)| l == label) {
                match eval(expr, review) {
                    Ok(b) => all &= b,
                    Err(e) => failures.push(format!(
                        "{label}: condition {name} on {file}: {e} (the API server would apply failurePolicy)"
                    )),
                }
            }
            if all != *want {
                failures.push(format!(
                    "{label}: {file}: webhook called = {all}, want {want}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// The evaluator is strict enough to catch a condition that breaks on some pods.
#[test]
fn an_unguarded_expression_errors_on_a_pod_without_annotations() -> Result<()> {
    let fixtures = fixtures()?;
    let bare = &fixtures["tests/fixtures/admission/no-annotations-pod.json"];
    let unguarded = "object.metadata.annotations['rds-iam/enabled'] == 'true'";
    assert!(eval(unguarded, bare).is_err(), "no error on a missing map");
    let opted = &fixtures["webhook/tests/fixtures/deployment-pod.json"];
    assert_eq!(eval(unguarded, opted), Ok(true));
    Ok(())
}
