//! In-process Router tests over real AdmissionReview fixtures: apply the
//! returned patch, read the result as a `k8s_openapi` Pod, check invariants.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use rds_iam_webhook::config::SidecarMode;
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

const ORDERS_HOST: &str = "orders.cluster-c9akciq32xyz.eu-west-1.rds.amazonaws.com";

fn probe_command() -> Vec<String> {
    [
        "rds-iam-tokenagent",
        "probe",
        "--dir",
        "/var/run/rds-iam",
        "--min-life",
        "2m",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn deployment_pod_gets_a_native_sidecar() {
    let review = fixture("deployment-pod.json");
    let resp = post(&config(), &review).await;
    assert_eq!(resp["response"]["allowed"], true);
    assert!(
        resp["response"].get("warnings").is_none(),
        "UID is known: no warning"
    );
    let pod = as_pod(&apply(&review, &resp));
    assert_valid_structure(&pod);
    let spec = pod.spec.as_ref().unwrap();

    // Placement: first (and only) init container, restartPolicy Always.
    let inits = spec.init_containers.as_ref().unwrap();
    assert_eq!(inits.len(), 1);
    let agent = &inits[0];
    assert_eq!(agent.name, AGENT);
    assert_eq!(agent.restart_policy.as_deref(), Some("Always"));
    assert_agent_basics(agent, 10001, &[]);
    let startup = agent.startup_probe.as_ref().expect("startupProbe");
    assert_eq!(
        startup.exec.as_ref().unwrap().command.clone().unwrap(),
        probe_command()
    );
    let liveness = agent.liveness_probe.as_ref().expect("livenessProbe");
    assert_eq!(
        liveness.exec.as_ref().unwrap().command.clone().unwrap(),
        probe_command()
    );
    assert!(agent.readiness_probe.is_none());

    // The agent's env, exactly.
    let agent_env: Vec<(String, String)> = agent
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap()))
        .collect();
    let want: Vec<(String, String)> = [
        (
            "RDS_IAM_DATABASES",
            "default=postgres://orders_app@orders.cluster-c9akciq32xyz.eu-west-1.rds.amazonaws.com:5432/orders?region=eu-west-1&sslmode=require",
        ),
        ("RDS_IAM_DIR", "/var/run/rds-iam"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(agent_env, want);

    // The app container: its own env first and kept, then ours.
    assert_eq!(spec.containers.len(), 1);
    let api = &spec.containers[0];
    assert_target(api);
    assert_eq!(
        env_names(api),
        strs(&[
            "LOG_LEVEL",
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGSSLMODE",
            "PGPASSFILE",
            "RDS_IAM_TOKEN_FILE",
            "PGSERVICEFILE",
        ])
    );
    assert_eq!(env_of(api, "LOG_LEVEL").as_deref(), Some("info"));
    assert_eq!(
        env_of(api, "PGSERVICEFILE").as_deref(),
        Some("/var/run/rds-iam/pg_service.conf")
    );
    assert_eq!(env_of(api, "PGHOST").as_deref(), Some(ORDERS_HOST));
    assert_eq!(env_of(api, "PGPORT").as_deref(), Some("5432"));
    assert_eq!(env_of(api, "PGUSER").as_deref(), Some("orders_app"));
    assert_eq!(env_of(api, "PGDATABASE").as_deref(), Some("orders"));
    assert_eq!(env_of(api, "PGSSLMODE").as_deref(), Some("require"));
    assert_eq!(
        env_of(api, "RDS_IAM_TOKEN_FILE").as_deref(),
        Some("/var/run/rds-iam/token")
    );
    // The service-account mount is still there, before ours.
    let mounts: Vec<&str> = api
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(mounts, ["kube-api-access-x7k2p", "rds-iam"]);
    // Nothing else about the app container changed.
    let original = as_pod(&review["request"]["object"]);
    let orig_api = &original.spec.as_ref().unwrap().containers[0];
    assert_eq!(api.image, orig_api.image);
    assert_eq!(api.security_context, orig_api.security_context);
    assert_eq!(api.resources, orig_api.resources);
    assert_eq!(api.ports, orig_api.ports);
}

#[tokio::test]
async fn irsa_pod_carries_the_identity_into_the_agent() {
    let review = fixture("irsa-pod.json");
    let resp = post(&config(), &review).await;
    assert_eq!(resp["response"]["allowed"], true);
    let pod = as_pod(&apply(&review, &resp));
    assert_valid_structure(&pod);
    let spec = pod.spec.as_ref().unwrap();

    // The agent precedes the migration, so the migration starts with a token.
    let init_names: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(init_names, [AGENT, "migrate"]);
    let app_names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(app_names, ["api", "log-shipper"]);

    let agent = container(&pod, AGENT);
    // Pod-level runAsUser 2000.
    assert_agent_basics(agent, 2000, &[]);
    assert_eq!(agent.restart_policy.as_deref(), Some("Always"));

    // rds-iam/containers: migrate,api; the log shipper is left alone.
    assert_target(container(&pod, "migrate"));
    assert_target(container(&pod, "api"));
    assert_not_target(container(&pod, "log-shipper"));
    let original = as_pod(&review["request"]["object"]);
    assert_eq!(
        container(&pod, "log-shipper"),
        container(&original, "log-shipper"),
        "non-targets are untouched"
    );

    // AWS identity env and token mount copied from the first target.
    assert_eq!(
        env_names(agent),
        strs(&[
            "RDS_IAM_DATABASES",
            "RDS_IAM_DIR",
            "AWS_STS_REGIONAL_ENDPOINTS",
            "AWS_DEFAULT_REGION",
            "AWS_REGION",
            "AWS_ROLE_ARN",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
        ])
    );
    assert_eq!(
        env_of(agent, "AWS_ROLE_ARN").as_deref(),
        Some("arn:aws:iam::111122223333:role/orders-db-access")
    );
    assert_eq!(
        env_of(agent, "AWS_WEB_IDENTITY_TOKEN_FILE").as_deref(),
        Some("/var/run/secrets/eks.amazonaws.com/serviceaccount/token")
    );
    let token_mount = agent
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "aws-iam-token")
        .expect("aws-iam-token mount in the agent");
    assert_eq!(
        token_mount.mount_path,
        "/var/run/secrets/eks.amazonaws.com/serviceaccount"
    );
    assert_eq!(token_mount.read_only, Some(true));
    assert!(
        !agent
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name.starts_with("kube-api-access")),
        "the agent does not need the Kubernetes API token"
    );
    assert_eq!(
        env_of(agent, "RDS_IAM_DATABASES").as_deref(),
        Some("default=postgres://orders_app@orders.cluster-c9akciq32xyz.eu-west-1.rds.amazonaws.com:5432/orders?region=eu-west-1&sslmode=require")
    );
}

