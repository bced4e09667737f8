//! Helpers shared by the integration tests. Expected values here are written
//! out literally; nothing is computed by the code under test.
#![allow(dead_code, clippy::unwrap_used)]

pub mod tls_client;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Container, Pod};
use rds_iam_webhook::config::AgentConfig;
use rds_iam_webhook::metrics::Metrics;
use rds_iam_webhook::server::{router, AppState};
use serde_json::{json, Value};
use tower::ServiceExt;

pub const AGENT: &str = "rds-iam-tokenagent";
pub const AGENT_INIT: &str = "rds-iam-tokenagent-init";
pub const DIR: &str = "/var/run/rds-iam";
pub const IMAGE: &str = "example.test/tokenagent:test";
/// Fixtures the webhook allows. The first three are the original ones (the
/// fuzz test indexes them); the others have several databases or `$(VAR)`.
pub const FIXTURES: [&str; 11] = [
    "deployment-pod.json",
    "irsa-pod.json",
    "plain-pod.json",
    "two-db-pod.json",
    "multi-db-pod.json",
    "named-only-pod.json",
    "shared-line-pod.json",
    "dollar-pod.json",
    "proxy-pod.json",
    "pg-mysql-pod.json",
    "mysql-pod.json",
];

/// `serve` on loopback ports chosen by the kernel, with the given pair,
/// logging at info level.
pub fn serve_command(bin: &Path, cert: &Path, key: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ])
    .arg("--tls-cert")
    .arg(cert)
    .arg("--tls-key")
    .arg(key)
    .env("RUST_LOG", "info");
    cmd
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures_dir().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn config() -> AgentConfig {
    AgentConfig {
        image: IMAGE.into(),
        ..AgentConfig::default()
    }
}

/// Posts `body` to `/mutate` of an in-process router.
pub async fn post_raw(cfg: &AgentConfig, body: Vec<u8>) -> (StatusCode, Value) {
    let state = AppState::new(cfg.clone(), Arc::new(Metrics::new()));
    let req = Request::post("/mutate")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let resp = router(state).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "response is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, value)
}

pub async fn post(cfg: &AgentConfig, review: &Value) -> Value {
    let (status, body) = post_raw(cfg, serde_json::to_vec(review).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1", "{body}");
    assert_eq!(body["kind"], "AdmissionReview", "{body}");
    assert_eq!(
        body["response"]["uid"], review["request"]["uid"],
        "uid is echoed"
    );
    body
}

/// The JSON Patch of a response, as JSON. On the wire it must be a base64
/// string: kube-apiserver decodes the `[]byte` field as base64 and rejects
/// anything else (kube-core alone would send an array of numbers).
pub fn patch_of(response: &Value) -> Option<Value> {
    let p = response["response"].get("patch")?;
    assert_eq!(response["response"]["patchType"], "JSONPatch");
    let bytes: Vec<u8> = match p {
        Value::String(s) => base64_decode(s),
        other => panic!("patch is {other}"),
    };
    Some(serde_json::from_slice(&bytes).unwrap())
}

pub fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}

/// Applies the response's patch to the review's object.
pub fn apply(review: &Value, response: &Value) -> Value {
    let mut object = review["request"]["object"].clone();
    let patch: json_patch::Patch =
        serde_json::from_value(patch_of(response).expect("a patch")).unwrap();
    json_patch::patch(&mut object, &patch).unwrap_or_else(|e| panic!("patch does not apply: {e}"));
    object
}

pub fn as_pod(object: &Value) -> Pod {
    serde_json::from_value(object.clone()).unwrap()
}

/// The same review, carrying `object` instead (as the API server sends on
/// reinvocation).
pub fn with_object(review: &Value, object: Value) -> Value {
    let mut r = review.clone();
    r["request"]["object"] = object;
    r
}

pub fn annotate(review: &mut Value, key: &str, value: &str) {
    review["request"]["object"]["metadata"]["annotations"][key] = json!(value);
}

/// Puts nested `$(VAR)` references in front of `container`'s env: `V0` is
/// `seed` x's, and each `V<n>` refers `fanout` times to `V<n-1>`, so
/// `V<levels>` expands to `seed * fanout^levels` bytes. Returns the name of
/// the last.
pub fn nest_env(
    review: &mut Value,
    container: &str,
    seed: usize,
    fanout: usize,
    levels: usize,
) -> String {
    let spec = review["request"]["object"]["spec"].as_object_mut().unwrap();
    let c = spec
        .iter_mut()
        .filter(|(k, _)| *k == "initContainers" || *k == "containers")
        .filter_map(|(_, v)| v.as_array_mut())
        .flatten()
        .find(|c| c["name"] == container)
        .unwrap_or_else(|| panic!("no container {container}"));
    let mut env = vec![json!({"name": "V0", "value": "x".repeat(seed)})];
    for n in 1..=levels {
        env.push(
            json!({"name": format!("V{n}"), "value": format!("$(V{})", n - 1).repeat(fanout)}),
        );
    }
    env.extend(c["env"].as_array().cloned().unwrap_or_default());
    c["env"] = Value::Array(env);
    format!("V{levels}")
}

pub fn remove_annotation(review: &mut Value, key: &str) {
    review["request"]["object"]["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove(key);
}

pub fn all_containers(pod: &Pod) -> Vec<&Container> {
    let spec = pod.spec.as_ref().unwrap();
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .collect()
}

pub fn container<'a>(pod: &'a Pod, name: &str) -> &'a Container {
    all_containers(pod)
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

pub fn env_of(c: &Container, name: &str) -> Option<String> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

pub fn env_names(c: &Container) -> Vec<String> {
    c.env.iter().flatten().map(|e| e.name.clone()).collect()
}

