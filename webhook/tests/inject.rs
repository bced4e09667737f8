//! `rds-iam-webhook inject` on Deployment, Job and CronJob YAML, compared
//! with snapshots that were reviewed by hand (tests/inject/*.expected.yaml).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;

fn inject_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inject")
}

/// Runs the binary with a clean environment (no RDS_IAM_WEBHOOK_* leaking in).
fn webhook(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rds-iam-webhook"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("RDS_IAM_WEBHOOK_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn docs(yaml: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// The pod template of a workload, as a Pod.
fn template_pod(doc: &serde_json::Value) -> Pod {
    let t = match doc["kind"].as_str().unwrap() {
        "CronJob" => &doc["spec"]["jobTemplate"]["spec"]["template"],
        "Pod" => doc,
        _ => &doc["spec"]["template"],
    };
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": t["metadata"], "spec": t["spec"]
    }))
    .unwrap()
}

#[test]
fn snapshots() {
    for name in ["deployment", "job", "cronjob"] {
        let input = inject_dir().join(format!("{name}.yaml"));
        let out = webhook(&["inject", "-f", input.to_str().unwrap()], None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        assert_eq!(stderr, "", "{name}: no notes expected");
        let got = String::from_utf8(out.stdout).unwrap();
        let want =
            std::fs::read_to_string(inject_dir().join(format!("{name}.expected.yaml"))).unwrap();
        if got != want {
            let actual = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.actual.yaml"));
            std::fs::write(&actual, &got).unwrap();
            panic!(
                "{name}: output differs from tests/inject/{name}.expected.yaml; review `diff {} {}` and update the snapshot by hand",
                inject_dir().join(format!("{name}.expected.yaml")).display(),
                actual.display()
            );
        }
    }
}

#[test]
fn snapshots_are_valid_injected_workloads() {
    // Independent of the snapshot text: the structure of each injected template.
    for (name, kind, agents, first_init, uid) in [
        ("deployment", "Deployment", 1, AGENT, 10001),
        ("job", "Job", 1, AGENT, 2000),
        ("cronjob", "CronJob", 1, AGENT, 4000),
    ] {
        let text =
            std::fs::read_to_string(inject_dir().join(format!("{name}.expected.yaml"))).unwrap();
        let input = std::fs::read_to_string(inject_dir().join(format!("{name}.yaml"))).unwrap();
        let out_docs = docs(&text);
        let in_docs = docs(&input);
        assert_eq!(
            out_docs.len(),
            in_docs.len(),
            "{name}: same number of documents"
        );
        for (o, i) in out_docs.iter().zip(&in_docs) {
            if o["kind"] != kind {
                assert_eq!(o, i, "{name}: {} passes through unchanged", o["kind"]);
                continue;
            }
            let pod = template_pod(o);
            assert_valid_structure(&pod);
            assert_eq!(count_agents(&pod), agents, "{name}");
            let agent = &pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
            assert_eq!(agent.name, first_init, "{name}");
            assert_eq!(
                agent.security_context.as_ref().unwrap().run_as_user,
                Some(uid),
                "{name}"
            );
            assert_eq!(
                agent.image.as_deref(),
                Some("rds-iam-injector/tokenagent:0.1.0")
            );
            for c in &pod.spec.as_ref().unwrap().containers {
                assert_target(c);
            }
            // Everything outside the pod template is unchanged.
            let mut o_rest = o.clone();
            let mut i_rest = i.clone();
            for v in [&mut o_rest, &mut i_rest] {
                match kind {
                    "CronJob" => {
                        v["spec"]["jobTemplate"]["spec"]["template"] = serde_json::Value::Null
                    }
                    _ => v["spec"]["template"] = serde_json::Value::Null,
                }
            }
            assert_eq!(o_rest, i_rest, "{name}: only the pod template changes");
        }
    }
}

#[test]
fn injecting_twice_changes_nothing() {
    for name in ["deployment", "job", "cronjob"] {
        let path = inject_dir().join(format!("{name}.expected.yaml"));
        let out = webhook(&["inject", "-f", path.to_str().unwrap()], None);
        assert!(out.status.success());
        let want = std::fs::read_to_string(&path).unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), want, "{name}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("already injected"),
            "{name}"
        );
    }
}