#[tokio::test]
async fn plain_pod_is_allowed_unchanged() {
    let review = fixture("plain-pod.json");
    let resp = post(&config(), &review).await;
    assert_eq!(resp["response"]["allowed"], true);
    assert!(resp["response"].get("patch").is_none());
    assert!(resp["response"].get("patchType").is_none());
}

#[tokio::test]
async fn opt_in_must_be_exactly_true() {
    for value in ["True", "yes", "1", "false", ""] {
        let mut review = fixture("deployment-pod.json");
        annotate(&mut review, "rds-iam/enabled", value);
        let resp = post(&config(), &review).await;
        assert_eq!(resp["response"]["allowed"], true, "{value:?}");
        assert!(resp["response"].get("patch").is_none(), "{value:?}");
    }
}

async fn inject_in_mode(
    fixture_name: &str,
    mode: SidecarMode,
    via_annotation: bool,
) -> k8s_openapi::api::core::v1::Pod {
    let mut review = fixture(fixture_name);
    let mut cfg = config();
    if via_annotation {
        annotate(&mut review, "rds-iam/sidecar", mode.as_str());
    } else {
        cfg.sidecar_mode = mode;
    }
    let resp = post(&cfg, &review).await;
    let patched = apply(&review, &resp);
    let pod = as_pod(&patched);
    assert_valid_structure(&pod);

    // A second review of the patched pod (reinvocation) changes nothing.
    let again = post(&cfg, &with_object(&review, patched)).await;
    assert_eq!(again["response"]["allowed"], true);
    assert!(
        again["response"].get("patch").is_none(),
        "second review of a {mode} pod must not patch: {again}"
    );
    pod
}