pub fn count_agents(pod: &Pod) -> usize {
    all_containers(pod)
        .iter()
        .filter(|c| c.name == AGENT || c.name == AGENT_INIT)
        .count()
}

/// Structural invariants every patched pod must satisfy.
pub fn assert_valid_structure(pod: &Pod) {
    let spec = pod.spec.as_ref().unwrap();
    let names: Vec<&str> = all_containers(pod)
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(
        unique.len(),
        names.len(),
        "container names are unique: {names:?}"
    );
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    let unique_volumes: BTreeSet<&str> = volumes.iter().copied().collect();
    assert_eq!(
        unique_volumes.len(),
        volumes.len(),
        "volume names are unique: {volumes:?}"
    );
    for c in all_containers(pod) {
        let mut paths = BTreeSet::new();
        for m in c.volume_mounts.iter().flatten() {
            assert!(
                unique_volumes.contains(m.name.as_str()),
                "container {} mounts {} which is not a volume",
                c.name,
                m.name
            );
            assert!(
                paths.insert(m.mount_path.clone()),
                "container {} mounts {} twice",
                c.name,
                m.mount_path
            );
        }
        let env: Vec<String> = env_names(c);
        let unique_env: BTreeSet<&String> = env.iter().collect();
        assert_eq!(
            unique_env.len(),
            env.len(),
            "container {} has duplicate env: {env:?}",
            c.name
        );
    }
    let v = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "rds-iam")
        .expect("volume rds-iam");
    let ed = v.empty_dir.as_ref().expect("rds-iam is an emptyDir");
    assert_eq!(ed.medium.as_deref(), Some("Memory"));
    assert_eq!(ed.size_limit.as_ref().map(|q| q.0.as_str()), Some("1Mi"));
    assert_eq!(
        pod.metadata
            .annotations
            .as_ref()
            .unwrap()
            .get("rds-iam/status")
            .map(String::as_str),
        Some("injected")
    );
}

/// The agent container's fixed parts: command, image, mount, security.
pub fn assert_agent_basics(c: &Container, uid: i64, args: &[&str]) {
    assert_eq!(c.image.as_deref(), Some(IMAGE));
    assert_eq!(
        c.command.as_deref(),
        Some(&["rds-iam-tokenagent".to_owned()][..])
    );
    let want_args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        c.args.clone().unwrap_or_default(),
        want_args,
        "args of {}",
        c.name
    );
    let m = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "rds-iam")
        .expect("agent mounts rds-iam");
    assert_eq!(m.mount_path, DIR);
    assert_ne!(m.read_only, Some(true), "the agent writes the volume");
    assert_eq!(m.sub_path, None);
    let sc = c.security_context.as_ref().expect("securityContext");
    assert_eq!(sc.run_as_user, Some(uid));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.privileged, None);
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_owned()])
    );
    assert_eq!(sc.capabilities.as_ref().and_then(|c| c.add.clone()), None);
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );
    let res = c.resources.as_ref().expect("resources");
    let q = |m: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
             k: &str| { m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone()) };
    assert_eq!(q(&res.requests, "cpu").as_deref(), Some("10m"));
    assert_eq!(q(&res.requests, "memory").as_deref(), Some("16Mi"));
    assert_eq!(q(&res.limits, "cpu").as_deref(), Some("100m"));
    assert_eq!(q(&res.limits, "memory").as_deref(), Some("64Mi"));
}

/// A target container reads the token: read-only mount, no subPath, env.
pub fn assert_target(c: &Container) {
    let m = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "rds-iam")
        .unwrap_or_else(|| panic!("target {} mounts rds-iam", c.name));
    assert_eq!(m.mount_path, DIR);
    assert_eq!(m.read_only, Some(true));
    assert_eq!(
        m.sub_path, None,
        "subPath mounts never see file replacements"
    );
    assert_eq!(m.sub_path_expr, None);
    assert_eq!(
        env_of(c, "PGPASSFILE").as_deref(),
        Some("/var/run/rds-iam/pgpass")
    );
    assert_eq!(
        env_of(c, "PGSERVICEFILE").as_deref(),
        Some("/var/run/rds-iam/pg_service.conf")
    );
}

pub fn assert_not_target(c: &Container) {
    assert!(
        !c.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == "rds-iam"),
        "{} must not mount rds-iam",
        c.name
    );
    assert_eq!(
        env_of(c, "PGPASSFILE"),
        None,
        "{} must not get PGPASSFILE",
        c.name
    );
}

/// `kubernetes-validate` from the project's venv; fails loudly when missing.
pub fn kubernetes_validate() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let exe = root.join(".venv/bin/kubernetes-validate");
    assert!(
        exe.is_file(),
        "{} is missing: run testenv/setup.sh (it installs kubernetes-validate into .venv)",
        exe.display()
    );
    exe
}

/// Runs `kubernetes-validate --strict` for each Kubernetes version on `files`.
pub fn validate_strict(files: &[PathBuf]) {
    let exe = kubernetes_validate();
    for version in ["1.30.0", "1.33.0"] {
        let out = std::process::Command::new(&exe)
            .arg("--strict")
            .args(["-k", version])
            .args(files)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "kubernetes-validate --strict -k {version} failed:\n{stdout}\n{stderr}"
        );
        // It prints one INFO line per document that passed, naming the version.
        let short = version.trim_end_matches(".0");
        let passed = stdout
            .lines()
            .filter(|l| {
                l.starts_with("INFO")
                    && l.contains("passed")
                    && l.ends_with(&format!("against version {short}"))
            })
            .count();
        assert!(
            passed >= files.len(),
            "expected {} validated documents for {version}, got:\n{stdout}",
            files.len()
        );
    }
}