#[test]
fn standard_input_and_flags() {
    let input = std::fs::read_to_string(inject_dir().join("deployment.yaml")).unwrap();
    let out = webhook(
        &[
            "inject",
            "-f",
            "-",
            "--sidecar-mode",
            "classic",
            "--agent-image",
            "example.test/agent:1",
            "--agent-cpu-limit",
            "",
        ],
        Some(&input),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let deployment = docs(&text)
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap();
    let pod = template_pod(&deployment);
    assert_valid_structure(&pod);
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.init_containers.as_ref().unwrap()[0].name, AGENT_INIT);
    let sidecar = spec.containers.last().unwrap();
    assert_eq!(sidecar.name, AGENT);
    assert_eq!(sidecar.image.as_deref(), Some("example.test/agent:1"));
    let limits = sidecar.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert!(
        !limits.contains_key("cpu"),
        "empty flag leaves the CPU limit out"
    );
    assert_eq!(limits["memory"].0, "64Mi");

    // Env twins work for inject as well.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rds-iam-webhook"));
    let out = cmd
        .args([
            "inject",
            "-f",
            inject_dir().join("deployment.yaml").to_str().unwrap(),
        ])
        .env("RDS_IAM_WEBHOOK_SIDECAR_MODE", "init-only")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let deployment = docs(&text)
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap();
    let pod = template_pod(&deployment);
    let first = &pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
    assert_eq!(first.args.as_deref(), Some(&["--once".to_owned()][..]));
}

const ALL_KINDS: &str = r#"
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
spec:
  template:
    metadata:
      annotations: {rds-iam/enabled: "true", rds-iam/host: db.x.eu-west-1.rds.amazonaws.com, rds-iam/user: u}
    spec:
      containers: [{name: c, image: i}]
---
apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: StatefulSet
  metadata: {name: s}
  spec:
    serviceName: s
    selector: {matchLabels: {app: s}}
    template:
      metadata:
        labels: {app: s}
        annotations: {rds-iam/enabled: "true", rds-iam/host: db.x.eu-west-1.rds.amazonaws.com, rds-iam/user: u}
      spec:
        securityContext: {runAsUser: 1000}
        containers: [{name: c, image: i}]
- apiVersion: apps/v1
  kind: DaemonSet
  metadata: {name: d}
  spec:
    selector: {matchLabels: {app: d}}
    template:
      metadata:
        labels: {app: d}
        annotations: {rds-iam/enabled: "true", rds-iam/host: db.x.eu-west-1.rds.amazonaws.com, rds-iam/user: u}
      spec:
        securityContext: {runAsUser: 1000}
        containers: [{name: c, image: i}]
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: r}
spec:
  selector: {matchLabels: {app: r}}
  template:
    metadata:
      labels: {app: r}
      annotations: {rds-iam/enabled: "true", rds-iam/host: db.x.eu-west-1.rds.amazonaws.com, rds-iam/user: u}
    spec:
      securityContext: {runAsUser: 1000}
      containers: [{name: c, image: i}]
---
apiVersion: v1
kind: Pod
metadata:
  name: p
  annotations: {rds-iam/enabled: "true", rds-iam/host: db.x.eu-west-1.rds.amazonaws.com, rds-iam/user: u}
spec:
  securityContext: {runAsUser: 1000}
  containers: [{name: c, image: i}]
---
# only a comment
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: misplaced
  annotations: {rds-iam/enabled: "true"}
spec:
  selector: {matchLabels: {app: m}}
  template:
    metadata: {labels: {app: m}}
    spec:
      containers: [{name: c, image: i}]
"#;

#[test]
fn every_workload_kind_and_pass_through() {
    let out = webhook(&["inject", "-f", "-"], Some(ALL_KINDS));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Deployment/misplaced")
            && stderr.contains("spec.template.metadata.annotations"),
        "hint about annotations on the Deployment itself: {stderr}"
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let out_docs = docs(&text);
    assert_eq!(out_docs.len(), 5, "the comment-only document is dropped");
    // Unknown kinds pass through untouched.
    assert!(out_docs[0]["spec"]["template"]["spec"]["initContainers"].is_null());
    let items = out_docs[1]["items"].as_array().unwrap();
    for item in items.iter().chain([&out_docs[2], &out_docs[3]]) {
        let pod = template_pod(item);
        assert_valid_structure(&pod);
        assert_eq!(count_agents(&pod), 1, "{}", item["kind"]);
    }
    // The misplaced Deployment is not injected.
    assert!(out_docs[4]["spec"]["template"]["spec"]["initContainers"].is_null());
}

#[test]
fn denials_go_to_stderr_with_exit_1_and_no_output() {
    let input = ALL_KINDS.replace(
        "rds-iam/user: u}\n    spec:\n      securityContext",
        "rds-iam/user: \"a:b\"}\n    spec:\n      securityContext",
    );
    assert_ne!(input, ALL_KINDS);
    let out = webhook(&["inject", "-f", "-"], Some(&input));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing on stdout when denied");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("denied: ReplicaSet/r: annotation rds-iam/user:"),
        "{stderr}"
    );
}

#[test]
fn unreadable_input_fails_with_exit_2() {
    let out = webhook(&["inject", "-f", "-"], Some("a: [1, 2\n"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("document 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = webhook(&["inject", "-f", "/nonexistent/file.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/file.yaml"));
    let out = webhook(&["inject", "-f", "-", "--default-region", "Mars"], Some(""));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--default-region"));
}