#[tokio::test]
async fn every_mode_on_every_opted_in_fixture() {
    for name in ["deployment-pod.json", "irsa-pod.json"] {
        for via_annotation in [false, true] {
            let uid = if name == "irsa-pod.json" { 2000 } else { 10001 };

            let pod = inject_in_mode(name, SidecarMode::Native, via_annotation).await;
            assert_eq!(count_agents(&pod), 1);
            let first = &pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
            assert_eq!(first.name, AGENT);
            assert_eq!(first.restart_policy.as_deref(), Some("Always"));
            assert_agent_basics(first, uid, &[]);

            let pod = inject_in_mode(name, SidecarMode::Classic, via_annotation).await;
            assert_eq!(count_agents(&pod), 2);
            let spec = pod.spec.as_ref().unwrap();
            let first = &spec.init_containers.as_ref().unwrap()[0];
            assert_eq!(first.name, AGENT_INIT);
            assert_eq!(first.restart_policy, None);
            assert!(first.startup_probe.is_none() && first.liveness_probe.is_none());
            assert_agent_basics(first, uid, &["--once"]);
            let last = spec.containers.last().unwrap();
            assert_eq!(last.name, AGENT);
            assert_eq!(last.restart_policy, None);
            assert_eq!(
                last.liveness_probe
                    .as_ref()
                    .unwrap()
                    .exec
                    .as_ref()
                    .unwrap()
                    .command
                    .clone()
                    .unwrap(),
                probe_command()
            );
            assert_agent_basics(last, uid, &[]);

            let pod = inject_in_mode(name, SidecarMode::InitOnly, via_annotation).await;
            assert_eq!(count_agents(&pod), 1);
            let spec = pod.spec.as_ref().unwrap();
            let first = &spec.init_containers.as_ref().unwrap()[0];
            assert_eq!(first.name, AGENT);
            assert_eq!(first.restart_policy, None);
            assert!(first.startup_probe.is_none() && first.liveness_probe.is_none());
            assert_agent_basics(first, uid, &["--once"]);
            assert!(!spec.containers.iter().any(|c| c.name == AGENT));
        }
    }
}

