//! Property tests of the admission handler: arbitrary bytes, mutated reviews
//! and arbitrary pods. It never panics, and every patch applies cleanly and
//! yields a pod that reinvocation leaves alone.
//!
//! Case counts scale with RDS_IAM_FUZZ_SCALE (default 1: a smoke run of
//! about 12,000 reviews; the long run in docs/bench-webhook.md used 50).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use proptest::prelude::*;
use rds_iam_webhook::config::{AgentConfig, SidecarMode};
use rds_iam_webhook::review::{review, ReviewResult};
use serde_json::{json, Map, Value};

fn cases(base: u32) -> u32 {
    rds_iam_common::fuzz_cases(base)
}

fn wrap(object: Value) -> Value {
    let mut r = fixture("deployment-pod.json");
    r["request"]["object"] = object;
    r
}

/// Runs one review and checks everything that must hold for any input.
fn check_review(body: &[u8], cfg: &AgentConfig) {
    let Ok(reviewed) = review(body, cfg) else {
        return; // HTTP 400: fine for unreadable input.
    };
    let response: serde_json::Value =
        serde_json::from_slice(&rds_iam_webhook::review::to_json(&reviewed).unwrap()).unwrap();
    let r = &response["response"];
    match reviewed.result {
        ReviewResult::Denied => {
            assert_eq!(r["allowed"], false);
            let msg = r["status"]["message"].as_str().unwrap();
            assert!(msg.starts_with("annotation rds-iam/"), "{msg}");
            assert!(r.get("patch").is_none());
        }
        ReviewResult::AllowedUnchanged => {
            assert_eq!(r["allowed"], true);
            assert!(r.get("patch").is_none());
        }
        ReviewResult::Patched => {
            assert_eq!(r["allowed"], true);
            let request: Value = serde_json::from_slice(body).unwrap();
            let original = request["request"]["object"].clone();
            let patched = apply(&request, &response);
            // The webhook reads only the fields it needs, so a wrong type
            // elsewhere (which the API server never sends) passes through
            // as it was; the typed invariants hold for typed pods.
            if serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(original.clone()).is_ok() {
                check_patched(&original, &as_pod(&patched));
            }
            // Reinvocation of the patched pod: no second agent.
            let again = review(
                &serde_json::to_vec(&with_object(&request, patched)).unwrap(),
                cfg,
            )
            .unwrap();
            assert_eq!(
                again.result,
                ReviewResult::AllowedUnchanged,
                "{}",
                again.detail
            );
        }
        ReviewResult::Invalid => unreachable!("review() reports invalid input as Err"),
    }
}

/// Invariants that hold whenever the original pod was sound.
fn check_patched(original: &Value, pod: &k8s_openapi::api::core::v1::Pod) {
    let orig = as_pod(original);
    let spec = pod.spec.as_ref().unwrap();
    let orig_spec = orig.spec.as_ref().unwrap();
    let agents = count_agents(pod);
    assert!(agents == 1 || agents == 2, "{agents} agents");
    let first = &spec.init_containers.as_ref().unwrap()[0];
    assert!(first.name == AGENT || first.name == AGENT_INIT);
    let sc = first.security_context.as_ref().unwrap();
    assert!(sc.run_as_user.unwrap() > 0, "agent never runs as root");
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(
        pod.metadata
            .annotations
            .as_ref()
            .unwrap()
            .get("rds-iam/status")
            .map(String::as_str),
        Some("injected")
    );

    let names = |s: &k8s_openapi::api::core::v1::PodSpec| -> Vec<String> {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
            .map(|c| c.name.clone())
            .collect()
    };
    let orig_names = names(orig_spec);
    let orig_unique = orig_names.iter().collect::<BTreeSet<_>>().len() == orig_names.len();
    let volumes: BTreeSet<&str> = orig_spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    let orig_volumes_unique = volumes.len() == orig_spec.volumes.iter().flatten().count();
    let orig_mounts_resolve = orig_spec
        .init_containers
        .iter()
        .flatten()
        .chain(orig_spec.containers.iter())
        .all(|c| {
            c.volume_mounts
                .iter()
                .flatten()
                .all(|m| volumes.contains(m.name.as_str()))
        });
    let orig_mount_paths_unique = orig_spec
        .init_containers
        .iter()
        .flatten()
        .chain(orig_spec.containers.iter())
        .all(|c| {
            let paths: Vec<&str> = c
                .volume_mounts
                .iter()
                .flatten()
                .map(|m| m.mount_path.as_str())
                .collect();
            paths.iter().collect::<BTreeSet<_>>().len() == paths.len()
        });
    let orig_env_unique = orig_spec
        .init_containers
        .iter()
        .flatten()
        .chain(orig_spec.containers.iter())
        .all(|c| {
            let env = env_names(c);
            env.iter().collect::<BTreeSet<_>>().len() == env.len()
        });
    if orig_unique
        && orig_volumes_unique
        && orig_mounts_resolve
        && orig_mount_paths_unique
        && orig_env_unique
    {
        assert_valid_structure(pod);
    }
    // Original containers keep their relative order and their images.
    let new_names: Vec<String> = names(spec)
        .into_iter()
        .filter(|n| n != AGENT && n != AGENT_INIT)
        .collect();
    assert_eq!(new_names, orig_names);
}

