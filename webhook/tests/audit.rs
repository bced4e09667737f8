//! `rds-iam-webhook audit` over PodList / List fixtures with one pod per case
//! (tests/fixtures/audit/; each pod says in its name what it stands for).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rds_iam_webhook::audit::{self, AuditOptions, Finding, Problem};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/audit")
        .join(name)
}

fn findings(name: &str) -> Vec<Finding> {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture");
    let inv = audit::parse(&text).expect("a valid list");
    audit::audit(&inv, &AuditOptions::default())
}

fn run(args: &[&str], stdin: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rds-iam-webhook"));
    cmd.arg("audit").args(args);
    match stdin {
        Some(p) => cmd.stdin(std::fs::File::open(p).expect("fixture")),
        None => cmd.stdin(Stdio::null()),
    };
    cmd.output().expect("run rds-iam-webhook audit")
}

/// (namespace, pod, problem, text in the cause, text in the fix)
type Want = (
    &'static str,
    &'static str,
    Problem,
    &'static str,
    &'static str,
);

fn check(got: &[Finding], want: &[Want]) {
    let listing = got
        .iter()
        .map(|f| format!("  {f}"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(got.len(), want.len(), "findings:\n{listing}");
    for (ns, pod, problem, cause, fix) in want {
        let f = got
            .iter()
            .find(|f| f.namespace == *ns && f.pod == *pod)
            .unwrap_or_else(|| panic!("no finding for {ns}/{pod} in:\n{listing}"));
        assert_eq!(f.problem, *problem, "{f}");
        assert!(f.cause.contains(cause), "{ns}/{pod} cause: {}", f.cause);
        assert!(f.fix.contains(fix), "{ns}/{pod} fix: {}", f.fix);
    }
}

const OUTAGE: &str = "created while the webhook was down or before it was installed";

#[test]
fn list_with_owners_and_namespaces_names_each_cause() {
    check(
        &findings("list.json"),
        &[
            ("shop", "api-7d4b9c8f6d-q8w2n", Problem::NoAgent, OUTAGE, "kubectl -n shop rollout restart deployment/api"),
            ("kube-system", "metrics-db-reader-0", Problem::NoAgent, "namespace kube-system is excluded by the webhook's namespaceSelector", "rollout restart statefulset/metrics-db-reader"),
            ("legacy", "reports-5b7c9d6f4-m3n7v", Problem::NoAgent, "namespace legacy is labelled rds-iam-injector.io/injection=disabled", "kubectl label namespace legacy rds-iam-injector.io/injection-"),
            ("shop", "copied", Problem::NoAgent, "rds-iam/status: injected without an agent", "remove the rds-iam/status annotation from the pod template, then kubectl -n shop delete pod copied and create it again"),
            ("shop", "cart-84d5f6c7b9-t6y1u", Problem::AgentNotReady, "rds-iam-tokenagent CrashLoopBackOff, last exit code 1, 4 restarts", "kubectl -n shop logs cart-84d5f6c7b9-t6y1u -c rds-iam-tokenagent"),
            ("shop", "ledger-9d8c7b6a5-k7j6h", Problem::AgentNotReady, "rds-iam-tokenagent-init Error (exit code 1), 2 restarts", "rds-iam-tokenagent doctor"),
            ("shop", "search-6f8d9c7b5-r4t5y", Problem::OptInNotSeen, "rds-iam/enabled is \"True\"; only the exact string \"true\" opts in", "write rds-iam/enabled: \"true\" on the pod template"),
            ("shop", "inventory-5c6d7e8f9-a1s2d", Problem::OptInNotSeen, "rds-iam/enabled is a label; the webhook reads annotations", "from labels to annotations"),
            ("shop", "billing-5f6c7d8e9f-z9x8c", Problem::OptInNotSeen, "on Deployment billing itself, not on its pod template", "spec.template.metadata.annotations of Deployment billing"),
            ("shop", "migrate-7x2kq", Problem::NoAgent, OUTAGE, "delete Job migrate and create it again"),
        ],
    );
}

/// What `kubectl get pods -A -o json` alone tells: no owners or namespaces, so
/// the Deployment's annotations and the namespace label are not seen; the
/// Deployment is still found from the ReplicaSet's name.
#[test]
fn plain_podlist_falls_back_to_what_the_pods_tell() {
    check(
        &findings("podlist.json"),
        &[
            (
                "shop",
                "api-7d4b9c8f6d-q8w2n",
                Problem::NoAgent,
                OUTAGE,
                "rollout restart deployment/api",
            ),
            (
                "kube-system",
                "metrics-db-reader-0",
                Problem::NoAgent,
                "namespace kube-system is excluded",
                "statefulset/metrics-db-reader",
            ),
            (
                "legacy",
                "reports-5b7c9d6f4-m3n7v",
                Problem::NoAgent,
                OUTAGE,
                "rollout restart deployment/reports",
            ),
            (
                "shop",
                "copied",
                Problem::NoAgent,
                "rds-iam/status",
                "remove the rds-iam/status annotation",
            ),
            (
                "shop",
                "cart-84d5f6c7b9-t6y1u",
                Problem::AgentNotReady,
                "CrashLoopBackOff",
                "logs",
            ),
            (
                "shop",
                "ledger-9d8c7b6a5-k7j6h",
                Problem::AgentNotReady,
                "rds-iam-tokenagent-init",
                "doctor",
            ),
            (
                "shop",
                "search-6f8d9c7b5-r4t5y",
                Problem::OptInNotSeen,
                "\"True\"",
                "rds-iam/enabled: \"true\"",
            ),
            (
                "shop",
                "inventory-5c6d7e8f9-a1s2d",
                Problem::OptInNotSeen,
                "a label",
                "annotations",
            ),
            (
                "shop",
                "migrate-7x2kq",
                Problem::NoAgent,
                OUTAGE,
                "delete Job migrate",
            ),
        ],
    );
}

#[test]
fn exclusions_follow_the_flag() {
    let text = std::fs::read_to_string(fixture("podlist.json")).expect("fixture");
    let inv = audit::parse(&text).expect("valid");
    let opts = AuditOptions {
        excluded_namespaces: vec!["legacy".into()],
    };
    let got = audit::audit(&inv, &opts);
    let kube_system = got
        .iter()
        .find(|f| f.namespace == "kube-system")
        .expect("kube-system pod");
    assert!(kube_system.cause.contains(OUTAGE), "{kube_system}");
    let legacy = got
        .iter()
        .find(|f| f.namespace == "legacy")
        .expect("legacy pod");
    assert!(
        legacy.cause.contains("namespace legacy is excluded"),
        "{legacy}"
    );
}

#[test]
fn cli_table_and_exit_status_1_when_something_is_found() {
    let out = run(&["-f", fixture("list.json").to_str().expect("utf-8")], None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let table = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAMESPACE") && lines[0].contains("POD") && lines[0].ends_with("FIX"),
        "{table}"
    );
    assert_eq!(lines.len(), 11, "header + 10 rows:\n{table}");
    let api = lines
        .iter()
        .find(|l| l.contains("api-7d4b9c8f6d-q8w2n"))
        .expect("api row");
    assert!(api.starts_with("shop "), "{api}");
    assert!(api.contains("no agent"), "{api}");
    assert!(
        api.ends_with("kubectl -n shop rollout restart deployment/api"),
        "{api}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("15 pod(s) checked, 10 without a working agent"),
        "{err}"
    );
}

#[test]
fn cli_json_from_stdin() {
    let out = run(&["-o", "json"], Some(&fixture("podlist.json")));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["checkedPods"], 15);
    let findings = v["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 9);
    let cart = findings
        .iter()
        .find(|f| f["pod"] == "cart-84d5f6c7b9-t6y1u")
        .expect("cart");
    assert_eq!(cart["namespace"], "shop");
    assert_eq!(cart["problem"], "agent-not-ready");
    assert!(cart["fix"].as_str().expect("fix").contains("doctor"));
    let search = findings
        .iter()
        .find(|f| f["pod"] == "search-6f8d9c7b5-r4t5y")
        .expect("search");
    assert_eq!(search["problem"], "opt-in-not-seen");
    let api = findings
        .iter()
        .find(|f| f["pod"] == "api-7d4b9c8f6d-q8w2n")
        .expect("api");
    assert_eq!(api["problem"], "no-agent");
}

#[test]
fn cli_exit_0_and_no_rows_when_every_pod_is_fine() {
    let out = run(
        &["-f", fixture("healthy.json").to_str().expect("utf-8")],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let json = run(
        &[
            "-o",
            "json",
            "-f",
            fixture("healthy.json").to_str().expect("utf-8"),
        ],
        None,
    );
    assert_eq!(json.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(v["checkedPods"], 5);
    assert_eq!(v["findings"], serde_json::json!([]));
}

#[test]
fn cli_exit_2_with_a_clear_message_on_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("deploy.json");
    std::fs::write(
        &p,
        r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"}}"#,
    )
    .expect("write");
    let out = run(&["-f", p.to_str().expect("utf-8")], None);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is a Deployment, not a PodList, List or Pod; pipe `kubectl get pods -A -o json` into it"),
        "{err}"
    );
    let missing = run(&["-f", "/nonexistent/pods.json"], None);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("-f /nonexistent/pods.json"));
}