#[tokio::test]
async fn existing_agent_without_marker_is_detected() {
    for mode in SidecarMode::ALL {
        let mut review = fixture("deployment-pod.json");
        annotate(&mut review, "rds-iam/sidecar", mode.as_str());
        let resp = post(&config(), &review).await;
        let mut patched = apply(&review, &resp);
        patched["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("rds-iam/status");
        let again = post(&config(), &with_object(&review, patched)).await;
        assert!(again["response"].get("patch").is_none(), "{mode}: {again}");
    }
}

#[tokio::test]
async fn marker_alone_prevents_injection() {
    let mut review = fixture("deployment-pod.json");
    annotate(&mut review, "rds-iam/status", "injected");
    let resp = post(&config(), &review).await;
    assert_eq!(resp["response"]["allowed"], true);
    assert!(resp["response"].get("patch").is_none());
}

/// The EKS pod identity webhook, simplified: it adds the IRSA env to every
/// container and init container that lacks AWS_ROLE_ARN, plus the token
/// volume and its mount.
fn pod_identity_webhook(pod: &mut Value) {
    let env = json!([
        {"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"},
        {"name": "AWS_DEFAULT_REGION", "value": "eu-west-1"},
        {"name": "AWS_REGION", "value": "eu-west-1"},
        {"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::111122223333:role/orders-db-access"},
        {"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"}
    ]);
    let mount = json!({"name": "aws-iam-token", "readOnly": true, "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount"});
    for section in ["initContainers", "containers"] {
        let Some(list) = pod["spec"][section].as_array_mut() else {
            continue;
        };
        for c in list {
            let has = c["env"]
                .as_array()
                .is_some_and(|e| e.iter().any(|v| v["name"] == "AWS_ROLE_ARN"));
            if has {
                continue;
            }
            if c["env"].is_null() {
                c["env"] = json!([]);
            }
            c["env"]
                .as_array_mut()
                .unwrap()
                .extend(env.as_array().unwrap().iter().cloned());
            if c["volumeMounts"].is_null() {
                c["volumeMounts"] = json!([]);
            }
            c["volumeMounts"]
                .as_array_mut()
                .unwrap()
                .push(mount.clone());
        }
    }
    let volumes = pod["spec"]["volumes"].as_array_mut().unwrap();
    if volumes.iter().any(|v| v["name"] == "aws-iam-token") {
        return;
    }
    volumes.push(json!({
        "name": "aws-iam-token",
        "projected": {"sources": [{"serviceAccountToken": {"audience": "sts.amazonaws.com", "expirationSeconds": 86400, "path": "token"}}], "defaultMode": 420}
    }));
}

#[tokio::test]
async fn pod_identity_webhook_running_after_us_also_works() {
    let review = fixture("deployment-pod.json");
    let resp = post(&config(), &review).await;
    let mut patched = apply(&review, &resp);
    // Before the identity webhook: no AWS env in our agent.
    assert_eq!(
        env_of(container(&as_pod(&patched), AGENT), "AWS_ROLE_ARN"),
        None
    );
    pod_identity_webhook(&mut patched);
    let pod = as_pod(&patched);
    assert_valid_structure(&pod);
    let agent = container(&pod, AGENT);
    assert_eq!(
        env_of(agent, "AWS_ROLE_ARN").as_deref(),
        Some("arn:aws:iam::111122223333:role/orders-db-access")
    );
    // Reinvoked after it: no second agent, no change.
    let again = post(&config(), &with_object(&review, patched)).await;
    assert!(again["response"].get("patch").is_none(), "{again}");
}

#[tokio::test]
async fn pod_identity_webhook_before_us_is_carried_over_without_duplicates() {
    let review = fixture("deployment-pod.json");
    let mut object = review["request"]["object"].clone();
    pod_identity_webhook(&mut object);
    let review = with_object(&review, object);
    let resp = post(&config(), &review).await;
    let mut patched = apply(&review, &resp);
    let agent_env = env_names(container(&as_pod(&patched), AGENT));
    assert!(
        agent_env.contains(&"AWS_ROLE_ARN".to_owned()),
        "{agent_env:?}"
    );
    // The identity webhook, reinvoked, sees AWS_ROLE_ARN and leaves the agent be.
    let before = patched.clone();
    pod_identity_webhook(&mut patched);
    assert_eq!(
        before, patched,
        "nothing left for the identity webhook to add"
    );
    let pod = as_pod(&patched);
    assert_valid_structure(&pod);
}

#[tokio::test]
async fn dry_run_gets_the_same_answer() {
    for name in FIXTURES {
        let review = fixture(name);
        let mut dry = review.clone();
        dry["request"]["dryRun"] = json!(true);
        let a = post(&config(), &review).await;
        let b = post(&config(), &dry).await;
        assert_eq!(a, b, "{name}");
    }
}

#[tokio::test]
async fn only_pod_create_is_mutated() {
    // UPDATE of an opted-in pod.
    let mut review = fixture("deployment-pod.json");
    review["request"]["operation"] = json!("UPDATE");
    review["request"]["oldObject"] = review["request"]["object"].clone();
    let resp = post(&config(), &review).await;
    assert_eq!(resp["response"]["allowed"], true);
    assert!(resp["response"].get("patch").is_none());

    // A subresource (e.g. pods/ephemeralcontainers).
    let mut review = fixture("deployment-pod.json");
    review["request"]["subResource"] = json!("ephemeralcontainers");
    let resp = post(&config(), &review).await;
    assert!(resp["response"].get("patch").is_none());

    // Another kind, even with the annotation on its pod template.
    let mut review = fixture("deployment-pod.json");
    let pod = review["request"]["object"].clone();
    review["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    review["request"]["resource"] =
        json!({"group": "apps", "version": "v1", "resource": "deployments"});
    review["request"]["object"] = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "orders-api", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "orders-api"}}, "template": {"metadata": pod["metadata"], "spec": pod["spec"]}}
    });
    let resp = post(&config(), &review).await;
    assert_eq!(resp["response"]["allowed"], true);
    assert!(resp["response"].get("patch").is_none());
}

#[tokio::test]
async fn unreadable_bodies_get_400_with_a_json_error() {
    let no_request = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
    let mut wrong_version = fixture("deployment-pod.json");
    wrong_version["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut no_object = fixture("deployment-pod.json");
    no_object["request"]["object"] = Value::Null;
    let mut pod_is_not_a_pod = fixture("deployment-pod.json");
    pod_is_not_a_pod["request"]["object"]["spec"]["containers"] = json!("api");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("not json", b"hello".to_vec()),
        (
            "truncated",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"Admiss"#.to_vec(),
        ),
        ("json array", b"[1,2,3]".to_vec()),
        ("empty object", b"{}".to_vec()),
        ("no request", serde_json::to_vec(&no_request).unwrap()),
        ("v1beta1", serde_json::to_vec(&wrong_version).unwrap()),
        ("no object", serde_json::to_vec(&no_object).unwrap()),
        ("bad pod", serde_json::to_vec(&pod_is_not_a_pod).unwrap()),
        ("binary", vec![0xff, 0xfe, 0x00, 0x01]),
    ];
    for (what, body) in cases {
        let (status, value) = post_raw(&config(), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {value}");
        let msg = value["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no error field: {value}"));
        assert!(!msg.is_empty(), "{what}");
        assert_eq!(value["code"], 400, "{what}");
    }
}

