//! `rds-iam-webhook audit`: finds pods that opted in but run without a
//! working agent, from what `kubectl get pods -A -o json` prints.
//!
//! A pod misses its injection when the webhook never saw it: created before
//! the webhook was installed or while it was down (with `failurePolicy:
//! Ignore`), in an excluded namespace, or with the opt-in in the wrong place.
//! The API server says nothing then; the pod fails later, at its first
//! database login. [`audit`] decides, from the objects alone, which pods are
//! affected, the likely cause and the fix (pure); [`render_table`] and
//! [`render_json`] print the findings.
//!
//! The input is a `PodList` or a `List` (`kubectl get pods,replicasets,deployments,namespaces
//! -A -o json`): with the owners and namespaces in it, more causes can be told
//! apart (annotations on the Deployment instead of its pod template, a namespace
//! labelled out of injection).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ContainerStatus, Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::Serialize;
use serde_json::Value;

use crate::annotations::{self, ENABLED};
use crate::mutate::is_agent;
use crate::render::{AGENT_CONTAINER, AGENT_INIT_CONTAINER};

/// Namespaces the shipped `namespaceSelector` leaves out.
pub const DEFAULT_EXCLUDED: [&str; 3] = ["kube-system", "kube-node-lease", "rds-iam-system"];
/// The namespace label that takes a namespace out of injection.
pub const DISABLE_LABEL: &str = "rds-iam-injector.io/injection";
pub const DISABLE_VALUE: &str = "disabled";

/// Input that is not a pod list.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the input is neither JSON nor YAML: {0}; pipe `kubectl get pods -A -o json` into it")]
    Syntax(String),
    #[error("the input is a {0}, not a PodList, List or Pod; pipe `kubectl get pods -A -o json` into it")]
    NotAList(String),
    #[error("item {index} ({kind}) is not a valid {kind}: {reason}")]
    Item {
        index: usize,
        kind: String,
        reason: String,
    },
}

/// The objects read from the input.
#[derive(Debug, Default)]
pub struct Inventory {
    pub pods: Vec<Pod>,
    pub replica_sets: Vec<ReplicaSet>,
    pub deployments: Vec<Deployment>,
    pub namespaces: Vec<Namespace>,
}

/// What is wrong with a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Problem {
    /// Opted in, no agent.
    NoAgent,
    /// The agent is there but not ready (or its init run failed).
    AgentNotReady,
    /// Clearly meant to opt in, but the webhook does not see an opt-in.
    OptInNotSeen,
}

impl Problem {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoAgent => "no agent",
            Self::AgentNotReady => "agent not ready",
            Self::OptInNotSeen => "opt-in not seen",
        }
    }
}

/// One affected pod, with the likely cause and the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub namespace: String,
    pub pod: String,
    pub problem: Problem,
    pub cause: String,
    pub fix: String,
}

/// What the webhook's `namespaceSelector` excludes by name.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    pub excluded_namespaces: Vec<String>,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            excluded_namespaces: DEFAULT_EXCLUDED.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Reads a PodList, a List (of pods, ReplicaSets, Deployments, Namespaces;
/// other kinds are ignored) or a single Pod, in JSON or YAML.
pub fn parse(input: &str) -> Result<Inventory, AuditError> {
    let doc: Value = match serde_json::from_str(input) {
        Ok(v) => v,
        Err(json) => serde_yaml::from_str(input)
            .map_err(|_| AuditError::Syntax(format!("{json} (as JSON)")))?,
    };
    let kind = doc["kind"].as_str().unwrap_or("");
    let (items, default_kind) = match kind {
        "PodList" => (doc["items"].as_array().cloned().unwrap_or_default(), "Pod"),
        "List" => (doc["items"].as_array().cloned().unwrap_or_default(), ""),
        "Pod" => (vec![doc.clone()], "Pod"),
        other => {
            let shown = if other.is_empty() {
                "document without a kind".to_owned()
            } else {
                other.to_owned()
            };
            return Err(AuditError::NotAList(shown));
        }
    };
    let mut inv = Inventory::default();
    for (index, item) in items.into_iter().enumerate() {
        let kind = item["kind"].as_str().unwrap_or(default_kind).to_owned();
        let bad = |e: serde_json::Error| AuditError::Item {
            index,
            kind: kind.clone(),
            reason: e.to_string(),
        };
        match kind.as_str() {
            "Pod" => inv.pods.push(serde_json::from_value(item).map_err(bad)?),
            "ReplicaSet" => inv
                .replica_sets
                .push(serde_json::from_value(item).map_err(bad)?),
            "Deployment" => inv
                .deployments
                .push(serde_json::from_value(item).map_err(bad)?),
            "Namespace" => inv
                .namespaces
                .push(serde_json::from_value(item).map_err(bad)?),
            _ => {}
        }
    }
    Ok(inv)
}

