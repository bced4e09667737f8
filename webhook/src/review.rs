//! AdmissionReview in, AdmissionReview out: the body of `POST /mutate`,
//! independent of HTTP so it can be benchmarked and fuzzed directly.

use crate::pod::Pod;
use base64::Engine as _;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube_core::{DynamicObject, Status};

use crate::config::AgentConfig;
use crate::mutate::{mutate, Injection, Mutation, Unchanged};

/// What the webhook answered (the `result` label of the reviews metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReviewResult {
    Patched,
    AllowedUnchanged,
    Denied,
    Invalid,
}

impl ReviewResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Patched => "patched",
            Self::AllowedUnchanged => "allowed_unchanged",
            Self::Denied => "denied",
            Self::Invalid => "invalid",
        }
    }
}

/// A readable review and the answer to it.
#[derive(Debug)]
pub struct Reviewed {
    pub response: AdmissionReview<DynamicObject>,
    pub result: ReviewResult,
    pub uid: String,
    pub namespace: String,
    /// The pod's name, or its generateName (pods of a Deployment have no name yet).
    pub pod: String,
    pub dry_run: bool,
    /// Why: the denial message, or why the pod is left unchanged, or the mode.
    pub detail: String,
}

/// The body is not an AdmissionReview we can answer (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum InvalidReview {
    #[error("body is not an AdmissionReview: {0}")]
    Parse(serde_json::Error),
    #[error("body is not an AdmissionReview: JSON must be UTF-8, but {0}")]
    NotUtf8(std::str::Utf8Error),
    #[error("body is an AdmissionReview of kind {kind:?}, apiVersion {api_version:?}; expected kind AdmissionReview, apiVersion admission.k8s.io/v1")]
    WrongType { kind: String, api_version: String },
    #[error("AdmissionReview has no request")]
    NoRequest,
    #[error("AdmissionReview request for a Pod CREATE has no object")]
    NoObject,
    #[error("cannot serialize the response: {0}")]
    Serialize(String),
}

/// Answers one AdmissionReview.
pub fn review(body: &[u8], cfg: &AgentConfig) -> Result<Reviewed, InvalidReview> {
    // JSON is UTF-8 (RFC 8259). Checking the whole body once is cheaper than
    // serde_json checking every string, as it does when parsing bytes.
    let text = std::str::from_utf8(body).map_err(InvalidReview::NotUtf8)?;
    // Fast path: a Pod review parses straight into typed Pods.
    match serde_json::from_str::<AdmissionReview<Pod>>(text) {
        Ok(review) => review_pod(review, cfg),
        Err(pod_err) => {
            // Anything else (another kind, which the webhook configuration
            // never sends) is allowed unchanged if it is a readable review.
            let review: AdmissionReview<DynamicObject> = match serde_json::from_str(text) {
                Ok(r) => r,
                Err(_) => return Err(InvalidReview::Parse(pod_err)),
            };
            check_types(&review.types)?;
            let req: AdmissionRequest<DynamicObject> =
                review.try_into().map_err(|_| InvalidReview::NoRequest)?;
            if is_pod(&req) {
                // A Pod whose object is not a Pod: report the Pod parse error.
                return Err(InvalidReview::Parse(pod_err));
            }
            let meta = req.object.as_ref().map(|o| &o.metadata);
            let pod = meta
                .and_then(|m| m.name.clone().or_else(|| m.generate_name.clone()))
                .unwrap_or_default();
            Ok(Reviewed {
                response: AdmissionResponse::from(&req).into_review(),
                result: ReviewResult::AllowedUnchanged,
                uid: req.uid.clone(),
                namespace: req.namespace.clone().unwrap_or_default(),
                pod,
                dry_run: req.dry_run,
                detail: format!("kind {} is not a Pod", req.kind.kind),
            })
        }
    }
}

fn check_types(types: &kube_core::TypeMeta) -> Result<(), InvalidReview> {
    if types.kind != "AdmissionReview" || types.api_version != "admission.k8s.io/v1" {
        return Err(InvalidReview::WrongType {
            kind: types.kind.clone(),
            api_version: types.api_version.clone(),
        });
    }
    Ok(())
}

fn is_pod<T: kube_core::Resource>(req: &AdmissionRequest<T>) -> bool {
    req.kind.group.is_empty() && req.kind.kind == "Pod"
}

fn review_pod(review: AdmissionReview<Pod>, cfg: &AgentConfig) -> Result<Reviewed, InvalidReview> {
    check_types(&review.types)?;
    let req: AdmissionRequest<Pod> = review.try_into().map_err(|_| InvalidReview::NoRequest)?;
    let response = AdmissionResponse::from(&req);
    let meta = req.object.as_ref().map(|o| &o.metadata);
    let mut out = Reviewed {
        response: AdmissionReview {
            types: Default::default(),
            request: None,
            response: None,
        },
        result: ReviewResult::AllowedUnchanged,
        uid: req.uid.clone(),
        namespace: req
            .namespace
            .clone()
            .or_else(|| meta.and_then(|m| m.namespace.clone()))
            .unwrap_or_default(),
        pod: meta
            .and_then(|m| m.name.clone().or_else(|| m.generate_name.clone()))
            .unwrap_or_default(),
        dry_run: req.dry_run,
        detail: String::new(),
    };

    let skip = if !is_pod(&req) {
        Some(format!("kind {} is not a Pod", req.kind.kind))
    } else if req.sub_resource.is_some() {
        Some("subresource request".to_owned())
    } else if !matches!(req.operation, Operation::Create) {
        Some(format!("operation {:?} is not CREATE", req.operation))
    } else {
        None
    };
    if let Some(why) = skip {
        out.detail = why;
        out.response = response.into_review();
        return Ok(out);
    }
    let pod = req.object.as_ref().ok_or(InvalidReview::NoObject)?;

    let response = match mutate(pod, cfg) {
        Ok(Mutation::Unchanged(why)) => {
            out.detail = why.as_str().to_owned();
            debug_assert!(matches!(
                why,
                Unchanged::NotOptedIn | Unchanged::AlreadyInjected
            ));
            response
        }
        Ok(Mutation::Inject(injection)) => {
            out.result = ReviewResult::Patched;
            out.detail = injection.summary();
            let Injection { patch, plan } = *injection;
            let mut response = response
                .with_patch(patch)
                .map_err(|e| InvalidReview::Serialize(e.to_string()))?;
            if !plan.warnings.is_empty() {
                response.warnings = Some(plan.warnings);
            }
            response
        }
        Err(denial) => {
            out.result = ReviewResult::Denied;
            let message = denial.to_string();
            out.detail.clone_from(&message);
            let mut response = response.deny(&message);
            response.result = Status::failure(&message, "Forbidden").with_code(403);
            response
        }
    };
    out.response = response.into_review();
    Ok(out)
}