#[tokio::test]
async fn body_over_3_mib_is_refused() {
    let mut review = fixture("deployment-pod.json");
    // A big but otherwise valid review: an annotation of 3 MiB.
    annotate(
        &mut review,
        "example.com/blob",
        &"x".repeat(3 * 1024 * 1024),
    );
    let (status, value) = post_raw(&config(), serde_json::to_vec(&review).unwrap()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{value}");
    assert!(value["error"].is_string(), "{value}");

    // Just under the limit is answered.
    let mut review = fixture("deployment-pod.json");
    annotate(
        &mut review,
        "example.com/blob",
        &"x".repeat(3 * 1024 * 1024 - 10_000),
    );
    let body = serde_json::to_vec(&review).unwrap();
    assert!(body.len() < 3 * 1024 * 1024);
    let (status, _) = post_raw(&config(), body).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_uid_gets_the_default_and_a_warning() {
    let mut review = fixture("deployment-pod.json");
    review["request"]["object"]["spec"]["containers"][0]["securityContext"]
        .as_object_mut()
        .unwrap()
        .remove("runAsUser");
    let resp = post(&config(), &review).await;
    let warnings = resp["response"]["warnings"].as_array().expect("a warning");
    assert_eq!(warnings.len(), 1);
    let w = warnings[0].as_str().unwrap();
    assert!(
        w.contains("65532") && w.contains("rds-iam/run-as-user") && w.contains("runAsUser"),
        "{w}"
    );
    assert!(
        w.len() <= 256,
        "warnings over 256 characters may be truncated: {}",
        w.len()
    );
    let pod = as_pod(&apply(&review, &resp));
    assert_agent_basics(container(&pod, AGENT), 65532, &[]);

    // The flag changes the default.
    let mut cfg = config();
    cfg.default_agent_uid = 4242;
    let resp = post(&cfg, &review).await;
    let pod = as_pod(&apply(&review, &resp));
    assert_eq!(
        container(&pod, AGENT)
            .security_context
            .as_ref()
            .unwrap()
            .run_as_user,
        Some(4242)
    );

    // The annotation sets it without a warning.
    annotate(&mut review, "rds-iam/run-as-user", "3000");
    let resp = post(&config(), &review).await;
    assert!(resp["response"].get("warnings").is_none());
    let pod = as_pod(&apply(&review, &resp));
    assert_agent_basics(container(&pod, AGENT), 3000, &[]);
}

#[tokio::test]
async fn user_set_variables_win() {
    let mut review = fixture("deployment-pod.json");
    review["request"]["object"]["spec"]["containers"][0]["env"] = json!([
        {"name": "PGHOST", "value": "pgbouncer.local"},
        {"name": "PGSSLMODE", "value": "verify-full"},
        {"name": "PGUSER", "valueFrom": {"configMapKeyRef": {"name": "db", "key": "user"}}}
    ]);
    let resp = post(&config(), &review).await;
    let pod = as_pod(&apply(&review, &resp));
    assert_valid_structure(&pod);
    let api = container(&pod, "api");
    assert_eq!(env_of(api, "PGHOST").as_deref(), Some("pgbouncer.local"));
    assert_eq!(env_of(api, "PGSSLMODE").as_deref(), Some("verify-full"));
    let pguser = api
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "PGUSER")
        .unwrap();
    assert!(
        pguser.value.is_none() && pguser.value_from.is_some(),
        "valueFrom kept"
    );
    assert_eq!(env_of(api, "PGPORT").as_deref(), Some("5432"));
    assert_target(api);
}

#[tokio::test]
async fn missing_lists_and_maps_are_created() {
    let mut review = fixture("deployment-pod.json");
    {
        let spec = review["request"]["object"]["spec"].as_object_mut().unwrap();
        spec.remove("volumes");
        let c = spec["containers"][0].as_object_mut().unwrap();
        c.remove("env");
        c.remove("volumeMounts");
    }
    let resp = post(&config(), &review).await;
    let patch = patch_of(&resp).unwrap();
    let paths: Vec<&str> = patch
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/spec/containers/0/env",
            "/spec/containers/0/volumeMounts",
            "/spec/volumes",
            "/spec/initContainers",
            "/metadata/annotations/rds-iam~1status",
        ]
    );
    let pod = as_pod(&apply(&review, &resp));
    assert_valid_structure(&pod);
    assert_target(container(&pod, "api"));

    // Explicit nulls are replaced too.
    let mut review = fixture("deployment-pod.json");
    review["request"]["object"]["spec"]["volumes"] = Value::Null;
    review["request"]["object"]["spec"]["initContainers"] = Value::Null;
    review["request"]["object"]["spec"]["containers"][0]["env"] = Value::Null;
    review["request"]["object"]["spec"]["containers"][0]["volumeMounts"] = Value::Null;
    let resp = post(&config(), &review).await;
    let pod = as_pod(&apply(&review, &resp));
    assert_valid_structure(&pod);
}