/// Every pod that opted in (or clearly meant to) and has no working agent.
pub fn audit(inv: &Inventory, opts: &AuditOptions) -> Vec<Finding> {
    inv.pods
        .iter()
        .filter_map(|pod| audit_pod(pod, inv, opts))
        .collect()
}

fn audit_pod(pod: &Pod, inv: &Inventory, opts: &AuditOptions) -> Option<Finding> {
    let meta = &pod.metadata;
    let empty = BTreeMap::new();
    let ann = meta.annotations.as_ref().unwrap_or(&empty);
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let name = meta
        .name
        .clone()
        .or_else(|| meta.generate_name.as_ref().map(|g| format!("{g}*")))
        .unwrap_or_else(|| "<unnamed>".into());
    let owner = Owner::of(pod, inv);
    let finding = |problem, cause: String, fix: String| {
        Some(Finding {
            namespace: namespace.clone(),
            pod: name.clone(),
            problem,
            cause,
            fix,
        })
    };
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if phase == Some("Succeeded") {
        return None;
    }

    if !annotations::opted_in(ann) {
        let (cause, fix) = missed_opt_in(meta, &owner, inv)?;
        return finding(Problem::OptInNotSeen, cause, fix);
    }
    let spec = pod.spec.as_ref()?;
    let has_agent = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .any(|c| is_agent(&c.name, c.command.as_deref()));
    if has_agent {
        let reason = agent_not_ready(pod)?;
        return finding(
            Problem::AgentNotReady,
            format!("the agent cannot keep a token: {reason}"),
            format!(
                "read why: kubectl -n {namespace} logs {name} -c {AGENT_CONTAINER}; then \
                 kubectl -n {namespace} exec {name} -c {AGENT_CONTAINER} -- rds-iam-tokenagent doctor (docs/troubleshooting.md)"
            ),
        );
    }
    let restart = owner.restart(&namespace, &name);
    if annotations::marked_injected(ann) {
        return finding(
            Problem::NoAgent,
            format!(
                "it carries {}: {} without an agent, so the webhook took it as done: the pod template was copied from an injected pod",
                annotations::STATUS,
                annotations::STATUS_INJECTED
            ),
            format!(
                "remove the {} annotation from the pod template, then {restart}",
                annotations::STATUS
            ),
        );
    }
    if opts.excluded_namespaces.contains(&namespace) {
        return finding(
            Problem::NoAgent,
            format!("namespace {namespace} is excluded by the webhook's namespaceSelector"),
            format!(
                "run the workload in another namespace, or remove {namespace} from the exclusions (Helm value webhook.excludeNamespaces; kustomize: the namespaceSelector), then {restart}"
            ),
        );
    }
    if let Some(ns) = inv
        .namespaces
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(namespace.as_str()))
    {
        let label = ns
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(DISABLE_LABEL));
        if label.map(String::as_str) == Some(DISABLE_VALUE) {
            return finding(
                Problem::NoAgent,
                format!("namespace {namespace} is labelled {DISABLE_LABEL}={DISABLE_VALUE}"),
                format!("kubectl label namespace {namespace} {DISABLE_LABEL}-, then {restart}"),
            );
        }
    }
    finding(
        Problem::NoAgent,
        "created while the webhook was down or before it was installed (failurePolicy Ignore let it through), or the webhook was never called for it".into(),
        format!("check that the webhook is ready (kubectl -n rds-iam-system get pods), then {restart}"),
    )
}

