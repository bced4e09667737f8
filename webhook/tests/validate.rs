//! Everything the webhook produces validates with `kubernetes-validate
//! --strict` against Kubernetes 1.30 and 1.33 (tool from testenv/setup.sh).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use rds_iam_webhook::config::SidecarMode;
use serde_json::Value;

/// kubernetes-validate names objects by metadata.name; pods created by a
/// controller only have generateName until the API server fills the name in.
fn named(mut pod: Value) -> Value {
    if pod["metadata"]["name"].is_null() {
        let generated = format!("{}x7k2p", pod["metadata"]["generateName"].as_str().unwrap());
        pod["metadata"]["name"] = Value::String(generated);
    }
    pod
}

#[tokio::test]
async fn patched_pods_and_inject_output_validate_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut write = |name: String, v: &Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
        files.push(path);
    };
    for fixture_name in FIXTURES {
        for mode in SidecarMode::ALL {
            let review = fixture(fixture_name);
            let mut cfg = config();
            cfg.sidecar_mode = mode;
            let resp = post(&cfg, &review).await;
            let pod = if patch_of(&resp).is_some() {
                apply(&review, &resp)
            } else {
                review["request"]["object"].clone()
            };
            write(format!("{fixture_name}-{mode}.json"), &named(pod));
        }
    }
    // Unknown UID (default agent UID) and missing lists created by the patch.
    let mut review = fixture("deployment-pod.json");
    {
        let spec = review["request"]["object"]["spec"].as_object_mut().unwrap();
        let c = spec["containers"][0].as_object_mut().unwrap();
        c.remove("securityContext");
        c.remove("env");
    }
    annotate(&mut review, "rds-iam/refresh-interval", "5m");
    let resp = post(&config(), &review).await;
    write(
        "deployment-pod-no-uid.json".into(),
        &named(apply(&review, &resp)),
    );
    assert_eq!(files.len(), FIXTURES.len() * 3 + 1);

    let inject = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inject");
    for name in ["deployment", "job", "cronjob"] {
        files.push(inject.join(format!("{name}.expected.yaml")));
    }
    validate_strict(&files);
}

#[test]
fn validation_catches_a_broken_pod() {
    // The validator really checks: an unknown field must fail strict validation.
    let exe = kubernetes_validate();
    let dir = tempfile::tempdir().unwrap();
    let mut pod = fixture("deployment-pod.json")["request"]["object"].clone();
    pod["spec"]["containers"][0]["subPathMount"] = Value::Bool(true);
    let path = dir.path().join("bad.json");
    std::fs::write(&path, serde_json::to_vec(&named(pod)).unwrap()).unwrap();
    let out = std::process::Command::new(exe)
        .args(["--strict", "-k", "1.33.0"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("subPathMount"));
}
