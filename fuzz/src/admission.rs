//! The admission handler on raw request bodies: `review` then `to_json`,
//! as `POST /mutate` runs them.
//!
//! Invariants: nothing panics; a readable review always gets an answer that
//! serializes to an `admission.k8s.io/v1` AdmissionReview with the request's
//! uid; a denial is `allowed: false` with HTTP 403, a message naming an
//! `rds-iam/` annotation, and no patch; a patch is only sent with
//! `allowed: true`, is a base64 JSON Patch that applies (json-patch) to the
//! object of the request, yields a Pod marked `rds-iam/status: injected`,
//! and a second review of that Pod (a reinvocation) leaves it unchanged.

use std::sync::OnceLock;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use rds_iam_webhook::config::AgentConfig;
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
    json_patch::patch(&mut pod, &patch).expect("the patch applies to the object it was made for");
    let typed: Pod = serde_json::from_value(pod.clone()).expect("the patched object is a Pod");
    let status = typed
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("rds-iam/status"))
        .map(String::as_str);
    assert_eq!(status, Some("injected"));

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