/// For a pod that is not opted in: the sign that it meant to be, as (cause, fix).
fn missed_opt_in(meta: &ObjectMeta, owner: &Owner, inv: &Inventory) -> Option<(String, String)> {
    let empty = BTreeMap::new();
    let ann = meta.annotations.as_ref().unwrap_or(&empty);
    let labels = meta.labels.as_ref().unwrap_or(&empty);
    let on_template = "on the pod template (spec.template.metadata.annotations), then roll it";
    if let Some(v) = ann.get(ENABLED) {
        if means_yes(v) {
            return Some((
                format!("{ENABLED} is {v:?}; only the exact string \"true\" opts in"),
                format!("write {ENABLED}: \"true\" {on_template}"),
            ));
        }
        return None; // "false" or anything else: a clear opt-out
    }
    if labels.get(ENABLED).is_some_and(|v| means_yes(v)) {
        return Some((
            format!("{ENABLED} is a label; the webhook reads annotations"),
            format!("move {ENABLED}: \"true\" from labels to annotations {on_template}"),
        ));
    }
    if let Some((kind, name)) = owner.annotated(inv) {
        return Some((
            format!(
                "the rds-iam/* annotations are on {kind} {name} itself, not on its pod template"
            ),
            format!("move them to spec.template.metadata.annotations of {kind} {name}; that rolls new pods"),
        ));
    }
    if let Some(key) = ann.keys().find(|k| k.starts_with("rds-iam/")) {
        return Some((
            format!("it has {key} but no {ENABLED}"),
            format!("add {ENABLED}: \"true\" {on_template}"),
        ));
    }
    None
}

/// A value that shows the intent to opt in, though only "true" does.
fn means_yes(v: &str) -> bool {
    let v = v.trim().to_ascii_lowercase();
    matches!(v.as_str(), "true" | "yes" | "y" | "on" | "1" | "enabled")
}

/// Why the agent is not ready, or `None` when it is (or it is too early to tell).
fn agent_not_ready(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let spec = pod.spec.as_ref()?;
    let inits = status.init_container_statuses.iter().flatten();
    let apps = status.container_statuses.iter().flatten();
    for s in inits {
        let is_sidecar = spec
            .init_containers
            .iter()
            .flatten()
            .any(|c| c.name == s.name && c.restart_policy.as_deref() == Some("Always"));
        if s.name == AGENT_CONTAINER && is_sidecar {
            if !s.ready || s.started == Some(false) {
                return Some(describe(s, "startup probe not passed"));
            }
        } else if s.name == AGENT_CONTAINER || s.name == AGENT_INIT_CONTAINER {
            let done = s
                .state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0);
            if !done {
                return Some(describe(s, "its --once run has not succeeded"));
            }
        }
    }
    for s in apps {
        if s.name == AGENT_CONTAINER && !s.ready {
            return Some(describe(s, "readiness not passed"));
        }
    }
    None
}

fn describe(s: &ContainerStatus, default: &str) -> String {
    let state = s.state.as_ref();
    let mut what = if let Some(w) = state.and_then(|st| st.waiting.as_ref()) {
        w.reason.clone().unwrap_or_else(|| "waiting".into())
    } else if let Some(t) = state.and_then(|st| st.terminated.as_ref()) {
        format!(
            "{} (exit code {})",
            t.reason.as_deref().unwrap_or("terminated"),
            t.exit_code
        )
    } else {
        default.to_owned()
    };
    if let Some(t) = s.last_state.as_ref().and_then(|l| l.terminated.as_ref()) {
        what.push_str(&format!(", last exit code {}", t.exit_code));
    }
    if s.restart_count > 0 {
        what.push_str(&format!(", {} restarts", s.restart_count));
    }
    format!("{} {what}", s.name)
}

/// The workload a pod belongs to, as far as the input tells.
enum Owner {
    None,
    /// kind and name of the top controller (Deployment from a ReplicaSet).
    Workload {
        kind: String,
        name: String,
        rs: Option<String>,
    },
}

impl Owner {
    fn of(pod: &Pod, inv: &Inventory) -> Self {
        let Some(r) = controller(&pod.metadata) else {
            return Self::None;
        };
        if r.kind != "ReplicaSet" {
            return Self::Workload {
                kind: r.kind.clone(),
                name: r.name.clone(),
                rs: None,
            };
        }
        let ns = pod.metadata.namespace.as_deref();
        let rs = inv.replica_sets.iter().find(|x| {
            x.metadata.name.as_deref() == Some(&r.name) && x.metadata.namespace.as_deref() == ns
        });
        let deployment = match rs.and_then(|x| controller(&x.metadata)) {
            Some(d) if d.kind == "Deployment" => Some(d.name.clone()),
            Some(_) => None,
            // Not in the input: a Deployment's ReplicaSet is named <deployment>-<pod-template-hash>.
            None => pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-template-hash"))
                .and_then(|h| r.name.strip_suffix(&format!("-{h}")))
                .map(str::to_owned),
        };
        match deployment {
            Some(name) => Self::Workload {
                kind: "Deployment".into(),
                name,
                rs: Some(r.name.clone()),
            },
            None => Self::Workload {
                kind: "ReplicaSet".into(),
                name: r.name.clone(),
                rs: None,
            },
        }
    }