/// Serializes the answer for the wire.
///
/// kube-core serializes `AdmissionResponse::patch` (a `Vec<u8>`) as a JSON
/// array of numbers (kube-rs/kube#1781), but the API server reads the
/// `[]byte` field as a base64 string and would reject every patched pod. So
/// the patch, and only the patch, is written differently: everything else
/// goes through kube-core's own `Serialize`.
pub fn to_json(reviewed: &Reviewed) -> Result<Vec<u8>, InvalidReview> {
    let ser = |e: serde_json::Error| InvalidReview::Serialize(e.to_string());
    let review = &reviewed.response;
    let Some((response, patch)) = review
        .response
        .as_ref()
        .and_then(|r| r.patch.as_deref().map(|p| (r, p)))
    else {
        return serde_json::to_vec(review).map_err(ser);
    };
    let mut without_patch = response.clone();
    without_patch.patch = None;
    // The base64 alphabet needs no JSON escaping, so the string goes in as a
    // raw value (validated by serde_json) instead of through the escaping
    // string serializer, which costs more than encoding it.
    let mut quoted = String::with_capacity(patch.len().div_ceil(3) * 4 + 2);
    quoted.push('"');
    base64::engine::general_purpose::STANDARD.encode_string(patch, &mut quoted);
    quoted.push('"');
    let patch = serde_json::value::RawValue::from_string(quoted).map_err(ser)?;
    let wire = WireReview {
        types: &review.types,
        response: WireResponse {
            response: &without_patch,
            patch: &patch,
        },
    };
    let mut out = Vec::with_capacity(512 + patch.get().len());
    serde_json::to_writer(&mut out, &wire).map_err(ser)?;
    Ok(out)
}

/// An `admission.k8s.io/v1` AdmissionReview carrying a response, as
/// kube-core writes it, with the patch as base64.
#[derive(serde::Serialize)]
struct WireReview<'a> {
    #[serde(flatten)]
    types: &'a kube_core::TypeMeta,
    response: WireResponse<'a>,
}

#[derive(serde::Serialize)]
struct WireResponse<'a> {
    /// The response without its patch.
    #[serde(flatten)]
    response: &'a AdmissionResponse,
    patch: &'a serde_json::value::RawValue,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name),
        )
        .expect("fixture")
    }

    /// The wire form is kube-core's own serialization of the review, with
    /// the patch bytes as one base64 string instead of an array of numbers.
    #[test]
    fn wire_form_is_kube_core_with_a_base64_patch() {
        let reviewed = review(&fixture("deployment-pod.json"), &AgentConfig::default())
            .expect("readable review");
        assert_eq!(reviewed.result, ReviewResult::Patched);
        let patch = reviewed
            .response
            .response
            .as_ref()
            .and_then(|r| r.patch.clone());
        let patch = patch.expect("a patch");

        let mut want = serde_json::to_value(&reviewed.response).expect("kube-core serializes");
        assert!(want["response"]["patch"].is_array(), "kube-rs/kube#1781");
        want["response"]["patch"] =
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(&patch));
        let got: serde_json::Value =
            serde_json::from_slice(&to_json(&reviewed).expect("serializes")).expect("JSON");
        assert_eq!(got, want);
        assert_eq!(got["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(got["kind"], "AdmissionReview");
        assert_eq!(got["response"]["patchType"], "JSONPatch");
        assert_eq!(got["response"]["allowed"], true);
    }

    /// Answers without a patch are kube-core's serialization unchanged.
    #[test]
    fn wire_form_without_a_patch_is_kube_core_unchanged() {
        let reviewed =
            review(&fixture("plain-pod.json"), &AgentConfig::default()).expect("readable review");
        assert_eq!(reviewed.result, ReviewResult::AllowedUnchanged);
        let want = serde_json::to_value(&reviewed.response).expect("kube-core serializes");
        let got: serde_json::Value =
            serde_json::from_slice(&to_json(&reviewed).expect("serializes")).expect("JSON");
        assert_eq!(got, want);
        assert!(got["response"].get("patch").is_none());
    }

    /// A body that is not UTF-8 is unreadable, and the error says where.
    #[test]
    fn non_utf8_body_is_invalid() {
        let mut body = fixture("deployment-pod.json");
        let at = body.iter().position(|&b| b == b'"').expect("a string") + 1;
        body[at] = 0xff;
        let err = review(&body, &AgentConfig::default()).expect_err("invalid");
        assert!(matches!(err, InvalidReview::NotUtf8(_)), "{err}");
        assert!(
            err.to_string().contains(&format!(
                "JSON must be UTF-8, but invalid utf-8 sequence of 1 bytes from index {at}"
            )),
            "{err}"
        );
    }
}