#[tokio::test]
async fn region_resolution_order() {
    let region_of = |resp: &Value, review: &Value| {
        let pod = as_pod(&apply(review, resp));
        let specs = env_of(container(&pod, AGENT), "RDS_IAM_DATABASES").unwrap();
        let (_, query) = specs.split_once("?region=").unwrap();
        query.split('&').next().unwrap().to_owned()
    };
    // Annotation beats the host name.
    let mut review = fixture("deployment-pod.json");
    annotate(&mut review, "rds-iam/region", "us-west-2");
    let resp = post(&config(), &review).await;
    assert_eq!(region_of(&resp, &review), "us-west-2");

    // A non-RDS host: the containers' AWS_REGION ...
    let mut review = fixture("irsa-pod.json");
    annotate(&mut review, "rds-iam/host", "pg.internal.example.com");
    for section in ["containers", "initContainers"] {
        for c in review["request"]["object"]["spec"][section]
            .as_array_mut()
            .unwrap()
        {
            for e in c["env"].as_array_mut().unwrap() {
                if e["name"] == "AWS_REGION" {
                    e["value"] = json!("ap-southeast-2");
                }
            }
        }
    }
    let mut cfg = config();
    cfg.default_region = Some("ca-central-1".into());
    let resp = post(&cfg, &review).await;
    assert_eq!(region_of(&resp, &review), "ap-southeast-2");

    // ... else --default-region.
    let mut review = fixture("deployment-pod.json");
    annotate(&mut review, "rds-iam/host", "pg.internal.example.com");
    let resp = post(&cfg, &review).await;
    assert_eq!(region_of(&resp, &review), "ca-central-1");
    // ... else denied (see the denial table).
    let resp = post(&config(), &review).await;
    assert_eq!(resp["response"]["allowed"], false);
}

#[tokio::test]
async fn optional_annotations_reach_agent_and_targets() {
    let mut review = fixture("deployment-pod.json");
    annotate(&mut review, "rds-iam/refresh-interval", "5m");
    annotate(&mut review, "rds-iam/port", "6432");
    annotate(&mut review, "rds-iam/sslmode", "verify-full");
    remove_annotation(&mut review, "rds-iam/database");
    let resp = post(&config(), &review).await;
    let pod = as_pod(&apply(&review, &resp));
    let agent = container(&pod, AGENT);
    assert_eq!(
        env_of(agent, "RDS_IAM_REFRESH_INTERVAL").as_deref(),
        Some("300s")
    );
    assert_eq!(
        env_of(agent, "RDS_IAM_DATABASES").as_deref(),
        Some("default=postgres://orders_app@orders.cluster-c9akciq32xyz.eu-west-1.rds.amazonaws.com:6432?region=eu-west-1&sslmode=verify-full")
    );
    let api = container(&pod, "api");
    assert_eq!(env_of(api, "PGPORT").as_deref(), Some("6432"));
    assert_eq!(env_of(api, "PGSSLMODE").as_deref(), Some("verify-full"));
    assert_eq!(env_of(api, "PGDATABASE"), None);
}

#[tokio::test]
async fn health_endpoints() {
    let state = rds_iam_webhook::server::AppState::new(
        config(),
        Arc::new(rds_iam_webhook::metrics::Metrics::new()),
    );
    for path in ["/healthz", "/readyz"] {
        let resp = rds_iam_webhook::server::router(state.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
    state
        .ready
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let resp = rds_iam_webhook::server::router(state.clone())
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let resp = rds_iam_webhook::server::router(state)
        .oneshot(Request::get("/mutate").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
}