// ---------- strategies ----------

/// Missing, explicit null, or a value.
fn maybe(s: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Option<Value>> {
    prop_oneof![2 => Just(None), 1 => Just(Some(Value::Null)), 5 => s.prop_map(Some)].boxed()
}

fn put(m: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(key.into(), v);
    }
}

fn container_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["api", "worker", "migrate", "log-shipper"]).prop_map(String::from),
        1 => Just("rds-iam-tokenagent".to_owned()),
        2 => "[a-z][a-z0-9-]{0,8}",
    ]
}

fn env_var() -> impl Strategy<Value = Value> {
    let name = prop::sample::select(vec![
        "PGHOST",
        "PGUSER",
        "PGPASSFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "LOG_LEVEL",
        "X",
    ]);
    let value = prop_oneof![
        Just(json!("eu-west-1")),
        Just(json!("not a region")),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    (name, prop_oneof![3 => value.prop_map(|v| ("value", v)), 1 => Just(("valueFrom", json!({"fieldRef": {"fieldPath": "metadata.name"}})))])
        .prop_map(|(n, (k, v))| json!({"name": n, k: v}))
}

fn volume_name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "aws-iam-token",
        "eks-pod-identity-token",
        "data",
        "kube-api-access-abcde",
        "rds-iam",
    ])
}

fn mount() -> impl Strategy<Value = Value> {
    let path = prop_oneof![
        Just("/data".to_owned()),
        Just("/var/run/rds-iam".to_owned()),
        Just("/var/run/rds-iam/".to_owned()),
        Just("/var/run/secrets/eks.amazonaws.com/serviceaccount".to_owned()),
        "/x/[a-z]{1,4}",
    ];
    (volume_name(), path, any::<bool>())
        .prop_map(|(n, p, ro)| json!({"name": n, "mountPath": p, "readOnly": ro}))
}

fn security_context() -> impl Strategy<Value = Value> {
    maybe(prop_oneof![
        Just(json!(0)),
        Just(json!(1000)),
        Just(json!(2000)),
        (-5i64..70000).prop_map(Value::from)
    ])
    .prop_map(|uid| {
        let mut m = Map::new();
        put(&mut m, "runAsUser", uid);
        Value::Object(m)
    })
}

fn container() -> impl Strategy<Value = Value> {
    (
        container_name(),
        maybe(prop::collection::vec(env_var(), 0..4).prop_map(Value::Array)),
        maybe(prop::collection::vec(mount(), 0..3).prop_map(Value::Array)),
        maybe(security_context()),
        maybe(Just(json!(["rds-iam-tokenagent"]))),
    )
        .prop_map(|(name, env, mounts, sc, command)| {
            let mut m = Map::new();
            m.insert("name".into(), json!(name));
            m.insert("image".into(), json!("registry.example.com/app:1"));
            put(&mut m, "env", env);
            put(&mut m, "volumeMounts", mounts);
            put(&mut m, "securityContext", sc);
            // Rarely: a hand-written agent under another name.
            if name == "worker" {
                put(&mut m, "command", command);
            }
            Value::Object(m)
        })
}

fn annotations() -> impl Strategy<Value = Value> {
    let opt = |values: Vec<&'static str>| {
        prop::option::weighted(0.5, prop::sample::select(values).prop_map(String::from))
    };
    (
        prop::option::weighted(
            0.9,
            prop::sample::select(vec!["true", "true", "true", "false", "yes"]),
        ),
        prop::option::weighted(
            0.95,
            prop::sample::select(vec![
                "orders.cluster-c9akciq32xyz.eu-west-1.rds.amazonaws.com",
                "db.abc.us-east-2.rds.amazonaws.com",
                "db.internal.example.com",
                "db:5432",
                "",
            ]),
        ),
        prop::option::weighted(
            0.95,
            prop::sample::select(vec!["app", "orders_app", "a b", ""]),
        ),
        (
            opt(vec!["5432", "0", "65536", "x"]),
            opt(vec!["orders", ""]),
            opt(vec!["eu-west-1", "Mars"]),
            opt(vec!["api", "api,worker", "migrate,api", "nope", " , "]),
            opt(vec!["require", "verify-full", "disable", "bogus"]),
        ),
        (
            opt(vec!["5m", "15m", "soon"]),
            opt(vec!["1000", "2000", "0", "x"]),
            opt(vec!["native", "classic", "init-only", "sidecar"]),
            prop::option::weighted(0.05, Just("injected")),
            prop::option::weighted(0.03, Just("typo")),
        ),
        "\\PC{0,6}",
    )
        .prop_map(
            |(
                enabled,
                host,
                user,
                (port, db, region, containers, ssl),
                (refresh, uid, sidecar, status, typo),
                other,
            )| {
                let mut m = Map::new();
                let mut set = |k: &str, v: Option<String>| {
                    if let Some(v) = v {
                        m.insert(k.into(), json!(v));
                    }
                };
                set("rds-iam/enabled", enabled.map(String::from));
                set("rds-iam/host", host.map(String::from));
                set("rds-iam/user", user.map(String::from));
                set("rds-iam/port", port);
                set("rds-iam/database", db);
                set("rds-iam/region", region);
                set("rds-iam/containers", containers);
                set("rds-iam/sslmode", ssl);
                set("rds-iam/refresh-interval", refresh);
                set("rds-iam/run-as-user", uid);
                set("rds-iam/sidecar", sidecar);
                set("rds-iam/status", status.map(String::from));
                set("rds-iam/databse", typo.map(String::from));
                set("example.com/other", Some(other));
                Value::Object(m)
            },
        )
}