    /// How to get a new, injected pod.
    fn restart(&self, ns: &str, pod: &str) -> String {
        match self {
            Self::Workload { kind, name, .. }
                if matches!(kind.as_str(), "Deployment" | "StatefulSet" | "DaemonSet") =>
            {
                format!(
                    "kubectl -n {ns} rollout restart {}/{name}",
                    kind.to_ascii_lowercase()
                )
            }
            Self::Workload { kind, name, .. } if kind == "Job" => format!(
                "delete Job {name} and create it again (kubectl -n {ns} get job {name} -o yaml), or wait for the next run of its CronJob"
            ),
            Self::Workload { .. } => {
                format!("kubectl -n {ns} delete pod {pod} (its controller creates a new one)")
            }
            Self::None => format!("kubectl -n {ns} delete pod {pod} and create it again"),
        }
    }

    /// The owner (Deployment or its ReplicaSet) that carries `rds-iam/enabled`
    /// on its own metadata, when the input has it.
    fn annotated(&self, inv: &Inventory) -> Option<(String, String)> {
        let Self::Workload { kind, name, rs } = self else {
            return None;
        };
        let has = |m: &ObjectMeta| {
            m.annotations
                .as_ref()
                .is_some_and(|a| a.keys().any(|k| k == ENABLED))
        };
        let in_deployments = kind == "Deployment"
            && inv
                .deployments
                .iter()
                .any(|d| d.metadata.name.as_deref() == Some(name) && has(&d.metadata));
        // The Deployment controller copies the Deployment's annotations onto its ReplicaSets.
        let rs_name = rs.as_deref().unwrap_or(name);
        let in_rs = inv
            .replica_sets
            .iter()
            .any(|r| r.metadata.name.as_deref() == Some(rs_name) && has(&r.metadata));
        (in_deployments || in_rs).then(|| (kind.clone(), name.clone()))
    }
}

fn controller(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// The findings as an aligned table with a header.
pub fn render_table(findings: &[Finding]) -> String {
    let rows: Vec<[&str; 5]> = findings
        .iter()
        .map(|f| {
            [
                f.namespace.as_str(),
                f.pod.as_str(),
                f.problem.as_str(),
                f.cause.as_str(),
                f.fix.as_str(),
            ]
        })
        .collect();
    let header = ["NAMESPACE", "POD", "PROBLEM", "CAUSE", "FIX"];
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&header).chain(rows.iter()) {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = width[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The findings as JSON: `{"checkedPods": N, "findings": [...]}`.
pub fn render_json(checked: usize, findings: &[Finding]) -> String {
    let v = serde_json::json!({ "checkedPods": checked, "findings": findings });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}: {}: {}; fix: {}",
            self.namespace,
            self.pod,
            self.problem.as_str(),
            self.cause,
            self.fix
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn yes_like_values_are_intent() {
        for v in ["True", "TRUE", " true", "yes", "1", "on"] {
            assert!(means_yes(v), "{v}");
        }
        for v in ["false", "no", "", "0", "maybe"] {
            assert!(!means_yes(v), "{v}");
        }
    }

    #[test]
    fn not_a_list_is_an_error_naming_the_kind() {
        let err = parse(r#"{"kind":"Deployment","metadata":{"name":"x"}}"#).unwrap_err();
        assert!(err.to_string().contains("is a Deployment"), "{err}");
        let err = parse("{ not json").unwrap_err();
        assert!(err.to_string().contains("neither JSON nor YAML"), "{err}");
    }

    #[test]
    fn table_aligns_columns() {
        let f = Finding {
            namespace: "ns".into(),
            pod: "p".into(),
            problem: Problem::NoAgent,
            cause: "c".into(),
            fix: "f".into(),
        };
        let t = render_table(&[f]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "NAMESPACE   POD   PROBLEM    CAUSE   FIX");
        assert_eq!(lines[1], "ns          p     no agent   c       f");
    }
}
