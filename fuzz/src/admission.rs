//! The admission handler on raw request bodies: `review` then `to_json`,
//! as `POST /mutate` runs them.
//!
//! Invariants: nothing panics; a readable review always gets an answer that
//! serializes to an `admission.k8s.io/v1` AdmissionReview with the request's
//! uid; a denial is `allowed: false` with HTTP 403, a message naming an
//! `rds-iam/` annotation, and no patch; a patch is only sent with
//! `allowed: true`, is a base64 JSON Patch that applies (json-patch) to the
//! object of the request, yields a Pod marked `rds-iam/status: injected`,
//! its agent containers are hardened (non-root, read-only root
//! filesystem, no privilege escalation, all capabilities dropped, seccomp
//! `RuntimeDefault`), and a second review of that Pod (a reinvocation)
//! leaves it unchanged.

use std::sync::OnceLock;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use rds_iam_webhook::config::AgentConfig;
use rds_iam_webhook::render::{AGENT_CONTAINER, AGENT_INIT_CONTAINER};
use rds_iam_webhook::review::{review, to_json, ReviewResult};
use serde_json::Value;

/// The webhook's shipped defaults.
fn config() -> &'static AgentConfig {
    static CONFIG: OnceLock<AgentConfig> = OnceLock::new();
    CONFIG.get_or_init(AgentConfig::default)
}

pub fn check(body: &[u8]) {
    let Ok(reviewed) = review(body, config()) else {
        return; // HTTP 400, with the reason.
    };
    let wire = to_json(&reviewed).expect("the answer to a readable review serializes");
    let answer: Value = serde_json::from_slice(&wire).expect("the answer is JSON");
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{answer}");
    assert_eq!(answer["kind"], "AdmissionReview", "{answer}");
    let r = &answer["response"];
    assert_eq!(r["uid"].as_str(), Some(reviewed.uid.as_str()), "{answer}");
    match reviewed.result {
        ReviewResult::Denied => {
            assert_eq!(r["allowed"], false, "{answer}");
            assert_eq!(r["status"]["code"], 403, "{answer}");
            let message = r["status"]["message"].as_str().unwrap_or_default();
            assert!(message.starts_with("annotation rds-iam/"), "{answer}");
            assert!(r.get("patch").is_none(), "{answer}");
        }
        ReviewResult::AllowedUnchanged => {
            assert_eq!(r["allowed"], true, "{answer}");
            assert!(r.get("patch").is_none(), "{answer}");
        }
        ReviewResult::Patched => {
            assert_eq!(r["allowed"], true, "{answer}");
            assert_eq!(r["patchType"], "JSONPatch", "{answer}");
            check_patch(body, r);
        }
        ReviewResult::Invalid => panic!("review() answers unreadable input with an error"),
    }
}

fn check_patch(body: &[u8], response: &Value) {
    let patch = response["patch"].as_str().expect("the patch is a string");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .expect("the patch is base64");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("a JSON Patch");
    let mut request: Value = serde_json::from_slice(body).expect("the body is JSON");
    let mut pod = request["request"]["object"].take();
    // The webhook reads only the fields it uses, so a wrong type elsewhere
    // (which the API server never sends) passes through as it was; the
    // typed checks hold for typed pods.
    let was_pod = serde_json::from_value::<Pod>(pod.clone()).is_ok();
    json_patch::patch(&mut pod, &patch).expect("the patch applies to the object it was made for");
    assert_eq!(
        pod["metadata"]["annotations"]["rds-iam/status"], "injected",
        "{pod}"
    );
    if was_pod {
        let typed: Pod = serde_json::from_value(pod.clone()).expect("the patched object is a Pod");
        hardened_agents(&typed);
    }

    // The API server reinvokes the webhook with the patched Pod.
    request["request"]["object"] = pod;
    let again = serde_json::to_vec(&request).expect("serializes");
    let again = review(&again, config()).expect("the patched Pod is still a readable review");
    assert_eq!(
        again.result,
        ReviewResult::AllowedUnchanged,
        "a reinvocation adds nothing: {}",
        again.detail
    );
}

/// Every agent container the patch added runs hardened.
fn hardened_agents(pod: &Pod) {
    let spec = pod.spec.as_ref().expect("a patched Pod has a spec");
    let agents: Vec<_> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter(|c| c.name == AGENT_CONTAINER || c.name == AGENT_INIT_CONTAINER)
        .collect();
    assert!(!agents.is_empty(), "a patch without the agent");
    for c in agents {
        let s = c
            .security_context
            .as_ref()
            .expect("an agent security context");
        assert_eq!(s.run_as_non_root, Some(true), "{}", c.name);
        assert!(
            s.run_as_user.is_some_and(|u| u > 0),
            "{}: {:?}",
            c.name,
            s.run_as_user
        );
        assert_eq!(s.read_only_root_filesystem, Some(true), "{}", c.name);
        assert_eq!(s.allow_privilege_escalation, Some(false), "{}", c.name);
        let caps = s.capabilities.as_ref().expect("capabilities");
        assert_eq!(
            caps.drop.as_deref(),
            Some(&["ALL".to_owned()][..]),
            "{}",
            c.name
        );
        assert!(caps.add.as_ref().is_none_or(Vec::is_empty), "{}", c.name);
        let seccomp = s.seccomp_profile.as_ref().map(|p| p.type_.as_str());
        assert_eq!(seccomp, Some("RuntimeDefault"), "{}", c.name);
    }
}