fn pod() -> impl Strategy<Value = Value> {
    (
        maybe(annotations()),
        prop::collection::vec(container(), 0..4),
        maybe(prop::collection::vec(container(), 0..3).prop_map(Value::Array)),
        maybe(
            prop::collection::vec(volume_name(), 0..4).prop_map(|names| {
                Value::Array(
                    names
                        .into_iter()
                        .map(|n| json!({"name": n, "emptyDir": {}}))
                        .collect(),
                )
            }),
        ),
        maybe(security_context()),
    )
        .prop_map(|(annotations, containers, inits, volumes, sc)| {
            let mut meta = Map::new();
            meta.insert("generateName".into(), json!("fuzz-"));
            put(&mut meta, "annotations", annotations);
            let mut spec = Map::new();
            spec.insert("containers".into(), Value::Array(containers));
            put(&mut spec, "initContainers", inits);
            put(&mut spec, "volumes", volumes);
            put(&mut spec, "securityContext", sc);
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
        })
}

fn any_mode() -> impl Strategy<Value = SidecarMode> {
    prop::sample::select(SidecarMode::ALL.to_vec())
}

fn cfg(mode: SidecarMode, default_region: bool) -> AgentConfig {
    let mut c = config();
    c.sidecar_mode = mode;
    if default_region {
        c.default_region = Some("us-west-2".into());
    }
    c
}

/// Replaces the value at a random path of `v` with `replacement`.
fn mutate_at(v: &mut Value, mut choice: usize, replacement: Value) {
    let mut cur = v;
    loop {
        let len = match &*cur {
            Value::Object(m) => m.len(),
            Value::Array(a) => a.len(),
            _ => 0,
        };
        if len == 0 || choice % 4 == 0 {
            *cur = replacement;
            return;
        }
        let i = (choice / 4) % len;
        choice /= 3;
        cur = match cur {
            Value::Object(m) => m.values_mut().nth(i).unwrap(),
            Value::Array(a) => &mut a[i],
            _ => unreachable!(),
        };
    }
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,10}".prop_map(Value::String),
        Just(json!([])),
        Just(json!({})),
        Just(json!("true")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(4000), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check_review(&bytes, &config());
    }

    #[test]
    fn arbitrary_pods(object in pod(), mode in any_mode(), default_region in any::<bool>()) {
        let body = serde_json::to_vec(&wrap(object)).unwrap();
        check_review(&body, &cfg(mode, default_region));
    }

    #[test]
    fn mutated_fixtures(which in 0usize..FIXTURES.len(), edits in prop::collection::vec((any::<usize>(), json_leaf()), 1..4), mode in any_mode()) {
        let mut review = fixture(FIXTURES[which]);
        // Opt the plain pod in, so mutations reach the injection code.
        if which == 2 {
            annotate(&mut review, "rds-iam/enabled", "true");
            annotate(&mut review, "rds-iam/host", "db.abc.eu-west-1.rds.amazonaws.com");
            annotate(&mut review, "rds-iam/user", "web");
        }
        for (choice, leaf) in edits {
            mutate_at(&mut review["request"]["object"], choice, leaf);
        }
        check_review(&serde_json::to_vec(&review).unwrap(), &cfg(mode, false));
    }
}

#[test]
fn strategies_reach_every_outcome() {
    // Guard against a generator that only ever produces one kind of answer.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen = BTreeSet::new();
    for _ in 0..2000 {
        let object = pod().new_tree(&mut runner).unwrap().current();
        let body = serde_json::to_vec(&wrap(object)).unwrap();
        if let Ok(r) = review(&body, &config()) {
            seen.insert(r.result.as_str());
        } else {
            seen.insert("invalid");
        }
    }
    for want in ["patched", "allowed_unchanged", "denied"] {
        assert!(
            seen.contains(want),
            "generator never produced {want}: {seen:?}"
        );
    }
}
